//! Meeting revisions: the SEQUENCE and LAST-MODIFIED of each meeting, and what changed.
//!
//! Pure. The ledger stores one [`StoredRevision`] per meeting; at every config load
//! [`next_revision`] compares it with the meeting as configured now. RFC 5545 3.8.7.4: SEQUENCE
//! rises when the time, place or status changes; any other change to what the feed's event or a
//! mail shows of the meeting (title, notes, focus, the network's names, a lead's organisation, the
//! page URL: everything [`content_digest`] covers) only moves LAST-MODIFIED and DTSTAMP (RFC 5545
//! 3.8.7.3). A change of the compiled agenda (an item accepted,
//! declined, moved or retimed) also raises SEQUENCE, so calendars take the new DESCRIPTION,
//! but queues no change notice. SEQUENCE never goes down.
//!
//! The local date and times are read in the zone [`Significant::zone`] records: changing
//! `network.time_zone` to a zone whose rules put the meeting at another instant is a move
//! (SEQUENCE rises, a change notice is queued); a new name for the same instants (an alias, or a
//! zone whose rules agree on that day) only moves LAST-MODIFIED, since the feed's TZID changes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Config, Meeting, MeetingId, MeetingStatus, Network, Person, Priority};

/// The part of a meeting whose change raises SEQUENCE (and may send a change notice).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Significant {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM`.
    pub end: String,
    /// Location, if any.
    pub location: Option<String>,
    /// Join link, if any.
    pub join_url: Option<String>,
    /// `confirmed` or `cancelled`.
    pub status: String,
    /// The IANA name of the zone the date and times are local to (`network.time_zone`).
    /// `None` in revisions stored before the zone was recorded: those are read as being in the
    /// zone configured now, and the next reconciliation records it ([`Change::Recorded`]).
    #[serde(default)]
    pub zone: Option<String>,
}

impl Significant {
    /// The significant fields of a meeting under `config`'s time zone.
    pub fn of(config: &Config, meeting: &Meeting) -> Self {
        Self {
            date: meeting.date.to_string(),
            start: meeting.start.strftime("%H:%M").to_string(),
            end: meeting.end.strftime("%H:%M").to_string(),
            location: meeting.location.as_ref().map(|l| l.as_str().to_owned()),
            join_url: meeting.join_url.as_ref().map(|u| u.as_str().to_owned()),
            status: meeting.status.as_str().to_owned(),
            zone: Some(config.network.time_zone_name.clone()),
        }
    }

    /// The instants the local date and times stand for in `tz`; `None` when the stored fields
    /// do not parse (a damaged revision).
    pub fn instants_in(&self, tz: &jiff::tz::TimeZone) -> Option<(Timestamp, Timestamp)> {
        let date: jiff::civil::Date = self.date.parse().ok()?;
        let time = |s: &str| jiff::civil::Time::strptime("%H:%M", s).ok();
        let (start, end) = (time(&self.start)?, time(&self.end)?);
        Some((
            crate::schedule::local_instant(tz, date.to_datetime(start)),
            crate::schedule::local_instant(tz, date.to_datetime(end)),
        ))
    }

    /// The zone these fields were recorded in, when it is not `now`'s: `Some(None)` when its
    /// name no longer resolves. `None` when it is the same zone, or was not recorded (a revision
    /// stored before zones were, which was in the zone configured now).
    pub fn other_zone(&self, now: &Significant) -> Option<Option<jiff::tz::TimeZone>> {
        match self.zone.as_deref() {
            Some(name) if self.zone != now.zone => Some(jiff::tz::TimeZone::get(name).ok()),
            _ => None,
        }
    }
}

/// How the significant fields now compare with those stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    /// Same fields, same zone (or a stored revision without one).
    Same,
    /// Other local times or another zone name, at the same instants, with the same place, link
    /// and status: a zone renamed, or a time written in the spring-forward gap corrected to the
    /// one it was taken as.
    SameInstants,
    /// Another time, place, link or status; or another zone that puts the meeting at another
    /// instant (or whose name no longer resolves).
    Moved,
}

/// Compares `now` (the fields of a meeting under `config`) with `before`.
fn compare(before: &Significant, now: &Significant, config: &Config) -> Comparison {
    if (&before.location, &before.join_url, &before.status)
        != (&now.location, &now.join_url, &now.status)
    {
        return Comparison::Moved;
    }
    let same_local =
        (&before.date, &before.start, &before.end) == (&now.date, &now.start, &now.end);
    match before.other_zone(now) {
        None if same_local => Comparison::Same,
        // The same zone, other local times: a move only if the clocks take them to other
        // instants (under today's rules for both, so new tzdata is never a move by itself).
        None => {
            let tz = &config.network.time_zone;
            match (before.instants_in(tz), now.instants_in(tz)) {
                (Some(a), Some(b)) if a == b => Comparison::SameInstants,
                _ => Comparison::Moved,
            }
        }
        Some(None) => Comparison::Moved,
        Some(Some(old)) => {
            let tz = &config.network.time_zone;
            match (before.instants_in(&old), now.instants_in(tz)) {
                (Some(a), Some(b)) if a == b => Comparison::SameInstants,
                _ => Comparison::Moved,
            }
        }
    }
}

