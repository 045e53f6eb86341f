//! Writes the seed corpus under `fuzz/corpus/<target>/`: real frames and sealed datagrams
//! captured from in-memory conversations, and scripts for the session and handshake targets
//! that walk through a conversation, loss, forgery and rekeying.
//!
//! `cargo run --example write_corpus` (from `fuzz/`). Deterministic: the keys, seeds and
//! epochs are fixed, so running it again rewrites the same files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use duet_core::session::{Config, Session};
use duet_core::time::{Duration, Instant};
use duet_fuzz::{Exchange, Pair, Side, Writer, a_addr, b_addr, initiator, responder};

/// Operation numbers of `fuzz_targets/session.rs`.
mod session_op {
    pub const SEND: u8 = 0;
    pub const DELIVER: u8 = 1;
    pub const DROP: u8 = 2;
    pub const DELAY: u8 = 3;
    pub const DUPLICATE: u8 = 4;
    pub const ADVANCE: u8 = 5;
    pub const TO_TIMER: u8 = 6;
    pub const RAW: u8 = 7;
    pub const FORGED: u8 = 8;
    pub const MUTATED: u8 = 9;
    pub const CLOSE: u8 = 10;
    pub const REFLECT: u8 = 11;
}

/// Operation numbers of `fuzz_targets/handshake.rs`, mode 2.
mod pair_op {
    pub const SEND: u8 = 0;
    pub const DELIVER: u8 = 1;
    pub const DROP: u8 = 2;
    pub const DELAY: u8 = 3;
    pub const DUPLICATE: u8 = 4;
    pub const ADVANCE: u8 = 5;
    pub const TO_TIMER: u8 = 6;
    pub const REPLAY: u8 = 7;
    pub const TAMPER: u8 = 8;
    pub const REFLECT: u8 = 9;
    pub const INJECT: u8 = 10;
}

const A: u8 = 0;
const B: u8 = 1;

fn corpus_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus_dir(target).join(name), bytes).expect("write seed");
}

fn long_text() -> String {
    "长消息😀 ".repeat(200)
}

/// Every distinct datagram of a short plain conversation: DATA in one and several parts,
/// ACK, PING and CLOSE.
fn plain_frames() -> Vec<Vec<u8>> {
    let a = Session::new(
        Instant::ZERO,
        Config::default(),
        0x0a0a_0a0a,
        Some(b_addr()),
    );
    let b = Session::new(
        Instant::ZERO,
        Config::default(),
        0x0b0b_0b0b,
        Some(a_addr()),
    );
    let mut pair = Pair::new(a, b);
    let mut captured = BTreeSet::new();
    let texts = ["hi".to_owned(), "你好，世界 😀".to_owned(), long_text()];
    for t in &texts {
        pair.send(Side::A, t);
        pair.send(Side::B, "ok");
    }
    for _ in 0..32 {
        for side in [Side::A, Side::B] {
            if let Some(d) = pair.wire[side as usize].front() {
                captured.insert(d.clone());
            }
            pair.deliver(side);
        }
    }
    pair.advance(Duration::from_secs(6));
    pair.a.chat.close();
    pair.turn(Side::A);
    for side in [Side::A, Side::B] {
        captured.extend(pair.wire[side as usize].iter().cloned());
    }
    assert_eq!(
        pair.b.shown.len(),
        texts.len(),
        "the conversation did not complete"
    );
    captured.into_iter().collect()
}

/// Sealed datagrams: the handshake and transport messages of a short sealed conversation.
fn sealed_datagrams() -> Vec<Vec<u8>> {
    let mut pair = Pair::new(initiator(), responder(false));
    let mut captured = BTreeSet::new();
    pair.send(Side::A, "hi");
    pair.send(Side::A, &long_text());
    for _ in 0..32 {
        for side in [Side::A, Side::B] {
            if let Some(d) = pair.wire[side as usize].front() {
                captured.insert(d.clone());
            }
            pair.deliver(side);
        }
    }
    assert_eq!(
        pair.b.shown.len(),
        2,
        "the sealed conversation did not complete"
    );
    captured.into_iter().collect()
}

