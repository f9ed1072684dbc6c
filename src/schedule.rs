//! Due instants: when each scheduled email of each meeting becomes due, as a UTC instant.
//!
//! Pure: takes the validated [`Config`] and returns data; never reads the clock.
//!
//! # The rule for local times (RFC 5545 section 3.3.5)
//!
//! A local date and time is turned into an instant in the network's zone like this:
//! - a local time that does not exist (the clocks spring forward over it) moves forward by the
//!   length of the gap: 01:30 on 2023-03-26 in London is 02:30 BST, 01:30Z;
//! - a local time that happens twice (the clocks fall back over it) takes the earlier instant:
//!   01:30 on 2023-10-29 in London is 01:30 BST, 00:30Z.
//!
//! This is jiff's "compatible" disambiguation, which [`local_instant`] uses and the tables below
//! check.

use jiff::{SignedDuration, Timestamp, civil::DateTime, tz::TimeZone};

use crate::model::{Audience, Config, EmailId, EmailRule, Meeting, MeetingId, PriorityId, Trigger};

/// The instant of a local date-time in a zone, by the RFC 5545 rule in the module docs.
pub fn local_instant(tz: &TimeZone, local: DateTime) -> Timestamp {
    // `compatible` only fails when the result is outside jiff's supported range, which validated
    // dates (years 1000 to 9999) never reach; saturate rather than panic all the same.
    tz.to_ambiguous_timestamp(local)
        .compatible()
        .unwrap_or(Timestamp::MAX)
}

/// Who one scheduled message goes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recipient {
    /// The mailing list(s).
    List,
    /// The lead of this priority.
    Lead(PriorityId),
}

impl Recipient {
    /// The ledger's key for this recipient: `list` or `lead:<priority-id>`.
    pub fn key(&self) -> String {
        self.key_parts().concat()
    }

    /// [`Recipient::key`] as the two pieces it is made of (`["list", ""]`, `["lead:", id]`), for
    /// callers that hash or write it without building the string.
    pub fn key_parts(&self) -> [&str; 2] {
        match self {
            Self::List => ["list", ""],
            Self::Lead(id) => ["lead:", id.as_str()],
        }
    }

    /// Parses a ledger key written by [`Recipient::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "list" {
            return Some(Self::List);
        }
        let id = key.strip_prefix("lead:")?;
        PriorityId::parse(id).ok().map(Self::Lead)
    }
}

/// One message the schedule asks for, with its due instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueMail {
    /// The meeting it is about.
    pub meeting: MeetingId,
    /// The schedule entry it comes from.
    pub email: EmailId,
    /// Who receives it.
    pub recipient: Recipient,
    /// When it becomes due (UTC).
    pub due: Timestamp,
    /// The latest instant it may still be sent: due + grace, capped at the meeting's start.
    pub deadline: Timestamp,
}

/// The due instant of a timed rule for a meeting; `None` for change and cancellation notices,
/// which are queued by events rather than by the calendar.
pub fn due_instant(tz: &TimeZone, meeting: &Meeting, rule: &EmailRule) -> Option<Timestamp> {
    match rule.trigger {
        Trigger::DaysBefore { days, at } => {
            let date = meeting
                .date
                .checked_sub(jiff::Span::new().days(i64::from(days)))
                .ok()?;
            Some(local_instant(tz, date.to_datetime(at)))
        }
        Trigger::Before(duration) => meeting.starts_at(tz).checked_sub(duration).ok(),
        Trigger::OnChange | Trigger::OnCancel => None,
    }
}

/// The recipients of a rule for a meeting: the list, each lead concerned, or both.
pub fn recipients(config: &Config, meeting: &Meeting, rule: &EmailRule) -> Vec<Recipient> {
    let leads = || {
        config
            .priorities_of(meeting)
            .map(|p| Recipient::Lead(p.id.clone()))
    };
    match rule.audience {
        Audience::List => vec![Recipient::List],
        Audience::Leads => leads().collect(),
        Audience::Both => std::iter::once(Recipient::List).chain(leads()).collect(),
    }
}

/// The last instant a mail due at `due` may go out: `due + grace`, and never after the meeting
/// starts.
pub fn deadline(due: Timestamp, grace: SignedDuration, meeting_start: Timestamp) -> Timestamp {
    due.checked_add(grace)
        .unwrap_or(Timestamp::MAX)
        .min(meeting_start)
}

