//! The mail ledger: one persistent row per scheduled mail, so none is missed and none doubled.
//!
//! A row is keyed by [`MailKey`] (meeting id, email id, audience, occurrence) and carries its due
//! instant, state, attempts, last error, Message-ID and sent time. The ledger also keeps one
//! [`StoredRevision`] per meeting (its SEQUENCE survives restarts and never goes down).
//!
//! The store sits behind the small [`Store`] trait; [`sqlite::SqliteStore`] is the one
//! implementation today (a PostgreSQL store for several instances can follow: idempotent inserts
//! with `ON CONFLICT DO NOTHING`, claims with `FOR UPDATE SKIP LOCKED` and a lease).
//!
//! # Delivery guarantee: at least once, and the one window for twice
//!
//! A mail's row is written (`pending`) before any SMTP call. The scheduler claims it
//! (`pending -> sending`, committed), talks to the server, and marks it `sent` only after the
//! server's `250` to the end of DATA. So:
//! - a mail is never lost: a crash before the `250` leaves the row in `sending`, and the next
//!   start sends it again, with the same Message-ID (stored in the row when it was planned);
//! - a mail can go out twice in exactly one window: after the server answered `250` and before
//!   our `sent` commit reached the disk (a crash, kill or power cut in between). The repeat
//!   carries the same Message-ID, so receiving systems and readers can tell it is a repeat.

pub mod sqlite;

use std::{collections::BTreeMap, fmt};

use jiff::Timestamp;

use crate::{
    model::{EmailId, MeetingId},
    plan::{LedgerView, MailStates},
    revision::StoredRevision,
    schedule::Recipient,
};

pub use sqlite::{BULK_ROWS, Checkpoint, SqliteStore};

/// The ledger file's name inside the state directory.
pub const LEDGER_FILE: &str = "ledger.sqlite3";

/// Which mail a row is: meeting, schedule entry, audience and occurrence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailKey {
    /// The meeting id.
    pub meeting: String,
    /// The schedule entry's id.
    pub email: String,
    /// The recipient key: `list` or `lead:<priority>` (see [`Recipient::key`]).
    pub audience: String,
    /// 0 for timed mails; for change and cancellation notices, the meeting's SEQUENCE that
    /// queued them (a second change queues another notice, a restart does not).
    pub occurrence: u32,
}

impl MailKey {
    /// The key of a timed mail.
    pub fn timed(meeting: &MeetingId, email: &EmailId, recipient: &Recipient) -> Self {
        Self {
            meeting: meeting.to_string(),
            email: email.to_string(),
            audience: recipient.key(),
            occurrence: 0,
        }
    }
}

impl fmt::Display for MailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.meeting, self.email, self.audience)?;
        if self.occurrence > 0 {
            write!(f, "#{}", self.occurrence)?;
        }
        Ok(())
    }
}

/// Where a mail is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MailState {
    /// Planned; goes out when due (and, after a failure, not before its next attempt).
    Pending,
    /// Claimed: the SMTP conversation is (or was, before a crash) under way.
    Sending,
    /// The server answered 250.
    Sent,
    /// Not sent, on purpose (too late to be useful, meeting cancelled, ...).
    Skipped,
    /// Not sent: a permanent failure, or transient ones until the meeting started.
    Failed,
    /// Held by the clock-jump guard until an operator runs `convenor release`.
    Held,
}

