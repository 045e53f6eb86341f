//! The sealed datagram: what duet actually puts on the wire between paired peers.
//!
//! Every duet datagram is one of five messages: two handshake messages, the transport message
//! and two discovery messages. A transport message carries one inner
//! [`super::Frame`] (header and text), encrypted and authenticated with ChaCha20-Poly1305
//! under keys from a Noise IK handshake; the 16-byte header below is its associated data.
//!
//! ```text
//! 0       2       3       4               8                               16
//! +-------+-------+-------+---------------+-------------------------------+------------------
//! | "du"  | ver 2 | type  | index         | counter (transport only)      | ...
//! +-------+-------+-------+---------------+-------------------------------+------------------
//!
//! type 1 INITIATION: index = initiator's sender index;  bytes 8..112   Noise IK message 1
//!                                                        bytes 112..128 mac1
//! type 2 RESPONSE:   index = responder's sender index;  bytes 8..12    receiver index
//!                                                        bytes 12..60   Noise IK message 2
//!                                                        bytes 60..76   mac1
//! type 3 TRANSPORT:  index = the receiver's index;      bytes 8..16    counter (nonce)
//!                                                        bytes 16..     ciphertext + 16-byte tag
//! ```
//!
//! The initiation's Noise payload is the initiator's 8-byte timestamp (encrypted); `mac1`
//! is a keyed hash of everything before it, keyed with the receiver's static public key
//! (see `docs/PROTOCOL.md`, "Handshake").
//!
//! Discovery (no index): a PROBE asks "is my paired peer here?", a FOUND answers it. Both
//! are exactly [`PROBE_LEN`] bytes and carry nothing but random bytes and a MAC only the two
//! paired peers can compute (see `docs/SECURITY.md`, "Finding a peer on the LAN").
//!
//! ```text
//! 0       2       3       4                               20                              36
//! +-------+-------+-------+-------------------------------+-------------------------------+
//! | "du"  | ver 2 | type  | nonce (16 random bytes)       | tag (16 bytes)                |
//! +-------+-------+-------+-------------------------------+-------------------------------+
//!
//! type 4 PROBE: a fresh nonce;            type 5 FOUND: the nonce of the probe it answers
//! ```
//! Contract: after [`Sealed::check_len`] no accessor panics; the lengths of handshake
//! messages are exact, so the Noise implementation never sees a short message.

use super::{Error, Result};
use crate::MAX_DATAGRAM;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const INDEX: Range<usize> = 4..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const RESPONSE_RECEIVER: Range<usize> = 8..12;
    pub const NONCE: Range<usize> = 4..20;
    pub const DISCOVERY_TAG: Range<usize> = 20..36;
}

/// The version of sealed datagrams.
pub const VERSION: u8 = 2;
/// Bytes of the transport header (the AEAD's associated data).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Bytes of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to an inner frame.
pub const OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Bytes of the initiator's timestamp, the payload of Noise IK message 1.
pub const TIMESTAMP_LEN: usize = 8;
/// Noise IK message 1 with the timestamp as payload: e (32) + sealed s (48) + sealed
/// timestamp (8 + 16).
pub const INITIATION_NOISE_LEN: usize = 80 + TIMESTAMP_LEN + TAG_LEN;
/// Noise IK message 2 with an empty payload: e (32) + sealed payload (16).
pub const RESPONSE_NOISE_LEN: usize = 48;
/// Bytes of a handshake message's `mac1` (a truncated keyed BLAKE2s).
pub const MAC_LEN: usize = 16;
/// Length of an initiation datagram.
pub const INITIATION_LEN: usize = 8 + INITIATION_NOISE_LEN + MAC_LEN;
/// Length of a response datagram.
pub const RESPONSE_LEN: usize = 12 + RESPONSE_NOISE_LEN + MAC_LEN;

/// Bytes of a discovery nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a discovery tag (a truncated keyed BLAKE2s).
pub const DISCOVERY_TAG_LEN: usize = 16;
/// Length of a PROBE datagram.
pub const PROBE_LEN: usize = 4 + NONCE_LEN + DISCOVERY_TAG_LEN;
/// Length of a FOUND datagram.
pub const FOUND_LEN: usize = PROBE_LEN;

/// Message types (byte 3).
pub mod kind {
    /// Noise IK message 1.
    pub const INITIATION: u8 = 1;
    /// Noise IK message 2.
    pub const RESPONSE: u8 = 2;
    /// An encrypted inner frame.
    pub const TRANSPORT: u8 = 3;
    /// Discovery: is my paired peer on this network?
    pub const PROBE: u8 = 4;
    /// Discovery: yes, here (the answer to one PROBE).
    pub const FOUND: u8 = 5;
}

