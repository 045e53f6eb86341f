//! A deterministic two-session simulation in quinn-proto's `Pair` style.
//!
//! Two [`Session`]s, A and B (and any bystanders, such as a stranger), talk through a
//! simulated link in simulated time: no sockets, no clock, no threads, no sleeping. The
//! link is driven by a seeded PRNG that drops, duplicates and delays datagrams (so they
//! are reordered); the same seed always replays the same run. Every panic while a [`Pair`] is alive prints its seed; set
//! `DUET_SIM_SEED` to rerun a simulation with that seed only (see [`seeds`]).
//!
//! [`Pair::step`] advances simulated time to the next thing that can happen (a datagram
//! arriving, or a session's [`Session::poll_timeout`]) and runs every session at that
//! instant the way `duet_core::Driver::poll` does: received datagrams, then
//! `handle_timeout`, then every `poll_transmit`. Then it drains `poll_event` into each
//! endpoint's [`Log`]. After that no session may still have a deadline at or before `now`: a
//! deadline that nothing clears would make every host spin, so the step panics instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use duet_core::session::{Config, INBOX_BYTES, OUTBOX_BYTES};
use duet_core::wire::{Body, Frame, Repr};
use duet_core::{Duration, Event, FailReason, Instant, MAX_DATAGRAM, MessageId, Session};

/// The environment variable that pins every simulation to one seed.
pub const SEED_VAR: &str = "DUET_SIM_SEED";

/// The environment variable that makes a simulation print every datagram.
pub const TRACE_VAR: &str = "DUET_SIM_TRACE";

/// Steps a [`Pair`] takes at most in its life: a bound on work, on top of the bounds on
/// simulated time, so a livelock in the core fails instead of hanging.
pub const MAX_STEPS: u64 = 2_000_000;

/// The seeds a simulation runs with: `defaults`, or only the one in `DUET_SIM_SEED`.
pub fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var(SEED_VAR) {
        Ok(seed) => vec![
            seed.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_VAR}={seed:?} is not a u64")),
        ],
        Err(_) => defaults.to_vec(),
    }
}

/// `10.0.0.<host>:<port>`: addresses for simulated endpoints.
pub fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)), port)
}

/// Where A lives.
pub fn a_addr() -> SocketAddr {
    addr(1, 4000)
}

/// Where B lives.
pub fn b_addr() -> SocketAddr {
    addr(2, 5000)
}

/// A small, fast, seedable PRNG (splitmix64). Statistical quality is ample for choosing
/// which datagrams to drop; what matters is that a seed replays exactly.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that replays the same numbers for the same seed.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-high: unbiased enough for tests and never divides by zero.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `0..n` as a `usize`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// `true` `percent` times in a hundred.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform f64 in [0, 1).
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.fill(&mut bytes);
        bytes
    }

    /// A 32-byte seed or key.
    pub fn seed32(&mut self) -> [u8; 32] {
        let mut seed = [0; 32];
        self.fill(&mut seed);
        seed
    }

    /// Fill `bytes` with random bytes.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let random = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
    }
}

/// How the simulated link treats each datagram, independently per datagram.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram that was not lost arrives twice (each copy with its own
    /// delay).
    pub duplicate: f64,
    /// The delay every datagram has.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`: datagrams overtake each other.
    pub jitter: Duration,
    /// Probability of a further delay, uniform in `0..=reorder_delay`: far overtaking.
    pub reorder: f64,
    /// The most a reordered datagram is held back further.
    pub reorder_delay: Duration,
}

impl Link {
    /// A LAN: 5 ms, nothing lost, nothing reordered.
    pub const PERFECT: Link = Link {
        loss: 0.0,
        duplicate: 0.0,
        latency: Duration::from_millis(5),
        jitter: Duration::ZERO,
        reorder: 0.0,
        reorder_delay: Duration::ZERO,
    };

