//! Files over the session: a small protocol of binary messages ([`Secure::send_bytes`]),
//! one file at a time in each direction, resumable, checked end to end.
//!
//! ```text
//! sender                                   receiver
//! OFFER  id, size, name            →       (too large, no space: REFUSE id, why, detail)
//!                                  ←       ACCEPT id, from   (from: what it already has)
//!                                  ←       or HAVE id        (saved before: nothing to send)
//! CHUNK  tag, offset, bytes  ...   →       appended to DIR/.NAME.TAG.duet-part
//!                                  ←       SAVED id          (hash checked, file in place)
//!                                  ←       or FAILED id, why (damaged in transit, disk full)
//!                                  ←       AGAIN tag         (a chunk of a transfer it does
//!                                                            not know: offer it again)
//! ```
//!
//! `docs/PROTOCOL.md` (section 20) gives the byte layout. The id is the SHA-256 of the
//! content, so it is also the end-to-end check: the receiver hashes what it writes and
//! keeps the file only if the hash is the id. The session delivers messages whole, exactly
//! once and in order, so chunks arrive in order and the partial file's length is how far a
//! transfer got: a new OFFER of the same file (the sender was killed, or the receiver
//! restarted) continues from there.
//!
//! Reading whole files never happens in the loop: a file of ours is hashed on a thread
//! before its OFFER, and an offered file whose partial data (or a same-named file of its
//! size) must be hashed before the answer is read on a thread too; [`Files::hashing_since`]
//! tells the loop to look again soon.
//!
//! Durability follows the text's rule, "delivered means stored": chunks are written
//! (`write(2)`, which survives a killed process) in the turn's commit before the session may
//! acknowledge them ([`Files::prepare_commit`] runs before `confirm_received`), and the last
//! chunk is acknowledged only once the file is hashed, synced, linked into place and its
//! history row is in the turn's transaction. The hot path is lean: one buffered write per
//! turn, no SQLite, no allocation per chunk (chunks are read into one buffer and sent
//! from it, received ones are written from the session's own buffer).
//!
//! Contract: nothing a peer sends can panic this module; a message that does not parse is
//! dropped and counted ([`Files::malformed`]). A received name is made safe
//! ([`safe_name`]) and a file already there with other contents is never overwritten.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use duet_core::secure::Secure;
use duet_core::session::{MAX_MESSAGE, MessageId, SendError};
use duet_core::time::{Duration, Instant};
use sha2::{Digest, Sha256};

use super::Error;
use super::display;
use super::keys::PeerKey;
use super::store::{Direction, FileRow, Store};
use crate::platform::files as system_files;

/// A file's id: the SHA-256 of its content.
pub type FileId = [u8; 32];
/// The first 8 bytes of a file's id, which every chunk carries.
pub type Tag = [u8; 8];

/// The largest file a receiver takes unless told otherwise (`--max-file-size`).
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;
/// The longest name an OFFER carries, in bytes.
pub const MAX_NAME: usize = 255;
/// The longest name a received file is saved under, in bytes: with the dot, the tag and the
/// suffix of its partial file it stays within the 255 bytes file systems allow.
const MAX_SAVED_NAME: usize = 200;
/// What a partial file's name ends with.
pub const PART_SUFFIX: &str = ".duet-part";
/// How often a transfer reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Buffers of the file being read and of the file being written: large enough that a turn's
/// chunks cost one system call.
const FILE_BUFFER: usize = 256 * 1024;

/// The byte layout of the file messages (docs/PROTOCOL.md, section 20).
pub mod wire {
    use duet_core::session::PART_TEXT;

    /// Sender → receiver: id, size, name.
    pub const OFFER: u8 = 1;
    /// Receiver → sender: id, offset to send from.
    pub const ACCEPT: u8 = 2;
    /// Receiver → sender: id, why, detail; nothing will be saved.
    pub const REFUSE: u8 = 3;
    /// Receiver → sender: id; it is saved already.
    pub const HAVE: u8 = 4;
    /// Sender → receiver: tag, offset, bytes.
    pub const CHUNK: u8 = 5;
    /// Receiver → sender: id; checked and in place.
    pub const SAVED: u8 = 6;
    /// Receiver → sender: id, why, detail; the transfer stopped.
    pub const FAILED: u8 = 7;
    /// Receiver → sender: tag; offer that file again.
    pub const AGAIN: u8 = 8;

    /// Bytes before a chunk's data: type, tag, offset.
    pub const CHUNK_HEADER: usize = 1 + 8 + 8;
    /// Bytes of file in one chunk duet sends: a chunk fills one part, so every datagram of
    /// a transfer has the same size and a turn's chunks leave in one segmented send (the
    /// transport's offload). A receiver takes chunks up to the longest message.
    pub const CHUNK_DATA: usize = PART_TEXT - CHUNK_HEADER;
}

/// Why a receiver refused a file or stopped receiving it (the `why` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Larger than the receiver takes; the detail is its limit in bytes.
    TooLarge,
    /// Not enough space on the receiver's disk; the detail is what is free.
    NoSpace,
    /// The receiver cannot write its save directory (or has none).
    CannotSave,
    /// What arrived does not hash to the id: damaged in transit, or the file changed.
    Damaged,
    /// A code this version does not know.
    Other(u8),
}

impl Why {
    fn code(self) -> u8 {
        match self {
            Why::TooLarge => 1,
            Why::NoSpace => 2,
            Why::CannotSave => 3,
            Why::Damaged => 4,
            Why::Other(c) => c,
        }
    }

    fn from_code(code: u8) -> Why {
        match code {
            1 => Why::TooLarge,
            2 => Why::NoSpace,
            3 => Why::CannotSave,
            4 => Why::Damaged,
            c => Why::Other(c),
        }
    }

    /// Why, in words, as the sender tells its user: `peer` refused or stopped `name`.
    pub fn explain(self, detail: u64, size: u64) -> String {
        match self {
            Why::TooLarge => format!(
                "it is {size} bytes, more than the {detail} bytes the peer accepts (its --max-file-size)"
            ),
            Why::NoSpace => format!(
                "the peer's disk has only {detail} bytes free (sending it again later continues where it stopped)"
            ),
            Why::CannotSave => {
                "the peer cannot save files (its save directory is not writable)".into()
            }
            Why::Damaged => "it arrived damaged (its SHA-256 differs); send it again".into(),
            Why::Other(code) => format!("the peer refused it (reason {code})"),
        }
    }
}

/// One file message, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMessage<'a> {
    /// A file the sender would send.
    Offer {
        /// Its id.
        id: FileId,
        /// Bytes.
        size: u64,
        /// Its name as the sender has it (any bytes: the receiver makes it safe).
        name: &'a [u8],
    },
    /// Send it, from this offset on.
    Accept {
        /// The file.
        id: FileId,
        /// What the receiver has of it.
        from: u64,
    },
    /// It will not be saved.
    Refuse {
        /// The file.
        id: FileId,
        /// Why.
        why: Why,
        /// A number that goes with why.
        detail: u64,
    },
    /// It is saved already.
    Have {
        /// The file.
        id: FileId,
    },
    /// Bytes of the file at `offset`.
    Chunk {
        /// The file's tag.
        tag: Tag,
        /// Where the bytes go.
        offset: u64,
        /// The bytes (at least one).
        data: &'a [u8],
    },
    /// It is saved.
    Saved {
        /// The file.
        id: FileId,
    },
    /// The transfer stopped.
    Failed {
        /// The file.
        id: FileId,
        /// Why.
        why: Why,
        /// A number that goes with why.
        detail: u64,
    },
    /// Offer the file with this tag again.
    Again {
        /// The file's tag.
        tag: Tag,
    },
}

