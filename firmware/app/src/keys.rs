//! The board's keys and peer, kept where a reboot does not lose them.
//!
//! [`StoredKeys`] is the record: the board's X25519 secret key and, once paired, the peer's
//! public key and address. [`StoredKeys::encode`] gives its [`RECORD_LEN`] bytes;
//! [`StoredKeys::decode`] reads them back and never panics: erased flash (all `0xff`), a
//! record torn by a reset during a write, another layout or noise read as `None`, never as
//! keys. A [`KeyStore`] keeps one record: [`FlashKeyStore`] in a sector of a NOR flash
//! (`embedded-storage`), [`NoKeyStore`] nowhere, for a board whose keys come with its image
//! (QEMU's). `boot_keys` decides which keys a boot runs with: the build's, the kept ones, or
//! a new secret.

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use embedded_storage::nor_flash::NorFlash;

use crate::Settings;

/// Bytes of an encoded record.
pub const RECORD_LEN: usize = 80;
/// Marks a record: "duk" in ASCII and a layout version in the low byte (bump it when the
/// layout changes, so an old record reads as none).
const MAGIC: u32 = 0x6475_6b01;
/// FNV-1a's 32-bit offset basis and prime: catches erased, torn and stale bytes.
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Byte ranges of the record's fields.
mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const SECRET: Range<usize> = 4..36;
    /// 1 if a peer follows, 0 if not.
    pub const HAS_PEER: usize = 36;
    pub const PEER_KEY: Range<usize> = 37..69;
    pub const PEER_IP: Range<usize> = 69..73;
    pub const PEER_PORT: Range<usize> = 73..75;
    /// Zero padding up to the checksum.
    pub const PAD: Range<usize> = 75..76;
    pub const CHECKSUM: Range<usize> = 76..80;
}

/// The board's secret key and its peer, as kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoredKeys {
    /// The board's X25519 secret key.
    pub secret: [u8; 32],
    /// The peer's public key and address, once paired.
    pub peer: Option<([u8; 32], SocketAddrV4)>,
}

impl StoredKeys {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[field::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
        out[field::SECRET].copy_from_slice(&self.secret);
        if let Some((key, addr)) = self.peer {
            out[field::HAS_PEER] = 1;
            out[field::PEER_KEY].copy_from_slice(&key);
            out[field::PEER_IP].copy_from_slice(&addr.ip().octets());
            out[field::PEER_PORT].copy_from_slice(&addr.port().to_le_bytes());
        }
        let sum = checksum(&out[..field::CHECKSUM.start]);
        out[field::CHECKSUM].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// The record in `bytes` (at least [`RECORD_LEN`] of them), if there is one.
    pub fn decode(bytes: &[u8]) -> Option<StoredKeys> {
        let bytes: &[u8; RECORD_LEN] = bytes.get(..RECORD_LEN)?.try_into().ok()?;
        let word = |range: core::ops::Range<usize>| {
            let b = &bytes[range];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        if word(field::MAGIC) != MAGIC
            || word(field::CHECKSUM) != checksum(&bytes[..field::CHECKSUM.start])
            || bytes[field::PAD].iter().any(|&b| b != 0)
        {
            return None;
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[field::SECRET]);
        let peer = match bytes[field::HAS_PEER] {
            0 => None,
            1 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes[field::PEER_KEY]);
                let ip = &bytes[field::PEER_IP];
                let port = &bytes[field::PEER_PORT];
                let port = u16::from_le_bytes([port[0], port[1]]);
                let addr = SocketAddrV4::new(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port);
                // A record never holds a peer nobody can be reached at.
                if port == 0 || addr.ip().is_unspecified() {
                    return None;
                }
                Some((key, addr))
            }
            _ => return None,
        };
        Some(StoredKeys { secret, peer })
    }

    /// The peer as the session takes it.
    pub fn peer_socket(&self) -> Option<([u8; 32], SocketAddr)> {
        self.peer.map(|(key, addr)| (key, SocketAddr::V4(addr)))
    }
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Why keys could not be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    /// The board has nowhere to keep keys: they come with its image.
    NoStore,
    /// The flash refused to erase or write.
    Flash,
    /// What was read back after writing is not what was written.
    Verify,
}

impl StoreError {
    /// What went wrong, in words.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreError::NoStore => "this board keeps no keys",
            StoreError::Flash => "flash erase or write failed",
            StoreError::Verify => "flash read back differs from what was written",
        }
    }
}

/// Where a board keeps one [`StoredKeys`] record across reboots.
pub trait KeyStore {
    /// Whether anything is kept at all: `false` lets the application leave out the code
    /// that keeps keys (a board whose keys are in its image, where flash is tight).
    const KEEPS: bool = true;

    /// The record kept, if any.
    fn load(&mut self) -> Option<StoredKeys>;
    /// Keep `keys` in place of the record kept before.
    fn save(&mut self, keys: &StoredKeys) -> Result<(), StoreError>;
}

/// A board that keeps nothing: its keys are built into its image (QEMU's, whose flash is
/// loaded afresh from the ELF at every start).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKeyStore;