/// True when a meeting with the fields `now` (under `config`) is elsewhere, at another time or in
/// another state than one with the fields `before`: what a change notice announces. Other local
/// times that the clocks take to the same instants are no move.
pub fn is_move(before: &Significant, now: &Significant, config: &Config) -> bool {
    compare(before, now, config) == Comparison::Moved
}

/// What the ledger keeps per meeting.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredRevision {
    /// RFC 5545 SEQUENCE.
    pub sequence: u32,
    /// The meeting's last change (DTSTAMP and LAST-MODIFIED).
    pub last_modified: Timestamp,
    /// The significant fields as of the last change.
    pub significant: Significant,
    /// A digest of everything the feed and mail show of the meeting.
    pub content_digest: String,
    /// The digest of the meeting's compiled agenda ([`crate::agenda::Agenda::digest`]; empty
    /// for no agenda, which is also what revisions stored before agendas existed read as).
    #[serde(default)]
    pub agenda_digest: String,
}

/// How a meeting differs from its stored revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// First time this meeting is seen.
    New,
    /// Nothing visible changed.
    Unchanged,
    /// Only descriptive fields changed: LAST-MODIFIED moves, SEQUENCE stays.
    Content,
    /// Only the compiled agenda changed: SEQUENCE rises, no change notice.
    Agenda,
    /// Nothing visible changed, but the stored revision lacks a field this build records (the
    /// zone): the revision is written again, with the same SEQUENCE and LAST-MODIFIED.
    Recorded,
    /// Time, place or status changed (the time also by a change of zone): SEQUENCE rises.
    Significant {
        /// The significant fields before the change.
        before: Significant,
    },
}

/// A digest of every field of a meeting that the feed or a mail shows: the meeting's own fields,
/// the priorities in focus (each with its summary, lead and deputy), and what the network lends
/// every event and mail (its names, zone name, contact, UID domain, and the page URL made of
/// `base_url` and the feed token). The structs are taken apart field by field, so a field added
/// to any of them is a compile error here until it is put in or left out with a reason.
///
/// Digests stored before this covered the network's names, the leads' names and organisations,
/// the deputies, the URLs and the UID domain do not match: each meeting's LAST-MODIFIED moves
/// once after that upgrade (its SEQUENCE stays).
pub fn content_digest(config: &Config, meeting: &Meeting) -> String {
    let agenda = config.agenda.get(&meeting.id).digest();
    ContentDigester::new(config).digest(meeting, &Significant::of(config, meeting), &agenda)
}

/// [`content_digest`] for every meeting of one config: the parts all meetings share (the
/// network, each priority with its people) are framed once, and each meeting's bytes are
/// hashed in one call from a buffer reused from meeting to meeting (a reconciliation digests
/// every meeting, at start before the feeds are served).
pub struct ContentDigester<'a> {
    config: &'a Config,
    /// The network's part, framed.
    network: Vec<u8>,
    /// Each priority's part (in the config's order), framed.
    priorities: Vec<Vec<u8>>,
    /// One meeting's bytes.
    buffer: Vec<u8>,
}