/// `N` bytes at `at`, if there are.
fn take<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    take::<8>(bytes, at).map(u64::from_be_bytes)
}

impl<'a> FileMessage<'a> {
    /// Parse a binary message; `None` for anything this version does not define.
    pub fn parse(bytes: &'a [u8]) -> Option<FileMessage<'a>> {
        let (&kind, _) = bytes.split_first()?;
        let id = || take::<32>(bytes, 1);
        // Exactly this long: trailing bytes are not a message of this version.
        let exact = |len: usize| (bytes.len() == len).then_some(());
        Some(match kind {
            wire::OFFER => {
                let name = bytes.get(41..)?;
                if name.is_empty() || name.len() > MAX_NAME {
                    return None;
                }
                FileMessage::Offer {
                    id: id()?,
                    size: u64_at(bytes, 33)?,
                    name,
                }
            }
            wire::ACCEPT => {
                exact(41)?;
                FileMessage::Accept {
                    id: id()?,
                    from: u64_at(bytes, 33)?,
                }
            }
            wire::REFUSE | wire::FAILED => {
                exact(42)?;
                let (id, why, detail) = (id()?, Why::from_code(bytes[33]), u64_at(bytes, 34)?);
                if kind == wire::REFUSE {
                    FileMessage::Refuse { id, why, detail }
                } else {
                    FileMessage::Failed { id, why, detail }
                }
            }
            wire::HAVE => {
                exact(33)?;
                FileMessage::Have { id: id()? }
            }
            wire::SAVED => {
                exact(33)?;
                FileMessage::Saved { id: id()? }
            }
            wire::CHUNK => {
                let data = bytes.get(wire::CHUNK_HEADER..)?;
                if data.is_empty() {
                    return None;
                }
                FileMessage::Chunk {
                    tag: take::<8>(bytes, 1)?,
                    offset: u64_at(bytes, 9)?,
                    data,
                }
            }
            wire::AGAIN => {
                exact(9)?;
                FileMessage::Again {
                    tag: take::<8>(bytes, 1)?,
                }
            }
            _ => return None,
        })
    }

    /// The message's bytes (a chunk's header and data; [`chunk_header`] writes a chunk's
    /// header in place without allocating, for the hot path).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match *self {
            FileMessage::Offer { id, size, name } => {
                out.push(wire::OFFER);
                out.extend_from_slice(&id);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(name);
            }
            FileMessage::Accept { id, from } => {
                out.push(wire::ACCEPT);
                out.extend_from_slice(&id);
                out.extend_from_slice(&from.to_be_bytes());
            }
            FileMessage::Refuse { id, why, detail } | FileMessage::Failed { id, why, detail } => {
                out.push(if matches!(self, FileMessage::Refuse { .. }) {
                    wire::REFUSE
                } else {
                    wire::FAILED
                });
                out.extend_from_slice(&id);
                out.push(why.code());
                out.extend_from_slice(&detail.to_be_bytes());
            }
            FileMessage::Have { id } => {
                out.push(wire::HAVE);
                out.extend_from_slice(&id);
            }
            FileMessage::Saved { id } => {
                out.push(wire::SAVED);
                out.extend_from_slice(&id);
            }
            FileMessage::Chunk { tag, offset, data } => {
                out.extend_from_slice(&chunk_header(tag, offset));
                out.extend_from_slice(data);
            }
            FileMessage::Again { tag } => {
                out.push(wire::AGAIN);
                out.extend_from_slice(&tag);
            }
        }
        out
    }
}

/// A chunk's header: type, tag, offset.
pub fn chunk_header(tag: Tag, offset: u64) -> [u8; wire::CHUNK_HEADER] {
    let mut h = [0u8; wire::CHUNK_HEADER];
    h[0] = wire::CHUNK;
    h[1..9].copy_from_slice(&tag);
    h[9..].copy_from_slice(&offset.to_be_bytes());
    h
}

fn tag_of(id: &FileId) -> Tag {
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&id[..8]);
    tag
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name a received file is saved under: the last component of what the sender
/// named it, with path separators, characters Windows forbids, control characters and
/// invisible formatting characters (bidirectional overrides, zero-width characters: see
/// [`display`]) replaced by `_`; no leading dots (no hidden files, no `.` or `..`) and no
/// trailing dots or spaces (Windows drops them); a Windows device name (`CON`, `NUL`,
/// `COM1`, ... also with an extension) gets a `_` in front; at most 200 bytes, the extension
/// kept; never empty.
pub fn safe_name(offered: &str) -> String {
    let mut name: String = offered
        .chars()
        .map(|c| match c {
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() || display::is_invisible(c) => '_',
            c => c,
        })
        .collect();
    // Leading dots and spaces, trailing dots and spaces.
    let trimmed = name
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    name = trimmed.to_owned();
    if name.is_empty() {
        name = "file".into();
    }
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    let device = matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" | "CLOCK$"
    ) || ((stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.len() == 4
        && stem.as_bytes()[3].is_ascii_digit())
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && matches!(&stem[3..], "¹" | "²" | "³"));
    if device {
        name.insert(0, '_');
    }
    if name.len() > MAX_SAVED_NAME {
        // Keep a short extension; cut the rest on a character boundary.
        let ext = name
            .rfind('.')
            .map(|at| name[at..].to_owned())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_SAVED_NAME - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", name[..cut].trim_end_matches(['.', ' ']));
    }
    name
}

/// `name`, or for `n > 0` `stem (n).ext`: the names a received file may take.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.').filter(|&at| at > 0) {
        Some(at) => format!("{} ({n}){}", &name[..at], &name[at..]),
        None => format!("{name} ({n})"),
    }
}

/// Where received files go and how large they may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOptions {
    /// The directory received files are saved in (created when the first comes); `None`:
    /// none could be found, and files are refused.
    pub save_dir: Option<PathBuf>,
    /// The largest file taken, in bytes.
    pub max_size: u64,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            save_dir: system_files::download_dir().map(|d| d.join("duet")),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// What happened to a file, for the front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEvent {
    /// A file from the peer is coming (or continues).
    Incoming {
        /// Who sends it.
        from: Option<PeerKey>,
        /// The name it will be saved under (safe, not yet numbered).
        name: String,
        /// Bytes.
        size: u64,
        /// Bytes already here from an earlier attempt.
        resumed_at: u64,
    },
    /// A file from the peer is saved, checked and in its history.
    Received {
        /// Who sent it.
        from: Option<PeerKey>,
        /// Its name as saved.
        name: String,
        /// Bytes.
        size: u64,
        /// Where it is.
        path: PathBuf,
        /// It was saved before (this offer sent nothing new).
        already: bool,
    },
    /// The peer takes a file of ours, from `from` on (more than 0: it has the rest from an
    /// earlier attempt).
    Accepted {
        /// Its number ([`Files::send_file`]).
        transfer: u64,
        /// Its name.
        name: String,
        /// Bytes.
        size: u64,
        /// Where sending starts.
        from: u64,
    },
    /// A file of ours is saved by the peer.
    Sent {
        /// Its number ([`Files::send_file`]).
        transfer: u64,
        /// Its name.
        name: String,
        /// Bytes.
        size: u64,
        /// The peer had it already.
        already: bool,
    },
    /// How far a transfer is (at most once a second each way).
    Progress {
        /// Ours: its number; theirs: `None`.
        transfer: Option<u64>,
        /// Its name.
        name: String,
        /// Bytes acknowledged (ours) or written (theirs).
        done: u64,
        /// Bytes in all.
        size: u64,
    },
    /// A transfer stopped.
    Failed {
        /// Ours: its number; theirs: `None`.
        transfer: Option<u64>,
        /// Its name.
        name: String,
        /// Why, in words.
        why: String,
        /// The peer refused or stopped it (not the network, not this side).
        refused: bool,
    },
}

