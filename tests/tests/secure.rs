//! The sealed session between two paired keys, in simulated time, through an adversarial
//! network that drops, duplicates, reorders, tampers with, replays and reflects datagrams,
//! next to a stranger with keys of its own. Nothing forged or repeated is ever shown, and
//! the real messages still arrive exactly once, in order.
//!
//! Every run is seeded; the seed is in every assertion message (`DUET_SIM_SEED` picks one).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use duet_core::secure::{Secure, SecureConfig, StaticKeys};
use duet_core::session::Event;
use duet_core::time::{Duration, Instant};
use duet_core::{MAX_DATAGRAM, MessageId};

use duet_tests::sim::Rng;

fn seeds() -> Vec<u64> {
    match std::env::var("DUET_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("DUET_SIM_SEED must be a number")],
        Err(_) => vec![1, 2, 3],
    }
}

struct Node {
    addr: SocketAddr,
    secure: Secure,
    shown: Vec<String>,
    delivered: Vec<MessageId>,
    failed: Vec<MessageId>,
}

impl Node {
    fn drain_events(&mut self) {
        while let Some(event) = self.secure.poll_event() {
            match event {
                Event::Message(text) => self.shown.push(text.to_owned()),
                Event::Delivered(id) => self.delivered.push(id),
                Event::Failed(id, _) => self.failed.push(id),
                _ => {}
            }
        }
    }
}

/// How hostile the network is, in percent per datagram.
#[derive(Clone, Copy, Default)]
struct Hostility {
    drop: u64,
    duplicate: u64,
    tamper: u64,
    replay: u64,
    reflect: u64,
    /// Extra delay up to this many ms, so datagrams overtake each other.
    jitter_ms: u64,
}

/// A datagram on the wire: (arrival, order, from node, to node, bytes), earliest first.
type InFlight = Reverse<(Instant, u64, usize, usize, Vec<u8>)>;

struct Net {
    now: Instant,
    rng: Rng,
    seed: u64,
    hostility: Hostility,
    queue: BinaryHeap<InFlight>,
    order: u64,
    /// Everything ever sent, for replays: (from node, to node, bytes).
    seen: Vec<(usize, usize, Vec<u8>)>,
    nodes: Vec<Node>,
}

