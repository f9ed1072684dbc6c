//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Mail counts come from the ledger ([`LedgerCounts`], counted by one aggregate query and
//! kept for [`LEDGER_COUNTS_MAX_AGE`], so scrapes in a loop cannot keep the ledger, and the
//! scheduler that shares its lock, busy), so they survive restarts and agree with `convenor
//! plan`: a mail counted `sent` is a ledger row in state `sent`. Feed requests
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
    time::{Duration, Instant},
};

use jiff::Timestamp;

use crate::{
    http::Feeds,
    ledger::{LedgerError, MailCount, MailState, Store},
};

/// How long ledger counts are served from [`LedgerCounts`] before they are counted again.
pub const LEDGER_COUNTS_MAX_AGE: Duration = Duration::from_secs(1);

/// What `/metrics` shows of the ledger: rows per email id and state, and the next due instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    /// [`Store::mail_counts`].
    pub mails: Vec<MailCount>,
    /// [`Store::next_wake`].
    pub next_due: Option<Timestamp>,
}

impl LedgerCounts {
    /// Counts `store`'s rows (one aggregate query and the next-wake lookup).
    pub fn read(store: &impl Store) -> Result<Self, LedgerError> {
        Ok(Self {
            mails: store.mail_counts()?,
            next_due: store.next_wake()?,
        })
    }
}

/// The last [`LedgerCounts`] and when they were read: scrapes within [`LEDGER_COUNTS_MAX_AGE`]
/// of it share it.
#[derive(Debug, Default)]
pub struct CountsCache {
    last: Option<(Instant, std::sync::Arc<LedgerCounts>)>,
}

impl CountsCache {
    /// The counts read at most [`LEDGER_COUNTS_MAX_AGE`] before `now`, if any.
    pub fn fresh(&self, now: Instant) -> Option<std::sync::Arc<LedgerCounts>> {
        self.last
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < LEDGER_COUNTS_MAX_AGE)
            .map(|(_, counts)| counts.clone())
    }

    /// Keeps `counts`, read at `at`.
    pub fn keep(&mut self, at: Instant, counts: std::sync::Arc<LedgerCounts>) {
        self.last = Some((at, counts));
    }
}

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
pub fn render(ledger: &LedgerCounts, feeds: &Feeds, counters: &Counters) -> String {
    let mut mails: BTreeMap<&str, MailCounts> = feeds
        .config
        .emails
        .iter()
        .map(|e| (e.id.as_str(), MailCounts::default()))
        .collect();
    for count in &ledger.mails {
        let c = mails.entry(count.email.as_str()).or_default();
        let n = count.rows;
        match count.state {
            MailState::Sent => c.sent += n,
            MailState::Failed => c.failed += n,
            MailState::Skipped => c.skipped += n,
            MailState::Pending | MailState::Sending => c.pending += n,
            MailState::Held => c.held += n,
        }
        c.retries += count.retries;
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
    let next = ledger.next_due.map(|t| ("", t.as_second()));
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

    /// Scrapes within [`LEDGER_COUNTS_MAX_AGE`] of a count share it; a later one counts again.
    #[test]
    fn ledger_counts_are_shared_for_a_second() {
        let mut cache = CountsCache::default();
        let t0 = Instant::now();
        assert!(cache.fresh(t0).is_none(), "nothing counted yet");
        let counts = std::sync::Arc::new(LedgerCounts::default());
        cache.keep(t0, counts.clone());
        for (after, fresh) in [
            (Duration::ZERO, true),
            (Duration::from_millis(999), true),
            (LEDGER_COUNTS_MAX_AGE, false),
            (Duration::from_secs(60), false),
        ] {
            let got = cache.fresh(t0 + after);
            assert_eq!(got.is_some(), fresh, "{after:?}");
            if let Some(got) = got {
                assert!(std::sync::Arc::ptr_eq(&got, &counts));
            }
        }
    }

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
