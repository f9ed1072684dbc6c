//! The iCalendar feed, read back by an independent parser (Python's icalendar via
//! tests/tools/ics_events.py): instants, VTIMEZONE, folding, cancellation, SEQUENCE, determinism.

use std::collections::BTreeMap;

use convenor::{
    config::{Environment, parse},
    feed::{self, Selection},
    model::{Config, MeetingId},
    revision::{StoredRevision, next_revision},
};
use jiff::Timestamp;
use serde_json::Value;

use crate::support::{example_config_text, repo, run_tool};

/// Parses config text as if it were config/lednet.toml.
pub fn config_from(text: &str) -> Config {
    parse(
        &repo().join("config/lednet.toml"),
        text,
        &Environment::default(),
    )
    .unwrap_or_else(|e| panic!("config does not load: {e}"))
    .config
}

/// Parses a feed with the Python tool; asserts it has no wire problems and that every VTIMEZONE
/// agrees with the IANA zone of its name.
pub fn parse_ics(ics: &str) -> Value {
    let out = run_tool("ics_events.py", &[], ics.as_bytes());
    let v: Value = serde_json::from_slice(&out.stdout).expect("tool prints JSON");
    assert_eq!(v["problems"], serde_json::json!([]), "{ics}");
    for (tzid, tz) in v["timezones"].as_object().expect("timezones") {
        assert_eq!(tz["mismatches"], serde_json::json!([]), "VTIMEZONE {tzid}");
    }
    v
}

fn event<'a>(v: &'a Value, uid_prefix: &str) -> &'a Value {
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["uid"].as_str().is_some_and(|u| u.starts_with(uid_prefix)))
        .unwrap_or_else(|| panic!("no event {uid_prefix}"))
}

/// An RRULE's parts, sorted (the parser re-orders them).
fn rule_parts(rule: &Value) -> Vec<&str> {
    let mut parts: Vec<&str> = rule.as_str().expect("rrule").split(';').collect();
    parts.sort_unstable();
    parts
}

/// Every meeting of `config` revised at `at` from `revisions`, as a reconciliation would.
fn revised(
    config: &convenor::model::Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    at: Timestamp,
) -> BTreeMap<MeetingId, StoredRevision> {
    (config.meetings.iter())
        .map(|m| {
            (
                m.id.clone(),
                next_revision(revisions.get(&m.id), config, m, at).0,
            )
        })
        .collect()
}

fn no_revisions() -> BTreeMap<MeetingId, StoredRevision> {
    BTreeMap::new()
}

