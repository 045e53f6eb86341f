//! Several duets of one identity with one peer: a one-shot `duet send` next to an open
//! chat must not take the peer's session over (which cut the chat off until both were
//! restarted, and made the peer report as delivered messages the chat never saw).

use std::process::Command;
use std::time::Duration;

use duet_tests::{Home, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

fn run(home: &Home, args: &[&str]) -> (i32, String) {
    let out = Command::new(duet_bin())
        .args(home.args(args))
        .output()
        .expect("cannot run duet");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_send_next_to_an_open_chat_goes_through_it_and_both_chats_go_on() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa), "--name", "alice"]);
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb), "--name", "bob"]);
    a.expect("* listening on", T);
    b.expect("* listening on", T);
    a.type_line("before");
    b.expect(": before", T);
    a.expect("delivered: before", T);
    // Bob sends from another terminal while his chat is open.
    let (code, out) = run(&hb, &["send", "--to", "a", "from bob's send"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sent by the duet already running here"),
        "{out}"
    );
    // It came from bob's chat's address, and bob's chat saw it delivered.
    a.expect(&format!("b@{}: from bob's send", local(pb)), T);
    b.expect("delivered: from bob's send", T);
    // Both chats still talk, both ways.
    a.type_line("after, from alice");
    b.expect(": after, from alice", T);
    b.type_line("after, from bob");
    a.expect(": after, from bob", T);
    a.expect("delivered: after, from alice", T);
    b.expect("delivered: after, from bob", T);
    a.close_stdin();
    b.close_stdin();
    assert!(a.wait(T).success(), "alice: {:?}", a.seen);
    assert!(b.wait(T).success(), "bob: {:?}", b.seen);
    assert!(
        !a.seen
            .iter()
            .chain(&b.seen)
            .any(|l| l.contains("not answering")),
        "{:?} {:?}",
        a.seen,
        b.seen
    );
}

#[test]
fn a_send_for_another_peer_than_the_chats_goes_on_its_own() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let hc = Home::new("carol");
    hb.add_peer("c", &hc, Some(&local(pc)));
    hc.add_peer("b", &hb, None);
    let mut b = hb.duet(&["chat", "a", "--bind", &local(pb)]);
    b.expect("* listening on", T);
    let mut c = hc.duet(&["listen", "--bind", &local(pc), "--count", "1"]);
    c.expect("* listening on", T);
    let (code, out) = run(&hb, &["send", "--to", "c", "for carol"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("already running"), "{out}");
    c.expect(": for carol", T);
    assert!(c.wait(T).success(), "{:?}", c.seen);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
    drop(ha);
}
