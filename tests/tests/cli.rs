//! The `duet` binary over std UDP on loopback, between paired duets (each with a config
//! directory of its own): chat in line mode, send/listen, errors with their exit codes, and
//! bad input that must change nothing.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use duet_tests::{Home, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

fn run(home: &Home, args: &[&str]) -> (i32, String) {
    run_duet(&home.args(args))
}

fn run_duet(args: &[&str]) -> (i32, String) {
    let out = Command::new(duet_bin())
        .args(args)
        .output()
        .expect("cannot run duet");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn two_paired_duets_chat_both_ways_in_line_mode() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa), "--name", "alice"]);
    let mut b = hb.duet(&["chat", "--peer", "a", "--bind", &local(pb), "--name", "bob"]);
    a.expect("* listening on", T);
    b.expect("* listening on", T);
    a.type_line("hello bob 你好");
    a.type_line("second 🎉");
    b.type_line("hi alice");
    b.expect(&format!("a@{}: hello bob 你好", local(pa)), T);
    b.expect(&format!("a@{}: second 🎉", local(pa)), T);
    a.expect(&format!("b@{}: hi alice", local(pb)), T);
    a.expect("delivered: second 🎉", T);
    b.expect("delivered: hi alice", T);
    a.close_stdin();
    b.close_stdin();
    assert!(a.wait(T).success(), "alice: {:?}", a.seen);
    assert!(b.wait(T).success(), "bob: {:?}", b.seen);
    // In order, once each.
    let got: Vec<&String> = b
        .seen
        .iter()
        .filter(|l| l.contains(&format!("a@{}: ", local(pa))))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].ends_with("hello bob 你好") && got[1].ends_with("second 🎉"),
        "{got:?}"
    );
}

