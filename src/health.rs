//! What `GET /healthz` reports: the ledger reachable, the scheduler loop seen recently, and
//! the last error.
//!
//! The scheduler loop records each pass ([`Health::pass`]); a reload records its outcome. The
//! report itself ([`Health::report`]) is pure over the recorded state, the ledger probe's result
//! and the monotonic `now`, so its rules are table-tested below. Healthy means: the ledger
//! answered, the loop completed a pass within [`Health::stale_after`], and that pass succeeded.
//! A failed reload is reported but leaves the service healthy (the running config stays).

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use serde::Serialize;

/// The scheduler and reload state `/healthz` reports on.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stale_after: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_pass: Option<Instant>,
    pass_error: Option<String>,
    reload_error: Option<String>,
    next_due: Option<Timestamp>,
}

/// What `/healthz` says after a failed reload, whatever the reason.
pub const RELOAD_FAILED: &str = "the last reload failed and the running config stays in force; \
     the reason is in the journal (journalctl -u convenor)";

/// The JSON body of `/healthz`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// True when all is well (200); false answers 503.
    pub healthy: bool,
    /// `ok`, or the ledger's error.
    pub ledger: String,
    /// Seconds since the scheduler loop last completed a pass or started a send (since start if
    /// neither yet).
    pub scheduler_last_pass_seconds: f64,
    /// The most those seconds may be while healthy.
    pub scheduler_stale_after_seconds: f64,
    /// The last scheduler pass's error, if it failed.
    pub scheduler_error: Option<String>,
    /// The last reload's error, if the last reload failed.
    pub reload_error: Option<String>,
    /// When the next pending mail falls due (RFC 3339), if any.
    pub next_due: Option<String>,
}

impl Health {
    /// A fresh record: the loop counts as seen at `started`; it is stale when no pass completes
    /// within `stale_after`.
    pub fn new(started: Instant, stale_after: Duration) -> Self {
        Self {
            started,
            stale_after,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How long the loop may go without a pass before the service is unhealthy.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a scheduler pass that ended at `at`: its next due instant, or its error.
    pub fn pass(&self, result: Result<Option<Timestamp>, String>, at: Instant) {
        let mut inner = self.inner();
        inner.last_pass = Some(at);
        match result {
            Ok(next) => {
                inner.pass_error = None;
                inner.next_due = next;
            }
            Err(e) => inner.pass_error = Some(e),
        }
    }

    /// Records that the loop, in the middle of a pass, is about to send a mail at `at`: a pass
    /// of several slow sends (each bounded by the SMTP timeout) is a loop at work, not a stuck
    /// one, so it counts as seen like a completed pass.
    pub fn progress(&self, at: Instant) {
        self.inner().last_pass = Some(at);
    }

    /// Records a reload's outcome. Only that it failed is kept, not why: `/healthz` is served on
    /// the public listener (unless `metrics_listen` is set), and a config diagnostic quotes the
    /// values it refused (addresses, names). The reason is in the journal.
    pub fn reload(&self, result: Result<(), String>) {
        self.inner().reload_error = result.err().map(|_| RELOAD_FAILED.to_owned());
    }

    /// The report at monotonic `now`, given the ledger probe's result.
    pub fn report(&self, ledger: Result<(), String>, now: Instant) -> Report {
        let inner = self.inner();
        let since = now.saturating_duration_since(inner.last_pass.unwrap_or(self.started));
        let fresh = since <= self.stale_after;
        Report {
            healthy: ledger.is_ok() && fresh && inner.pass_error.is_none(),
            ledger: ledger.err().unwrap_or_else(|| "ok".to_owned()),
            scheduler_last_pass_seconds: since.as_secs_f64(),
            scheduler_stale_after_seconds: self.stale_after.as_secs_f64(),
            scheduler_error: inner.pass_error.clone(),
            reload_error: inner.reload_error.clone(),
            next_due: inner.next_due.map(|t| t.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(90);

    #[test]
    fn healthy_needs_the_ledger_a_recent_pass_and_no_pass_error() {
        let t0 = Instant::now();
        let h = Health::new(t0, STALE);
        // Before the first pass, the start counts as seen.
        assert!(h.report(Ok(()), t0 + Duration::from_secs(10)).healthy);
        assert!(!h.report(Ok(()), t0 + Duration::from_secs(91)).healthy);

        let due = Timestamp::from_second(1_900_000_000).expect("ts");
        h.pass(Ok(Some(due)), t0 + Duration::from_secs(100));
        let r = h.report(Ok(()), t0 + Duration::from_secs(130));
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.scheduler_last_pass_seconds, 30.0);
        assert_eq!(r.next_due.as_deref(), Some("2030-03-17T17:46:40Z"));

        let r = h.report(Err("disk I/O error".into()), t0 + Duration::from_secs(130));
        assert!(!r.healthy);
        assert_eq!(r.ledger, "disk I/O error");

        h.pass(
            Err("database is locked".into()),
            t0 + Duration::from_secs(140),
        );
        let r = h.report(Ok(()), t0 + Duration::from_secs(141));
        assert!(!r.healthy);
        assert_eq!(r.scheduler_error.as_deref(), Some("database is locked"));

        h.pass(Ok(None), t0 + Duration::from_secs(150));
        assert!(h.report(Ok(()), t0 + Duration::from_secs(150)).healthy);
        assert!(!h.report(Ok(()), t0 + Duration::from_secs(241)).healthy);
    }

    #[test]
    fn a_long_pass_of_sends_keeps_the_loop_fresh() {
        let t0 = Instant::now();
        let h = Health::new(t0, STALE);
        h.pass(Ok(None), t0);
        let late = t0 + STALE + Duration::from_secs(30);
        assert!(
            !h.report(Ok(()), late).healthy,
            "no sign of life for too long"
        );
        h.progress(t0 + STALE);
        let report = h.report(Ok(()), late);
        assert!(report.healthy, "{report:?}");
        assert_eq!(report.scheduler_last_pass_seconds, 30.0);
    }

    #[test]
    fn a_failed_reload_is_reported_but_healthy_and_cleared_by_a_good_one() {
        let t0 = Instant::now();
        let h = Health::new(t0, STALE);
        h.reload(Err("config.toml:3:1: bad".into()));
        let r = h.report(Ok(()), t0);
        assert!(r.healthy);
        // That it failed, not the diagnostic (which quotes config values; /healthz is public).
        assert_eq!(r.reload_error.as_deref(), Some(RELOAD_FAILED));
        h.reload(Ok(()));
        assert_eq!(h.report(Ok(()), t0).reload_error, None);
    }
}
