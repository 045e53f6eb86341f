//! Files between two real duets: byte for byte through a relay that drops, duplicates and
//! reorders; on again where they stopped after `kill -9` of either side; a hostile name
//! saved harmlessly; another file of the same name never overwritten; a size limit
//! refused with a clear word on both sides; a full disk that leaves a clean partial file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use duet_tests::relay::{Mischief, Relay};
use duet_tests::sim::Rng;
use duet_tests::{Home, Proc, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(60);

/// `len` bytes that are the same for the same seed and nothing like text.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    Rng::new(seed).fill(&mut bytes);
    bytes
}

/// A file named `name` holding `bytes`, in a directory of its own (removed with the Home).
fn file_in(home: &Home, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = home.path().join("outgoing");
    fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write the file to send");
    path
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The length of the partial file in `dir`, if there is one.
fn partial_len(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".duet-part"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

/// Wait (bounded, polling) until `done` holds; panic with `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `duet send --file` from `home` to its peer `b`, through `bind`.
fn send_file(home: &Home, bind: u16, path: &Path, timeout: &str) -> Proc {
    let path = path.to_str().expect("UTF-8 path");
    home.duet(&[
        "send",
        "--to",
        "b",
        "--bind",
        &local(bind),
        "--timeout",
        timeout,
        "--file",
        path,
    ])
}

/// A receiving `duet chat a` in line mode (it prints where a file resumes), saving in
/// `save`.
fn receiver(home: &Home, port: u16, save: &Path, extra: &[&str]) -> Proc {
    let save = save.to_str().expect("UTF-8 path");
    let bind = local(port);
    let mut args = vec!["chat", "a", "--bind", &bind, "--save-dir", save];
    args.extend_from_slice(extra);
    let mut p = home.duet(&args);
    p.expect("* listening on", T);
    p
}

/// Two paired duets whose datagrams go through a relay with `mischief` (A sends, B
/// receives).
fn through_relay(mischief: Mischief, seed: u64) -> (Home, Home, u16, u16, Relay) {
    let (pa, pb) = (free_port(), free_port());
    let relay = Relay::start(
        local(pa).parse().expect("addr"),
        local(pb).parse().expect("addr"),
        mischief,
        seed,
    );
    let (ha, hb) = paired(
        Some(&relay.b_addr().to_string()),
        Some(&relay.a_addr().to_string()),
    );
    (ha, hb, pa, pb, relay)
}

fn history(home: &Home) -> String {
    let (code, out) = home.run(&["history", "--limit", "1000"]);
    assert_eq!(code, 0, "{out}");
    out
}

#[test]
fn a_file_crosses_a_lossy_relay_byte_for_byte() {
    let mischief = Mischief {
        drop: 30,
        duplicate: 10,
        reorder: 20,
        max_delay: Duration::from_millis(20),
        ..Mischief::default()
    };
    let (ha, hb, pa, pb, _relay) = through_relay(mischief, 0xf11e);
    let bytes = content(600 * 1024 + 123, 1);
    let path = file_in(&ha, "photo.jpg", &bytes);
    let save = hb.path().join("saved");
    let save_arg = save.to_str().expect("UTF-8");
    let mut listen = hb.duet(&[
        "listen",
        "--bind",
        &local(pb),
        "--count",
        "1",
        "--save-dir",
        save_arg,
    ]);
    listen.expect("* listening on", T);
    let mut send = send_file(&ha, pa, &path, "30");
    let status = send.wait(Duration::from_secs(240));
    assert!(status.success(), "send --file failed: {:?}", send.seen);
    send.expect("* file photo.jpg (614523 bytes) saved by the peer", T);
    let line = listen.expect(": file photo.jpg (614523 bytes) saved to ", T);
    assert!(
        line.contains(&save.join("photo.jpg").display().to_string()),
        "{line}"
    );
    assert!(listen.wait(T).success(), "{:?}", listen.seen);
    assert_eq!(fs::read(save.join("photo.jpg")).expect("saved"), bytes);
    // Nothing half-done is left beside it.
    assert_eq!(names_in(&save), ["photo.jpg"]);
    // Both histories say so, once.
    let got = history(&hb);
    assert_eq!(
        got.matches("file photo.jpg (614523 bytes) saved to")
            .count(),
        1,
        "{got}"
    );
    let sent = history(&ha);
    assert!(
        sent.contains("file photo.jpg (614523 bytes) sent [delivered]"),
        "{sent}"
    );
}

#[test]
fn a_sender_killed_midway_goes_on_where_it_stopped() {
    let (ha, hb, pa, pb, relay) = through_relay(Mischief::default(), 7);
    let bytes = content(4 << 20, 2);
    let path = file_in(&ha, "big.bin", &bytes);
    let save = hb.path().join("saved");
    let mut b = receiver(&hb, pb, &save, &[]);
    // The receiver's acknowledgements stop a little way in: the sender stalls there.
    relay.mute_b_after(25);
    let mut send = send_file(&ha, pa, &path, "30");
    b.expect("* receiving file big.bin (4194304 bytes) from a", T);
    wait_until("the relay muting the receiver", T, || relay.b_muted());
    wait_until("bytes in the partial file", T, || {
        partial_len(&save).is_some_and(|n| n > 0)
    });
    send.kill();
    let kept = partial_len(&save).expect("a partial file");
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");
    relay.mute_b(false);
    // The same command again: it continues after what the receiver kept.
    let mut again = send_file(&ha, pa, &path, "30");
    let status = again.wait(T);
    assert!(status.success(), "{:?}", again.seen);
    let line = again.expect("continuing after the ", T);
    let from: u64 = line
        .split("continuing after the ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {line:?}"));
    assert!(
        from >= kept,
        "resumed at {from}, below the {kept} bytes kept"
    );
    b.expect(": file big.bin (4194304 bytes) saved to ", T);
    assert_eq!(fs::read(save.join("big.bin")).expect("saved"), bytes);
    assert_eq!(
        names_in(&save),
        ["big.bin"],
        "exactly one copy, no partial file"
    );
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

#[test]
fn a_receiver_killed_midway_goes_on_where_it_stopped() {
    let (ha, hb, pa, pb, relay) = through_relay(Mischief::default(), 8);
    let bytes = content(4 << 20, 3);
    let path = file_in(&ha, "big.bin", &bytes);
    let save = hb.path().join("saved");
    let mut b = receiver(&hb, pb, &save, &[]);
    relay.mute_b_after(25);
    let mut send = send_file(&ha, pa, &path, "60");
    b.expect("* receiving file big.bin", T);
    wait_until("the relay muting the receiver", T, || relay.b_muted());
    wait_until("bytes in the partial file", T, || {
        partial_len(&save).is_some_and(|n| n > 0)
    });
    b.kill();
    let kept = partial_len(&save).expect("a partial file");
    relay.mute_b(false);
    // A new receiver: the sender, still running, hears of a transfer it does not know,
    // offers the file again, and sends what is missing.
    let mut b = receiver(&hb, pb, &save, &[]);
    b.expect(
        &format!("continuing after the {kept} bytes already here"),
        T,
    );
    assert!(send.wait(T).success(), "{:?}", send.seen);
    b.expect(": file big.bin (4194304 bytes) saved to ", T);
    assert_eq!(fs::read(save.join("big.bin")).expect("saved"), bytes);
    assert_eq!(names_in(&save), ["big.bin"]);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

#[test]
fn a_hostile_name_is_saved_harmlessly_and_another_file_is_never_overwritten() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let save = hb.path().join("saved");
    fs::create_dir_all(&save).expect("mkdir");
    fs::write(save.join("report.txt"), b"mine, not yours").expect("write");
    let mut b = receiver(&hb, pb, &save, &[]);
    // A leading dot (hidden), a right-to-left override that would show "exe.txt" as
    // "txt.exe", a newline that would forge a second output line.
    let hostile = ".\u{202e}txt.exe\nfake: line";
    let cases = [
        (hostile, content(1000, 4), "_txt.exe_fake_ line"),
        ("nul.txt", content(10, 5), "_nul.txt"),
        ("report.txt", content(3000, 6), "report (1).txt"),
    ];
    for (name, bytes, saved) in &cases {
        let path = file_in(&ha, name, bytes);
        let mut send = send_file(&ha, pa, &path, "20");
        assert!(send.wait(T).success(), "{name:?}: {:?}", send.seen);
        b.expect(&format!(" saved to {}", save.join(saved).display()), T);
        assert_eq!(
            &fs::read(save.join(saved)).expect("saved"),
            bytes,
            "{saved}"
        );
    }
    // The file that was there is untouched; the same file sent again is kept once.
    assert_eq!(
        fs::read(save.join("report.txt")).expect("mine"),
        b"mine, not yours"
    );
    let path = file_in(&ha, "report.txt", &cases[2].1);
    let mut send = send_file(&ha, pa, &path, "20");
    assert!(send.wait(T).success(), "{:?}", send.seen);
    send.expect("was saved by the peer already", T);
    b.expect("report (1).txt (already there)", T);
    assert_eq!(
        names_in(&save),
        [
            "_nul.txt",
            "_txt.exe_fake_ line",
            "report (1).txt",
            "report.txt"
        ]
    );
    // Nothing a name said reached the screen unescaped.
    assert!(
        !b.seen
            .iter()
            .any(|l| l.contains('\u{202e}') || l.starts_with("fake")),
        "{:?}",
        b.seen
    );
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

#[test]
fn a_file_over_the_limit_is_refused_with_a_clear_word_on_both_sides() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let save = hb.path().join("saved");
    let mut b = receiver(&hb, pb, &save, &["--max-file-size", "1K"]);
    let path = file_in(&ha, "too big.bin", &content(4096, 7));
    let mut send = send_file(&ha, pa, &path, "20");
    let status = send.wait(T);
    assert_eq!(status.code(), Some(14), "{:?}", send.seen);
    send.expect(
        "more than the 1024 bytes the peer accepts (its --max-file-size)",
        T,
    );
    b.expect(
        "* file too big.bin from the peer NOT saved: refused: 4096 bytes is more than the 1024 bytes this duet accepts (--max-file-size)",
        T,
    );
    assert!(names_in(&save).is_empty(), "{:?}", names_in(&save));
    // Within the limit, the next one goes through.
    let path = file_in(&ha, "small.bin", &content(1000, 8));
    let mut send = send_file(&ha, pa, &path, "20");
    assert!(send.wait(T).success(), "{:?}", send.seen);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

/// Run `script` with `sh` in the mount namespace of process `pid` (nsenter).
fn in_namespace_of(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .output()
        .expect("run nsenter")
}

#[test]
fn a_full_disk_stops_the_transfer_with_a_clear_word_and_a_clean_partial_file() {
    // A small file system the receiver saves to: a tmpfs in a mount namespace of its own,
    // which needs root.
    if duet_tests::netns::skip_unless_root(
        "a_full_disk_stops_the_transfer_with_a_clear_word_and_a_clean_partial_file",
    ) {
        return;
    }
    duet_tests::peers::require_tool("unshare", "util-linux");
    duet_tests::peers::require_tool("nsenter", "util-linux");
    let (ha, hb, pa, pb, relay) = through_relay(Mischief::default(), 9);
    let mount = hb.path().join("small");
    fs::create_dir_all(&mount).expect("mkdir");
    let m = mount.to_str().expect("UTF-8").to_owned();
    let config = hb.path().to_str().expect("UTF-8").to_owned();
    let bind = local(pb);
    let script = r#"mount -t tmpfs -o size=8m,mode=700 duet-test "$1" || exit 99
        exec "$0" --config-dir "$2" chat a --bind "$3" --save-dir "$1/in""#;
    let mut b = Proc::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .arg(duet_bin())
            .args([&m, &config, &bind]),
        "duet chat in a mount namespace",
    );
    b.expect("* listening on", T);
    let bytes = content(4 << 20, 10);
    let path = file_in(&ha, "big.bin", &bytes);
    relay.mute_b_after(25);
    let mut send = send_file(&ha, pa, &path, "30");
    b.expect("* receiving file big.bin", T);
    wait_until("the relay muting the receiver", T, || relay.b_muted());
    // Fill the file system while the sender waits, then let it go on.
    let filled = in_namespace_of(b.id(), &format!("cat /dev/zero > {m}/filler; true"));
    assert!(filled.status.success(), "{filled:?}");
    relay.mute_b(false);
    let status = send.wait(T);
    assert_eq!(status.code(), Some(14), "{:?}", send.seen);
    send.expect("the peer's disk has only", T);
    let line = b.expect(
        "* file big.bin from the peer NOT saved: cannot save it: the disk is full",
        T,
    );
    assert!(line.contains("keeps the first "), "{line}");
    let kept: u64 = line
        .split("keeps the first ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    // The partial file is exactly what it says it keeps, and a prefix of the file.
    let part = in_namespace_of(b.id(), &format!("cat {m}/in/.big.bin.*.duet-part"));
    assert_eq!(
        part.stdout.len() as u64,
        kept,
        "{:?}",
        String::from_utf8_lossy(&part.stderr)
    );
    assert_eq!(part.stdout[..], bytes[..kept as usize]);
    // Room again: the same command goes on from there and finishes.
    let freed = in_namespace_of(b.id(), &format!("rm {m}/filler"));
    assert!(freed.status.success(), "{freed:?}");
    let mut again = send_file(&ha, pa, &path, "30");
    assert!(again.wait(T).success(), "{:?}", again.seen);
    again.expect(&format!("continuing after the {kept} bytes"), T);
    b.expect(": file big.bin (4194304 bytes) saved to ", T);
    let saved = in_namespace_of(b.id(), &format!("cat {m}/in/big.bin; ls -A {m}/in >&2"));
    assert!(saved.stdout == bytes, "the saved file differs");
    assert_eq!(String::from_utf8_lossy(&saved.stderr).trim(), "big.bin");
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

#[test]
fn a_line_typed_while_a_file_goes_out_does_not_wait_for_the_file() {
    // The file fills the session as fast as the peer takes it; the line typed meanwhile
    // still takes its turn (a file leaves room for one typed message).
    let (ha, hb, pa, pb, _relay) = through_relay(Mischief::default(), 11);
    let save = hb.path().join("saved");
    let mut b = receiver(&hb, pb, &save, &[]);
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    let bytes = content(4 << 20, 12);
    let path = file_in(&ha, "slow.bin", &bytes);
    a.type_line(&format!("/file {}", path.display()));
    b.expect("* receiving file slow.bin", T);
    a.type_line("typed while the file goes");
    b.expect(": typed while the file goes", T);
    b.expect(
        ": file slow.bin (4194304 bytes) saved to ",
        Duration::from_secs(180),
    );
    let order: Vec<usize> = [
        "typed while the file goes",
        "file slow.bin (4194304 bytes) saved",
    ]
    .iter()
    .map(|needle| {
        b.seen
            .iter()
            .position(|l| l.contains(needle))
            .expect("seen")
    })
    .collect();
    assert!(
        order[0] < order[1],
        "the line waited for the file: {:?}",
        b.seen
    );
    assert_eq!(fs::read(save.join("slow.bin")).expect("saved"), bytes);
    a.expect("* file slow.bin (4194304 bytes) saved by the peer", T);
    a.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}

#[test]
fn a_file_sent_next_to_an_open_chat_goes_through_it_and_the_chat_goes_on() {
    // A second session with the peer would cut the open chat off: `send --file` hands the
    // file to it, and reports what became of it.
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let save = hb.path().join("saved");
    let mut b = receiver(&hb, pb, &save, &[]);
    let mut a = ha.duet(&["chat", "b", "--bind", &local(pa)]);
    a.expect("* listening on", T);
    a.type_line("before");
    b.expect(": before", T);
    a.expect("delivered: before", T);
    let bytes = content(300_000, 21);
    let path = file_in(&ha, "handed.bin", &bytes);
    // Named relative to where it is run: the running chat is told the whole path.
    let out = Command::new(duet_bin())
        .args(ha.args(&["send", "--to", "b", "--file", "handed.bin"]))
        .current_dir(path.parent().expect("a directory"))
        .output()
        .expect("cannot run duet");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("handed to the duet already running here")
            && text.contains("file handed.bin (300000 bytes) saved by the peer"),
        "{text}"
    );
    b.expect(": file handed.bin (300000 bytes) saved to ", T);
    assert_eq!(fs::read(save.join("handed.bin")).expect("saved"), bytes);
    // Both chats go on, in the same session.
    a.type_line("after");
    b.expect(": after", T);
    a.expect("delivered: after", T);
    b.type_line("back");
    a.expect(": back", T);
    assert!(
        !a.seen
            .iter()
            .chain(&b.seen)
            .any(|l| l.contains("not answering")),
        "{:?}\n{:?}",
        a.seen,
        b.seen
    );
    // A file that is not there is said so, and nothing is handed over.
    let out = Command::new(duet_bin())
        .args(ha.args(&["send", "--to", "b", "--file", "/nonexistent/x.bin"]))
        .output()
        .expect("cannot run duet");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot send /nonexistent/x.bin"), "{said}");
    a.close_stdin();
    assert!(a.wait(T).success(), "{:?}", a.seen);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
}