/// Appends `s` to `out` framed by its length, so no two sequences of strings give one stream.
fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl<'a> ContentDigester<'a> {
    /// Frames the parts of `config` every meeting shares.
    pub fn new(config: &'a Config) -> Self {
        let Network {
            short_name,
            name,
            // By its name (`Significant::zone`); new rules under the same name are not a change
            // (`compare`).
            time_zone: _,
            time_zone_name: _,
            base_url,
            contact,
            uid_domain,
        } = &config.network;
        let mut network = Vec::new();
        for s in [short_name.as_str(), name.as_str(), base_url.as_str()] {
            put(&mut network, s);
        }
        put(&mut network, &contact.to_string());
        put(&mut network, uid_domain);
        put(
            &mut network,
            config.http.feed_token.as_ref().map_or("", |t| t.as_str()),
        );
        let priorities = (config.priorities.iter())
            .map(|p| {
                let Priority {
                    id,
                    name,
                    summary,
                    lead,
                    deputy,
                } = p;
                let mut out = Vec::new();
                for s in [id.as_str(), name.as_str(), summary.as_str()] {
                    put(&mut out, s);
                }
                put(
                    &mut out,
                    if deputy.is_some() {
                        "lead, deputy"
                    } else {
                        "lead"
                    },
                );
                for Person {
                    name,
                    email,
                    organisation,
                } in std::iter::once(lead).chain(deputy)
                {
                    put(&mut out, name.as_str());
                    put(&mut out, &email.to_string());
                    put(&mut out, organisation.as_ref().map_or("", |o| o.as_str()));
                }
                out
            })
            .collect();
        Self {
            config,
            network,
            priorities,
            buffer: Vec::new(),
        }
    }

    /// The content digest of `meeting`, whose significant fields are `sig` and whose compiled
    /// agenda's digest is `agenda`.
    pub fn digest(&mut self, meeting: &Meeting, sig: &Significant, agenda: &str) -> String {
        let Meeting {
            id,
            // Date, times, place, link and status: through `Significant`, as stored.
            date: _,
            start: _,
            end: _,
            title,
            location: _,
            join_url: _,
            status: _,
            focus,
            notes,
        } = meeting;
        let out = &mut self.buffer;
        out.clear();
        for s in [&sig.date, &sig.start, &sig.end, &sig.status] {
            put(out, s);
        }
        put(out, sig.location.as_deref().unwrap_or(""));
        put(out, sig.join_url.as_deref().unwrap_or(""));
        put(out, sig.zone.as_deref().unwrap_or(""));
        put(out, id.as_str());
        put(out, title.as_str());
        put(out, notes.as_deref().unwrap_or(""));
        // "Priorities (all in focus)" or "Priorities in focus" in the DESCRIPTION.
        put(out, if focus.is_empty() { "all" } else { "focus" });
        out.extend_from_slice(&self.network);
        for (p, framed) in self.config.priorities.iter().zip(&self.priorities) {
            if meeting.has_in_focus(&p.id) {
                out.extend_from_slice(framed);
            }
        }
        put(out, agenda);
        hex::encode(Sha256::digest(out.as_slice()))
    }
}

/// The revision a meeting has now, given what was stored and the instant of this load.
pub fn next_revision(
    stored: Option<&StoredRevision>,
    config: &Config,
    meeting: &Meeting,
    now: Timestamp,
) -> (StoredRevision, Change) {
    next_revision_with(&mut ContentDigester::new(config), stored, meeting, now)
}

/// [`next_revision`] with the digester of its config.
fn next_revision_with(
    digester: &mut ContentDigester<'_>,
    stored: Option<&StoredRevision>,
    meeting: &Meeting,
    now: Timestamp,
) -> (StoredRevision, Change) {
    let config = digester.config;
    let significant = Significant::of(config, meeting);
    let agenda_digest = config.agenda.get(&meeting.id).digest();
    let content = digester.digest(meeting, &significant, &agenda_digest);
    let Some(prev) = stored else {
        let rev = StoredRevision {
            sequence: 0,
            last_modified: now,
            significant,
            content_digest: content,
            agenda_digest,
        };
        return (rev, Change::New);
    };
    // LAST-MODIFIED never moves backwards, even if the clock did.
    let modified = now.max(prev.last_modified);
    let comparison = compare(&prev.significant, &significant, config);
    if comparison == Comparison::Moved {
        let rev = StoredRevision {
            sequence: prev.sequence.saturating_add(1),
            last_modified: modified,
            significant,
            content_digest: content,
            agenda_digest,
        };
        // A revision stored without its zone was in the zone configured now (`compare`).
        let mut before = prev.significant.clone();
        if before.zone.is_none() {
            before.zone.clone_from(&rev.significant.zone);
        }
        return (rev, Change::Significant { before });
    }
    let recorded = prev.significant.zone.is_none();
    if prev.agenda_digest != agenda_digest {
        let rev = StoredRevision {
            sequence: prev.sequence.saturating_add(1),
            last_modified: modified,
            significant,
            content_digest: content,
            agenda_digest,
        };
        (rev, Change::Agenda)
    } else if prev.content_digest != content || comparison == Comparison::SameInstants {
        let rev = StoredRevision {
            last_modified: modified,
            significant,
            content_digest: content,
            ..prev.clone()
        };
        (rev, Change::Content)
    } else if recorded {
        let rev = StoredRevision {
            significant,
            ..prev.clone()
        };
        (rev, Change::Recorded)
    } else {
        (prev.clone(), Change::Unchanged)
    }
}