    /// A bad Internet path: `loss` lost, 10 % duplicated, 5–45 ms latency, and 5 % held
    /// back up to a further 150 ms.
    pub fn lossy(loss: f64) -> Link {
        Link {
            loss,
            duplicate: 0.1,
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(40),
            reorder: 0.05,
            reorder_delay: Duration::from_millis(150),
        }
    }
}

/// A datagram on the simulated wire.
#[derive(Clone, Debug)]
pub struct Wire {
    /// Who sent it.
    pub from: SocketAddr,
    /// Where it goes.
    pub to: SocketAddr,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A datagram in flight, ordered by arrival time, then by when it was sent.
struct InFlight {
    arrives: Instant,
    order: u64,
    wire: Wire,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.arrives, self.order) == (other.arrives, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.arrives, self.order).cmp(&(other.arrives, other.order))
    }
}

/// An event a session reported, owned so it outlives the session's borrow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// [`Event::Message`].
    Message(String),
    /// [`Event::Data`].
    Data(Vec<u8>),
    /// [`Event::Delivered`].
    Delivered(MessageId),
    /// [`Event::Failed`].
    Failed(MessageId, FailReason),
    /// [`Event::PeerUp`].
    PeerUp(SocketAddr),
    /// [`Event::PeerDown`].
    PeerDown,
}

impl From<Event<'_>> for Happened {
    fn from(event: Event<'_>) -> Self {
        match event {
            Event::Message(text) => Happened::Message(text.to_owned()),
            Event::Data(bytes) => Happened::Data(bytes.to_vec()),
            Event::Delivered(id) => Happened::Delivered(id),
            Event::Failed(id, why) => Happened::Failed(id, why),
            Event::PeerUp(addr) => Happened::PeerUp(addr),
            Event::PeerDown => Happened::PeerDown,
        }
    }
}

/// Everything one side's application was shown, with when.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Events in the order `poll_event` returned them.
    pub entries: Vec<(Instant, Happened)>,
}

impl Log {
    /// The texts of the messages received, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Happened::Message(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The ids reported delivered, in order.
    pub fn delivered(&self) -> Vec<MessageId> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Happened::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The ids reported failed, with when.
    pub fn failed(&self) -> Vec<(Instant, MessageId, FailReason)> {
        self.entries
            .iter()
            .filter_map(|(at, e)| match e {
                Happened::Failed(id, why) => Some((*at, *id, *why)),
                _ => None,
            })
            .collect()
    }

    /// Peer changes: `Some(addr)` for up, `None` for down, with when.
    pub fn peer_changes(&self) -> Vec<(Instant, Option<SocketAddr>)> {
        self.entries
            .iter()
            .filter_map(|(at, e)| match e {
                Happened::PeerUp(addr) => Some((*at, Some(*addr))),
                Happened::PeerDown => Some((*at, None)),
                _ => None,
            })
            .collect()
    }

    /// How many events name `id` as delivered or failed.
    pub fn outcomes_of(&self, id: MessageId) -> usize {
        self.entries
            .iter()
            .filter(
                |(_, e)| matches!(e, Happened::Delivered(i) | Happened::Failed(i, _) if *i == id),
            )
            .count()
    }
}

/// One simulated endpoint: a session at an address, and what its application saw.
///
/// `O` and `I` size the session's buffers, as `Session`'s own parameters do.
#[derive(Debug)]
pub struct Endpoint<const O: usize = OUTBOX_BYTES, const I: usize = INBOX_BYTES> {
    /// The session under test.
    pub session: Session<O, I>,
    /// Where it receives datagrams; datagrams it sends come from here.
    pub addr: SocketAddr,
    /// What `poll_event` returned.
    pub log: Log,
    /// When a datagram last reached it.
    pub last_arrival: Option<Instant>,
    /// For a session with [`Config::confirm_receipt`]: its application stores what it took
    /// and confirms it at the end of every `n`th turn (a turn is what the endpoint does in
    /// one [`Pair::step`]); `None`, only when the test calls [`Endpoint::confirm`].
    pub confirm_every: Option<u64>,
    /// How many of the messages in `log` the application had when it last confirmed.
    pub confirmed: usize,
    /// Turns taken so far.
    pub turns: u64,
}

