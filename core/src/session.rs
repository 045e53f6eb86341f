//! The reliable two-person chat session, sans-IO in quinn-proto's shape.
//!
//! A [`Session`] holds no socket and reads no clock. The caller moves bytes and time:
//!
//! 1. [`Session::handle_datagram`] for every datagram that arrives on the socket;
//! 2. [`Session::handle_timeout`] once `now` has reached [`Session::poll_timeout`];
//! 3. [`Session::poll_transmit`] until it returns `None`, sending each datagram it writes;
//! 4. [`Session::poll_event`] until it returns `None`, showing each event (with
//!    [`Config::confirm_receipt`], then [`Session::confirm_received`] once what it showed is
//!    stored);
//! 5. wait for a datagram or [`Session::poll_timeout`], whichever comes first; repeat.
//!
//! [`crate::Driver`] does steps 1–3 and 5's arithmetic over any `embedded_nal::UdpFullStack`.
//! [`Session::send_text`] and [`Session::close`] may be called at any point.
//!
//! What it guarantees: every message is split into parts of at most
//! [`crate::wire::frame::MAX_PAYLOAD`] bytes, text on character boundaries (a binary
//! message of [`Session::send_bytes`] anywhere), or, to a peer whose FEATURES frame said it
//! takes them, several short text messages share one part as a bundle (`docs/PROTOCOL.md`,
//! section 13.1; the `bundle` feature); every part is acknowledged
//! (cumulative plus selective acks, piggybacked on data); parts are retransmitted on an
//! RFC 6298 timeout with exponential backoff, or early when a later part was acknowledged
//! (a simplified RACK); a message fails when any of its parts goes unacknowledged for
//! [`Config::delivery_timeout`] after that part's first transmission. The receiver hands every
//! message to the application exactly once, whole, and in the order it was sent, and drops
//! duplicates in a sliding window; it acknowledges a message (and its sender reports it
//! delivered) only once the application took it, or, with [`Config::confirm_receipt`], once
//! the application confirmed it stored it. Nothing here panics on input, and nothing
//! allocates.
//!
//! Peer rules: a session created without a peer address adopts the first sender it hears.
//! A frame from a new epoch (the peer restarted, or a new peer) replaces the peer when it
//! comes from the peer's address, or when the peer is not reachable (never heard, closed,
//! or silent past [`Config::idle_timeout`]) — otherwise it is dropped and counted as
//! foreign. Plaintext frames prove nothing about their sender; pairing and encryption
//! replace these rules with keys.

use core::net::SocketAddr;

use heapless::Deque;

use crate::MAX_DATAGRAM;
use crate::driver::{Protocol, Transmit};
use crate::text;
use crate::time::{Duration, Instant};
#[cfg(feature = "bundle")]
use crate::wire::frame::features;
use crate::wire::frame::{
    ID_LEN, MAX_PAYLOAD, RECORD_HEADER, flags as frame_flags, read_record, record_header,
};
use crate::wire::{AckInfo, Body, Frame, Payload, Repr};

mod bytes;

use bytes::ByteQueue;

/// Parts one session can hold unacknowledged (and outcomes not yet polled).
pub const OUTBOX_PARTS: usize = 32;
/// Parts in flight at once; also how far beyond the next part it expects a receiver accepts
/// parts. The acknowledgement's 32 selective bits cover the whole window.
pub const WINDOW: usize = 32;
/// Parts one message may have.
pub const MAX_PARTS: usize = 4;
/// The longest message in bytes (of UTF-8, or of a binary message) that a receiver can
/// reassemble.
pub const MAX_MESSAGE: usize = MAX_PARTS * PART_TEXT;
/// Text bytes one part carries at most (the first part also carries the message id; every
/// part is cut to the same size so a message's split does not depend on where it starts).
pub const PART_TEXT: usize = MAX_PAYLOAD - ID_LEN;
/// Bytes of queued text a [`Session`] holds by default: a full outbox of the largest parts.
pub const OUTBOX_BYTES: usize = OUTBOX_PARTS * PART_TEXT;
/// Bytes of received text a [`Session`] holds by default: a window of the largest parts and
/// a whole message waiting for the application.
pub const INBOX_BYTES: usize = WINDOW * MAX_PAYLOAD + MAX_MESSAGE;

/// Timing of a session. The defaults suit a LAN or the Internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Retransmission timeout before any round trip was measured (RFC 6298: 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout, also after backoff.
    pub max_rto: Duration,
    /// A message not acknowledged this long after its first transmission fails.
    pub delivery_timeout: Duration,
    /// Probe the peer with a PING after this long without hearing from it or sending it
    /// data (data is acknowledged, which proves liveness just as well).
    pub keepalive: Duration,
    /// The peer counts as unreachable after this long without hearing from it.
    pub idle_timeout: Duration,
    /// Acknowledge a received message only once the application confirms it stored it
    /// ([`Session::confirm_received`]), not as soon as it asks for the next event.
    ///
    /// For an application that stores messages in batches (several messages per
    /// transaction): the sender hears "delivered" only for messages that were committed, and
    /// a failed store leaves them unacknowledged, so their sender fails them after its
    /// [`Config::delivery_timeout`] instead of reporting them delivered. Off by default.
    pub confirm_receipt: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(100),
            max_rto: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            confirm_receipt: false,
        }
    }
}

/// Names one message this session sent: they are numbered from 0 in the order they were
/// queued (several may share a part, in a bundle, so this is not a sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MessageId(pub u32);

impl core::fmt::Display for MessageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why [`Session::send_text`] refused a message. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// The message is empty.
    Empty,
    /// The message needs more than [`MAX_PARTS`] parts (or more bytes than the outbox holds).
    TooLong,
    /// The outbox has no room: wait for `Delivered`/`Failed` events and try again.
    OutboxFull,
    /// The session was closed.
    Closed,
    /// This session's sequence numbers are used up; start a new session.
    Exhausted,
}

impl SendError {
    /// Why, in words (the `Display` text, for a board without `core::fmt`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SendError::Empty => "empty message",
            SendError::TooLong => "message too long",
            SendError::OutboxFull => "outbox full: wait for earlier messages to be delivered",
            SendError::Closed => "session closed",
            SendError::Exhausted => "sequence numbers used up: restart the session",
        }
    }
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for SendError {}

/// Why a message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FailReason {
    /// The peer did not acknowledge it within [`Config::delivery_timeout`].
    Timeout,
}

impl FailReason {
    /// Why, in words (the `Display` text, for a board without `core::fmt`).
    pub const fn as_str(self) -> &'static str {
        match self {
            FailReason::Timeout => "peer did not acknowledge it",
        }
    }
}

impl core::fmt::Display for FailReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the application should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// A whole message from the peer, exactly once and in order.
    Message(&'a str),
    /// A whole binary message from the peer ([`Session::send_bytes`]), exactly once and in
    /// order with the text messages. An application that has no use for them takes them and
    /// ignores them: they are acknowledged like any message.
    Data(&'a [u8]),
    /// The peer acknowledged every part of this message.
    Delivered(MessageId),
    /// This message will not be delivered.
    Failed(MessageId, FailReason),
    /// The peer is reachable (again, or at a new address).
    PeerUp(SocketAddr),
    /// The peer is not reachable: it closed, or went silent.
    PeerDown,
}

/// Counters: what arrived, what was rejected, what was resent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Datagrams handed to [`Session::handle_datagram`].
    pub datagrams_in: u32,
    /// Datagrams written by [`Session::poll_transmit`].
    pub datagrams_out: u32,
    /// Datagrams longer than [`MAX_DATAGRAM`], rejected whole.
    pub oversized: u32,
    /// Datagrams that are not valid duet frames.
    pub malformed: u32,
    /// Valid frames from someone who is not the peer (see the module docs' peer rules).
    pub foreign: u32,
    /// Frames from an earlier run of the peer, arriving late.
    pub stale: u32,
    /// Parts received again after they were received once.
    pub duplicates: u32,
    /// Parts too far ahead of the receive window, dropped for the sender to resend.
    pub out_of_window: u32,
    /// Parts retransmitted.
    pub retransmits: u32,
    /// Messages received whole and handed to the application.
    pub messages_in: u32,
}

/// One part of an outgoing message, or a bundle of whole messages; its text (a bundle's
/// records) is in the session's outbox text, in part order.
#[derive(Debug)]
struct OutPart {
    seq: u32,
    /// Its message, or a bundle's first: the bundle holds `messages` messages numbered on.
    message: MessageId,
    messages: u8,
    /// A bundle ([`crate::wire::frame::Bundle`]): `len` bytes of records, `id` unused.
    bundle: bool,
    /// The message's id on the wire (sent with the first part).
    id: u64,
    first: bool,
    last: bool,
    /// A part of a binary message, not text.
    binary: bool,
    /// Bytes of text.
    len: u16,
    /// When it was first sent; `None` until then.
    first_sent: Option<Instant>,
    last_sent: Instant,
    /// When to send it again.
    due: Instant,
    transmissions: u32,
    /// Retransmission timer expiries: RFC 6298 doubles the timeout on each, not on an
    /// early (RACK) resend, or a burst of early resends would leave the part at `max_rto`.
    backoff: u32,
    /// `due` was brought forward by RACK: the next send is early, not a timer expiry.
    early: bool,
    /// Order of its latest transmission among all transmissions: RACK's "sent before".
    order: u32,
    /// Acknowledged, cumulatively or selectively: no need to send it again.
    acked: bool,
    /// Covered by the cumulative acknowledgement: the peer's application has its message.
    consumed: bool,
    /// Its message was reported delivered or failed; the part only waits to be popped.
    done: bool,
}

