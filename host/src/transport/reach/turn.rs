//! A TURN relay (RFC 8656) for the chat socket, sans-IO: one UDP allocation on a TURN
//! server, reached from the chat socket itself, through which duet talks to the peer when
//! no direct path works (symmetric NAT on either side).
//!
//! The protocol work (Allocate, the 401 challenge and long-term credentials with
//! MESSAGE-INTEGRITY, Refresh before the allocation expires, CreatePermission, ChannelBind,
//! Send/Data indications and ChannelData) is the `turn-client-proto` crate's; [`Relay`]
//! wraps it in duet's terms: std `Instant`s, `(address, bytes)` datagrams, and errors of
//! this module. `turn-client-proto` is a young crate that `unwrap`s internal invariants;
//! [`Relay::handle_datagram`] and the timer path run it under `catch_unwind`, so a bug
//! there that some server's message triggers closes the relay instead of the chat.
//!
//! Call order: [`Relay::allocate`]; then in the chat loop send everything
//! [`Relay::poll_transmit`] returns from the chat socket, offer it every STUN or
//! ChannelData datagram from the server ([`Relay::handle_datagram`]), wake at
//! [`Relay::poll_timeout`], and read [`Relay::poll_event`]. Once
//! [`RelayEvent::Allocated`] came, publish the relayed address as a
//! [`super::CandidateKind::Relay`] candidate, [`Relay::permit`] each address the peer may
//! send from, optionally [`Relay::bind_channel`] (4 bytes of overhead instead of 36), and
//! send with [`Relay::send_to`]. On exit, [`Relay::close`] and send what it queues.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::types::message::ALLOCATE;
use turn_client_proto::types::stun::attribute::ErrorCode;
use turn_client_proto::types::stun::message::{Message, MessageClass};
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use super::ReachError;

/// The first byte of a ChannelData message (RFC 8656 §12: channel numbers
/// `0x4000..=0x4FFF`, so the first byte is `0x40..=0x4F`).
const CHANNEL_FIRST: std::ops::RangeInclusive<u8> = 0x40..=0x4F;
/// ChannelData's header: channel number and length.
const CHANNEL_HEADER: usize = 4;
/// Peer data kept for [`Relay::poll_received`] at most; more is dropped, as a full socket
/// buffer would.
const MAX_QUEUED: usize = 64;

/// Whether a datagram is TURN ChannelData: a channel number in `0x4000..=0x4FFF` and a
/// length that fits the datagram (UDP may pad it to a multiple of 4).
pub fn is_channel_data(datagram: &[u8]) -> bool {
    match datagram {
        [first, _, len_hi, len_lo, rest @ ..] => {
            CHANNEL_FIRST.contains(first)
                && usize::from(u16::from_be_bytes([*len_hi, *len_lo])) <= rest.len()
                && rest.len() < usize::from(u16::from_be_bytes([*len_hi, *len_lo])) + CHANNEL_HEADER
        }
        _ => false,
    }
}

/// Something the relay reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// The server allocated this relayed address: the peer can send to it.
    Allocated(SocketAddr),
    /// The server refused the allocation (bad credentials, quota) or never answered.
    AllocationFailed,
    /// The peer's address may now send to us through the relay, and we to it.
    Permitted(IpAddr),
    /// The server refused the permission.
    PermissionFailed(IpAddr),
    /// A channel to this peer address is bound.
    ChannelBound(SocketAddr),
    /// The server refused the channel.
    ChannelFailed(SocketAddr),
    /// The relay is closed: deleted, failed, or stopped by a client bug.
    Closed,
}

/// What a received datagram was, for the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The server's own message (a response, a refresh): nothing for the chat.
    Handled,
    /// Not from our server or not TURN: someone else's datagram.
    NotForUs,
    /// The peer sent this through the relay.
    PeerData {
        /// The peer's address as the relay saw it.
        peer: SocketAddr,
        /// What it sent: for the session, as if it had arrived directly.
        payload: Vec<u8>,
    },
}

