//! The iCalendar feed: a validated [`Config`] and the stored revisions to deterministic bytes.
//!
//! Pure: no clock, no I/O. The same config and revisions give the same bytes (DTSTAMP and
//! LAST-MODIFIED are each meeting's last change, never "now"), so the HTTP layer's ETag only
//! moves when something a subscriber sees moved. The icalendar crate builds the VCALENDAR's
//! properties and the mailed invite's VEVENT (TEXT escaping, parameter quoting); [`fold`]
//! re-folds its output, [`mod@line`] writes a feed's VEVENTs byte for byte as the crate does but
//! without its per-line copies, and [`vtimezone`] writes the VTIMEZONE it has no type for. Each
//! says why in its docs.

pub mod fold;
pub mod line;
pub mod urls;
pub mod vtimezone;

use std::{borrow::Cow, collections::BTreeMap};

use icalendar::{Component as _, EventLike as _, EventStatus, Property};
use jiff::{SignedDuration, Timestamp, civil::DateTime};

pub use urls::Selection;

use crate::{
    model::{Config, HeaderText, Meeting, MeetingId},
    revision::StoredRevision,
};

/// The DTSTAMP and LAST-MODIFIED of a meeting that has no stored revision yet (for example
/// `convenor ics` run without a ledger): the Unix epoch, 1970-01-01T00:00:00Z. A constant keeps
/// the bytes deterministic; any real revision is later, so the feed moves forward once one exists.
pub const FALLBACK_STAMP: Timestamp = Timestamp::UNIX_EPOCH;

/// The VTIMEZONE's rules are taken from the year of the config's last meeting; with no meeting
/// at all (and so no event needing them) from the year of this instant, 2026-01-01T00:00:00Z.
const NO_MEETING_REFERENCE: i64 = 1_767_225_600;

const CALENDAR_END: &str = "END:VCALENDAR\r\n";

/// The size from which a rendered feed is warned about: 800 KiB. Google Calendar does not read
/// a subscribed feed of more than 1 MB (Google's limit: keep a feed well under it); a warning
/// here leaves room to act before members' calendars stop updating. About 600 meetings of the
/// shipped config's shape reach it.
pub const FEED_SIZE_WARNING: usize = 800 * 1024;

/// The warning for a rendered feed of `bytes` at `path` when it is [`FEED_SIZE_WARNING`] or
/// more; `None` below it. `path` is below the token prefix ([`urls::relative_path`]), so the
/// warning never shows the token. The one rule `convenor check` prints and the daemon logs (at
/// start, at every reload and after an agenda change).
pub fn size_warning(path: &str, bytes: usize) -> Option<String> {
    (bytes >= FEED_SIZE_WARNING).then(|| {
        format!(
            "the feed {path} is {} KiB ({bytes} bytes), over {} KiB: Google Calendar stops \
             reading a subscribed feed of more than 1 MB; remove past meetings from the config",
            bytes.div_ceil(1024),
            FEED_SIZE_WARNING / 1024
        )
    })
}

/// Every feed a config has, in the order the daemon serves and caches them: the whole calendar,
/// then each priority's feed in config order.
pub fn selections(config: &Config) -> Vec<Selection<'_>> {
    std::iter::once(Selection::All)
        .chain(config.priorities.iter().map(Selection::Priority))
        .collect()
}

/// What follows the meeting id in every UID: a meeting's UID is
/// `<meeting id>@<network uid_domain>` (`2023-02-24@lednet.convenor`). It depends only on the
/// meeting's stable id and the network's UID domain, which the ledger pins at the first start
/// ([`crate::model::Network::uid_domain`]); it holds no personal data and never changes.
fn uid_domain(config: &Config) -> String {
    format!("@{}", config.network.uid_domain)
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
        .filter(move |m| selected(selection, m))
}

/// True when `meeting` is in the feed of `selection`: every meeting is in the whole calendar, a
/// meeting is in a priority's feed when it has the priority in focus ([`Config::priorities_of`],
/// whose priorities are the config's own, as a selection's are).
fn selected(selection: Selection<'_>, meeting: &Meeting) -> bool {
    match selection {
        Selection::All => true,
        Selection::Priority(p) => meeting.has_in_focus(&p.id),
    }
}

