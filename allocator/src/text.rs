//! Untrusted text (names from a user's YAML, strings a sysfs tree or a vendor library gives) made safe
//! to print: to a terminal, in a table, in JSON or in YAML.
//!
//! A terminal acts on control characters (an escape sequence recolours it or sets its title, `\r`
//! and `\n` start a line of the value's choosing) and on the Unicode bidi controls (which reorder
//! what follows them). Escaping them in each value before it goes into a line of output keeps the
//! value on its line and in its order; the output's own line breaks stay. Escapes are written as
//! JSON writes them (`\u001b`), by the workspace's one escaper ([`hal::text::escape_where`]), as the
//! plugin's log lines and messages are.

use std::borrow::Cow;

use hal::text::{acts_on_terminal, escape_controls, escape_where};

/// One untrusted value as it goes into a table cell or a line of text: every character a terminal
/// acts on ([`hal::text::acts_on_terminal`]: newline, carriage return and tab included) written as
/// `\u001b`, so the value shows on its line, in its order, and adds no line of its own.
pub fn field_safe(text: &str) -> Cow<'_, str> {
    escape_controls(text)
}

/// [`field_safe`], cut to at most `max_chars` characters (escapes counted as they show, and never
/// cut in the middle) followed by `…` when longer: for a table cell whose value may be huge (a 64 KiB
/// sysfs attribute).
pub fn field_safe_bounded(text: &str, max_chars: usize) -> Cow<'_, str> {
    escape_where(text, acts_on_terminal, max_chars)
}

/// The longest an untrusted value shows in a table cell, in characters; longer ones end in `…`.
/// Longer than any real value (Kubernetes names reach 253 characters, pci.ids names about 140,
/// NVML's product names 96 bytes, interface names 15, RDMA device names 63), short enough that a
/// hostile 64 KiB value takes about three lines of a terminal instead of pages. The JSON and YAML
/// forms keep the whole value.
pub const MAX_CELL_CHARS: usize = 256;

/// One untrusted value as it goes into a table cell: [`field_safe_bounded`] at [`MAX_CELL_CHARS`].
pub fn cell(text: &str) -> Cow<'_, str> {
    field_safe_bounded(text, MAX_CELL_CHARS)
}

/// Text of several lines (a message, a whole table): as [`field_safe`], but newline and tab kept.
pub fn lines_safe(text: &str) -> Cow<'_, str> {
    escape_where(
        text,
        |c| acts_on_terminal(c) && c != '\n' && c != '\t',
        usize::MAX,
    )
}

/// Serialized JSON (or a YAML double-quoted scalar written as JSON) with every character that
/// serde_json leaves raw but a terminal acts on or YAML does not accept raw written as `\u009b`:
/// DEL, C1 controls, U+2028, U+2029, the bidi controls, and U+FFFE/U+FFFF (not printable in YAML).
/// serde_json already escapes the C0 controls. Outside strings JSON has only ASCII punctuation,
/// digits, letters and whitespace, so only string contents change, to the same value.
pub fn json_safe(json: String) -> String {
    let raw = |c: char| {
        (acts_on_terminal(c) && u32::from(c) >= 0x7f) || matches!(c, '\u{fffe}' | '\u{ffff}')
    };
    match escape_where(&json, raw, usize::MAX) {
        Cow::Borrowed(_) => json,
        Cow::Owned(safe) => safe,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_field_cannot_start_a_line_colour_the_terminal_or_reorder_text() {
        let hostile = "ens1f0\n  0000:00:1f.0\r\tx\u{1b}[31m\u{9b}0m\u{7f}\u{85}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{61c}";
        assert_eq!(
            field_safe(hostile),
            "ens1f0\\u000a  0000:00:1f.0\\u000d\\u0009x\\u001b[31m\\u009b0m\\u007f\\u0085\\u2028\\u2029\\u202e\\u2066\\u200f\\u061c"
        );
        let plain = "NVIDIA H100 PCIe — café \"x\" 0000:b1:00.0";
        assert!(matches!(field_safe(plain), Cow::Borrowed(p) if p == plain));
        // Lines of a whole output keep their line breaks and tabs, nothing else.
        assert_eq!(
            lines_safe("a\tb\nc\r\u{202e}d\n"),
            "a\tb\nc\\u000d\\u202ed\n"
        );
    }

    #[test]
    fn a_long_field_is_cut_with_a_marker_never_inside_an_escape() {
        assert_eq!(field_safe_bounded("abcdef", 6), "abcdef");
        assert!(matches!(field_safe_bounded("abcdef", 6), Cow::Borrowed(_)));
        assert_eq!(field_safe_bounded("abcdefg", 6), "abcdef…");
        // `\u{1b}` is six characters: it fits whole or not at all.
        assert_eq!(field_safe_bounded("abc\u{1b}def", 8), "abc…");
        assert_eq!(field_safe_bounded("abc\u{1b}def", 9), "abc\\u001b…");
        let huge = "é".repeat(65536);
        assert_eq!(field_safe_bounded(&huge, 256).chars().count(), 257);
    }

    #[test]
    fn json_keeps_its_value_and_shows_no_raw_c1_del_separator_or_bidi() {
        let value = "GB300\u{9b}31m \u{7f} \u{85} \u{2028}\u{2029} \u{202e}evil \u{fffe} \u{1b} é";
        let json = json_safe(serde_json::to_string(value).unwrap());
        assert_eq!(
            json,
            "\"GB300\\u009b31m \\u007f \\u0085 \\u2028\\u2029 \\u202eevil \\ufffe \\u001b é\""
        );
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), value);
    }
}