impl OutPart {
    /// A whole message in one part, of no bytes yet, never sent.
    fn new(seq: u32, message: MessageId, id: u64, now: Instant) -> Self {
        OutPart {
            seq,
            message,
            messages: 1,
            bundle: false,
            id,
            first: true,
            last: true,
            binary: false,
            len: 0,
            first_sent: None,
            last_sent: now,
            due: now,
            transmissions: 0,
            backoff: 0,
            early: false,
            order: 0,
            acked: false,
            consumed: false,
            done: false,
        }
    }
}

/// An outcome waiting for [`Session::poll_event`]: of `count` messages numbered from
/// `first` (a bundle's are settled together).
#[derive(Clone, Copy, Debug)]
struct Outcome {
    first: MessageId,
    count: u8,
    /// `None`: delivered.
    failed: Option<FailReason>,
}

/// A received part; its text is in [`Inbound::text`], in the order of [`Inbound::parts`].
#[derive(Clone, Copy, Debug)]
struct InPart {
    seq: u32,
    id: u64,
    /// FIRST and LAST as on the wire ([`crate::wire::frame::flags`]), and [`BINARY_PART`]:
    /// one byte, so a part record stays 16 bytes (a board holds 36 of them).
    bits: u8,
    /// Bytes of text.
    len: u16,
}

/// [`InPart::bits`]: a part of a binary message, not text.
const BINARY_PART: u8 = 0x80;
/// [`InPart::bits`]: a bundle of whole text messages.
const BUNDLE_PART: u8 = 0x40;

impl InPart {
    fn first(&self) -> bool {
        self.bits & frame_flags::FIRST != 0
    }
    fn last(&self) -> bool {
        self.bits & frame_flags::LAST != 0
    }
    fn binary(&self) -> bool {
        self.bits & BINARY_PART != 0
    }
    fn bundle(&self) -> bool {
        // Constant false without the feature, so a board's build has no bundle code.
        cfg!(feature = "bundle") && self.bits & BUNDLE_PART != 0
    }
}

enum Received {
    Accepted,
    Duplicate,
    OutOfWindow,
}

/// The receiving half: parts held in order, reassembled into messages in place.
///
/// `parts` starts with the `message_parts` parts of the current message (being assembled,
/// or whole and waiting for the application), followed by parts that arrived ahead of
/// `next_deliver`, sorted by seq. `text` holds their bytes in the same order, so the current
/// message is the first `message_len` bytes of `text`: no copy to reassemble it.
#[derive(Debug)]
struct Inbound<const IN: usize> {
    /// The peer's epoch; 0 until one was heard.
    epoch: u32,
    /// The next seq to add to the current message. Everything below it is done with.
    next_deliver: u32,
    /// The peer's highest base: missing parts below it will never come.
    skip_to: u32,
    parts: heapless::Vec<InPart, { WINDOW + MAX_PARTS }>,
    text: ByteQueue<IN>,
    /// Parts and bytes of the current message at the front of `parts` and `text`.
    message_parts: usize,
    message_len: usize,
    /// The id of the current message.
    message_id: u64,
    /// The current message is binary, not text (from its first part).
    message_binary: bool,
    /// The current "message" is a bundle, whose messages are handed out one by one: the
    /// one this many bytes into it is the current one.
    bundle_at: Option<usize>,
    /// The seq of the current message's first part while it is being reassembled or waits
    /// for the application: the cumulative acknowledgement stops there, so a sender hears
    /// "delivered" only once the application took the message.
    message_start: Option<u32>,
    /// The seq of the first part of the oldest message handed to the application and not yet
    /// confirmed ([`Config::confirm_receipt`]): the cumulative acknowledgement stops there
    /// until [`Session::confirm_received`], so a sender hears "delivered" only once the
    /// application stored the message.
    unconfirmed_from: Option<u32>,
    /// The current message is whole and waits for [`Session::poll_event`].
    ready: bool,
    /// The current message was handed out; drop it on the next call.
    taken: bool,
    /// A part of the current message was lost for good: drop parts until the next first.
    discarding: bool,
}

impl<const IN: usize> Inbound<IN> {
    fn new() -> Self {
        Inbound {
            epoch: 0,
            next_deliver: 0,
            skip_to: 0,
            parts: heapless::Vec::new(),
            text: ByteQueue::new(),
            message_parts: 0,
            message_len: 0,
            message_id: 0,
            message_binary: false,
            bundle_at: None,
            message_start: None,
            unconfirmed_from: None,
            ready: false,
            taken: false,
            discarding: false,
        }
    }

    /// Parts held beyond the current message, sorted by seq.
    fn held(&self) -> &[InPart] {
        self.parts.get(self.message_parts..).unwrap_or(&[])
    }

    /// Start receiving a new epoch whose sender still waits for `base`.
    fn reset(&mut self, epoch: u32, base: u32) {
        self.epoch = epoch;
        self.next_deliver = base;
        self.skip_to = base;
        self.parts.truncate(self.message_parts);
        self.text.truncate(self.message_len);
        if !self.ready {
            // A half-assembled message from the old epoch can never be completed.
            self.drop_message();
        }
        // Seqs of the old epoch mean nothing in the new one.
        self.message_start = None;
        self.unconfirmed_from = None;
        self.discarding = false;
    }

    fn window_end(&self) -> u32 {
        self.next_deliver.saturating_add(WINDOW as u32)
    }

    fn insert(&mut self, seq: u32, id: u64, first: bool, last: bool, payload: Payload) -> Received {
        let binary = matches!(payload, Payload::Binary(_));
        let bundle = payload.is_bundle();
        let text = payload.as_bytes();
        if seq < self.next_deliver {
            return Received::Duplicate;
        }
        if seq >= self.window_end() {
            return Received::OutOfWindow;
        }
        let held = self.held();
        let index = match held.binary_search_by_key(&seq, |p| p.seq) {
            Ok(_) => return Received::Duplicate,
            Err(index) => index,
        };
        // Room: a part that fills a gap among held parts always fits, because every part
        // held beyond a gap was admitted only with room kept for the gap's largest parts.
        // So a missing part can always be taken, and no held part (which the selective
        // acknowledgement may already have reported) ever has to be thrown out for it.
        let gaps = if index == held.len() {
            ((seq - self.next_deliver) as usize).saturating_sub(held.len())
        } else {
            0
        };
        let needed = text.len().saturating_add(gaps.saturating_mul(MAX_PAYLOAD));
        if needed > self.text.free() || self.parts.is_full() {
            return Received::OutOfWindow;
        }
        let at = self.message_len
            + held[..index]
                .iter()
                .map(|p| usize::from(p.len))
                .sum::<usize>();
        let mut bits = 0;
        if first {
            bits |= frame_flags::FIRST;
        }
        if last {
            bits |= frame_flags::LAST;
        }
        if binary {
            bits |= BINARY_PART;
        }
        if bundle {
            bits |= BUNDLE_PART;
        }
        let part = InPart {
            seq,
            id,
            bits,
            // Repr::parse capped the text at MAX_PAYLOAD.
            len: text.len() as u16,
        };
        // Both have room (checked above); should either still refuse, nothing is kept.
        let index = self.message_parts + index;
        if self.parts.insert(index, part).is_err() {
            return Received::OutOfWindow;
        }
        if !self.text.insert(at, text) {
            self.parts.remove(index);
            return Received::OutOfWindow;
        }
        Received::Accepted
    }

    /// The acknowledgement of what is held: cumulative up to the first part the application
    /// has not taken (or, with [`Config::confirm_receipt`], not confirmed), selective for
    /// the parts held beyond it that the application has not been handed.
    fn ack(&self) -> Option<AckInfo> {
        if self.epoch == 0 {
            return None;
        }
        let next = self
            .unconfirmed_from
            .or(self.message_start)
            .unwrap_or(self.next_deliver);
        // Bit for `seq`, if the 32 bits after `next` reach it.
        let bit = |seq: u32| match seq.wrapping_sub(next) {
            ahead @ 1..=32 => 1u32 << (ahead - 1),
            _ => 0,
        };
        let mut bits = 0u32;
        // While a whole message waits for the application, acknowledge nothing beyond it: a
        // selective bit for a later part would make the sender presume the waiting message
        // lost and resend it (RACK), for nothing. The application takes it in a moment.
        if !self.ready {
            // The current message's parts so far... (A message handed out but not confirmed
            // lies below it and gets no bit: the session no longer holds its text, and the
            // sender's retransmissions of it are what repair a lost acknowledgement once the
            // application confirms.)
            let start = self.message_start.unwrap_or(self.next_deliver);
            for seq in (start..self.next_deliver).take(MAX_PARTS) {
                bits |= bit(seq);
            }
            // ...and the parts held beyond it.
            for p in self.held() {
                bits |= bit(p.seq);
            }
        }
        Some(AckInfo {
            epoch: self.epoch,
            next,
            bits,
        })
    }

