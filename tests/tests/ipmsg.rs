//! duet's IP Messenger mode (`--ipmsg`, `duet peers --ipmsg`) against a real IP Messenger
//! client: iptux 0.8.3 from Debian, headless under Xvfb, driven with xdotool. And two duets
//! on one LAN, and a message no one confirms.
//!
//! Every LAN is two network namespaces of the test's own joined by a veth pair (iptux or a
//! duet at 10.77.0.1, duet at 10.77.0.2): IP Messenger broadcasts, so nothing here runs in
//! the machine's own namespace. The namespaces are deleted when a test ends, pass or fail;
//! before that, every process left in them (iptux, its D-Bus daemon, Xvfb) is killed.
//! Without root the tests print why and pass without running.
//!
//! Needs (apt): iptux xvfb xauth dbus-x11 xdotool, with --no-install-recommends.
//!
//! Waits are for output lines with deadlines. Two things have no readiness event and are
//! polled with a deadline instead: an X window appearing (`xdotool search --sync`) and a line
//! appearing in iptux's chat log file.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use duet_tests::netns::{Netns, skip_unless_root};
use duet_tests::peers::require_tool;
use duet_tests::{Home, Proc, duet_bin};

/// Time for one expected thing; iptux starts in about two seconds, a message takes
/// milliseconds, a failing one six seconds of retries.
const T: Duration = Duration::from_secs(30);

/// iptux's nickname: Chinese, so names travel in the right encoding both ways.
const TUX: &str = "Tux企鹅";
/// duet's nickname in the chat test.
const DUET: &str = "双人";