/// The latest last change among each feed's meetings ([`FALLBACK_STAMP`] when none has one):
/// the whole calendar first, then each priority's feed in config order. One pass over the
/// meetings, one revision lookup each (a pass per feed was 6 lookups a meeting at every load).
pub fn last_changes(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
) -> Vec<Timestamp> {
    let mut latest = vec![FALLBACK_STAMP; 1 + config.priorities.len()];
    for meeting in &config.meetings {
        let stamp = revisions
            .get(&meeting.id)
            .map_or(FALLBACK_STAMP, |r| r.last_modified);
        latest[0] = latest[0].max(stamp);
        for (i, p) in config.priorities.iter().enumerate() {
            if selected(Selection::Priority(p), meeting) {
                latest[1 + i] = latest[1 + i].max(stamp);
            }
        }
    }
    latest
}

/// Renders a whole feed: VCALENDAR with METHOD:PUBLISH, the VTIMEZONE and one VEVENT per meeting
/// of `selection`. A meeting missing from `revisions` gets SEQUENCE 0 and [`FALLBACK_STAMP`].
pub fn render_calendar(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    selection: Selection<'_>,
) -> String {
    let mut text = fold::refold(&header(config, selection));
    text.push_str(&fold::refold(&timezone(config)));
    let mut events = EventRenderer::new(config);
    for meeting in meetings(config, selection) {
        events.render_into(meeting, revisions.get(&meeting.id), &mut text);
    }
    text.push_str(CALENDAR_END);
    text
}

/// Renders several feeds at once, each byte for byte what [`render_calendar`] gives for its
/// selection, but every VEVENT (and the VTIMEZONE) rendered and folded only once and copied into
/// each feed it belongs to: the whole calendar and every priority feed share their events.
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
    /// Every VEVENT, one after the other (one allocation, not one per event).
    events: String,
    /// Where each meeting's VEVENT ends in `events` (it starts where the one before ends).
    ends: Vec<usize>,
    /// For each calendar, the indexes of its events in `ends`.
    members: Vec<Vec<usize>>,
}

