//! The template context: what every mail template may use, built from the config (pure).
//!
//! Local dates and times are written in the network's zone with the zone's abbreviation, such
//! as "Friday 24 February 2023, 10:00–12:30 GMT", so no reader has to convert anything. The
//! times shown are the instants the schedule and every calendar take the configured times for
//! (RFC 5545, [`schedule::local_instant`]): a start of 01:30 on the day the clocks spring forward
//! over it is shown as 02:30 BST, the time the feed's event is at, never as a time that does not
//! exist; 01:30 on the day they fall back is the first 01:30 (BST).
//!
//! # Deadlines
//!
//! Two dates are derived from the mail schedule, so they always match what the mail says:
//! - `deadline` (in the agenda call): the last day members may send an agenda item or an offer
//!   to present to a priority's lead. It is the day before the lead nudge goes out (the earliest
//!   timed `[[email]]` whose audience includes the leads), so each lead has every proposal in hand
//!   when nudged. Without such a rule it is [`FALLBACK_DEADLINE_DAYS`] days before the meeting.
//! - `lead_deadline` (in the lead nudge): the last day a lead may send the team their priority's
//!   items: [`LEAD_DEADLINE_DAYS`] days before the meeting (the day before a week-ahead reminder),
//!   but never before the day after the nudge and never on or after the meeting's day.

use jiff::{
    Span,
    civil::{Date, DateTime, Time},
    tz::TimeZone,
};
use lettre::message::Mailbox;
use serde::Serialize;

use crate::{
    model::{Audience, Config, EmailRule, Meeting, Person, Priority, Trigger},
    revision::{Significant, StoredRevision},
    schedule::{self, Recipient},
};

/// Days before the meeting of the agenda deadline when no rule mails the leads.
pub const FALLBACK_DEADLINE_DAYS: i64 = 14;
/// Days before the meeting of the lead deadline.
pub const LEAD_DEADLINE_DAYS: i64 = 8;

/// Why a context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The recipient is a lead of a priority the config does not know.
    #[error("recipient `{0}` names a priority that is not in the config")]
    UnknownPriority(String),
    /// The stored "before" values of a change could not be read.
    #[error("the stored previous values of meeting `{meeting}` are unreadable: {message}")]
    BadPrevious {
        /// The meeting.
        meeting: String,
        /// What is wrong.
        message: String,
    },
}

/// Everything a template sees.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    /// The network.
    pub network: NetworkCtx,
    /// The meeting this mail is about.
    pub meeting: MeetingCtx,
    /// The priorities the meeting concerns, each with its lead and deputy.
    pub priorities: Vec<PriorityCtx>,
    /// Who this copy of the mail goes to.
    pub recipient: RecipientCtx,
    /// Useful links.
    pub links: Links,
    /// The team's contact.
    pub contact: PersonCtx,
    /// The agenda call's deadline (see the module docs).
    pub deadline: DayCtx,
    /// The lead nudge's deadline (see the module docs).
    pub lead_deadline: DayCtx,
    /// For change and cancellation notices: the time and place before (what the recipients
    /// last heard) and now; `none` in every other mail. A cancellation notice's `before` is
    /// the meeting as it was planned before it was called off.
    pub change: Option<ChangeCtx>,
    /// The schedule entry being sent.
    pub email: EmailCtx,
    /// The meeting's compiled agenda (`agenda.empty` when nothing is accepted yet).
    pub agenda: crate::agenda::Agenda,
    /// For the proposal-received mail: the proposal and the lead's private link; `none` in
    /// scheduled mail.
    pub proposal: Option<ProposalCtx>,
}

/// A new proposal, as the mail to its priority's lead shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProposalCtx {
    /// The proposal itself (name, organisation, email, title, summary, presents, minutes...).
    #[serde(flatten)]
    pub proposal: crate::agenda::Proposal,
    /// The priority's display name.
    pub priority_name: String,
    /// The lead's private page, where they accept or decline.
    pub lead_url: String,
    /// When that link stops working, in the network's zone: "Monday 9 February 2026, 10:00
    /// GMT" (the token's stored expiry, see [`crate::agenda::local_time`]).
    pub link_expires: String,
}

/// The network's names.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkCtx {
    /// Short name, such as `LEDNet`.
    pub short_name: String,
    /// Full name.
    pub name: String,
    /// IANA zone name.
    pub time_zone: String,
}

