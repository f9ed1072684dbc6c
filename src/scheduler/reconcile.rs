//! The pure reconciliation of the config with the ledger: which rows to add, move or withdraw,
//! which revisions to store and which change notices to queue.
//!
//! Run at start and at every reload. Idempotent: reconciling the same config against the rows
//! it produced yields nothing to write. Rows already `sent` are never touched; a row being sent
//! takes new times, or a withdrawal mark, that the attempt in flight ends in (see
//! [`crate::ledger::Replan`]). A notice not yet sent is withdrawn when a newer one for the same
//! meeting, schedule entry and recipient is queued ([`SUPERSEDED`]), and with no newer one when
//! the meeting is changed back to what its recipients last heard ([`BACK_AS_ANNOUNCED`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use jiff::Timestamp;

use crate::{
    ledger::{LedgerRow, MailKey, MailState, Replan, Reschedule},
    model::{Config, EmailId, EmailRule, Meeting, MeetingId, Trigger},
    revision::{self, Change, Significant, StoredRevision},
    schedule::{self, Recipient},
};

/// Every withdrawal reason starts with this, so a mail withdrawn by a config change can be
/// wanted again by a later one (a cancelled meeting reinstated).
pub const WITHDRAWN: &str = "withdrawn: ";

/// The reason a notice not yet sent is withdrawn for when a later change of its meeting queues
/// a newer one for the same schedule entry and recipient, followed by the newer one's number.
/// Both would show the meeting as it is now; the newer one tells what changed since the last
/// notice that went out ([`announced_from`]).
pub const SUPERSEDED: &str = "withdrawn: superseded by notice #";

/// The SEQUENCE whose revision a notice of `occurrence` shows as "before": the one before the
/// oldest of the notices (of one meeting, schedule entry and recipient: `notices`, any order)
/// that the notice superseded without any of them being tried. Recipients last heard of the
/// meeting as it was then, not as the notices that never reached them would have said. A
/// superseded notice that was tried may have reached them (a timeout after DATA, some addresses
/// of the list), so the walk stops there: "before" is what that notice said, never the meeting
/// as it is again (which would read as a change that changed nothing).
pub fn announced_from(notices: &[LedgerRow], occurrence: u32) -> u32 {
    announced_from_rows(notices.iter(), occurrence)
}

/// [`announced_from`] over borrowed rows.
fn announced_from_rows<'a>(
    notices: impl Iterator<Item = &'a LedgerRow> + Clone,
    occurrence: u32,
) -> u32 {
    let superseded = |o: u32| {
        notices.clone().any(|r| {
            r.key.occurrence == o
                && r.state == MailState::Skipped
                && r.attempts == 0
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(SUPERSEDED))
        })
    };
    let mut from = occurrence;
    while from > 1 && superseded(from - 1) {
        from -= 1;
    }
    from - 1
}

/// The reason a notice not yet sent is withdrawn for when its meeting is changed back to what
/// its recipients last heard ([`announced_from`]) before it went out: no newer notice is queued,
/// since it would say "Was" and "Now" alike.
pub const BACK_AS_ANNOUNCED: &str = "withdrawn: the meeting is back as its recipients last heard";

/// The significant fields of meetings at the SEQUENCEs that recipients of unsent notices last
/// heard, keyed by meeting id and SEQUENCE: read from the ledger's history for the keys
/// [`announced_wanted`] names, so [`reconcile`] can tell a change back from a move.
pub type Announced = HashMap<(String, u32), Significant>;

/// For each meeting, schedule entry and recipient whose newest notice has reached nobody (pending
/// or held, never attempted: an attempt that timed out after DATA, or reached some addresses of
/// the list while others were put off, may have told someone of the change, who must then hear
/// that it was undone), that notice and the SEQUENCE its recipients last heard
/// ([`announced_from`]).
fn unsent_notices(rows: &[LedgerRow]) -> HashMap<Audience, (&LedgerRow, u32)> {
    let mut by_audience: HashMap<Audience, Vec<&LedgerRow>> = HashMap::new();
    for row in rows.iter().filter(|r| r.key.occurrence > 0) {
        by_audience
            .entry(audience_of(&row.key))
            .or_default()
            .push(row);
    }
    by_audience
        .into_iter()
        .filter_map(|(audience, notices)| {
            let newest = *notices.iter().max_by_key(|r| r.key.occurrence)?;
            let unheard = matches!(newest.state, MailState::Pending | MailState::Held)
                && newest.attempts == 0;
            unheard.then(|| {
                let from = announced_from_rows(notices.iter().copied(), newest.key.occurrence);
                (audience, (newest, from))
            })
        })
        .collect()
}

