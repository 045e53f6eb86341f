//! The duet frame: one per datagram.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! | magic 0x64 'd'| magic 0x75 'u'|   version 1   |     kind      |
//! +---------------+---------------+---------------+---------------+
//! |     flags     |   encoding    |        payload length         |
//! +---------------+---------------+-------------------------------+
//! |                      sender epoch (≠ 0)                       |
//! |                      seq                                      |
//! |                      base                                     |
//! |                      ack epoch (0: no ack information)        |
//! |                      ack (next expected seq)                  |
//! |                      ack bits                                 |
//! +---------------------------------------------------------------+
//! |        message id (8 bytes, first part of a message only)     |
//! |           text (UTF-8), or opaque bytes (encoding 2) ...      |
//! +---------------------------------------------------------------+
//! ```
//! A bundle (encoding 3, [`Bundle`]) carries several whole short messages in one part
//! instead: no leading id, a record of id, length and text for each message.
//! All integers are big-endian. `docs/PROTOCOL.md` gives every field's meaning and the
//! test vectors checked at the bottom of this file.
//!
//! Between paired peers a frame never travels in the clear: it is the plaintext of a sealed
//! transport message ([`super::sealed`]), whose 16-byte header is the AEAD's associated data
//! and whose 16-byte tag follows. [`MAX_PAYLOAD`] leaves room for both inside
//! [`MAX_DATAGRAM`], so sealing never makes a datagram longer than the limit.
//!
//! Contract: after [`Frame::check_len`] succeeds no accessor panics; [`Repr::parse`] rejects
//! every frame this version does not define.

use super::{Error, Result};
use crate::MAX_DATAGRAM;
use byteorder_free::{read_u16, read_u32, write_u16, write_u32};

mod field {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: usize = 4;
    pub const ENCODING: usize = 5;
    pub const LENGTH: Range<usize> = 6..8;
    pub const EPOCH: Range<usize> = 8..12;
    pub const SEQ: Range<usize> = 12..16;
    pub const BASE: Range<usize> = 16..20;
    pub const ACK_EPOCH: Range<usize> = 20..24;
    pub const ACK: Range<usize> = 24..28;
    pub const ACK_BITS: Range<usize> = 28..32;
    pub const PAYLOAD: usize = 32;
}

/// The two bytes every duet frame starts with: ASCII `du`.
pub const MAGIC: [u8; 2] = *b"du";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Bytes of the message id at the start of a message's first part.
pub const ID_LEN: usize = 8;

/// The most payload bytes one frame carries, so that the sealed frame fits [`MAX_DATAGRAM`].
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - super::sealed::OVERHEAD - HEADER_LEN;

/// Frame kinds (the `kind` byte).
pub mod kind {
    /// A part of a chat message; acknowledged.
    pub const DATA: u8 = 1;
    /// Acknowledgement information only.
    pub const ACK: u8 = 2;
    /// Liveness probe; answered with an ACK.
    pub const PING: u8 = 3;
    /// The sender is leaving; not answered.
    pub const CLOSE: u8 = 4;
    /// What the sender accepts beyond version 1 ([`super::features`]); not acknowledged.
    /// A duet from before it, or a build without the `bundle` feature, rejects it as
    /// malformed, which is all it takes to tell it has none of them.
    pub const FEATURES: u8 = 5;
}

/// Bits of a FEATURES frame's `flags` byte.
pub mod features {
    /// The sender accepts bundles ([`super::TextEncoding::Bundle`]).
    pub const BUNDLE: u8 = 0x01;
    /// The sender has the recipient's FEATURES of the recipient's current epoch (the ack
    /// epoch): no answer is needed.
    pub const HEARD: u8 = 0x80;
    /// Every bit this version defines.
    pub const ALL: u8 = BUNDLE | HEARD;
}

/// Flag bits (the `flags` byte); only DATA frames may set them.
pub mod flags {
    /// This part starts a message.
    pub const FIRST: u8 = 0x01;
    /// This part ends a message.
    pub const LAST: u8 = 0x02;
    /// Every bit this version defines.
    pub const ALL: u8 = FIRST | LAST;
}

