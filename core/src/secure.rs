//! Private by default: the reliable [`Session`] behind a Noise IK handshake and an AEAD.
//!
//! [`Secure`] is what duet runs between paired peers. Every inner frame of the session is
//! sealed in a transport message ([`crate::wire::sealed`]) with ChaCha20-Poly1305 under keys
//! from a `Noise_IK_25519_ChaChaPoly_BLAKE2s` handshake between the two static X25519 keys;
//! the transport header is the associated data, the nonce is a per-direction counter carried
//! in the header, and a sliding anti-replay window (RFC 6479 style) is updated only after a
//! message authenticates. Keys are replaced by a new handshake after
//! [`SecureConfig::rekey_after`] or [`SecureConfig::rekey_after_messages`], and refused after
//! [`SecureConfig::reject_after`].
//!
//! Silence to strangers: a datagram that does not authenticate — unknown index, bad tag,
//! replayed counter, a handshake from a key that is not paired, a reflection of our own
//! message — is dropped without a reply and counted in [`SecureStats`]. No state is kept per
//! unknown sender: a responder stores keys only after the initiator proved its static key,
//! and switches to them only when the first transport message under them authenticates.
//!
//! The call order is the session's (see [`crate::session`]): feed datagrams, expire timers,
//! drain [`Secure::poll_transmit`], drain [`Secure::poll_event`], wait for
//! [`Secure::poll_timeout`]. Randomness comes from a generator seeded by the caller, who may
//! mix fresh entropy into it later ([`Secure::reseed`]).
//!
//! Handshake roles: whoever needs keys initiates. When both initiate at once, the side with
//! the smaller static public key stays initiator and the other answers.
//!
//! Discovery: with [`Secure::discover`], a peer whose address is unknown is looked for with
//! PROBEs to the broadcast addresses the caller gives; a FOUND with a valid tag sets the
//! endpoint and the handshake starts as usual. Tags are keyed with a key derived from the
//! static-static X25519 agreement of the two paired keys, so only the pair can make or check
//! them; a probe that matches no allowed key is dropped without a reply and counted, like any
//! other datagram that does not authenticate. Probes carry the sender's coarse wall-clock
//! minute inside the tag ([`Secure::set_unix_minutes`]); without a clock it is 0.
//! Discovery is the `discovery` feature (on by default); without it probes are dropped
//! unanswered and nothing is probed.
//!
//! Handshakes under attack (docs/SECURITY.md, "Handshake floods and replays"): every
//! initiation and response ends in a `mac1`, a keyed BLAKE2s over the message keyed with the
//! receiver's static public key, checked before any X25519 work, so a datagram from someone
//! who does not know our public key costs one hash. An initiation carries the initiator's
//! timestamp ([`Secure::set_unix_time`]) in its encrypted payload; the responder refuses one
//! whose timestamp is not greater than the greatest it accepted from that key, so a recorded
//! initiation cannot be replayed. With the `rate-limit` feature, initiations that pass `mac1`
//! are processed at a bounded rate, per source address and overall. Secrets (static and
//! ephemeral keys, transport keys, the generator) are wiped when dropped or replaced, and
//! [`Secure::reseed`] mixes fresh entropy into the generator.

use core::net::SocketAddr;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use clatter::bytearray::ByteArray;
use clatter::cipherstate::CipherState;
use clatter::crypto::cipher::ChaChaPoly;
use clatter::crypto::dh::X25519;
use clatter::crypto::hash::Blake2s;
use clatter::handshakepattern::noise_ik;
use clatter::traits::{Dh, Hash};
use clatter::{Handshaker, KeyPair, NqHandshakeCore};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::MAX_DATAGRAM;
use crate::driver::{Protocol, Transmit};
use crate::session::{
    Config, Event, INBOX_BYTES, MessageId, OUTBOX_BYTES, SendError, Session, Stats,
};
use crate::time::{Duration, Instant};
use crate::wire::sealed::{self, Sealed};

/// A static or ephemeral X25519 public key.
pub type PublicKey = [u8; 32];

/// How many peer keys one [`Secure`] accepts handshakes from.
pub const MAX_PEERS: usize = 16;

/// Mixed into every handshake, so duet's handshakes can never be mistaken for another
/// protocol's that uses the same Noise pattern.
const PROLOGUE: &[u8] = b"duet/2 Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Counters at or above this are refused: Noise reserves the last nonce, and a key used this
/// long must have been replaced.
const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);

/// How many answered initiations a responder remembers to refuse their replays.
const SEEN_INITIATIONS: usize = 16;

/// How many broadcast addresses [`Secure::discover`] keeps.
pub const MAX_BROADCASTS: usize = 8;

/// Labels of the discovery key and of the two tags: a tag of one kind is never valid as the
/// other, and no discovery value can collide with a Noise hash.
const DISCOVERY_KEY_LABEL: &[u8] = b"duet/2 discovery key";
const PROBE_LABEL: &[u8] = b"duet/2 discovery probe";
const FOUND_LABEL: &[u8] = b"duet/2 discovery found";

/// Label in front of every message `mac1` covers, so that no other keyed hash in duet can
/// be mistaken for one.
const MAC1_LABEL: &[u8] = b"duet/2 mac1";

/// Label of the generator's new key in [`Secure::reseed`].
const RESEED_LABEL: &[u8] = b"duet/2 reseed";

/// Probe nonces answered, to answer each at most once.
const ANSWERED_PROBES: usize = 16;

/// Our own recent probe nonces: a FOUND answers one of them, and our own broadcast coming
/// back is recognised.
const SENT_PROBES: usize = 4;

/// How far apart (in minutes) two paired clocks may be and still find each other.
const CLOCK_SKEW_MINUTES: u32 = 2;

/// Microseconds in a minute of the wall clock.
const MICROS_PER_MINUTE: u64 = 60_000_000;

/// Transmissions one `poll_transmit` may drop while no keys exist, before giving up for now.
const DROP_BUDGET: usize = 32;

/// The session's generator: the ChaCha20 keystream with the seed as key, a zero nonce and
/// the block counter from 0, read in order (the same stream as `rand_chacha`'s
/// `ChaCha20Rng`, docs/PROTOCOL.md section 16).
///
/// Built on the `chacha20` crate that ChaCha20-Poly1305 links anyway, rather than on
/// `rand_chacha`, whose own ChaCha20 core costs a board 2.5 KiB of flash.
struct Generator(ChaCha20);

/// The keystream's state is the seed: `chacha20`'s `zeroize` feature wipes it on drop.
impl ZeroizeOnDrop for Generator {}

impl Generator {
    fn new(seed: [u8; 32]) -> Self {
        Generator(ChaCha20::new(&seed.into(), &[0; 12].into()))
    }

    fn fill_bytes(&mut self, out: &mut [u8]) {
        out.fill(0);
        // The keystream ends after 256 GiB; a session draws a few dozen bytes per handshake
        // or probe, so the end is never reached.
        let _ = self.0.try_apply_keystream(out);
    }

    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }
}

type Handshake = NqHandshakeCore<X25519, ChaChaPoly, Blake2s, NoRng>;
type Cipher = CipherState<ChaChaPoly>;

/// clatter asks for an RNG type it can create from nothing. duet hands it every ephemeral key
/// itself (from the session's seeded generator), so this one is never used; should that ever
/// change, it fails instead of producing predictable keys.
#[derive(Default, Clone)]
struct NoRng;

impl RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, _dest: &mut [u8]) -> Result<(), rand_core::Error> {
        Err(rand_core::Error::from(core::num::NonZeroU32::MIN))
    }
}

impl CryptoRng for NoRng {}

impl DiscoveryKey {
    /// HMAC-BLAKE2s keyed with DH(our secret, the peer's public key): the two paired peers
    /// compute the same key, nobody else can. An unusable key (a low-order point) gets a
    /// random-looking key no one can match.
    fn new(keys: &StaticKeys, peer: &PublicKey) -> Self {
        let secret = <X25519 as Dh>::PrivateKey::from_slice(&keys.secret);
        let shared = X25519::dh(&secret, peer).map(|o| o.as_slice().try_into().ok());
        let mut key = [0u8; 32];
        match shared {
            Ok(Some(dh)) => {
                let mut dh: [u8; 32] = dh;
                key.copy_from_slice(Blake2s::hmac(&dh, DISCOVERY_KEY_LABEL).as_slice());
                dh.zeroize();
            }
            _ => key.copy_from_slice(Blake2s::hmac(&keys.secret, peer).as_slice()),
        }
        DiscoveryKey { peer: *peer, key }
    }
}

/// A discovery tag: HMAC-BLAKE2s(key, label | sender's static key | nonce | minute),
/// truncated. The sender's key makes a probe reflected back to its sender invalid there.
fn discovery_tag(
    key: &[u8; 32],
    label: &[u8],
    sender: &PublicKey,
    nonce: &[u8; sealed::NONCE_LEN],
    minute: u32,
) -> [u8; sealed::DISCOVERY_TAG_LEN] {
    let mac = Blake2s::hmac_many(key, &[label, sender, nonce, &minute.to_be_bytes()]);
    let mut tag = [0u8; sealed::DISCOVERY_TAG_LEN];
    tag.copy_from_slice(&mac.as_slice()[..sealed::DISCOVERY_TAG_LEN]);
    tag
}

/// A handshake message's `mac1`: HMAC-BLAKE2s keyed with the *receiver's* static public key
/// over the label and every byte of the message before it, truncated. Anyone who knows the
/// receiver's public key can compute it; nobody else can.
fn mac1(receiver: &PublicKey, covered: &[u8]) -> [u8; sealed::MAC_LEN] {
    let mut mac = [0u8; sealed::MAC_LEN];
    let full = Blake2s::hmac_many(receiver, &[MAC1_LABEL, covered]);
    mac.copy_from_slice(&full.as_slice()[..sealed::MAC_LEN]);
    mac
}

/// Write `mac1` for `receiver` into the last bytes of `message`.
fn seal_mac1(receiver: &PublicKey, message: &mut [u8]) {
    let mut packet = Sealed::new_unchecked(message);
    let mac = mac1(receiver, packet.mac_covered());
    packet.set_mac1(&mac);
}

/// Compare without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A static X25519 key pair: who this duet is.
#[derive(Clone)]
pub struct StaticKeys {
    secret: [u8; 32],
    public: PublicKey,
}

