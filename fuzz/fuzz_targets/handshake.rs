//! The sealed session's handshake and transport, three ways (the script's first byte picks):
//!
//! 0. **Responder under fire**: B, waiting for its paired peer A, is fed arbitrary datagrams
//!    (and, when the script says so, A's real initiation and first transport message). It
//!    never shows a message, sends nothing but a response to a real initiation (until A's
//!    real transport message confirmed the keys: then it talks to A), and counts every other
//!    datagram in exactly one of its rejection counters.
//! 1. **Mutated handshake**: A's real initiation and B's real response with bytes changed.
//!    A changed message never completes a handshake (mac1 covers the header's sender index
//!    too, so not one byte may change).
//! 2. **A pair on a wire the script controls**: the script delivers, drops, delays,
//!    duplicates, replays, tampers with and reflects datagrams and lets time pass (also past
//!    rekeying); each side shows only what the other sent, once, in order, and after the
//!    wire settles everything reported delivered was shown.
#![no_main]

use duet_core::MAX_DATAGRAM;
use duet_core::secure::SecureStats;
use duet_core::time::{Duration, Instant};
use duet_core::wire::frame::MAX_PAYLOAD;
use duet_core::wire::sealed::{self, RESPONSE_LEN};
use duet_fuzz::{
    Exchange, Pair, Reader, Shown, Side, a_addr, b_addr, initiator, responder, stranger,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Steps one input may take: bounds the run time of any input.
const MAX_OPS: usize = 2048;

fn exchange() -> &'static Exchange {
    static EXCHANGE: OnceLock<Exchange> = OnceLock::new();
    EXCHANGE.get_or_init(Exchange::run)
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    match r.byte() % 3 {
        0 => responder_under_fire(&mut r),
        1 => mutated_handshake(&mut r),
        _ => pair_on_a_hostile_wire(&mut r),
    }
});

fn rejected(s: &SecureStats) -> u64 {
    u64::from(s.unauthenticated)
        + u64::from(s.replayed)
        + u64::from(s.unpaired)
        + u64::from(s.busy)
        + u64::from(s.probes_refused)
        // Counted in none of the above (`rejected_mac` is also `unauthenticated`, and
        // `rejected_replay` also `replayed`).
        + u64::from(s.rate_limited)
}

/// Whether `d` is A's real initiation (mac1 covers every byte before it, the header's
/// sender index included, so nothing in it may change).
fn is_real_initiation(d: &[u8]) -> bool {
    d == exchange().initiation
}

fn responder_under_fire(r: &mut Reader<'_>) {
    let mut b = responder(false);
    let mut now = Instant::ZERO;
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut confirmed = false;
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let how = r.byte();
        let d: Vec<u8> = match how % 4 {
            0 => exchange().initiation.clone(),
            1 => {
                // A real message with a few bytes changed.
                let real = [
                    &exchange().initiation,
                    &exchange().response,
                    &exchange().transport,
                ][usize::from(r.byte() % 3)];
                let mut d = real.clone();
                for _ in 0..(r.byte() % 4) {
                    let at = usize::from(r.u16()) % d.len();
                    d[at] ^= r.byte();
                }
                d
            }
            _ => r.bytes(MAX_DATAGRAM + 8).to_vec(),
        };
        now += Duration::from_millis(u64::from(r.byte()) * 10);
        let from = if how & 0x80 == 0 {
            a_addr()
        } else {
            stranger()
        };
        let before = rejected(&b.stats());
        b.handle_datagram(now, from, &d);
        let counted = rejected(&b.stats()) - before;
        if is_real_initiation(&d) || d == exchange().transport {
            // Authentic (the transport message only under the keys of the real initiation).
            assert!(counted <= 1);
        } else {
            assert_eq!(
                counted, 1,
                "a bad datagram was not counted exactly once: {d:02x?}"
            );
        }
        b.handle_timeout(now);
        for _ in 0..64 {
            let Some(t) = b.poll_transmit(now, &mut buf) else {
                break;
            };
            // A response to the real initiation; once A's transport message confirmed the
            // keys, B talks to A (transport, and initiations when it rekeys).
            let response = buf[3] == sealed::kind::RESPONSE && t.len == RESPONSE_LEN;
            assert!(
                response || (confirmed || b.is_established()),
                "B sent {:02x?}",
                &buf[..t.len]
            );
        }
        while let Some(event) = b.poll_event() {
            let shown = duet_fuzz_shown(event);
            assert!(
                !matches!(shown, Shown::Message(_)),
                "B showed a message nobody could send"
            );
        }
        if b.is_established() && !confirmed {
            assert_eq!(
                d,
                exchange().transport,
                "keys confirmed by something A did not send"
            );
            confirmed = true;
        }
    }
}