/// Each meeting's [`next_revision`] at `now`, in the config's order: the first half of a
/// reconciliation, and all that the feeds need of it
/// ([`crate::scheduler::reconcile::reconcile_revised`] takes them as they are).
pub fn next_revisions(
    config: &Config,
    stored: &BTreeMap<MeetingId, StoredRevision>,
    now: Timestamp,
) -> Vec<(StoredRevision, Change)> {
    let threads = crate::parallel::worker_threads(config.meetings.len());
    let runs = crate::parallel::in_runs(&config.meetings, threads, |meetings| {
        let mut digester = ContentDigester::new(config);
        (meetings.iter())
            .map(|m| next_revision_with(&mut digester, stored.get(&m.id), m, now))
            .collect::<Vec<_>>()
    });
    runs.into_iter().flatten().collect()
}

/// `stored` with those of `next` ([`next_revisions`] of `config`) that are not
/// [`Change::Unchanged`] over it: what the ledger holds once their reconciliation is written;
/// and the changes, in the config's order. Each meeting's next revision is then the map's
/// ([`next_of`]): moved there, not copied (5,000 of them before a start's feeds are served).
pub fn revised(
    config: &Config,
    stored: &BTreeMap<MeetingId, StoredRevision>,
    next: Vec<(StoredRevision, Change)>,
) -> (BTreeMap<MeetingId, StoredRevision>, Vec<Change>) {
    let mut revisions = stored.clone();
    let changes = (config.meetings.iter().zip(next))
        .map(|(meeting, (rev, change))| {
            if change != Change::Unchanged {
                revisions.insert(meeting.id.clone(), rev);
            }
            change
        })
        .collect();
    (revisions, changes)
}

/// The next revisions again, from what [`revised`] split them into (`revisions` and `changes`
/// of `config`).
///
/// # Panics
/// When a meeting of `config` has no revision in `revisions` (not [`revised`]'s output).
pub fn next_of(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    changes: Vec<Change>,
) -> Vec<(StoredRevision, Change)> {
    (config.meetings.iter().zip(changes))
        .map(|(meeting, change)| {
            let rev =
                (revisions.get(&meeting.id)).expect("revised() keeps every meeting's revision");
            (rev.clone(), change)
        })
        .collect()
}

