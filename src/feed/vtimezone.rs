//! A VTIMEZONE for any IANA zone, derived from jiff's transitions for the zone's rules.
//!
//! Outlook keeps one yearly STANDARD and one DAYLIGHT rule of a VTIMEZONE and gets RDATE lists
//! wrong (MS-STANOICAL 2.2.47), so this module writes exactly that shape: for each of the two
//! transitions of the reference year it takes the local wall time before the transition, its
//! month, weekday and week of the month (`-1` when it is the last such weekday), and writes a
//! rule starting in 1970 with `RRULE:FREQ=YEARLY;BYMONTH=..;BYDAY=..`. A zone without DST that
//! year gets a single STANDARD. The icalendar crate has no VTIMEZONE type (its lib.rs lists it as
//! a TODO), so the component lines are written here, each property serialised by the crate.

use jiff::{
    Timestamp,
    civil::{Date, Weekday},
    tz::{Offset, TimeZone},
};

/// One STANDARD or DAYLIGHT sub-component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observance {
    /// True for DAYLIGHT.
    pub daylight: bool,
    /// Local wall time of the first onset, in the offset before it (`19700329T010000`).
    pub dtstart: String,
    /// The yearly rule, if the observance recurs.
    pub rrule: Option<String>,
    /// Offset before the onset.
    pub offset_from: Offset,
    /// Offset after the onset.
    pub offset_to: Offset,
    /// The abbreviation (`BST`, `GMT`, `+09`).
    pub name: String,
}

/// The observances of `tz` in the year of `reference`: a DAYLIGHT and a STANDARD rule when the
/// zone changes offset twice that year, else one STANDARD with the offset at `reference`.
pub fn observances(tz: &TimeZone, reference: Timestamp) -> Vec<Observance> {
    let year = tz.to_datetime(reference).year();
    let start = local_start_of_year(tz, year);
    let end = local_start_of_year(tz, year.saturating_add(1));
    let transitions: Vec<_> = tz
        .following(start)
        .take_while(|t| t.timestamp() < end)
        .take(3)
        .collect();
    let yearly_pair = transitions.len() == 2
        && transitions[0].dst().is_dst() != transitions[1].dst().is_dst()
        && transitions[0].offset() != transitions[1].offset();
    if !yearly_pair {
        let info = tz.to_offset_info(reference);
        return vec![Observance {
            daylight: false,
            dtstart: "19700101T000000".to_owned(),
            rrule: None,
            offset_from: info.offset(),
            offset_to: info.offset(),
            name: info.abbreviation().to_owned(),
        }];
    }
    let mut out: Vec<Observance> = transitions
        .iter()
        .map(|t| {
            let before = tz.to_offset(
                t.timestamp()
                    .saturating_sub(jiff::SignedDuration::from_secs(1))
                    .unwrap_or(t.timestamp()),
            );
            let wall = before.to_datetime(t.timestamp());
            let date = wall.date();
            let weekday = date.weekday();
            let nth = if date.day() + 7 > date.days_in_month() {
                -1
            } else {
                (date.day() - 1) / 7 + 1
            };
            let first = Date::new(1970, date.month(), 1)
                .ok()
                .and_then(|d| d.nth_weekday_of_month(nth, weekday).ok())
                .unwrap_or(date);
            Observance {
                daylight: t.dst().is_dst(),
                dtstart: format!(
                    "{}T{}",
                    first.strftime("%Y%m%d"),
                    wall.time().strftime("%H%M%S")
                ),
                rrule: Some(format!(
                    "FREQ=YEARLY;BYMONTH={};BYDAY={nth}{}",
                    date.month(),
                    weekday_code(weekday)
                )),
                offset_from: before,
                offset_to: t.offset(),
                name: t.abbreviation().to_owned(),
            }
        })
        .collect();
    // DAYLIGHT first, as Outlook and most producers write it.
    out.sort_by_key(|o| !o.daylight);
    out
}

/// The years of the instants `starts` whose year's observances (as [`observances`] makes them
/// for each instant) are not the ones it writes for `reference`: Outlook keeps one yearly rule,
/// so it may show times of those years at the wrong offset (a zone whose rule is not "nth or
/// last weekday", such as Israel's "Friday on or after the 23rd"; a zone whose rules changed
/// between the years; a year with one change, whose single offset is the one at the instant).
pub fn years_off_rule(
    tz: &TimeZone,
    reference: Timestamp,
    starts: impl IntoIterator<Item = Timestamp>,
) -> Vec<i16> {
    type Rule = Vec<(bool, String, Option<String>, Offset, Offset)>;
    let rule = |at: Timestamp| -> Rule {
        (observances(tz, at).into_iter())
            .map(|o| (o.daylight, o.dtstart, o.rrule, o.offset_from, o.offset_to))
            .collect()
    };
    let written = rule(reference);
    let mut off: Vec<i16> = (starts.into_iter())
        .filter(|&at| rule(at) != written)
        .map(|at| tz.to_datetime(at).year())
        .collect();
    off.sort_unstable();
    off.dedup();
    off
}

/// The instant local midnight of 1 January starts in `tz` (saturating at jiff's range).
fn local_start_of_year(tz: &TimeZone, year: i16) -> Timestamp {
    Date::new(year, 1, 1)
        .map(|d| crate::schedule::local_instant(tz, d.to_datetime(jiff::civil::Time::midnight())))
        .unwrap_or(Timestamp::MAX)
}

