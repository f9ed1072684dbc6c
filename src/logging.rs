//! Logging set-up: human lines on a terminal, plain lines for journald, JSON on request.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global tracing subscriber; `RUST_LOG` filters (default `info`).
///
/// Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour, since journald adds
/// its own; `json` prints one JSON object per event.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}
