//! Logging set-up: human lines on a terminal, journald lines under systemd, JSON on request.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour, since journald adds
//! its own, and start with the sd-daemon(3) priority prefix (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace), which journald turns into the entry's priority, so
//! `journalctl -p warning -u convenor` works. That prefix is all tracing-journald would add for
//! us here, without its own socket. Fields (meeting, email, to, message_id) follow the message
//! as `key=value`. Secrets never reach a log line: the SMTP password is only held by the
//! transport and the feed token is never logged (requests are not logged by path).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Installs the global tracing subscriber; `RUST_LOG` filters (default `info`).
///
/// `json` prints one JSON object per event; otherwise see the module documentation.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_target(false);
        builder
            .with_ansi(false)
            .event_format(Priority(format))
            .try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// Writes `message` to stderr outside tracing: a fatal error, or a config diagnostic printed
/// before logging matters. Under systemd (`JOURNAL_STREAM` set) every line carries `level`'s
/// priority prefix, as tracing's own lines do, so the reason a start failed is filed as an
/// error and `journalctl -p warning` shows it.
pub fn to_stderr(level: Level, message: &str) {
    use std::io::Write as _;
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // Nothing is left to tell the user if stderr itself fails.
    let _ = std::io::stderr().write_all(stderr_text(level, message, journal).as_bytes());
}

/// The text [`to_stderr`] writes: each line of `message`, prefixed with `level`'s priority
/// when `journal`, and ended with a newline.
fn stderr_text(level: Level, message: &str, journal: bool) -> String {
    let mut text = String::with_capacity(message.len() + 8);
    for line in message.lines() {
        if journal {
            text.push_str(&format!("<{}>", priority(level)));
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The sd-daemon(3) priority of a level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each line with `<priority>` for journald.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .map(priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn text_outside_tracing_gets_the_prefix_on_every_line_under_journald_only() {
        let message = "a.toml:3:1: error: one\na.toml:4:1: error: two";
        assert_eq!(
            stderr_text(Level::ERROR, message, true),
            "<3>a.toml:3:1: error: one\n<3>a.toml:4:1: error: two\n"
        );
        assert_eq!(stderr_text(Level::WARN, "w", true), "<4>w\n");
        assert_eq!(
            stderr_text(Level::ERROR, message, false),
            format!("{message}\n")
        );
    }
}
