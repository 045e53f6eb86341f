//! Where on the DHT a paired peer's candidates live, and how they are sealed: pure
//! functions, no I/O, no clock (the caller passes the unix time or the period).
//!
//! Each running duet publishes, per paired peer, one BEP 44 mutable item. Everything about
//! it derives from the pair's X25519 shared secret `s` (both sides compute it from their
//! static secret and the other's static public key), the direction and the period:
//!
//! ```text
//! period   = unix seconds / 3600
//! kdf(k, label, parts) = BLAKE2s-256 keyed with k over
//!                        label ‖ 0x00 ‖ (len_u16_be ‖ part)*
//! dir      = from public key ‖ to public key     (the publisher's key first)
//! seed     = kdf(s, "duet-reach/1 signing seed", [from, to, period_be8])  Ed25519 seed
//! salt     = kdf(s, "duet-reach/1 salt",         [...])[..16]            BEP 44 salt
//! key      = kdf(s, "duet-reach/1 record key",   [...])                  XChaCha20-Poly1305
//! ```
//!
//! The item's value is `0x01 ‖ nonce(24) ‖ XChaCha20-Poly1305(key, nonce, aad = 0x01,
//! plaintext)`, where the plaintext is always [`PLAIN_LEN`] bytes (so the value's length
//! says nothing about the number of candidates):
//!
//! ```text
//! 0   1  version = 1
//! 1   8  timestamp, unix seconds, big-endian
//! 9   1  count n ≤ 8
//! 10  20·8 entries (the first n used, the rest zero):
//!          kind (1: lan, 2: stun, 3: mapped, 4: relay) ‖ family (4 or 6)
//!          ‖ address (16: IPv4 in the first 4 bytes, then zeros) ‖ port (2, big-endian)
//! ```
//!
//! An observer of the DHT sees a public key, a salt, a sequence number and 211 random-looking
//! bytes. Without `s` it can neither read the candidates nor link the item to another
//! period's, to the other direction's, or to a person: the key and salt are outputs of a
//! keyed PRF that change every hour.
//!
//! Pairing by code ([`invite_secrets`]) is different: the joiner knows only the code, so
//! the inviter's record is derived from the code's public *nameplate* alone (never its
//! secret digits, which SPAKE2 in `pair.rs` must keep safe from offline guessing). Anyone
//! who knows or guesses the nameplate can find and open that record, and anyone can
//! overwrite it; it only says where the inviter listens, and the SPAKE2 exchange that
//! follows is what proves who is there.
//!
//! Contracts: derivations never fail and never panic; [`RecordSecrets::open`] takes any
//! bytes from the network and returns an error for anything that is not a record sealed
//! under its key.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use blake2::digest::{Digest, Mac};
use blake2::{Blake2s256, Blake2sMac256};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use mainline::SigningKey;
use zeroize::Zeroizing;

use super::{Candidate, CandidateKind};

/// Seconds in one rendezvous period: the record's key and salt change this often.
pub const PERIOD_SECS: u64 = 3600;
/// How far into a period a lookup also tries the previous one (the publisher's clock may be
/// behind, or it has not republished yet).
pub const PERIOD_OVERLAP_SECS: u64 = 600;
/// The most candidates a record holds.
pub const MAX_CANDIDATES: usize = 8;
/// The BEP 44 salt's length.
pub const SALT_LEN: usize = 16;
/// XChaCha20-Poly1305's nonce.
pub const NONCE_LEN: usize = 24;
/// Poly1305's tag.
pub const TAG_LEN: usize = 16;
/// The record format's version, also the sealed value's first byte.
pub const VERSION: u8 = 1;
/// One encoded candidate.
const ENTRY_LEN: usize = 20;
/// The plaintext: version, timestamp, count, entries.
pub const PLAIN_LEN: usize = 10 + ENTRY_LEN * MAX_CANDIDATES;
/// A sealed record: version, nonce, ciphertext, tag. Far below BEP 44's 1000 bytes.
pub const SEALED_LEN: usize = 1 + NONCE_LEN + PLAIN_LEN + TAG_LEN;

const LABEL_SEED: &str = "duet-reach/1 signing seed";
const LABEL_SALT: &str = "duet-reach/1 salt";
const LABEL_KEY: &str = "duet-reach/1 record key";
const LABEL_INVITE: &str = "duet-reach/1 invite nameplate";

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const TIMESTAMP: Range<usize> = 1..9;
    pub const COUNT: usize = 9;
    pub const ENTRIES: usize = 10;
    // Within an entry.
    pub const KIND: usize = 0;
    pub const FAMILY: usize = 1;
    pub const ADDR: Range<usize> = 2..18;
    pub const PORT: Range<usize> = 18..20;
}

