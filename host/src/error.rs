//! Errors a user can act on, each with its own exit code.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit codes, documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything was delivered (or, in legacy mode, sent).
    Ok = 0,
    /// Anything not listed below.
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// An address could not be parsed or resolved.
    BadAddress = 3,
    /// The local port is taken.
    PortInUse = 4,
    /// The system refused (a port below 1024, a firewall).
    PermissionDenied = 5,
    /// No route to the peer.
    Unreachable = 6,
    /// The text does not fit in one message and splitting was refused.
    TooLong = 7,
    /// The peer never answered.
    NoAnswer = 8,
    /// The peer answered but some messages were not acknowledged.
    NotDelivered = 9,
    /// A key file can be read (the identity) or written (the peers) by other users.
    InsecureKeyFile = 10,
    /// Pairing failed: the code did not match, or the other side stopped the exchange.
    PairingFailed = 11,
    /// No paired peer to talk to (duet talks only to paired peers).
    NotPaired = 12,
    /// `--tap`: the TAP device is missing, not a tap, down, busy, or not allowed.
    Tap = 13,
}

/// What went wrong, in words a user can act on.
#[derive(Debug)]
pub enum Error {
    /// `--to`, `--peer` or `--bind` is not an address.
    BadAddress {
        /// What the user typed.
        text: String,
        /// Why it is not an address.
        source: io::Error,
    },
    /// The socket could not be bound.
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Sending to the peer failed at once (no route, network down).
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
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
    /// Not paired with anyone yet.
    NotPaired,
    /// A name that is not in the peers file.
    UnknownPeer {
        /// The name given.
        name: String,
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
    /// `--tap`: the device cannot be used, or the TAP options do not fit together.
    Tap {
        /// The device's name.
        device: String,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// A peer was refused: bad or duplicate name, duplicate key, unknown name.
    Peer(crate::keys::PeerError),
    /// `duet pair invite`/`join` did not pair.
    Pairing(crate::pair::PairFailure),
    /// Anything else.
    Other(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::BadAddress { .. } => ExitCode::BadAddress,
            Error::Bind { source, .. } => match source.kind() {
                io::ErrorKind::AddrInUse => ExitCode::PortInUse,
                io::ErrorKind::PermissionDenied => ExitCode::PermissionDenied,
                io::ErrorKind::AddrNotAvailable => ExitCode::BadAddress,
                _ => ExitCode::Failure,
            },
            Error::Unreachable { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => ExitCode::PermissionDenied,
                _ => ExitCode::Unreachable,
            },
            Error::TooLong { .. } => ExitCode::TooLong,
            Error::NoAnswer { .. } => ExitCode::NoAnswer,
            Error::NotDelivered { .. } => ExitCode::NotDelivered,
            Error::NotPaired => ExitCode::NotPaired,
            Error::UnknownPeer { .. } => ExitCode::BadAddress,
            Error::InsecureKeyFile { .. } => ExitCode::InsecureKeyFile,
            Error::Config { .. } | Error::Peer(_) => ExitCode::Failure,
            Error::Pairing(failure) => failure.exit_code(),
            Error::Tap { .. } => ExitCode::Tap,
            Error::Other(_) => ExitCode::Failure,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadAddress { text, source } => {
                write!(
                    f,
                    "bad address '{text}': {source} (expected HOST:PORT, e.g. 192.168.1.20:7789)"
                )
            }
            Error::Bind { addr, source } => match source.kind() {
                io::ErrorKind::AddrInUse => {
                    write!(
                        f,
                        "cannot listen on {addr}: port already in use (pick another with --bind)"
                    )
                }
                io::ErrorKind::PermissionDenied => {
                    write!(
                        f,
                        "cannot listen on {addr}: permission denied (ports below 1024 need root)"
                    )
                }
                io::ErrorKind::AddrNotAvailable => {
                    write!(
                        f,
                        "cannot listen on {addr}: no interface of this machine has that address"
                    )
                }
                _ => write!(f, "cannot listen on {addr}: {source}"),
            },
            Error::Unreachable { peer, source } => write!(f, "cannot reach {peer}: {source}"),
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
            Error::Tap { device, problem } => {
                write!(f, "cannot use TAP device {device}: {problem}")
            }
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

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Other(e.to_string())
    }
}
