//! Who you are and who you talk to: this machine's X25519 identity (`DIR/identity`) and the
//! peers you paired with (`DIR/peers`), in the config directory `DIR`.
//!
//! Contract: the secret key leaves [`Identity`] only through [`Identity::secret_bytes`], for
//! the handshake. It is never printed, logged or put in an error message — not even the
//! content of a malformed identity file. Files are written atomically (a temporary file
//! created with mode 0600, then linked or renamed into place), so there is no moment when a
//! key file is readable by others or half written, and an identity file that others can
//! read is refused, as ssh refuses such a private key.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use blake2::{Blake2s256, Digest};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::Error;
use crate::platform::files;

/// The identity file's name in the config directory.
pub const IDENTITY_FILE: &str = "identity";
/// The peers file's name in the config directory.
pub const PEERS_FILE: &str = "peers";
/// The file whose lock serialises changes to the peers file (see [`Peers::update`]). It is
/// never removed: deleting a lock file lets two duets lock two different files.
pub const PEERS_LOCK_FILE: &str = "peers.lock";
/// The longest peer name, in characters.
pub const MAX_NAME_LEN: usize = 32;
/// A key in base64: 32 bytes, padded.
pub const KEY_TEXT_LEN: usize = 44;

/// Read no more of an identity file than this: a key is 45 bytes, and a file replaced by
/// something huge must not be read whole.
const MAX_IDENTITY_FILE: u64 = 1024;
/// Read no more of a peers file than this (tens of thousands of peers).
const MAX_PEERS_FILE: u64 = 4 << 20;
/// Attempts at a fresh temporary file name before giving up (names are random, so a
/// collision is already unlikely once).
const TEMP_TRIES: u32 = 16;

/// The header `Peers::save` writes, so a person opening the file knows what it is.
const PEERS_HEADER: &str = "\
# duet peers: the people you can chat with, one per line.
#
#   NAME KEY [ADDR]
#
# NAME  what you call them: 1 to 32 letters, digits, '-', '_' or '.'
# KEY   their public key, base64 (44 characters), as `duet id` prints it there
# ADDR  where to reach them, IP:PORT (optional)
#
# Everything after a '#' is a comment. `duet pair` rewrites this file: it keeps the peers
# but not your comments. Compare fingerprints (`duet pair list`) by voice before trusting
# a key you were sent.
";

/// The config directory: `cli_value` (`--config-dir` or `$DUET_CONFIG_DIR`) if given, else
/// `$XDG_CONFIG_HOME/duet`, else `$HOME/.config/duet` (on Windows `%APPDATA%\duet`).
/// Created private (mode 0700) when missing.
pub fn config_dir(cli_value: Option<PathBuf>) -> Result<PathBuf, Error> {
    let dir = match cli_value {
        Some(dir) => dir,
        None => default_config_dir()?,
    };
    files::create_dir_private(&dir)
        .map_err(|e| config_error(&dir, format!("cannot create the config directory: {e}")))?;
    Ok(dir)
}

fn default_config_dir() -> Result<PathBuf, Error> {
    files::default_config_dir().map_err(|(path, problem)| Error::Config {
        path,
        problem: problem.into(),
    })
}