impl StaticKeys {
    /// The key pair of a 32-byte X25519 secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = X25519::pubkey(&<X25519 as Dh>::PrivateKey::from_slice(&secret));
        StaticKeys { secret, public }
    }

    /// The public key, which peers pair with.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    fn pair(&self) -> KeyPair<PublicKey, <X25519 as Dh>::PrivateKey> {
        KeyPair {
            public: self.public,
            secret: <X25519 as Dh>::PrivateKey::from_slice(&self.secret),
        }
    }
}

impl Zeroize for StaticKeys {
    /// Wipe the secret (the public key is no secret).
    fn zeroize(&mut self) {
        self.secret.zeroize();
    }
}

impl Drop for StaticKeys {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for StaticKeys {}

impl core::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the secret.
        f.debug_struct("StaticKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Timing of the secure layer, plus the session's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecureConfig {
    /// The reliable session's timing.
    pub session: Config,
    /// First wait before a handshake initiation is sent again; doubles up to the session's
    /// `max_rto`.
    pub handshake_retry: Duration,
    /// Start a new handshake when the keys are this old.
    pub rekey_after: Duration,
    /// Refuse keys this old (a new handshake must have replaced them).
    pub reject_after: Duration,
    /// Start a new handshake after sending this many messages under one key.
    pub rekey_after_messages: u64,
}

impl Default for SecureConfig {
    fn default() -> Self {
        // WireGuard's values: rekey after 2 minutes, refuse after 3.
        SecureConfig {
            session: Config::default(),
            handshake_retry: Duration::from_secs(1),
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_after_messages: 1 << 48,
        }
    }
}

/// What the secure layer refused, and what it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SecureStats {
    /// Datagrams that did not authenticate: garbage, tampered, unknown index, wrong key,
    /// reflections of our own messages, oversized.
    pub unauthenticated: u32,
    /// Transport messages whose counter was seen before (replays, network duplicates).
    pub replayed: u32,
    /// Valid handshakes from a static key that is not paired.
    pub unpaired: u32,
    /// Handshakes from another paired peer while the current one is talking.
    pub busy: u32,
    /// Handshakes completed.
    pub handshakes: u32,
    /// Discovery probes that matched no paired key (or came too late): dropped unanswered.
    pub probes_refused: u32,
    /// Discovery probes from a paired peer that were answered with FOUND.
    pub probes_answered: u32,
    /// Handshake messages whose `mac1` was wrong: sent by someone who does not know our
    /// public key, dropped before any key agreement (also counted in `unauthenticated`).
    pub rejected_mac: u32,
    /// Initiations whose timestamp was not greater than the greatest accepted from that key:
    /// recorded initiations replayed (also counted in `replayed`).
    pub rejected_replay: u32,
    /// Initiations dropped unread because handshakes came faster than the rate limit allows
    /// (the `rate-limit` feature).
    pub rate_limited: u32,
}

/// Sliding anti-replay window over 64-bit counters (RFC 6479's idea, one bit per counter).
#[derive(Clone, Debug)]
struct ReplayWindow {
    /// The highest counter accepted, if any.
    top: Option<u64>,
    bits: [u64; Self::WORDS],
}

impl ReplayWindow {
    const WORDS: usize = 32;
    const SIZE: u64 = (Self::WORDS * 64) as u64;

    fn new() -> Self {
        ReplayWindow {
            top: None,
            bits: [0; Self::WORDS],
        }
    }

    fn bit(n: u64) -> (usize, u64) {
        (((n / 64) % Self::WORDS as u64) as usize, 1 << (n % 64))
    }

    /// Whether `n` may be accepted: not seen, and not older than the window.
    fn fresh(&self, n: u64) -> bool {
        match self.top {
            None => true,
            Some(top) if n > top => true,
            Some(top) if top - n >= Self::SIZE => false,
            Some(_) => {
                let (w, b) = Self::bit(n);
                self.bits[w] & b == 0
            }
        }
    }

    /// Record `n` (call only after it authenticated).
    fn mark(&mut self, n: u64) {
        let top = match self.top {
            None => {
                self.bits = [0; Self::WORDS];
                n
            }
            Some(top) if n > top => {
                if n - top >= Self::SIZE {
                    self.bits = [0; Self::WORDS];
                } else {
                    // Clear the bits of the counters the window slides over.
                    for m in top + 1..n {
                        let (w, b) = Self::bit(m);
                        self.bits[w] &= !b;
                    }
                }
                n
            }
            Some(top) => top,
        };
        self.top = Some(top);
        let (w, b) = Self::bit(n);
        self.bits[w] |= b;
    }
}

/// One generation of transport keys. Its two ciphers wipe their keys when dropped (clatter's
/// `CipherState` is `ZeroizeOnDrop`), so replaced or expired keys leave nothing behind.
struct Keys {
    /// Our index: the peer puts it in the messages it sends us.
    local: u32,
    /// The peer's index: we put it in the messages we send.
    remote: u32,
    send: Cipher,
    recv: Cipher,
    replay: ReplayWindow,
    sent: u64,
    born: Instant,
    peer: PublicKey,
    /// We started the handshake that made these keys.
    initiator: bool,
}

impl ZeroizeOnDrop for Keys where Cipher: ZeroizeOnDrop {}

/// A handshake we started.
struct Initiating {
    local: u32,
    peer: PublicKey,
    message: [u8; sealed::INITIATION_LEN],
    handshake: Handshake,
    next_send: Instant,
    sends: u32,
}

/// The last initiation we answered, to answer its retransmissions identically.
struct Answered {
    /// Where the initiation came from: a retransmission comes from there too.
    from: SocketAddr,
    initiation: [u8; sealed::INITIATION_LEN],
    response: [u8; sealed::RESPONSE_LEN],
}

/// Looking for the peer on the LAN (see [`Secure::discover`]).
struct Discovery {
    targets: heapless::Vec<SocketAddr, MAX_BROADCASTS>,
    /// The next round of probes starts then.
    next_round: Instant,
    rounds: u32,
    /// Targets of the current round still to send to.
    pending: usize,
    /// The current round's probe (the same to every target).
    probe: [u8; sealed::PROBE_LEN],
    /// Nonces of the latest rounds.
    sent: heapless::Deque<[u8; sealed::NONCE_LEN], SENT_PROBES>,
    /// The endpoint came from a FOUND (so silence means looking again).
    found: bool,
}

/// A discovery key: derived from the static-static agreement of one paired key.
#[derive(Clone)]
struct DiscoveryKey {
    peer: PublicKey,
    key: [u8; 32],
}

impl Drop for DiscoveryKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ZeroizeOnDrop for DiscoveryKey {}

/// How many source addresses the handshake rate limit follows at once; a new one replaces
/// the one followed longest.
#[cfg(feature = "rate-limit")]
const LIMITED_SOURCES: usize = 8;

/// Initiations one source address may have processed in a burst, and how often it earns
/// another: a peer's retransmissions (1, 2, 4 ... s apart) never come close.
#[cfg(feature = "rate-limit")]
const SOURCE_BURST: u32 = 4;
#[cfg(feature = "rate-limit")]
const SOURCE_EVERY: Duration = Duration::from_millis(250);

/// Initiations processed in a burst from all sources together, and how often one more is
/// allowed: 50 a second is under 2% of a host core (five X25519 operations each).
#[cfg(feature = "rate-limit")]
const OVERALL_BURST: u32 = 16;
#[cfg(feature = "rate-limit")]
const OVERALL_EVERY: Duration = Duration::from_millis(20);

/// A token bucket: up to `burst` tokens, one more for every `every` that passes.
#[cfg(feature = "rate-limit")]
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// Tokens are counted up to this instant.
    at: Instant,
}

