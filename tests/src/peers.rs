//! The other side of duet's interoperability tests: the tutorial's Python programs
//! (`tests/peers/`), raw-byte tools such as socat and `nc -u`, and a tmux terminal that
//! drives duet's interactive line editor. Every peer waits for its own readiness line, and
//! every process or tmux server is ended when its handle is dropped, even on failure.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{Proc, workspace_root};

/// The system Python: fast to start (the `python3` on PATH may be a slow pyenv shim).
pub const PYTHON: &str = "/usr/bin/python3";

/// Path of a program in `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    workspace_root().join("tests").join("peers").join(name)
}

/// Panic with an install hint when `tool` is not on PATH, so a missing package reads as a
/// missing package rather than as a duet failure.
pub fn require_tool(tool: &str, apt_package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: apt-get install -y --no-install-recommends {apt_package}"
    );
}

/// Run a Python program from `tests/peers/` with UTF-8 standard streams.
fn python_peer(script: &str, args: &[&str]) -> Proc {
    let path = peer_script(script);
    let mut command = Command::new(PYTHON);
    command
        .arg(&path)
        .args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Proc::spawn(&mut command, &format!("{script} {}", args.join(" ")))
}

/// The port in a tutorial program's readiness line `listening on ('0.0.0.0', PORT)`.
fn ready_port(proc: &mut Proc, timeout: Duration) -> u16 {
    let line = proc.expect("listening on (", timeout);
    line.rsplit(", ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no port in readiness line {line:?}"))
}

/// Start `tutorial_recv.py` on a port the OS picks; it prints `COUNT` datagrams decoded with
/// `encoding`. Returns it, ready, and its port.
pub fn tutorial_recv(encoding: &str, count: usize, timeout: Duration) -> (Proc, u16) {
    let mut proc = python_peer("tutorial_recv.py", &["0", encoding, &count.to_string()]);
    let port = ready_port(&mut proc, timeout);
    (proc, port)
}

/// Start `tutorial_send.py` on a port the OS picks, sending each line typed into it to
/// `127.0.0.1:peer_port` in `encoding`. Returns it, ready, and its own port.
pub fn tutorial_send(peer_port: u16, encoding: &str, timeout: Duration) -> (Proc, u16) {
    let mut proc = python_peer(
        "tutorial_send.py",
        &["0", "127.0.0.1", &peer_port.to_string(), encoding],
    );
    let port = ready_port(&mut proc, timeout);
    (proc, port)
}

/// Split a line the tutorial receiver printed, `('127.0.0.1', 5555) TEXT`, into the
/// sender's address and the text.
pub fn tutorial_message(line: &str) -> Option<(SocketAddr, &str)> {
    let rest = line.strip_prefix("('")?;
    let (ip, rest) = rest.split_once("', ")?;
    let (port, text) = rest.split_once(") ")?;
    Some((format!("{ip}:{port}").parse().ok()?, text))
}

/// Wait for the next datagram the tutorial receiver printed; return the sender's port and
/// the text.
pub fn tutorial_next(recv: &mut Proc, timeout: Duration) -> (u16, String) {
    let line = recv.expect("('127.0.0.1', ", timeout);
    let (addr, text) =
        tutorial_message(&line).unwrap_or_else(|| panic!("unparsable line {line:?}"));
    (addr.port(), text.to_owned())
}

/// The text of a message line duet printed, `HH:MM:SS FROM: TEXT`, if it came from `from`
/// (an address in legacy mode, `NAME@ADDRESS` from a paired peer).
pub fn duet_message<'a>(line: &'a str, from: &str) -> Option<&'a str> {
    let (clock, rest) = line.split_once(' ')?;
    let is_clock = clock.len() == 8 && clock.bytes().filter(|b| *b == b':').count() == 2;
    if !is_clock {
        return None;
    }
    rest.strip_prefix(from)?.strip_prefix(": ")
}

/// A process whose standard output is read as raw bytes (socat and `nc -u` write a
/// datagram's bytes as they are, with no line ending), and whose standard error is read as
/// lines (their diagnostics, including readiness). Killed on drop.
pub struct RawProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<String>,
    /// All standard output so far.
    pub out: Vec<u8>,
    /// All standard error lines so far.
    pub err: Vec<String>,
    name: String,
}

