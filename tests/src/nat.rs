//! A small internet in network namespaces for NAT traversal tests: home routers that NAT
//! and firewall like real ones, a home behind each, and hosts on the "internet" between
//! them for the services traversal needs (Mainline DHT nodes, a STUN/TURN server, a plain
//! peer). Root only; see `tests/tests/nat_topology.rs` for the tests that prove each piece.
//!
//! ```text
//!                     ns inet: bridge br0 on 203.0.113.0/24 (no address of its own)
//!        ┌────────────────────┬──────────────┴───────┬─────────────────────────┐
//!   wan 203.0.113.11     wan 203.0.113.12      eth0 203.0.113.101...   (one ns per host:
//!   ns router 0          ns router 1           ns host                  DHT node, coturn)
//!   lan 10.1.0.1         lan 10.2.0.1
//!        │                    │
//!   eth0 10.1.0.2        eth0 10.2.0.2
//!   ns home 0            ns home 1             (where a duet runs)
//! ```
//!
//! A test builds a topology, starts the services it needs, and runs duet in the homes:
//!
//! ```no_run
//! use duet_tests::nat::{Nat, NatNet};
//!
//! let mut net = NatNet::builder("chat")
//!     .router(Nat::PortPreserving)
//!     .router(Nat::Symmetric)
//!     .build();
//! let dht = net.dht_nodes(3); // meshed: BEP44 put/get work at once
//! let turn = net.coturn(); // STUN and TURN at turn.addr()
//! let upnp = net.miniupnpd(0, &turn); // UPnP-IGD and NAT-PMP on router 0
//! let (a, b) = duet_tests::paired(None, None);
//! let bind = net.home(0).endpoint(7789).to_string();
//! let duet_a = net.home(0).duet(&a, &["chat", "b", "--bind", &bind]);
//! let seen_as = net.public_addr(0);
//! let roamed_to = net.change_public_addr(0); // a new public address, conntrack flushed
//! ```
//!
//! Every router: `ip_forward`; `oifname wan masquerade` ([`Nat::PortPreserving`]: keeps the
//! source port, so a STUN-learned address works for every peer) or `masquerade
//! fully-random` ([`Nat::Symmetric`]: a new port per destination, so only a relay helps);
//! forward policy drop except established/related and from the LAN; input policy drop on
//! the WAN except established/related. Empty chains `upnp_forward`, `upnp_prerouting`,
//! `upnp_postrouting` are jumped to from those chains; only miniupnpd fills them.
//!
//! The contract: [`NatNetBuilder::build`] returns a working topology or panics with the
//! failing command; every helper that starts a service returns once the service answers
//! (never after a blind sleep) or panics with its output after a bounded wait; dropping a
//! handle kills its processes, dropping the [`NatNet`] or a host [`Machine`] deletes the
//! namespaces. Every namespace name is unique per process and call (`duet-TAG-...-PID-N`),
//! so tests run in parallel. The address plan is the same in every topology, and need not be
//! unique: each topology's namespaces are a world of their own, and none has a route to
//! anything else, so no datagram can leave them.
//!
//! Traps found while building this (details at the code that avoids each):
//! - Without the WAN input drop, hole punching fails: the first unsolicited datagram makes a
//!   conntrack entry on the far router, its own outgoing mapping then clashes and gets a
//!   random port.
//! - libtorrent replaces its random DHT node ID by one derived from its external address as
//!   soon as a reply tells it that address; nodes linked before that evict the node as
//!   "changed ID" and relearn it only on a later refresh: put/get took 15-30 s. The nodes in
//!   `tests/nat/dht_node.py` first settle their ID by asking themselves, then link: the
//!   mesh is ready about a second after start, put and get take well under a second.
//! - libtorrent's defaults bootstrap from `dht.libtorrent.org` and run UPnP, NAT-PMP and
//!   local peer discovery: all off in `dht_node.py`.
//! - miniupnpd 2.3.1 refuses to forward ports while its WAN address is reserved, which every
//!   documentation range is (203.0.113.0/24 too), and refuses such an `ext_ip=`. What works
//!   is `ext_perform_stun=yes` against an RFC 5780 STUN server, i.e. coturn with two
//!   addresses ([`Coturn`] has them), whose four answers (two from the other address or
//!   port) must reach the router: its input chain jumps to `upnp_forward`, where miniupnpd
//!   opens the ports of that test.
//! - Debian's `nft_init.sh` for miniupnpd is broken (it sources the iptables helpers:
//!   `$NFT` and `$TABLE` stay empty). The router's own table holds miniupnpd's chains
//!   instead, and they must be jumped to from the router's chains: an accept in a separate
//!   base chain does not override the router's policy drop.
//! - miniupnpc 2.2 (`upnpc`) calls an IGD whose external address is reserved "not
//!   connected" and stops after discovery: give it the description URL (`upnpc -u`,
//!   [`Miniupnpd::root_desc_url`]). A UPnP client in duet that applies the same rule will
//!   reject this testbed's IGD.
//! - Changing an address: delete the old one before adding the new one (deleting a primary
//!   address deletes the secondaries in its subnet), then flush conntrack.
//! - `ip netns exec` runs the program in place (same pid): killing the [`Proc`] kills it.
//! - Python helpers run with `/usr/bin/python3` (libtorrent is a Debian module; the
//!   `python3` on PATH may be a slow pyenv shim) and `PYTHONDONTWRITEBYTECODE`, so no
//!   `__pycache__` appears in the source tree.
//!
//! - Debian's coturn unit ignores `/etc/default/coturn`: on a machine with systemd, installing
//!   the package starts a turnserver on every address (`.ci/test-all` disables it again).
//!
//! Timing on the 2-core VM (printed by the tests): three DHT nodes are meshed (each holds
//! the other two) about 1.0 s after the first one starts; a BEP44 put from behind one NAT
//! then takes ~0.3 s (a fresh client process included), a get from behind the other ~0.2 s.
//! Before the node-ID settling above, the same took 15-30 s. coturn answers STUN 0.3-0.5 s
//! after its start; miniupnpd has port forwarding on 0.03-0.15 s after its own.
//! `turnutils_uclient` spends ~4 s in fixed waits before it sends anything.

