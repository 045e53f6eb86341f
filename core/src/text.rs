//! Text on and off the wire: UTF-8 everywhere on duet's own wire, GBK for legacy peers.
//!
//! - [`split`] cuts text into parts of at most N bytes on character boundaries, so every
//!   part is valid UTF-8 on its own and the parts join back into the original.
//! - [`decode`] turns received bytes into text pieces and the exact bytes that did not
//!   decode, so a caller can show them escaped; it never panics and never allocates.
//! - [`encode`] turns text into datagrams of at most N bytes in UTF-8 or (feature `gbk`) GBK,
//!   never cutting a character.
//!
//! GBK conversion is `encoding_rs` (no default features, so `no_std`), the WHATWG-conformant
//! implementation browsers use: GBK decoding accepts the full GB18030 range as Windows does.

use crate::MAX_DATAGRAM;

/// A text encoding a legacy peer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Encoding {
    /// UTF-8 (Linux and macOS terminals, Python 3's default).
    Utf8,
    /// GBK / code page 936 (Chinese Windows).
    #[cfg(feature = "gbk")]
    Gbk,
    /// Decode as UTF-8 when the bytes are valid UTF-8, else as GBK (when built with `gbk`).
    /// Encoding in `Auto` writes UTF-8.
    Auto,
}

impl Encoding {
    /// The encoding's usual name.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            #[cfg(feature = "gbk")]
            Encoding::Gbk => "gbk",
            Encoding::Auto => "auto",
        }
    }
}

impl core::str::FromStr for Encoding {
    type Err = TextError;
    fn from_str(s: &str) -> Result<Self, TextError> {
        match s.to_ascii_lowercase_fixed().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            #[cfg(feature = "gbk")]
            "gbk" | "cp936" | "gb2312" => Ok(Encoding::Gbk),
            "auto" => Ok(Encoding::Auto),
            _ => Err(TextError::UnknownEncoding),
        }
    }
}

/// Lower-casing into a small fixed buffer: encoding names are short ASCII words.
trait LowerFixed {
    fn to_ascii_lowercase_fixed(&self) -> heapless::String<16>;
}

impl LowerFixed for str {
    fn to_ascii_lowercase_fixed(&self) -> heapless::String<16> {
        let mut out = heapless::String::new();
        for c in self.chars() {
            if out.push(c.to_ascii_lowercase()).is_err() {
                return heapless::String::new();
            }
        }
        out
    }
}

/// Why text could not be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TextError {
    /// The encoding name is not one duet knows.
    UnknownEncoding,
    /// The part size is too small to hold any character (it must be at least 4 bytes).
    PartTooSmall,
}

impl core::fmt::Display for TextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TextError::UnknownEncoding => "unknown encoding (use utf-8, gbk or auto)",
            TextError::PartTooSmall => "part size too small to hold a character",
        })
    }
}

impl core::error::Error for TextError {}

/// The smallest part size that holds any character in UTF-8 or GBK.
pub const MIN_PART: usize = 4;

/// Split `text` into parts of at most `max` bytes, each cut on a character boundary.
///
/// `max` below [`MIN_PART`] is raised to it, so every part holds at least one character and
/// the iterator always ends. An empty text yields no parts.
pub fn split(text: &str, max: usize) -> Split<'_> {
    Split {
        rest: text,
        max: max.max(MIN_PART),
    }
}

/// Iterator returned by [`split`].
#[derive(Clone, Debug)]
pub struct Split<'a> {
    rest: &'a str,
    max: usize,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut cut = self.rest.len().min(self.max);
        while !self.rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, rest) = self.rest.split_at(cut);
        self.rest = rest;
        Some(part)
    }
}