/// The (meeting, SEQUENCE) revisions [`reconcile`] needs in its [`Announced`]: what the
/// recipients of each notice still to go out last heard of its meeting.
pub fn announced_wanted(rows: &[LedgerRow]) -> BTreeSet<(String, u32)> {
    unsent_notices(rows)
        .into_values()
        .map(|(row, from)| (row.key.meeting.clone(), from))
        .collect()
}

/// What a reconciliation asks the ledger to write, and what to log about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The writes.
    pub replan: Replan,
    /// One line per noteworthy change, for the log.
    pub notes: Vec<String>,
    /// What the operator should hear of (logged as warnings): meetings still to come that left
    /// the config without being cancelled.
    pub warnings: Vec<String>,
}

/// A new pending row for `key`, made from `meeting`'s `rule` for `recipient`. Its Message-ID is
/// fixed in the row so every retry carries the same one: [`crate::mail::message_id`] of the
/// key's parts (the occurrence, a notice's SEQUENCE, tells notices apart), so `convenor preview`
/// shows the very Message-ID that will be sent.
struct NewRow<'a> {
    /// The key, made of the next three and the occurrence.
    key: MailKey,
    meeting: &'a MeetingId,
    email: &'a EmailId,
    recipient: &'a Recipient,
    due: Timestamp,
    deadline: Timestamp,
    starts: Timestamp,
}

impl NewRow<'_> {
    fn row(self, config: &Config, now: Timestamp) -> LedgerRow {
        let occurrence = self.key.occurrence;
        LedgerRow {
            message_id: crate::mail::message_id(
                config,
                self.meeting,
                self.email,
                self.recipient,
                occurrence,
            ),
            key: self.key,
            due: self.due,
            deadline: self.deadline,
            starts: self.starts,
            state: MailState::Pending,
            attempts: 0,
            next_attempt: None,
            last_error: None,
            sent_at: None,
            reply: None,
            created: now,
            released: false,
            done_recipients: Vec::new(),
            withdrawn: None,
        }
    }
}

/// Notices (change or cancellation) a significant change of `meeting` queues, keyed by the new
/// SEQUENCE. [`reconcile`] asks only for a meeting still to come.
fn notices(
    config: &Config,
    meeting: &Meeting,
    before: &revision::Significant,
    sequence: u32,
    now: Timestamp,
) -> Vec<LedgerRow> {
    let cancelled = revision::is_cancellation(before, meeting);
    let tz = &config.network.time_zone;
    let starts = meeting.starts_at(tz);
    config
        .emails
        .iter()
        .filter(|rule| match rule.trigger {
            Trigger::OnCancel => cancelled,
            Trigger::OnChange => !cancelled && !meeting.is_cancelled(),
            _ => false,
        })
        .flat_map(|rule| {
            schedule::recipients(config, meeting, rule)
                .into_iter()
                .map(move |r| (rule, r))
        })
        .map(|(rule, recipient)| {
            NewRow {
                key: MailKey {
                    occurrence: sequence,
                    ..MailKey::timed(&meeting.id, &rule.id, &recipient)
                },
                meeting: &meeting.id,
                email: &rule.id,
                recipient: &recipient,
                due: now,
                deadline: schedule::deadline(now, rule.grace, starts),
                starts,
            }
            .row(config, now)
        })
        .collect()
}

/// The config's meetings by id: [`Config::meeting`] is a linear search, and reconciliation
/// looks a meeting up for every row (a search per row made it quadratic in the meetings).
type MeetingIndex<'a> = HashMap<&'a str, &'a Meeting>;

fn meeting_index(config: &Config) -> MeetingIndex<'_> {
    config.meetings.iter().map(|m| (m.id.as_str(), m)).collect()
}

/// The meeting and the schedule entry a key names, if the config still has them.
fn lookup<'a>(
    config: &'a Config,
    meetings: &MeetingIndex<'a>,
    key: &MailKey,
) -> (Option<&'a Meeting>, Option<&'a EmailRule>) {
    let meeting = meetings.get(key.meeting.as_str()).copied();
    let rule = EmailId::parse(&key.email)
        .ok()
        .and_then(|id| config.email(&id));
    (meeting, rule)
}

/// A key without its occurrence: which meeting, schedule entry and recipient.
type Audience = (String, String, String);

fn audience_of(key: &MailKey) -> Audience {
    (key.meeting.clone(), key.email.clone(), key.audience.clone())
}

/// Why a row no longer wanted by the config is withdrawn.
fn withdrawal_reason(config: &Config, meetings: &MeetingIndex<'_>, key: &MailKey) -> String {
    let why = match lookup(config, meetings, key) {
        (None, _) => "the meeting is no longer in the config",
        (Some(m), _) if m.is_cancelled() => "meeting cancelled",
        (_, None) => "the email is no longer in the schedule",
        _ => "the recipient is no longer concerned by the meeting",
    };
    format!("{WITHDRAWN}{why}")
}

