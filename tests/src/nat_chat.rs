//! Real `duet chat` pairs across the NAT testbed ([`crate::nat`]): two paired duets in the
//! homes behind two routers, with what internet reach needs on the "internet" between them.
//!
//! [`ChatNet::start`] builds the topology and starts, each on a host of its own: two meshed
//! libtorrent DHT nodes, one `duet dht-node` joined to them, and coturn (STUN for every
//! test; TURN only for chats started with [`ChatOpts::turn`]). Each duet bootstraps from
//! all three DHT nodes, so its records are stored on both kinds of node.
//!
//! A chat runs in line mode with stdin and stdout piped ([`Proc`]): type a line to send it,
//! wait for `NAME@ADDR: TEXT` on the other side. [`path_line`] parses the chat's
//! `* path to NAME: KIND at ADDR` lines.
//!
//! Contract: like [`crate::nat`], every start waits for its service to answer within a
//! bounded time or panics with its output; dropping a [`ChatNet`] kills its services and
//! deletes its namespaces and config directories (drop the chats first: declare them after
//! it).

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::nat::{Coturn, DHT_PORT, DhtNodes, Machine, Nat, NatNet, READY};
use crate::process::{Home, Proc, paired};

/// libtorrent DHT nodes started beside the `duet dht-node`.
const LIBTORRENT_NODES: usize = 2;

/// Two paired duets behind two home routers, and the internet's services.
pub struct ChatNet {
    // Dropped in this order: processes, then their hosts, then the topology, then homes.
    _duet_node: Proc,
    dht: DhtNodes,
    turn: Coturn,
    duet_node_host: Machine,
    net: NatNet,
    /// The duet behind router 0 (it calls the other `b`).
    pub a: Home,
    /// The duet behind router 1 (it calls the other `a`).
    pub b: Home,
}

/// How a chat is started.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatOpts {
    /// Give it the TURN server (`DUET_TURN`).
    pub turn: bool,
}

impl ChatNet {
    /// The topology `tag` with router 0 NATing the `nat_a` way and router 1 the `nat_b`
    /// way, its DHT nodes and coturn running, and two fresh paired duets that know no
    /// address of each other (internet reach must find them).
    pub fn start(tag: &str, nat_a: Nat, nat_b: Nat) -> ChatNet {
        let net = NatNet::builder(tag).router(nat_a).router(nat_b).build();
        let dht = net.dht_nodes(LIBTORRENT_NODES);
        let duet_node_host = net.host("duetdht", 1);
        let bind = duet_node_host.endpoint(DHT_PORT).to_string();
        let bootstrap: Vec<String> = dht.addrs().iter().map(ToString::to_string).collect();
        let mut duet_node = duet_node_host.spawn(
            &crate::process::duet_bin().to_string_lossy(),
            &[
                "dht-node",
                "--bind",
                &bind,
                "--bootstrap",
                &bootstrap.join(","),
            ],
        );
        duet_node.expect("DHT node listening on", READY);
        let turn = net.coturn();
        let (a, b) = paired(None, None);
        ChatNet {
            _duet_node: duet_node,
            dht,
            turn,
            duet_node_host,
            net,
            a,
            b,
        }
    }

    /// The topology.
    pub fn net(&self) -> &NatNet {
        &self.net
    }

    /// The topology, to change it (e.g. a router's public address).
    pub fn net_mut(&mut self) -> &mut NatNet {
        &mut self.net
    }

    /// coturn.
    pub fn turn(&self) -> &Coturn {
        &self.turn
    }

    /// Every DHT node a duet bootstraps from: the libtorrent ones and duet's own.
    pub fn bootstrap(&self) -> Vec<SocketAddrV4> {
        let mut nodes = self.dht.addrs();
        nodes.push(self.duet_node_host.endpoint(DHT_PORT));
        nodes
    }

    /// The environment that points a duet at this internet's DHT nodes, STUN and (with
    /// `opts.turn`) TURN.
    pub fn reach_env(&self, opts: ChatOpts) -> Vec<(&'static str, String)> {
        let bootstrap: Vec<String> = self.bootstrap().iter().map(ToString::to_string).collect();
        let mut env = vec![
            ("DUET_DHT", "on".to_owned()),
            ("DUET_DHT_BOOTSTRAP", bootstrap.join(",")),
            ("DUET_STUN", self.turn.addr().to_string()),
        ];
        if opts.turn {
            env.push((
                "DUET_TURN",
                format!("{}:{}@{}", Coturn::USER, Coturn::PASSWORD, self.turn.addr()),
            ));
        }
        env
    }

    /// Start `duet chat` in line mode in home `i` (0: `a` talking to `b`, 1: the other
    /// way), bound to every address on `port`; returns once it printed its banner.
    pub fn chat(&self, i: usize, port: u16, opts: ChatOpts) -> Proc {
        let mut chat = self.spawn_chat(i, port, opts);
        chat.expect("* talking to", READY);
        chat
    }

    /// [`ChatNet::chat`] without waiting for anything: the process has just been started.
    pub fn spawn_chat(&self, i: usize, port: u16, opts: ChatOpts) -> Proc {
        let (home, peer) = match i {
            0 => (&self.a, "b"),
            _ => (&self.b, "a"),
        };
        let bind = format!("0.0.0.0:{port}");
        let env = self.reach_env(opts);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.net
            .home(i)
            .duet_env(home, &["chat", peer, "--bind", &bind], &env)
    }
}

/// The path a chat reported in a `* path to NAME: KIND at ADDR` line: kind and address.
pub fn path_line(line: &str) -> Option<(String, String)> {
    let rest = &line[line.find("* path to ")? + "* path to ".len()..];
    let (_name, rest) = rest.split_once(": ")?;
    let (kind, addr) = rest.rsplit_once(" at ")?;
    Some((kind.to_owned(), addr.to_owned()))
}

/// Wait for `chat` to report a path; its kind and address. Panics with the chat's output
/// after `timeout`.
pub fn wait_for_path(chat: &mut Proc, timeout: Duration) -> (String, String) {
    let line = chat.expect("* path to ", timeout);
    path_line(&line).unwrap_or_else(|| panic!("not a path line: {line:?}"))
}

/// The texts of `home`'s history with `peer` in one direction (`"->"` sent, `"<-"`
/// received), oldest first.
pub fn history(home: &Home, peer: &str, arrow: &str) -> Vec<String> {
    let (code, out) = home.run(&["history", peer, "--limit", "100000"]);
    assert_eq!(code, 0, "duet history failed: {out}");
    out.lines()
        .filter_map(|l| {
            l.split_once(&format!(" {arrow} {peer}: "))
                .map(|(_, t)| t.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::path_line;

    #[test]
    fn path_lines_parse() {
        assert_eq!(
            path_line("* path to b: direct through NAT at 203.0.113.12:7789"),
            Some(("direct through NAT".into(), "203.0.113.12:7789".into()))
        );
        assert_eq!(
            path_line("* path to a: relay at 203.0.113.104:49160"),
            Some(("relay".into(), "203.0.113.104:49160".into()))
        );
        assert_eq!(path_line("a@1.2.3.4:5: * path to"), None);
    }
}