use std::cell::Cell;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::peers::{PYTHON, require_tool};
use crate::process::{Home, Proc, duet_bin, workspace_root};

/// How long a service may take to answer after its start.
pub const READY: Duration = Duration::from_secs(20);

/// The internet's prefix length: every public address is in 203.0.113.0/24.
const INTERNET_PREFIX: &str = "24";

/// The UDP port the DHT nodes listen on (each has an address of its own).
pub const DHT_PORT: u16 = 6881;

/// STUN/TURN's port on both of coturn's addresses.
pub const STUN_PORT: u16 = 3478;

/// Where miniupnpd serves its UPnP description and control on the router's LAN address.
const UPNP_HTTP_PORT: u16 = 2189;

/// A public (internet) address: 203.0.113.`host`.
fn public(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, host)
}

/// How a home router maps its LAN's sockets to its public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: a socket keeps its port (while free) towards every destination, so its
    /// STUN-learned address is the one every peer sees ("endpoint-independent mapping").
    PortPreserving,
    /// `masquerade fully-random`: a new random port for every destination (a symmetric
    /// NAT); hole punching with a STUN-learned address fails, a relay is needed.
    Symmetric,
}

/// One namespace where programs run, with its address(es) on its network.
pub struct Machine {
    netns: Netns,
    addrs: Vec<Ipv4Addr>,
}

impl Machine {
    /// Its (first) address: a home's private address, a router's public one, a host's.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }

