//! Hostile input: random bytes, truncated, extended, bit-flipped and oversized frames.
//!
//! Properties checked over many inputs from a seeded PRNG (the seed is printed on failure;
//! `DUET_SIM_SEED` reruns one): `Session::handle_datagram` never panics; a datagram that
//! is not a frame changes nothing but a counter; every `Message` shown is made only of
//! text that arrived in DATA frames; no input leaves a deadline due forever; and
//! `wire::Repr::parse` either rejects bytes or gives a `Repr` that emits the same bytes.
//!
//! A seeded loop rather than proptest: no dependency, every run is the same run, and
//! a failure names a seed that replays it exactly.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;

use duet_core::session::Config;
use duet_core::wire::frame::{
    Bundle, HEADER_LEN, MAX_PAYLOAD, RECORD_HEADER, features, record_header,
};
use duet_core::wire::{AckInfo, Body, Frame, Payload, Repr};
use duet_core::{Duration, Event, Instant, MAX_DATAGRAM, Session, Stats};
use duet_tests::sim::{Link, Pair, Rng, SeedOnPanic, Wire, a_addr, addr, b_addr, seeds};

/// Inputs per property and seed: enough to reach deep into the parser, still well under
/// a second in a debug build.
const ITERATIONS: usize = 20_000;

/// Every datagram A sent B in a short real conversation: DATA in one and several parts,
/// ACK, PING and CLOSE frames, all valid.
fn corpus(seed: u64) -> (Vec<Wire>, u32) {
    let mut pair = Pair::connected(seed, Link::PERFECT, Config::default());
    let captured = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&captured);
    pair.filter = Some(Box::new(move |w: &Wire| {
        if w.from == a_addr() {
            sink.borrow_mut().push(w.clone());
        }
        true
    }));
    let texts = [
        "hi".to_owned(),
        "你好，世界 😀".to_owned(),
        "长消息😀 ".repeat(200),
        "ok".to_owned(),
    ];
    for text in &texts {
        pair.a.session.send_text(pair.now, text).unwrap();
        pair.b.session.send_text(pair.now, "ack me").unwrap();
    }
    pair.drive_until("all shown", Duration::from_secs(10), |p| {
        p.b.log.messages().len() == texts.len() && p.a.log.messages().len() == texts.len()
    });
    // Once A has B's FEATURES, a burst of short lines goes as one bundle.
    pair.drive_until("B's FEATURES heard", Duration::from_secs(10), |p| {
        p.a.session.peer_takes_bundles()
    });
    for text in ["one", "two", "three"] {
        pair.a.session.send_text(pair.now, text).unwrap();
    }
    pair.drive_until("the bundle shown", Duration::from_secs(10), |p| {
        p.b.log.messages().len() == texts.len() + 3
    });
    // B speaks last, so A's keepalive is the first due and A sends the PING below.
    pair.b.session.send_text(pair.now, "last").unwrap();
    pair.drive_until("B's last shown", Duration::from_secs(10), |p| {
        p.a.log.messages().len() == texts.len() + 1
    });
    pair.advance(Duration::from_secs(6)); // a round of keepalive pings
    pair.a.session.close();
    pair.advance(Duration::from_secs(1));
    let b_epoch = pair.b.session.epoch();
    drop(pair);
    let frames = captured.borrow().clone();
    (frames, b_epoch)
}

/// A session in B's place that watches what it is shown.
struct Victim {
    session: Session,
    now: Instant,
    /// Text of every DATA frame fed to it: what a `Message` may be made of.
    texts: HashSet<String>,
    lengths: HashSet<usize>,
    shown: Vec<String>,
}

impl Victim {
    fn new(epoch: u32) -> Self {
        Victim {
            session: Session::new(Instant::ZERO, Config::default(), epoch, Some(a_addr())),
            now: Instant::ZERO,
            texts: HashSet::new(),
            lengths: HashSet::new(),
            shown: Vec::new(),
        }
    }

