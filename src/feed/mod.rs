//! The iCalendar feed: a validated [`Config`] and the stored revisions to deterministic bytes.
//!
//! Pure: no clock, no I/O. The same config and revisions give the same bytes (DTSTAMP and
//! LAST-MODIFIED are each meeting's last change, never "now"), so the HTTP layer's ETag only
//! moves when something a subscriber sees moved. The icalendar crate builds the VCALENDAR and
//! VEVENT properties (TEXT escaping, parameter quoting); [`fold`] re-folds its output, and
//! [`vtimezone`] writes the VTIMEZONE it has no type for. Both say why in their docs.

pub mod fold;
pub mod urls;
pub mod vtimezone;

use std::collections::BTreeMap;

use icalendar::{Component as _, EventLike as _, EventStatus, Property};
use jiff::{SignedDuration, Timestamp, civil::DateTime};

pub use urls::Selection;

use crate::{
    model::{Config, Meeting, MeetingId},
    revision::StoredRevision,
};

/// The DTSTAMP and LAST-MODIFIED of a meeting that has no stored revision yet (for example
/// `convenor ics` run without a ledger): the Unix epoch, 1970-01-01T00:00:00Z. A constant keeps
/// the bytes deterministic; any real revision is later, so the feed moves forward once one exists.
pub const FALLBACK_STAMP: Timestamp = Timestamp::UNIX_EPOCH;

/// The VTIMEZONE's rules are taken from the year of the config's last meeting; with no meeting
/// at all (and so no event needing them) from the year of this instant, 2026-01-01T00:00:00Z.
const NO_MEETING_REFERENCE: i64 = 1_767_225_600;

/// The UID of a meeting: `<meeting id>@<network short name as a slug>.convenor`. It depends only
/// on the meeting's stable id and the network, holds no personal data, and never changes.
pub fn uid(config: &Config, meeting: &Meeting) -> String {
    format!("{}@{}.convenor", meeting.id, network_slug(config))
}

/// The network's short name as lowercase ASCII letters, digits and `-`.
fn network_slug(config: &Config) -> String {
    let slug: String = config
        .network
        .short_name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "network".into()
    } else {
        slug
    }
}

/// The calendar's display name (NAME, X-WR-CALNAME). Commas, semicolons and backslashes are
/// dropped: clients split NAME on commas, and NAME is not escaped by the icalendar crate.
pub fn calendar_name(config: &Config, selection: Selection<'_>) -> String {
    let name = match selection {
        Selection::All => format!("{} meetings", config.network.short_name),
        Selection::Priority(p) => format!("{}: {}", config.network.short_name, p.name),
    };
    name.chars()
        .filter(|c| !matches!(c, ',' | ';' | '\\'))
        .collect()
}

/// The meetings of a selection, in config order (sorted by start).
pub fn meetings<'a>(
    config: &'a Config,
    selection: Selection<'a>,
) -> impl Iterator<Item = &'a Meeting> {
    config
        .meetings
        .iter()
        .filter(move |m| selected(config, selection, m))
}

fn selected(config: &Config, selection: Selection<'_>, meeting: &Meeting) -> bool {
    match selection {
        Selection::All => true,
        Selection::Priority(p) => config.priorities_of(meeting).any(|q| q.id == p.id),
    }
}

/// The latest last change among a selection's meetings ([`FALLBACK_STAMP`] when none has one).
pub fn last_change(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    selection: Selection<'_>,
) -> Timestamp {
    meetings(config, selection)
        .map(|m| {
            revisions
                .get(&m.id)
                .map_or(FALLBACK_STAMP, |r| r.last_modified)
        })
        .max()
        .unwrap_or(FALLBACK_STAMP)
}

/// Renders a whole feed: VCALENDAR with METHOD:PUBLISH, the VTIMEZONE and one VEVENT per meeting
/// of `selection`. A meeting missing from `revisions` gets SEQUENCE 0 and [`FALLBACK_STAMP`].
pub fn render_calendar(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    selection: Selection<'_>,
) -> String {
    let mut text = header(config, selection);
    text.push_str(&timezone(config));
    for meeting in meetings(config, selection) {
        text.push_str(&event(config, meeting, revisions.get(&meeting.id)));
    }
    text.push_str("END:VCALENDAR\r\n");
    fold::refold(&text)
}