/// A file being received.
struct Incoming {
    id: FileId,
    from: Option<PeerKey>,
    /// The safe name it is saved under (before numbering).
    name: String,
    size: u64,
    dir: PathBuf,
    part: PathBuf,
    file: BufWriter<File>,
    /// Bytes taken into the writer (all of them hashed).
    written: u64,
    /// Bytes the file has for sure (written to it).
    flushed: u64,
    hasher: Sha256,
    /// The hash of the first `flushed` bytes: where to go back to after a failed write.
    flushed_hasher: Sha256,
    reported: Instant,
}

/// An offer whose files are read and hashed on a thread before it is answered.
struct Opening {
    id: FileId,
    from: Option<PeerKey>,
    size: u64,
    /// The safe name it is saved under, and where.
    name: String,
    dir: PathBuf,
    handle: JoinHandle<Opened>,
    since: Instant,
}

/// What the thread of an [`Opening`] found.
enum Opened {
    /// The file under the name it would get has its contents: answer HAVE.
    Have(PathBuf),
    /// Its partial file, opened and hashed (or why not): answer ACCEPT (or REFUSE).
    Part(Box<io::Result<Incoming>>),
}

/// Where a file of ours is.
enum Sending {
    /// Its hash is being computed on a thread of its own, since the instant given.
    Hashing(JoinHandle<io::Result<FileId>>, Instant),
    /// Offered, waiting for the peer's answer.
    Offered,
    /// Chunks go out from `next` on.
    Chunks { reader: BufReader<File>, next: u64 },
    /// Every chunk is in the session; waiting for SAVED.
    Sent,
    /// The hash could not be computed: why.
    Unreadable(String),
}

/// A file of ours.
struct Outgoing {
    transfer: u64,
    path: PathBuf,
    name: String,
    size: u64,
    id: FileId,
    state: Sending,
    /// Its OFFER for the current state is queued (once per [`Sending::Offered`]: the
    /// answer may take a while, and one offer brings one answer).
    offer_queued: bool,
    /// Bytes the peer acknowledged.
    acked: u64,
    reported: Instant,
}

/// A file message of ours in the session: which transfer and, for a chunk, where it ends.
#[derive(Clone, Copy, Debug)]
struct Ours {
    id: MessageId,
    transfer: Option<u64>,
    end: u64,
}

/// Done, to be written in the turn's transaction; then its reply goes out and its event is
/// shown.
struct Done {
    row: FileRow,
    reply: Option<Vec<u8>>,
    event: FileEvent,
}

/// Both directions of file transfer with the peer. See the module docs.
pub struct Files {
    options: FileOptions,
    incoming: Option<Incoming>,
    /// An offer whose files are being read on a thread (a same-named file that may be this
    /// one, a partial one from an earlier attempt): it is answered once the thread is done.
    opening: Option<Opening>,
    /// A finished file whose last bytes were taken: checked and placed at the next commit.
    complete: bool,
    outgoing: VecDeque<Outgoing>,
    next_transfer: u64,
    /// Our file messages other than chunks (offers and answers), to send before any text.
    control: VecDeque<Vec<u8>>,
    /// File messages of ours in the session, whose outcomes are this module's.
    ours: VecDeque<Ours>,
    done: Vec<Done>,
    events: VecDeque<FileEvent>,
    /// The tag last answered with AGAIN: one answer per stray transfer, not one per chunk.
    asked_again: Option<Tag>,
    /// One chunk message, reused.
    chunk: Box<[u8; MAX_MESSAGE]>,
    malformed: u64,
}

impl Files {
    /// No transfers yet; received files per `options`.
    pub fn new(options: FileOptions) -> Files {
        Files {
            options,
            incoming: None,
            opening: None,
            complete: false,
            outgoing: VecDeque::new(),
            next_transfer: 1,
            control: VecDeque::new(),
            ours: VecDeque::new(),
            done: Vec::new(),
            events: VecDeque::new(),
            asked_again: None,
            chunk: Box::new([0; MAX_MESSAGE]),
            malformed: 0,
        }
    }

    /// Where received files go and how large they may be, from now on.
    pub fn set_options(&mut self, options: FileOptions) {
        self.options = options;
    }

    /// The options.
    pub fn options(&self) -> &FileOptions {
        &self.options
    }

    /// File messages from the peer that did not parse.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Files of ours not yet saved by the peer (nor failed).
    pub fn waiting(&self) -> usize {
        self.outgoing.len()
    }

    /// While a hash is computed on a thread (of a file of ours before its offer, or of the
    /// files an offer needs read before its answer), when the most recent of those started:
    /// the loop should look again soon.
    pub fn hashing_since(&self) -> Option<Instant> {
        self.outgoing
            .iter()
            .filter_map(|o| match o.state {
                Sending::Hashing(_, since) => Some(since),
                _ => None,
            })
            .chain(self.opening.as_ref().map(|o| o.since))
            .max()
    }

    /// The next thing to show.
    pub fn next_event(&mut self) -> Option<FileEvent> {
        self.events.pop_front()
    }

    /// Send the file at `path` to the peer after the files before it; returns its number,
    /// which its events carry. Its hash is computed on a thread; it is offered once known.
    pub fn send_file(&mut self, path: &Path) -> Result<u64, Error> {
        let cannot = |why: String| Error::Other(format!("cannot send {}: {why}", path.display()));
        let meta = fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
        if !meta.is_file() {
            return Err(cannot("not a file".into()));
        }
        // Readable now, or say so now rather than from a thread.
        File::open(path).map_err(|e| cannot(e.to_string()))?;
        let mut name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mut cut = name.len().min(MAX_NAME);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        let owned = path.to_owned();
        let hashing = std::thread::spawn(move || hash_file(&owned, u64::MAX));
        let transfer = self.next_transfer;
        self.next_transfer += 1;
        self.outgoing.push_back(Outgoing {
            transfer,
            path: path.to_owned(),
            name,
            size: meta.len(),
            id: [0; 32],
            state: Sending::Hashing(hashing, Instant::now()),
            offer_queued: false,
            acked: 0,
            reported: Instant::now(),
        });
        Ok(transfer)
    }

    /// Take one binary message from `from`.
    pub fn receive(&mut self, from: Option<PeerKey>, bytes: &[u8], store: Option<&Store>) {
        let Some(message) = FileMessage::parse(bytes) else {
            self.malformed += 1;
            return;
        };
        match message {
            FileMessage::Offer { id, size, name } => {
                let name = String::from_utf8_lossy(name);
                self.on_offer(from, id, size, &name, store);
            }
            FileMessage::Chunk { tag, offset, data } => self.on_chunk(tag, offset, data),
            FileMessage::Accept { id, from } => self.on_accept(id, from),
            FileMessage::Have { id } => self.on_saved(from, id, true),
            FileMessage::Saved { id } => self.on_saved(from, id, false),
            FileMessage::Refuse { id, why, detail } | FileMessage::Failed { id, why, detail } => {
                self.on_refused(id, why, detail)
            }
            FileMessage::Again { tag } => self.on_again(tag),
        }
    }

