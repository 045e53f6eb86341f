//! duet's legacy mode against the programs people already have: the tutorial's two Python
//! programs (`tests/peers/`), socat and `nc -u`, and raw datagrams from a std socket. What a
//! user would notice: Chinese arrives readable in GBK and UTF-8 both ways, long text is
//! cut into datagrams the tutorial's `recvfrom(1024)` reads whole, oversized datagrams are
//! reported rather than cut, and bytes that do not decode are shown, escaped, not lost.
//!
//! Needs `/usr/bin/python3`, socat and netcat-openbsd (`nc`).

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use duet_tests::peers::{
    RawProc, duet_message, require_tool, tutorial_message, tutorial_next, tutorial_recv,
    tutorial_send,
};
use duet_tests::{Proc, free_port, local};

/// How long any one expected thing may take; loopback needs milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Chinese with full-width punctuation, all of it in GBK.
const CHINESE: &str = "你好，世界！这是中文测试：汉字、标点。";

/// UTF-8 of every width: CJK, emoji (outside GBK), Latin and Cyrillic.
const MIXED_UTF8: &str = "你好，世界 🎉😀 naïve café Привет";

/// Spawn `duet ARGS` with a config directory of the tests' own: legacy mode reads no keys,
/// but duet makes sure the directory exists, and a test must not touch the user's.
fn legacy_duet(args: &[&str]) -> Proc {
    let config = Path::new(env!("CARGO_TARGET_TMPDIR")).join("legacy-config");
    let config = config.to_str().expect("a UTF-8 target directory");
    let mut all = vec!["--config-dir", config];
    all.extend_from_slice(args);
    Proc::duet(&all)
}

/// Start `duet listen --legacy EXTRA...` on a free port; return it, ready, and its port.
fn duet_listen(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let bind = local(port);
    let mut args = vec!["listen", "--legacy", "--bind", &bind];
    args.extend_from_slice(extra);
    let mut duet = legacy_duet(&args);
    duet.expect(&format!("* listening on {bind}"), WAIT);
    (duet, port)
}

/// Start `duet chat --legacy EXTRA...` in line mode on a free port; return it, ready, and
/// its port.
fn duet_chat(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let bind = local(port);
    let mut args = vec!["chat", "--legacy", "--bind", &bind, "--name", "duet"];
    args.extend_from_slice(extra);
    let mut duet = legacy_duet(&args);
    duet.expect(&format!("* listening on {bind}"), WAIT);
    (duet, port)
}

/// Wait for the next message duet shows from `from` and return its text.
fn next_message(duet: &mut Proc, from: &str) -> String {
    let line = duet.expect(&format!(" {from}: "), WAIT);
    duet_message(&line, from)
        .unwrap_or_else(|| panic!("not a message line from {from}: {line:?}"))
        .to_owned()
}

/// Run `duet send --legacy --to 127.0.0.1:PORT EXTRA... TEXT` and require success.
fn duet_send(port: u16, extra: &[&str], text: &str) -> Vec<String> {
    let to = local(port);
    let mut args = vec!["send", "--legacy", "--to", &to];
    args.extend_from_slice(extra);
    args.push(text);
    let mut send = legacy_duet(&args);
    let status = send.wait(WAIT);
    assert!(
        status.success(),
        "duet send failed ({status}):\n{}",
        send.seen.join("\n")
    );
    send.seen.clone()
}

/// Read datagrams the tutorial receiver printed until they join into `want` (or are
/// longer), and return them one by one.
fn tutorial_parts(recv: &mut Proc, want: &str, from: u16) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut parts: Vec<String> = Vec::new();
    while parts.iter().map(|p| p.chars().count()).sum::<usize>() < want.chars().count() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = recv.expect("('127.0.0.1', ", left.max(Duration::from_millis(1)));
        let (addr, text) =
            tutorial_message(&line).unwrap_or_else(|| panic!("unparsable line {line:?}"));
        assert_eq!(
            addr.port(),
            from,
            "datagram from an unexpected sender: {line:?}"
        );
        parts.push(text.to_owned());
    }
    parts
}

