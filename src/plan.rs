//! What `convenor check` and `convenor plan` show: a summary and the timeline of scheduled mail.
//!
//! Pure: the clock reading and the ledger's states come in as arguments.

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::{
    model::{Config, EmailId, MeetingId},
    schedule::{self, DueMail, Recipient},
};

/// What the ledger knows of one scheduled mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerView {
    /// pending, sending, sent, skipped, failed, held.
    pub state: String,
    /// Send attempts so far.
    pub attempts: u32,
    /// The last error or skip reason, if any.
    pub detail: Option<String>,
    /// When it was sent (UTC, RFC 3339), if it was.
    pub sent_at: Option<String>,
}

/// Looks up the ledger's state of scheduled mails.
pub trait MailStates {
    /// The state of one mail, or `None` when the ledger has no row for it.
    fn state(
        &self,
        meeting: &MeetingId,
        email: &EmailId,
        recipient: &Recipient,
    ) -> Option<LedgerView>;
}

/// For when there is no ledger yet: every mail is only planned.
pub struct NoLedger;

impl MailStates for NoLedger {
    fn state(&self, _: &MeetingId, _: &EmailId, _: &Recipient) -> Option<LedgerView> {
        None
    }
}

/// One line of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    /// Due, in the network's zone with its offset (RFC 3339 with zone annotation).
    pub due_local: String,
    /// Due, UTC.
    pub due_utc: String,
    /// Last instant it may still go out, UTC.
    pub deadline_utc: String,
    /// Meeting id.
    pub meeting: String,
    /// Schedule entry id.
    pub email: String,
    /// `list` or `lead:<priority>`.
    pub recipient: String,
    /// `planned` when the ledger has no row, else the ledger's state.
    pub state: String,
    /// The ledger's view, when there is one.
    pub ledger: Option<LedgerView>,
}

/// The plan rows of every timed mail due at or after `from`.
pub fn rows(config: &Config, from: Option<Timestamp>, states: &dyn MailStates) -> Vec<PlanRow> {
    let tz = &config.network.time_zone;
    schedule::timeline(config)
        .into_iter()
        .filter(|m| from.is_none_or(|f| m.due >= f))
        .map(|m: DueMail| {
            let ledger = states.state(&m.meeting, &m.email, &m.recipient);
            PlanRow {
                due_local: m
                    .due
                    .to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d %H:%M %Z")
                    .to_string(),
                due_utc: m.due.to_string(),
                deadline_utc: m.deadline.to_string(),
                meeting: m.meeting.to_string(),
                email: m.email.to_string(),
                recipient: m.recipient.key(),
                state: ledger
                    .as_ref()
                    .map_or_else(|| "planned".to_owned(), |l| l.state.clone()),
                ledger,
            }
        })
        .collect()
}

/// Renders plan rows as an aligned text table.
pub struct Table<'a>(pub &'a [PlanRow]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20}  {:<20}  {:<12}  {:<20}  {:<30}  STATE",
            "DUE (LOCAL)", "DUE (UTC)", "MEETING", "EMAIL", "TO"
        )?;
        for r in self.0 {
            let detail = r
                .ledger
                .as_ref()
                .and_then(|l| l.detail.as_deref())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            writeln!(
                f,
                "{:<20}  {:<20}  {:<12}  {:<20}  {:<30}  {}{detail}",
                r.due_local, r.due_utc, r.meeting, r.email, r.recipient, r.state
            )?;
        }
        Ok(())
    }
}

/// The summary `convenor check` prints.
pub struct Summary<'a> {
    config: &'a Config,
    now: Timestamp,
}

impl<'a> Summary<'a> {
    /// A summary of `config` as seen at `now`.
    pub fn of(config: &'a Config, now: Timestamp) -> Self {
        Self { config, now }
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.config;
        let tz = &c.network.time_zone;
        let local = |t: Timestamp| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%a %Y-%m-%d %H:%M %Z")
                .to_string()
        };
        writeln!(
            f,
            "{}: config {} is valid",
            c.network.short_name,
            c.source.display()
        )?;
        let cancelled = c.meetings.iter().filter(|m| m.is_cancelled()).count();
        writeln!(
            f,
            "  meetings:   {} ({cancelled} cancelled)",
            c.meetings.len()
        )?;
        writeln!(f, "  priorities: {}", c.priorities.len())?;
        writeln!(f, "  emails:     {} in the schedule", c.emails.len())?;
        writeln!(f, "  time zone:  {}", c.network.time_zone_name)?;
        match c
            .meetings
            .iter()
            .find(|m| !m.is_cancelled() && m.starts_at(tz) > self.now)
        {
            Some(m) => writeln!(
                f,
                "  next meeting: {} ({}, {})",
                local(m.starts_at(tz)),
                m.id,
                m.title
            )?,
            None => writeln!(f, "  next meeting: none after {}", local(self.now))?,
        }
        match schedule::timeline(c).into_iter().find(|d| d.due > self.now) {
            Some(d) => writeln!(
                f,
                "  next email:   {} ({} for {} to {})",
                local(d.due),
                d.email,
                d.meeting,
                d.recipient.key()
            )?,
            None => writeln!(f, "  next email:   none after {}", local(self.now))?,
        }
        Ok(())
    }
}
