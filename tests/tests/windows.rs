//! duet.exe, cross-built for `x86_64-pc-windows-gnu`, under Wine 8: its help, its identity
//! in `%APPDATA%`, pairing by code with a Linux duet, Chinese text both ways with a Linux
//! duet and the Windows history of it, legacy mode's GBK default, a `send` handed to a
//! running chat, and the terminal chat on a console (Wine's, on a pty from `script`) until
//! ctrl-c.
//!
//! Needs `x86_64-w64-mingw32-gcc` (gcc-mingw-w64-x86-64) and Wine (wine64), which the test
//! command `.ci/test-all` installs. Wine 8 lacks `ProcessPrng`, which Rust's std imports on
//! Windows 10 and later, so the test builds a stand-in `bcryptprimitives.dll`
//! (`tests/windows/processprng.c`) beside its copy of duet.exe; duet.exe itself needs
//! nothing beside it on Windows. Every test has a fresh Wine prefix, stopped
//! (`wineserver -k`) and removed when the test ends, and every Wine call has a timeout.

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use duet_tests::process::{Home, cargo_bin_for, workspace_root};
use duet_tests::{Proc, free_port, local};

const TARGET: &str = "x86_64-pc-windows-gnu";
const WINE: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
/// The longest any one Wine call may run, in seconds (a fresh prefix takes ~7 s to set
/// up on its first call, and the machine may be busy).
const CALL_LIMIT: &str = "90";
/// How long any one expected line may take.
const T: Duration = Duration::from_secs(60);

/// The directory with duet.exe and the stand-in DLL, made once per test process.
fn windows_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            Path::new(WINE).exists(),
            "{WINE} is missing: install wine64 (.ci/test-all does)"
        );
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("windows-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the Windows test directory");
        let dll = dir.join("bcryptprimitives.dll");
        let built = Command::new(MINGW_GCC)
            .args(["-shared", "-O2", "-o"])
            .arg(&dll)
            .arg(workspace_root().join("tests/windows/processprng.c"))
            .arg("-lbcrypt")
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {MINGW_GCC} ({e}): install gcc-mingw-w64-x86-64")
            });
        assert!(built.success(), "building the ProcessPrng stand-in failed");
        let exe = cargo_bin_for("duet-host", "duet", TARGET);
        let copy = dir.join("duet.exe");
        if fs::hard_link(&exe, &copy).is_err() {
            fs::copy(&exe, &copy).expect("copy duet.exe");
        }
        dir
    })
}

/// A fresh Wine prefix for one test, stopped and removed on drop.
struct Wine {
    prefix: PathBuf,
    /// Whether a call ran duet in this prefix, which then holds its config.
    ran: std::cell::Cell<bool>,
}

impl Wine {
    fn new(tag: &str) -> Wine {
        static N: AtomicU32 = AtomicU32::new(0);
        windows_dir();
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "wine-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&prefix);
        Wine {
            prefix,
            ran: std::cell::Cell::new(false),
        }
    }

