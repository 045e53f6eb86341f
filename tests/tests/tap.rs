//! duet over its own smoltcp stack on Linux TAP devices (`--tap`): against the kernel's UDP
//! on the other side of the tap, against another TAP duet across a bridge, and against the
//! firmware under QEMU on the same bridge. Plus the errors a user meets first.
//!
//! All but the last need root: each creates network namespaces of its own (`Netns`), which
//! are deleted when the test ends, pass or fail, and never touches the machine's own
//! interfaces. Run as another user they print why and pass without running. Every wait is for an
//! output line, with a deadline; ARP and first-packet delays are left to the session's
//! retransmission, so no test sleeps.

use std::process::Command;
use std::time::Duration;

use duet_tests::netns::{Netns, skip_unless_root};
use duet_tests::peers::require_tool;
use duet_tests::qemu::{BOOT_TIMEOUT, firmware_dir, firmware_elf};
use duet_tests::{Home, Proc, duet_bin, paired};

/// Time for a line to appear; generous because a lost first ARP reply costs about a second
/// and a retransmission or two.
const T: Duration = Duration::from_secs(30);

/// `duet ARGS` run to the end: exit code and all output.
fn run(command: &mut Command) -> (i32, String) {
    let out = command.output().expect("cannot run duet");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `a` then `b`, as one argument list.
fn join<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    [a, b].concat()
}

/// Type a line on each side and see it arrive on the other, and both acknowledged.
fn exchange(
    (a, a_from, a_says): (&mut Proc, &str, &str),
    (b, b_from, b_says): (&mut Proc, &str, &str),
) {
    a.type_line(a_says);
    b.type_line(b_says);
    b.expect(&format!("{a_from}: {a_says}"), T);
    a.expect(&format!("{b_from}: {b_says}"), T);
    a.expect(&format!("delivered: {a_says}"), T);
    b.expect(&format!("delivered: {b_says}"), T);
}

/// End the chats (end of input) and check they leave cleanly: nothing left undelivered.
fn leave(chats: [&mut Proc; 2]) {
    for chat in chats {
        chat.close_stdin();
        assert!(chat.wait(T).success(), "{:#?}", chat.seen);
    }
}

#[test]
fn a_tap_duet_and_a_kernel_udp_duet_chat_both_ways() {
    if skip_unless_root("a_tap_duet_and_a_kernel_udp_duet_chat_both_ways") {
        return;
    }
    let ns = Netns::new("tap");
    // The kernel will be 10.99.0.1 on tap0; 10.99.0.2 exists only inside the TAP duet's
    // smoltcp.
    ns.tap("tap0");
    let (kernel, smol) = paired(Some("10.99.0.1:7789"), Some("10.99.0.2:7789"));

    // smoltcp first (a tap without a program attached has no carrier and drops traffic),
    // and before its peer's address exists: its first handshake waits on ARP requests
    // nobody answers yet. Nothing waits on purpose: smoltcp retries ARP when the link
    // wakes it, and both sessions retransmit.
    let mut b = ns.duet(
        &smol,
        &[
            "chat",
            "--peer",
            "a",
            "--name",
            "smol",
            "--tap",
            "tap0",
            "--ip",
            "10.99.0.2/24",
            "--bind",
            "0.0.0.0:7789",
        ],
    );
    b.expect("* listening on 10.99.0.2:7789", T);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "tap0"]);
    let mut a = ns.duet(
        &kernel,
        &[
            "chat",
            "--peer",
            "b",
            "--name",
            "kernel",
            "--bind",
            "10.99.0.1:7789",
        ],
    );
    a.expect("* listening on 10.99.0.1:7789", T);

    exchange(
        (&mut a, "a@10.99.0.1:7789", "hello from the kernel, 你好 🐧"),
        (&mut b, "b@10.99.0.2:7789", "hello from smoltcp, 你好 🦀"),
    );
    // The kernel reached 10.99.0.2 through the tap, at the TAP duet's default MAC
    // (02:00 and the address's four bytes), not through any socket of its own. (Asked
    // while the tap is attached: without carrier the kernel forgets its neighbours.)
    let neighbour = ns.ip_output(&["neigh", "show", "10.99.0.2", "dev", "tap0"]);
    assert!(
        neighbour.contains("lladdr 02:00:0a:63:00:02"),
        "the kernel never learned the TAP duet's Ethernet address: {neighbour:?}"
    );
    leave([&mut a, &mut b]);
}