#[cfg(feature = "rate-limit")]
impl Bucket {
    fn full(now: Instant, burst: u32) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Take a token if there is one.
    fn take(&mut self, now: Instant, burst: u32, every: Duration) -> bool {
        let every = every.as_millis().max(1);
        let earned = now.saturating_duration_since(self.at).as_millis() / every;
        if earned > 0 {
            let earned32 = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned32).min(burst);
            self.at = if self.tokens == burst {
                now
            } else {
                self.at + Duration::from_millis(earned.saturating_mul(every))
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The rate limit on handshake work: a bucket per recent source address, so one flooding
/// address cannot use up the peer's share, and one overall, which bounds the CPU spent
/// whatever the source addresses claim (UDP sources can be forged).
///
/// WireGuard's cookie replies, which make a sender prove its address under load before
/// its initiation costs anything, are left out: duet talks between two parties, `mac1`
/// already drops everyone who lacks our public key at the cost of one hash, and the
/// remaining attacker (one who knows our key or replays recorded initiations) is bounded by
/// this limit. Cookies would only add a round trip to tell a forged source address from a
/// real one.
#[cfg(feature = "rate-limit")]
struct HandshakeLimit {
    overall: Bucket,
    sources: heapless::Vec<(SocketAddr, Bucket), LIMITED_SOURCES>,
}

#[cfg(feature = "rate-limit")]
impl HandshakeLimit {
    fn new(now: Instant) -> Self {
        HandshakeLimit {
            overall: Bucket::full(now, OVERALL_BURST),
            sources: heapless::Vec::new(),
        }
    }

    /// Whether an initiation from `from` may be processed now (spending its tokens).
    fn allow(&mut self, now: Instant, from: SocketAddr) -> bool {
        let at = match self.sources.iter().position(|(a, _)| *a == from) {
            Some(at) => at,
            None => {
                if self.sources.is_full() {
                    self.sources.remove(0);
                }
                // Room was just made, so this cannot fail.
                let _ = self.sources.push((from, Bucket::full(now, SOURCE_BURST)));
                self.sources.len() - 1
            }
        };
        let Some((_, source)) = self.sources.get_mut(at) else {
            return false;
        };
        source.take(now, SOURCE_BURST, SOURCE_EVERY)
            && self.overall.take(now, OVERALL_BURST, OVERALL_EVERY)
    }
}

/// Without the `rate-limit` feature every initiation that passes `mac1` is processed.
#[cfg(not(feature = "rate-limit"))]
struct HandshakeLimit;

#[cfg(not(feature = "rate-limit"))]
impl HandshakeLimit {
    fn new(_now: Instant) -> Self {
        HandshakeLimit
    }

    fn allow(&mut self, _now: Instant, _from: SocketAddr) -> bool {
        true
    }
}

/// The reliable chat session, sealed between two paired static keys.
///
/// `OUT` and `IN` size the session inside (see [`Session`]); [`Secure::new_sized`] chooses
/// them.
pub struct Secure<const OUT: usize = OUTBOX_BYTES, const IN: usize = INBOX_BYTES> {
    config: SecureConfig,
    keys: StaticKeys,
    /// Static keys allowed to talk to us.
    allowed: heapless::Vec<PublicKey, MAX_PEERS>,
    /// Who we talk to, once known.
    peer_key: Option<PublicKey>,
    /// Where the peer is: the source of its latest authenticated message.
    endpoint: Option<SocketAddr>,
    rng: Generator,
    initiating: Option<Initiating>,
    answered: Option<Answered>,
    /// The ephemeral keys of the last initiations answered: a replay of one of them is
    /// dropped instead of replacing the keys of a handshake in progress.
    seen_initiations: heapless::Deque<PublicKey, SEEN_INITIATIONS>,
    /// Send `answered.response` here.
    respond_to: Option<SocketAddr>,
    current: Option<Keys>,
    previous: Option<Keys>,
    /// Keys of a handshake we answered, used once the initiator sends under them.
    next: Option<Keys>,
    session: Session<OUT, IN>,
    stats: SecureStats,
    scratch: [u8; MAX_DATAGRAM],
    /// One discovery key per allowed peer key.
    discovery_keys: heapless::Vec<DiscoveryKey, MAX_PEERS>,
    discovery: Option<Discovery>,
    /// Nonces of the probes answered.
    answered_probes: heapless::Deque<[u8; sealed::NONCE_LEN], ANSWERED_PROBES>,
    /// A FOUND to send.
    found_to: Option<(SocketAddr, [u8; sealed::FOUND_LEN])>,
    /// When the peer last authenticated itself (a FOUND or a transport message).
    last_heard: Instant,
    /// The wall clock's microseconds since the Unix epoch at an instant, when the caller
    /// knows it.
    wall: Option<(Instant, u64)>,
    /// The timestamp of our latest initiation: the next one is greater.
    sent_timestamp: u64,
    /// The greatest initiation timestamp accepted from each key (the most recent keys).
    timestamps: heapless::Vec<(PublicKey, u64), MAX_PEERS>,
    limit: HandshakeLimit,
}

impl Secure {
    /// A secure session for `keys`, accepting handshakes from `allowed` peers (at most
    /// [`MAX_PEERS`]; more are ignored). With `peer`, it talks to that key at that address at
    /// once; without, it waits for an allowed peer to start. `seed` must be 32 fresh random
    /// bytes: every ephemeral key and index comes from a generator seeded with it (and
    /// with what [`Secure::reseed`] adds later).
    pub fn new(
        now: Instant,
        config: SecureConfig,
        keys: StaticKeys,
        allowed: &[PublicKey],
        peer: Option<(PublicKey, SocketAddr)>,
        seed: [u8; 32],
    ) -> Self {
        Self::new_sized(now, config, keys, allowed, peer, seed)
    }
}

impl<const OUT: usize, const IN: usize> Secure<OUT, IN> {
    /// [`Secure::new`] with a session of the sizes this type names.
    pub fn new_sized(
        now: Instant,
        config: SecureConfig,
        keys: StaticKeys,
        allowed: &[PublicKey],
        peer: Option<(PublicKey, SocketAddr)>,
        seed: [u8; 32],
    ) -> Self {
        let mut rng = Generator::new(seed);
        let epoch = rng.next_u32();
        let mut list = heapless::Vec::new();
        let mut discovery_keys = heapless::Vec::new();
        for key in allowed.iter().chain(peer.as_ref().map(|(k, _)| k)) {
            if !list.contains(key) && list.push(*key).is_ok() && cfg!(feature = "discovery") {
                let _ = discovery_keys.push(DiscoveryKey::new(&keys, key));
            }
        }
        Secure {
            config,
            keys,
            allowed: list,
            peer_key: peer.map(|(k, _)| k),
            endpoint: peer.map(|(_, a)| a),
            rng,
            initiating: None,
            answered: None,
            seen_initiations: heapless::Deque::new(),
            respond_to: None,
            current: None,
            previous: None,
            next: None,
            session: Session::new_sized(now, config.session, epoch, peer.map(|(_, a)| a)),
            stats: SecureStats::default(),
            scratch: [0; MAX_DATAGRAM],
            discovery_keys,
            discovery: None,
            answered_probes: heapless::Deque::new(),
            found_to: None,
            last_heard: now,
            wall: None,
            sent_timestamp: 0,
            timestamps: heapless::Vec::new(),
            limit: HandshakeLimit::new(now),
        }
    }

    /// The reliable session inside.
    pub fn session(&self) -> &Session<OUT, IN> {
        &self.session
    }

    /// Queue a message (see [`Session::send_text`]).
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError> {
        self.session.send_text(now, text)
    }

    /// Queue a message with a chosen id (see [`Session::send_message`]).
    pub fn send_message(
        &mut self,
        now: Instant,
        id: u64,
        text: &str,
    ) -> Result<MessageId, SendError> {
        self.session.send_message(now, id, text)
    }

    /// Queue a binary message with a chosen id (see [`Session::send_bytes`]).
    pub fn send_bytes(
        &mut self,
        now: Instant,
        id: u64,
        bytes: &[u8],
    ) -> Result<MessageId, SendError> {
        self.session.send_bytes(now, id, bytes)
    }

    /// The next thing to show (see [`Session::poll_event`]).
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.session.poll_event()
    }

    /// Acknowledge every message handed out so far, once the application stored them (see
    /// [`Session::confirm_received`] and [`Config::confirm_receipt`]).
    pub fn confirm_received(&mut self) {
        self.session.confirm_received();
    }

    /// Messages handed out and not yet confirmed (see [`Session::unconfirmed`]).
    pub fn unconfirmed(&self) -> usize {
        self.session.unconfirmed()
    }

    /// Say goodbye (see [`Session::close`]).
    pub fn close(&mut self) {
        self.session.close();
    }

    /// Our own static public key, which peers pair with.
    pub fn public_key(&self) -> PublicKey {
        self.keys.public
    }

    /// Accept handshakes from `key` too (at most [`MAX_PEERS`] keys; when full, the oldest
    /// added is forgotten), without choosing it as the peer.
    pub fn allow(&mut self, key: PublicKey) {
        if !self.allowed.contains(&key) {
            if self.allowed.is_full() {
                self.allowed.remove(0);
                if !self.discovery_keys.is_empty() {
                    self.discovery_keys.remove(0);
                }
            }
            let _ = self.allowed.push(key);
            if cfg!(feature = "discovery") {
                let _ = self
                    .discovery_keys
                    .push(DiscoveryKey::new(&self.keys, &key));
            }
        }
    }

    /// The wall clock reads `unix_minutes` (minutes since 1970-01-01 UTC) at `now`; later
    /// minutes follow from `now`. Probes carry the minute inside their tag, so a recorded
    /// probe is refused a few minutes later. Without a call the minute is 0 (a board with no
    /// clock): such a duet finds, and is found by, only duets without a clock.
    /// [`Secure::set_unix_time`] sets the same clock to the microsecond.
    pub fn set_unix_minutes(&mut self, now: Instant, unix_minutes: u32) {
        self.set_unix_time(now, u64::from(unix_minutes.max(1)) * MICROS_PER_MINUTE);
    }

    /// The wall clock reads `unix_micros` (microseconds since 1970-01-01 UTC) at `now`;
    /// later times follow from `now`. It sets the minute of discovery probes (see
    /// [`Secure::set_unix_minutes`]) and the timestamp of handshake initiations.
    ///
    /// The rule for initiation timestamps: they must grow strictly, per static key, across
    /// restarts of this duet, because the peer refuses an initiation whose timestamp is not
    /// greater than the greatest it accepted from this key (that is what makes a recorded
    /// initiation useless). A clock that is set back makes the peer refuse our handshakes
    /// until it passes its old reading. A duet without a wall clock passes any value that
    /// only grows across its restarts, for example a boot count in the high bits; without a
    /// call, timestamps count from 0 at [`Secure::new`], which only a peer that restarted
    /// since will accept.
    pub fn set_unix_time(&mut self, now: Instant, unix_micros: u64) {
        self.wall = Some((now, unix_micros));
    }

    /// The wall clock in microseconds at `now`, or the time since the start without one.
    fn unix_micros(&self, now: Instant) -> u64 {
        let (at, micros) = self.wall.unwrap_or((Instant::ZERO, 0));
        let passed = now.saturating_duration_since(at).as_millis();
        micros.saturating_add(passed.saturating_mul(1000))
    }

    fn minute(&self, now: Instant) -> u32 {
        match self.wall {
            Some(_) => u32::try_from(self.unix_micros(now) / MICROS_PER_MINUTE).unwrap_or(u32::MAX),
            None => 0,
        }
    }

    /// The timestamp of a new initiation: the clock, and always above the last one.
    fn next_timestamp(&mut self, now: Instant) -> u64 {
        let t = self
            .unix_micros(now)
            .max(self.sent_timestamp.saturating_add(1));
        self.sent_timestamp = t;
        t
    }

    /// Mix 32 bytes of fresh entropy into the generator of ephemeral keys, indices and
    /// nonces: its new key is HMAC-BLAKE2s(its next 32 bytes, label | `seed`). Past output
    /// stays unpredictable from the new state and the other way round, and a seed that is
    /// not random does no harm. Call it now and then with bytes from the system's generator.
    pub fn reseed(&mut self, seed: [u8; 32]) {
        let mut seed = seed;
        let mut current = [0u8; 32];
        self.rng.fill_bytes(&mut current);
        let mut mixed = [0u8; 32];
        mixed.copy_from_slice(Blake2s::hmac_many(&current, &[RESEED_LABEL, &seed]).as_slice());
        self.rng = Generator::new(mixed);
        current.zeroize();
        mixed.zeroize();
        seed.zeroize();
    }

    /// Look for `key`'s duet on the LAN: send PROBEs to `targets` (broadcast addresses on
    /// duet's port; at most [`MAX_BROADCASTS`] are kept), again with backoff until a FOUND
    /// from that key arrives, whose source becomes the peer's address. This starts at once
    /// also while an address is known: the caller has new places to look. Afterwards, when
    /// the peer has been silent for the session's idle timeout, it is looked for again (it
    /// may have moved). `key` becomes the peer and is allowed.
    pub fn discover(&mut self, now: Instant, key: PublicKey, targets: &[SocketAddr]) {
        self.allow(key);
        if self.peer_key != Some(key) {
            self.current = None;
            self.previous = None;
            self.next = None;
            self.initiating = None;
            self.endpoint = None;
        }
        self.peer_key = Some(key);
        if !cfg!(feature = "discovery") {
            return;
        }
        let mut list = heapless::Vec::new();
        for t in targets.iter().take(MAX_BROADCASTS) {
            let _ = list.push(*t);
        }
        self.discovery = Some(Discovery {
            targets: list,
            next_round: now,
            rounds: 0,
            pending: 0,
            probe: [0; sealed::PROBE_LEN],
            sent: heapless::Deque::new(),
            found: false,
        });
    }

    /// Whether the peer is being looked for: no address known, no FOUND since
    /// [`Secure::discover`] was called (the caller has new places to look: the peer may have
    /// moved while its old address still is the endpoint), or the address has been silent
    /// for the idle timeout.
    fn looking(&self, now: Instant) -> bool {
        let Some(d) = &self.discovery else {
            return false;
        };
        self.peer_key.is_some()
            && (self.endpoint.is_none()
                || !d.found
                || (!self.session.is_peer_up()
                    && now >= self.last_heard + self.config.session.idle_timeout))
    }

    /// The next PROBE of the current round, starting a round when one is due.
    fn next_probe(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        if !cfg!(feature = "discovery") {
            return None;
        }
        if !self.looking(now) {
            return None;
        }
        let (retry, max) = (self.config.handshake_retry, self.config.session.max_rto);
        let minute = self.minute(now);
        let sender = self.keys.public;
        let key = self.discovery_key(self.peer_key?)?;
        let mut nonce = [0u8; sealed::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let d = self.discovery.as_mut()?;
        if d.pending == 0 {
            if now < d.next_round || d.targets.is_empty() {
                return None;
            }
            let tag = discovery_tag(&key, PROBE_LABEL, &sender, &nonce, minute);
            let mut p = Sealed::new_unchecked(&mut d.probe[..]);
            p.set_discovery_header(sealed::kind::PROBE);
            p.set_nonce(&nonce);
            p.set_discovery_tag(&tag);
            remember(&mut d.sent, nonce);
            // Rounds 1, 2, 4, ... times `handshake_retry` apart, capped at `max_rto`.
            d.next_round = now + retry.saturating_mul(1 << d.rounds.min(16)).min(max);
            d.rounds = d.rounds.saturating_add(1);
            d.pending = d.targets.len();
        }
        let dst = *d.targets.get(d.targets.len() - d.pending)?;
        d.pending -= 1;
        buf[..sealed::PROBE_LEN].copy_from_slice(&d.probe);
        Some(Transmit {
            dst,
            len: sealed::PROBE_LEN,
        })
    }

    fn discovery_key(&self, peer: PublicKey) -> Option<[u8; 32]> {
        self.discovery_keys
            .iter()
            .find(|k| k.peer == peer)
            .map(|k| k.key)
    }

    fn on_probe(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if !cfg!(feature = "discovery") {
            self.stats.probes_refused = self.stats.probes_refused.saturating_add(1);
            return;
        }
        let Ok(packet) = Sealed::new_checked(datagram) else {
            return self.reject();
        };
        let mut nonce = [0u8; sealed::NONCE_LEN];
        nonce.copy_from_slice(packet.nonce());
        if self
            .discovery
            .as_ref()
            .is_some_and(|d| d.sent.iter().any(|n| *n == nonce))
        {
            // Our own broadcast, back from the network.
            return;
        }
        if self.answered_probes.iter().any(|n| *n == nonce) {
            self.stats.replayed = self.stats.replayed.saturating_add(1);
            return;
        }
        // Minutes the prober's clock may show: ours, give or take the skew; 0 without one.
        let (first, last) = match self.wall {
            Some(_) => {
                let m = self.minute(now);
                (
                    m.saturating_sub(CLOCK_SKEW_MINUTES),
                    m.saturating_add(CLOCK_SKEW_MINUTES),
                )
            }
            None => (0, 0),
        };
        let matched = self.discovery_keys.iter().find(|k| {
            (first..=last).any(|minute| {
                let tag = discovery_tag(&k.key, PROBE_LABEL, &k.peer, &nonce, minute);
                same(&tag, packet.discovery_tag())
            })
        });
        let Some(k) = matched else {
            self.stats.probes_refused = self.stats.probes_refused.saturating_add(1);
            return;
        };
        let tag = discovery_tag(&k.key, FOUND_LABEL, &self.keys.public, &nonce, 0);
        let mut found = [0u8; sealed::FOUND_LEN];
        {
            let mut f = Sealed::new_unchecked(&mut found[..]);
            f.set_discovery_header(sealed::kind::FOUND);
            f.set_nonce(&nonce);
            f.set_discovery_tag(&tag);
        }
        remember(&mut self.answered_probes, nonce);
        self.stats.probes_answered = self.stats.probes_answered.saturating_add(1);
        self.found_to = Some((from, found));
    }

    fn on_found(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if !cfg!(feature = "discovery") {
            return;
        }
        let Ok(packet) = Sealed::new_checked(datagram) else {
            return self.reject();
        };
        let (Some(peer), Some(d)) = (self.peer_key, &self.discovery) else {
            return self.reject();
        };
        let Some(at) = d.sent.iter().position(|n| n[..] == *packet.nonce()) else {
            return self.reject();
        };
        let Some(key) = self.discovery_key(peer) else {
            return self.reject();
        };
        let mut nonce = [0u8; sealed::NONCE_LEN];
        nonce.copy_from_slice(packet.nonce());
        let tag = discovery_tag(&key, FOUND_LABEL, &peer, &nonce, 0);
        if !same(&tag, packet.discovery_tag()) {
            return self.reject();
        }
        if let Some(d) = self.discovery.as_mut() {
            // Answered: this nonce is spent, and the current round ends.
            let mut kept = heapless::Deque::new();
            for (i, n) in d.sent.iter().enumerate() {
                if i != at {
                    let _ = kept.push_back(*n);
                }
            }
            d.sent = kept;
            d.pending = 0;
            d.rounds = 0;
            d.found = true;
        }
        self.last_heard = now;
        if self.endpoint != Some(from) {
            debug!("found the peer by discovery");
            self.set_peer(now, peer, from);
        }
    }

    /// The static key of the peer we talk to, once known.
    pub fn peer_key(&self) -> Option<PublicKey> {
        self.peer_key
    }

    /// Where the peer is, once known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Whether transport keys are in place.
    pub fn is_established(&self) -> bool {
        self.current.is_some()
    }

    /// What the secure layer refused.
    pub fn stats(&self) -> SecureStats {
        self.stats
    }

    /// The session's counters.
    pub fn session_stats(&self) -> Stats {
        self.session.stats()
    }

    /// Talk to another paired peer from now on (it is added to the allowed keys).
    pub fn set_peer(&mut self, now: Instant, key: PublicKey, addr: SocketAddr) {
        self.allow(key);
        // Another person, or the same one somewhere else (likely a new run there, which has
        // none of our keys): start over with a fresh handshake.
        if self.peer_key != Some(key) || self.endpoint != Some(addr) {
            self.current = None;
            self.previous = None;
            self.next = None;
            self.initiating = None;
        }
        self.peer_key = Some(key);
        self.endpoint = Some(addr);
        self.session.set_peer(now, addr);
    }

    fn fresh_index(&mut self) -> u32 {
        // Zero is never an index, so a zeroed buffer never matches.
        self.rng.next_u32().max(1)
    }

    fn ephemeral(&mut self) -> KeyPair<PublicKey, <X25519 as Dh>::PrivateKey> {
        let mut secret = [0u8; 32];
        self.rng.fill_bytes(&mut secret);
        // The pair's secret wipes itself (clatter's `SensitiveByteArray`), `StaticKeys` too.
        let pair = StaticKeys::from_secret(secret).pair();
        secret.zeroize();
        pair
    }

    fn keys_usable(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| {
            now < k.born + self.config.reject_after && k.sent < REJECT_AFTER_MESSAGES
        })
    }

    fn wants_handshake(&self, now: Instant) -> bool {
        if self.initiating.is_some() || self.peer_key.is_none() || self.endpoint.is_none() {
            return false;
        }
        // We just answered the peer's handshake: give it time to confirm the keys rather
        // than start a second handshake that would cross the first.
        if self
            .next
            .as_ref()
            .is_some_and(|k| now < k.born + self.config.session.max_rto)
        {
            return false;
        }
        match &self.current {
            None => true,
            Some(k) => {
                now >= self.rekey_at(k)
                    || k.sent >= self.config.rekey_after_messages
                    || now >= self.silent_rekey_at(k)
            }
        }
    }

    /// When keys are old enough to replace. The side that started their handshake replaces
    /// them first; the other waits half the remaining time, so both do not start at once.
    fn rekey_at(&self, keys: &Keys) -> Instant {
        let c = self.config;
        if keys.initiator {
            keys.born + c.rekey_after
        } else {
            let grace =
                Duration::from_millis(c.reject_after.saturating_sub(c.rekey_after).as_millis() / 2);
            keys.born + c.rekey_after + grace
        }
    }

    /// When keys that have not brought an answer for the session's idle timeout are given up
    /// on: the peer may have restarted and lost them, so a new handshake is the way back.
    fn silent_rekey_at(&self, keys: &Keys) -> Instant {
        if self.session.is_peer_up() {
            Instant::from_millis(u64::MAX)
        } else {
            keys.born + self.config.session.idle_timeout
        }
    }

    fn start_handshake(&mut self, now: Instant) {
        let Some(peer) = self.peer_key else { return };
        let e = self.ephemeral();
        let Ok(mut handshake) = Handshake::new(
            noise_ik(),
            PROLOGUE,
            true,
            Some(self.keys.pair()),
            Some(e),
            Some(peer),
            None,
        ) else {
            return;
        };
        let local = self.fresh_index();
        let timestamp = self.next_timestamp(now).to_be_bytes();
        let mut message = [0u8; sealed::INITIATION_LEN];
        Sealed::new_unchecked(&mut message[..]).set_header(sealed::kind::INITIATION, local);
        let noise = &mut message[8..8 + sealed::INITIATION_NOISE_LEN];
        match handshake.write_message(&timestamp, noise) {
            Ok(n) if n == sealed::INITIATION_NOISE_LEN => {}
            _ => return,
        }
        seal_mac1(&peer, &mut message);
        debug!("starting handshake {}", local);
        self.initiating = Some(Initiating {
            local,
            peer,
            message,
            handshake,
            next_send: now,
            sends: 0,
        });
    }

    /// Whether a handshake message's `mac1` is ours; counted when not. Costs one hash.
    fn mac1_valid(&mut self, packet: &Sealed<&[u8]>) -> bool {
        if same(
            &mac1(&self.keys.public, packet.mac_covered()),
            packet.mac1(),
        ) {
            return true;
        }
        self.stats.rejected_mac = self.stats.rejected_mac.saturating_add(1);
        self.reject();
        false
    }

    /// Whether `timestamp` is newer than every initiation accepted from `peer`.
    fn timestamp_fresh(&self, peer: &PublicKey, timestamp: u64) -> bool {
        self.timestamps
            .iter()
            .find(|(k, _)| k == peer)
            .is_none_or(|(_, greatest)| timestamp > *greatest)
    }

    /// Remember `timestamp` as the greatest accepted from `peer`.
    fn accept_timestamp(&mut self, peer: PublicKey, timestamp: u64) {
        if let Some(entry) = self.timestamps.iter_mut().find(|(k, _)| *k == peer) {
            entry.1 = timestamp;
            return;
        }
        if self.timestamps.is_full() {
            self.timestamps.remove(0);
        }
        // Room was just made, so this cannot fail.
        let _ = self.timestamps.push((peer, timestamp));
    }

    fn on_initiation(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Sealed::new_checked(datagram) else {
            return self.reject();
        };
        // Before anything else, and before any key agreement: one hash.
        if !self.mac1_valid(&packet) {
            return;
        }
        if let Some(a) = &self.answered
            && a.initiation[..] == *datagram
        {
            if a.from == from {
                // A retransmission: answer exactly as before, create nothing new.
                self.respond_to = Some(from);
            } else {
                // The same initiation from somewhere else is a replay: no answer.
                self.stats.replayed = self.stats.replayed.saturating_add(1);
            }
            return;
        }
        if self.initiation_seen(packet.noise()) {
            // An old initiation replayed: answering would replace the keys of a handshake in
            // progress with keys nobody will use.
            self.stats.replayed = self.stats.replayed.saturating_add(1);
            return;
        }
        // What follows costs five X25519 operations.
        if !self.limit.allow(now, from) {
            self.stats.rate_limited = self.stats.rate_limited.saturating_add(1);
            return;
        }
        let e = self.ephemeral();
        let Ok(mut handshake) = Handshake::new(
            noise_ik(),
            PROLOGUE,
            false,
            Some(self.keys.pair()),
            Some(e),
            None,
            None,
        ) else {
            return self.reject();
        };
        let mut timestamp = [0u8; sealed::TIMESTAMP_LEN];
        match handshake.read_message(packet.noise(), &mut timestamp) {
            Ok(sealed::TIMESTAMP_LEN) => {}
            _ => return self.reject(),
        }
        let timestamp = u64::from_be_bytes(timestamp);
        let Some(peer) = handshake.get_remote_static() else {
            return self.reject();
        };
        if !self.allowed.contains(&peer) {
            self.stats.unpaired = self.stats.unpaired.saturating_add(1);
            return;
        }
        if !self.timestamp_fresh(&peer, timestamp) {
            // A recorded initiation replayed (or the peer's clock went back).
            self.stats.rejected_replay = self.stats.rejected_replay.saturating_add(1);
            self.stats.replayed = self.stats.replayed.saturating_add(1);
            return;
        }
        if self.peer_key.is_some_and(|k| k != peer) && self.session.is_peer_up() {
            self.stats.busy = self.stats.busy.saturating_add(1);
            return;
        }
        self.accept_timestamp(peer, timestamp);
        if let Some(mine) = &self.initiating {
            if mine.peer == peer && self.keys.public < peer && self.endpoint == Some(from) {
                // Both started at once: the smaller key stays initiator. (From another
                // address the peer is evidently not where our initiation goes: answer it.)
                // Remembered, so a replay of it later is refused like any other.
                self.remember_initiation(packet.noise());
                return;
            }
            self.initiating = None;
        }
        let local = self.fresh_index();
        let mut response = [0u8; sealed::RESPONSE_LEN];
        {
            let mut out = Sealed::new_unchecked(&mut response[..]);
            out.set_header(sealed::kind::RESPONSE, local);
            out.set_response_receiver(packet.index());
        }
        match handshake.write_message(&[], &mut response[12..12 + sealed::RESPONSE_NOISE_LEN]) {
            Ok(n) if n == sealed::RESPONSE_NOISE_LEN => {}
            _ => return self.reject(),
        }
        seal_mac1(&peer, &mut response);
        let Ok(transport) = handshake.finalize() else {
            return self.reject();
        };
        let ciphers = transport.take();
        self.next = Some(Keys {
            local,
            remote: packet.index(),
            send: ciphers.responder_to_initiator,
            recv: ciphers.initiator_to_responder,
            replay: ReplayWindow::new(),
            sent: 0,
            born: now,
            peer,
            initiator: false,
        });
        self.remember_initiation(packet.noise());
        let mut initiation = [0u8; sealed::INITIATION_LEN];
        initiation.copy_from_slice(datagram);
        self.answered = Some(Answered {
            from,
            initiation,
            response,
        });
        self.respond_to = Some(from);
    }

    fn initiation_seen(&self, noise: &[u8]) -> bool {
        noise
            .get(..32)
            .is_some_and(|e| self.seen_initiations.iter().any(|s| s[..] == *e))
    }

    fn remember_initiation(&mut self, noise: &[u8]) {
        let mut e = [0u8; 32];
        if let Some(bytes) = noise.get(..32) {
            e.copy_from_slice(bytes);
            remember(&mut self.seen_initiations, e);
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Sealed::new_checked(datagram) else {
            return self.reject();
        };
        if !self.mac1_valid(&packet) {
            return;
        }
        let Some(mine) = self
            .initiating
            .as_ref()
            .filter(|i| i.local == packet.response_receiver())
        else {
            return self.reject();
        };
        // Work on a copy: a forged response must not spoil the handshake in progress.
        let mut handshake = mine.handshake.clone();
        let (local, peer) = (mine.local, mine.peer);
        let mut none = [0u8; 0];
        if handshake.read_message(packet.noise(), &mut none).is_err() {
            return self.reject();
        }
        let Ok(transport) = handshake.finalize() else {
            return self.reject();
        };
        let ciphers = transport.take();
        let keys = Keys {
            local,
            remote: packet.index(),
            send: ciphers.initiator_to_responder,
            recv: ciphers.responder_to_initiator,
            replay: ReplayWindow::new(),
            sent: 0,
            born: now,
            peer,
            initiator: true,
        };
        self.initiating = None;
        self.install(now, from, keys);
    }

    /// Make `keys` current: the handshake completed (initiator) or was confirmed (responder).
    fn install(&mut self, now: Instant, from: SocketAddr, keys: Keys) {
        let peer = keys.peer;
        let old = self.current.replace(keys);
        // Keys of another person must not stay usable after a takeover: their messages
        // would be shown under the new peer's name.
        self.previous = old.filter(|k| k.peer == peer);
        self.stats.handshakes = self.stats.handshakes.saturating_add(1);
        if self.peer_key != Some(peer) {
            self.peer_key = Some(peer);
            self.session.set_peer(now, from);
        }
        self.endpoint = Some(from);
        self.session.roam(from);
        // Whatever the session tried to send without keys went nowhere: send it now, and
        // let the peer confirm the new keys at once.
        self.session.nudge(now);
    }

    fn on_transport(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Sealed::new_checked(datagram) else {
            return self.reject();
        };
        let index = packet.index();
        let counter = packet.counter();
        let which = [&self.current, &self.previous, &self.next]
            .iter()
            .position(|k| k.as_ref().is_some_and(|k| k.local == index));
        let keys = match which {
            Some(0) => self.current.as_mut(),
            Some(1) => self.previous.as_mut(),
            Some(2) => self.next.as_mut(),
            _ => None,
        };
        let Some(keys) = keys else {
            return self.reject();
        };
        if counter >= REJECT_AFTER_MESSAGES || now >= keys.born + self.config.reject_after {
            return self.reject();
        }
        if !keys.replay.fresh(counter) {
            self.stats.replayed = self.stats.replayed.saturating_add(1);
            return;
        }
        let ciphertext = packet.ciphertext();
        let len = ciphertext.len() - sealed::TAG_LEN;
        keys.recv.set_nonce(counter);
        if keys
            .recv
            .decrypt_with_ad(
                packet.transport_header(),
                ciphertext,
                &mut self.scratch[..len],
            )
            .is_err()
        {
            return self.reject();
        }
        keys.replay.mark(counter);
        self.last_heard = now;
        if which == Some(2) {
            // The initiator used the keys we answered with: they are confirmed.
            if let Some(keys) = self.next.take() {
                // The initiator has the answer: a copy of its initiation from now on is a
                // replay, not a retransmission.
                self.answered = None;
                self.install(now, from, keys);
            }
        } else if self.endpoint != Some(from) {
            // Roaming: the latest authenticated message says where the peer is.
            self.endpoint = Some(from);
            self.session.roam(from);
        }
        let (session, scratch) = (&mut self.session, &self.scratch);
        session.handle_datagram(now, from, &scratch[..len]);
    }

    fn reject(&mut self) {
        self.stats.unauthenticated = self.stats.unauthenticated.saturating_add(1);
    }

    /// Feed one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match Sealed::new_checked(datagram).map(|p| p.kind()) {
            Ok(sealed::kind::INITIATION) => self.on_initiation(now, from, datagram),
            Ok(sealed::kind::RESPONSE) => self.on_response(now, from, datagram),
            Ok(sealed::kind::TRANSPORT) => self.on_transport(now, from, datagram),
            Ok(sealed::kind::PROBE) => self.on_probe(now, from, datagram),
            Ok(sealed::kind::FOUND) => self.on_found(now, from, datagram),
            _ => self.reject(),
        }
    }

    /// Expire what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        let reject = self.config.reject_after;
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|k| now >= k.born + reject) {
                *slot = None;
            }
        }
    }

    /// When there is next work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.session.poll_timeout();
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if self.respond_to.is_some() || self.found_to.is_some() {
            at(Instant::ZERO);
        }
        if let Some(d) = &self.discovery
            && self.peer_key.is_some()
        {
            if d.pending > 0 {
                at(Instant::ZERO);
            } else if self.endpoint.is_none() || !d.found {
                at(d.next_round);
            } else if !self.session.is_peer_up() {
                // Silent since the FOUND or the last message: look again then.
                at((self.last_heard + self.config.session.idle_timeout).max(d.next_round));
            }
        }
        if let Some(i) = &self.initiating {
            at(i.next_send);
        } else if self.peer_key.is_some() && self.endpoint.is_some() {
            let due = match &self.current {
                None => Instant::ZERO,
                Some(k) => self.rekey_at(k).min(self.silent_rekey_at(k)),
            };
            // As in `wants_handshake`: not before an answered handshake had its chance.
            let waiting = self
                .next
                .as_ref()
                .map_or(Instant::ZERO, |k| k.born + self.config.session.max_rto);
            at(due.max(waiting));
        }
        next
    }

    /// Write the next datagram to send, if one is due.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_DATAGRAM],
    ) -> Option<Transmit> {
        if let (Some(dst), Some(a)) = (self.respond_to.take(), &self.answered) {
            buf[..sealed::RESPONSE_LEN].copy_from_slice(&a.response);
            return Some(Transmit {
                dst,
                len: sealed::RESPONSE_LEN,
            });
        }
        if let Some((dst, found)) = self.found_to.take() {
            buf[..sealed::FOUND_LEN].copy_from_slice(&found);
            return Some(Transmit {
                dst,
                len: sealed::FOUND_LEN,
            });
        }
        if let Some(t) = self.next_probe(now, buf) {
            return Some(t);
        }
        if self.wants_handshake(now) {
            self.start_handshake(now);
        }
        let retry = self.config.handshake_retry;
        let max = self.config.session.max_rto;
        if let (Some(i), Some(dst)) = (self.initiating.as_mut(), self.endpoint)
            && now >= i.next_send
        {
            buf[..sealed::INITIATION_LEN].copy_from_slice(&i.message);
            // Waits of 1, 2, 4, ... times `handshake_retry`, capped at `max_rto`.
            i.next_send = now + retry.saturating_mul(1 << i.sends.min(16)).min(max);
            i.sends = i.sends.saturating_add(1);
            return Some(Transmit {
                dst,
                len: sealed::INITIATION_LEN,
            });
        }
        let usable = self.keys_usable(now);
        for _ in 0..DROP_BUDGET {
            let inner = self.session.poll_transmit(now, &mut self.scratch)?;
            let dst = self.endpoint.unwrap_or(inner.dst);
            let keys = match self.current.as_mut() {
                Some(keys) if usable => keys,
                // No keys yet: the frame is lost like a datagram on the wire; the session
                // retransmits it once the handshake completes.
                _ => continue,
            };
            let len = sealed::OVERHEAD + inner.len;
            let counter = keys.send.get_nonce();
            {
                let mut out = Sealed::new_unchecked(&mut buf[..sealed::TRANSPORT_HEADER_LEN]);
                out.set_header(sealed::kind::TRANSPORT, keys.remote);
                out.set_counter(counter);
            }
            let (header, body) = buf.split_at_mut(sealed::TRANSPORT_HEADER_LEN);
            let plaintext = &self.scratch[..inner.len];
            if keys
                .send
                .encrypt_with_ad(header, plaintext, &mut body[..inner.len + sealed::TAG_LEN])
                .is_err()
            {
                // Only a used-up nonce fails: keys this old are replaced by a handshake.
                self.current = None;
                return None;
            }
            keys.sent = keys.sent.saturating_add(1);
            return Some(Transmit { dst, len });
        }
        None
    }
}