/// A meeting with its local date and time already written out.
#[derive(Clone, Debug, Serialize)]
pub struct MeetingCtx {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// `confirmed` or `cancelled`.
    pub status: String,
    /// True when cancelled.
    pub cancelled: bool,
    /// True when the meeting names priorities in focus (else it concerns all of them).
    pub focused: bool,
    /// "Friday 24 February 2023".
    pub date: String,
    /// "2023-02-24".
    pub date_iso: String,
    /// "10:00": the start as the instant it stands for reads in the zone (a start the clocks
    /// spring forward over, 01:30, reads 02:30, as in every calendar).
    pub start: String,
    /// "12:30", read as [`MeetingCtx::start`] is.
    pub end: String,
    /// The zone abbreviation in force at the start, "GMT" or "BST".
    pub zone: String,
    /// "10:00–12:30 GMT".
    pub time: String,
    /// "Friday 24 February 2023, 10:00–12:30 GMT".
    pub when: String,
    /// Where, if in person.
    pub location: Option<String>,
    /// Online join link, if any.
    pub join_url: Option<String>,
    /// Notes for members, if any.
    pub notes: Option<String>,
    /// The meeting's SEQUENCE (as in the feed).
    pub sequence: u32,
    /// The meeting's page.
    pub url: String,
}

/// A person as templates see them.
#[derive(Clone, Debug, Serialize)]
pub struct PersonCtx {
    /// Display name (the address when there is none).
    pub name: String,
    /// Bare address.
    pub email: String,
    /// Organisation, if known.
    pub organisation: Option<String>,
}

/// A priority with its lead.
#[derive(Clone, Debug, Serialize)]
pub struct PriorityCtx {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is about.
    pub summary: String,
    /// The lead.
    pub lead: PersonCtx,
    /// The deputy, if any.
    pub deputy: Option<PersonCtx>,
}

/// The recipient of this copy.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientCtx {
    /// `list` or `lead`.
    pub kind: String,
    /// Display name (the list's or the lead's).
    pub name: String,
    /// Address (the first list address, or the lead's).
    pub email: String,
    /// For a lead: the priority they lead.
    pub priority: Option<PriorityCtx>,
}

/// Links every mail may carry.
#[derive(Clone, Debug, Serialize)]
pub struct Links {
    /// The subscribe page.
    pub subscribe: String,
    /// The whole-network feed URL (https).
    pub feed: String,
    /// The meeting's page: `<base_url>/meetings/<id>`.
    pub meeting: String,
}

/// A local day written out.
#[derive(Clone, Debug, Serialize)]
pub struct DayCtx {
    /// "Thursday 2 February 2023".
    pub date: String,
    /// "2023-02-02".
    pub iso: String,
}

/// A time and place, written out.
#[derive(Clone, Debug, Serialize)]
pub struct SlotCtx {
    /// "Friday 24 February 2023".
    pub date: String,
    /// "10:00–12:30 GMT".
    pub time: String,
    /// "Friday 24 February 2023, 10:00–12:30 GMT".
    pub when: String,
    /// Where, if in person.
    pub location: Option<String>,
    /// Online join link, if any.
    pub join_url: Option<String>,
}

/// Old and new time and place of a changed meeting.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeCtx {
    /// As it was.
    pub before: SlotCtx,
    /// As it is now.
    pub after: SlotCtx,
    /// The date or time changed.
    pub time_changed: bool,
    /// The location changed.
    pub place_changed: bool,
    /// The join link changed.
    pub link_changed: bool,
}

/// The schedule entry.
#[derive(Clone, Debug, Serialize)]
pub struct EmailCtx {
    /// Its id.
    pub id: String,
    /// Its template set.
    pub template: String,
}

/// The inputs of a context.
#[derive(Clone, Copy, Debug)]
pub struct ContextInput<'a> {
    /// The config.
    pub config: &'a Config,
    /// The meeting.
    pub meeting: &'a Meeting,
    /// The schedule entry.
    pub rule: &'a EmailRule,
    /// The recipient.
    pub recipient: &'a Recipient,
    /// The meeting's revision (for SEQUENCE).
    pub revision: &'a StoredRevision,
    /// The previous time and place, for change and cancellation notices.
    pub change: Option<&'a Significant>,
}

