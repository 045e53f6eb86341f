//! Standard base64 (RFC 4648, with padding) for 32-byte keys: how `duet id` prints a public
//! key, so keys are copied between the board's console and a host duet as they are.
//!
//! Dependency-free and `no_std`; `build.rs` includes this file too, to read
//! `DUET_BOARD_SECRET` and `DUET_PEER_KEY`. Decoding never panics and rejects anything that
//! is not exactly one padded 32-byte key.

/// Characters of a 32-byte key in base64: 43 and one `=`.
pub const KEY_TEXT_LEN: usize = 44;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `key` in base64, as ASCII bytes.
pub fn encode_key(key: &[u8; 32]) -> [u8; KEY_TEXT_LEN] {
    let mut out = [b'='; KEY_TEXT_LEN];
    // 32 bytes = 10 whole groups of 3, then 2 bytes (3 characters and one '=').
    for (group, chunk) in key.chunks(3).enumerate() {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, slot) in out[group * 4..group * 4 + 4].iter_mut().enumerate() {
            if i <= chunk.len() {
                *slot = ALPHABET[(n >> (18 - 6 * i) & 63) as usize];
            }
        }
    }
    out
}

/// The 32-byte key `text` encodes, if it is one (surrounding spaces allowed).
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim_ascii().as_bytes();
    if text.len() != KEY_TEXT_LEN || text[KEY_TEXT_LEN - 1] != b'=' {
        return None;
    }
    let mut key = [0u8; 32];
    let mut bits = 0u32;
    let mut nbits = 0u32;
    let mut len = 0;
    for &c in &text[..KEY_TEXT_LEN - 1] {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = bits << 6 | value;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            *key.get_mut(len)? = (bits >> nbits) as u8;
            len += 1;
            bits &= (1 << nbits) - 1;
        }
    }
    // 43 characters carry 258 bits: 32 bytes and 2 bits that must be zero.
    (len == 32 && bits == 0).then_some(key)
}
