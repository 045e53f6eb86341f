//! STUN Binding (RFC 8489) on the chat socket: learn the socket's public mapping, the
//! address the peer should send to when we sit behind a NAT.
//!
//! The request must leave from the chat socket itself: a NAT maps each socket on its own,
//! so another socket's mapping says nothing about the chat socket's. This module therefore
//! does no I/O. The chat loop sends what [`BindingProbe::poll_transmit`] returns, offers
//! every received datagram that [`is_stun`] to [`BindingProbe::handle_datagram`], and wakes
//! at [`BindingProbe::poll_timeout`]. Messages are built and parsed by the `stun-types`
//! crate; the retransmission schedule is ours (a dozen lines, where `stun-proto`'s agent
//! would want its own clock type and a request/response bookkeeping we do not need).
//!
//! Retransmission follows RFC 8489 §6.2.1 with RTO = 500 ms, Rc = 7, Rm = 16: requests at
//! 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s, failure at 39.5 s.
//!
//! Contracts: nothing here panics on any input; a response counts only if it comes from
//! the server the request went to, is a Binding success response, and carries the
//! request's transaction id.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::XorMappedAddress;
use stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId as StunTransactionId,
};

use super::ReachError;

/// The magic cookie at bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// A STUN message's header.
pub const HEADER_LEN: usize = 20;
/// The first retransmission timeout.
pub const RTO: Duration = Duration::from_millis(500);
/// Requests sent in all (RFC 8489's Rc).
pub const MAX_REQUESTS: u32 = 7;
/// After the last request, wait this many RTOs for an answer (RFC 8489's Rm).
pub const LAST_WAIT_RTOS: u32 = 16;

/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// Whether a datagram is a STUN message: at least a header, the first two bits zero, the
/// magic cookie, and a length that is a multiple of 4 and matches the datagram.
pub fn is_stun(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..HEADER_LEN) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    header[0] & 0xC0 == 0
        && u32::from_be_bytes([header[4], header[5], header[6], header[7]]) == MAGIC_COOKIE
        && length % 4 == 0
        && HEADER_LEN + length == datagram.len()
}

/// A fresh transaction id from the system's random generator.
pub fn random_transaction_id() -> Result<TransactionId, ReachError> {
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).map_err(|_| ReachError::Random)?;
    Ok(id)
}

fn stun_id(txid: TransactionId) -> StunTransactionId {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(&txid);
    StunTransactionId::from(u128::from_be_bytes(wide))
}

/// A Binding request with transaction id `txid` and a FINGERPRINT (which lets a server
/// that multiplexes STUN with other traffic, as we do, recognise it).
pub fn binding_request(txid: TransactionId) -> Vec<u8> {
    let mut msg = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        stun_id(txid),
        MessageWriteVec::new(),
    );
    // Adding a fingerprint to a message without one cannot fail.
    let _ = msg.add_fingerprint();
    msg.finish()
}

/// The mapped address in a Binding success response to the request `txid`, or `None` if
/// `bytes` is anything else (another transaction, an error response, garbage).
pub fn parse_binding_response(bytes: &[u8], txid: TransactionId) -> Option<SocketAddr> {
    if !is_stun(bytes) {
        return None;
    }
    let msg = Message::from_bytes(bytes).ok()?;
    if !msg.has_class(MessageClass::Success)
        || !msg.has_method(BINDING)
        || msg.transaction_id() != stun_id(txid)
    {
        return None;
    }
    let mapped = msg.attribute::<XorMappedAddress>().ok()?;
    Some(mapped.addr(msg.transaction_id()))
}

/// Whether `bytes` is an error response to the request `txid`.
fn is_error_response(bytes: &[u8], txid: TransactionId) -> bool {
    Message::from_bytes(bytes).is_ok_and(|msg| {
        msg.has_class(MessageClass::Error)
            && msg.has_method(BINDING)
            && msg.transaction_id() == stun_id(txid)
    })
}

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server saw the chat socket at this address.
    Mapped(SocketAddr),
    /// The server answered with an error response.
    Refused,
    /// No answer after the last retransmission.
    TimedOut,
}