/// Keep `item` among the last `N` remembered, forgetting the oldest when full.
pub(crate) fn remember<T, const N: usize>(queue: &mut heapless::Deque<T, N>, item: T) {
    if queue.is_full() {
        queue.pop_front();
    }
    // Room was just made, so this cannot fail.
    let _ = queue.push_back(item);
}

impl<const OUT: usize, const IN: usize> Protocol for Secure<OUT, IN> {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        Secure::handle_datagram(self, now, from, datagram)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Secure::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        Secure::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Secure::poll_timeout(self)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec::Vec;

    const ALICE: &str = "10.0.0.1:7789";
    const BOB: &str = "10.0.0.2:7789";
    const MALLORY: &str = "10.0.0.3:7789";
    /// 2023-11-14 22:13:20 UTC, in microseconds.
    const UNIX: u64 = 1_700_000_000_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    /// Alice (key 1), talking to bob (key 2) at [`BOB`], her clock reading `unix`.
    fn alice(seed: u8, unix: u64) -> Secure {
        let bob = StaticKeys::from_secret([2; 32]).public();
        let mut s = Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            StaticKeys::from_secret([1; 32]),
            &[],
            Some((bob, addr(BOB))),
            [seed; 32],
        );
        s.set_unix_time(Instant::ZERO, unix);
        s
    }
    /// Bob (key 2), paired with alice, waiting.
    fn bob() -> Secure {
        let alice = StaticKeys::from_secret([1; 32]).public();
        Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            StaticKeys::from_secret([2; 32]),
            &[alice],
            None,
            [0xb2; 32],
        )
    }
    fn transmit(s: &mut Secure, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        s.poll_transmit(now, &mut buf)
            .map(|t| (t.dst, buf[..t.len].to_vec()))
    }
    fn initiation(s: &mut Secure, now: Instant) -> Vec<u8> {
        let (_, d) = transmit(s, now).expect("an initiation");
        assert_eq!(
            (d.len(), d[3]),
            (sealed::INITIATION_LEN, sealed::kind::INITIATION)
        );
        d
    }
    /// Whether `bob` answers `init` from `from` at `now` with a response.
    fn answers(bob: &mut Secure, now: Instant, from: &str, init: &[u8]) -> bool {
        bob.handle_datagram(now, addr(from), init);
        transmit(bob, now).is_some_and(|(_, d)| d[3] == sealed::kind::RESPONSE)
    }

    #[test]
    fn an_initiation_with_a_wrong_mac1_is_dropped_before_any_key_agreement() {
        let mut b = bob();
        let good = initiation(&mut alice(1, UNIX), Instant::ZERO);
        // Someone who does not know bob's public key: everything else exact, mac1 not.
        let mut forged = good.clone();
        forged[sealed::INITIATION_LEN - 1] ^= 1;
        b.handle_datagram(Instant::ZERO, addr(MALLORY), &forged);
        assert_eq!(transmit(&mut b, Instant::ZERO), None);
        let st = b.stats();
        assert_eq!((st.rejected_mac, st.unauthenticated), (1, 1), "{st:?}");
        // The same Noise message with a mac1 keyed for another receiver (mallory's key).
        let mut other = good.clone();
        seal_mac1(&StaticKeys::from_secret([3; 32]).public(), &mut other);
        b.handle_datagram(Instant::ZERO, addr(MALLORY), &other);
        assert_eq!(b.stats().rejected_mac, 2);
        // A flood of them costs no handshake work: none is counted against the rate limit,
        // and the real initiation is answered after it.
        for _ in 0..200 {
            b.handle_datagram(Instant::ZERO, addr(MALLORY), &forged);
        }
        assert_eq!(b.stats().rate_limited, 0);
        assert!(answers(&mut b, Instant::ZERO, ALICE, &good));
        // A tampered Noise message under a valid mac1 gets as far as the key agreement, and
        // fails there: mac1 is only a filter, not the authentication.
        let mut tampered = initiation(&mut alice(2, UNIX + 1), Instant::ZERO);
        tampered[60] ^= 1;
        seal_mac1(&b.public_key(), &mut tampered);
        let before = b.stats();
        b.handle_datagram(Instant::ZERO, addr(ALICE), &tampered);
        let after = b.stats();
        assert_eq!(after.rejected_mac, before.rejected_mac);
        assert_eq!(after.unauthenticated, before.unauthenticated + 1);
    }

    #[test]
    fn a_response_with_a_wrong_mac1_is_dropped() {
        let (mut a, mut b) = (alice(1, UNIX), bob());
        let init = initiation(&mut a, Instant::ZERO);
        b.handle_datagram(Instant::ZERO, addr(ALICE), &init);
        let (_, resp) = transmit(&mut b, Instant::ZERO).unwrap();
        assert_eq!(resp.len(), sealed::RESPONSE_LEN);
        let mut forged = resp.clone();
        forged[sealed::RESPONSE_LEN - 1] ^= 1;
        a.handle_datagram(Instant::ZERO, addr(BOB), &forged);
        assert_eq!((a.stats().rejected_mac, a.is_established()), (1, false));
        a.handle_datagram(Instant::ZERO, addr(BOB), &resp);
        assert!(a.is_established());
    }

    #[test]
    fn a_recorded_initiation_is_refused_once_a_newer_one_was_accepted() {
        let mut b = bob();
        // Alice's initiation at 12:00 never reached bob; someone recorded it.
        let recorded = initiation(&mut alice(1, UNIX), Instant::ZERO);
        // Alice, restarted a minute later, connects.
        let fresh = initiation(&mut alice(2, UNIX + 60_000_000), Instant::ZERO);
        assert!(answers(&mut b, Instant::ZERO, ALICE, &fresh));
        // The recording, from anywhere, is refused: bob never saw it, but it is older.
        for from in [MALLORY, ALICE] {
            assert!(!answers(&mut b, Instant::ZERO, from, &recorded), "{from}");
        }
        let st = b.stats();
        assert_eq!((st.rejected_replay, st.handshakes), (2, 0), "{st:?}");
        // A timestamp equal to the greatest accepted is refused too: it must grow.
        let same = initiation(&mut alice(3, UNIX + 60_000_000), Instant::ZERO);
        assert!(!answers(&mut b, Instant::ZERO, ALICE, &same));
        assert_eq!(b.stats().rejected_replay, 3);
        // A later one is answered.
        let later = initiation(&mut alice(4, UNIX + 60_000_001), Instant::ZERO);
        assert!(answers(&mut b, Instant::ZERO, ALICE, &later));
    }

    #[test]
    fn a_replayed_initiation_is_refused_even_when_bob_forgot_having_answered_it() {
        // More initiations than bob remembers (SEEN_INITIATIONS) were answered since; the
        // timestamp still refuses the first.
        let mut b = bob();
        let mut t = Instant::ZERO;
        let first = initiation(&mut alice(0, UNIX), t);
        assert!(answers(&mut b, t, ALICE, &first));
        for i in 1..=SEEN_INITIATIONS as u64 + 1 {
            t += Duration::from_secs(1);
            let init = initiation(&mut alice(i as u8, UNIX + i), t);
            assert!(answers(&mut b, t, ALICE, &init), "initiation {i}");
        }
        assert!(!answers(&mut b, t, MALLORY, &first));
        assert_eq!(b.stats().rejected_replay, 1);
    }

    #[test]
    fn initiation_timestamps_grow_within_a_run_and_follow_the_clock() {
        let mut a = alice(1, UNIX);
        let t = Instant::from_millis(1500);
        assert_eq!(a.next_timestamp(t), UNIX + 1_500_000);
        // Twice at the same instant: still strictly growing.
        assert_eq!(a.next_timestamp(t), UNIX + 1_500_001);
        // Without a clock: microseconds since the start, growing too.
        let mut b = bob();
        assert_eq!(b.next_timestamp(Instant::ZERO), 1);
        assert_eq!(b.next_timestamp(Instant::from_millis(2)), 2000);
    }

    #[cfg(feature = "rate-limit")]
    #[test]
    fn a_flood_of_valid_initiations_is_rate_limited_per_source_and_overall() {
        let mut b = bob();
        let t = Instant::ZERO;
        let mut stamp = UNIX;
        let mut next = |seed: u8| {
            stamp += 1;
            initiation(&mut alice(seed, stamp), t)
        };
        // One address: its burst, then nothing until tokens come back.
        let answered = (0..20)
            .filter(|i| answers(&mut b, t, MALLORY, &next(*i)))
            .count();
        assert_eq!(answered, SOURCE_BURST as usize);
        assert_eq!(b.stats().rate_limited, 20 - SOURCE_BURST);
        // Another address still gets through: the flood did not take its share.
        assert!(answers(&mut b, t, ALICE, &next(100)));
        // Later the flooding address gets tokens back.
        let later = t + SOURCE_EVERY;
        let init = {
            stamp += 1;
            initiation(&mut alice(101, stamp), later)
        };
        assert!(answers(&mut b, later, MALLORY, &init));
        // Many addresses together are bounded by the overall bucket.
        let mut b = bob();
        let mut answered = 0;
        for i in 0..64u16 {
            let from = SocketAddr::from(([10, 0, 1, (i % 250) as u8], 1000 + i));
            stamp += 1;
            let init = initiation(&mut alice(i as u8, stamp), t);
            b.handle_datagram(t, from, &init);
            answered += usize::from(transmit(&mut b, t).is_some());
        }
        assert_eq!(answered, OVERALL_BURST as usize);
        assert_eq!(b.stats().rate_limited, 64 - OVERALL_BURST);
    }

    #[test]
    fn reseeding_changes_what_the_generator_draws_and_mixes_rather_than_replaces() {
        let ephemeral_on_wire = |s: &mut Secure| initiation(s, Instant::ZERO)[8..40].to_vec();
        let (mut plain, mut reseeded) = (alice(1, UNIX), alice(1, UNIX));
        reseeded.reseed([0x55; 32]);
        assert_ne!(
            ephemeral_on_wire(&mut plain),
            ephemeral_on_wire(&mut reseeded)
        );
        // Deterministic from the state and the seed ...
        let mut again = alice(1, UNIX);
        again.reseed([0x55; 32]);
        assert_eq!(
            ephemeral_on_wire(&mut again),
            ephemeral_on_wire(&mut alice_reseeded(1, [0x55; 32]))
        );
        // ... and the old state still counts: the same seed into other states differs.
        assert_ne!(
            ephemeral_on_wire(&mut alice_reseeded(1, [0; 32])),
            ephemeral_on_wire(&mut alice_reseeded(2, [0; 32]))
        );
    }

    fn alice_reseeded(seed: u8, fresh: [u8; 32]) -> Secure {
        let mut s = alice(seed, UNIX);
        s.reseed(fresh);
        s
    }

    #[test]
    fn secrets_are_wiped_when_dropped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<StaticKeys>();
        wiped_on_drop::<Generator>();
        wiped_on_drop::<ChaCha20>();
        wiped_on_drop::<Keys>();
        wiped_on_drop::<DiscoveryKey>();
        wiped_on_drop::<Cipher>();
        wiped_on_drop::<KeyPair<PublicKey, <X25519 as Dh>::PrivateKey>>();
        // What a drop does to a static key:
        let mut keys = StaticKeys::from_secret([7; 32]);
        keys.zeroize();
        assert_eq!(keys.secret, [0; 32]);
    }

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::new();
        for n in [5, 3, 4, 100, 6, 2000, 1999] {
            assert!(w.fresh(n), "{n}");
            w.mark(n);
            assert!(!w.fresh(n), "{n} again");
        }
        assert!(!w.fresh(5), "older than the window after sliding to 2000");
        assert!(w.fresh(1990));
        w.mark(u64::MAX - 1);
        assert!(!w.fresh(2000) && w.fresh(u64::MAX));
    }

    #[test]
    fn static_keys_debug_never_shows_the_secret() {
        let keys = StaticKeys::from_secret([7; 32]);
        let shown = format!("{keys:?}");
        assert!(!shown.contains("7, 7, 7, 7"), "{shown}");
    }

    #[test]
    fn the_ephemeral_key_on_the_wire_is_the_one_duet_generated() {
        // clatter must use the ephemeral key we hand it, never its own (NoRng) generator.
        let a = StaticKeys::from_secret([1; 32]);
        let b = StaticKeys::from_secret([2; 32]);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut s = Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            a,
            &[],
            Some((b.public(), addr)),
            [9; 32],
        );
        let mut rng = Generator::new([9; 32]);
        let _epoch = rng.next_u32();
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let expected = StaticKeys::from_secret(secret).public();
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = s.poll_transmit(Instant::ZERO, &mut buf).unwrap();
        assert_eq!(t.len, sealed::INITIATION_LEN);
        assert_eq!(&buf[8..40], &expected);
    }
}

