//! duet's wire types, one file per format, in smoltcp's shape.
//!
//! A packet type (`Frame`) wraps a buffer and offers checked accessors: after
//! [`Frame::new_checked`] no accessor can panic. A `Repr` is the parsed, validated meaning:
//! `Repr::parse` rejects well-formed nonsense, `Repr::emit` never fails on a buffer of
//! `Repr::buffer_len()` bytes.

pub mod frame;
pub mod ipmsg;
pub mod sealed;

pub use frame::{AckInfo, Body, Frame, Payload, Repr, TextEncoding};
pub use sealed::Sealed;

/// The wire layer's only error: the bytes are not a frame duet accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Error;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed duet frame")
    }
}

impl core::error::Error for Error {}

/// The result of a wire operation.
pub type Result<T> = core::result::Result<T, Error>;
