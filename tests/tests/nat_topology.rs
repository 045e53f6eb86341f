//! The NAT traversal testbed (`duet_tests::nat`) proves itself, as root: hole punching
//! works through port-preserving NATs only when both sides send, a symmetric NAT defeats it
//! while TURN still relays, miniupnpd's UPnP and NAT-PMP mappings let outsiders in, a
//! router that changes its public address is reachable again once the peer sends to the
//! new one, and a BEP44 item put from behind one NAT is found from behind the other.
//! Without these, a failing duet traversal test could not tell duet's bugs from the
//! testbed's.
//!
//! Skipped, with the reason printed, when not root. Each test builds its own topology
//! (unique namespace names), so they run in parallel.

use std::net::SocketAddrV4;
use std::process::Command;
use std::time::{Duration, Instant};

use duet_tests::nat::{Coturn, Nat, NatNet, Probe, poll_until};
use duet_tests::netns::skip_unless_root;

/// The UDP port the probes use in the homes.
const PORT: u16 = 7789;
/// Enough for anything that should happen inside the namespaces.
const WAIT: Duration = Duration::from_secs(10);
/// How long to wait for one punch datagram before sending the next round.
const ROUND: Duration = Duration::from_millis(100);

/// Both sides send to each other's `*_seen` address once per round until each has received
/// one from the other's address, for at most `rounds` rounds: whether both did.
fn punch(
    a: &mut Probe,
    a_seen: SocketAddrV4,
    b: &mut Probe,
    b_seen: SocketAddrV4,
    rounds: usize,
) -> bool {
    let (mut a_got, mut b_got) = (false, false);
    for round in 0..rounds {
        a.send(b_seen, &format!("punch a {round}"));
        b.send(a_seen, &format!("punch b {round}"));
        a_got |= a.received(b_seen, "punch b ", ROUND).is_some();
        b_got |= b.received(a_seen, "punch a ", ROUND).is_some();
        if a_got && b_got {
            return true;
        }
    }
    false
}

/// Three datagrams each way, every one of which must arrive from the expected address.
fn exchange(a: &mut Probe, a_seen: SocketAddrV4, b: &mut Probe, b_seen: SocketAddrV4) {
    for i in 0..3 {
        a.send(b_seen, &format!("after a {i}"));
        b.send(a_seen, &format!("after b {i}"));
    }
    for i in 0..3 {
        assert!(
            b.received(a_seen, &format!("after a {i}"), WAIT).is_some(),
            "datagram {i} from a did not arrive from {a_seen}; b saw:\n{}",
            b.proc.seen.join("\n")
        );
        assert!(
            a.received(b_seen, &format!("after b {i}"), WAIT).is_some(),
            "datagram {i} from b did not arrive from {b_seen}; a saw:\n{}",
            a.proc.seen.join("\n")
        );
    }
}

fn two_homes(tag: &str, first: Nat, second: Nat) -> NatNet {
    NatNet::builder(tag).router(first).router(second).build()
}

#[test]
fn port_preserving_nats_pass_simultaneous_sends_and_drop_unsolicited_ones() {
    if skip_unless_root("port_preserving_nats_pass_simultaneous_sends_and_drop_unsolicited_ones") {
        return;
    }
    let net = two_homes("punch", Nat::PortPreserving, Nat::PortPreserving);
    let mut a = net.home(0).probe(PORT);
    let mut b = net.home(1).probe(PORT);
    let a_pub = SocketAddrV4::new(net.public_addr(0), PORT);
    let b_pub = SocketAddrV4::new(net.public_addr(1), PORT);

    // Only a sends: b's router drops it at its WAN (counted), and b hears nothing.
    let drops = net.wan_drops(1);
    for i in 0..3 {
        a.send(b_pub, &format!("unsolicited {i}"));
    }
    poll_until("router 1 to drop 3 unsolicited datagrams", WAIT, || {
        net.wan_drops(1) >= drops + 3
    });
    let heard = b.all_received(ROUND);
    assert!(
        heard.is_empty(),
        "unsolicited datagrams got through: {heard:?}"
    );

    // Both send: the holes open, and the peers see each other's public address with the
    // port kept.
    assert!(
        punch(&mut a, a_pub, &mut b, b_pub, 30),
        "simultaneous sends did not get through; a saw:\n{}\nb saw:\n{}",
        a.proc.seen.join("\n"),
        b.proc.seen.join("\n")
    );
    exchange(&mut a, a_pub, &mut b, b_pub);
}