    /// `duet.exe ARGS` under Wine, bounded by `timeout`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["-k", "5", CALL_LIMIT, WINE, "duet.exe"])
            .args(args);
        self.environment(&mut command);
        command
    }

    fn environment(&self, command: &mut Command) {
        // Whatever runs in the prefix from here on may keep a config there.
        self.ran.set(true);
        command
            .current_dir(windows_dir())
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer on the first start.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            // Without it Wine's console shows Chinese as '?'.
            .env("LANG", "C.UTF-8")
            .env_remove("DISPLAY")
            .env_remove("DUET_CONFIG_DIR")
            // Tests send traffic to loopback only (see duet_tests::duet_bin).
            .env("DUET_DHT", "off")
            .env("DUET_STUN", "");
    }

    /// Run `duet.exe ARGS` to the end: exit code, stdout, stderr.
    ///
    /// duet never fails without saying why (its `main` prints every error), so a call that
    /// exits 1 having printed nothing at all did not get to run duet: Wine failed to start
    /// the process (seen once, in the first Wine calls on a fresh machine, with Wine's own
    /// messages off). So did a call whose Wine said it could not load `kernel32.dll`
    /// (seen once on a fresh machine, in the first call of a prefix Wine had just set up:
    /// its loader, not duet, failed). Such a call is made once more, and said so, the
    /// second in a prefix set up anew; any other failure is duet's and is returned as it
    /// is.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let ran_before = self.ran.get();
        let once = || {
            let out = self
                .command(args)
                .stdin(Stdio::null())
                .output()
                .expect("run duet.exe under Wine");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let first = once();
        if first.0 == 1 && first.1.is_empty() && first.2.is_empty() {
            eprintln!(
                "duet.exe {args:?} exited 1 without a word: Wine did not start it; once more"
            );
            return once();
        }
        if first.2.contains("could not load kernel32.dll") && !ran_before {
            eprintln!(
                "duet.exe {args:?}: Wine's loader failed ({}); once more in a new prefix",
                first.2.trim()
            );
            self.stop_and_remove();
            return once();
        }
        first
    }

    /// Run `duet.exe ARGS` and insist on exit code 0; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "duet.exe {args:?}: {out}{err}");
        out
    }

    /// Start `duet.exe ARGS`, its output lines read as they come.
    fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(
            &mut self.command(args),
            &format!("duet.exe {}", args.join(" ")),
        )
    }

    /// This duet.exe's public key (created on first use).
    fn key(&self) -> String {
        self.ok(&["id"])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// `%APPDATA%\duet` in the prefix, as Linux sees it.
    fn config_dir(&self) -> PathBuf {
        let users = self.prefix.join("drive_c/users");
        fs::read_dir(&users)
            .expect("the prefix has users")
            .filter_map(Result::ok)
            .map(|user| user.path().join("AppData/Roaming/duet"))
            .find(|dir| dir.is_dir())
            .expect("no duet directory in any user's AppData\\Roaming")
    }

    /// Stop the prefix's wineserver and remove the prefix; the next call sets it up anew.
    fn stop_and_remove(&self) {
        let _ = Command::new("timeout")
            .args(["20", WINESERVER, "-k"])
            .env("WINEPREFIX", &self.prefix)
            .status();
        let _ = fs::remove_dir_all(&self.prefix);
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}

/// A Linux duet and a duet.exe paired by key, each recording the other's loopback port.
fn paired_by_key(wine: &Wine, linux_port: u16, windows_port: u16) -> Home {
    let linux = Home::new("linux");
    let windows_key = wine.key();
    let (code, out) = linux.run(&[
        "pair",
        "add",
        "win",
        &windows_key,
        "--addr",
        &local(windows_port),
    ]);
    assert_eq!(code, 0, "pair add on Linux: {out}");
    wine.ok(&[
        "pair",
        "add",
        "lin",
        &linux.key(),
        "--addr",
        &local(linux_port),
    ]);
    linux
}

#[test]
fn duet_exe_prints_its_help_under_wine() {
    let wine = Wine::new("help");
    let out = wine.ok(&["--help"]);
    assert!(out.contains("Usage: duet.exe"), "{out}");
    assert!(out.contains("chat"), "{out}");
}

#[test]
fn duet_exe_keeps_its_identity_in_appdata() {
    let wine = Wine::new("id");
    let first = wine.ok(&["id"]);
    let key = first.lines().next().unwrap_or_default();
    assert_eq!(key.len(), 44, "not a base64 key: {first}");
    assert!(
        first.contains("fingerprint: "),
        "no fingerprint line: {first}"
    );
    assert!(wine.config_dir().join("identity").is_file());
    assert_eq!(wine.ok(&["id"]), first, "a second identity was made");
}

#[test]
fn duet_exe_pairs_by_code_with_a_linux_duet() {
    let wine = Wine::new("pair");
    let linux = Home::new("inviter");
    let port = free_port();
    let mut inviter = linux.duet(&[
        "pair",
        "invite",
        "win",
        "--bind",
        &local(port),
        "--timeout",
        "60",
    ]);
    let line = inviter.expect("code: ", T);
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("no code after 'code: '")
        .to_owned();
    let joined = wine.ok(&[
        "pair",
        "join",
        "lin",
        &code,
        "--addr",
        &local(port),
        "--bind",
        &local(free_port()),
        "--timeout",
        "60",
    ]);
    assert!(inviter.wait(T).success(), "{:?}", inviter.seen);
    // Each side now lists the other's key.
    let windows_key = wine.key();
    let linux_key = linux.key();
    let windows_list = wine.ok(&["pair", "list"]);
    assert!(
        windows_list.contains("lin") && windows_list.contains(&linux_key),
        "{joined}\n{windows_list}"
    );
    let (status, linux_list) = linux.run(&["pair", "list"]);
    assert_eq!(status, 0, "{linux_list}");
    assert!(
        linux_list.contains("win") && linux_list.contains(&windows_key),
        "{linux_list}"
    );
}

#[test]
fn chinese_text_crosses_both_ways_with_linux_and_stays_in_the_windows_history() {
    let wine = Wine::new("text");
    let (linux_port, windows_port) = (free_port(), free_port());
    let linux = paired_by_key(&wine, linux_port, windows_port);

    // duet.exe → Linux.
    let mut listen = linux.duet(&["listen", "--bind", &local(linux_port), "--count", "1"]);
    listen.expect("* listening on", T);
    let sent = "你好，世界 from Windows";
    let out = wine.ok(&["send", "--to", "lin", "--bind", &local(windows_port), sent]);
    assert!(out.contains("delivered"), "{out}");
    listen.expect(&format!("win@{}: {sent}", local(windows_port)), T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);

    // Linux → duet.exe.
    let mut listen = wine.spawn(&["listen", "--bind", &local(windows_port), "--count", "1"]);
    listen.expect("* listening on", T);
    let received = "你好 from Linux 🐧";
    let (code, out) = linux.run(&[
        "send",
        "--to",
        "win",
        "--bind",
        &local(linux_port),
        received,
    ]);
    assert_eq!(code, 0, "{out}");
    listen.expect(&format!("lin@{}: {received}", local(linux_port)), T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);

    let history = wine.ok(&["history"]);
    assert!(
        history.contains(sent) && history.contains(received),
        "{history}"
    );
}

#[test]
fn legacy_mode_on_windows_writes_gbk_unless_told() {
    let wine = Wine::new("legacy");
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind a receiver");
    receiver
        .set_read_timeout(Some(T))
        .expect("receiver timeout");
    let to = receiver.local_addr().expect("receiver address").to_string();
    for (args, bytes) in [
        (vec![], vec![0xc4, 0xe3, 0xba, 0xc3]),
        (vec!["--encoding", "utf-8"], "你好".as_bytes().to_vec()),
    ] {
        let mut all = vec!["send", "--legacy", "--to", &to, "--bind", "127.0.0.1:0"];
        all.extend(args);
        all.push("你好");
        wine.ok(&all);
        let mut buf = [0u8; 64];
        let (n, _) = receiver.recv_from(&mut buf).expect("a legacy datagram");
        assert_eq!(&buf[..n], bytes.as_slice(), "{all:?}");
    }
}

#[test]
fn the_terminal_chat_runs_on_a_wine_console() {
    let wine = Wine::new("chat");
    let (linux_port, windows_port) = (free_port(), free_port());
    let linux = paired_by_key(&wine, linux_port, windows_port);
    let mut listen = linux.duet(&["listen", "--bind", &local(linux_port), "--count", "1"]);
    listen.expect("* listening on", T);

    // `script` gives Wine a pty, which Wine's console takes as a real terminal: duet runs
    // its line editor, not line mode. `exec` makes Wine lead the pty's session and its
    // foreground process group, as a program started from a terminal does, whatever shell
    // `script` runs (its SHELL, or dash when unset, which does not exec a lone command).
    // Nothing sits in between: `timeout` there made a process group of its own in the
    // background (Wine's console, reading the pty from it, was stopped by SIGTTIN after
    // drawing the prompt), or, with `--foreground`, took the Ctrl-C below as a signal too and
    // killed Wine 5 s later. This call is bounded by the test instead: `Console::wait`'s
    // deadline, then dropping the console (the pty closes) and `wineserver -k`.
    let chat = format!(
        "exec {WINE} duet.exe chat --peer lin --name win --bind {}",
        local(windows_port)
    );
    let mut command = Command::new("script");
    command.args(["-qec", &chat, "/dev/null"]);
    wine.environment(&mut command);
    command
        .env("TERM", "xterm-256color")
        .env("SHELL", "/bin/sh");
    let mut console = Console::spawn(&mut command);
    console.expect("talking to lin", T);
    console.expect("is up", T);
    // Typed once the editor drew its prompt (Wine draws the prompt's trailing space as a
    // cursor move).
    console.expect("win>", T);
    let typed = "聊天 from the console";
    // The console is raw: Return is a carriage return.
    console.write(&format!("{typed}\r"));
    let line = format!("win@{}: {typed}", local(windows_port));
    // Wine's console, when keys arrive just as the editor switches it to raw mode, can
    // echo them in its cooked mode and keep the carriage return there: the editor has the
    // text but no Return. A second Return sends it then (an empty line sends nothing), and
    // listen takes exactly one message either way.
    let arrived = listen.wait_for(&line, Duration::from_secs(3)).or_else(|| {
        console.write("\r");
        listen.wait_for(&line, T)
    });
    assert!(
        arrived.is_some(),
        "not received; the console showed:\n{}",
        console.shown()
    );
    console.expect("delivered", T);
    // Ctrl-C: the console in raw mode gives it to the editor, which ends the chat.
    console.write("\u{3}");
    let ended = console.wait(T);
    assert!(
        ended.is_some_and(|s| s.success()),
        "ended: {ended:?}; the console showed:\n{}",
        console.shown()
    );
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
}

/// A program on a terminal (`script`'s pty), its output read as it comes, not as lines: a
/// prompt has no line ending.
struct Console {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    out: Vec<u8>,
    /// How far [`Console::expect`] has matched.
    at: usize,
}

impl Console {
    fn spawn(command: &mut Command) -> Console {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start script");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, chunks) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        Console {
            child,
            stdin,
            chunks,
            out: Vec::new(),
            at: 0,
        }
    }

    /// Wait until the output after the last match holds `needle`.
    fn expect(&mut self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let needle = needle.as_bytes();
        loop {
            if let Some(i) = self.out[self.at..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                self.at += i + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.out.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "the console: no {:?} within {timeout:?}; it showed:\n{}",
                    String::from_utf8_lossy(needle),
                    self.shown()
                ),
            }
        }
    }

    fn write(&mut self, keys: &str) {
        self.stdin
            .write_all(keys.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("type into the console");
    }

    /// Everything shown so far (with what arrived meanwhile).
    fn shown(&mut self) -> String {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.out.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Wait for the program to end, at most `timeout`: how it ended, `None` if it did not.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    let _ = self
                        .chunks
                        .recv_timeout(Duration::from_millis(50))
                        .map(|chunk| self.out.extend_from_slice(&chunk));
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_send_next_to_a_windows_chat_goes_through_the_chat() {
    let wine = Wine::new("handoff");
    let (linux_port, windows_port) = (free_port(), free_port());
    let linux = paired_by_key(&wine, linux_port, windows_port);
    let mut listen = linux.duet(&["listen", "--bind", &local(linux_port), "--count", "2"]);
    listen.expect("* listening on", T);
    // Line mode: input from a pipe, woken through the loopback wake-up.
    let mut chat = wine.spawn(&["chat", "--peer", "lin", "--bind", &local(windows_port)]);
    chat.expect("* listening on", T);
    chat.type_line("typed 一");
    listen.expect(&format!("win@{}: typed 一", local(windows_port)), T);
    chat.expect("delivered", T);
    // A second duet.exe of the same identity hands its text to the chat (the local socket:
    // loopback TCP with the token in %APPDATA%\duet\duet.sock).
    let out = wine.ok(&["send", "--to", "lin", "handed 二"]);
    assert!(
        out.contains("sent by the duet already running here"),
        "{out}"
    );
    listen.expect(&format!("win@{}: handed 二", local(windows_port)), T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
    chat.close_stdin();
    assert!(chat.wait(T).success(), "{:?}", chat.seen);
}