/// The payload's text encoding (the `encoding` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum TextEncoding {
    /// No text: control frames.
    None = 0,
    /// UTF-8, the only text encoding on duet's wire.
    Utf8 = 1,
    /// Not text: opaque bytes of the application's own (files, in the host program). Every
    /// part of one message has the same encoding.
    Binary = 2,
    /// A bundle: several whole UTF-8 messages, each with its id, in one part that is both
    /// FIRST and LAST ([`Bundle`]). Sent only to a peer whose FEATURES said it accepts them.
    Bundle = 3,
}

/// Bytes before each message's text in a bundle: its id and its length.
pub const RECORD_HEADER: usize = ID_LEN + 2;

/// The payload of a bundle: one or more records of `id (8) | length (2) | text`, each text
/// at least one byte of valid UTF-8, filling the payload exactly. Once checked, reading it
/// never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bundle<'a>(&'a [u8]);

impl<'a> Bundle<'a> {
    /// Check that `bytes` are whole, valid records.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Bundle<'a>> {
        if bytes.is_empty() {
            return Err(Error);
        }
        let mut at = 0;
        // Each record is at least RECORD_HEADER + 1 bytes, so this bounds the loop.
        for _ in 0..=bytes.len() / (RECORD_HEADER + 1) {
            if at == bytes.len() {
                return Ok(Bundle(bytes));
            }
            let (_, text, next) = read_record(bytes, at).ok_or(Error)?;
            core::str::from_utf8(text).map_err(|_| Error)?;
            at = next;
        }
        Err(Error)
    }

    /// Wrap records laid out as [`record_header`] and [`read_record`] say, without checking
    /// them again.
    pub const fn new_unchecked(bytes: &'a [u8]) -> Bundle<'a> {
        Bundle(bytes)
    }

    /// The records as they go on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The messages: (id, text) in order.
    pub fn messages(&self) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        let bytes = self.0;
        let mut at = 0;
        core::iter::from_fn(move || {
            let (id, text, next) = read_record(bytes, at)?;
            at = next;
            Some((id, core::str::from_utf8(text).unwrap_or_default()))
        })
    }
}

/// The record at `at` in a bundle's bytes: its id, its text and where the next one starts.
/// `None` if no whole record with at least one byte of text starts there.
pub fn read_record(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&header[..ID_LEN]);
    let len = usize::from(read_u16(&header[ID_LEN..]));
    let start = at + RECORD_HEADER;
    let text = bytes.get(start..start.checked_add(len)?)?;
    (len > 0).then_some((u64::from_be_bytes(id), text, start + len))
}

/// The header of a record of `text_len` bytes of text with the id `id`; the text follows it.
pub fn record_header(id: u64, text_len: u16) -> [u8; RECORD_HEADER] {
    let mut header = [0; RECORD_HEADER];
    header[..ID_LEN].copy_from_slice(&id.to_be_bytes());
    write_u16(&mut header[ID_LEN..], text_len);
    header
}

/// What a DATA part carries: text, or opaque bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Payload<'a> {
    /// A part of a chat message: valid UTF-8 on its own.
    Text(&'a str),
    /// A part of a binary message: any bytes.
    Binary(&'a [u8]),
    /// Several whole text messages with their ids, in one part.
    #[cfg(feature = "bundle")]
    Bundle(Bundle<'a>),
}

impl<'a> Payload<'a> {
    /// The bytes, whatever they are.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Payload::Text(text) => text.as_bytes(),
            Payload::Binary(bytes) => bytes,
            #[cfg(feature = "bundle")]
            Payload::Bundle(bundle) => bundle.as_bytes(),
        }
    }

    /// Whether it is a bundle (never, without the `bundle` feature).
    pub fn is_bundle(&self) -> bool {
        match self {
            #[cfg(feature = "bundle")]
            Payload::Bundle(_) => true,
            _ => false,
        }
    }

    /// Bytes of payload (without the message id of a FIRST part that is not a bundle).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether there are none (never, in a valid frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `encoding` byte that goes with it.
    pub fn encoding(&self) -> TextEncoding {
        match self {
            Payload::Text(_) => TextEncoding::Utf8,
            Payload::Binary(_) => TextEncoding::Binary,
            #[cfg(feature = "bundle")]
            Payload::Bundle(_) => TextEncoding::Bundle,
        }
    }
}

