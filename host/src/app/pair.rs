//! `duet id`, `duet pair add/list/remove`, and the pairing exchange of `duet pair invite`
//! and `duet pair join`: two machines trade their static public keys over UDP, and a
//! one-time code of 8 digits, read aloud, proves to each side that the key it got is the
//! other person's.
//!
//! The exchange runs a SPAKE2 password-authenticated key exchange (Ed25519 group, the
//! joiner is side A, the inviter side B, the password is the code's 8 digits) and sends each
//! static key sealed with ChaCha20-Poly1305 under a key derived from SPAKE2's result. Someone
//! in the middle who does not know the code can neither read nor replace a key; a wrong
//! code makes the first open fail, and both sides stop having saved nothing. The inviter
//! answers exactly one join, so a guesser gets one guess in 10^8 per invite.
//!
//! Datagrams (all multi-byte fields are byte strings; `seal(k, n, aad, m)` is
//! ChaCha20-Poly1305 with nonce `n` = the kind byte then 11 zero bytes, and the datagram's
//! 20-byte header as associated data):
//!
//! ```text
//! 0   11  magic "duet-pair/1"
//! 11   1  kind: 1 HELLO, 2 REPLY, 3 CONFIRM, 4 DONE, 5 ABORT
//! 12   8  exchange id, random, chosen by the joiner
//! 20      body, by kind:
//!         HELLO   joiner → inviter  SPAKE2 message A (33)                                  53
//!         REPLY   inviter → joiner  SPAKE2 message B (33) ‖ seal(k_ij, 2, hdr, inviter key) 101
//!         CONFIRM joiner → inviter  seal(k_ji, 3, hdr, joiner key) (48)                    68
//!         DONE    inviter → joiner  seal(k_ij, 4, hdr, nothing) (16)                        36
//!         ABORT   either way        reason (1): 1 code mismatch, 2 code used, 3 refused     21
//! ```
//!
//! `k_ji` and `k_ij` are keyed BLAKE2s-256 of the labels `duet-pair/1 joiner to inviter` and
//! `duet-pair/1 inviter to joiner` under SPAKE2's 32-byte key. A datagram of another
//! magic, kind, length or exchange id is ignored. The joiner resends HELLO, then CONFIRM,
//! every 500 ms; the inviter answers a repeated HELLO or CONFIRM with the same REPLY or
//! DONE, answers a HELLO of another exchange with ABORT (code used), and lingers briefly
//! after DONE for repeats. Each side saves the other only once the exchange is proven: the
//! inviter on a CONFIRM that opens (before sending DONE), the joiner on a DONE that opens.
//!
//! The two state machines, `Inviter` and `Joiner`, do no I/O; `invite` and `join` move
//! their datagrams over a blocking std socket with read timeouts. Across the internet (a
//! join without `--addr`), [`super::pair_reach`] finds the other side by the code's
//! nameplate and opens the path; the exchange is the same.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use blake2::Blake2sMac256;
use blake2::digest::Mac;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use duet_core::MAX_DATAGRAM;
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password, Spake2};
use zeroize::Zeroizing;

use super::Error;
use super::keys::{Identity, Peer, PeerError, PeerKey, Peers};
use super::pair_reach::{Incoming, PairReach, Side};
use crate::platform::terminal;
use crate::transport;
use crate::transport::reach::ReachConfig;

/// `duet pair add`: a peer whose key came another way.
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// What to call them.
    pub name: String,
    /// Their public key.
    pub key: PeerKey,
    /// Where to reach them, `HOST:PORT`, if known.
    pub addr: Option<String>,
}

/// `duet pair invite`.
#[derive(Clone, Debug)]
pub struct InviteOptions {
    /// What to call the person who joins.
    pub name: String,
    /// Local address to wait on, `ADDR:PORT`.
    pub bind: String,
    /// Seconds to wait.
    pub timeout: u64,
    /// Internet reach: with the DHT on, the code gets a nameplate and the invite can be
    /// joined from anywhere ([`super::pair_reach`]); `None`: joined with `--addr` only.
    pub reach: Option<ReachConfig>,
}

/// `duet pair join`.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// What to call the inviter.
    pub name: String,
    /// The code the inviter shows.
    pub code: Code,
    /// The inviter's address, `HOST:PORT`; `None`: find it by the code's nameplate on the
    /// DHT.
    pub addr: Option<String>,
    /// Local address to send from.
    pub bind: String,
    /// Seconds to wait.
    pub timeout: u64,
    /// Internet reach, for joining without `--addr` (`None`: the DHT is off).
    pub reach: Option<ReachConfig>,
}

/// How often the joiner resends its HELLO or CONFIRM while no answer came.
const RESEND: Duration = Duration::from_millis(500);
/// How long the inviter stays after DONE when no repeated CONFIRM arrives: three resend
/// intervals, so a lost DONE is answered again.
const LINGER_QUIET: Duration = Duration::from_millis(1500);
/// The longest the inviter lingers after DONE in any case.
const LINGER_MAX: Duration = Duration::from_secs(10);
/// Copies of a final ABORT: it is not resent on a timer (its sender is leaving), so a few
/// copies stand in for retransmission.
const ABORT_COPIES: usize = 3;
/// Receive calls one exchange may make (each waits at least a millisecond, or handles a
/// datagram): a bound on the loop even if the clock or the socket misbehave.
const MAX_RECEIVES: u32 = 200_000;
/// Draws of a random number before giving up on an unbiased code (each succeeds with
/// probability 0.98).
const CODE_TRIES: u32 = 64;

/// SPAKE2 identities: bind the exchange to duet's pairing and to each side's role.
const JOINER_ID: &[u8] = b"duet-pair-joiner";
const INVITER_ID: &[u8] = b"duet-pair-inviter";
const LABEL_JOINER_TO_INVITER: &[u8] = b"duet-pair/1 joiner to inviter";
const LABEL_INVITER_TO_JOINER: &[u8] = b"duet-pair/1 inviter to joiner";

/// `duet id`: print the public key on the first line, its fingerprint on the second.
pub fn id(dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let key = Identity::load_or_create(dir)?.public();
    printed(
        writeln!(out, "{key}")
            .and_then(|()| writeln!(out, "fingerprint: {}", key.fingerprint()))
            .and_then(|()| out.flush()),
    )
}

/// The result of printing: a reader that went away (`duet id | head -1`) is not an error,
/// and ends the command quietly, as a closed stdout ends every mode.
fn printed(result: io::Result<()>) -> Result<(), Error> {
    match result {
        Err(e) if terminal::reader_gone(&e) => Ok(()),
        other => Ok(other?),
    }
}

/// `duet pair remove NAME`.
pub fn remove(dir: &Path, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let peer = Peers::update(dir, |peers| peers.remove(name))?;
    printed(
        writeln!(
            out,
            "removed {} (fingerprint {})",
            peer.name,
            peer.key.fingerprint()
        )
        .and_then(|()| out.flush()),
    )
}

/// `duet pair add`. Adding a peer again with the same key only changes its address (when
/// `--addr` is given), so `duet pair add` also fixes an address that went stale.
pub fn add(dir: &Path, args: AddOptions, out: &mut dyn Write) -> Result<(), Error> {
    let addr = args
        .addr
        .as_deref()
        .map(transport::parse_addr)
        .transpose()?;
    let own = Identity::load_or_create(dir)?.public();
    if args.key == own {
        return Err(PeerError::OwnKey.into());
    }
    let again = Peers::update(dir, |peers| match peers.get(&args.name) {
        Some(known) if known.key == args.key => {
            if addr.is_some() {
                peers.set_addr(&args.name, addr)?;
            }
            Ok(true)
        }
        _ => peers
            .add(Peer {
                name: args.name.clone(),
                key: args.key,
                addr,
            })
            .map(|()| false),
    })?;
    let line = match (again, addr) {
        (false, _) => format!(
            "added {} (fingerprint {}): compare it with what `duet id` prints there",
            args.name,
            args.key.fingerprint()
        ),
        (true, Some(addr)) => format!("{} (already paired): address set to {addr}", args.name),
        (true, None) => format!(
            "{} is already paired with that key: nothing changed",
            args.name
        ),
    };
    printed(writeln!(out, "{line}").and_then(|()| out.flush()))
}

