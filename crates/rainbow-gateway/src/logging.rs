//! Log output that nobody can forge: every field value (and the message)
//! is written with its control characters escaped, so a value a client or a
//! backend chose (a device id, a channel name, an error text) cannot end a
//! log line and start a fake one, nor write terminal escapes. The line
//! layout is otherwise tracing's usual `message key=value ...`.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Sets up `tracing` output, filtered by `RUST_LOG` (default `info`), with
/// [`EscapedFields`].
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a person at a terminal: a log file gets no
        // escape sequences at all.
        .with_ansi(std::io::stdout().is_terminal())
        .fmt_fields(EscapedFields)
        .try_init();
}

/// Formats fields as tracing's default does, with control characters escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Escaping { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Escaping<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Escaping<'_, '_> {
    fn field(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let mut text = String::new();
        let _ = text.write_fmt(value);
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(&text))
        } else {
            write!(self.writer, "{separator}{name}={}", Escaped(&text))
        };
    }
}

impl Visit for Escaping<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Quoted, as tracing's default writes a string field (its Debug
        // form); `%value` fields come through `record_debug` unquoted.
        if field.name() == "message" {
            self.field(field.name(), format_args!("{value}"));
        } else {
            self.field(field.name(), format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), format_args!("{value:?}"));
    }
}

/// Text with every control character written as an escape (`\n`, `\u{1b}`).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_end_a_line_or_reach_a_terminal() {
        let forged = "dev\n2026-12-06T00:00:00Z  INFO connected identity=fake\u{1b}[31m\r";
        let shown = Escaped(forged).to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "dev\\n2026-12-06T00:00:00Z  INFO connected identity=fake\\u{1b}[31m\\r");
        assert_eq!(Escaped("café ok").to_string(), "café ok");
    }
}