    /// All its addresses (coturn's host has two).
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    /// `addr():port`.
    pub fn endpoint(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr(), port)
    }

    /// The namespace (for `ip` commands and [`Netns::run`]).
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A command that runs `program` in this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.netns.command(program)
    }

    /// Spawn `program ARGS...` here, output lines read as with every [`Proc`].
    pub fn spawn(&self, program: &str, args: &[&str]) -> Proc {
        Proc::spawn(
            self.command(program).args(args),
            &format!("[{}] {program} {}", self.netns.name(), args.join(" ")),
        )
    }

    /// Spawn `/usr/bin/python3 tests/nat/SCRIPT ARGS...` here.
    pub fn python(&self, script: &str, args: &[&str]) -> Proc {
        let path = workspace_root().join("tests").join("nat").join(script);
        Proc::spawn(
            self.command(PYTHON)
                .arg(&path)
                .args(args)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONIOENCODING", "utf-8"),
            &format!("[{}] {script} {}", self.netns.name(), args.join(" ")),
        )
    }

    /// Spawn `duet --config-dir HOME ARGS...` here (see [`Netns::duet`]).
    pub fn duet(&self, home: &Home, args: &[&str]) -> Proc {
        self.netns.duet(home, args)
    }

    /// Spawn `duet --config-dir HOME ARGS...` here with extra environment variables.
    pub fn duet_env(&self, home: &Home, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let args = home.args(args);
        let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Proc::spawn(
            self.command(duet_bin())
                .args(&args)
                .envs(env.iter().copied()),
            &format!(
                "[{}] {} duet {}",
                self.netns.name(),
                env_text.join(" "),
                args.join(" ")
            ),
        )
    }

    /// A [`Probe`]: one UDP socket on `addr():port` (0: the OS picks), driven line by line.
    pub fn probe(&self, port: u16) -> Probe {
        let bind = self.endpoint(port).to_string();
        let mut proc = self.python("udp_probe.py", &[&bind]);
        let line = proc.expect("bound ", READY);
        let bound = line
            .trim_start_matches("bound ")
            .parse()
            .unwrap_or_else(|_| panic!("udp_probe.py: no address in {line:?}"));
        Probe { proc, bound }
    }
}

/// A home router and the home behind it.
pub struct Router {
    machine: Machine,
    lan: Ipv4Addr,
    nat: Nat,
    home: Machine,
}

impl Router {
    /// The router itself; its address is its current public (WAN) address.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Its address on the LAN (the home's gateway).
    pub fn lan_addr(&self) -> Ipv4Addr {
        self.lan
    }

    /// How it NATs.
    pub fn nat(&self) -> Nat {
        self.nat
    }

    /// The home behind it.
    pub fn home(&self) -> &Machine {
        &self.home
    }
}

/// What [`NatNet::builder`] collects: a tag for the names, then one router per call.
pub struct NatNetBuilder {
    tag: String,
    nats: Vec<Nat>,
}

impl NatNetBuilder {
    /// Add a home router (and its home) that NATs the `nat` way.
    pub fn router(mut self, nat: Nat) -> NatNetBuilder {
        self.nats.push(nat);
        self
    }

    /// Create the namespaces, links, addresses, routes and nftables rules.
    pub fn build(self) -> NatNet {
        require_tool("ip", "iproute2");
        require_tool("nft", "nftables");
        require_tool("sysctl", "procps");
        assert!(
            (1..=9).contains(&self.nats.len()),
            "a NatNet has 1 to 9 routers"
        );
        let internet = Netns::new(&format!("{}-inet", self.tag));
        internet.bridge("br0", &[]);
        let mut net = NatNet {
            routers: Vec::new(),
            internet,
            tag: self.tag,
            next_host: Cell::new(101),
            next_public: Cell::new(31),
        };
        for (i, nat) in self.nats.into_iter().enumerate() {
            let router = net.add_router(i, nat);
            net.routers.push(router);
        }
        net
    }
}

/// The topology: the internet bridge and the routers with their homes. Hosts on the
/// internet are [`Machine`]s owned by whoever asked for them ([`NatNet::host`]).
pub struct NatNet {
    // Dropped in this order: homes and routers, then the internet.
    routers: Vec<Router>,
    internet: Netns,
    tag: String,
    /// Next free host address on the internet (203.0.113.101 on).
    next_host: Cell<u8>,
    /// Next free address for a router that changes its public address (203.0.113.31 on).
    next_public: Cell<u8>,
}