/// Builds the template context.
pub fn build(input: ContextInput<'_>) -> Result<Context, ContextError> {
    let ContextInput {
        config,
        meeting,
        rule,
        recipient,
        revision,
        change,
    } = input;
    let tz = &config.network.time_zone;
    let links = links(config, meeting);
    let priorities: Vec<PriorityCtx> = config.priorities_of(meeting).map(priority).collect();
    let recipient = match recipient {
        Recipient::List => {
            let first = config.mail.list.first();
            RecipientCtx {
                kind: "list".into(),
                name: first.map_or_else(String::new, display_name),
                email: first.map_or_else(String::new, |m| m.email.to_string()),
                priority: None,
            }
        }
        Recipient::Lead(id) => {
            let p = config
                .priority(id)
                .ok_or_else(|| ContextError::UnknownPriority(recipient.key()))?;
            RecipientCtx {
                kind: "lead".into(),
                name: p.lead.name.as_str().to_owned(),
                email: p.lead.email.email.to_string(),
                priority: Some(priority(p)),
            }
        }
    };
    let now_slot = slot(
        tz,
        meeting.date,
        meeting.start,
        meeting.end,
        meeting.location.as_ref().map(|l| l.as_str().to_owned()),
        meeting.join_url.as_ref().map(|u| u.as_str().to_owned()),
    );
    let change = change
        .map(|before| change_ctx(config, meeting, before, now_slot.clone()))
        .transpose()?;
    let (deadline, lead_deadline) = deadlines(config, meeting);
    let start = hh_mm(&resolved(tz, meeting.local_start()));
    let end = hh_mm(&resolved(tz, meeting.local_end()));
    Ok(Context {
        network: NetworkCtx {
            short_name: config.network.short_name.as_str().to_owned(),
            name: config.network.name.as_str().to_owned(),
            time_zone: config.network.time_zone_name.clone(),
        },
        meeting: MeetingCtx {
            id: meeting.id.as_str().to_owned(),
            title: meeting.title.as_str().to_owned(),
            status: meeting.status.as_str().to_owned(),
            cancelled: meeting.is_cancelled(),
            focused: !meeting.focus.is_empty(),
            date: now_slot.date.clone(),
            date_iso: meeting.date.to_string(),
            start,
            end,
            zone: zone_abbreviation(tz, meeting.local_start()),
            time: now_slot.time.clone(),
            when: now_slot.when.clone(),
            location: now_slot.location.clone(),
            join_url: now_slot.join_url.clone(),
            notes: meeting.notes.clone(),
            sequence: revision.sequence,
            url: links.meeting.clone(),
        },
        priorities,
        recipient,
        contact: PersonCtx {
            name: display_name(&config.network.contact),
            email: config.network.contact.email.to_string(),
            organisation: None,
        },
        links,
        deadline,
        lead_deadline,
        change,
        email: EmailCtx {
            id: rule.id.as_str().to_owned(),
            template: rule.template.as_str().to_owned(),
        },
        agenda: config.agenda.get(&meeting.id),
        proposal: None,
    })
}

/// The links of a meeting. The feed and subscribe page sit under the secret token when one is
/// configured: `<base_url>[/<token>]/calendar.ics` and `<base_url>[/<token>]/`; the meeting page
/// is `<base_url>/meetings/<id>`.
pub fn links(config: &Config, meeting: &Meeting) -> Links {
    let base = config.network.base_url.as_str();
    let prefix = match &config.http.feed_token {
        Some(token) => format!("{base}/{}", token.as_str()),
        None => base.to_owned(),
    };
    Links {
        subscribe: format!("{prefix}/"),
        feed: format!("{prefix}/calendar.ics"),
        meeting: format!("{base}/meetings/{}", meeting.id),
    }
}

/// The agenda call's deadline and the lead nudge's deadline (see the module docs).
pub fn deadlines(config: &Config, meeting: &Meeting) -> (DayCtx, DayCtx) {
    let tz = &config.network.time_zone;
    let days_before = |n: i64| {
        meeting
            .date
            .checked_sub(Span::new().days(n))
            .unwrap_or(meeting.date)
    };
    let nudge_day = config
        .emails
        .iter()
        .filter(|r| matches!(r.audience, Audience::Leads | Audience::Both))
        .filter(|r| matches!(r.trigger, Trigger::DaysBefore { .. } | Trigger::Before(_)))
        .filter_map(|r| schedule::due_instant(tz, meeting, r))
        .min()
        .map(|t| t.to_zoned_datetime(tz.clone()).date());
    let deadline = match nudge_day {
        Some(day) => day.yesterday().unwrap_or(day),
        None => days_before(FALLBACK_DEADLINE_DAYS),
    };
    let mut lead = days_before(LEAD_DEADLINE_DAYS);
    if let Some(day) = nudge_day {
        lead = lead.max(day.tomorrow().unwrap_or(day));
    }
    lead = lead.min(meeting.date.yesterday().unwrap_or(meeting.date));
    (day(deadline), day(lead))
}

