//! Identity and pairing through the real `duet` binary: the key file's creation and
//! permissions, `duet id`, `duet pair add/list/remove`, and `duet pair invite`/`join` over
//! loopback with the right and a wrong code. Every test has its own config directories.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use duet_tests::{Proc, duet_bin, free_port, local};

const T: Duration = Duration::from_secs(20);

/// Exit codes of the README's table.
const EXIT_USAGE: i32 = 2;
const EXIT_BAD_ADDRESS: i32 = 3;
const EXIT_INSECURE_KEY_FILE: i32 = 10;
const EXIT_PAIRING_FAILED: i32 = 11;

/// A fresh directory under the system's temp dir, removed when dropped (even when the test
/// fails), so no test sees another's keys.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "duet-pairing-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("cannot create a temp dir");
        TempDir(dir)
    }

    /// A config directory inside (duet creates it).
    fn config(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a finished `duet` printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `duet ARGS --config-dir DIR` (the option after the subcommand, where it is global).
fn duet(dir: &str, args: &[&str]) -> Run {
    let out = Command::new(duet_bin())
        .args(args)
        .args(["--config-dir", dir])
        .env_remove("DUET_CONFIG_DIR")
        .output()
        .expect("cannot run duet");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `duet id` in `dir`: the public key and the fingerprint line.
fn id(dir: &str) -> (String, String) {
    let run = duet(dir, &["id"]);
    assert_eq!(run.code, 0, "duet id: {}", run.all());
    let mut lines = run.stdout.lines();
    let key = lines.next().expect("no key line").to_owned();
    let fingerprint = lines.next().expect("no fingerprint line").to_owned();
    assert_eq!(lines.next(), None, "more than two lines: {}", run.stdout);
    (key, fingerprint)
}

/// The secret as stored: base64 without the newline.
fn secret_of(dir: &str) -> String {
    let text = fs::read_to_string(Path::new(dir).join("identity")).expect("no identity file");
    text.trim_end().to_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file missing")
        .permissions()
        .mode()
        & 0o777
}

fn is_base64_key(text: &str) -> bool {
    text.len() == 44
        && text.ends_with('=')
        && text[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn is_fingerprint(text: &str) -> bool {
    let groups: Vec<&str> = text.split(' ').collect();
    groups.len() == 5
        && groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Start `duet pair invite NAME` and return it with its code.
fn invite(dir: &str, name: &str, port: u16) -> (Proc, String) {
    let mut inviter = Proc::duet(&[
        "pair",
        "invite",
        name,
        "--bind",
        &local(port),
        "--timeout",
        "20",
        "--config-dir",
        dir,
    ]);
    let line = inviter.expect("code: ", T);
    assert!(line.contains(&local(port)), "no address in {line:?}");
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("no code after 'code: '")
        .to_owned();
    assert!(
        code.len() == 9
            && code.as_bytes()[4] == b'-'
            && code.bytes().filter(u8::is_ascii_digit).count() == 8,
        "code {code:?} is not NNNN-NNNN"
    );
    (inviter, code)
}

fn join(dir: &str, name: &str, code: &str, inviter_port: u16) -> Run {
    duet(
        dir,
        &[
            "pair",
            "join",
            name,
            code,
            "--addr",
            &local(inviter_port),
            "--bind",
            &local(free_port()),
            "--timeout",
            "20",
        ],
    )
}

#[test]
fn id_creates_a_private_key_file_and_prints_the_public_key() {
    let tmp = TempDir::new("id");
    let dir = tmp.config("me");
    let (key, fingerprint) = id(&dir);
    assert!(is_base64_key(&key), "first line is not a key: {key:?}");
    let fp = fingerprint
        .strip_prefix("fingerprint: ")
        .unwrap_or_else(|| panic!("second line: {fingerprint:?}"));
    assert!(is_fingerprint(fp), "{fp:?}");
    assert_eq!(mode(&Path::new(&dir).join("identity")), 0o600);
    assert_eq!(mode(Path::new(&dir)), 0o700);
    assert_ne!(secret_of(&dir), key, "the public key is the secret");
    // The same identity the second time, and another one elsewhere.
    assert_eq!(id(&dir), (key.clone(), fingerprint));
    assert_ne!(id(&tmp.config("other")).0, key);
}

#[test]
fn the_config_dir_defaults_to_xdg_config_home_then_home() {
    let tmp = TempDir::new("default");
    let xdg = tmp.0.join("xdg");
    let home = tmp.0.join("home");
    let run = |env: &[(&str, &Path)]| {
        let mut command = Command::new(duet_bin());
        command
            .arg("id")
            .env_remove("DUET_CONFIG_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", &home);
        for (name, value) in env {
            command.env(name, value);
        }
        let out = command.output().expect("cannot run duet");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[("XDG_CONFIG_HOME", &xdg)]);
    assert_eq!(mode(&xdg.join("duet").join("identity")), 0o600);
    assert!(!home.join(".config").exists());
    run(&[]);
    assert_eq!(mode(&home.join(".config").join("duet")), 0o700);
    assert_eq!(
        mode(&home.join(".config").join("duet").join("identity")),
        0o600
    );
    // The environment variable names the directory too.
    let named = tmp.0.join("named");
    run(&[("DUET_CONFIG_DIR", &named)]);
    assert!(named.join("identity").exists());
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let tmp = TempDir::new("mode");
    let dir = tmp.config("me");
    id(&dir);
    let secret = secret_of(&dir);
    let path = Path::new(&dir).join("identity");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    for args in [
        &["id"][..],
        &["pair", "add", "bob", &id(&tmp.config("bob")).0],
    ] {
        let run = duet(&dir, args);
        assert_eq!(run.code, EXIT_INSECURE_KEY_FILE, "{args:?}: {}", run.all());
        let expected = format!(
            "{p} is readable by others (mode 0644); run: chmod 600 {p}",
            p = path.display()
        );
        assert!(run.stderr.contains(&expected), "{args:?}: {}", run.all());
        assert!(!run.all().contains(&secret), "the secret was printed");
        assert_eq!(run.stdout, "", "{args:?} printed: {}", run.stdout);
    }
    // The file was left alone, and the advice works.
    assert_eq!(secret_of(&dir), secret);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(duet(&dir, &["id"]).code, 0);
}

#[test]
fn pair_add_list_remove() {
    let tmp = TempDir::new("add");
    let dir = tmp.config("me");
    let (bob, bob_fp) = id(&tmp.config("bob"));
    let (carol, carol_fp) = id(&tmp.config("carol"));
    let (mine, _) = id(&dir);
    let bob_fp = bob_fp.trim_start_matches("fingerprint: ");
    let carol_fp = carol_fp.trim_start_matches("fingerprint: ");

    let run = duet(&dir, &["pair", "list"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.all());

    let run = duet(
        &dir,
        &["pair", "add", "bob", &bob, "--addr", "127.0.0.1:7001"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(bob_fp), "{}", run.stdout);
    let run = duet(&dir, &["pair", "add", "carol", &carol]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(mode(&Path::new(&dir).join("peers")), 0o600);

    let run = duet(&dir, &["pair", "list"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let bob_line: Vec<&str> = ["bob", &bob]
        .into_iter()
        .chain(bob_fp.split(' '))
        .chain(["127.0.0.1:7001"])
        .collect();
    let carol_line: Vec<&str> = ["carol", &carol]
        .into_iter()
        .chain(carol_fp.split(' '))
        .chain(["-"])
        .collect();
    assert_eq!(lines, [bob_line, carol_line.clone()], "{}", run.stdout);

    // Refusals, each with its reason, each changing nothing.
    let before = fs::read_to_string(Path::new(&dir).join("peers")).expect("peers file");
    let long_name = "n".repeat(33);
    let bad_alphabet = bob.replace('=', "!");
    let refused = [
        (vec!["pair", "add", "bob", &carol], 1, "already exists"),
        (
            vec!["pair", "add", "bobby", &bob],
            1,
            "already paired, as 'bob'",
        ),
        (vec!["pair", "add", "me", &mine], 1, "your own key"),
        (
            vec!["pair", "add", "a:b", &bob],
            EXIT_USAGE,
            "bad peer name",
        ),
        (
            vec!["pair", "add", "two words", &bob],
            EXIT_USAGE,
            "bad peer name",
        ),
        (
            vec!["pair", "add", &long_name, &bob],
            EXIT_USAGE,
            "bad peer name",
        ),
        (
            vec!["pair", "add", "dave", "AAAA"],
            EXIT_USAGE,
            "44 characters",
        ),
        (
            vec!["pair", "add", "dave", &bob[1..]],
            EXIT_USAGE,
            "not a public key",
        ),
        (
            vec!["pair", "add", "dave", &bad_alphabet],
            EXIT_USAGE,
            "not a public key",
        ),
        (
            vec!["pair", "add", "dave", &carol, "--addr", "nowhere"],
            3,
            "bad address",
        ),
        (
            vec!["pair", "remove", "nobody"],
            1,
            "no peer named 'nobody'",
        ),
    ];
    for (args, code, reason) in refused {
        let run = duet(&dir, &args);
        assert_eq!(run.code, code, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(reason), "{args:?}: {}", run.stderr);
    }
    let after = fs::read_to_string(Path::new(&dir).join("peers")).expect("peers file");
    assert_eq!(before, after, "a refused command changed the peers file");

    let run = duet(&dir, &["pair", "remove", "bob"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let run = duet(&dir, &["pair", "list"]);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines, [carol_line], "{}", run.stdout);
    // Bob's name and key are free again.
    assert_eq!(duet(&dir, &["pair", "add", "bob", &bob]).code, 0);
}

#[test]
fn parallel_pair_adds_on_one_config_dir_keep_every_peer() {
    const N: usize = 8;
    let tmp = TempDir::new("parallel");
    let dir = tmp.config("me");
    id(&dir);
    let keys: Vec<String> = (0..N)
        .map(|i| id(&tmp.config(&format!("p{i}"))).0)
        .collect();
    // Started together, so their load-change-save cycles overlap.
    let adds: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            Command::new(duet_bin())
                .args(["pair", "add", &format!("p{i}"), key, "--config-dir", &dir])
                .env_remove("DUET_CONFIG_DIR")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run duet")
        })
        .collect();
    for (i, add) in adds.into_iter().enumerate() {
        let add = add.wait_with_output().expect("cannot wait for duet");
        assert!(add.status.success(), "add p{i}: {add:?}");
    }
    let run = duet(&dir, &["pair", "list"]);
    let mut names: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
    assert_eq!(names, expected, "{}", run.all());
}

#[test]
fn pair_add_again_and_set_addr_change_only_the_address() {
    let tmp = TempDir::new("addr");
    let dir = tmp.config("me");
    let (bob, _) = id(&tmp.config("bob"));
    let (carol, _) = id(&tmp.config("carol"));
    let addr_of = |name: &str| -> String {
        let run = duet(&dir, &["pair", "list"]);
        assert_eq!(run.code, 0, "{}", run.all());
        let line = run
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {}", run.stdout))
            .to_owned();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], bob, "the key changed: {line}");
        fields[7].to_owned()
    };
    assert_eq!(duet(&dir, &["pair", "add", "bob", &bob]).code, 0);
    assert_eq!(addr_of("bob"), "-");

    // The same name and key again, with an address: the address is set, nothing else.
    let run = duet(
        &dir,
        &["pair", "add", "bob", &bob, "--addr", "127.0.0.1:7001"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("127.0.0.1:7001"), "{}", run.stdout);
    assert_eq!(addr_of("bob"), "127.0.0.1:7001");
    // Without one: nothing changes.
    let run = duet(&dir, &["pair", "add", "bob", &bob]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(addr_of("bob"), "127.0.0.1:7001");
    // Another key under that name is still refused.
    let run = duet(
        &dir,
        &["pair", "add", "bob", &carol, "--addr", "127.0.0.1:7003"],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(addr_of("bob"), "127.0.0.1:7001");

    let run = duet(&dir, &["pair", "set-addr", "bob", "127.0.0.1:7002"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(addr_of("bob"), "127.0.0.1:7002");
    let run = duet(&dir, &["pair", "set-addr", "bob", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(addr_of("bob"), "-");
    let run = duet(&dir, &["pair", "set-addr", "nobody", "127.0.0.1:7002"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("no peer named 'nobody'"),
        "{}",
        run.all()
    );
    let run = duet(&dir, &["pair", "set-addr", "bob", "nowhere"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert_eq!(addr_of("bob"), "-");
}

#[test]
fn invite_and_join_with_the_right_code_pair_both_sides() {
    let tmp = TempDir::new("right");
    let (alice_dir, bob_dir) = (tmp.config("alice"), tmp.config("bob"));
    let (alice_key, alice_fp) = id(&alice_dir);
    let (bob_key, bob_fp) = id(&bob_dir);
    let port = free_port();
    // Alice invites and will call the joiner "bob"; Bob joins and calls her "alice".
    let (mut inviter, code) = invite(&alice_dir, "bob", port);
    let joiner = join(&bob_dir, "alice", &code, port);
    assert_eq!(joiner.code, 0, "joiner: {}", joiner.all());
    let alice_fp = alice_fp.trim_start_matches("fingerprint: ");
    let bob_fp = bob_fp.trim_start_matches("fingerprint: ");
    assert!(
        joiner
            .stdout
            .contains(&format!("paired with alice (fingerprint {alice_fp})")),
        "{}",
        joiner.all()
    );
    inviter.expect(&format!("paired with bob (fingerprint {bob_fp})"), T);
    let status = inviter.wait(T);
    assert!(status.success(), "inviter: {:?}", inviter.seen);

    let peers_of = |dir: &str| -> Vec<Vec<String>> {
        let run = duet(dir, &["pair", "list"]);
        assert_eq!(run.code, 0, "{}", run.all());
        run.stdout
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let alices = peers_of(&alice_dir);
    assert_eq!(alices.len(), 1, "{alices:?}");
    assert_eq!(alices[0][..2], ["bob".to_string(), bob_key], "{alices:?}");
    // The inviter keeps no address for the joiner: the join came from a port `pair join`
    // opened for the exchange only, where nothing listens afterwards.
    assert_eq!(alices[0][7], "-", "{alices:?}");
    let bobs = peers_of(&bob_dir);
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(
        bobs[0][..2],
        ["alice".to_string(), alice_key.clone()],
        "{bobs:?}"
    );
    assert_eq!(bobs[0][7], local(port), "the joiner keeps --addr");
    // The peers file itself says the same, for the chat to read.
    let file = fs::read_to_string(Path::new(&bob_dir).join("peers")).expect("peers file");
    assert!(
        file.lines()
            .any(|l| l == format!("alice {alice_key} {}", local(port))),
        "{file}"
    );
}

/// A relay between a joiner and an inviter that loses chosen datagrams: the first
/// joiner → inviter datagram (HELLO), the first inviter → joiner one (REPLY) and the first
/// 36-byte one (DONE). Returns the relay's address, a stop flag and the thread, which
/// ends with the datagrams it saw each way and whether it lost a DONE.
fn lossy_relay(
    inviter: SocketAddr,
) -> (
    SocketAddr,
    Arc<AtomicBool>,
    thread::JoinHandle<(u32, u32, bool)>,
) {
    let front = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
    let back = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
    let addr = front.local_addr().expect("relay address");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = thread::spawn(move || {
        let tick = Some(Duration::from_millis(10));
        front.set_read_timeout(tick).expect("timeout");
        back.set_read_timeout(tick).expect("timeout");
        let deadline = Instant::now() + T;
        let (mut joiner, mut forward, mut backward, mut done_lost) = (None, 0, 0, false);
        let mut buf = [0u8; 2048];
        while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((len, from)) = front.recv_from(&mut buf) {
                joiner = Some(from);
                forward += 1;
                if forward > 1 {
                    let _ = back.send_to(&buf[..len], inviter);
                }
            }
            if let (Ok((len, _)), Some(joiner)) = (back.recv_from(&mut buf), joiner) {
                backward += 1;
                let lose_done = len == 36 && !done_lost;
                done_lost |= lose_done;
                if backward > 1 && !lose_done {
                    let _ = front.send_to(&buf[..len], joiner);
                }
            }
        }
        (forward, backward, done_lost)
    });
    (addr, stop, handle)
}

#[test]
fn lost_datagrams_are_resent_and_the_pairing_completes() {
    let tmp = TempDir::new("lossy");
    let (alice_dir, bob_dir) = (tmp.config("alice"), tmp.config("bob"));
    let (alice_key, _) = id(&alice_dir);
    let (bob_key, _) = id(&bob_dir);
    let port = free_port();
    let (mut inviter, code) = invite(&alice_dir, "bob", port);
    let inviter_addr: SocketAddr = local(port).parse().expect("address");
    let (relay, stop, relay_thread) = lossy_relay(inviter_addr);
    let joiner = duet(
        &bob_dir,
        &[
            "pair",
            "join",
            "alice",
            &code,
            "--addr",
            &relay.to_string(),
            "--timeout",
            "20",
        ],
    );
    assert_eq!(joiner.code, 0, "joiner: {}", joiner.all());
    inviter.expect("paired with bob", T);
    assert!(inviter.wait(T).success(), "inviter: {:?}", inviter.seen);
    stop.store(true, Ordering::Relaxed);
    let (forward, backward, done_lost) = relay_thread.join().expect("relay panicked");
    // HELLO twice (the first lost), CONFIRM twice (its DONE lost); REPLY twice, DONE twice.
    assert!(done_lost, "the relay never saw a DONE");
    assert!(forward >= 4 && backward >= 4, "{forward} / {backward}");
    let file = |dir: &str| fs::read_to_string(Path::new(dir).join("peers")).expect("peers");
    assert!(file(&alice_dir).contains(&format!("bob {bob_key}")));
    assert!(file(&bob_dir).contains(&format!("alice {alice_key} {relay}")));
}

#[test]
fn a_wrong_code_fails_cleanly_and_pairs_nothing() {
    let tmp = TempDir::new("wrong");
    let (alice_dir, bob_dir) = (tmp.config("alice"), tmp.config("bob"));
    let port = free_port();
    let (mut inviter, code) = invite(&alice_dir, "bob", port);
    // One digit off.
    let wrong: String = code
        .chars()
        .enumerate()
        .map(|(i, c)| match (i, c.to_digit(10)) {
            (8, Some(d)) => char::from_digit((d + 1) % 10, 10).unwrap_or('0'),
            _ => c,
        })
        .collect();
    assert_ne!(wrong, code);
    let joiner = join(&bob_dir, "alice", &wrong, port);
    let message = "pairing failed: the code did not match (nothing was saved)";
    assert_eq!(joiner.code, EXIT_PAIRING_FAILED, "joiner: {}", joiner.all());
    assert!(joiner.stderr.contains(message), "joiner: {}", joiner.all());
    inviter.expect(message, T);
    let status = inviter.wait(T);
    assert_eq!(
        status.code(),
        Some(EXIT_PAIRING_FAILED),
        "inviter: {:?}",
        inviter.seen
    );
    for dir in [&alice_dir, &bob_dir] {
        assert!(!Path::new(dir).join("peers").exists(), "{dir} saved a peer");
        let run = duet(dir, &["pair", "list"]);
        assert_eq!(run.stdout, "", "{dir}: {}", run.all());
    }
    // The code was spent on that one guess: the inviter is gone, the right code finds
    // nobody.
    let late = duet(
        &bob_dir,
        &[
            "pair",
            "join",
            "alice",
            &code,
            "--addr",
            &local(port),
            "--timeout",
            "1",
        ],
    );
    assert_ne!(late.code, 0, "{}", late.all());
    assert!(!Path::new(&bob_dir).join("peers").exists());
}

#[test]
fn the_secret_key_never_appears_in_any_output() {
    let tmp = TempDir::new("secret");
    let (alice_dir, bob_dir) = (tmp.config("alice"), tmp.config("bob"));
    let mut outputs: Vec<String> = Vec::new();
    let record = |outputs: &mut Vec<String>, run: Run| outputs.push(run.all());
    record(&mut outputs, duet(&alice_dir, &["id"]));
    record(&mut outputs, duet(&bob_dir, &["id"]));
    let secrets = [secret_of(&alice_dir), secret_of(&bob_dir)];
    let (bob_key, _) = id(&bob_dir);
    record(
        &mut outputs,
        duet(&alice_dir, &["pair", "add", "bob", &bob_key]),
    );
    record(&mut outputs, duet(&alice_dir, &["pair", "list"]));
    record(
        &mut outputs,
        duet(&alice_dir, &["pair", "add", "bob", &bob_key]),
    );
    record(&mut outputs, duet(&alice_dir, &["pair", "remove", "bob"]));
    // A pairing, and a failed one.
    let port = free_port();
    let (mut inviter, code) = invite(&alice_dir, "bob", port);
    record(&mut outputs, join(&bob_dir, "alice", &code, port));
    inviter.wait(T);
    outputs.extend(inviter.seen.iter().cloned());
    let port = free_port();
    let (mut inviter, _) = invite(&bob_dir, "carol", port);
    record(
        &mut outputs,
        join(&tmp.config("carol"), "bob", "0000-0000", port),
    );
    inviter.wait(T);
    outputs.extend(inviter.seen.iter().cloned());
    record(&mut outputs, duet(&alice_dir, &["pair", "list"]));
    record(&mut outputs, duet(&bob_dir, &["pair", "list"]));
    // And the refusal of an exposed key file.
    let path = Path::new(&alice_dir).join("identity");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).expect("chmod");
    record(&mut outputs, duet(&alice_dir, &["id"]));

    let all = outputs.join("\n");
    assert!(
        all.contains("paired with"),
        "the pairing did not run: {all}"
    );
    for secret in &secrets {
        assert_eq!(secret.len(), 44);
        // Not whole, and not its first half either.
        assert!(!all.contains(secret.as_str()), "a secret key was printed");
        assert!(
            !all.contains(&secret[..22]),
            "half a secret key was printed"
        );
    }
}

#[test]
fn a_join_without_addr_needs_the_dht_and_a_code_with_a_nameplate() {
    let tmp = TempDir::new("noaddr");
    let dir = tmp.config("bob");
    let join = |code: &str, dht: &str| {
        // A bootstrap node nobody serves: nothing may leave the machine even if the DHT
        // were started.
        let out = Command::new(duet_bin())
            .args(["pair", "join", "alice", code, "--timeout", "5"])
            .args(["--config-dir", &dir])
            .env_remove("DUET_CONFIG_DIR")
            .env("DUET_DHT", dht)
            .env("DUET_DHT_BOOTSTRAP", "127.0.0.1:9")
            .env("DUET_STUN", "")
            .output()
            .expect("cannot run duet");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let off = join("042-1234-5678", "off");
    assert_eq!(off.code, EXIT_BAD_ADDRESS, "{}", off.all());
    assert!(
        off.stderr.contains("the DHT, which is off") && off.stderr.contains("--addr"),
        "{}",
        off.all()
    );
    let old = join("1234-5678", "on");
    assert_eq!(old.code, EXIT_BAD_ADDRESS, "{}", old.all());
    assert!(
        old.stderr.contains("this code has no nameplate") && old.stderr.contains("--addr"),
        "{}",
        old.all()
    );
    let bad = join("42-1234-5678", "off");
    assert_eq!(bad.code, EXIT_USAGE, "{}", bad.all());
    assert!(bad.stderr.contains("not a pairing code"), "{}", bad.all());
    assert!(!Path::new(&dir).join("peers").exists(), "a peer was saved");
}

#[test]
fn a_code_with_a_nameplate_joins_by_address_too() {
    let tmp = TempDir::new("nameplate-addr");
    let (alice_dir, bob_dir) = (tmp.config("alice"), tmp.config("bob"));
    let port = free_port();
    let (mut inviter, code) = invite(&alice_dir, "bob", port);
    // What an invite with the DHT on shows: a nameplate in front of the same digits.
    let joiner = join(&bob_dir, "alice", &format!("123-{code}"), port);
    assert_eq!(joiner.code, 0, "joiner: {}", joiner.all());
    assert!(inviter.wait(T).success(), "inviter: {:?}", inviter.seen);
    let run = duet(&bob_dir, &["pair", "list"]);
    assert!(
        run.stdout.contains(&local(port)),
        "--addr is stored: {}",
        run.all()
    );
}
