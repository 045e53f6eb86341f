//! What duet's fuzz targets share: a script reader (and its writer twin, for seeds), two
//! chat endpoints on a wire the fuzzer controls, and the fixed keys of the handshake targets.
//!
//! A fuzz input is a *script*: bytes read from the front, one small decision at a time, with
//! zeros once the input is used up — so every input decodes, libFuzzer's byte mutations map
//! to small changes of behaviour, and `examples/write_corpus.rs` can write meaningful seeds
//! with [`Writer`].
//!
//! The invariants every target checks through [`Pair`]:
//! - no panic, whatever arrives;
//! - every datagram an endpoint writes fits [`MAX_DATAGRAM`];
//! - after `handle_timeout(now)`, draining `poll_event` and `poll_transmit`, `poll_timeout()` is never at
//!   or before `now` (a host would spin), and `poll_transmit` runs dry within a bound;
//! - each `MessageId` gets at most one outcome, and only ids `send_text` returned;
//! - an endpoint whose input is authentic shows only messages its peer sent, each once, in
//!   the order they were sent;
//! - after the wire settles, every message reported delivered was shown by the peer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use arbitrary::Unstructured;
use duet_core::MAX_DATAGRAM;
use duet_core::driver::Protocol;
use duet_core::secure::{PublicKey, Secure, SecureConfig, StaticKeys};
use duet_core::session::{Event, MessageId, SendError, Session};
use duet_core::time::{Duration, Instant};

/// A's address on the simulated wire.
pub fn a_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7789))
}

/// B's address on the simulated wire.
pub fn b_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 7789))
}

/// Somebody else: where injected datagrams come from when the script says so.
pub fn stranger() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 66], 4444))
}

/// Reads a script from the front of the fuzz input; zeros once it is used up.
pub struct Reader<'a> {
    u: Unstructured<'a>,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader {
            u: Unstructured::new(data),
        }
    }

    /// Whether the whole input was read.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary::<u8>().unwrap_or(0)
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A length (two bytes, reduced to at most `max`), then that many bytes (fewer if the
    /// input ends).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        let n = n.min(self.u.len());
        self.u.bytes(n).unwrap_or(&[])
    }
}

/// Writes scripts that [`Reader`] reads back: used to make seed inputs.
#[derive(Default)]
pub struct Writer {
    /// The script so far.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// One byte.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.bytes.push(b);
        self
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A length and the bytes (the reader's `max` must be at least `b.len()`).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u16::try_from(b.len()).expect("seed chunk too long");
        self.u16(len);
        self.bytes.extend_from_slice(b);
        self
    }
}

/// One of the two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The one at [`a_addr`].
    A = 0,
    /// The one at [`b_addr`].
    B = 1,
}

