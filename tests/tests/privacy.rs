//! Private by default, with real processes: only the two paired duets can read or inject
//! messages, also through a relay that tampers with, replays, reflects, reorders and
//! duplicates their datagrams.

use std::time::Duration;

use duet_tests::relay::{Mischief, Relay};
use duet_tests::{Home, free_port, local, paired};

const T: Duration = Duration::from_secs(30);

#[test]
fn an_unpaired_duet_is_never_shown() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "1", "-v"]);
    b.expect("* listening on", T);
    // A third duet that knows B's public key (and so can start a handshake) but that B never
    // paired with.
    let mallory = Home::new("mallory");
    mallory.add_peer("b", &hb, Some(&local(pb)));
    let out = std::process::Command::new(duet_tests::duet_bin())
        .args(mallory.args(&[
            "send",
            "--to",
            "b",
            "--timeout",
            "2",
            "I am alice, trust me",
        ]))
        .output()
        .expect("run duet");
    assert_eq!(
        out.status.code(),
        Some(8),
        "mallory must get no answer: {out:?}"
    );
    // The real peer still gets through, and only it is shown.
    let sent = std::process::Command::new(duet_tests::duet_bin())
        .args(ha.args(&["send", "--to", "b", "--bind", &local(pa), "the real alice"]))
        .output()
        .expect("run duet");
    assert!(sent.status.success(), "{sent:?}");
    b.expect(&format!("a@{}: the real alice", local(pa)), T);
    assert!(b.wait(T).success());
    assert!(
        !b.seen.iter().any(|l| l.contains("trust me")),
        "{:?}",
        b.seen
    );
    let counters = b
        .seen
        .iter()
        .find(|l| l.contains("rejected"))
        .cloned()
        .unwrap_or_default();
    assert!(!counters.contains(" 0 from unpaired keys"), "{counters}");
}

#[test]
fn a_hostile_relay_can_neither_forge_nor_repeat_and_every_message_arrives_once() {
    const N: usize = 150;
    let (pa, pb) = (free_port(), free_port());
    let seed = std::env::var("DUET_RELAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mischief = Mischief {
        drop: 10,
        duplicate: 10,
        reorder: 25,
        tamper: 10,
        replay: 10,
        reflect: 5,
        max_delay: Duration::from_millis(40),
    };
    let relay = Relay::start(
        local(pa).parse().unwrap(),
        local(pb).parse().unwrap(),
        mischief,
        seed,
    );
    let (ra, rb) = (relay.a_addr().to_string(), relay.b_addr().to_string());
    // Each side knows the other only through the relay.
    let (ha, hb) = paired(Some(&rb), Some(&ra));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    a.expect("* listening on", T);
    b.expect("* listening on", T);
    let mut a_in = a.take_stdin();
    let mut b_in = b.take_stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..N {
            writeln!(a_in, "from a {i} 你好").expect("a stopped reading");
            writeln!(b_in, "from b {i} 🎉").expect("b stopped reading");
        }
        (a_in, b_in)
    });
    let long = Duration::from_secs(120);
    for i in 0..N {
        b.expect(&format!(": from a {i} 你好"), long);
        a.expect(&format!(": from b {i} 🎉"), long);
    }
    let (a_in, b_in) = writer.join().expect("writer");
    // Wait for every acknowledgement before ending input, so neither side leaves early.
    for _ in 0..N {
        a.expect("delivered: from a", long);
        b.expect("delivered: from b", long);
    }
    drop((a_in, b_in));
    assert!(a.wait(long).success(), "seed {seed}");
    assert!(b.wait(long).success(), "seed {seed}");
    for (side, proc, other) in [("a", &a, "b"), ("b", &b, "a")] {
        let shown: Vec<&String> = proc
            .seen
            .iter()
            .filter(|l| l.contains(&format!(": from {other} ")))
            .collect();
        assert_eq!(
            shown.len(),
            N,
            "seed {seed}: {side} showed {} messages, want {N}",
            shown.len()
        );
        for (i, line) in shown.iter().enumerate() {
            assert!(
                line.contains(&format!(": from {other} {i} ")),
                "seed {seed}: {side} out of order at {i}: {line}"
            );
        }
        let odd: Vec<&String> = proc
            .seen
            .iter()
            .filter(|l| !l.contains("* ") && !l.contains(&format!(": from {other} ")))
            .collect();
        assert!(
            odd.is_empty(),
            "seed {seed}: {side} showed something nobody sent: {odd:?}"
        );
    }
    let st = &relay.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        st.tampered.load(Relaxed) > 0
            && st.replayed.load(Relaxed) > 0
            && st.reflected.load(Relaxed) > 0
    );
}