/// One TURN allocation over UDP on the chat socket. See the module docs for the call order.
#[derive(Debug)]
pub struct Relay {
    client: TurnClientUdp,
    local: SocketAddr,
    server: SocketAddr,
    /// `Instant`s are given to the client as time since this one.
    epoch: Instant,
    events: VecDeque<RelayEvent>,
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Transaction ids of 401 answers to Allocate, while not yet allocated.
    unauthorized: Vec<u128>,
    closed: bool,
}

impl Relay {
    /// Start an allocation on `server` for the chat socket bound to `local` (the address
    /// the socket reports; the relay only uses it to tell its own traffic apart).
    pub fn allocate(
        local: SocketAddr,
        server: SocketAddr,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Relay {
        let server = canonical(server);
        let config = TurnConfig::new(TurnCredentials::new(user, password));
        Relay {
            client: TurnClientUdp::allocate(local, server, config),
            local,
            server,
            epoch: now,
            events: VecDeque::new(),
            received: VecDeque::new(),
            unauthorized: Vec::new(),
            closed: false,
        }
    }

    /// The TURN server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        if self.closed {
            return None;
        }
        self.client
            .relayed_addresses()
            .find(|(transport, _)| *transport == TransportType::Udp)
            .map(|(_, addr)| addr)
    }

    /// Whether the relay is closed (deleted, failed or broken).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn at(&self, now: Instant) -> turn_client_proto::types::Instant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        turn_client_proto::types::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    fn std_time(&self, at: turn_client_proto::types::Instant) -> Instant {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Run `f` on the client; a panic inside the crate closes the relay.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut TurnClientUdp) -> R) -> Option<R> {
        if self.closed {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| f(&mut self.client))) {
            Ok(r) => Some(r),
            Err(_) => {
                log::warn!("TURN client stopped on an internal error; relay closed");
                self.close_now();
                None
            }
        }
    }

    fn close_now(&mut self) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(RelayEvent::Closed);
        }
    }

    /// Allow `peer` to reach us through the relay, and us it (CreatePermission, refreshed by
    /// the client while the relay lives).
    pub fn permit(&mut self, peer: IpAddr, now: Instant) -> Result<(), ReachError> {
        let at = self.at(now);
        let peer = peer.to_canonical();
        match self.guarded(|c| c.create_permission(TransportType::Udp, peer, at)) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(ReachError::Turn(e.to_string())),
            None => Err(ReachError::Turn("the relay is closed".into())),
        }
    }

    /// Bind a channel to `peer` (ChannelBind): later datagrams to it go as ChannelData.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<(), ReachError> {
        let at = self.at(now);
        let peer = canonical(peer);
        match self.guarded(|c| c.bind_channel(TransportType::Udp, peer, at)) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(ReachError::Turn(e.to_string())),
            None => Err(ReachError::Turn("the relay is closed".into())),
        }
    }

    /// Wrap `payload` for `peer`: the datagram to send from the chat socket, and where (the
    /// server). Needs a permission for the peer's address.
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(SocketAddr, Vec<u8>), ReachError> {
        let at = self.at(now);
        let peer = canonical(peer);
        let sent = self.guarded(|c| c.send_to(TransportType::Udp, peer, payload, at));
        match sent {
            Some(Ok(Some(transmit))) => Ok((transmit.to, transmit.data.build())),
            Some(Ok(None)) => Err(ReachError::Turn("nothing to send".into())),
            Some(Err(e)) => Err(ReachError::Turn(e.to_string())),
            None => Err(ReachError::Turn("the relay is closed".into())),
        }
    }

    /// Offer a STUN or ChannelData datagram received on the chat socket from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> Received {
        let from = canonical(from);
        if from != self.server || self.closed {
            return Received::NotForUs;
        }
        if self.relayed_addr().is_none() && self.credentials_refused(datagram) {
            // The client would wait out its retransmissions (about 40 s) before giving up.
            self.events.push_back(RelayEvent::AllocationFailed);
            self.close_now();
            return Received::Handled;
        }
        let at = self.at(now);
        let local = self.local;
        let transmit = Transmit::new(datagram, TransportType::Udp, from, local);
        let received = self.guarded(|c| match c.recv(transmit, at) {
            TurnRecvRet::Handled => Received::Handled,
            TurnRecvRet::Ignored(_) => Received::NotForUs,
            TurnRecvRet::PeerData(data) => Received::PeerData {
                peer: canonical(data.peer),
                payload: data.data().to_vec(),
            },
            // ICMP reports only come over TCP allocations' extensions; nothing to do.
            TurnRecvRet::PeerIcmp { .. } => Received::Handled,
        });
        // Anything further the client decoded from this datagram waits in poll_received.
        while let Some(Some(data)) = self.guarded(|c| c.poll_recv(at)) {
            if self.received.len() < MAX_QUEUED {
                self.received
                    .push_back((canonical(data.peer), data.data().to_vec()));
            }
        }
        self.collect_events();
        received.unwrap_or(Received::Handled)
    }

    /// Whether the server has now answered two different Allocate requests with 401: the
    /// first is the usual challenge, the second refuses our credentials.
    fn credentials_refused(&mut self, datagram: &[u8]) -> bool {
        let Ok(msg) = Message::from_bytes(datagram) else {
            return false;
        };
        let unauthorized = msg.has_class(MessageClass::Error)
            && msg.has_method(ALLOCATE)
            && msg
                .attribute::<ErrorCode>()
                .is_ok_and(|e| e.code() == ErrorCode::UNAUTHORIZED);
        let id = u128::from(msg.transaction_id());
        if unauthorized && !self.unauthorized.contains(&id) {
            self.unauthorized.push(id);
        }
        self.unauthorized.len() >= 2
    }

    /// Further peer data decoded from earlier datagrams, oldest first.
    pub fn poll_received(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.received.pop_front()
    }

    /// The next datagram to send to the server, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let at = self.at(now);
        let transmit = self.guarded(|c| {
            c.poll_transmit(at)
                .map(|t| (t.to, t.data.as_ref().to_vec()))
        });
        self.collect_events();
        transmit.flatten()
    }

    /// When to call [`Relay::poll_transmit`] again at the latest; `None` once closed.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let at = self.at(now);
        let ret = self.guarded(|c| c.poll(at));
        self.collect_events();
        match ret {
            Some(TurnPollRet::WaitUntil(t)) => Some(self.std_time(t).max(now)),
            Some(TurnPollRet::Closed) => {
                self.close_now();
                None
            }
            // TCP-only requests; a UDP allocation never makes them. Look again soon.
            Some(_) => Some(now + Duration::from_millis(100)),
            None => None,
        }
    }

    /// The next thing the relay reports, oldest first.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.collect_events();
        self.events.pop_front()
    }

    fn collect_events(&mut self) {
        while let Some(Some(event)) = self.guarded(|c| c.poll_event()) {
            let event = match event {
                TurnEvent::AllocationCreated(TransportType::Udp, addr) => {
                    RelayEvent::Allocated(canonical(addr))
                }
                TurnEvent::AllocationCreateFailed(_) => RelayEvent::AllocationFailed,
                TurnEvent::PermissionCreated(_, ip) => RelayEvent::Permitted(ip),
                TurnEvent::PermissionCreateFailed(_, ip) => RelayEvent::PermissionFailed(ip),
                TurnEvent::ChannelCreated(_, addr) => RelayEvent::ChannelBound(addr),
                TurnEvent::ChannelCreateFailed(_, addr) => RelayEvent::ChannelFailed(addr),
                // TCP allocations and connections: never asked for.
                _ => continue,
            };
            self.events.push_back(event);
        }
    }

    /// Delete the allocation (a Refresh with lifetime 0): send what
    /// [`Relay::poll_transmit`] returns afterwards, then drop the relay.
    pub fn close(&mut self, now: Instant) -> Result<(), ReachError> {
        let at = self.at(now);
        match self.guarded(|c| c.delete(at)) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(ReachError::Turn(e.to_string())),
            None => Err(ReachError::Turn("the relay is closed".into())),
        }
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::process::{Child, Command, Stdio};

    #[test]
    fn channel_data_is_recognised() {
        assert!(is_channel_data(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3]));
        assert!(
            is_channel_data(&[0x4f, 0xff, 0x00, 0x03, 1, 2, 3, 0]),
            "padding"
        );
        assert!(
            !is_channel_data(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3]),
            "too short"
        );
        assert!(
            !is_channel_data(&[0x40, 0x00, 0x00, 0x01, 1, 2, 3, 4, 5]),
            "too long"
        );
        assert!(
            !is_channel_data(&[0x50, 0x00, 0x00, 0x00]),
            "reserved range"
        );
        assert!(
            !is_channel_data(b"duet"),
            "duet's first byte is not a channel"
        );
        assert!(!is_channel_data(&[0x40, 0x00]));
        assert!(!is_channel_data(&[]));
    }

    #[test]
    fn datagrams_from_others_are_not_for_us() {
        let now = Instant::now();
        let mut relay = Relay::allocate(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:3478".parse().unwrap(),
            "u",
            "p",
            now,
        );
        let (to, request) = relay.poll_transmit(now).unwrap();
        assert_eq!(to, "127.0.0.1:3478".parse().unwrap());
        assert!(
            super::super::stun::is_stun(&request),
            "Allocate is a STUN request"
        );
        let stranger: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(
            relay.handle_datagram(stranger, &request, now),
            Received::NotForUs
        );
        // Garbage from the server itself: ignored, no panic.
        let server = relay.server();
        for junk in [&[][..], &[0x40, 0, 0, 9, 1], &[0u8; 20], &[0xff; 64]] {
            assert_eq!(relay.handle_datagram(server, junk, now), Received::NotForUs);
        }
        assert!(!relay.is_closed());
    }

    /// coturn on loopback, killed when dropped.
    struct Coturn {
        child: Child,
        port: u16,
        _dir: TempDir,
    }

    impl Drop for Coturn {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start_coturn() -> Coturn {
        let port = free_udp_port();
        // Relay ports: a small range that is unlikely to clash with another test's.
        let min = 50_000 + (port % 7_000) * 2;
        let dir = std::env::temp_dir().join(format!("duet-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.1",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={min}"))
            .arg(format!("--max-port={}", min + 10))
            .args(["--lt-cred-mech", "--user", "duet:secret", "--realm", "duet"])
            .args(["--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay"])
            // coturn refuses loopback peers unless told otherwise.
            .args(["--allow-loopback-peers", "--allowed-peer-ip=127.0.0.1"])
            .arg(format!("--db={}", dir.join("turndb").display()))
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .args(["--log-file=stdout", "--simple-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver is needed for this test: apt-get install coturn");
        Coturn {
            child,
            port,
            _dir: TempDir(dir),
        }
    }

    /// Drive the relay on `chat` until `done` says so or `limit` passes; returns peer data.
    fn drive(
        relay: &mut Relay,
        chat: &UdpSocket,
        limit: Duration,
        mut done: impl FnMut(&mut Relay, &[(SocketAddr, Vec<u8>)]) -> bool,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let now = Instant::now();
            while let Some((to, bytes)) = relay.poll_transmit(now) {
                chat.send_to(&bytes, to).unwrap();
            }
            if done(relay, &got) {
                return got;
            }
            let wake = relay
                .poll_timeout(now)
                .unwrap_or(deadline)
                .min(deadline)
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            chat.set_read_timeout(Some(wake)).unwrap();
            if let Ok((len, from)) = chat.recv_from(&mut buf)
                && let Received::PeerData { peer, payload } =
                    relay.handle_datagram(from, &buf[..len], Instant::now())
            {
                got.push((peer, payload));
            }
        }
        panic!("the relay did not get there in {limit:?}");
    }

    #[test]
    fn relays_a_datagram_through_coturn_and_back() {
        let coturn = start_coturn();
        let server: SocketAddr = format!("127.0.0.1:{}", coturn.port).parse().unwrap();
        let chat = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let peer_addr = peer.local_addr().unwrap();

        // coturn needs a moment to open its port: the client's retransmissions cover it.
        let mut relay = Relay::allocate(
            chat.local_addr().unwrap(),
            server,
            "duet",
            "secret",
            Instant::now(),
        );
        let mut allocated = None;
        drive(&mut relay, &chat, Duration::from_secs(15), |r, _| {
            while let Some(event) = r.poll_event() {
                match event {
                    RelayEvent::Allocated(addr) => allocated = Some(addr),
                    RelayEvent::AllocationFailed | RelayEvent::Closed => {
                        panic!("allocation failed: {event:?}")
                    }
                    _ => {}
                }
            }
            allocated.is_some()
        });
        let relayed = allocated.unwrap();
        assert_eq!(relay.relayed_addr(), Some(relayed));
        assert_eq!(relayed.ip(), server.ip());

        relay.permit(peer_addr.ip(), Instant::now()).unwrap();
        let mut permitted = false;
        drive(&mut relay, &chat, Duration::from_secs(10), |r, _| {
            while let Some(event) = r.poll_event() {
                match event {
                    RelayEvent::Permitted(ip) if ip == peer_addr.ip() => permitted = true,
                    RelayEvent::PermissionFailed(_) => panic!("permission refused"),
                    _ => {}
                }
            }
            permitted
        });

        // Through a Send indication: the peer sees the relayed address as the sender.
        let (to, wrapped) = relay
            .send_to(peer_addr, b"duet hello", Instant::now())
            .unwrap();
        assert_eq!(to, server);
        chat.send_to(&wrapped, to).unwrap();
        let mut buf = [0u8; 2048];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"duet hello"[..], relayed));

        // The reply comes back as a Data indication.
        peer.send_to(b"duet reply", relayed).unwrap();
        let got = drive(&mut relay, &chat, Duration::from_secs(5), |_, got| {
            !got.is_empty()
        });
        assert_eq!(got, vec![(peer_addr, b"duet reply".to_vec())]);

        // With a channel: ChannelData both ways.
        relay.bind_channel(peer_addr, Instant::now()).unwrap();
        let mut bound = false;
        drive(&mut relay, &chat, Duration::from_secs(10), |r, _| {
            while let Some(event) = r.poll_event() {
                match event {
                    RelayEvent::ChannelBound(_) => bound = true,
                    RelayEvent::ChannelFailed(_) => panic!("channel refused"),
                    _ => {}
                }
            }
            bound
        });
        let (to, wrapped) = relay
            .send_to(peer_addr, b"duet again", Instant::now())
            .unwrap();
        assert!(is_channel_data(&wrapped), "bound channel: ChannelData");
        chat.send_to(&wrapped, to).unwrap();
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"duet again"[..], relayed));
        peer.send_to(b"duet back", relayed).unwrap();
        let got = drive(&mut relay, &chat, Duration::from_secs(5), |_, got| {
            !got.is_empty()
        });
        assert_eq!(got, vec![(peer_addr, b"duet back".to_vec())]);

        relay.close(Instant::now()).unwrap();
        while let Some((to, bytes)) = relay.poll_transmit(Instant::now()) {
            chat.send_to(&bytes, to).unwrap();
        }
    }

    #[test]
    fn wrong_password_fails_the_allocation() {
        let coturn = start_coturn();
        let server: SocketAddr = format!("127.0.0.1:{}", coturn.port).parse().unwrap();
        let chat = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut relay = Relay::allocate(
            chat.local_addr().unwrap(),
            server,
            "duet",
            "wrong",
            Instant::now(),
        );
        let mut failed = false;
        drive(&mut relay, &chat, Duration::from_secs(15), |r, _| {
            while let Some(event) = r.poll_event() {
                match event {
                    RelayEvent::AllocationFailed | RelayEvent::Closed => failed = true,
                    RelayEvent::Allocated(_) => panic!("allocated with a wrong password"),
                    _ => {}
                }
            }
            failed || r.is_closed()
        });
    }
}