impl Side {
    /// Side A for an even byte, B for an odd one.
    pub fn of(byte: u8) -> Side {
        if byte & 1 == 0 { Side::A } else { Side::B }
    }
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// An event, owned.
#[derive(Debug)]
pub enum Shown {
    /// A whole message.
    Message(String),
    /// A whole binary message.
    Data(Vec<u8>),
    /// An own message was acknowledged.
    Delivered(MessageId),
    /// An own message failed.
    Failed(MessageId),
    /// Peer up or down.
    Peer,
}

fn owned(event: Event<'_>) -> Shown {
    match event {
        Event::Message(text) => Shown::Message(text.to_owned()),
        Event::Data(bytes) => Shown::Data(bytes.to_vec()),
        Event::Delivered(id) => Shown::Delivered(id),
        Event::Failed(id, _) => Shown::Failed(id),
        _ => Shown::Peer,
    }
}

/// What a chat endpoint offers besides the driver's [`Protocol`]: the plain session and the
/// sealed one alike.
pub trait Chat: Protocol {
    /// Queue a message.
    fn send(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError>;
    /// The next event, owned.
    fn next_event(&mut self) -> Option<Shown>;
    /// Say goodbye.
    fn close(&mut self);
    /// Messages queued or in flight.
    fn pending(&self) -> usize;
    /// The state, for failure messages.
    fn describe(&self) -> String;
}

impl Chat for Session {
    fn send(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError> {
        self.send_text(now, text)
    }
    fn next_event(&mut self) -> Option<Shown> {
        self.poll_event().map(owned)
    }
    fn close(&mut self) {
        Session::close(self)
    }
    fn pending(&self) -> usize {
        Session::pending(self)
    }
    fn describe(&self) -> String {
        format!("{self:#?}")
    }
}

impl Chat for Secure {
    fn send(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError> {
        self.send_text(now, text)
    }
    fn next_event(&mut self) -> Option<Shown> {
        self.poll_event().map(owned)
    }
    fn close(&mut self) {
        Secure::close(self)
    }
    fn pending(&self) -> usize {
        self.session().pending()
    }
    fn describe(&self) -> String {
        format!(
            "established {}; {:#?}",
            self.is_established(),
            self.session()
        )
    }
}

/// One endpoint and what it did and saw.
pub struct Endpoint<C> {
    /// The protocol.
    pub chat: C,
    /// Its address.
    pub addr: SocketAddr,
    /// Texts `send_text` accepted, in order.
    pub sent: Vec<String>,
    /// Text of each id `send_text` returned, and how many outcomes it had.
    pub ids: HashMap<MessageId, (String, u32)>,
    /// Messages shown, in order.
    pub shown: Vec<String>,
    /// Texts of own messages reported delivered.
    pub delivered: Vec<String>,
    /// Forged or foreign input that could pass for the peer's reached it (a plain session
    /// cannot tell), so what it shows proves nothing.
    pub forged_in: bool,
    /// Index into the peer's `sent` after the last message this endpoint showed.
    next_expected: usize,
}

impl<C: Chat> Endpoint<C> {
    /// An endpoint at `addr`.
    pub fn new(chat: C, addr: SocketAddr) -> Self {
        Endpoint {
            chat,
            addr,
            sent: Vec::new(),
            ids: HashMap::new(),
            shown: Vec::new(),
            delivered: Vec::new(),
            forged_in: false,
            next_expected: 0,
        }
    }
}

/// Datagrams one wire direction holds at most; more push the oldest out (lost).
const WIRE_CAPACITY: usize = 64;
/// Datagrams kept per direction for replays.
const HISTORY: usize = 256;
/// `poll_transmit` calls one turn may take before it counts as never running dry.
const TRANSMIT_BOUND: usize = 1024;

/// Two endpoints and the wire between them, all under the script's control.
pub struct Pair<C> {
    /// Simulated time.
    pub now: Instant,
    /// The endpoint at [`a_addr`].
    pub a: Endpoint<C>,
    /// The endpoint at [`b_addr`].
    pub b: Endpoint<C>,
    /// Datagrams in flight, indexed by sending side, oldest first.
    pub wire: [VecDeque<Vec<u8>>; 2],
    /// The latest datagrams each side sent.
    pub history: [VecDeque<Vec<u8>>; 2],
}

impl<C: Chat> Pair<C> {
    /// Two endpoints at time zero.
    pub fn new(a: C, b: C) -> Self {
        Pair {
            now: Instant::ZERO,
            a: Endpoint::new(a, a_addr()),
            b: Endpoint::new(b, b_addr()),
            wire: [VecDeque::new(), VecDeque::new()],
            history: [VecDeque::new(), VecDeque::new()],
        }
    }

