//! Proposals, the validation of the public form, and the compiled agenda (pure).
//!
//! A proposal is `proposed` until the lead of its priority (or the team) accepts or declines it.
//! The compiled agenda of a meeting is its accepted items grouped by priority (in the config's
//! priority order), each group in running order (`position`, then arrival), timed one after the
//! other from the meeting's start.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, civil::Time};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Config, Meeting, MeetingId};

/// Longest accepted name or organisation, in characters.
pub const MAX_NAME: usize = 100;
/// Longest accepted title, in characters.
pub const MAX_TITLE: usize = 150;
/// Longest accepted summary, in characters.
pub const MAX_SUMMARY: usize = 2000;
/// Longest accepted mail address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL: usize = 254;
/// The fewest and most minutes an item may ask for.
pub const MINUTES: std::ops::RangeInclusive<u32> = 5..=90;
/// The name of the honeypot field: hidden from people, filled by bots.
pub const HONEYPOT: &str = "website";

/// Where a proposal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the lead.
    Proposed,
    /// On the agenda.
    Accepted,
    /// Not on the agenda.
    Declined,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "proposed" => Some(Self::Proposed),
            "accepted" => Some(Self::Accepted),
            "declined" => Some(Self::Declined),
            _ => None,
        }
    }
}

/// A stored proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Hash)]
pub struct Proposal {
    /// Its number.
    pub id: i64,
    /// The meeting (kept as text: a meeting removed from the config keeps its proposals).
    pub meeting: String,
    /// The priority (kept as text, like the meeting).
    pub priority: String,
    /// Who proposes.
    pub name: String,
    /// Their organisation.
    pub organisation: String,
    /// Their address (never shown publicly).
    pub email: String,
    /// The item's title.
    pub title: String,
    /// A short summary.
    pub summary: String,
    /// Whether they offer to present it.
    pub presents: bool,
    /// Minutes wanted.
    pub minutes: u32,
    /// Where it stands.
    pub status: Status,
    /// Running order within the meeting, when the team set one.
    pub position: Option<i64>,
    /// When it arrived.
    pub created: Timestamp,
    /// Who made the last decision, if any.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<Timestamp>,
}

/// The raw fields of the public form, as posted.
#[derive(Clone, Debug, Default)]
pub struct ProposalForm {
    /// Every field, name to value; a name posted twice is an error.
    pub fields: BTreeMap<String, String>,
}

/// One thing wrong with a posted form, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The form field.
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A valid proposal, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProposal {
    /// The meeting.
    pub meeting: MeetingId,
    /// The priority, one of the meeting's.
    pub priority: String,
    /// Who proposes.
    pub name: String,
    /// Their organisation.
    pub organisation: String,
    /// Their address, lowercased.
    pub email: String,
    /// Title.
    pub title: String,
    /// Summary (may span lines).
    pub summary: String,
    /// Offers to present.
    pub presents: bool,
    /// Minutes wanted.
    pub minutes: u32,
}

/// Why a posted form was refused as a whole rather than field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormRefusal {
    /// The honeypot field was filled: a bot.
    Honeypot,
    /// The fields have problems (each named).
    Invalid(Vec<FieldError>),
}

fn one_line(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) -> String {
    let v = value.trim();
    let err = |m: String| FieldError {
        field: field.to_owned(),
        message: m,
    };
    if v.is_empty() {
        errors.push(err("is required".into()));
    } else if v.chars().count() > max {
        errors.push(err(format!("is longer than {max} characters")));
    } else if v.chars().any(char::is_control) {
        errors.push(err("must be one line without control characters".into()));
    }
    v.to_owned()
}

