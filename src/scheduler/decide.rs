//! The pure decision: given the ledger's rows and `now`, what to do with each due mail.
//!
//! Nothing here reads the clock or touches the ledger: the loop in [`super::run`] applies the
//! [`Action`]s. The rules (see also the module docs of [`crate::ledger`]):
//! - a pending mail is due when `due <= now` and, after a failure, `next_attempt <= now`;
//! - a first attempt goes out only while still useful: `now <= deadline` (due + grace) and
//!   before the meeting starts; otherwise it is skipped, with the reason;
//! - a retry goes out until the meeting starts, then the mail fails;
//! - the clock-jump guard: if more than `max_catch_up` mails fell due at once after they were
//!   planned (first attempts, not released by an operator, overdue by more than [`ON_TIME`]:
//!   mails seen on time go out however many fall due together), none of them is sent or
//!   skipped: they are all held for `convenor release`. Mails already past when they were planned (a
//!   first start on old meetings, or a reload that moved them into the past: a moved row counts
//!   as planned when it moved, [`crate::ledger::Reschedule::created`]) do not count: they are
//!   sent or skipped by their grace.

use jiff::{SignedDuration, Timestamp};

use crate::{
    ledger::{LedgerRow, MailKey, MailState, Outcome},
    model::SchedulerSettings,
};

/// What to do with one due mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Claim it and send it now.
    Send(MailKey),
    /// Do not send it; mark it skipped.
    Skip {
        /// Which mail.
        key: MailKey,
        /// Why, for the ledger and the log.
        reason: String,
    },
    /// Do not send it; hold it for an operator (clock-jump guard).
    Hold {
        /// Which mail.
        key: MailKey,
        /// Why.
        reason: String,
    },
    /// Give up on it; mark it failed.
    Fail {
        /// Which mail.
        key: MailKey,
        /// Why.
        reason: String,
    },
}

impl Action {
    /// The outcome to record for a non-sending action, from state `pending`.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::Send(_) => None,
            Self::Skip { reason, .. } => Some(Outcome::Skipped {
                reason: reason.clone(),
            }),
            Self::Hold { reason, .. } => Some(Outcome::Held {
                reason: reason.clone(),
            }),
            Self::Fail { reason, .. } => Some(Outcome::Failed {
                done: Vec::new(),
                error: reason.clone(),
            }),
        }
    }

    /// The mail it concerns.
    pub fn key(&self) -> &MailKey {
        match self {
            Self::Send(key)
            | Self::Skip { key, .. }
            | Self::Hold { key, .. }
            | Self::Fail { key, .. } => key,
        }
    }
}

/// Why a send failed, as the transport classified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    /// True for 4xx replies, refused connections, timeouts and any fault while the connection
    /// is set up (5xx at greeting, EHLO, STARTTLS or AUTH included); false for a 5xx to the
    /// message itself (MAIL FROM, RCPT TO, DATA) and for bad messages.
    pub transient: bool,
    /// The server's reply or the error.
    pub message: String,
    /// The recipients this attempt got the message to although it failed (the server took it
    /// for them while it put others off): recorded in the row, so later attempts go to the
    /// others only.
    pub done: Vec<String>,
}

fn is_due(row: &LedgerRow, now: Timestamp) -> bool {
    row.state == MailState::Pending && row.due <= now && row.next_attempt.is_none_or(|t| t <= now)
}

/// How late a first attempt may be seen and still count as on time for the clock-jump guard.
/// The loop wakes at each due instant (and at least every minute), so a mail seen within this
/// of its due instant is the ordinary course: several mails due at the same instant (many
/// leads, several meetings on one day) go out however many they are. Only mails found overdue
/// by more than this at once (a clock jumped forward, or the service was down while they fell
/// due) can trip the guard. Ten minutes covers a pass held up by slow sends (each bounded by
/// the SMTP timeout) while any jump worth guarding against (hours, days, years) is far longer.
pub const ON_TIME: SignedDuration = SignedDuration::from_mins(10);

/// True when a due row counts towards the clock-jump guard at `now`: a first attempt that fell
/// due after it was planned (inserted or last moved), that no operator released, and that is
/// overdue by more than [`ON_TIME`].
fn counts_for_guard(row: &LedgerRow, now: Timestamp) -> bool {
    row.attempts == 0
        && !row.released
        && row.due > row.created
        && now.duration_since(row.due) > ON_TIME
}

