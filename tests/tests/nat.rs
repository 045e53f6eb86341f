//! Two people behind home NAT routers chat with `duet chat`, nothing configured but the
//! DHT nodes to bootstrap from, a STUN server and (where it is needed) a TURN server:
//! - behind two port-preserving NATs the chat goes direct, through both routers;
//! - behind two symmetric NATs it goes through the TURN relay;
//! - behind a router that maps ports on request (UPnP-IGD/NAT-PMP), facing a symmetric NAT,
//!   it goes direct to the mapped port, and the mapping is removed when the chat ends;
//! - when one router's public address changes mid-chat, the peers find each other again
//!   and every message arrives exactly once, in order.
//!
//! Each test builds its own topology ([`duet_tests::nat_chat`]: routers with nftables
//! masquerade and a WAN input drop, libtorrent DHT nodes and a `duet dht-node`, coturn).
//! Skipped, with the reason printed, when not root.

use std::time::{Duration, Instant};

use duet_tests::Proc;
use duet_tests::nat::{Nat, poll_until};
use duet_tests::nat_chat::{ChatNet, ChatOpts, history, wait_for_path};
use duet_tests::netns::skip_unless_root;

/// How long two chats may take to find each other and report a path.
const FIND: Duration = Duration::from_secs(60);
/// How long a message may take once the path works (retransmissions included).
const ARRIVE: Duration = Duration::from_secs(30);
/// How long a chat may take to leave once its input ends and everything is acknowledged
/// (it also removes its port mapping, bounded by 2 s).
const LEAVE: Duration = Duration::from_secs(30);

const DIRECT: &str = "direct through NAT";

/// Type `text` into `from` and wait until `to` shows it.
fn say(from: &mut Proc, to: &mut Proc, text: &str) {
    from.type_line(text);
    to.expect(&format!(": {text}"), ARRIVE);
}

/// Wait for a line of `chat` containing `needle`; on failure show `other`'s output too.
fn expect_or_show(chat: &mut Proc, needle: &str, timeout: Duration, other: &mut Proc) -> String {
    if let Some(line) = chat.wait_for(needle, timeout) {
        return line;
    }
    other.read_for(Duration::from_millis(100));
    panic!(
        "no line containing {needle:?} within {timeout:?}; output:\n{}\n--- the other chat:\n{}",
        chat.seen.join("\n"),
        other.seen.join("\n")
    );
}

/// End both chats' input and wait until each left with success (everything acknowledged).
fn leave(chats: [&mut Proc; 2]) {
    for chat in chats {
        chat.close_stdin();
        let status = chat.wait(LEAVE);
        assert!(
            status.success(),
            "the chat failed: {status}; output:\n{}",
            chat.seen.join("\n")
        );
    }
}

#[test]
fn behind_two_port_preserving_nats_the_chat_goes_direct_without_turn() {
    if skip_unless_root("behind_two_port_preserving_nats_the_chat_goes_direct_without_turn") {
        return;
    }
    const PORT: u16 = 7801;
    let world = ChatNet::start("chatdirect", Nat::PortPreserving, Nat::PortPreserving);
    let mut a = world.chat(0, PORT, ChatOpts::default());
    let mut b = world.chat(1, PORT, ChatOpts::default());

    // Each reaches the other's public address, the port kept by the NAT.
    let a_pub = format!("{}:{PORT}", world.net().public_addr(0));
    let b_pub = format!("{}:{PORT}", world.net().public_addr(1));
    assert_eq!(wait_for_path(&mut a, FIND), (DIRECT.to_owned(), b_pub));
    assert_eq!(wait_for_path(&mut b, FIND), (DIRECT.to_owned(), a_pub));

    say(&mut a, &mut b, "hello from behind router one, 你好");
    say(&mut b, &mut a, "and back from behind router two");
    leave([&mut a, &mut b]);
    assert_eq!(
        history(&world.b, "a", "<-"),
        ["hello from behind router one, 你好"]
    );
    assert_eq!(
        history(&world.a, "b", "<-"),
        ["and back from behind router two"]
    );
}

#[test]
fn behind_two_symmetric_nats_the_chat_goes_through_the_turn_relay() {
    if skip_unless_root("behind_two_symmetric_nats_the_chat_goes_through_the_turn_relay") {
        return;
    }
    const PORT: u16 = 7802;
    let world = ChatNet::start("chatrelay", Nat::Symmetric, Nat::Symmetric);
    let turn = ChatOpts { turn: true };
    let mut a = world.chat(0, PORT, turn);
    let mut b = world.chat(1, PORT, turn);

    // No direct path exists: a new port per destination defeats punching.
    let (kind, addr) = wait_for_path(&mut a, FIND);
    assert_eq!(kind, "relay", "a's path: {addr}");
    let (kind, addr) = wait_for_path(&mut b, FIND);
    assert_eq!(kind, "relay", "b's path: {addr}");

    say(&mut a, &mut b, "relayed from a");
    say(&mut b, &mut a, "relayed from b");
    say(&mut a, &mut b, "and once more from a");
    leave([&mut a, &mut b]);
    assert_eq!(
        history(&world.b, "a", "<-"),
        ["relayed from a", "and once more from a"]
    );
    assert_eq!(history(&world.a, "b", "<-"), ["relayed from b"]);
}