/// Validates the public form for `meeting` (see the limits above). The priority must be one the
/// meeting concerns; `presents` is a checkbox (`yes`/`on`, absent for no).
pub fn validate(
    config: &Config,
    meeting: &Meeting,
    form: &ProposalForm,
) -> Result<NewProposal, FormRefusal> {
    let get = |k: &str| form.fields.get(k).map(String::as_str).unwrap_or("");
    if !get(HONEYPOT).is_empty() {
        return Err(FormRefusal::Honeypot);
    }
    let mut errors = Vec::new();
    let known = [
        "name",
        "organisation",
        "email",
        "priority",
        "title",
        "summary",
        "presents",
        "minutes",
        HONEYPOT,
    ];
    for k in form.fields.keys() {
        if !known.contains(&k.as_str()) {
            errors.push(FieldError {
                field: k.clone(),
                message: "is not a field of this form".into(),
            });
        }
    }
    let name = one_line("name", get("name"), MAX_NAME, &mut errors);
    let organisation = one_line("organisation", get("organisation"), MAX_NAME, &mut errors);
    let email = get("email").trim().to_lowercase();
    if email.len() > MAX_EMAIL || email.parse::<lettre::Address>().is_err() {
        errors.push(FieldError {
            field: "email".into(),
            message: "is not a mail address such as name@borough.gov.uk".into(),
        });
    }
    let title = one_line("title", get("title"), MAX_TITLE, &mut errors);
    let summary = get("summary").trim().replace("\r\n", "\n");
    if summary.is_empty() {
        errors.push(FieldError {
            field: "summary".into(),
            message: "is required".into(),
        });
    } else if summary.chars().count() > MAX_SUMMARY {
        errors.push(FieldError {
            field: "summary".into(),
            message: format!("is longer than {MAX_SUMMARY} characters"),
        });
    } else if summary
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        errors.push(FieldError {
            field: "summary".into(),
            message: "contains control characters".into(),
        });
    }
    let priority = get("priority").to_owned();
    if !config
        .priorities_of(meeting)
        .any(|p| p.id.as_str() == priority)
    {
        errors.push(FieldError {
            field: "priority".into(),
            message: "must be one of this meeting's priorities".into(),
        });
    }
    let presents = match get("presents") {
        "" | "no" => false,
        "yes" | "on" => true,
        _ => {
            errors.push(FieldError {
                field: "presents".into(),
                message: "must be yes or no".into(),
            });
            false
        }
    };
    let minutes = match get("minutes").trim().parse::<u32>() {
        Ok(m) if MINUTES.contains(&m) => m,
        _ => {
            errors.push(FieldError {
                field: "minutes".into(),
                message: format!(
                    "must be a whole number of minutes from {} to {}",
                    MINUTES.start(),
                    MINUTES.end()
                ),
            });
            0
        }
    };
    if !errors.is_empty() {
        return Err(FormRefusal::Invalid(errors));
    }
    Ok(NewProposal {
        meeting: meeting.id.clone(),
        priority,
        name,
        organisation,
        email,
        title,
        summary,
        presents,
        minutes,
    })
}

/// Whether the call for items of `meeting` is open at `now`: the meeting goes ahead and `now`
/// is before the end of the agenda call's deadline day (the day [`crate::mail::context::deadlines`]
/// computes, so the page and the mail always agree).
pub fn call_open(config: &Config, meeting: &Meeting, now: Timestamp) -> bool {
    !meeting.is_cancelled() && now < call_closes(config, meeting)
}

/// The instant the call for items of `meeting` closes: the end of its deadline day, local time.
pub fn call_closes(config: &Config, meeting: &Meeting) -> Timestamp {
    let tz = &config.network.time_zone;
    let (deadline, _) = crate::mail::context::deadlines(config, meeting);
    let day: jiff::civil::Date = deadline.iso.parse().unwrap_or(meeting.date);
    let next = day.tomorrow().unwrap_or(day);
    crate::schedule::local_instant(tz, next.to_datetime(Time::midnight()))
}

/// One accepted item, as the agenda shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Hash)]
pub struct AgendaItem {
    /// The proposal's number.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Summary.
    pub summary: String,
    /// "Name (Organisation)" when they present, else none.
    pub presenter: Option<String>,
    /// Who proposed it: "Name (Organisation)".
    pub proposer: String,
    /// Minutes.
    pub minutes: u32,
    /// Local start, "10:15".
    pub start: String,
    /// Local end, "10:30".
    pub end: String,
}

/// The accepted items of one priority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Hash)]
pub struct AgendaGroup {
    /// The priority's id.
    pub priority: String,
    /// Its display name (the id when it left the config).
    pub name: String,
    /// The items in running order.
    pub items: Vec<AgendaItem>,
}

/// A meeting's compiled agenda.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Hash)]
pub struct Agenda {
    /// Groups in the config's priority order, only those with items.
    pub groups: Vec<AgendaGroup>,
    /// Total minutes of all items.
    pub minutes: u32,
    /// True when nothing is accepted yet.
    pub empty: bool,
}

