//! duet in a pipeline whose reader leaves (`| head`): every command ends at once, with exit
//! status 0 and no panic, instead of failing or running on unseen.

use std::process::{Command, Stdio};
use std::time::Duration;

use duet_tests::{Home, Proc, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

/// Run `duet --config-dir HOME ARGS` with stdout a pipe whose reader is already gone, so
/// its first write fails with EPIPE (`| head -0`, without the race of `head` leaving
/// before or after the write); the exit code and stderr.
fn with_stdout_closed(home: &Home, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(duet_bin())
        .args(home.args(args))
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .expect("run duet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_left_ends_each_command_with_success() {
    let (ha, hb) = paired(None, None);
    let key = hb.key();
    // Something to list in the history.
    let port = free_port();
    let mut b = hb.duet(&["listen", "--bind", &local(port), "--count", "1"]);
    b.expect("* listening on", T);
    // Its last line, "* delivered", meets the closed pipe.
    let to = format!("b@{}", local(port));
    let (code, stderr) = with_stdout_closed(&ha, &["send", "--to", &to, "hello"]);
    assert_eq!(code, Some(0), "send: {stderr}");
    b.expect("hello", T);
    assert!(b.wait(T).success(), "{:?}", b.seen);

    let commands: [&[&str]; 7] = [
        &["id"],
        &["pair", "list"],
        &["pair", "add", "b", &key, "--addr", "127.0.0.1:7001"],
        &["pair", "set-addr", "b", "none"],
        &["history"],
        &["history", "--check"],
        &["history", "--limit", "1"],
    ];
    for args in commands {
        let (code, stderr) = with_stdout_closed(&ha, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn listen_piped_into_head_ends_after_the_next_message() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    // `head -1` takes the banner and leaves; duet's next line finds the pipe closed. The
    // shell reports duet's own exit status on stderr.
    let dir = hb.path().to_str().expect("UTF-8 path").to_owned();
    let script = "{ \"$0\" --config-dir \"$1\" listen --bind \"$2\"; echo \"duet exited $?\" >&2; } | head -1";
    let mut listen = Proc::spawn(
        Command::new("sh")
            .args(["-c", script])
            .arg(duet_bin())
            .args([dir.as_str(), &local(pb)]),
        "duet listen | head -1",
    );
    listen.expect("* listening on", T);
    // Not acknowledged: the listener leaves while showing it (it is in its history).
    let _ = Command::new(duet_bin())
        .args(ha.args(&[
            "send",
            "--to",
            "b",
            "--bind",
            &local(pa),
            "--timeout",
            "2",
            "one",
        ]))
        .output()
        .expect("run duet send");
    listen.expect("duet exited 0", T);
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
    assert!(
        !listen.seen.iter().any(|l| l.contains("panicked")),
        "{:?}",
        listen.seen
    );
}