/// The number in front of `label` in a counters line (`listen -v`, `/status`).
fn counter(line: &str, label: &str) -> u64 {
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in {line}"))
}

#[test]
fn a_flood_of_forged_and_replayed_initiations_costs_little_and_a_send_gets_through() {
    use duet_core::wire::sealed::{INITIATION_LEN, kind};
    use duet_tests::sim::Rng;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let send = |text: &str, timeout: &str| {
        std::process::Command::new(duet_tests::duet_bin())
            .args(ha.args(&[
                "send",
                "--to",
                "b",
                "--bind",
                &local(pa),
                "--timeout",
                timeout,
                text,
            ]))
            .output()
            .expect("run duet")
    };

    // Record one of a's initiations while b is not there: b never sees it now.
    let recorded = {
        let tap = UdpSocket::bind(local(pb)).expect("bind b's port");
        tap.set_read_timeout(Some(T)).unwrap();
        let out = send("lost", "2");
        assert_eq!(out.status.code(), Some(8), "nobody answered: {out:?}");
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = tap.recv_from(&mut buf).expect("a's initiation");
            if n == INITIATION_LEN && buf[3] == kind::INITIATION {
                break buf[..n].to_vec();
            }
        }
    };

    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "2", "-v"]);
    b.expect("* listening on", T);
    // A newer handshake: from now on the recorded initiation is stale.
    assert!(send("first", "20").status.success());
    b.expect(&format!("a@{}: first", local(pa)), T);

    // From one address: initiation-shaped datagrams by someone without b's public key
    // (random bytes under the header), and the recorded initiation, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = Arc::clone(&stop);
        let target = local(pb);
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut rng = Rng::new(11);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) || sent < 4000 {
                let mut forged = rng.bytes(INITIATION_LEN);
                forged[..4].copy_from_slice(&recorded[..4]);
                let _ = socket.send_to(&forged, &target);
                let _ = socket.send_to(&recorded, &target);
                sent += 2;
                if sent.is_multiple_of(16) {
                    // Paced, so the flood reaches b rather than its socket's full buffer.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out = send("through the flood", "20");
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.join().expect("flooder");
    assert!(
        out.status.success(),
        "the send did not get through: {out:?}"
    );
    b.expect(&format!("a@{}: through the flood", local(pa)), T);
    assert!(b.wait(T).success());

    let counters = b
        .seen
        .iter()
        .find(|l| l.contains("rate-limited"))
        .cloned()
        .unwrap_or_else(|| panic!("no counters from listen -v: {:?}", b.seen));
    println!("flooded {flooded} datagrams; b: {counters}");
    let wrong_mac = counter(&counters, " with a wrong mac1");
    let stale = counter(&counters, " stale initiations");
    let limited = counter(&counters, " rate-limited");
    // The forged ones fail mac1, before any key agreement; the recorded one is refused for
    // its timestamp while the rate limit lets it be read, and dropped unread after that.
    assert!(wrong_mac > 0, "{counters}");
    assert!(
        stale > 0,
        "the recorded initiation was not refused: {counters}"
    );
    assert!(
        limited > 0,
        "the replays were processed at any rate: {counters}"
    );
    assert!(wrong_mac + stale + limited <= flooded, "{counters}");
    assert!(
        counters.contains(" 2 handshakes"),
        "a handshake other than a's two real ones: {counters}"
    );
}
