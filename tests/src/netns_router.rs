//! A router network namespace between two peer namespaces, with faults in the router's
//! forward path: nftables drops and duplicates, an NFQUEUE consumer delays (reorders).
//!
//! ```text
//!  ns A  eth0 10.77.1.2 ── va 10.77.1.1  ns R (router)  10.77.2.1 vb ── eth0 10.77.2.2  ns B
//!                                │ forward: nft drop / dup (priority -10)
//!                                │          iptables -j NFQUEUE 0 --queue-bypass → consumer
//! ```
//!
//! netem does not exist on this kernel, hence nftables for loss (`numgen random mod 100 <
//! N drop`) and duplication (`dup to ADDR device DEV`), and for reordering iptables'
//! NFQUEUE target plus a consumer that holds some packets back before accepting them.
//! Faults sit in the forward chain, between the peers: dropping in a sender's own output
//! chain would turn into EPERM from `sendto`.
//!
//! This module builds the namespaces and the rules; the NFQUEUE consumer lives with the
//! test that uses it (`tests/netpath.rs`), since its `nfq` crate is a dev-dependency. The
//! rule uses `--queue-bypass`: with no consumer bound, packets pass unqueued.
//!
//! Root only. Namespaces get names unique to the process and the guard, and [`RouterNet`]'s
//! `Drop` stops the consumer and deletes them, also when a test panics.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// What the router's nftables rules do to UDP it forwards, in percent.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Dropped (`numgen random`: the kernel's randomness, not seeded).
    pub loss: u32,
    /// Of what was not dropped, forwarded twice (`dup`).
    pub duplicate: u32,
}

/// One peer namespace: its name and its address.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// Its address on its link to the router.
    pub addr: Ipv4Addr,
}

impl Peer {
    /// A command run inside this namespace: `ip netns exec NS program ...`.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

/// Three namespaces, two links, faults in the middle; torn down on drop.
pub struct RouterNet {
    /// Peer A, 10.77.1.2.
    pub a: Peer,
    /// Peer B, 10.77.2.2.
    pub b: Peer,
    /// The router namespace's name.
    pub router: String,
    created: Vec<String>,
}

/// Why the kernel-path tests cannot run here, if they cannot: they need root.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:	real	effective	saved	fs"
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    if effective.as_deref() != Some("0") {
        return Some("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN".into());
    }
    None
}

/// Run a command; panic with its output if it fails.
fn run(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {args:?}: {e} (the kernel-path tests need iproute2, nftables and \
                 iptables: apt-get install -y nftables iptables)"
            )
        });
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a command and return its standard output.
fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RouterNet {
    /// Build the namespaces, links, routes and faults.
    pub fn create(faults: Faults) -> RouterNet {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "duet{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let name = |role: &str| format!("{tag}{role}");
        let (ns_a, ns_r, ns_b) = (name("a"), name("r"), name("b"));
        let mut net = RouterNet {
            a: Peer {
                ns: ns_a.clone(),
                addr: Ipv4Addr::new(10, 77, 1, 2),
            },
            b: Peer {
                ns: ns_b.clone(),
                addr: Ipv4Addr::new(10, 77, 2, 2),
            },
            router: ns_r.clone(),
            created: Vec::new(),
        };
        // From here on a panic tears down whatever was created.
        for ns in [&ns_a, &ns_r, &ns_b] {
            run(&["ip", "netns", "add", ns], None);
            net.created.push(ns.clone());
            run(&["ip", "-n", ns, "link", "set", "lo", "up"], None);
        }
        for (peer, dev, side) in [(&ns_a, "va", 1), (&ns_b, "vb", 2)] {
            let (router_ip, peer_ip) = (format!("10.77.{side}.1"), format!("10.77.{side}.2"));
            run(
                &[
                    "ip", "-n", &ns_r, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
                    "netns", peer,
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "-n",
                    &ns_r,
                    "addr",
                    "add",
                    &format!("{router_ip}/24"),
                    "dev",
                    dev,
                ],
                None,
            );
            run(&["ip", "-n", &ns_r, "link", "set", dev, "up"], None);
            run(
                &[
                    "ip",
                    "-n",
                    peer,
                    "addr",
                    "add",
                    &format!("{peer_ip}/24"),
                    "dev",
                    "eth0",
                ],
                None,
            );
            // The peer's link cuts a segmented send (UDP GSO) into datagrams, as a network
            // card does before anything reaches the wire: the router sees, drops, duplicates
            // and reorders datagrams, as one on a real path would, not the up to 64 KiB a
            // process may hand its own kernel in one send.
            run(
                &["ip", "-n", peer, "link", "set", "eth0", "gso_max_segs", "1"],
                None,
            );
            run(&["ip", "-n", peer, "link", "set", "eth0", "up"], None);
            run(
                &[
                    "ip", "-n", peer, "route", "add", "default", "via", &router_ip,
                ],
                None,
            );
        }
        run(
            &[
                "ip",
                "netns",
                "exec",
                &ns_r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        );
        // Loss first, then duplication of what survived; both before iptables' FORWARD
        // chain (priority 0), so dropped packets are never queued. The `dup` copies leave
        // through the output path, not this chain: they are neither dropped nor queued.
        let rules = format!(
            "table ip duet_chaos {{
                chain forward {{
                    type filter hook forward priority -10; policy accept;
                    meta l4proto udp numgen random mod 100 < {loss} counter drop
                    meta l4proto udp ip daddr 10.77.2.2 numgen random mod 100 < {dup} counter dup to 10.77.2.2 device \"vb\"
                    meta l4proto udp ip daddr 10.77.1.2 numgen random mod 100 < {dup} counter dup to 10.77.1.2 device \"va\"
                }}
            }}
            ",
            loss = faults.loss,
            dup = faults.duplicate,
        );
        run(
            &["ip", "netns", "exec", &ns_r, "nft", "-f", "-"],
            Some(&rules),
        );
        run(
            &[
                "ip",
                "netns",
                "exec",
                &ns_r,
                "iptables",
                "-A",
                "FORWARD",
                "-p",
                "udp",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "0",
                "--queue-bypass",
            ],
            None,
        );
        net
    }

    /// The router namespace's file, for `setns(2)`.
    pub fn router_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.router))
    }

    /// Packets counted by the router's nftables rules: (dropped, duplicated).
    pub fn nft_counters(&self) -> (u64, u64) {
        let listing = output(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "nft",
            "list",
            "table",
            "ip",
            "duet_chaos",
        ]);
        let packets = |line: &str| -> u64 {
            line.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let dropped = listing
            .lines()
            .filter(|l| l.contains(" drop"))
            .map(packets)
            .sum();
        let duplicated = listing
            .lines()
            .filter(|l| l.contains(" dup to "))
            .map(packets)
            .sum();
        (dropped, duplicated)
    }
}

impl Drop for RouterNet {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
