//! Kernel paths, as root: two paired duets in their own network namespaces talk through a
//! router namespace whose forward path loses 30 % of their datagrams, duplicates 10 % and
//! reorders a quarter (nftables and an NFQUEUE consumer; see `duet_tests::netns_router`).
//! Every message still arrives exactly once, in order, and is reported delivered.
//!
//! Skipped, with the reason printed, when not root. The consumer's choices are seeded
//! (`DUET_NFQ_SEED`); nftables' `numgen random` is the kernel's own randomness.

mod common;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duet_tests::netns_router::{Faults, RouterNet, unavailable};
use duet_tests::sim::Rng;
use duet_tests::{Home, Proc, duet_bin};

use common::{check_exactly_once_in_order, expect_delivered, expect_shown, messages, type_lines};

const STARTUP: Duration = Duration::from_secs(30);
const PORT: u16 = 7789;

/// The NFQUEUE consumer: a thread that moved itself into the router namespace with
/// `setns(2)` (network namespaces are per thread) before opening its netlink socket —
/// simpler and sturdier than a helper binary under `ip netns exec`: nothing to build or
/// find, settings and counters are plain Rust values, and it stops on drop, also on panic.
struct Reorderer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Packets it was handed.
    queued: Arc<AtomicU64>,
    /// Packets it held back.
    delayed: Arc<AtomicU64>,
}

impl Reorderer {
    /// Hold back `percent` of the packets queued in `net`'s router for up to `max_delay`;
    /// returns once it listens.
    fn start(net: &RouterNet, percent: u64, max_delay: Duration, seed: u64) -> Reorderer {
        let path = net.router_path();
        let stop = Arc::new(AtomicBool::new(false));
        let (queued, delayed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ready_tx, ready) = mpsc::channel();
        let (stop2, queued2, delayed2) = (stop.clone(), queued.clone(), delayed.clone());
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("router namespace file");
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the router namespace");
            let mut queue = nfq::Queue::open().expect("open an NFQUEUE netlink socket");
            queue.bind(0).expect("bind NFQUEUE 0");
            // A full queue passes packets rather than dropping them: loss is nftables' job.
            queue.set_fail_open(0, true).expect("fail open");
            queue.set_nonblocking(true);
            let _ = ready_tx.send(());
            let mut rng = Rng::new(seed);
            let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut waiting: HashMap<u64, nfq::Message> = HashMap::new();
            let mut order = 0u64;
            let max = max_delay.as_micros().max(1) as u64;
            // Bounded by the stop flag, and by a wall-clock cap should the guard leak.
            let cap = Instant::now() + Duration::from_secs(900);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < cap {
                let mut idle = true;
                for _ in 0..64 {
                    let Ok(mut msg) = queue.recv() else { break };
                    idle = false;
                    queued2.fetch_add(1, Ordering::Relaxed);
                    msg.set_verdict(nfq::Verdict::Accept);
                    if rng.next_u64() % 100 < percent {
                        delayed2.fetch_add(1, Ordering::Relaxed);
                        order += 1;
                        let due = Instant::now() + Duration::from_micros(rng.next_u64() % max);
                        held.push(Reverse((due, order)));
                        waiting.insert(order, msg);
                    } else {
                        let _ = queue.verdict(msg);
                    }
                }
                let now = Instant::now();
                while let Some(&Reverse((due, id))) = held.peek() {
                    if due > now {
                        break;
                    }
                    held.pop();
                    if let Some(msg) = waiting.remove(&id) {
                        let _ = queue.verdict(msg);
                        idle = false;
                    }
                }
                if idle {
                    // nfq offers no descriptor to poll; a millisecond is far below the delays.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for (_, msg) in waiting.drain() {
                let _ = queue.verdict(msg);
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the NFQUEUE consumer did not start");
        Reorderer {
            stop,
            thread: Some(thread),
            queued,
            delayed,
        }
    }
}

impl Drop for Reorderer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `duet --config-dir HOME chat PEER --bind ADDR` inside a namespace.
fn chat_in(peer: &duet_tests::netns_router::Peer, home: &Home, other: &str) -> Proc {
    let bind = format!("{}:{PORT}", peer.addr);
    let args = home.args(&["chat", other, "--bind", &bind]);
    Proc::spawn(
        peer.command(&duet_bin()).args(&args),
        &format!("duet in {}", peer.ns),
    )
}

#[test]
fn three_hundred_messages_each_way_through_a_lossy_kernel_router_arrive_once_in_order() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    const N: usize = 300;
    let seed: u64 = std::env::var("DUET_NFQ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let context = format!("nfq seed {seed}");
    // Declared first, dropped last: the processes die before their namespaces go.
    let net = RouterNet::create(Faults {
        loss: 30,
        duplicate: 10,
    });
    let reorder = Reorderer::start(&net, 25, Duration::from_millis(40), seed);
    let (addr_a, addr_b) = (
        format!("{}:{PORT}", net.a.addr),
        format!("{}:{PORT}", net.b.addr),
    );
    let (ha, hb) = duet_tests::paired(Some(&addr_a), Some(&addr_b));
    let mut a = chat_in(&net.a, &ha, "b");
    let mut b = chat_in(&net.b, &hb, "a");
    a.expect("* listening on", STARTUP);
    b.expect("* listening on", STARTUP);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    let typing_a = type_lines(a.take_stdin(), messages("a", 0..N));
    let typing_b = type_lines(b.take_stdin(), messages("b", 0..N));
    expect_shown(&mut b, "a", 0..N, deadline);
    expect_shown(&mut a, "b", 0..N, deadline);
    expect_delivered(&mut a, "a", N, deadline);
    expect_delivered(&mut b, "b", N, deadline);
    let elapsed = started.elapsed();
    drop((
        typing_a.join().expect("typing into a"),
        typing_b.join().expect("typing into b"),
    ));
    assert!(a.wait(STARTUP).success(), "{context}: a failed");
    assert!(b.wait(STARTUP).success(), "{context}: b failed");
    check_exactly_once_in_order(&a, ("a", N), ("b", N), &format!("{context}, a"));
    check_exactly_once_in_order(&b, ("b", N), ("a", N), &format!("{context}, b"));
    let (dropped, duplicated) = net.nft_counters();
    let (queued, delayed) = (
        reorder.queued.load(Ordering::Relaxed),
        reorder.delayed.load(Ordering::Relaxed),
    );
    eprintln!(
        "{context}: {N} messages each way in {elapsed:?}; the router dropped {dropped}, \
         duplicated {duplicated}, queued {queued} and held back {delayed}"
    );
    // The path really was that hostile, so the test cannot pass on a clean one.
    assert!(
        dropped > 0 && duplicated > 0 && delayed > 0,
        "{context}: the faults did not act"
    );
    assert!(
        dropped * 100 >= (queued + dropped) * 20,
        "{context}: only {dropped} of {} dropped",
        queued + dropped
    );
}