impl NatNet {
    /// Start describing a topology; `tag` (short, e.g. the test's theme) goes into every
    /// namespace's name.
    pub fn builder(tag: &str) -> NatNetBuilder {
        NatNetBuilder {
            tag: tag.to_owned(),
            nats: Vec::new(),
        }
    }

    /// Router `i` (0-based; its LAN is 10.`i+1`.0.0/24).
    pub fn router(&self, i: usize) -> &Router {
        &self.routers[i]
    }

    /// The home behind router `i` (address 10.`i+1`.0.2).
    pub fn home(&self, i: usize) -> &Machine {
        &self.routers[i].home
    }

    /// The names of every namespace the topology owns (hosts are their owners').
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.internet.name().to_owned()];
        for r in &self.routers {
            names.push(r.machine.netns.name().to_owned());
            names.push(r.home.netns.name().to_owned());
        }
        names
    }

    /// Router `i`'s current public address.
    pub fn public_addr(&self, i: usize) -> Ipv4Addr {
        self.routers[i].machine.addr()
    }

    /// A new host on the internet, with `count` addresses (203.0.113.101 on), its own
    /// namespace and no route beyond the internet's /24. `name` goes into the namespace's.
    pub fn host(&self, name: &str, count: usize) -> Machine {
        let first = self.next_host.get();
        assert!(
            count >= 1 && usize::from(first) + count <= 250,
            "out of host addresses"
        );
        self.next_host.set(first + count as u8);
        let netns = Netns::new(&format!("{}-{name}", self.tag));
        let port = format!("h{first}");
        netns.veth("eth0", &self.internet, &port);
        self.internet.ip(&["link", "set", &port, "master", "br0"]);
        let addrs: Vec<Ipv4Addr> = (0..count).map(|k| public(first + k as u8)).collect();
        for addr in &addrs {
            netns.ip(&[
                "addr",
                "add",
                &format!("{addr}/{INTERNET_PREFIX}"),
                "dev",
                "eth0",
            ]);
        }
        Machine { netns, addrs }
    }

    /// Give router `i` a new public address: the old one is removed and the router's
    /// connection tracking flushed, as when an ISP renumbers a line. Returns the new one.
    /// Its home's sockets keep their ports (while free) behind the new address; peers
    /// must send to it before anything from it gets through their own routers.
    pub fn change_public_addr(&mut self, i: usize) -> Ipv4Addr {
        require_tool("conntrack", "conntrack");
        let new = public(self.next_public.get());
        self.next_public.set(self.next_public.get() + 1);
        let router = &mut self.routers[i];
        let old = router.machine.addr();
        let ns = &router.machine.netns;
        // Old first: deleting a primary address would take a secondary in its subnet along.
        ns.ip(&[
            "addr",
            "del",
            &format!("{old}/{INTERNET_PREFIX}"),
            "dev",
            "wan",
        ]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{new}/{INTERNET_PREFIX}"),
            "dev",
            "wan",
        ]);
        // Masquerade forgets the old address's mappings on its own; the flush makes the
        // router forget everything else it tracked too, like a reconnecting modem.
        ns.run("conntrack", &["-F"], None);
        router.machine.addrs[0] = new;
        new
    }

    /// Datagrams router `i` dropped because they came unsolicited from the internet.
    pub fn wan_drops(&self, i: usize) -> u64 {
        let listing = self.routers[i].machine.netns.run(
            "nft",
            &["list", "chain", "inet", "router", "input"],
            None,
        );
        listing
            .lines()
            .find(|l| l.contains("counter") && l.trim_end().ends_with("drop"))
            .and_then(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "packets")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or_else(|| panic!("no drop counter in router {i}'s input chain:\n{listing}"))
    }

    /// Start `n` Mainline DHT nodes on hosts of their own, linked into a full mesh, and
    /// return once each holds all the others.
    pub fn dht_nodes(&self, n: usize) -> DhtNodes {
        assert!(n >= 1, "at least one DHT node");
        let mut nodes = DhtNodes {
            procs: Vec::new(),
            hosts: Vec::new(),
        };
        // One after the other: a node links only to nodes whose ID is final (see the
        // module's traps), and tells the earlier ones about itself once its own is.
        for k in 0..n {
            let host = self.host(&format!("dht{k}"), 1);
            let bind = host.endpoint(DHT_PORT).to_string();
            let mut proc = host.python("dht_node.py", &["serve", "--bind", &bind]);
            proc.expect("dht node ready on", READY);
            for (earlier, earlier_host) in nodes.procs.iter_mut().zip(&nodes.hosts) {
                proc.type_line(&format!("link {}", earlier_host.endpoint(DHT_PORT)));
                earlier.type_line(&format!("link {bind}"));
            }
            nodes.procs.push(proc);
            nodes.hosts.push(host);
        }
        let others = format!("dht routing table: {} nodes", n - 1);
        for proc in &mut nodes.procs {
            if n > 1 {
                proc.expect(&others, READY);
            }
        }
        nodes
    }

    /// Start coturn (STUN and TURN over UDP, long-term credentials [`Coturn::USER`] /
    /// [`Coturn::PASSWORD`], realm [`Coturn::REALM`]) on a host with two addresses, so it
    /// also answers RFC 5780 change requests; return once both addresses answer STUN.
    pub fn coturn(&self) -> Coturn {
        require_tool("turnserver", "coturn");
        let host = self.host("turn", 2);
        let scratch = Scratch::new("coturn");
        let (a, b) = (host.addrs[0].to_string(), host.addrs[1].to_string());
        let user = format!("{}:{}", Coturn::USER, Coturn::PASSWORD);
        let pid = scratch.file("turnserver.pid");
        let db = scratch.file("turndb");
        let mut proc = host.spawn(
            "turnserver",
            &[
                "-n",
                "--listening-ip",
                &a,
                "--listening-ip",
                &b,
                "--relay-ip",
                &a,
                "--min-port",
                "49160",
                "--max-port",
                "49200",
                "--lt-cred-mech",
                "--user",
                &user,
                "--realm",
                Coturn::REALM,
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allowed-peer-ip=203.0.113.0-203.0.113.255",
                // Its own files, not the package's shared ones: parallel tests each run one.
                "--pidfile",
                &pid,
                "--userdb",
                &db,
                "--log-file",
                "stdout",
                "--simple-log",
            ],
        );
        // Ready when it answers: a STUN request from its own namespace to each address.
        let mut probe = host.probe(0);
        for server in host
            .addrs
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, STUN_PORT))
        {
            if probe.try_stun(server, READY).is_none() {
                proc.read_for(Duration::from_millis(100));
                panic!(
                    "coturn did not answer STUN on {server} within {READY:?}; its output:\n{}",
                    proc.seen.join("\n")
                );
            }
        }
        Coturn {
            proc,
            host,
            _scratch: scratch,
        }
    }

    /// Run miniupnpd (UPnP-IGD and NAT-PMP towards the LAN) on router `i`; it learns its
    /// public address from `stun` (see the module's traps). Returns once port forwarding
    /// is on and NAT-PMP listens.
    pub fn miniupnpd(&self, i: usize, stun: &Coturn) -> Miniupnpd {
        require_tool("miniupnpd", "miniupnpd miniupnpd-nftables");
        let router = &self.routers[i];
        let scratch = Scratch::new("miniupnpd");
        let conf = scratch.file("miniupnpd.conf");
        let lan_net = format!("10.{}.0.0/24", i + 1);
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan\n\
                 listening_ip=lan\n\
                 http_port={UPNP_HTTP_PORT}\n\
                 enable_natpmp=yes\n\
                 enable_upnp=yes\n\
                 ipv6_disable=yes\n\
                 secure_mode=yes\n\
                 system_uptime=no\n\
                 uuid=3a1e9d0c-5d5b-4c8e-9b1a-0d1e7c2b4f1{i}\n\
                 ext_perform_stun=yes\n\
                 ext_stun_host={stun_ip}\n\
                 ext_stun_port={STUN_PORT}\n\
                 upnp_table_name=router\n\
                 upnp_nat_table_name=router\n\
                 upnp_forward_chain=upnp_forward\n\
                 upnp_nat_chain=upnp_prerouting\n\
                 upnp_nat_postrouting_chain=upnp_postrouting\n\
                 allow 1024-65535 {lan_net} 1024-65535\n\
                 deny 0-65535 0.0.0.0/0 0-65535\n",
                stun_ip = stun.addr().ip(),
            ),
        )
        .expect("write miniupnpd.conf");
        let pid = scratch.file("miniupnpd.pid");
        // -d: stay in the foreground and log to stderr.
        let mut proc = router
            .machine
            .spawn("miniupnpd", &["-d", "-f", &conf, "-P", &pid]);
        proc.expect("Port forwarding is now enabled", READY);
        proc.expect("Listening for NAT-PMP", READY);
        Miniupnpd {
            proc,
            _scratch: scratch,
            url: format!("http://{}:{UPNP_HTTP_PORT}/rootDesc.xml", router.lan_addr()),
            gateway: router.lan_addr(),
        }
    }

    fn add_router(&self, i: usize, nat: Nat) -> Router {
        let n = i + 1;
        let ns = Netns::new(&format!("{}-r{n}", self.tag));
        let home_ns = Netns::new(&format!("{}-h{n}", self.tag));
        let wan = public(10 + n as u8);
        let lan = Ipv4Addr::new(10, n as u8, 0, 1);
        let home_addr = Ipv4Addr::new(10, n as u8, 0, 2);

        let port = format!("r{n}");
        ns.veth("wan", &self.internet, &port);
        self.internet.ip(&["link", "set", &port, "master", "br0"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{wan}/{INTERNET_PREFIX}"),
            "dev",
            "wan",
        ]);
        ns.veth("lan", &home_ns, "eth0");
        ns.ip(&["addr", "add", &format!("{lan}/24"), "dev", "lan"]);
        home_ns.ip(&["addr", "add", &format!("{home_addr}/24"), "dev", "eth0"]);
        home_ns.ip(&["route", "add", "default", "via", &lan.to_string()]);
        ns.sysctl("net.ipv4.ip_forward=1");
        let masquerade = match nat {
            Nat::PortPreserving => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        // `forw`, not `fwd`: that is a reserved word in nft.
        let rules = format!(
            r#"table inet router {{
    chain upnp_forward {{
    }}
    chain upnp_prerouting {{
    }}
    chain upnp_postrouting {{
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        jump upnp_prerouting
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        jump upnp_postrouting
        oifname "wan" {masquerade}
    }}
    chain forw {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" accept
        jump upnp_forward
    }}
    chain input {{
        type filter hook input priority filter; policy drop;
        iifname != "wan" accept
        ct state established,related accept
        jump upnp_forward
        counter drop
    }}
}}
"#
        );
        ns.run("nft", &["-f", "-"], Some(&rules));
        Router {
            machine: Machine {
                netns: ns,
                addrs: vec![wan],
            },
            lan,
            nat,
            home: Machine {
                netns: home_ns,
                addrs: vec![home_addr],
            },
        }
    }
}

