//! What a peer writes cannot change how the rest of a line reads: controls, bidirectional
//! overrides and invisible characters reach `duet listen` and `duet history` escaped, through
//! the real binary.

use std::process::Command;
use std::time::Duration;

use duet_tests::{Home, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

/// A message that, shown raw, would read "…txt.exe" as "…exe.txt", hide a space and a
/// joiner, and carry an escape sequence.
const TRICK: &str = "invoice\u{202e}exe.txt\u{2066}x\u{2069} a\u{200b}b c\u{200d}d \u{feff}e\u{2028}f \u{1b}[31mred";

/// Raw characters none of the outputs may contain.
const RAW: [char; 8] = [
    '\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200d}', '\u{feff}', '\u{2028}', '\u{1b}',
];

/// The escapes that stand for them.
const ESCAPED: &str = "invoice\\u{202e}exe.txt\\u{2066}x\\u{2069} a\\u{200b}b c\\u{200d}d \\u{feff}e\\u{2028}f \\u{1b}[31mred";

fn history(home: &Home) -> String {
    let out = Command::new(duet_bin())
        .args(home.args(&["history"]))
        .output()
        .expect("run duet history");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("history is UTF-8")
}

fn assert_escaped(what: &str, shown: &str) {
    assert!(
        shown.contains(ESCAPED),
        "{what} lacks the escapes: {shown:?}"
    );
    for c in RAW {
        assert!(!shown.contains(c), "{what} has a raw {c:?}: {shown:?}");
    }
}

#[test]
fn bidi_overrides_and_invisible_characters_reach_listen_and_history_escaped() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = hb.duet(&["listen", "--bind", &local(pb), "--count", "1"]);
    b.expect("* listening on", T);
    let sent = Command::new(duet_bin())
        .args(ha.args(&["send", "--to", "b", "--bind", &local(pa), TRICK]))
        .output()
        .expect("run duet send");
    assert!(sent.status.success(), "{sent:?}");
    let line = b.expect(&format!("a@{}: ", local(pa)), T);
    assert!(b.wait(T).success(), "{:?}", b.seen);
    assert_escaped("listen", &line);
    // Both sides' history: what was received and what was sent.
    assert_escaped("the receiver's history", &history(&hb));
    assert_escaped("the sender's history", &history(&ha));
}
