//! Plain datagrams, as the tutorial's programs, `nc -u` and socat send them.
//!
//! No framing, no acknowledgement, no encryption: a datagram is a message. [`Plain`] is a
//! [`Protocol`] so it runs over the same [`crate::Driver`] as the duet session. Text is
//! encoded with [`crate::text::encode`] (split into datagrams of at most [`MAX_DATAGRAM`]
//! bytes on character boundaries) and received bytes are handed out raw, with the sender's
//! address, for the caller to decode and show. With no peer set, the first sender becomes
//! the peer.

use core::net::SocketAddr;

use heapless::{Deque, Vec};

use crate::driver::{Protocol, Transmit};
use crate::text::{self, Encoding};
use crate::time::Instant;
use crate::{Datagram, MAX_DATAGRAM};

/// Datagrams one [`Plain`] buffers in each direction.
pub const QUEUE: usize = 8;

/// Something that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlainEvent<'a> {
    /// A datagram of at most [`MAX_DATAGRAM`] bytes.
    Datagram {
        /// Who sent it.
        from: SocketAddr,
        /// Its bytes, undecoded.
        bytes: &'a [u8],
    },
    /// A datagram longer than [`MAX_DATAGRAM`] bytes was dropped whole.
    Oversized {
        /// Who sent it.
        from: SocketAddr,
    },
}

/// Why [`Plain::send_text`] refused text. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlainSendError {
    /// No peer address is set.
    NoPeer,
    /// The text needs more datagrams than the queue has room for.
    QueueFull,
}

impl core::fmt::Display for PlainSendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PlainSendError::NoPeer => "no peer address set",
            PlainSendError::QueueFull => "send queue full",
        })
    }
}

impl core::error::Error for PlainSendError {}

// No heap to box into: every slot of the fixed inbox holds a whole datagram anyway.
#[allow(clippy::large_enum_variant)]
enum Arrival {
    Datagram(SocketAddr, Datagram),
    Oversized(SocketAddr),
}

/// Plain-datagram chat with a legacy peer.
pub struct Plain {
    peer: Option<SocketAddr>,
    encoding: Encoding,
    outbox: Deque<Datagram, QUEUE>,
    inbox: Deque<Arrival, QUEUE>,
    /// The arrival handed out by the last `poll_event`.
    current: Option<Arrival>,
}

impl Plain {
    /// Plain datagrams to `peer` (if known) in `encoding`.
    pub fn new(peer: Option<SocketAddr>, encoding: Encoding) -> Self {
        Plain {
            peer,
            encoding,
            outbox: Deque::new(),
            inbox: Deque::new(),
            current: None,
        }
    }

    /// Where datagrams go.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Send to someone else from now on.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// The encoding text is sent in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Datagrams queued but not yet sent.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Queue `text` as one datagram, or several cut on character boundaries when its
    /// encoding is longer than [`MAX_DATAGRAM`]. Returns how many datagrams and how many
    /// characters the encoding could not represent.
    pub fn send_text(&mut self, text: &str) -> Result<text::Encoded, PlainSendError> {
        if self.peer.is_none() {
            return Err(PlainSendError::NoPeer);
        }
        let mut parts = 0;
        let _ = text::encode(text, self.encoding, MAX_DATAGRAM, |_| parts += 1);
        if parts > QUEUE - self.outbox.len() {
            return Err(PlainSendError::QueueFull);
        }
        let outbox = &mut self.outbox;
        text::encode(text, self.encoding, MAX_DATAGRAM, |bytes| {
            // Room was checked above; from_slice cannot fail on a part of MAX_DATAGRAM.
            if let Ok(d) = Vec::from_slice(bytes) {
                let _ = outbox.push_back(d);
            }
        })
        .map_err(|_| PlainSendError::QueueFull)
    }

    /// The next arrival to show, if any. It borrows `self` until the next call.
    pub fn poll_event(&mut self) -> Option<PlainEvent<'_>> {
        self.current = self.inbox.pop_front();
        Some(match self.current.as_ref()? {
            Arrival::Datagram(from, bytes) => PlainEvent::Datagram { from: *from, bytes },
            Arrival::Oversized(from) => PlainEvent::Oversized { from: *from },
        })
    }
}

impl Protocol for Plain {
    fn wants_datagram(&self) -> bool {
        !self.inbox.is_full()
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, datagram: &[u8]) {
        // As the tutorial's programs do: with no peer set, answer whoever wrote.
        self.peer.get_or_insert(from);
        let arrival = match Vec::from_slice(datagram) {
            Ok(bytes) => Arrival::Datagram(from, bytes),
            Err(_) => Arrival::Oversized(from),
        };
        // The driver asks `wants_datagram` first, so there is room.
        let _ = self.inbox.push_back(arrival);
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        let dst = self.peer?;
        let datagram = self.outbox.pop_front()?;
        buf[..datagram.len()].copy_from_slice(&datagram);
        Some(Transmit {
            dst,
            len: datagram.len(),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.outbox.is_empty() && self.peer.is_some()).then_some(Instant::ZERO)
    }
}