/// One UDP socket in a namespace (`tests/nat/udp_probe.py`), driven line by line: send
/// from it, ask STUN or NAT-PMP from it, see what it received and from where.
pub struct Probe {
    /// The process; its lines: `from IP:PORT TEXT`, `stun ... mapped IP:PORT`, `natpmp ...`.
    pub proc: Proc,
    bound: SocketAddrV4,
}

impl Probe {
    /// The socket's own address.
    pub fn bound(&self) -> SocketAddrV4 {
        self.bound
    }

    /// Send `text` (one line) to `to`.
    pub fn send(&mut self, to: SocketAddrV4, text: &str) {
        self.proc.type_line(&format!("send {to} {text}"));
    }

    /// Wait for a datagram from `from` (starting with `text`, if not empty) that no earlier
    /// wait matched; its text, or `None` after `timeout`.
    pub fn received(
        &mut self,
        from: SocketAddrV4,
        text: &str,
        timeout: Duration,
    ) -> Option<String> {
        let prefix = format!("from {from} ");
        self.proc
            .wait_for(&format!("{prefix}{text}"), timeout)
            .map(|line| line[line.find(&prefix).unwrap_or(0) + prefix.len()..].to_owned())
    }

    /// Every datagram received so far (after reading for `period`): sender and text.
    pub fn all_received(&mut self, period: Duration) -> Vec<(String, String)> {
        self.proc.read_for(period);
        self.proc
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix("from "))
            .filter_map(|l| l.split_once(' '))
            .map(|(from, text)| (from.to_owned(), text.to_owned()))
            .collect()
    }

    /// The address `server` sees this socket as (STUN Binding), asking again every 200 ms;
    /// `None` after `timeout`.
    pub fn try_stun(&mut self, server: SocketAddrV4, timeout: Duration) -> Option<SocketAddrV4> {
        let deadline = Instant::now() + timeout;
        let needle = format!("stun {server} mapped ");
        while Instant::now() < deadline {
            self.proc.type_line(&format!("stun {server}"));
            if let Some(line) = self.proc.wait_for(&needle, Duration::from_millis(200)) {
                return line[line.find(&needle).unwrap_or(0) + needle.len()..]
                    .parse()
                    .ok();
            }
        }
        None
    }

    /// Like [`Probe::try_stun`], but panic when no answer comes within [`READY`].
    pub fn stun(&mut self, server: SocketAddrV4) -> SocketAddrV4 {
        self.try_stun(server, READY)
            .unwrap_or_else(|| panic!("no STUN answer from {server} within {READY:?}"))
    }

    /// Ask NAT-PMP at `gateway` to map UDP `public` (a wish; 0: any) to this socket's port
    /// for `lifetime` seconds; the public port granted.
    pub fn natpmp_map(&mut self, gateway: Ipv4Addr, public: u16, lifetime: u32) -> u16 {
        let private = self.bound.port();
        self.proc
            .type_line(&format!("natpmp {gateway} {private} {public} {lifetime}"));
        let line = self.proc.expect("natpmp ", READY);
        // "natpmp mapped PRIVATE -> PUBLIC for LIFETIME s"
        line.split(" -> ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("NAT-PMP refused the mapping: {line}"))
    }
}

