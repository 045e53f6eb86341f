//! Pairing across the internet: how `duet pair invite` and `duet pair join` (without
//! `--addr`) find each other through the Mainline DHT and open a path through both home
//! routers before the pairing exchange of [`super::pair`] runs over it.
//!
//! The code an internet invite shows is `NNN-DDDD-DDDD`: a 3-digit *nameplate* and the
//! 8 secret digits SPAKE2 uses (like magic-wormhole's nameplate and password). Both sides
//! publish a sealed record of their candidate addresses (the pairing socket's LAN
//! addresses and its public mapping from STUN) and look up the other's:
//!
//! ```text
//! inviter's record: rendezvous::invite_secrets(nameplate,            period)
//! joiner's record:  rendezvous::invite_secrets(nameplate ‖ " join",  period)
//! ```
//!
//! (`transport::reach::rendezvous` documents the derivation and the sealed value.) Both
//! records derive from the nameplate alone, never from the secret digits: whoever knows the
//! nameplate can read the addresses, or overwrite a record and make the pairing fail, but
//! cannot pair, because the exchange that follows needs the secret digits and gives one
//! guess per invite.
//!
//! Once a side knows the other's candidates it sends a small PUNCH datagram to each of them
//! every [`PUNCH_EVERY`] (the joiner's HELLOs go to the same addresses): sends from both
//! sides open both routers' mappings, and the exchange's own datagrams then pass. PUNCH is
//! the pairing magic and a kind byte 0, 12 bytes, which the exchange ignores.
//!
//! With a TURN server configured, the pairing socket also allocates a relay, publishes the
//! relayed address as a candidate and lets the other side's candidate addresses in: when
//! both routers are symmetric NATs, the other side's HELLO or REPLY to that address is the
//! path that works. What arrives through the relay comes up as from the sender the relay
//! saw ([`Incoming::Relayed`]), and what goes back to such a sender goes through the relay
//! ([`PairReach::route`]).
//!
//! [`PairReach`] does no socket I/O: the pairing loop hands it STUN answers
//! ([`PairReach::handle_datagram`]), calls [`PairReach::step`], and sends what
//! [`PairReach::poll_transmit`] returns from the pairing socket. DHT and DNS work runs on
//! `transport::reach`'s background threads. Every schedule here is bounded by a constant
//! and by the pairing's own deadline.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::platform::ifaces;
use crate::transport::reach::dht::{DhtConfig, Rendezvous};
use crate::transport::reach::rendezvous::{self, Record};
use crate::transport::reach::stun::{self, BindingProbe, ProbeOutcome};
use crate::transport::reach::turn::{self, Received, Relay, RelayEvent};
use crate::transport::reach::{
    self, Candidate, CandidateKind, Pending, ReachConfig, ReachError, TurnConfig,
};

/// What the joiner's record location adds to the nameplate.
pub const JOIN_SUFFIX: &str = " join";
/// A datagram that only opens routers: the pairing magic and kind 0.
pub const PUNCH: &[u8; 12] = b"duet-pair/1\x00";
/// How often each of the other side's candidates gets a PUNCH.
pub const PUNCH_EVERY: Duration = Duration::from_millis(500);
/// The first wait between two look-ups of the other side's record; it grows by half each
/// time up to [`LOOKUP_MAX`].
const LOOKUP_FIRST: Duration = Duration::from_millis(500);
const LOOKUP_MAX: Duration = Duration::from_secs(5);
/// How long the first publication waits for the public mapping, so the other side's first
/// look-up finds it (STUN answers in one round trip; a dead server must not hold it up).
const FIRST_PUBLISH_WAIT: Duration = Duration::from_secs(2);
/// At most this many candidates are published, and at most this many of the other side's
/// are punched.
const MAX_CANDIDATES: usize = rendezvous::MAX_CANDIDATES;
/// Datagrams the relay may queue in one turn, at most.
const MAX_RELAY_DATAGRAMS: usize = 16;
/// The shortest wait `next_wake` asks for.
const MIN_WAIT: Duration = Duration::from_millis(5);
/// The longest `next_wake` lets the pairing loop sleep while something may be due.
const IDLE: Duration = Duration::from_millis(250);