/// `duet pair set-addr NAME HOST:PORT|none`: where a paired peer is reached, or (`None`)
/// no fixed address, so that it is looked for on the LAN or waited for.
pub fn set_addr(
    dir: &Path,
    name: &str,
    addr: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let addr = addr.map(transport::parse_addr).transpose()?;
    Peers::update(dir, |peers| peers.set_addr(name, addr))?;
    let line = match addr {
        Some(addr) => format!("{name} is reached at {addr}"),
        None => format!(
            "{name} has no address now: `duet chat {name}` looks for it on the LAN, \
             or waits for it to write first"
        ),
    };
    printed(writeln!(out, "{line}").and_then(|()| out.flush()))
}

/// `duet pair list`.
pub fn list(dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let peers = Peers::load(dir)?;
    let width = peers.iter().map(|p| p.name.chars().count()).max();
    let Some(width) = width else {
        // On stderr: stdout stays one line per peer for scripts.
        eprintln!("no peers yet: pair with `duet pair invite NAME`, or `duet pair add NAME KEY`");
        return Ok(());
    };
    let mut lines = peers.iter().try_for_each(|peer| {
        let addr = peer.addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
        // Names are checked on loading (no format characters get in); escaped anyway,
        // like everything else from a file that reaches the terminal.
        writeln!(
            out,
            "{:<width$}  {}  {}  {addr}",
            super::display::escaped(&peer.name),
            peer.key,
            peer.key.fingerprint()
        )
    });
    lines = lines.and_then(|()| out.flush());
    printed(lines)
}

/// Refuse to start an exchange whose result could not be saved under `name`.
fn check_name_free(dir: &Path, name: &str) -> Result<(), Error> {
    match Peers::load(dir)?.get(name) {
        Some(_) => Err(PeerError::DuplicateName(name.to_owned()).into()),
        None => Ok(()),
    }
}

/// Add `peer` to the peers file as it is now (another duet may have changed it since we
/// looked), refusing our own key.
fn save_peer(dir: &Path, own: PeerKey, peer: Peer) -> Result<(), Error> {
    if peer.key == own {
        return Err(PeerError::OwnKey.into());
    }
    Peers::update(dir, |peers| peers.add(peer))
}

/// Why pairing did not pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairFailure {
    /// The other side did not know the code (or someone tampered with the exchange).
    CodeMismatch,
    /// The inviter's code was already spent on another join.
    CodeUsed,
    /// The other side would not save the pairing (its own error says why).
    Refused,
    /// Nobody joined the invite in time.
    NobodyJoined {
        /// Seconds waited.
        waited: u64,
    },
    /// Nobody answered the join in time.
    NoInviter {
        /// Where the joiner knocked.
        addr: SocketAddr,
        /// Seconds waited.
        waited: u64,
    },
    /// The exchange began but did not finish in time.
    Unfinished {
        /// Seconds waited.
        waited: u64,
    },
    /// A join without `--addr` cannot look the inviter up.
    NeedsAddress {
        /// Why: the DHT is off (`true`), or the code has no nameplate (`false`).
        dht_off: bool,
    },
    /// No invite under the code's nameplate turned up on the DHT in time.
    InviteNotFound {
        /// The code's nameplate.
        nameplate: String,
        /// Seconds waited.
        waited: u64,
    },
    /// The invite's record was found, but none of its addresses answered in time.
    NoPath {
        /// Seconds waited.
        waited: u64,
    },
}

impl fmt::Display for PairFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pairing failed: ")?;
        match self {
            PairFailure::CodeMismatch => f.write_str("the code did not match (nothing was saved)"),
            PairFailure::CodeUsed => f.write_str(
                "that code was already used by another join; ask for a new one \
                 (`duet pair invite` there); nothing was saved",
            ),
            PairFailure::Refused => f.write_str(
                "the other side refused to save the pairing (its error says why); \
                 nothing was saved",
            ),
            PairFailure::NobodyJoined { waited } => {
                write!(f, "nobody joined within {waited} s (nothing was saved)")
            }
            PairFailure::NoInviter { addr, waited } => write!(
                f,
                "nobody answered at {addr} within {waited} s (is `duet pair invite` \
                 running there, on that port?); nothing was saved"
            ),
            PairFailure::Unfinished { waited } => write!(
                f,
                "the exchange did not finish within {waited} s; nothing was saved here \
                 (see `duet pair list` on the other side)"
            ),
            PairFailure::NeedsAddress { dht_off: true } => f.write_str(
                "without --addr the invite is looked up on the DHT, which is off \
                 (DUET_DHT or --dht); give --addr HOST:PORT of the inviter",
            ),
            PairFailure::NeedsAddress { dht_off: false } => f.write_str(
                "this code has no nameplate (the NNN- in front): its invite is not on the \
                 DHT; give --addr HOST:PORT of the inviter",
            ),
            PairFailure::InviteNotFound { nameplate, waited } => write!(
                f,
                "no invite with nameplate {nameplate} turned up on the DHT within {waited} s \
                 (check the code; is `duet pair invite` still running there?); nothing was saved"
            ),
            PairFailure::NoPath { waited } => write!(
                f,
                "the invite was found on the DHT, but none of its addresses answered within \
                 {waited} s (a strict NAT on both sides? then pair with --addr or `duet pair \
                 add`); nothing was saved"
            ),
        }
    }
}

/// A one-time pairing code: 8 secret decimal digits, shown as `1234-5678`, and for an
/// invite published on the DHT a 3-digit nameplate in front, `042-1234-5678`.
///
/// The nameplate only says where on the DHT the invite's addresses are
/// ([`super::pair_reach`]); it is public. The 8 digits are SPAKE2's password.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    nameplate: Option<[u8; NAMEPLATE_DIGITS]>,
    digits: [u8; SECRET_DIGITS],
}

/// The secret digits of a code.
const SECRET_DIGITS: usize = 8;
/// The nameplate's digits.
const NAMEPLATE_DIGITS: usize = 3;

impl Code {
    /// A uniformly random code from the system's generator, without a nameplate.
    pub fn random() -> Result<Code, Error> {
        Ok(Code {
            nameplate: None,
            digits: random_digits()?,
        })
    }

    /// A uniformly random code with a uniformly random nameplate.
    pub fn random_with_nameplate() -> Result<Code, Error> {
        let nameplate = random_digits::<NAMEPLATE_DIGITS>()?;
        Ok(Code {
            nameplate: Some(nameplate),
            digits: random_digits()?,
        })
    }

    /// The nameplate's digits, if the code has one.
    pub fn nameplate(&self) -> Option<String> {
        self.nameplate.as_ref().map(|n| text(n))
    }

    /// The 8 ASCII digits: SPAKE2's password.
    fn digits(&self) -> &[u8; SECRET_DIGITS] {
        &self.digits
    }
}

/// `N` uniformly random ASCII digits (N ≤ 9).
fn random_digits<const N: usize>() -> Result<[u8; N], Error> {
    // 10^N, and the largest multiple of it not above 2^32: drawing below that keeps every
    // number equally likely.
    let modulus = (0..N).fold(1u32, |m, _| m.saturating_mul(10));
    let limit = u32::MAX - u32::MAX % modulus;
    for _ in 0..CODE_TRIES {
        let n = getrandom::u32()
            .map_err(|e| Error::Other(format!("no randomness from the system: {e}")))?;
        if n < limit {
            return Ok(digits_of(n % modulus));
        }
    }
    Err(Error::Other(
        "the system's random generator keeps returning large numbers".into(),
    ))
}

/// The last `N` decimal digits of `n`, as ASCII.
fn digits_of<const N: usize>(mut n: u32) -> [u8; N] {
    let mut digits = [b'0'; N];
    for digit in digits.iter_mut().rev() {
        // `n % 10` is below 10, so the cast cannot truncate.
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

fn text(digits: &[u8]) -> String {
    digits.iter().map(|&d| char::from(d)).collect()
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(nameplate) = &self.nameplate {
            write!(f, "{}-", text(nameplate))?;
        }
        write!(f, "{}-{}", text(&self.digits[..4]), text(&self.digits[4..]))
    }
}

impl fmt::Debug for Code {
    /// The digits are a secret while the invite runs: keep them out of debug output (the
    /// nameplate is public).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nameplate {
            Some(nameplate) => write!(f, "Code({}-****-****)", text(nameplate)),
            None => f.write_str("Code(****-****)"),
        }
    }
}

/// A text that is not a pairing code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeParseError;