impl MailState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Sending,
        Self::Sent,
        Self::Skipped,
        Self::Failed,
        Self::Held,
    ];

    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Held => "held",
        }
    }

    /// Parses the ledger's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for MailState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scheduled mail as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Which mail.
    pub key: MailKey,
    /// When it becomes due (UTC).
    pub due: Timestamp,
    /// The last instant a first attempt may start: due + grace, capped at the meeting start.
    pub deadline: Timestamp,
    /// When the meeting starts: no attempt at or after it.
    pub starts: Timestamp,
    /// Its state.
    pub state: MailState,
    /// Send attempts so far.
    pub attempts: u32,
    /// After a transient failure: not before this instant.
    pub next_attempt: Option<Timestamp>,
    /// The last error, or why it was skipped or held.
    pub last_error: Option<String>,
    /// The Message-ID header it goes out with (with angle brackets), fixed when planned.
    pub message_id: String,
    /// When the server accepted it.
    pub sent_at: Option<Timestamp>,
    /// The server's reply to the end of DATA.
    pub reply: Option<String>,
    /// When the row was planned: inserted, or last moved by a [`Reschedule`]. The clock-jump
    /// guard counts only rows that fell due after this instant.
    pub created: Timestamp,
    /// Released by an operator after a hold: the clock-jump guard no longer counts it.
    pub released: bool,
    /// The recipients earlier attempts got the mail to although it is not sent (the server took
    /// it for them while it put others off with a 4xx). Later attempts go to the others only,
    /// so nobody gets the mail twice. Usually empty.
    pub done_recipients: Vec<String>,
    /// Why the config stopped wanting the mail while it was being sent (`sending`): a
    /// reconciliation cannot take a mail back from the server, so it marks the row, and an
    /// attempt that does not send it (a retry, a failure, a crash) leaves it `skipped` with
    /// this reason instead of trying again. Cleared when the config wants the mail again, and
    /// whenever the row stops being sent (settle, recovery) or is claimed: a mark exists on a
    /// `sending` row only.
    pub withdrawn: Option<String>,
}

/// A due instant that moved (the meeting or the schedule entry moved), or a withdrawn mail that
/// is wanted again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reschedule {
    /// Which mail.
    pub key: MailKey,
    /// New due instant.
    pub due: Timestamp,
    /// New deadline.
    pub deadline: Timestamp,
    /// New meeting start.
    pub starts: Timestamp,
    /// The row's new [`LedgerRow::created`]: the `now` of the reconciliation that moved it. A
    /// row planned again is judged from when it was planned again: moved into the past, it did
    /// not "fall due after planning", so the clock-jump guard does not count it (it is sent or
    /// skipped by its grace, like a new row on past meetings). A row the guard holds keeps its
    /// `created`: moved while the clock is still wrong, it is held again, not skipped.
    pub created: Timestamp,
}

/// The writes one reconciliation of config and ledger asks for, applied in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replan {
    /// New or changed meeting revisions.
    pub revisions: Vec<(MeetingId, StoredRevision)>,
    /// New rows (inserted only when absent).
    pub inserts: Vec<LedgerRow>,
    /// Rows not yet sent whose due instant changed: back to `pending` with the new times, no
    /// attempts, and planned (`created`) again at the reconciliation's `now`. A row being sent
    /// (`sending`) takes the new times and keeps its state and attempts, so whatever the attempt
    /// in flight ends in, the row follows the meeting; its [`LedgerRow::withdrawn`] mark is
    /// cleared. Rows in `sent` are never touched.
    pub reschedules: Vec<Reschedule>,
    /// Rows no longer wanted, with the reason: `pending` and `held` ones become `skipped`; one
    /// being sent is marked ([`LedgerRow::withdrawn`]) and becomes `skipped` unless the attempt
    /// in flight sends it.
    pub withdrawals: Vec<(MailKey, String)>,
    /// Notices still to go out whose meeting moved without a newer notice being queued: only
    /// their deadline and meeting start change (`due` and `created` of each are ignored); state,
    /// attempts and next attempt stay, so a notice being retried goes on being retried until
    /// the new start.
    pub follows: Vec<Reschedule>,
    /// The digest of the config these writes reconcile the ledger with
    /// ([`crate::digest::config_digest`]), stored with them as the ledger's plan stamp. `None`
    /// clears the stamp: writes not made by reconciling a whole config may leave the ledger out
    /// of step with any config, so the next start reconciles in full.
    pub stamp: Option<String>,
    /// The zone to record in the `revision_history` rows stored before zones were recorded
    /// (the zone configured when this build first reconciles them), so a change notice shows
    /// their time in it; `None`: nothing to fill.
    pub history_zone: Option<String>,
}

