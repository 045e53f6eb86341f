//! Reaching a paired peer across the internet: what the application publishes and looks
//! up, over the transport's NAT traversal (`transport::reach`).
//!
//! While a conversation with a named peer runs, [`Reaching`]:
//! - gathers this duet's candidate addresses: the LAN addresses, the chat socket's public
//!   mapping (STUN, on the chat socket itself), a port mapping on the home router
//!   (PCP, NAT-PMP or UPnP-IGD) and a TURN relay when one is configured;
//! - publishes them on the Mainline DHT in a record only the peer can find and read
//!   (key, salt and sealing derive from the pair's shared secret and the hour), again
//!   when they change and every [`REPUBLISH`];
//! - while the peer does not answer, looks up the peer's record and probes every
//!   candidate in it at once with the session's authenticated discovery probes — both
//!   sides do, which opens both routers (hole punching) — and lets the peer's candidate
//!   addresses through the relay;
//! - reports the path in use (LAN, direct through NAT, relay) when it changes.
//!
//! Roaming (a router gets a new public address mid-chat): the peer stops answering at
//! once, but the session calls it down only after its idle timeout (15 s). Reach does not
//! wait for that: after [`SILENCE`] without a datagram from the peer it asks STUN again and
//! starts looking the peer up. When STUN reports a new public address, the DHT client is
//! replaced by a fresh one ([`Rendezvous::restart`]: the old one puts with write tokens
//! bound to the old address, and every such put fails), and the new candidates are
//! published at once. The peer, looking us up meanwhile, finds them and probes them; our answer moves
//! its session to the new address, and the messages waiting on both sides go out then.
//!
//! Nothing in a record or a probe is readable by anyone but the two (docs/SECURITY.md).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration as StdDuration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use super::conversation::{Conversation, DUET_PORT};
use super::keys::{Identity, PeerKey};
use crate::platform::ifaces;
use crate::transport::reach::dht::{DhtConfig, Rendezvous};
use crate::transport::reach::portmap::{PortMapConfig, PortMapEvent, PortMapper};
use crate::transport::reach::rendezvous::{PairSecret, Record};
use crate::transport::reach::{
    self, Candidate, CandidateKind, Pending, ReachConfig, ReachError, TurnConfig,
};
use crate::transport::{Link, Stack};

/// A record is put again this often even when nothing changed (DHT nodes drop items
/// after about two hours; the record's period turns every hour).
pub const REPUBLISH: StdDuration = StdDuration::from_secs(15 * 60);
/// The wait between two look-ups of the peer's record while it does not answer: short at
/// first (the peer may be publishing right now), growing by half each time up to
/// [`LOOKUP_MAX`].
const LOOKUP_FIRST: StdDuration = StdDuration::from_millis(500);
const LOOKUP_MAX: StdDuration = StdDuration::from_secs(30);
/// For this long after the chat starts, and after the peer falls silent, look-ups stay
/// [`LOOKUP_FIRST`] apart before the wait grows: a peer that starts (or notices the
/// silence) at the same time publishes one to three seconds later (a DHT put is a look-up
/// for write tokens, then the put), and a growing wait would find its record only up to
/// 1.7 s after that (the first message across two NATs: p50 2.8 s before, 2.4 s with this,
/// docs/PERFORMANCE.md). The price: about ten look-ups in those seconds.
const LOOKUP_FAST: StdDuration = StdDuration::from_secs(5);
/// How long the first publication waits for the public mapping (STUN answers in one
/// round trip), so the peer's first look-up finds it.
const FIRST_PUBLISH_WAIT: StdDuration = StdDuration::from_millis(1500);
/// At most this many candidates go in a record.
const MAX_CANDIDATES: usize = 8;
/// How long leaving waits for the router to remove a port mapping.
const UNMAP_WAIT: StdDuration = StdDuration::from_secs(2);
/// Without a datagram from the peer for this long, the path may be broken (our public
/// address changed, the peer's did): ask STUN again and look the peer up. A peer that
/// answers is heard at least every keepalive (5 s, duet-core's default): the session pings
/// when it heard nothing for that long, and then every 500 ms; this is two more seconds,
/// four pings unanswered. Cheap when wrong: one STUN request and one DHT look-up.
pub const SILENCE: StdDuration = StdDuration::from_secs(7);

/// How datagrams reach the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// On the same network: a private address.
    Lan,
    /// To its public address, through one or both routers.
    DirectThroughNat,
    /// Through a TURN relay.
    Relay,
}

