//! Real `duet` processes for end-to-end tests: build once, spawn, read output lines with
//! a deadline, type into stdin, and kill on drop so a failing test leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
}

/// The `duet` every helper here runs, chosen once per process.
static DUET_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Path of the `duet` the tests run: the one given to [`use_duet_bin`], else a debug build
/// made once per test process with the cargo running the tests.
///
/// Either way it is a two-line shell script beside the binary that runs it with internet
/// reach off (`DUET_DHT=off`, no STUN servers) unless the test set `DUET_DHT`,
/// `DUET_DHT_BOOTSTRAP` or `DUET_STUN` itself: duet's defaults are the public DHT bootstrap
/// nodes and STUN servers, and tests send traffic only to loopback and to namespaces they
/// made.
pub fn duet_bin() -> PathBuf {
    DUET_BIN
        .get_or_init(|| offline_wrapper(&cargo_bin("duet-host", "duet")))
        .clone()
}

/// Run every `duet` of this process from `path` (a benchmark's release build) instead of the
/// debug build. Only the first choice counts: false when a binary was already chosen.
pub fn use_duet_bin(path: PathBuf) -> bool {
    DUET_BIN.set(offline_wrapper(&path)).is_ok()
}

/// Write the wrapper described at [`duet_bin`] beside `bin` (atomically: tests in other
/// processes may be writing the same one).
fn offline_wrapper(bin: &Path) -> PathBuf {
    let script = format!(
        "#!/bin/sh
\
         if [ -z \"${{DUET_DHT+x}}${{DUET_DHT_BOOTSTRAP+x}}\" ]; then export DUET_DHT=off; fi
\
         if [ -z \"${{DUET_STUN+x}}\" ]; then export DUET_STUN=; fi
\
         exec '{}' \"$@\"
",
        bin.display()
    );
    let path = bin.with_file_name("duet-tested");
    let temp = bin.with_file_name(format!("duet-tested.{}", std::process::id()));
    std::fs::write(&temp, script).expect("write the duet wrapper");
    let mut perms = std::fs::metadata(&temp)
        .expect("wrapper metadata")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&temp, perms).expect("make the wrapper executable");
    std::fs::rename(&temp, &path).expect("put the wrapper in place");
    path
}

/// Build `bin` of `package` in the workspace (debug) and return the executable's path.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    build_bin(package, bin, false)
}

/// Build `bin` of `package` with the release profile and return the executable's path:
/// what benchmarks of the real binaries run, so they never time a stale or debug build.
pub fn cargo_bin_release(package: &str, bin: &str) -> PathBuf {
    build_bin(package, bin, true)
}

/// Build `bin` of `package` (debug) for another target, such as `x86_64-pc-windows-gnu`,
/// and return the executable's path (under the same target directory as every build here).
pub fn cargo_bin_for(package: &str, bin: &str, target: &str) -> PathBuf {
    build(package, bin, false, Some(target))
}

fn build_bin(package: &str, bin: &str, release: bool) -> PathBuf {
    build(package, bin, release, None)
}

fn build(package: &str, bin: &str, release: bool, target: Option<&str>) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-p", package, "--bin", bin];
    if release {
        args.push("--release");
    }
    if let Some(target) = target {
        args.extend(["--target", target]);
    }
    args.push("--message-format=json-render-diagnostics");
    let output = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the binary under test");
    assert!(output.status.success(), "building {package}/{bin} failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|l| l.contains(&format!("\"name\":\"{bin}\"")))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = l[start..].find('"')? + start;
            Some(PathBuf::from(&l[start..end]))
        })
        .unwrap_or_else(|| panic!("cargo did not report the executable of {bin}"))
}

/// A UDP port on 127.0.0.1 that was free a moment ago (the OS picks it, so parallel tests
/// never collide on a fixed number).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port on loopback")
}

/// A config directory of its own for one duet in a test (identity and peers), removed when
/// dropped.
pub struct Home {
    path: PathBuf,
}

impl Home {
    /// A fresh, empty config directory in the system's temporary directory.
    pub fn new(tag: &str) -> Home {
        Home::new_in(&std::env::temp_dir(), tag)
    }

