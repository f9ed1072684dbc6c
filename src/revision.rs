//! Meeting revisions: the SEQUENCE and LAST-MODIFIED of each meeting, and what changed.
//!
//! Pure. The ledger stores one [`StoredRevision`] per meeting; at every config load
//! [`next_revision`] compares it with the meeting as configured now. RFC 5545 3.8.7.4: SEQUENCE
//! rises when the time, place or status changes; any other visible change (title, notes, focus)
//! only moves LAST-MODIFIED and DTSTAMP. A change of the compiled agenda (an item accepted,
//! declined, moved or retimed) also raises SEQUENCE, so calendars take the new DESCRIPTION,
//! but queues no change notice. SEQUENCE never goes down.
//!
//! The local date and times are read in the zone [`Significant::zone`] records: changing
//! `network.time_zone` to a zone whose rules put the meeting at another instant is a move
//! (SEQUENCE rises, a change notice is queued); a new name for the same instants (an alias, or a
//! zone whose rules agree on that day) only moves LAST-MODIFIED, since the feed's TZID changes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Config, Meeting, MeetingStatus};

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
    /// Another zone name, at the same instants, with the same place, link and status.
    ZoneRenamed,
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
        None | Some(None) => Comparison::Moved,
        Some(Some(old)) => {
            let tz = &config.network.time_zone;
            match (before.instants_in(&old), now.instants_in(tz)) {
                (Some(a), Some(b)) if a == b => Comparison::ZoneRenamed,
                _ => Comparison::Moved,
            }
        }
    }
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

/// A digest of every field of a meeting that the feed or a mail shows, with the names of the
/// priorities in focus and their leads (a new lead changes the DESCRIPTION).
pub fn content_digest(config: &Config, meeting: &Meeting) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    // The zone is left out: digests stored before it was recorded still match, and a change
    // of zone is judged by `compare`.
    let sig = Significant::of(config, meeting);
    for s in [&sig.date, &sig.start, &sig.end, &sig.status] {
        put(s);
    }
    put(sig.location.as_deref().unwrap_or(""));
    put(sig.join_url.as_deref().unwrap_or(""));
    put(meeting.title.as_str());
    put(meeting.notes.as_deref().unwrap_or(""));
    for p in config.priorities_of(meeting) {
        put(p.id.as_str());
        put(p.name.as_str());
        put(&p.lead.email.to_string());
    }
    put(config.network.contact.to_string().as_str());
    // Only a non-empty agenda counts, so digests stored before agendas existed still match.
    let agenda = config.agenda.get(&meeting.id).digest();
    if !agenda.is_empty() {
        put(&agenda);
    }
    hex::encode(h.finalize())
}

/// The revision a meeting has now, given what was stored and the instant of this load.
pub fn next_revision(
    stored: Option<&StoredRevision>,
    config: &Config,
    meeting: &Meeting,
    now: Timestamp,
) -> (StoredRevision, Change) {
    let significant = Significant::of(config, meeting);
    let content = content_digest(config, meeting);
    let agenda_digest = config.agenda.get(&meeting.id).digest();
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
    } else if prev.content_digest != content || comparison == Comparison::ZoneRenamed {
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
}
