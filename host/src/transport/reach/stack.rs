//! The chat socket with NAT traversal: the operating system's UDP ([`HostStack`]) plus the
//! STUN probes that learn the socket's public mapping and the TURN relay, all on the one
//! chat socket, so the mapping STUN reports is the one the peer must use.
//!
//! Receiving demultiplexes by the first bytes ([`Demux`]): duet's datagrams go up to the
//! driver; STUN answers go to the probes and the relay; TURN Data indications and
//! ChannelData come up as datagrams from the peer that sent them. Sending to a peer that
//! was heard through the relay goes back through it. The probes' and the relay's own
//! datagrams go out whenever the driver touches the socket (it does every turn), and
//! [`Transport::poll_stack`] says when they next need a turn.
//!
//! Nothing here panics on what arrives: the relay client is guarded (see [`Relay`]).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant as StdInstant;

use duet_core::time::{Duration, Instant};
use embedded_nal::{UdpClientStack, UdpFullStack, nb};

use super::stun::{self, BindingProbe, ProbeOutcome};
use super::turn::{Received, Relay, RelayEvent};
use super::{Demux, TurnConfig};
use crate::platform::wait::WaitHandle;
use crate::transport::Transport;
use crate::transport::udp::{self, HostSocket, HostStack};

/// How often the public mapping is asked again: a router may change it (a new public
/// address, a reboot), and the peer must learn the new one.
const STUN_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// Datagrams handled for the probes and the relay in one `receive` call before the
/// driver gets a turn: bounds the loop whatever arrives.
const MAX_SIDE_DATAGRAMS: usize = 64;

/// What the reach layer knows, for the application to publish and show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachState {
    /// The chat socket's public mapping, as a STUN server saw it.
    pub mapped: Option<SocketAddr>,
    /// The relayed address on the TURN server, once allocated.
    pub relayed: Option<SocketAddr>,
    /// Whether the relay failed (bad credentials, server gone).
    pub relay_failed: bool,
}

/// The operating system's UDP with STUN and TURN on the chat socket.
pub struct ReachStack {
    inner: HostStack,
    stun_servers: Vec<SocketAddr>,
    probes: Vec<BindingProbe>,
    next_stun: StdInstant,
    turn: Option<TurnConfig>,
    turn_server: Option<SocketAddr>,
    relay: Option<Relay>,
    /// Peers heard through the relay: what goes to them goes back through it.
    relayed_peers: HashSet<SocketAddr>,
    /// Addresses allowed through the relay (TURN permissions are per address).
    permitted: HashSet<IpAddr>,
    state: ReachState,
    local: Option<SocketAddr>,
}

impl ReachStack {
    /// A stack binding `bind_ip`; STUN servers and a TURN relay are added when their
    /// names are resolved ([`ReachStack::use_stun`], [`ReachStack::use_turn`]).
    pub fn new(bind_ip: IpAddr) -> Self {
        ReachStack {
            inner: HostStack::new(bind_ip),
            stun_servers: Vec::new(),
            probes: Vec::new(),
            next_stun: StdInstant::now(),
            turn: None,
            turn_server: None,
            relay: None,
            relayed_peers: HashSet::new(),
            permitted: HashSet::new(),
            state: ReachState::default(),
            local: None,
        }
    }

    /// What is known of the public side: the mapping and the relay.
    pub fn state(&self) -> &ReachState {
        &self.state
    }

    /// Whether datagrams to `peer` go through the relay.
    pub fn is_relayed(&self, peer: SocketAddr) -> bool {
        self.relayed_peers.contains(&udp::canonical(peer))
    }

    /// Ask the STUN servers again now (the peer went silent: our public address may have
    /// changed).
    pub fn refresh_mapping(&mut self) {
        if self.probes.iter().all(|p| p.outcome().is_some()) {
            self.next_stun = StdInstant::now();
        }
    }