/// Big-endian helpers on slices whose length the caller has checked.
///
/// Written here rather than pulling in `byteorder`: four two-line functions, and the
/// `try_into` conversions below cannot fail on the fixed ranges of `mod field`.
mod byteorder_free {
    pub fn read_u16(b: &[u8]) -> u16 {
        let mut a = [0; 2];
        a.copy_from_slice(&b[..2]);
        u16::from_be_bytes(a)
    }
    pub fn read_u32(b: &[u8]) -> u32 {
        let mut a = [0; 4];
        a.copy_from_slice(&b[..4]);
        u32::from_be_bytes(a)
    }
    pub fn write_u16(b: &mut [u8], v: u16) {
        b[..2].copy_from_slice(&v.to_be_bytes());
    }
    pub fn write_u32(b: &mut [u8], v: u32) {
        b[..4].copy_from_slice(&v.to_be_bytes());
    }
}

/// A read/write wrapper around a duet frame buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking it. Accessors may panic until [`Self::check_len`] passed.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap a buffer and check that every accessor is safe to call.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensure the buffer holds the whole header and the payload its length field announces.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 2] {
        let b = &self.buffer.as_ref()[field::MAGIC];
        [b[0], b[1]]
    }
    /// The version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The kind byte (see [`kind`]).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// The flags byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The encoding byte (see [`TextEncoding`]).
    pub fn encoding(&self) -> u8 {
        self.buffer.as_ref()[field::ENCODING]
    }
    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }
    /// The sender's epoch: a nonzero number that names one run of a sender's session.
    pub fn epoch(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::EPOCH])
    }
    /// The sequence number of this DATA part (zero in other frames).
    pub fn seq(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ])
    }
    /// The lowest sequence number the sender still waits an acknowledgement for.
    pub fn base(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::BASE])
    }
    /// The epoch whose parts this frame acknowledges (zero: none).
    pub fn ack_epoch(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_EPOCH])
    }
    /// Cumulative acknowledgement: every seq below this was received.
    pub fn ack(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK])
    }
    /// Selective acknowledgement: bit `i` set means `ack + 1 + i` was received.
    pub fn ack_bits(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_BITS])
    }
    /// The payload the length field announces.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
    /// Header plus payload: where a sealed frame's tag would start.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the magic bytes.
    pub fn set_magic(&mut self, value: [u8; 2]) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&value);
    }
    /// Set the version byte.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }
    /// Set the kind byte.
    pub fn set_kind(&mut self, value: u8) {
        self.buffer.as_mut()[field::KIND] = value;
    }
    /// Set the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }
    /// Set the encoding byte.
    pub fn set_encoding(&mut self, value: u8) {
        self.buffer.as_mut()[field::ENCODING] = value;
    }
    /// Set the payload length field.
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }
    /// Set the sender epoch.
    pub fn set_epoch(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::EPOCH], value);
    }
    /// Set the sequence number.
    pub fn set_seq(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ], value);
    }
    /// Set the base.
    pub fn set_base(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::BASE], value);
    }
    /// Set the acknowledged epoch.
    pub fn set_ack_epoch(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_EPOCH], value);
    }
    /// Set the cumulative acknowledgement.
    pub fn set_ack(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK], value);
    }
    /// Set the selective acknowledgement bits.
    pub fn set_ack_bits(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_BITS], value);
    }
    /// The payload, writable; its length comes from the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// What a frame acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckInfo {
    /// The epoch of the session being acknowledged (never zero).
    pub epoch: u32,
    /// Every seq below this was received.
    pub next: u32,
    /// Bit `i`: seq `next + 1 + i` was received.
    pub bits: u32,
}

impl AckInfo {
    /// Whether this acknowledges `seq`.
    pub fn covers(&self, seq: u32) -> bool {
        if seq < self.next {
            return true;
        }
        match seq.checked_sub(self.next).and_then(|d| d.checked_sub(1)) {
            Some(i) if i < 32 => self.bits & (1 << i) != 0,
            _ => false,
        }
    }
}