/// The period (hour number since the epoch) of a unix time.
pub fn period(unix_secs: u64) -> u64 {
    unix_secs / PERIOD_SECS
}

/// The periods a lookup at `unix_secs` should try, most likely first: the current one,
/// and in the first [`PERIOD_OVERLAP_SECS`] of a period also the previous one.
pub fn lookup_periods(unix_secs: u64) -> Vec<u64> {
    let current = period(unix_secs);
    let mut periods = vec![current];
    if unix_secs % PERIOD_SECS < PERIOD_OVERLAP_SECS && current > 0 {
        periods.push(current - 1);
    }
    periods
}

/// Why a record could not be sealed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// More than [`MAX_CANDIDATES`] candidates.
    TooManyCandidates,
    /// The value's length or version is not a sealed record's.
    NotARecord,
    /// The value does not open under this key: another pair's, another period's, or
    /// tampered with.
    Tampered,
    /// It opened, but its contents are not a valid record (a bug or a newer format).
    Malformed,
    /// The shared secret is all zeros (a low-order public key): refuse to derive from it.
    WeakSecret,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::TooManyCandidates => "more than 8 candidates",
            RecordError::NotARecord => "not a sealed record",
            RecordError::Tampered => "does not open under this key",
            RecordError::Malformed => "opened, but its contents are malformed",
            RecordError::WeakSecret => "the shared secret is all zeros",
        })
    }
}

impl std::error::Error for RecordError {}

/// What a record says: where its publisher can be reached, and when it said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Unix seconds when the record was made (also its BEP 44 sequence number).
    pub timestamp: u64,
    /// At most [`MAX_CANDIDATES`] candidates, best first.
    pub candidates: Vec<Candidate>,
}

impl Record {
    /// The plaintext encoding (see the module docs).
    pub fn encode(&self) -> Result<[u8; PLAIN_LEN], RecordError> {
        if self.candidates.len() > MAX_CANDIDATES {
            return Err(RecordError::TooManyCandidates);
        }
        let mut out = [0u8; PLAIN_LEN];
        out[field::VERSION] = VERSION;
        out[field::TIMESTAMP].copy_from_slice(&self.timestamp.to_be_bytes());
        // At most 8, checked above.
        out[field::COUNT] = self.candidates.len() as u8;
        for (entry, candidate) in out[field::ENTRIES..]
            .chunks_exact_mut(ENTRY_LEN)
            .zip(&self.candidates)
        {
            entry[field::KIND] = candidate.kind as u8;
            match candidate.addr.ip() {
                IpAddr::V4(ip) => {
                    entry[field::FAMILY] = 4;
                    entry[field::ADDR][..4].copy_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    entry[field::FAMILY] = 6;
                    entry[field::ADDR].copy_from_slice(&ip.octets());
                }
            }
            entry[field::PORT].copy_from_slice(&candidate.addr.port().to_be_bytes());
        }
        Ok(out)
    }

    /// Decode a plaintext. Never panics: every index is within the fixed-size array.
    pub fn decode(plain: &[u8; PLAIN_LEN]) -> Result<Record, RecordError> {
        if plain[field::VERSION] != VERSION {
            return Err(RecordError::Malformed);
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&plain[field::TIMESTAMP]);
        let count = usize::from(plain[field::COUNT]);
        if count > MAX_CANDIDATES {
            return Err(RecordError::Malformed);
        }
        let candidates = plain[field::ENTRIES..]
            .chunks_exact(ENTRY_LEN)
            .take(count)
            .map(|entry| {
                let kind =
                    CandidateKind::from_tag(entry[field::KIND]).ok_or(RecordError::Malformed)?;
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&entry[field::ADDR]);
                let ip = match entry[field::FAMILY] {
                    4 => {
                        let [a, b, c, d, ..] = addr;
                        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                    }
                    6 => IpAddr::V6(Ipv6Addr::from(addr)),
                    _ => return Err(RecordError::Malformed),
                };
                let port =
                    u16::from_be_bytes([entry[field::PORT.start], entry[field::PORT.start + 1]]);
                Ok(Candidate {
                    addr: SocketAddr::new(ip, port),
                    kind,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Record {
            timestamp: u64::from_be_bytes(timestamp),
            candidates,
        })
    }
}

/// The pair's shared secret and both public keys: what both sides of a pair can compute,
/// and nobody else.
pub struct PairSecret {
    shared: Zeroizing<[u8; 32]>,
    own: [u8; 32],
    peer: [u8; 32],
}

impl fmt::Debug for PairSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairSecret(****)")
    }
}

