//! The one driver loop, `duet_core::Driver`, over an in-memory network.
//!
//! The network is a test double of `embedded_nal::UdpFullStack` (per-address queues in a
//! shared `Rc<RefCell<Net>>`, `recvfrom(2)` semantics: a datagram longer than the buffer is
//! cut to fit), not of the core: the sessions and the driver under test are the real ones,
//! and the clock is a manual one the test moves.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use duet_core::driver::{DriveError, RX_BUDGET};
use duet_core::legacy::{Plain, PlainEvent, QUEUE};
use duet_core::session::Config;
use duet_core::text::{self, Encoding};
use duet_core::wire::{Body, Frame, Repr};
use duet_core::{Clock, Driver, Instant, MAX_DATAGRAM, Protocol, Session};
use duet_tests::sim::{Happened, Rng, seeds};
use embedded_nal::{UdpClientStack, UdpFullStack};

/// Why the in-memory stack refused.
#[derive(Debug, PartialEq, Eq)]
enum NetError {
    NotBound,
    AddrInUse,
    Unsupported,
}

/// Every bound address's receive queue, and the link's behaviour.
#[derive(Default)]
struct Net {
    queues: HashMap<SocketAddr, VecDeque<(SocketAddr, Vec<u8>)>>,
    /// Loses each datagram sent with this probability, from a seeded PRNG.
    loss: Option<(Rng, f64)>,
    /// The next this many `send_to` calls fail with `WouldBlock`: a full send buffer.
    refuse_sends: u32,
    /// Datagrams each address handed to `send_to` successfully (lost ones included).
    sent: HashMap<SocketAddr, u32>,
}

impl Net {
    fn shared() -> Rc<RefCell<Net>> {
        Rc::new(RefCell::new(Net::default()))
    }

    /// Queue a datagram at `to` as if `from` had sent it, bypassing loss.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some(queue) = self.queues.get_mut(&to) {
            queue.push_back((from, bytes.to_vec()));
        }
    }

    fn queued(&self, at: SocketAddr) -> usize {
        self.queues.get(&at).map_or(0, VecDeque::len)
    }

    fn sent_by(&self, from: SocketAddr) -> u32 {
        self.sent.get(&from).copied().unwrap_or(0)
    }
}

/// One machine's view of the network: its IP address and the shared queues.
struct Host {
    ip: IpAddr,
    net: Rc<RefCell<Net>>,
}

#[derive(Debug)]
struct Socket {
    local: Option<SocketAddr>,
}

impl UdpClientStack for Host {
    type UdpSocket = Socket;
    type Error = NetError;

    fn socket(&mut self) -> Result<Socket, NetError> {
        Ok(Socket { local: None })
    }

    fn connect(&mut self, _: &mut Socket, _: SocketAddr) -> Result<(), NetError> {
        Err(NetError::Unsupported)
    }

    fn send(&mut self, _: &mut Socket, _: &[u8]) -> nb::Result<(), NetError> {
        Err(nb::Error::Other(NetError::Unsupported))
    }

    fn receive(
        &mut self,
        socket: &mut Socket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), NetError> {
        let local = socket.local.ok_or(nb::Error::Other(NetError::NotBound))?;
        let mut net = self.net.borrow_mut();
        let queue = net
            .queues
            .get_mut(&local)
            .ok_or(nb::Error::Other(NetError::NotBound))?;
        let (from, bytes) = queue.pop_front().ok_or(nb::Error::WouldBlock)?;
        // As recvfrom(2) does: the part that does not fit is discarded.
        let len = bytes.len().min(buffer.len());
        buffer[..len].copy_from_slice(&bytes[..len]);
        Ok((len, from))
    }

    fn close(&mut self, socket: Socket) -> Result<(), NetError> {
        if let Some(local) = socket.local {
            self.net.borrow_mut().queues.remove(&local);
        }
        Ok(())
    }
}