    fn reply(&mut self, message: FileMessage) {
        self.control.push_back(message.to_bytes());
    }

    fn on_offer(
        &mut self,
        from: Option<PeerKey>,
        id: FileId,
        size: u64,
        offered: &str,
        store: Option<&Store>,
    ) {
        self.asked_again = None;
        let name = safe_name(offered);
        if size > self.options.max_size {
            let limit = self.options.max_size;
            self.refuse_offer(
                id,
                name,
                Why::TooLarge,
                limit,
                format!(
                    "refused: {size} bytes is more than the {limit} bytes this duet accepts (--max-file-size)"
                ),
            );
            return;
        }
        let Some(dir) = self.options.save_dir.clone() else {
            self.refuse_offer(
                id,
                name,
                Why::CannotSave,
                0,
                "refused: no directory to save files in (no home directory): pass --save-dir DIR"
                    .into(),
            );
            return;
        };
        // The same file again (the sender never heard it was saved): nothing to send.
        if let Some(path) = saved_here(store, &id, size) {
            self.have(from, id, size, path);
            return;
        }
        if self.incoming.as_ref().is_some_and(|i| i.id == id) {
            // The sender started over (it was restarted, or asked with AGAIN): go on.
            let from_offset = self.incoming.as_ref().map_or(0, |i| i.written);
            self.reply(FileMessage::Accept {
                id,
                from: from_offset,
            });
            return;
        }
        if self.opening.as_ref().is_some_and(|o| o.id == id) {
            // Offered again while it is read: the answer comes when it is.
            return;
        }
        // Another file replaces the one in progress, which keeps its partial file.
        self.drop_incoming();
        // A thread still reading for another offer finishes on its own; what it read is
        // dropped (a partial file stays, for that file's next offer).
        self.opening = None;
        // A file under the name it would get, of its size, may be this one (HAVE), and a
        // partial file with data must be hashed to go on from it. Reading a large file takes
        // long, and the chat (and this transfer's acknowledgements) must not wait for it:
        // both are done on a thread.
        let named = dir.join(&name);
        let same_size = fs::symlink_metadata(&named).is_ok_and(|m| m.is_file() && m.len() == size);
        let part = part_path(&dir, &name, &id);
        let partial =
            fs::symlink_metadata(&part).map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        if same_size || (partial > 0 && partial <= size) {
            let (owned, file_name) = (dir.clone(), name.clone());
            let handle = std::thread::spawn(move || {
                if same_size && same_content(&named, size, &id) {
                    return Opened::Have(named);
                }
                Opened::Part(Box::new(Incoming::open(from, id, size, &owned, &file_name)))
            });
            self.opening = Some(Opening {
                id,
                from,
                size,
                name,
                dir,
                handle,
                since: Instant::now(),
            });
            return;
        }
        let opened = Incoming::open(from, id, size, &dir, &name);
        self.opened(id, &name, &dir, opened);
    }

    /// Answer an offer of a file that is here already with HAVE, and show where it is.
    fn have(&mut self, from: Option<PeerKey>, id: FileId, size: u64, path: PathBuf) {
        self.reply(FileMessage::Have { id });
        self.events.push_back(FileEvent::Received {
            from,
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            size,
            path,
            already: true,
        });
    }

    /// The partial file of an offer, opened: accept the offer from where its data ends, or
    /// refuse it.
    fn opened(&mut self, id: FileId, name: &str, dir: &Path, opened: io::Result<Incoming>) {
        match opened {
            Ok(incoming) => {
                let (size, have) = (incoming.size, incoming.written);
                let free = system_files::available_bytes(dir).unwrap_or(u64::MAX);
                if free < size - have {
                    drop(incoming);
                    self.refuse_offer(
                        id,
                        name.to_owned(),
                        Why::NoSpace,
                        free,
                        format!(
                            "refused {size} bytes: only {free} bytes are free in {}",
                            dir.display()
                        ),
                    );
                    return;
                }
                self.reply(FileMessage::Accept { id, from: have });
                self.events.push_back(FileEvent::Incoming {
                    from: incoming.from,
                    name: incoming.name.clone(),
                    size,
                    resumed_at: have,
                });
                self.complete = have == size;
                self.incoming = Some(incoming);
            }
            Err(e) => {
                let (why, text) = write_error(&e, dir);
                let free = free_bytes(dir);
                self.refuse_offer(id, name.to_owned(), why, free, format!("refused: {text}"));
            }
        }
    }

    /// Answer an offer with REFUSE, and say why.
    fn refuse_offer(&mut self, id: FileId, name: String, why: Why, detail: u64, text: String) {
        self.reply(FileMessage::Refuse { id, why, detail });
        self.events.push_back(FileEvent::Failed {
            transfer: None,
            name,
            why: text,
            refused: false,
        });
    }

    /// The partial file read on a thread, if it is: the offer is answered now.
    fn finish_opening(&mut self) {
        if !self
            .opening
            .as_ref()
            .is_some_and(|o| o.handle.is_finished())
        {
            return;
        }
        let Some(opening) = self.opening.take() else {
            return;
        };
        match opening.handle.join() {
            Ok(Opened::Have(path)) => self.have(opening.from, opening.id, opening.size, path),
            Ok(Opened::Part(opened)) => {
                self.opened(opening.id, &opening.name, &opening.dir, *opened);
            }
            Err(_) => {
                let failed = Err(io::Error::other("reading the partial file failed"));
                self.opened(opening.id, &opening.name, &opening.dir, failed);
            }
        }
    }

    fn drop_incoming(&mut self) {
        if let Some(mut incoming) = self.incoming.take() {
            // What is flushed stays for a later resume; a failure here only loses bytes.
            let _ = incoming.file.flush();
        }
        self.complete = false;
    }

    fn on_chunk(&mut self, tag: Tag, offset: u64, data: &[u8]) {
        let ask_again = match &self.incoming {
            Some(i) => tag_of(&i.id) != tag || offset != i.written || self.complete,
            None => true,
        };
        if ask_again {
            // A transfer this run does not know (it restarted), or out of step: the sender
            // offers it again and learns where to go on from. Once per transfer.
            if self.asked_again != Some(tag) {
                self.asked_again = Some(tag);
                self.reply(FileMessage::Again { tag });
            }
            return;
        }
        let Some(incoming) = &mut self.incoming else {
            return;
        };
        let len = data.len() as u64;
        if incoming.written + len > incoming.size {
            let (id, name) = (incoming.id, incoming.name.clone());
            self.drop_incoming();
            self.reply(FileMessage::Failed {
                id,
                why: Why::Damaged,
                detail: 0,
            });
            self.events.push_back(FileEvent::Failed {
                transfer: None,
                name,
                why: "more bytes came than were offered: stopped".into(),
                refused: false,
            });
            return;
        }
        if let Err(e) = incoming.file.write_all(data) {
            self.write_failed(&e);
            return;
        }
        incoming.hasher.update(data);
        incoming.written += len;
        self.complete = incoming.written == incoming.size;
        let now = Instant::now();
        if now >= incoming.reported + PROGRESS_EVERY && !self.complete {
            incoming.reported = now;
            self.events.push_back(FileEvent::Progress {
                transfer: None,
                name: incoming.name.clone(),
                done: incoming.written,
                size: incoming.size,
            });
        }
    }

