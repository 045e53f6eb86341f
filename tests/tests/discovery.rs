//! duet-to-duet discovery on a LAN: paired duets with no stored address find each other by
//! name (PROBE/FOUND, docs/SECURITY.md "Finding a peer on the LAN") and chat; an unpaired
//! duet on the same LAN, and everything its interface receives, learns no name, key or
//! message.
//!
//! Four network namespaces of the test's own: a switch with a bridge, and alice
//! (10.78.0.1), bob (10.78.0.2) and mallory (10.78.0.3) each on a veth to it. Mallory knows
//! bob's public key; bob does not know mallory's. A raw packet socket (Python's AF_PACKET)
//! in mallory's namespace records every frame that reaches mallory's interface. Needs root
//! and python3; without root the test prints why and passes without running.

use std::path::Path;
use std::time::Duration;

use duet_tests::netns::{Netns, skip_unless_root};
use duet_tests::peers::require_tool;
use duet_tests::{Home, Proc};

/// Time for one expected line.
const T: Duration = Duration::from_secs(30);

/// Names long enough that random bytes never contain them by chance.
const ALICE: &str = "alicewonder";
const BOB: &str = "bobbuilder";

const ALICE_IP: [u8; 4] = [10, 78, 0, 1];
const BOB_IP: [u8; 4] = [10, 78, 0, 2];
const MALLORY_IP: [u8; 4] = [10, 78, 0, 3];

/// Records every frame on `eth0`, one hex line each, flushed at once.
const SNIFFER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
print("ready", flush=True)
with open(sys.argv[1], "w") as f:
    while True:
        f.write(s.recv(65535).hex() + "\n")
        f.flush()
"#;

/// The switch namespace with its bridge, and one namespace per duet on a veth to it.
fn lan() -> (Netns, Vec<Netns>) {
    let switch = Netns::new("discsw");
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for (i, ip) in [ALICE_IP, BOB_IP, MALLORY_IP].iter().enumerate() {
        let ns = Netns::new(&format!("disc{i}"));
        let port = format!("p{i}");
        switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        let addr = format!("{}.{}.{}.{}/24", ip[0], ip[1], ip[2], ip[3]);
        ns.ip(&["addr", "add", &addr, "brd", "+", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        hosts.push(ns);
        ports.push(port);
    }
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    switch.bridge("br0", &ports);
    for port in &ports {
        switch.ip(&["link", "set", port, "up"]);
    }
    (switch, hosts)
}

/// Standard base64 (as `duet id` prints a key) to bytes.
fn base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim().bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn unhex(line: &str) -> Vec<u8> {
    (0..line.len() / 2)
        .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// An IPv4 UDP datagram in an Ethernet frame: source, destination, payload.
fn udp(frame: &[u8]) -> Option<([u8; 4], [u8; 4], &[u8])> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let src = frame[26..30].try_into().ok()?;
    let dst = frame[30..34].try_into().ok()?;
    Some((src, dst, frame.get(14 + ihl + 8..)?))
}

fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(unhex)
        .collect()
}

#[test]
fn paired_duets_find_each_other_by_name_and_an_unpaired_one_learns_nothing() {
    if skip_unless_root("paired_duets_find_each_other_by_name_and_an_unpaired_one_learns_nothing") {
        return;
    }
    require_tool("python3", "python3");
    let (_switch, hosts) = lan();
    let (alice_ns, bob_ns, mallory_ns) = (&hosts[0], &hosts[1], &hosts[2]);
    let (alice, bob, mallory) = (Home::new("alice"), Home::new("bob"), Home::new("mallory"));
    // No addresses anywhere: only names and keys.
    alice.add_peer(BOB, &bob, None);
    bob.add_peer(ALICE, &alice, None);
    mallory.add_peer(BOB, &bob, None);
    let secrets: Vec<(String, Vec<u8>)> = vec![
        (format!("{ALICE}'s key"), base64(&alice.key())),
        (format!("{BOB}'s key"), base64(&bob.key())),
        (ALICE.to_owned(), ALICE.as_bytes().to_vec()),
        (BOB.to_owned(), BOB.as_bytes().to_vec()),
    ];
    assert!(secrets[..2].iter().all(|(_, k)| k.len() == 32));

    let capture = std::env::temp_dir().join(format!("{}.frames", mallory_ns.name()));
    let mut sniffer = Proc::spawn(
        mallory_ns
            .command("python3")
            .args(["-c", SNIFFER])
            .arg(&capture),
        "sniffer in mallory's namespace",
    );
    sniffer.expect("ready", T);

    // Bob names nobody: any paired peer may write, and he does not look for anyone himself,
    // so alice must find him with her own probes.
    let mut b = bob_ns.duet(&bob, &["chat", "--name", "bob"]);
    b.expect("* no peer yet", T);
    let mut m = mallory_ns.duet(&mallory, &["chat", "--peer", BOB, "--name", "mallory"]);
    m.expect(&format!("* looking for {BOB} on the LAN"), T);
    let mut a = alice_ns.duet(&alice, &["chat", "--peer", BOB, "--name", "alice"]);
    a.expect(&format!("* looking for {BOB} on the LAN"), T);

    a.expect(&format!("* found {BOB} at 10.78.0.2:7789"), T);
    a.type_line("hello from alice");
    b.expect(&format!("{ALICE}@10.78.0.1:7789: hello from alice"), T);
    b.type_line("hello from bob");
    a.expect(&format!("{BOB}@10.78.0.2:7789: hello from bob"), T);
    a.expect("delivered: hello from alice", T);
    b.expect("delivered: hello from bob", T);

    // Mallory has been probing for bob all along (rounds 1, 2, 4 s apart): let it try a
    // few more times, then look at what bob counted.
    std::thread::sleep(Duration::from_secs(4));
    b.type_line("/status");
    let status = b.expect("discovery probes:", T);
    let refused: u32 = status
        .split("answered, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused count in {status:?}"));
    assert!(refused >= 2, "bob refused mallory's probes: {status}");
    m.type_line("/status");
    let status = m.expect("peer none yet", T);
    assert!(status.contains("no keys yet"), "{status}");

    for chat in [&mut a, &mut b, &mut m] {
        chat.close_stdin();
    }
    for chat in [&mut a, &mut b] {
        assert!(chat.wait(T).success(), "{:#?}", chat.seen);
    }
    m.wait(T);
    sniffer.kill();

    // Bob never showed mallory, mallory never found or heard anyone.
    assert!(
        !b.seen.iter().any(|l| l.contains("10.78.0.3")),
        "{:#?}",
        b.seen
    );
    assert!(
        !m.seen
            .iter()
            .any(|l| l.contains("found") || l.contains("hello")),
        "{:#?}",
        m.seen
    );

    // Everything that reached mallory's interface.
    let frames = read_frames(&capture);
    let _ = std::fs::remove_file(&capture);
    let probes_seen = frames
        .iter()
        .filter_map(|f| udp(f))
        .filter(|(src, _, p)| *src == ALICE_IP && p.starts_with(b"du\x02\x04"))
        .count();
    assert!(
        probes_seen > 0,
        "the capture saw none of alice's broadcast probes: {:?}\nalice: {:#?}",
        frames
            .iter()
            .filter_map(|f| udp(f))
            .map(|(s, d, p)| (s, d, p.get(..4).map(<[u8]>::to_vec)))
            .collect::<Vec<_>>(),
        a.seen
    );
    for frame in &frames {
        for (what, bytes) in &secrets {
            assert!(
                !frame.windows(bytes.len()).any(|w| w == &bytes[..]),
                "mallory's interface received {what}: {frame:02x?}"
            );
        }
        if let Some((src, dst, payload)) = udp(frame) {
            assert!(
                !(dst == MALLORY_IP && (src == BOB_IP || src == ALICE_IP)),
                "a datagram to mallory from {src:?}: {payload:02x?}"
            );
        }
    }
}