/// The meaning of a frame, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Body<'a> {
    /// One part of a chat message.
    Data {
        /// The part's sequence number in the sender's epoch.
        seq: u32,
        /// This part starts a message (its payload begins with the message id, unless it is
        /// a bundle, whose records carry their own).
        first: bool,
        /// This part ends a message.
        last: bool,
        /// The message's id, chosen by its sender and the same in every retransmission,
        /// also across restarts; carried by the first part only (zero in the others, and in
        /// a bundle).
        id: u64,
        /// The part's text or bytes: never empty; with the id at most [`MAX_PAYLOAD`] bytes.
        payload: Payload<'a>,
    },
    /// Acknowledgement only.
    Ack,
    /// Liveness probe.
    Ping,
    /// The sender is leaving.
    Close,
    /// What the sender accepts: [`features`] bits.
    #[cfg(feature = "bundle")]
    Features(u8),
}

/// A parsed, validated duet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Repr<'a> {
    /// The sender's epoch (never zero).
    pub epoch: u32,
    /// The lowest seq the sender still waits an acknowledgement for.
    pub base: u32,
    /// What the sender acknowledges of our parts, if it knows our epoch.
    pub ack: Option<AckInfo>,
    /// The frame's kind and contents.
    pub body: Body<'a>,
}