    /// A write of the incoming file failed: the partial file goes back to what was surely
    /// written, the sender is told, and the user is told what to do.
    fn write_failed(&mut self, e: &io::Error) {
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        self.complete = false;
        // The writer's unwritten bytes are dropped with it, not written on drop.
        let (file, _) = incoming.file.into_parts();
        let kept = file.set_len(incoming.flushed).is_ok();
        drop(file);
        let (why, text) = write_error(e, &incoming.dir);
        let detail = free_bytes(&incoming.dir);
        self.reply(FileMessage::Failed {
            id: incoming.id,
            why,
            detail,
        });
        let state = if kept {
            format!(
                "{} keeps the first {} bytes: sending it again continues from there",
                incoming.part.display(),
                incoming.flushed
            )
        } else {
            let _ = fs::remove_file(&incoming.part);
            "the partial file is removed".into()
        };
        self.events.push_back(FileEvent::Failed {
            transfer: None,
            name: incoming.name,
            why: format!("cannot save it: {text}; {state}"),
            refused: false,
        });
    }

    /// Before the turn's transaction: write what arrived (so the session may acknowledge
    /// it), check and place a finished file; the rows to write with the turn.
    pub fn prepare_commit(&mut self) -> Vec<FileRow> {
        if let Some(incoming) = &mut self.incoming
            && incoming.written > incoming.flushed
        {
            match incoming.file.flush() {
                Ok(()) => {
                    incoming.flushed = incoming.written;
                    incoming.flushed_hasher = incoming.hasher.clone();
                }
                Err(e) => self.write_failed(&e),
            }
        }
        if self.complete {
            self.complete = false;
            if let Some(incoming) = self.incoming.take() {
                self.finish(incoming);
            }
        }
        self.done.iter().map(|d| d.row.clone()).collect()
    }