#[test]
fn every_shipped_feed_parses_with_the_right_instants() {
    let config = config_from(&example_config_text());
    let mut selections = vec![Selection::All];
    selections.extend(config.priorities.iter().map(Selection::Priority));
    for selection in selections {
        let ics = feed::render_calendar(&config, &no_revisions(), selection);
        let v = parse_ics(&ics);
        // No meeting has a focus list, so every priority's feed holds all five.
        assert_eq!(v["events"].as_array().expect("events").len(), 5);
        let cal = &v["calendar"];
        assert_eq!(cal["METHOD"], "PUBLISH");
        assert_eq!(cal["VERSION"], "2.0");
        assert_eq!(cal["X-WR-TIMEZONE"], "Europe/London");
        assert_eq!(cal["REFRESH-INTERVAL;VALUE"], "DURATION");
        assert_eq!(cal["X-PUBLISHED-TTL"], "PT4H");
        assert_eq!(cal["NAME"], cal["X-WR-CALNAME"]);
        assert!(!cal["NAME"].as_str().expect("name").contains(','));
        let feb = event(&v, "2023-02-24@");
        assert_eq!(feb["start_utc"], "2023-02-24T10:00:00Z");
        assert_eq!(feb["end_utc"], "2023-02-24T12:30:00Z");
        assert_eq!(feb["tzid"], "Europe/London");
        assert_eq!(feb["organizer"], "mailto:lednet-team@example.org");
        assert_eq!(feb["organizer_cn"], "LEDNet team");
        assert_eq!(feb["status"], "CONFIRMED");
        assert_eq!(
            (feb["sequence"].as_i64(), feb["dtstamp"].as_str()),
            (Some(0), Some("1970-01-01T00:00:00Z"))
        );
        let description = feb["description"].as_str().expect("description");
        assert!(
            description.contains("Finance and Investment: lead Lead to be confirmed"),
            "{description}"
        );
        assert!(
            description.contains("Contact: LEDNet team <lednet-team@example.org>"),
            "{description}"
        );
        assert_eq!(
            event(&v, "2023-06-07@")["start_utc"],
            "2023-06-07T09:00:00Z"
        );
        let london = &v["timezones"]["Europe/London"]["observances"];
        assert_eq!(
            rule_parts(&london[0]["rrule"]),
            ["BYDAY=-1SU", "BYMONTH=3", "FREQ=YEARLY"]
        );
        assert_eq!(
            rule_parts(&london[1]["rrule"]),
            ["BYDAY=-1SU", "BYMONTH=10", "FREQ=YEARLY"]
        );
        assert_eq!(
            (london[0]["kind"].as_str(), london[0]["dtstart"].as_str()),
            (Some("DAYLIGHT"), Some("19700329T010000"))
        );
        assert_eq!(
            (london[1]["kind"].as_str(), london[1]["dtstart"].as_str()),
            (Some("STANDARD"), Some("19701025T020000"))
        );
    }
}

#[test]
fn a_priority_feed_holds_only_meetings_with_that_priority_in_focus() {
    let text = example_config_text().replacen(
        "date = 2023-04-19\n",
        "date = 2023-04-19\nfocus = [\"future-transport\"]\n",
        1,
    );
    let config = config_from(&text);
    let by = |id: &str| {
        let p = config
            .priorities
            .iter()
            .find(|p| p.id.as_str() == id)
            .expect("priority");
        let v = parse_ics(&feed::render_calendar(
            &config,
            &no_revisions(),
            Selection::Priority(p),
        ));
        let mut uids: Vec<String> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["uid"].as_str().expect("uid").to_owned())
            .collect();
        uids.sort();
        uids
    };
    assert_eq!(by("future-transport").len(), 5);
    let finance = by("finance-investment");
    assert_eq!(finance.len(), 4);
    assert!(!finance.iter().any(|u| u.starts_with("2023-04-19@")));
}

#[test]
fn other_zones_with_and_without_dst() {
    // (zone, 24 Feb 10:00 local, 7 June 10:00 local, expected rule count)
    let cases = [
        (
            "America/New_York",
            "2023-02-24T15:00:00Z",
            "2023-06-07T14:00:00Z",
            2,
        ),
        (
            "Asia/Tokyo",
            "2023-02-24T01:00:00Z",
            "2023-06-07T01:00:00Z",
            1,
        ),
        (
            "Australia/Sydney",
            "2023-02-23T23:00:00Z",
            "2023-06-07T00:00:00Z",
            2,
        ),
    ];
    for (zone, feb, june, rules) in cases {
        let text = example_config_text().replace(
            "time_zone = \"Europe/London\"",
            &format!("time_zone = \"{zone}\""),
        );
        let config = config_from(&text);
        let v = parse_ics(&feed::render_calendar(
            &config,
            &no_revisions(),
            Selection::All,
        ));
        assert_eq!(event(&v, "2023-02-24@")["start_utc"], feb, "{zone}");
        assert_eq!(event(&v, "2023-06-07@")["start_utc"], june, "{zone}");
        assert_eq!(v["calendar"]["X-WR-TIMEZONE"], zone);
        let observances = v["timezones"][zone]["observances"]
            .as_array()
            .expect("observances");
        assert_eq!(observances.len(), rules, "{zone}");
        if rules == 1 {
            assert_eq!(observances[0]["kind"], "STANDARD");
            assert_eq!(observances[0]["offset_to"], "+0900");
        }
    }
}

