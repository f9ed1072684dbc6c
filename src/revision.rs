//! Meeting revisions: the SEQUENCE and LAST-MODIFIED of each meeting, and what changed.
//!
//! Pure. The ledger stores one [`StoredRevision`] per meeting; at every config load
//! [`next_revision`] compares it with the meeting as configured now. RFC 5545 3.8.7.4: SEQUENCE
//! rises when the time, place or status changes; any other visible change (title, notes, focus)
//! only moves LAST-MODIFIED and DTSTAMP. A change of the compiled agenda (an item accepted,
//! declined, moved or retimed) also raises SEQUENCE, so calendars take the new DESCRIPTION,
//! but queues no change notice. SEQUENCE never goes down.

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
}

impl Significant {
    /// The significant fields of a meeting.
    pub fn of(meeting: &Meeting) -> Self {
        Self {
            date: meeting.date.to_string(),
            start: meeting.start.strftime("%H:%M").to_string(),
            end: meeting.end.strftime("%H:%M").to_string(),
            location: meeting.location.as_ref().map(|l| l.as_str().to_owned()),
            join_url: meeting.join_url.as_ref().map(|u| u.as_str().to_owned()),
            status: meeting.status.as_str().to_owned(),
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
    /// Time, place or status changed: SEQUENCE rises.
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
    let sig = Significant::of(meeting);
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
    let significant = Significant::of(meeting);
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
    if prev.significant != significant {
        let rev = StoredRevision {
            sequence: prev.sequence.saturating_add(1),
            last_modified: modified,
            significant,
            content_digest: content,
            agenda_digest,
        };
        (
            rev,
            Change::Significant {
                before: prev.significant.clone(),
            },
        )
    } else if prev.agenda_digest != agenda_digest {
        let rev = StoredRevision {
            sequence: prev.sequence.saturating_add(1),
            last_modified: modified,
            content_digest: content,
            agenda_digest,
            ..prev.clone()
        };
        (rev, Change::Agenda)
    } else if prev.content_digest != content {
        let rev = StoredRevision {
            last_modified: modified,
            content_digest: content,
            ..prev.clone()
        };
        (rev, Change::Content)
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
        let text = std::fs::read_to_string("config/lednet.toml").expect("example config");
        let text = format!("{text}\n{extra_meeting}");
        parse(
            std::path::Path::new("config/lednet.toml"),
            &text,
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
}