#[test]
fn two_tap_duets_on_a_bridge_chat_both_ways_and_send_and_listen() {
    if skip_unless_root("two_tap_duets_on_a_bridge_chat_both_ways_and_send_and_listen") {
        return;
    }
    let ns = Netns::new("tap");
    // No kernel address anywhere: the bridge only switches frames between two smoltcp stacks.
    ns.tap("tap0");
    ns.tap("tap1");
    ns.bridge("br0", &["tap0", "tap1"]);
    let (left, right) = paired(Some("10.99.1.1:7789"), Some("10.99.1.2:7789"));
    let tap_left = ["--tap", "tap0", "--ip", "10.99.1.1/24"];
    let tap_right = ["--tap", "tap1", "--ip", "10.99.1.2/24"];

    let mut a = ns.duet(
        &left,
        &join(
            &["chat", "--peer", "b", "--bind", "0.0.0.0:7789"],
            &tap_left,
        ),
    );
    let mut b = ns.duet(
        &right,
        &join(
            &["chat", "--peer", "a", "--bind", "10.99.1.2:7789"],
            &tap_right,
        ),
    );
    a.expect("* listening on 10.99.1.1:7789", T);
    b.expect("* listening on 10.99.1.2:7789", T);
    exchange(
        (&mut a, "a@10.99.1.1:7789", "left to right, 左到右 ➡️"),
        (&mut b, "b@10.99.1.2:7789", "right to left, 右到左 ⬅️"),
    );
    leave([&mut a, &mut b]);

    // The one-shot modes on the same taps: listen on one, send from the other (an
    // ephemeral port of smoltcp's).
    let mut listen = ns.duet(
        &right,
        &join(
            &["listen", "--count", "1", "--bind", "0.0.0.0:7789"],
            &tap_right,
        ),
    );
    listen.expect("* listening on 10.99.1.2:7789", T);
    let (code, out) = run(ns
        .command(duet_bin())
        .args(left.args(&join(&["send", "--to", "b", "--timeout", "20"], &tap_left)))
        .arg("one shot, 一次 ✉️"));
    assert_eq!(code, 0, "send over the tap failed: {out}");
    assert!(out.contains("delivered to 10.99.1.2:7789"), "{out}");
    listen.expect("a@10.99.1.1:", T);
    assert!(listen.wait(T).success(), "listen: {:#?}", listen.seen);
    assert!(
        listen
            .seen
            .iter()
            .any(|l| l.ends_with(": one shot, 一次 ✉️")),
        "{:#?}",
        listen.seen
    );
}

#[test]
fn the_firmware_under_qemu_and_a_tap_duet_on_one_bridge_chat_both_ways() {
    if skip_unless_root("the_firmware_under_qemu_and_a_tap_duet_on_one_bridge_chat_both_ways") {
        return;
    }
    require_tool("qemu-system-arm", "qemu-system-arm");
    let elf = firmware_elf();
    let ns = Netns::new("tap");
    // The firmware's built-in network is QEMU user networking's: the board is 10.0.2.15/24
    // and its gateway 10.0.2.2. On the bridge the TAP duet takes 10.0.2.2, so the default
    // build needs no settings, and the board's boot datagram to its gateway lands on it.
    ns.tap("tap-board");
    ns.tap("tap-duet");
    ns.bridge("br0", &["tap-board", "tap-duet"]);
    let home = Home::new("tap-host");
    let host_key = home.key();

    // The board's defmt log, kept when the test fails (`defmt-print -e ELF < FILE`).
    let defmt_log = std::env::temp_dir().join(format!("duet-tap-board-{}.defmt", ns.name()));
    let mut board = Proc::spawn(
        ns.command(firmware_dir().join("qemu-run.sh"))
            .arg(&elf)
            .env(
                "DUET_NIC",
                "tap,ifname=tap-board,script=no,downscript=no,model=lan9118",
            )
            .env("DUET_DEFMT_OUT", &defmt_log),
        &format!("[{}] board", ns.name()),
    );
    let id = board.expect("duet id ", BOOT_TIMEOUT);
    let board_key = id
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(board_key.len(), 44, "no key in the board's id line {id:?}");
    board.expect("duet ready at 10.0.2.15:7789", BOOT_TIMEOUT);

    let (code, out) = run(Command::new(duet_bin()).args(home.args(&[
        "pair",
        "add",
        "board",
        &board_key,
        "--addr",
        "10.0.2.15:7789",
    ])));
    assert_eq!(code, 0, "pair add: {out}");
    let mut duet = ns.duet(
        &home,
        &[
            "chat",
            "--peer",
            "board",
            "--name",
            "tap",
            "--tap",
            "tap-duet",
            "--ip",
            "10.0.2.2/24",
            "--bind",
            "10.0.2.2:7788",
        ],
    );
    duet.expect("* listening on 10.0.2.2:7788", T);
    board.type_line(&format!("/pair {host_key} 10.0.2.2:7788"));
    board.expect(&format!("paired with {host_key} at 10.0.2.2:7788"), T);

    duet.type_line("hello board, 你好 👋");
    board.expect("msg 10.0.2.2:7788: hello board, 你好 👋", T);
    duet.expect("delivered: hello board, 你好 👋", T);
    board.type_line("hello tap, 你好 🦀");
    board.expect("delivered #0: hello tap, 你好 🦀", T);
    duet.expect("board@10.0.2.15:7789: hello tap, 你好 🦀", T);
    duet.close_stdin();
    assert!(duet.wait(T).success(), "duet: {:#?}", duet.seen);
    let _ = std::fs::remove_file(&defmt_log);
}