impl KeyStore for NoKeyStore {
    const KEEPS: bool = false;

    fn load(&mut self) -> Option<StoredKeys> {
        None
    }

    fn save(&mut self, _keys: &StoredKeys) -> Result<(), StoreError> {
        Err(StoreError::NoStore)
    }
}

/// One record at the start of an erase block of a NOR flash, the whole block given over to
/// it (erase blocks are the unit a flash can clear; the record is far smaller).
///
/// Saving erases the block, writes the record and reads it back. A reset in between leaves
/// an erased or torn block, which reads as no record: the board then draws a new secret key
/// (and must be paired again), never a corrupt one.
pub struct FlashKeyStore<F> {
    flash: F,
    offset: u32,
}

impl<F: NorFlash> FlashKeyStore<F> {
    /// The store in the erase block at `offset` of `flash`; `None` if `offset` is not the
    /// start of a whole erase block inside it.
    pub fn new(flash: F, offset: u32) -> Option<Self> {
        let block = u32::try_from(F::ERASE_SIZE).ok()?;
        let end = offset.checked_add(block)?;
        let fits = usize::try_from(end).ok()? <= flash.capacity();
        (offset.is_multiple_of(block) && fits && RECORD_LEN.is_multiple_of(F::WRITE_SIZE))
            .then_some(FlashKeyStore { flash, offset })
    }

    /// The flash, back.
    pub fn release(self) -> F {
        self.flash
    }
}

impl<F: NorFlash> KeyStore for FlashKeyStore<F> {
    fn load(&mut self) -> Option<StoredKeys> {
        let mut bytes = [0u8; RECORD_LEN];
        self.flash.read(self.offset, &mut bytes).ok()?;
        StoredKeys::decode(&bytes)
    }

    fn save(&mut self, keys: &StoredKeys) -> Result<(), StoreError> {
        let bytes = keys.encode();
        // `new` checked that the block fits: the sum cannot overflow.
        let end = self.offset + F::ERASE_SIZE as u32;
        self.flash
            .erase(self.offset, end)
            .map_err(|_| StoreError::Flash)?;
        self.flash
            .write(self.offset, &bytes)
            .map_err(|_| StoreError::Flash)?;
        let mut back = [0u8; RECORD_LEN];
        self.flash
            .read(self.offset, &mut back)
            .map_err(|_| StoreError::Flash)?;
        if back == bytes {
            Ok(())
        } else {
            Err(StoreError::Verify)
        }
    }
}