fn day(date: Date) -> DayCtx {
    DayCtx {
        date: date.strftime("%A %-d %B %Y").to_string(),
        iso: date.to_string(),
    }
}

fn display_name(m: &Mailbox) -> String {
    m.name.clone().unwrap_or_else(|| m.email.to_string())
}

fn person(p: &Person) -> PersonCtx {
    PersonCtx {
        name: p.name.as_str().to_owned(),
        email: p.email.email.to_string(),
        organisation: p.organisation.as_ref().map(|o| o.as_str().to_owned()),
    }
}

fn priority(p: &Priority) -> PriorityCtx {
    PriorityCtx {
        id: p.id.as_str().to_owned(),
        name: p.name.as_str().to_owned(),
        summary: p.summary.trim().to_owned(),
        lead: person(&p.lead),
        deputy: p.deputy.as_ref().map(person),
    }
}

/// The abbreviation of the zone in force at a local date-time ("GMT", "BST"), or the numeric
/// offset when the zone has none.
fn zone_abbreviation(tz: &TimeZone, local: DateTime) -> String {
    abbreviation(&resolved(tz, local))
}

/// A local date-time as the instant the schedule and every calendar take it for (RFC 5545:
/// [`schedule::local_instant`]), back in the zone: 01:30 on the day the clocks spring forward
/// over it is 02:30, and 01:30 on the day they fall back is the first one.
fn resolved(tz: &TimeZone, local: DateTime) -> jiff::ZonedDateTime {
    schedule::local_instant(tz, local).to_zoned_datetime(tz.clone())
}

fn abbreviation(zdt: &jiff::ZonedDateTime) -> String {
    jiff::fmt::strtime::format("%Z", zdt).unwrap_or_else(|_| zdt.offset().to_string())
}

/// `HH:MM` of a resolved local time.
fn hh_mm(zdt: &jiff::ZonedDateTime) -> String {
    format!("{:02}:{:02}", zdt.hour(), zdt.minute())
}

/// The date, the times as the instants they stand for (see [`resolved`]) and the place of a
/// meeting. The zone is written once when start and end share it ("10:00–12:30 GMT"), at each
/// time when they do not ("00:30 GMT–03:00 BST", across the change of clocks).
fn slot(
    tz: &TimeZone,
    date: Date,
    start: Time,
    end: Time,
    location: Option<String>,
    join_url: Option<String>,
) -> SlotCtx {
    let day = date.strftime("%A %-d %B %Y").to_string();
    let (start, end) = (
        resolved(tz, date.to_datetime(start)),
        resolved(tz, date.to_datetime(end)),
    );
    let (start_zone, end_zone) = (abbreviation(&start), abbreviation(&end));
    let time = if start_zone == end_zone {
        format!("{}\u{2013}{} {start_zone}", hh_mm(&start), hh_mm(&end))
    } else {
        format!(
            "{} {start_zone}\u{2013}{} {end_zone}",
            hh_mm(&start),
            hh_mm(&end)
        )
    };
    SlotCtx {
        when: format!("{day}, {time}"),
        date: day,
        time,
        location,
        join_url,
    }
}

