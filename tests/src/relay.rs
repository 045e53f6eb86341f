//! A userspace UDP relay that stands between two real processes and misbehaves on purpose:
//! it drops, duplicates, reorders (delays), tampers with, replays and reflects datagrams,
//! all decided by a seeded generator so a failing run can be repeated (the seed is printed).
//!
//! Side A talks to `relay.a_addr()`, side B to `relay.b_addr()`; each side sees the relay's
//! other socket as its peer. No root needed, nothing leaves loopback.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sim::Rng;

/// What the relay does to each datagram, in percent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mischief {
    /// Dropped.
    pub drop: u64,
    /// Delivered twice.
    pub duplicate: u64,
    /// Held back by up to `max_delay`, so later datagrams overtake it.
    pub reorder: u64,
    /// A copy with one bit flipped is delivered too.
    pub tamper: u64,
    /// An old datagram is delivered again, later.
    pub replay: u64,
    /// A copy is sent back to the sender.
    pub reflect: u64,
    /// The longest hold-back for reordering.
    pub max_delay: Duration,
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received from either side.
    pub seen: AtomicU64,
    /// Dropped.
    pub dropped: AtomicU64,
    /// Forged (tampered) copies sent.
    pub tampered: AtomicU64,
    /// Old datagrams replayed.
    pub replayed: AtomicU64,
    /// Copies reflected to their sender.
    pub reflected: AtomicU64,
}

/// A running relay; stopped and joined on drop.
pub struct Relay {
    a: SocketAddr,
    b: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Drop everything B sends, while set.
    mute_b: Arc<AtomicBool>,
    /// Datagrams B may still send before it is muted, plus one (0: no countdown).
    mute_b_after: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    /// What it did.
    pub stats: Arc<RelayStats>,
    /// The seed of its generator.
    pub seed: u64,
}

/// A datagram waiting to go out: (when, order, out through side A's socket?, to, bytes).
type Held = Reverse<(Instant, u64, bool, SocketAddr, Vec<u8>)>;

impl Relay {
    /// Relay between `a` and `b` (the two processes' addresses) with `mischief`.
    pub fn start(a: SocketAddr, b: SocketAddr, mischief: Mischief, seed: u64) -> Relay {
        let sa = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
        let sb = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
        for s in [&sa, &sb] {
            s.set_nonblocking(true).expect("nonblocking");
        }
        let (a_addr, b_addr) = (
            sa.local_addr().expect("addr"),
            sb.local_addr().expect("addr"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (stop2, stats2) = (Arc::clone(&stop), Arc::clone(&stats));
        let mute_b = Arc::new(AtomicBool::new(false));
        let mute_b2 = Arc::clone(&mute_b);
        let mute_b_after = Arc::new(AtomicU64::new(0));
        let countdown = Arc::clone(&mute_b_after);
        eprintln!("relay between {a} and {b}: seed {seed}, {mischief:?}");
        let thread = std::thread::spawn(move || {
            run(
                sa,
                sb,
                a,
                b,
                mischief,
                Rng::new(seed),
                &stop2,
                &mute_b2,
                &countdown,
                &stats2,
            );
        });
        Relay {
            a: a_addr,
            b: b_addr,
            stop,
            mute_b,
            mute_b_after,
            thread: Some(thread),
            stats,
            seed,
        }
    }

    /// Where side A sends (A's peer address).
    pub fn a_addr(&self) -> SocketAddr {
        self.a
    }

    /// Where side B sends (B's peer address).
    pub fn b_addr(&self) -> SocketAddr {
        self.b
    }

    /// Drop everything B sends (its acknowledgements, say) while `muted`.
    pub fn mute_b(&self, muted: bool) {
        self.mute_b_after.store(0, Ordering::Relaxed);
        self.mute_b.store(muted, Ordering::Relaxed);
    }

    /// Let B send `n` more datagrams, then drop everything it sends (until
    /// [`Relay::mute_b`]): a sender then stalls part of the way through, at a point the
    /// relay decides rather than a race with the test.
    pub fn mute_b_after(&self, n: u64) {
        self.mute_b_after.store(n + 1, Ordering::Relaxed);
    }

    /// Whether B is muted now.
    pub fn b_muted(&self) -> bool {
        self.mute_b.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    sa: UdpSocket,
    sb: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    m: Mischief,
    mut rng: Rng,
    stop: &AtomicBool,
    mute_b: &AtomicBool,
    mute_b_after: &AtomicU64,
    stats: &RelayStats,
) {
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut history: Vec<(bool, SocketAddr, Vec<u8>)> = Vec::new();
    let mut order = 0u64;
    let mut buf = [0u8; 65536];
    // Bounded by the stop flag the owner sets on drop, and by a generous wall-clock cap.
    let cap = Instant::now() + Duration::from_secs(900);
    while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
        let mut idle = true;
        for (from_a, sock) in [(true, &sa), (false, &sb)] {
            for _ in 0..64 {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    break;
                };
                idle = false;
                // Only the two processes may use the relay.
                let expected = if from_a { a } else { b };
                if !from_a
                    && src == b
                    && mute_b_after
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        == Ok(1)
                {
                    mute_b.store(true, Ordering::Relaxed);
                }
                if src != expected || (!from_a && mute_b.load(Ordering::Relaxed)) {
                    continue;
                }
                stats.seen.fetch_add(1, Ordering::Relaxed);
                let bytes = buf[..n].to_vec();
                // Forward through the other side's socket; reflections go back the same way.
                let (out_a, to) = if from_a { (false, b) } else { (true, a) };
                let now = Instant::now();
                let mut push = |at: Instant, via_a: bool, to: SocketAddr, bytes: Vec<u8>| {
                    order += 1;
                    held.push(Reverse((at, order, via_a, to, bytes)));
                };
                if rng.percent(m.tamper) && !bytes.is_empty() {
                    let mut forged = bytes.clone();
                    let i = (rng.next_u64() as usize) % forged.len();
                    forged[i] ^= 1 << (rng.next_u64() % 8);
                    stats.tampered.fetch_add(1, Ordering::Relaxed);
                    push(now, out_a, to, forged);
                }
                if rng.percent(m.replay) && !history.is_empty() {
                    let (via, old_to, old) =
                        history[(rng.next_u64() as usize) % history.len()].clone();
                    let later = now + Duration::from_millis(rng.next_u64() % 300);
                    stats.replayed.fetch_add(1, Ordering::Relaxed);
                    push(later, via, old_to, old);
                }
                if rng.percent(m.reflect) {
                    stats.reflected.fetch_add(1, Ordering::Relaxed);
                    push(now, !out_a, src, bytes.clone());
                }
                if history.len() < 4096 {
                    history.push((out_a, to, bytes.clone()));
                }
                if rng.percent(m.drop) {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if rng.percent(m.duplicate) {
                    push(now, out_a, to, bytes.clone());
                }
                let at = if rng.percent(m.reorder) && !m.max_delay.is_zero() {
                    now + Duration::from_micros(rng.next_u64() % m.max_delay.as_micros() as u64)
                } else {
                    now
                };
                push(at, out_a, to, bytes);
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            let Some(Reverse((_, _, via_a, to, bytes))) = held.pop() else {
                break;
            };
            let sock = if via_a { &sa } else { &sb };
            let _ = sock.send_to(&bytes, to);
            idle = false;
        }
        if idle {
            // Nothing to read or send: a short nap instead of spinning. (A relay has no
            // single descriptor to block on for both sockets and its timer without pulling in
            // a poller; a millisecond is far below every timeout it is testing.)
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