fn send(w: &mut Writer, op: u8, side: u8, text: &str) {
    w.byte(op).byte(side).bytes(text.as_bytes());
}

fn exchange_all(w: &mut Writer, deliver: u8, rounds: usize) {
    for _ in 0..rounds {
        w.byte(deliver).byte(A).byte(deliver).byte(B);
    }
}

fn session_scripts(frames: &[Vec<u8>]) {
    use session_op::*;
    let t = "session";
    // A conversation: short, Chinese and multi-part messages both ways, then goodbye.
    let mut w = Writer::default();
    w.byte(0);
    send(&mut w, SEND, A, "hi");
    send(&mut w, SEND, B, "你好");
    exchange_all(&mut w, DELIVER, 4);
    send(&mut w, SEND, A, &long_text());
    exchange_all(&mut w, DELIVER, 8);
    w.byte(ADVANCE).byte(A).u16(6000);
    exchange_all(&mut w, DELIVER, 2);
    w.byte(CLOSE).byte(A);
    exchange_all(&mut w, DELIVER, 2);
    write(t, "conversation", &w.bytes);

    // Loss, duplication, reordering and timers; B adopts the first sender.
    let mut w = Writer::default();
    w.byte(1);
    for i in 0..6 {
        send(&mut w, SEND, A, &format!("message {i}"));
    }
    send(&mut w, SEND, B, "reply");
    for op in [DROP, DELIVER, DELAY, DUPLICATE, DELIVER, DROP, DELIVER] {
        w.byte(op).byte(A);
    }
    w.byte(DELIVER).byte(B);
    for _ in 0..6 {
        w.byte(TO_TIMER).byte(A);
        exchange_all(&mut w, DELIVER, 3);
    }
    write(t, "lossy", &w.bytes);

    // Forged frames of every kind into A, between real traffic.
    let mut w = Writer::default();
    w.byte(0);
    send(&mut w, SEND, A, "hi");
    send(&mut w, SEND, B, "ok");
    exchange_all(&mut w, DELIVER, 2);
    for (kind, epoch_choice) in [(0u8, 0u8), (1, 0), (2, 1), (3, 2), (0, 3)] {
        w.byte(FORGED).byte(A);
        w.byte(kind).byte(0x03).byte(epoch_choice);
        if epoch_choice == 3 {
            w.u32(0xdead_beef);
        }
        w.u16(3).u16(1).byte(0).u16(1).u32(0b101);
        if kind == 0 {
            w.u32(0x1122_3344).u32(0x5566_7788);
            w.bytes("forged".as_bytes());
        }
    }
    exchange_all(&mut w, DELIVER, 4);
    write(t, "forged", &w.bytes);

    // Real frames as raw input from the peer's address and a stranger's, then mutated
    // replays and reflections.
    let mut w = Writer::default();
    w.byte(0);
    send(&mut w, SEND, B, "ok");
    for f in frames.iter().take(6) {
        w.byte(RAW).byte(A).bytes(f);
        w.byte(RAW).byte(B).bytes(f);
    }
    exchange_all(&mut w, DELIVER, 2);
    w.byte(MUTATED).byte(A).u16(0).u16(20).byte(0x40);
    w.byte(REFLECT).byte(A);
    exchange_all(&mut w, DELIVER, 2);
    write(t, "raw-and-replayed", &w.bytes);

    // Regression (found by this target): seven one-part messages fill the send window, so
    // the two parts of the eighth are first sent 10 s apart. A forged ACK from the peer's
    // address (new epoch) marks the first of them consumed; a second new epoch makes A send
    // the unfinished message again (`acked` reset, `consumed` kept). From 30 s on,
    // `poll_timeout` names the first part's delivery deadline, which `handle_timeout`
    // never acts on (it skips consumed parts), until the second part's deadline at 40 s:
    // ten seconds in which a host's loop spins.
    let mut w = Writer::default();
    w.byte(0);
    for i in 0..7 {
        send(&mut w, SEND, A, &format!("m{i}"));
    }
    send(&mut w, SEND, A, &"x".repeat(1000));
    w.byte(ADVANCE).byte(A).u16(10_000);
    // Forged ACK: kind 1 + 1 = ACK, well-formed, epoch 0x1234, seq 0, base 0,
    // acknowledging A's epoch up to seq 8, no selective bits.
    w.byte(FORGED).byte(A).byte(1).byte(0).byte(3).u32(0x1234);
    w.u16(0).u16(0).byte(0).u16(8).u32(0);
    // Another new epoch, acknowledging nothing.
    w.byte(FORGED).byte(A).byte(1).byte(0).byte(3).u32(0x5678);
    w.u16(0).u16(0).byte(1).u16(0).u32(0);
    w.byte(ADVANCE).byte(A).u16(20_500);
    write(t, "regression-consumed-part-after-takeover", &w.bytes);
}