/// Mainline DHT nodes (libtorrent, `tests/nat/dht_node.py serve`), all knowing each other.
pub struct DhtNodes {
    // Processes before hosts: killed before their namespaces go.
    procs: Vec<Proc>,
    hosts: Vec<Machine>,
}

/// What a BEP44 put reported.
#[derive(Clone, Debug)]
pub struct DhtPut {
    /// The item's public key, hex: what a get asks for (with the salt).
    pub key: String,
    /// The sequence number stored.
    pub seq: u64,
    /// How many nodes stored it.
    pub stored: usize,
}

impl DhtNodes {
    /// The nodes' addresses, to bootstrap from.
    pub fn addrs(&self) -> Vec<SocketAddrV4> {
        self.hosts.iter().map(|h| h.endpoint(DHT_PORT)).collect()
    }

    /// The node processes (e.g. to read their routing table lines).
    pub fn procs(&mut self) -> &mut [Proc] {
        &mut self.procs
    }

    /// Put a BEP44 mutable item (`value` as a bencoded string, signed with the Ed25519 key
    /// from `seed`) from a libtorrent client on `from`, port `port`, bootstrapped from
    /// these nodes.
    pub fn put(
        &self,
        from: &Machine,
        port: u16,
        seed: &[u8; 32],
        salt: &str,
        value: &str,
    ) -> DhtPut {
        let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let mut args = vec![
            "put".to_owned(),
            "--bind".to_owned(),
            from.endpoint(port).to_string(),
            "--seed".to_owned(),
            seed,
            "--salt".to_owned(),
            salt.to_owned(),
            "--value".to_owned(),
            value.to_owned(),
        ];
        args.extend(self.node_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = from.python("dht_node.py", &args);
        let key = proc.expect("dht public key ", READY);
        let done = proc.expect("dht put done seq ", READY);
        // "dht put done seq N on K nodes"
        let words: Vec<&str> = done.split_whitespace().collect();
        DhtPut {
            key: key.trim_start_matches("dht public key ").to_owned(),
            seq: words.get(4).and_then(|w| w.parse().ok()).unwrap_or(0),
            stored: words.get(6).and_then(|w| w.parse().ok()).unwrap_or(0),
        }
    }

    /// Get the BEP44 mutable item `key`/`salt` from a libtorrent client on `from`, port
    /// `port`, retrying lookups until `timeout`: its sequence number and value, or `None`.
    pub fn get(
        &self,
        from: &Machine,
        port: u16,
        key: &str,
        salt: &str,
        timeout: Duration,
    ) -> Option<(u64, String)> {
        let mut args = vec![
            "get".to_owned(),
            "--bind".to_owned(),
            from.endpoint(port).to_string(),
            "--key".to_owned(),
            key.to_owned(),
            "--salt".to_owned(),
            salt.to_owned(),
            "--timeout".to_owned(),
            timeout.as_secs_f64().to_string(),
        ];
        args.extend(self.node_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = from.python("dht_node.py", &args);
        // A little longer than the script's own deadline, which it reports by exiting.
        let line = proc.wait_for("dht got seq ", timeout + Duration::from_secs(5))?;
        // "dht got seq N value TEXT"
        let rest = line.trim_start_matches("dht got seq ");
        let (seq, value) = rest.split_once(" value ")?;
        Some((seq.parse().ok()?, value.to_owned()))
    }

    fn node_args(&self) -> Vec<String> {
        self.addrs()
            .iter()
            .flat_map(|a| ["--node".to_owned(), a.to_string()])
            .collect()
    }
}

/// coturn on a host of its own with two addresses (RFC 5780 needs them).
pub struct Coturn {
    // Process, then namespace, then files.
    /// The turnserver process (its log lines).
    pub proc: Proc,
    host: Machine,
    _scratch: Scratch,
}

impl Coturn {
    /// The TURN user name.
    pub const USER: &'static str = "duet";
    /// The TURN user's password.
    pub const PASSWORD: &'static str = "duet-relay";
    /// The TURN realm.
    pub const REALM: &'static str = "duet";

    /// STUN/TURN on its first address.
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host.addrs[0], STUN_PORT)
    }

    /// STUN/TURN on its second address: a second destination for mapping tests.
    pub fn other_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host.addrs[1], STUN_PORT)
    }

    /// Its host.
    pub fn host(&self) -> &Machine {
        &self.host
    }
}

/// miniupnpd running on a router.
pub struct Miniupnpd {
    /// The miniupnpd process (its log lines arrive as `stderr: ...`).
    pub proc: Proc,
    _scratch: Scratch,
    url: String,
    gateway: Ipv4Addr,
}

impl Miniupnpd {
    /// The IGD's description URL, for `upnpc -u` (which skips discovery; see the traps).
    pub fn root_desc_url(&self) -> &str {
        &self.url
    }

    /// Where NAT-PMP listens (port 5351): the router's LAN address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
}

/// Poll `check` every 50 ms until it holds; panic with `what` after `timeout`.
pub fn poll_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Counters and kernel state have no event to wait on; a short bounded poll.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory for a service's own files, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(what: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "duet-nat-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    fn file(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