impl PathKind {
    /// The words shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Lan => "LAN",
            PathKind::DirectThroughNat => "direct through NAT",
            PathKind::Relay => "relay",
        }
    }
}

/// The application's side of internet reach for one named peer (see the module docs).
pub struct Reaching {
    peer: PeerKey,
    pair: PairSecret,
    rendezvous: Option<Rendezvous>,
    stun_names: Option<Pending<Vec<SocketAddr>>>,
    turn_names: Option<(TurnConfig, Pending<Vec<SocketAddr>>)>,
    portmapper: Option<PortMapper>,
    mapped_port: Option<SocketAddr>,
    published: Option<(StdInstant, u64, Vec<Candidate>)>,
    publishing: Option<Pending<Result<(), ReachError>>>,
    lookup: Option<Pending<Result<Option<Record>, ReachError>>>,
    next_lookup: StdInstant,
    lookup_wait: StdDuration,
    /// Until when look-ups stay [`LOOKUP_FIRST`] apart (see [`LOOKUP_FAST`]).
    lookup_fast_until: StdInstant,
    /// The peer's candidates from its last record.
    peer_candidates: Vec<Candidate>,
    /// The path last reported.
    path: Option<(PathKind, SocketAddr)>,
    /// Problems to show once each.
    problems: Vec<String>,
    shown_problems: Vec<String>,
    started: StdInstant,
    /// Whether the peer answered at the last turn (see [`SILENCE`]).
    was_answering: bool,
    /// The session's count of datagrams heard from the peer, and when it last grew.
    heard: (u32, StdInstant),
    /// Our public address as STUN last reported it: when it changes, the DHT client starts
    /// over.
    public_ip: Option<IpAddr>,
}

impl Reaching {
    /// Start reaching `peer` for `identity`, with `config`, on the chat socket whose
    /// local port is `port`.
    pub fn start(
        config: &ReachConfig,
        identity: &Identity,
        peer: PeerKey,
        port: u16,
    ) -> Result<Reaching, ReachError> {
        let secret = StaticSecret::from(identity.secret_bytes());
        let shared = secret.diffie_hellman(&XPublic::from(peer.0));
        let pair = PairSecret::new(shared.to_bytes(), identity.public().0, peer.0)
            .map_err(ReachError::Record)?;
        let rendezvous = if config.dht {
            Some(Rendezvous::spawn(DhtConfig::from_reach(config))?)
        } else {
            None
        };
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
        let portmapper = if config.dht {
            PortMapper::spawn(PortMapConfig::new(port)).ok()
        } else {
            None
        };
        Ok(Reaching {
            peer,
            pair,
            rendezvous,
            stun_names,
            turn_names,
            portmapper,
            mapped_port: None,
            published: None,
            publishing: None,
            lookup: None,
            next_lookup: StdInstant::now(),
            lookup_wait: LOOKUP_FIRST,
            lookup_fast_until: StdInstant::now() + LOOKUP_FAST,
            peer_candidates: Vec::new(),
            path: None,
            problems: Vec::new(),
            shown_problems: Vec::new(),
            started: StdInstant::now(),
            was_answering: false,
            heard: (0, StdInstant::now()),
            public_ip: None,
        })
    }

    /// One turn: resolve, gather, publish, look up, probe. Returns the path when it
    /// changed (to show it).
    pub fn step(&mut self, link: &mut Link<Stack, Conversation>) -> Option<(PathKind, SocketAddr)> {
        let now = StdInstant::now();
        self.take_names(link);
        self.take_port_mappings();
        self.notice_new_public_address(link);
        let local_port = link.local_addr().port();
        let candidates = self.candidates(link, local_port);
        let mapping_pending = matches!(link.stack(), Stack::Reach(s) if s.mapping_pending());
        self.publish(now, candidates, mapping_pending);
        let answering = self.notice_silence(now, link);
        self.look_up(now, answering, link);
        self.path_change(link)
    }

    /// A problem to show, once each.
    pub fn next_problem(&mut self) -> Option<String> {
        let p = self.problems.pop()?;
        if self.shown_problems.contains(&p) {
            return None;
        }
        self.shown_problems.push(p.clone());
        Some(p)
    }

    /// Whether the peer answers: up, and heard within [`SILENCE`]. When it stops, our own
    /// public address may be what changed (a new address from the provider, a router
    /// restart): ask STUN again, so a changed mapping is published at once.
    fn notice_silence(&mut self, now: StdInstant, link: &mut Link<Stack, Conversation>) -> bool {
        let heard = link.protocol.datagrams_heard();
        if heard != self.heard.0 {
            self.heard = (heard, now);
        }
        let answering = link.protocol.is_peer_up() && now < self.heard.1 + SILENCE;
        if self.was_answering && !answering {
            self.lookup_fast_until = now + LOOKUP_FAST;
            if let Stack::Reach(stack) = link.stack_mut() {
                stack.refresh_mapping();
            }
        }
        self.was_answering = answering;
        answering
    }