/// The change a notice announces. The time before is shown in the zone it was in (a revision
/// stored before zones were recorded was in the zone configured now; a zone whose name no
/// longer resolves is shown as the current one, the move still flagged).
fn change_ctx(
    config: &Config,
    meeting: &Meeting,
    before: &Significant,
    after: SlotCtx,
) -> Result<ChangeCtx, ContextError> {
    let bad = |message: String| ContextError::BadPrevious {
        meeting: meeting.id.to_string(),
        message,
    };
    let date: Date = before
        .date
        .parse()
        .map_err(|e| bad(format!("date `{}`: {e}", before.date)))?;
    let time = |s: &str| -> Result<Time, ContextError> {
        Time::strptime("%H:%M", s).map_err(|e| bad(format!("time `{s}`: {e}")))
    };
    let now = Significant::of(config, meeting);
    let (start, end) = (time(&before.start)?, time(&before.end)?);
    let before_zone = before.other_zone(&now);
    let before_tz = before_zone
        .clone()
        .flatten()
        .unwrap_or_else(|| config.network.time_zone.clone());
    let before_slot = slot(
        &before_tz,
        date,
        start,
        end,
        before.location.clone(),
        before.join_url.clone(),
    );
    let time_changed = match before_zone {
        None => (&now.date, &now.start, &now.end) != (&before.date, &before.start, &before.end),
        // Another zone: the time changed when the instants did (unknown when its name no longer
        // resolves).
        Some(old) => old.is_none_or(|old| {
            before.instants_in(&old) != now.instants_in(&config.network.time_zone)
        }),
    };
    Ok(ChangeCtx {
        time_changed,
        place_changed: now.location != before.location,
        link_changed: now.join_url != before.join_url,
        before: before_slot,
        after,
    })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::config::{Environment, parse};

    fn config(extra: &str) -> Config {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        parse(path, &format!("{text}\n{extra}"), &Environment::default())
            .expect("valid")
            .config
    }

    fn ctx(c: &Config, meeting: &str, email: &str, change: Option<&Significant>) -> Context {
        let m = c
            .meetings
            .iter()
            .find(|m| m.id.as_str() == meeting)
            .expect("meeting");
        let rule = c
            .emails
            .iter()
            .find(|r| r.id.as_str() == email)
            .expect("rule");
        let (rev, _) = crate::revision::next_revision(None, c, m, Timestamp::UNIX_EPOCH);
        build(ContextInput {
            config: c,
            meeting: m,
            rule,
            recipient: &Recipient::List,
            revision: &rev,
            change,
        })
        .expect("context")
    }

    #[test]
    fn local_times_carry_the_zone_in_force() {
        let c = config("");
        let winter = ctx(&c, "2023-02-24", "agenda-call", None);
        assert_eq!(
            winter.meeting.when,
            "Friday 24 February 2023, 10:00–12:30 GMT"
        );
        let summer = ctx(&c, "2023-06-07", "agenda-call", None);
        assert_eq!(
            summer.meeting.when,
            "Wednesday 7 June 2023, 10:00–12:30 BST"
        );
        assert_eq!(summer.meeting.zone, "BST");
        assert_eq!(
            summer.links.meeting,
            "http://127.0.0.1:8080/meetings/2023-06-07"
        );
    }

    /// The agenda deadline is the day before the lead nudge (21 days before at 09:00), the lead
    /// deadline 8 days before the meeting.
    #[test]
    fn deadlines_follow_the_schedule() {
        let c = config("");
        let x = ctx(&c, "2023-02-24", "agenda-call", None);
        assert_eq!(x.deadline.iso, "2023-02-02");
        assert_eq!(x.deadline.date, "Thursday 2 February 2023");
        assert_eq!(x.lead_deadline.iso, "2023-02-16");
        // Without a rule that mails the leads: 14 days before.
        let text = std::fs::read_to_string("config/lednet.toml").expect("config");
        let text = text.replace("audience = \"leads\"", "audience = \"list\"");
        let c = parse(
            std::path::Path::new("config/lednet.toml"),
            &text,
            &Environment::default(),
        )
        .expect("valid")
        .config;
        let x = ctx(&c, "2023-02-24", "agenda-call", None);
        assert_eq!(x.deadline.iso, "2023-02-10");
    }

    #[test]
    fn a_change_shows_old_and_new_side_by_side() {
        let c = config("");
        let mut before = Significant::of(&c, &c.meetings[2]);
        before.date = "2023-03-24".into();
        before.start = "14:00".into();
        before.location = Some("City Hall".into());
        let x = ctx(&c, "2023-06-07", "change-notice", Some(&before));
        let ch = x.change.expect("change");
        assert_eq!(ch.before.when, "Friday 24 March 2023, 14:00–12:30 GMT");
        assert_eq!(ch.after.when, "Wednesday 7 June 2023, 10:00–12:30 BST");
        assert!(ch.time_changed && ch.place_changed && !ch.link_changed);
        before.date = "not a date".into();
        let m = &c.meetings[2];
        let rule = &c.emails[4];
        let (rev, _) = crate::revision::next_revision(None, &c, m, Timestamp::UNIX_EPOCH);
        let err = build(ContextInput {
            config: &c,
            meeting: m,
            rule,
            recipient: &Recipient::List,
            revision: &rev,
            change: Some(&before),
        })
        .expect_err("bad date");
        assert!(err.to_string().contains("not a date"), "{err}");
    }

    /// A notice of a change of zone shows the time before in the zone it was in, and calls it
    /// a change of time only when the instants moved; a zone that no longer resolves is shown
    /// as the current one, still flagged.
    #[test]
    fn a_change_of_zone_shows_the_time_before_in_its_own_zone() {
        let c = config("");
        let june = &c.meetings[2];
        let before_in = |zone: &str| {
            let mut s = Significant::of(&c, june);
            s.zone = Some(zone.into());
            s
        };
        let cases = [
            ("Europe/Paris", "10:00–12:30 CEST", true),
            ("Europe/Lisbon", "10:00–12:30 WEST", false),
            ("Europe/London", "10:00–12:30 BST", false),
            ("Nowhere/Atlantis", "10:00–12:30 BST", true),
        ];
        for (zone, time, changed) in cases {
            let before = before_in(zone);
            let ch = ctx(&c, "2023-06-07", "change-notice", Some(&before))
                .change
                .expect("change");
            assert_eq!(ch.before.time, time, "{zone}");
            assert_eq!(ch.after.time, "10:00–12:30 BST", "{zone}");
            assert_eq!(ch.time_changed, changed, "{zone}");
        }
    }
    /// Mail shows a meeting's times as the instants the feed's event and the schedule take them
    /// for: a start or end the clocks spring forward over moves on by the gap, the repeated
    /// hour of autumn is its first (BST) pass, and a slot across a change names both zones.
    #[test]
    fn times_are_shown_as_the_instants_calendars_take_them_for() {
        let cases = [
            // (date, start, end, time, start, end, zone)
            (
                "2023-06-07",
                "10:00",
                "12:30",
                "10:00–12:30 BST",
                "10:00",
                "12:30",
                "BST",
            ),
            (
                "2023-02-24",
                "10:00",
                "12:30",
                "10:00–12:30 GMT",
                "10:00",
                "12:30",
                "GMT",
            ),
            // Spring forward on 2023-03-26: 01:00 GMT is 02:00 BST, 01:00-01:59 do not exist.
            (
                "2023-03-26",
                "01:30",
                "12:30",
                "02:30–12:30 BST",
                "02:30",
                "12:30",
                "BST",
            ),
            (
                "2023-03-26",
                "00:30",
                "01:30",
                "00:30 GMT–02:30 BST",
                "00:30",
                "02:30",
                "GMT",
            ),
            (
                "2023-03-26",
                "01:00",
                "01:59",
                "02:00–02:59 BST",
                "02:00",
                "02:59",
                "BST",
            ),
            // Fall back on 2023-10-29: 01:00-01:59 happen twice, first in BST.
            (
                "2023-10-29",
                "01:30",
                "12:30",
                "01:30 BST–12:30 GMT",
                "01:30",
                "12:30",
                "BST",
            ),
            (
                "2023-10-29",
                "01:15",
                "01:45",
                "01:15–01:45 BST",
                "01:15",
                "01:45",
                "BST",
            ),
        ];
        for (date, start, end, time, start_shown, end_shown, zone) in cases {
            let c = config(&format!(
                "[[meeting]]\nid = \"x\"\ndate = {date}\nstart = \"{start}\"\nend = \"{end}\"\n\
                 title = \"T\"\n"
            ));
            let m = ctx(&c, "x", "agenda-call", None).meeting;
            assert_eq!(m.time, time, "{date} {start}-{end}");
            assert_eq!(
                (m.start.as_str(), m.end.as_str(), m.zone.as_str()),
                (start_shown, end_shown, zone),
                "{date} {start}-{end}"
            );
            assert!(m.when.ends_with(&format!(", {time}")), "{}", m.when);
            // The feed's event says the same local times, which calendars read by the same rule.
            let x = c.meetings.iter().find(|m| m.id.as_str() == "x").expect("x");
            let tz = &c.network.time_zone;
            let shown = |s: &str| {
                let t = jiff::civil::Time::strptime("%H:%M", s).expect("time");
                let local = x.date.to_datetime(t);
                crate::schedule::local_instant(tz, local)
            };
            assert_eq!(shown(start_shown), x.starts_at(tz), "{date} {start}");
            assert_eq!(shown(end_shown), x.ends_at(tz), "{date} {end}");
        }
    }
}
