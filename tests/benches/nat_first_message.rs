//! How long two people behind home NAT routers wait for their first message: from starting
//! both `duet chat`s to the first line typed on one side showing on the other.
//!
//! Each run builds a fresh testbed ([`duet_tests::nat_chat::ChatNet`]: two port-preserving
//! home routers with nftables masquerade and a WAN input drop, two libtorrent DHT nodes and
//! a `duet dht-node`, coturn for STUN; no TURN) and fresh paired config directories, so no
//! record, mapping or connection tracking entry of an earlier run helps. Setting it up is
//! not timed. Then both chats are started at once, one line is typed into `a` right away
//! (before it can have found anyone), and the clock stops when `b` prints it. Also reported:
//! when each side printed its path. The chats are release builds (`cargo build --release -p
//! duet-host`, done here).
//!
//! What is in that time: starting the processes, STUN on the chat socket, a DHT client's
//! bootstrap, one put (a look-up for tokens, then the put) and the peer's look-ups, which
//! poll every 0.5 s and then less often, the probes that punch both routers, the Noise
//! handshake, and the message with its acknowledgement.
//!
//! Needs root (network namespaces); without it, it says so and exits 0. Nothing is asserted
//! about time: it prints every run and the median (p50), minimum and maximum.
//!
//! Run: `cargo bench -p duet-tests --bench nat_first_message`. Environment:
//! `DUET_BENCH_RUNS` (default 10).

use std::time::{Duration, Instant};

use duet_tests::nat::Nat;
use duet_tests::nat_chat::{ChatNet, ChatOpts};
use duet_tests::netns::is_root;
use duet_tests::process::cargo_bin_release;
use duet_tests::use_duet_bin;

/// Runs unless `DUET_BENCH_RUNS` says otherwise.
const RUNS: usize = 10;
/// The chat port in both homes.
const PORT: u16 = 7810;
/// The longest one run may take before the bench gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    if !is_root() {
        println!("skipping nat_first_message: it needs root (network namespaces)");
        return;
    }
    let runs = std::env::var("DUET_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS)
        .max(1);
    let bin = cargo_bin_release("duet-host", "duet");
    if !use_duet_bin(bin.clone()) {
        eprintln!("error: another duet binary was chosen before the release build");
        std::process::exit(1);
    }
    println!("duet: {}; {runs} run(s)", bin.display());
    println!("run  first message  a's path  b's path");
    let mut firsts = Vec::new();
    for run in 1..=runs {
        let (first, a_path, b_path) = measure(run);
        println!(
            "{run:>3}  {:>11.2} s  {:>6.2} s  {:>6.2} s",
            first.as_secs_f64(),
            a_path.as_secs_f64(),
            b_path.as_secs_f64()
        );
        firsts.push(first);
    }
    firsts.sort_unstable();
    println!(
        "first message: p50 {:.2} s, min {:.2} s, max {:.2} s over {runs} run(s)",
        firsts[firsts.len() / 2].as_secs_f64(),
        firsts[0].as_secs_f64(),
        firsts[firsts.len() - 1].as_secs_f64()
    );
}

/// One run: the first message's time, and when each side printed its path.
fn measure(run: usize) -> (Duration, Duration, Duration) {
    let world = ChatNet::start("bench", Nat::PortPreserving, Nat::PortPreserving);
    let text = format!(": first message of run {run}");
    let started = Instant::now();
    let mut a = world.spawn_chat(0, PORT, ChatOpts::default());
    let mut b = world.spawn_chat(1, PORT, ChatOpts::default());
    a.type_line(&text[2..]);
    // Watch both outputs in turn, a few milliseconds each: a line already read by one wait
    // still matches another (see `Proc::wait_for`).
    let (mut first, mut a_path, mut b_path) = (None, None, None);
    while first.is_none() || a_path.is_none() || b_path.is_none() {
        if started.elapsed() > RUN_LIMIT {
            a.read_for(Duration::from_millis(100));
            b.read_for(Duration::from_millis(100));
            eprintln!(
                "error: run {run} did not finish within {RUN_LIMIT:?}\na:\n{}\nb:\n{}",
                a.seen.join("\n"),
                b.seen.join("\n")
            );
            std::process::exit(1);
        }
        let slice = Duration::from_millis(5);
        if a_path.is_none() && a.wait_for("* path to b: ", slice).is_some() {
            a_path = Some(started.elapsed());
        }
        if b_path.is_none() && b.wait_for("* path to a: ", slice).is_some() {
            b_path = Some(started.elapsed());
        }
        if first.is_none() && b.wait_for(&text, slice).is_some() {
            first = Some(started.elapsed());
        }
    }
    let never = Duration::ZERO;
    (
        first.unwrap_or(never),
        a_path.unwrap_or(never),
        b_path.unwrap_or(never),
    )
}