/// A piece of decoded input: text, or bytes that did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Decoded text.
    Text(&'a str),
    /// Bytes that are not valid in the encoding, in input order.
    Invalid(&'a [u8]),
}

/// Decode `bytes` in `encoding`, handing text and undecodable bytes to `sink` in order.
///
/// Returns the encoding actually used (for [`Encoding::Auto`]: UTF-8 if the bytes are valid
/// UTF-8, else GBK when built with `gbk`, else UTF-8 with invalid runs).
pub fn decode(bytes: &[u8], encoding: Encoding, mut sink: impl FnMut(Piece<'_>)) -> Encoding {
    match encoding {
        Encoding::Utf8 => {
            decode_utf8(bytes, &mut sink);
            Encoding::Utf8
        }
        #[cfg(feature = "gbk")]
        Encoding::Gbk => {
            decode_gbk(bytes, &mut sink);
            Encoding::Gbk
        }
        Encoding::Auto => match core::str::from_utf8(bytes) {
            Ok(text) => {
                if !text.is_empty() {
                    sink(Piece::Text(text));
                }
                Encoding::Utf8
            }
            #[cfg(feature = "gbk")]
            Err(_) => {
                decode_gbk(bytes, &mut sink);
                Encoding::Gbk
            }
            #[cfg(not(feature = "gbk"))]
            Err(_) => {
                decode_utf8(bytes, &mut sink);
                Encoding::Utf8
            }
        },
    }
}

fn decode_utf8(bytes: &[u8], sink: &mut impl FnMut(Piece<'_>)) {
    for chunk in bytes.utf8_chunks() {
        if !chunk.valid().is_empty() {
            sink(Piece::Text(chunk.valid()));
        }
        if !chunk.invalid().is_empty() {
            sink(Piece::Invalid(chunk.invalid()));
        }
    }
}

#[cfg(feature = "gbk")]
fn decode_gbk(bytes: &[u8], sink: &mut impl FnMut(Piece<'_>)) {
    use encoding_rs::DecoderResult;
    let mut decoder = encoding_rs::GBK.new_decoder_without_bom_handling();
    let mut out = [0u8; 256];
    let mut src = bytes;
    // Bytes of `bytes` consumed by earlier rounds: a malformed sequence may begin in a byte
    // the decoder took in an earlier round, so positions are counted in the whole input.
    let mut consumed = 0usize;
    // Each round consumes input or fills `out`, which holds at least one character, so the
    // loop ends; the bound is a second guarantee.
    for _ in 0..=bytes.len() * 2 + 2 {
        let (result, read, written) =
            decoder.decode_to_utf8_without_replacement(src, &mut out, true);
        if let Ok(text) = core::str::from_utf8(out.get(..written).unwrap_or_default())
            && !text.is_empty()
        {
            sink(Piece::Text(text));
        }
        match result {
            DecoderResult::InputEmpty => return,
            DecoderResult::OutputFull => {}
            DecoderResult::Malformed(bad, after) => {
                let end = (consumed + read).saturating_sub(usize::from(after));
                let start = end.saturating_sub(usize::from(bad));
                if let Some(invalid) = bytes.get(start..end) {
                    sink(Piece::Invalid(invalid));
                }
            }
        }
        consumed += read;
        src = src.get(read..).unwrap_or_default();
    }
}

/// What [`encode`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Encoded {
    /// Datagrams handed to the sink.
    pub parts: usize,
    /// Characters the encoding cannot represent, each written as `?`.
    pub unmappable: usize,
}

/// Encode `text` into parts of at most `max` bytes (capped at [`MAX_DATAGRAM`]) without
/// cutting a character, handing each part to `sink`. [`Encoding::Auto`] writes UTF-8.
pub fn encode(
    text: &str,
    encoding: Encoding,
    max: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<Encoded, TextError> {
    let max = max.min(MAX_DATAGRAM);
    if max < MIN_PART {
        return Err(TextError::PartTooSmall);
    }
    match encoding {
        #[cfg(feature = "gbk")]
        Encoding::Gbk => Ok(encode_gbk(text, max, &mut sink)),
        Encoding::Utf8 | Encoding::Auto => {
            let mut parts = 0;
            for part in split(text, max) {
                sink(part.as_bytes());
                parts += 1;
            }
            Ok(Encoded {
                parts,
                unmappable: 0,
            })
        }
    }
}

#[cfg(feature = "gbk")]
fn encode_gbk(text: &str, max: usize, sink: &mut impl FnMut(&[u8])) -> Encoded {
    use encoding_rs::EncoderResult;
    let mut encoder = encoding_rs::GBK.new_encoder();
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut filled = 0;
    let mut report = Encoded::default();
    let mut src = text;
    // encoding_rs never writes part of a character: on OutputFull the buffer ends on a
    // character boundary. Every round consumes input or flushes a non-empty buffer.
    for _ in 0..=text.len() * 2 + 2 {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(src, &mut buf[filled..max], true);
        filled += written;
        src = src.get(read..).unwrap_or_default();
        match result {
            EncoderResult::InputEmpty => break,
            EncoderResult::OutputFull => {
                sink(&buf[..filled]);
                report.parts += 1;
                filled = 0;
            }
            EncoderResult::Unmappable(_) => {
                report.unmappable += 1;
                if filled == max {
                    sink(&buf[..filled]);
                    report.parts += 1;
                    filled = 0;
                }
                buf[filled] = b'?';
                filled += 1;
            }
        }
    }
    if filled > 0 {
        sink(&buf[..filled]);
        report.parts += 1;
    }
    report
}

#[cfg(test)]
mod test {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const MIXED: &str = "你好, duet! 这是一条很长的消息 🎉🚀 with emoji, 中文 and ASCII.";

    #[test]
    fn split_keeps_characters_whole() {
        for max in 1..40 {
            let parts: Vec<&str> = split(MIXED, max).collect();
            assert_eq!(parts.concat(), MIXED, "max {max}");
            for p in &parts {
                assert!(p.len() <= max.max(MIN_PART), "part {p:?} longer than {max}");
                assert!(!p.is_empty());
            }
        }
    }

    #[test]
    fn split_emoji_exactly() {
        // Four 4-byte emoji, parts of 6 bytes: one emoji per part, never half of one.
        let parts: Vec<&str> = split("🎉🚀🎉🚀", 6).collect();
        assert_eq!(parts, ["🎉", "🚀", "🎉", "🚀"]);
        assert_eq!(split("", 10).count(), 0);
    }

    fn decoded(bytes: &[u8], enc: Encoding) -> (Vec<String>, Encoding) {
        let mut pieces = Vec::new();
        let used = decode(bytes, enc, |p| {
            pieces.push(match p {
                Piece::Text(t) => t.into(),
                Piece::Invalid(b) => format!(
                    "<{}>",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ),
            })
        });
        (pieces, used)
    }

    #[test]
    fn utf8_invalid_bytes_are_reported_exactly() {
        let (pieces, used) = decoded(b"ok \xff\xfe end", Encoding::Utf8);
        assert_eq!(pieces.concat(), "ok <ff><fe> end");
        assert_eq!(used, Encoding::Utf8);
    }

    #[test]
    fn encoding_names_parse() {
        assert_eq!("UTF-8".parse(), Ok(Encoding::Utf8));
        assert_eq!("auto".parse(), Ok(Encoding::Auto));
        assert_eq!(
            "latin1".parse::<Encoding>(),
            Err(TextError::UnknownEncoding)
        );
        assert_eq!(
            "a-very-long-encoding-name".parse::<Encoding>(),
            Err(TextError::UnknownEncoding)
        );
    }

    #[test]
    fn encode_utf8_splits_on_boundaries() {
        let mut parts = Vec::new();
        let report = encode(MIXED, Encoding::Utf8, 10, |p| parts.push(p.to_vec())).unwrap();
        assert_eq!(report.parts, parts.len());
        let joined: Vec<u8> = parts.iter().flatten().copied().collect();
        assert_eq!(joined, MIXED.as_bytes());
        assert!(
            parts
                .iter()
                .all(|p| p.len() <= 10 && core::str::from_utf8(p).is_ok())
        );
        assert_eq!(
            encode("x", Encoding::Utf8, 3, |_| {}),
            Err(TextError::PartTooSmall)
        );
    }

    #[cfg(feature = "gbk")]
    mod gbk {
        use super::*;

        #[test]
        fn gbk_round_trip_known_bytes() {
            let mut out = Vec::new();
            encode("你好", Encoding::Gbk, MAX_DATAGRAM, |p| {
                out.extend_from_slice(p)
            })
            .unwrap();
            assert_eq!(out, [0xc4, 0xe3, 0xba, 0xc3]);
            let (pieces, used) = decoded(&out, Encoding::Auto);
            assert_eq!((pieces.concat().as_str(), used), ("你好", Encoding::Gbk));
        }

        #[test]
        fn gbk_parts_never_split_a_character() {
            let text = "中文消息：你好世界，这是测试 abc 一二三四五六七八九十";
            for max in MIN_PART..30 {
                let mut parts = Vec::new();
                encode(text, Encoding::Gbk, max, |p| parts.push(p.to_vec())).unwrap();
                let mut joined = String::new();
                for p in &parts {
                    assert!(p.len() <= max);
                    let (pieces, _) = decoded(p, Encoding::Gbk);
                    let s = pieces.concat();
                    assert!(!s.contains('<'), "part {p:02x?} did not decode alone: {s}");
                    joined.push_str(&s);
                }
                assert_eq!(joined, text, "max {max}");
            }
        }

        #[test]
        fn unmappable_characters_become_question_marks() {
            let mut out = Vec::new();
            let r = encode("a🎉b", Encoding::Gbk, 64, |p| out.extend_from_slice(p)).unwrap();
            assert_eq!(out, b"a?b");
            assert_eq!(
                r,
                Encoded {
                    parts: 1,
                    unmappable: 1
                }
            );
        }

        #[test]
        fn invalid_gbk_is_reported_not_dropped() {
            // A lead byte followed by an invalid trail byte, then valid text.
            let (pieces, _) = decoded(&[0xc4, 0xe3, 0x81, 0x20, 0xba, 0xc3], Encoding::Gbk);
            let joined = pieces.concat();
            assert!(
                joined.starts_with('你') && joined.ends_with('好'),
                "{joined}"
            );
            assert!(joined.contains("<81>"), "{joined}");
        }

        #[test]
        fn every_byte_of_a_broken_four_byte_sequence_is_reported() {
            // 81 30 81 starts a GB18030 four-byte sequence that 20 breaks: the decoder
            // reports the first byte late, after it consumed it in an earlier round.
            let (pieces, _) = decoded(&[0x81, 0x30, 0x81, 0x20, 0x78], Encoding::Gbk);
            assert_eq!(pieces.concat(), "<81>0<81> x");
        }

        #[test]
        fn auto_prefers_utf8() {
            let (pieces, used) = decoded("你好".as_bytes(), Encoding::Auto);
            assert_eq!((pieces.concat().as_str(), used), ("你好", Encoding::Utf8));
        }
    }
}