impl Net {
    fn new(seed: u64, hostility: Hostility, nodes: Vec<Node>) -> Net {
        Net {
            now: Instant::ZERO,
            rng: Rng::new(seed),
            seed,
            hostility,
            queue: BinaryHeap::new(),
            order: 0,
            seen: Vec::new(),
            nodes,
        }
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn deliver_at(&mut self, at: Instant, from: usize, to: usize, bytes: Vec<u8>) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, from, to, bytes)));
    }

    fn latency(&mut self) -> Duration {
        let jitter = if self.hostility.jitter_ms > 0 {
            self.rng.next_u64() % self.hostility.jitter_ms
        } else {
            0
        };
        Duration::from_millis(5 + jitter)
    }

    /// Put one datagram on the hostile wire.
    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let h = self.hostility;
        self.seen.push((from, to, bytes.clone()));
        if self.rng.percent(h.tamper) && !bytes.is_empty() {
            let mut forged = bytes.clone();
            let i = (self.rng.next_u64() as usize) % forged.len();
            forged[i] ^= 1 << (self.rng.next_u64() % 8);
            let at = self.now + self.latency();
            self.deliver_at(at, from, to, forged);
        }
        if self.rng.percent(h.replay) && !self.seen.is_empty() {
            let pick = (self.rng.next_u64() as usize) % self.seen.len();
            let (f, t, old) = self.seen[pick].clone();
            let at = self.now + self.latency() + Duration::from_millis(self.rng.next_u64() % 500);
            self.deliver_at(at, f, t, old);
        }
        if self.rng.percent(h.reflect) {
            let at = self.now + self.latency();
            self.deliver_at(at, to, from, bytes.clone());
        }
        if self.rng.percent(h.drop) {
            return;
        }
        if self.rng.percent(h.duplicate) {
            let at = self.now + self.latency();
            self.deliver_at(at, from, to, bytes.clone());
        }
        let at = self.now + self.latency();
        self.deliver_at(at, from, to, bytes);
    }

    fn flush(&mut self, i: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..256 {
            let now = self.now;
            let node = &mut self.nodes[i];
            node.secure.handle_timeout(now);
            let Some(t) = node.secure.poll_transmit(now, &mut buf) else {
                break;
            };
            if let Some(to) = self.index_of(t.dst) {
                self.send(i, to, buf[..t.len].to_vec());
            }
        }
        self.nodes[i].drain_events();
    }

    /// Advance to the next arrival or timer; false when nothing is left to do.
    fn step(&mut self) -> bool {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        let next_timer = self
            .nodes
            .iter()
            .filter_map(|n| n.secure.poll_timeout())
            .min();
        let next_arrival = self.queue.peek().map(|Reverse((at, ..))| *at);
        let Some(next) = [next_timer, next_arrival].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        while let Some(Reverse((at, ..))) = self.queue.peek() {
            if *at > self.now {
                break;
            }
            let Some(Reverse((_, _, from, to, bytes))) = self.queue.pop() else {
                break;
            };
            let (now, src) = (self.now, self.nodes[from].addr);
            self.nodes[to].secure.handle_datagram(now, src, &bytes);
            self.flush(to);
        }
        true
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + limit;
        for _ in 0..2_000_000 {
            if done(self) || self.now >= end || !self.step() {
                return;
            }
        }
        panic!("seed {}: simulation did not settle", self.seed);
    }

    /// A sends `text("a", i)` for each `i` of `lines`, every one taken at once.
    fn a_sends(&mut self, lines: std::ops::RangeInclusive<usize>) {
        for i in lines {
            self.nodes[0]
                .secure
                .send_text(self.now, &text("a", i))
                .expect("room");
        }
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7789))
}

fn keys(n: u8) -> StaticKeys {
    StaticKeys::from_secret([n; 32])
}

/// A and B paired with each other; A knows B's address, B waits.
fn pair(rng: &mut Rng, config: SecureConfig) -> (Node, Node) {
    let (ka, kb) = (keys(1), keys(2));
    let a = Secure::new(
        Instant::ZERO,
        config,
        ka.clone(),
        &[kb.public()],
        Some((kb.public(), addr(2))),
        rng.seed32(),
    );
    let b = Secure::new(
        Instant::ZERO,
        config,
        kb,
        &[ka.public()],
        None,
        rng.seed32(),
    );
    let node = |addr, secure| Node {
        addr,
        secure,
        shown: vec![],
        delivered: vec![],
        failed: vec![],
    };
    (node(addr(1), a), node(addr(2), b))
}

fn text(side: &str, i: usize) -> String {
    if i.is_multiple_of(37) {
        // Long enough to need several parts.
        format!("{side} {i} ") + &"长消息🎉".repeat(120)
    } else {
        format!("{side} {i} 你好")
    }
}