    /// The current message: its text, or its bytes when binary.
    fn message(&self) -> Event<'_> {
        let mut bytes = self.text.get(0, self.message_len);
        if let Some(at) = self.bundle_at() {
            // Checked when it arrived (`Bundle::new_checked`): the record is there.
            bytes = read_record(bytes, at).map_or(&[], |(_, text, _)| text);
        }
        if self.message_binary {
            Event::Data(bytes)
        } else {
            // Every part was a `&str` and the message is their concatenation: always UTF-8.
            Event::Message(core::str::from_utf8(bytes).unwrap_or_default())
        }
    }

    /// Forget the current message and its parts.
    fn drop_message(&mut self) {
        for _ in 0..self.message_parts.min(self.parts.len()) {
            self.parts.remove(0);
        }
        self.text.pop_front(self.message_len);
        self.message_parts = 0;
        self.message_len = 0;
        self.message_start = None;
        self.bundle_at = None;
    }

    /// Where the current record is, if the current message is a bundle (always `None`
    /// without the feature, so a board's build has no bundle code).
    fn bundle_at(&self) -> Option<usize> {
        self.bundle_at.filter(|_| cfg!(feature = "bundle"))
    }

    /// Make the bundle's record at `at` the current message; `false` if there is none.
    fn select_record(&mut self, at: usize) -> bool {
        let bytes = self.text.get(0, self.message_len);
        match read_record(bytes, at) {
            Some((id, _, _)) => {
                self.message_id = id;
                self.bundle_at = Some(at);
                true
            }
            None => false,
        }
    }

    /// Drop the first held part (that is, the first after the current message).
    fn drop_next_part(&mut self) {
        if self.message_parts < self.parts.len() {
            let part = self.parts.remove(self.message_parts);
            // The current message is empty whenever a part is dropped (see `deliver`).
            self.text.pop_front(usize::from(part.len));
        }
    }

    /// Clear a message the application has been handed; returns whether its part(s) went
    /// with it. With `hold`, their acknowledgement waits for [`Self::confirm`]; otherwise it
    /// can go out now. A bundle's part goes only with its last message: until then the
    /// next one is ready, and the cumulative acknowledgement stays below the bundle.
    fn release_taken(&mut self, hold: bool) -> bool {
        if !self.taken {
            return false;
        }
        self.taken = false;
        if let Some(at) = self.bundle_at() {
            let next = read_record(self.text.get(0, self.message_len), at).map(|(_, _, next)| next);
            if next.is_some_and(|at| self.select_record(at)) {
                return false;
            }
        }
        if hold {
            self.unconfirmed_from = self.unconfirmed_from.or(self.message_start);
        }
        self.ready = false;
        self.drop_message();
        true
    }

    /// Let the acknowledgement cover every message handed out; returns whether it moved.
    fn confirm(&mut self) -> bool {
        self.unconfirmed_from.take().is_some()
    }

    /// Add in-order parts to the current message until it is whole or a part is missing.
    fn deliver(&mut self) {
        // Each round consumes a part or skips a missing seq; after WINDOW skips with no
        // parts held the window jumps, so 2 * WINDOW + 2 rounds always suffice.
        for _ in 0..2 * WINDOW + 2 {
            if self.ready {
                return;
            }
            let seq = self.next_deliver;
            let Some(part) = self.held().first().filter(|p| p.seq == seq).copied() else {
                if seq >= self.skip_to {
                    return;
                }
                // The sender gave up on this part: the message it belonged to is lost.
                self.drop_message();
                self.discarding = true;
                self.next_deliver = if self.held().is_empty() {
                    self.skip_to
                } else {
                    seq + 1
                };
                continue;
            };
            self.next_deliver = seq.saturating_add(1);
            if part.first() {
                // A new message starts; anything half-assembled was abandoned by the sender.
                self.drop_message();
                self.message_id = part.id;
                self.message_binary = part.binary();
                self.bundle_at = part.bundle().then_some(0);
                self.message_start = Some(seq);
                self.discarding = false;
            } else if self.message_parts == 0 {
                // Its first part is gone: drop the rest of that message.
                self.discarding = true;
            }
            let len = usize::from(part.len);
            if !self.discarding
                && (self.message_parts == MAX_PARTS
                    || self.message_len + len > MAX_MESSAGE
                    || part.binary() != self.message_binary)
            {
                // Longer than any message a duet sends, or text and bytes mixed in one
                // message, which no duet sends: drop it whole.
                self.drop_message();
                self.discarding = true;
            }
            if self.discarding {
                self.discarding = !part.last();
                self.drop_next_part();
                continue;
            }
            self.message_parts += 1;
            self.message_len += len;
            if part.last() {
                // A bundle's first record (`Bundle::new_checked` saw at least one).
                if self.bundle_at().is_some() && !self.select_record(0) {
                    self.drop_message();
                    continue;
                }
                self.ready = true;
                return;
            }
        }
    }
}

/// A reliable chat session with one peer. See the module docs for the call order.
///
/// `OUT` and `IN` are the bytes of text it holds: queued for sending, and received (held
/// ahead of the next part, or a message waiting for the application). The defaults hold a
/// full window of the largest parts each way; a small board chooses less with
/// [`Session::new_sized`]. `OUT` must be at least [`PART_TEXT`] (and limits the longest
/// message this session sends), `IN` at least [`MAX_MESSAGE`] (so every message can be
/// received); both are checked when the program is compiled.
#[derive(Debug)]
pub struct Session<const OUT: usize = OUTBOX_BYTES, const IN: usize = INBOX_BYTES> {
    config: Config,
    /// Our epoch: names this run of the session on the wire.
    epoch: u32,
    peer: Option<SocketAddr>,
    /// The peer closed the session or went silent.
    peer_up: bool,
    /// What the application was last told about the peer: (up, address).
    reported: (bool, Option<SocketAddr>),
    last_heard: Option<Instant>,
    next_ping: Instant,
    /// PINGs sent since the peer was last heard. While the peer counts as up, unanswered
    /// PINGs are repeated every tenth of the keepalive; once it is down, the wait doubles
    /// from the RTO up to `keepalive`, so a dead peer is not probed in a hurry.
    unanswered_pings: u32,
    /// Acknowledgement owed to the peer.
    ack_pending: bool,
    /// The application confirmed messages: their acknowledgement is news even while the
    /// next message waits for the application, so it goes out without waiting for that.
    confirmation_owed: bool,
    /// Messages handed out since the application last confirmed ([`Config::confirm_receipt`]).
    unconfirmed: usize,
    close_pending: bool,
    closed: bool,

    outbox: Deque<OutPart, OUTBOX_PARTS>,
    /// The text of the parts in `outbox`, in the same order.
    outbox_text: ByteQueue<OUT>,
    outcomes: Deque<Outcome, OUTBOX_PARTS>,
    next_seq: u32,
    /// The number of the next message queued.
    next_message: u32,
    /// What the peer's current epoch accepts, and whether it has our FEATURES.
    #[cfg(feature = "bundle")]
    features: Features,
    transmissions: u32,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,

    inbound: Inbound<IN>,
    /// The peer's earlier epochs: their late frames must not reset the receiver again.
    retired: Deque<u32, RETIRED_EPOCHS>,
    stats: Stats,
}

/// What the peer's current epoch said it accepts, and what it was told.
#[cfg(feature = "bundle")]
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    /// Its [`features`] bits; 0 until it said.
    peer: u8,
    /// It sent its FEATURES.
    heard: bool,
    /// Ours are owed to it: it is new, or it asked.
    owed: bool,
    /// Its FEATURES said HEARD: it has ours.
    confirmed: bool,
    /// How many FEATURES we sent it.
    told: u8,
    /// Whether the last one we sent said HEARD.
    told_heard: bool,
    /// When ours go again if it has not confirmed them (a lost FEATURES would otherwise
    /// leave the pair without bundles until one side restarts).
    again_at: Option<Instant>,
}

/// How many times a session sends its FEATURES to a peer epoch that does not confirm them:
/// the first and three more, one, two and four retransmission timeouts apart. A peer that
/// never answers (an older duet, the board) gets no more than these.
#[cfg(feature = "bundle")]
const FEATURES_TELLS: u8 = 4;

/// How many earlier epochs of the peer a session remembers.
const RETIRED_EPOCHS: usize = 4;

/// Count one more, saturating: counters never wrap and never panic.
fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

impl Session {
    /// A session created at `now` with epoch `epoch` (a random nonzero number, fresh for
    /// every run: it is how the peer tells a restarted session from an old one; zero is
    /// replaced by one). Without `peer`, the first sender heard becomes the peer.
    pub fn new(now: Instant, config: Config, epoch: u32, peer: Option<SocketAddr>) -> Self {
        Self::new_sized(now, config, epoch, peer)
    }
}

impl<const OUT: usize, const IN: usize> Session<OUT, IN> {
    /// [`Session::new`] with buffers of the sizes this type names.
    pub fn new_sized(now: Instant, config: Config, epoch: u32, peer: Option<SocketAddr>) -> Self {
        const {
            assert!(
                OUT >= PART_TEXT,
                "a session must hold at least one whole part to send"
            );
            assert!(
                IN >= MAX_MESSAGE,
                "a session must hold the longest message to receive"
            );
        }
        Session {
            config,
            epoch: epoch.max(1),
            peer,
            peer_up: false,
            reported: (false, None),
            last_heard: None,
            next_ping: now,
            unanswered_pings: 0,
            ack_pending: false,
            confirmation_owed: false,
            unconfirmed: 0,
            close_pending: false,
            closed: false,
            outbox: Deque::new(),
            outbox_text: ByteQueue::new(),
            outcomes: Deque::new(),
            next_seq: 0,
            next_message: 0,
            #[cfg(feature = "bundle")]
            features: Features::default(),
            transmissions: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: config.initial_rto,
            inbound: Inbound::new(),
            retired: Deque::new(),
            stats: Stats::default(),
        }
    }

    /// This session's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The peer's address, once known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the peer answered recently.
    pub fn is_peer_up(&self) -> bool {
        self.peer_up
    }

    /// Talk to someone else from now on. Messages not yet delivered are sent there.
    pub fn set_peer(&mut self, now: Instant, peer: SocketAddr) {
        if self.peer != Some(peer) {
            self.peer = Some(peer);
            self.peer_up = false;
            self.last_heard = None;
            self.inbound.reset(0, 0);
            self.forget_features();
            self.next_ping = now;
        }
    }

    /// The peer is now at `addr` (an authenticated message came from there): follow it
    /// without forgetting anything.
    pub fn roam(&mut self, addr: SocketAddr) {
        self.peer = Some(addr);
    }

    /// Send every unacknowledged part and a PING now, e.g. because the path just became
    /// usable (new keys), rather than waiting out the retransmission timers.
    pub fn nudge(&mut self, now: Instant) {
        for part in self
            .outbox
            .iter_mut()
            .filter(|p| !p.acked && !p.done && p.transmissions > 0)
        {
            part.due = now;
        }
        self.next_ping = now;
    }

