//! The firmware on QEMU's mps2-an385 board, talking to the real `duet` binary through QEMU
//! user networking (no root): it builds within its budget, pairs with a host duet and
//! chats with it both ways — sealed, acknowledged, in order, Chinese text and emoji
//! included — and survives a burst of garbage.
//!
//! Each test boots its own board on its own host port (`Board::boot`), so they run in
//! parallel; QEMU is killed when a test ends, pass or fail. The board's console lines these
//! tests read are documented in firmware/app/src/console.rs.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use duet_tests::peers::duet_message;
use duet_tests::qemu::{Board, Host, counter, firmware_elf, firmware_size};
use duet_tests::sim::Rng;
use duet_tests::{Proc, free_port, local};

/// The budget for a small MCU, with encryption (docs/PERFORMANCE.md has the figures).
const FLASH_BUDGET: u64 = 64 * 1024;
const RAM_BUDGET: u64 = 32 * 1024;
/// Time a `duet send` may take to be acknowledged by the board.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a console line or a host line to appear.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// Messages with ASCII, Chinese, emoji (4-byte UTF-8) and a mix, as a person would type.
const MESSAGES: [&str; 5] = [
    "hello board",
    "你好，开发板！",
    "emoji 👋🎉🚀",
    "混合 mixed 文字 ✨ text",
    "last one, 最后一条 🙂",
];

/// `duet send TEXT` to the paired board from `from_port`; panics unless the board
/// acknowledged it.
fn send_to_board(host: &Host, from_port: u16, text: &str) {
    let mut send = host.spawn(&[
        "send",
        "--to",
        "board",
        "--bind",
        &local(from_port),
        "--timeout",
        "20",
        text,
    ]);
    let status = send.wait(SEND_TIMEOUT);
    assert!(
        status.success(),
        "duet send {text:?} was not acknowledged by the board ({status}); duet said:\n{}",
        send.seen.join("\n")
    );
}

/// The texts a `duet listen` printed from the board, in order: its lines name the sender
/// `board@127.0.0.1:PORT` (the paired name at the board's forwarded address).
fn received<'a>(listen: &'a Proc, board: &Board) -> Vec<&'a str> {
    let from = format!("board@{}", board.addr());
    listen
        .seen
        .iter()
        .filter_map(|line| duet_message(line, &from))
        .collect()
}

#[test]
fn firmware_builds_within_64k_flash_and_32k_ram() {
    let elf = firmware_elf();
    let size = firmware_size(&elf);
    println!(
        "firmware {}: flash {} bytes ({:.1} KiB: text {} + data {}), static RAM {} bytes \
         ({:.1} KiB: data {} + bss {})",
        elf.display(),
        size.flash(),
        size.flash() as f64 / 1024.0,
        size.text,
        size.data,
        size.static_ram(),
        size.static_ram() as f64 / 1024.0,
        size.data,
        size.bss,
    );
    assert!(
        size.flash() < FLASH_BUDGET,
        "flash {} bytes is over the {FLASH_BUDGET}-byte budget",
        size.flash()
    );
    assert!(
        size.static_ram() < RAM_BUDGET,
        "static RAM {} bytes is over the {RAM_BUDGET}-byte budget",
        size.static_ram()
    );
    // A firmware this small is missing its network stack or its session.
    assert!(
        size.text > 16 * 1024,
        "implausibly small firmware: {size:?}"
    );
}

#[test]
fn host_messages_are_acknowledged_and_shown_on_the_board_console_in_order() {
    let mut board = Board::boot();
    let host = Host::create();
    // One source port for every send: the board is paired with the host's key there, and
    // each new `duet send` run is that peer starting a new handshake.
    let host_port = free_port();
    host.pair(&mut board, host_port);
    let from = format!("10.0.2.2:{host_port}");
    for text in MESSAGES {
        send_to_board(&host, host_port, text);
        // Acknowledged means received: the line is already on its way to the console.
        board.expect(&format!("msg {from}: {text}"), LINE_TIMEOUT);
    }
    let shown = board.lines_with(&format!("msg {from}: "));
    assert_eq!(
        shown, MESSAGES,
        "board console showed messages out of order or twice"
    );
    let status = board.status();
    // Five handshakes (one per `duet send`) have run: the stack's high-water mark is in.
    println!("{}", status.last().map_or("", String::as_str));
    let messages = status.iter().find_map(|l| counter(l, "messages in"));
    assert_eq!(
        messages,
        Some(MESSAGES.len() as u64),
        "the board's session counted a different number of messages:\n{}",
        status.join("\n")
    );
}

#[test]
fn lines_typed_on_the_board_console_reach_a_host_listen_in_order() {
    let mut board = Board::boot();
    let host = Host::create();
    let listen_port = free_port();
    host.add(&board);
    let mut listen = host.spawn(&[
        "listen",
        "--bind",
        &local(listen_port),
        "--count",
        &MESSAGES.len().to_string(),
    ]);
    listen.expect("* listening on", LINE_TIMEOUT);
    // The host, seen from the board through QEMU user networking, is 10.0.2.2.
    board.pair(&host.key, listen_port);

    // Typed back to back: the session pipelines them, and order must still hold.
    for text in MESSAGES {
        board.type_line(text);
    }
    for (i, text) in MESSAGES.iter().enumerate() {
        board.expect(&format!("delivered #{i}: {text}"), SEND_TIMEOUT);
    }
    let status = listen.wait(SEND_TIMEOUT);
    assert!(
        status.success(),
        "duet listen failed: {}",
        listen.seen.join("\n")
    );
    // The board's datagrams leave QEMU from its forwarded port.
    assert_eq!(
        received(&listen, &board),
        MESSAGES,
        "host listen got the board's lines out of order, twice or not at all:\n{}",
        listen.seen.join("\n")
    );
}