impl<'a> Repr<'a> {
    /// Parse and validate a frame. Rejects anything this version does not define: wrong magic
    /// or version, unknown kind, flags or encoding, a zero epoch, trailing bytes, text that
    /// is not UTF-8, an empty or oversized DATA payload, a payload on a control frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&'a T>) -> Result<Repr<'a>> {
        frame.check_len()?;
        let total = frame.buffer.as_ref().len();
        if frame.magic() != MAGIC
            || frame.version() != VERSION
            || total != frame.frame_len()
            || usize::from(frame.payload_len()) > MAX_PAYLOAD
            || frame.epoch() == 0
        {
            return Err(Error);
        }
        let ack = match frame.ack_epoch() {
            0 if frame.ack() == 0 && frame.ack_bits() == 0 => None,
            0 => return Err(Error),
            epoch => Some(AckInfo {
                epoch,
                next: frame.ack(),
                bits: frame.ack_bits(),
            }),
        };
        let kind = frame.kind();
        let control = |body| {
            if frame.flags() == 0
                && frame.encoding() == TextEncoding::None as u8
                && frame.payload_len() == 0
                && frame.seq() == 0
            {
                Ok(body)
            } else {
                Err(Error)
            }
        };
        let body = match kind {
            kind::DATA => {
                let f = frame.flags();
                let encoding = frame.encoding();
                if f & !flags::ALL != 0 || frame.payload_len() == 0 || frame.seq() < frame.base() {
                    return Err(Error);
                }
                let buffer: &'a T = frame.buffer;
                let payload: &'a [u8] = &buffer.as_ref()[HEADER_LEN..total];
                let first = f & flags::FIRST != 0;
                #[cfg(feature = "bundle")]
                if encoding == TextEncoding::Bundle as u8 {
                    // A bundle is never split: it is a whole part of whole messages.
                    if f != flags::ALL {
                        return Err(Error);
                    }
                    return Ok(Repr {
                        epoch: frame.epoch(),
                        base: frame.base(),
                        ack,
                        body: Body::Data {
                            seq: frame.seq(),
                            first: true,
                            last: true,
                            id: 0,
                            payload: Payload::Bundle(Bundle::new_checked(payload)?),
                        },
                    });
                }
                let binary = match encoding {
                    e if e == TextEncoding::Utf8 as u8 => false,
                    e if e == TextEncoding::Binary as u8 => true,
                    _ => return Err(Error),
                };
                let (id, data) = if first {
                    // The id, then at least one byte of text or bytes.
                    if payload.len() <= ID_LEN {
                        return Err(Error);
                    }
                    let mut id = [0u8; ID_LEN];
                    id.copy_from_slice(&payload[..ID_LEN]);
                    (u64::from_be_bytes(id), &payload[ID_LEN..])
                } else {
                    (0, payload)
                };
                let payload = if binary {
                    Payload::Binary(data)
                } else {
                    Payload::Text(core::str::from_utf8(data).map_err(|_| Error)?)
                };
                Body::Data {
                    seq: frame.seq(),
                    first,
                    last: f & flags::LAST != 0,
                    id,
                    payload,
                }
            }
            kind::ACK => control(Body::Ack)?,
            kind::PING => control(Body::Ping)?,
            kind::CLOSE => control(Body::Close)?,
            #[cfg(feature = "bundle")]
            kind::FEATURES => {
                // A control frame whose flags byte holds the feature bits.
                let bits = frame.flags();
                if bits & !features::ALL != 0 {
                    return Err(Error);
                }
                if frame.encoding() != TextEncoding::None as u8
                    || frame.payload_len() != 0
                    || frame.seq() != 0
                {
                    return Err(Error);
                }
                Body::Features(bits)
            }
            _ => return Err(Error),
        };
        Ok(Repr {
            epoch: frame.epoch(),
            base: frame.base(),
            ack,
            body,
        })
    }

    /// The number of bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        match self.body {
            Body::Data {
                first: true,
                payload: payload @ (Payload::Text(_) | Payload::Binary(_)),
                ..
            } => ID_LEN + payload.len(),
            Body::Data { payload, .. } => payload.len(),
            _ => 0,
        }
    }

    /// Write this frame into a buffer of at least [`Self::buffer_len`] bytes.
    ///
    /// Text longer than [`MAX_PAYLOAD`] is not a valid `Repr`; the session never builds one.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, frame: &mut Frame<&mut T>) {
        let payload_len = self.payload_len();
        let (kind, flag_bits, seq, encoding) = match self.body {
            Body::Data {
                seq,
                first,
                last,
                payload,
                ..
            } => {
                let mut f = 0;
                if first {
                    f |= flags::FIRST;
                }
                if last {
                    f |= flags::LAST;
                }
                (kind::DATA, f, seq, payload.encoding())
            }
            Body::Ack => (kind::ACK, 0, 0, TextEncoding::None),
            Body::Ping => (kind::PING, 0, 0, TextEncoding::None),
            Body::Close => (kind::CLOSE, 0, 0, TextEncoding::None),
            #[cfg(feature = "bundle")]
            Body::Features(bits) => (kind::FEATURES, bits, 0, TextEncoding::None),
        };
        frame.set_magic(MAGIC);
        frame.set_version(VERSION);
        frame.set_kind(kind);
        frame.set_flags(flag_bits);
        frame.set_encoding(encoding as u8);
        frame.set_payload_len(u16::try_from(payload_len).unwrap_or(u16::MAX));
        frame.set_epoch(self.epoch);
        frame.set_seq(seq);
        frame.set_base(self.base);
        let ack = self.ack.unwrap_or(AckInfo {
            epoch: 0,
            next: 0,
            bits: 0,
        });
        frame.set_ack_epoch(ack.epoch);
        frame.set_ack(ack.next);
        frame.set_ack_bits(ack.bits);
        if let Body::Data {
            first, id, payload, ..
        } = self.body
        {
            let bytes = payload;
            let payload = frame.payload_mut();
            let text_at = if first && !bytes.is_bundle() {
                payload[..ID_LEN].copy_from_slice(&id.to_be_bytes());
                ID_LEN
            } else {
                0
            };
            payload[text_at..].copy_from_slice(bytes.as_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// `bytes` with the byte at `at` replaced by `value`.
    fn with_byte<const N: usize>(mut bytes: [u8; N], at: usize, value: u8) -> [u8; N] {
        bytes[at] = value;
        bytes
    }

    /// docs/PROTOCOL.md, test vector 1: a one-part message "hi 你好" with id
    /// 0x1122334455667788.
    static DATA_BYTES: [u8; 49] = [
        0x64, 0x75, 0x01, 0x01, 0x03, 0x01, 0x00, 0x11, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00,
        0x07, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x68, 0x69, 0x20, 0xe4, 0xbd,
        0xa0, 0xe5, 0xa5, 0xbd,
    ];

    /// docs/PROTOCOL.md, test vector 2: a PING from a sender that has heard nothing yet.
    static PING_BYTES: [u8; 32] = [
        0x64, 0x75, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];

    fn data_repr() -> Repr<'static> {
        Repr {
            epoch: 0x0102_0304,
            base: 5,
            ack: Some(AckInfo {
                epoch: 0x0a0b_0c0d,
                next: 3,
                bits: 0b101,
            }),
            body: Body::Data {
                seq: 7,
                first: true,
                last: true,
                id: 0x1122_3344_5566_7788,
                payload: Payload::Text("hi 你好"),
            },
        }
    }

    /// docs/PROTOCOL.md, test vector 3: the first (not last) part of a binary message,
    /// bytes `00 ff 0a 80` (not UTF-8), id 0x1122334455667788.
    static BINARY_BYTES: [u8; 44] = [
        0x64, 0x75, 0x01, 0x01, 0x01, 0x02, 0x00, 0x0c, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0xff, 0x0a, 0x80,
    ];

    fn binary_repr() -> Repr<'static> {
        Repr {
            body: Body::Data {
                seq: 8,
                first: true,
                last: false,
                id: 0x1122_3344_5566_7788,
                payload: Payload::Binary(&[0x00, 0xff, 0x0a, 0x80]),
            },
            ..data_repr()
        }
    }

    fn ping_repr() -> Repr<'static> {
        Repr {
            epoch: 0xdead_beef,
            base: 0,
            ack: None,
            body: Body::Ping,
        }
    }

    #[test]
    fn test_deconstruct() {
        let frame = Frame::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(frame.magic(), *b"du");
        assert_eq!(frame.version(), 1);
        assert_eq!(frame.kind(), kind::DATA);
        assert_eq!(frame.flags(), flags::FIRST | flags::LAST);
        assert_eq!(frame.encoding(), TextEncoding::Utf8 as u8);
        assert_eq!(frame.payload_len(), 17);
        assert_eq!(frame.epoch(), 0x0102_0304);
        assert_eq!(frame.seq(), 7);
        assert_eq!(frame.base(), 5);
        assert_eq!(frame.ack_epoch(), 0x0a0b_0c0d);
        assert_eq!(frame.ack(), 3);
        assert_eq!(frame.ack_bits(), 0b101);
        assert_eq!(
            &frame.payload()[..8],
            &0x1122_3344_5566_7788u64.to_be_bytes()
        );
        assert_eq!(&frame.payload()[8..], "hi 你好".as_bytes());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 49];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_magic(*b"du");
        frame.set_version(1);
        frame.set_kind(kind::DATA);
        frame.set_flags(flags::FIRST | flags::LAST);
        frame.set_encoding(TextEncoding::Utf8 as u8);
        frame.set_payload_len(17);
        frame.set_epoch(0x0102_0304);
        frame.set_seq(7);
        frame.set_base(5);
        frame.set_ack_epoch(0x0a0b_0c0d);
        frame.set_ack(3);
        frame.set_ack_bits(0b101);
        frame.payload_mut()[..8].copy_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        frame.payload_mut()[8..].copy_from_slice("hi 你好".as_bytes());
        assert_eq!(frame.into_inner(), &DATA_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let frame = Frame::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&frame), Ok(data_repr()));
        let frame = Frame::new_checked(&PING_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&frame), Ok(ping_repr()));
        let frame = Frame::new_checked(&BINARY_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&frame), Ok(binary_repr()));
    }

    #[test]
    fn test_binary_payload_is_bytes_and_text_must_be_utf8() {
        // The same bytes as text are refused: they are not UTF-8.
        let mut as_text = BINARY_BYTES;
        as_text[5] = TextEncoding::Utf8 as u8;
        assert!(parse_bytes(&as_text).is_err());
        // Valid UTF-8 sent as binary stays bytes.
        let mut utf8_as_binary = DATA_BYTES;
        utf8_as_binary[5] = TextEncoding::Binary as u8;
        match parse_bytes(&utf8_as_binary).map(|r| r.body) {
            Ok(Body::Data {
                payload: Payload::Binary(bytes),
                ..
            }) => assert_eq!(bytes, "hi 你好".as_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_emit() {
        for (repr, expected) in [
            (data_repr(), &DATA_BYTES[..]),
            (ping_repr(), &PING_BYTES[..]),
            (binary_repr(), &BINARY_BYTES[..]),
        ] {
            let mut bytes = [0xa5u8; MAX_DATAGRAM];
            let len = repr.buffer_len();
            assert_eq!(len, expected.len());
            repr.emit(&mut Frame::new_unchecked(&mut bytes[..len]));
            assert_eq!(&bytes[..len], expected);
        }
    }

    #[test]
    fn test_impossible_len() {
        for len in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&DATA_BYTES[..len]), Err(Error));
        }
        // The header promises 9 payload bytes; fewer is impossible.
        for len in HEADER_LEN..DATA_BYTES.len() {
            assert_eq!(Frame::new_checked(&DATA_BYTES[..len]), Err(Error));
        }
        // A length field beyond the datagram limit.
        let mut bytes = DATA_BYTES;
        bytes[6] = 0xff;
        assert_eq!(Frame::new_checked(&bytes[..]), Err(Error));
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Repr<'_>> {
        Repr::parse(&Frame::new_checked(bytes)?)
    }

    #[test]
    fn test_parse_rejects_nonsense() {
        let mutate = |at: usize, value: u8| with_byte(DATA_BYTES, at, value);
        assert!(parse_bytes(&mutate(0, b'x')).is_err(), "magic");
        assert!(parse_bytes(&mutate(2, 2)).is_err(), "version");
        assert!(parse_bytes(&mutate(3, 9)).is_err(), "kind");
        assert!(parse_bytes(&mutate(4, 0x04)).is_err(), "unknown flag");
        assert!(parse_bytes(&mutate(5, 0)).is_err(), "data without encoding");
        assert!(parse_bytes(&mutate(5, 4)).is_err(), "unknown encoding");
        assert!(parse_bytes(&mutate(43, 0xff)).is_err(), "invalid UTF-8");
        assert!(parse_bytes(&mutate(19, 8)).is_err(), "base above seq");
        let mut zero_epoch = DATA_BYTES;
        zero_epoch[8..12].fill(0);
        assert!(parse_bytes(&zero_epoch).is_err(), "zero epoch");
        let mut stray_ack = PING_BYTES;
        stray_ack[27] = 1;
        assert!(parse_bytes(&stray_ack).is_err(), "ack without ack epoch");
        let mut ping_with_flags = PING_BYTES;
        ping_with_flags[4] = flags::FIRST;
        assert!(
            parse_bytes(&ping_with_flags).is_err(),
            "flags on a control frame"
        );
        let mut trailing = [0u8; 50];
        trailing[..49].copy_from_slice(&DATA_BYTES);
        assert!(parse_bytes(&trailing).is_err(), "trailing bytes");
        let mut empty = PING_BYTES;
        empty[3] = kind::DATA;
        empty[5] = TextEncoding::Utf8 as u8;
        assert!(parse_bytes(&empty).is_err(), "empty data");
        let mut id_only = DATA_BYTES;
        id_only[7] = 8;
        assert!(
            parse_bytes(&id_only[..40]).is_err(),
            "a first part with an id and no text"
        );
    }

    /// docs/PROTOCOL.md, test vector 4: FEATURES saying "bundles welcome, yours heard".
    #[cfg(feature = "bundle")]
    static FEATURES_BYTES: [u8; 32] = [
        0x64, 0x75, 0x01, 0x05, 0x81, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x05,
    ];

    /// docs/PROTOCOL.md, test vector 5: a bundle of "hi" (id 0x1122334455667788) and "你好"
    /// (id 0x1122334455667789).
    #[cfg(feature = "bundle")]
    static BUNDLE_BYTES: [u8; 60] = [
        0x64, 0x75, 0x01, 0x01, 0x03, 0x03, 0x00, 0x1c, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00,
        0x09, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0x02, 0x68, 0x69, 0x11,
        0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x89, 0x00, 0x06, 0xe4, 0xbd, 0xa0, 0xe5, 0xa5, 0xbd,
    ];

    #[cfg(feature = "bundle")]
    fn ack_3_5() -> Option<AckInfo> {
        Some(AckInfo {
            epoch: 0x0a0b_0c0d,
            next: 3,
            bits: 0b101,
        })
    }

    #[cfg(feature = "bundle")]
    #[test]
    fn test_features_and_bundle_vectors() {
        let features = Repr {
            epoch: 0x0102_0304,
            base: 5,
            ack: ack_3_5(),
            body: Body::Features(features::BUNDLE | features::HEARD),
        };
        assert_eq!(parse_bytes(&FEATURES_BYTES), Ok(features));
        let mut out = [0u8; 32];
        features.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, FEATURES_BYTES);

        let repr = parse_bytes(&BUNDLE_BYTES).expect("a valid bundle");
        let Body::Data {
            seq: 9,
            first: true,
            last: true,
            id: 0,
            payload: Payload::Bundle(bundle),
        } = repr.body
        else {
            panic!("not the bundle of test vector 5: {repr:?}");
        };
        let messages: heapless::Vec<(u64, &str), 4> = bundle.messages().collect();
        assert_eq!(
            messages,
            [
                (0x1122_3344_5566_7788, "hi"),
                (0x1122_3344_5566_7789, "你好")
            ]
        );
        let mut out = [0u8; 60];
        repr.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, BUNDLE_BYTES);
        // The records as a sender writes them.
        let mut records = heapless::Vec::<u8, 28>::new();
        for (id, text) in messages {
            let _ = records.extend_from_slice(&record_header(id, text.len() as u16));
            let _ = records.extend_from_slice(text.as_bytes());
        }
        assert_eq!(records, BUNDLE_BYTES[32..]);
    }

    #[cfg(feature = "bundle")]
    #[test]
    fn test_bundles_and_features_reject_nonsense() {
        let mutate = |at: usize, value: u8| with_byte(BUNDLE_BYTES, at, value);
        assert!(
            parse_bytes(&mutate(4, flags::FIRST)).is_err(),
            "a split bundle"
        );
        assert!(
            parse_bytes(&mutate(41, 3)).is_err(),
            "a length into the next record"
        );
        assert!(
            parse_bytes(&mutate(55, 7)).is_err(),
            "a length past the end"
        );
        let mut trailing = [0u8; 61];
        trailing[..60].copy_from_slice(&BUNDLE_BYTES);
        trailing[7] = 0x1d;
        assert!(
            parse_bytes(&trailing).is_err(),
            "a byte after the last record"
        );
        assert!(parse_bytes(&mutate(53, 0)).is_err(), "an empty record");
        assert!(
            parse_bytes(&mutate(56, 0xff)).is_err(),
            "a record not UTF-8"
        );
        let mut short = BUNDLE_BYTES;
        short[7] = 5;
        assert!(
            parse_bytes(&short[..37]).is_err(),
            "a record header cut short"
        );
        let feature = |at: usize, value: u8| with_byte(FEATURES_BYTES, at, value);
        assert!(
            parse_bytes(&feature(4, 0x02)).is_err(),
            "an unknown feature"
        );
        assert!(
            parse_bytes(&feature(5, 1)).is_err(),
            "an encoding on FEATURES"
        );
        assert!(parse_bytes(&feature(15, 1)).is_err(), "a seq on FEATURES");
        let mut with_payload = [0u8; 33];
        with_payload[..32].copy_from_slice(&FEATURES_BYTES);
        with_payload[7] = 1;
        assert!(parse_bytes(&with_payload).is_err(), "a payload on FEATURES");
    }

    #[cfg(not(feature = "bundle"))]
    #[test]
    fn test_without_the_feature_bundles_and_features_are_malformed() {
        let mut features = PING_BYTES;
        features[3] = kind::FEATURES;
        assert!(parse_bytes(&features).is_err());
        let mut bundle = DATA_BYTES;
        bundle[5] = TextEncoding::Bundle as u8;
        assert!(parse_bytes(&bundle).is_err());
    }

    #[test]
    fn test_largest_payload_fits_when_sealed() {
        let text = core::str::from_utf8(&[b'x'; MAX_PAYLOAD - ID_LEN]).unwrap();
        let repr = Repr {
            epoch: 1,
            base: 0,
            ack: None,
            body: Body::Data {
                seq: 0,
                first: true,
                last: true,
                id: u64::MAX,
                payload: Payload::Text(text),
            },
        };
        assert_eq!(
            repr.buffer_len() + crate::wire::sealed::OVERHEAD,
            MAX_DATAGRAM
        );
        let mut bytes = [0u8; MAX_DATAGRAM];
        repr.emit(&mut Frame::new_unchecked(&mut bytes[..repr.buffer_len()]));
        assert_eq!(parse_bytes(&bytes[..repr.buffer_len()]), Ok(repr));
    }

    #[test]
    fn ack_info_covers() {
        let ack = AckInfo {
            epoch: 1,
            next: 10,
            bits: 0b1001,
        };
        assert!(ack.covers(0) && ack.covers(9));
        assert!(!ack.covers(10));
        assert!(ack.covers(11) && !ack.covers(12) && !ack.covers(13) && ack.covers(14));
        assert!(!ack.covers(10 + 33) && !ack.covers(u32::MAX));
    }
}