impl PairSecret {
    /// From X25519(own static secret, peer static public) and both static public keys.
    pub fn new(
        shared: [u8; 32],
        own_public: [u8; 32],
        peer_public: [u8; 32],
    ) -> Result<PairSecret, RecordError> {
        let shared = Zeroizing::new(shared);
        if shared.iter().all(|&b| b == 0) {
            return Err(RecordError::WeakSecret);
        }
        Ok(PairSecret {
            shared,
            own: own_public,
            peer: peer_public,
        })
    }

    /// The record we publish for the peer in `period`.
    pub fn outgoing(&self, period: u64) -> RecordSecrets {
        RecordSecrets::derive(&self.shared, &self.own, &self.peer, period)
    }

    /// The record the peer publishes for us in `period`.
    pub fn incoming(&self, period: u64) -> RecordSecrets {
        RecordSecrets::derive(&self.shared, &self.peer, &self.own, period)
    }
}

/// Everything about one record: its Ed25519 signing seed, its BEP 44 salt, and the key
/// that seals its value.
pub struct RecordSecrets {
    seed: Zeroizing<[u8; 32]>,
    salt: [u8; SALT_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for RecordSecrets {
    /// Shows where the record lives, not its secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSecrets")
            .field("public_key", &hex(&self.public_key()))
            .field("salt", &hex(&self.salt))
            .finish_non_exhaustive()
    }
}

impl RecordSecrets {
    fn derive(shared: &[u8; 32], from: &[u8; 32], to: &[u8; 32], period: u64) -> RecordSecrets {
        let period = period.to_be_bytes();
        let parts: [&[u8]; 3] = [from, to, &period];
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&kdf(shared, LABEL_SALT, &parts)[..SALT_LEN]);
        RecordSecrets {
            seed: Zeroizing::new(kdf(shared, LABEL_SEED, &parts)),
            salt,
            key: Zeroizing::new(kdf(shared, LABEL_KEY, &parts)),
        }
    }

    /// The Ed25519 key that signs the BEP 44 item.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }

    /// The item's public key: with the salt, where a lookup finds it.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    /// The item's BEP 44 salt.
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Seal `record` with `nonce`, which must never repeat under this key: take it from the
    /// system's random generator ([`random_nonce`]).
    pub fn seal(&self, record: &Record, nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>, RecordError> {
        let plain = Zeroizing::new(record.encode()?);
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_slice(),
                    aad: &[VERSION],
                },
            )
            // Encryption fails only for lengths near 2^38 bytes; ours is fixed and small.
            .map_err(|_| RecordError::Malformed)?;
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Open a value found on the DHT.
    pub fn open(&self, value: &[u8]) -> Result<Record, RecordError> {
        if value.len() != SEALED_LEN || value.first() != Some(&VERSION) {
            return Err(RecordError::NotARecord);
        }
        let (nonce, sealed) = value[1..].split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &[VERSION],
                    },
                )
                .map_err(|_| RecordError::Tampered)?,
        );
        let plain: &[u8; PLAIN_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::Malformed)?;
        Record::decode(plain)
    }
}

/// The record an inviter publishes while `duet pair invite` waits, found by the joiner from
/// the pairing code's public nameplate. See the module docs for what this does not hide.
pub fn invite_secrets(nameplate: &str, period: u64) -> RecordSecrets {
    // The nameplate is public, so a hash of it stands where a shared secret would.
    let mut hash = Blake2s256::new();
    hash.update(LABEL_INVITE.as_bytes());
    hash.update([0]);
    hash.update(nameplate.as_bytes());
    let key: [u8; 32] = hash.finalize().into();
    // Inviter and joiner have no public keys yet: one direction, both keys empty.
    RecordSecrets::derive(&key, &[0; 32], &[0; 32], period)
}

/// A fresh nonce from the system's random generator.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], super::ReachError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| super::ReachError::Random)?;
    Ok(nonce)
}