#[test]
fn folding_multibyte_text_and_escapes_at_every_position() {
    // One meeting per prefix length 0..=80, so the multi-byte characters and the escapes in the
    // title and notes fall on every fold position.
    let payload = "Ré€union 😀 a\\b; c,d";
    let mut text = example_config_text();
    let mut expected = BTreeMap::new();
    let start = jiff::civil::date(2024, 1, 1);
    for n in 0..=80i32 {
        let date = start.checked_add(jiff::Span::new().days(n)).expect("date");
        let prefix = "x".repeat(n as usize);
        let title = format!("{prefix}{payload}");
        let notes = format!("{prefix}{payload}\nline two: é\\n");
        text.push_str(&format!(
            "\n[[meeting]]\nid = \"{date}\"\ndate = {date}\nstart = \"10:00\"\nend = \"11:00\"\ntitle = {}\nnotes = {}\n",
            toml_string(&title),
            toml_string(&notes)
        ));
        expected.insert(format!("{date}@lednet.convenor"), (title, notes));
    }
    let config = config_from(&text);
    let ics = feed::render_calendar(&config, &no_revisions(), Selection::All);
    // The raw checks, independent of the parser too.
    let lines: Vec<&str> = ics.split("\r\n").collect();
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.len() <= 75,
            "line {i} has {} octets: {line:?}",
            line.len()
        );
        if lines.get(i + 1).is_some_and(|next| next.starts_with(' ')) {
            let run = line.len() - line.trim_end_matches('\\').len();
            assert_eq!(
                run % 2,
                0,
                "fold after an escaping backslash at line {i}: {line:?}"
            );
        }
    }
    assert!(
        lines.iter().filter(|l| l.starts_with(' ')).count() > 100,
        "folds happened"
    );
    let v = parse_ics(&ics);
    for (uid, (title, notes)) in &expected {
        let e = &v["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["uid"] == uid.as_str())
            .expect("event");
        assert_eq!(e["summary"], title.as_str());
        let description = e["description"].as_str().expect("description");
        assert!(
            description.contains(notes.as_str()),
            "{uid}: {description:?}"
        );
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("json string is a TOML basic string here")
}

#[test]
fn cancellation_marks_status_and_summary() {
    let text = example_config_text().replacen(
        "date = 2023-06-07\n",
        "date = 2023-06-07\nstatus = \"cancelled\"\n",
        1,
    );
    let config = config_from(&text);
    let v = parse_ics(&feed::render_calendar(
        &config,
        &no_revisions(),
        Selection::All,
    ));
    let june = event(&v, "2023-06-07@");
    assert_eq!(june["status"], "CANCELLED");
    assert_eq!(june["summary"], "Cancelled: LEDNet meeting");
    assert_eq!(event(&v, "2023-02-24@")["status"], "CONFIRMED");
}

#[test]
fn a_time_change_raises_sequence_and_moves_the_stamps() {
    let t0: Timestamp = "2023-01-05T08:00:00Z".parse().expect("t0");
    let t1: Timestamp = "2023-02-01T12:30:00Z".parse().expect("t1");
    let before = config_from(&example_config_text());
    let revisions = revised(&before, &no_revisions(), t0);
    let after = config_from(&example_config_text().replacen(
        "date = 2023-02-24\nstart = \"10:00\"",
        "date = 2023-02-24\nstart = \"10:30\"",
        1,
    ));
    let moved = revised(&after, &revisions, t1);
    let v0 = parse_ics(&feed::render_calendar(&before, &revisions, Selection::All));
    let v1 = parse_ics(&feed::render_calendar(&after, &moved, Selection::All));
    let (e0, e1) = (event(&v0, "2023-02-24@"), event(&v1, "2023-02-24@"));
    assert_eq!(
        (e0["sequence"].as_i64(), e1["sequence"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(e0["uid"], e1["uid"]);
    assert_eq!(e1["start_utc"], "2023-02-24T10:30:00Z");
    assert_eq!(
        (e0["dtstamp"].as_str(), e1["dtstamp"].as_str()),
        (Some("2023-01-05T08:00:00Z"), Some("2023-02-01T12:30:00Z"))
    );
    assert_eq!(e1["last_modified"], "2023-02-01T12:30:00Z");
    // The others did not change.
    assert_eq!(event(&v1, "2023-04-19@")["sequence"], 0);
    assert_eq!(event(&v1, "2023-04-19@")["dtstamp"], "2023-01-05T08:00:00Z");
    // The emailed invite carries the same UID and SEQUENCE as the feed.
    let m = after
        .meetings
        .iter()
        .find(|m| m.id.as_str() == "2023-02-24")
        .expect("meeting");
    let invite = parse_ics(&feed::render_meeting_invite(&after, m, moved.get(&m.id)));
    assert_eq!(invite["calendar"]["METHOD"], "PUBLISH");
    assert_eq!(invite["events"].as_array().expect("events").len(), 1);
    assert_eq!(invite["events"][0]["uid"], e1["uid"]);
    assert_eq!(invite["events"][0]["sequence"], 1);
    assert_eq!(invite["events"][0]["start_utc"], e1["start_utc"]);
}

/// A change to what every event shows beyond time, place and status (the network's name, a
/// lead's organisation, the page URL) moves each event's DTSTAMP and LAST-MODIFIED, read back
/// by Python's icalendar, without raising SEQUENCE: the event's bytes changed, so RFC 5545
/// 3.8.7.3 wants LAST-MODIFIED to move.
#[test]
fn a_new_network_name_organisation_or_base_url_moves_last_modified() {
    let t0: Timestamp = "2023-01-05T08:00:00Z".parse().expect("t0");
    let t1: Timestamp = "2023-02-01T12:30:00Z".parse().expect("t1");
    let before = config_from(&example_config_text());
    let revisions = revised(&before, &no_revisions(), t0);
    let old_feed = feed::render_calendar(&before, &revisions, Selection::All);
    let cases = [
        (
            "name = \"London Environment Directors' Network\"",
            "name = \"London Environment Network\"",
        ),
        (
            "organisation = \"LEDNet Director, to be named\"",
            "organisation = \"London Borough of Camden\"",
        ),
        (
            "base_url = \"http://127.0.0.1:8080\"",
            "base_url = \"https://calendar.example.org\"",
        ),
    ];
    for (from, to) in cases {
        let after = config_from(&example_config_text().replacen(from, to, 1));
        // The events' bytes change even at the stored revisions.
        assert_ne!(
            feed::render_calendar(&after, &revisions, Selection::All),
            old_feed,
            "{to}"
        );
        let next = revised(&after, &revisions, t1);
        let v = parse_ics(&feed::render_calendar(&after, &next, Selection::All));
        let events = v["events"].as_array().expect("events");
        assert_eq!(events.len(), 5, "{to}");
        for e in events {
            assert_eq!(e["last_modified"], "2023-02-01T12:30:00Z", "{to}: {e}");
            assert_eq!(e["dtstamp"], "2023-02-01T12:30:00Z", "{to}: {e}");
            assert_eq!(e["sequence"], 0, "{to}: {e}");
        }
    }
}

/// Moving a meeting to another date is an edit of its `date` under the same `id`: the ledger
/// keeps it as the same meeting, so the feed keeps its UID and raises its SEQUENCE, its pending
/// mail moves with it under the same Message-ID, and a change notice is queued; no event appears
/// under the new date's name.
#[test]
fn a_meeting_moved_to_another_date_keeps_its_uid_and_raises_sequence() {
    use convenor::{daemon::replan, ledger::SqliteStore, ledger::Store as _};
    let t0: Timestamp = "2023-01-05T08:00:00Z".parse().expect("t0");
    let t1: Timestamp = "2023-01-10T12:00:00Z".parse().expect("t1");
    let before = config_from(&example_config_text());
    // 2023-02-27 is a Monday; the meeting keeps `id = "2023-02-24"`.
    let after = config_from(&example_config_text().replacen(
        "id = \"2023-02-24\"\ndate = 2023-02-24\n",
        "id = \"2023-02-24\"\ndate = 2023-02-27\n",
        1,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &before, t0).expect("plan");
    let call = |store: &SqliteStore| {
        store
            .rows()
            .expect("rows")
            .into_iter()
            .find(|r| r.key.meeting == "2023-02-24" && r.key.email == "agenda-call")
            .expect("the agenda call of 2023-02-24")
    };
    let call0 = call(&store);
    let v0 = parse_ics(&feed::render_calendar(
        &before,
        &store.revisions().expect("revisions"),
        Selection::All,
    ));
    replan(&mut store, &after, t1).expect("replan");
    let revisions = store.revisions().expect("revisions");
    let v1 = parse_ics(&feed::render_calendar(&after, &revisions, Selection::All));
    let (e0, e1) = (event(&v0, "2023-02-24@"), event(&v1, "2023-02-24@"));
    assert_eq!(e0["uid"], e1["uid"]);
    assert_eq!(
        (e0["sequence"].as_i64(), e1["sequence"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(e1["start_utc"], "2023-02-27T10:00:00Z");
    assert_eq!(e1["last_modified"], "2023-01-10T12:00:00Z");
    let uids: Vec<&str> = v1["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids.len(), 5, "{uids:?}");
    assert!(
        !uids.iter().any(|u| u.starts_with("2023-02-27@")),
        "{uids:?}"
    );
    assert_eq!(revisions.len(), 5);
    // The pending agenda call moved with the meeting (28 days before, 09:00 GMT) and kept its
    // Message-ID; one change notice is queued for SEQUENCE 1.
    let call1 = call(&store);
    assert_eq!(call1.state, convenor::ledger::MailState::Pending);
    assert_eq!(call1.due.to_string(), "2023-01-30T09:00:00Z");
    assert_eq!(call1.message_id, call0.message_id);
    let rows = store.rows().expect("rows");
    assert!(rows.iter().all(|r| r.key.meeting != "2023-02-27"));
    assert_eq!(
        rows.iter()
            .filter(|r| r.key.meeting == "2023-02-24" && r.key.email == "change-notice")
            .map(|r| r.key.occurrence)
            .collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn the_same_data_gives_the_same_bytes_as_the_golden_file() {
    let config = config_from(&example_config_text());
    let a = feed::render_calendar(&config, &no_revisions(), Selection::All);
    let again = config_from(&example_config_text());
    let b = feed::render_calendar(&again, &BTreeMap::new(), Selection::All);
    assert_eq!(a, b);
    assert!(a.ends_with("END:VCALENDAR\r\n"));
    assert!(!a.replace("\r\n", "").contains('\n'), "bare LF");
    let golden = repo().join("tests/golden/lednet-calendar.ics");
    if std::env::var_os("CONVENOR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &a).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/lednet-calendar.ics (set CONVENOR_UPDATE_GOLDEN=1 to write it)");
    assert_eq!(
        a, want,
        "the feed's bytes changed; review and set CONVENOR_UPDATE_GOLDEN=1"
    );
}

#[test]
fn the_ics_command_prints_the_feed_and_names_an_unknown_priority() {
    let out = crate::support::convenor(&["ics", "--config", "config/lednet.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = std::fs::read(repo().join("tests/golden/lednet-calendar.ics")).expect("golden");
    assert_eq!(out.stdout, golden);
    let one = crate::support::convenor(&[
        "ics",
        "--config",
        "config/lednet.toml",
        "--priority",
        "future-places",
    ]);
    assert!(one.status.success());
    let v = parse_ics(&String::from_utf8(one.stdout).expect("utf-8"));
    assert_eq!(v["calendar"]["NAME"], "LEDNet: Future Places");
    let bad = crate::support::convenor(&[
        "ics",
        "--config",
        "config/lednet.toml",
        "--priority",
        "nope",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no priority `nope`"));
}
