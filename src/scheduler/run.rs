//! The scheduler loop: sleep towards the next due instant, decide, claim, send, record.
//!
//! Timers run on the monotonic clock, which stops during suspend and ignores clock steps, so the
//! loop sleeps in slices of at most [`MAX_SLICE`] and re-reads the wall clock ([`Clock`]) each
//! time. It also wakes when a reload replans ([`Scheduler::wake`]) and stops when its shutdown
//! future completes: a pass under way claims no further mail, a send in flight finishes within
//! [`STOP_GRACE`], and an attempt cut short stays `sending` and is sent again on the next start.
//!
//! The loop reports to its observer ([`LoopEvent`]) before each send as well as after each pass,
//! so the daemon's systemd watchdog hears from it at least once per send, however many mails a
//! pass sends through a slow server. An outcome the ledger refuses to record is kept and
//! recorded first thing on the following passes: its row stays `sending` (no pass sends it
//! again) until the record commits.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::{
    decide::{self, Action},
    outbox::Outbox,
};
use crate::{
    ledger::{LedgerError, LedgerRow, MailKey, MailState, Outcome, Store},
    model::Config,
};

/// The longest the loop sleeps before re-reading the wall clock.
pub const MAX_SLICE: Duration = Duration::from_secs(60);

/// The shortest pause between passes, so a row that cannot be settled never spins the CPU.
const MIN_SLICE: Duration = Duration::from_millis(100);

/// After the shutdown signal, how long a pass under way may go on so that a mail in flight
/// finishes (within systemd's `TimeoutStopSec=30s`). The pass claims no further mail once the
/// signal came, so mails not started stay `pending`; one cut off at this bound stays `sending`
/// and goes out again at the next start, same Message-ID.
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