#[test]
fn nothing_forged_or_repeated_is_shown_and_every_message_arrives_once_in_order() {
    const N: usize = 150;
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let (a, b) = pair(&mut rng, SecureConfig::default());
        // A stranger with a key nobody paired, who knows both addresses and B's key.
        let stranger = Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            keys(3),
            &[],
            Some((keys(2).public(), addr(2))),
            rng.seed32(),
        );
        let c = Node {
            addr: addr(3),
            secure: stranger,
            shown: vec![],
            delivered: vec![],
            failed: vec![],
        };
        let hostility = Hostility {
            drop: 20,
            duplicate: 10,
            tamper: 10,
            replay: 10,
            reflect: 5,
            jitter_ms: 40,
        };
        let mut net = Net::new(seed, hostility, vec![a, b, c]);
        let _ = net.nodes[2]
            .secure
            .send_text(Instant::ZERO, "forged hello from a stranger");
        let (mut sent_a, mut sent_b) = (0, 0);
        let limit = Duration::from_secs(3600);
        let end = net.now + limit;
        while net.now < end {
            while sent_a < N
                && net.nodes[0]
                    .secure
                    .send_text(net.now, &text("a", sent_a))
                    .is_ok()
            {
                sent_a += 1;
            }
            while sent_b < N
                && net.nodes[1]
                    .secure
                    .send_text(net.now, &text("b", sent_b))
                    .is_ok()
            {
                sent_b += 1;
            }
            if net.nodes[0].delivered.len() == N && net.nodes[1].delivered.len() == N {
                break;
            }
            if !net.step() {
                break;
            }
        }
        let want_a: Vec<String> = (0..N).map(|i| text("a", i)).collect();
        let want_b: Vec<String> = (0..N).map(|i| text("b", i)).collect();
        assert_eq!(
            net.nodes[1].shown, want_a,
            "seed {seed}: B must show exactly A's messages, in order"
        );
        assert_eq!(
            net.nodes[0].shown, want_b,
            "seed {seed}: A must show exactly B's messages, in order"
        );
        assert_eq!(net.nodes[0].delivered.len(), N, "seed {seed}");
        assert_eq!(net.nodes[1].delivered.len(), N, "seed {seed}");
        assert!(
            net.nodes[0].failed.is_empty() && net.nodes[1].failed.is_empty(),
            "seed {seed}"
        );
        assert!(
            net.nodes[2].shown.is_empty() && net.nodes[2].delivered.is_empty(),
            "seed {seed}: the stranger got through"
        );
        let (sa, sb) = (net.nodes[0].secure.stats(), net.nodes[1].secure.stats());
        assert!(
            sa.unauthenticated + sb.unauthenticated > 0,
            "seed {seed}: tampering was never noticed"
        );
        assert!(
            sa.replayed + sb.replayed > 0,
            "seed {seed}: replays were never noticed"
        );
        assert!(
            sb.unpaired > 0,
            "seed {seed}: the stranger's handshakes were not refused as unpaired"
        );
    }
}

#[test]
fn sealed_peers_learn_each_others_features_and_a_burst_shares_datagrams() {
    let mut rng = Rng::new(31);
    let (a, b) = pair(&mut rng, SecureConfig::default());
    let mut net = Net::new(31, Hostility::default(), vec![a, b]);
    net.nodes[0]
        .secure
        .send_text(net.now, "hello")
        .expect("room");
    net.run_until(Duration::from_secs(10), |n| {
        n.nodes[0].delivered.len() == 1
            && n.nodes[0].secure.session().peer_takes_bundles()
            && n.nodes[1].secure.session().peer_takes_bundles()
    });
    assert!(
        net.nodes[0].secure.session().peer_takes_bundles()
            && net.nodes[1].secure.session().peer_takes_bundles(),
        "the FEATURES frames did not get through the sealed layer"
    );
    // Fifty short lines (text() makes its 0th long, so from 1): a few sealed datagrams.
    let before = net.nodes[0].secure.session().stats().datagrams_out;
    net.a_sends(1..=50);
    net.run_until(Duration::from_secs(10), |n| {
        n.nodes[0].delivered.len() == 51
    });
    let sent = net.nodes[0].secure.session().stats().datagrams_out - before;
    assert!(sent <= 6, "{sent} datagrams for 50 short lines");
    let want: Vec<String> = std::iter::once("hello".to_owned())
        .chain((1..=50).map(|i| text("a", i)))
        .collect();
    assert_eq!(net.nodes[1].shown, want);
}