#[test]
fn two_duets_each_looking_for_the_other_by_name_find_each_other_and_chat() {
    if skip_unless_root("two_duets_each_looking_for_the_other_by_name_find_each_other_and_chat") {
        return;
    }
    let (_switch, hosts) = lan();
    let (alice, bob) = (Home::new("alice"), Home::new("bob"));
    alice.add_peer(BOB, &bob, None);
    bob.add_peer(ALICE, &alice, None);
    let mut b = hosts[1].duet(&bob, &["chat", "--peer", ALICE, "--name", "bob"]);
    b.expect(&format!("* looking for {ALICE} on the LAN"), T);
    let mut a = hosts[0].duet(&alice, &["chat", "--peer", BOB, "--name", "alice"]);
    a.expect(&format!("* looking for {BOB} on the LAN"), T);
    a.expect(&format!("* found {BOB} at 10.78.0.2:7789"), T);
    b.expect(&format!("* found {ALICE} at 10.78.0.1:7789"), T);
    a.type_line("hi bob");
    b.type_line("hi alice");
    b.expect(&format!("{ALICE}@10.78.0.1:7789: hi bob"), T);
    a.expect(&format!("{BOB}@10.78.0.2:7789: hi alice"), T);
    a.expect("delivered: hi bob", T);
    b.expect("delivered: hi alice", T);
    for chat in [&mut a, &mut b] {
        chat.close_stdin();
        assert!(chat.wait(T).success(), "{:#?}", chat.seen);
    }

    // `duet send` to a name with no address looks for it the same way.
    let mut listen = hosts[1].duet(&bob, &["listen", "--count", "1"]);
    listen.expect("* listening on", T);
    let sent = hosts[0]
        .command(duet_tests::duet_bin())
        .args(alice.args(&["send", "--to", BOB, "found you by name"]))
        .output()
        .expect("duet send");
    let said = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(said.contains("* delivered to 10.78.0.2:7789"), "{said}");
    listen.expect(&format!("{ALICE}@10.78.0.1:"), T);
    assert!(listen.wait(T).success(), "{:#?}", listen.seen);
}
