//! Making text from other members or the relay safe to print on a terminal.
//!
//! Every C0 control (including newline, carriage return and tab) and DEL is shown in caret
//! notation (`ESC` becomes `^[`, a newline `^J`), every C1 control, bidirectional override or
//! isolate, line or paragraph separator, and invisible tag character is shown as `<U+XXXX>`.
//! The result is one line that cannot move the cursor, change colours, reorder the text around
//! it, or start a new line that looks like a notice.

use std::fmt::Write;

use chatroom_crypto::PublicIdentity;

/// Whether `c` must not reach the terminal as is.
pub fn is_dangerous(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        // Arabic letter mark, LRM, RLM, bidi embeddings/overrides, isolates.
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        // Line and paragraph separators, byte order mark, interlinear annotations.
        | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        // Invisible tag characters.
        | '\u{e0000}'..='\u{e007f}')
}

/// Returns `text` with every dangerous character made visible and harmless.
pub fn neutralize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !is_dangerous(c) {
            out.push(c);
        } else if (c as u32) < 0x20 {
            out.push('^');
            // 0x00..0x1f map to '@'..'_'.
            out.push(char::from(b'@' + c as u8));
        } else if c == '\u{7f}' {
            out.push_str("^?");
        } else {
            let _ = write!(out, "<U+{:04X}>", c as u32);
        }
    }
    out
}

/// `neutralize`, and then whitespace that could pad a line so that it wraps on the terminal
/// into what looks like another line (`HH:MM:SS <alice> ...`) is made visible: every space
/// other than U+0020 (no-break, em, ideographic, zero-width ...) as `<U+XXXX>`, and each run of
/// two or more U+0020 spaces as one space and a count, `a <+4 spaces>b`. For line mode, where
/// each message must be one line that starts with its own sender.
pub fn neutralize_line(text: &str) -> String {
    let shown = neutralize(text);
    let mut out = String::with_capacity(shown.len());
    let mut run = 0usize;
    let flush = |out: &mut String, run: usize| match run {
        0 => {}
        1 => out.push(' '),
        n => {
            let _ = write!(out, " <+{} spaces>", n - 1);
        }
    };
    for c in shown.chars() {
        if c == ' ' {
            run += 1;
            continue;
        }
        flush(&mut out, std::mem::take(&mut run));
        if is_odd_space(c) {
            let _ = write!(out, "<U+{:04X}>", c as u32);
        } else {
            out.push(c);
        }
    }
    flush(&mut out, run);
    out
}

/// Spaces other than U+0020, visible or not.
fn is_odd_space(c: char) -> bool {
    (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{180e}' | '\u{3164}' | '\u{115f}' | '\u{1160}'
        )
}

/// A short tag of an identity key, shown beside a nickname: the first four bytes of the
/// key in hex. Two members can choose the same-looking nickname, not the same key.
pub fn key_tag(identity: &PublicIdentity) -> String {
    hex::encode(&identity.0[..4])
}

/// An index in `0..n` chosen by the identity key (for a nickname's colour): the same key has
/// the same colour everywhere, and a look-alike nickname under another key most likely not.
pub fn key_colour(identity: &PublicIdentity, n: usize) -> usize {
    let x = u32::from_be_bytes([identity.0[4], identity.0[5], identity.0[6], identity.0[7]]);
    x as usize % n.max(1)
}

/// `neutralize`, cut to at most 80 characters: for echoing user input inside error messages.
pub fn neutralize_short(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    let mut out = neutralize(&cut);
    if text.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escape_sequences_are_shown_not_executed() {
        assert_eq!(neutralize("\u{1b}[2J\u{1b}[H"), "^[[2J^[[H");
        assert_eq!(neutralize("\u{1b}]0;title\u{7}"), "^[]0;title^G");
        assert_eq!(neutralize("a\u{9b}31m"), "a<U+009B>31m");
        assert_eq!(neutralize("del\u{7f}"), "del^?");
    }

    #[test]
    fn newlines_cannot_forge_a_second_line() {
        let forged = "hi\n-!- alice is now an operator\r\u{2028}x\u{85}";
        let shown = neutralize(forged);
        assert_eq!(shown, "hi^J-!- alice is now an operator^M<U+2028>x<U+0085>");
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn bidi_controls_are_visible() {
        assert_eq!(neutralize("abc\u{202e}fed\u{202c}"), "abc<U+202E>fed<U+202C>");
        assert_eq!(neutralize("\u{2066}x\u{2069}\u{200f}"), "<U+2066>x<U+2069><U+200F>");
    }

    #[test]
    fn ordinary_unicode_is_untouched() {
        for s in ["héllo wörld", "日本語", "مرحبا", "👩‍👩‍👧 family", "tab-free text"] {
            assert_eq!(neutralize(s), s);
        }
    }

    #[test]
    fn padding_cannot_wrap_into_a_forged_line() {
        let padded = format!("hi{}12:00:00 <alice> send money", " ".repeat(70));
        assert_eq!(neutralize_line(&padded), "hi <+69 spaces>12:00:00 <alice> send money");
        assert_eq!(neutralize_line("a b  c"), "a b <+1 spaces>c");
        assert_eq!(neutralize_line("x\u{a0}\u{3000}\u{200b}y"), "x<U+00A0><U+3000><U+200B>y");
        assert_eq!(neutralize_line("end  "), "end <+1 spaces>");
        assert_eq!(neutralize_line("tab\there"), "tab^Ihere");
    }

    #[test]
    fn short_form_is_bounded() {
        assert_eq!(neutralize_short(&"x".repeat(200)).len(), 83);
    }

    proptest! {
        #[test]
        fn output_never_contains_dangerous_characters(s in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f\u{202a}-\u{202e}a]*") {
            let shown = neutralize(&s);
            prop_assert!(!shown.chars().any(is_dangerous));
            prop_assert!(!shown.contains('\n'));
            let line = neutralize_line(&s);
            prop_assert!(!line.chars().any(|c| is_dangerous(c) || is_odd_space(c)));
            prop_assert!(!line.contains("  "));
        }
    }
}