    /// One side.
    pub fn side(&mut self, side: Side) -> &mut Endpoint<C> {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn addr(side: Side) -> SocketAddr {
        match side {
            Side::A => a_addr(),
            Side::B => b_addr(),
        }
    }

    /// `side` queues `text`.
    pub fn send(&mut self, side: Side, text: &str) {
        let now = self.now;
        let e = self.side(side);
        if let Ok(id) = e.chat.send(now, text) {
            assert!(
                e.ids.insert(id, (text.to_owned(), 0)).is_none(),
                "send_text returned {id:?} twice"
            );
            e.sent.push(text.to_owned());
        }
        self.turn(side);
    }

    /// `to` receives `bytes` from `from`, then takes its turn.
    pub fn receive(&mut self, to: Side, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.side(to).chat.handle_datagram(now, from, bytes);
        self.turn(to);
    }

    /// Like [`Self::receive`], for input that could pass for the peer without proving it.
    pub fn inject(&mut self, to: Side, from: SocketAddr, bytes: &[u8], authenticated: bool) {
        if !authenticated {
            self.side(to).forged_in = true;
        }
        self.receive(to, from, bytes);
    }

    /// Deliver the oldest datagram `from` sent.
    pub fn deliver(&mut self, from: Side) {
        if let Some(d) = self.wire[from as usize].pop_front() {
            self.receive(from.other(), Self::addr(from), &d);
        }
    }

    /// Lose the oldest datagram `from` sent.
    pub fn drop_one(&mut self, from: Side) {
        self.wire[from as usize].pop_front();
    }

    /// Let later datagrams overtake the oldest one `from` sent.
    pub fn delay(&mut self, from: Side) {
        if let Some(d) = self.wire[from as usize].pop_front() {
            self.wire[from as usize].push_back(d);
        }
    }

    /// Deliver the oldest datagram `from` sent, and keep it in flight.
    pub fn duplicate(&mut self, from: Side) {
        if let Some(d) = self.wire[from as usize].front().cloned() {
            self.receive(from.other(), Self::addr(from), &d);
        }
    }

    /// Let time pass, then both sides take their turns.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.turn(Side::A);
        self.turn(Side::B);
    }

    /// Jump to the earliest deadline of either side (if any).
    pub fn advance_to_timer(&mut self) {
        let next = [self.a.chat.poll_timeout(), self.b.chat.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        }
        self.turn(Side::A);
        self.turn(Side::B);
    }

    /// What a host does for `side` after an input: expire timers, show every event, send
    /// everything due — checking the invariants of the crate docs.
    pub fn turn(&mut self, side: Side) {
        let now = self.now;
        let mut buf = [0u8; MAX_DATAGRAM];
        let (e, peer) = match side {
            Side::A => (&mut self.a, &mut self.b),
            Side::B => (&mut self.b, &mut self.a),
        };
        e.chat.handle_timeout(now);
        // Events first, as a host does: taking a message is what lets it be acknowledged.
        while let Some(shown) = e.chat.next_event() {
            match shown {
                Shown::Message(text) => {
                    if !e.forged_in {
                        // In-order subsequence of what the peer sent, each message once.
                        match peer.sent[e.next_expected..].iter().position(|s| *s == text) {
                            Some(i) => e.next_expected += i + 1,
                            None => panic!(
                                "{side:?} showed {text:?}, which the peer did not send after {:?}",
                                e.shown.last()
                            ),
                        }
                    }
                    e.shown.push(text);
                }
                Shown::Delivered(id) | Shown::Failed(id) => {
                    let delivered = matches!(shown, Shown::Delivered(_));
                    let Some((text, outcomes)) = e.ids.get_mut(&id) else {
                        panic!("{side:?}: an outcome for {id:?}, which send_text never returned");
                    };
                    *outcomes += 1;
                    assert_eq!(*outcomes, 1, "{side:?}: {id:?} had a second outcome");
                    if delivered {
                        e.delivered.push(text.clone());
                    }
                }
                Shown::Data(bytes) => assert!(
                    e.forged_in,
                    "{side:?} showed binary message {bytes:?}; the peer sends only text"
                ),
                Shown::Peer => {}
            }
        }
        let mut dry = false;
        for _ in 0..TRANSMIT_BOUND {
            let Some(t) = e.chat.poll_transmit(now, &mut buf) else {
                dry = true;
                break;
            };
            assert!(t.len <= MAX_DATAGRAM, "a datagram of {} bytes", t.len);
            let d = buf[..t.len].to_vec();
            let history = &mut self.history[side as usize];
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(d.clone());
            // Only datagrams to the peer's address travel; anything else is lost.
            if t.dst == peer.addr {
                let wire = &mut self.wire[side as usize];
                if wire.len() == WIRE_CAPACITY {
                    wire.pop_front();
                }
                wire.push_back(d);
            }
        }
        assert!(
            dry,
            "poll_transmit did not run dry in {TRANSMIT_BOUND} calls"
        );
        assert!(
            e.chat.poll_timeout().is_none_or(|t| t > now),
            "{side:?}: a deadline ({:?}) at or before now ({now:?}) after a full turn: a host \
             would spin; {}",
            e.chat.poll_timeout(),
            e.chat.describe()
        );
    }

