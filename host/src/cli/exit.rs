//! Exit codes: the one place where errors become numbers (documented in the README).

use std::io;

use crate::app::Error;
use crate::app::pair::PairFailure;
use crate::transport;

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
    /// `send --file`: the peer refused the file (over its size limit, no space) or could
    /// not save it (it arrived damaged, its disk filled up).
    FileNotSaved = 14,
}

/// The process exit code for `error`.
pub fn exit_code(error: &Error) -> ExitCode {
    match error {
        Error::Transport(e) => transport_exit_code(e),
        Error::TooLong { .. } => ExitCode::TooLong,
        Error::NoAnswer { .. } => ExitCode::NoAnswer,
        Error::NotDelivered { .. } => ExitCode::NotDelivered,
        Error::FileNotSaved { .. } => ExitCode::FileNotSaved,
        Error::NotPaired => ExitCode::NotPaired,
        Error::UnknownPeer { .. } | Error::NoPeerAt { .. } => ExitCode::BadAddress,
        Error::InsecureKeyFile { .. } => ExitCode::InsecureKeyFile,
        Error::Config { .. } | Error::Peer(_) => ExitCode::Failure,
        Error::Pairing(failure) => pairing_exit_code(failure),
        Error::Other(_) => ExitCode::Failure,
    }
}

fn transport_exit_code(error: &transport::Error) -> ExitCode {
    use transport::Error as E;
    match error {
        E::BadAddress { .. } => ExitCode::BadAddress,
        E::Bind { source, .. } => match source.kind() {
            io::ErrorKind::AddrInUse => ExitCode::PortInUse,
            io::ErrorKind::PermissionDenied => ExitCode::PermissionDenied,
            io::ErrorKind::AddrNotAvailable => ExitCode::BadAddress,
            _ => ExitCode::Failure,
        },
        E::Unreachable { source, .. } => match source.kind() {
            io::ErrorKind::PermissionDenied => ExitCode::PermissionDenied,
            _ => ExitCode::Unreachable,
        },
        E::Tap { .. } => ExitCode::Tap,
        E::Io { .. } => ExitCode::Failure,
    }
}

/// 11 when the exchange was refused, 8 when it timed out, 3 when a join has no way to
/// find the inviter.
fn pairing_exit_code(failure: &PairFailure) -> ExitCode {
    match failure {
        PairFailure::CodeMismatch | PairFailure::CodeUsed | PairFailure::Refused => {
            ExitCode::PairingFailed
        }
        PairFailure::NobodyJoined { .. }
        | PairFailure::NoInviter { .. }
        | PairFailure::Unfinished { .. }
        | PairFailure::InviteNotFound { .. }
        | PairFailure::NoPath { .. } => ExitCode::NoAnswer,
        PairFailure::NeedsAddress { .. } => ExitCode::BadAddress,
    }
}