impl fmt::Display for CodeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a pairing code: expected 11 digits, like 042-1234-5678, or 8, like 1234-5678",
        )
    }
}

impl std::error::Error for CodeParseError {}

impl FromStr for Code {
    type Err = CodeParseError;

    /// Accepts `042-1234-5678` (with a nameplate), `1234-5678` (without), and the same with
    /// spaces or nothing between the groups.
    fn from_str(s: &str) -> Result<Code, CodeParseError> {
        let mut all = [0u8; NAMEPLATE_DIGITS + SECRET_DIGITS];
        let mut count = 0;
        for c in s.chars().filter(|&c| c != '-' && c != ' ') {
            let slot = all.get_mut(count).ok_or(CodeParseError)?;
            if !c.is_ascii_digit() {
                return Err(CodeParseError);
            }
            // An ASCII digit is one byte.
            *slot = c as u8;
            count += 1;
        }
        let (nameplate, digits) = match count {
            SECRET_DIGITS => (None, &all[..SECRET_DIGITS]),
            n if n == all.len() => {
                let (nameplate, digits) = all.split_at(NAMEPLATE_DIGITS);
                (
                    Some(nameplate.try_into().map_err(|_| CodeParseError)?),
                    digits,
                )
            }
            _ => return Err(CodeParseError),
        };
        Ok(Code {
            nameplate,
            digits: digits.try_into().map_err(|_| CodeParseError)?,
        })
    }
}

/// The datagrams of the exchange: layout, lengths, parsing. Parsing never panics: every
/// slice is taken after the length check.
mod wire {
    /// Every datagram starts with this.
    pub const MAGIC: &[u8; 11] = b"duet-pair/1";
    /// The exchange id's length.
    pub const EXCHANGE_LEN: usize = 8;
    /// Magic, kind, exchange id.
    pub const HEADER_LEN: usize = MAGIC.len() + 1 + EXCHANGE_LEN;
    /// A SPAKE2 message in the Ed25519 group: side byte and a point.
    pub const SPAKE_LEN: usize = 33;
    /// ChaCha20-Poly1305's tag.
    pub const TAG_LEN: usize = 16;
    /// A sealed public key.
    pub const SEALED_KEY_LEN: usize = 32 + TAG_LEN;

    mod field {
        use core::ops::Range;
        pub const MAGIC: Range<usize> = 0..11;
        pub const KIND: usize = 11;
        pub const EXCHANGE: Range<usize> = 12..20;
    }

    /// An exchange id.
    pub type ExchangeId = [u8; EXCHANGE_LEN];

    /// What a datagram is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Kind {
        /// Joiner → inviter: SPAKE2 message A.
        Hello = 1,
        /// Inviter → joiner: SPAKE2 message B and the inviter's sealed key.
        Reply = 2,
        /// Joiner → inviter: the joiner's sealed key.
        Confirm = 3,
        /// Inviter → joiner: a sealed acknowledgement.
        Done = 4,
        /// Either way: the sender stopped, with a reason byte.
        Abort = 5,
    }

    impl Kind {
        fn from_byte(byte: u8) -> Option<Kind> {
            Some(match byte {
                1 => Kind::Hello,
                2 => Kind::Reply,
                3 => Kind::Confirm,
                4 => Kind::Done,
                5 => Kind::Abort,
                _ => return None,
            })
        }

        /// The body's exact length.
        pub fn body_len(self) -> usize {
            match self {
                Kind::Hello => SPAKE_LEN,
                Kind::Reply => SPAKE_LEN + SEALED_KEY_LEN,
                Kind::Confirm => SEALED_KEY_LEN,
                Kind::Done => TAG_LEN,
                Kind::Abort => 1,
            }
        }

        /// The AEAD nonce of this kind's sealed part: each key seals at most once per
        /// kind, so a fixed nonce per kind is never reused with one key.
        pub fn nonce(self) -> [u8; 12] {
            let mut nonce = [0; 12];
            nonce[0] = self as u8;
            nonce
        }
    }

    /// Why an ABORT was sent.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Reason {
        /// The sender could not open what it got: the codes differ.
        CodeMismatch = 1,
        /// The inviter's code is spent on another exchange.
        CodeUsed = 2,
        /// The sender will not save the pairing.
        Refused = 3,
    }

    impl Reason {
        /// Unknown reasons read as a refusal.
        pub fn from_byte(byte: u8) -> Reason {
            match byte {
                1 => Reason::CodeMismatch,
                2 => Reason::CodeUsed,
                _ => Reason::Refused,
            }
        }
    }

    /// A parsed datagram, borrowing it.
    #[derive(Debug)]
    pub struct Message<'a> {
        /// Its kind.
        pub kind: Kind,
        /// Its exchange.
        pub exchange: ExchangeId,
        /// The header bytes, the sealed parts' associated data.
        pub header: &'a [u8],
        /// The body, of exactly `kind.body_len()` bytes.
        pub body: &'a [u8],
    }

    /// Parse a datagram; `None` for anything that is not exactly one of ours.
    pub fn parse(datagram: &[u8]) -> Option<Message<'_>> {
        if datagram.len() < HEADER_LEN || datagram[field::MAGIC] != MAGIC[..] {
            return None;
        }
        let kind = Kind::from_byte(datagram[field::KIND])?;
        if datagram.len() != HEADER_LEN + kind.body_len() {
            return None;
        }
        let exchange = datagram[field::EXCHANGE].try_into().ok()?;
        let (header, body) = datagram.split_at(HEADER_LEN);
        Some(Message {
            kind,
            exchange,
            header,
            body,
        })
    }

    /// The header of a datagram.
    pub fn header(kind: Kind, exchange: &ExchangeId) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header[field::MAGIC].copy_from_slice(MAGIC);
        header[field::KIND] = kind as u8;
        header[field::EXCHANGE].copy_from_slice(exchange);
        header
    }

    /// An ABORT datagram.
    pub fn abort(exchange: &ExchangeId, reason: Reason) -> Vec<u8> {
        let mut datagram = header(Kind::Abort, exchange).to_vec();
        datagram.push(reason as u8);
        datagram
    }
}

use wire::{ExchangeId, Kind, Reason};

impl From<Reason> for PairFailure {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::CodeMismatch => PairFailure::CodeMismatch,
            Reason::CodeUsed => PairFailure::CodeUsed,
            Reason::Refused => PairFailure::Refused,
        }
    }
}

/// The two sealing keys derived from SPAKE2's key, one per direction.
struct DirectionKeys {
    joiner_to_inviter: Zeroizing<[u8; 32]>,
    inviter_to_joiner: Zeroizing<[u8; 32]>,
}

impl DirectionKeys {
    /// `None` if SPAKE2's key is not 32 bytes (it always is for this group).
    fn derive(spake_key: &[u8]) -> Option<DirectionKeys> {
        let prf = |label: &[u8]| -> Option<Zeroizing<[u8; 32]>> {
            let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(spake_key).ok()?;
            mac.update(label);
            Some(Zeroizing::new(mac.finalize().into_bytes().into()))
        };
        if spake_key.len() != 32 {
            return None;
        }
        Some(DirectionKeys {
            joiner_to_inviter: prf(LABEL_JOINER_TO_INVITER)?,
            inviter_to_joiner: prf(LABEL_INVITER_TO_JOINER)?,
        })
    }
}

fn seal(key: &[u8; 32], kind: Kind, header: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(
            &Nonce::from(kind.nonce()),
            Payload {
                msg: plaintext,
                aad: header,
            },
        )
        // Only a plaintext of many gigabytes fails; ours are 32 bytes or none.
        .map_err(|_| Error::Other("pairing: encryption failed".into()))
}

fn open(key: &[u8; 32], kind: Kind, header: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(
            &Nonce::from(kind.nonce()),
            Payload {
                msg: sealed,
                aad: header,
            },
        )
        .ok()
}

fn open_key(key: &[u8; 32], kind: Kind, header: &[u8], sealed: &[u8]) -> Option<PeerKey> {
    let plain = open(key, kind, header, sealed)?;
    Some(PeerKey(plain.as_slice().try_into().ok()?))
}

fn password(code: &Code) -> Password {
    Password::new(code.digits())
}