/// What a datagram received on the pairing socket is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// For the exchange, as it came.
    Exchange,
    /// STUN or TURN traffic of the rendezvous itself: nothing for the exchange.
    Consumed,
    /// `payload` came from `peer` through our relay: for the exchange, as from `peer`.
    Relayed {
        /// The sender as the relay saw it.
        peer: SocketAddr,
        /// What it sent.
        payload: Vec<u8>,
    },
}

/// Which side of the pairing this duet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `duet pair invite`: shows the code.
    Inviter,
    /// `duet pair join`: was given the code.
    Joiner,
}

impl Side {
    /// Where this side's own record lives, and where the other side's does.
    fn locations(self, nameplate: &str) -> (String, String) {
        let invite = nameplate.to_owned();
        let join = format!("{nameplate}{JOIN_SUFFIX}");
        match self {
            Side::Inviter => (invite, join),
            Side::Joiner => (join, invite),
        }
    }
}

/// The rendezvous and hole punching of one pairing (see the module docs).
///
/// Call order: [`PairReach::start`] once the pairing socket is bound; then in the pairing
/// loop: offer every received datagram to [`PairReach::handle_datagram`] first (and take
/// [`PairReach::poll_relayed`] after it), send the exchange's datagrams as
/// [`PairReach::route`] says, call [`PairReach::step`] every turn and send everything
/// [`PairReach::poll_transmit`] returns, and wake no later than [`PairReach::next_wake`].
/// Once the exchange has started, call [`PairReach::stop_punching`]; when the pairing is
/// over, [`PairReach::close`] and send what it queues.
pub struct PairReach {
    own_location: String,
    peer_location: String,
    dht: Rendezvous,
    local: SocketAddr,
    stun_names: Option<Pending<Vec<SocketAddr>>>,
    probes: Vec<BindingProbe>,
    turn_names: Option<(TurnConfig, Pending<Vec<SocketAddr>>)>,
    relay: Option<Relay>,
    /// Senders heard through the relay: answers to them go back through it.
    relayed_peers: HashSet<SocketAddr>,
    /// Addresses the relay lets in.
    permitted: HashSet<IpAddr>,
    started: Instant,
    published: Option<(u64, Vec<Candidate>)>,
    publishing: Option<Pending<Result<(), ReachError>>>,
    lookup: Option<Pending<Result<Option<Record>, ReachError>>>,
    next_lookup: Instant,
    lookup_wait: Duration,
    peer: Vec<SocketAddr>,
    found: bool,
    punching: bool,
    next_punch: Instant,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    problems: Vec<String>,
    shown_problems: Vec<String>,
}

impl PairReach {
    /// Start the DHT client and STUN for `side` of the pairing under `nameplate`, on the
    /// pairing socket bound at `local`.
    pub fn start(
        config: &ReachConfig,
        side: Side,
        nameplate: &str,
        local: SocketAddr,
    ) -> Result<PairReach, ReachError> {
        let (own_location, peer_location) = side.locations(nameplate);
        let dht = Rendezvous::spawn(DhtConfig::from_reach(config))?;
        let stun_names = if config.stun.is_empty() {
            None
        } else {
            Some(reach::resolve_in_background(config.stun.clone())?)
        };
        let turn_names = match &config.turn {
            Some(turn) => Some((
                turn.clone(),
                reach::resolve_in_background(vec![turn.server.clone()])?,
            )),
            None => None,
        };
        let now = Instant::now();
        Ok(PairReach {
            own_location,
            peer_location,
            dht,
            local,
            stun_names,
            probes: Vec::new(),
            turn_names,
            relay: None,
            relayed_peers: HashSet::new(),
            permitted: HashSet::new(),
            started: now,
            published: None,
            publishing: None,
            lookup: None,
            next_lookup: now,
            lookup_wait: LOOKUP_FIRST,
            peer: Vec::new(),
            found: false,
            punching: true,
            next_punch: now,
            outbox: VecDeque::new(),
            problems: Vec::new(),
            shown_problems: Vec::new(),
        })
    }

