//! The scheduler loop: sleep towards the next due instant, decide, claim, send, record.
//!
//! Timers run on the monotonic clock, which stops during suspend and ignores clock steps, so the
//! loop sleeps in slices of at most [`MAX_SLICE`] and re-reads the wall clock ([`Clock`]) each
//! time. It also wakes when a reload replans ([`Scheduler::wake`]) and stops when its shutdown
//! future completes (an attempt cut short stays `sending` and is sent again on the next start).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::{
    decide::{self, Action},
    outbox::Outbox,
};
use crate::{
    ledger::{LedgerError, MailKey, MailState, Outcome, Store},
    model::Config,
};

/// The longest the loop sleeps before re-reading the wall clock.
pub const MAX_SLICE: Duration = Duration::from_secs(60);

/// The shortest pause between passes, so a row that cannot be settled never spins the CPU.
const MIN_SLICE: Duration = Duration::from_millis(100);

/// After the shutdown signal, how long a pass under way may go on so that a mail in flight
/// finishes (within systemd's `TimeoutStopSec=30s`). Mails not reached stay `pending`; one cut
/// off at this bound stays `sending` and goes out again at the next start, same Message-ID.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl<F: Fn() -> Timestamp + Send + Sync + 'static> Clock for F {
    fn now(&self) -> Timestamp {
        self()
    }
}

/// The store shared by the loop and the reload path.
pub type SharedStore<S> = Arc<Mutex<S>>;

/// Locks the shared store; a panic while it was held does not poison the data (every write is
/// its own transaction), so the guard is taken back.
pub fn lock<S>(store: &SharedStore<S>) -> std::sync::MutexGuard<'_, S> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The scheduler: a ledger, a sender, a clock and the current config.
pub struct Scheduler<S, O, C> {
    /// The ledger.
    pub store: SharedStore<S>,
    /// Where mail goes.
    pub outbox: O,
    /// The wall clock.
    pub clock: C,
    /// The config in force (a reload sends a new one).
    pub config: watch::Receiver<Arc<Config>>,
    /// Notified after a reload replans, or an operator released mail.
    pub wake: Arc<Notify>,
}

impl<S: Store, O: Outbox, C: Clock> Scheduler<S, O, C> {
    /// One pass: act on every due mail at the clock's `now`. Returns the next instant a pending
    /// mail becomes due, if any.
    pub async fn tick(&self) -> Result<Option<Timestamp>, LedgerError> {
        let config = self.config.borrow().clone();
        let now = self.clock.now();
        // Only the due rows, and the next wake from the index: a pass costs the same at 5
        // meetings as at 5,000 (reading all 40,000 rows twice took 80 ms, blocking the runtime).
        let rows = lock(&self.store).due_rows(now)?;
        let actions = decide::decide(&rows, now, &config.scheduler);
        let held = actions
            .iter()
            .filter(|a| matches!(a, Action::Hold { .. }))
            .count();
        if held > 0 {
            tracing::error!(
                held,
                max_catch_up = config.scheduler.max_catch_up,
                "CLOCK JUMP? {held} mails fell due at once at {now}; none is sent. Check the \
                 system clock, see them with `convenor plan`, release them with `convenor release`"
            );
        }
        for action in actions {
            match action {
                Action::Send(key) => self.send(&key, &config).await?,
                other => self.record(&other)?,
            }
        }
        lock(&self.store).next_wake()
    }

    fn record(&self, action: &Action) -> Result<(), LedgerError> {
        let Some(outcome) = action.outcome() else {
            return Ok(());
        };
        let key = action.key();
        if !lock(&self.store).settle(key, MailState::Pending, &outcome)? {
            return Ok(());
        }
        let (meeting, email, to) = (&key.meeting, &key.email, &key.audience);
        match &outcome {
            Outcome::Skipped { reason } => {
                tracing::warn!(%meeting, %email, %to, "mail skipped: {reason}");
            }
            Outcome::Held { reason } => {
                tracing::error!(%meeting, %email, %to, "mail held: {reason}");
            }
            Outcome::Failed { error } => {
                tracing::error!(%meeting, %email, %to, "mail failed: {error}");
            }
            Outcome::Sent { .. } | Outcome::Retry { .. } => {}
        }
        Ok(())
    }

    async fn send(&self, key: &MailKey, config: &Config) -> Result<(), LedgerError> {
        let now = self.clock.now();
        let Some(row) = lock(&self.store).claim(key, now)? else {
            return Ok(());
        };
        let (meeting, email, to) = (&key.meeting, &key.email, &key.audience);
        let message_id = &row.message_id;
        tracing::info!(%meeting, %email, %to, %message_id, attempt = row.attempts, "sending");
        let result = self.outbox.deliver(&row, config).await;
        let now = self.clock.now();
        let outcome = match result {
            Ok(reply) => Outcome::Sent { at: now, reply },
            Err(failure) => {
                decide::after_failure(&row, &failure, now, &config.scheduler, fastrand::f64())
            }
        };
        lock(&self.store).settle(key, MailState::Sending, &outcome)?;
        match &outcome {
            Outcome::Sent { reply, .. } => {
                tracing::info!(%meeting, %email, %to, %message_id, %reply, "mail sent");
            }
            Outcome::Retry { at, error } => tracing::warn!(
                %meeting, %email, %to, %message_id, attempt = row.attempts,
                "mail not sent, will retry at {at}: {error}"
            ),
            Outcome::Failed { error } => tracing::error!(
                %meeting, %email, %to, %message_id, attempt = row.attempts,
                "mail failed: {error}"
            ),
            Outcome::Skipped { .. } | Outcome::Held { .. } => {}
        }
        Ok(())
    }

    /// Runs passes until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_observed(shutdown, MAX_SLICE, |_| {}).await;
    }

    /// [`Scheduler::run`], sleeping at most `max_slice` between passes (capped at
    /// [`MAX_SLICE`]) and calling `on_pass` after each pass with its result: the daemon pets
    /// the systemd watchdog and records health there, so a stuck loop stops both.
    pub async fn run_observed(
        self,
        shutdown: impl Future<Output = ()>,
        max_slice: Duration,
        mut on_pass: impl FnMut(Result<Option<Timestamp>, &LedgerError>),
    ) {
        let max_slice = max_slice.clamp(MIN_SLICE, MAX_SLICE);
        tokio::pin!(shutdown);
        loop {
            let tick = self.tick();
            tokio::pin!(tick);
            let pass = tokio::select! {
                pass = &mut tick => pass,
                () = &mut shutdown => {
                    // Let a send in flight finish rather than cut it off mid-conversation.
                    if tokio::time::timeout(STOP_GRACE, &mut tick).await.is_err() {
                        tracing::warn!(
                            "stopping: a pass was still running after {STOP_GRACE:?}; a mail cut \
                             off now goes out again at the next start, same Message-ID"
                        );
                    }
                    break;
                }
            };
            on_pass(pass.as_ref().map(|next| *next));
            let wait = match pass {
                Ok(next) => {
                    let now = self.clock.now();
                    next.map_or(max_slice, |t| {
                        Duration::try_from(now.duration_until(t)).unwrap_or(Duration::ZERO)
                    })
                }
                Err(e) => {
                    tracing::error!("scheduler pass failed, trying again shortly: {e}");
                    Duration::from_secs(5)
                }
            };
            let wait = wait.clamp(MIN_SLICE, max_slice);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!("scheduler stopped");
    }
}
