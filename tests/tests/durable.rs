//! Nothing lost: the durable outbox and history across restarts, retransmissions recognised
//! after a restart, and `kill -9` in the middle of a burst.

use std::collections::HashSet;
use std::time::Duration;

use duet_tests::relay::{Mischief, Relay};
use duet_tests::{Home, free_port, local, paired};

const T: Duration = Duration::from_secs(30);

/// The texts of `home`'s history with `peer`, in order, by direction ("->" or "<-").
fn history(home: &Home, peer: &str, arrow: &str) -> Vec<String> {
    let (code, out) = home.run(&["history", peer, "--limit", "100000"]);
    assert_eq!(code, 0, "duet history failed: {out}");
    out.lines()
        .filter_map(|l| {
            l.split_once(&format!(" {arrow} {peer}: "))
                .map(|(_, t)| t.to_owned())
        })
        .collect()
}

fn integrity_ok(home: &Home) {
    let (code, out) = home.run(&["history", "--check"]);
    assert_eq!((code, out.trim()), (0, "integrity: ok"));
}

#[test]
fn messages_queued_while_the_peer_is_away_are_delivered_after_both_restart() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    // The peer is down: each message is kept, and the sender says so.
    for text in ["while you were away 1", "while you were away 2 你好"] {
        let (code, out) =
            duet_tests::Home::run(&ha, &["send", "--to", "b", "--timeout", "1", text]);
        assert_eq!(code, 8, "{out}");
    }
    let queued = history(&ha, "b", "->");
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|l| l.ends_with("[queued]")), "{queued:?}");
    // Both come up again (fresh processes): the queue goes out, once.
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("2 message(s) from before are queued", T);
    b.expect(": while you were away 1", T);
    b.expect(": while you were away 2 你好", T);
    a.expect("delivered: while you were away 2", T);
    a.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    b.close_stdin();
    assert!(b.wait(T).success());
    let sent = history(&ha, "b", "->");
    let got = history(&hb, "a", "<-");
    assert_eq!(
        sent,
        [
            "while you were away 1 [delivered]",
            "while you were away 2 你好 [delivered]"
        ]
    );
    assert_eq!(got, ["while you were away 1", "while you were away 2 你好"]);
    // A third run of either side sends nothing again.
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* talking to b", T);
    a.close_stdin();
    assert!(a.wait(T).success());
    assert!(
        !a.seen.iter().any(|l| l.contains("from before")),
        "{:?}",
        a.seen
    );
    integrity_ok(&ha);
    integrity_ok(&hb);
}

#[test]
fn a_message_retransmitted_after_the_receiver_restarted_is_not_shown_twice() {
    let (pa, pb) = (free_port(), free_port());
    let relay = Relay::start(
        local(pa).parse().unwrap(),
        local(pb).parse().unwrap(),
        Mischief::default(),
        1,
    );
    let (ha, hb) = paired(
        Some(&relay.b_addr().to_string()),
        Some(&relay.a_addr().to_string()),
    );
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    b.expect("* listening on", T);
    a.expect("is up", T);
    // B's acknowledgements are lost from now on: A keeps retransmitting what B has shown.
    relay.mute_b(true);
    a.type_line("only once, please");
    b.expect(": only once, please", T);
    // Shown means marked shown in the history (right after printing); a kill before the
    // mark would have it shown again, on purpose, by the next run.
    wait_until_shown(&hb, "only once, please");
    b.kill();
    relay.mute_b(false);
    let mut b2 = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    b2.expect("* listening on", T);
    a.expect("delivered: only once, please", T);
    a.type_line("after the restart");
    b2.expect(": after the restart", T);
    assert!(
        !b2.seen.iter().any(|l| l.contains("only once, please")),
        "shown twice: {:?}",
        b2.seen
    );
    a.close_stdin();
    assert!(a.wait(T).success());
    b2.close_stdin();
    assert!(b2.wait(T).success());
    assert_eq!(
        history(&hb, "a", "<-"),
        ["only once, please", "after the restart"]
    );
    integrity_ok(&hb);
}

#[test]
fn kill_9_during_a_burst_loses_nothing_that_was_shown() {
    const N: usize = 300;
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    let mut input = a.take_stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..N {
            // The writer may outlive a killed reader: stop quietly then.
            if writeln!(input, "burst {i}").is_err() {
                return;
            }
        }
    });
    // Kill the receiver in the middle, then the sender, each with SIGKILL.
    b.expect(": burst 60", T);
    b.kill();
    let shown_by_b: Vec<String> = b
        .seen
        .iter()
        .filter_map(|l| l.split_once(": burst ").map(|(_, n)| n.to_owned()))
        .collect();
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    a.expect("delivered: burst 120", Duration::from_secs(60));
    a.kill();
    let _ = writer.join();
    let delivered_to_a: Vec<String> = a
        .seen
        .iter()
        .filter_map(|l| l.split_once("delivered: burst ").map(|(_, n)| n.to_owned()))
        .collect();
    // The sender comes back and sends what it had stored but not delivered.
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* talking to b", T);
    a.close_stdin();
    assert!(
        a.wait(Duration::from_secs(120)).success(),
        "{:?}",
        a.seen.last()
    );
    b.close_stdin();
    assert!(b.wait(T).success());
    let received = history(&hb, "a", "<-");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a message was stored twice");
    for n in shown_by_b.iter().chain(&delivered_to_a) {
        assert!(
            received.contains(&format!("burst {n}")),
            "burst {n} was shown but is not in the history"
        );
    }
    // In order: what the sender stored, the receiver has, in the same order.
    let sent: Vec<String> = history(&ha, "b", "->")
        .into_iter()
        .map(|l| l.trim_end_matches(" [delivered]").to_owned())
        .collect();
    assert_eq!(
        received, sent,
        "the receiver's history differs from the sender's"
    );
    integrity_ok(&ha);
    integrity_ok(&hb);
}