/// True when a meeting's status went from confirmed to cancelled in this change.
pub fn is_cancellation(before: &Significant, meeting: &Meeting) -> bool {
    before.status == MeetingStatus::Confirmed.as_str() && meeting.status == MeetingStatus::Cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, parse};

    fn config(extra_meeting: &str) -> Config {
        edited_config(|text| format!("{text}\n{extra_meeting}"))
    }

    /// The example config, its text edited by `edit`.
    fn edited_config(edit: impl FnOnce(&str) -> String) -> Config {
        let text = std::fs::read_to_string("config/lednet.toml").expect("example config");
        parse(
            std::path::Path::new("config/lednet.toml"),
            &edit(&text),
            &Environment::default(),
        )
        .expect("valid")
        .config
    }

    #[test]
    fn sequence_rises_on_time_place_or_status_and_never_falls() {
        let t0: Timestamp = "2023-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-02T00:00:00Z".parse().expect("ts");
        let base = "[[meeting]]\nid = \"x\"\ndate = 2023-12-12\nstart = \"10:00\"\nend = \"11:00\"\ntitle = \"T\"\n";
        let c = config(base);
        let m = c.meetings.iter().find(|m| m.id.as_str() == "x").expect("x");
        let (r0, ch) = next_revision(None, &c, m, t0);
        assert_eq!((r0.sequence, ch), (0, Change::New));
        let (same, ch) = next_revision(Some(&r0), &c, m, t1);
        assert_eq!((same.clone(), ch), (r0.clone(), Change::Unchanged));

        let cases = [
            ("start = \"10:00\"", "start = \"09:30\"", true),
            (
                "title = \"T\"",
                "title = \"T\"\nlocation = \"Room 2\"",
                true,
            ),
            (
                "title = \"T\"",
                "title = \"T\"\nstatus = \"cancelled\"",
                true,
            ),
            ("title = \"T\"", "title = \"Renamed\"", false),
            (
                "title = \"T\"",
                "title = \"T\"\nnotes = \"Bring papers\"",
                false,
            ),
        ];
        for (from, to, significant) in cases {
            let c2 = config(&base.replace(from, to));
            let m2 = c2
                .meetings
                .iter()
                .find(|m| m.id.as_str() == "x")
                .expect("x");
            let (r1, ch) = next_revision(Some(&r0), &c2, m2, t1);
            assert_eq!(r1.last_modified, t1, "{to}");
            if significant {
                assert_eq!(r1.sequence, 1, "{to}");
                assert_eq!(
                    ch,
                    Change::Significant {
                        before: r0.significant.clone()
                    },
                    "{to}"
                );
            } else {
                assert_eq!((r1.sequence, ch), (0, Change::Content), "{to}");
            }
            // A clock that went backwards never moves LAST-MODIFIED back.
            let (r2, _) = next_revision(Some(&r1), &c, m, t0);
            assert!(r2.last_modified >= r1.last_modified && r2.sequence >= r1.sequence);
        }
    }

    /// An agenda change raises SEQUENCE without a change notice; SEQUENCE never falls when the
    /// agenda empties again; a revision stored before agendas existed reads as "no agenda".
    #[test]
    fn an_agenda_change_raises_sequence() {
        use crate::agenda::model::{Proposal, Status, compile};
        let t0: Timestamp = "2023-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-02T00:00:00Z".parse().expect("ts");
        let mut c = config("");
        let m = c.meetings[0].clone();
        let (r0, _) = next_revision(None, &c, &m, t0);
        let old_json = serde_json::to_string(&r0)
            .expect("json")
            .replace(",\"agenda_digest\":\"\"", "");
        assert!(!old_json.contains("agenda_digest"));
        let old: StoredRevision = serde_json::from_str(&old_json).expect("old revision");
        assert_eq!(next_revision(Some(&old), &c, &m, t1).1, Change::Unchanged);

        let p = Proposal {
            id: 1,
            meeting: m.id.to_string(),
            priority: "future-places".into(),
            name: "N".into(),
            organisation: "O".into(),
            email: "n@example.org".into(),
            title: "Item".into(),
            summary: "S".into(),
            presents: true,
            minutes: 10,
            status: Status::Accepted,
            position: None,
            created: t0,
            decided_by: None,
            decided_at: None,
        };
        c.agenda = compile(&c, std::slice::from_ref(&p));
        let (r1, ch) = next_revision(Some(&r0), &c, &m, t1);
        assert_eq!((r1.sequence, ch), (1, Change::Agenda));
        assert_ne!(r1.content_digest, r0.content_digest);
        c.agenda = compile(&c, &[]);
        let (r2, ch) = next_revision(Some(&r1), &c, &m, t1);
        assert_eq!((r2.sequence, ch), (2, Change::Agenda));
    }

    /// A change of `network.time_zone` is judged by the instants: a zone that puts the meeting
    /// elsewhere in time is a move (SEQUENCE rises, the change before names the old zone); one
    /// whose rules agree on that day only moves LAST-MODIFIED (the feed's TZID changes); a
    /// stored zone whose name no longer resolves is a move.
    #[test]
    fn a_new_time_zone_is_a_move_only_when_the_instants_move() {
        let t0: Timestamp = "2023-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-02T00:00:00Z".parse().expect("ts");
        let zoned = |zone: &str| {
            let c = edited_config(|text| {
                text.replace(
                    "time_zone = \"Europe/London\"",
                    &format!("time_zone = \"{zone}\""),
                )
            });
            assert_eq!(c.network.time_zone_name, zone);
            c
        };
        let london = zoned("Europe/London");
        let (r0, _) = next_revision(None, &london, &london.meetings[0], t0);
        assert_eq!(r0.significant.zone.as_deref(), Some("Europe/London"));
        // Lisbon keeps London's offsets all year; Paris is an hour ahead.
        for (zone, moved) in [("Europe/Lisbon", false), ("Europe/Paris", true)] {
            let c = zoned(zone);
            let (r1, ch) = next_revision(Some(&r0), &c, &c.meetings[0], t1);
            assert_eq!(r1.significant.zone.as_deref(), Some(zone));
            assert_eq!(r1.last_modified, t1, "{zone}");
            if moved {
                assert_eq!(r1.sequence, 1, "{zone}");
                assert_eq!(
                    ch,
                    Change::Significant {
                        before: r0.significant.clone()
                    }
                );
            } else {
                assert_eq!((r1.sequence, ch), (0, Change::Content), "{zone}");
            }
            // The same zone again changes nothing.
            assert_eq!(
                next_revision(Some(&r1), &c, &c.meetings[0], t1).1,
                Change::Unchanged
            );
        }
        let mut gone = r0.clone();
        gone.significant.zone = Some("Nowhere/Atlantis".into());
        let (r1, ch) = next_revision(Some(&gone), &london, &london.meetings[0], t1);
        assert_eq!(r1.sequence, 1);
        assert!(matches!(ch, Change::Significant { .. }), "{ch:?}");
    }

    /// A start written in the spring-forward gap (01:30 on 2023-03-26, taken as 02:30 BST)
    /// corrected to the time it was taken as moves no instant: LAST-MODIFIED moves (the
    /// feed's DTSTART text changes), SEQUENCE stays and no notice is queued. An hour later is a
    /// move.
    #[test]
    fn correcting_a_start_in_the_spring_gap_to_the_time_it_was_taken_as_is_no_move() {
        let t0: Timestamp = "2023-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-02T00:00:00Z".parse().expect("ts");
        let starting = |start: &str| {
            edited_config(|text| {
                text.replacen(
                    "date = 2023-02-24\nstart = \"10:00\"",
                    &format!("date = 2023-03-26\nstart = \"{start}\""),
                    1,
                )
            })
        };
        let gap = starting("01:30");
        assert_eq!(gap.meetings[0].date.to_string(), "2023-03-26");
        let (r0, _) = next_revision(None, &gap, &gap.meetings[0], t0);
        for (start, moved) in [("02:30", false), ("03:30", true)] {
            let c = starting(start);
            let (r1, ch) = next_revision(Some(&r0), &c, &c.meetings[0], t1);
            if moved {
                assert_eq!(r1.sequence, 1, "{start}");
                assert!(matches!(ch, Change::Significant { .. }), "{start}: {ch:?}");
            } else {
                assert_eq!((r1.sequence, ch), (0, Change::Content), "{start}");
                assert_eq!(r1.significant.start, "02:30");
                assert_eq!(r1.last_modified, t1);
            }
        }
    }

    /// A revision stored before zones were recorded is read as in the zone configured now: it
    /// is written again with that zone, nothing visible moving, and a later change of zone is
    /// then seen. A move in the same reconciliation names the zone in its change before.
    #[test]
    fn a_revision_stored_without_a_zone_is_recorded_in_the_zone_configured_now() {
        let t0: Timestamp = "2023-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-02T00:00:00Z".parse().expect("ts");
        let c = config("");
        let m = &c.meetings[0];
        let (r0, _) = next_revision(None, &c, m, t0);
        let json = serde_json::to_string(&r0)
            .expect("json")
            .replace(",\"zone\":\"Europe/London\"", "");
        assert!(!json.contains("zone"), "{json}");
        let old: StoredRevision = serde_json::from_str(&json).expect("old revision");
        assert_eq!(old.significant.zone, None);
        let (r1, ch) = next_revision(Some(&old), &c, m, t1);
        assert_eq!(ch, Change::Recorded);
        assert_eq!(r1, r0, "the same revision, with its zone");
        assert_eq!(next_revision(Some(&r1), &c, m, t1).1, Change::Unchanged);

        let moved = config(
            "[[meeting]]\nid = \"x\"\ndate = 2023-12-12\nstart = \"10:00\"\nend = \"11:00\"\ntitle = \"T\"\n",
        );
        let x = moved
            .meetings
            .iter()
            .find(|m| m.id.as_str() == "x")
            .expect("x");
        let (rx, _) = next_revision(None, &moved, x, t0);
        let mut old = rx.clone();
        old.significant.zone = None;
        old.significant.start = "09:00".into();
        let (_, ch) = next_revision(Some(&old), &moved, x, t1);
        let Change::Significant { before } = ch else {
            panic!("a move: {ch:?}");
        };
        assert_eq!(before.zone.as_deref(), Some("Europe/London"));
        assert_eq!(before.start, "09:00");
    }
    /// What a mutated config shows of meeting `i`: its VEVENT as the feed renders it (at a
    /// fixed revision, so only the config speaks) and a mail's whole template context.
    fn shown(c: &Config, i: usize, rev: &StoredRevision) -> (String, String) {
        let m = &c.meetings[i];
        let invite = crate::feed::render_meeting_invite(c, m, Some(rev));
        let from = invite.find("BEGIN:VEVENT").expect("event");
        let to = invite.find("END:VEVENT").expect("event end");
        let context = crate::mail::context::build(crate::mail::context::ContextInput {
            config: c,
            meeting: m,
            rule: &c.emails[0],
            recipient: &crate::schedule::Recipient::List,
            revision: rev,
            change: None,
        })
        .expect("context");
        (
            invite[from..to].to_owned(),
            serde_json::to_string(&context).expect("json"),
        )
    }

    /// One field of the config changed, for meeting `i`.
    type Mutation = Box<dyn Fn(&mut Config, usize)>;

    fn m(f: impl Fn(&mut Config, usize) + 'static) -> Mutation {
        Box::new(f)
    }

    fn text(s: &str) -> crate::model::HeaderText {
        crate::model::HeaderText::parse(s).expect("header text")
    }

    fn mailbox(s: &str) -> lettre::message::Mailbox {
        s.parse().expect("mailbox")
    }

    fn person(name: &str) -> Person {
        Person {
            name: text(name),
            email: mailbox(&format!("{name}@example.org")),
            organisation: Some(text("Deputy borough")),
        }
    }

    /// Every field the feed's VEVENT or a mail shows, mutated one at a time: whenever the
    /// rendered event or the mail's context differs, so does the content digest (else a
    /// subscriber's calendar would get new bytes with the old LAST-MODIFIED, against RFC 5545
    /// 3.8.7.3). Each mutation must change what one of the two meetings shows, so none of them
    /// silently tests nothing. A field added to the event or the mail needs a mutation here.
    #[test]
    fn whatever_the_event_or_a_mail_shows_is_in_the_content_digest() {
        use crate::model::{FeedToken, MeetingStatus, PriorityId, WebUrl};
        let mut base = config("");
        // Meeting 0 concerns every priority; meeting 1 two of them, with notes and a link; the
        // priorities have deputies.
        let focus = ["future-places", "future-transport"];
        base.meetings[1].focus = focus.map(|p| PriorityId::parse(p).expect("id")).to_vec();
        base.meetings[1].notes = Some("Bring papers".into());
        base.meetings[1].join_url = Some(WebUrl::parse("https://meet.example.org/a").expect("url"));
        for p in &mut base.priorities {
            p.deputy = Some(person("Dee"));
        }
        let mut mutations: Vec<(String, Mutation)> = vec![
            (
                "title".into(),
                m(|c, i| c.meetings[i].title = text("Renamed")),
            ),
            (
                "notes".into(),
                m(|c, i| c.meetings[i].notes = Some("Other notes".into())),
            ),
            ("no notes".into(), m(|c, i| c.meetings[i].notes = None)),
            (
                "location".into(),
                m(|c, i| c.meetings[i].location = Some(text("Room 2"))),
            ),
            (
                "no location".into(),
                m(|c, i| c.meetings[i].location = None),
            ),
            (
                "join url".into(),
                m(|c, i| {
                    c.meetings[i].join_url =
                        Some(WebUrl::parse("https://meet.example.org/b").expect("url"));
                }),
            ),
            (
                "no join url".into(),
                m(|c, i| c.meetings[i].join_url = None),
            ),
            (
                "date".into(),
                m(|c, i| c.meetings[i].date = jiff::civil::date(2023, 3, 1)),
            ),
            (
                "start".into(),
                m(|c, i| c.meetings[i].start = jiff::civil::time(9, 30, 0, 0)),
            ),
            (
                "end".into(),
                m(|c, i| c.meetings[i].end = jiff::civil::time(13, 0, 0, 0)),
            ),
            (
                "status".into(),
                m(|c, i| c.meetings[i].status = MeetingStatus::Cancelled),
            ),
            ("no focus".into(), m(|c, i| c.meetings[i].focus.clear())),
            (
                "focus on all five, named".into(),
                m(|c, i| {
                    c.meetings[i].focus = c.priorities.iter().map(|p| p.id.clone()).collect();
                }),
            ),
            (
                "focus on one".into(),
                m(|c, i| {
                    c.meetings[i].focus = vec![PriorityId::parse("future-places").expect("id")];
                }),
            ),
            (
                "network name".into(),
                m(|c, _| c.network.name = text("Another Network")),
            ),
            (
                "network short name".into(),
                m(|c, _| c.network.short_name = text("AnNet")),
            ),
            (
                "time zone (same instants)".into(),
                m(|c, _| {
                    c.network.time_zone = jiff::tz::TimeZone::get("Europe/Lisbon").expect("tz");
                    c.network.time_zone_name = "Europe/Lisbon".into();
                }),
            ),
            (
                "contact name".into(),
                m(|c, _| c.network.contact = mailbox("Other team <lednet-team@example.org>")),
            ),
            (
                "contact address".into(),
                m(|c, _| c.network.contact = mailbox("LEDNet team <other@example.org>")),
            ),
            (
                "contact without a name".into(),
                m(|c, _| c.network.contact = mailbox("lednet-team@example.org")),
            ),
            (
                "base url".into(),
                m(|c, _| {
                    c.network.base_url = WebUrl::parse("https://cal.example.org").expect("url");
                }),
            ),
            (
                "base url with a path".into(),
                m(|c, _| {
                    c.network.base_url =
                        WebUrl::parse("http://127.0.0.1:8080/lednet").expect("url");
                }),
            ),
            (
                "feed token".into(),
                m(|c, _| {
                    c.http.feed_token =
                        Some(FeedToken::parse("a-long-random-token-1").expect("token"));
                }),
            ),
            (
                "uid domain".into(),
                m(|c, _| c.network.uid_domain = "other.convenor".into()),
            ),
            (
                "agenda".into(),
                m(|c, i| {
                    use crate::agenda::model::{Proposal, Status, compile};
                    let p = Proposal {
                        id: 1,
                        meeting: c.meetings[i].id.to_string(),
                        priority: "future-places".into(),
                        name: "N".into(),
                        organisation: "O".into(),
                        email: "n@example.org".into(),
                        title: "Item".into(),
                        summary: "S".into(),
                        presents: true,
                        minutes: 10,
                        status: Status::Accepted,
                        position: None,
                        created: Timestamp::UNIX_EPOCH,
                        decided_by: None,
                        decided_at: None,
                    };
                    c.agenda = compile(c, &[p]);
                }),
            ),
        ];
        for p in 0..base.priorities.len() {
            let each: [(&str, Mutation); 9] = [
                (
                    "name",
                    m(move |c, _| c.priorities[p].name = text("Renamed")),
                ),
                (
                    "summary",
                    m(move |c, _| c.priorities[p].summary = "Another summary".into()),
                ),
                (
                    "lead name",
                    m(move |c, _| c.priorities[p].lead.name = text("Someone Else")),
                ),
                (
                    "lead address",
                    m(move |c, _| {
                        c.priorities[p].lead.email = mailbox("someone@example.org");
                    }),
                ),
                (
                    "lead organisation",
                    m(move |c, _| {
                        c.priorities[p].lead.organisation = Some(text("Another borough"));
                    }),
                ),
                (
                    "no lead organisation",
                    m(move |c, _| c.priorities[p].lead.organisation = None),
                ),
                (
                    "a deputy",
                    m(move |c, _| c.priorities[p].deputy = Some(person("Dana"))),
                ),
                (
                    "deputy organisation",
                    m(move |c, _| {
                        let mut d = person("Dee");
                        d.organisation = None;
                        c.priorities[p].deputy = Some(d);
                    }),
                ),
                ("no deputy", m(move |c, _| c.priorities[p].deputy = None)),
            ];
            for (what, mutation) in each {
                mutations.push((format!("priority {p} {what}"), mutation));
            }
        }
        let meetings = [0, 1];
        let revs = meetings
            .map(|i| next_revision(None, &base, &base.meetings[i], Timestamp::UNIX_EPOCH).0);
        let (mut missed, mut idle) = (Vec::new(), Vec::new());
        for (what, mutate) in &mutations {
            let mut seen = false;
            for (i, rev) in meetings.into_iter().zip(&revs) {
                let mut c = base.clone();
                mutate(&mut c, i);
                let (event, mail) = shown(&c, i, rev);
                let (base_event, base_mail) = shown(&base, i, rev);
                if (&event, &mail) == (&base_event, &base_mail) {
                    continue;
                }
                seen = true;
                if content_digest(&c, &c.meetings[i]) == content_digest(&base, &base.meetings[i]) {
                    let part = if event == base_event { "mail" } else { "event" };
                    missed.push(format!("{what} (meeting {i}: its {part} changed)"));
                }
            }
            if !seen {
                idle.push(what.clone());
            }
        }
        assert!(
            missed.is_empty(),
            "shown but not in the digest: {missed:#?}"
        );
        assert!(
            idle.is_empty(),
            "mutations that change nothing shown: {idle:?}"
        );
    }

    /// Digests stored by earlier builds are what this build computes: a different digest for
    /// unchanged content would move every meeting's LAST-MODIFIED once after an upgrade. One
    /// digest over those of the example config's meetings with focus, notes, a link, a
    /// cancellation, deputies and a feed token, as the build before the digester computed it.
    #[test]
    fn content_digests_are_those_earlier_builds_stored() {
        use crate::model::{FeedToken, MeetingStatus, PriorityId, WebUrl};
        let mut c = config("");
        c.meetings[1].focus = ["future-places", "future-transport"]
            .map(|p| PriorityId::parse(p).expect("id"))
            .to_vec();
        c.meetings[1].notes = Some("Bring papers".into());
        c.meetings[1].join_url = Some(WebUrl::parse("https://meet.example.org/a").expect("url"));
        c.meetings[2].status = MeetingStatus::Cancelled;
        c.meetings[3].location = None;
        for p in &mut c.priorities[..2] {
            p.deputy = Some(person("Dee"));
        }
        c.http.feed_token = Some(FeedToken::parse("a-long-random-token-1").expect("token"));
        let mut all = Sha256::new();
        for m in &c.meetings {
            all.update(content_digest(&c, m).as_bytes());
        }
        assert_eq!(
            hex::encode(all.finalize()),
            "73e3dded1f889f903b1c03167f598e07539214d11577416b9bc5b78d9f74fc6a",
        );
    }
}
