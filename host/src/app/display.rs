//! Text as it may be shown: anything that could break a line or the terminal (newlines,
//! escape sequences, undecodable bytes) or change how the text around it reads while
//! staying unseen (bidirectional overrides, zero-width characters) escaped. Used for every
//! text that came from a peer or a file before it reaches a terminal.

use std::fmt::Write as _;

use duet_core::text::{self, Encoding, Piece};

/// Append `text` with control characters and invisible formatting characters escaped
/// (`\u{202e}`), so a peer can neither split one message into several lines, nor send
/// escape sequences to the terminal, nor make text read in another order or hide
/// characters in it. The zero-width joiner and non-joiner are kept where they join two
/// visible characters outside ASCII (emoji sequences such as 👩‍💻, Persian and Indic
/// words), where they are part of the text; anywhere else they only hide something.
pub fn push_escaped(out: &mut String, text: &str) {
    // Most text is printable ASCII, which is copied as it is; the rest goes character by
    // character from the first byte that needs a look.
    let plain = text
        .bytes()
        .position(|b| !(b' '..=b'~').contains(&b) || b == b'\\')
        .unwrap_or(text.len());
    out.push_str(&text[..plain]);
    let mut before = text[..plain].chars().next_back();
    let mut chars = text[plain..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            ZWNJ | ZWJ if before.is_some_and(joins) && chars.peek().copied().is_some_and(joins) => {
                out.push(c)
            }
            c if c.is_control() || is_invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        before = Some(c);
    }
}

/// ZERO WIDTH NON-JOINER.
const ZWNJ: char = '\u{200c}';
/// ZERO WIDTH JOINER.
const ZWJ: char = '\u{200d}';

/// Characters that are not controls (`char::is_control`) yet are not seen: they reorder
/// the text around them (the bidirectional embeddings, overrides, isolates and marks:
/// "Trojan Source"), break or join it unseen, or end a line.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' // ARABIC LETTER MARK
        | '\u{200b}'..='\u{200f}' // zero width space, non-joiner, joiner; LRM, RLM
        | '\u{2028}' | '\u{2029}' // line and paragraph separators
        | '\u{202a}'..='\u{202e}' // LRE, RLE, PDF, LRO, RLO
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // LRI, RLI, FSI, PDI
        | '\u{206a}'..='\u{206f}' // deprecated format characters
        | '\u{feff}' // zero width no-break space (byte order mark)
        | '\u{fff9}'..='\u{fffb}' // interlinear annotation
    )
}

/// Whether a zero-width (non-)joiner next to `c` may join: `c` is visible and not ASCII.
fn joins(c: char) -> bool {
    !c.is_ascii() && !c.is_whitespace() && !c.is_control() && !is_invisible(c)
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
        // Printable ASCII is copied as it is, up to the first byte that needs a look.
        assert_eq!(escaped("plain text ~!"), "plain text ~!");
        assert_eq!(escaped("\\start"), "\\\\start");
        assert_eq!(escaped("ascii then\x7f"), "ascii then\\u{7f}");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn bidirectional_and_invisible_characters_are_shown_escaped() {
        // "Trojan Source": an override that makes the end read first.
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}',
            '\u{061c}', '\u{feff}', '\u{2028}', '\u{2029}',
        ] {
            let shown = escaped(&format!("a{c}b"));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", c as u32));
            assert!(!shown.contains(c));
        }
        // A peer's line stays one line for the terminal, too.
        assert_eq!(escaped("one\u{2028}two"), "one\\u{2028}two");
        // In a legacy datagram as in a duet message.
        assert_eq!(
            legacy_text("x\u{2067}y".as_bytes(), Encoding::Auto).0,
            "x\\u{2067}y"
        );
    }

    #[test]
    fn joiners_inside_emoji_and_words_of_other_scripts_are_kept() {
        // Woman technologist; family: the joiners make one picture of several.
        assert_eq!(escaped("👩\u{200d}💻"), "👩\u{200d}💻");
        assert_eq!(escaped("👨\u{200d}👩\u{200d}👧"), "👨\u{200d}👩\u{200d}👧");
        // Persian "I want": the non-joiner is part of the spelling.
        assert_eq!(escaped("می\u{200c}خواهم"), "می\u{200c}خواهم");
        // Anywhere else they hide something: at an end, beside ASCII, doubled.
        assert_eq!(escaped("\u{200d}👩"), "\\u{200d}👩");
        assert_eq!(escaped("👩\u{200d}"), "👩\\u{200d}");
        assert_eq!(escaped("pay\u{200d}pal"), "pay\\u{200d}pal");
        assert_eq!(escaped("👩\u{200d}\u{200d}💻"), "👩\\u{200d}\\u{200d}💻");
        assert_eq!(escaped("👩\u{200d}\u{202e}"), "👩\\u{200d}\\u{202e}");
    }

    #[test]
    fn undecodable_legacy_bytes_are_shown_as_hex() {
        assert_eq!(legacy_text(b"hi \xff", Encoding::Utf8).0, "hi \\xff");
        let (text, used) = legacy_text(&[0xc4, 0xe3, 0xba, 0xc3], Encoding::Auto);
        assert_eq!((text.as_str(), used), ("你好", Encoding::Gbk));
    }
}
