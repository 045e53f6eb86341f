//! The transport layer's errors: binding, addresses, sending, the TAP device.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// What went wrong below the application: an address, a socket or a device.
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
    /// `--tap`: the device cannot be used, or the TAP options do not fit together.
    Tap {
        /// The device's name.
        device: String,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// The socket or the stack failed in another way (receive, poll, options).
    Io {
        /// What duet was doing.
        doing: &'static str,
        /// The system's reason.
        source: io::Error,
    },
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
            Error::Tap { device, problem } => {
                write!(f, "cannot use TAP device {device}: {problem}")
            }
            Error::Io { doing, source } => write!(f, "{doing} failed: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::BadAddress { source, .. }
            | Error::Bind { source, .. }
            | Error::Unreachable { source, .. }
            | Error::Io { source, .. } => Some(source),
            Error::Tap { .. } => None,
        }
    }
}