/// Two namespaces joined by a veth: `a` is 10.77.0.1/24, `b` 10.77.0.2/24.
fn lan(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    a.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name(),
    ]);
    for (ns, addr) in [(&a, "10.77.0.1/24"), (&b, "10.77.0.2/24")] {
        ns.ip(&["addr", "add", addr, "brd", "+", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    (a, b)
}

/// Run `duet --config-dir HOME ARGS...` inside `ns` to the end: exit code and all output.
fn run_duet(ns: &Netns, home: &Home, args: &[&str]) -> (i32, String) {
    let out = ns
        .command(duet_bin())
        .args(home.args(args))
        .output()
        .expect("cannot run duet");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A headless iptux in a namespace: Xvfb, a D-Bus session, iptux with a written config.
struct Iptux {
    ns: String,
    home: PathBuf,
    display: String,
    /// iptux's own output (`-l DEBUG` logs every packet).
    log: Proc,
    _xvfb: Proc,
}

impl Iptux {
    /// Start iptux as `nick` (group "LAN") in `ns`, and wait until it listens.
    fn start(ns: &Netns, nick: &str) -> Iptux {
        for (tool, package) in [
            ("iptux", "iptux"),
            ("Xvfb", "xvfb"),
            ("xdotool", "xdotool"),
            ("dbus-run-session", "dbus-x11"),
        ] {
            require_tool(tool, package);
        }
        let home = std::env::temp_dir().join(format!("duet-iptux-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&home);
        // With a written config iptux skips its first-start setup, which would also create
        // these directories; without the log directory its chat log is silently missing.
        for dir in [
            ".iptux",
            ".config/iptux/log",
            ".cache/iptux/icon",
            ".cache/iptux/pic",
            ".cache/iptux/photo",
        ] {
            std::fs::create_dir_all(home.join(dir)).expect("iptux home");
        }
        let config = format!(
            r#"{{"nick_name":"{nick}","belong_group":"LAN","port":2425,"bind_ip":"0.0.0.0",
"open_chat":true,"use_enter_key":true,"record_log":true,"send_message_retry_in_us":500000}}"#
        );
        std::fs::write(home.join(".iptux/config.json"), config).expect("iptux config");

        // Xvfb picks a free display and writes its number on stdout (-displayfd 1).
        let mut xvfb = Proc::spawn(
            ns.command("Xvfb").args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ]),
            "Xvfb",
        );
        let display = (0..50)
            .find_map(|_| {
                let line = xvfb.expect("", T);
                line.trim().parse::<u32>().ok()
            })
            .map(|n| format!(":{n}"))
            .unwrap_or_else(|| panic!("Xvfb named no display:\n{}", xvfb.seen.join("\n")));
        let mut log = Proc::spawn(
            ns.command("env")
                .arg(format!("HOME={}", home.display()))
                .arg(format!("DISPLAY={display}"))
                .args([
                    // iptux shows, and xdotool matches, Chinese window titles in a UTF-8
                    // locale, whatever the caller's is.
                    "LANG=C.UTF-8",
                    "LC_ALL=C.UTF-8",
                    "NO_AT_BRIDGE=1",
                    "dbus-run-session",
                    "--",
                    "iptux",
                    "-l",
                    "DEBUG",
                ]),
            "iptux",
        );
        log.expect("bind UDP port(0.0.0.0:2425) success", T);
        Iptux {
            ns: ns.name().to_owned(),
            home,
            display,
            log,
            _xvfb: xvfb,
        }
    }

    /// `xdotool ARGS...` on iptux's display; its output. `--sync` searches wait for the
    /// window, so each call is bounded by `timeout`.
    fn xdotool(&self, args: &[&str]) -> String {
        let secs = T.as_secs().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", &secs, "xdotool"])
            .args(args)
            .env("DISPLAY", &self.display)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("cannot run xdotool");
        assert!(
            out.status.success(),
            "xdotool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first visible window whose title matches `pattern`, waiting for it.
    fn window(&self, pattern: &str) -> String {
        let ids = self.xdotool(&["search", "--sync", "--onlyvisible", "--name", pattern]);
        ids.lines()
            .next()
            .unwrap_or_else(|| panic!("no window {pattern}"))
            .to_owned()
    }

    /// Type `text` into the window titled `pattern`, then Return (which sends, with
    /// `use_enter_key`).
    fn type_into(&self, pattern: &str, text: &str) {
        let window = self.window(pattern);
        self.xdotool(&["windowfocus", "--sync", &window]);
        self.xdotool(&["type", "--delay", "20", "--window", &window, text]);
        self.xdotool(&["key", "--window", &window, "Return"]);
    }

    /// Quit as its user does (ctrl+q on the main window): it says BR_EXIT.
    fn quit(&self) {
        let main = self.window("^Iptux - ");
        self.xdotool(&["windowfocus", "--sync", &main, "key", "ctrl+q"]);
    }

    /// Wait until iptux's chat log holds `text`; return the log.
    fn expect_in_chat_log(&self, text: &str) -> String {
        let path = self.home.join(".config/iptux/log/communicate.log");
        let deadline = Instant::now() + T;
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "iptux's chat log never showed {text:?}; log:\n{log}\niptux said:\n{}",
                self.log.seen.join("\n")
            );
            // A file has no readiness event: poll it, briefly, until the deadline.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Iptux {
    fn drop(&mut self) {
        kill_everything_in(&self.ns);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Kill every process in namespace `ns`: iptux, the D-Bus daemon dbus-run-session started,
/// Xvfb. All are this test's; nothing outside the namespace is touched.
fn kill_everything_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|p| p.parse::<u32>().is_ok())
        .map(str::to_owned)
        .collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
}

#[test]
fn iptux_is_listed_by_duet_peers_and_a_chinese_message_reaches_its_chat_log_delivered() {
    if skip_unless_root("iptux_is_listed_by_duet_peers...") {
        return;
    }
    let (a, b) = lan("ipm1");
    let iptux = Iptux::start(&a, TUX);
    let home = Home::new("ipmsg1");

    let (code, out) = run_duet(&b, &home, &["peers", "--ipmsg", "--wait", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{TUX} [LAN] ")) && out.contains("at 10.77.0.1 (iptux, utf-8)"),
        "iptux not listed:\n{out}"
    );
    assert!(out.contains("1 IP Messenger user(s)"), "{out}");

    let message = "你好，iptux！这是 duet 发来的中文消息：一二三";
    let (code, out) = run_duet(&b, &home, &["send", "--ipmsg", "--to", TUX, message]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("* delivered to {TUX} (10.77.0.1)")),
        "{out}"
    );
    assert!(
        out.contains("PLAINTEXT"),
        "the plaintext warning is missing:\n{out}"
    );
    let log = iptux.expect_in_chat_log(message);
    // iptux's own spelling.
    assert!(log.contains("Recevied-From"), "{log}");
}

#[test]
fn a_message_typed_into_iptux_appears_in_duet_chat_and_iptux_leaving_is_shown() {
    if skip_unless_root("a_message_typed_into_iptux_appears_in_duet_chat...") {
        return;
    }
    let (a, b) = lan("ipm2");
    let iptux = Iptux::start(&a, TUX);
    let home = Home::new("ipmsg2");
    let mut chat = b.duet(&home, &["chat", "--ipmsg", "--name", DUET, "--peer", TUX]);
    chat.expect("PLAINTEXT", T);
    chat.expect(&format!("* {TUX} [LAN] "), T);
    chat.expect(&format!("* talking to {TUX} (10.77.0.1)"), T);

    // iptux opens a chat window when a message arrives; its title names our nickname, as
    // our entry told it, in UTF-8.
    chat.type_line("你好，请在 iptux 里回复");
    chat.expect(
        &format!("delivered to {TUX} (10.77.0.1): 你好，请在 iptux 里回复"),
        T,
    );
    let reply = "收到！这是 iptux 的回复";
    iptux.type_into(&format!("^Talk with {DUET}"), reply);
    chat.expect(&format!("{TUX}@10.77.0.1:2425: {reply}"), T);

    iptux.quit();
    chat.expect(&format!("* {TUX} (10.77.0.1) left the LAN"), T);
    chat.close_stdin();
    assert!(chat.wait(T).success(), "{}", chat.seen.join("\n"));
}

#[test]
fn two_duets_on_a_lan_find_each_other_and_a_message_is_confirmed() {
    if skip_unless_root("two_duets_on_a_lan_find_each_other...") {
        return;
    }
    let (a, b) = lan("ipm3");
    let (home_a, home_b) = (Home::new("ipmsg3a"), Home::new("ipmsg3b"));
    let mut listen = a.duet(
        &home_a,
        &["listen", "--ipmsg", "--count", "1", "--group", "研发"],
    );
    listen.expect("* listening on 0.0.0.0:2425 (IP Messenger)", T);

    let (code, out) = run_duet(&b, &home_b, &["peers", "--ipmsg", "--wait", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[研发]") && out.contains("at 10.77.0.1 (duet, utf-8)"),
        "{out}"
    );
    // The listener saw the asker come and go.
    listen.expect("at 10.77.0.2 (duet, utf-8) is on the LAN", T);
    listen.expect("(10.77.0.2) left the LAN", T);

    let message = "两个 duet 之间的 IP Messenger 消息";
    let (code, out) = run_duet(
        &b,
        &home_b,
        &["send", "--ipmsg", "--to", "10.77.0.1", message],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("* delivered to "), "{out}");
    listen.expect(&format!("@10.77.0.2:2425: {message}"), T);
    assert!(listen.wait(T).success(), "{}", listen.seen.join("\n"));
}

#[test]
fn a_message_no_one_confirms_fails_clearly_after_ip_messenger_retries() {
    if skip_unless_root("a_message_no_one_confirms_fails_clearly...") {
        return;
    }
    // 10.77.0.1 exists, but nothing listens on port 2425 there.
    let (_a, b) = lan("ipm4");
    let home = Home::new("ipmsg4");
    let started = Instant::now();
    let (code, out) = run_duet(
        &b,
        &home,
        &["send", "--ipmsg", "--to", "10.77.0.1", "hello?"],
    );
    let took = started.elapsed();
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("10.77.0.1 did not confirm after 4 tries"),
        "{out}"
    );
    assert!(
        out.contains("1 of 1 messages were not acknowledged"),
        "{out}"
    );
    // Two seconds for it to introduce itself, then four sends 1.5 s apart and 1.5 s more.
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(20),
        "{took:?}"
    );
}

#[test]
fn peers_without_ipmsg_says_why_nothing_is_broadcast() {
    // No namespace needed: nothing is sent.
    let home = Home::new("ipmsg5");
    let out = Command::new(duet_bin())
        .args(home.args(&["peers"]))
        .output()
        .expect("duet peers");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --ipmsg"), "{err}");
}