#[test]
fn a_stranger_gets_no_reply_at_all() {
    let mut rng = Rng::new(7);
    let (_a, mut b) = pair(&mut rng, SecureConfig::default());
    let mut c = Secure::new(
        Instant::ZERO,
        SecureConfig::default(),
        keys(3),
        &[],
        Some((keys(2).public(), addr(2))),
        rng.seed32(),
    );
    let mut buf = [0u8; MAX_DATAGRAM];
    let t = c
        .poll_transmit(Instant::ZERO, &mut buf)
        .expect("the stranger starts a handshake");
    b.secure
        .handle_datagram(Instant::ZERO, addr(3), &buf[..t.len]);
    // Garbage, truncated and oversized datagrams too.
    for len in [0, 1, 16, 60, 104, 500, MAX_DATAGRAM, MAX_DATAGRAM + 1] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        b.secure.handle_datagram(Instant::ZERO, addr(3), &junk);
    }
    b.secure.handle_timeout(Instant::ZERO);
    assert!(
        b.secure.poll_transmit(Instant::ZERO, &mut buf).is_none(),
        "B answered a stranger"
    );
    assert_eq!(b.secure.stats().unpaired, 1);
    assert!(b.secure.stats().unauthenticated >= 8);
    assert!(b.secure.peer_key().is_none());
}

#[test]
fn keys_are_replaced_on_schedule_and_the_chat_goes_on() {
    let config = SecureConfig {
        rekey_after: Duration::from_secs(2),
        reject_after: Duration::from_secs(3),
        ..SecureConfig::default()
    };
    let mut rng = Rng::new(11);
    let (a, b) = pair(&mut rng, config);
    let mut net = Net::new(
        11,
        Hostility {
            drop: 5,
            jitter_ms: 10,
            ..Hostility::default()
        },
        vec![a, b],
    );
    let mut sent = 0;
    while net.now < Instant::from_millis(20_000) {
        if net.now.as_millis() / 100 > sent as u64
            && net.nodes[0]
                .secure
                .send_text(net.now, &text("a", sent))
                .is_ok()
        {
            sent += 1;
        }
        if !net.step() {
            break;
        }
    }
    net.run_until(Duration::from_secs(60), |n| {
        n.nodes[0].delivered.len() == sent
    });
    let want: Vec<String> = (0..sent).map(|i| text("a", i)).collect();
    assert_eq!(net.nodes[1].shown, want);
    let handshakes = net.nodes[0].secure.stats().handshakes;
    assert!(
        handshakes >= 6,
        "only {handshakes} handshakes in 20 s with rekey every 2 s"
    );
}

#[test]
fn a_restarted_peer_handshakes_again_and_nothing_is_lost() {
    let mut rng = Rng::new(21);
    let (a, b) = pair(&mut rng, SecureConfig::default());
    let mut net = Net::new(
        21,
        Hostility {
            drop: 10,
            jitter_ms: 20,
            ..Hostility::default()
        },
        vec![a, b],
    );
    net.a_sends(0..=9);
    net.run_until(Duration::from_secs(60), |n| {
        n.nodes[0].delivered.len() == 10
    });
    // B restarts: same keys, fresh session, knows nothing.
    let fresh = Secure::new(
        net.now,
        SecureConfig::default(),
        keys(2),
        &[keys(1).public()],
        None,
        rng.seed32(),
    );
    net.nodes[1].secure = fresh;
    net.a_sends(10..=19);
    net.run_until(Duration::from_secs(120), |n| {
        n.nodes[0].delivered.len() == 20
    });
    let want: Vec<String> = (0..20).map(|i| text("a", i)).collect();
    assert_eq!(
        net.nodes[1].shown, want,
        "messages lost or repeated across B's restart"
    );
    assert!(net.nodes[0].failed.is_empty());
}

#[test]
fn a_wrong_peer_key_never_establishes_and_messages_fail() {
    let mut rng = Rng::new(31);
    let (ka, kb) = (keys(1), keys(2));
    let config = SecureConfig::default();
    // A thinks B's key is key 9.
    let a = Secure::new(
        Instant::ZERO,
        config,
        ka.clone(),
        &[],
        Some((keys(9).public(), addr(2))),
        rng.seed32(),
    );
    let b = Secure::new(
        Instant::ZERO,
        config,
        kb,
        &[ka.public()],
        None,
        rng.seed32(),
    );
    let node = |addr, secure| Node {
        addr,
        secure,
        shown: vec![],
        delivered: vec![],
        failed: vec![],
    };
    let mut net = Net::new(
        31,
        Hostility::default(),
        vec![node(addr(1), a), node(addr(2), b)],
    );
    let id = net.nodes[0]
        .secure
        .send_text(Instant::ZERO, "secret")
        .expect("room");
    net.run_until(Duration::from_secs(120), |n| !n.nodes[0].failed.is_empty());
    assert_eq!(net.nodes[0].failed, vec![id]);
    assert!(net.nodes[1].shown.is_empty());
    assert!(!net.nodes[0].secure.is_established() && !net.nodes[1].secure.is_established());
    assert!(net.nodes[1].secure.stats().unauthenticated > 0);
}