/// Make sure the group and others have no permission on the file at `path` (if it
/// exists): a file duet wrote before it created every file private (SQLite's `-wal` and
/// `-shm` were 0644) is made private, with a warning, since its contents may already have
/// been read; one whose mode duet cannot change is refused.
pub fn keep_private(path: &Path) -> Result<(), Error> {
    match files::make_private(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => {
            eprintln!(
                "duet: warning: {} was readable by others (mode {mode:04o}); made it private",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(config_error(
            path,
            format!(
                "others may read it, and duet cannot change that ({e}); run: chmod 600 {}",
                path.display()
            ),
        )),
    }
}

/// What a path that should be a file is instead.
pub(super) fn kind_of(meta: &fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else if meta.is_file() {
        "a file"
    } else {
        "not a regular file"
    }
}

fn config_error(path: &Path, problem: String) -> Error {
    Error::Config {
        path: path.to_owned(),
        problem,
    }
}

/// This machine's long-term X25519 key pair.
///
/// `Debug` shows only the public key.
pub struct Identity {
    // x25519-dalek wipes the secret when it is dropped.
    secret: StaticSecret,
    public: PeerKey,
}

impl Identity {
    /// Load `DIR/identity`, or create it (mode 0600) with a fresh random key if there is
    /// none. Refuses a file others can read or write, and a file that is not one key.
    pub fn load_or_create(dir: &Path) -> Result<Identity, Error> {
        let path = dir.join(IDENTITY_FILE);
        if let Some(identity) = read_identity(&path)? {
            return Ok(identity);
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut_slice())
            .map_err(|e| Error::Other(format!("no randomness from the system: {e}")))?;
        let identity = Identity::from_secret(*secret);
        let mut text = Zeroizing::new(BASE64.encode(secret.as_slice()));
        text.push('\n');
        if write_private(dir, IDENTITY_FILE, text.as_bytes(), Replace::No)? {
            return Ok(identity);
        }
        // Another duet created the identity between our look and our write: theirs stands,
        // since it may already have been shown to someone.
        read_identity(&path)?
            .ok_or_else(|| config_error(&path, "vanished while it was being created".into()))
    }

    fn from_secret(bytes: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(bytes);
        let public = PeerKey(PublicKey::from(&secret).to_bytes());
        Identity { secret, public }
    }

    /// The secret key's bytes, for the core's handshake only: never print or store them.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public key, which peers use to recognise this machine.
    pub fn public(&self) -> PeerKey {
        self.public
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &format_args!("{}", self.public))
            .finish_non_exhaustive()
    }
}

/// `Ok(None)` if the file does not exist.
fn read_identity(path: &Path) -> Result<Option<Identity>, Error> {
    // Looked at before it is opened: a directory would open, and then read as a mode
    // problem ("chmod 600"), a named pipe would block.
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(config_error(
                path,
                format!(
                    "is {}, not the file that holds your secret key: move it away, and duet \
                     creates a new identity (your peers then pair with you again)",
                    kind_of(&meta)
                ),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(path, format!("cannot read: {e}"))),
    }
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(path, format!("cannot read: {e}"))),
    };
    let mode = files::mode(
        &file
            .metadata()
            .map_err(|e| config_error(path, format!("cannot read: {e}")))?,
    );
    if mode & 0o077 != 0 {
        return Err(Error::InsecureKeyFile {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut text = Zeroizing::new(Vec::with_capacity(64));
    file.take(MAX_IDENTITY_FILE)
        .read_to_end(&mut text)
        .map_err(|e| config_error(path, format!("cannot read: {e}")))?;
    // Never quote the content in the error: it is (or is close to) the secret key.
    let bad = || {
        config_error(
            path,
            "is not a duet identity (expected one line of 44 base64 characters); \
             move it away and duet will create a new identity"
                .into(),
        )
    };
    let line = text.strip_suffix(b"\n").unwrap_or(&text);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() != KEY_TEXT_LEN {
        return Err(bad());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(48));
    BASE64.decode_vec(line, &mut bytes).map_err(|_| bad())?;
    let secret: Zeroizing<[u8; 32]> =
        Zeroizing::new(bytes.as_slice().try_into().map_err(|_| bad())?);
    Ok(Some(Identity::from_secret(*secret)))
}

/// Whether `write_private` may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

/// Write `DIR/name` atomically with mode 0600: a fresh temporary file in `DIR` (created
/// 0600, so never readable by others), synced, then moved into place. With `Replace::No`
/// an existing file is kept and `Ok(false)` returned.
fn write_private(dir: &Path, name: &str, contents: &[u8], replace: Replace) -> Result<bool, Error> {
    let path = dir.join(name);
    let fail = |what: &str, e: io::Error| config_error(&path, format!("cannot {what}: {e}"));
    let (temp, mut file) = create_temp(dir, name).map_err(|e| fail("write", e))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write", e));
    drop(file);
    let placed = written.and_then(|()| match replace {
        Replace::Yes => fs::rename(&temp, &path)
            .map(|()| true)
            .map_err(|e| fail("write", e)),
        // A hard link fails if the name exists, where a rename would silently replace it.
        Replace::No => match fs::hard_link(&temp, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // Some file systems have no hard links: fall back to a rename after a look.
            Err(_) if !path.exists() => fs::rename(&temp, &path)
                .map(|()| true)
                .map_err(|e| fail("write", e)),
            Err(_) => Ok(false),
        },
    });
    // Gone already after a rename; a leftover temporary file is only untidy.
    let _ = fs::remove_file(&temp);
    if placed.is_ok() {
        // Make the new name durable too; best effort, the content is synced already.
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    placed
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, fs::File)> {
    for _ in 0..TEMP_TRIES {
        let tag = getrandom::u32().map_err(|e| io::Error::other(e.to_string()))?;
        let temp = dir.join(format!(".{name}.{}.{tag:08x}.tmp", std::process::id()));
        match files::private(&mut fs::OpenOptions::new())
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// A peer's X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PeerKey(pub [u8; 32]);

impl PeerKey {
    /// A short form to compare by voice: BLAKE2s-256 of the key, its first 10 bytes read as
    /// five big-endian 16-bit numbers, each as 5 decimal digits (`04721 33095 00012 61234
    /// 17777`). 80 bits: finding another key with the same fingerprint is out of reach.
    pub fn fingerprint(&self) -> String {
        let hash = Blake2s256::digest(self.0);
        let mut out = String::with_capacity(29);
        for (i, pair) in hash.chunks_exact(2).take(5).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let n = u16::from_be_bytes([pair[0], pair[1]]);
            out.push_str(&format!("{n:05}"));
        }
        out
    }
}

impl fmt::Display for PeerKey {
    /// Standard base64 with padding: 44 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

/// Why a text is not a public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyParseError {
    /// Not 44 characters long (the length it had).
    Length(usize),
    /// A character outside standard base64, or misplaced padding.
    Alphabet,
    /// Valid base64 of some other number of bytes (the number).
    Size(usize),
}

impl fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = "expected 44 characters of base64, as `duet id` prints";
        match self {
            KeyParseError::Length(n) => {
                write!(f, "not a public key: {expected}, got {n} characters")
            }
            KeyParseError::Alphabet => write!(
                f,
                "not a public key: {expected} (letters, digits, '+' and '/', ending in '=')"
            ),
            KeyParseError::Size(n) => {
                write!(f, "not a public key: it holds {n} bytes instead of 32")
            }
        }
    }
}

impl std::error::Error for KeyParseError {}

impl FromStr for PeerKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<PeerKey, KeyParseError> {
        let chars = s.chars().count();
        if chars != KEY_TEXT_LEN {
            return Err(KeyParseError::Length(chars));
        }
        // The standard engine also refuses non-zero trailing bits, so each key has exactly
        // one spelling and `to_string` gives back what was parsed.
        let bytes = BASE64.decode(s).map_err(|_| KeyParseError::Alphabet)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyParseError::Size(bytes.len()))?;
        Ok(PeerKey(key))
    }
}

