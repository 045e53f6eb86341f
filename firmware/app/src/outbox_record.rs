//! A note of the outbox in RAM that a warm reset leaves alone, so that after one the console
//! can say what it dropped.
//!
//! The outbox itself (the session, in `.bss`) is zeroed at every boot; this record lives in
//! cortex-m-rt's `.uninit` section, which the reset handler neither zeroes nor loads. The
//! run loop keeps it up to date — how many of the user's messages are not yet delivered,
//! and a preview of the oldest — rewriting it only when one of the two changed. At the next
//! boot [`OutboxRecord::take`] reads what the last run left.
//!
//! The record also counts warm boots: the handshake's timestamps must grow across restarts
//! (docs/SECURITY.md), and the board has no wall clock, so they are the boot count in the
//! high bits and the time since boot below ([`OutboxRecord::handshake_clock`]).
//!
//! Contract: after power-on the RAM holds noise, and a reset can land in the middle of a
//! rewrite; a magic number, a checksum and range checks tell such bytes from a record, and
//! they read as "nothing known" ([`OutboxRecord::lost`] is `None`), never as a false report.
//! All the firmware's `unsafe` for this RAM is in [`claim_ram`].

use core::mem::MaybeUninit;
use core::ptr;
use portable_atomic::{AtomicBool, Ordering};

use duet_core::MessageId;
use duet_core::session::OUTBOX_PARTS;
use heapless::String;

use crate::console::PREVIEW_MAX;

/// Marks a record written by this firmware: "due" in ASCII and a layout version in the low
/// byte (bump it when [`Record`] changes, so an old layout reads as noise).
const MAGIC: u32 = 0x6475_6502;
/// FNV-1a's 32-bit offset basis and prime: a checksum that catches noise and torn writes
/// (not an attacker: nothing outside the board writes this RAM).
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The record as it sits in RAM. Plain integers and bytes, so every bit pattern is a value;
/// whether it is a *record* is [`Record::parse`]'s call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    magic: u32,
    /// Boots since the last cold start that found a record (this one included).
    boots: u32,
    /// The user's messages not yet delivered (nor reported failed).
    pending: u32,
    /// Bytes of `preview` in use.
    preview_len: u32,
    /// The oldest undelivered message, cut on a character boundary (UTF-8).
    preview: [u8; PREVIEW_MAX],
    /// FNV-1a over the fields above.
    checksum: u32,
}

impl Record {
    fn new(boots: u32, pending: u32, preview: &str) -> Record {
        let mut bytes = [0u8; PREVIEW_MAX];
        // Previews are cut to PREVIEW_MAX bytes by the console; `min` only guards the copy.
        let len = preview.len().min(PREVIEW_MAX);
        bytes[..len].copy_from_slice(&preview.as_bytes()[..len]);
        let mut record = Record {
            magic: MAGIC,
            boots,
            pending,
            preview_len: len as u32,
            preview: bytes,
            checksum: 0,
        };
        record.checksum = record.sum();
        record
    }

    fn sum(&self) -> u32 {
        let fields = [self.magic, self.boots, self.pending, self.preview_len];
        fields
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .chain(self.preview.iter().copied())
            .fold(FNV_OFFSET, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
            })
    }

    /// Whether these bytes are a record at all (rather than noise or a torn write).
    fn valid(&self) -> bool {
        self.magic == MAGIC && self.checksum == self.sum()
    }

    /// What the record says was pending, if it is one: `None` for noise, a torn write, or a
    /// well-formed record with impossible contents.
    fn parse(&self) -> Option<Lost> {
        if !self.valid() {
            return None;
        }
        let messages = usize::try_from(self.pending).ok()?;
        if messages == 0 || messages > OUTBOX_PARTS {
            return None;
        }
        let len = usize::try_from(self.preview_len).ok()?;
        let first = core::str::from_utf8(self.preview.get(..len)?).ok()?;
        Some(Lost {
            messages,
            first: String::try_from(first).ok()?,
        })
    }
}