#[test]
fn a_burst_of_garbage_leaves_the_board_chatting() {
    let mut board = Board::boot();
    let host = Host::create();
    let listen_port = free_port();
    host.add(&board);
    let mut listen = host.spawn(&["listen", "--bind", &local(listen_port), "--count", "2"]);
    listen.expect("* listening on", LINE_TIMEOUT);
    board.pair(&host.key, listen_port);
    board.type_line("before the garbage");
    board.expect("delivered #0: before the garbage", SEND_TIMEOUT);

    let seed = 0x0067_6172_6261_6765; // "garbage"
    println!("garbage seed {seed:#x}");
    let mut rng = Rng::new(seed);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind garbage socket");
    let mut sent = 0u32;
    let started = Instant::now();
    // Bounded in count and time: 3000 datagrams or 10 s, whichever comes first.
    while sent < 3000 && started.elapsed() < Duration::from_secs(10) {
        // Mostly short junk, some near and over duet's 1024-byte limit, empty ones too,
        // and some that start like a sealed message or a handshake.
        let len = match rng.below(10) {
            0 => 0,
            1 => 1025 + rng.index(300),
            2 => 900 + rng.index(124),
            _ => rng.index(200),
        };
        let mut datagram: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if let Some(first) = datagram.first_mut()
            && rng.below(2) == 0
        {
            *first = rng.below(4) as u8;
        }
        if socket.send_to(&datagram, board.addr()).is_ok() {
            sent += 1;
        }
    }
    println!("sent {sent} garbage datagrams");
    assert!(sent > 100, "could not send a burst at all");

    // Still chatting, both ways: the board's next line reaches the host...
    board.type_line("after the garbage, 垃圾之后 ✅");
    board.expect("delivered #1: after the garbage, 垃圾之后 ✅", SEND_TIMEOUT);
    let status = listen.wait(SEND_TIMEOUT);
    assert!(
        status.success(),
        "duet listen failed: {}",
        listen.seen.join("\n")
    );
    assert_eq!(
        received(&listen, &board),
        ["before the garbage", "after the garbage, 垃圾之后 ✅"],
        "host listen output:\n{}",
        listen.seen.join("\n")
    );
    // ...and a host message (a new `duet send` from the listen's port) is acknowledged
    // and shown.
    send_to_board(&host, listen_port, "still there? 还在吗？ 🤖");
    board.expect(
        &format!("msg 10.0.2.2:{listen_port}: still there? 还在吗？ 🤖"),
        LINE_TIMEOUT,
    );

    // The garbage reached the board's sealed session and was refused there, not lost on
    // the way.
    let rejected = board.status_counter("unauthenticated");
    println!("board refused {rejected} unauthenticated datagrams");
    assert!(rejected > 0, "no garbage reached the board's session");
}

#[test]
fn messages_lost_across_a_reset_are_reported_on_the_console() {
    // 58 bytes: longer than the console's 48-byte preview, so it is cut, and the cut must
    // fall between two Chinese characters (3 bytes each; 45 bytes would tear one).
    const FIRST: &str = "hello 你好, nobody hears: 没有人在听这个端口吗";
    const FIRST_PREVIEW: &str = "hello 你好, nobody hears: 没有人在听…";
    const SECOND: &str = "second one 🙂";
    let mut board = Board::boot();
    // A real host key at a host port where nothing listens: the board's messages can only
    // wait in its outbox.
    let host = Host::create();
    board.pair(&host.key, free_port());
    board.type_line(FIRST);
    board.type_line(SECOND);
    board.expect("queued #0", LINE_TIMEOUT);
    board.expect("queued #1", LINE_TIMEOUT);

    board.type_line("/reset");
    board.expect(
        "resetting the board: 2 message(s) not yet delivered will be lost",
        LINE_TIMEOUT,
    );
    board.expect(
        "duet ready at 10.0.2.15:7789",
        duet_tests::qemu::BOOT_TIMEOUT,
    );
    assert_eq!(
        board.lines_with("lost across the reset: "),
        [format!(
            "2 message(s) not yet delivered (the first: \"{FIRST_PREVIEW}\")"
        )],
        "expected one report of the two lost messages, console:\n{}",
        board.console.seen.join("\n")
    );
    // Reported at boot, before the board said it was ready again.
    let seen = &board.console.seen;
    let at = |needle: &str| -> Vec<usize> {
        (0..seen.len())
            .filter(|&i| seen[i].contains(needle))
            .collect()
    };
    let (ready, reported) = (at("duet ready at"), at("lost across the reset"));
    assert!(
        ready.len() == 2 && ready[0] < reported[0] && reported[0] < ready[1],
        "the report is not part of the second boot:\n{}",
        seen.join("\n")
    );

    // Nothing pending now (the outbox went with the reset): a second reset loses nothing.
    board.type_line("/reset");
    board.expect("resetting the board", LINE_TIMEOUT);
    board.expect(
        "duet ready at 10.0.2.15:7789",
        duet_tests::qemu::BOOT_TIMEOUT,
    );
    assert_eq!(
        board.lines_with("lost across the reset: ").len(),
        1,
        "a reset with nothing pending reported lost messages:\n{}",
        board.console.seen.join("\n")
    );
}