/// RFC 5545 weekday codes.
fn weekday_code(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "MO",
        Weekday::Tuesday => "TU",
        Weekday::Wednesday => "WE",
        Weekday::Thursday => "TH",
        Weekday::Friday => "FR",
        Weekday::Saturday => "SA",
        Weekday::Sunday => "SU",
    }
}

/// An offset as RFC 5545 UTC-OFFSET: `+0100`, `-0500`, `+053000` when it has seconds.
pub fn utc_offset(offset: Offset) -> String {
    let total = offset.seconds();
    let sign = if total < 0 { '-' } else { '+' };
    let abs = total.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    if s == 0 {
        format!("{sign}{h:02}{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}{s:02}")
    }
}

/// The VTIMEZONE text (unfolded lines, each ending in CRLF) for `tzid` with these observances.
pub fn render(tzid: &str, observances: &[Observance]) -> String {
    let mut out = String::from("BEGIN:VTIMEZONE\r\n");
    push_property(&mut out, icalendar::Property::new("TZID", tzid));
    for o in observances {
        let kind = if o.daylight { "DAYLIGHT" } else { "STANDARD" };
        out.push_str(&format!("BEGIN:{kind}\r\n"));
        push_property(
            &mut out,
            icalendar::Property::new("DTSTART", o.dtstart.as_str()),
        );
        if let Some(rule) = &o.rrule {
            push_property(&mut out, icalendar::Property::new("RRULE", rule.as_str()));
        }
        push_property(
            &mut out,
            icalendar::Property::new("TZOFFSETFROM", utc_offset(o.offset_from)),
        );
        push_property(
            &mut out,
            icalendar::Property::new("TZOFFSETTO", utc_offset(o.offset_to)),
        );
        push_property(
            &mut out,
            icalendar::Property::new("TZNAME", o.name.as_str()),
        );
        out.push_str(&format!("END:{kind}\r\n"));
    }
    out.push_str("END:VTIMEZONE\r\n");
    out
}

/// Appends a property serialised by the icalendar crate (escaping and parameter quoting are
/// its job; its folding is undone later by [`super::fold::refold`]).
pub(crate) fn push_property(out: &mut String, property: icalendar::Property) {
    // Serialising into a String cannot fail: fmt::Write for String is infallible.
    let text: String = property.try_into().unwrap_or_default();
    out.push_str(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone")
    }

    fn at(ts: &str) -> Timestamp {
        ts.parse().expect("timestamp")
    }

    #[test]
    fn london_matches_the_rules_outlook_expects() {
        let text = render(
            "Europe/London",
            &observances(&zone("Europe/London"), at("2023-06-07T09:00:00Z")),
        );
        let expected = "BEGIN:VTIMEZONE\r\nTZID:Europe/London\r\n\
            BEGIN:DAYLIGHT\r\nDTSTART:19700329T010000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n\
            TZOFFSETFROM:+0000\r\nTZOFFSETTO:+0100\r\nTZNAME:BST\r\nEND:DAYLIGHT\r\n\
            BEGIN:STANDARD\r\nDTSTART:19701025T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
            TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0000\r\nTZNAME:GMT\r\nEND:STANDARD\r\n\
            END:VTIMEZONE\r\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn other_zones() {
        let ny = observances(&zone("America/New_York"), at("2023-06-07T09:00:00Z"));
        let rules: Vec<_> = ny
            .iter()
            .map(|o| (o.dtstart.as_str(), o.rrule.as_deref()))
            .collect();
        assert_eq!(
            rules,
            [
                ("19700308T020000", Some("FREQ=YEARLY;BYMONTH=3;BYDAY=2SU")),
                ("19701101T020000", Some("FREQ=YEARLY;BYMONTH=11;BYDAY=1SU")),
            ]
        );
        let sydney = observances(&zone("Australia/Sydney"), at("2023-06-07T09:00:00Z"));
        let rules: Vec<_> = sydney
            .iter()
            .map(|o| (o.daylight, o.rrule.as_deref(), utc_offset(o.offset_to)))
            .collect();
        assert_eq!(
            rules,
            [
                (
                    true,
                    Some("FREQ=YEARLY;BYMONTH=10;BYDAY=1SU"),
                    "+1100".to_owned()
                ),
                (
                    false,
                    Some("FREQ=YEARLY;BYMONTH=4;BYDAY=1SU"),
                    "+1000".to_owned()
                ),
            ]
        );
        let tokyo = observances(&zone("Asia/Tokyo"), at("2023-06-07T09:00:00Z"));
        assert_eq!(tokyo.len(), 1);
        assert_eq!(
            (tokyo[0].daylight, tokyo[0].rrule.as_deref()),
            (false, None)
        );
        assert_eq!(utc_offset(tokyo[0].offset_to), "+0900");
    }

    #[test]
    fn offsets_with_seconds_and_negative() {
        assert_eq!(
            utc_offset(Offset::from_seconds(-5 * 3600).expect("o")),
            "-0500"
        );
        assert_eq!(
            utc_offset(Offset::from_seconds(5 * 3600 + 1800).expect("o")),
            "+0530"
        );
        assert_eq!(utc_offset(Offset::from_seconds(-75).expect("o")), "-000115");
    }
}