    /// Offer a datagram received on the pairing socket from `from`, before the exchange
    /// sees it.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> Incoming {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let side_traffic = stun::is_stun(datagram) || turn::is_channel_data(datagram);
        if !side_traffic {
            return Incoming::Exchange;
        }
        if let Some(relay) = &mut self.relay {
            match relay.handle_datagram(from, datagram, Instant::now()) {
                Received::PeerData { peer, payload } => {
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    self.relayed_peers.insert(peer);
                    return Incoming::Relayed { peer, payload };
                }
                Received::Handled => return Incoming::Consumed,
                Received::NotForUs => {}
            }
        }
        // A STUN message nobody asked for is dropped all the same: it is not the exchange's.
        for probe in &mut self.probes {
            if probe.handle_datagram(from, datagram) {
                break;
            }
        }
        Incoming::Consumed
    }

    /// Where and what to send for `datagram` to `to`: through the relay to a sender heard
    /// through it, else directly.
    pub fn route(&mut self, to: SocketAddr, datagram: &[u8]) -> (SocketAddr, Vec<u8>) {
        if self.relayed_peers.contains(&to)
            && let Some(relay) = &mut self.relay
        {
            match relay.send_to(to, datagram, Instant::now()) {
                Ok(wrapped) => return wrapped,
                // The relay lost it (closed, permission gone): try the direct way.
                Err(_) => {
                    self.relayed_peers.remove(&to);
                }
            }
        }
        (to, datagram.to_vec())
    }

    /// Further datagrams that came through the relay with an earlier one.
    pub fn poll_relayed(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let (peer, payload) = self.relay.as_mut()?.poll_received()?;
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        self.relayed_peers.insert(peer);
        Some((peer, payload))
    }

    /// Delete the relay's allocation (when the pairing is over): send what
    /// [`PairReach::poll_transmit`] returns afterwards.
    pub fn close(&mut self) {
        if let Some(relay) = &mut self.relay {
            let now = Instant::now();
            if relay.close(now).is_ok() {
                while let Some(transmit) = relay.poll_transmit(now) {
                    self.outbox.push_back(transmit);
                }
            }
        }
    }

    /// One turn: start STUN once its servers are resolved, publish our candidates when
    /// they change, look the other side up, and queue STUN requests and punches.
    pub fn step(&mut self, now: Instant) {
        self.take_stun_names();
        self.take_turn_names();
        for probe in &mut self.probes {
            while let Some(transmit) = probe.poll_transmit(now) {
                self.outbox.push_back(transmit);
            }
        }
        self.drive_relay(now);
        self.publish(now);
        self.look_up(now);
        if self.punching && !self.peer.is_empty() && now >= self.next_punch {
            for &to in &self.peer {
                self.outbox.push_back((to, PUNCH.to_vec()));
            }
            self.next_punch = now + PUNCH_EVERY;
        }
    }

    /// The next datagram to send from the pairing socket, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.pop_front()
    }

    /// When [`PairReach::step`] next has something to do (at most `IDLE` from `now`:
    /// background results have no wake-up of their own; at least `MIN_WAIT`).
    pub fn next_wake(&mut self, now: Instant) -> Instant {
        let mut wake = now + IDLE;
        if let Some(t) = self.relay.as_mut().and_then(|r| r.poll_timeout(now)) {
            wake = wake.min(t);
        }
        if self.punching && !self.peer.is_empty() {
            wake = wake.min(self.next_punch);
        }
        if self.lookup.is_none() {
            wake = wake.min(self.next_lookup);
        }
        // Never "now": the pairing loop must get to read its socket in between.
        wake.max(now + MIN_WAIT)
    }

    /// The other side's candidate addresses from its latest record, most direct first.
    pub fn peer_candidates(&self) -> &[SocketAddr] {
        &self.peer
    }

    /// Whether the other side's record was found at least once.
    pub fn found(&self) -> bool {
        self.found
    }

    /// The exchange has a path: no more punches and look-ups.
    pub fn stop_punching(&mut self) {
        self.punching = false;
    }

    /// A problem to show the user, once each.
    pub fn next_problem(&mut self) -> Option<String> {
        while let Some(p) = self.problems.pop() {
            if !self.shown_problems.contains(&p) {
                self.shown_problems.push(p.clone());
                return Some(p);
            }
        }
        None
    }

    fn take_turn_names(&mut self) {
        let Some((turn, pending)) = &self.turn_names else {
            return;
        };
        match pending.try_take() {
            Ok(None) => return,
            Ok(Some(addrs)) => match addrs.into_iter().find(SocketAddr::is_ipv4) {
                Some(server) => {
                    self.relay = Some(Relay::allocate(
                        self.local,
                        server,
                        &turn.user,
                        &turn.password,
                        Instant::now(),
                    ));
                }
                None => self
                    .problems
                    .push(format!("TURN server {}: no IPv4 address", turn.server)),
            },
            Err(e) => self.problems.push(format!("TURN server: {e}")),
        }
        self.turn_names = None;
    }

    /// Move the relay's own datagrams, read its events, and let the other side's candidate
    /// addresses in once it is allocated.
    fn drive_relay(&mut self, now: Instant) {
        let Some(relay) = &mut self.relay else {
            return;
        };
        if relay.relayed_addr().is_some() {
            for ip in self.peer.iter().map(|a| a.ip().to_canonical()) {
                if !self.permitted.contains(&ip) && relay.permit(ip, now).is_ok() {
                    self.permitted.insert(ip);
                }
            }
        }
        // Polling runs the client's timers (retransmissions, refreshes): what is due then
        // comes out of `poll_transmit`. Bounded: it queues a handful of requests at most.
        let _ = relay.poll_timeout(now);
        for _ in 0..MAX_RELAY_DATAGRAMS {
            match relay.poll_transmit(now) {
                Some(transmit) => self.outbox.push_back(transmit),
                None => break,
            }
        }
        while let Some(event) = relay.poll_event() {
            match event {
                RelayEvent::AllocationFailed => self
                    .problems
                    .push("the TURN server refused a relay (check DUET_TURN)".into()),
                RelayEvent::Closed => self.problems.push("the TURN relay closed".into()),
                _ => {}
            }
        }
    }

    fn relayed(&self) -> Option<SocketAddr> {
        self.relay.as_ref().and_then(Relay::relayed_addr)
    }

    /// Whether a relay is being allocated (its address will be worth publishing).
    fn relay_pending(&self) -> bool {
        self.turn_names.is_some()
            || self
                .relay
                .as_ref()
                .is_some_and(|r| r.relayed_addr().is_none() && !r.is_closed())
    }

    fn take_stun_names(&mut self) {
        let Some(pending) = &self.stun_names else {
            return;
        };
        match pending.try_take() {
            Ok(None) => return,
            Ok(Some(servers)) => {
                let now = Instant::now();
                for server in servers.into_iter().filter(SocketAddr::is_ipv4) {
                    match stun::random_transaction_id() {
                        Ok(txid) => self.probes.push(BindingProbe::new(server, txid, now)),
                        Err(e) => self.problems.push(format!("STUN: {e}")),
                    }
                }
            }
            Err(e) => self.problems.push(format!("STUN servers: {e}")),
        }
        self.stun_names = None;
    }

    /// Whether STUN may still tell us our public mapping.
    fn mapping_pending(&self) -> bool {
        self.mapped().is_none()
            && (self.stun_names.is_some() || self.probes.iter().any(|p| p.outcome().is_none()))
    }

    fn mapped(&self) -> Option<SocketAddr> {
        self.probes.iter().find_map(|p| match p.outcome() {
            Some(ProbeOutcome::Mapped(addr)) => Some(addr),
            _ => None,
        })
    }

    /// The pairing socket's candidates now: its LAN addresses, then its public mapping.
    fn candidates(&self) -> Vec<Candidate> {
        let mut found = lan_candidates(self.local);
        if let Some(addr) = self.mapped()
            && !found.iter().any(|c| c.addr == addr)
        {
            found.push(Candidate {
                addr,
                kind: CandidateKind::Stun,
            });
        }
        if let Some(addr) = self.relayed()
            && !found.iter().any(|c| c.addr == addr)
        {
            found.push(Candidate {
                addr,
                kind: CandidateKind::Relay,
            });
        }
        // The public mapping and the relay matter most across the internet: keep them if
        // there are many.
        if found.len() > MAX_CANDIDATES {
            let keep_from = found.len() - MAX_CANDIDATES;
            found.drain(..keep_from);
        }
        found
    }

    fn publish(&mut self, now: Instant) {
        if let Some(pending) = &self.publishing {
            match pending.try_take() {
                Ok(None) => return,
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    self.problems
                        .push(format!("cannot publish this invite's addresses: {e}"));
                    // Try again at the next turn of the schedule.
                    self.published = None;
                }
            }
            self.publishing = None;
        }
        if self.published.is_none()
            && (self.mapping_pending() || self.relay_pending())
            && now < self.started + FIRST_PUBLISH_WAIT
        {
            return;
        }
        let unix = unix_secs();
        let period = rendezvous::period(unix);
        let candidates = self.candidates();
        let fresh = matches!(&self.published, Some((p, c)) if *p == period && *c == candidates);
        if fresh || candidates.is_empty() {
            return;
        }
        match self
            .dht
            .publish_invite(&self.own_location, unix, &candidates)
        {
            Ok(pending) => {
                self.publishing = Some(pending);
                self.published = Some((period, candidates));
            }
            Err(e) => self.problems.push(format!("cannot publish: {e}")),
        }
    }

    fn look_up(&mut self, now: Instant) {
        if let Some(pending) = &self.lookup {
            match pending.try_take() {
                Ok(None) => return,
                Ok(Some(Ok(Some(record)))) => {
                    self.found = true;
                    let peer: Vec<SocketAddr> = record
                        .candidates
                        .iter()
                        .map(|c| c.addr)
                        .filter(|a| a.is_ipv4() && a.port() != 0 && !a.ip().is_unspecified())
                        .take(MAX_CANDIDATES)
                        .collect();
                    if peer != self.peer {
                        self.peer = peer;
                        // New addresses: punch them at once.
                        self.next_punch = now;
                    }
                }
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    self.problems
                        .push(format!("cannot look the other side up: {e}"));
                }
            }
            self.lookup = None;
        }
        if !self.punching || now < self.next_lookup {
            return;
        }
        self.lookup = Some(self.dht.lookup_invite(&self.peer_location, unix_secs()));
        self.next_lookup = now + self.lookup_wait;
        self.lookup_wait = (self.lookup_wait * 3 / 2).min(LOOKUP_MAX);
    }
}

