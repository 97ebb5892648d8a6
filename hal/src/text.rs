//! Text helpers for values that leave the HAL with a size limit, and the Kubernetes name shapes
//! (DNS labels and subdomains) shared by the kubelet-plugin kit and the allocator.

/// Longest DNS label (`IsDNS1123Label`): device, request and namespace names.
pub const MAX_DNS_LABEL: usize = 63;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (apimachinery's `IsDNS1123Label`).
pub fn is_dns_label(text: &str) -> bool {
    text.len() <= MAX_DNS_LABEL && is_label_shaped(text)
}

/// Dot-separated parts shaped as DNS labels, at most `max` characters in all. As apimachinery's
/// `IsDNS1123Subdomain`, a part may be longer than a label's 63 characters (a node named after a
/// 64-character host name is one).
pub fn is_dns_subdomain(text: &str, max: usize) -> bool {
    text.len() <= max && text.split('.').all(is_label_shaped)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn is_label_shaped(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
/// Kubernetes attribute strings are limited to 64 bytes; pci.ids names exceed that (67-byte product
/// names broke peer drivers' slices), and cutting inside a UTF-8 sequence would panic or produce
/// invalid text.
pub fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// `text` without the whitespace and NUL bytes around it. The kernel ends its text with `\n`, and some
/// arm64 kernels (5.14/5.15 era) end CPU lists and masks with `\n\0`: both are read as the value alone.
pub fn trim_kernel_text(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// Whether a terminal, or a reader of lines, acts on `c` instead of showing it: control characters
/// (C0, DEL and C1: escape sequences, line breaks, `\r`; `\u{9b}` is a CSI to xterm), the Unicode
/// bidi controls that reorder what it shows, and the line and paragraph separators U+2028 and U+2029.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with each character a terminal acts on ([`acts_on_terminal`]) written as JSON escapes it
/// (`\u001b`), for untrusted text (a claim's keys, a CNI plugin's message, a kernel name) put into a
/// message, a log line or a table. Inside a JSON string the escape decodes back to the character.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    escape_where(text, acts_on_terminal, usize::MAX)
}

/// `text` with each character `escaped` picks written as JSON escapes it (`\u001b`; every such
/// character is in the Basic Multilingual Plane), cut to at most `max_chars` characters as shown
/// (an escape counts its six, and is never cut) followed by `…` when longer. The one escaper of the
/// workspace: [`escape_controls`], and `allocator::text`'s table cells, lines and JSON build on it.
pub fn escape_where(
    text: &str,
    escaped: impl Fn(char) -> bool,
    max_chars: usize,
) -> std::borrow::Cow<'_, str> {
    let long = max_chars < usize::MAX && text.chars().nth(max_chars).is_some();
    if !long && !text.contains(&escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len().min(max_chars.saturating_mul(6)) + 16);
    let mut shown = 0usize;
    for c in text.chars() {
        let escape = escaped(c).then(|| format!("\\u{:04x}", u32::from(c)));
        let width = escape.as_ref().map_or(1, String::len);
        if shown.saturating_add(width) > max_chars {
            safe.push('…');
            break;
        }
        shown += width;
        match escape {
            Some(escape) => safe.push_str(&escape),
            None => safe.push(c),
        }
    }
    std::borrow::Cow::Owned(safe)
}

/// The operators (`+ - * / % < > = ! & | ? : . [ ( {` and the keyword `in`) of the CEL expression
/// `expression` outside its string and bytes literals (`"..."`, `'...'`, triple-quoted, raw or not)
/// and its `//` comments: a bound on how deep its parse nests (a chain of operators nests as deep as
/// it is long), checked before a recursive parser sees an expression from a claim or a flag.
pub fn cel_operator_count(expression: &str) -> usize {
    let bytes = expression.as_bytes();
    let word = |at: Option<usize>| {
        at.and_then(|at| bytes.get(at))
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let (mut count, mut i) = (0, 0);
    while let Some(&b) = bytes.get(i) {
        // A comment, to the end of its line: the lexer skips it, quotes in it included.
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while bytes.get(i).is_some_and(|&c| c != b'\n') {
                i += 1;
            }
            continue;
        }
        // `in`, a relational operator: `1 in 1 in ...` chains as `1 + 1 + ...` does.
        if bytes.get(i..i + 2) == Some(b"in") && !word(i.checked_sub(1)) && !word(Some(i + 2)) {
            count += 1;
            i += 2;
            continue;
        }
        if b == b'"' || b == b'\'' {
            let raw = i > 0 && matches!(bytes.get(i - 1), Some(b'r' | b'R'));
            let triple = bytes.get(i..i + 3) == Some(&[b, b, b][..]);
            let quote_len = if triple { 3 } else { 1 };
            i += quote_len;
            while let Some(&c) = bytes.get(i) {
                if c == b'\\' && !raw {
                    i += 2;
                } else if c == b && (!triple || bytes.get(i..i + 3) == Some(&[b, b, b][..])) {
                    i += quote_len;
                    break;
                } else {
                    i += 1;
                }
            }
            continue;
        }
        count += usize::from(b"+-*/%<>=!&|?:.[({".contains(&b));
        i += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_terminal_acts_on_is_escaped_and_the_rest_kept() {
        let hostile = "x\u{1b}]0;t\u{7}\r\nforged \u{202e}exe.\u{9b}2J\u{7f}";
        assert_eq!(
            escape_controls(hostile),
            r"x\u001b]0;t\u0007\u000d\u000aforged \u202eexe.\u009b2J\u007f"
        );
        let plain = "ens1f0 — café \"quoted\" `field` 0000:b1:00.0";
        assert!(matches!(
            escape_controls(plain),
            std::borrow::Cow::Borrowed(p) if p == plain
        ));
    }

    #[test]
    fn cel_operators_are_counted_outside_string_literals() {
        let quoted = r#"device.driver == "a.b+c" && 'x[y]' != r"\" && '''z.'''"#;
        assert_eq!(cel_operator_count(quoted), 9);
        assert_eq!(cel_operator_count(r#"a.b["c\"d"] == 'e\'f'"#), 4);
        assert_eq!(cel_operator_count("1+2*3"), 2);
        assert_eq!(cel_operator_count("'unterminated . + "), 0);
        // A quote in a comment opens no string: what follows is counted.
        let commented = format!("// \"\n{}1 // \"", "1+".repeat(5000));
        assert_eq!(cel_operator_count(&commented), 5000);
        assert_eq!(cel_operator_count("a // + - * \n+ b"), 1);
        // `in` chains like any operator; inside names it is no keyword.
        assert_eq!(
            cel_operator_count(&format!("{}1", "1 in ".repeat(2000))),
            2000
        );
        assert_eq!(cel_operator_count("x in y && inside(lin, in_x, x_in)"), 4);
    }

    #[test]
    fn kernel_text_loses_trailing_nuls_and_whitespace() {
        assert_eq!(trim_kernel_text("0-127\n\0"), "0-127");
        assert_eq!(trim_kernel_text(" ffff,ffffffff\n\0\0"), "ffff,ffffffff");
        assert_eq!(trim_kernel_text("\0\n"), "");
        assert_eq!(trim_kernel_text("a\0b"), "a\0b", "only around the value");
    }
    use proptest::prelude::*;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(truncate_utf8("abc", 64), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        // "é" is two bytes: a cut in its middle backs off to before it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("€uro", 2), "");
    }

    proptest! {
        #[test]
        fn result_is_a_prefix_within_the_limit(text in "\\PC{0,80}", max in 0usize..100) {
            let cut = truncate_utf8(&text, max);
            prop_assert!(cut.len() <= max || cut == text);
            prop_assert!(cut.len() <= max);
            prop_assert!(text.starts_with(cut));
            // Maximal: one more character would not fit.
            if let Some(next) = text.get(cut.len()..).and_then(|rest| rest.chars().next()) {
                prop_assert!(cut.len() + next.len_utf8() > max);
            }
        }
    }
}