/// Bytes of `text` in GBK, for text of ASCII and GBK's two-byte characters only.
fn gbk_len(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// A raw socket of the test's own, for datagrams no text tool would send.
fn raw_sender() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("cannot bind a test socket")
}

#[test]
fn tutorial_program_and_duet_exchange_chinese_in_gbk_both_ways() {
    // The tutorial's sender encodes GBK; duet shows it with --encoding gbk and with the
    // default auto (not valid UTF-8, so GBK).
    for encoding in [&["--encoding", "gbk"][..], &[]] {
        let (mut duet, port) = duet_listen(encoding);
        let (mut python, python_port) = tutorial_send(port, "gbk", WAIT);
        python.type_line(CHINESE);
        assert_eq!(
            next_message(&mut duet, &local(python_port)),
            CHINESE,
            "duet listen {encoding:?} showed GBK text wrongly"
        );
    }

    // duet encodes GBK; the tutorial's receiver decodes it with data.decode("gbk").
    let (mut python, python_port) = tutorial_recv("gbk", 1, WAIT);
    let said = duet_send(python_port, &["--encoding", "gbk"], CHINESE);
    assert!(
        said.iter().any(|l| l.contains("sent 1 datagram(s)")),
        "duet send did not report one datagram: {said:?}"
    );
    let (_, text) = tutorial_next(&mut python, WAIT);
    assert_eq!(text, CHINESE);
}

#[test]
fn tutorial_program_and_duet_exchange_chinese_in_utf8_both_ways() {
    for encoding in [&["--encoding", "utf-8"][..], &[]] {
        let (mut duet, port) = duet_listen(encoding);
        let (mut python, python_port) = tutorial_send(port, "utf-8", WAIT);
        python.type_line(MIXED_UTF8);
        assert_eq!(
            next_message(&mut duet, &local(python_port)),
            MIXED_UTF8,
            "duet listen {encoding:?} showed UTF-8 text wrongly"
        );
    }

    // Sending defaults to UTF-8.
    let (mut python, python_port) = tutorial_recv("utf-8", 1, WAIT);
    duet_send(python_port, &[], MIXED_UTF8);
    let (_, text) = tutorial_next(&mut python, WAIT);
    assert_eq!(text, MIXED_UTF8);
}

/// Line-mode `duet chat --legacy --encoding ENCODING` with the tutorial's two programs:
/// what the sender types shows in duet, what duet's user types reaches the receiver, in
/// order, from duet's port; at end of input duet exits cleanly.
fn chat_with_tutorial_programs(encoding: &str, from_python: &str, from_duet: [&str; 2]) {
    let (mut receiver, receiver_port) = tutorial_recv(encoding, 2, WAIT);
    let (mut duet, duet_port) =
        duet_chat(&["--encoding", encoding, "--peer", &local(receiver_port)]);
    let (mut sender, sender_port) = tutorial_send(duet_port, encoding, WAIT);

    sender.type_line(from_python);
    assert_eq!(next_message(&mut duet, &local(sender_port)), from_python);

    for line in from_duet {
        duet.type_line(line);
    }
    for line in from_duet {
        assert_eq!(
            tutorial_next(&mut receiver, WAIT),
            (duet_port, line.to_owned())
        );
    }

    duet.close_stdin();
    let status = duet.wait(WAIT);
    assert!(
        status.success(),
        "duet chat did not exit cleanly at end of input ({status}):\n{}",
        duet.seen.join("\n")
    );
}

#[test]
fn duet_chat_legacy_talks_to_the_tutorial_programs_in_utf8() {
    chat_with_tutorial_programs(
        "utf-8",
        "你好 duet，我是教程程序 🐍",
        ["第一条：来自 duet 🎉", "second line, 第二条"],
    );
}

#[test]
fn duet_chat_legacy_talks_to_the_tutorial_programs_in_gbk() {
    chat_with_tutorial_programs(
        "gbk",
        "你好 duet，我是教程程序",
        ["第一条：来自 duet", "second line，第二条"],
    );
}