/// What the inviter's side makes of a datagram.
#[derive(Debug, PartialEq, Eq)]
enum InviterStep {
    /// Not for this exchange, or a repeat needing no answer.
    Ignore,
    /// Send this back to the datagram's sender.
    Answer(Vec<u8>),
    /// Someone else tried the spent code: send them this ABORT and tell the user.
    Intruder(Vec<u8>),
    /// The joiner proved the code and sent this key: save it, then `confirm` (or `refuse`).
    Verified(PeerKey),
    /// Stopped: send the ABORT, if any, back to the sender.
    Failed(PairFailure, Option<Vec<u8>>),
}

enum InviterState {
    /// The code is unused.
    Waiting,
    /// The code is spent on this exchange: waiting for its CONFIRM.
    Answered {
        exchange: ExchangeId,
        hello: Vec<u8>,
        reply: Vec<u8>,
        keys: DirectionKeys,
    },
    /// The joiner's key opened; the driver is saving it.
    Verified {
        exchange: ExchangeId,
        confirm: Vec<u8>,
        keys: DirectionKeys,
    },
    /// Saved and acknowledged: repeats of the CONFIRM get the same DONE.
    Paired {
        exchange: ExchangeId,
        confirm: Vec<u8>,
        done: Vec<u8>,
    },
    /// Stopped.
    Failed,
}

/// The inviter's side of the exchange (SPAKE2 side B), without I/O.
///
/// Call order: `handle` each datagram; after `InviterStep::Verified`, `confirm` once the key
/// is saved or `refuse` if it cannot be; keep calling `handle` after `confirm` to answer
/// repeats.
struct Inviter {
    code: Code,
    own: PeerKey,
    state: InviterState,
}

impl Inviter {
    fn new(code: Code, own: PeerKey) -> Inviter {
        Inviter {
            code,
            own,
            state: InviterState::Waiting,
        }
    }

    /// Whether the code is spent on an exchange.
    fn started(&self) -> bool {
        !matches!(self.state, InviterState::Waiting)
    }

    fn handle(&mut self, datagram: &[u8]) -> Result<InviterStep, Error> {
        let Some(msg) = wire::parse(datagram) else {
            return Ok(InviterStep::Ignore);
        };
        let ours = |exchange: &ExchangeId| *exchange == msg.exchange;
        Ok(match (&self.state, msg.kind) {
            (InviterState::Waiting, Kind::Hello) => self.answer_hello(datagram, &msg)?,
            (
                InviterState::Answered {
                    exchange,
                    hello,
                    reply,
                    ..
                },
                Kind::Hello,
            ) if ours(exchange) => {
                if datagram == hello.as_slice() {
                    InviterStep::Answer(reply.clone())
                } else {
                    InviterStep::Ignore
                }
            }
            (
                InviterState::Answered { exchange, .. }
                | InviterState::Verified { exchange, .. }
                | InviterState::Paired { exchange, .. },
                Kind::Hello,
            ) if !ours(exchange) => {
                InviterStep::Intruder(wire::abort(&msg.exchange, Reason::CodeUsed))
            }
            (InviterState::Answered { exchange, keys, .. }, Kind::Confirm) if ours(exchange) => {
                let exchange = *exchange;
                match open_key(&keys.joiner_to_inviter, Kind::Confirm, msg.header, msg.body) {
                    Some(key) => {
                        let InviterState::Answered { keys, .. } =
                            std::mem::replace(&mut self.state, InviterState::Failed)
                        else {
                            return Ok(InviterStep::Ignore);
                        };
                        self.state = InviterState::Verified {
                            exchange,
                            confirm: datagram.to_vec(),
                            keys,
                        };
                        InviterStep::Verified(key)
                    }
                    None => {
                        self.state = InviterState::Failed;
                        InviterStep::Failed(
                            PairFailure::CodeMismatch,
                            Some(wire::abort(&exchange, Reason::CodeMismatch)),
                        )
                    }
                }
            }
            (
                InviterState::Paired {
                    exchange,
                    confirm,
                    done,
                },
                Kind::Confirm,
            ) if ours(exchange) => {
                if datagram == confirm.as_slice() {
                    InviterStep::Answer(done.clone())
                } else {
                    InviterStep::Ignore
                }
            }
            (InviterState::Answered { exchange, .. }, Kind::Abort) if ours(exchange) => {
                self.state = InviterState::Failed;
                let reason = Reason::from_byte(msg.body.first().copied().unwrap_or(0));
                InviterStep::Failed(reason.into(), None)
            }
            _ => InviterStep::Ignore,
        })
    }

    /// The first HELLO spends the code, if it is a SPAKE2 message at all.
    fn answer_hello(
        &mut self,
        datagram: &[u8],
        msg: &wire::Message<'_>,
    ) -> Result<InviterStep, Error> {
        let (spake, message_b) = Spake2::<Ed25519Group>::start_b(
            &password(&self.code),
            &SpakeIdentity::new(JOINER_ID),
            &SpakeIdentity::new(INVITER_ID),
        );
        // Not a valid point: noise, not a guess; the code stays unused.
        let Ok(spake_key) = spake.finish(msg.body) else {
            return Ok(InviterStep::Ignore);
        };
        let spake_key = Zeroizing::new(spake_key);
        let Some(keys) = DirectionKeys::derive(&spake_key) else {
            return Ok(InviterStep::Ignore);
        };
        let header = wire::header(Kind::Reply, &msg.exchange);
        let sealed = seal(&keys.inviter_to_joiner, Kind::Reply, &header, &self.own.0)?;
        let reply = [&header[..], &message_b, &sealed].concat();
        self.state = InviterState::Answered {
            exchange: msg.exchange,
            hello: datagram.to_vec(),
            reply: reply.clone(),
            keys,
        };
        Ok(InviterStep::Answer(reply))
    }

    /// The joiner's key is saved: the DONE to send (again for each repeated CONFIRM).
    fn confirm(&mut self) -> Result<Vec<u8>, Error> {
        let InviterState::Verified {
            exchange,
            confirm,
            keys,
        } = std::mem::replace(&mut self.state, InviterState::Failed)
        else {
            return Err(Error::Other("pairing: confirm before verify".into()));
        };
        let header = wire::header(Kind::Done, &exchange);
        let sealed = seal(&keys.inviter_to_joiner, Kind::Done, &header, &[])?;
        let done = [&header[..], &sealed].concat();
        self.state = InviterState::Paired {
            exchange,
            confirm,
            done: done.clone(),
        };
        Ok(done)
    }

    /// The joiner's key cannot be saved: the ABORT to send.
    fn refuse(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, InviterState::Failed) {
            InviterState::Verified { exchange, .. } => {
                Some(wire::abort(&exchange, Reason::Refused))
            }
            _ => None,
        }
    }
}

/// What the joiner's side makes of a datagram.
#[derive(Debug, PartialEq, Eq)]
enum JoinerStep {
    /// Not for this exchange, or a repeat.
    Ignore,
    /// The inviter proved the code and sent this key: `confirm` (or `refuse`).
    Verified(PeerKey),
    /// The inviter saved our key and acknowledged it: save theirs.
    Paired(PeerKey),
    /// Stopped: send the ABORT, if any, to the inviter.
    Failed(PairFailure, Option<Vec<u8>>),
}

enum JoinerState {
    /// Sending HELLO, waiting for REPLY.
    Hello {
        spake: Option<Spake2<Ed25519Group>>,
        hello: Vec<u8>,
    },
    /// The inviter's key opened; the driver decides.
    Verified { key: PeerKey, keys: DirectionKeys },
    /// Sending CONFIRM, waiting for DONE.
    Confirming {
        key: PeerKey,
        keys: DirectionKeys,
        confirm: Vec<u8>,
    },
    /// Paired or stopped.
    Over,
}

/// The joiner's side of the exchange (SPAKE2 side A), without I/O.
///
/// Call order: send `datagram()` now and every [`RESEND`] while it is `Some`; `handle` each
/// datagram received; after `JoinerStep::Verified`, `confirm` (then keep resending) or
/// `refuse`.
struct Joiner {
    own: PeerKey,
    exchange: ExchangeId,
    state: JoinerState,
}

impl Joiner {
    fn new(code: &Code, own: PeerKey, exchange: ExchangeId) -> Joiner {
        let (spake, message_a) = Spake2::<Ed25519Group>::start_a(
            &password(code),
            &SpakeIdentity::new(JOINER_ID),
            &SpakeIdentity::new(INVITER_ID),
        );
        let hello = [&wire::header(Kind::Hello, &exchange)[..], &message_a].concat();
        Joiner {
            own,
            exchange,
            state: JoinerState::Hello {
                spake: Some(spake),
                hello,
            },
        }
    }