impl Replan {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
            && self.inserts.is_empty()
            && self.reschedules.is_empty()
            && self.withdrawals.is_empty()
            && self.follows.is_empty()
            && self.history_zone.is_none()
    }
}

/// How an attempt or a decision ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `sending -> sent`: the server answered 250 with this reply.
    Sent {
        /// When.
        at: Timestamp,
        /// The server's reply.
        reply: String,
    },
    /// `sending -> pending` with a next attempt, after a transient failure.
    Retry {
        /// Not before this instant.
        at: Timestamp,
        /// The server's reply or the connection error.
        error: String,
        /// Recipients this attempt got the mail to (added to [`LedgerRow::done_recipients`]).
        done: Vec<String>,
    },
    /// `-> failed`.
    Failed {
        /// Why.
        error: String,
        /// Recipients the last attempt got the mail to (added to
        /// [`LedgerRow::done_recipients`]: a row revived later, when its meeting moves, leaves
        /// them out).
        done: Vec<String>,
    },
    /// `pending -> skipped`.
    Skipped {
        /// Why.
        reason: String,
    },
    /// `pending -> held`.
    Held {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The state this outcome leads to.
    pub fn state(&self) -> MailState {
        match self {
            Self::Sent { .. } => MailState::Sent,
            Self::Retry { .. } => MailState::Pending,
            Self::Failed { .. } => MailState::Failed,
            Self::Skipped { .. } => MailState::Skipped,
            Self::Held { .. } => MailState::Held,
        }
    }
}

/// Which held rows `convenor release` releases: all, or those of one meeting and/or email.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseFilter {
    /// Only this meeting.
    pub meeting: Option<String>,
    /// Only this schedule entry.
    pub email: Option<String>,
}

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite reported an error.
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The ledger file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("ledger {path}: corrupt row: {detail}")]
    Corrupt {
        /// The ledger file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// The rows of one email id in one state ([`Store::mail_counts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailCount {
    /// The email id (the schedule entry) of the rows.
    pub email: String,
    /// Their state.
    pub state: MailState,
    /// How many rows.
    pub rows: u64,
    /// Their attempts after the first, together.
    pub retries: u64,
}

/// The persistent store of mail rows and meeting revisions.
///
/// Every write is one transaction. State changes are conditional on the state the caller
/// expects, so a reload that withdraws a row and a scheduler that claims it cannot both win.
pub trait Store: Send {
    /// Every row, ordered by due instant then key.
    fn rows(&self) -> Result<Vec<LedgerRow>, LedgerError>;

    /// The `pending` rows due at `now` (`due <= now`), ordered like [`Store::rows`]: every row
    /// [`crate::scheduler::decide()`] can act on at `now`. The default filters [`Store::rows`]; a
    /// store with an index answers without reading the others (the scheduler asks every pass).
    fn due_rows(&self, now: Timestamp) -> Result<Vec<LedgerRow>, LedgerError> {
        Ok(self
            .rows()?
            .into_iter()
            .filter(|r| r.state == MailState::Pending && r.due <= now)
            .collect())
    }

    /// When the next `pending` row becomes due: the earliest of each one's due instant, or its
    /// next attempt when that is later ([`crate::scheduler::next_wake`] over every row). The
    /// default reads every row; a store with an index answers from it.
    fn next_wake(&self) -> Result<Option<Timestamp>, LedgerError> {
        Ok(self
            .rows()?
            .iter()
            .filter(|r| r.state == MailState::Pending)
            .map(|r| r.next_attempt.map_or(r.due, |t| t.max(r.due)))
            .min())
    }

    /// The stored revision of every meeting seen.
    fn revisions(&self) -> Result<BTreeMap<MeetingId, StoredRevision>, LedgerError>;