impl Calendars {
    /// Renders every meeting once and each selection's header (see [`render_calendars`]), the
    /// meetings on as many threads as [`crate::parallel::worker_threads`] gives for their
    /// number.
    pub fn render(
        config: &Config,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        selections: &[Selection<'_>],
    ) -> Self {
        let threads = crate::parallel::worker_threads(config.meetings.len());
        Self::render_on(config, revisions, selections, threads)
    }

    /// [`Calendars::render`] with the meetings split into `threads` runs of consecutive
    /// meetings, each rendered on a thread of its own (the first on the caller's): the bytes
    /// are the same for any number of threads.
    pub fn render_on(
        config: &Config,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        selections: &[Selection<'_>],
        threads: usize,
    ) -> Self {
        let mut parts = crate::parallel::in_runs(&config.meetings, threads, |meetings| {
            render_events(config, revisions, meetings)
        })
        .into_iter();
        let (mut events, mut ends) = parts.next().unwrap_or_default();
        for (text, part_ends) in parts {
            let base = events.len();
            events.push_str(&text);
            ends.extend(part_ends.into_iter().map(|end| base + end));
        }
        Self {
            headers: selections
                .iter()
                .map(|&selection| fold::refold(&header(config, selection)))
                .collect(),
            timezone: fold::refold(&timezone(config)),
            events,
            ends,
            members: selections
                .iter()
                .map(|&selection| {
                    (config.meetings.iter().enumerate())
                        .filter(|(_, m)| selected(selection, m))
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
            .chain(self.members[i].iter().map(|&e| self.event(e)))
            .chain(std::iter::once(CALENDAR_END))
    }

    /// The VEVENT of the `e`th meeting.
    fn event(&self, e: usize) -> &str {
        let start = e.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.events[start..self.ends[e]]
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

/// Renders the calendar part of a mail about one meeting: METHOD:PUBLISH (without the feed's
/// calendar name, refresh interval and URL: see `invite_header`), the VTIMEZONE and the
/// meeting's VEVENT with the same UID and SEQUENCE as in the feed.
pub fn render_meeting_invite(
    config: &Config,
    meeting: &Meeting,
    revision: Option<&StoredRevision>,
) -> String {
    let mut text = fold::refold(&invite_header(config));
    text.push_str(&fold::refold(&timezone(config)));
    EventRenderer::new(config).render_with_crate_into(meeting, revision, &mut text);
    text.push_str(CALENDAR_END);
    text
}

fn header(config: &Config, selection: Selection<'_>) -> String {
    let name = calendar_name(config, selection);
    let mut out = invite_header(config);
    let mut refresh = Property::new("REFRESH-INTERVAL", duration(config.http.refresh_interval));
    refresh.add_parameter("VALUE", "DURATION");
    let properties = [
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

/// The calendar properties of a mailed invite, which begin every feed's too: only what one
/// event needs. The feed's subscription properties ([`header`]) stay out: MS-OXCICAL 2.1.3.1.1.17 says X-WR-CALNAME "MUST be
/// omitted" for a single appointment, and Outlook opens an .ics that has it as a new calendar
/// named after it, rather than adding the event to the reader's own.
fn invite_header(config: &Config) -> String {
    let mut out = String::from("BEGIN:VCALENDAR\r\n");
    let properties = [
        Property::new("VERSION", "2.0"),
        Property::new(
            "PRODID",
            format!("-//{}//convenor//EN", config.network.short_name),
        ),
        Property::new("CALSCALE", "GREGORIAN"),
        Property::new("METHOD", "PUBLISH"),
    ];
    for p in properties {
        vtimezone::push_property(&mut out, p);
    }
    out
}

fn timezone(config: &Config) -> String {
    vtimezone::render(
        &config.network.time_zone_name,
        &vtimezone::observances(&config.network.time_zone, zone_reference(config)),
    )
}

/// The instant whose year's clock changes the VTIMEZONE carries: the last meeting's start.
fn zone_reference(config: &Config) -> Timestamp {
    let tz = &config.network.time_zone;
    config
        .meetings
        .iter()
        .map(|m| m.starts_at(tz))
        .max()
        .or_else(|| Timestamp::from_second(NO_MEETING_REFERENCE).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A warning when the network's zone changes its clocks on other days in some meeting's year
/// than in the year the VTIMEZONE's one yearly rule comes from (`convenor check` prints it, the
/// daemon logs it at start and reload): Outlook reads that one rule for every year.
pub fn zone_rule_warning(config: &Config) -> Option<String> {
    let tz = &config.network.time_zone;
    let reference = zone_reference(config);
    let starts = config.meetings.iter().map(|m| m.starts_at(tz));
    let off = vtimezone::years_off_rule(tz, reference, starts);
    (!off.is_empty()).then(|| {
        let years: Vec<String> = off.iter().map(ToString::to_string).collect();
        format!(
            "the clocks of {} do not change the same way every year of the meetings: the feed's \
             VTIMEZONE carries {}'s changes as one yearly rule, which Outlook reads for every \
             year, so meetings in {} may show an hour off there (Google and Apple use their own \
             zone data)",
            config.network.time_zone_name,
            tz.to_datetime(reference).year(),
            years.join(", ")
        )
    })
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

/// An iCalendar DATE-TIME as text: `20230607T100000`, or `20230607T090000Z` in UTC. Written
/// by hand into a buffer of its own rather than with `format!` or `strftime` (which parses its
/// format string on every call): three of them are written for every event.
enum DateTimeText {
    /// Years 0 to 9999: the 15 or 16 bytes, and how many there are.
    Inline([u8; 16], usize),
    /// Any other year, as `strftime` writes it.
    Other(String),
}

impl std::ops::Deref for DateTimeText {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Only ASCII digits, `T` and `Z` are written into it.
            Self::Inline(bytes, len) => std::str::from_utf8(&bytes[..*len]).unwrap_or_default(),
            Self::Other(text) => text,
        }
    }
}

/// A local date-time as iCalendar DATE-TIME (`20230607T100000`).
fn local(dt: DateTime) -> DateTimeText {
    date_time(dt, false)
}

/// An instant as iCalendar UTC DATE-TIME (`20230607T090000Z`).
fn utc(ts: Timestamp) -> DateTimeText {
    date_time(jiff::tz::Offset::UTC.to_datetime(ts), true)
}

fn date_time(dt: DateTime, utc: bool) -> DateTimeText {
    let Ok(year) = u16::try_from(dt.year()) else {
        return DateTimeText::Other(
            dt.strftime(if utc {
                "%Y%m%dT%H%M%SZ"
            } else {
                "%Y%m%dT%H%M%S"
            })
            .to_string(),
        );
    };
    let mut bytes = [0u8; 16];
    let digits = |at: usize, value: u16, width: usize, bytes: &mut [u8; 16]| {
        let mut value = value;
        for i in (at..at + width).rev() {
            bytes[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, year, 4, &mut bytes);
    // Month, day, hour, minute and second are below 100.
    let two = |v: i8| u16::try_from(v).unwrap_or_default();
    digits(4, two(dt.month()), 2, &mut bytes);
    digits(6, two(dt.day()), 2, &mut bytes);
    bytes[8] = b'T';
    digits(9, two(dt.hour()), 2, &mut bytes);
    digits(11, two(dt.minute()), 2, &mut bytes);
    digits(13, two(dt.second()), 2, &mut bytes);
    let len = if utc {
        bytes[15] = b'Z';
        16
    } else {
        15
    };
    DateTimeText::Inline(bytes, len)
}

/// The VEVENTs of `meetings`, one after the other, and where each ends.
fn render_events(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    meetings: &[Meeting],
) -> (String, Vec<usize>) {
    let mut renderer = EventRenderer::new(config);
    // About 1 KiB an event: one growth or two at most.
    let mut events = String::with_capacity(meetings.len() * 1024);
    let ends = (meetings.iter())
        .map(|m| {
            renderer.render_into(m, revisions.get(&m.id), &mut events);
            events.len()
        })
        .collect();
    (events, ends)
}

/// Renders VEVENTs. What every event of a rendering shares (the UID's domain, the page URL,
/// the ORGANIZER) is worked out once, and the buffers events are written through are reused from
/// event to event: per event, they were a third of a feed's rendering time.
struct EventRenderer<'a> {
    config: &'a Config,
    /// [`uid_domain`], the end of every UID.
    uid_domain: String,
    page_url: String,
    organizer: String,
    organizer_name: String,
    /// Writes a feed's content lines ([`mod@line`]).
    lines: line::LineWriter,
    /// The crate's output for one event (folded its way), for [`Self::render_with_crate_into`].
    crate_text: String,
    /// A logical line being folded again.
    line: String,
    /// The DESCRIPTION being written.
    description: String,
}

/// What one meeting's VEVENT shows beside its DESCRIPTION (which [`EventRenderer::fields`]
/// writes into the renderer's buffer), worked out once for either way of writing it.
struct EventFields<'m> {
    sequence: u32,
    /// DTSTAMP and LAST-MODIFIED.
    stamp: DateTimeText,
    start: DateTimeText,
    end: DateTimeText,
    /// Not yet cleaned ([`fold::clean_text`]), as `location` and the DESCRIPTION are not.
    summary: Cow<'m, str>,
    location: Option<&'m str>,
    cancelled: bool,
}

impl<'a> EventRenderer<'a> {
    fn new(config: &'a Config) -> Self {
        let contact = &config.network.contact;
        Self {
            config,
            uid_domain: uid_domain(config),
            page_url: urls::page_url(config),
            organizer: format!("mailto:{}", contact.email),
            organizer_name: fold::clean_param(
                contact
                    .name
                    .as_deref()
                    .unwrap_or(config.network.short_name.as_str()),
            ),
            lines: line::LineWriter::default(),
            crate_text: String::new(),
            line: String::new(),
            description: String::new(),
        }
    }

    /// The fields of `meeting`'s VEVENT at `revision`; its DESCRIPTION, not yet cleaned, is left
    /// in `self.description`.
    fn fields<'m>(
        &mut self,
        meeting: &'m Meeting,
        revision: Option<&StoredRevision>,
    ) -> EventFields<'m> {
        let (sequence, stamp) =
            revision.map_or((0, FALLBACK_STAMP), |r| (r.sequence, r.last_modified));
        let cancelled = meeting.is_cancelled();
        let summary = if cancelled {
            Cow::Owned(format!("Cancelled: {}", meeting.title))
        } else {
            Cow::Borrowed(meeting.title.as_str())
        };
        self.description.clear();
        write_description(self.config, meeting, &self.page_url, &mut self.description);
        EventFields {
            sequence,
            stamp: utc(stamp),
            start: local(meeting.local_start()),
            end: local(meeting.local_end()),
            summary,
            location: meeting.location.as_ref().map(HeaderText::as_str),
            cancelled,
        }
    }

    /// Appends the VEVENT of `meeting` to `out`, written by [`line::LineWriter`]: the properties
    /// in the order the crate writes them (by name), each with the crate's escaping and
    /// quoting, folded by [`fold::fold_line`]. The same bytes as
    /// [`Self::render_with_crate_into`].
    fn render_into(
        &mut self,
        meeting: &Meeting,
        revision: Option<&StoredRevision>,
        out: &mut String,
    ) {
        use line::Value::{Text, Verbatim};
        let f = self.fields(meeting, revision);
        let tzid = Some(("TZID", self.config.network.time_zone_name.as_str()));
        let mut sequence = itoa::Buffer::new();
        let w = &mut self.lines;
        out.push_str("BEGIN:VEVENT\r\n");
        w.property(out, "DESCRIPTION", None, &[&self.description], Text);
        w.property(out, "DTEND", tzid, &[&f.end], Verbatim);
        w.property(out, "DTSTAMP", None, &[&f.stamp], Verbatim);
        w.property(out, "DTSTART", tzid, &[&f.start], Verbatim);
        w.property(out, "LAST-MODIFIED", None, &[&f.stamp], Verbatim);
        if let Some(location) = f.location {
            w.property(out, "LOCATION", None, &[location], Text);
        }
        let organizer = Some(("CN", self.organizer_name.as_str()));
        w.property(out, "ORGANIZER", organizer, &[&self.organizer], Verbatim);
        w.property(
            out,
            "SEQUENCE",
            None,
            &[sequence.format(f.sequence)],
            Verbatim,
        );
        let status = if f.cancelled {
            "CANCELLED"
        } else {
            "CONFIRMED"
        };
        w.property(out, "STATUS", None, &[status], Text);
        w.property(out, "SUMMARY", None, &[&f.summary], Text);
        w.property(out, "TRANSP", None, &["OPAQUE"], Text);
        let uid = [meeting.id.as_str(), self.uid_domain.as_str()];
        w.property(out, "UID", None, &uid, Text);
        w.property(out, "URL", None, &[&self.page_url], Verbatim);
        out.push_str("END:VEVENT\r\n");
    }

    /// Appends the VEVENT of `meeting` to `out` as the icalendar crate writes it, folded again
    /// by [`fold::refold_into`]: for the mailed invite, and what [`Self::render_into`] is tested
    /// against.
    fn render_with_crate_into(
        &mut self,
        meeting: &Meeting,
        revision: Option<&StoredRevision>,
        out: &mut String,
    ) {
        let f = self.fields(meeting, revision);
        let tzid = self.config.network.time_zone_name.as_str();
        let timed = |key: &str, at: &str| {
            let mut p = Property::new(key, at);
            p.add_parameter("TZID", tzid);
            p
        };
        let mut organizer = Property::new("ORGANIZER", self.organizer.as_str());
        organizer.add_parameter("CN", &self.organizer_name);
        let mut ev = icalendar::Event::new();
        ev.uid(&format!("{}{}", meeting.id, self.uid_domain))
            .add_property("DTSTAMP", &*f.stamp)
            .add_property("LAST-MODIFIED", &*f.stamp)
            .add_property("SEQUENCE", f.sequence.to_string())
            .append_property(timed("DTSTART", &f.start))
            .append_property(timed("DTEND", &f.end))
            .summary(&fold::clean_text(&f.summary))
            .description(&fold::clean_text(&self.description))
            .append_property(organizer)
            .add_property("URL", self.page_url.as_str())
            .add_property("TRANSP", "OPAQUE")
            .status(if f.cancelled {
                EventStatus::Cancelled
            } else {
                EventStatus::Confirmed
            });
        if let Some(location) = f.location {
            ev.location(&fold::clean_text(location));
        }
        self.crate_text.clear();
        // Writing into a String cannot fail: fmt::Write for String is infallible.
        let _ = ev.fmt_write(&mut self.crate_text);
        fold::refold_into(&self.crate_text, &mut self.line, out);
    }
}

/// Appends the plain-text DESCRIPTION of `meeting` to `out`: status, priorities in focus with
/// their leads, the agreed agenda (when any item is accepted), join link, notes, contact and the
/// subscribe page at `page_url`.
fn write_description(config: &Config, meeting: &Meeting, page_url: &str, out: &mut String) {
    use std::fmt::Write as _;
    // Writing into a String cannot fail: fmt::Write for String is infallible.
    if meeting.is_cancelled() {
        out.push_str("This meeting is cancelled.\n\n");
    }
    let _ = write!(
        out,
        "{} of the {}.\n\n{}",
        meeting.title,
        config.network.name,
        if meeting.focus.is_empty() {
            "Priorities (all in focus):"
        } else {
            "Priorities in focus:"
        }
    );
    for p in config.priorities_of(meeting) {
        let _ = write!(out, "\n- {}: lead {}", p.name, p.lead.name);
        if let Some(org) = &p.lead.organisation {
            let _ = write!(out, ", {org}");
        }
        let _ = write!(out, " <{}>", p.lead.email.email);
    }
    let agenda = config.agenda.get(&meeting.id);
    if !agenda.empty {
        out.push_str("\n\nAgenda:");
        for line in agenda.lines() {
            out.push('\n');
            out.push_str(&line);
        }
    }
    if let Some(url) = &meeting.join_url {
        let _ = write!(out, "\n\nJoin online: {url}");
    }
    if let Some(notes) = &meeting.notes {
        out.push_str("\n\n");
        out.push_str(notes.trim());
    }
    let _ = write!(
        out,
        "\n\nContact: {}\nCalendar and subscriptions: {page_url}",
        config.network.contact
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each feed's last change is the latest of its own meetings' revisions.
    #[test]
    fn each_feed_has_the_last_change_of_its_own_meetings() {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let mut config = crate::config::parse(path, &text, &Default::default())
            .expect("valid")
            .config;
        let transport = crate::model::PriorityId::parse("future-transport").expect("id");
        config.meetings[1].focus = vec![transport.clone()];
        config.meetings[2].focus = vec![transport];
        let at = |s: &str| -> Timestamp { s.parse().expect("timestamp") };
        let revision = |last_modified| StoredRevision {
            last_modified,
            ..crate::revision::next_revision(
                None,
                &config,
                &config.meetings[0],
                at("2023-01-01T00:00:00Z"),
            )
            .0
        };
        // Meeting 0 (all priorities) changed first, meeting 1 (transport only) last; meeting 2
        // (transport only) has no revision.
        let revisions = BTreeMap::from([
            (
                config.meetings[0].id.clone(),
                revision(at("2023-01-02T00:00:00Z")),
            ),
            (
                config.meetings[1].id.clone(),
                revision(at("2023-03-04T00:00:00Z")),
            ),
        ]);
        let latest = last_changes(&config, &revisions);
        let by_feed: Vec<(String, Timestamp)> = std::iter::once("all".to_owned())
            .chain(config.priorities.iter().map(|p| p.id.to_string()))
            .zip(latest)
            .collect();
        let expected = |id: &str| {
            if id == "all" || id == "future-transport" {
                at("2023-03-04T00:00:00Z")
            } else {
                at("2023-01-02T00:00:00Z")
            }
        };
        assert_eq!(by_feed.len(), 6);
        for (id, stamp) in by_feed {
            assert_eq!(stamp, expected(&id), "{id}");
        }
        let none = BTreeMap::new();
        assert!(
            last_changes(&config, &none)
                .iter()
                .all(|&t| t == FALLBACK_STAMP)
        );
    }

    /// The hand-written DATE-TIMEs are what `strftime` wrote before, for every year jiff has.
    #[test]
    fn date_times_are_written_as_strftime_writes_them() {
        for year in [-9999, -1, 0, 5, 999, 1970, 2023, 9999] {
            let dt = jiff::civil::date(year, 3, 26).at(1, 2, 3, 0);
            assert_eq!(
                &*local(dt),
                dt.strftime("%Y%m%dT%H%M%S").to_string(),
                "{year}"
            );
        }
        for ts in [Timestamp::UNIX_EPOCH, Timestamp::MIN, Timestamp::MAX] {
            let ts = Timestamp::from_second(ts.as_second()).expect("whole second");
            assert_eq!(&*utc(ts), ts.strftime("%Y%m%dT%H%M%SZ").to_string(), "{ts}");
        }
    }
    /// The mailed invite holds one event and none of the feed's subscription properties (with
    /// X-WR-CALNAME, Outlook opens it as a new calendar); the feed keeps them.
    #[test]
    fn a_mailed_invite_has_no_calendar_name_refresh_or_url() {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let config = crate::config::parse(path, &text, &Default::default())
            .expect("valid")
            .config;
        let invite = render_meeting_invite(&config, &config.meetings[0], None);
        let feed = render_calendar(&config, &BTreeMap::new(), Selection::All);
        // Calendar-level lines: those before the first component inside the calendar.
        let calendar_lines = |text: &str| -> Vec<String> {
            (text.split("\r\n").skip(1))
                .take_while(|l| !l.starts_with("BEGIN:"))
                .map(|l| l.split([':', ';']).next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            calendar_lines(&invite),
            ["VERSION", "PRODID", "CALSCALE", "METHOD"],
            "{invite}"
        );
        for name in [
            "NAME",
            "X-WR-CALNAME",
            "REFRESH-INTERVAL",
            "X-PUBLISHED-TTL",
            "URL",
        ] {
            assert!(calendar_lines(&feed).iter().any(|l| l == name), "{name}");
        }
        assert_eq!(invite.matches("BEGIN:VEVENT").count(), 1);
        assert!(invite.contains("METHOD:PUBLISH\r\n"));
    }

    /// A zone whose clock changes fall on other days in another meeting year than in the
    /// VTIMEZONE's year is warned about, naming the years; London's (last Sunday rules) is not.
    #[test]
    fn a_zone_whose_rule_differs_between_meeting_years_is_warned_about() {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path)
            .expect("example config")
            .replace("date = 2023-11-30", "date = 2024-11-29");
        let load = |text: &str| {
            crate::config::parse(path, text, &Default::default())
                .expect("valid")
                .config
        };
        assert_eq!(zone_rule_warning(&load(&text)), None, "Europe/London");
        // Israel: the Friday on or after 23 March, the 4th Friday in 2023 (24 March), the last
        // in 2024 (29 March).
        let jerusalem = load(&text.replace(
            "time_zone = \"Europe/London\"",
            "time_zone = \"Asia/Jerusalem\"",
        ));
        let warning = zone_rule_warning(&jerusalem).expect("warned");
        assert!(
            warning.contains("Asia/Jerusalem do not change the same way")
                && warning.contains("carries 2024's changes")
                && warning.contains("meetings in 2023 may"),
            "{warning}"
        );
        // Kazakhstan: one change in 2024 (UTC+6 to +5 on 1 March), so the VTIMEZONE is the one
        // offset of the last meeting's day; a meeting before the change is off, and none is when
        // every meeting falls before it.
        let almaty = |text: &str| {
            load(&text.replace(
                "time_zone = \"Europe/London\"",
                "time_zone = \"Asia/Almaty\"",
            ))
        };
        let across = text
            .replace("date = 2023-02-24", "date = 2024-01-15")
            .replace("date = 2023-04-19", "date = 2024-01-16")
            .replace("date = 2023-06-07", "date = 2024-01-17")
            .replace("date = 2023-09-29", "date = 2024-01-18");
        let warning = zone_rule_warning(&almaty(&across)).expect("warned");
        assert!(warning.contains("meetings in 2024 may"), "{warning}");
        let before = across.replace("date = 2024-11-29", "date = 2024-02-20");
        assert_eq!(zone_rule_warning(&almaty(&before)), None);
    }

    /// A feed's hand-written VEVENTs ([`mod@line`]) are the bytes the icalendar crate writes and
    /// [`fold::refold`] folds again, for meetings of every shape (cancelled or not, with or
    /// without a place, with and without a revision) whose every text (title, place, notes,
    /// names in the DESCRIPTION, the organizer's name, the zone's name) is made of escaped
    /// characters, separators, quotes and multibyte characters at every offset around the
    /// folds.
    #[test]
    fn hand_written_events_are_the_crates_bytes() {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let shipped = crate::config::parse(path, &text, &Default::default())
            .expect("valid")
            .config;
        let pieces = [
            "a", "word ", "\\", ",", ";", ":", "\"", "é", "😀", "\\n", "\t", "\r\n", "\r", "\u{7}",
            "\u{85}", " ", "Ü,", "x;y", "\\,",
        ];
        let mut rng = fastrand::Rng::with_seed(13);
        let mut text_of = |len: usize| -> String {
            (0..len)
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect()
        };
        let one_line = |t: String| {
            let t: String = t.chars().filter(|c| !c.is_control()).collect();
            crate::model::HeaderText::parse(&format!("T{t}")).expect("one line")
        };
        let at = |s: &str| -> Timestamp { s.parse().expect("timestamp") };
        let mut compared = 0;
        for round in 0..60 {
            let mut config = shipped.clone();
            config.network.time_zone_name = match round % 3 {
                0 => "Europe/London".into(),
                1 => text_of(3).replace(['\r', '\n'], ""),
                _ => "\"Quoted/Zone\"".into(),
            };
            config.network.name = one_line(text_of(round % 17));
            config.network.contact.name =
                (round % 4 != 0).then(|| one_line(text_of(round % 9)).to_string());
            // The page URL (URL, and the DESCRIPTION's last line) and the organizer's address
            // (a CAL-ADDRESS, written as it is), long and with separators, at every length.
            let path: String = (0..round)
                .map(|i| [",", ";", "a", "\\", "é"][i % 5])
                .collect();
            config.network.base_url =
                crate::model::WebUrl::parse(&format!("https://calendar.example.org/{path}"))
                    .expect("a URL");
            let local_part = format!("team+{}", "x".repeat(round));
            config.network.contact.email = format!("{local_part}@example.org")
                .parse()
                .expect("an address");
            for p in &mut config.priorities {
                p.name = one_line(text_of(round % 7));
                p.lead.name = one_line(text_of(round % 5));
            }
            for (i, m) in config.meetings.iter_mut().enumerate() {
                m.title = one_line(text_of(round + i * 7));
                m.location = (i % 2 == 0).then(|| one_line(text_of(round * 2 + i)));
                m.notes = (i % 3 != 1).then(|| text_of(round * 3 + i));
                m.status = if (round + i) % 4 == 0 {
                    crate::model::MeetingStatus::Cancelled
                } else {
                    crate::model::MeetingStatus::Confirmed
                };
            }
            let mut renderer = EventRenderer::new(&config);
            for (i, meeting) in config.meetings.iter().enumerate() {
                let revision = (i % 2 == 1).then(|| StoredRevision {
                    sequence: u32::try_from(round * i).expect("small"),
                    last_modified: at("2024-03-31T01:00:00Z"),
                    ..crate::revision::next_revision(
                        None,
                        &config,
                        meeting,
                        at("2024-01-01T00:00:00Z"),
                    )
                    .0
                });
                let (mut ours, mut crates) = (String::new(), String::new());
                renderer.render_into(meeting, revision.as_ref(), &mut ours);
                renderer.render_with_crate_into(meeting, revision.as_ref(), &mut crates);
                assert_eq!(ours, crates, "round {round}, meeting {i}");
                assert!(ours.starts_with("BEGIN:VEVENT\r\n"), "{ours}");
                compared += 1;
            }
        }
        assert_eq!(compared, 60 * shipped.meetings.len());
    }

    /// A feed is warned about from [`FEED_SIZE_WARNING`] bytes on, by its path, with its size.
    #[test]
    fn a_feed_of_800_kib_or_more_is_warned_about() {
        assert_eq!(FEED_SIZE_WARNING, 819_200);
        for bytes in [0, 1024, FEED_SIZE_WARNING - 1] {
            assert_eq!(size_warning("/calendar.ics", bytes), None, "{bytes}");
        }
        let at = size_warning("/calendar.ics", FEED_SIZE_WARNING).expect("at the threshold");
        assert!(
            at.starts_with("the feed /calendar.ics is 800 KiB (819200 bytes), over 800 KiB"),
            "{at}"
        );
        let over = size_warning("/priorities/p.ics", 1_048_577).expect("over 1 MiB");
        assert!(
            over.starts_with("the feed /priorities/p.ics is 1025 KiB (1048577 bytes)"),
            "{over}"
        );
        assert!(over.contains("1 MB"), "{over}");
    }
}