    /// Deliver everything, in order and without loss, and let timers run, until both sides
    /// are idle (bounded); then every message one side was told was delivered must have been
    /// shown by the other, unless forged input reached either.
    pub fn settle(&mut self) {
        let until = self.now + Duration::from_secs(600);
        for _ in 0..4096 {
            if !self.wire[0].is_empty() || !self.wire[1].is_empty() {
                self.deliver(Side::A);
                self.deliver(Side::B);
                continue;
            }
            if self.a.chat.pending() == 0 && self.b.chat.pending() == 0 {
                break;
            }
            if self.now >= until {
                break;
            }
            let before = self.now;
            self.advance_to_timer();
            if self.now == before && self.wire.iter().all(VecDeque::is_empty) {
                // Nothing due and nothing sent: idle for good.
                break;
            }
        }
        if self.a.forged_in || self.b.forged_in {
            return;
        }
        for (sender, receiver) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let mut shown: HashMap<&str, usize> = HashMap::new();
            for s in &receiver.shown {
                *shown.entry(s).or_default() += 1;
            }
            for d in &sender.delivered {
                let n = shown.get_mut(d.as_str());
                match n {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => panic!("{d:?} was reported delivered but the peer never showed it"),
                }
            }
        }
    }
}

/// The fixed static keys of the handshake targets: A's and B's.
pub fn static_keys() -> (StaticKeys, StaticKeys) {
    (
        StaticKeys::from_secret([1; 32]),
        StaticKeys::from_secret([2; 32]),
    )
}

/// Seeds of A's and B's generators.
pub const SEED_A: [u8; 32] = [0xa1; 32];
/// See [`SEED_A`].
pub const SEED_B: [u8; 32] = [0xb2; 32];

/// A, the initiator, talking to B at [`b_addr`].
pub fn initiator() -> Secure {
    let (a, b) = static_keys();
    Secure::new(
        Instant::ZERO,
        SecureConfig::default(),
        a,
        &[],
        Some((b.public(), b_addr())),
        SEED_A,
    )
}

/// B, waiting for A (or, with `knows_a`, also talking to A at [`a_addr`] from the start, so
/// both initiate at once).
pub fn responder(knows_a: bool) -> Secure {
    let (a, b) = static_keys();
    let a_key: PublicKey = a.public();
    Secure::new(
        Instant::ZERO,
        SecureConfig::default(),
        b,
        &[a_key],
        knows_a.then(|| (a_key, a_addr())),
        SEED_B,
    )
}

/// The real handshake between [`initiator`] and [`responder`]`(false)` at time zero: the
/// initiation, the response, and A's first transport message.
pub struct Exchange {
    /// A's initiation.
    pub initiation: Vec<u8>,
    /// B's response.
    pub response: Vec<u8>,
    /// A's first transport message (a PING under the new keys).
    pub transport: Vec<u8>,
}

impl Exchange {
    /// Run it.
    pub fn run() -> Exchange {
        let (mut a, mut b) = (initiator(), responder(false));
        let mut buf = [0u8; MAX_DATAGRAM];
        let t0 = Instant::ZERO;
        let next = |s: &mut Secure, buf: &mut [u8; MAX_DATAGRAM]| {
            let t = s.poll_transmit(t0, buf).expect("a handshake message");
            buf[..t.len].to_vec()
        };
        let initiation = next(&mut a, &mut buf);
        b.handle_datagram(t0, a_addr(), &initiation);
        let response = next(&mut b, &mut buf);
        a.handle_datagram(t0, b_addr(), &response);
        let transport = next(&mut a, &mut buf);
        Exchange {
            initiation,
            response,
            transport,
        }
    }
}
