//! The plugin's log, as `kubectl logs` shows it: one line per event, whatever its fields hold. Claim
//! configs, CNI plugins' messages, the names a pod gives its interfaces and kernel strings reach log
//! fields, and the text format writes a field's `Display` as it is: an escape sequence in it would
//! reach the reader's terminal and a newline would forge a line. Every control character and Unicode
//! bidi control of an event is escaped as JSON escapes it (`\u001b`) before it is written, so a
//! JSON line still decodes to the field's text (the JSON format escapes the C0 ones itself). No colours: the log is read through a pipe.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::LogFormat;

/// The subscriber of `--log-format`, writing through `writer`.
pub(super) fn subscriber<M>(
    format: LogFormat,
    filter: EnvFilter,
    writer: M,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    M: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// The levels `RUST_LOG` takes, alone or after a target's `=`.
const LEVELS: &str = "trace, debug, info, warn, error, off";

/// The filter of `RUST_LOG`'s text: `None` or blank is `info`. Refused, rather than read as
/// something else: a text that does not parse (tracing's own reading would fall back to `info`
/// in silence), and a bare word that is not a level (tracing reads `warning` as a target, turning
/// every other event off).
pub(super) fn filter(rust_log: Option<&str>) -> Result<EnvFilter, String> {
    let text = rust_log
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("info");
    let shown = hal::text::escape_where(text, hal::text::acts_on_terminal, 200);
    for directive in text.split(',').map(str::trim) {
        let bare = !directive.is_empty() && !directive.contains(['=', '[']);
        if bare
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            let word = hal::text::escape_where(directive, hal::text::acts_on_terminal, 60);
            let hint = match level_meant(directive) {
                Some(level) => format!("did you mean {level:?}? "),
                None => String::new(),
            };
            return Err(format!(
                "RUST_LOG {shown:?}: {word:?} is not a level ({LEVELS}): {hint}a target needs \
                 its level, as in {:?}",
                format!("{word}=debug")
            ));
        }
    }
    // Spaces around a directive and its `=` (`info , driver= debug`, which the chart's schema
    // lets through) are not the filter's syntax: dropped. A span filter (`[...]`) is left as written.
    let directives: Vec<String> = (text.split(',').map(str::trim))
        .filter(|d| !d.is_empty())
        .map(|d| match d.split_once('=') {
            Some((target, level)) if !d.contains('[') => {
                format!("{}={}", target.trim(), level.trim())
            }
            _ => d.to_owned(),
        })
        .collect();
    EnvFilter::builder().parse(directives.join(",")).map_err(|error| {
        format!(
            "RUST_LOG {shown:?}: {error} (levels: {LEVELS}; directives as in \"info,driver=debug\")"
        )
    })
}

/// The level a word that is not one probably means.
fn level_meant(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    Some(match word.as_str() {
        "warning" | "warnings" | "wrn" => "warn",
        "err" | "errors" | "fatal" | "critical" | "crit" | "panic" => "error",
        "information" | "informational" | "notice" | "inf" => "info",
        "verbose" | "dbg" | "debugging" => "debug",
        "all" | "trc" | "tracing" => "trace",
        "none" | "quiet" | "silent" | "disabled" | "false" => "off",
        _ => return None,
    })
}

/// A writer of whole events (the formatter writes each event, its newline last, in one call) that
/// escapes what a terminal would act on.
pub(super) struct SafeLines<W>(pub W);

impl<W: Write> Write for SafeLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        match hal::text::escape_controls(body) {
            std::borrow::Cow::Borrowed(_) => self.0.write_all(buf)?,
            // JSON's escapes, which the JSON format's strings decode back to the characters.
            std::borrow::Cow::Owned(safe) => self.0.write_all((safe + end).as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the plugin's subscriber writes for one warning whose error field is `error`.
    fn logged(format: LogFormat, error: &str) -> String {
        let buffer = Buffer::default();
        let writer = {
            let buffer = buffer.clone();
            move || SafeLines(buffer.clone())
        };
        let subscriber = subscriber(format, EnvFilter::new("info"), writer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(claim = "uid-1", %error, "prepare failed");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// A claim's opaque config with a key that sets the terminal's title, clears the screen and
    /// forges a line, as the claim's error names it.
    const HOSTILE: &str = "claim ns/c: parameters.x\u{1b}]0;owned\u{7}\u{1b}[2J\r\n\
        2026-01-01T00:00:00.000000Z  INFO driver::plugin::prepare: claim prepared \u{202e}\u{9b}2J";

    #[test]
    fn an_event_is_one_line_with_nothing_a_terminal_acts_on() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let line = logged(format, HOSTILE);
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert!(line.ends_with('\n'), "{line}");
            assert!(
                !line.trim_end().contains(hal::text::acts_on_terminal),
                "{format:?}: {line:?}"
            );
            assert!(line.contains("prepare failed"), "{line}");
        }
        let text = logged(LogFormat::Text, HOSTILE);
        assert!(
            text.contains(r"x\u001b]0;owned\u0007\u001b[2J\u000d\u000a2026"),
            "{text}"
        );
        assert!(text.contains(r"\u202e\u009b2J"), "{text}");
        // A JSON line decodes to the field's text.
        let json = logged(LogFormat::Json, HOSTILE);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["fields"]["error"], HOSTILE);
    }

    #[test]
    fn rust_log_levels_and_directives_are_taken() {
        for text in [
            None,
            Some(""),
            Some("  "),
            Some("warn"),
            Some("WARN"),
            Some("3"),
            Some("off"),
            Some("info,driver=debug"),
            Some("driver::plugin=trace, info"),
            Some("info , driver=debug"),
            Some("driver= debug ,warn"),
            Some("info,"),
        ] {
            assert!(filter(text).is_ok(), "{text:?}: {:?}", filter(text).err());
        }
        assert_eq!(filter(None).unwrap().to_string(), "info");
        assert_eq!(filter(Some(" ")).unwrap().to_string(), "info");
    }

    /// `warning` is a target for tracing: every event but that target's would be off.
    #[test]
    fn a_word_that_is_not_a_level_is_refused_with_the_level_meant() {
        let error = filter(Some("warning")).unwrap_err();
        assert_eq!(
            error,
            "RUST_LOG \"warning\": \"warning\" is not a level (trace, debug, info, warn, error, \
             off): did you mean \"warn\"? a target needs its level, as in \"warning=debug\""
        );
        let error = filter(Some("info,driver")).unwrap_err();
        assert!(
            error.starts_with("RUST_LOG \"info,driver\": \"driver\" is not a level"),
            "{error}"
        );
        assert!(!error.contains("did you mean"), "{error}");
    }

    #[test]
    fn a_filter_that_does_not_parse_is_refused_naming_rust_log() {
        for text in ["driver=loud", "info,[unclosed", "=debug"] {
            let Err(error) = filter(Some(text)) else {
                panic!("{text:?} taken");
            };
            assert!(
                error.starts_with(&format!("RUST_LOG {text:?}: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn plain_events_are_written_as_they_are() {
        let line = logged(
            LogFormat::Text,
            "claim ns/c: device gpu-0 is not published — café",
        );
        assert!(
            line.contains("claim ns/c: device gpu-0 is not published — café\n"),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "no colours: {line:?}");
    }
}
