//! Network namespaces for the tests that need root (TAP devices, bridges, QEMU on a tap).
//!
//! Each test makes its own namespaces, uniquely named `duet-TAG-PID-N`, and a [`Netns`]
//! deletes its namespace when dropped, also when the test panics; the devices in it (taps,
//! bridges) go with it. Nothing here touches the machine's own namespace: every `ip`
//! command names the namespace (`ip -n NS ...`) and programs run inside it through
//! `ip netns exec NS`. Declare a `Netns` before the processes that run in it, so they are
//! dropped (killed) first.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::peers::require_tool;
use crate::process::{Home, Proc, duet_bin};

/// Every namespace these helpers create starts with this.
const PREFIX: &str = "duet-";

/// Whether the tests run as root (effective uid 0), read from `/proc/self/status` so no
/// libc binding is needed.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .to_owned();
            // Real, effective, saved, filesystem.
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `true` (and a printed reason) when `test` cannot run because it needs root: the test
/// then returns early, skipped rather than failed.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!(
        "skipping {test}: it needs root (network namespaces, TAP devices); CI runs it as root"
    );
    true
}

/// A network namespace of one test, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create `duet-TAG-PID-N` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        require_tool("ip", "iproute2");
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        run_ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `ip -n NS ARGS...`; panic with its error output if it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all);
    }

    /// The output of `ip -n NS ARGS...`.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("cannot run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `program ARGS...` inside the namespace to completion, with `input` on its
    /// standard input; panic with its output if it fails. Returns its standard output.
    pub fn run(&self, program: &str, args: &[&str], input: Option<&str>) -> String {
        let mut child = self
            .command(program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("cannot feed {program} in {}: {e}", self.name));
        }
        let out = child.wait_with_output().expect("wait for a command");
        assert!(
            out.status.success(),
            "{program} {} in {} failed: {}{}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Set a sysctl of the namespace (`net.*` keys are per namespace), e.g.
    /// `net.ipv4.ip_forward=1`.
    pub fn sysctl(&self, setting: &str) {
        self.run("sysctl", &["-qw", setting], None);
    }

    /// A veth pair: `name` here, `peer_name` in `peer`, both up.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ]);
        self.ip(&["link", "set", name, "up"]);
        peer.ip(&["link", "set", peer_name, "up"]);
    }

    /// A TAP device `name` in the namespace, up (it shows NO-CARRIER until a program
    /// attaches to it).
    pub fn tap(&self, name: &str) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        self.ip(&["link", "set", name, "up"]);
    }

    /// A bridge `name` in the namespace joining `ports`, everything up.
    pub fn bridge(&self, name: &str, ports: &[&str]) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        for port in ports {
            self.ip(&["link", "set", port, "master", name]);
        }
        self.ip(&["link", "set", name, "up"]);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .env_remove("DUET_CONFIG_DIR");
        command
    }

    /// Spawn `duet --config-dir HOME ARGS...` inside the namespace (see [`Proc`]).
    pub fn duet(&self, home: &Home, args: &[&str]) -> Proc {
        let args = home.args(args);
        Proc::spawn(
            self.command(duet_bin()).args(&args),
            &format!("[{}] duet {}", self.name, args.join(" ")),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never panic here: a failing test is already unwinding.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
