//! Chaos over real sockets, no root: two paired `duet chat` processes talk through a
//! userspace relay that loses, duplicates and reorders their datagrams, and still every
//! message arrives exactly once, in order, and is reported delivered.
//!
//! The relay's generator is seeded (`DUET_RELAY_SEED` picks the seed; it is printed and in
//! every assertion message), so a failing run can be repeated.

mod common;

use std::time::{Duration, Instant};

use duet_tests::relay::{Mischief, Relay};
use duet_tests::{free_port, local, paired};

use common::{check_exactly_once_in_order, expect_delivered, expect_shown, messages, type_lines};

const STARTUP: Duration = Duration::from_secs(30);

fn seed() -> u64 {
    std::env::var("DUET_RELAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn thousand_messages_each_way_through_a_lossy_relay_arrive_once_in_order() {
    const N: usize = 1000;
    // Generous: 7–15 s measured in a debug build on two cores (seeds 1, 2, 3, 1000); a stall,
    // not slowness, is what this bound catches.
    let budget = Duration::from_secs(240);
    let seed = seed();
    let context = format!("seed {seed}");
    let (pa, pb) = (free_port(), free_port());
    let mischief = Mischief {
        drop: 30,
        duplicate: 10,
        reorder: 25,
        max_delay: Duration::from_millis(40),
        ..Mischief::default()
    };
    let relay = Relay::start(
        local(pa).parse().unwrap(),
        local(pb).parse().unwrap(),
        mischief,
        seed,
    );
    // Each side knows the other only through the relay.
    let (ha, hb) = paired(
        Some(&relay.b_addr().to_string()),
        Some(&relay.a_addr().to_string()),
    );
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    a.expect("* listening on", STARTUP);
    b.expect("* listening on", STARTUP);
    let started = Instant::now();
    let deadline = started + budget;
    let typing_a = type_lines(a.take_stdin(), messages("a", 0..N));
    let typing_b = type_lines(b.take_stdin(), messages("b", 0..N));
    expect_shown(&mut b, "a", 0..N, deadline);
    expect_shown(&mut a, "b", 0..N, deadline);
    // Every acknowledgement before input ends, so neither side leaves with one in flight.
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
    use std::sync::atomic::Ordering::Relaxed;
    let (seen, dropped) = (
        relay.stats.seen.load(Relaxed),
        relay.stats.dropped.load(Relaxed),
    );
    eprintln!(
        "{context}: {N} messages each way in {elapsed:?}; the relay saw {seen} datagrams and dropped {dropped}"
    );
    // The relay really was that hostile (so the test cannot pass on a perfect path).
    assert!(
        dropped * 100 >= seen * 25,
        "{context}: only {dropped} of {seen} dropped"
    );
}