#[test]
fn send_and_listen_replace_the_tutorials_two_programs() {
    let (pl, ps) = (free_port(), free_port());
    let (hs, hl) = paired(None, Some(&local(pl)));
    let mut listen = hl.duet(&["listen", "--bind", &local(pl), "--count", "2"]);
    listen.expect("* listening on", T);
    let (code, out) = run(
        &hs,
        &["send", "--to", "b", "--bind", &local(ps), "你好, 世界 🌏"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("delivered"), "{out}");
    // By address, from a wildcard bind (the dual-stack socket), at another port.
    let (code, out) = run(&hs, &["send", "--to", &local(pl), "two", "words"]);
    assert_eq!(code, 0, "{out}");
    listen.expect(&format!("a@{}: 你好, 世界 🌏", local(ps)), T);
    listen.expect(": two words", T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
}

#[test]
fn an_address_no_paired_peer_is_recorded_at_is_refused_unless_named() {
    let (pl, elsewhere) = (free_port(), free_port());
    let (hs, hl) = paired(None, None);
    let mut listen = hl.duet(&["listen", "--bind", &local(pl), "--count", "1"]);
    listen.expect("* listening on", T);
    // The only paired peer has no address: an address alone must not be taken for it.
    for to in [local(pl), local(elsewhere)] {
        let (code, out) = run(&hs, &["send", "--to", &to, "--timeout", "2", "who?"]);
        assert_eq!(code, 3, "{out}");
        assert!(
            out.contains(&format!("no paired peer is known at {to}")),
            "{out}"
        );
    }
    // Named with its address, it is reached there.
    let (code, out) = run(
        &hs,
        &["send", "--to", &format!("b@{}", local(pl)), "by name"],
    );
    assert_eq!(code, 0, "{out}");
    listen.expect(": by name", T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
}

#[test]
fn send_to_a_port_where_nobody_listens_fails_with_exit_code_8() {
    let nobody = free_port();
    let (hs, _b) = paired(None, Some(&local(nobody)));
    let (code, out) = run(&hs, &["send", "--to", "b", "--timeout", "2", "anyone?"]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("never answered"), "{out}");
}

#[test]
fn user_errors_have_their_own_exit_codes() {
    let (hs, _b) = paired(None, Some("127.0.0.1:9"));
    let (code, out) = run(&hs, &["send", "--to", "nowhere:port", "x"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("bad address"), "{out}");
    let (code, out) = run(&hs, &["send", "--to", "carol", "x"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no paired peer is called 'carol'"), "{out}");

    let stranger = Home::new("unpaired");
    let (code, out) = run(&stranger, &["send", "--to", "127.0.0.1:9", "x"]);
    assert_eq!(code, 12, "{out}");
    assert!(out.contains("not paired"), "{out}");

    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, out) = run(&hs, &["listen", "--bind", &local(port), "--count", "1"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("already in use"), "{out}");

    let long = "长".repeat(2000); // 6000 bytes: more than one message holds
    let (code, out) = run(&hs, &["send", "--to", "b", "--no-split", &long]);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("too long"), "{out}");

    let (code, out) = run(&hs, &["send", "--to", "b", "--encoding", "gbk", "x"]);
    assert_eq!(code, 2, "--encoding needs --legacy: {out}");
}

#[test]
fn long_text_arrives_whole_or_as_announced_pieces() {
    let pl = free_port();
    let (hs, hl) = paired(None, Some(&local(pl)));
    let mut listen = hl.duet(&["listen", "--bind", &local(pl), "--count", "3"]);
    listen.expect("* listening on", T);
    // 3000 bytes: several parts on the wire, one message on screen.
    let one = "一二三四五六七八九十".repeat(100);
    let (code, out) = run(&hs, &["send", "--to", "b", &one]);
    assert_eq!(code, 0, "{out}");
    let line = listen.expect(": 一二三", T);
    assert!(
        line.ends_with(&one),
        "message was cut: {} bytes shown",
        line.len()
    );
    // 6000 bytes: more than one message holds, sent as two, cut on a character boundary.
    let long = "长".repeat(2000);
    let (code, out) = run(&hs, &["send", "--to", "b", &long]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("as 2 messages"), "{out}");
    let first = listen.expect(": 长", T);
    let second = listen.expect(": 长", T);
    let joined: String = [&first, &second]
        .iter()
        .map(|l| l.rsplit(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(joined, long);
    assert!(listen.wait(T).success());
}

#[test]
fn malformed_oversized_and_random_datagrams_change_nothing() {
    let pl = free_port();
    let (hs, hl) = paired(None, Some(&local(pl)));
    let mut listen = hl.duet(&["listen", "--bind", &local(pl), "--count", "1", "-v"]);
    listen.expect("* listening on", T);
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = local(pl);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut sent = 0;
    for i in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = match i % 3 {
            0 => (seed % 64) as usize,
            1 => 32 + (seed % 1000) as usize,
            _ => 1025 + (seed % 3000) as usize,
        };
        let mut bytes: Vec<u8> = (0..len)
            .map(|j| (seed >> (j % 56)) as u8 ^ j as u8)
            .collect();
        if i % 5 == 0 && bytes.len() >= 4 {
            // Looks like a sealed duet datagram of each kind; is not one.
            bytes[..2].copy_from_slice(b"du");
            bytes[2] = 2;
            bytes[3] = (i % 3) as u8 + 1;
        }
        if junk.send_to(&bytes, &to).is_ok() {
            sent += 1;
        }
    }
    assert!(sent > 250);
    let (code, out) = run(&hs, &["send", "--to", "b", "still here"]);
    assert_eq!(code, 0, "{out}");
    listen.expect(": still here", T);
    assert!(listen.wait(T).success());
    let stats = listen
        .seen
        .iter()
        .find(|l| l.contains("rejected"))
        .cloned()
        .unwrap_or_default();
    assert!(stats.contains("received 1 messages"), "{stats}");
    assert!(!stats.contains("rejected 0 unauthenticated"), "{stats}");
}

#[test]
fn piping_twenty_thousand_lines_delivers_every_one_in_order() {
    const LINES: usize = 20_000;
    let (pl, ps) = (free_port(), free_port());
    let (hs, hl) = paired(None, Some(&local(pl)));
    let count = LINES.to_string();
    let mut listen = hl.duet(&["listen", "--bind", &local(pl), "--count", &count]);
    listen.expect("* listening on", T);
    let mut chat = hs.duet(&["chat", "--bind", &local(ps), "--peer", "b"]);
    chat.expect("* listening on", T);
    // A writer thread: input arrives far faster than acknowledgements come back.
    let mut stdin = chat.take_stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..LINES {
            writeln!(stdin, "line {i} 行").expect("duet stopped reading its input");
        }
    });
    let long = Duration::from_secs(240);
    for i in 0..LINES {
        listen.expect(&format!(": line {i} 行"), long);
    }
    writer.join().expect("writer");
    assert!(
        chat.wait(long).success(),
        "chat exit: {:?}",
        chat.seen.last()
    );
    assert!(listen.wait(T).success());
    let delivered = chat.seen.iter().filter(|l| l.contains("delivered")).count();
    assert_eq!(delivered, LINES);
}

#[test]
fn chat_in_line_mode_with_a_peer_that_never_answers_exits_8_and_keeps_the_lines() {
    let nobody = free_port();
    let (ha, _hb) = paired(None, Some(&local(nobody)));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(free_port())]);
    a.expect("* listening on", T);
    a.type_line("anyone there?");
    a.close_stdin();
    // It waits a while for the peer after its input ended, then says so (README: exit 8).
    let status = a.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(8), "{:?}", a.seen);
    let (code, out) = run(&ha, &["history", "b"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("anyone there? [queued]"), "{out}");
}

#[test]
fn nick_and_peer_without_an_argument_answer_with_their_usage() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, _hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa), "--name", "alice"]);
    a.expect("* talking to b", T);
    a.type_line("/nick");
    a.expect("* usage: /nick NAME (you are alice)", T);
    a.type_line("/peer");
    a.expect("* usage: /peer NAME or /peer NAME@HOST:PORT", T);
    a.type_line("/peer   ");
    a.expect("* usage: /peer NAME or /peer NAME@HOST:PORT", T);
    // Still talking to b, still alice.
    a.type_line("/status");
    let status = a.expect("* alice on ", T);
    assert!(status.contains(&local(pb)), "{status}");
    a.close_stdin();
    a.wait(T);
    assert!(
        !a.seen.iter().any(|l| l.contains("unknown command")),
        "{:?}",
        a.seen
    );
}

#[test]
fn the_readme_gives_the_real_longest_message() {
    let readme = std::fs::read_to_string(duet_tests::process::workspace_root().join("README.md"))
        .expect("README.md");
    let max = duet_core::session::MAX_MESSAGE;
    assert!(
        readme.contains(&format!("message ({max} bytes")),
        "README.md does not say one message holds {max} bytes"
    );
}