#[cfg(test)]
mod vectors {
    //! docs/PROTOCOL.md, "Sealed test vectors": a whole handshake and the first transport
    //! message from fixed keys and seeds, so another implementation can check itself.
    use super::*;

    fn hex(bytes: &[u8]) -> std::string::String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn exchange() -> (std::vec::Vec<u8>, std::vec::Vec<u8>, std::vec::Vec<u8>) {
        let (a, b) = (
            StaticKeys::from_secret([1; 32]),
            StaticKeys::from_secret([2; 32]),
        );
        let (addr_a, addr_b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:7789".parse().unwrap(),
            "10.0.0.2:7789".parse().unwrap(),
        );
        let t0 = Instant::ZERO;
        let mut ia = Secure::new(
            t0,
            SecureConfig::default(),
            a.clone(),
            &[],
            Some((b.public(), addr_b)),
            [0xa1; 32],
        );
        let mut rb = Secure::new(
            t0,
            SecureConfig::default(),
            b,
            &[a.public()],
            None,
            [0xb2; 32],
        );
        // 2023-11-14 22:13:20 UTC: the initiation's timestamp.
        ia.set_unix_time(t0, UNIX_MICROS);
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = ia.poll_transmit(t0, &mut buf).unwrap();
        let init = buf[..t.len].to_vec();
        rb.handle_datagram(t0, addr_a, &init);
        let t = rb.poll_transmit(t0, &mut buf).unwrap();
        let resp = buf[..t.len].to_vec();
        ia.handle_datagram(t0, addr_b, &resp);
        let t = ia.poll_transmit(t0, &mut buf).unwrap();
        let first = buf[..t.len].to_vec();
        (init, resp, first)
    }

