//! Two plain `Session`s on a wire the script controls, plus forged and arbitrary datagrams
//! injected into A, interleaved with sends, timeouts and closes.
//!
//! Checks (see `duet_fuzz`'s crate docs): no panic; datagrams fit the limit; no deadline
//! stays due after a full turn; outcomes once per id; B, which hears only A's real frames
//! (lost, duplicated, reordered), shows exactly A's messages, once each, in order; after the
//! wire settles, whatever was reported delivered was shown (unless forged input reached A).
//!
//! Script: one byte of setup, then operations (`OP_*` in `examples/write_corpus.rs` mirror
//! the numbers below).
#![no_main]

use duet_core::session::Config;
use duet_core::time::Duration;
use duet_core::wire::Frame;
use duet_core::wire::frame::{HEADER_LEN, ID_LEN, MAX_PAYLOAD, flags, kind};
use duet_core::{Instant, MAX_DATAGRAM, Session};
use duet_fuzz::{Pair, Reader, Side, a_addr, b_addr, stranger};
use libfuzzer_sys::fuzz_target;

const EPOCH_A: u32 = 0x0a0a_0a0a;
const EPOCH_B: u32 = 0x0b0b_0b0b;
/// Steps one input may take: bounds the run time of any input.
const MAX_OPS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let setup = r.byte();
    let a = Session::new(Instant::ZERO, Config::default(), EPOCH_A, Some(b_addr()));
    // B knows A's address, or adopts the first sender it hears.
    let b_peer = (setup & 1 == 0).then(a_addr);
    let b = Session::new(Instant::ZERO, Config::default(), EPOCH_B, b_peer);
    let mut pair = Pair::new(a, b);
    pair.turn(Side::A);
    pair.turn(Side::B);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = r.byte();
        let side = Side::of(r.byte());
        match op % 12 {
            0 => {
                let text = String::from_utf8_lossy(r.bytes(4 * MAX_PAYLOAD)).into_owned();
                pair.send(side, &text);
            }
            1 => pair.deliver(side),
            2 => pair.drop_one(side),
            3 => pair.delay(side),
            4 => pair.duplicate(side),
            5 => pair.advance(Duration::from_millis(u64::from(r.u16()))),
            6 => pair.advance_to_timer(),
            7 => {
                // Arbitrary bytes, up to a little past the limit.
                let bytes = r.bytes(MAX_DATAGRAM + 8).to_vec();
                let from = if side == Side::A {
                    b_addr()
                } else {
                    stranger()
                };
                pair.inject(Side::A, from, &bytes, false);
            }
            8 => {
                let bytes = forged_frame(&mut r);
                let from = if side == Side::A {
                    b_addr()
                } else {
                    stranger()
                };
                pair.inject(Side::A, from, &bytes, false);
            }
            9 => {
                // A datagram B really sent, with one byte changed.
                let history = &pair.history[Side::B as usize];
                if history.is_empty() {
                    continue;
                }
                let pick = usize::from(r.u16()) % history.len();
                let mut bytes = history[pick].clone();
                let (at, xor) = (usize::from(r.u16()), r.byte());
                let len = bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= xor;
                }
                pair.inject(Side::A, b_addr(), &bytes, false);
            }
            10 => {
                pair.side(side).chat.close();
                pair.turn(side);
            }
            _ => {
                // A's own datagram reflected back to it.
                if let Some(bytes) = pair.history[Side::A as usize].back().cloned() {
                    pair.inject(Side::A, b_addr(), &bytes, false);
                }
            }
        }
    }
    pair.settle();
});

/// A frame built field by field: mostly well-formed (so it gets past `Repr::parse` and
/// into the session's logic), with epochs and acknowledgements that name the real sessions.
fn forged_frame(r: &mut Reader<'_>) -> Vec<u8> {
    let k = 1 + r.byte() % 4;
    let f = r.byte();
    let fix = f & 0x80 == 0;
    let flag_bits = if k == kind::DATA || !fix {
        f & flags::ALL
    } else {
        0
    };
    let epoch = match r.byte() % 4 {
        0 => EPOCH_B,
        1 => EPOCH_A,
        2 => 1,
        _ => r.u32(),
    };
    let (seq, base) = (u32::from(r.u16()), u32::from(r.u16()));
    let ack_epoch = match r.byte() % 3 {
        0 => EPOCH_A,
        1 => 0,
        _ => r.u32(),
    };
    let (ack, ack_bits) = (u32::from(r.u16()), r.u32());
    let mut payload = Vec::new();
    if k == kind::DATA {
        if flag_bits & flags::FIRST != 0 {
            payload.extend_from_slice(&r.u32().to_be_bytes());
            payload.extend_from_slice(&r.u32().to_be_bytes());
            debug_assert_eq!(payload.len(), ID_LEN);
        }
        let text = String::from_utf8_lossy(r.bytes(MAX_PAYLOAD - ID_LEN)).into_owned();
        payload.extend_from_slice(text.as_bytes());
        payload.truncate(MAX_PAYLOAD);
    }
    let mut bytes = vec![0u8; HEADER_LEN + payload.len()];
    let mut frame = Frame::new_unchecked(&mut bytes[..]);
    frame.set_magic(*b"du");
    frame.set_version(1);
    frame.set_kind(k);
    frame.set_flags(flag_bits);
    frame.set_encoding(u8::from(k == kind::DATA));
    frame.set_payload_len(payload.len() as u16);
    frame.set_epoch(epoch);
    if k == kind::DATA || !fix {
        frame.set_seq(seq.max(if fix { base } else { 0 }));
    }
    frame.set_base(base);
    frame.set_ack_epoch(ack_epoch);
    if ack_epoch != 0 || !fix {
        frame.set_ack(ack);
        frame.set_ack_bits(ack_bits);
    }
    frame.payload_mut().copy_from_slice(&payload);
    bytes
}