/// Compares the config (as of `now`) with the ledger's rows and revisions; `announced` holds
/// what recipients of unsent notices last heard ([`announced_wanted`]; a revision missing from
/// it only means a change back to it is announced like any other).
pub fn reconcile(
    config: &Config,
    rows: &[LedgerRow],
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    announced: &Announced,
    now: Timestamp,
) -> Reconciled {
    let next = revision::next_revisions(config, revisions, now);
    reconcile_revised(config, rows, revisions, next, announced, now)
}

/// [`reconcile`], given each meeting's next revision (`next`: [`revision::next_revisions`] of
/// `config`, `revisions` and `now`), computed before the rows were read: the start renders the
/// feeds from them and reconciles the rest once they are served.
///
/// # Panics
/// When `next` does not have one revision per meeting of `config` (a caller's bug).
pub fn reconcile_revised(
    config: &Config,
    rows: &[LedgerRow],
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    next: Vec<(StoredRevision, Change)>,
    announced: &Announced,
    now: Timestamp,
) -> Reconciled {
    assert_eq!(
        next.len(),
        config.meetings.len(),
        "one next revision per meeting"
    );
    let tz = &config.network.time_zone;
    let by_key: HashMap<&MailKey, &LedgerRow> = rows.iter().map(|r| (&r.key, r)).collect();
    let index = meeting_index(config);
    let mut out = Reconciled::default();
    // The keys of existing rows the config still wants (only rows can be withdrawn).
    let mut wanted: HashSet<&MailKey> = HashSet::new();
    // Unsent notices whose meeting is back as their recipients last heard: withdrawn, with no
    // newer notice.
    let unsent = unsent_notices(rows);
    let mut back: HashSet<&MailKey> = HashSet::new();
    // Revisions from before zones were recorded were in the zone configured now (see
    // `revision::Significant::zone`); their older history rows get it too.
    if revisions.values().any(|r| r.significant.zone.is_none()) {
        out.replan.history_zone = Some(config.network.time_zone_name.clone());
    }

    for (meeting, (rev, change)) in config.meetings.iter().zip(next) {
        if change == Change::Unchanged {
            continue;
        }
        if let Change::Significant { before } = &change {
            // A meeting that has started gets no notice: it could only be skipped (its deadline
            // is the start), and a change of zone would queue one for every past meeting.
            let started = meeting.starts_at(tz) <= now;
            let mut queued = if started {
                Vec::new()
            } else {
                notices(config, meeting, before, rev.sequence, now)
            };
            let before_back = back.len();
            queued.retain(|row| {
                let Some(&(unsent, from)) = unsent.get(&audience_of(&row.key)) else {
                    return true;
                };
                let heard = announced.get(&(meeting.id.to_string(), from));
                if heard.is_some_and(|h| !revision::is_move(h, &rev.significant, config)) {
                    back.insert(&unsent.key);
                    return false;
                }
                true
            });
            let back_note = if back.len() > before_back {
                "; back as last announced to some recipients, their unsent notices withdrawn"
            } else {
                ""
            };
            out.notes.push(format!(
                "meeting {} changed (SEQUENCE {} -> {}): {}{back_note}",
                meeting.id,
                revisions.get(&meeting.id).map_or(0, |r| r.sequence),
                rev.sequence,
                if started {
                    "it has started: no notice".to_owned()
                } else if queued.is_empty() {
                    "no notice in the schedule".to_owned()
                } else {
                    let names: Vec<String> = queued.iter().map(|r| r.key.to_string()).collect();
                    format!("queued {}", names.join(", "))
                }
            ));
            for row in queued {
                if !by_key.contains_key(&row.key) {
                    out.replan.inserts.push(row);
                }
            }
        }
        out.replan.revisions.push((meeting.id.clone(), rev));
    }

    // A meeting still to come that left the config uncancelled: its mail is withdrawn and the
    // feed drops it, but no cancellation goes out, and a calendar that took the event from a
    // mailed invite keeps it.
    let in_config: HashSet<&str> = config.meetings.iter().map(|m| m.id.as_str()).collect();
    let removed = (revisions.iter()).filter(|(id, rev)| {
        !in_config.contains(id.as_str()) && rev.significant.status != "cancelled"
    });
    for (id, rev) in removed {
        let to_come = (rev.significant.zone.as_deref())
            .and_then(|z| jiff::tz::TimeZone::get(z).ok())
            .or_else(|| Some(tz.clone()))
            .and_then(|zone| rev.significant.instants_in(&zone))
            .is_some_and(|(start, _)| start > now);
        if to_come {
            out.warnings.push(format!(
                "meeting {id} ({}) is no longer in the config but was not cancelled: its mail is \
                 withdrawn and the feed drops it, but no cancellation notice goes out, and \
                 calendars that took it from a mailed invite keep it; to tell its invitees, put \
                 it back with status = \"cancelled\"",
                rev.significant.date
            ));
        }
    }

    // The newest notice of each meeting, schedule entry and recipient, queued now or before.
    // (Owned: the inserts go on growing below. Notices are few.)
    let mut newest_notice: HashMap<Audience, u32> = HashMap::new();
    for key in rows
        .iter()
        .map(|r| &r.key)
        .chain(out.replan.inserts.iter().map(|r| &r.key))
        .filter(|k| k.occurrence > 0)
    {
        let newest = newest_notice.entry(audience_of(key)).or_default();
        *newest = (*newest).max(key.occurrence);
    }
    // Notices already queued stay wanted while their meeting and rule still call for them and
    // no newer one is queued (that one tells what changed since the last that went out).
    for row in rows.iter().filter(|r| r.key.occurrence > 0) {
        if back.contains(&row.key) {
            continue;
        }
        if newest_notice
            .get(&audience_of(&row.key))
            .is_some_and(|&newest| row.key.occurrence < newest)
        {
            continue;
        }
        let (Some(meeting), Some(rule)) = lookup(config, &index, &row.key) else {
            continue;
        };
        let keep = match rule.trigger {
            Trigger::OnCancel => meeting.is_cancelled(),
            Trigger::OnChange => !meeting.is_cancelled(),
            _ => false,
        };
        if !keep {
            continue;
        }
        wanted.insert(&row.key);
        // A notice still to go out follows its meeting's start (moved after the notice was
        // queued, without a newer one: the meeting had started by then, or is cancelled), so
        // none goes out after the meeting. Its due instant, attempts and retry stay; its
        // deadline is its grace, as when queued (`Replan::follows`).
        let starts = meeting.starts_at(tz);
        let unsent = matches!(
            row.state,
            MailState::Pending | MailState::Held | MailState::Sending
        );
        if unsent && row.starts != starts {
            out.notes.push(format!(
                "{}: follows the meeting, now starting {starts}",
                row.key
            ));
            out.replan.follows.push(Reschedule {
                key: row.key.clone(),
                due: row.due,
                deadline: schedule::deadline(row.due, rule.grace, starts),
                starts,
                created: row.created,
            });
        }
    }

    for due in schedule::due_mails(config) {
        let key = MailKey::timed(&due.meeting, &due.email, &due.recipient);
        let starts = index
            .get(due.meeting.as_str())
            .map_or(due.deadline, |m| m.starts_at(tz));
        let existing = by_key.get(&key).copied();
        if let Some(row) = existing {
            wanted.insert(&row.key);
        }
        match existing {
            None => out.replan.inserts.push(
                NewRow {
                    key,
                    meeting: &due.meeting,
                    email: &due.email,
                    recipient: &due.recipient,
                    due: due.due,
                    deadline: due.deadline,
                    starts,
                }
                .row(config, now),
            ),
            Some(row) if row.state == MailState::Sent => {}
            Some(row) => {
                // A row being sent takes the new times too (`Replan::reschedules`): whatever
                // the attempt in flight ends in, the row follows the meeting.
                let moved = (row.due, row.deadline, row.starts) != (due.due, due.deadline, starts);
                let revived = match row.state {
                    MailState::Skipped => row
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with(WITHDRAWN)),
                    MailState::Sending => row.withdrawn.is_some(),
                    _ => false,
                };
                if moved || revived {
                    out.notes.push(if moved {
                        format!("{key}: due moved from {} to {}", row.due, due.due)
                    } else {
                        format!("{key}: wanted again, back to pending")
                    });
                    out.replan.reschedules.push(Reschedule {
                        key,
                        due: due.due,
                        deadline: due.deadline,
                        starts,
                        // Planned again now, unless held: see `Reschedule::created` (the
                        // clock-jump guard).
                        created: if row.state == MailState::Held {
                            row.created
                        } else {
                            now
                        },
                    });
                }
            }
        }
    }

    for row in rows {
        // A row being sent is withdrawn once: it is marked, and the attempt decides.
        let withdrawable = match row.state {
            MailState::Pending | MailState::Held => true,
            MailState::Sending => row.withdrawn.is_none(),
            _ => false,
        };
        if wanted.contains(&row.key) || !withdrawable {
            continue;
        }
        let reason = match newest_notice.get(&audience_of(&row.key)) {
            _ if back.contains(&row.key) => BACK_AS_ANNOUNCED.to_owned(),
            Some(&newest) if row.key.occurrence > 0 && row.key.occurrence < newest => {
                format!("{SUPERSEDED}{newest}")
            }
            _ => withdrawal_reason(config, &index, &row.key),
        };
        out.notes.push(format!("{}: skipped, {reason}", row.key));
        out.replan.withdrawals.push((row.key.clone(), reason));
    }
    out
}
