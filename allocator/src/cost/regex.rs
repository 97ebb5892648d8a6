//! What compiling a regular expression costs. kube-cel compiles the pattern of `matches`, `find`
//! and `findAll` at every call, and the compiled program grows with counted repetitions and
//! Unicode classes (`\w{200}` takes 60 ms): the pattern is charged by an upper bound of its
//! program's size, counted as the regex crate builds it (a class by its ranges, a repetition
//! `{n,m}` by m copies, nested repetitions multiplied), two units each (compiling runs at about
//! half a microsecond per unit of size, twice the time of a unit of cost). The regex crate
//! refuses a program past its size limit (10 MiB) after about 0.16 s: no pattern costs more than
//! [`LIMIT`], and a pattern not written as a literal costs that.

/// The most compiling any pattern costs (reaching the regex crate's size limit).
pub(super) const LIMIT: u64 = 600_000;

/// Deeper nesting than the regex crate's parser allows (it refuses the pattern at once).
const NEST_LIMIT: usize = 250;

/// The cost of compiling `pattern`.
pub(super) fn cost(pattern: &str) -> u64 {
    let chars: Vec<char> = pattern.chars().collect();
    let mut at = 0;
    let mut size = alternation(&chars, &mut at, 0);
    // Case-insensitive matching adds the other case of every letter.
    if pattern.contains("(?") && pattern.contains('i') {
        size = size.saturating_mul(2);
    }
    size.saturating_mul(2).min(LIMIT)
}

/// The size of the alternatives from `at` to the next unmatched `)` or the end.
fn alternation(chars: &[char], at: &mut usize, depth: usize) -> u64 {
    if depth > NEST_LIMIT {
        return 0;
    }
    let (mut total, mut branch, mut last) = (0u64, 0u64, 0u64);
    while let Some(&c) = chars.get(*at) {
        *at += 1;
        let atom = match c {
            ')' => {
                *at -= 1;
                break;
            }
            '|' => {
                total = total.saturating_add(branch);
                (branch, last) = (0, 0);
                continue;
            }
            '(' => {
                // `(?flags)` and `(?flags:`, `(?P<name>`, `(?<name>`: no size of their own.
                if chars.get(*at) == Some(&'?') {
                    while let Some(&d) = chars.get(*at) {
                        if d == ')' || d == ':' || d == '>' {
                            break;
                        }
                        *at += 1;
                    }
                    if chars.get(*at) == Some(&')') {
                        *at += 1;
                        continue;
                    }
                    *at += 1;
                }
                let inner = alternation(chars, at, depth + 1);
                *at += 1; // `)`
                inner
            }
            '[' => class(chars, at),
            '\\' => escape(chars, at),
            '.' => 8,
            '^' | '$' => 0,
            '*' | '+' | '?' => {
                // A loop around the last atom (lazy `?` after it: nothing more).
                if chars.get(*at) == Some(&'?') {
                    *at += 1;
                }
                continue;
            }
            '{' => match repetition(chars, at) {
                Some(copies) => {
                    let more = last.saturating_mul(copies.saturating_sub(1));
                    branch = branch.saturating_add(more);
                    last = last.saturating_mul(copies);
                    continue;
                }
                None => 1,
            },
            _ => 1,
        };
        branch = branch.saturating_add(atom);
        last = atom;
    }
    total.saturating_add(branch)
}

/// `{n}`, `{n,}`, `{n,m}` after `{`: how many copies of the atom it makes (none: a literal `{`).
fn repetition(chars: &[char], at: &mut usize) -> Option<u64> {
    let close = chars.get(*at..)?.iter().position(|&c| c == '}')?;
    let text: String = chars.get(*at..*at + close)?.iter().collect();
    let (min, max) = match text.split_once(',') {
        Some((min, max)) => (min.trim(), Some(max.trim())),
        None => (text.trim(), None),
    };
    let min: u64 = min.parse().ok()?;
    let copies = match max {
        None => min,
        Some("") => min.saturating_add(1),
        Some(max) => max.parse::<u64>().ok()?.max(min),
    };
    *at += close + 1;
    Some(copies.max(1))
}

/// A class `[...]` after `[`: its members, Unicode classes by their ranges.
fn class(chars: &[char], at: &mut usize) -> u64 {
    let mut size: u64 = 8; // a negated or case-folded class splits into more ranges
    let mut depth = 1;
    let mut first = true;
    while let Some(&c) = chars.get(*at) {
        *at += 1;
        match c {
            ']' if !first => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            '[' => depth += 1,
            '\\' => size = size.saturating_add(escape(chars, at)),
            _ => size = size.saturating_add(1),
        }
        first = c == '^' && first;
    }
    size
}

/// An escape after `\`: a Unicode class by its ranges (`\w` 800, `\pL` 800, `\d` 64, `\s` 32), else
/// one character.
fn escape(chars: &[char], at: &mut usize) -> u64 {
    let Some(&c) = chars.get(*at) else {
        return 1;
    };
    *at += 1;
    match c {
        'w' | 'W' => 800,
        'd' | 'D' => 64,
        's' | 'S' => 32,
        'p' | 'P' => {
            if chars.get(*at) == Some(&'{') {
                while let Some(&d) = chars.get(*at) {
                    *at += 1;
                    if d == '}' {
                        break;
                    }
                }
            } else {
                *at += 1;
            }
            800
        }
        _ => 1,
    }
}