/// What a warm reset dropped: the messages the last run had not delivered.
pub struct Lost {
    /// How many (at least 1).
    pub messages: usize,
    /// A preview of the oldest; empty if the run did not know it.
    pub first: String<PREVIEW_MAX>,
}

/// The record's RAM, and what the last run left in it until [`OutboxRecord::lost`] takes it.
pub struct OutboxRecord {
    ram: &'static mut MaybeUninit<Record>,
    /// This boot's number since the last cold start (1 after one).
    boots: u32,
    left: Option<Lost>,
    /// What was last written, so an unchanged outbox costs a comparison, not a rewrite.
    written: Option<(usize, Option<MessageId>)>,
}

impl OutboxRecord {
    /// The record, the first time only (`None` afterwards). Call it early in boot: it reads
    /// what the previous run left, and the first [`Self::update`] overwrites that.
    pub fn take() -> Option<OutboxRecord> {
        let (left, ram) = claim_ram()?;
        // Written with the first update, in the loop's first turn: a reset before it gives
        // the next boot this one's number (rewriting it here costs flash the board lacks).
        let boots = if left.valid() {
            left.boots.saturating_add(1)
        } else {
            1
        };
        Some(OutboxRecord {
            ram,
            boots,
            left: left.parse(),
            written: None,
        })
    }

    /// The reading of the handshake's clock at boot ([`duet_core::Secure::set_unix_time`]):
    /// the boot count times 2^44 µs (203 days), to which the core adds the time since boot.
    /// It grows across warm resets while each run stays under 203 days; a cold start
    /// forgets it, and a peer that accepted a later timestamp refuses the board's own
    /// initiations until it starts a handshake itself (docs/SECURITY.md).
    pub fn handshake_clock(&self) -> u64 {
        u64::from(self.boots.min(0xf_ffff)) << 44
    }

    /// What the run before the last reset had not delivered, once; `None` after a cold
    /// start (noise in RAM) or a reset with nothing pending.
    pub fn lost(&mut self) -> Option<Lost> {
        self.left.take()
    }

    /// Note the outbox as it is now: `pending` undelivered messages, the oldest being
    /// `oldest` (its id and preview). Cheap when nothing changed.
    pub fn update(&mut self, pending: usize, oldest: Option<(MessageId, &str)>) {
        let now = (pending, oldest.map(|(id, _)| id));
        if self.written == Some(now) {
            return;
        }
        let preview = oldest.map_or("", |(_, text)| text);
        // `pending` is at most OUTBOX_PARTS; saturating keeps a bad count out of range, so
        // `parse` refuses it rather than reporting a wrong number.
        let count = u32::try_from(pending).unwrap_or(u32::MAX);
        self.ram.write(Record::new(self.boots, count, preview));
        self.written = Some(now);
    }
}

/// The record's RAM, handed out once, with the bytes it held at boot.
///
/// This is the one `unsafe` for the record. The RAM is a static in `.uninit.*`, which
/// cortex-m-rt's linker script places in RAM after `.bss` and its reset handler leaves
/// untouched, so after a warm reset it still holds what the last run wrote.
fn claim_ram() -> Option<(Record, &'static mut MaybeUninit<Record>)> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    #[unsafe(link_section = ".uninit.duet.outbox_record")]
    static mut RAM: MaybeUninit<Record> = MaybeUninit::uninit();

    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: TAKEN lets this run once, so the `&mut` made here is the only reference to
    // RAM there ever is (nothing else names it). The read is of a `MaybeUninit<Record>`'s
    // storage as a `Record`: every bit pattern is a valid `Record` (integers and bytes,
    // `repr(C)`, 4-byte aligned), and the bytes are whatever the RAM cells hold — the last
    // run's record, or noise after power-on. Rust never initialised them (that is the point
    // of `.uninit`), so the read is volatile: the compiler must load them from RAM and
    // cannot reason about their value, which `Record::parse` then checks.
    unsafe {
        let ram: *mut MaybeUninit<Record> = &raw mut RAM;
        let left = ptr::read_volatile(ram.cast::<Record>());
        Some((left, &mut *ram))
    }
}