    /// Whether the public mapping is still being asked for the first time.
    pub fn mapping_pending(&self) -> bool {
        self.state.mapped.is_none() && self.probes.iter().any(|p| p.outcome().is_none())
    }

    /// Let these addresses reach us through the relay (the peer's candidates: it may
    /// have to send to our relayed address).
    pub fn permit(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        let now = StdInstant::now();
        for ip in ips {
            let ip = ip.to_canonical();
            if let Some(relay) = &mut self.relay
                && relay.relayed_addr().is_some()
                && self.permitted.insert(ip)
                && relay.permit(ip, now).is_err()
            {
                self.permitted.remove(&ip);
            }
        }
    }

    /// Ask these STUN servers for the chat socket's public mapping (now, and again every
    /// so often).
    pub fn use_stun(&mut self, servers: Vec<SocketAddr>) {
        self.stun_servers = servers.into_iter().map(udp::canonical).collect();
        self.next_stun = StdInstant::now();
    }

    /// Allocate a relay on the TURN server at `server`.
    pub fn use_turn(&mut self, config: TurnConfig, server: SocketAddr) {
        self.turn = Some(config);
        self.turn_server = Some(udp::canonical(server));
        self.start_relay();
    }

    fn start_relay(&mut self) {
        if let (Some(turn), Some(server), Some(local), None) =
            (&self.turn, self.turn_server, self.local, &self.relay)
        {
            self.relay = Some(Relay::allocate(
                local,
                server,
                &turn.user,
                &turn.password,
                StdInstant::now(),
            ));
        }
    }

    /// Start what needs the bound socket: the relay's allocation.
    fn on_bound(&mut self, socket: &HostSocket) {
        if let Ok(local) = self.inner.local_addr(socket) {
            self.local = Some(local);
            self.start_relay();
        }
    }

    /// Send what the probes and the relay have to send (best effort: they retransmit).
    fn send_own(&mut self, socket: &mut HostSocket) {
        let now = StdInstant::now();
        if now >= self.next_stun && self.probes.iter().all(|p| p.outcome().is_some()) {
            self.probes.clear();
            for server in &self.stun_servers {
                if let Ok(txid) = stun::random_transaction_id() {
                    self.probes.push(BindingProbe::new(*server, txid, now));
                }
            }
            self.next_stun = now + STUN_REFRESH;
        }
        let mut out = Vec::new();
        for probe in &mut self.probes {
            while let Some(datagram) = probe.poll_transmit(now) {
                out.push(datagram);
            }
        }
        if let Some(relay) = &mut self.relay {
            for _ in 0..MAX_SIDE_DATAGRAMS {
                match relay.poll_transmit(now) {
                    Some(datagram) => out.push(datagram),
                    None => break,
                }
            }
            while let Some(event) = relay.poll_event() {
                match event {
                    RelayEvent::Allocated(addr) => self.state.relayed = Some(addr),
                    RelayEvent::AllocationFailed | RelayEvent::Closed => {
                        self.state.relayed = None;
                        self.state.relay_failed = true;
                    }
                    _ => {}
                }
            }
        }
        for (to, bytes) in out {
            let _ = self.inner.send_to(socket, to, &bytes);
        }
    }

    /// Handle a STUN or ChannelData datagram; a peer's datagram that came through the
    /// relay is copied into `buffer` and returned.
    fn side_datagram(
        &mut self,
        from: SocketAddr,
        len: usize,
        buffer: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        let now = StdInstant::now();
        let datagram = buffer.get(..len)?;
        if let Some(relay) = &mut self.relay {
            match relay.handle_datagram(from, datagram, now) {
                Received::PeerData { peer, payload } => {
                    let peer = udp::canonical(peer);
                    let n = payload.len();
                    if n > buffer.len() {
                        return None;
                    }
                    buffer[..n].copy_from_slice(&payload);
                    self.relayed_peers.insert(peer);
                    return Some((n, peer));
                }
                Received::Handled => {
                    self.state.relayed = relay.relayed_addr();
                    return None;
                }
                Received::NotForUs => {}
            }
        }
        for probe in &mut self.probes {
            if probe.handle_datagram(from, datagram) {
                if let Some(ProbeOutcome::Mapped(addr)) = probe.outcome() {
                    self.state.mapped = Some(udp::canonical(addr));
                }
                break;
            }
        }
        None
    }

