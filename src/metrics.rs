//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Mail counts come from the ledger at scrape time, so they survive restarts and always agree
//! with `convenor plan`: a mail counted `sent` is a ledger row in state `sent`. Feed requests
//! come from the per-feed atomics of [`crate::http::FeedHits`]; reloads from [`Counters`]; bytes
//! sent with `sendfile` and the sealed bodies from the process-wide counters of
//! [`crate::http::sendfile`]. [`render`] is pure over those inputs.
//!
//! Written by hand: the format is a few lines of text per family, and the `prometheus` and
//! `prometheus-client` crates would need a registry kept in step with the ledger. The
//! integration test parses the output with Python's `prometheus_client` parser.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    http::Feeds,
    ledger::{LedgerRow, MailState},
    scheduler::next_wake,
};

/// Counters the daemon keeps in memory (since start).
#[derive(Debug, Default)]
pub struct Counters {
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Counters {
    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Per email id: rows sent, failed, skipped, attempts after the first, and rows waiting.
#[derive(Default)]
struct MailCounts {
    sent: u64,
    failed: u64,
    skipped: u64,
    retries: u64,
    pending: u64,
    held: u64,
}

/// Renders every metric.
pub fn render(rows: &[LedgerRow], feeds: &Feeds, counters: &Counters) -> String {
    let mut mails: BTreeMap<&str, MailCounts> = feeds
        .config
        .emails
        .iter()
        .map(|e| (e.id.as_str(), MailCounts::default()))
        .collect();
    for row in rows {
        let c = mails.entry(row.key.email.as_str()).or_default();
        match row.state {
            MailState::Sent => c.sent += 1,
            MailState::Failed => c.failed += 1,
            MailState::Skipped => c.skipped += 1,
            MailState::Pending | MailState::Sending => c.pending += 1,
            MailState::Held => c.held += 1,
        }
        c.retries += u64::from(row.attempts.saturating_sub(1));
    }

    let mut out = String::new();
    family(
        &mut out,
        "convenor_build_info",
        "gauge",
        "The running build.",
        [(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
    );
    let per_email = |pick: fn(&MailCounts) -> u64| {
        mails
            .iter()
            .map(move |(id, c)| (format!("{{email=\"{}\"}}", escape(id)), pick(c)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "convenor_mails_sent_total",
        "counter",
        "Mails the server accepted (ledger rows sent), by email id.",
        per_email(|c| c.sent),
    );
    family(
        &mut out,
        "convenor_mails_failed_total",
        "counter",
        "Mails given up on (ledger rows failed), by email id.",
        per_email(|c| c.failed),
    );
    family(
        &mut out,
        "convenor_mails_skipped_total",
        "counter",
        "Mails not sent on purpose (ledger rows skipped), by email id.",
        per_email(|c| c.skipped),
    );
    family(
        &mut out,
        "convenor_mail_retries_total",
        "counter",
        "Send attempts after the first, by email id.",
        per_email(|c| c.retries),
    );
    family(
        &mut out,
        "convenor_mails_pending",
        "gauge",
        "Mails waiting to be sent (pending or sending), by email id.",
        per_email(|c| c.pending),
    );
    family(
        &mut out,
        "convenor_mails_held",
        "gauge",
        "Mails held by the clock-jump guard, by email id.",
        per_email(|c| c.held),
    );
    let next = next_wake(rows).map(|t| ("", t.as_second()));
    family(
        &mut out,
        "convenor_next_due_timestamp_seconds",
        "gauge",
        "When the next pending mail falls due (Unix seconds); absent when none is pending.",
        next,
    );
    let mut feed_list = vec![("calendar".to_owned(), &feeds.calendar)];
    feed_list.extend(
        feeds
            .priorities
            .iter()
            .map(|(id, f)| (format!("priority/{id}"), f)),
    );
    let per_feed = |not_modified: bool| {
        feed_list
            .iter()
            .map(|(name, f)| {
                let (all, unchanged) = f.hits.get();
                let v = if not_modified { unchanged } else { all };
                (format!("{{feed=\"{}\"}}", escape(name)), v)
            })
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "convenor_feed_requests_total",
        "counter",
        "GET and HEAD requests answered per feed.",
        per_feed(false),
    );
    family(
        &mut out,
        "convenor_feed_not_modified_total",
        "counter",
        "Feed requests answered 304 Not Modified.",
        per_feed(true),
    );
    family(
        &mut out,
        "convenor_feed_sendfile_bytes_total",
        "counter",
        "Feed body bytes sent with sendfile from a sealed memfd (bodies of 64 KiB and more).",
        [("", crate::http::sendfile::sendfile_bytes())],
    );
    family(
        &mut out,
        "convenor_feed_sealed_bodies",
        "gauge",
        "Feed bodies held in sealed memfds for sendfile; 0 with big feeds means memfd was refused.",
        [("", crate::http::sendfile::sealed_bodies())],
    );
    family(
        &mut out,
        "convenor_config_reloads_total",
        "counter",
        "Config reloads (SIGHUP) since start, by result.",
        [
            (
                "{result=\"ok\"}".to_owned(),
                counters.reloads_ok.load(Ordering::Relaxed),
            ),
            (
                "{result=\"failed\"}".to_owned(),
                counters.reloads_failed.load(Ordering::Relaxed),
            ),
        ],
    );
    out
}

fn family<L: AsRef<str>, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{} {value}", labels.as_ref());
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("agenda-call"), "agenda-call");
    }

    #[test]
    fn a_family_has_help_type_and_samples() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "X.", [("{a=\"1\"}", 2)]);
        assert_eq!(
            out,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\n"
        );
    }
}