/// `kdf(k, label, parts)` of the module docs.
fn kdf(key: &[u8; 32], label: &str, parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2s key.
    let mut mac = <Blake2sMac256 as Mac>::new(key.into());
    mac.update(label.as_bytes());
    mac.update(&[0]);
    for part in parts {
        // Parts are public keys and a period: far below 65536 bytes.
        mac.update(&(part.len() as u16).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: [u8; 32] = [0x11; 32];
    const ALICE: [u8; 32] = [0xaa; 32];
    const BOB: [u8; 32] = [0xbb; 32];
    const PERIOD: u64 = 493_000;

    fn alice() -> PairSecret {
        PairSecret::new(SHARED, ALICE, BOB).unwrap()
    }

    fn bob() -> PairSecret {
        PairSecret::new(SHARED, BOB, ALICE).unwrap()
    }

    fn sample() -> Record {
        Record {
            timestamp: 1_774_800_000,
            candidates: vec![
                Candidate {
                    addr: "192.168.1.20:7789".parse().unwrap(),
                    kind: CandidateKind::Lan,
                },
                Candidate {
                    addr: "203.0.113.11:7789".parse().unwrap(),
                    kind: CandidateKind::Stun,
                },
                Candidate {
                    addr: "[2001:db8::1]:40000".parse().unwrap(),
                    kind: CandidateKind::Mapped,
                },
                Candidate {
                    addr: "198.51.100.7:49160".parse().unwrap(),
                    kind: CandidateKind::Relay,
                },
            ],
        }
    }

    /// Fixed inputs, fixed outputs: a change here changes where every duet looks, so it
    /// must come with a new version label. The seed, salt, key and public key were checked
    /// against Python's `hashlib.blake2s` and `cryptography`'s Ed25519.
    #[test]
    fn test_vectors() {
        let out = alice().outgoing(PERIOD);
        assert_eq!(hex(&out.seed[..]), VECTOR_SEED);
        assert_eq!(hex(out.salt()), VECTOR_SALT);
        assert_eq!(hex(&out.key[..]), VECTOR_KEY);
        assert_eq!(hex(&out.public_key()), VECTOR_PUBLIC);
        let sealed = out.seal(&sample(), [0x42; NONCE_LEN]).unwrap();
        assert_eq!(hex(&sealed), VECTOR_SEALED);

        let invite = invite_secrets("17", PERIOD);
        assert_eq!(hex(&invite.public_key()), VECTOR_INVITE_PUBLIC);
        assert_eq!(hex(invite.salt()), VECTOR_INVITE_SALT);
    }

    const VECTOR_SEED: &str = "b1db40167a8a37533059aac83bbcb1348a72626890e24f82c581de4a82787652";
    const VECTOR_SALT: &str = "7c9585266bc29a3687bf5218f7868809";
    const VECTOR_KEY: &str = "5aeb04a2819fd374bcbcfbc7d65a533e9f54900e06d11f6dd06eaf87cb08da5e";
    const VECTOR_PUBLIC: &str = "46a22c11d905b49d9a36720770f7f904f9bf23e2b7ecd3281255927d040a6f6d";
    const VECTOR_SEALED: &str = concat!(
        "01424242424242424242424242424242424242424242424242fcd5b914977d7b745ae1f6f00e8f2b",
        "bfb7f98e8a44973ba33c863c4e898b417e0e3be51d056a66aa983011c071bce4d718fb37ba42928a",
        "f631b5ede191e82460538a48b441ebf18219bdec6e9b3303a37642e46e7b740ad2d384ec02c5d42c",
        "dbcb6bac3d38a5e1128283d13202019f0c94d1ad245d47993e56bfe602b72899569cad36770b5626",
        "e46e884bd15c7e4af5241c12df53246891f962b3a040532e657dcfcd6fc3d4e2951a408c9c49d3bc",
        "093403180a445b80dd6c0c"
    );
    const VECTOR_INVITE_PUBLIC: &str =
        "24e1bdeb1d161a9f42564ce112f134e5c71108f03994e2ff5522ca2e48997ea7";
    const VECTOR_INVITE_SALT: &str = "870660c92c65adfc2e6a3b8cdb4b151f";

    #[test]
    fn both_sides_agree_on_each_direction() {
        let (a, b) = (alice(), bob());
        let a_out = a.outgoing(PERIOD);
        let b_in = b.incoming(PERIOD);
        assert_eq!(a_out.public_key(), b_in.public_key());
        assert_eq!(a_out.salt(), b_in.salt());
        let sealed = a_out.seal(&sample(), [1; NONCE_LEN]).unwrap();
        assert_eq!(b_in.open(&sealed).unwrap(), sample());
        assert_eq!(sealed.len(), SEALED_LEN);
    }

    #[test]
    fn directions_and_periods_are_unlinkable() {
        let a = alice();
        let items = [
            a.outgoing(PERIOD),
            a.incoming(PERIOD),
            a.outgoing(PERIOD + 1),
            a.incoming(PERIOD + 1),
            PairSecret::new([0x12; 32], ALICE, BOB)
                .unwrap()
                .outgoing(PERIOD),
        ];
        for (i, x) in items.iter().enumerate() {
            for y in &items[i + 1..] {
                assert_ne!(x.public_key(), y.public_key());
                assert_ne!(x.salt(), y.salt());
                assert_ne!(x.key[..], y.key[..]);
            }
        }
        // A record of one direction or period does not open under another's key.
        let sealed = items[0].seal(&sample(), [9; NONCE_LEN]).unwrap();
        for other in &items[1..] {
            assert_eq!(other.open(&sealed), Err(RecordError::Tampered));
        }
    }

    #[test]
    fn tampering_is_detected() {
        let out = alice().outgoing(PERIOD);
        let sealed = out.seal(&sample(), [3; NONCE_LEN]).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = out.open(&bad).unwrap_err();
            if i == 0 {
                assert_eq!(err, RecordError::NotARecord);
            } else {
                assert_eq!(err, RecordError::Tampered, "byte {i}");
            }
        }
        assert_eq!(
            out.open(&sealed[..SEALED_LEN - 1]),
            Err(RecordError::NotARecord)
        );
        assert_eq!(out.open(&[]), Err(RecordError::NotARecord));
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(out.open(&long), Err(RecordError::NotARecord));
    }

    #[test]
    fn value_length_does_not_tell_the_number_of_candidates() {
        let out = alice().outgoing(PERIOD);
        let empty = Record {
            timestamp: 5,
            candidates: vec![],
        };
        let sealed = out.seal(&empty, [4; NONCE_LEN]).unwrap();
        assert_eq!(
            sealed.len(),
            out.seal(&sample(), [4; NONCE_LEN]).unwrap().len()
        );
        assert_eq!(out.open(&sealed).unwrap(), empty);
    }

    #[test]
    fn at_most_eight_candidates() {
        let mut record = sample();
        record.candidates = vec![record.candidates[0]; MAX_CANDIDATES];
        let out = alice().outgoing(PERIOD);
        let sealed = out.seal(&record, [5; NONCE_LEN]).unwrap();
        assert_eq!(out.open(&sealed).unwrap(), record);
        record.candidates.push(record.candidates[0]);
        assert_eq!(
            out.seal(&record, [5; NONCE_LEN]),
            Err(RecordError::TooManyCandidates)
        );
    }

    #[test]
    fn decode_rejects_nonsense() {
        let good = sample().encode().unwrap();
        let mut bad = good;
        bad[field::VERSION] = 2;
        assert_eq!(Record::decode(&bad), Err(RecordError::Malformed));
        let mut bad = good;
        bad[field::COUNT] = 9;
        assert_eq!(Record::decode(&bad), Err(RecordError::Malformed));
        let mut bad = good;
        bad[field::ENTRIES + field::KIND] = 0;
        assert_eq!(Record::decode(&bad), Err(RecordError::Malformed));
        let mut bad = good;
        bad[field::ENTRIES + field::FAMILY] = 5;
        assert_eq!(Record::decode(&bad), Err(RecordError::Malformed));
        // Every byte value in every position: never a panic.
        for i in 0..PLAIN_LEN {
            for v in [0u8, 1, 4, 6, 8, 9, 0xff] {
                let mut any = good;
                any[i] = v;
                let _ = Record::decode(&any);
            }
        }
    }

    #[test]
    fn weak_secret_is_refused() {
        assert_eq!(
            PairSecret::new([0; 32], ALICE, BOB).unwrap_err(),
            RecordError::WeakSecret
        );
    }

    #[test]
    fn periods() {
        assert_eq!(period(0), 0);
        assert_eq!(period(3599), 0);
        assert_eq!(period(3600), 1);
        assert_eq!(lookup_periods(7200 + 30), vec![2, 1]);
        assert_eq!(lookup_periods(7200 + PERIOD_OVERLAP_SECS), vec![2]);
        assert_eq!(lookup_periods(30), vec![0]);
    }

    #[test]
    fn invite_records_differ_by_nameplate_and_period() {
        let a = invite_secrets("17", PERIOD);
        assert_eq!(a.public_key(), invite_secrets("17", PERIOD).public_key());
        assert_ne!(a.public_key(), invite_secrets("18", PERIOD).public_key());
        assert_ne!(
            a.public_key(),
            invite_secrets("17", PERIOD + 1).public_key()
        );
        let sealed = a.seal(&sample(), [6; NONCE_LEN]).unwrap();
        assert_eq!(
            invite_secrets("17", PERIOD).open(&sealed).unwrap(),
            sample()
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?} {:?}", alice(), alice().outgoing(PERIOD));
        assert!(!text.contains(&hex(&alice().outgoing(PERIOD).key[..])));
        assert!(text.contains(&hex(&alice().outgoing(PERIOD).public_key())));
    }
}