impl<const O: usize, const I: usize> Endpoint<O, I> {
    /// An endpoint running `session` at `addr`.
    pub fn new(addr: SocketAddr, session: Session<O, I>) -> Self {
        Endpoint {
            session,
            addr,
            log: Log::default(),
            last_arrival: None,
            confirm_every: None,
            confirmed: 0,
            turns: 0,
        }
    }

    /// The application has stored every message it took: confirm them
    /// ([`Session::confirm_received`]).
    pub fn confirm(&mut self) {
        self.session.confirm_received();
        self.confirmed = self.log.messages().len();
    }
}

/// Which endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first endpoint.
    A,
    /// The second endpoint.
    B,
}

/// Decides whether a datagram may enter the link (`true`) or is dropped (`false`).
pub type Filter = Box<dyn FnMut(&Wire) -> bool>;

/// Two sessions, a simulated link between them, and simulated time.
pub struct Pair<const O: usize = OUTBOX_BYTES, const I: usize = INBOX_BYTES> {
    /// The seed of the link's PRNG.
    pub seed: u64,
    /// Simulated time.
    pub now: Instant,
    /// How the link treats datagrams.
    pub link: Link,
    /// Drops every datagram while set, as if the cable were pulled.
    pub cut: bool,
    /// Drops the datagrams it rejects (after `cut`, before the link's own losses).
    pub filter: Option<Filter>,
    /// The first endpoint.
    pub a: Endpoint<O, I>,
    /// The second endpoint.
    pub b: Endpoint<O, I>,
    /// More endpoints on the same network (a stranger, a newcomer), run like A and B.
    pub bystanders: Vec<Endpoint<O, I>>,
    /// Datagrams that arrived at an address where no endpoint lives.
    pub stray: Vec<Wire>,
    /// Steps taken so far.
    pub steps: u64,
    rng: Rng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    arrivals: HashMap<(SocketAddr, SocketAddr), u64>,
}

impl Pair {
    /// A at [`a_addr`] and B at [`b_addr`], each told the other's address, at time zero.
    pub fn connected(seed: u64, link: Link, config: Config) -> Self {
        Self::connected_sized(seed, link, config)
    }
}

impl<const O: usize, const I: usize> Pair<O, I> {
    /// [`Pair::connected`] with sessions of the sizes this type names.
    pub fn connected_sized(seed: u64, link: Link, config: Config) -> Self {
        let (epoch_a, epoch_b) = (epoch(seed, 1), epoch(seed, 2));
        // Two runs with one epoch would look like one session to each other.
        let epoch_b = if epoch_b == epoch_a {
            epoch_a.wrapping_add(1).max(1)
        } else {
            epoch_b
        };
        let a = Session::new_sized(Instant::ZERO, config, epoch_a, Some(b_addr()));
        let b = Session::new_sized(Instant::ZERO, config, epoch_b, Some(a_addr()));
        Self::new(
            seed,
            link,
            Endpoint::new(a_addr(), a),
            Endpoint::new(b_addr(), b),
        )
    }

    /// Two endpoints at time zero.
    pub fn new(seed: u64, link: Link, a: Endpoint<O, I>, b: Endpoint<O, I>) -> Self {
        Pair {
            seed,
            now: Instant::ZERO,
            link,
            cut: false,
            filter: None,
            a,
            b,
            bystanders: Vec::new(),
            stray: Vec::new(),
            steps: 0,
            rng: Rng::new(seed),
            in_flight: BinaryHeap::new(),
            sent: 0,
            arrivals: HashMap::new(),
        }
    }