/// What the loop tells its observer ([`Scheduler::run_observed`]).
#[derive(Debug)]
pub enum LoopEvent<'a> {
    /// The loop is about to claim and send this mail: it is alive and making progress, even in
    /// the middle of a pass that sends many mails one after another.
    Sending(&'a MailKey),
    /// A pass ended: the next instant a pending mail becomes due, or the pass's error.
    PassEnded(Result<Option<Timestamp>, &'a LedgerError>),
}

/// An attempt whose outcome the ledger did not take: its row stays `sending`, which no pass
/// picks up, until a later pass records this outcome.
#[derive(Debug)]
struct Unsettled {
    key: MailKey,
    message_id: String,
    attempt: u32,
    outcome: Outcome,
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
    /// Outcomes of attempts the ledger has not recorded yet, oldest first.
    unsettled: Mutex<Vec<Unsettled>>,
}

impl<S: Store, O: Outbox, C: Clock> Scheduler<S, O, C> {
    /// A scheduler over this ledger, sender, clock, config and wake-up.
    pub fn new(
        store: SharedStore<S>,
        outbox: O,
        clock: C,
        config: watch::Receiver<Arc<Config>>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            outbox,
            clock,
            config,
            wake,
            unsettled: Mutex::new(Vec::new()),
        }
    }

    /// One pass: act on every due mail at the clock's `now`. Returns the next instant a pending
    /// mail becomes due, if any.
    pub async fn tick(&self) -> Result<Option<Timestamp>, LedgerError> {
        self.pass(&AtomicBool::new(false), &mut |_| {}).await
    }

    /// How many attempts are waiting for their outcome to be recorded in the ledger (their rows
    /// stay `sending` meanwhile).
    pub fn unsettled(&self) -> usize {
        self.unsettled_outcomes().len()
    }

    fn unsettled_outcomes(&self) -> std::sync::MutexGuard<'_, Vec<Unsettled>> {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the kept outcomes, oldest first; stops at the first the ledger still refuses.
    fn settle_unsettled(&self) -> Result<(), LedgerError> {
        let mut unsettled = self.unsettled_outcomes();
        while let Some(first) = unsettled.first() {
            let recorded =
                lock(&self.store).settle(&first.key, MailState::Sending, &first.outcome)?;
            let done = unsettled.remove(0);
            let (meeting, email, to) = (&done.key.meeting, &done.key.email, &done.key.audience);
            if let Some(state) = recorded {
                tracing::info!(%meeting, %email, %to, message_id = %done.message_id,
                    "the outcome of an earlier attempt is recorded now");
                log_outcome(
                    &done.key,
                    &done.message_id,
                    done.attempt,
                    &done.outcome,
                    state,
                );
            } else {
                tracing::warn!(%meeting, %email, %to, message_id = %done.message_id,
                    "the outcome of an earlier attempt was not recorded: the row is no longer \
                     `sending`");
            }
        }
        Ok(())
    }

    /// One pass that claims no mail once `stop` is set, and reports each send to `observe`
    /// before claiming it. Outcomes kept from earlier passes are recorded first; while the
    /// ledger refuses them, the pass goes no further.
    async fn pass(
        &self,
        stop: &AtomicBool,
        observe: &mut impl FnMut(&MailKey),
    ) -> Result<Option<Timestamp>, LedgerError> {
        self.settle_unsettled()?;
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
        // Each row as this pass read it: a decision not to send is recorded only on the row
        // it was made from (`Store::settle_decided`).
        let read: std::collections::HashMap<&MailKey, &LedgerRow> =
            rows.iter().map(|r| (&r.key, r)).collect();
        for action in actions {
            // Checked before each claim: after the shutdown signal a pass starts nothing new.
            if stop.load(Ordering::SeqCst) {
                break;
            }
            match action {
                Action::Send(key) => {
                    observe(&key);
                    self.send(&key).await?;
                }
                other => {
                    if let Some(row) = read.get(other.key()) {
                        self.record(&other, row)?;
                    }
                }
            }
        }
        lock(&self.store).next_wake()
    }

    /// Records a decision not to send `row` (skip, hold, fail), unless a reload changed the
    /// row since this pass read it: the next pass decides on the row as it is then.
    fn record(&self, action: &Action, row: &LedgerRow) -> Result<(), LedgerError> {
        let Some(outcome) = action.outcome() else {
            return Ok(());
        };
        let key = action.key();
        let message_id = row.message_id.as_str();
        if !lock(&self.store).settle_decided(row, &outcome)? {
            tracing::info!(%message_id, "{key}: changed by a reload since this pass read it; \
                decided again at the next pass");
            return Ok(());
        }
        let (meeting, email, to) = (&key.meeting, &key.email, &key.audience);
        match &outcome {
            Outcome::Skipped { reason } => {
                tracing::warn!(%meeting, %email, %to, %message_id, "mail skipped: {reason}");
            }
            Outcome::Held { reason } => {
                tracing::error!(%meeting, %email, %to, %message_id, "mail held: {reason}");
            }
            Outcome::Failed { error, .. } => {
                tracing::error!(%meeting, %email, %to, %message_id, "mail failed: {error}");
            }
            Outcome::Sent { .. } | Outcome::Retry { .. } => {}
        }
        Ok(())
    }

    /// Claims the row of `key`, sends its mail and records the outcome. The mail is composed
    /// with the config in force when it is composed (the outbox reads it from the watch under
    /// the store lock, see [`super::outbox`]), not the one this pass started with: a reload
    /// during the pass publishes its config with the plan it wrote, so meeting details, SEQUENCE
    /// and schedule always agree.
    async fn send(&self, key: &MailKey) -> Result<(), LedgerError> {
        let now = self.clock.now();
        let Some(row) = lock(&self.store).claim(key, now)? else {
            return Ok(());
        };
        let (meeting, email, to) = (&key.meeting, &key.email, &key.audience);
        let message_id = &row.message_id;
        tracing::info!(%meeting, %email, %to, %message_id, attempt = row.attempts, "sending");
        let result = self.outbox.deliver(&row, &self.config).await;
        let now = self.clock.now();
        let outcome = match result {
            Ok(reply) => Outcome::Sent { at: now, reply },
            Err(failure) => {
                let settings = self.config.borrow().scheduler.clone();
                decide::after_failure(&row, &failure, now, &settings, fastrand::f64())
            }
        };
        let settled = lock(&self.store).settle(key, MailState::Sending, &outcome);
        let state = match settled {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(
                    %meeting, %email, %to, %message_id, attempt = row.attempts,
                    "the outcome of this attempt ({}) cannot be recorded in the ledger: {e}; the row \
                     stays `sending` and the record is tried again at the next pass",
                    describe(&outcome)
                );
                self.unsettled_outcomes().push(Unsettled {
                    key: key.clone(),
                    message_id: row.message_id.clone(),
                    attempt: row.attempts,
                    outcome,
                });
                return Err(e);
            }
        };
        match state {
            Some(state) => log_outcome(key, message_id, row.attempts, &outcome, state),
            None => tracing::warn!(%meeting, %email, %to, %message_id,
                "the outcome of this attempt ({}) was not recorded: the row is no longer \
                 `sending`", describe(&outcome)),
        }
        Ok(())
    }

    /// Runs passes until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_observed(shutdown, MAX_SLICE, |_| {}).await;
    }

    /// [`Scheduler::run`], sleeping at most `max_slice` between passes (capped at
    /// [`MAX_SLICE`]) and telling `observe` before each send and after each pass
    /// ([`LoopEvent`]): the daemon pets the systemd watchdog and records health there, so a
    /// stuck loop stops both, while a long pass of slow sends does not.
    pub async fn run_observed(
        self,
        shutdown: impl Future<Output = ()>,
        max_slice: Duration,
        mut observe: impl FnMut(LoopEvent<'_>),
    ) {
        let max_slice = max_slice.clamp(MIN_SLICE, MAX_SLICE);
        let stop = AtomicBool::new(false);
        tokio::pin!(shutdown);
        loop {
            let pass = {
                let mut on_send = |key: &MailKey| observe(LoopEvent::Sending(key));
                let tick = self.pass(&stop, &mut on_send);
                tokio::pin!(tick);
                tokio::select! {
                    // The shutdown first: once it has come, the pass claims nothing more.
                    biased;
                    () = &mut shutdown => {
                        stop.store(true, Ordering::SeqCst);
                        tracing::info!(
                            "scheduler stopping: a send in flight finishes, no other mail starts"
                        );
                        // Let a send in flight finish rather than cut it off mid-conversation.
                        if tokio::time::timeout(STOP_GRACE, &mut tick).await.is_err() {
                            tracing::warn!(
                                "stopping: a pass was still running after {STOP_GRACE:?}; a mail \
                                 cut off now goes out again at the next start, same Message-ID"
                            );
                        }
                        None
                    }
                    pass = &mut tick => Some(pass),
                }
            };
            let Some(pass) = pass else { break };
            observe(LoopEvent::PassEnded(pass.as_ref().map(|next| *next)));
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
        // A last try for outcomes the ledger refused: a row left `sending` is sent again at the
        // next start.
        if let Err(e) = self.settle_unsettled() {
            tracing::error!(
                unsettled = self.unsettled(),
                "stopping with outcomes the ledger did not record: {e}; their mails are sent \
                 again at the next start, same Message-ID"
            );
        }
        tracing::info!("scheduler stopped");
    }
}

/// The log line of an attempt's recorded outcome.
/// Logs an attempt's `outcome`, recorded as `state`: a retry or failure of a mail withdrawn
/// while it was being sent is recorded as skipped (see [`LedgerRow::withdrawn`]).
fn log_outcome(key: &MailKey, message_id: &str, attempt: u32, outcome: &Outcome, state: MailState) {
    let (meeting, email, to) = (&key.meeting, &key.email, &key.audience);
    if state != outcome.state() {
        tracing::warn!(
            %meeting, %email, %to, %message_id, attempt,
            "mail not sent ({}); the config withdrew it while it was being sent: {state}",
            describe(outcome)
        );
        return;
    }
    match outcome {
        Outcome::Sent { reply, .. } => {
            tracing::info!(%meeting, %email, %to, %message_id, %reply, "mail sent");
        }
        Outcome::Retry { at, error, .. } => tracing::warn!(
            %meeting, %email, %to, %message_id, attempt,
            "mail not sent, will retry at {at}: {error}"
        ),
        Outcome::Failed { error, .. } => tracing::error!(
            %meeting, %email, %to, %message_id, attempt,
            "mail failed: {error}"
        ),
        Outcome::Skipped { .. } | Outcome::Held { .. } => {}
    }
}

/// A few words on an outcome, for the log line that says it could not be recorded.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Sent { reply, .. } => format!("sent: {reply}"),
        Outcome::Retry { at, error, .. } => format!("retry at {at}: {error}"),
        Outcome::Failed { error, .. } => format!("failed: {error}"),
        Outcome::Skipped { reason } => format!("skipped: {reason}"),
        Outcome::Held { reason } => format!("held: {reason}"),
    }
}