#[test]
fn socat_sends_to_duet_listen_and_receives_exact_bytes_from_duet_send() {
    require_tool("socat", "socat");

    // socat sends what it reads, line ending included; duet shows that ending escaped,
    // on the same line.
    let (mut duet, port) = duet_listen(&[]);
    let socat_port = free_port();
    let to = format!("UDP-SENDTO:127.0.0.1:{port},bind=127.0.0.1:{socat_port}");
    let mut socat = RawProc::spawn("socat", &["-u", "-", &to]);
    socat.write("你好 socat\n".as_bytes());
    assert_eq!(next_message(&mut duet, &local(socat_port)), "你好 socat\\n");

    // duet sends bare text in the chosen encoding: no framing, no line ending.
    for (encoding, text, bytes) in [
        (
            "gbk",
            "你好世界",
            &[0xc4, 0xe3, 0xba, 0xc3, 0xca, 0xc0, 0xbd, 0xe7][..],
        ),
        ("utf-8", "你好", "你好".as_bytes()),
    ] {
        let listen_port = free_port();
        let recv = format!("UDP-RECV:{listen_port},bind=127.0.0.1");
        let mut socat = RawProc::spawn("socat", &["-d", "-d", "-u", &recv, "-"]);
        socat.expect_stderr("starting data transfer loop", WAIT);
        duet_send(listen_port, &["--encoding", encoding], text);
        let got = socat.expect_bytes(bytes.len(), WAIT);
        assert_eq!(
            got, bytes,
            "duet send --encoding {encoding} sent other bytes"
        );
    }
}

#[test]
fn duet_chat_legacy_without_peer_answers_socat_that_wrote_first() {
    require_tool("socat", "socat");
    let (mut duet, duet_port) = duet_chat(&[]);
    let socat_port = free_port();
    let to = format!("UDP:127.0.0.1:{duet_port},bind=127.0.0.1:{socat_port}");
    let mut socat = RawProc::spawn("socat", &["-d", "-d", "-", &to]);
    socat.expect_stderr("starting data transfer loop", WAIT);

    socat.write("hello from socat 你好\n".as_bytes());
    assert_eq!(
        next_message(&mut duet, &local(socat_port)),
        "hello from socat 你好\\n"
    );

    duet.type_line("reply to socat 回复");
    let want = "reply to socat 回复".as_bytes();
    assert_eq!(socat.expect_bytes(want.len(), WAIT), want);
}

#[test]
fn nc_talks_to_duet_chat_legacy_both_ways() {
    require_tool("nc", "netcat-openbsd");
    let nc_port = free_port();
    let mut nc = RawProc::spawn("nc", &["-v", "-u", "-l", "127.0.0.1", &nc_port.to_string()]);
    nc.expect_stderr("Bound on", WAIT);
    let (mut duet, _) = duet_chat(&["--peer", &local(nc_port)]);

    // `nc -u -l` answers the first sender it hears: duet writes first.
    duet.type_line("hello nc 你好");
    let want = "hello nc 你好".as_bytes();
    assert_eq!(nc.expect_bytes(want.len(), WAIT), want);

    nc.write("hello duet from nc 你好\n".as_bytes());
    assert_eq!(
        next_message(&mut duet, &local(nc_port)),
        "hello duet from nc 你好\\n"
    );
}

#[test]
fn oversized_legacy_datagram_is_reported_not_cut() {
    // Both modes that show datagrams: `listen` and `chat`.
    let listen = duet_listen(&[]);
    let chat = duet_chat(&[]);
    for (mut duet, port) in [listen, chat] {
        let socket = raw_sender();
        let from = local(socket.local_addr().expect("local address").port());
        let to = local(port);
        socket.send_to(&[b'Z'; 1500], &to).expect("send 1500 bytes");
        socket.send_to(&[b'Y'; 1025], &to).expect("send 1025 bytes");
        socket
            .send_to("after the big ones 之后".as_bytes(), &to)
            .expect("send a normal datagram");

        let last = duet.expect("after the big ones", WAIT);
        let lines = duet.seen.clone();
        let dropped = lines
            .iter()
            .filter(|l| {
                l.contains(&format!(
                    "dropped a datagram of more than 1024 bytes from {from}"
                ))
            })
            .count();
        assert_eq!(
            dropped, 2,
            "each oversized datagram must be reported once: {lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("ZZZZ") || l.contains("YYYY")),
            "an oversized datagram was shown cut: {lines:#?}"
        );
        assert_eq!(duet_message(&last, &from), Some("after the big ones 之后"));
    }
}