fn handshake_scripts() {
    let t = "handshake";
    let ex = Exchange::run();
    // Mode 0: the real initiation, then garbage, a changed response and a changed transport.
    let mut w = Writer::default();
    w.byte(0);
    w.byte(0).byte(1);
    w.byte(2).bytes(&[0u8; 40]).byte(1);
    w.byte(1).byte(1).byte(1).u16(30).byte(0x01).byte(2);
    w.byte(1)
        .byte(2)
        .byte(2)
        .u16(20)
        .byte(0x80)
        .u16(3)
        .byte(0x02)
        .byte(3);
    w.byte(0x80).byte(1);
    w.byte(3).bytes(&ex.transport).byte(1);
    write(t, "responder", &w.bytes);

    // Mode 1: unchanged (the handshake completes), the index changed, the Noise part changed.
    for (name, mutations) in [
        ("handshake-intact", vec![]),
        ("handshake-index", vec![(5u16, 0x10u8)]),
        ("handshake-noise", vec![(40, 0x01)]),
    ] {
        let mut w = Writer::default();
        w.byte(1);
        for _ in 0..2 {
            w.byte(mutations.len() as u8);
            for &(at, xor) in &mutations {
                w.byte(2).u16(at).byte(xor);
            }
        }
        write(t, name, &w.bytes);
    }

    // Mode 2: a conversation through loss, replays, tampering, reflection and a rekey.
    use pair_op::*;
    for (name, both) in [("pair-responder-waits", 0u8), ("pair-both-initiate", 1)] {
        let mut w = Writer::default();
        w.byte(2).byte(both);
        send(&mut w, SEND, A, "hi");
        send(&mut w, SEND, B, "你好");
        exchange_all(&mut w, DELIVER, 6);
        send(&mut w, SEND, A, &long_text());
        w.byte(DROP)
            .byte(A)
            .byte(DUPLICATE)
            .byte(A)
            .byte(DELAY)
            .byte(A);
        w.byte(TAMPER).byte(A).u16(20).byte(0x04);
        w.byte(REFLECT).byte(A);
        w.byte(REPLAY).byte(A).u16(0);
        w.byte(REPLAY).byte(B).u16(1);
        exchange_all(&mut w, DELIVER, 6);
        w.byte(INJECT).byte(B).bytes(&ex.initiation);
        w.byte(TO_TIMER).byte(A);
        exchange_all(&mut w, DELIVER, 4);
        // Past rekeying (120 s): 1300 tenths of a second.
        w.byte(ADVANCE).byte(A).u16(0x8000 | 1300);
        exchange_all(&mut w, DELIVER, 4);
        send(&mut w, SEND, B, "after the rekey");
        exchange_all(&mut w, DELIVER, 6);
        write(t, name, &w.bytes);
    }
}

fn main() {
    let frames = plain_frames();
    for (i, f) in frames.iter().enumerate() {
        write("frame", &format!("conversation-{i:02}"), f);
    }
    for (i, d) in sealed_datagrams().iter().enumerate() {
        write("sealed", &format!("conversation-{i:02}"), d);
    }
    session_scripts(&frames);
    handshake_scripts();
    println!("seeds written under {}", corpus_dir("").display());
}