/// Renders several feeds at once, each byte for byte what [`render_calendar`] gives for its
/// selection, but every VEVENT (and the VTIMEZONE) rendered and folded only once and copied into
/// each feed it belongs to: the whole calendar and every priority feed share their events.
/// Folding the parts equals folding the whole because [`fold::refold`] works line by line and
/// every part ends with CRLF.
pub fn render_calendars(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    selections: &[Selection<'_>],
) -> Vec<String> {
    let calendars = Calendars::render(config, revisions, selections);
    (0..selections.len()).map(|i| calendars.text(i)).collect()
}

/// Several calendars as the pieces they are made of: each VEVENT rendered once, however many
/// calendars it is in. A calendar's text is its [`Calendars::pieces`] one after the other, which
/// a caller can write out (into a memfd, say) without first joining them into one string.
#[derive(Debug)]
pub struct Calendars {
    headers: Vec<String>,
    timezone: String,
    events: Vec<String>,
    /// For each calendar, the indexes of its events in `events`.
    members: Vec<Vec<usize>>,
}

const CALENDAR_END: &str = "END:VCALENDAR\r\n";

impl Calendars {
    /// Renders every meeting once and each selection's header (see [`render_calendars`]).
    pub fn render(
        config: &Config,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        selections: &[Selection<'_>],
    ) -> Self {
        Self {
            headers: selections
                .iter()
                .map(|&selection| fold::refold(&header(config, selection)))
                .collect(),
            timezone: fold::refold(&timezone(config)),
            events: config
                .meetings
                .iter()
                .map(|m| fold::refold(&event(config, m, revisions.get(&m.id))))
                .collect(),
            members: selections
                .iter()
                .map(|&selection| {
                    (config.meetings.iter().enumerate())
                        .filter(|(_, m)| selected(config, selection, m))
                        .map(|(i, _)| i)
                        .collect()
                })
                .collect(),
        }
    }

    /// How many calendars there are (one per selection rendered).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// True when no selection was rendered.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The pieces of calendar `i`, in order. Panics when `i` is not below [`Self::len`].
    pub fn pieces(&self, i: usize) -> impl Iterator<Item = &str> {
        [self.headers[i].as_str(), self.timezone.as_str()]
            .into_iter()
            .chain(self.members[i].iter().map(|&e| self.events[e].as_str()))
            .chain(std::iter::once(CALENDAR_END))
    }

    /// The length in bytes of calendar `i`.
    pub fn text_len(&self, i: usize) -> usize {
        self.pieces(i).map(str::len).sum()
    }

    /// The text of calendar `i`, joined into one string of exactly its length.
    pub fn text(&self, i: usize) -> String {
        let mut text = String::with_capacity(self.text_len(i));
        self.pieces(i).for_each(|piece| text.push_str(piece));
        text
    }
}

/// Renders the calendar part of a mail about one meeting: METHOD:PUBLISH, the VTIMEZONE and the
/// meeting's VEVENT with the same UID and SEQUENCE as in the feed.
pub fn render_meeting_invite(
    config: &Config,
    meeting: &Meeting,
    revision: Option<&StoredRevision>,
) -> String {
    let mut text = header(config, Selection::All);
    text.push_str(&timezone(config));
    text.push_str(&event(config, meeting, revision));
    text.push_str("END:VCALENDAR\r\n");
    fold::refold(&text)
}

fn header(config: &Config, selection: Selection<'_>) -> String {
    let name = calendar_name(config, selection);
    let mut out = String::from("BEGIN:VCALENDAR\r\n");
    let mut refresh = Property::new("REFRESH-INTERVAL", duration(config.http.refresh_interval));
    refresh.add_parameter("VALUE", "DURATION");
    let properties = [
        Property::new("VERSION", "2.0"),
        Property::new(
            "PRODID",
            format!("-//{}//convenor//EN", config.network.short_name),
        ),
        Property::new("CALSCALE", "GREGORIAN"),
        Property::new("METHOD", "PUBLISH"),
        Property::new("NAME", name.as_str()),
        Property::new("X-WR-CALNAME", name.as_str()),
        Property::new("X-WR-TIMEZONE", config.network.time_zone_name.as_str()),
        refresh,
        Property::new("X-PUBLISHED-TTL", duration(config.http.published_ttl)),
        Property::new("URL", urls::page_url(config)),
    ];
    for p in properties {
        vtimezone::push_property(&mut out, p);
    }
    out
}

fn timezone(config: &Config) -> String {
    let tz = &config.network.time_zone;
    let reference = config
        .meetings
        .iter()
        .map(|m| m.starts_at(tz))
        .max()
        .or_else(|| Timestamp::from_second(NO_MEETING_REFERENCE).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    vtimezone::render(
        &config.network.time_zone_name,
        &vtimezone::observances(tz, reference),
    )
}

/// A positive duration as RFC 5545 DURATION (`PT4H`, `PT1H30M`); days are written as hours.
fn duration(d: SignedDuration) -> String {
    let secs = d.as_secs().max(1);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 {
        out.push_str(&format!("{s}S"));
    }
    out
}

fn local(dt: DateTime) -> String {
    dt.strftime("%Y%m%dT%H%M%S").to_string()
}

fn utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

fn event(config: &Config, meeting: &Meeting, revision: Option<&StoredRevision>) -> String {
    let tzid = config.network.time_zone_name.as_str();
    let (sequence, stamp) = revision.map_or((0, FALLBACK_STAMP), |r| (r.sequence, r.last_modified));
    let timed = |key: &str, at: DateTime| {
        let mut p = Property::new(key, local(at));
        p.add_parameter("TZID", tzid);
        p
    };
    let contact = &config.network.contact;
    let mut organizer = Property::new("ORGANIZER", format!("mailto:{}", contact.email));
    organizer.add_parameter(
        "CN",
        &fold::clean_param(
            contact
                .name
                .as_deref()
                .unwrap_or(config.network.short_name.as_str()),
        ),
    );
    let summary = if meeting.is_cancelled() {
        format!("Cancelled: {}", meeting.title)
    } else {
        meeting.title.to_string()
    };

    let mut ev = icalendar::Event::new();
    ev.uid(&uid(config, meeting))
        .add_property("DTSTAMP", utc(stamp))
        .add_property("LAST-MODIFIED", utc(stamp))
        .add_property("SEQUENCE", sequence.to_string())
        .append_property(timed("DTSTART", meeting.local_start()))
        .append_property(timed("DTEND", meeting.local_end()))
        .summary(&fold::clean_text(&summary))
        .description(&fold::clean_text(&description(config, meeting)))
        .append_property(organizer)
        .add_property("URL", urls::page_url(config))
        .add_property("TRANSP", "OPAQUE")
        .status(if meeting.is_cancelled() {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        });
    if let Some(location) = &meeting.location {
        ev.location(&fold::clean_text(location.as_str()));
    }
    // Serialising into a String cannot fail: fmt::Write for String is infallible.
    ev.done().try_into_string().unwrap_or_default()
}

/// The plain-text DESCRIPTION: status, priorities in focus with their leads, the agreed agenda
/// (when any item is accepted), join link, notes, contact and the subscribe page.
pub fn description(config: &Config, meeting: &Meeting) -> String {
    let mut lines = Vec::new();
    if meeting.is_cancelled() {
        lines.push("This meeting is cancelled.".to_owned());
        lines.push(String::new());
    }
    lines.push(format!("{} of the {}.", meeting.title, config.network.name));
    lines.push(String::new());
    lines.push(if meeting.focus.is_empty() {
        "Priorities (all in focus):".to_owned()
    } else {
        "Priorities in focus:".to_owned()
    });
    for p in config.priorities_of(meeting) {
        let org = p
            .lead
            .organisation
            .as_ref()
            .map(|o| format!(", {o}"))
            .unwrap_or_default();
        lines.push(format!(
            "- {}: lead {}{org} <{}>",
            p.name, p.lead.name, p.lead.email.email
        ));
    }
    let agenda = config.agenda.get(&meeting.id);
    if !agenda.empty {
        lines.push(String::new());
        lines.push("Agenda:".to_owned());
        lines.extend(agenda.lines());
    }
    if let Some(url) = &meeting.join_url {
        lines.push(String::new());
        lines.push(format!("Join online: {url}"));
    }
    if let Some(notes) = &meeting.notes {
        lines.push(String::new());
        lines.push(notes.trim().to_owned());
    }
    lines.push(String::new());
    lines.push(format!("Contact: {}", config.network.contact));
    lines.push(format!(
        "Calendar and subscriptions: {}",
        urls::page_url(config)
    ));
    lines.join("\n")
}