#[test]
fn a_symmetric_nat_maps_each_destination_apart_so_punching_fails_but_turn_relays() {
    if skip_unless_root(
        "a_symmetric_nat_maps_each_destination_apart_so_punching_fails_but_turn_relays",
    ) {
        return;
    }
    let net = two_homes("symmetric", Nat::Symmetric, Nat::PortPreserving);
    let turn = net.coturn();
    let mut a = net.home(0).probe(PORT);
    let mut b = net.home(1).probe(PORT);
    let b_pub = SocketAddrV4::new(net.public_addr(1), PORT);

    // Four destinations: coturn's two addresses, each on its STUN and its alternate port.
    let servers: Vec<SocketAddrV4> = [turn.addr(), turn.other_addr()]
        .iter()
        .flat_map(|s| [*s, SocketAddrV4::new(*s.ip(), s.port() + 1)])
        .collect();
    let a_maps: Vec<SocketAddrV4> = servers.iter().map(|s| a.stun(*s)).collect();
    let b_maps: Vec<SocketAddrV4> = servers.iter().map(|s| b.stun(*s)).collect();
    // The port-preserving side is the control: one mapping, its own port, for everyone.
    assert!(
        b_maps.iter().all(|m| *m == b_pub),
        "a port-preserving NAT mapped {:?} to {b_maps:?}",
        b.bound()
    );
    let mut ports: Vec<u16> = a_maps.iter().map(|m| m.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(
        a_maps.iter().all(|m| *m.ip() == net.public_addr(0)) && ports.len() > 1,
        "a symmetric NAT should map each destination to its own port: {a_maps:?}"
    );

    // With what STUN told a, punching fails: b's datagrams hit a mapping meant for coturn,
    // a's reach b from yet another port.
    let drops = (net.wan_drops(0), net.wan_drops(1));
    assert!(
        !punch(&mut a, a_maps[0], &mut b, b_pub, 20),
        "punching through a symmetric NAT should fail"
    );
    assert!(
        net.wan_drops(0) > drops.0 && net.wan_drops(1) > drops.1,
        "both routers should have dropped punch datagrams"
    );

    // TURN from behind the symmetric NAT: an allocation relays to an echo peer outside.
    let peer = net.host("peer", 1);
    let peer_ip = peer.addr().to_string();
    let echo_port: u16 = 3480;
    let _echo = peer.spawn(
        "turnutils_peer",
        &["-L", &peer_ip, "-p", &echo_port.to_string()],
    );
    let mut check = peer.probe(0);
    let echo = SocketAddrV4::new(peer.addr(), echo_port);
    let deadline = Instant::now() + WAIT;
    while check.received(echo, "ping", ROUND).is_none() {
        assert!(Instant::now() < deadline, "turnutils_peer does not echo");
        check.send(echo, "ping");
    }
    let turn_ip = turn.addr().ip().to_string();
    let mut uclient = net.home(0).spawn(
        "turnutils_uclient",
        &[
            "-u",
            Coturn::USER,
            "-w",
            Coturn::PASSWORD,
            "-e",
            &peer_ip,
            "-r",
            &echo_port.to_string(),
            "-n",
            "10",
            "-m",
            "1",
            "-c",
            "-z",
            "5",
            &turn_ip,
        ],
    );
    let status = uclient.wait(Duration::from_secs(60));
    let out = uclient.seen.join("\n");
    assert!(
        status.success()
            && out.contains("tot_recv_msgs=10")
            && out.contains("Total lost packets 0 "),
        "a TURN allocation from behind the symmetric NAT should relay all 10 messages:\n{out}"
    );
}

#[test]
fn miniupnpd_mappings_by_upnp_and_natpmp_let_an_outside_host_reach_the_home() {
    if skip_unless_root("miniupnpd_mappings_by_upnp_and_natpmp_let_an_outside_host_reach_the_home")
    {
        return;
    }
    let net = NatNet::builder("upnp").router(Nat::PortPreserving).build();
    let start = Instant::now();
    let turn = net.coturn();
    let coturn_ready = start.elapsed();
    let upnp = net.miniupnpd(0, &turn);
    eprintln!(
        "coturn answered STUN after {coturn_ready:?}, miniupnpd forwarded ports after {:?} more",
        start.elapsed() - coturn_ready
    );
    let outside = net.host("outside", 1);
    let mut out = outside.probe(PORT);
    let mut home = net.home(0).probe(PORT);
    let public = net.public_addr(0);
    let upnp_public = SocketAddrV4::new(public, 17789);

    // No mapping yet: dropped at the WAN.
    let drops = net.wan_drops(0);
    out.send(upnp_public, "too early");
    poll_until("router 0 to drop the early datagram", WAIT, || {
        net.wan_drops(0) > drops
    });

    // UPnP-IGD: map public 17789 to the home's 7789, as a UPnP client in the home would.
    let home_ip = net.home(0).addr().to_string();
    let added = net.home(0).netns().run(
        "upnpc",
        &[
            "-u",
            upnp.root_desc_url(),
            "-a",
            &home_ip,
            &PORT.to_string(),
            "17789",
            "UDP",
        ],
        None,
    );
    assert!(
        added.contains(&format!("is redirected to internal {home_ip}:{PORT}")),
        "upnpc did not map the port:\n{added}"
    );
    out.send(upnp_public, "via upnp");
    assert!(
        home.received(out.bound(), "via upnp", WAIT).is_some(),
        "nothing arrived through the UPnP mapping; miniupnpd said:\n{}",
        upnp.proc.seen.join("\n")
    );
    home.send(out.bound(), "reply via upnp");
    assert!(
        out.received(upnp_public, "reply via upnp", WAIT).is_some(),
        "the reply did not come back from the mapped port"
    );

    // NAT-PMP, asked from the very socket that gets mapped.
    let mut pmp = net.home(0).probe(PORT + 1);
    let granted = pmp.natpmp_map(upnp.gateway(), 17790, 60);
    let pmp_public = SocketAddrV4::new(public, granted);
    out.send(pmp_public, "via natpmp");
    assert!(
        pmp.received(out.bound(), "via natpmp", WAIT).is_some(),
        "nothing arrived through the NAT-PMP mapping {pmp_public}"
    );
}

#[test]
fn after_a_router_changes_its_public_address_traffic_flows_once_the_peer_sends_to_it() {
    if skip_unless_root(
        "after_a_router_changes_its_public_address_traffic_flows_once_the_peer_sends_to_it",
    ) {
        return;
    }
    let mut net = two_homes("roam", Nat::PortPreserving, Nat::PortPreserving);
    let mut a = net.home(0).probe(PORT);
    let mut b = net.home(1).probe(PORT);
    let a_pub = SocketAddrV4::new(net.public_addr(0), PORT);
    let b_pub = SocketAddrV4::new(net.public_addr(1), PORT);
    assert!(
        punch(&mut a, a_pub, &mut b, b_pub, 30),
        "first punch failed"
    );

    let old = net.public_addr(0);
    let new = net.change_public_addr(0);
    assert_ne!(old, new);
    assert_eq!(net.public_addr(0), new);
    let a_new = SocketAddrV4::new(new, PORT);

    // a keeps talking, now from the new address: b's router knows only the old one.
    let drops = net.wan_drops(1);
    a.send(b_pub, "from the new address");
    poll_until(
        "router 1 to drop a datagram from the new address",
        WAIT,
        || net.wan_drops(1) > drops,
    );
    assert!(
        b.received(a_new, "", ROUND).is_none(),
        "b heard the new address before sending to it"
    );

    // b learns the new address (in duet: from the DHT) and sends to it: both ways work.
    assert!(
        punch(&mut a, a_new, &mut b, b_pub, 30),
        "no traffic after the address change; a saw:\n{}\nb saw:\n{}",
        a.proc.seen.join("\n"),
        b.proc.seen.join("\n")
    );
    exchange(&mut a, a_new, &mut b, b_pub);
}

#[test]
fn a_bep44_item_put_from_behind_one_nat_is_found_from_behind_the_other() {
    if skip_unless_root("a_bep44_item_put_from_behind_one_nat_is_found_from_behind_the_other") {
        return;
    }
    let net = two_homes("dht", Nat::PortPreserving, Nat::PortPreserving);
    let start = Instant::now();
    let dht = net.dht_nodes(3);
    let meshed = start.elapsed();

    let value = "duet at 203.0.113.11:7789 你好";
    let put = dht.put(net.home(0), PORT, &[7; 32], "duet", value);
    let put_done = start.elapsed();
    assert!(put.stored >= 1, "no node stored the item: {put:?}");
    let got = dht.get(net.home(1), PORT, &put.key, "duet", WAIT);
    let got_done = start.elapsed();
    assert_eq!(got, Some((put.seq, value.to_owned())));
    // The same key under another salt is another item: the get can come back empty.
    let other = dht.get(
        net.home(1),
        PORT + 1,
        &put.key,
        "not duet",
        Duration::from_secs(2),
    );
    assert_eq!(other, None, "an item that was never put was found");
    eprintln!(
        "DHT timing: 3 nodes meshed after {meshed:?}, put done after {put_done:?} \
         (stored on {} nodes), get done after {got_done:?}",
        put.stored
    );
}

#[test]
fn dropping_the_topology_deletes_its_namespaces_and_kills_its_processes() {
    if skip_unless_root("dropping_the_topology_deletes_its_namespaces_and_kills_its_processes") {
        return;
    }
    let net = NatNet::builder("drop").router(Nat::PortPreserving).build();
    let host = net.host("lonely", 1);
    let mut names = net.namespaces();
    names.push(host.netns().name().to_owned());
    let probe = host.probe(PORT);
    let pid = probe.proc.id();
    // `ip netns list` prints "NAME" or "NAME (id: N)" per line.
    let listed = || -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let before = listed();
    assert!(
        names.iter().all(|n| before.contains(n)),
        "namespaces {names:?} missing from {before:?}"
    );
    drop(probe);
    drop(host);
    drop(net);
    let after = listed();
    let left: Vec<&String> = names.iter().filter(|n| after.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the probe process {pid} survived"
    );
}