impl UdpFullStack for Host {
    fn bind(&mut self, socket: &mut Socket, port: u16) -> Result<(), NetError> {
        let local = SocketAddr::new(self.ip, port);
        let mut net = self.net.borrow_mut();
        if net.queues.contains_key(&local) {
            return Err(NetError::AddrInUse);
        }
        net.queues.insert(local, VecDeque::new());
        socket.local = Some(local);
        Ok(())
    }

    fn send_to(
        &mut self,
        socket: &mut Socket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), NetError> {
        let local = socket.local.ok_or(nb::Error::Other(NetError::NotBound))?;
        let mut net = self.net.borrow_mut();
        if net.refuse_sends > 0 {
            net.refuse_sends -= 1;
            return Err(nb::Error::WouldBlock);
        }
        *net.sent.entry(local).or_default() += 1;
        let lost = match &mut net.loss {
            Some((rng, p)) => rng.chance(*p),
            None => false,
        };
        if !lost {
            // Like UDP: to an address where nobody listens, a datagram just vanishes.
            net.deliver(local, remote, buffer);
        }
        Ok(())
    }
}

/// The driver's clock, moved by the test.
struct ManualClock(Cell<Instant>);

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0.get()
    }
}

impl ManualClock {
    fn set(&self, t: Instant) {
        self.0.set(t);
    }
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)), port)
}

/// A machine on the network running one protocol through one driver.
struct Node<P> {
    host: Host,
    driver: Driver<Host>,
    protocol: P,
}

impl<P: Protocol> Node<P> {
    fn new(net: &Rc<RefCell<Net>>, at: SocketAddr, protocol: P) -> Self {
        let mut host = Host {
            ip: at.ip(),
            net: Rc::clone(net),
        };
        let driver = Driver::bind(&mut host, at.port()).expect("bind");
        Node {
            host,
            driver,
            protocol,
        }
    }

    fn poll(&mut self, clock: &ManualClock) -> Option<Instant> {
        self.driver
            .poll(&mut self.host, clock, &mut self.protocol)
            .expect("poll")
    }
}

impl Node<Session> {
    fn drain(&mut self, log: &mut Vec<Happened>) {
        while let Some(event) = self.protocol.poll_event() {
            log.push(event.into());
        }
    }
}