/// The public ports router `i`'s miniupnpd forwards (its `dnat` rules).
fn upnp_ports(world: &ChatNet, i: usize) -> Vec<u16> {
    let listing = world.net().router(i).machine().netns().run(
        "nft",
        &["list", "chain", "inet", "router", "upnp_prerouting"],
        None,
    );
    listing
        .lines()
        .filter(|l| l.contains("dnat"))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "dport")
                .nth(1)
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

#[test]
fn a_router_that_maps_ports_lets_a_symmetric_nat_in_and_the_mapping_goes_at_exit() {
    if skip_unless_root(
        "a_router_that_maps_ports_lets_a_symmetric_nat_in_and_the_mapping_goes_at_exit",
    ) {
        return;
    }
    const PORT: u16 = 7803;
    // miniupnpd refuses to forward behind its own router's symmetric NAT (its STUN check
    // sees the port change), so a's router keeps ports. b's NAT gives b a new port per
    // destination: what b sends to a's STUN address comes from a port a never sent to, and
    // only a forwarded port lets it in.
    let world = ChatNet::start("chatupnp", Nat::PortPreserving, Nat::Symmetric);
    let upnp = world.net().miniupnpd(0, world.turn());
    let mut a = world.chat(0, PORT, ChatOpts::default());
    let mut b = world.chat(1, PORT, ChatOpts::default());

    let (kind, addr) = wait_for_path(&mut b, FIND);
    let ports = upnp_ports(&world, 0);
    let mapped: Vec<String> = ports
        .iter()
        .map(|p| format!("{}:{p}", world.net().public_addr(0)))
        .collect();
    assert_eq!(kind, DIRECT, "b's path: {addr}");
    assert!(
        mapped.contains(&addr),
        "b should reach a at its mapped port; b's path {addr}, mapped {mapped:?}; miniupnpd:\n{}",
        upnp.proc.seen.join("\n")
    );
    assert_eq!(wait_for_path(&mut a, FIND).0, DIRECT);

    say(&mut b, &mut a, "in through the mapped port");
    say(&mut a, &mut b, "and out again");
    leave([&mut a, &mut b]);
    // a removed its mapping before it exited; give the router's table a moment to show it.
    poll_until("the port mapping to be removed", LEAVE, || {
        upnp_ports(&world, 0).is_empty()
    });
}

#[test]
fn when_a_public_address_changes_mid_chat_every_message_arrives_once_in_order() {
    if skip_unless_root(
        "when_a_public_address_changes_mid_chat_every_message_arrives_once_in_order",
    ) {
        return;
    }
    const PORT: u16 = 7804;
    let mut world = ChatNet::start("chatroam", Nat::PortPreserving, Nat::PortPreserving);
    let mut a = world.chat(0, PORT, ChatOpts::default());
    let mut b = world.chat(1, PORT, ChatOpts::default());
    assert_eq!(wait_for_path(&mut a, FIND).0, DIRECT);
    assert_eq!(wait_for_path(&mut b, FIND).0, DIRECT);
    say(&mut a, &mut b, "a 1 before");
    say(&mut b, &mut a, "b 1 before");

    // The provider renumbers a's line: its router has a new public address, and its
    // connection tracking is gone. Both keep typing while the path is broken.
    let new = world.net_mut().change_public_addr(0);
    let changed = Instant::now();
    let (a_lines, b_lines) = (
        ["a 2 during", "a 3 during", "a 4 during 你好"],
        ["b 2 during", "b 3 during"],
    );
    for line in a_lines {
        a.type_line(line);
    }
    for line in b_lines {
        b.type_line(line);
    }
    // b finds a at its new address.
    let moved = format!("{new}:{PORT}");
    expect_or_show(
        &mut b,
        &format!("* path to a: {DIRECT} at {moved}"),
        FIND,
        &mut a,
    );
    let found = changed.elapsed();
    for line in a_lines {
        expect_or_show(&mut b, &format!(": {line}"), ARRIVE, &mut a);
    }
    for line in b_lines {
        expect_or_show(&mut a, &format!(": {line}"), ARRIVE, &mut b);
    }
    eprintln!(
        "after the address change: b found a again after {found:?}, every waiting message \
         arrived after {:?}",
        changed.elapsed()
    );
    say(&mut a, &mut b, "a 5 after");
    say(&mut b, &mut a, "b 4 after");
    leave([&mut a, &mut b]);
    // Shown exactly once each.
    for (chat, lines) in [(&a, &b_lines[..]), (&b, &a_lines[..])] {
        for line in lines {
            let shown = chat
                .seen
                .iter()
                .filter(|l| l.ends_with(&format!(": {line}")))
                .count();
            assert_eq!(
                shown,
                1,
                "{line:?} shown {shown} times:\n{}",
                chat.seen.join("\n")
            );
        }
    }

    // Exactly once, in order, on both sides, as stored.
    let from_a = [
        "a 1 before",
        "a 2 during",
        "a 3 during",
        "a 4 during 你好",
        "a 5 after",
    ];
    let from_b = ["b 1 before", "b 2 during", "b 3 during", "b 4 after"];
    assert_eq!(history(&world.b, "a", "<-"), from_a);
    assert_eq!(history(&world.a, "b", "<-"), from_b);
    let delivered = |texts: &[&str]| -> Vec<String> {
        texts.iter().map(|t| format!("{t} [delivered]")).collect()
    };
    assert_eq!(history(&world.a, "b", "->"), delivered(&from_a));
    assert_eq!(history(&world.b, "a", "->"), delivered(&from_b));
}