#[test]
fn simultaneous_handshakes_settle_on_one_pair_of_keys() {
    let mut rng = Rng::new(41);
    let (ka, kb) = (keys(1), keys(2));
    let config = SecureConfig::default();
    let a = Secure::new(
        Instant::ZERO,
        config,
        ka.clone(),
        &[],
        Some((kb.public(), addr(2))),
        rng.seed32(),
    );
    let b = Secure::new(
        Instant::ZERO,
        config,
        kb,
        &[],
        Some((ka.public(), addr(1))),
        rng.seed32(),
    );
    let node = |addr, secure| Node {
        addr,
        secure,
        shown: vec![],
        delivered: vec![],
        failed: vec![],
    };
    let mut net = Net::new(
        41,
        Hostility {
            jitter_ms: 5,
            ..Hostility::default()
        },
        vec![node(addr(1), a), node(addr(2), b)],
    );
    net.nodes[0]
        .secure
        .send_text(Instant::ZERO, "from a")
        .expect("room");
    net.nodes[1]
        .secure
        .send_text(Instant::ZERO, "from b")
        .expect("room");
    net.run_until(Duration::from_secs(30), |n| {
        n.nodes[0].delivered.len() == 1 && n.nodes[1].delivered.len() == 1
    });
    assert_eq!(net.nodes[1].shown, ["from a"]);
    assert_eq!(net.nodes[0].shown, ["from b"]);
    // Well within a few seconds: no dance of handshakes replacing each other.
    assert!(
        net.now < Instant::from_millis(5_000),
        "settled only at {:?}",
        net.now
    );
}

#[test]
fn a_replayed_initiation_gets_no_answer_and_breaks_nothing() {
    let mut rng = Rng::new(51);
    let (mut a, mut b) = pair(&mut rng, SecureConfig::default());
    let mut buf = [0u8; MAX_DATAGRAM];
    let t0 = Instant::ZERO;
    let init = {
        let t = a.secure.poll_transmit(t0, &mut buf).expect("initiation");
        buf[..t.len].to_vec()
    };
    b.secure.handle_datagram(t0, addr(1), &init);
    let t = b.secure.poll_transmit(t0, &mut buf).expect("response");
    a.secure.handle_datagram(t0, addr(2), &buf[..t.len]);
    // A confirms the keys with its first transport message.
    let t = a
        .secure
        .poll_transmit(t0, &mut buf)
        .expect("first transport");
    b.secure.handle_datagram(t0, addr(1), &buf[..t.len]);
    assert!(a.secure.is_established() && b.secure.is_established());
    while b.secure.poll_transmit(t0, &mut buf).is_some() {}
    // Much later an attacker replays the recorded initiation (not a retransmission).
    let later = Instant::from_millis(60_000);
    b.secure.handle_datagram(later, addr(9), &init);
    b.secure.handle_timeout(later);
    let answered = std::iter::from_fn(|| b.secure.poll_transmit(later, &mut buf).map(|t| t.dst))
        .take(10)
        .any(|dst| dst == addr(9));
    assert!(!answered, "B answered a replayed initiation");
    assert!(b.secure.stats().replayed >= 1);
    // The real keys still work.
    a.secure.send_text(later, "still private").expect("room");
    a.secure.handle_timeout(later);
    for _ in 0..10 {
        let Some(t) = a.secure.poll_transmit(later, &mut buf) else {
            break;
        };
        b.secure.handle_datagram(later, addr(1), &buf[..t.len]);
    }
    b.drain_events();
    assert_eq!(b.shown, ["still private"]);
}
