//! What the chaos, flood and kernel-path tests share: numbered messages typed into two
//! `duet chat` processes in line mode, and the checks that each arrived exactly once, in
//! order, and was reported delivered to its sender.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::Write;
use std::process::ChildStdin;
use std::thread::JoinHandle;
use std::time::Instant;

use duet_tests::Proc;

/// The `i`th message `from` types: numbered, so order is checkable, and not ASCII only.
pub fn message(from: &str, i: usize) -> String {
    format!("from {from} {i:04} 你好 🎉")
}

/// Type `lines` into `stdin` from a thread (a pipe holds only so much while the process
/// waits for room in its outbox); the thread hands stdin back so the caller decides when
/// input ends.
pub fn type_lines(mut stdin: ChildStdin, lines: Vec<String>) -> JoinHandle<ChildStdin> {
    std::thread::spawn(move || {
        for line in lines {
            writeln!(stdin, "{line}").expect("duet stopped reading its input");
        }
        stdin
    })
}

/// Messages `from` types, `range` of them.
pub fn messages(from: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| message(from, i)).collect()
}

/// A line without the `HH:MM:SS ` time a chat puts in front of it.
pub fn body(line: &str) -> &str {
    let b = line.as_bytes();
    let stamped = b.len() > 9
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b' '
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit());
    if stamped { &line[9..] } else { line }
}

/// Whether a line is a status line (`* ...`) rather than a message.
pub fn is_status(line: &str) -> bool {
    body(line).starts_with("* ")
}

fn left(deadline: Instant) -> std::time::Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Wait until `proc` showed messages `range` of `from`.
pub fn expect_shown(proc: &mut Proc, from: &str, range: std::ops::Range<usize>, deadline: Instant) {
    for i in range {
        proc.expect(&format!(": {}", message(from, i)), left(deadline));
    }
}

/// Wait until `proc` reported `n` more of its own messages (typed as `from`) delivered.
pub fn expect_delivered(proc: &mut Proc, from: &str, n: usize, deadline: Instant) {
    for _ in 0..n {
        proc.expect(&format!("delivered: from {from} "), left(deadline));
    }
}

/// Everything `proc` showed of `from`'s messages is messages `0..n`, each exactly once and
/// in order; each of its own messages `0..own_n` (typed as `own`) was reported delivered
/// exactly once and none failed; and it showed nothing else that looks like a message.
pub fn check_exactly_once_in_order(
    proc: &Proc,
    (own, own_n): (&str, usize),
    (from, n): (&str, usize),
    context: &str,
) {
    let shown: Vec<&String> = proc
        .seen
        .iter()
        .filter(|l| !is_status(l) && l.contains(&format!(": from {from} ")))
        .collect();
    for (i, line) in shown.iter().enumerate() {
        assert!(
            line.ends_with(&format!(": {}", message(from, i))),
            "{context}: message {i} from {from} is out of order or repeated: {line}"
        );
    }
    assert_eq!(
        shown.len(),
        n,
        "{context}: showed {} messages from {from}, want {n}",
        shown.len()
    );
    for i in 0..own_n {
        let delivered = proc
            .seen
            .iter()
            .filter(|l| is_status(l) && l.ends_with(&format!("delivered: {}", message(own, i))))
            .count();
        assert_eq!(
            delivered, 1,
            "{context}: message {i} of {own} reported delivered {delivered} times"
        );
    }
    let odd: Vec<&String> = proc
        .seen
        .iter()
        .filter(|l| !is_status(l) && !l.contains(&format!(": from {from} ")))
        .collect();
    assert!(
        odd.is_empty(),
        "{context}: showed what nobody sent: {odd:?}"
    );
    assert!(
        !proc.seen.iter().any(|l| l.contains("FAILED")),
        "{context}: a message failed"
    );
}