/// The addresses of this machine's interfaces that a socket bound at `local` can use, with
/// its port: IPv4 only (the DHT is), no loopback or link-local address.
fn lan_candidates(local: SocketAddr) -> Vec<Candidate> {
    let bound = local.ip().to_canonical();
    ifaces::local_addresses()
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(_) => false,
        })
        .filter(|ip| bound.is_unspecified() || bound == *ip)
        .map(|ip| Candidate {
            addr: SocketAddr::new(ip, local.port()),
            kind: CandidateKind::Lan,
        })
        .collect()
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_sides_look_where_the_other_publishes() {
        let (inviter_own, inviter_peer) = Side::Inviter.locations("042");
        let (joiner_own, joiner_peer) = Side::Joiner.locations("042");
        assert_eq!(inviter_own, joiner_peer);
        assert_eq!(joiner_own, inviter_peer);
        assert_ne!(inviter_own, joiner_own);
        // And the two records live at different DHT items, which differ by nameplate.
        let period = 490_000;
        let item = |location: &str| rendezvous::invite_secrets(location, period).public_key();
        assert_ne!(item(&inviter_own), item(&joiner_own));
        assert_ne!(item("042"), item("043"));
        assert_eq!(item(&inviter_own), item("042"));
    }

    #[test]
    fn a_punch_is_ignored_by_the_exchange_and_is_not_stun() {
        assert!(PUNCH.starts_with(b"duet-pair/1"));
        assert!(!stun::is_stun(PUNCH));
        assert_eq!(
            reach::Demux::classify(PUNCH),
            reach::Demux::Duet,
            "a stray punch reaching a chat socket is a duet datagram it drops"
        );
    }

    #[test]
    fn lan_candidates_keep_the_port_and_skip_loopback() {
        let local: SocketAddr = "0.0.0.0:7789".parse().unwrap();
        for c in lan_candidates(local) {
            assert_eq!(c.addr.port(), 7789);
            assert!(!c.addr.ip().is_loopback());
            assert_eq!(c.kind, CandidateKind::Lan);
        }
        let only: SocketAddr = "127.0.0.1:7789".parse().unwrap();
        assert!(lan_candidates(only).is_empty());
    }
}
