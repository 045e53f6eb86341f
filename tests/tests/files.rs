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
/// must be 0600, directories 0700.
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