fn messages(log: &[Happened]) -> Vec<&str> {
    log.iter()
        .filter_map(|e| match e {
            Happened::Message(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn delivered(log: &[Happened]) -> usize {
    log.iter()
        .filter(|e| matches!(e, Happened::Delivered(_)))
        .count()
}

#[test]
fn messages_flow_both_ways_through_the_driver() {
    const COUNT: usize = 20;
    for seed in seeds(&[21, 22]) {
        let net = Net::shared();
        net.borrow_mut().loss = Some((Rng::new(seed), 0.2));
        let clock = ManualClock(Cell::new(Instant::ZERO));
        let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
        let config = Config::default();
        let mut a = Node::new(
            &net,
            at_a,
            Session::new(clock.now(), config, 11, Some(at_b)),
        );
        let mut b = Node::new(
            &net,
            at_b,
            Session::new(clock.now(), config, 22, Some(at_a)),
        );
        let (mut log_a, mut log_b) = (Vec::new(), Vec::new());
        let want_at_b: Vec<String> = (0..COUNT).map(|i| format!("A→B {i} 你好")).collect();
        let want_at_a: Vec<String> = (0..COUNT).map(|i| format!("B→A {i} 😀")).collect();
        let (mut next_a, mut next_b) = (0, 0);
        let mut done = false;
        let mut at_once = 0;
        for _ in 0..10_000 {
            let now = clock.now();
            while next_a < COUNT && a.protocol.send_text(now, &want_at_b[next_a]).is_ok() {
                next_a += 1;
            }
            while next_b < COUNT && b.protocol.send_text(now, &want_at_a[next_b]).is_ok() {
                next_b += 1;
            }
            let deadlines = [a.poll(&clock), b.poll(&clock)];
            a.drain(&mut log_a);
            b.drain(&mut log_b);
            if delivered(&log_a) == COUNT && delivered(&log_b) == COUNT {
                done = true;
                break;
            }
            // Datagrams arrive at once; otherwise sleep until the earliest deadline. A
            // deadline of now is the driver asking to be polled again at once (it used its
            // whole budget of sends): a few in a row, never many.
            let pending = net.borrow().queued(at_a) + net.borrow().queued(at_b);
            if pending == 0 {
                let next = deadlines.into_iter().flatten().min().expect("a deadline");
                if next > now {
                    clock.set(next);
                    at_once = 0;
                } else {
                    at_once += 1;
                    assert!(
                        at_once < 8,
                        "seed {seed}: deadline {next:?} is not after {now:?}, {at_once} polls in a row"
                    );
                }
            }
        }
        assert!(done, "seed {seed}: not all delivered by {:?}", clock.now());
        assert_eq!(messages(&log_b), want_at_b, "seed {seed}");
        assert_eq!(messages(&log_a), want_at_a, "seed {seed}");
        let retransmits = a.protocol.stats().retransmits + b.protocol.stats().retransmits;
        assert!(retransmits > 0, "seed {seed}: the loss was never exercised");
    }
}

#[test]
fn poll_returns_the_sessions_next_deadline() {
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let config = Config::default();
    // Nobody listens at the peer's address: every transmission is lost.
    let (at_a, nobody) = (addr(1, 4000), addr(2, 5000));
    let mut a = Node::new(
        &net,
        at_a,
        Session::new(clock.now(), config, 11, Some(nobody)),
    );
    a.protocol.send_text(clock.now(), "anyone there?").unwrap();

    let deadline = a.poll(&clock);
    assert_eq!(deadline, a.protocol.poll_timeout());
    assert_eq!(deadline, Some(Instant::ZERO + config.initial_rto));
    assert_eq!(
        net.borrow().sent_by(at_a),
        1,
        "the message went out at once"
    );

    // Early: nothing to do, the same deadline again.
    clock.set(Instant::from_millis(config.initial_rto.as_millis() - 1));
    assert_eq!(a.poll(&clock), deadline);
    assert_eq!(net.borrow().sent_by(at_a), 1);

    // On time: the retransmission, and the backed-off deadline after it.
    clock.set(Instant::ZERO + config.initial_rto);
    let next = a.poll(&clock);
    assert_eq!(
        net.borrow().sent_by(at_a),
        2,
        "retransmitted at the deadline"
    );
    assert_eq!(next, a.protocol.poll_timeout());
    assert_eq!(
        next,
        Some(clock.now() + config.initial_rto.saturating_mul(2)),
        "RFC 6298 backoff doubles the timeout"
    );
}

/// Valid PING frames from `epoch`: each asks for an acknowledgement.
fn ping(epoch: u32) -> Vec<u8> {
    let repr = Repr {
        epoch,
        base: 0,
        ack: None,
        body: Body::Ping,
    };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
    bytes
}

#[test]
fn a_flood_is_taken_in_budgeted_polls_without_starving_sends() {
    // Three full budgets and part of one: the last poll drains it and is done.
    const FLOOD: usize = 3 * RX_BUDGET + RX_BUDGET / 2;
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::from_millis(7)));
    let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
    let mut a = Node::new(
        &net,
        at_a,
        Session::new(clock.now(), Config::default(), 11, Some(at_b)),
    );
    for _ in 0..FLOOD {
        net.borrow_mut().deliver(at_b, at_a, &ping(22));
    }
    let now = clock.now();
    for round in 1..=3 {
        assert_eq!(a.poll(&clock), Some(now), "round {round}: more is waiting");
        assert_eq!(a.protocol.stats().datagrams_in as usize, round * RX_BUDGET);
        assert_eq!(net.borrow().queued(at_a), FLOOD - round * RX_BUDGET);
        assert!(
            net.borrow().sent_by(at_a) >= round as u32,
            "round {round}: the flood starved sending"
        );
    }
    let deadline = a.poll(&clock);
    assert_eq!(a.protocol.stats().datagrams_in as usize, FLOOD);
    assert_eq!(net.borrow().queued(at_a), 0);
    assert!(
        deadline.is_some_and(|t| t > now),
        "with the flood drained, poll returns the session's deadline, not {deadline:?}"
    );
    assert_eq!(deadline, a.protocol.poll_timeout());
}

#[test]
fn a_datagram_longer_than_the_limit_is_rejected_whole() {
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let config = Config::default();
    let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
    let mut a = Node::new(
        &net,
        at_a,
        Session::new(clock.now(), config, 11, Some(at_b)),
    );
    let mut b = Node::new(
        &net,
        at_b,
        Session::new(clock.now(), config, 22, Some(at_a)),
    );
    // The longest message fits one frame exactly: it must still get through.
    let longest = "x".repeat(duet_core::wire::frame::MAX_PAYLOAD);
    b.protocol.send_text(clock.now(), &longest).unwrap();
    b.poll(&clock);
    let frame = net
        .borrow_mut()
        .queues
        .get_mut(&at_a)
        .unwrap()
        .pop_back()
        .unwrap();
    assert!(frame.1.len() <= MAX_DATAGRAM);
    // The same frame padded past the limit, and bigger ones, up to UDP's largest.
    for len in [MAX_DATAGRAM + 1, 1500, 65_507] {
        let mut long = frame.1.clone();
        long.resize(len, b'x');
        net.borrow_mut().deliver(at_b, at_a, &long);
    }
    net.borrow_mut().deliver(at_b, at_a, &frame.1);
    a.poll(&clock);
    let mut log = Vec::new();
    a.drain(&mut log);
    let stats = a.protocol.stats();
    assert_eq!(stats.oversized, 3, "{stats:?}");
    // Cut to 1024 bytes, the padded frame would have counted as malformed instead.
    assert_eq!(stats.malformed, 0, "{stats:?}");
    assert_eq!(
        messages(&log),
        [longest.as_str()],
        "only the real frame is a message"
    );
}

#[test]
fn a_stack_error_is_reported_not_swallowed() {
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let mut host = Host {
        ip: addr(1, 0).ip(),
        net: Rc::clone(&net),
    };
    // A socket that was never bound cannot receive.
    let socket = host.socket().unwrap();
    let mut driver: Driver<Host> = Driver::new(socket);
    let mut session = Session::new(clock.now(), Config::default(), 11, None);
    match driver.poll(&mut host, &clock, &mut session) {
        Err(DriveError::Receive(NetError::NotBound)) => {}
        other => panic!("expected a receive error, got {other:?}"),
    }
}

#[test]
fn a_full_send_buffer_loses_a_datagram_that_the_session_resends() {
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let config = Config::default();
    let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
    let mut a = Node::new(
        &net,
        at_a,
        Session::new(clock.now(), config, 11, Some(at_b)),
    );
    let mut b = Node::new(
        &net,
        at_b,
        Session::new(clock.now(), config, 22, Some(at_a)),
    );
    a.protocol
        .send_text(clock.now(), "through a full buffer")
        .unwrap();
    net.borrow_mut().refuse_sends = 1;
    let deadline = a.poll(&clock);
    assert_eq!(a.driver.stats().send_would_block, 1);
    let (mut log_a, mut log_b) = (Vec::new(), Vec::new());
    b.poll(&clock);
    b.drain(&mut log_b);
    assert!(
        messages(&log_b).is_empty(),
        "the refused datagram was not sent"
    );
    clock.set(deadline.expect("a retransmission deadline"));
    // B's application takes the message between polls, as a host does: only then is it
    // acknowledged as delivered.
    for _ in 0..4 {
        a.poll(&clock);
        b.poll(&clock);
        b.drain(&mut log_b);
    }
    a.drain(&mut log_a);
    assert_eq!(messages(&log_b), ["through a full buffer"]);
    assert_eq!(delivered(&log_a), 1);
}

#[test]
fn legacy_plain_datagrams_run_through_the_same_driver() {
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
    let mut a = Node::new(&net, at_a, Plain::new(Some(at_b), Encoding::Utf8));
    let mut b = Node::new(&net, at_b, Plain::new(Some(at_a), Encoding::Gbk));

    a.protocol.send_text("hello 你好").unwrap();
    b.protocol.send_text("你好").unwrap();
    // Longer than one datagram: cut on character boundaries, nothing lost.
    let long = "长".repeat(600);
    a.protocol.send_text(&long).unwrap();
    assert_eq!(
        a.poll(&clock),
        None,
        "a Plain with nothing queued has no deadline"
    );
    assert_eq!(b.poll(&clock), None);
    b.poll(&clock);
    a.poll(&clock);

    let mut at_b_got = Vec::new();
    while let Some(event) = b.protocol.poll_event() {
        match event {
            PlainEvent::Datagram { from, bytes } => {
                assert_eq!(from, at_a);
                assert!(bytes.len() <= MAX_DATAGRAM);
                at_b_got.push(bytes.to_vec());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(at_b_got[0], "hello 你好".as_bytes());
    assert!(at_b_got.len() > 2, "the long text took several datagrams");
    let rejoined: Vec<u8> = at_b_got[1..].concat();
    assert_eq!(rejoined, long.as_bytes());
    for part in &at_b_got[1..] {
        assert!(std::str::from_utf8(part).is_ok(), "a character was cut");
    }

    match a.protocol.poll_event() {
        Some(PlainEvent::Datagram { from, bytes }) => {
            assert_eq!(from, at_b);
            assert_eq!(bytes, [0xc4, 0xe3, 0xba, 0xc3], "你好 in GBK");
            let mut decoded = String::new();
            text::decode(bytes, Encoding::Gbk, |piece| match piece {
                text::Piece::Text(t) => decoded.push_str(t),
                text::Piece::Invalid(b) => panic!("undecodable {b:?}"),
            });
            assert_eq!(decoded, "你好");
        }
        other => panic!("expected B's datagram, got {other:?}"),
    }

    // Too long for the tutorial's recvfrom(1024): reported, never cut into a message.
    let stranger = addr(3, 6000);
    net.borrow_mut().deliver(stranger, at_b, &[b'x'; 2000]);
    b.poll(&clock);
    assert_eq!(
        b.protocol.poll_event(),
        Some(PlainEvent::Oversized { from: stranger })
    );
    assert_eq!(b.protocol.poll_event(), None);
}

#[test]
fn a_full_plain_inbox_leaves_datagrams_waiting_in_the_socket() {
    const SENT: usize = 2 * QUEUE + 4;
    let net = Net::shared();
    let clock = ManualClock(Cell::new(Instant::ZERO));
    let (at_a, at_b) = (addr(1, 4000), addr(2, 5000));
    let mut b = Node::new(&net, at_b, Plain::new(Some(at_a), Encoding::Utf8));
    for i in 0..SENT {
        net.borrow_mut()
            .deliver(at_a, at_b, format!("line {i}").as_bytes());
    }
    let mut got = Vec::new();
    for _ in 0..SENT {
        b.poll(&clock);
        let taken = SENT - net.borrow().queued(at_b) - got.len();
        assert_eq!(
            taken,
            QUEUE.min(SENT - got.len()),
            "the driver takes what the inbox holds, no more"
        );
        while let Some(event) = b.protocol.poll_event() {
            if let PlainEvent::Datagram { bytes, .. } = event {
                got.push(String::from_utf8(bytes.to_vec()).unwrap());
            }
        }
        if got.len() == SENT {
            break;
        }
    }
    let want: Vec<String> = (0..SENT).map(|i| format!("line {i}")).collect();
    assert_eq!(got, want, "every datagram arrives, in order");
}