    const INIT: &str = "647502011c3412846c3aa3663085719c799735f91dfc658d2eb1317a50aac0f38b05020bc49c155745100475724d5518ad1318b993f300f0057a1511d2edaa3baf652792354e46521dc370d0b377ab00eaba6ab50293c1a0944c71877f2aec28899ba5270a8aae5d9a0b7d658cd95a66702d4196d5065a975585e70b9a3aa42c";
    const RESP: &str = "64750202362514791c3412840f6f7e51e0845d370f663452a695ce7d8b98a51bb044e607eccf7304be982d527ce34201dc7d8259e0375aba31921091158c6aeb96e24075f4960d5e3e9ed1c2";
    const FIRST: &str = "647502033625147900000000000000000315c1f96cb74a9f2cc866d39823fdfa697ba0ccaa9348254393359ccf361419d63493e59cb5273e1c38ed0f42b1c094";

    /// A's wall clock, in microseconds since the Unix epoch.
    const UNIX_MICROS: u64 = 1_700_000_000_000_000;

    #[test]
    fn handshake_and_first_transport_match_the_published_vectors() {
        let (init, resp, first) = exchange();
        assert_eq!(hex(&init), INIT);
        assert_eq!(hex(&resp), RESP);
        assert_eq!(hex(&first), FIRST);
    }
}

