//! Log setup: text or JSON lines on stderr, level from -v/-q or RUST_LOG.
//!
//! Logged values come from outside the process (an API's field names and row ids, table paths, error
//! text). In a text log a newline in one would start a line of the sender's choosing and an ESC sequence
//! would drive the reader's terminal, so every value is written with its control characters escaped
//! ([`EscapedFields`]), and colour is used only when stderr is a terminal. JSON escapes them by itself.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // Our own crate at the chosen level; dependencies one notch quieter unless RUST_LOG says otherwise.
    let default = format!("warn,deltalake_core=error,pfsync={level}");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour);
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}

/// `text` with every control character (C0, DEL, C1), line and paragraph separator and bidirectional
/// override written as an escape (`\n`, `\u{1b}`), so it stays on one line and cannot drive a terminal.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// An error and every cause under it as one message (`a: b: c`), since a message without its cause ("writing
/// purpleflea.payouts.rejects failed") tells a person nothing to fix. A cause whose text the message already
/// carries (an error that prints its source itself) is not repeated.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        next = cause.source();
    }
    msg
}

/// For a person's terminal: each line escaped as [`escape_control`] does, the lines after the first indented,
/// so a multi-line message (a TOML error pointing at a column) reads as written, and no line of it, whatever
/// text from outside it carries, can pass for a line pfsync printed.
pub fn escape_lines(text: &str) -> String {
    text.trim_end_matches(['\n', '\r'])
        .split('\n')
        .map(|line| escape_control(line.trim_end_matches('\r')).into_owned())
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The text format's fields (`message key=value ...`, as tracing-subscriber writes them), with every value
/// passed through [`escape_control`]. Used for events and for span fields alike.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` records bridged into tracing carry their metadata as fields the format shows elsewhere.
        if name.starts_with("log.") {
            return;
        }
        let mut text = String::new();
        if let Err(e) = write!(text, "{value:?}") {
            self.result = Err(e);
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let value = escape_control(&text);
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            if self.writer.has_ansi_escapes() {
                write!(self.writer, "{separator}\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}")
            } else {
                write!(self.writer, "{separator}{name}={value}")
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_left_alone() {
        assert_eq!(escape_control("agent-1 ünï €"), "agent-1 ünï €");
        assert!(matches!(escape_control("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape_control("a\nb\r\tc"), r"a\nb\r\tc");
        assert_eq!(escape_control("\u{1b}[31mred\u{7f}\u{9b}"), r"\u{1b}[31mred\u{7f}\u{9b}");
        assert_eq!(escape_control("x\u{2028}y\u{202e}z"), r"x\u{2028}y\u{202e}z");
    }

    #[test]
    fn a_message_of_several_lines_keeps_them_indented_and_escaped() {
        assert_eq!(escape_lines("one"), "one");
        assert_eq!(
            escape_lines("a: parse error\n  |\n1 | [x\n  |   ^\n"),
            "a: parse error\n    |\n  1 | [x\n    |   ^"
        );
        assert_eq!(escape_lines("a\r\nb\u{1b}[2J"), "a\n  b\\u{1b}[2J");
    }

    #[test]
    fn an_error_is_shown_with_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("the disk said no")]
        struct Disk;
        #[derive(Debug, thiserror::Error)]
        enum Outer {
            #[error("writing purpleflea.payouts.rejects failed")]
            Quiet(#[source] Disk),
            #[error("writing failed: {0}")]
            Says(#[source] Disk),
        }
        assert_eq!(with_causes(&Outer::Quiet(Disk)), "writing purpleflea.payouts.rejects failed: the disk said no");
        assert_eq!(with_causes(&Outer::Says(Disk)), "writing failed: the disk said no");
    }

    #[test]
    fn every_logged_value_comes_out_on_one_line() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", run_id = %"r\n1");
            let _guard = span.enter();
            let field = "f\nFORGED \u{1b}[2J";
            tracing::warn!(field = %field, debug = ?field, plain = field, "row {}", "id\nFORGED");
        });
        let bytes = captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = String::from_utf8(bytes).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(out.contains(r"row id\nFORGED"), "{out}");
        assert!(out.contains(r"field=f\nFORGED \u{1b}[2J"), "{out}");
        assert!(out.contains(r#"plain="f\nFORGED \u{1b}[2J""#), "{out}");
        assert!(out.contains(r"run{run_id=r\n1}"), "{out}");
    }
}