    /// Counters since the session started.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Messages queued or in flight, not yet reported delivered or failed.
    pub fn pending(&self) -> usize {
        self.outbox
            .iter()
            .filter(|p| p.last && !p.done)
            .map(|p| usize::from(p.messages))
            .sum()
    }

    /// Whether the peer's current epoch accepts bundles: short text messages queued while
    /// this is so share parts.
    pub fn peer_takes_bundles(&self) -> bool {
        #[cfg(feature = "bundle")]
        return self.features.peer & features::BUNDLE != 0;
        #[cfg(not(feature = "bundle"))]
        false
    }

    /// A new peer epoch, or a new peer: what it accepts is unknown until it says, and it
    /// gets our FEATURES (with the feature; a build without it has none to tell).
    fn forget_features(&mut self) {
        #[cfg(feature = "bundle")]
        {
            self.features = Features {
                owed: self.inbound.epoch != 0,
                ..Features::default()
            };
        }
    }

    /// Whether every message was reported and no event waits.
    pub fn is_idle(&self) -> bool {
        self.pending() == 0 && self.outcomes.is_empty() && !self.inbound.ready
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round trip (RFC 6298), once one was measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Whether [`Self::send_text`] would find room for `text` now.
    pub fn has_room(&self, text: &str) -> bool {
        self.bundle_room(text.len()).is_some()
            || self.has_room_for(text::split(text, PART_TEXT).count(), text.len())
    }

    /// Where a text message of `len` bytes can go in a bundle: `Some(true)` at the end of the
    /// last part (a bundle not yet sent, with room), `Some(false)` in a new bundle part.
    /// `None` if it is not bundled: the peer does not take bundles, the message is too long
    /// for one, or there is no room.
    fn bundle_room(&self, len: usize) -> Option<bool> {
        let bytes = RECORD_HEADER.checked_add(len)?;
        if !self.peer_takes_bundles() || bytes > MAX_PAYLOAD || bytes > self.outbox_text.free() {
            return None;
        }
        let appendable = self.outbox.back().is_some_and(|p| {
            p.bundle
                && p.transmissions == 0
                && !p.done
                && p.messages < u8::MAX
                && usize::from(p.len) + bytes <= MAX_PAYLOAD
        });
        if appendable {
            Some(true)
        } else {
            self.has_room_for(1, bytes).then_some(false)
        }
    }

    /// Whether [`Self::send_bytes`] would find room for a binary message of `len` bytes now.
    pub fn has_room_for_bytes(&self, len: usize) -> bool {
        self.has_room_for(len.div_ceil(PART_TEXT), len)
    }

    /// Whether [`Self::send_text`] would find room for any message it can send: the longest
    /// one, or every byte of text the session holds.
    pub fn has_room_for_any(&self) -> bool {
        self.has_room_for(MAX_PARTS, MAX_MESSAGE.min(OUT))
    }

    fn has_room_for(&self, parts: usize, bytes: usize) -> bool {
        self.outbox.len() + self.outcomes.len() + parts <= OUTBOX_PARTS
            && bytes <= self.outbox_text.free()
    }

    /// Queue a message. It is split into parts on character boundaries (or, if short and
    /// the peer takes bundles, goes in a bundle); the returned id is named again by exactly
    /// one `Delivered` or `Failed` event. Its id on the wire is made from this session's
    /// epoch and the message's number, unique for this run.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError> {
        let id = (u64::from(self.epoch) << 32) | u64::from(self.next_message);
        self.send_message(now, id, text)
    }

    /// Queue a message with the id `id`, which the receiver sees with it
    /// ([`Session::message_id`]). Give a message the same id when it is sent again after a
    /// restart, and the receiver can recognise it.
    pub fn send_message(
        &mut self,
        now: Instant,
        id: u64,
        text: &str,
    ) -> Result<MessageId, SendError> {
        // (Closed, or empty: `queue` gives the error.)
        if !(self.closed || self.close_pending || text.is_empty())
            && let Some(append) = self.bundle_room(text.len())
        {
            return self.queue_in_bundle(now, id, text, append);
        }
        let parts = text::split(text, PART_TEXT);
        let count = parts.clone().count();
        self.queue(now, id, count, text.len(), false, parts.map(str::as_bytes))
    }

    /// Queue a short text message as a record of a bundle: at the end of the last part,
    /// or in a new one ([`Self::bundle_room`] said which, and that it fits).
    fn queue_in_bundle(
        &mut self,
        now: Instant,
        id: u64,
        text: &str,
        append: bool,
    ) -> Result<MessageId, SendError> {
        let message = MessageId(self.next_message);
        // bundle_room() checked that the record fits a payload, so its length fits a u16.
        let len = text.len() as u16;
        let record = RECORD_HEADER as u16 + len;
        if self.outbox_text.free() < usize::from(record) {
            return Err(SendError::OutboxFull);
        }
        if !append {
            let seq = self.next_seq;
            let next = seq.checked_add(1).ok_or(SendError::Exhausted)?;
            let part = OutPart {
                messages: 0,
                bundle: true,
                len: 0,
                ..OutPart::new(seq, message, id, now)
            };
            if self.outbox.push_back(part).is_err() {
                return Err(SendError::OutboxFull);
            }
            self.next_seq = next;
        }
        // Room for the whole record was checked above, so both pushes fit.
        if !self.outbox_text.push_back(&record_header(id, len))
            || !self.outbox_text.push_back(text.as_bytes())
        {
            return Err(SendError::OutboxFull);
        }
        let Some(part) = self.outbox.back_mut() else {
            return Err(SendError::OutboxFull);
        };
        part.len += record;
        part.messages += 1;
        self.next_message = self.next_message.wrapping_add(1);
        Ok(message)
    }

    /// Queue a binary message of at most [`MAX_MESSAGE`] bytes with the id `id`, as
    /// [`Self::send_message`] does text: the receiver's application gets it whole, exactly
    /// once and in order with the text, as [`Event::Data`]. Its parts are cut anywhere (at
    /// every [`PART_TEXT`] bytes).
    pub fn send_bytes(
        &mut self,
        now: Instant,
        id: u64,
        bytes: &[u8],
    ) -> Result<MessageId, SendError> {
        let count = bytes.len().div_ceil(PART_TEXT);
        self.queue(now, id, count, bytes.len(), true, bytes.chunks(PART_TEXT))
    }