    /// A fresh, empty config directory under `parent` (a benchmark keeps its history files
    /// on the disk the workspace is on, not on a temporary directory that may be in memory).
    pub fn new_in(parent: &Path, tag: &str) -> Home {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("duet-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Home { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `duet --config-dir HOME ARGS...` as a vector of arguments.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let dir = self.path.to_str().expect("temp dir is UTF-8");
        let mut all = vec!["--config-dir", dir];
        all.extend_from_slice(args);
        all
    }

    /// This duet's public key (created on first use).
    pub fn key(&self) -> String {
        let out = Command::new(duet_bin())
            .args(self.args(&["id"]))
            .output()
            .expect("duet id");
        assert!(
            out.status.success(),
            "duet id failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Add `other` to this duet's peers as `name`, at `addr` if given.
    pub fn add_peer(&self, name: &str, other: &Home, addr: Option<&str>) {
        let key = other.key();
        let mut args = vec!["pair", "add", name, &key];
        if let Some(addr) = addr {
            args.extend(["--addr", addr]);
        }
        let out = Command::new(duet_bin())
            .args(self.args(&args))
            .output()
            .expect("duet pair add");
        assert!(
            out.status.success(),
            "pair add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `duet --config-dir HOME ARGS...` to completion; its exit code and stdout.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(duet_bin())
            .args(self.args(args))
            .output()
            .expect("run duet");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Spawn `duet --config-dir HOME ARGS...`.
    pub fn duet(&self, args: &[&str]) -> Proc {
        Proc::duet(&self.args(args))
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Two duets paired with each other: `a` calls the other `b` (at `b_addr`) and vice versa.
pub fn paired(a_addr: Option<&str>, b_addr: Option<&str>) -> (Home, Home) {
    pair_homes(Home::new("a"), Home::new("b"), a_addr, b_addr)
}

/// Pair two given homes as [`paired`] does: `a` calls the other `b` and vice versa.
pub fn pair_homes(a: Home, b: Home, a_addr: Option<&str>, b_addr: Option<&str>) -> (Home, Home) {
    a.add_peer("b", &b, b_addr);
    b.add_peer("a", &a, a_addr);
    (a, b)
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Send each line read from `from` (prefixed) until it ends. Bytes that are not UTF-8 are
/// replaced rather than ending the reading: an unread pipe would stall the process.
fn forward_lines(from: impl std::io::Read, prefix: &str, to: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                let line = format!("{prefix}{}", String::from_utf8_lossy(&buf));
                if to.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// A running process whose output lines arrive on a channel.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
    /// Which of `seen` an `expect` already matched.
    matched: Vec<bool>,
    name: String,
}

impl Proc {
    /// Spawn `duet ARGS` with piped stdin and stdout (stderr is merged into the lines).
    pub fn duet(args: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(duet_bin()).args(args),
            &format!("duet {}", args.join(" ")),
        )
    }

    /// Spawn any command the same way.
    pub fn spawn(command: &mut Command, name: &str) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let tx2 = tx.clone();
        thread::spawn(move || forward_lines(out, "", &tx));
        thread::spawn(move || forward_lines(err, "stderr: ", &tx2));
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            matched: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Wait for a line containing `needle` that no earlier `expect` matched (lines already
    /// read count, so expectations need not be in output order); panic with everything seen
    /// after `timeout`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for(needle, timeout).unwrap_or_else(|| {
            panic!(
                "{}: no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                self.name,
                self.seen.join("\n")
            )
        })
    }

    /// Like [`Proc::expect`], but `None` after `timeout` (or when the output ended) instead
    /// of a panic: for waits whose failure is an answer, such as "nothing got through".
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        if let Some(i) =
            (0..self.seen.len()).find(|&i| !self.matched[i] && self.seen[i].contains(needle))
        {
            self.matched[i] = true;
            return Some(self.seen[i].clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line.clone());
                    self.matched.push(hit);
                    if hit {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// Read whatever the process prints within `period` into [`Proc::seen`], e.g. before
    /// checking that something did *not* arrive.
    pub fn read_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
            self.matched.push(false);
        }
    }

    /// Type a line.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .expect("cannot write to the process");
    }

    /// Take stdin, e.g. to write from another thread; dropping it ends the input.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin already taken")
    }

    /// Close stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Wait for the process to exit; panic after `timeout`. Remaining output is kept in `seen`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait failed") {
                // Drain what is left so failure messages are complete.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                    self.matched.push(false);
                }
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            // Short bounded wait: process exit has no readiness event we can block on here.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the process at once (SIGKILL: no clean-up of any kind), and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep what it printed before dying.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
            self.seen.push(line);
            self.matched.push(false);
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