    /// The incoming file has all its bytes: keep it if it hashes to its id.
    fn finish(&mut self, incoming: Incoming) {
        let Incoming {
            id,
            from,
            name,
            size,
            dir,
            part,
            file,
            hasher,
            ..
        } = incoming;
        let file = match file.into_inner() {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&part);
                return self.finish_failed(id, name, Why::CannotSave, e.error().to_string());
            }
        };
        if <[u8; 32]>::from(hasher.finalize()) != id {
            drop(file);
            let _ = fs::remove_file(&part);
            return self.finish_failed(
                id,
                name,
                Why::Damaged,
                "it arrived damaged (its SHA-256 is not the one offered); removed".into(),
            );
        }
        // On disk before it takes its name: a crash never leaves a named file half written.
        if let Err(e) = file.sync_all() {
            return self.finish_failed(id, name, Why::CannotSave, e.to_string());
        }
        drop(file);
        match place(&part, &dir, &name, size, &id) {
            Ok(path) => {
                let row = FileRow {
                    peer: from.unwrap_or(PeerKey([0; 32])),
                    direction: Direction::In,
                    sha256: id,
                    name: path
                        .file_name()
                        .map_or(name.clone(), |n| n.to_string_lossy().into_owned()),
                    size,
                    path: path.clone(),
                };
                let event = FileEvent::Received {
                    from,
                    name: row.name.clone(),
                    size,
                    path,
                    already: false,
                };
                self.done.push(Done {
                    row,
                    reply: Some(FileMessage::Saved { id }.to_bytes()),
                    event,
                });
            }
            Err(e) => {
                let (why, text) = write_error(&e, &dir);
                self.finish_failed(
                    id,
                    name,
                    why,
                    format!("{text}; {} keeps its bytes", part.display()),
                );
            }
        }
    }

    fn finish_failed(&mut self, id: FileId, name: String, why: Why, text: String) {
        self.reply(FileMessage::Failed { id, why, detail: 0 });
        self.events.push_back(FileEvent::Failed {
            transfer: None,
            name,
            why: text,
            refused: false,
        });
    }

    /// The rows [`Self::prepare_commit`] gave are written: send the replies that say so and
    /// show the events.
    pub fn committed(&mut self) {
        for done in self.done.drain(..) {
            if let Some(reply) = done.reply {
                self.control.push_back(reply);
            }
            self.events.push_back(done.event);
        }
    }

    // The sending side.

    fn active(&mut self, id: &FileId) -> Option<&mut Outgoing> {
        self.outgoing
            .front_mut()
            .filter(|o| !matches!(o.state, Sending::Hashing(..)) && o.id == *id)
    }

    fn on_accept(&mut self, id: FileId, from: u64) {
        let Some(out) = self.active(&id) else { return };
        if !matches!(out.state, Sending::Offered) {
            return;
        }
        if from > out.size {
            self.fail_front(
                "the peer asked for bytes beyond the end of the file".into(),
                false,
            );
            return;
        }
        let Some(out) = self.outgoing.front_mut() else {
            return;
        };
        let opened = File::open(&out.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(from))?;
            Ok(f)
        });
        match opened {
            Ok(file) => {
                self.events.push_back(FileEvent::Accepted {
                    transfer: out.transfer,
                    name: out.name.clone(),
                    size: out.size,
                    from,
                });
                out.acked = from;
                out.state = if from == out.size {
                    Sending::Sent
                } else {
                    Sending::Chunks {
                        reader: BufReader::with_capacity(FILE_BUFFER, file),
                        next: from,
                    }
                };
            }
            Err(e) => self.fail_front(format!("cannot read it: {e}"), false),
        }
    }

    fn on_saved(&mut self, from: Option<PeerKey>, id: FileId, already: bool) {
        let Some(out) = self.active(&id) else { return };
        let row = FileRow {
            peer: from.unwrap_or(PeerKey([0; 32])),
            direction: Direction::Out,
            sha256: id,
            name: out.name.clone(),
            size: out.size,
            path: out.path.clone(),
        };
        let event = FileEvent::Sent {
            transfer: out.transfer,
            name: out.name.clone(),
            size: out.size,
            already,
        };
        self.outgoing.pop_front();
        self.done.push(Done {
            row,
            reply: None,
            event,
        });
    }

    fn on_refused(&mut self, id: FileId, why: Why, detail: u64) {
        let Some(out) = self.active(&id) else { return };
        let text = why.explain(detail, out.size);
        self.fail_front(text, true);
    }

    fn on_again(&mut self, tag: Tag) {
        let Some(out) = self.outgoing.front_mut() else {
            return;
        };
        if tag_of(&out.id) == tag && matches!(out.state, Sending::Chunks { .. } | Sending::Sent) {
            out.state = Sending::Offered;
            out.offer_queued = true;
            let offer = offer_bytes(out);
            self.control.push_back(offer);
        }
    }

    /// The front transfer failed: say why, go on with the next.
    fn fail_front(&mut self, why: String, refused: bool) {
        if let Some(out) = self.outgoing.pop_front() {
            self.events.push_back(FileEvent::Failed {
                transfer: Some(out.transfer),
                name: out.name,
                why,
                refused,
            });
        }
    }

    /// A message of the session was delivered or failed: whether it was one of ours (then
    /// it is dealt with here, and is no business of the text's).
    pub fn outcome(&mut self, id: MessageId, delivered: bool) -> bool {
        let Some(at) = self.ours.iter().position(|o| o.id == id) else {
            return false;
        };
        let Some(ours) = self.ours.remove(at) else {
            return true;
        };
        let Some(transfer) = ours.transfer else {
            // An answer of ours: a lost one makes the sender offer again.
            return true;
        };
        if self.outgoing.front().is_none_or(|o| o.transfer != transfer) {
            return true;
        }
        if !delivered {
            self.fail_front("the peer did not acknowledge it in time".into(), false);
            return true;
        }
        let Some(out) = self.outgoing.front_mut() else {
            return true;
        };
        out.acked = out.acked.max(ours.end);
        let now = Instant::now();
        if ours.end > 0 && now >= out.reported + PROGRESS_EVERY && out.acked < out.size {
            out.reported = now;
            self.events.push_back(FileEvent::Progress {
                transfer: Some(out.transfer),
                name: out.name.clone(),
                done: out.acked,
                size: out.size,
            });
        }
        true
    }

    /// Queue our offers and answers in the session, before any text: they are small, and
    /// a transfer waits on them.
    pub fn send_control(&mut self, secure: &mut Secure, now: Instant) {
        self.finish_opening();
        self.start_offers();
        while let Some(message) = self.control.front() {
            match secure.send_bytes(now, message_id(message), message) {
                Ok(id) => {
                    // An offer belongs to the front transfer; its failure fails that.
                    let transfer = (message.first() == Some(&wire::OFFER))
                        .then(|| self.outgoing.front().map(|o| o.transfer))
                        .flatten();
                    self.ours.push_back(Ours {
                        id,
                        transfer,
                        end: 0,
                    });
                    self.control.pop_front();
                }
                Err(SendError::OutboxFull) => return,
                Err(_) => {
                    // Closed or exhausted: nothing more goes out in this session.
                    self.control.clear();
                    return;
                }
            }
        }
    }

    /// Hashes that finished: offer the front file once its hash is known.
    fn start_offers(&mut self) {
        for out in self.outgoing.iter_mut() {
            if !matches!(&out.state, Sending::Hashing(h, _) if h.is_finished()) {
                continue;
            }
            let Sending::Hashing(handle, _) = std::mem::replace(&mut out.state, Sending::Offered)
            else {
                continue;
            };
            match handle.join() {
                Ok(Ok(id)) => out.id = id,
                Ok(Err(e)) => out.state = Sending::Unreadable(format!("cannot read it: {e}")),
                Err(_) => out.state = Sending::Unreadable("cannot read it".into()),
            }
        }
        // Only the front transfer is offered; one that cannot be read fails.
        while let Some(out) = self.outgoing.front_mut() {
            match &out.state {
                Sending::Unreadable(why) => {
                    let why = why.clone();
                    self.fail_front(why, false);
                }
                Sending::Offered if !out.offer_queued => {
                    out.offer_queued = true;
                    let offer = offer_bytes(out);
                    self.control.push_back(offer);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Fill the session with chunks of the front file while it has room, keeping room for
    /// one longest message when `keep_room` (a typed line never waits behind a file).
    pub fn send_chunks(&mut self, secure: &mut Secure, now: Instant, keep_room: bool) {
        let reserve = if keep_room { MAX_MESSAGE } else { 0 };
        let Some(out) = self.outgoing.front_mut() else {
            return;
        };
        let transfer = out.transfer;
        let tag = tag_of(&out.id);
        let size = out.size;
        let mut failed = None;
        let mut finished = false;
        if let Sending::Chunks { reader, next } = &mut out.state {
            let chunk = &mut self.chunk[..];
            let room = wire::CHUNK_HEADER + wire::CHUNK_DATA + reserve;
            while *next < size && secure.session().has_room_for_bytes(room) {
                let len = (size - *next).min(wire::CHUNK_DATA as u64) as usize;
                let message = &mut chunk[..wire::CHUNK_HEADER + len];
                message[..wire::CHUNK_HEADER].copy_from_slice(&chunk_header(tag, *next));
                if let Err(e) = reader.read_exact(&mut message[wire::CHUNK_HEADER..]) {
                    failed = Some(if e.kind() == io::ErrorKind::UnexpectedEof {
                        "the file got shorter while it was being sent".to_owned()
                    } else {
                        format!("cannot read it: {e}")
                    });
                    break;
                }
                match secure.send_bytes(now, message_id(message), message) {
                    Ok(id) => {
                        *next += len as u64;
                        self.ours.push_back(Ours {
                            id,
                            transfer: Some(transfer),
                            end: *next,
                        });
                    }
                    Err(e) => {
                        // Room was checked: only a closed session refuses.
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            finished = *next >= size && failed.is_none();
        }
        if finished {
            out.state = Sending::Sent;
        }
        if let Some(why) = failed {
            self.fail_front(why, false);
        }
    }
}

impl Incoming {
    /// Open (or create) the partial file of `id` in `dir`, and hash what it already holds.
    fn open(
        from: Option<PeerKey>,
        id: FileId,
        size: u64,
        dir: &Path,
        name: &str,
    ) -> io::Result<Incoming> {
        fs::create_dir_all(dir)?;
        let part = part_path(dir, name, &id);
        let mut file = system_files::no_follow(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .open(&part)?;
        let mut have = file.metadata()?.len();
        if have > size {
            // Not a prefix of this file: start over.
            file.set_len(0)?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            file.seek(SeekFrom::Start(0))?;
            hash_into(&mut hasher, &mut (&file).take(have))?;
        }
        file.seek(SeekFrom::Start(have))?;
        Ok(Incoming {
            id,
            from,
            name: name.to_owned(),
            size,
            dir: dir.to_owned(),
            part,
            file: BufWriter::with_capacity(FILE_BUFFER, file),
            written: have,
            flushed: have,
            flushed_hasher: hasher.clone(),
            hasher,
            reported: Instant::now(),
        })
    }
}

/// Where file `id` of `size` bytes was saved before, if the history says so and it is still
/// there at that size.
fn saved_here(store: Option<&Store>, id: &FileId, size: u64) -> Option<PathBuf> {
    let path = store.and_then(|s| s.received_file(id).ok().flatten())?;
    fs::metadata(&path)
        .is_ok_and(|m| m.is_file() && m.len() == size)
        .then_some(path)
}

/// Where the partial data of file `id`, saved as `name` in `dir`, lives until complete.
fn part_path(dir: &Path, name: &str, id: &FileId) -> PathBuf {
    dir.join(format!(".{name}.{}{PART_SUFFIX}", hex(&tag_of(id))))
}

/// The id a file message travels with in the session (the session needs one; nothing
/// stores file messages by it): its first bytes after the type.
fn message_id(message: &[u8]) -> u64 {
    u64_at(message, 1).unwrap_or(0) ^ u64_at(message, 9).unwrap_or(0)
}

fn offer_bytes(out: &Outgoing) -> Vec<u8> {
    FileMessage::Offer {
        id: out.id,
        size: out.size,
        name: out.name.as_bytes(),
    }
    .to_bytes()
}

fn hash_into(hasher: &mut Sha256, reader: &mut impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; FILE_BUFFER];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The SHA-256 of the first `limit` bytes of the file at `path`.
fn hash_file(path: &Path, limit: u64) -> io::Result<FileId> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, &mut File::open(path)?.take(limit))?;
    Ok(hasher.finalize().into())
}

/// Whether the file at `path` is `size` bytes that hash to `id`.
fn same_content(path: &Path, size: u64, id: &FileId) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
        && hash_file(path, size).is_ok_and(|h| h == *id)
}

/// Give the finished partial file `part` its name in `dir`: `name`, or `name (1)`, ... when
/// another file has it. Linked, not renamed: `link(2)` never replaces a file that appeared
/// meanwhile. A file already there with the same content is the same file: the partial one
/// goes, and that one is the result.
fn place(part: &Path, dir: &Path, name: &str, size: u64, id: &FileId) -> io::Result<PathBuf> {
    for n in 0..10_000 {
        let candidate = dir.join(numbered(name, n));
        let exists = match fs::hard_link(part, &candidate) {
            Ok(()) => {
                fs::remove_file(part)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
            // A file system without hard links: a rename, after a look.
            Err(_) => fs::symlink_metadata(&candidate).is_ok(),
        };
        if exists {
            if same_content(&candidate, size, id) {
                fs::remove_file(part)?;
                return Ok(candidate);
            }
            continue;
        }
        fs::rename(part, &candidate)?;
        return Ok(candidate);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{name} and 10000 numbered names are taken"),
    ))
}

fn free_bytes(dir: &Path) -> u64 {
    system_files::available_bytes(dir).unwrap_or(0)
}

/// Why a file cannot be written in `dir`, for the sender (a code) and for this user (words).
fn write_error(e: &io::Error, dir: &Path) -> (Why, String) {
    let full = e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || system_files::available_bytes(dir).is_ok_and(|n| n == 0);
    if full {
        (
            Why::NoSpace,
            format!(
                "the disk is full: free space on the file system that holds {}",
                dir.display()
            ),
        )
    } else {
        (
            Why::CannotSave,
            format!(
                "{}: {e} (pass --save-dir DIR for another directory)",
                dir.display()
            ),
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_message_parses_back_to_itself() {
        let id = [0xab; 32];
        let messages = [
            FileMessage::Offer {
                id,
                size: 1 << 40,
                name: "report 你好.pdf".as_bytes(),
            },
            FileMessage::Accept { id, from: 12345 },
            FileMessage::Refuse {
                id,
                why: Why::TooLarge,
                detail: 4096,
            },
            FileMessage::Have { id },
            FileMessage::Chunk {
                tag: [1; 8],
                offset: 7,
                data: &[0, 0xff],
            },
            FileMessage::Saved { id },
            FileMessage::Failed {
                id,
                why: Why::Other(99),
                detail: 0,
            },
            FileMessage::Again { tag: [2; 8] },
        ];
        for m in messages {
            let bytes = m.to_bytes();
            assert!(bytes.len() <= MAX_MESSAGE);
            assert_eq!(FileMessage::parse(&bytes), Some(m), "{bytes:02x?}");
        }
    }

    /// docs/PROTOCOL.md, section 20.4: an OFFER of the 5-byte file "a.txt" whose id is
    /// the bytes 0x00 to 0x1f, and the CHUNK that carries "hello" from offset 0.
    static OFFER_BYTES: [u8; 46] = [
        0x01, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
        0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c,
        0x1d, 0x1e, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x61, 0x2e, 0x74, 0x78,
        0x74,
    ];
    static CHUNK_BYTES: [u8; 22] = [
        0x05, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    #[test]
    fn the_test_vectors_of_the_protocol() {
        let mut id = [0u8; 32];
        for (i, b) in id.iter_mut().enumerate() {
            *b = i as u8;
        }
        let offer = FileMessage::Offer {
            id,
            size: 5,
            name: b"a.txt",
        };
        assert_eq!(offer.to_bytes(), OFFER_BYTES);
        assert_eq!(FileMessage::parse(&OFFER_BYTES), Some(offer));
        let chunk = FileMessage::Chunk {
            tag: tag_of(&id),
            offset: 0,
            data: b"hello",
        };
        assert_eq!(chunk.to_bytes(), CHUNK_BYTES);
        assert_eq!(FileMessage::parse(&CHUNK_BYTES), Some(chunk));
    }

    #[test]
    fn malformed_messages_are_refused_not_misread() {
        let id = [1; 32];
        let accept = FileMessage::Accept { id, from: 1 }.to_bytes();
        for len in 0..accept.len() {
            assert_eq!(FileMessage::parse(&accept[..len]), None, "{len}");
        }
        let mut long = accept.clone();
        long.push(0);
        assert_eq!(FileMessage::parse(&long), None, "trailing byte");
        assert_eq!(FileMessage::parse(&[0]), None, "unknown type");
        assert_eq!(FileMessage::parse(&[9, 1, 2]), None, "unknown type");
        let offer = |name: &[u8]| FileMessage::Offer { id, size: 1, name }.to_bytes();
        assert_eq!(FileMessage::parse(&offer(b"")), None, "no name");
        assert_eq!(FileMessage::parse(&offer(&[b'x'; 256])), None, "long name");
        assert!(FileMessage::parse(&offer(&[b'x'; 255])).is_some());
        assert_eq!(
            FileMessage::parse(&chunk_header([0; 8], 0)),
            None,
            "empty chunk"
        );
        // A chunk fills one part; one of the longest message is taken too (older duets
        // send those).
        assert_eq!(
            wire::CHUNK_HEADER + wire::CHUNK_DATA,
            duet_core::session::PART_TEXT
        );
        let mut longest = vec![0u8; MAX_MESSAGE];
        longest[..wire::CHUNK_HEADER].copy_from_slice(&chunk_header([0; 8], 0));
        assert!(FileMessage::parse(&longest).is_some(), "a four-part chunk");
    }

    #[test]
    fn hostile_names_become_harmless_ones() {
        for (offered, saved) in [
            ("report.pdf", "report.pdf"),
            ("你好 世界.txt", "你好 世界.txt"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("..", "file"),
            (".", "file"),
            ("/", "_"),
            (".bashrc", "bashrc"),
            ("a\\b/c", "a_b_c"),
            ("evil\u{202e}fdp.exe", "evil_fdp.exe"),
            ("zero\u{200b}width", "zero_width"),
            ("line\nbreak\r\t.txt", "line_break__.txt"),
            ("bell\u{7}", "bell_"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("com1.tar.gz", "_com1.tar.gz"),
            ("LPT9", "_LPT9"),
            ("console.log", "console.log"),
            ("COM10", "COM10"),
            ("what?<>|*\".txt", "what______.txt"),
            ("C:evil", "C_evil"),
            ("trailing. . ", "trailing"),
            ("", "file"),
        ] {
            assert_eq!(safe_name(offered), saved, "{offered:?}");
        }
        let long = format!("{}.jpeg", "长".repeat(100));
        let safe = safe_name(&long);
        assert!(
            safe.len() <= MAX_SAVED_NAME && safe.ends_with("长.jpeg"),
            "{safe}"
        );
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered("a.txt", 0), "a.txt");
        assert_eq!(numbered("a.txt", 1), "a (1).txt");
        assert_eq!(numbered("notes", 2), "notes (2)");
        assert_eq!(numbered("archive.tar.gz", 1), "archive.tar (1).gz");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duet-files-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The replies `files` queued, parsed.
    fn replies(files: &mut Files) -> Vec<String> {
        files
            .control
            .drain(..)
            .map(|m| format!("{:?}", FileMessage::parse(&m).expect("a valid reply")))
            .collect()
    }

    fn offer(files: &mut Files, bytes: &[u8], name: &str) -> FileId {
        let id: FileId = Sha256::digest(bytes).into();
        let offer = FileMessage::Offer {
            id,
            size: bytes.len() as u64,
            name: name.as_bytes(),
        };
        files.receive(None, &offer.to_bytes(), None);
        id
    }

    fn chunk(files: &mut Files, id: &FileId, offset: usize, data: &[u8]) {
        let chunk = FileMessage::Chunk {
            tag: tag_of(id),
            offset: offset as u64,
            data,
        };
        files.receive(None, &chunk.to_bytes(), None);
    }

    fn receiving(dir: &Path, max_size: u64) -> Files {
        Files::new(FileOptions {
            save_dir: Some(dir.to_owned()),
            max_size,
        })
    }

    #[test]
    fn a_file_is_written_as_it_comes_and_saved_only_once_its_hash_is_checked() {
        let dir = temp_dir("receive");
        let bytes = b"0123456789abcdefghij";
        let mut files = receiving(&dir, 1000);
        let id = offer(&mut files, bytes, "../notes.txt");
        assert_eq!(
            replies(&mut files),
            [format!("Accept {{ id: {id:?}, from: 0 }}")]
        );
        chunk(&mut files, &id, 0, &bytes[..8]);
        // Written before the commit that lets the session acknowledge it.
        assert!(files.prepare_commit().is_empty());
        let part = dir.join(format!("._notes.txt.{}{PART_SUFFIX}", hex(&tag_of(&id))));
        assert_eq!(fs::read(&part).unwrap(), &bytes[..8]);
        // Out of step: asked to offer again, once.
        chunk(&mut files, &id, 12, &bytes[12..]);
        chunk(&mut files, &id, 14, &bytes[14..]);
        assert_eq!(
            replies(&mut files),
            [format!("Again {{ tag: {:?} }}", tag_of(&id))]
        );
        chunk(&mut files, &id, 8, &bytes[8..]);
        let rows = files.prepare_commit();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, dir.join("_notes.txt"));
        // SAVED goes out, and the event shows, only once the row is committed.
        assert!(replies(&mut files).is_empty());
        files.committed();
        assert_eq!(replies(&mut files), [format!("Saved {{ id: {id:?} }}")]);
        assert!(matches!(
            files.next_event(),
            Some(FileEvent::Incoming { .. })
        ));
        assert!(matches!(
            files.next_event(),
            Some(FileEvent::Received { already: false, .. })
        ));
        assert_eq!(fs::read(dir.join("_notes.txt")).unwrap(), bytes);
        assert!(!part.exists());
        // Offered again: the file that has it is named (once its contents are checked, on a
        // thread), nothing is sent.
        offer(&mut files, bytes, "../notes.txt");
        until_opened(&mut files);
        assert_eq!(replies(&mut files), [format!("Have {{ id: {id:?} }}")]);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Until the thread reading for an offer is done, looked at as the loop does; bounded.
    fn until_opened(files: &mut Files) {
        for _ in 0..5000 {
            files.finish_opening();
            if files.hashing_since().is_none() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the offer was not answered within 5 s");
    }

    #[test]
    fn a_partial_file_is_read_on_a_thread_and_the_offer_answered_once_it_is() {
        let dir = temp_dir("partial");
        let bytes = b"0123456789abcdefghij";
        let id: FileId = Sha256::digest(bytes).into();
        fs::write(part_path(&dir, "notes.txt", &id), &bytes[..7]).unwrap();
        let mut files = receiving(&dir, 1000);
        offer(&mut files, bytes, "notes.txt");
        // Offered again meanwhile (the sender retransmits or asks again): one answer.
        offer(&mut files, bytes, "notes.txt");
        until_opened(&mut files);
        assert_eq!(
            replies(&mut files),
            [format!("Accept {{ id: {id:?}, from: 7 }}")]
        );
        assert!(matches!(
            files.next_event(),
            Some(FileEvent::Incoming { resumed_at: 7, .. })
        ));
        // The hash goes on from what was there: the whole file checks.
        chunk(&mut files, &id, 7, &bytes[7..]);
        assert_eq!(files.prepare_commit().len(), 1);
        files.committed();
        assert_eq!(replies(&mut files), [format!("Saved {{ id: {id:?} }}")]);
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), bytes);
    }

    #[test]
    fn a_file_of_that_name_and_size_is_checked_on_a_thread_and_never_taken_for_another() {
        let dir = temp_dir("same-size");
        fs::write(dir.join("notes.txt"), b"aaaa").unwrap();
        fs::write(dir.join("copy.txt"), b"cccc").unwrap();
        let mut files = receiving(&dir, 1000);
        // Same size, other contents: accepted as a new file (saved under another name).
        let other = offer(&mut files, b"bbbb", "notes.txt");
        until_opened(&mut files);
        assert_eq!(
            replies(&mut files),
            [format!("Accept {{ id: {other:?}, from: 0 }}")]
        );
        // The same contents under that name: HAVE, nothing sent.
        let copy = offer(&mut files, b"cccc", "copy.txt");
        until_opened(&mut files);
        assert_eq!(replies(&mut files), [format!("Have {{ id: {copy:?} }}")]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn another_offer_while_a_partial_file_is_read_is_answered_for_itself() {
        let dir = temp_dir("partial-other");
        let first = b"the first file, partly here";
        let first_id: FileId = Sha256::digest(first).into();
        fs::write(part_path(&dir, "a.txt", &first_id), &first[..5]).unwrap();
        let mut files = receiving(&dir, 1000);
        offer(&mut files, first, "a.txt");
        let second = offer(&mut files, b"another", "b.txt");
        until_opened(&mut files);
        // Only the second is answered; the first's partial data is still there for later.
        assert_eq!(
            replies(&mut files),
            [format!("Accept {{ id: {second:?}, from: 0 }}")]
        );
        assert_eq!(
            fs::read(part_path(&dir, "a.txt", &first_id)).unwrap(),
            &first[..5]
        );
    }

    #[test]
    fn a_damaged_file_is_removed_and_an_oversized_one_refused() {
        let dir = temp_dir("damaged");
        let mut files = receiving(&dir, 10);
        let id = offer(&mut files, b"0123456789", "a");
        replies(&mut files);
        chunk(&mut files, &id, 0, b"0123456789".map(|b| b ^ 1).as_slice());
        assert!(files.prepare_commit().is_empty());
        assert_eq!(
            replies(&mut files),
            [format!("Failed {{ id: {id:?}, why: Damaged, detail: 0 }}")]
        );
        assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
        let big = offer(&mut files, &[0; 11], "b");
        assert_eq!(
            replies(&mut files),
            [format!(
                "Refuse {{ id: {big:?}, why: TooLarge, detail: 10 }}"
            )]
        );
        // Garbage is counted, not acted on.
        files.receive(None, &[wire::CHUNK, 1, 2], None);
        assert_eq!(files.malformed(), 1);
        assert!(replies(&mut files).is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    fn names_in(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_finished_file_never_replaces_another_and_the_same_file_is_kept_once() {
        let dir = temp_dir("place");
        let content = b"the content";
        let id: FileId = Sha256::digest(content).into();
        let write_part = || {
            let part = dir.join(".x.part");
            fs::write(&part, content).unwrap();
            part
        };
        fs::write(dir.join("a.txt"), b"someone else's").unwrap();
        let placed = place(&write_part(), &dir, "a.txt", 11, &id).unwrap();
        assert_eq!(placed, dir.join("a (1).txt"));
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"someone else's");
        // The same content again: the file that has it is the answer, no "a (2).txt".
        let again = place(&write_part(), &dir, "a.txt", 11, &id).unwrap();
        assert_eq!(again, dir.join("a (1).txt"));
        assert!(!dir.join("a (2).txt").exists());
        assert!(!dir.join(".x.part").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
