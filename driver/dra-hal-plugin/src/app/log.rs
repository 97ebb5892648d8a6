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
