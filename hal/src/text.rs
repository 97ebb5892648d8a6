//! Text helpers for values that leave the HAL with a size limit.

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

#[cfg(test)]
mod tests {
    use super::*;

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