#[test]
fn datagram_of_exactly_1024_bytes_is_shown_whole() {
    let (mut duet, port) = duet_listen(&[]);
    // Ends in a three-byte character, so a cut anywhere near the end shows.
    let text = format!("{}终", "W".repeat(1021));
    assert_eq!(text.len(), 1024);
    let socket = raw_sender();
    let from = local(socket.local_addr().expect("local address").port());
    socket.send_to(text.as_bytes(), local(port)).expect("send");
    assert_eq!(next_message(&mut duet, &from), text);
}

#[test]
fn undecodable_bytes_are_shown_escaped() {
    let cases: [(&[&str], &[u8], &str); 5] = [
        (
            &["--encoding", "utf-8"],
            b"ok \xff\xfe end",
            "ok \\xff\\xfe end",
        ),
        // A GBK character, a byte that starts nothing, another character.
        (
            &["--encoding", "gbk"],
            &[0xc4, 0xe3, 0xff, 0xba, 0xc3],
            "你\\xff好",
        ),
        // A GBK lead byte cut off at the end of the datagram.
        (
            &["--encoding", "gbk"],
            &[b'a', 0xc4, 0xe3, 0xc4],
            "a你\\xc4",
        ),
        // A lead byte before ASCII: the ASCII survives.
        (&["--encoding", "gbk"], &[0x81, b' ', b'A'], "\\x81 A"),
        // Neither UTF-8 nor GBK: auto shows the stray byte and keeps the rest.
        (&[], &[0xff, b'A', 0xc4, 0xe3], "\\xffA你"),
    ];
    for (encoding, bytes, shown) in cases {
        let (mut duet, port) = duet_listen(encoding);
        let socket = raw_sender();
        let from = local(socket.local_addr().expect("local address").port());
        socket.send_to(bytes, local(port)).expect("send");
        assert_eq!(
            next_message(&mut duet, &from),
            shown,
            "bytes {bytes:02x?} with {encoding:?}"
        );
    }
}

#[test]
fn every_byte_of_a_broken_gbk_four_byte_sequence_is_shown() {
    // 0x81 0x30 0x81 starts a four-byte GB18030 sequence that a space breaks: per the
    // WHATWG decoder only the first 0x81 is bad, then "0" decodes, then the second 0x81 is
    // bad before the space. Both bad bytes must be shown.
    let (mut duet, port) = duet_listen(&["--encoding", "gbk"]);
    let socket = raw_sender();
    let from = local(socket.local_addr().expect("local address").port());
    socket
        .send_to(&[0x81, 0x30, 0x81, b' ', b'x'], local(port))
        .expect("send");
    assert_eq!(next_message(&mut duet, &from), "\\x810\\x81 x");
}

#[test]
fn control_characters_from_a_legacy_peer_are_shown_escaped_on_one_line() {
    let (mut duet, port) = duet_listen(&[]);
    let socket = raw_sender();
    let from = local(socket.local_addr().expect("local address").port());
    socket
        .send_to(b"line1\nline2\r\x1b[31mred\ttab\\", local(port))
        .expect("send");
    assert_eq!(
        next_message(&mut duet, &from),
        "line1\\nline2\\r\\u{1b}[31mred\\ttab\\\\"
    );
}