    /// The stored revision of one meeting. The default reads them all; a store with an index
    /// answers from it (sending a mail asks this once per mail).
    fn revision(&self, meeting: &MeetingId) -> Result<Option<StoredRevision>, LedgerError> {
        Ok(self.revisions()?.remove(meeting))
    }

    /// The Message-ID every mail about `meeting` is threaded under: the first one sent (by
    /// sent instant, then Message-ID), other than `except`. The default scans every row; a
    /// store with an index answers from it (sending a mail asks this once per mail).
    fn thread_root(&self, meeting: &str, except: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .rows()?
            .into_iter()
            .filter(|r| r.key.meeting == meeting && r.state == MailState::Sent)
            .filter(|r| r.message_id != except)
            .min_by_key(|r| (r.sent_at, r.message_id.clone()))
            .map(|r| r.message_id))
    }

    /// The change and cancellation notices (occurrence above 0) of one meeting, schedule entry
    /// and recipient, in any state, by occurrence. The default scans every row; a store with an
    /// index answers from it (sending a notice asks this once).
    fn notices(&self, key: &MailKey) -> Result<Vec<LedgerRow>, LedgerError> {
        let mut out: Vec<LedgerRow> = self
            .rows()?
            .into_iter()
            .filter(|r| {
                r.key.occurrence > 0
                    && (&r.key.meeting, &r.key.email, &r.key.audience)
                        == (&key.meeting, &key.email, &key.audience)
            })
            .collect();
        out.sort_by_key(|r| r.key.occurrence);
        Ok(out)
    }

    /// How many rows each email id has in each state, with their attempts after the first
    /// (`/metrics`), in no particular order. The default counts every row; a store with a
    /// query of its own counts without reading them out.
    fn mail_counts(&self) -> Result<Vec<MailCount>, LedgerError> {
        let mut counts: std::collections::HashMap<(String, MailState), MailCount> =
            std::collections::HashMap::new();
        for row in self.rows()? {
            let count = counts
                .entry((row.key.email.clone(), row.state))
                .or_insert_with(|| MailCount {
                    email: row.key.email,
                    state: row.state,
                    rows: 0,
                    retries: 0,
                });
            count.rows += 1;
            count.retries += u64::from(row.attempts.saturating_sub(1));
        }
        Ok(counts.into_values().collect())
    }

    /// A cheap probe that the store answers (`/healthz`). The default reads every row; a store
    /// with a cheaper query overrides it.
    fn ping(&self) -> Result<(), LedgerError> {
        self.rows().map(drop)
    }

    /// The revision a meeting had at `sequence` (its last state at that SEQUENCE), if stored.
    fn revision_at(
        &self,
        meeting: &MeetingId,
        sequence: u32,
    ) -> Result<Option<StoredRevision>, LedgerError>;

    /// Applies a reconciliation in one transaction, storing its stamp (or clearing it).
    fn apply(&mut self, replan: &Replan) -> Result<(), LedgerError>;

    /// The plan stamp: the digest of the config the ledger was last reconciled with by
    /// [`Store::apply`], if any. Reconciling that same config again (same build) would write
    /// nothing: the scheduler's own state changes (claim, settle, release, recovery) never
    /// make a reconciliation want anything, so they leave the stamp valid.
    fn plan_stamp(&self) -> Result<Option<String>, LedgerError>;

    /// The calendar's UID domain pinned at the first start ([`Store::pin_uid_domain`]), if any.
    fn uid_domain(&self) -> Result<Option<String>, LedgerError>;

    /// Pins `proposed` as the calendar's UID domain unless one is pinned already, and returns
    /// the pinned one: the first start pins the domain its config makes, and every later start
    /// and reload uses it whatever the network is called by then
    /// ([`crate::model::Network::uid_domain`]).
    fn pin_uid_domain(&mut self, proposed: &str) -> Result<String, LedgerError>;

    /// After a crash: every row left in `sending` goes back to `pending` (same Message-ID,
    /// no backoff), to be sent again, except one withdrawn while it was being sent
    /// ([`LedgerRow::withdrawn`]), which becomes `skipped`. Returns the keys of the rows put
    /// back to `pending`.
    fn recover_sending(&mut self) -> Result<Vec<MailKey>, LedgerError>;

    /// Claims a due mail: `pending -> sending` and one more attempt, only if it is still
    /// pending and due at `now`, `now` is before the meeting starts, and (for a first attempt)
    /// `now` is not past its deadline: the same rules as [`crate::scheduler::decide()`], checked
    /// again at the instant of the claim. Returns the claimed row, or `None` if someone else
    /// moved it or it is no longer sendable (the next decision skips or fails it, with why).
    fn claim(&mut self, key: &MailKey, now: Timestamp) -> Result<Option<LedgerRow>, LedgerError>;

    /// Records an outcome for a row in state `from`, and returns the state it left the row in:
    /// the outcome's, except that a retry or failure of a row withdrawn while it was being sent
    /// ([`LedgerRow::withdrawn`]) leaves it `skipped`. `None` when the row was no longer in
    /// `from`.
    fn settle(
        &mut self,
        key: &MailKey,
        from: MailState,
        outcome: &Outcome,
    ) -> Result<Option<MailState>, LedgerError>;

    /// Records what [`crate::scheduler::decide()`] chose for a `pending` `row` without sending
    /// it (skip, hold, fail), only if the row is still as it was read: pending, with the same
    /// due instant, deadline, start, attempts, next attempt and planning instant. A decision is
    /// made from rows read at the start of a pass; a reload during that pass's sends may move
    /// the row, and the move must win (the next pass decides again), or a mail moved to next
    /// week would be skipped for the grace it had before. False when the row changed.
    fn settle_decided(&mut self, row: &LedgerRow, outcome: &Outcome) -> Result<bool, LedgerError>;

    /// Why the row of `key` was withdrawn while it was being sent ([`LedgerRow::withdrawn`]),
    /// if it was: the outbox asks just before composing, so a mail whose meeting a reload
    /// cancelled after the claim is not sent.
    fn withdrawn(&self, key: &MailKey) -> Result<Option<String>, LedgerError>;

    /// `held -> pending` for the rows matching `filter`, marked released so the clock-jump guard
    /// lets them through. Returns how many.
    fn release(&mut self, filter: &ReleaseFilter) -> Result<usize, LedgerError>;
}

