//! duet's chat core: everything that decides what goes on the wire, with no I/O of its own.
//!
//! - [`wire`]: the duet frame, smoltcp-style (`Frame` wraps a buffer, `Repr` parses/emits).
//! - [`text`]: UTF-8 / GBK conversion and splitting text on character boundaries.
//! - [`session`]: the reliable two-person chat session, sans-IO in quinn-proto's shape.
//! - [`secure`]: that session sealed between two paired keys (Noise IK, ChaCha20-Poly1305).
//! - [`legacy`]: plain datagrams for the tutorial's programs, `nc -u` and socat.
//! - [`ipmsg`]: IP Messenger on the LAN, to chat with IPMsg, FeiQ and iptux users.
//! - [`driver`]: the one loop that moves datagrams between a [`Protocol`] and any
//!   `embedded_nal::UdpFullStack` — the std host, smoltcp on a TAP device and the firmware.
//! - [`time`]: the core's own millisecond `Instant`/`Duration`; the core never reads a clock.
//!
//! The crate is `no_std`, uses no `alloc`, forbids `unsafe`, and never panics on input:
//! every buffer is a fixed `heapless` one sized from [`MAX_DATAGRAM`] or, for the text a
//! session holds, by the const parameters of [`Session`] and [`Secure`].
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` are mutually exclusive: pick one logger");

#[macro_use]
mod fmt;

pub mod driver;
pub mod ipmsg;
pub mod legacy;
pub mod secure;
pub mod session;
#[cfg(feature = "smoltcp")]
pub mod smoltcp_stack;
pub mod text;
pub mod time;
pub mod wire;

pub use driver::{Clock, DriveError, Driver, Protocol, Transmit};
pub use secure::{Secure, SecureConfig, SecureStats, StaticKeys};
pub use session::{Config, Event, FailReason, MessageId, SendError, Session, Stats};
pub use time::{Duration, Instant};

/// The largest datagram duet sends or accepts: the tutorial's `recvfrom(1024)`.
///
/// A received datagram longer than this is rejected and counted, never truncated into a
/// message.
pub const MAX_DATAGRAM: usize = 1024;

/// A buffer that holds any datagram duet sends or accepts.
pub type Datagram = heapless::Vec<u8, MAX_DATAGRAM>;