    /// The endpoint on `side`.
    pub fn side(&mut self, side: Side) -> &mut Endpoint<O, I> {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// A fresh random number from the pair's PRNG (e.g. for a new session's epoch), so the
    /// whole run still follows from the seed.
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Datagrams from `from` that reached `to` so far.
    pub fn arrivals(&self, from: SocketAddr, to: SocketAddr) -> u64 {
        self.arrivals.get(&(from, to)).copied().unwrap_or(0)
    }

    /// Datagrams still on the wire.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Put a datagram on the link, subject to the cut, the filter, loss, duplication and
    /// delay like any datagram a session sends. For a third party in a test.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let wire = Wire {
            from,
            to,
            bytes: bytes.to_vec(),
        };
        if self.cut || self.filter.as_mut().is_some_and(|keep| !keep(&wire)) {
            self.trace("cut", &wire);
            return;
        }
        if self.rng.chance(self.link.loss) {
            self.trace("lost", &wire);
            return;
        }
        self.trace("sent", &wire);
        let copies = if self.rng.chance(self.link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay =
                self.link.latency.as_millis() + self.rng.below(self.link.jitter.as_millis() + 1);
            if self.rng.chance(self.link.reorder) {
                delay += self.rng.below(self.link.reorder_delay.as_millis() + 1);
            }
            self.sent += 1;
            self.in_flight.push(Reverse(InFlight {
                arrives: self.now + Duration::from_millis(delay),
                order: self.sent,
                wire: wire.clone(),
            }));
        }
    }

    /// When something next happens: a datagram arrives or a session's timer expires.
    pub fn next_event(&self) -> Option<Instant> {
        let arrival = self.in_flight.peek().map(|f| f.0.arrives);
        self.endpoints()
            .filter_map(|e| e.session.poll_timeout())
            .chain(arrival)
            .min()
    }

    /// Advance to the next event and run both sessions there. `false` when nothing will
    /// ever happen again without outside input.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(next);
        self.run_now();
        true
    }

    /// Run until simulated time reaches `until` (also when nothing happens before it).
    pub fn advance_to(&mut self, until: Instant) {
        while self.next_event().is_some_and(|t| t <= until) {
            self.step();
            self.check_steps("advance_to");
        }
        self.now = self.now.max(until);
        self.run_now();
    }

    /// Run for `span` of simulated time.
    pub fn advance(&mut self, span: Duration) {
        self.advance_to(self.now + span);
    }

    /// Step until `done` returns `true`; `done` runs before every step and may act (send
    /// text, cut the link). Panics with the seed if `done` is not reached within `within`
    /// of simulated time (no step goes past it) or [`MAX_STEPS`] steps, or if nothing
    /// more can happen.
    pub fn drive_until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = self.now + within;
        while !done(self) {
            match self.next_event() {
                Some(next) if next <= deadline => {
                    self.step();
                }
                Some(_) => panic!("{self}: not {what} within {within}"),
                None => panic!("{self}: nothing left to happen, yet not {what}"),
            }
            self.check_steps(what);
        }
    }

    fn check_steps(&self, what: &str) {
        if self.steps > MAX_STEPS {
            panic!("{self}: {MAX_STEPS} steps without reaching {what}: livelock?");
        }
    }

    /// Do at `now` what a driver would: deliver arrived datagrams, expire timers, send,
    /// and show events.
    fn run_now(&mut self) {
        self.steps += 1;
        let now = self.now;
        while self.in_flight.peek().is_some_and(|f| f.0.arrives <= now) {
            let Some(Reverse(flight)) = self.in_flight.pop() else {
                break;
            };
            let wire = flight.wire;
            self.trace("arrived", &wire);
            *self.arrivals.entry((wire.from, wire.to)).or_default() += 1;
            let Some(endpoint) = self.endpoints_mut().find(|e| e.addr == wire.to) else {
                self.stray.push(wire);
                continue;
            };
            endpoint.last_arrival = Some(now);
            endpoint
                .session
                .handle_datagram(now, wire.from, &wire.bytes);
        }
        let mut out = Vec::new();
        for endpoint in self.endpoints_mut() {
            run_endpoint(endpoint, now, &mut out);
        }
        for (from, to, bytes) in out {
            self.inject(from, to, &bytes);
        }
        for endpoint in self.endpoints() {
            if let Some(due) = endpoint.session.poll_timeout().filter(|&t| t <= now) {
                panic!(
                    "{self}: the deadline {due:?} of {} is still due after a full round at \
                     {now:?}: a host would spin",
                    endpoint.addr
                );
            }
        }
    }

    fn endpoints(&self) -> impl Iterator<Item = &Endpoint<O, I>> {
        [&self.a, &self.b].into_iter().chain(&self.bystanders)
    }

    fn endpoints_mut(&mut self) -> impl Iterator<Item = &mut Endpoint<O, I>> {
        [&mut self.a, &mut self.b]
            .into_iter()
            .chain(&mut self.bystanders)
    }
}