    /// Feed one datagram and do what a driver does after it. Returns the counters just
    /// before and just after `handle_datagram`.
    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) -> (Stats, Stats) {
        match parse(bytes).map(|r| r.body) {
            Some(Body::Data {
                payload: Payload::Text(text),
                ..
            }) => {
                self.texts.insert(text.to_owned());
                self.lengths.insert(text.len());
            }
            Some(Body::Data {
                payload: Payload::Bundle(bundle),
                ..
            }) => {
                for (_, text) in bundle.messages() {
                    self.texts.insert(text.to_owned());
                    self.lengths.insert(text.len());
                }
            }
            _ => {}
        }
        let before = self.session.stats();
        self.session.handle_datagram(self.now, from, bytes);
        let after = self.session.stats();
        self.session.handle_timeout(self.now);
        // Events first, as a host does: taking a message is what lets it be acknowledged.
        while let Some(event) = self.session.poll_event() {
            if let Event::Message(text) = event {
                self.shown.push(text.to_owned());
            }
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(t) = self.session.poll_transmit(self.now, &mut buf) {
            assert!(t.len <= MAX_DATAGRAM);
            assert!(
                parse(&buf[..t.len]).is_some(),
                "the session sent a bad frame"
            );
        }
        assert!(
            self.session.poll_timeout().is_none_or(|t| t > self.now),
            "a deadline stays due after a full round: a host would spin"
        );
        (before, after)
    }

    /// Every message shown is a concatenation of texts that arrived in DATA frames.
    fn check_shown(&self) {
        for message in &self.shown {
            assert!(
                self.is_made_of_received_text(message),
                "shown text that never arrived: {message:?}"
            );
        }
    }

    fn is_made_of_received_text(&self, message: &str) -> bool {
        // reachable[i]: message[..i] is a concatenation of received texts.
        let mut reachable = vec![false; message.len() + 1];
        reachable[0] = true;
        for i in 0..message.len() {
            if !reachable[i] {
                continue;
            }
            for &len in &self.lengths {
                if message
                    .get(i..i + len)
                    .is_some_and(|p| self.texts.contains(p))
                {
                    reachable[i + len] = true;
                }
            }
        }
        reachable[message.len()]
    }
}

fn parse(bytes: &[u8]) -> Option<Repr<'_>> {
    Repr::parse(&Frame::new_checked(bytes).ok()?).ok()
}

/// `after` differs from `before` only by one more datagram in, counted in `counter`.
fn only_counted((before, after): (Stats, Stats), counter: fn(&mut Stats) -> &mut u32) -> bool {
    let mut expected = before;
    expected.datagrams_in += 1;
    *counter(&mut expected) += 1;
    expected == after
}

/// Bytes that look like a frame often enough to get past the first checks: the right
/// magic and version, a length field that matches, random everything else.
fn frame_shaped(rng: &mut Rng) -> Vec<u8> {
    let payload = match rng.below(4) {
        0 => 0,
        _ => rng.index(64),
    };
    let mut bytes = vec![0u8; HEADER_LEN + payload];
    rng.fill(&mut bytes);
    bytes[..3].copy_from_slice(b"du\x01");
    bytes[3] = rng.below(6) as u8;
    bytes[4] = rng.below(5) as u8;
    bytes[5] = rng.below(3) as u8;
    bytes[6..8].copy_from_slice(&(payload as u16).to_be_bytes());
    // Small numbers make seq >= base and zeroed ack fields likely enough to matter.
    for field in [12..16, 16..20, 20..24, 24..28, 28..32] {
        if rng.chance(0.5) {
            let small = rng.below(4) as u32;
            bytes[field].copy_from_slice(&small.to_be_bytes());
        }
    }
    if rng.chance(0.5) {
        for b in &mut bytes[HEADER_LEN..] {
            *b = b'a' + (*b % 26);
        }
    }
    bytes
}

#[test]
fn random_bytes_change_nothing_but_a_counter() {
    for seed in seeds(&[31]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        let (frames, epoch) = corpus(seed);
        let mut victim = Victim::new(epoch);
        // A live conversation first, so there is state to disturb.
        for w in frames.iter().take(6) {
            let _ = victim.feed(w.from, &w.bytes);
        }
        let mut parsed = 0;
        for _ in 0..ITERATIONS {
            let bytes = if rng.chance(0.5) {
                let mut bytes = vec![0u8; rng.index(MAX_DATAGRAM + 1)];
                rng.fill(&mut bytes);
                bytes
            } else {
                frame_shaped(&mut rng)
            };
            let from = if rng.chance(0.5) {
                a_addr()
            } else {
                addr(9, 9)
            };
            victim.now += Duration::from_millis(rng.below(20));
            let valid = parse(&bytes).is_some();
            let stats = victim.feed(from, &bytes);
            if valid {
                parsed += 1;
            } else {
                assert!(
                    only_counted(stats, |s| &mut s.malformed),
                    "not a frame, yet more than `malformed` changed: {bytes:02x?}"
                );
            }
        }
        victim.check_shown();
        assert!(
            parsed > 0,
            "the generator never produced a valid frame: too weak"
        );
    }
}

