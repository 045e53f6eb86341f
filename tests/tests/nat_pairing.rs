//! Pairing by code across two home routers, as root: `duet pair invite` behind one
//! port-preserving NAT, `duet pair join NAME CODE` without `--addr` behind the other. The
//! two find each other by the code's nameplate on a private Mainline DHT, learn their
//! public mappings from a STUN server, punch through both routers and pair; neither stores
//! an address (the pairing sockets' mappings are temporary), and a `duet chat` between them
//! then works across both NATs. A code with the right nameplate but wrong digits pairs
//! nothing on either side. Behind two symmetric NATs punching fails (the join says the
//! invite was found but nothing answered), and with a TURN relay the pairing succeeds.
//!
//! Skipped, with the reason printed, when not root. Each test builds its own topology
//! (unique namespace names), so they run in parallel.

use std::time::Duration;

use duet_tests::Home;
use duet_tests::nat::{Coturn, DhtNodes, Machine, Nat, NatNet};
use duet_tests::netns::skip_unless_root;

/// Where the inviter waits, and where both chats listen.
const PORT: u16 = 7789;
/// Long enough for a DHT round trip, STUN and punching on the 2-core VM.
const WAIT: Duration = Duration::from_secs(60);
/// Seconds each pairing command may take (given to `--timeout`).
const PAIR_TIMEOUT: &str = "60";

/// Exit codes of the README's table.
const EXIT_NO_ANSWER: i32 = 8;
const EXIT_PAIRING_FAILED: i32 = 11;

/// Two homes behind NAT routers, a meshed private DHT and a STUN/TURN server.
struct World {
    net: NatNet,
    dht: DhtNodes,
    stun: Coturn,
    relay: bool,
}

impl World {
    fn new(tag: &str) -> World {
        World::with(tag, Nat::PortPreserving, false)
    }

    /// Two homes behind routers of kind `nat`; with `relay`, both duets use coturn as
    /// their TURN server too.
    fn with(tag: &str, nat: Nat, relay: bool) -> World {
        let net = NatNet::builder(tag).router(nat).router(nat).build();
        let dht = net.dht_nodes(3);
        let stun = net.coturn();
        World {
            net,
            dht,
            stun,
            relay,
        }
    }

    /// The environment that points duet at this world's DHT, STUN and TURN server only.
    fn env(&self) -> Vec<(&'static str, String)> {
        let bootstrap: Vec<String> = self.dht.addrs().iter().map(ToString::to_string).collect();
        let mut env = vec![
            ("DUET_DHT", "on".to_owned()),
            ("DUET_DHT_BOOTSTRAP", bootstrap.join(",")),
            ("DUET_STUN", self.stun.addr().to_string()),
        ];
        if self.relay {
            let turn = format!("{}:{}@{}", Coturn::USER, Coturn::PASSWORD, self.stun.addr());
            env.push(("DUET_TURN", turn));
        }
        env
    }

    /// `duet ARGS` in home `i` with this world's reach settings.
    fn duet(&self, i: usize, home: &Home, args: &[&str]) -> duet_tests::Proc {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.net.home(i).duet_env(home, args, &env)
    }

    fn home(&self, i: usize) -> &Machine {
        self.net.home(i)
    }
}

/// Start `duet pair invite NAME` in home 0 and return it with the code it shows.
fn invite(world: &World, home: &Home, name: &str) -> (duet_tests::Proc, String) {
    let bind = world.home(0).endpoint(PORT).to_string();
    let mut inviter = world.duet(
        0,
        home,
        &[
            "pair",
            "invite",
            name,
            "--bind",
            &bind,
            "--timeout",
            PAIR_TIMEOUT,
        ],
    );
    let line = inviter.expect("code: ", WAIT);
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("no code after 'code: '")
        .to_owned();
    let groups: Vec<&str> = code.split('-').collect();
    assert!(
        groups.len() == 3
            && groups.iter().map(|g| g.len()).eq([3, 4, 4])
            && code.bytes().filter(u8::is_ascii_digit).count() == 11,
        "code {code:?} is not NNN-DDDD-DDDD"
    );
    inviter.expect("duet pair join NAME", WAIT);
    (inviter, code)
}