/// What a host does at `now`: expire timers, show events, confirm them if it is time (see
/// [`Endpoint::confirm_every`]), then collect datagrams to send (into `out`, as `(from, to,
/// bytes)`) — events first, because taking (or confirming) a message is what lets the
/// session acknowledge it — and show what sending produced.
fn run_endpoint<const O: usize, const I: usize>(
    endpoint: &mut Endpoint<O, I>,
    now: Instant,
    out: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
) {
    let mut buf = [0u8; MAX_DATAGRAM];
    endpoint.session.handle_timeout(now);
    while let Some(event) = endpoint.session.poll_event() {
        endpoint.log.entries.push((now, event.into()));
    }
    endpoint.turns += 1;
    if endpoint
        .confirm_every
        .is_some_and(|n| endpoint.turns.is_multiple_of(n))
    {
        endpoint.confirm();
    }
    while let Some(transmit) = endpoint.session.poll_transmit(now, &mut buf) {
        out.push((endpoint.addr, transmit.dst, buf[..transmit.len].to_vec()));
    }
    while let Some(event) = endpoint.session.poll_event() {
        endpoint.log.entries.push((now, event.into()));
    }
}

impl<const O: usize, const I: usize> Pair<O, I> {
    /// With `DUET_SIM_TRACE` set, print what happens to every datagram.
    fn trace(&self, what: &str, wire: &Wire) {
        if std::env::var_os(TRACE_VAR).is_none() {
            return;
        }
        let summary = match Frame::new_checked(&wire.bytes[..]).and_then(|f| Repr::parse(&f)) {
            Ok(repr) => {
                let body = match repr.body {
                    Body::Data {
                        seq, first, last, ..
                    } => format!("DATA seq {seq} first {first} last {last}"),
                    other => format!("{other:?}"),
                };
                let ack = repr
                    .ack
                    .map(|a| format!("ack {:08x}:{}+{:b}", a.epoch, a.next, a.bits))
                    .unwrap_or_default();
                format!("{:08x} base {} {ack} {body}", repr.epoch, repr.base)
            }
            Err(_) => format!("{} bytes, not a frame", wire.bytes.len()),
        };
        eprintln!(
            "{:>8} ms {:>7} {} -> {}: {summary}",
            self.now.as_millis(),
            what,
            wire.from,
            wire.to,
        );
    }
}

/// Print the seed of any failing simulation, whatever assertion failed.
impl<const O: usize, const I: usize> Drop for Pair<O, I> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation failed: {self}");
        }
    }
}

impl<const O: usize, const I: usize> fmt::Display for Pair<O, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at t={} ms after {} steps (rerun with {}={})",
            self.seed,
            self.now.as_millis(),
            self.steps,
            SEED_VAR,
            self.seed
        )
    }
}

/// A nonzero epoch derived from the seed, distinct per `which`.
pub fn epoch(seed: u64, which: u64) -> u32 {
    let mut rng = Rng::new(seed ^ which.wrapping_mul(0x51_7cc1_b727_220a));
    (rng.next_u64() as u32).max(1)
}

/// Prints the seed if the test panics while this is alive: for PRNG loops without a
/// [`Pair`].
pub struct SeedOnPanic(pub u64);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failed with seed {0} (rerun with {SEED_VAR}={0})", self.0);
        }
    }
}
