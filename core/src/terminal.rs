//! Peer text made safe for a terminal.
//!
//! Whatever a peer wrote — message text, device names, task ids, approval summaries, the reasons
//! in a refusal — may hold escape sequences (clear the screen, set the window title, colour a
//! fake line), a carriage return that overwrites the start of a line, bidi overrides that reorder
//! what is shown (U+202E), or invisible format characters. Every terminal output of Deskhand
//! passes such text through [`line`] (one line) or [`block`] (several lines), or [`json`] for
//! JSON printed to a terminal. Unsafe characters are escaped visibly (`\u{1b}`), not dropped, so
//! the reader sees that something was there; [`block`] marks every continuation line, so a
//! newline in the text cannot start a line that looks like the program's own.

use std::fmt::Write;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` must not reach a terminal as it is: C0 controls (except tab), DEL, C1 controls,
/// format characters (bidi embeddings, overrides and isolates, zero-width characters other than
/// the joiners, tag characters, …), and the Unicode line and paragraph separators.
///
/// Tab only moves right. ZWJ and ZWNJ stay: scripts (Persian, Indic) and emoji sequences need
/// them, and they neither move the cursor nor reorder text.
pub fn is_unsafe(c: char) -> bool {
    match c {
        '\t' | '\u{200C}' | '\u{200D}' => false,
        c if c.is_control() => true,
        c => matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        ),
    }
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `text` as one terminal line: every unsafe character, newlines included, escaped
/// (`\n`, `\r`, `\u{1b}`, `\u{202e}`, …).
pub fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` over several terminal lines: each line as [`line`] makes it (a `\r` before a newline,
/// as in CRLF text, is dropped), and every line after the first starts with `continuation`, so
/// peer text can never begin a line of its own. `continuation` should be visible or at least
/// indent (e.g. `"    │ "`); an empty one is replaced by two spaces.
pub fn block(text: &str, continuation: &str) -> String {
    let continuation = if continuation.is_empty() {
        "  "
    } else {
        continuation
    };
    let mut out = String::with_capacity(text.len());
    for (i, l) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(continuation);
        }
        out.push_str(&line(l.strip_suffix('\r').unwrap_or(l)));
    }
    out
}

/// JSON text (as `serde_json` writes it, compact or pretty) safe for a terminal: unsafe
/// characters, which `serde_json` leaves raw inside strings when they are beyond ASCII, become
/// `\uXXXX` escapes (surrogate pairs above U+FFFF). The value is unchanged for any JSON reader.
/// `serde_json` escapes C0 controls inside strings itself, so a raw newline, carriage return or
/// tab is the layout of pretty output and stays.
pub fn json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) && !matches!(c, '\n' | '\r') {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the red team sent: clear the screen, set the window title, a fake red agent line.
    const ATTACK: &str = "hi\x1b[2J\x1b[H\x1b]0;owned\x07\r\n\x1b[31m[agent] desktop: all good\x1b[0m\u{202e}gnp.exe";

    #[test]
    fn escapes_every_control_and_format_character() {
        let out = line(ATTACK);
        assert!(!out.chars().any(is_unsafe), "{out:?}");
        assert!(!out.contains('\x1b') && !out.contains('\n') && !out.contains('\r'));
        assert_eq!(
            out,
            "hi\\u{1b}[2J\\u{1b}[H\\u{1b}]0;owned\\u{7}\\r\\n\\u{1b}[31m[agent] desktop: all \
             good\\u{1b}[0m\\u{202e}gnp.exe"
        );
        // C1 (8-bit CSI), DEL, zero-width space, BOM, a tag character, line/paragraph separators.
        for c in [
            '\u{9b}',
            '\u{7f}',
            '\u{85}',
            '\u{200b}',
            '\u{feff}',
            '\u{e0041}',
            '\u{2028}',
            '\u{2029}',
            '\u{2066}',
            '\u{200e}',
            '\u{61c}',
        ] {
            assert!(is_unsafe(c), "{c:?}");
            assert_eq!(line(&c.to_string()), format!("\\u{{{:x}}}", c as u32));
        }
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for s in [
            "list ~/Projects",
            "café — naïve 日本語 עברית العربية",
            "tab\tseparated",
            "👩‍💻 family 👨‍👩‍👧 with joiners",
            "می‌خواهم", // Persian with ZWNJ
        ] {
            assert_eq!(line(s), s);
            assert_eq!(block(s, "  | "), s);
            assert_eq!(json(s), s);
        }
    }

    #[test]
    fn continuation_lines_are_marked_so_no_line_starts_with_peer_text() {
        let out = block("first\r\n[agent] desktop: fake\n\x1b[2Kthird", "    | ");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "first",
                "    | [agent] desktop: fake",
                "    | \\u{1b}[2Kthird"
            ]
        );
        assert!(block("a\nb", "").lines().nth(1).is_some_and(|l| l == "  b"));
        // A lone carriage return is escaped, not a line break and not an overwrite.
        assert_eq!(block("a\rb", "> "), "a\\rb");
    }

    #[test]
    fn json_stays_the_same_value_and_loses_unsafe_characters() {
        let v = serde_json::json!({"text": ATTACK, "name": "x\u{202e}y\u{9b}z\u{e0041}"});
        for raw in [
            serde_json::to_string(&v).expect("json"),
            serde_json::to_string_pretty(&v).expect("json"),
        ] {
            assert!(
                raw.chars().any(|c| c != '\n' && is_unsafe(c)),
                "serde_json leaves some raw"
            );
            let safe = json(&raw);
            assert!(!safe.chars().any(|c| c != '\n' && is_unsafe(c)), "{safe}");
            assert_eq!(safe.lines().count(), raw.lines().count(), "layout kept");
            let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
            assert_eq!(back, v);
        }
    }
}