impl RawProc {
    /// Spawn `program ARGS` with piped standard streams.
    pub fn spawn(program: &str, args: &[&str]) -> RawProc {
        let name = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (out_tx, stdout) = mpsc::channel();
        let (err_tx, stderr) = mpsc::channel();
        let mut out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if out_tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        RawProc {
            child,
            stdin,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
            name,
        }
    }

    fn report(&self) -> String {
        format!(
            "{}: stdout so far {:?}\nstderr so far:\n{}",
            self.name,
            String::from_utf8_lossy(&self.out),
            self.err.join("\n")
        )
    }

    /// Wait for a standard error line containing `needle`.
    pub fn expect_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.err.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; {}",
                    self.report()
                ),
            }
        }
    }

    /// Wait until standard output holds at least `len` bytes; return all of it.
    pub fn expect_bytes(&mut self, len: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.out.len() < len {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => self.out.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    while let Ok(line) = self.stderr.try_recv() {
                        self.err.push(line);
                    }
                    panic!(
                        "fewer than {len} bytes on stdout within {timeout:?}; {}",
                        self.report()
                    )
                }
            }
        }
        self.out.clone()
    }

    /// Write bytes to standard input.
    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to {}: {e}", self.name));
    }
}

impl Drop for RawProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private tmux server (its own `-L` socket) with one detached session of a fixed size,
/// for driving a program that needs a terminal. The server is killed on drop.
pub struct Tmux {
    socket: String,
    /// The socket's file, which tmux leaves behind when its server is killed.
    socket_path: Option<PathBuf>,
}

/// The session name inside each private server.
const SESSION: &str = "duet";

impl Tmux {
    /// Start `command` (run directly, not through a shell) in a `width`×`height` pane of a
    /// new tmux server named after `test`. The pane stays after the program exits, so its
    /// last screen can still be read.
    pub fn start(test: &str, width: u16, height: u16, command: &[&str]) -> Tmux {
        require_tool("tmux", "tmux");
        let mut tmux = Tmux {
            socket: format!("duet-test-{}-{test}", std::process::id()),
            socket_path: None,
        };
        let (w, h) = (width.to_string(), height.to_string());
        let mut args: Vec<&str> = "start-server ; set-option -g remain-on-exit on ; new-session -d"
            .split(' ')
            .collect();
        args.extend_from_slice(&["-s", SESSION, "-x", &w, "-y", &h]);
        args.extend_from_slice(command);
        tmux.run(&args);
        let path = tmux
            .run(&["display-message", "-p", "#{socket_path}"])
            .stdout;
        tmux.socket_path = Some(PathBuf::from(String::from_utf8_lossy(&path).trim()));
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        // -u and a UTF-8 locale: tmux shows wide characters only when it believes in UTF-8.
        command
            .args(["-u", "-f", "/dev/null", "-L", &self.socket])
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("TMUX");
        command
    }

    /// Run a tmux command against this server; panic if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux: {e}"));
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Type `text` literally into the pane (no key names, no Enter).
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", SESSION, "-l", text]);
    }

    /// Press a key by tmux's name for it (`Enter`, `C-c`, ...).
    pub fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", SESSION, key]);
    }

    /// The visible screen, one string per row, trailing blanks trimmed.
    pub fn screen(&self) -> Vec<String> {
        let output = self.run(&["capture-pane", "-p", "-t", SESSION]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// Everything the pane shows and has scrolled off, one string per row, trailing blanks
    /// trimmed: what a program wrote before tmux gave the pane its size may be above the
    /// screen.
    pub fn scrollback(&self) -> Vec<String> {
        let output = self.run(&["capture-pane", "-p", "-S", "-", "-t", SESSION]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// A tmux format evaluated for the pane, e.g. `#{pane_dead}`.
    pub fn pane(&self, format: &str) -> String {
        let output = self.run(&["display-message", "-p", "-t", SESSION, format]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Poll the screen every 50 ms until `ready` holds for it; panic with the last screen
    /// after `timeout`.
    pub fn wait_for_screen(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not seen within {timeout:?}; screen:\n{}",
                    screen.join("\n")
                );
            }
            // The screen has no change notification to block on: poll, bounded above.
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