    fn next_timer(&mut self) -> Option<StdInstant> {
        let now = StdInstant::now();
        let mut next = self.probes.iter().filter_map(|p| p.poll_timeout()).min();
        if !self.stun_servers.is_empty() {
            next = Some(next.map_or(self.next_stun, |n| n.min(self.next_stun)));
        }
        if let Some(relay) = &mut self.relay
            && let Some(t) = relay.poll_timeout(now)
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }
}

impl UdpClientStack for ReachStack {
    type UdpSocket = HostSocket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<HostSocket> {
        self.inner.socket()
    }
    fn connect(&mut self, socket: &mut HostSocket, remote: SocketAddr) -> io::Result<()> {
        self.inner.connect(socket, remote)
    }
    fn send(&mut self, socket: &mut HostSocket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        self.inner.send(socket, buffer)
    }
    fn receive(
        &mut self,
        socket: &mut HostSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        self.send_own(socket);
        for _ in 0..MAX_SIDE_DATAGRAMS {
            let (len, from) = self.inner.receive(socket, buffer)?;
            match Demux::classify(buffer.get(..len).unwrap_or_default()) {
                Demux::Duet | Demux::Other => return Ok((len, from)),
                Demux::Stun | Demux::ChannelData => {
                    if let Some(peer_datagram) = self.side_datagram(from, len, buffer) {
                        return Ok(peer_datagram);
                    }
                }
            }
        }
        // More side traffic than a turn handles: the driver comes back for the rest.
        Err(nb::Error::WouldBlock)
    }
    fn close(&mut self, socket: HostSocket) -> io::Result<()> {
        let now = StdInstant::now();
        if let Some(relay) = &mut self.relay {
            let _ = relay.close(now);
        }
        self.inner.close(socket)
    }
}

impl UdpFullStack for ReachStack {
    fn bind(&mut self, socket: &mut HostSocket, port: u16) -> io::Result<()> {
        self.inner.bind(socket, port)?;
        self.on_bound(socket);
        Ok(())
    }
    fn send_to(
        &mut self,
        socket: &mut HostSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        let remote = udp::canonical(remote);
        if self.relayed_peers.contains(&remote)
            && let Some(relay) = &mut self.relay
        {
            match relay.send_to(remote, buffer, StdInstant::now()) {
                Ok((server, wrapped)) => return self.inner.send_to(socket, server, &wrapped),
                // The relay lost it (closed, no permission yet): try the direct way.
                Err(_) => {
                    self.relayed_peers.remove(&remote);
                }
            }
        }
        self.inner.send_to(socket, remote, buffer)
    }
}

impl Transport for ReachStack {
    fn wait_fd<'a>(&'a self, socket: &'a HostSocket) -> io::Result<WaitHandle<'a>> {
        udp::socket_fd(socket)
    }
    fn local_addr(&self, socket: &HostSocket) -> io::Result<SocketAddr> {
        self.inner.local_addr(socket)
    }
    fn flush(&mut self, socket: &HostSocket) -> Result<(), (SocketAddr, io::Error)> {
        self.inner.flush(socket)
    }
    fn holds_received(&self) -> bool {
        self.inner.holds_received()
    }
    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        let inner = self.inner.poll_stack()?;
        let Some(next) = self.next_timer() else {
            return Ok(inner);
        };
        let wait = next.saturating_duration_since(StdInstant::now());
        Ok(crate::transport::earliest(
            inner,
            Some(
                Instant::now()
                    + Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ),
        ))
    }
}