#[test]
fn truncated_and_extended_frames_are_rejected() {
    for seed in seeds(&[32]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        let (frames, epoch) = corpus(seed);
        let mut victim = Victim::new(epoch);
        for w in &frames {
            let full = &w.bytes;
            assert!(parse(full).is_some(), "the corpus holds valid frames only");
            let mut cuts: Vec<Vec<u8>> = (0..full.len()).map(|len| full[..len].to_vec()).collect();
            for extra in 1..=8 {
                let mut longer = full.clone();
                longer.extend((0..extra).map(|_| rng.below(256) as u8));
                cuts.push(longer);
            }
            for bytes in cuts {
                assert!(
                    parse(&bytes).is_none(),
                    "{} of {} bytes parsed",
                    bytes.len(),
                    full.len()
                );
                let stats = victim.feed(w.from, &bytes);
                assert!(
                    only_counted(stats, |s| &mut s.malformed),
                    "{} bytes of a {}-byte frame changed more than `malformed`",
                    bytes.len(),
                    full.len()
                );
            }
        }
        assert!(victim.shown.is_empty(), "{:?}", victim.shown);
    }
}

#[test]
fn bit_flipped_frames_show_only_text_that_arrived() {
    for seed in seeds(&[33, 34]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        let (frames, epoch) = corpus(seed);
        let mut victim = Victim::new(epoch);
        let mut accepted = 0;
        for i in 0..ITERATIONS {
            let original = &frames[rng.index(frames.len())];
            let mut bytes = original.bytes.clone();
            // Now and then the genuine frame, so the victim keeps a live conversation.
            if i % 4 != 0 {
                for _ in 0..=rng.below(3) {
                    let at = rng.index(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            victim.now += Duration::from_millis(rng.below(50));
            let valid = parse(&bytes).is_some();
            let stats = victim.feed(original.from, &bytes);
            if valid {
                accepted += 1;
            } else {
                assert!(
                    only_counted(stats, |s| &mut s.malformed),
                    "a rejected frame changed more than `malformed`"
                );
            }
        }
        victim.check_shown();
        assert!(
            accepted > ITERATIONS / 4,
            "too few frames survived to test anything"
        );
        assert!(
            !victim.shown.is_empty(),
            "no message was shown at all: too weak"
        );
    }
}

#[test]
fn oversized_datagrams_change_nothing_but_a_counter() {
    for seed in seeds(&[35]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        let (frames, epoch) = corpus(seed);
        let mut victim = Victim::new(epoch);
        for w in frames.iter().take(6) {
            let _ = victim.feed(w.from, &w.bytes);
        }
        let shown = victim.shown.len();
        for i in 0..200 {
            let len = match i % 3 {
                0 => MAX_DATAGRAM + 1,
                1 => MAX_DATAGRAM + 1 + rng.index(1000),
                _ => MAX_DATAGRAM + 1 + rng.index(65_507 - MAX_DATAGRAM),
            };
            // A valid frame at the start: only the length may reject it.
            let mut bytes = frames[rng.index(frames.len())].bytes.clone();
            let filler = bytes.len();
            bytes.resize(len, 0);
            rng.fill(&mut bytes[filler..]);
            let stats = victim.feed(a_addr(), &bytes);
            assert!(
                only_counted(stats, |s| &mut s.oversized),
                "a {len}-byte datagram changed more than `oversized`"
            );
        }
        assert_eq!(victim.shown.len(), shown);
    }
}

#[test]
fn parse_either_rejects_or_round_trips_the_bytes() {
    for seed in seeds(&[36]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        let (frames, _) = corpus(seed);
        let mut round_trips = 0;
        for i in 0..ITERATIONS {
            let bytes = match i % 3 {
                0 => frame_shaped(&mut rng),
                1 => {
                    let mut bytes = frames[rng.index(frames.len())].bytes.clone();
                    let at = rng.index(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                    bytes
                }
                _ => {
                    let mut bytes = vec![0u8; rng.index(80)];
                    rng.fill(&mut bytes);
                    bytes
                }
            };
            let Some(repr) = parse(&bytes) else { continue };
            round_trips += 1;
            assert_eq!(repr.buffer_len(), bytes.len(), "{repr:?}");
            let mut out = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Frame::new_unchecked(&mut out[..]));
            assert_eq!(
                out, bytes,
                "{repr:?} emits other bytes than it was parsed from"
            );
        }
        assert!(
            round_trips > ITERATIONS / 10,
            "only {round_trips} inputs parsed"
        );
    }
}

/// Valid text of up to `max` bytes, of characters of every UTF-8 width.
fn random_text(rng: &mut Rng, max: usize) -> String {
    const CHARS: [char; 6] = ['a', 'Z', 'é', 'ж', '你', '😀'];
    let mut text = String::new();
    let target = 1 + rng.index(max);
    loop {
        let c = CHARS[rng.index(CHARS.len())];
        if text.len() + c.len_utf8() > target {
            break;
        }
        text.push(c);
    }
    if text.is_empty() {
        text.push('a');
    }
    text
}

#[test]
fn every_valid_repr_survives_emit_then_parse() {
    for seed in seeds(&[37]) {
        let _report = SeedOnPanic(seed);
        let mut rng = Rng::new(seed);
        for _ in 0..ITERATIONS / 4 {
            // Room for the id a first part carries.
            let text = random_text(&mut rng, MAX_PAYLOAD - duet_core::wire::frame::ID_LEN);
            let base = rng.next_u64() as u32;
            let ack = rng.chance(0.5).then(|| AckInfo {
                epoch: (rng.next_u64() as u32).max(1),
                next: rng.next_u64() as u32,
                bits: rng.next_u64() as u32,
            });
            // A bundle of up to five records of random text, filling at most a payload.
            let mut records = Vec::new();
            for _ in 0..1 + rng.below(5) {
                let room = MAX_PAYLOAD.saturating_sub(records.len() + RECORD_HEADER);
                if room == 0 {
                    break;
                }
                let text = random_text(&mut rng, room);
                records.extend_from_slice(&record_header(rng.next_u64(), text.len() as u16));
                records.extend_from_slice(text.as_bytes());
            }
            let body = match rng.below(6) {
                0 => Body::Ack,
                1 => Body::Ping,
                2 => Body::Close,
                3 => Body::Features(rng.below(256) as u8 & features::ALL),
                4 => Body::Data {
                    seq: base.saturating_add(rng.below(100) as u32),
                    first: true,
                    last: true,
                    id: 0,
                    payload: Payload::Bundle(Bundle::new_checked(&records).expect("records")),
                },
                _ => {
                    let first = rng.chance(0.5);
                    Body::Data {
                        seq: base.saturating_add(rng.below(100) as u32),
                        first,
                        last: rng.chance(0.5),
                        // Only a first part carries an id on the wire.
                        id: if first { rng.next_u64() } else { 0 },
                        payload: Payload::Text(&text),
                    }
                }
            };
            let repr = Repr {
                epoch: (rng.next_u64() as u32).max(1),
                base,
                ack,
                body,
            };
            let mut bytes = vec![0u8; repr.buffer_len()];
            assert!(bytes.len() <= MAX_DATAGRAM);
            repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
            assert_eq!(parse(&bytes), Some(repr));
        }
    }
}

#[test]
fn the_corpus_is_the_conversation_it_claims() {
    // Guards the other tests: a corpus without these kinds would make them weak.
    let (frames, _) = corpus(31);
    let kinds: HashSet<&str> = frames
        .iter()
        .filter_map(|w| parse(&w.bytes))
        .map(|r| match r.body {
            Body::Data {
                payload: Payload::Bundle(_),
                ..
            } => "bundle",
            Body::Data {
                first: true,
                last: true,
                ..
            } => "single",
            Body::Data { .. } => "part",
            Body::Ack => "ack",
            Body::Ping => "ping",
            Body::Close => "close",
            Body::Features(_) => "features",
        })
        .collect();
    for kind in [
        "single", "part", "bundle", "ack", "ping", "close", "features",
    ] {
        assert!(kinds.contains(kind), "no {kind} frame in {kinds:?}");
    }
    assert!(frames.iter().all(|w| w.to == b_addr()));
}