/// Decides what to do with every due mail among `rows` at `now`.
pub fn decide(rows: &[LedgerRow], now: Timestamp, settings: &SchedulerSettings) -> Vec<Action> {
    let due: Vec<&LedgerRow> = rows.iter().filter(|r| is_due(r, now)).collect();
    let fell_due = due.iter().filter(|r| counts_for_guard(r, now)).count();
    let hold = fell_due > settings.max_catch_up as usize;
    // Reasons show `now` to the second; the decision uses the exact instant.
    let shown = now.round(jiff::Unit::Second).unwrap_or(now);
    due.into_iter()
        .map(|row| {
            let key = row.key.clone();
            if hold && counts_for_guard(row, now) {
                let reason = format!(
                    "clock-jump guard: {fell_due} mails fell due at once at {shown}, more than \
                     max_catch_up = {}; check the clock, then run `convenor release`",
                    settings.max_catch_up
                );
                return Action::Hold { key, reason };
            }
            if row.attempts == 0 {
                if now >= row.starts {
                    let reason = format!(
                        "too late: due {}, but the meeting started at {} before it could go out \
                         (now {shown})",
                        row.due, row.starts
                    );
                    Action::Skip { key, reason }
                } else if now > row.deadline {
                    let reason = format!(
                        "too late: due {}, its grace ran out at {} (now {shown})",
                        row.due, row.deadline
                    );
                    Action::Skip { key, reason }
                } else {
                    Action::Send(key)
                }
            } else if now >= row.starts {
                let last = row.last_error.as_deref().unwrap_or("none recorded");
                let reason = format!(
                    "gave up after {} attempt(s): the meeting started at {}; last error: {last}",
                    row.attempts, row.starts
                );
                Action::Fail { key, reason }
            } else {
                Action::Send(key)
            }
        })
        .collect()
}

/// The next instant a pending row becomes due, if any; the loop sleeps towards it.
pub fn next_wake(rows: &[LedgerRow]) -> Option<Timestamp> {
    rows.iter()
        .filter(|r| r.state == MailState::Pending)
        .map(|r| r.next_attempt.map_or(r.due, |t| t.max(r.due)))
        .min()
}

/// The longest wait between two attempts (unless the base itself is longer).
pub const MAX_BACKOFF: SignedDuration = SignedDuration::from_hours(1);

/// The wait before the next attempt after `attempts` attempts: `base * 2^(attempts-1)`, capped
/// at [`MAX_BACKOFF`] (or `base` if longer), with "equal jitter": the result lies in
/// `[d/2, d]` where `d` is the capped value; `jitter` in `[0, 1]` picks the point.
pub fn backoff(base: SignedDuration, attempts: u32, jitter: f64) -> SignedDuration {
    let exponent = attempts.saturating_sub(1).min(30);
    let full = base
        .checked_mul(1_i32 << exponent)
        .unwrap_or(SignedDuration::MAX)
        .min(MAX_BACKOFF.max(base));
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// What to record after a failed attempt of `row` (whose `attempts` already counts it).
pub fn after_failure(
    row: &LedgerRow,
    failure: &SendFailure,
    now: Timestamp,
    settings: &SchedulerSettings,
    jitter: f64,
) -> Outcome {
    // Who had it before this attempt: a mail that fails now still reached them.
    let earlier = if row.done_recipients.is_empty() {
        String::new()
    } else {
        format!(
            " (earlier attempts reached {})",
            row.done_recipients.join(", ")
        )
    };
    if !failure.transient {
        return Outcome::Failed {
            error: format!("permanent failure: {}{earlier}", failure.message),
            done: failure.done.clone(),
        };
    }
    let wait = backoff(settings.retry_base, row.attempts, jitter);
    let at = now.checked_add(wait).unwrap_or(Timestamp::MAX);
    if at >= row.starts {
        Outcome::Failed {
            error: format!(
                "gave up after {} attempt(s): the meeting starts at {} before the next one; \
                 last error: {}{earlier}",
                row.attempts, row.starts, failure.message
            ),
            done: failure.done.clone(),
        }
    } else {
        Outcome::Retry {
            at,
            error: format!("transient failure: {}{earlier}", failure.message),
            done: failure.done.clone(),
        }
    }
}