#[test]
fn tap_problems_are_named_with_exit_code_13() {
    if skip_unless_root("tap_problems_are_named_with_exit_code_13") {
        return;
    }
    let ns = Netns::new("tap");
    ns.tap("tap0");
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "down0", "mode", "tap"]);
    // Owned by another user: only they, or a process with CAP_NET_ADMIN, may attach.
    ns.ip(&[
        "tuntap", "add", "dev", "theirs0", "mode", "tap", "user", "nobody",
    ]);
    ns.ip(&["link", "set", "theirs0", "up"]);
    let home = Home::new("tap-errors");
    let listen = |device: &str, ip: &str, bind: &str| {
        run(ns.command(duet_bin()).args(home.args(&[
            "listen", "--legacy", "--tap", device, "--ip", ip, "--bind", bind,
        ])))
    };

    let cases = [
        (
            "nosuch0",
            "10.99.2.2/24",
            "0.0.0.0:7789",
            "no such network device here",
        ),
        ("tun0", "10.99.2.2/24", "0.0.0.0:7789", "is a TUN device"),
        ("lo", "10.99.2.2/24", "0.0.0.0:7789", "not a TAP device"),
        (
            "down0",
            "10.99.2.2/24",
            "0.0.0.0:7789",
            "it is down: sudo ip link set down0 up",
        ),
        (
            "tap0",
            "10.99.2.2/24",
            "10.99.2.3:7789",
            "--bind 10.99.2.3:7789 is not duet's address",
        ),
    ];
    for (device, ip, bind, problem) in cases {
        let (code, out) = listen(device, ip, bind);
        assert_eq!(code, 13, "{device}: {out}");
        assert!(
            out.contains(&format!("cannot use TAP device {device}: ")),
            "{out}"
        );
        assert!(
            out.contains(problem),
            "{device}: expected {problem:?} in {out}"
        );
    }
    // A missing device was not created by attaching to it.
    assert!(
        !ns.ip_output(&["link", "show"]).contains("nosuch0"),
        "attaching created the missing device"
    );

    // A tap already in use by another duet.
    let mut first = ns.duet(
        &home,
        &[
            "listen",
            "--legacy",
            "--tap",
            "tap0",
            "--ip",
            "10.99.2.2/24",
        ],
    );
    first.expect("* listening on 10.99.2.2:7789", T);
    let (code, out) = listen("tap0", "10.99.2.3/24", "0.0.0.0:7789");
    assert_eq!(code, 13, "{out}");
    assert!(out.contains("another program is attached to it"), "{out}");
    drop(first);

    // Without the rights: root, but without CAP_NET_ADMIN (dropped from the bounding set,
    // so duet never has it), on a tap that belongs to another user.
    require_tool("setpriv", "util-linux");
    let (code, out) = run(ns
        .command("setpriv")
        .arg("--bounding-set=-net_admin")
        .arg(duet_bin())
        .args(home.args(&[
            "listen",
            "--legacy",
            "--tap",
            "theirs0",
            "--ip",
            "10.99.2.2/24",
        ])));
    assert_eq!(code, 13, "{out}");
    assert!(out.contains("permission denied attaching to it"), "{out}");
    assert!(
        out.contains("setcap cap_net_admin+ep"),
        "no hint how to get the rights: {out}"
    );
}

#[test]
fn tap_options_are_refused_without_a_tap_or_with_bad_values() {
    // Usage errors: clap refuses these before any device is touched, so no root is needed.
    let home = Home::new("tap-usage");
    for args in [
        &["listen", "--tap", "tap0"][..],
        &["listen", "--ip", "10.0.0.2/24"],
        &["listen", "--gateway", "10.0.0.1"],
        &["listen", "--tap", "tap0", "--ip", "10.0.0.2"],
        &["listen", "--tap", "tap0", "--ip", "10.0.0.2/33"],
        &[
            "listen",
            "--tap",
            "tap0",
            "--ip",
            "10.0.0.2/24",
            "--mac",
            "01:00:5e:00:00:01",
        ],
        &[
            "send", "--to", "x:1", "--tap", "tap0", "--ip", "::1/64", "hi",
        ],
    ] {
        let (code, out) = run(Command::new(duet_bin()).args(home.args(args)));
        assert_eq!(code, 2, "{args:?}: {out}");
    }
}