/// `duet pair join NAME CODE` in home 1, without `--addr`.
fn join(world: &World, home: &Home, name: &str, code: &str) -> duet_tests::Proc {
    join_within(world, home, name, code, PAIR_TIMEOUT)
}

/// The same, giving up after `timeout` seconds.
fn join_within(
    world: &World,
    home: &Home,
    name: &str,
    code: &str,
    timeout: &str,
) -> duet_tests::Proc {
    world.duet(1, home, &["pair", "join", name, code, "--timeout", timeout])
}

/// `duet pair list`: the one line for `name`, split into name, key, fingerprint, address.
fn listed(home: &Home, name: &str) -> Option<Vec<String>> {
    let (code, out) = home.run(&["pair", "list"]);
    assert_eq!(code, 0, "pair list failed: {out}");
    out.lines()
        .map(|l| {
            l.split("  ")
                .map(|f| f.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|fields| fields.first().map(String::as_str) == Some(name))
}

#[test]
fn pairing_by_code_across_both_nats_then_chatting() {
    if skip_unless_root("pairing_by_code_across_both_nats_then_chatting") {
        return;
    }
    let world = World::new("pairnat");
    let alice = Home::new("pairnat-alice");
    let bob = Home::new("pairnat-bob");

    let (mut inviter, code) = invite(&world, &alice, "bob");
    let mut joiner = join(&world, &bob, "alice", &code);
    // From router 0's public address, the port kept: through both NATs, not around them.
    let public = format!("{}", world.net.public_addr(0));
    joiner.expect(&format!("the inviter answered from {public}:{PORT}"), WAIT);
    joiner.expect("paired with alice", WAIT);
    inviter.expect("paired with bob", WAIT);
    assert!(
        joiner.wait(WAIT).success(),
        "join failed:\n{}",
        joiner.seen.join("\n")
    );
    assert!(
        inviter.wait(WAIT).success(),
        "invite failed:\n{}",
        inviter.seen.join("\n")
    );

    // Each recorded the other, with the other's key and no address.
    let bob_at_alice = listed(&alice, "bob").expect("alice did not record bob");
    let alice_at_bob = listed(&bob, "alice").expect("bob did not record alice");
    assert_eq!(bob_at_alice[1], bob.key(), "alice recorded another key");
    assert_eq!(alice_at_bob[1], alice.key(), "bob recorded another key");
    assert_eq!(bob_at_alice.last().map(String::as_str), Some("-"));
    assert_eq!(alice_at_bob.last().map(String::as_str), Some("-"));

    // A chat between them finds its way across both NATs through the DHT.
    let bind0 = world.home(0).endpoint(PORT).to_string();
    let bind1 = world.home(1).endpoint(PORT).to_string();
    let mut a = world.duet(0, &alice, &["chat", "bob", "--bind", &bind0]);
    let mut b = world.duet(1, &bob, &["chat", "alice", "--bind", &bind1]);
    a.expect("* listening on", WAIT);
    b.expect("* listening on", WAIT);
    a.type_line("hello across the NATs, from alice");
    b.expect(": hello across the NATs, from alice", WAIT);
    b.type_line("hi alice, from bob");
    a.expect(": hi alice, from bob", WAIT);
    a.expect("delivered: hello across the NATs, from alice", WAIT);
    b.expect("delivered: hi alice, from bob", WAIT);
    a.expect("path to bob: direct through NAT", WAIT);
    eprintln!(
        "invite said:\n{}\njoin said:\n{}\nalice's chat said:\n{}",
        inviter.seen.join("\n"),
        joiner.seen.join("\n"),
        a.seen.join("\n")
    );
}

#[test]
fn a_wrong_code_with_the_right_nameplate_pairs_nothing_on_either_side() {
    if skip_unless_root("a_wrong_code_with_the_right_nameplate_pairs_nothing_on_either_side") {
        return;
    }
    let world = World::new("pairnat-wrong");
    let alice = Home::new("pairnat-wrong-alice");
    let mallory = Home::new("pairnat-wrong-mallory");

    let (mut inviter, code) = invite(&world, &alice, "bob");
    // The same nameplate (the invite is found), other secret digits.
    let last = code
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .unwrap_or(0);
    let wrong = format!("{}{}", &code[..code.len() - 1], (last + 1) % 10);
    let mut joiner = join(&world, &mallory, "alice", &wrong);
    let status = joiner.wait(WAIT);
    let said = joiner.seen.join("\n");
    assert_eq!(
        status.code(),
        Some(EXIT_PAIRING_FAILED),
        "the join should fail on the code:\n{said}"
    );
    assert!(said.contains("the code did not match"), "{said}");
    let status = inviter.wait(WAIT);
    assert_eq!(
        status.code(),
        Some(EXIT_PAIRING_FAILED),
        "the invite should fail on the code:\n{}",
        inviter.seen.join("\n")
    );
    assert_eq!(listed(&alice, "bob"), None, "alice saved a peer");
    assert_eq!(listed(&mallory, "alice"), None, "the joiner saved a peer");

    // A nameplate nobody published: the join says so when its time is up.
    let nameplate: u32 = code[..3].parse().expect("a numeric nameplate");
    let elsewhere = format!("{:03}{}", (nameplate + 1) % 1000, &code[3..]);
    let mut lost = join_within(&world, &mallory, "alice", &elsewhere, "5");
    let status = lost.wait(WAIT);
    let said = lost.seen.join("\n");
    assert_eq!(status.code(), Some(EXIT_NO_ANSWER), "{said}");
    assert!(
        said.contains(&format!("no invite with nameplate {}", &elsewhere[..3])),
        "{said}"
    );
}

#[test]
fn behind_two_symmetric_nats_pairing_by_code_goes_through_the_relay() {
    if skip_unless_root("behind_two_symmetric_nats_pairing_by_code_goes_through_the_relay") {
        return;
    }
    let mut world = World::with("pairnat-relay", Nat::Symmetric, false);
    let alice = Home::new("pairnat-relay-alice");
    let bob = Home::new("pairnat-relay-bob");

    // Without a relay the invite is found, but no punch gets through.
    let (mut unreachable, code) = invite(&world, &alice, "bob");
    let mut lost = join_within(&world, &bob, "alice", &code, "10");
    let status = lost.wait(WAIT);
    let said = lost.seen.join("\n");
    assert_eq!(status.code(), Some(EXIT_NO_ANSWER), "{said}");
    assert!(said.contains("none of its addresses answered"), "{said}");
    unreachable.kill();
    assert_eq!(listed(&bob, "alice"), None, "bob saved a peer");

    world.relay = true;
    let (mut inviter, code) = invite(&world, &alice, "bob");
    let mut joiner = join(&world, &bob, "alice", &code);
    // A new port per destination defeats punching: the first answer comes from a relayed
    // address on the TURN server's host.
    let relay_host = world.stun.addr().ip().to_string();
    joiner.expect(&format!("the inviter answered from {relay_host}:"), WAIT);
    joiner.expect("paired with alice", WAIT);
    inviter.expect("paired with bob", WAIT);
    assert!(
        joiner.wait(WAIT).success(),
        "join failed:\n{}",
        joiner.seen.join("\n")
    );
    assert!(
        inviter.wait(WAIT).success(),
        "invite failed:\n{}",
        inviter.seen.join("\n")
    );
    let bob_at_alice = listed(&alice, "bob").expect("alice did not record bob");
    let alice_at_bob = listed(&bob, "alice").expect("bob did not record alice");
    assert_eq!(bob_at_alice[1], bob.key());
    assert_eq!(alice_at_bob[1], alice.key());
    assert_eq!(bob_at_alice.last().map(String::as_str), Some("-"));
    assert_eq!(alice_at_bob.last().map(String::as_str), Some("-"));
}