    /// When STUN reports a new public address, start the DHT client over (see
    /// [`Rendezvous::restart`]) and publish again at once: what is in flight on the old
    /// client is dropped (a put with stale tokens fails; a look-up is simply asked again).
    fn notice_new_public_address(&mut self, link: &Link<Stack, Conversation>) {
        let Stack::Reach(stack) = link.stack() else {
            return;
        };
        let Some(ip) = stack.state().mapped.map(|m| m.ip()) else {
            return;
        };
        let previous = self.public_ip.replace(ip);
        if previous.is_none_or(|p| p == ip) {
            return;
        }
        if let Some(dht) = &self.rendezvous {
            match dht.restart() {
                Ok(fresh) => self.rendezvous = Some(fresh),
                Err(e) => self
                    .problems
                    .push(format!("cannot restart the DHT client: {e}")),
            }
        }
        self.publishing = None;
        self.published = None;
        self.lookup = None;
        self.next_lookup = StdInstant::now();
        self.lookup_wait = LOOKUP_FIRST;
        self.lookup_fast_until = StdInstant::now() + LOOKUP_FAST;
    }

    /// The path in use, if the peer answers.
    pub fn path(&self) -> Option<(PathKind, SocketAddr)> {
        self.path
    }

    /// Let go of what the router and the relay hold for us.
    pub fn shutdown(&mut self) {
        if let Some(mapper) = self.portmapper.take() {
            let _ = mapper.shutdown(UNMAP_WAIT);
        }
    }

    fn take_names(&mut self, link: &mut Link<Stack, Conversation>) {
        if let Some(pending) = &self.stun_names {
            match pending.try_take() {
                Ok(Some(addrs)) => {
                    if let Stack::Reach(stack) = link.stack_mut() {
                        stack.use_stun(addrs.into_iter().filter(SocketAddr::is_ipv4).collect());
                    }
                    self.stun_names = None;
                }
                Ok(None) => {}
                Err(e) => {
                    self.problems.push(format!("STUN servers: {e}"));
                    self.stun_names = None;
                }
            }
        }
        if let Some((turn, pending)) = &self.turn_names {
            match pending.try_take() {
                Ok(Some(addrs)) => {
                    if let (Stack::Reach(stack), Some(server)) = (
                        link.stack_mut(),
                        addrs.into_iter().find(SocketAddr::is_ipv4),
                    ) {
                        stack.use_turn(turn.clone(), server);
                    }
                    self.turn_names = None;
                }
                Ok(None) => {}
                Err(e) => {
                    self.problems.push(format!("TURN server: {e}"));
                    self.turn_names = None;
                }
            }
        }
    }

    fn take_port_mappings(&mut self) {
        let Some(mapper) = &self.portmapper else {
            return;
        };
        while let Some(event) = mapper.poll_event() {
            match event {
                PortMapEvent::Mapped(m) => self.mapped_port = Some(m.external),
                PortMapEvent::Lost(_) => self.mapped_port = None,
                PortMapEvent::Unavailable(_) | PortMapEvent::Stopped => {}
            }
        }
    }

    /// This duet's candidates now, most direct first.
    fn candidates(&self, link: &Link<Stack, Conversation>, port: u16) -> Vec<Candidate> {
        let mut found: Vec<Candidate> = Vec::new();
        let mut add = |addr: SocketAddr, kind: CandidateKind| {
            if found.len() < MAX_CANDIDATES && !found.iter().any(|c| c.addr == addr) {
                found.push(Candidate { addr, kind });
            }
        };
        let bound = link.local_addr().ip();
        for ip in ifaces::local_addresses() {
            let usable = match ip {
                IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
                IpAddr::V6(_) => false,
            };
            if usable && (bound.is_unspecified() || bound.to_canonical() == ip) {
                add(SocketAddr::new(ip, port), CandidateKind::Lan);
            }
        }
        if let Stack::Reach(stack) = link.stack() {
            let state = stack.state();
            if let Some(mapped) = state.mapped {
                add(mapped, CandidateKind::Stun);
            }
            if let Some(mapped) = self.mapped_port {
                add(mapped, CandidateKind::Mapped);
            }
            if let Some(relayed) = state.relayed {
                add(relayed, CandidateKind::Relay);
            }
        }
        found
    }