    /// The datagram to (re)send, if any.
    fn datagram(&self) -> Option<&[u8]> {
        match &self.state {
            JoinerState::Hello { hello, .. } => Some(hello),
            JoinerState::Confirming { confirm, .. } => Some(confirm),
            JoinerState::Verified { .. } | JoinerState::Over => None,
        }
    }

    /// Whether the inviter answered.
    fn answered(&self) -> bool {
        !matches!(self.state, JoinerState::Hello { .. })
    }

    fn handle(&mut self, datagram: &[u8]) -> JoinerStep {
        let Some(msg) = wire::parse(datagram) else {
            return JoinerStep::Ignore;
        };
        if msg.exchange != self.exchange {
            return JoinerStep::Ignore;
        }
        let mismatch = || {
            JoinerStep::Failed(
                PairFailure::CodeMismatch,
                Some(wire::abort(&msg.exchange, Reason::CodeMismatch)),
            )
        };
        match (&mut self.state, msg.kind) {
            (JoinerState::Hello { spake, .. }, Kind::Reply) => {
                let Some(spake) = spake.take() else {
                    return JoinerStep::Ignore;
                };
                self.state = JoinerState::Over;
                let (message_b, sealed) = msg.body.split_at(wire::SPAKE_LEN);
                let Ok(spake_key) = spake.finish(message_b) else {
                    return mismatch();
                };
                let spake_key = Zeroizing::new(spake_key);
                let Some(keys) = DirectionKeys::derive(&spake_key) else {
                    return mismatch();
                };
                match open_key(&keys.inviter_to_joiner, Kind::Reply, msg.header, sealed) {
                    Some(key) => {
                        self.state = JoinerState::Verified { key, keys };
                        JoinerStep::Verified(key)
                    }
                    None => mismatch(),
                }
            }
            (JoinerState::Confirming { key, keys, .. }, Kind::Done) => {
                match open(&keys.inviter_to_joiner, Kind::Done, msg.header, msg.body) {
                    Some(_) => {
                        let key = *key;
                        self.state = JoinerState::Over;
                        JoinerStep::Paired(key)
                    }
                    // Not from whoever holds the keys: keep waiting for the real DONE.
                    None => JoinerStep::Ignore,
                }
            }
            (JoinerState::Hello { .. } | JoinerState::Confirming { .. }, Kind::Abort) => {
                self.state = JoinerState::Over;
                let reason = Reason::from_byte(msg.body.first().copied().unwrap_or(0));
                JoinerStep::Failed(reason.into(), None)
            }
            _ => JoinerStep::Ignore,
        }
    }

    /// Send our key: the CONFIRM, which `datagram` now returns for resending.
    fn confirm(&mut self) -> Result<Vec<u8>, Error> {
        let JoinerState::Verified { key, keys } =
            std::mem::replace(&mut self.state, JoinerState::Over)
        else {
            return Err(Error::Other("pairing: confirm before verify".into()));
        };
        let header = wire::header(Kind::Confirm, &self.exchange);
        let sealed = seal(&keys.joiner_to_inviter, Kind::Confirm, &header, &self.own.0)?;
        let confirm = [&header[..], &sealed].concat();
        self.state = JoinerState::Confirming {
            key,
            keys,
            confirm: confirm.clone(),
        };
        Ok(confirm)
    }

    /// Do not pair after all: the ABORT to send.
    fn refuse(&mut self) -> Vec<u8> {
        self.state = JoinerState::Over;
        wire::abort(&self.exchange, Reason::Refused)
    }
}

/// A blocking UDP socket with a bounded receive loop.
struct Endpoint {
    socket: UdpSocket,
    buf: [u8; MAX_DATAGRAM],
    receives: u32,
}

impl Endpoint {
    fn bind(addr: SocketAddr) -> Result<Endpoint, Error> {
        let socket =
            UdpSocket::bind(addr).map_err(|source| transport::Error::Bind { addr, source })?;
        Ok(Endpoint {
            socket,
            buf: [0; MAX_DATAGRAM],
            receives: 0,
        })
    }