/// A snapshot of the ledger's rows that answers `convenor plan`'s questions.
pub struct Snapshot(BTreeMap<MailKey, LedgerRow>);

impl Snapshot {
    /// Indexes rows by key.
    pub fn new(rows: Vec<LedgerRow>) -> Self {
        Self(rows.into_iter().map(|r| (r.key.clone(), r)).collect())
    }

    /// Rows that are not timed mails (change and cancellation notices), for listing apart.
    pub fn notices(&self) -> impl Iterator<Item = &LedgerRow> {
        self.0.values().filter(|r| r.key.occurrence > 0)
    }
}

/// The view `convenor plan` shows of one row.
pub fn view(row: &LedgerRow) -> LedgerView {
    LedgerView {
        state: row.state.as_str().to_owned(),
        attempts: row.attempts,
        // Being sent and withdrawn meanwhile: what the attempt's end will make of it.
        detail: match (&row.withdrawn, row.state) {
            (Some(why), MailState::Sending) => {
                Some(format!("{why} (unless this attempt sends it)"))
            }
            _ => row.last_error.clone(),
        },
        sent_at: row.sent_at.map(|t| t.to_string()),
    }
}

impl MailStates for Snapshot {
    fn state(
        &self,
        meeting: &MeetingId,
        email: &EmailId,
        recipient: &Recipient,
    ) -> Option<LedgerView> {
        self.0
            .get(&MailKey::timed(meeting, email, recipient))
            .map(view)
    }
}
