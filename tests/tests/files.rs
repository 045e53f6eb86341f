//! The config directory through the real `duet` binary: everything duet writes there is its
//! user's alone, whatever the umask it inherits, and a damaged or unusable file is named
//! with what to do about it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use duet_tests::{Home, Proc, duet_bin, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

/// `duet --config-dir HOME ARGS...` under the umask most shells give, 022, which lets
/// everyone read what a program creates with the usual mode 0644.
fn under_umask_022(home: &Home, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(duet_bin())
        .args(home.args(args));
    command
}

/// Every entry of `dir` and below with a mode that lets the group or others in: files
/// must be 0600, directories 0700, and the hand-off socket of a running duet private to
/// its owner (0700: a socket is created with execute bits, and only its owner connects).
fn not_private(dir: &Path, found: &mut Vec<String>) {
    let mode = fs::metadata(dir).expect("config dir").permissions().mode() & 0o7777;
    if mode != 0o700 {
        found.push(format!("{}/ {mode:04o}", dir.display()));
    }
    for entry in fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("dir entry").path();
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            not_private(&path, found);
        } else if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            if meta.permissions().mode() & 0o077 != 0 {
                found.push(format!(
                    "{} {:04o}",
                    path.display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
        } else if meta.permissions().mode() & 0o7777 != 0o600 {
            found.push(format!(
                "{} {:04o}",
                path.display(),
                meta.permissions().mode() & 0o7777
            ));
        }
    }
}

fn assert_private(home: &Home) {
    let mut found = Vec::new();
    not_private(home.path(), &mut found);
    assert!(found.is_empty(), "readable by others: {found:?}");
}

#[test]
fn every_file_in_the_config_dir_is_private_after_a_send_and_a_chat() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = paired(Some(&local(pa)), Some(&local(pb)));
    let mut b = Proc::spawn(
        &mut under_umask_022(&hb, &["chat", "--bind", &local(pb)]),
        "duet chat (b)",
    );
    b.expect("* listening on", T);
    let sent = under_umask_022(
        &ha,
        &["send", "--to", "b", "--bind", &local(pa), "a secret"],
    )
    .output()
    .expect("run duet send");
    assert!(sent.status.success(), "{sent:?}");
    b.expect("a secret", T);
    // The chat still has its history open: SQLite's -wal and -shm are there, and hold the
    // message.
    assert!(
        hb.path().join("history.sqlite3-wal").exists(),
        "no -wal to check"
    );
    assert_private(&hb);
    assert_private(&ha);
    b.close_stdin();
    assert!(b.wait(T).success(), "{:?}", b.seen);
    assert_private(&hb);
}

/// `duet --config-dir HOME ARGS...` to completion: exit code, stdout, stderr.
fn run(home: &Home, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(duet_bin())
        .args(home.args(args))
        .output()
        .expect("run duet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_emptied_history_is_refused_naming_the_file_and_what_to_do() {
    let home = Home::new("empty");
    // No history yet: a new one, sound.
    let (code, out, err) = run(&home, &["history", "--check"]);
    assert_eq!((code, out.trim()), (0, "integrity: ok"), "{err}");
    // Truncated to nothing (a full disk, a bad copy): not "ok", and not a new history
    // silently written over it.
    let path = home.path().join("history.sqlite3");
    fs::File::create(&path).expect("truncate");
    for args in [&["history", "--check"][..], &["history"]] {
        let (code, out, err) = run(&home, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(!out.contains("integrity: ok"), "{args:?}: {out}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("is empty (0 bytes)"), "{err}");
        assert!(err.contains("history.sqlite3.damaged"), "{err}");
    }
    assert_eq!(fs::metadata(&path).expect("history").len(), 0);
}

#[test]
fn an_identity_that_is_a_directory_is_not_taken_for_a_mode_problem() {
    let home = Home::new("iddir");
    fs::create_dir_all(home.path().join("identity")).expect("mkdir");
    let (code, out, err) = run(&home, &["id"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("chmod"), "{err}");
}

#[test]
fn a_read_only_or_full_file_system_is_named_with_what_to_do() {
    // Root ignores permissions, so the history is made unwritable the way that stops root
    // too: a small tmpfs of its own (in a mount namespace of its own, which needs root),
    // remounted read-only, then filled.
    if duet_tests::netns::skip_unless_root(
        "a_read_only_or_full_file_system_is_named_with_what_to_do",
    ) {
        return;
    }
    duet_tests::peers::require_tool("unshare", "util-linux");
    let mount = Home::new("mount");
    fs::create_dir_all(mount.path()).expect("mkdir");
    let script = r#"
        set -u
        duet=$0; m=$1; c=$m/config
        mount -t tmpfs -o size=256k,mode=700 duet-test "$m" || exit 99
        "$duet" --config-dir "$c" history --check >/dev/null || exit 98
        mount -o remount,ro "$m" || exit 99
        "$duet" --config-dir "$c" history; echo "read-only exited $?" >&2
        mount -o remount,rw "$m" || exit 99
        rm "$c/history.sqlite3"
        cat /dev/zero >"$m/filler" 2>/dev/null
        "$duet" --config-dir "$c" history; echo "full exited $?" >&2
        exit 0
    "#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(duet_bin())
        .arg(mount.path())
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let config = mount.path().join("config").display().to_string();
    let read_only = err
        .lines()
        .find(|l| l.contains("read-only file system"))
        .unwrap_or_else(|| panic!("no read-only message: {err}"));
    assert!(read_only.contains(&config), "{err}");
    assert!(read_only.contains("--config-dir"), "{err}");
    assert!(err.contains("read-only exited 1"), "{err}");
    let full = err
        .lines()
        .find(|l| l.contains("the disk is full: free space on"))
        .unwrap_or_else(|| panic!("no disk-full message: {err}"));
    assert!(full.contains(&config), "{err}");
    assert!(err.contains("full exited 1"), "{err}");
}