    /// Queue a message of `len` bytes in `count` parts, `parts`.
    fn queue<'b>(
        &mut self,
        now: Instant,
        id: u64,
        count: usize,
        len: usize,
        binary: bool,
        parts: impl Iterator<Item = &'b [u8]>,
    ) -> Result<MessageId, SendError> {
        if self.closed || self.close_pending {
            return Err(SendError::Closed);
        }
        if len == 0 {
            return Err(SendError::Empty);
        }
        if count > MAX_PARTS || len > OUT {
            return Err(SendError::TooLong);
        }
        if !self.has_room_for(count, len) {
            return Err(SendError::OutboxFull);
        }
        let first_seq = self.next_seq;
        let end = first_seq
            .checked_add(count as u32)
            .ok_or(SendError::Exhausted)?;
        let message = MessageId(self.next_message);
        for (i, part_text) in parts.enumerate() {
            let part = OutPart {
                first: i == 0,
                last: i + 1 == count,
                binary,
                // A part is at most PART_TEXT bytes.
                len: part_text.len() as u16,
                ..OutPart::new(first_seq + i as u32, message, id, now)
            };
            // has_room_for() checked the space above.
            if self.outbox.push_back(part).is_err() || !self.outbox_text.push_back(part_text) {
                return Err(SendError::OutboxFull);
            }
        }
        self.next_seq = end;
        self.next_message = self.next_message.wrapping_add(1);
        debug!("queued message {} in {} parts", message.0, count);
        Ok(message)
    }

    /// Say goodbye: one CLOSE frame goes out, then the session falls silent.
    pub fn close(&mut self) {
        if self.peer.is_none() {
            // Nobody to say goodbye to.
            self.closed = true;
        } else if !self.closed {
            self.close_pending = true;
        }
    }

    /// Whether the session has said goodbye.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The first seq of the oldest message not yet delivered or failed. Everything below it
    /// is settled, so a receiver that (re)starts there misses no part of an unfinished
    /// message, and may skip any part below it that it lacks.
    fn base(&self) -> u32 {
        self.outbox
            .iter()
            .find(|p| !p.done)
            .map_or(self.next_seq, |p| p.seq)
    }

    /// Feed one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.release_taken();
        bump(&mut self.stats.datagrams_in);
        if datagram.len() > MAX_DATAGRAM {
            bump(&mut self.stats.oversized);
            return;
        }
        let repr = match Frame::new_checked(datagram).and_then(|f| Repr::parse(&f)) {
            Ok(repr) => repr,
            Err(_) => {
                bump(&mut self.stats.malformed);
                return;
            }
        };
        if self.closed {
            return;
        }
        if self.retired.iter().any(|e| *e == repr.epoch) {
            bump(&mut self.stats.stale);
            return;
        }
        if !self.accept(now, from, &repr) {
            bump(&mut self.stats.foreign);
            return;
        }
        self.peer = Some(from);
        self.last_heard = Some(now);
        self.peer_up = true;
        self.next_ping = self.next_ping.max(now + self.config.keepalive);
        self.unanswered_pings = 0;
        self.inbound.skip_to = self.inbound.skip_to.max(repr.base);
        if let Some(ack) = repr.ack.filter(|a| a.epoch == self.epoch) {
            self.on_ack(now, ack);
        }
        match repr.body {
            Body::Data {
                seq,
                first,
                last,
                id,
                payload,
            } => {
                self.ack_pending = true;
                match self.inbound.insert(seq, id, first, last, payload) {
                    Received::Accepted => {}
                    Received::Duplicate => bump(&mut self.stats.duplicates),
                    Received::OutOfWindow => bump(&mut self.stats.out_of_window),
                }
            }
            Body::Ping => self.ack_pending = true,
            Body::Ack => {}
            Body::Close => self.peer_up = false,
            #[cfg(feature = "bundle")]
            Body::Features(bits) => {
                let f = &mut self.features;
                f.peer = bits & !features::HEARD;
                f.heard = true;
                if bits & features::HEARD != 0 {
                    f.confirmed = true;
                    f.again_at = None;
                }
                // It has not heard ours: its first FEATURES crossed ours, or ours was lost.
                // Or it has, but ours did not say we heard its: it waits for that word.
                f.owed |= bits & features::HEARD == 0 || (f.told > 0 && !f.told_heard);
            }
        }
        self.inbound.deliver();
    }

    /// Whether a valid frame may speak for the peer (see the module docs' peer rules).
    fn accept(&mut self, now: Instant, from: SocketAddr, repr: &Repr<'_>) -> bool {
        if self.inbound.epoch == repr.epoch {
            return true;
        }
        let takeover = match self.peer {
            None => true,
            Some(peer) if peer == from => true,
            // A different address may replace a peer that is not answering (never heard,
            // closed or silent), never a live one. The address a session was given is a
            // default, as a board's built-in peer is: whoever answers first becomes the peer.
            Some(_) => !self.peer_up,
        };
        if takeover {
            debug!("peer epoch {} replaces {}", repr.epoch, self.inbound.epoch);
            if self.inbound.epoch != 0 {
                crate::secure::remember(&mut self.retired, self.inbound.epoch);
            }
            self.inbound.reset(repr.epoch, repr.base);
            self.forget_features();
            // Whatever the old run acknowledged of a message it never saw whole died with
            // it: send every part of an unfinished message again.
            for part in self
                .outbox
                .iter_mut()
                .filter(|p| !p.done && p.transmissions > 0)
            {
                part.acked = false;
                part.consumed = false;
                part.due = now;
            }
        }
        takeover
    }

    fn on_ack(&mut self, now: Instant, ack: AckInfo) {
        let mut newest_order = None;
        let mut sample = None;
        for part in self.outbox.iter_mut() {
            if part.done || part.transmissions == 0 || !ack.covers(part.seq) {
                continue;
            }
            part.consumed |= part.seq < ack.next;
            if part.acked {
                continue;
            }
            part.acked = true;
            if part.transmissions == 1 {
                // Karn: only parts sent once give an unambiguous round trip.
                sample = Some(now - part.last_sent);
            }
            newest_order = newest_order.max(Some(part.order));
        }
        if let Some(rtt) = sample {
            self.on_rtt_sample(rtt);
        }
        if let Some(newest) = newest_order {
            // A part sent before one that was just acknowledged is presumed lost once a
            // quarter round trip of reordering tolerance has passed.
            let tolerance = Duration::from_millis(self.srtt.unwrap_or(self.rto).as_millis() / 4);
            for part in self.outbox.iter_mut() {
                let lost_at = (part.last_sent + tolerance).max(now);
                if !part.acked
                    && !part.done
                    && part.transmissions > 0
                    && part.order < newest
                    && lost_at < part.due
                {
                    part.due = lost_at;
                    part.early = true;
                }
            }
        }
        self.complete_messages();
    }

    fn on_rtt_sample(&mut self, rtt: Duration) {
        // RFC 6298, section 2.
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, Duration::from_millis(rtt.as_millis() / 2)),
            Some(srtt) => {
                let delta = srtt.as_millis().abs_diff(rtt.as_millis());
                let rttvar = (3 * self.rttvar.as_millis() + delta) / 4;
                let srtt = (7 * srtt.as_millis() + rtt.as_millis()) / 8;
                (Duration::from_millis(srtt), Duration::from_millis(rttvar))
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        let rto = srtt + Duration::from_millis(rttvar.as_millis().saturating_mul(4).max(1));
        self.rto = rto.max(self.config.min_rto).min(self.config.max_rto);
    }

    /// Report messages whose parts are all covered by the cumulative acknowledgement (the
    /// peer's application took them), and pop finished parts.
    fn complete_messages(&mut self) {
        let mut index = 0;
        while let Some(part) = self.outbox.get(index) {
            let message = part.message;
            let done = part.done;
            let mut all_acked = true;
            let mut end = index;
            while let Some(p) = self.outbox.get(end).filter(|p| p.message == message) {
                all_acked &= p.consumed;
                end += 1;
            }
            if all_acked && !done {
                self.finish(index..end, None);
            }
            index = end.max(index + 1);
        }
        self.pop_done();
    }

    /// Pop the finished parts at the front of the outbox, and their text.
    fn pop_done(&mut self) {
        while let Some(len) = self.outbox.front().filter(|p| p.done).map(|p| p.len) {
            self.outbox.pop_front();
            self.outbox_text.pop_front(usize::from(len));
        }
    }

    /// Settle the parts of one message (or one bundle): delivered, or failed.
    fn finish(&mut self, parts: core::ops::Range<usize>, failed: Option<FailReason>) {
        // Every part of a message says one message; a bundle is one part.
        let (first, count) = self
            .outbox
            .get(parts.start)
            .map_or((MessageId(0), 1), |p| (p.message, p.messages));
        let outcome = Outcome {
            first,
            count,
            failed,
        };
        for i in parts {
            if let Some(p) = self.outbox.get_mut(i) {
                p.done = true;
            }
        }
        // send_text admits a message only while outbox + outcomes has room for all its
        // parts, so there are never more outcomes than OUTBOX_PARTS.
        if self.outcomes.push_back(outcome).is_err() {
            warn!("outcome queue full; this is a bug");
        }
    }

    /// Expire what is due at `now`: messages past their delivery timeout, a silent peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let timeout = self.config.delivery_timeout;
        let mut index = 0;
        while let Some(part) = self.outbox.get(index) {
            let message = part.message;
            let mut expired = false;
            let mut end = index;
            while let Some(p) = self.outbox.get(end).filter(|p| p.message == message) {
                // A part the peer holds but its application never took fails too.
                expired |=
                    !p.done && !p.consumed && p.first_sent.is_some_and(|t| now >= t + timeout);
                end += 1;
            }
            if expired {
                warn!("message {} failed: no acknowledgement", message.0);
                self.finish(index..end, Some(FailReason::Timeout));
            }
            index = end.max(index + 1);
        }
        self.pop_done();
        if self.peer_up
            && self
                .last_heard
                .is_some_and(|t| now >= t + self.config.idle_timeout)
        {
            self.peer_up = false;
        }
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_transmit`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if self.close_pending {
            return Some(Instant::ZERO);
        }
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.last_heard.filter(|_| self.peer_up) {
            at(t + self.config.idle_timeout);
        }
        if self.peer.is_some() {
            if self.ack_due() {
                at(Instant::ZERO);
            }
            at(self.next_ping);
            #[cfg(feature = "bundle")]
            if self.features.owed {
                at(Instant::ZERO);
            }
            #[cfg(feature = "bundle")]
            if let Some(again) = self.features.again_at {
                at(again);
            }
            let window_end = self.base().saturating_add(WINDOW as u32);
            for p in self.outbox.iter().filter(|p| !p.done) {
                match p.first_sent {
                    Some(first) => {
                        if !p.acked {
                            at(p.due);
                        }
                        // Only what handle_timeout can fail is a deadline: a part the peer's
                        // application took never fails.
                        if !p.consumed {
                            at(first + self.config.delivery_timeout);
                        }
                    }
                    None if p.seq < window_end && !p.acked => at(Instant::ZERO),
                    None => {}
                }
            }
        }
        next
    }

    /// Write the next datagram to send into `buf`, if one is due at `now`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_DATAGRAM],
    ) -> Option<Transmit> {
        let peer = self.peer?;
        if self.closed {
            return None;
        }
        let base = self.base();
        let ack = self.inbound.ack();
        let body = if self.close_pending {
            self.close_pending = false;
            self.closed = true;
            Body::Close
        } else if let Some(body) = self.features_due(now) {
            body
        } else if let Some((part, at)) = next_part_due(&mut self.outbox, now, base) {
            let bytes = self.outbox_text.get(at, usize::from(part.len));
            self.transmissions = self.transmissions.wrapping_add(1);
            if part.transmissions > 0 && !part.early {
                part.backoff = part.backoff.saturating_add(1);
            }
            part.early = false;
            let backoff = 1u64 << part.backoff.min(16);
            let rto = self.rto.saturating_mul(backoff).min(self.config.max_rto);
            part.transmissions = part.transmissions.saturating_add(1);
            if part.transmissions > 1 {
                bump(&mut self.stats.retransmits);
            }
            part.order = self.transmissions;
            part.last_sent = now;
            part.first_sent.get_or_insert(now);
            part.due = now + rto;
            self.next_ping = self.next_ping.max(now + self.config.keepalive);
            let payload = part_payload(part, bytes);
            Body::Data {
                seq: part.seq,
                first: part.first,
                id: if part.first && !payload.is_bundle() {
                    part.id
                } else {
                    0
                },
                last: part.last,
                payload,
            }
        } else if self.ack_due() {
            Body::Ack
        } else if now >= self.next_ping {
            let wait = if self.peer_up {
                // A peer that was there a moment ago is probed densely until it answers or
                // the idle timeout passes: on a lossy path, one lost PING or ACK must not
                // look like a peer gone.
                // A 32-bit division: a board has it in hardware, while a 64-bit one is a
                // library routine of about 900 bytes of flash (keepalives are far below
                // 2^32 ms).
                let keepalive =
                    u32::try_from(self.config.keepalive.as_millis()).unwrap_or(u32::MAX);
                self.rto
                    .min(Duration::from_millis(u64::from(keepalive / 10)))
            } else {
                self.rto
                    .saturating_mul(1 << self.unanswered_pings.min(16))
                    .min(self.config.keepalive)
            };
            self.next_ping = now + wait;
            self.unanswered_pings = self.unanswered_pings.saturating_add(1);
            Body::Ping
        } else {
            return None;
        };
        self.ack_pending = false;
        self.confirmation_owed = false;
        let repr = Repr {
            epoch: self.epoch,
            base,
            ack,
            body,
        };
        let len = repr.buffer_len();
        repr.emit(&mut Frame::new_unchecked(&mut buf[..len]));
        bump(&mut self.stats.datagrams_out);
        trace!("send {} bytes", len);
        Some(Transmit { dst: peer, len })
    }

    /// The id its sender gave the message last returned as [`Event::Message`] or
    /// [`Event::Data`] (see
    /// [`Session::send_message`]): the same in every retransmission and across restarts, so
    /// an application that stores messages can recognise one it already has.
    pub fn message_id(&self) -> u64 {
        self.inbound.message_id
    }

    /// The next thing to show, if any. A `Message` borrows the session until the next call.
    ///
    /// A message is acknowledged to its sender (who then reports it delivered) only after the
    /// application took it and called in again: store it before the next call, and a crash
    /// can never lose a message its sender saw delivered. With [`Config::confirm_receipt`]
    /// the acknowledgement waits longer, for [`Self::confirm_received`]: take several
    /// messages, store them together, then confirm.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if self.release_taken() {
            self.inbound.deliver();
        }
        let state = (self.peer_up, self.peer);
        if state != self.reported {
            let was_up = self.reported.0;
            self.reported = state;
            match state {
                (true, Some(addr)) => return Some(Event::PeerUp(addr)),
                (false, _) if was_up => return Some(Event::PeerDown),
                _ => {}
            }
        }
        if let Some(outcome) = self.outcomes.front_mut() {
            let id = outcome.first;
            let failed = outcome.failed;
            // A bundle's messages are reported one by one, in order.
            outcome.first = MessageId(id.0.wrapping_add(1));
            outcome.count = outcome.count.saturating_sub(1);
            if outcome.count == 0 {
                self.outcomes.pop_front();
            }
            return Some(match failed {
                None => Event::Delivered(id),
                Some(why) => Event::Failed(id, why),
            });
        }
        if self.inbound.ready && !self.inbound.taken {
            self.inbound.taken = true;
            bump(&mut self.stats.messages_in);
            if self.config.confirm_receipt {
                self.unconfirmed = self.unconfirmed.saturating_add(1);
            }
            return Some(self.inbound.message());
        }
        None
    }

    /// Acknowledge every message [`Self::poll_event`] has handed out so far, the last one
    /// included: the application has stored them (all at once, say, in one transaction).
    /// An acknowledgement goes out at the next [`Self::poll_transmit`], and their sender
    /// reports them delivered.
    ///
    /// Only needed with [`Config::confirm_receipt`]: otherwise a message is acknowledged
    /// anyway once the application calls in again, and this only does that at once. A
    /// message the application never confirms is never acknowledged: its sender keeps
    /// resending it and reports it failed after its delivery timeout. Ends the borrow of the
    /// last [`Event::Message`], like any call.
    pub fn confirm_received(&mut self) {
        // The last message handed out is released as confirmed, not held.
        let released = self.inbound.release_taken(false);
        let moved = self.inbound.confirm() || released;
        self.unconfirmed = 0;
        if moved {
            self.ack_pending = true;
            self.confirmation_owed = true;
        }
        if released {
            self.inbound.deliver();
        }
    }

    /// Messages [`Self::poll_event`] handed out that [`Self::confirm_received`] has not
    /// confirmed yet: with [`Config::confirm_receipt`], their sender does not know of them.
    /// Always 0 without it. Never more than the sender's window of [`WINDOW`] parts allows,
    /// unless the sender gave up on some of them (it reported them failed).
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed
    }

    /// Let go of the message the application was handed, if any (a call ends its borrow);
    /// returns whether there was one. Its acknowledgement is owed now, or, with
    /// [`Config::confirm_receipt`], once the application confirms.
    fn release_taken(&mut self) -> bool {
        let hold = self.config.confirm_receipt;
        let released = self.inbound.release_taken(hold);
        self.ack_pending |= released && !hold;
        released
    }

    /// Our FEATURES, if owed (once per peer epoch, again if it asks, and again while it
    /// does not confirm them, up to [`FEATURES_TELLS`] times): it carries the
    /// acknowledgement too.
    fn features_due(&mut self, now: Instant) -> Option<Body<'static>> {
        #[cfg(feature = "bundle")]
        {
            let rto = self.rto;
            let f = &mut self.features;
            if f.again_at.is_some_and(|t| now >= t) {
                f.again_at = None;
                f.owed |= !f.confirmed;
            }
            if f.owed {
                f.owed = false;
                f.told = f.told.saturating_add(1);
                f.told_heard = f.heard;
                if !f.confirmed && f.told < FEATURES_TELLS {
                    let backoff = 1u32 << (f.told - 1).min(8);
                    f.again_at = Some(now + rto.saturating_mul(backoff.into()));
                }
                let heard = if f.heard { features::HEARD } else { 0 };
                return Some(Body::Features(features::BUNDLE | heard));
            }
        }
        #[cfg(not(feature = "bundle"))]
        let _ = now;
        None
    }

    /// Whether an acknowledgement must go out now. While a message waits for the application
    /// an owed acknowledgement waits too: it could say nothing new, and goes out as soon as
    /// the message is taken; unless the application confirmed messages since.
    fn ack_due(&self) -> bool {
        self.ack_pending && (!self.inbound.ready || self.confirmation_owed)
    }
}

/// What a part carries on the wire: its text, bytes, or a bundle's records.
fn part_payload<'b>(part: &OutPart, bytes: &'b [u8]) -> Payload<'b> {
    #[cfg(feature = "bundle")]
    if part.bundle {
        // Written by queue_in_bundle: whole records.
        return Payload::Bundle(crate::wire::frame::Bundle::new_unchecked(bytes));
    }
    if part.binary {
        Payload::Binary(bytes)
    } else {
        // The text went in as a `&str`, whole parts at a time.
        Payload::Text(core::str::from_utf8(bytes).unwrap_or_default())
    }
}

/// The first part in the send window that is new or due for retransmission, and where its
/// text starts in the outbox text.
fn next_part_due(
    outbox: &mut Deque<OutPart, OUTBOX_PARTS>,
    now: Instant,
    base: u32,
) -> Option<(&mut OutPart, usize)> {
    let window_end = base.saturating_add(WINDOW as u32);
    let mut at = 0;
    for p in outbox.iter_mut() {
        if !p.acked && !p.done && p.seq < window_end && (p.transmissions == 0 || p.due <= now) {
            return Some((p, at));
        }
        at += usize::from(p.len);
    }
    None
}

impl<const OUT: usize, const IN: usize> Protocol for Session<OUT, IN> {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        Session::handle_datagram(self, now, from, datagram)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        Session::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Session::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    //! What the peer hears from a receiver, frame by frame: the sender's side is played by
    //! hand-made frames, so every acknowledgement can be read exactly.

    use super::*;

    const PEER_EPOCH: u32 = 0x5eed;

    fn peer() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 2], 5000))
    }

    fn receiver(confirm_receipt: bool) -> Session {
        let config = Config {
            confirm_receipt,
            ..Config::default()
        };
        Session::new(Instant::ZERO, config, 1, Some(peer()))
    }

    /// The peer's one-part message `text` as part `seq`, arriving at `now`.
    fn arrive(session: &mut Session, now: Instant, seq: u32, text: &str) {
        let repr = Repr {
            epoch: PEER_EPOCH,
            base: 0,
            ack: None,
            body: Body::Data {
                seq,
                first: true,
                last: true,
                id: u64::from(seq),
                payload: Payload::Text(text),
            },
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let len = repr.buffer_len();
        repr.emit(&mut Frame::new_unchecked(&mut buf[..len]));
        session.handle_datagram(now, peer(), &buf[..len]);
    }

    /// Every message `poll_event` hands out until it has nothing more.
    fn take_all(session: &mut Session) -> Vec<String> {
        let mut messages = Vec::new();
        while let Some(event) = session.poll_event() {
            if let Event::Message(text) = event {
                messages.push(text.to_owned());
            }
        }
        messages
    }

    /// The next frame the session sends at `now`: its kind (FEATURES counted as an ACK) and
    /// what it acknowledges.
    fn sent(session: &mut Session, now: Instant) -> Option<(Body<'static>, AckInfo)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let transmit = session.poll_transmit(now, &mut buf)?;
        let frame = Frame::new_checked(&buf[..transmit.len]).expect("a whole frame");
        let repr = Repr::parse(&frame).expect("a valid frame");
        let body = match repr.body {
            // A FEATURES carries the acknowledgement an ACK would.
            Body::Ack => Body::Ack,
            #[cfg(feature = "bundle")]
            Body::Features(_) => Body::Ack,
            Body::Ping => Body::Ping,
            other => panic!("expected an acknowledgement, sent {other:?}"),
        };
        Some((body, repr.ack.expect("the peer's epoch is known")))
    }

    fn ack(next: u32, bits: u32) -> AckInfo {
        AckInfo {
            epoch: PEER_EPOCH,
            next,
            bits,
        }
    }

    /// Messages 0, 1 and 2 arrive and are taken; part 4 is held beyond the missing 3.
    fn three_taken_one_held(session: &mut Session, now: Instant) {
        for (seq, text) in [(0, "m0"), (1, "m1"), (2, "m2"), (4, "m4")] {
            arrive(session, now, seq, text);
        }
        assert_eq!(take_all(session), ["m0", "m1", "m2"]);
    }

    #[test]
    fn without_confirm_receipt_a_message_is_acknowledged_once_the_next_is_asked_for() {
        let now = Instant::from_millis(10);
        let mut session = receiver(false);
        three_taken_one_held(&mut session, now);
        assert_eq!(session.unconfirmed(), 0);
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(3, 0b1))));
    }

    #[test]
    fn acknowledgement_before_confirmation_covers_no_unconfirmed_part() {
        let now = Instant::from_millis(10);
        let mut session = receiver(true);
        three_taken_one_held(&mut session, now);
        assert_eq!(session.unconfirmed(), 3);
        // Cumulative at the first unconfirmed message; the held part 4 is acknowledged
        // selectively relative to it, and the unconfirmed 0, 1 and 2 are not.
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(0, 1 << 3))));
        assert_eq!(sent(&mut session, now), None);

        // A retransmission of an unconfirmed part is a duplicate: not shown again, and
        // answered with the same acknowledgement, which still does not cover it.
        arrive(&mut session, now, 1, "m1");
        assert_eq!(session.stats().duplicates, 1);
        assert_eq!(take_all(&mut session), Vec::<String>::new());
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(0, 1 << 3))));

        // Confirmed: the acknowledgement goes out at once and covers all three.
        session.confirm_received();
        assert_eq!(session.unconfirmed(), 0);
        assert_eq!(session.poll_timeout(), Some(Instant::ZERO));
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(3, 0b1))));
    }

    #[test]
    fn confirmation_goes_out_while_the_next_message_waits_to_be_taken() {
        let now = Instant::from_millis(10);
        let mut session = receiver(true);
        for (seq, text) in [(0, "m0"), (1, "m1"), (2, "m2")] {
            arrive(&mut session, now, seq, text);
        }
        // A new peer epoch gets our FEATURES at once, acknowledging nothing taken yet.
        #[cfg(feature = "bundle")]
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(0, 0))));
        // The application takes a batch of two and stops, m1 still in hand.
        let mut batch = Vec::new();
        while batch.len() < 2 {
            match session.poll_event() {
                Some(Event::Message(text)) => batch.push(text.to_owned()),
                Some(_) => {}
                None => panic!("fewer than two messages"),
            }
        }
        assert_eq!(batch, ["m0", "m1"]);
        assert_eq!(sent(&mut session, now), None, "nothing to say yet");

        session.confirm_received();
        // Both are acknowledged though m2 now waits for the application.
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(2, 0))));
        assert_eq!(take_all(&mut session), ["m2"]);
        assert_eq!(session.unconfirmed(), 1);
    }

    /// Move every datagram `from` has for `to` at `now`.
    fn deliver_all(from: &mut Session, to: &mut Session, now: Instant) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..64 {
            let Some(t) = from.poll_transmit(now, &mut buf) else {
                break;
            };
            to.handle_datagram(now, peer(), &buf[..t.len]);
        }
    }

    /// What the application is handed: text as `T:...`, bytes as `B:...` (escaped).
    fn handed(session: &mut Session) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = session.poll_event() {
            match event {
                Event::Message(text) => out.push(format!("T:{text}")),
                Event::Data(bytes) => out.push(format!("B:{}", bytes.escape_ascii())),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn binary_messages_arrive_whole_exactly_once_and_in_order_with_text() {
        let now = Instant::from_millis(10);
        let mut alice = Session::new(now, Config::default(), 7, Some(peer()));
        let mut bob = receiver(false);
        // The longest binary message: every byte value, no UTF-8 in sight, four parts.
        let big: Vec<u8> = (0..MAX_MESSAGE).map(|i| (i * 7 % 256) as u8).collect();
        alice.send_text(now, "before").unwrap();
        let id = alice.send_bytes(now, 42, &big).unwrap();
        alice.send_bytes(now, 43, &[0xff, 0x00]).unwrap();
        alice.send_text(now, "after").unwrap();
        deliver_all(&mut alice, &mut bob, now);
        let mut got = Vec::new();
        let mut ids = Vec::new();
        while let Some(event) = bob.poll_event() {
            let (bytes, binary) = match event {
                Event::Message(text) => (text.as_bytes().to_vec(), false),
                Event::Data(bytes) => (bytes.to_vec(), true),
                _ => continue,
            };
            if binary {
                ids.push(bob.message_id());
            }
            got.push(bytes);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], b"before");
        assert_eq!(got[1], big);
        assert_eq!(got[2], [0xff, 0x00]);
        assert_eq!(got[3], b"after");
        assert_eq!(ids, [42, 43]);
        // Acknowledged like text: the sender reports it delivered.
        deliver_all(&mut bob, &mut alice, now);
        let mut delivered = Vec::new();
        while let Some(event) = alice.poll_event() {
            if let Event::Delivered(d) = event {
                delivered.push(d);
            }
        }
        assert!(delivered.contains(&id), "{delivered:?}");
        assert_eq!(bob.stats().malformed, 0);
    }

    #[test]
    fn binary_messages_are_refused_when_empty_or_too_long() {
        let now = Instant::ZERO;
        let mut alice = Session::new(now, Config::default(), 7, Some(peer()));
        assert_eq!(alice.send_bytes(now, 1, &[]), Err(SendError::Empty));
        let long = [0u8; MAX_MESSAGE + 1];
        assert!(!alice.has_room_for_bytes(OUTBOX_BYTES + 1));
        assert_eq!(alice.send_bytes(now, 1, &long), Err(SendError::TooLong));
        assert!(alice.has_room_for_bytes(MAX_MESSAGE));
        assert!(alice.send_bytes(now, 1, &long[..MAX_MESSAGE]).is_ok());
    }

    /// The peer's part `seq` with `payload`, arriving at `now`.
    fn arrive_part(session: &mut Session, seq: u32, first: bool, last: bool, payload: Payload) {
        let repr = Repr {
            epoch: PEER_EPOCH,
            base: 0,
            ack: None,
            body: Body::Data {
                seq,
                first,
                last,
                id: u64::from(seq),
                payload,
            },
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let len = repr.buffer_len();
        repr.emit(&mut Frame::new_unchecked(&mut buf[..len]));
        session.handle_datagram(Instant::from_millis(10), peer(), &buf[..len]);
    }

    #[test]
    fn a_message_that_mixes_text_and_bytes_is_dropped_whole() {
        let mut bob = receiver(false);
        // Text that goes on as bytes, then bytes that go on as text: neither is a message.
        arrive_part(&mut bob, 0, true, false, Payload::Text("half"));
        arrive_part(&mut bob, 1, false, true, Payload::Binary(b"\xff"));
        arrive_part(&mut bob, 2, true, false, Payload::Binary(&[1, 2]));
        arrive_part(&mut bob, 3, false, true, Payload::Text("tail"));
        arrive_part(&mut bob, 4, true, true, Payload::Binary(&[9]));
        arrive_part(&mut bob, 5, true, true, Payload::Text("fine"));
        assert_eq!(handed(&mut bob), ["B:\\t", "T:fine"]);
        // Every part was taken care of: the acknowledgement covers them all.
        assert_eq!(
            sent(&mut bob, Instant::from_millis(10)).map(|(_, a)| a.next),
            Some(6)
        );
    }

    #[test]
    fn confirming_with_nothing_handed_out_sends_nothing() {
        let now = Instant::from_millis(10);
        let mut session = receiver(true);
        arrive(&mut session, now, 0, "m0");
        assert_eq!(take_all(&mut session), ["m0"]);
        session.confirm_received();
        assert_eq!(sent(&mut session, now), Some((Body::Ack, ack(1, 0))));
        session.confirm_received();
        assert_eq!(sent(&mut session, now), None);
        assert_eq!(session.poll_timeout().filter(|t| *t <= now), None);
    }

    #[cfg(feature = "bundle")]
    /// Two sessions that heard each other's FEATURES: each sends the other bundles.
    fn bundling_pair(confirm_receipt: bool) -> (Session, Session, Instant) {
        let now = Instant::from_millis(10);
        let config = Config {
            confirm_receipt,
            ..Config::default()
        };
        let mut alice = Session::new(now, config, 7, Some(peer()));
        let mut bob = Session::new(now, config, 8, Some(peer()));
        for _ in 0..4 {
            deliver_all(&mut alice, &mut bob, now);
            deliver_all(&mut bob, &mut alice, now);
        }
        assert!(alice.peer_takes_bundles() && bob.peer_takes_bundles());
        // Their PeerUp events.
        while alice.poll_event().is_some() || bob.poll_event().is_some() {}
        (alice, bob, now)
    }

    /// Every datagram `from` sends at `now`, parsed: (seq, Some(records) for a bundle).
    fn data_sent(from: &mut Session, now: Instant) -> Vec<(u32, Option<usize>)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        while let Some(t) = from.poll_transmit(now, &mut buf) {
            let frame = Frame::new_checked(&buf[..t.len]).expect("a whole frame");
            if let Body::Data { seq, payload, .. } = Repr::parse(&frame).expect("valid").body {
                let records = match payload {
                    #[cfg(feature = "bundle")]
                    Payload::Bundle(b) => Some(b.messages().count()),
                    _ => None,
                };
                out.push((seq, records));
            }
        }
        out
    }

    #[cfg(feature = "bundle")]
    #[test]
    fn short_messages_queued_together_share_one_part() {
        let (mut alice, mut bob, now) = bundling_pair(false);
        // The first goes out alone; the four queued behind it share the next part.
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut ids = vec![alice.send_text(now, "one").unwrap()];
        let t = alice.poll_transmit(now, &mut buf).unwrap();
        bob.handle_datagram(now, peer(), &buf[..t.len]);
        for text in ["two 你好", "three", "four"] {
            ids.push(alice.send_text(now, text).unwrap());
        }
        ids.push(alice.send_message(now, 55, "five").unwrap());
        assert_eq!(alice.pending(), 5);
        let rest = data_sent(&mut alice, now);
        assert_eq!(rest, [(1, Some(4))], "one part, a bundle of four");
        assert_eq!(ids, (0..5).map(MessageId).collect::<Vec<_>>());

        // Lost (and the first part's acknowledgement not yet sent): both parts again, whole,
        // on the next timeout; the receiver shows each message once.
        let later = now + alice.rto();
        alice.handle_timeout(later);
        let mut again = Vec::new();
        for _ in 0..2 {
            while let Some(t) = alice.poll_transmit(later, &mut buf) {
                again.push(t.len);
                bob.handle_datagram(later, peer(), &buf[..t.len]);
            }
        }
        assert_eq!(again.len(), 2);
        let mut got = Vec::new();
        while let Some(event) = bob.poll_event() {
            if let Event::Message(text) = event {
                got.push((text.to_owned(), bob.message_id()));
            }
        }
        let epoch = 7u64 << 32;
        assert_eq!(
            got,
            [
                ("one".to_owned(), epoch),
                ("two 你好".to_owned(), epoch | 1),
                ("three".to_owned(), epoch | 2),
                ("four".to_owned(), epoch | 3),
                ("five".to_owned(), 55),
            ]
        );
        assert_eq!(bob.stats().messages_in, 5);
        deliver_all(&mut bob, &mut alice, later);
        let mut delivered = Vec::new();
        while let Some(event) = alice.poll_event() {
            if let Event::Delivered(id) = event {
                delivered.push(id.0);
            }
        }
        assert_eq!(delivered, [0, 1, 2, 3, 4]);
        assert_eq!(alice.pending(), 0);
    }

    #[cfg(feature = "bundle")]
    #[test]
    fn a_bundle_is_acknowledged_only_once_every_message_in_it_is_confirmed() {
        let (mut alice, mut bob, now) = bundling_pair(true);
        let mut buf = [0u8; MAX_DATAGRAM];
        for text in ["a", "b", "c"] {
            alice.send_text(now, text).unwrap();
        }
        assert_eq!(data_sent(&mut alice, now), [(0, Some(3))]);
        // Sent again by hand (data_sent swallowed it): the bundle arrives.
        alice.handle_timeout(now + alice.rto());
        let t = alice.poll_transmit(now + alice.rto(), &mut buf).unwrap();
        bob.handle_datagram(now, peer(), &buf[..t.len]);
        // Two of three taken and confirmed: nothing is acknowledged yet.
        assert!(matches!(bob.poll_event(), Some(Event::Message("a"))));
        assert!(matches!(bob.poll_event(), Some(Event::Message("b"))));
        bob.confirm_received();
        deliver_all(&mut bob, &mut alice, now);
        assert_eq!(alice.pending(), 3);
        // The last one taken but not confirmed: still nothing.
        assert!(matches!(bob.poll_event(), Some(Event::Message("c"))));
        assert!(bob.poll_event().is_none());
        deliver_all(&mut bob, &mut alice, now);
        assert_eq!(alice.pending(), 3);
        // Confirmed: all three are delivered.
        bob.confirm_received();
        deliver_all(&mut bob, &mut alice, now);
        assert_eq!(alice.pending(), 0);
    }

    #[test]
    fn without_the_peers_features_every_message_has_its_own_part() {
        let now = Instant::from_millis(10);
        let mut alice = Session::new(now, Config::default(), 7, Some(peer()));
        for text in ["one", "two", "three"] {
            alice.send_text(now, text).unwrap();
        }
        assert!(!alice.peer_takes_bundles());
        assert_eq!(
            data_sent(&mut alice, now),
            [(0, None), (1, None), (2, None)]
        );
    }

    /// The kinds of the frames `from` sends at `now`, each handed to `to` unless `drop`
    /// says so (by its index among them).
    #[cfg(feature = "bundle")]
    fn kinds_between(
        from: &mut Session,
        to: &mut Session,
        now: Instant,
        drop: &dyn Fn(usize) -> bool,
    ) -> Vec<u8> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut kinds = Vec::new();
        while let Some(t) = from.poll_transmit(now, &mut buf) {
            if !drop(kinds.len()) {
                to.handle_datagram(now, peer(), &buf[..t.len]);
            }
            kinds.push(buf[3]);
        }
        kinds
    }

    /// Frames between `alice` and `bob` at `now`, in turns: each step says who sends
    /// (true: Alice) and the kinds of the frames expected.
    #[cfg(feature = "bundle")]
    fn expect_turns(alice: &mut Session, bob: &mut Session, now: Instant, steps: &[(bool, &[u8])]) {
        for (i, (from_alice, kinds)) in steps.iter().enumerate() {
            let sent = if *from_alice {
                kinds_between(alice, bob, now, &|_| false)
            } else {
                kinds_between(bob, alice, now, &|_| false)
            };
            assert_eq!(sent, *kinds, "step {i}");
        }
    }

    #[cfg(feature = "bundle")]
    #[test]
    fn features_are_told_per_peer_epoch_and_each_side_hears_that_the_other_has_them() {
        use crate::wire::frame::kind::{FEATURES, PING};
        let (alice_first, bob_first) = (true, false);
        let now = Instant::from_millis(10);
        let mut alice = Session::new(now, Config::default(), 7, Some(peer()));
        let mut bob = Session::new(now, Config::default(), 8, Some(peer()));
        // Alice's PING (her first frame) tells Bob her epoch; he tells her his FEATURES,
        // she answers with hers (HEARD), he says he heard them (HEARD), and then neither
        // says it again, however long they talk.
        let exchange: [(bool, &[u8]); 5] = [
            (alice_first, &[PING]),
            (bob_first, &[FEATURES]),
            (alice_first, &[FEATURES]),
            (bob_first, &[FEATURES]),
            (alice_first, &[]),
        ];
        expect_turns(&mut alice, &mut bob, now, &exchange);
        assert!(alice.peer_takes_bundles() && bob.peer_takes_bundles());
        let later = now + Duration::from_secs(20);
        alice.handle_timeout(later);
        bob.handle_timeout(later);
        for sent in [
            kinds_between(&mut alice, &mut bob, later, &|_| false),
            kinds_between(&mut bob, &mut alice, later, &|_| false),
        ] {
            assert!(!sent.contains(&FEATURES), "{sent:?}");
        }
        // Bob restarts: a new epoch, whose features Alice learns anew; this time Bob's
        // PING comes first.
        let mut bob = Session::new(now, Config::default(), 9, Some(peer()));
        let swapped = exchange.map(|(alice_sends, kinds)| (!alice_sends, kinds));
        expect_turns(&mut alice, &mut bob, now, &swapped[..1]);
        assert!(!alice.peer_takes_bundles());
        expect_turns(&mut alice, &mut bob, now, &swapped[1..]);
        assert!(alice.peer_takes_bundles() && bob.peer_takes_bundles());
    }

    /// Every way the first FEATURES frames of a pair can be lost: the pair still ends with
    /// each side knowing the other takes bundles, by the retransmission timeouts.
    #[cfg(feature = "bundle")]
    #[test]
    fn lost_features_are_told_again_until_heard() {
        // Which of the first frames (in the order they go, both ways) are lost.
        for lost in 0u32..1 << 6 {
            let start = Instant::from_millis(10);
            let mut alice = Session::new(start, Config::default(), 7, Some(peer()));
            let mut bob = Session::new(start, Config::default(), 8, Some(peer()));
            let mut n = 0usize;
            let mut now = start;
            for _ in 0..40 {
                for turn in 0..2 {
                    let (from, to) = if turn == 0 {
                        (&mut alice, &mut bob)
                    } else {
                        (&mut bob, &mut alice)
                    };
                    let mut buf = [0u8; MAX_DATAGRAM];
                    while let Some(t) = from.poll_transmit(now, &mut buf) {
                        if n >= 6 || lost & (1 << n) == 0 {
                            to.handle_datagram(now, peer(), &buf[..t.len]);
                        }
                        n += 1;
                    }
                }
                let next = [alice.poll_timeout(), bob.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now);
                now = next.max(now + Duration::from_millis(1));
                alice.handle_timeout(now);
                bob.handle_timeout(now);
                if alice.peer_takes_bundles() && bob.peer_takes_bundles() && now > start {
                    break;
                }
            }
            assert!(
                alice.peer_takes_bundles() && bob.peer_takes_bundles(),
                "lost {lost:06b}: alice {}, bob {}",
                alice.peer_takes_bundles(),
                bob.peer_takes_bundles()
            );
            // The retries come 1, 2 and 4 s (the initial RTO, doubled) after a FEATURES,
            // and lost PINGs delay the first: 12 s at most, found over all 64 patterns.
            assert!(
                now < start + Duration::from_secs(16),
                "lost {lost:06b}: {:?}",
                now - start
            );
        }
    }

    /// A peer that never answers FEATURES (an older duet, the board) gets them at most
    /// FEATURES_TELLS times.
    #[cfg(feature = "bundle")]
    #[test]
    fn a_peer_that_never_answers_gets_features_a_few_times_only() {
        use crate::wire::frame::kind;
        let start = Instant::from_millis(10);
        let mut alice = Session::new(start, Config::default(), 7, Some(peer()));
        let mut bob = Session::new(start, Config::default(), 8, Some(peer()));
        // Bob's PING tells Alice his epoch; nothing of Alice's reaches him after that.
        kinds_between(&mut bob, &mut alice, start, &|_| false);
        let mut told = 0;
        let mut now = start;
        for _ in 0..200 {
            told += kinds_between(&mut alice, &mut bob, now, &|_| true)
                .iter()
                .filter(|&&k| k == kind::FEATURES)
                .count();
            now = alice.poll_timeout().map_or(now, |t| t.max(now)) + Duration::from_millis(1);
            alice.handle_timeout(now);
            if now > start + Duration::from_secs(60) {
                break;
            }
        }
        assert_eq!(told, usize::from(FEATURES_TELLS));
        assert!(!alice.peer_takes_bundles());
    }
}
