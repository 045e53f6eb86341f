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