fn duet_fuzz_shown(event: duet_core::Event<'_>) -> Shown {
    match event {
        duet_core::Event::Message(t) => Shown::Message(t.to_owned()),
        _ => Shown::Peer,
    }
}

/// Apply up to eight script-chosen byte changes (or a cut) to `real`.
fn mutate(r: &mut Reader<'_>, real: &[u8]) -> Vec<u8> {
    let mut d = real.to_vec();
    for _ in 0..(r.byte() % 8) {
        match r.byte() % 8 {
            0 => d.truncate(usize::from(r.u16()) % (real.len() + 1)),
            1 => d.push(r.byte()),
            _ => {
                if !d.is_empty() {
                    let at = usize::from(r.u16()) % d.len();
                    d[at] ^= r.byte();
                }
            }
        }
    }
    d
}

fn mutated_handshake(r: &mut Reader<'_>) {
    let ex = exchange();
    let t0 = Instant::ZERO;
    let mut buf = [0u8; MAX_DATAGRAM];
    // The initiation, changed, to a fresh responder.
    let init = mutate(r, &ex.initiation);
    let mut b = responder(false);
    b.handle_datagram(t0, a_addr(), &init);
    let answered = b.poll_transmit(t0, &mut buf).is_some();
    if answered {
        assert!(
            is_real_initiation(&init),
            "B answered an initiation whose Noise message was changed: {init:02x?}"
        );
    }
    // The response, changed, to the initiator that sent the real initiation.
    let mut a = initiator();
    let t = a.poll_transmit(t0, &mut buf).expect("initiation");
    assert_eq!(
        &buf[..t.len],
        &ex.initiation[..],
        "the initiator is not deterministic"
    );
    let resp = mutate(r, &ex.response);
    a.handle_datagram(t0, b_addr(), &resp);
    // mac1 covers every byte before it, the header's sender index included: only the
    // very response B sent completes the handshake.
    let intact = resp == ex.response;
    if a.is_established() {
        assert!(
            intact,
            "A accepted a response whose Noise message was changed: {resp:02x?}"
        );
    } else {
        assert!(!intact, "A refused B's real response");
    }
}

fn pair_on_a_hostile_wire(r: &mut Reader<'_>) {
    // B also knows A's address (both initiate at once), or waits for A.
    let both = r.byte() & 1 == 1;
    let mut pair = Pair::new(initiator(), responder(both));
    pair.turn(Side::A);
    pair.turn(Side::B);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = r.byte();
        let side = Side::of(r.byte());
        match op % 11 {
            0 => {
                let text = String::from_utf8_lossy(r.bytes(4 * MAX_PAYLOAD)).into_owned();
                pair.send(side, &text);
            }
            1 => pair.deliver(side),
            2 => pair.drop_one(side),
            3 => pair.delay(side),
            4 => pair.duplicate(side),
            5 => {
                // Milliseconds, or (high bit) tenths of seconds: rekeying is minutes away.
                let n = u64::from(r.u16());
                let ms = if n & 0x8000 != 0 {
                    (n & 0x7fff) * 100
                } else {
                    n
                };
                pair.advance(Duration::from_millis(ms));
            }
            6 => pair.advance_to_timer(),
            7 => {
                // An old datagram of `side`, again, to its peer.
                let history = &pair.history[side as usize];
                if !history.is_empty() {
                    let d = history[usize::from(r.u16()) % history.len()].clone();
                    let from = if side == Side::A { a_addr() } else { b_addr() };
                    pair.inject(side.other(), from, &d, true);
                }
            }
            8 => {
                // The next datagram in flight with a byte changed, also delivered.
                if let Some(mut d) = pair.wire[side as usize].front().cloned() {
                    let (at, xor) = (usize::from(r.u16()), r.byte().max(1));
                    let len = d.len();
                    d[at % len] ^= xor;
                    let from = if side == Side::A { a_addr() } else { b_addr() };
                    pair.inject(side.other(), from, &d, true);
                }
            }
            9 => {
                // The next datagram in flight sent back to its sender.
                if let Some(d) = pair.wire[side as usize].front().cloned() {
                    let from = if side == Side::A { b_addr() } else { a_addr() };
                    pair.inject(side, from, &d, true);
                }
            }
            _ => {
                let d = r.bytes(MAX_DATAGRAM + 8).to_vec();
                pair.inject(side, stranger(), &d, true);
            }
        }
    }
    pair.settle();
}