#[cfg(all(test, feature = "discovery"))]
mod discovery {
    //! PROBE and FOUND between paired and unpaired keys, and a LAN simulated in one thread:
    //! a datagram to [`BCAST`] reaches every other duet, any other goes to its address.
    use super::*;
    use crate::session::Event;
    use std::vec::Vec;

    const BCAST: &str = "10.0.0.255:7789";
    const ALICE: &str = "10.0.0.1:7789";
    const BOB: &str = "10.0.0.2:7789";
    const BOB_MOVED: &str = "10.0.0.22:7789";
    const MALLORY: &str = "10.0.0.3:7789";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn keys(n: u8) -> StaticKeys {
        StaticKeys::from_secret([n; 32])
    }
    /// A duet that knows `peers` and talks to nobody yet.
    fn duet(me: u8, peers: &[u8], seed: u8) -> Secure {
        let allowed: Vec<PublicKey> = peers.iter().map(|p| keys(*p).public()).collect();
        Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            keys(me),
            &allowed,
            None,
            [seed; 32],
        )
    }
    fn transmit(s: &mut Secure, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        s.poll_transmit(now, &mut buf)
            .map(|t| (t.dst, buf[..t.len].to_vec()))
    }
    fn probe_of(alice: &mut Secure) -> Vec<u8> {
        let (dst, probe) = transmit(alice, Instant::ZERO).expect("a probe");
        assert_eq!(dst, addr(BCAST));
        assert_eq!(
            (probe.len(), probe[3]),
            (sealed::PROBE_LEN, sealed::kind::PROBE)
        );
        probe
    }

    #[test]
    fn a_probe_from_an_unpaired_key_is_dropped_counted_and_unanswered() {
        // Mallory knows bob's public key; bob does not know mallory's.
        let mut mallory = duet(3, &[], 3);
        mallory.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        let mut bob = duet(2, &[1], 2);
        let probe = probe_of(&mut mallory);
        bob.handle_datagram(Instant::ZERO, addr(MALLORY), &probe);
        assert_eq!(transmit(&mut bob, Instant::ZERO), None, "no answer at all");
        assert_eq!(
            (bob.stats().probes_refused, bob.stats().probes_answered),
            (1, 0)
        );
        assert_eq!(bob.peer_addr(), None);
    }

    #[test]
    fn a_probe_from_a_paired_key_is_answered_once() {
        let mut alice = duet(1, &[2], 1);
        alice.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        let mut bob = duet(2, &[1], 2);
        let probe = probe_of(&mut alice);
        bob.handle_datagram(Instant::ZERO, addr(ALICE), &probe);
        let (dst, found) = transmit(&mut bob, Instant::ZERO).expect("a FOUND");
        assert_eq!(dst, addr(ALICE));
        assert_eq!(found.len(), sealed::FOUND_LEN);
        assert_eq!(
            (found[3], &found[4..20]),
            (sealed::kind::FOUND, &probe[4..20])
        );
        // The same probe again, from anywhere: replayed, not answered.
        bob.handle_datagram(Instant::ZERO, addr(ALICE), &probe);
        bob.handle_datagram(Instant::ZERO, addr(MALLORY), &probe);
        assert_eq!(transmit(&mut bob, Instant::ZERO), None);
        assert_eq!((bob.stats().probes_answered, bob.stats().replayed), (1, 2));
        // Nothing secret in either: no static key appears in the bytes.
        for key in [keys(1).public(), keys(2).public()] {
            assert!(!probe.windows(32).any(|w| w == key) && !found.windows(32).any(|w| w == key));
        }
        alice.handle_datagram(Instant::ZERO, addr(BOB), &found);
        assert_eq!(alice.peer_addr(), Some(addr(BOB)));
    }

    #[test]
    fn a_forged_found_or_ones_own_probe_changes_nothing() {
        let mut alice = duet(1, &[2], 1);
        alice.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        let probe = probe_of(&mut alice);
        // A FOUND for alice's nonce with a tag that is not bob's.
        let mut forged = probe.clone();
        forged[3] = sealed::kind::FOUND;
        alice.handle_datagram(Instant::ZERO, addr(MALLORY), &forged);
        assert_eq!(alice.peer_addr(), None);
        assert_eq!(alice.stats().unauthenticated, 1);
        // A probe reflected back to its sender is neither answered nor counted.
        alice.handle_datagram(Instant::ZERO, addr(MALLORY), &probe);
        assert_eq!(transmit(&mut alice, Instant::ZERO).map(|t| t.0), None);
        assert_eq!(alice.stats().probes_refused, 0);
    }

    #[test]
    fn a_recorded_probe_is_refused_minutes_later() {
        let mut alice = duet(1, &[2], 1);
        alice.set_unix_minutes(Instant::ZERO, 29_000_000);
        alice.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        let probe = probe_of(&mut alice);
        let mut bob = duet(2, &[1], 2);
        bob.set_unix_minutes(Instant::ZERO, 29_000_000 + CLOCK_SKEW_MINUTES + 1);
        bob.handle_datagram(Instant::ZERO, addr(ALICE), &probe);
        assert_eq!(transmit(&mut bob, Instant::ZERO), None);
        assert_eq!(bob.stats().probes_refused, 1);
        // Within the skew it is answered.
        let mut bob = duet(2, &[1], 2);
        bob.set_unix_minutes(Instant::ZERO, 29_000_000 - CLOCK_SKEW_MINUTES);
        bob.handle_datagram(Instant::ZERO, addr(ALICE), &probe);
        assert!(transmit(&mut bob, Instant::ZERO).is_some());
    }

    /// Duets on one simulated LAN, each at an address.
    struct Lan {
        now: Instant,
        duets: Vec<(SocketAddr, Secure, Vec<std::string::String>)>,
    }

    impl Lan {
        fn step(&mut self) {
            let now = self.now;
            let mut wire = Vec::new();
            for (from, s, shown) in &mut self.duets {
                s.handle_timeout(now);
                while let Some((dst, bytes)) = transmit(s, now) {
                    wire.push((*from, dst, bytes));
                }
                while let Some(e) = s.poll_event() {
                    shown.push(match e {
                        Event::Message(t) => format!("message {t}"),
                        Event::PeerUp(a) => format!("up {a}"),
                        e => format!("{e:?}"),
                    });
                }
            }
            for (from, dst, bytes) in wire {
                for (at, s, _) in &mut self.duets {
                    if *at != from && (dst == *at || dst == addr(BCAST)) {
                        s.handle_datagram(now, from, &bytes);
                    }
                }
            }
            self.now += Duration::from_millis(100);
        }
        fn run_until(&mut self, secs: u64, mut done: impl FnMut(&Lan) -> bool) {
            let end = self.now + Duration::from_secs(secs);
            while !done(self) {
                assert!(self.now < end, "not done after {secs} s");
                self.step();
            }
        }
        fn shown(&self, i: usize, what: &str) -> bool {
            self.duets[i].2.iter().any(|l| l == what)
        }
    }

    #[test]
    fn discovery_then_handshake_then_chat_and_following_a_move() {
        let mut alice = duet(1, &[2], 1);
        alice.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        alice.send_text(Instant::ZERO, "hello bob").unwrap();
        let mut mallory = duet(3, &[], 3);
        mallory.discover(Instant::ZERO, keys(2).public(), &[addr(BCAST)]);
        let mut lan = Lan {
            now: Instant::ZERO,
            duets: std::vec![
                (addr(ALICE), alice, Vec::new()),
                (addr(BOB), duet(2, &[1], 2), Vec::new()),
                (addr(MALLORY), mallory, Vec::new()),
            ],
        };
        lan.run_until(10, |l| l.shown(1, "message hello bob"));
        assert_eq!(lan.duets[0].1.peer_addr(), Some(addr(BOB)));
        assert!(lan.duets[0].1.is_established());
        assert_eq!(lan.duets[2].1.peer_addr(), None, "mallory found nothing");
        assert!(lan.duets[1].1.stats().probes_refused >= 1);
        assert_eq!(lan.duets[1].1.stats().probes_answered, 1);

        // Bob goes away and comes back at another address (a new run: no keys).
        lan.duets[1] = (addr(BOB_MOVED), duet(2, &[1], 22), Vec::new());
        lan.duets[0].1.send_text(lan.now, "still there?").unwrap();
        lan.run_until(120, |l| l.shown(1, "message still there?"));
        assert_eq!(lan.duets[0].1.peer_addr(), Some(addr(BOB_MOVED)));
        assert_eq!(lan.duets[2].1.peer_addr(), None);
    }

    #[test]
    fn discover_looks_at_once_even_while_an_old_address_is_known() {
        // Alice knows bob at his old address; a rendezvous tells her of a new one (his
        // router got a new public address, and the old one no longer answers).
        let mut alice = duet(1, &[2], 1);
        alice.set_peer(Instant::ZERO, keys(2).public(), addr(BOB));
        let now = Instant::ZERO + Duration::from_secs(1);
        alice.discover(now, keys(2).public(), &[addr(BOB_MOVED)]);
        let probes: Vec<(SocketAddr, Vec<u8>)> = (0..8)
            .map_while(|_| transmit(&mut alice, now))
            .filter(|(_, bytes)| bytes[3] == sealed::kind::PROBE)
            .collect();
        assert_eq!(
            probes.iter().map(|p| p.0).collect::<Vec<_>>(),
            [addr(BOB_MOVED)],
            "one probe, at once, to the new address"
        );
        let mut bob = duet(2, &[1], 2);
        bob.handle_datagram(now, addr(ALICE), &probes[0].1);
        let (_, found) = transmit(&mut bob, now).expect("a FOUND");
        alice.handle_datagram(now, addr(BOB_MOVED), &found);
        assert_eq!(alice.peer_addr(), Some(addr(BOB_MOVED)));
    }
}

