//! The application's errors: what a user can act on. The command line maps each to an
//! exit code (`cli::exit`); nothing below the top knows exit codes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong, in words a user can act on.
#[derive(Debug)]
pub enum Error {
    /// Text longer than one message with `--no-split`.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The most one message holds.
        max: usize,
    },
    /// Nothing came back from the peer.
    NoAnswer {
        /// The peer.
        peer: SocketAddr,
        /// How long duet waited, in seconds.
        waited: u64,
    },
    /// Some messages failed.
    NotDelivered {
        /// How many failed.
        failed: usize,
        /// How many were sent.
        total: usize,
    },
    /// The peer refused a file, or could not save it.
    FileNotSaved {
        /// The file's name.
        name: String,
        /// Why, in words.
        why: String,
    },
    /// Not paired with anyone yet.
    NotPaired,
    /// A name that is not in the peers file.
    UnknownPeer {
        /// The name given.
        name: String,
        /// The names that are paired.
        paired: String,
    },
    /// An address alone that no paired peer is recorded at.
    NoPeerAt {
        /// The address given.
        addr: SocketAddr,
        /// The names that are paired.
        paired: String,
    },
    /// A key file's permissions let other users read it (or write it, for the peers file).
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file of the config directory cannot be read, written or understood.
    Config {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, never quoting a secret.
        problem: String,
    },
    /// The network: an address, the socket, the TAP device.
    Transport(crate::transport::Error),
    /// A peer was refused: bad or duplicate name, duplicate key, unknown name.
    Peer(super::keys::PeerError),
    /// `duet pair invite`/`join` did not pair.
    Pairing(super::pair::PairFailure),
    /// Anything else.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLong { len, max } => write!(
                f,
                "text too long for one message ({len} bytes, at most {max}); drop --no-split to send it in several"
            ),
            Error::NoAnswer { peer, waited } => write!(
                f,
                "peer {peer} never answered within {waited} s (is duet running there, on that port?)"
            ),
            Error::NotDelivered { failed, total } => {
                write!(
                    f,
                    "{failed} of {total} messages were not acknowledged by the peer"
                )
            }
            Error::FileNotSaved { name, why } => {
                write!(f, "the peer did not save {name}: {why}")
            }
            Error::NotPaired => f.write_str(
                "not paired with anyone yet: duet talks only to paired peers. Pair with \
                 `duet pair invite NAME` here and `duet pair join NAME CODE --addr HOST:PORT` there, \
                 or exchange `duet id` keys and `duet pair add NAME KEY --addr HOST:PORT`",
            ),
            Error::InsecureKeyFile { path, mode } => {
                let (read, write) = (mode & 0o044 != 0, mode & 0o022 != 0);
                let how = match (read, write) {
                    (true, true) => "readable and writable",
                    (true, false) => "readable",
                    (false, true) => "writable",
                    (false, false) => "accessible",
                };
                let path = path.display();
                write!(
                    f,
                    "{path} is {how} by others (mode {mode:04o}); run: chmod 600 {path}"
                )
            }
            Error::Config { path, problem } => write!(f, "{}: {problem}", path.display()),
            Error::NoPeerAt { addr, paired } => write!(
                f,
                "no paired peer is known at {addr}: say who is there with NAME@{addr} \
                 (paired: {paired}), or record it with `duet pair set-addr NAME {addr}`"
            ),
            Error::Transport(e) => e.fmt(f),
            Error::Peer(e) => e.fmt(f),
            Error::Pairing(e) => e.fmt(f),
            Error::UnknownPeer { name, paired } => write!(
                f,
                "no paired peer is called '{name}' (paired: {paired}); give a name from `duet pair list` or HOST:PORT"
            ),
            Error::Other(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::transport::Error> for Error {
    fn from(e: crate::transport::Error) -> Self {
        Error::Transport(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Other(e.to_string())
    }
}