/// The keys a boot runs with. What the build gave wins over what the board kept, which wins
/// over a new secret from `draw` (which the caller then keeps, so the board's identity
/// survives a reboot). The peer greeted at boot needs its key: the build's `DUET_PEER_KEY`
/// with `DUET_PEER`, else the peer kept from the last `/pair` or `/peer`, else none (the
/// board waits for `/pair`).
pub(crate) fn boot_keys(
    settings: &Settings,
    kept: Option<StoredKeys>,
    draw: impl FnOnce() -> [u8; 32],
) -> StoredKeys {
    let secret = match (settings.board_secret, kept) {
        (Some(secret), _) => secret,
        (None, Some(kept)) => kept.secret,
        (None, None) => draw(),
    };
    let peer = match settings.peer_key {
        Some(key) => Some((
            key,
            SocketAddrV4::new(Ipv4Addr::from(settings.peer_ip), settings.peer_port),
        )),
        None => kept.and_then(|kept| kept.peer),
    };
    StoredKeys { secret, peer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};

    const KEYS: StoredKeys = StoredKeys {
        secret: [0x5a; 32],
        peer: Some((
            [0xa5; 32],
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 20), 7788),
        )),
    };

    #[test]
    fn test_round_trip() {
        assert_eq!(StoredKeys::decode(&KEYS.encode()), Some(KEYS));
        let unpaired = StoredKeys { peer: None, ..KEYS };
        assert_eq!(StoredKeys::decode(&unpaired.encode()), Some(unpaired));
    }

    #[test]
    fn test_erased_and_short_read_as_none() {
        assert_eq!(StoredKeys::decode(&[0xff; RECORD_LEN]), None);
        assert_eq!(StoredKeys::decode(&[0; RECORD_LEN]), None);
        assert_eq!(StoredKeys::decode(&KEYS.encode()[..RECORD_LEN - 1]), None);
    }

    #[test]
    fn test_any_flipped_bit_reads_as_none() {
        let good = KEYS.encode();
        for byte in 0..RECORD_LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert_eq!(StoredKeys::decode(&bad), None, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn test_torn_write_reads_as_none() {
        // A reset part-way through writing: the rest of the block is still erased.
        let good = KEYS.encode();
        for written in 0..RECORD_LEN {
            let mut torn = [0xff; RECORD_LEN];
            torn[..written].copy_from_slice(&good[..written]);
            assert_eq!(StoredKeys::decode(&torn), None, "{written} bytes written");
        }
    }

    /// A NOR flash in RAM that behaves as one: erase sets a block to 0xff, write can only
    /// clear bits, and it can be told to fail.
    struct RamFlash {
        bytes: [u8; 4 * BLOCK],
        fail_writes: bool,
    }

    const BLOCK: usize = 256;

    #[derive(Debug)]
    struct RamFlashError;

    impl NorFlashError for RamFlashError {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }

    impl ErrorType for RamFlash {
        type Error = RamFlashError;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
            let at = offset as usize;
            let src = self.bytes.get(at..at + bytes.len()).ok_or(RamFlashError)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.bytes.len()
        }
    }

    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = BLOCK;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
            let range = self
                .bytes
                .get_mut(from as usize..to as usize)
                .ok_or(RamFlashError)?;
            range.fill(0xff);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
            if self.fail_writes {
                return Err(RamFlashError);
            }
            let at = offset as usize;
            let dst = self
                .bytes
                .get_mut(at..at + bytes.len())
                .ok_or(RamFlashError)?;
            for (d, s) in dst.iter_mut().zip(bytes) {
                *d &= s;
            }
            Ok(())
        }
    }

    fn flash() -> RamFlash {
        RamFlash {
            bytes: [0xff; 4 * BLOCK],
            fail_writes: false,
        }
    }

    #[test]
    fn a_store_must_own_a_whole_erase_block() {
        assert!(FlashKeyStore::new(flash(), 0).is_some());
        assert!(FlashKeyStore::new(flash(), 3 * BLOCK as u32).is_some());
        assert!(
            FlashKeyStore::new(flash(), 4 * BLOCK as u32).is_none(),
            "past the end"
        );
        assert!(
            FlashKeyStore::new(flash(), BLOCK as u32 / 2).is_none(),
            "mid-block"
        );
        assert!(FlashKeyStore::new(flash(), u32::MAX).is_none());
    }

    #[test]
    fn keys_saved_are_loaded_after_a_reboot() {
        let mut store = FlashKeyStore::new(flash(), BLOCK as u32).unwrap();
        assert_eq!(store.load(), None, "a new board has no keys");
        let first = StoredKeys { peer: None, ..KEYS };
        store.save(&first).unwrap();
        // Pairing later rewrites the record in place (erase, then write).
        store.save(&KEYS).unwrap();
        // A reboot: only the flash is left.
        let flash = store.release();
        assert!(
            flash.bytes[..BLOCK].iter().all(|&b| b == 0xff),
            "outside its block"
        );
        let mut store = FlashKeyStore::new(flash, BLOCK as u32).unwrap();
        assert_eq!(store.load(), Some(KEYS));
    }

    #[test]
    fn a_failed_write_is_reported_and_leaves_no_record() {
        let mut store = FlashKeyStore::new(flash(), 0).unwrap();
        store.save(&KEYS).unwrap();
        let mut flash = store.release();
        flash.fail_writes = true;
        let mut store = FlashKeyStore::new(flash, 0).unwrap();
        assert_eq!(store.save(&KEYS), Err(StoreError::Flash));
        assert_eq!(
            store.load(),
            None,
            "erased, not written: no keys, not wrong ones"
        );
    }

    #[test]
    fn a_board_without_a_store_keeps_nothing() {
        let mut store = NoKeyStore;
        assert_eq!(store.save(&KEYS), Err(StoreError::NoStore));
        assert_eq!(store.load(), None);
    }
}

#[cfg(test)]
mod boot_tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        address: [192, 168, 1, 50],
        prefix_len: 24,
        gateway: [192, 168, 1, 1],
        port: 7789,
        peer_ip: [192, 168, 1, 20],
        peer_port: 7788,
        mac: None,
        board_secret: None,
        peer_key: None,
    };
    const KEPT: StoredKeys = StoredKeys {
        secret: [1; 32],
        peer: Some(([2; 32], SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 9000))),
    };

    fn never() -> [u8; 32] {
        panic!("a new secret was drawn while one was at hand")
    }

    #[test]
    fn a_new_board_draws_its_secret_and_waits_for_pairing() {
        let keys = boot_keys(&SETTINGS, None, || [7; 32]);
        assert_eq!(
            keys,
            StoredKeys {
                secret: [7; 32],
                peer: None
            }
        );
    }

    #[test]
    fn a_rebooted_board_keeps_its_secret_and_its_peer() {
        assert_eq!(boot_keys(&SETTINGS, Some(KEPT), never), KEPT);
    }

    #[test]
    fn the_build_settings_win_over_the_kept_keys() {
        let settings = Settings {
            board_secret: Some([3; 32]),
            peer_key: Some([4; 32]),
            ..SETTINGS
        };
        let keys = boot_keys(&settings, Some(KEPT), never);
        let peer = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 20), 7788);
        assert_eq!(
            keys,
            StoredKeys {
                secret: [3; 32],
                peer: Some(([4; 32], peer))
            }
        );
        // A secret in the image alone keeps the kept peer.
        let settings = Settings {
            board_secret: Some([3; 32]),
            ..SETTINGS
        };
        assert_eq!(boot_keys(&settings, Some(KEPT), never).peer, KEPT.peer);
    }
}