#[cfg(all(test, feature = "discovery"))]
mod discovery_vectors {
    //! docs/PROTOCOL.md, "Discovery test vectors": a PROBE from A to B and B's FOUND, from
    //! the keys of the sealed vectors, A's seed 0xa1..., minute 29 000 000.
    use super::*;

    fn hex(bytes: &[u8]) -> std::string::String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn probe_and_found_match_the_published_vectors() {
        let (a, b) = (
            StaticKeys::from_secret([1; 32]),
            StaticKeys::from_secret([2; 32]),
        );
        let t0 = Instant::ZERO;
        let mut ia = Secure::new(
            t0,
            SecureConfig::default(),
            a.clone(),
            &[],
            None,
            [0xa1; 32],
        );
        ia.set_unix_minutes(t0, 29_000_000);
        ia.discover(t0, b.public(), &["10.0.0.255:7789".parse().unwrap()]);
        let mut rb = Secure::new(
            t0,
            SecureConfig::default(),
            b,
            &[a.public()],
            None,
            [0xb2; 32],
        );
        rb.set_unix_minutes(t0, 29_000_000);
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = ia.poll_transmit(t0, &mut buf).unwrap();
        let probe = buf[..t.len].to_vec();
        rb.handle_datagram(t0, "10.0.0.1:7789".parse().unwrap(), &probe);
        let t = rb.poll_transmit(t0, &mut buf).unwrap();
        let found = buf[..t.len].to_vec();
        assert_eq!(hex(&probe), PROBE);
        assert_eq!(hex(&found), FOUND);
    }

    const PROBE: &str = "647502048fa8cff2baf61a43f3a66a9f591d569c51721393bf6ef56fe2ede081cffe265d";
    const FOUND: &str = "647502058fa8cff2baf61a43f3a66a9f591d569c4a7039e38ef27660a3220c76b4d4800c";
}

#[cfg(all(test, not(feature = "discovery")))]
mod without_discovery {
    use super::*;

    #[test]
    fn probes_are_dropped_unanswered_and_nothing_is_probed() {
        let peer = StaticKeys::from_secret([2; 32]).public();
        let mut s = Secure::new(
            Instant::ZERO,
            SecureConfig::default(),
            StaticKeys::from_secret([1; 32]),
            &[peer],
            None,
            [3; 32],
        );
        let bcast: SocketAddr = "10.0.0.255:7788".parse().unwrap();
        s.discover(Instant::ZERO, peer, &[bcast]);
        assert_eq!(s.peer_key(), Some(peer), "the peer is still chosen");
        let mut buf = [0u8; MAX_DATAGRAM];
        assert!(
            s.poll_transmit(Instant::ZERO, &mut buf).is_none(),
            "no probe"
        );
        assert!(
            s.poll_timeout().is_none_or(|t| t > Instant::ZERO),
            "no deadline for probes that never go out"
        );

        let mut probe = [0u8; sealed::PROBE_LEN];
        Sealed::new_unchecked(&mut probe[..]).set_discovery_header(sealed::kind::PROBE);
        s.handle_datagram(Instant::ZERO, "10.0.0.2:7788".parse().unwrap(), &probe);
        assert!(
            s.poll_transmit(Instant::ZERO, &mut buf).is_none(),
            "no FOUND"
        );
        assert_eq!(s.stats().probes_refused, 1);
    }
}