/// Someone you paired with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// What you call them (see [`check_name`]).
    pub name: String,
    /// Their public key.
    pub key: PeerKey,
    /// Where to reach them, if known.
    pub addr: Option<SocketAddr>,
}

/// Why a peer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// The name breaks the rules of [`check_name`] (the name).
    BadName(String),
    /// A peer of that name exists (the name).
    DuplicateName(String),
    /// That key is already paired under another name.
    DuplicateKey {
        /// The name it has.
        existing: String,
    },
    /// No peer of that name (the name).
    Unknown(String),
    /// The key is this machine's own.
    OwnKey,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::BadName(name) => write!(
                f,
                "bad peer name '{}': use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'",
                super::display::escaped(name)
            ),
            PeerError::DuplicateName(name) => write!(
                f,
                "a peer named '{name}' already exists (remove it first: duet pair remove {name})"
            ),
            PeerError::DuplicateKey { existing } => {
                write!(f, "that key is already paired, as '{existing}'")
            }
            PeerError::Unknown(name) => {
                write!(f, "no peer named '{name}' (see: duet pair list)")
            }
            PeerError::OwnKey => f.write_str(
                "that is your own key: add the key that `duet id` prints on the other computer",
            ),
        }
    }
}

impl std::error::Error for PeerError {}

/// A peer name is 1 to 32 letters, digits, `-`, `_` or `.`: no spaces (the peers file
/// separates fields with them) and never a `:`, so a name cannot be mistaken for an
/// address.
pub fn check_name(name: &str) -> Result<(), PeerError> {
    let len = name.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=MAX_NAME_LEN).contains(&len) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(PeerError::BadName(name.to_owned()))
    }
}

