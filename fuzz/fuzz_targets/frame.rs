//! `Frame::new_checked` and `Repr::parse` on arbitrary bytes.
//!
//! Checks: no accessor panics after `new_checked`; `parse` refuses what `check_len` refuses;
//! a frame `parse` accepts emits back to exactly the same bytes, parses again to the same
//! `Repr`, and fits a sealed datagram.
#![no_main]

use duet_core::MAX_DATAGRAM;
use duet_core::wire::frame::{HEADER_LEN, MAX_PAYLOAD};
use duet_core::wire::sealed::OVERHEAD;
use duet_core::wire::{Body, Frame, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::new_checked(data) else {
        assert!(
            Repr::parse(&Frame::new_unchecked(data)).is_err(),
            "parse accepted a buffer check_len refuses"
        );
        return;
    };
    // Every accessor, which must not panic once check_len passed.
    let _ = (
        frame.magic(),
        frame.version(),
        frame.kind(),
        frame.flags(),
        frame.encoding(),
        frame.epoch(),
        frame.seq(),
        frame.base(),
        frame.ack_epoch(),
        frame.ack(),
        frame.ack_bits(),
    );
    assert_eq!(frame.payload().len(), usize::from(frame.payload_len()));
    assert!(frame.frame_len() <= data.len());
    let Ok(repr) = Repr::parse(&frame) else {
        return;
    };
    assert_ne!(repr.epoch, 0, "a frame with epoch zero was accepted");
    if let Some(ack) = repr.ack {
        assert_ne!(ack.epoch, 0);
    }
    if let Body::Data { seq, payload, .. } = repr.body {
        assert!(!payload.is_empty(), "an empty DATA part was accepted");
        assert!(
            repr.base <= seq,
            "a part below the sender's base was accepted"
        );
    }
    let len = repr.buffer_len();
    assert_eq!(len, data.len(), "buffer_len differs from the parsed length");
    assert!(len <= HEADER_LEN + MAX_PAYLOAD);
    assert!(
        len + OVERHEAD <= MAX_DATAGRAM,
        "a frame too long to seal was accepted"
    );
    let mut out = vec![0xa5u8; len];
    repr.emit(&mut Frame::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], data, "parse → emit changed the bytes");
    let again = Frame::new_checked(&out[..]).expect("emitted frame fails check_len");
    assert_eq!(
        Repr::parse(&again),
        Ok(repr),
        "emit → parse changed the frame"
    );
});