impl Agenda {
    /// A digest of what the agenda shows, or the empty string when it is empty (so meetings
    /// without an agenda keep the revisions they had before agendas existed).
    pub fn digest(&self) -> String {
        if self.empty {
            return String::new();
        }
        let mut h = Sha256::new();
        for line in self.lines() {
            h.update((line.len() as u64).to_le_bytes());
            h.update(line.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The agenda as plain-text lines (the feed's DESCRIPTION uses them).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            out.push(format!("{}:", g.name));
            for i in &g.items {
                let by = i
                    .presenter
                    .as_ref()
                    .map(|p| format!(", presented by {p}"))
                    .unwrap_or_default();
                out.push(format!(
                    "  {}\u{2013}{} {} ({} min{by})",
                    i.start, i.end, i.title, i.minutes
                ));
            }
        }
        out
    }
}

/// The compiled agendas of every meeting, keyed by meeting id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Hash)]
pub struct Book(pub BTreeMap<String, Agenda>);

impl Book {
    /// The agenda of a meeting (empty when nothing is accepted).
    pub fn get(&self, meeting: &MeetingId) -> Agenda {
        self.0.get(meeting.as_str()).cloned().unwrap_or(Agenda {
            empty: true,
            ..Agenda::default()
        })
    }
}

fn person(name: &str, organisation: &str) -> String {
    if organisation.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({organisation})")
    }
}

/// Compiles the agenda of every meeting of `config` from all proposals (see the module docs).
/// Proposals of meetings no longer in the config are left out of the book (they stay stored).
pub fn compile(config: &Config, proposals: &[Proposal]) -> Book {
    let tz = &config.network.time_zone;
    let mut book = BTreeMap::new();
    for meeting in &config.meetings {
        let mut accepted: Vec<&Proposal> = proposals
            .iter()
            .filter(|p| p.meeting == meeting.id.as_str() && p.status == Status::Accepted)
            .collect();
        if accepted.is_empty() {
            continue;
        }
        accepted.sort_by_key(|p| (p.position.unwrap_or(i64::MAX), p.id));
        // Priority order: the config's; priorities no longer configured go last, by id.
        let mut order: Vec<(String, String)> = config
            .priorities
            .iter()
            .map(|p| (p.id.as_str().to_owned(), p.name.as_str().to_owned()))
            .collect();
        let mut stray: Vec<String> = accepted
            .iter()
            .map(|p| p.priority.clone())
            .filter(|id| !order.iter().any(|(o, _)| o == id))
            .collect();
        stray.sort();
        stray.dedup();
        order.extend(stray.into_iter().map(|id| (id.clone(), id)));
        let mut at = meeting.starts_at(tz);
        let hhmm = |t: Timestamp| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%H:%M")
                .to_string()
        };
        let mut groups = Vec::new();
        let mut total = 0;
        for (id, name) in order {
            let items: Vec<AgendaItem> = accepted
                .iter()
                .filter(|p| p.priority == id)
                .map(|p| {
                    let start = at;
                    at = at
                        .checked_add(SignedDuration::from_mins(i64::from(p.minutes)))
                        .unwrap_or(at);
                    total += p.minutes;
                    AgendaItem {
                        id: p.id,
                        title: p.title.clone(),
                        summary: p.summary.clone(),
                        presenter: p.presents.then(|| person(&p.name, &p.organisation)),
                        proposer: person(&p.name, &p.organisation),
                        minutes: p.minutes,
                        start: hhmm(start),
                        end: hhmm(at),
                    }
                })
                .collect();
            if !items.is_empty() {
                groups.push(AgendaGroup {
                    priority: id,
                    name,
                    items,
                });
            }
        }
        book.insert(
            meeting.id.as_str().to_owned(),
            Agenda {
                groups,
                minutes: total,
                empty: false,
            },
        );
    }
    Book(book)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, parse};

    fn config() -> Config {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        parse(path, &text, &Environment::default())
            .expect("valid")
            .config
    }

    fn form(pairs: &[(&str, &str)]) -> ProposalForm {
        ProposalForm {
            fields: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("name", "Ada Lovelace"),
            ("organisation", "Camden"),
            ("email", "Ada@Camden.gov.uk"),
            ("priority", "future-transport"),
            ("title", "Bus priority lanes"),
            ("summary", "Results of the trial.\r\nNext steps."),
            ("presents", "yes"),
            ("minutes", "15"),
            (HONEYPOT, ""),
        ]
    }

    #[test]
    fn a_good_form_validates_and_normalises() {
        let c = config();
        let p = validate(&c, &c.meetings[0], &form(&good())).expect("valid");
        assert_eq!(p.email, "ada@camden.gov.uk");
        assert_eq!(p.summary, "Results of the trial.\nNext steps.");
        assert!(p.presents);
        assert_eq!(p.minutes, 15);
    }

    #[test]
    fn every_bad_field_is_named() {
        let c = config();
        let long = "x".repeat(MAX_TITLE + 1);
        let huge = "y".repeat(MAX_SUMMARY + 1);
        let cases: Vec<(&str, String, &str)> = vec![
            ("name", String::new(), "name"),
            ("name", "A\nB".into(), "name"),
            ("email", "not-an-address".into(), "email"),
            ("priority", "nope".into(), "priority"),
            ("title", long, "title"),
            ("summary", huge, "summary"),
            ("summary", "bell\u{7}".into(), "summary"),
            ("minutes", "0".into(), "minutes"),
            ("minutes", "ten".into(), "minutes"),
            ("minutes", "500".into(), "minutes"),
            ("presents", "maybe".into(), "presents"),
            ("extra", "1".into(), "extra"),
        ];
        for (field, value, named) in cases {
            let mut f = form(&good());
            f.fields.insert(field.to_owned(), value.clone());
            match validate(&c, &c.meetings[0], &f) {
                Err(FormRefusal::Invalid(errors)) => {
                    assert!(
                        errors.iter().any(|e| e.field == named),
                        "{field}={value:?}: {errors:?}"
                    );
                }
                other => panic!("{field}={value:?} accepted: {other:?}"),
            }
        }
        let mut f = form(&good());
        f.fields.insert(HONEYPOT.into(), "http://spam".into());
        assert_eq!(validate(&c, &c.meetings[0], &f), Err(FormRefusal::Honeypot));
    }

    #[test]
    fn the_call_closes_at_the_end_of_the_mails_deadline_day() {
        let c = config();
        let m = &c.meetings[0]; // 2023-02-24; the deadline is Thursday 2 February 2023
        let closes = call_closes(&c, m);
        assert_eq!(closes.to_string(), "2023-02-03T00:00:00Z");
        let before: Timestamp = "2023-02-02T23:59:59Z".parse().expect("ts");
        assert!(call_open(&c, m, before));
        assert!(!call_open(&c, m, closes));
        // Summer: local midnight is 23:00 UTC (BST).
        let summer = &c.meetings[2]; // 2023-06-07, deadline 2023-05-16
        assert_eq!(call_closes(&c, summer).to_string(), "2023-05-16T23:00:00Z");
    }

    fn proposal(id: i64, priority: &str, status: Status, position: Option<i64>) -> Proposal {
        Proposal {
            id,
            meeting: "2023-02-24".into(),
            priority: priority.into(),
            name: format!("P{id}"),
            organisation: "Org".into(),
            email: "p@example.org".into(),
            title: format!("Item {id}"),
            summary: "S".into(),
            presents: id % 2 == 1,
            minutes: 10,
            status,
            position,
            created: Timestamp::UNIX_EPOCH,
            decided_by: None,
            decided_at: None,
        }
    }

    #[test]
    fn the_agenda_groups_orders_and_times_accepted_items() {
        let c = config();
        let ps = vec![
            proposal(1, "future-transport", Status::Accepted, None),
            proposal(2, "finance-investment", Status::Accepted, None),
            proposal(3, "future-transport", Status::Accepted, Some(1)),
            proposal(4, "future-transport", Status::Declined, None),
            proposal(5, "future-places", Status::Proposed, None),
        ];
        let book = compile(&c, &ps);
        let a = book.get(&c.meetings[0].id);
        let shape: Vec<(String, Vec<i64>)> = a
            .groups
            .iter()
            .map(|g| (g.priority.clone(), g.items.iter().map(|i| i.id).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("finance-investment".to_owned(), vec![2]),
                ("future-transport".to_owned(), vec![3, 1]),
            ]
        );
        assert_eq!(a.minutes, 30);
        let times: Vec<(&str, &str)> = a
            .groups
            .iter()
            .flat_map(|g| g.items.iter().map(|i| (i.start.as_str(), i.end.as_str())))
            .collect();
        assert_eq!(
            times,
            vec![("10:00", "10:10"), ("10:10", "10:20"), ("10:20", "10:30")]
        );
        assert_eq!(a.groups[0].items[0].presenter, None);
        assert_eq!(a.groups[1].items[0].presenter.as_deref(), Some("P3 (Org)"));
        // Another meeting has no agenda, and an empty agenda has an empty digest.
        let other = book.get(&c.meetings[1].id);
        assert!(other.empty && other.digest().is_empty());
        assert_eq!(a.digest().len(), 64);
        // Any visible change changes the digest; a declined item does not.
        let mut more = ps.clone();
        more[3].status = Status::Declined;
        assert_eq!(
            compile(&c, &more).get(&c.meetings[0].id).digest(),
            a.digest()
        );
        more[0].minutes = 20;
        assert_ne!(
            compile(&c, &more).get(&c.meetings[0].id).digest(),
            a.digest()
        );
    }
}