/// The peers file, in memory: unique names, unique keys, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    list: Vec<Peer>,
}

impl Peers {
    /// Load `DIR/peers`; a missing file is an empty list. Refuses a file others can write
    /// (they could slip in a key) and, naming the line, any malformed entry; makes one
    /// others can only read private.
    pub fn load(dir: &Path) -> Result<Peers, Error> {
        let path = dir.join(PEERS_FILE);
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(config_error(
                    &path,
                    format!(
                        "is {}, not the peers file: move it away (then pair again, or add \
                         your peers with `duet pair add`)",
                        kind_of(&meta)
                    ),
                ));
            }
            _ => {}
        }
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Peers::default()),
            Err(e) => return Err(config_error(&path, format!("cannot read: {e}"))),
        };
        let mode = files::mode(
            &file
                .metadata()
                .map_err(|e| config_error(&path, format!("cannot read: {e}")))?,
        );
        if mode & 0o022 != 0 {
            return Err(Error::InsecureKeyFile {
                path,
                mode: mode & 0o7777,
            });
        }
        // Readable by others: whom you talk to, and where, is private too.
        keep_private(&path)?;
        let mut text = String::new();
        file.take(MAX_PEERS_FILE)
            .read_to_string(&mut text)
            .map_err(|e| config_error(&path, format!("cannot read: {e}")))?;
        Peers::parse(&text).map_err(|problem| config_error(&path, problem))
    }

    /// Parse the peers file's text; the error names the line.
    fn parse(text: &str) -> Result<Peers, String> {
        let mut peers = Peers::default();
        for (number, line) in text.lines().enumerate() {
            let at = |problem: String| format!("line {}: {problem}", number + 1);
            let content = line.split('#').next().unwrap_or("");
            let mut fields = content.split_whitespace();
            let Some(name) = fields.next() else {
                continue;
            };
            let key = fields
                .next()
                .ok_or_else(|| at("a name without a key (expected NAME KEY [ADDR])".into()))?;
            let key = key.parse::<PeerKey>().map_err(|e| at(e.to_string()))?;
            let addr = fields
                .next()
                .map(|a| {
                    a.parse::<SocketAddr>().map_err(|_| {
                        at(format!(
                            "'{}' is not IP:PORT (e.g. 192.168.1.20:7789)",
                            super::display::escaped(a)
                        ))
                    })
                })
                .transpose()?;
            if fields.next().is_some() {
                return Err(at("too many fields (expected NAME KEY [ADDR])".into()));
            }
            peers
                .add(Peer {
                    name: name.to_owned(),
                    key,
                    addr,
                })
                .map_err(|e| match e {
                    Error::Peer(e) => at(e.to_string()),
                    other => at(other.to_string()),
                })?;
        }
        Ok(peers)
    }

    /// The peer called `name`.
    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.list.iter().find(|p| p.name == name)
    }

    /// The peer with public key `key`.
    pub fn by_key(&self, key: &PeerKey) -> Option<&Peer> {
        self.list.iter().find(|p| p.key == *key)
    }

    /// Every peer, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.list.iter()
    }

    /// Add a peer. Refuses a bad name, a name already used and a key already paired.
    pub fn add(&mut self, peer: Peer) -> Result<(), Error> {
        check_name(&peer.name)?;
        if self.get(&peer.name).is_some() {
            return Err(PeerError::DuplicateName(peer.name).into());
        }
        if let Some(existing) = self.by_key(&peer.key) {
            return Err(PeerError::DuplicateKey {
                existing: existing.name.clone(),
            }
            .into());
        }
        self.list.push(peer);
        Ok(())
    }

    /// Remove the peer called `name` and return it.
    pub fn remove(&mut self, name: &str) -> Result<Peer, Error> {
        let index = self
            .list
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| PeerError::Unknown(name.to_owned()))?;
        Ok(self.list.remove(index))
    }

    /// Set where the peer called `name` is reached (`None`: nowhere in particular).
    pub fn set_addr(&mut self, name: &str, addr: Option<SocketAddr>) -> Result<(), Error> {
        let peer = self
            .list
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| PeerError::Unknown(name.to_owned()))?;
        peer.addr = addr;
        Ok(())
    }

    /// Change the peers file: load it, apply `change`, and save the result if `change`
    /// succeeded, all under an exclusive lock on `DIR/peers.lock`, so duets changing the
    /// file at once (two `duet pair add` in parallel) each see the other's change instead
    /// of overwriting it. Readers take no lock: the file is replaced atomically, so they
    /// see the old or the new list, never half of one.
    pub fn update<T>(
        dir: &Path,
        change: impl FnOnce(&mut Peers) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let path = dir.join(PEERS_LOCK_FILE);
        let fail = |e: io::Error| config_error(&path, format!("cannot lock the peers file: {e}"));
        let lock = files::private(&mut fs::OpenOptions::new())
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fail)?;
        // flock(2): advisory, released when `lock` is closed, also if duet is killed.
        lock.lock().map_err(fail)?;
        let mut peers = Peers::load(dir)?;
        let value = change(&mut peers)?;
        peers.save(dir)?;
        Ok(value)
    }

    /// Write `DIR/peers` atomically, mode 0600, with a header explaining the format. Only
    /// under the lock of [`Peers::update`].
    fn save(&self, dir: &Path) -> Result<(), Error> {
        write_private(dir, PEERS_FILE, self.to_text().as_bytes(), Replace::Yes).map(drop)
    }

    fn to_text(&self) -> String {
        let mut text = String::from(PEERS_HEADER);
        for peer in &self.list {
            text.push('\n');
            text.push_str(&peer.name);
            text.push(' ');
            text.push_str(&peer.key.to_string());
            if let Some(addr) = peer.addr {
                text.push(' ');
                text.push_str(&addr.to_string());
            }
        }
        text.push('\n');
        text
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Error::Peer(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    /// RFC 7748 §6.1: Alice's private and public key.
    const ALICE_SECRET: [u8; 32] = [
        0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66,
        0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9,
        0x2c, 0x2a,
    ];
    const ALICE_PUBLIC: [u8; 32] = [
        0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7,
        0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b,
        0x4e, 0x6a,
    ];

    /// A fresh directory, removed when dropped, also when the test fails.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "duet-keys-{tag}-{}-{:08x}",
            std::process::id(),
            getrandom::u32().unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn the_public_key_is_x25519_of_the_secret() {
        let identity = Identity::from_secret(ALICE_SECRET);
        assert_eq!(identity.public(), PeerKey(ALICE_PUBLIC));
        assert_eq!(identity.secret_bytes(), ALICE_SECRET);
    }

    #[test]
    fn debug_of_an_identity_shows_only_the_public_key() {
        let identity = Identity::from_secret(ALICE_SECRET);
        let shown = format!("{identity:?}");
        assert!(
            shown.contains(&PeerKey(ALICE_PUBLIC).to_string()),
            "{shown}"
        );
        assert!(!shown.contains(&BASE64.encode(ALICE_SECRET)), "{shown}");
        assert!(!shown.contains("119"), "secret byte values leaked: {shown}");
    }

    #[test]
    fn a_key_prints_as_44_base64_characters_and_parses_back() {
        let key = PeerKey(ALICE_PUBLIC);
        let text = key.to_string();
        assert_eq!(text, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert_eq!(text.parse::<PeerKey>(), Ok(key));
    }

    #[test]
    fn a_malformed_key_is_refused_with_the_reason() {
        assert_eq!("abc".parse::<PeerKey>(), Err(KeyParseError::Length(3)));
        assert_eq!(
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo".parse::<PeerKey>(),
            Err(KeyParseError::Length(43))
        );
        assert_eq!(
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb!mo=".parse::<PeerKey>(),
            Err(KeyParseError::Alphabet)
        );
        // URL-safe alphabet is not the standard one.
        assert_eq!(
            "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=".parse::<PeerKey>(),
            Err(KeyParseError::Alphabet)
        );
        // Non-zero trailing bits: a second spelling of the same key.
        assert_eq!(
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=".parse::<PeerKey>(),
            Err(KeyParseError::Alphabet)
        );
        // 44 characters of valid base64 holding 31 bytes.
        assert_eq!(
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTg==".parse::<PeerKey>(),
            Err(KeyParseError::Size(31))
        );
        let message = KeyParseError::Length(3).to_string();
        assert!(message.contains("44 characters"), "{message}");
    }

    #[test]
    fn a_fingerprint_is_five_groups_of_five_digits_from_blake2s() {
        let key = PeerKey(ALICE_PUBLIC);
        let fp = key.fingerprint();
        let groups: Vec<&str> = fp.split(' ').collect();
        assert_eq!(groups.len(), 5, "{fp}");
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
        // Recomputed from the definition: BLAKE2s-256, first 10 bytes, big-endian u16s.
        let hash = Blake2s256::digest(ALICE_PUBLIC);
        let first = u16::from_be_bytes([hash[0], hash[1]]);
        assert_eq!(groups[0], format!("{first:05}"));
        let last = u16::from_be_bytes([hash[8], hash[9]]);
        assert_eq!(groups[4], format!("{last:05}"));
        // Small numbers keep their leading zeros.
        assert_ne!(PeerKey([0; 32]).fingerprint(), key.fingerprint());
        assert_eq!(PeerKey([0; 32]).fingerprint().len(), 29);
    }

    #[test]
    fn blake2s_is_the_reference_function() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        let hash = Blake2s256::digest(b"abc");
        assert_eq!(
            hash[..4],
            [0x50, 0x8c, 0x5e, 0x8c],
            "not the BLAKE2s-256 of RFC 7693"
        );
    }

    #[test]
    fn names_are_short_words_without_spaces_or_colons() {
        for good in ["alice", "Bob-2", "a.b_c", "李雷", "x", &"n".repeat(32)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "host:7789",
            "a/b",
            "a#b",
            &"n".repeat(33),
            "tab\t",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn peers_refuse_duplicate_names_and_keys() {
        let mut peers = Peers::default();
        let alice = Peer {
            name: "alice".into(),
            key: PeerKey(ALICE_PUBLIC),
            addr: None,
        };
        peers.add(alice.clone()).unwrap();
        let same_name = Peer {
            key: PeerKey([9; 32]),
            ..alice.clone()
        };
        assert!(matches!(
            peers.add(same_name),
            Err(Error::Peer(PeerError::DuplicateName(_)))
        ));
        let same_key = Peer {
            name: "alice2".into(),
            ..alice.clone()
        };
        assert!(matches!(
            peers.add(same_key),
            Err(Error::Peer(PeerError::DuplicateKey { .. }))
        ));
        assert_eq!(peers.iter().count(), 1);
        assert_eq!(peers.by_key(&PeerKey(ALICE_PUBLIC)), Some(&alice));
    }

    #[test]
    fn the_peers_file_round_trips_with_its_header() {
        let mut peers = Peers::default();
        peers
            .add(Peer {
                name: "alice".into(),
                key: PeerKey(ALICE_PUBLIC),
                addr: Some("192.168.1.20:7789".parse().unwrap()),
            })
            .unwrap();
        peers
            .add(Peer {
                name: "bob".into(),
                key: PeerKey([7; 32]),
                addr: None,
            })
            .unwrap();
        peers
            .set_addr("bob", Some("[::1]:7001".parse().unwrap()))
            .unwrap();
        let text = peers.to_text();
        assert!(text.starts_with("# duet peers"), "{text}");
        assert_eq!(Peers::parse(&text), Ok(peers.clone()));
        let removed = peers.remove("alice").unwrap();
        assert_eq!(removed.name, "alice");
        assert!(peers.get("alice").is_none());
        assert!(matches!(
            peers.remove("alice"),
            Err(Error::Peer(PeerError::Unknown(_)))
        ));
    }

    #[test]
    fn a_malformed_peers_file_names_the_line() {
        let key = PeerKey(ALICE_PUBLIC);
        let cases = [
            (format!("# c\n\nalice {key} nowhere\n"), "line 3"),
            (format!("alice {key}\nbob\n"), "line 2"),
            (
                format!("alice {key}\nalice {}\n", PeerKey([1; 32])),
                "line 2",
            ),
            ("a:b AAAA\n".to_string(), "line 1"),
            (format!("alice {key} 1.2.3.4:5 extra\n"), "line 1"),
        ];
        for (text, line) in cases {
            let err = Peers::parse(&text).unwrap_err();
            assert!(err.starts_with(line), "{text:?}: {err}");
        }
        // Comments after an entry are allowed.
        let ok = Peers::parse(&format!("alice {key} 1.2.3.4:5 # the laptop\n")).unwrap();
        assert_eq!(
            ok.get("alice").and_then(|p| p.addr),
            "1.2.3.4:5".parse().ok()
        );
    }

    #[test]
    #[cfg(unix)]
    fn files_are_created_private_and_a_readable_identity_is_refused() {
        let tmp = temp_dir("modes");
        let dir = tmp.0.clone();
        let first = Identity::load_or_create(&dir).unwrap();
        let path = dir.join(IDENTITY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(&dir).unwrap();
        assert_eq!(first.public(), again.public());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [IDENTITY_FILE]);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Identity::load_or_create(&dir).unwrap_err();
        assert!(
            matches!(err, Error::InsecureKeyFile { mode: 0o640, .. }),
            "{err}"
        );

        let mut peers = Peers::default();
        peers
            .add(Peer {
                name: "a".into(),
                key: PeerKey([3; 32]),
                addr: None,
            })
            .unwrap();
        peers.save(&dir).unwrap();
        let peers_path = dir.join(PEERS_FILE);
        let mode = fs::metadata(&peers_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Peers::load(&dir).unwrap(), peers);
        // Readable by others (whom you talk to is private): made private on loading.
        fs::set_permissions(&peers_path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Peers::load(&dir).unwrap(), peers);
        let mode = fs::metadata(&peers_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Writable by others (they could add a key): refused.
        fs::set_permissions(&peers_path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            Peers::load(&dir),
            Err(Error::InsecureKeyFile { .. })
        ));
    }

    #[test]
    fn a_malformed_identity_is_refused_without_quoting_it() {
        let tmp = temp_dir("malformed");
        let dir = tmp.0.clone();
        let path = dir.join(IDENTITY_FILE);
        let not_base64 = "not base64 at all but 44 characters long!!!!\n";
        assert_eq!(not_base64.len(), KEY_TEXT_LEN + 1);
        for bad in ["c2VjcmV0LXNlY3JldC1z\n", "", not_base64] {
            let _ = fs::remove_file(&path);
            files::private(&mut fs::OpenOptions::new())
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(bad.as_bytes()))
                .unwrap();
            let err = Identity::load_or_create(&dir).unwrap_err().to_string();
            assert!(err.contains("is not a duet identity"), "{err}");
            assert!(bad.trim().is_empty() || !err.contains(bad.trim()), "{err}");
        }
    }

    #[test]
    fn changes_made_at_once_are_all_kept() {
        let tmp = temp_dir("update");
        let dir = tmp.0.clone();
        // Each thread opens the lock file itself, as a separate duet would.
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    Peers::update(&dir, |peers| {
                        peers.add(Peer {
                            name: format!("p{i}"),
                            key: PeerKey([i; 32]),
                            addr: None,
                        })
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        let peers = Peers::load(&dir).unwrap();
        let mut names: Vec<_> = peers.iter().map(|p| p.name.clone()).collect();
        names.sort();
        assert_eq!(names, (0..8).map(|i| format!("p{i}")).collect::<Vec<_>>());
        // A refused change saves nothing.
        let before = fs::read_to_string(dir.join(PEERS_FILE)).unwrap();
        assert!(Peers::update(&dir, |peers| peers.remove("nobody")).is_err());
        assert_eq!(fs::read_to_string(dir.join(PEERS_FILE)).unwrap(), before);
    }

    #[test]
    fn an_identity_or_peers_that_is_a_directory_is_named_as_such() {
        let tmp = temp_dir("dirs");
        let dir = tmp.0.clone();
        fs::create_dir(dir.join(IDENTITY_FILE)).unwrap();
        let err = Identity::load_or_create(&dir).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{text}");
        assert!(text.contains("is a directory"), "{text}");
        assert!(!text.contains("chmod"), "{text}");
        fs::create_dir(dir.join(PEERS_FILE)).unwrap();
        let text = Peers::load(&dir).unwrap_err().to_string();
        assert!(text.contains("is a directory"), "{text}");
    }

    #[test]
    fn missing_peers_file_is_an_empty_list() {
        let tmp = temp_dir("empty");
        let dir = tmp.0.clone();
        assert_eq!(Peers::load(&dir).unwrap().iter().count(), 0);
    }
}