/// A read/write wrapper around a sealed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sealed<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        Sealed { buffer }
    }

    /// Wrap and check that the length fits the type exactly (transport: header, tag, and at
    /// most [`MAX_DATAGRAM`] in all).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let s = Self::new_unchecked(buffer);
        s.check_len()?;
        Ok(s)
    }

    /// Check the magic, version and the length for the type.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < 8
            || b.len() > MAX_DATAGRAM
            || b[field::MAGIC] != *b"du"
            || b[field::VERSION] != VERSION
        {
            return Err(Error);
        }
        let ok = match b[field::TYPE] {
            kind::INITIATION => b.len() == INITIATION_LEN,
            kind::RESPONSE => b.len() == RESPONSE_LEN,
            kind::TRANSPORT => b.len() >= OVERHEAD,
            kind::PROBE | kind::FOUND => b.len() == PROBE_LEN,
            _ => false,
        };
        if ok { Ok(()) } else { Err(Error) }
    }

    /// The message type.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Sender index (handshakes) or receiver index (transport).
    pub fn index(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::INDEX])
    }
    /// A response's receiver index: the initiator's sender index.
    pub fn response_receiver(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::RESPONSE_RECEIVER])
    }
    /// A transport message's counter.
    pub fn counter(&self) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        u64::from_be_bytes(a)
    }
    /// The Noise handshake message of an initiation or response.
    pub fn noise(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = b.len() - MAC_LEN;
        match b[field::TYPE] {
            kind::RESPONSE => &b[12..end],
            _ => &b[8..end],
        }
    }
    /// What a handshake message's `mac1` covers: every byte before it.
    pub fn mac_covered(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..b.len() - MAC_LEN]
    }
    /// A handshake message's `mac1`: its last [`MAC_LEN`] bytes.
    pub fn mac1(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - MAC_LEN..]
    }
    /// A PROBE's nonce, or the nonce of the probe a FOUND answers.
    pub fn nonce(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NONCE]
    }
    /// A PROBE's or FOUND's tag.
    pub fn discovery_tag(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DISCOVERY_TAG]
    }
    /// A transport message's header: the associated data.
    pub fn transport_header(&self) -> &[u8] {
        &self.buffer.as_ref()[..TRANSPORT_HEADER_LEN]
    }
    /// A transport message's ciphertext and tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.buffer.as_ref()[TRANSPORT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Sealed<T> {
    /// Write magic, version, type and index.
    pub fn set_header(&mut self, kind: u8, index: u32) {
        let b = self.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(b"du");
        b[field::VERSION] = VERSION;
        b[field::TYPE] = kind;
        b[field::INDEX].copy_from_slice(&index.to_be_bytes());
    }
    /// Write magic, version and type of a discovery message (no index).
    pub fn set_discovery_header(&mut self, kind: u8) {
        let b = self.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(b"du");
        b[field::VERSION] = VERSION;
        b[field::TYPE] = kind;
    }
    /// Write a PROBE's or FOUND's nonce.
    pub fn set_nonce(&mut self, nonce: &[u8; NONCE_LEN]) {
        self.buffer.as_mut()[field::NONCE].copy_from_slice(nonce);
    }
    /// Write a PROBE's or FOUND's tag.
    pub fn set_discovery_tag(&mut self, tag: &[u8; DISCOVERY_TAG_LEN]) {
        self.buffer.as_mut()[field::DISCOVERY_TAG].copy_from_slice(tag);
    }
    /// Write a transport message's counter.
    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
    }
    /// Write a handshake message's `mac1` (its last [`MAC_LEN`] bytes).
    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let b = self.buffer.as_mut();
        let at = b.len() - MAC_LEN;
        b[at..].copy_from_slice(mac);
    }
    /// Write a response's receiver index.
    pub fn set_response_receiver(&mut self, index: u32) {
        self.buffer.as_mut()[field::RESPONSE_RECEIVER].copy_from_slice(&index.to_be_bytes());
    }
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod test {
    use super::*;

    /// docs/PROTOCOL.md: a transport header, receiver index 0x0a0b0c0d, counter 7.
    static TRANSPORT_HEADER: [u8; 16] = [
        0x64, 0x75, 0x02, 0x03, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 7,
    ];

    /// docs/PROTOCOL.md: a PROBE with nonce 00 01 .. 0f and tag f0 f1 .. ff.
    static PROBE_BYTES: [u8; PROBE_LEN] = [
        0x64, 0x75, 0x02, 0x04, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
        0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
        0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
    ];

    fn counting(from: u8) -> [u8; 16] {
        core::array::from_fn(|i| from + i as u8)
    }

    #[test]
    fn test_deconstruct_probe() {
        let p = Sealed::new_checked(&PROBE_BYTES[..]).unwrap();
        assert_eq!(p.kind(), kind::PROBE);
        assert_eq!(p.nonce(), &counting(0));
        assert_eq!(p.discovery_tag(), &counting(0xf0));
    }

    #[test]
    fn test_construct_probe_and_found() {
        let mut bytes = [0xaau8; PROBE_LEN];
        let mut p = Sealed::new_unchecked(&mut bytes[..]);
        p.set_discovery_header(kind::PROBE);
        p.set_nonce(&counting(0));
        p.set_discovery_tag(&counting(0xf0));
        assert_eq!(bytes, PROBE_BYTES);
        Sealed::new_unchecked(&mut bytes[..]).set_discovery_header(kind::FOUND);
        let f = Sealed::new_checked(&bytes[..]).unwrap();
        assert_eq!((f.kind(), f.nonce()), (kind::FOUND, &counting(0)[..]));
    }

    #[test]
    fn test_impossible_len_probe_and_found() {
        let mut bytes = [0u8; PROBE_LEN + 1];
        bytes[..PROBE_LEN].copy_from_slice(&PROBE_BYTES);
        for k in [kind::PROBE, kind::FOUND] {
            bytes[3] = k;
            assert!(Sealed::new_checked(&bytes[..PROBE_LEN]).is_ok());
            assert!(Sealed::new_checked(&bytes[..PROBE_LEN - 1]).is_err());
            assert!(Sealed::new_checked(&bytes[..]).is_err());
        }
        bytes[3] = 6;
        assert!(Sealed::new_checked(&bytes[..PROBE_LEN]).is_err());
    }

    #[test]
    fn test_deconstruct() {
        let mut bytes = [0u8; 48];
        bytes[..16].copy_from_slice(&TRANSPORT_HEADER);
        let s = Sealed::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (s.kind(), s.index(), s.counter()),
            (kind::TRANSPORT, 0x0a0b_0c0d, 7)
        );
        assert_eq!(s.transport_header(), &TRANSPORT_HEADER);
        assert_eq!(s.ciphertext().len(), 32);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 16];
        let mut s = Sealed::new_unchecked(&mut bytes[..]);
        s.set_header(kind::TRANSPORT, 0x0a0b_0c0d);
        s.set_counter(7);
        assert_eq!(bytes, TRANSPORT_HEADER);
    }

    #[test]
    fn test_impossible_len() {
        let mut init = [0u8; INITIATION_LEN + 1];
        Sealed::new_unchecked(&mut init[..]).set_header(kind::INITIATION, 1);
        assert!(Sealed::new_checked(&init[..INITIATION_LEN]).is_ok());
        assert!(Sealed::new_checked(&init[..]).is_err());
        assert!(Sealed::new_checked(&init[..INITIATION_LEN - 1]).is_err());
        let mut resp = [0u8; RESPONSE_LEN];
        Sealed::new_unchecked(&mut resp[..]).set_header(kind::RESPONSE, 1);
        assert!(Sealed::new_checked(&resp[..]).is_ok());
        assert!(Sealed::new_checked(&resp[..RESPONSE_LEN - 1]).is_err());
        let mut t = [0u8; MAX_DATAGRAM + 1];
        Sealed::new_unchecked(&mut t[..]).set_header(kind::TRANSPORT, 1);
        assert!(Sealed::new_checked(&t[..OVERHEAD - 1]).is_err());
        assert!(Sealed::new_checked(&t[..MAX_DATAGRAM]).is_ok());
        assert!(Sealed::new_checked(&t[..]).is_err());
        for len in 0..8 {
            assert!(Sealed::new_checked(&t[..len]).is_err());
        }
        t[3] = 9;
        assert!(Sealed::new_checked(&t[..100]).is_err());
        t[3] = kind::TRANSPORT;
        t[2] = 1;
        assert!(
            Sealed::new_checked(&t[..100]).is_err(),
            "a plaintext v1 frame is not sealed"
        );
    }
}