/// Every timed message of every confirmed meeting, sorted by due instant (then meeting, email,
/// recipient). Cancelled meetings get no timed mail.
pub fn timeline(config: &Config) -> Vec<DueMail> {
    let mut out = due_mails(config);
    out.sort_by(|a, b| {
        (a.due, &a.meeting, &a.email, &a.recipient).cmp(&(
            b.due,
            &b.meeting,
            &b.email,
            &b.recipient,
        ))
    });
    out
}

/// The mails of [`timeline`] in config order (meeting by meeting, then the schedule's order),
/// for callers that need them all but not sorted: reconciliation, where the sort was a sixth
/// of its time at 5,000 meetings.
pub fn due_mails(config: &Config) -> Vec<DueMail> {
    let tz = &config.network.time_zone;
    let mut out = Vec::new();
    for meeting in config.meetings.iter().filter(|m| !m.is_cancelled()) {
        let start = meeting.starts_at(tz);
        for rule in &config.emails {
            let Some(due) = due_instant(tz, meeting, rule) else {
                continue;
            };
            for recipient in recipients(config, meeting, rule) {
                out.push(DueMail {
                    meeting: meeting.id.clone(),
                    email: rule.id.clone(),
                    recipient,
                    due,
                    deadline: deadline(due, rule.grace, start),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    fn at(tz: &str, y: i16, m: i8, d: i8, h: i8, min: i8) -> String {
        let tz = TimeZone::get(tz).expect("zone");
        local_instant(&tz, date(y, m, d).at(h, min, 0, 0)).to_string()
    }

    /// Local times across the London changes of 2023 and New York's of 2023.
    #[test]
    fn local_instants_follow_rfc5545_across_dst() {
        let table = [
            // London: ordinary winter and summer days.
            (
                "Europe/London",
                (2023, 2, 24, 10, 0),
                "2023-02-24T10:00:00Z",
            ),
            ("Europe/London", (2023, 6, 7, 10, 0), "2023-06-07T09:00:00Z"),
            // Spring forward, 2023-03-26 01:00 GMT -> 02:00 BST.
            (
                "Europe/London",
                (2023, 3, 26, 0, 59),
                "2023-03-26T00:59:00Z",
            ),
            ("Europe/London", (2023, 3, 26, 1, 0), "2023-03-26T01:00:00Z"), // gap: 02:00 BST
            (
                "Europe/London",
                (2023, 3, 26, 1, 30),
                "2023-03-26T01:30:00Z",
            ), // gap: 02:30 BST
            ("Europe/London", (2023, 3, 26, 2, 0), "2023-03-26T01:00:00Z"),
            ("Europe/London", (2023, 3, 26, 9, 0), "2023-03-26T08:00:00Z"),
            // Fall back, 2023-10-29 02:00 BST -> 01:00 GMT: 01:xx happens twice.
            (
                "Europe/London",
                (2023, 10, 29, 0, 30),
                "2023-10-28T23:30:00Z",
            ),
            (
                "Europe/London",
                (2023, 10, 29, 1, 0),
                "2023-10-29T00:00:00Z",
            ), // fold: earlier
            (
                "Europe/London",
                (2023, 10, 29, 1, 30),
                "2023-10-29T00:30:00Z",
            ), // fold: earlier
            (
                "Europe/London",
                (2023, 10, 29, 2, 0),
                "2023-10-29T02:00:00Z",
            ),
            (
                "Europe/London",
                (2023, 10, 29, 9, 0),
                "2023-10-29T09:00:00Z",
            ),
            // New York: 2023-03-12 02:00 EST -> 03:00 EDT, 2023-11-05 02:00 EDT -> 01:00 EST.
            (
                "America/New_York",
                (2023, 3, 12, 2, 30),
                "2023-03-12T07:30:00Z",
            ), // gap
            (
                "America/New_York",
                (2023, 3, 12, 3, 0),
                "2023-03-12T07:00:00Z",
            ),
            (
                "America/New_York",
                (2023, 11, 5, 1, 30),
                "2023-11-05T05:30:00Z",
            ), // fold
            (
                "America/New_York",
                (2023, 11, 5, 2, 0),
                "2023-11-05T07:00:00Z",
            ),
            (
                "America/New_York",
                (2023, 7, 4, 9, 0),
                "2023-07-04T13:00:00Z",
            ),
        ];
        for (tz, (y, m, d, h, min), want) in table {
            assert_eq!(at(tz, y, m, d, h, min), want, "{tz} {y}-{m}-{d} {h}:{min}");
        }
    }

    fn meeting(y: i16, m: i8, d: i8, h: i8) -> Meeting {
        Meeting {
            id: MeetingId::parse("m").expect("slug"),
            date: date(y, m, d),
            start: time(h, 0, 0, 0),
            end: time(h + 2, 0, 0, 0),
            title: crate::model::HeaderText::parse("Meeting").expect("text"),
            location: None,
            join_url: None,
            status: crate::model::MeetingStatus::Confirmed,
            focus: vec![],
            notes: None,
        }
    }

    fn rule(trigger: Trigger) -> EmailRule {
        EmailRule {
            id: EmailId::parse("r").expect("slug"),
            template: crate::model::TemplateName::parse("t").expect("slug"),
            trigger,
            audience: Audience::List,
            grace: SignedDuration::from_hours(24),
        }
    }

    /// Due instants of rules whose local time of day or duration crosses a change.
    #[test]
    fn due_instants_across_dst() {
        let london = TimeZone::get("Europe/London").expect("zone");
        let nine = time(9, 0, 0, 0);
        let table: [(Meeting, Trigger, &str); 8] = [
            // One week before a summer meeting: the mail day is in GMT, the meeting in BST.
            (
                meeting(2023, 3, 29, 10),
                Trigger::DaysBefore { days: 7, at: nine },
                "2023-03-22T09:00:00Z",
            ),
            // One day before a winter meeting: the mail day is in BST.
            (
                meeting(2023, 10, 30, 10),
                Trigger::DaysBefore { days: 1, at: nine },
                "2023-10-29T09:00:00Z",
            ),
            // 01:30 on the spring-forward day does not exist: moves forward to 02:30 BST.
            (
                meeting(2023, 3, 27, 10),
                Trigger::DaysBefore {
                    days: 1,
                    at: time(1, 30, 0, 0),
                },
                "2023-03-26T01:30:00Z",
            ),
            // 01:30 on the fall-back day happens twice: the earlier, 01:30 BST.
            (
                meeting(2023, 10, 30, 10),
                Trigger::DaysBefore {
                    days: 1,
                    at: time(1, 30, 0, 0),
                },
                "2023-10-29T00:30:00Z",
            ),
            // Durations are exact: 24 hours before 10:00 BST on the day after spring forward is
            // 09:00Z the day before, which London shows as 09:00 GMT... on the change day it is
            // 10:00 BST, an hour "later" on the wall clock than the meeting.
            (
                meeting(2023, 3, 27, 10),
                Trigger::Before(SignedDuration::from_hours(24)),
                "2023-03-26T09:00:00Z",
            ),
            (
                meeting(2023, 2, 24, 10),
                Trigger::Before(SignedDuration::from_hours(2)),
                "2023-02-24T08:00:00Z",
            ),
            (
                meeting(2023, 6, 7, 10),
                Trigger::Before(SignedDuration::from_secs(90)),
                "2023-06-07T08:58:30Z",
            ),
            (
                meeting(2023, 6, 7, 10),
                Trigger::DaysBefore {
                    days: 0,
                    at: time(7, 0, 0, 0),
                },
                "2023-06-07T06:00:00Z",
            ),
        ];
        for (m, trigger, want) in table {
            let got = due_instant(&london, &m, &rule(trigger)).expect("timed");
            assert_eq!(got.to_string(), want, "{trigger:?} for {}", m.date);
        }
        assert_eq!(
            due_instant(&london, &meeting(2023, 6, 7, 10), &rule(Trigger::OnChange)),
            None
        );
    }

    #[test]
    fn deadline_is_capped_by_the_meeting_start() {
        let due: Timestamp = "2023-06-06T08:00:00Z".parse().expect("ts");
        let start: Timestamp = "2023-06-07T09:00:00Z".parse().expect("ts");
        assert_eq!(
            deadline(due, SignedDuration::from_hours(3), start).to_string(),
            "2023-06-06T11:00:00Z"
        );
        assert_eq!(deadline(due, SignedDuration::from_hours(72), start), start);
    }

    #[test]
    fn recipient_keys_round_trip() {
        for r in [
            Recipient::List,
            Recipient::Lead(PriorityId::parse("future-places").expect("slug")),
        ] {
            assert_eq!(Recipient::from_key(&r.key()), Some(r.clone()));
        }
        assert_eq!(Recipient::from_key("lead:Bad Id"), None);
        assert_eq!(Recipient::from_key("leads"), None);
    }
}
