//! Text as it may be shown: anything that could break a line or the terminal (newlines,
//! escape sequences, undecodable bytes) escaped. Used for every text that came from a peer
//! or a file before it reaches a terminal.

use std::fmt::Write as _;

use duet_core::text::{self, Encoding, Piece};

/// Append `text` with control characters escaped, so a peer can neither split one message
/// into several lines nor send escape sequences to the terminal.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `text` escaped for one line.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

/// Decode a legacy datagram for display: text escaped, undecodable bytes as `\xHH`.
/// Returns the line and the encoding that was used.
pub fn legacy_text(bytes: &[u8], encoding: Encoding) -> (String, Encoding) {
    let mut out = String::with_capacity(bytes.len());
    let used = text::decode(bytes, encoding, |piece| match piece {
        Piece::Text(t) => push_escaped(&mut out, t),
        Piece::Invalid(b) => {
            for byte in b {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    });
    (out, used)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn control_characters_cannot_break_lines_or_reach_the_terminal() {
        assert_eq!(escaped("a\nb\x1b[31mc\\"), "a\\nb\\u{1b}[31mc\\\\");
        assert_eq!(escaped("你好 🎉"), "你好 🎉");
    }

    #[test]
    fn undecodable_legacy_bytes_are_shown_as_hex() {
        assert_eq!(legacy_text(b"hi \xff", Encoding::Utf8).0, "hi \\xff");
        let (text, used) = legacy_text(&[0xc4, 0xe3, 0xba, 0xc3], Encoding::Auto);
        assert_eq!((text.as_str(), used), ("你好", Encoding::Gbk));
    }
}