/// `duet send --legacy --encoding ENCODING TEXT` to the tutorial receiver: the text arrives
/// as datagrams that each fit `recvfrom(1024)`, each decoding on its own (the receiver's
/// strict `decode` would raise on a cut character), joining back into the text.
fn long_text_reaches_tutorial_receiver(encoding: &str, text: &str, encoded_len: fn(&str) -> usize) {
    let (mut python, python_port) = tutorial_recv(encoding, 100, WAIT);
    let send_port = free_port();
    let bind = local(send_port);
    duet_send(
        python_port,
        &["--encoding", encoding, "--bind", &bind],
        text,
    );
    let parts = tutorial_parts(&mut python, text, send_port);
    let lengths: Vec<usize> = parts.iter().map(|p| encoded_len(p)).collect();
    assert!(
        lengths.iter().all(|&n| n <= 1024),
        "a datagram is longer than recvfrom(1024) reads: {lengths:?}"
    );
    let min_parts = encoded_len(text).div_ceil(1024);
    assert!(
        parts.len() >= min_parts,
        "{} parts for {lengths:?}",
        parts.len()
    );
    assert_eq!(parts.concat(), text, "the parts do not join into the text");
}

#[test]
fn long_legacy_text_arrives_as_whole_characters_in_datagrams_of_at_most_1024_bytes() {
    // 3000 bytes of UTF-8: three bytes a character, so 1024 is never a boundary.
    let utf8: String = "汉字测试长消息中文".chars().cycle().take(1000).collect();
    assert_eq!(utf8.len(), 3000);
    long_text_reaches_tutorial_receiver("utf-8", &utf8, str::len);

    // 3001 bytes of GBK: one ASCII byte first, so 1024 falls inside a character.
    let gbk = format!(
        "a{}",
        "汉字测试长消息中文，"
            .chars()
            .cycle()
            .take(1500)
            .collect::<String>()
    );
    assert_eq!(gbk_len(&gbk), 3001);
    long_text_reaches_tutorial_receiver("gbk", &gbk, gbk_len);
}

#[test]
fn legacy_send_of_text_longer_than_eight_datagrams_delivers_it_whole() {
    // 9000 bytes of UTF-8: nine datagrams.
    let text: String = "长消息".chars().cycle().take(3000).collect();
    long_text_reaches_tutorial_receiver("utf-8", &text, str::len);
}

#[test]
fn duet_chat_legacy_sends_a_line_longer_than_eight_datagrams_and_goes_on() {
    let long: String = "长消息".chars().cycle().take(3000).collect();
    let (mut python, python_port) = tutorial_recv("utf-8", 100, WAIT);
    let (mut duet, duet_port) = duet_chat(&["--peer", &local(python_port)]);
    duet.type_line(&long);
    duet.type_line("short line after the long one");
    duet.close_stdin();

    let parts = tutorial_parts(&mut python, &long, duet_port);
    assert_eq!(parts.concat(), long);
    assert_eq!(
        tutorial_next(&mut python, WAIT),
        (duet_port, "short line after the long one".to_owned())
    );
    let status = duet.wait(WAIT);
    assert!(
        status.success(),
        "duet chat: {status}:\n{}",
        duet.seen.join("\n")
    );
}

#[test]
fn plain_datagrams_sent_and_received_are_kept_in_the_history() {
    let home = duet_tests::Home::new("legacy-history");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let peer_addr = peer.local_addr().expect("addr").to_string();
    let port = free_port();
    let bind = local(port);
    let mut duet = home.duet(&["chat", "--legacy", "--bind", &bind, "--peer", &peer_addr]);
    duet.expect(&format!("* listening on {bind}"), WAIT);
    duet.type_line("out to the tutorial 你好");
    let mut buf = [0u8; 1024];
    let (n, _) = peer.recv_from(&mut buf).expect("datagram from duet");
    assert_eq!(&buf[..n], "out to the tutorial 你好".as_bytes());
    peer.send_to("in from the tutorial\n".as_bytes(), &bind)
        .expect("send to duet");
    next_message(&mut duet, &peer_addr);
    duet.close_stdin();
    assert!(duet.wait(WAIT).success(), "{:?}", duet.seen);
    let (code, out) = home.run(&["history"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "-> {peer_addr} (plain): out to the tutorial 你好 [sent]"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("<- {peer_addr} (plain): in from the tutorial\\n")),
        "{out}"
    );
}