/// One Binding transaction with one STUN server, sans-IO.
///
/// Call order: [`BindingProbe::new`]; then, in the chat loop, send every datagram
/// [`BindingProbe::poll_transmit`] returns (from the chat socket, to the address it names),
/// hand it STUN datagrams with [`BindingProbe::handle_datagram`], and wake at
/// [`BindingProbe::poll_timeout`], until [`BindingProbe::outcome`] is `Some`. To refresh a
/// mapping later, start a new probe with a new transaction id.
#[derive(Debug)]
pub struct BindingProbe {
    server: SocketAddr,
    txid: TransactionId,
    sent: u32,
    next: Instant,
    outcome: Option<ProbeOutcome>,
}

impl BindingProbe {
    /// A probe of `server` that sends its first request at `now`.
    pub fn new(server: SocketAddr, txid: TransactionId, now: Instant) -> BindingProbe {
        BindingProbe {
            server: canonical(server),
            txid,
            sent: 0,
            next: now,
            outcome: None,
        }
    }

    /// The server this probe asks.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The next datagram to send and where, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.outcome.is_some() || now < self.next {
            return None;
        }
        if self.sent >= MAX_REQUESTS {
            self.outcome = Some(ProbeOutcome::TimedOut);
            return None;
        }
        self.sent += 1;
        self.next = now + self.wait_after(self.sent);
        Some((self.server, binding_request(self.txid)))
    }

    /// How long to wait after the `n`th request: RTO doubling, then Rm·RTO after the last.
    fn wait_after(&self, n: u32) -> Duration {
        if n >= MAX_REQUESTS {
            RTO * LAST_WAIT_RTOS
        } else {
            // n ≤ 6 here, so the shift cannot overflow.
            RTO * (1u32 << (n - 1))
        }
    }

    /// Offer a datagram received on the chat socket from `from`. Returns `true` if it was
    /// this probe's answer (the caller drops it then), `false` if it is someone else's.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        if canonical(from) != self.server {
            return false;
        }
        if let Some(mapped) = parse_binding_response(datagram, self.txid) {
            if self.outcome.is_none() {
                self.outcome = Some(ProbeOutcome::Mapped(canonical(mapped)));
            }
            return true;
        }
        if is_error_response(datagram, self.txid) {
            if self.outcome.is_none() {
                self.outcome = Some(ProbeOutcome::Refused);
            }
            return true;
        }
        false
    }

    /// When [`BindingProbe::poll_transmit`] next has something to do; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.outcome {
            Some(_) => None,
            None => Some(self.next),
        }
    }

    /// How the probe ended, once it has.
    pub fn outcome(&self) -> Option<ProbeOutcome> {
        self.outcome
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

    /// RFC 5769 §2.2: a Binding success response with an IPv4 XOR-MAPPED-ADDRESS.
    static RESPONSE_IPV4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 §2.3: the same with an IPv6 XOR-MAPPED-ADDRESS.
    static RESPONSE_IPV6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    const RFC_TXID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    #[test]
    fn test_parse_rfc5769_vectors() {
        assert_eq!(
            parse_binding_response(&RESPONSE_IPV4, RFC_TXID),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(
            parse_binding_response(&RESPONSE_IPV6, RFC_TXID),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        let mut other = RFC_TXID;
        other[11] ^= 1;
        assert_eq!(parse_binding_response(&RESPONSE_IPV4, other), None);
    }

    #[test]
    fn test_emit_binding_request() {
        let txid = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let request = binding_request(txid);
        assert!(is_stun(&request));
        // Header: Binding request, 8 bytes of attributes (the FINGERPRINT), cookie, id.
        assert_eq!(
            &request[..8],
            &[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42]
        );
        assert_eq!(&request[8..20], &txid);
        assert_eq!(&request[20..24], &[0x80, 0x28, 0x00, 0x04]);
        assert_eq!(request.len(), 28);
    }

    #[test]
    fn test_is_stun() {
        assert!(is_stun(&RESPONSE_IPV4));
        assert!(!is_stun(&RESPONSE_IPV4[..79]), "length must match");
        assert!(!is_stun(&RESPONSE_IPV4[..19]));
        let mut bad = RESPONSE_IPV4;
        bad[4] = 0;
        assert!(!is_stun(&bad), "cookie");
        let mut bad = RESPONSE_IPV4;
        bad[0] = 0x41;
        assert!(!is_stun(&bad), "top bits");
        assert!(!is_stun(b"duet hello, this is a chat datagram"));
        assert!(!is_stun(&[]));
    }

    #[test]
    fn test_impossible_len() {
        // Garbage, truncations and bit flips of a valid response: never a panic.
        for len in 0..RESPONSE_IPV4.len() {
            assert_eq!(
                parse_binding_response(&RESPONSE_IPV4[..len], RFC_TXID),
                None
            );
        }
        for i in 0..RESPONSE_IPV4.len() {
            for bit in 0..8 {
                let mut bad = RESPONSE_IPV4;
                bad[i] ^= 1 << bit;
                let _ = parse_binding_response(&bad, RFC_TXID);
            }
        }
    }

    #[test]
    fn retransmit_schedule_follows_rfc8489() {
        let start = Instant::now();
        let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let mut probe = BindingProbe::new(server, [0; 12], start);
        let mut sends = Vec::new();
        // Step a simulated clock in 100 ms ticks for a minute.
        for tick in 0..600u32 {
            let now = start + Duration::from_millis(100) * tick;
            if let Some((to, bytes)) = probe.poll_transmit(now) {
                assert_eq!(to, server);
                assert!(is_stun(&bytes));
                sends.push(now - start);
            }
        }
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(probe.outcome(), Some(ProbeOutcome::TimedOut));
        assert_eq!(probe.poll_timeout(), None);
    }

    #[test]
    fn answers_only_from_the_server_count() {
        let now = Instant::now();
        let server: SocketAddr = "192.0.2.9:3478".parse().unwrap();
        let mut probe = BindingProbe::new(server, RFC_TXID, now);
        assert!(probe.poll_transmit(now).is_some());
        let stranger: SocketAddr = "192.0.2.10:3478".parse().unwrap();
        assert!(!probe.handle_datagram(stranger, &RESPONSE_IPV4));
        assert_eq!(probe.outcome(), None);
        // From a dual-stack socket the server shows up IPv4-mapped: still the server.
        let mapped: SocketAddr = "[::ffff:192.0.2.9]:3478".parse().unwrap();
        assert!(probe.handle_datagram(mapped, &RESPONSE_IPV4));
        assert_eq!(
            probe.outcome(),
            Some(ProbeOutcome::Mapped("192.0.2.1:32853".parse().unwrap()))
        );
        assert_eq!(probe.poll_transmit(now + Duration::from_secs(5)), None);
    }

    /// A minimal STUN server: answers one Binding request with the sender's address.
    fn answer_one(server: &UdpSocket) {
        let mut buf = [0u8; 1500];
        let (len, from) = server.recv_from(&mut buf).unwrap();
        let request = Message::from_bytes(&buf[..len]).unwrap();
        assert!(request.has_class(MessageClass::Request) && request.has_method(BINDING));
        let mut response = Message::builder_success(&request, MessageWriteVec::new());
        response
            .add_attribute(&XorMappedAddress::new(from, request.transaction_id()))
            .unwrap();
        response.add_fingerprint().unwrap();
        server.send_to(&response.finish(), from).unwrap();
    }

    #[test]
    fn probe_learns_the_sockets_address_from_a_loopback_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let chat = UdpSocket::bind("127.0.0.1:0").unwrap();
        chat.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The chat socket also carries duet's own datagrams: one arrives first.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"duet datagram", chat.local_addr().unwrap())
            .unwrap();

        let now = Instant::now();
        let mut probe = BindingProbe::new(
            server.local_addr().unwrap(),
            random_transaction_id().unwrap(),
            now,
        );
        let (to, bytes) = probe.poll_transmit(now).unwrap();
        chat.send_to(&bytes, to).unwrap();
        answer_one(&server);

        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            let (len, from) = chat.recv_from(&mut buf).unwrap();
            let datagram = &buf[..len];
            if is_stun(datagram) {
                assert!(probe.handle_datagram(from, datagram));
            } else {
                assert_eq!(datagram, b"duet datagram");
                assert!(!probe.handle_datagram(from, datagram));
            }
        }
        assert_eq!(
            probe.outcome(),
            Some(ProbeOutcome::Mapped(chat.local_addr().unwrap()))
        );
    }
}
