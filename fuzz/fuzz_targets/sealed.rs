//! `Sealed::new_checked` and its accessors on arbitrary bytes.
//!
//! Checks: no accessor panics after `new_checked`; an accepted datagram has exactly the
//! length its type requires (handshakes) or room for header and tag within the limit
//! (transport); rewriting the header with the values read leaves the bytes unchanged.
#![no_main]

use duet_core::MAX_DATAGRAM;
use duet_core::wire::Sealed;
use duet_core::wire::sealed::{
    DISCOVERY_TAG_LEN, INITIATION_LEN, INITIATION_NOISE_LEN, NONCE_LEN, OVERHEAD, PROBE_LEN,
    RESPONSE_LEN, RESPONSE_NOISE_LEN, TAG_LEN, TRANSPORT_HEADER_LEN, kind,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Sealed::new_checked(data) else {
        return;
    };
    assert!(data.len() <= MAX_DATAGRAM);
    assert_eq!(&data[..2], b"du");
    let (k, index) = (s.kind(), s.index());
    let mut copy = data.to_vec();
    match k {
        kind::INITIATION => {
            assert_eq!(data.len(), INITIATION_LEN);
            assert_eq!(s.noise().len(), INITIATION_NOISE_LEN);
        }
        kind::RESPONSE => {
            assert_eq!(data.len(), RESPONSE_LEN);
            assert_eq!(s.noise().len(), RESPONSE_NOISE_LEN);
            let receiver = s.response_receiver();
            Sealed::new_unchecked(&mut copy[..]).set_response_receiver(receiver);
        }
        kind::TRANSPORT => {
            assert!(data.len() >= OVERHEAD);
            assert_eq!(s.transport_header().len(), TRANSPORT_HEADER_LEN);
            assert!(s.ciphertext().len() >= TAG_LEN);
            assert_eq!(
                s.transport_header().len() + s.ciphertext().len(),
                data.len()
            );
            let counter = s.counter();
            Sealed::new_unchecked(&mut copy[..]).set_counter(counter);
        }
        kind::PROBE | kind::FOUND => {
            assert_eq!(data.len(), PROBE_LEN);
            assert_eq!(s.nonce().len(), NONCE_LEN);
            assert_eq!(s.discovery_tag().len(), DISCOVERY_TAG_LEN);
        }
        other => panic!("new_checked accepted type {other}"),
    }
    Sealed::new_unchecked(&mut copy[..]).set_header(k, index);
    assert_eq!(
        &copy[..],
        data,
        "rewriting the header with what was read changed it"
    );
});