    fn publish(&mut self, now: StdInstant, candidates: Vec<Candidate>, link_mapping_pending: bool) {
        let Some(dht) = &self.rendezvous else { return };
        if let Some(pending) = &self.publishing {
            match pending.try_take() {
                Ok(None) => return,
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    self.problems
                        .push(format!("cannot publish where the peer can find us: {e}"));
                    // Try again at the next change or period.
                    self.published = None;
                }
            }
            self.publishing = None;
        }
        if self.published.is_none()
            && now < self.started + FIRST_PUBLISH_WAIT
            && link_mapping_pending
        {
            return;
        }
        let unix = unix_secs();
        let period = reach::rendezvous::period(unix);
        let stale = match &self.published {
            Some((at, p, published)) => {
                *published != candidates || *p != period || now >= *at + REPUBLISH
            }
            None => true,
        };
        if !stale || candidates.is_empty() {
            return;
        }
        match dht.publish_candidates(&self.pair, unix, &candidates) {
            Ok(pending) => {
                self.publishing = Some(pending);
                self.published = Some((now, period, candidates));
            }
            Err(e) => self.problems.push(format!("cannot publish: {e}")),
        }
    }

    fn look_up(&mut self, now: StdInstant, answering: bool, link: &mut Link<Stack, Conversation>) {
        if self.rendezvous.is_none() {
            return;
        }
        if let Some(pending) = &self.lookup {
            let taken = pending.try_take();
            match taken {
                Ok(None) => return,
                Ok(Some(Ok(Some(record)))) => self.probe(record, link),
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    self.problems.push(format!("cannot look the peer up: {e}"));
                }
            }
            self.lookup = None;
        }
        let Some(dht) = &self.rendezvous else { return };
        if answering {
            self.lookup_wait = LOOKUP_FIRST;
            return;
        }
        if now < self.next_lookup {
            return;
        }
        self.lookup = Some(dht.lookup_candidates(&self.pair, unix_secs()));
        self.next_lookup = now + self.lookup_wait;
        if now >= self.lookup_fast_until {
            self.lookup_wait = (self.lookup_wait * 3 / 2).min(LOOKUP_MAX);
        }
    }

    /// Probe the peer's candidates, and let them through our relay.
    fn probe(&mut self, record: Record, link: &mut Link<Stack, Conversation>) {
        let changed = record.candidates != self.peer_candidates;
        self.peer_candidates = record.candidates;
        if let Stack::Reach(stack) = link.stack_mut() {
            stack.permit(self.peer_candidates.iter().map(|c| c.addr.ip()));
        }
        if !changed && link.protocol.peer().is_some() {
            return;
        }
        // The peer's candidates, and the LAN's broadcast addresses as before.
        let mut targets: Vec<SocketAddr> = self.peer_candidates.iter().map(|c| c.addr).collect();
        let bind = link.local_addr();
        for ip in ifaces::broadcast_addresses(bind.ip()) {
            targets.push(SocketAddr::new(ip, DUET_PORT));
        }
        if let Conversation::Duet { secure, .. } = &mut link.protocol {
            secure.discover(duet_core::time::Instant::now(), self.peer.0, &targets);
        }
    }

    fn path_change(&mut self, link: &Link<Stack, Conversation>) -> Option<(PathKind, SocketAddr)> {
        let path = match (link.protocol.peer(), link.protocol.is_peer_up()) {
            (Some(addr), true) => Some((self.kind_of(link, addr), addr)),
            _ => None,
        };
        if path == self.path {
            return None;
        }
        self.path = path;
        path
    }

    fn kind_of(&self, link: &Link<Stack, Conversation>, addr: SocketAddr) -> PathKind {
        let relayed_here = matches!(link.stack(), Stack::Reach(s) if s.is_relayed(addr));
        let relayed_there = self
            .peer_candidates
            .iter()
            .any(|c| c.addr == addr && c.kind == CandidateKind::Relay);
        if relayed_here || relayed_there {
            return PathKind::Relay;
        }
        kind_of_addr(addr)
    }
}

/// The path to `addr` when no relay is involved: LAN for a private address, else direct
/// through NAT.
pub fn kind_of_addr(addr: SocketAddr) -> PathKind {
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) if v4.is_private() || v4.is_loopback() || v4.is_link_local() => {
            PathKind::Lan
        }
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unicast_link_local() => PathKind::Lan,
        _ => PathKind::DirectThroughNat,
    }
}

impl Drop for Reaching {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