    /// The next datagram's sender and length, or `None` once `until` has passed.
    fn recv_until(&mut self, until: Instant) -> Result<Option<(SocketAddr, usize)>, Error> {
        loop {
            self.receives += 1;
            if self.receives > MAX_RECEIVES {
                return Err(Error::Other(
                    "pairing stopped: too many stray datagrams".into(),
                ));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A zero timeout would mean "block forever"; `left` is positive here.
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => return Ok(Some((transport::udp::canonical(from), len))),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        // An ICMP error for an earlier datagram: not ours to act on.
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Send, treating an unreachable peer as an error (the first datagram shows it at once).
    fn send(&self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        match self.socket.send_to(datagram, to) {
            Ok(_) => Ok(()),
            // An ICMP error left over from an earlier datagram; the next try may pass.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(source) => Err(transport::Error::Unreachable { peer: to, source }.into()),
        }
    }
}

fn exchange_id() -> Result<ExchangeId, Error> {
    let mut id = [0; wire::EXCHANGE_LEN];
    getrandom::fill(&mut id)
        .map_err(|e| Error::Other(format!("no randomness from the system: {e}")))?;
    Ok(id)
}

fn paired_line(out: &mut dyn Write, name: &str, key: &PeerKey) -> Result<(), Error> {
    printed(
        writeln!(
            out,
            "paired with {name} (fingerprint {})",
            key.fingerprint()
        )
        .and_then(|()| out.flush()),
    )
}

/// `duet pair invite`: show a code, answer one join, save the joiner.
pub fn invite(dir: &Path, args: InviteOptions, out: &mut dyn Write) -> Result<(), Error> {
    let own = Identity::load_or_create(dir)?.public();
    check_name_free(dir, &args.name)?;
    let bind = transport::parse_addr(&args.bind)?;
    let endpoint = Endpoint::bind(bind)?;
    let local = endpoint.socket.local_addr()?;
    let code = match args.reach {
        Some(_) => Code::random_with_nameplate()?,
        None => Code::random()?,
    };
    let reach = match (&args.reach, code.nameplate()) {
        (Some(config), Some(nameplate)) => {
            Some(start_reach(config, Side::Inviter, &nameplate, local)?)
        }
        _ => None,
    };
    let shown = match reach {
        Some(_) => writeln!(
            out,
            "code: {code} (one-time; waiting on {local} and on the DHT for up to {} s)",
            args.timeout
        )
        .and_then(|()| {
            writeln!(
                out,
                "on the other computer, run: duet pair join NAME {code} \
                 (or, on the same network, add --addr ADDRESS-OF-THIS-COMPUTER:{})",
                local.port()
            )
        }),
        None => writeln!(
            out,
            "code: {code} (one-time; waiting on {local} for up to {} s)",
            args.timeout
        )
        .and_then(|()| {
            writeln!(
                out,
                "on the other computer, run: duet pair join NAME {code} --addr ADDRESS-OF-THIS-COMPUTER:{}",
                local.port()
            )
        }),
    }
    .and_then(|()| out.flush());
    if shown.is_err() {
        // Nobody sees the code, so nobody can join: leave (quietly if the reader left).
        return printed(shown);
    }
    let mut socket = PairingSocket { endpoint, reach };
    let result = answer_one_join(dir, &args, own, code, &mut socket, out);
    socket.close();
    result
}

/// The invite's loop: answer one join on `socket`, save the joiner.
fn answer_one_join(
    dir: &Path,
    args: &InviteOptions,
    own: PeerKey,
    code: Code,
    socket: &mut PairingSocket,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut inviter = Inviter::new(code, own);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let now = Instant::now();
        if now >= deadline {
            let waited = args.timeout;
            return Err(Error::Pairing(if inviter.started() {
                PairFailure::Unfinished { waited }
            } else {
                PairFailure::NobodyJoined { waited }
            }));
        }
        if inviter.started()
            && let Some(reach) = &mut socket.reach
        {
            reach.stop_punching();
        }
        let wake = socket.turn(now).min(deadline);
        let Some(arrivals) = socket.receive(wake)? else {
            continue;
        };
        for (from, datagram) in arrivals {
            match inviter.handle(&datagram)? {
                InviterStep::Ignore => {}
                InviterStep::Answer(datagram) => {
                    // Best effort: the joiner resends until an answer gets through, and a
                    // forged sender address must not end the invite.
                    let _ = socket.send(&datagram, from);
                }
                InviterStep::Intruder(abort) => {
                    // Best effort: the intruder's trouble is not ours.
                    let _ = socket.send(&abort, from);
                    eprintln!(
                        "duet: refused a second join from {from}: the code is already in use"
                    );
                }
                InviterStep::Verified(key) => {
                    // No address: `from` is the port the joiner opened for this exchange
                    // only (`duet pair join` binds a free one), dead once it exits; across
                    // the internet it is also a mapping of the joiner's router made for this
                    // exchange. The joiner's duet is found on the LAN or through the DHT,
                    // writes first, or is given one with `duet pair set-addr`.
                    let peer = Peer {
                        name: args.name.clone(),
                        key,
                        addr: None,
                    };
                    if let Err(e) = save_peer(dir, own, peer) {
                        if let Some(abort) = inviter.refuse() {
                            for _ in 0..ABORT_COPIES {
                                let _ = socket.send(&abort, from);
                            }
                        }
                        return Err(e);
                    }
                    let done = inviter.confirm()?;
                    // Saved already: a failed send only means the joiner times out.
                    let _ = socket.send(&done, from);
                    paired_line(out, &args.name, &key)?;
                    eprintln!(
                        "duet: no address saved for {0}: the join came from a temporary port. \
                         `duet chat {0}` looks for it on the LAN{1}; elsewhere, run \
                         `duet pair set-addr {0} HOST:PORT` with where its duet listens",
                        args.name,
                        if socket.reach.is_some() {
                            " and through the DHT"
                        } else {
                            ""
                        }
                    );
                    linger(socket, &mut inviter, deadline);
                    return Ok(());
                }
                InviterStep::Failed(failure, abort) => {
                    if let Some(abort) = abort {
                        for _ in 0..ABORT_COPIES {
                            let _ = socket.send(&abort, from);
                        }
                    }
                    return Err(Error::Pairing(failure));
                }
            }
        }
    }
}

/// After DONE, answer repeated CONFIRMs (their DONE was lost) until they stop.
fn linger(socket: &mut PairingSocket, inviter: &mut Inviter, deadline: Instant) {
    let start = Instant::now();
    let end = (start + LINGER_MAX).min(deadline.max(start + LINGER_QUIET));
    let mut quiet_until = start + LINGER_QUIET;
    // Errors end the lingering only: the pairing is saved and acknowledged.
    while let Ok(Some(arrivals)) = socket.receive(quiet_until.min(end)) {
        for (from, datagram) in arrivals {
            match inviter.handle(&datagram) {
                Ok(InviterStep::Answer(datagram)) => {
                    let _ = socket.send(&datagram, from);
                    quiet_until = Instant::now() + LINGER_QUIET;
                }
                Ok(InviterStep::Intruder(abort)) => {
                    let _ = socket.send(&abort, from);
                }
                _ => {}
            }
        }
    }
}

fn start_reach(
    config: &ReachConfig,
    side: Side,
    nameplate: &str,
    local: SocketAddr,
) -> Result<Box<PairReach>, Error> {
    PairReach::start(config, side, nameplate, local)
        .map(Box::new)
        .map_err(|e| Error::Other(format!("pairing across the internet: {e}")))
}

/// A datagram for the exchange and its sender.
type Arrival = (SocketAddr, Vec<u8>);

/// The pairing socket, with the rendezvous on it when pairing across the internet.
struct PairingSocket {
    endpoint: Endpoint,
    reach: Option<Box<PairReach>>,
}

impl PairingSocket {
    /// One turn of the rendezvous, if any: its STUN and TURN requests and punches go out
    /// (best effort: a candidate without a route is one of several), its problems to
    /// stderr. Returns when it next needs a turn.
    fn turn(&mut self, now: Instant) -> Instant {
        let Some(reach) = &mut self.reach else {
            return now + LINGER_MAX;
        };
        reach.step(now);
        while let Some((to, datagram)) = reach.poll_transmit() {
            let _ = self.endpoint.send(&datagram, to);
        }
        while let Some(problem) = reach.next_problem() {
            eprintln!("duet: {problem}");
        }
        reach.next_wake(now)
    }

    /// The exchange's datagrams that arrive next, with their senders (empty when only the
    /// rendezvous's own traffic came), or `None` once `until` has passed.
    fn receive(&mut self, until: Instant) -> Result<Option<Vec<Arrival>>, Error> {
        let Some((from, len)) = self.endpoint.recv_until(until)? else {
            return Ok(None);
        };
        let datagram = &self.endpoint.buf[..len];
        let Some(reach) = &mut self.reach else {
            return Ok(Some(vec![(from, datagram.to_vec())]));
        };
        let mut arrivals = match reach.handle_datagram(from, datagram) {
            Incoming::Exchange => vec![(from, datagram.to_vec())],
            Incoming::Consumed => Vec::new(),
            Incoming::Relayed { peer, payload } => vec![(peer, payload)],
        };
        while let Some(relayed) = reach.poll_relayed() {
            arrivals.push(relayed);
        }
        Ok(Some(arrivals))
    }

    /// Send an exchange datagram to `to`: through the relay when `to` was heard through it.
    fn send(&mut self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        match &mut self.reach {
            Some(reach) => {
                let (to, bytes) = reach.route(to, datagram);
                self.endpoint.send(&bytes, to)
            }
            None => self.endpoint.send(datagram, to),
        }
    }

    /// The pairing is over: let go of the relay.
    fn close(&mut self) {
        if let Some(reach) = &mut self.reach {
            reach.close();
            while let Some((to, datagram)) = reach.poll_transmit() {
                let _ = self.endpoint.send(&datagram, to);
            }
        }
    }
}

/// Where a joiner knocks: the address the user gave, or the invite's candidates found on
/// the DHT.
enum Knock {
    /// `--addr`.
    At(SocketAddr),
    /// By the code's nameplate.
    Nameplate {
        nameplate: String,
        /// Where the inviter's REPLY came from: the one path that works.
        answered_from: Option<SocketAddr>,
    },
}

impl Knock {
    /// Send to where the joiner's datagrams go. Only a knock at the given address reports a
    /// failed send: of several candidates some may have no route from here.
    fn send(&self, socket: &mut PairingSocket, datagram: &[u8]) -> Result<(), Error> {
        let targets = match self {
            Knock::At(addr) => return socket.send(datagram, *addr),
            Knock::Nameplate {
                answered_from: Some(addr),
                ..
            } => vec![*addr],
            Knock::Nameplate { .. } => socket
                .reach
                .as_ref()
                .map(|r| r.peer_candidates().to_vec())
                .unwrap_or_default(),
        };
        for to in targets {
            let _ = socket.send(datagram, to);
        }
        Ok(())
    }

    /// Why nobody answered in time.
    fn no_answer(&self, socket: &PairingSocket, waited: u64) -> PairFailure {
        match self {
            Knock::At(addr) => PairFailure::NoInviter {
                addr: *addr,
                waited,
            },
            Knock::Nameplate { nameplate, .. } => {
                if socket.reach.as_ref().is_some_and(|r| r.found()) {
                    PairFailure::NoPath { waited }
                } else {
                    PairFailure::InviteNotFound {
                        nameplate: nameplate.clone(),
                        waited,
                    }
                }
            }
        }
    }
}

/// `duet pair join`: knock at the inviter with the code, save the inviter.
pub fn join(dir: &Path, args: JoinOptions, out: &mut dyn Write) -> Result<(), Error> {
    let own = Identity::load_or_create(dir)?.public();
    check_name_free(dir, &args.name)?;
    let inviter_addr = args
        .addr
        .as_deref()
        .map(transport::parse_addr)
        .transpose()?;
    let nameplate = match (inviter_addr, &args.reach, args.code.nameplate()) {
        (Some(_), _, _) => None,
        (None, None, _) => return Err(Error::Pairing(PairFailure::NeedsAddress { dht_off: true })),
        (None, Some(_), None) => {
            return Err(Error::Pairing(PairFailure::NeedsAddress { dht_off: false }));
        }
        (None, Some(config), Some(nameplate)) => Some((config, nameplate)),
    };
    let mut bind = transport::parse_addr(&args.bind)?;
    // The default bind is IPv4's wildcard; an IPv6 inviter needs IPv6's.
    if let Some(inviter_addr) = inviter_addr
        && bind.ip().is_unspecified()
        && bind.is_ipv4() != inviter_addr.is_ipv4()
    {
        bind.set_ip(match inviter_addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
    }
    let endpoint = Endpoint::bind(bind)?;
    let (knock, reach) = match (inviter_addr, nameplate) {
        (Some(addr), _) => (Knock::At(addr), None),
        (None, Some((config, nameplate))) => {
            let local = endpoint.socket.local_addr()?;
            let reach = start_reach(config, Side::Joiner, &nameplate, local)?;
            eprintln!("duet: looking up invite {nameplate} on the DHT");
            let knock = Knock::Nameplate {
                nameplate,
                answered_from: None,
            };
            (knock, Some(reach))
        }
        // Ruled out above: without an address there is a nameplate.
        (None, None) => return Err(Error::Pairing(PairFailure::NeedsAddress { dht_off: true })),
    };
    let mut socket = PairingSocket { endpoint, reach };
    let result = knock_until_paired(dir, &args, own, knock, inviter_addr, &mut socket, out);
    socket.close();
    result
}

/// The join's loop: run the exchange with the inviter on `socket`, save the inviter.
fn knock_until_paired(
    dir: &Path,
    args: &JoinOptions,
    own: PeerKey,
    mut knock: Knock,
    inviter_addr: Option<SocketAddr>,
    socket: &mut PairingSocket,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut joiner = Joiner::new(&args.code, own, exchange_id()?);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            let waited = args.timeout;
            return Err(Error::Pairing(if joiner.answered() {
                PairFailure::Unfinished { waited }
            } else {
                knock.no_answer(socket, waited)
            }));
        }
        let mut wake = socket.turn(now).min(next_send).min(deadline);
        if now >= next_send {
            if let Some(datagram) = joiner.datagram() {
                knock.send(socket, datagram)?;
            }
            next_send = now + RESEND;
            wake = wake.min(next_send);
        }
        let Some(arrivals) = socket.receive(wake)? else {
            continue;
        };
        for (from, datagram) in arrivals {
            // The sender's address is not checked: the exchange id and the sealed parts say
            // who the datagram is from, and a multi-homed inviter may answer from another
            // address than the one we knocked at.
            let step = joiner.handle(&datagram);
            if !matches!(step, JoinerStep::Ignore)
                && let Knock::Nameplate { answered_from, .. } = &mut knock
                && answered_from.is_none()
            {
                // Found the path: keep to it.
                *answered_from = Some(from);
                if let Some(reach) = &mut socket.reach {
                    reach.stop_punching();
                }
                eprintln!("duet: the inviter answered from {from}");
            }
            match step {
                JoinerStep::Ignore => {}
                JoinerStep::Verified(key) => {
                    // Refuse before sending our key, so the inviter saves nothing either.
                    let refusal = if key == own {
                        Some(Error::from(PeerError::OwnKey))
                    } else {
                        Peers::load(dir)?.by_key(&key).map(|p| {
                            Error::from(PeerError::DuplicateKey {
                                existing: p.name.clone(),
                            })
                        })
                    };
                    if let Some(e) = refusal {
                        let abort = joiner.refuse();
                        for _ in 0..ABORT_COPIES {
                            let _ = knock.send(socket, &abort);
                        }
                        return Err(e);
                    }
                    let confirm = joiner.confirm()?;
                    knock.send(socket, &confirm)?;
                    next_send = Instant::now() + RESEND;
                }
                JoinerStep::Paired(key) => {
                    // The address the user typed is where the inviter's duet listens:
                    // stable, unlike the port the inviter's answers come from. Found through
                    // the DHT, the inviter's address is its pairing socket's mapping on its
                    // router (or a relay), which lasts only as long as the exchange: nothing
                    // is saved then.
                    let peer = Peer {
                        name: args.name.clone(),
                        key,
                        addr: inviter_addr,
                    };
                    save_peer(dir, own, peer)?;
                    paired_line(out, &args.name, &key)?;
                    if inviter_addr.is_none() {
                        eprintln!(
                            "duet: no address saved for {0}: `duet chat {0}` finds it on the \
                             LAN or through the DHT",
                            args.name
                        );
                    }
                    return Ok(());
                }
                JoinerStep::Failed(failure, abort) => {
                    if let Some(abort) = abort {
                        for _ in 0..ABORT_COPIES {
                            let _ = knock.send(socket, &abort);
                        }
                    }
                    return Err(Error::Pairing(failure));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITER_KEY: PeerKey = PeerKey([0x11; 32]);
    const JOINER_KEY: PeerKey = PeerKey([0x22; 32]);
    const EXCHANGE: ExchangeId = *b"exchange";

    fn code(text: &str) -> Code {
        text.parse().unwrap()
    }

    /// Run HELLO → REPLY → CONFIRM → DONE between the two machines in memory.
    fn pair(inviter_code: &str, joiner_code: &str) -> (Inviter, Joiner, JoinerStep) {
        let mut inviter = Inviter::new(code(inviter_code), INVITER_KEY);
        let mut joiner = Joiner::new(&code(joiner_code), JOINER_KEY, EXCHANGE);
        let hello = joiner.datagram().unwrap().to_vec();
        let InviterStep::Answer(reply) = inviter.handle(&hello).unwrap() else {
            panic!("no REPLY");
        };
        let step = joiner.handle(&reply);
        (inviter, joiner, step)
    }

    #[test]
    fn the_right_code_trades_both_keys() {
        let (mut inviter, mut joiner, step) = pair("1234-5678", "12345678");
        assert_eq!(step, JoinerStep::Verified(INVITER_KEY));
        let confirm = joiner.confirm().unwrap();
        assert_eq!(joiner.datagram(), Some(&confirm[..]), "CONFIRM is resent");
        assert_eq!(
            inviter.handle(&confirm).unwrap(),
            InviterStep::Verified(JOINER_KEY)
        );
        let done = inviter.confirm().unwrap();
        assert_eq!(joiner.handle(&done), JoinerStep::Paired(INVITER_KEY));
        assert_eq!(joiner.datagram(), None, "nothing left to send");
    }

    #[test]
    fn a_wrong_code_fails_on_both_sides() {
        let (mut inviter, _joiner, step) = pair("1234-5678", "1234-5679");
        let JoinerStep::Failed(PairFailure::CodeMismatch, Some(abort)) = step else {
            panic!("joiner did not detect the mismatch: {step:?}");
        };
        assert_eq!(
            inviter.handle(&abort).unwrap(),
            InviterStep::Failed(PairFailure::CodeMismatch, None)
        );
        // The code is spent: a new HELLO, even with the right code, is refused.
        let second = Joiner::new(&code("1234-5678"), JOINER_KEY, *b"another!");
        let hello = second.datagram().unwrap().to_vec();
        assert_eq!(inviter.handle(&hello).unwrap(), InviterStep::Ignore);
    }

    #[test]
    fn a_joiner_that_never_opens_the_reply_cannot_confirm() {
        // A guesser with the wrong code sends a CONFIRM sealed under its own keys.
        let mut inviter = Inviter::new(code("1111-1111"), INVITER_KEY);
        let mut guesser = Joiner::new(&code("2222-2222"), JOINER_KEY, EXCHANGE);
        let hello = guesser.datagram().unwrap().to_vec();
        let InviterStep::Answer(_) = inviter.handle(&hello).unwrap() else {
            panic!("no REPLY");
        };
        let keys = DirectionKeys::derive(&[7; 32]).unwrap();
        let header = wire::header(Kind::Confirm, &EXCHANGE);
        let sealed = seal(&keys.joiner_to_inviter, Kind::Confirm, &header, &[0x33; 32]).unwrap();
        let forged = [&header[..], &sealed].concat();
        let InviterStep::Failed(PairFailure::CodeMismatch, Some(abort)) =
            inviter.handle(&forged).unwrap()
        else {
            panic!("a forged CONFIRM was not refused");
        };
        // The guesser, still waiting for a REPLY it could open, learns of the mismatch.
        assert_eq!(
            guesser.handle(&abort),
            JoinerStep::Failed(PairFailure::CodeMismatch, None)
        );
    }

    #[test]
    fn a_tampered_reply_is_a_mismatch() {
        let mut inviter = Inviter::new(code("1234-5678"), INVITER_KEY);
        let mut joiner = Joiner::new(&code("1234-5678"), JOINER_KEY, EXCHANGE);
        let hello = joiner.datagram().unwrap().to_vec();
        let InviterStep::Answer(mut reply) = inviter.handle(&hello).unwrap() else {
            panic!("no REPLY");
        };
        // Someone in the middle swaps a byte of the sealed key.
        let last = reply.len() - 20;
        reply[last] ^= 1;
        assert!(matches!(
            joiner.handle(&reply),
            JoinerStep::Failed(PairFailure::CodeMismatch, Some(_))
        ));
    }

    #[test]
    fn repeats_get_the_same_answer_and_other_joins_are_refused() {
        let mut inviter = Inviter::new(code("1234-5678"), INVITER_KEY);
        let mut joiner = Joiner::new(&code("1234-5678"), JOINER_KEY, EXCHANGE);
        let hello = joiner.datagram().unwrap().to_vec();
        let first = inviter.handle(&hello).unwrap();
        assert_eq!(inviter.handle(&hello).unwrap(), first, "repeat of HELLO");
        let InviterStep::Answer(reply) = first else {
            panic!("no REPLY");
        };
        let mut other = Joiner::new(&code("1234-5678"), JOINER_KEY, *b"intruder");
        let other_hello = other.datagram().unwrap().to_vec();
        let InviterStep::Intruder(abort) = inviter.handle(&other_hello).unwrap() else {
            panic!("second join not refused");
        };
        assert_eq!(
            other.handle(&abort),
            JoinerStep::Failed(PairFailure::CodeUsed, None)
        );
        assert_eq!(joiner.handle(&reply), JoinerStep::Verified(INVITER_KEY));
        assert_eq!(joiner.handle(&reply), JoinerStep::Ignore, "repeat of REPLY");
        let confirm = joiner.confirm().unwrap();
        assert_eq!(
            inviter.handle(&confirm).unwrap(),
            InviterStep::Verified(JOINER_KEY)
        );
        let done = inviter.confirm().unwrap();
        assert_eq!(
            inviter.handle(&confirm).unwrap(),
            InviterStep::Answer(done.clone()),
            "repeat of CONFIRM"
        );
        assert_eq!(joiner.handle(&done), JoinerStep::Paired(INVITER_KEY));
    }

    #[test]
    fn foreign_and_stale_datagrams_are_ignored() {
        let mut inviter = Inviter::new(code("1234-5678"), INVITER_KEY);
        let mut joiner = Joiner::new(&code("1234-5678"), JOINER_KEY, EXCHANGE);
        let hello = joiner.datagram().unwrap().to_vec();
        let mut wrong_magic = hello.clone();
        wrong_magic[0] = b'D';
        let mut not_a_point = hello.clone();
        // y = 2 is not the y of any point of the curve.
        not_a_point[wire::HEADER_LEN + 1..].fill(0);
        not_a_point[wire::HEADER_LEN + 1] = 2;
        for junk in [
            &b""[..],
            b"hello",
            &wrong_magic,
            &hello[..hello.len() - 1],
            &[&hello[..], b"x"].concat(),
            &not_a_point,
            &super::super::pair_reach::PUNCH[..],
        ] {
            assert_eq!(
                inviter.handle(junk).unwrap(),
                InviterStep::Ignore,
                "{junk:?}"
            );
        }
        assert!(!inviter.started(), "junk spent the code");
        // A DONE or ABORT of another exchange does not reach the joiner.
        let stale = wire::abort(b"previous", Reason::CodeMismatch);
        assert_eq!(joiner.handle(&stale), JoinerStep::Ignore);
        assert!(matches!(
            inviter.handle(&hello).unwrap(),
            InviterStep::Answer(_)
        ));
    }

    #[test]
    fn a_refusal_reaches_the_other_side() {
        let (mut inviter, mut joiner, step) = pair("1234-5678", "1234-5678");
        assert_eq!(step, JoinerStep::Verified(INVITER_KEY));
        let confirm = joiner.confirm().unwrap();
        assert_eq!(
            inviter.handle(&confirm).unwrap(),
            InviterStep::Verified(JOINER_KEY)
        );
        let abort = inviter.refuse().unwrap();
        assert_eq!(
            joiner.handle(&abort),
            JoinerStep::Failed(PairFailure::Refused, None)
        );
    }

    #[test]
    fn datagrams_have_the_documented_sizes() {
        let (mut inviter, mut joiner, _) = pair("1234-5678", "1234-5678");
        let hello = Joiner::new(&code("1234-5678"), JOINER_KEY, EXCHANGE)
            .datagram()
            .unwrap()
            .to_vec();
        assert_eq!(hello.len(), 53);
        assert_eq!(&hello[..12], b"duet-pair/1\x01");
        assert_eq!(&hello[12..20], &EXCHANGE);
        let confirm = joiner.confirm().unwrap();
        assert_eq!(confirm.len(), 68);
        inviter.handle(&confirm).unwrap();
        assert_eq!(inviter.confirm().unwrap().len(), 36);
        assert_eq!(wire::abort(&EXCHANGE, Reason::Refused).len(), 21);
        let mut fresh = Inviter::new(code("1234-5678"), INVITER_KEY);
        let InviterStep::Answer(reply) = fresh.handle(&hello).unwrap() else {
            panic!("no REPLY");
        };
        assert_eq!(reply.len(), 101);
    }

    #[test]
    fn codes_print_as_two_groups_of_four_and_parse_loosely() {
        let c = code("0012 3456");
        assert_eq!(c.to_string(), "0012-3456");
        assert_eq!(code("00123456"), c);
        assert_eq!(format!("{c:?}"), "Code(****-****)");
        for bad in [
            "",
            "1234-567",
            "1234-56789",
            "abcd-efgh",
            "１２３４-５６７８",
        ] {
            assert_eq!(bad.parse::<Code>(), Err(CodeParseError), "{bad}");
        }
        for _ in 0..20 {
            let text = Code::random().unwrap().to_string();
            assert_eq!(text.len(), 9);
            assert_eq!(text.as_bytes()[4], b'-');
            assert_eq!(text.parse::<Code>().unwrap().to_string(), text);
        }
        assert_eq!(digits_of::<8>(7), *b"00000007");
        assert_eq!(digits_of::<8>(99_999_999), *b"99999999");
        assert_eq!(digits_of::<3>(1042), *b"042");
    }

    #[test]
    fn a_nameplate_goes_in_front_and_is_no_secret() {
        let c = code("042-1234-5678");
        assert_eq!(c.nameplate().as_deref(), Some("042"));
        assert_eq!(c.digits(), b"12345678");
        assert_eq!(c.to_string(), "042-1234-5678");
        assert_eq!(code("04212345678"), c);
        assert_eq!(code("042 1234 5678"), c);
        assert_eq!(format!("{c:?}"), "Code(042-****-****)");
        // The password is the 8 digits alone: an old code of the same digits matches.
        assert_eq!(code("1234-5678").digits(), c.digits());
        assert_eq!(code("1234-5678").nameplate(), None);
        for bad in [
            "042-1234-567",
            "0421-1234-5678",
            "42-1234-567x",
            "042-1234-56789",
        ] {
            assert_eq!(bad.parse::<Code>(), Err(CodeParseError), "{bad}");
        }
        let mut nameplates = std::collections::HashSet::new();
        for _ in 0..20 {
            let c = Code::random_with_nameplate().unwrap();
            let text = c.to_string();
            assert_eq!(text.len(), 13);
            assert_eq!((text.as_bytes()[3], text.as_bytes()[8]), (b'-', b'-'));
            assert_eq!(text.parse::<Code>().unwrap(), c);
            nameplates.insert(c.nameplate().unwrap());
        }
        assert!(nameplates.len() > 1, "the nameplate is not random");
    }

    #[test]
    fn a_code_with_a_nameplate_pairs_like_one_without() {
        let (_, _, step) = pair("042-1234-5678", "1234-5678");
        assert_eq!(step, JoinerStep::Verified(INVITER_KEY));
        let (_, _, step) = pair("042-1234-5678", "042-1234-5679");
        assert!(matches!(
            step,
            JoinerStep::Failed(PairFailure::CodeMismatch, _)
        ));
    }

    #[test]
    fn direction_keys_differ() {
        let keys = DirectionKeys::derive(&[1; 32]).unwrap();
        assert_ne!(*keys.joiner_to_inviter, *keys.inviter_to_joiner);
        assert!(DirectionKeys::derive(&[1; 31]).is_none());
    }
}