/// Wait (bounded) until `home`'s history marks the received `text` as shown.
fn wait_until_shown(home: &Home, text: &str) {
    let db = home.path().join("history.sqlite3");
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1])\n\
                  r = c.execute('SELECT shown FROM messages WHERE text = ?', (sys.argv[2],)).fetchone()\n\
                  sys.exit(0 if r and r[0] == 1 else 1)";
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        let shown = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(&db)
            .arg(text)
            .status()
            .is_ok_and(|s| s.success());
        if shown {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{text:?} never marked shown");
}

/// Run SQL on `home`'s history file (Python's sqlite3: the schema is duet's own).
fn sql(home: &Home, statement: &str) {
    let db = home.path().join("history.sqlite3");
    let status = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(statement)
        .status()
        .expect("python3");
    assert!(status.success(), "sql failed: {statement}");
}

#[test]
fn a_receiver_that_cannot_store_a_message_does_not_acknowledge_it() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = hb.duet(&["listen", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    // The receiver's history refuses new messages, as a full disk would.
    sql(
        &hb,
        "CREATE TRIGGER full BEFORE INSERT ON messages WHEN NEW.direction = 'in' \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    let (code, out) = ha.run(&["send", "--to", "b", "--timeout", "2", "kept until stored"]);
    assert_ne!(code, 0, "reported delivered though not stored: {out}");
    b.expect("cannot write the history", T);
    assert!(
        !b.seen.iter().any(|l| l.contains("kept until stored")),
        "shown though not stored: {:?}",
        b.seen
    );
    assert_eq!(history(&ha, "b", "->"), ["kept until stored [queued]"]);
    assert!(history(&hb, "a", "<-").is_empty());
    // Space again: the sender's next chat delivers it, stored and shown once.
    sql(&hb, "DROP TRIGGER full;");
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("delivered: kept until stored", T);
    b.expect(": kept until stored", T);
    a.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    b.kill();
    assert_eq!(history(&ha, "b", "->"), ["kept until stored [delivered]"]);
    assert_eq!(history(&hb, "a", "<-"), ["kept until stored"]);
}

#[test]
fn lines_typed_before_any_peer_wrote_are_kept_and_go_to_the_first_that_does() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    // Bob waits for whichever paired peer writes first, and types meanwhile.
    let mut b = hb.duet(&["chat", "--bind", &local(pb)]);
    b.expect("* no peer yet", T);
    b.type_line("typed before anyone wrote");
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    a.type_line("hello bob");
    b.expect(": hello bob", T);
    a.expect(": typed before anyone wrote", T);
    b.expect("delivered: typed before anyone wrote", T);
    a.close_stdin();
    b.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    assert!(b.wait(T).success(), "{:?}", b.seen);
    assert_eq!(
        history(&hb, "a", "->"),
        ["typed before anyone wrote [delivered]"]
    );
}

#[test]
fn a_message_stored_but_never_shown_is_shown_by_the_next_run_once() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "1"]);
    b.expect("* listening on", T);
    let (code, out) = ha.run(&["send", "--to", "b", "stored, then the receiver died"]);
    assert_eq!(code, 0, "{out}");
    assert!(b.wait(T).success(), "{:?}", b.seen);
    // As if the receiver had been killed between storing the message and showing it.
    sql(
        &hb,
        "UPDATE messages SET shown = 0 WHERE text = 'stored, then the receiver died';",
    );
    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "1"]);
    b.expect("a: stored, then the receiver died", T);
    assert!(b.wait(T).success(), "{:?}", b.seen);
    // Shown now: the next run does not show it again.
    let mut b = hb.duet(&["listen", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    let (code, out) = ha.run(&["send", "--to", "b", "a new one"]);
    assert_eq!(code, 0, "{out}");
    b.expect(": a new one", T);
    b.kill();
    assert!(
        !b.seen.iter().any(|l| l.contains("receiver died")),
        "{:?}",
        b.seen
    );
}

/// The outage this test holds messages through: longer than the 30 s a message was once
/// given before it failed and went out again behind newer ones.
const OUTAGE: Duration = Duration::from_secs(33);

#[test]
fn messages_held_through_a_long_outage_arrive_in_input_order_and_chat_exits_0() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    for i in 1..=3 {
        a.type_line(&format!("before {i}"));
    }
    // The peer stays away for the whole outage: this wait is the scenario, not a guess at
    // readiness.
    std::thread::sleep(OUTAGE);
    for i in 1..=3 {
        a.type_line(&format!("after {i}"));
    }
    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "6"]);
    assert!(b.wait(T * 2).success(), "{:?}", b.seen);
    let got: Vec<&str> = b
        .seen
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t))
        .filter(|t| t.starts_with("before ") || t.starts_with("after "))
        .collect();
    assert_eq!(
        got,
        [
            "before 1", "before 2", "before 3", "after 1", "after 2", "after 3"
        ]
    );
    a.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    assert_eq!(
        history(&hb, "a", "<-"),
        [
            "before 1", "before 2", "before 3", "after 1", "after 2", "after 3"
        ]
    );
    assert!(
        history(&ha, "b", "->")
            .iter()
            .all(|l| l.ends_with("[delivered]"))
    );
}
