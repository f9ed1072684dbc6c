//! Table tests of the pure core ([`super::reconcile`], [`super::decide`]) over a real SQLite
//! ledger in a temporary directory: each step reconciles or decides at a given `now` and applies
//! the result the way the loop does. Then the loop itself ([`super::run`]) at a fixed clock with
//! a stand-in sender: what it starts after the shutdown signal, what it reports before each
//! send, and an outcome the ledger refuses once.

use jiff::{SignedDuration, Timestamp};

use super::{Action, SendFailure, after_failure, backoff, decide, next_wake, reconcile};
use crate::{
    config::{Environment, parse},
    daemon::replan,
    ledger::{LedgerRow, MailKey, MailState, Outcome, ReleaseFilter, SqliteStore, Store},
    model::{Config, SchedulerSettings},
};

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

const MEETINGS: &str = "
[[meeting]]
id = \"m1\"
date = 2030-06-07
start = \"10:00\"
end = \"12:00\"
title = \"Meeting one\"
";

/// A small config: one priority, the meetings given, two timed mails (a week and a day before,
/// 09:00 London, grace 1d and 2h) and change and cancellation notices. June 2030 is BST, so
/// m1 starts at 09:00Z, its week mail is due 2030-05-31T08:00Z and its day mail
/// 2030-06-06T08:00Z.
fn config(meetings: &str) -> Config {
    parse_config(&config_text(meetings))
}

/// The text of [`config`]'s config.
fn config_text(meetings: &str) -> String {
    format!(
        "
[network]
short_name = \"LEDNet\"
name = \"Test network\"
time_zone = \"Europe/London\"
base_url = \"http://127.0.0.1:8080\"
contact = \"team@example.org\"
[mail]
from = \"team@example.org\"
list = [\"list@example.org\"]
templates_dir = \"../templates\"
[scheduler]
max_catch_up = 3
retry_base = \"1m\"
[[priority]]
id = \"p1\"
name = \"P1\"
summary = \"s\"
[priority.lead]
name = \"Lead\"
email = \"lead@example.org\"
{meetings}
[[email]]
id = \"week\"
template = \"reminder\"
days_before = 7
at = \"09:00\"
audience = \"list\"
grace = \"1d\"
[[email]]
id = \"day\"
template = \"reminder\"
days_before = 1
at = \"09:00\"
audience = \"list\"
grace = \"2h\"
[[email]]
id = \"change\"
template = \"change-notice\"
on = \"change\"
audience = \"list\"
[[email]]
id = \"cancel\"
template = \"cancellation-notice\"
on = \"cancellation\"
audience = \"list\"
"
    )
}

/// Parses a test config's text.
fn parse_config(text: &str) -> Config {
    parse(
        std::path::Path::new("config/test.toml"),
        text,
        &Environment::default(),
    )
    .expect("valid test config")
    .config
}

fn key(meeting: &str, email: &str, occurrence: u32) -> MailKey {
    MailKey {
        meeting: meeting.into(),
        email: email.into(),
        audience: "list".into(),
        occurrence,
    }
}

/// A real ledger in a temp dir, driven step by step.
struct Sim {
    _dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Sim {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_in(dir.path()).expect("open ledger");
        Self { _dir: dir, store }
    }

    fn load(&mut self, config: &Config, now: Timestamp) {
        replan(&mut self.store, config, now).expect("replan");
    }

    /// Decides at `now` and applies: sends go through `send` (a stand-in for the server's answer).
    fn step(
        &mut self,
        settings: &SchedulerSettings,
        now: Timestamp,
        send: impl Fn(&LedgerRow) -> Result<String, SendFailure>,
    ) -> Vec<Action> {
        let rows = self.store.rows().expect("rows");
        let actions = decide(&rows, now, settings);
        for a in &actions {
            match a {
                Action::Send(k) => {
                    let row = self.store.claim(k, now).expect("claim").expect("claimed");
                    let outcome = match send(&row) {
                        Ok(reply) => Outcome::Sent { at: now, reply },
                        Err(f) => after_failure(&row, &f, now, settings, 0.5),
                    };
                    assert!(
                        self.store
                            .settle(k, MailState::Sending, &outcome)
                            .expect("settle")
                            .is_some()
                    );
                }
                other => {
                    let outcome = other.outcome().expect("outcome");
                    let row = rows.iter().find(|r| &r.key == other.key()).expect("row");
                    assert!(self.store.settle_decided(row, &outcome).expect("settle"));
                }
            }
        }
        actions
    }

    fn row(&self, k: &MailKey) -> LedgerRow {
        self.store
            .rows()
            .expect("rows")
            .into_iter()
            .find(|r| &r.key == k)
            .unwrap_or_else(|| panic!("no row {k}"))
    }

    fn states(&self) -> Vec<(String, MailState)> {
        self.store
            .rows()
            .expect("rows")
            .into_iter()
            .map(|r| (r.key.to_string(), r.state))
            .collect()
    }
}

fn ok(_: &LedgerRow) -> Result<String, SendFailure> {
    Ok("250 2.0.0 queued".into())
}

/// The kind of each action, for compact tables.
fn kinds(actions: &[Action]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .map(|a| {
            let kind = match a {
                Action::Send(_) => "send",
                Action::Skip { .. } => "skip",
                Action::Hold { .. } => "hold",
                Action::Fail { .. } => "fail",
            };
            (a.key().to_string(), kind)
        })
        .collect()
}

#[test]
fn first_start_on_past_meetings_sends_nothing() {
    let text = std::fs::read_to_string("config/lednet.toml").expect("example config");
    let c = parse(
        std::path::Path::new("config/lednet.toml"),
        &text,
        &Environment::default(),
    )
    .expect("valid")
    .config;
    let mut sim = Sim::new();
    let now = t("2026-01-10T12:00:00Z");
    sim.load(&c, now);
    let rows = sim.store.rows().expect("rows");
    assert_eq!(rows.len(), crate::schedule::timeline(&c).len());
    assert!(
        rows.len() > c.scheduler.max_catch_up as usize,
        "more than the guard's limit"
    );
    let actions = sim.step(&c.scheduler, now, ok);
    assert_eq!(actions.len(), rows.len());
    assert!(
        actions.iter().all(|a| matches!(a, Action::Skip { .. })),
        "{actions:?}"
    );
    // Idempotent: a restart plans nothing new and decides nothing more.
    let again = reconcile(
        &c,
        &sim.store.rows().expect("rows"),
        &sim.store.revisions().expect("revs"),
        &Default::default(),
        now,
    );
    assert!(again.replan.is_empty(), "{again:?}");
    assert!(sim.step(&c.scheduler, now, ok).is_empty());
}

#[test]
fn downtime_across_a_due_instant_inside_and_outside_the_grace() {
    let c = config(MEETINGS);
    let planned = t("2030-05-01T00:00:00Z");
    // (now after the downtime, expected action for the day mail, words in the reason)
    let table = [
        ("2030-06-06T08:00:00Z", "send", ""),
        ("2030-06-06T09:59:00Z", "send", ""),
        (
            "2030-06-06T10:00:01Z",
            "skip",
            "grace ran out at 2030-06-06T10:00:00Z",
        ),
        ("2030-06-07T09:00:00Z", "skip", "meeting started"),
        ("2031-01-01T00:00:00Z", "skip", "meeting started"),
    ];
    for (now, want, why) in table {
        let mut sim = Sim::new();
        sim.load(&c, planned);
        // The week mail went out on time before the downtime.
        assert_eq!(
            kinds(&sim.step(&c.scheduler, t("2030-05-31T08:00:00Z"), ok)),
            [("m1/week/list".to_owned(), "send")]
        );
        let actions = sim.step(&c.scheduler, t(now), ok);
        assert_eq!(
            kinds(&actions),
            [("m1/day/list".to_owned(), want)],
            "at {now}"
        );
        if let Action::Skip { reason, .. } = &actions[0] {
            assert!(reason.contains(why), "{reason}");
            assert_eq!(
                sim.row(&key("m1", "day", 0)).last_error.as_deref(),
                Some(reason.as_str())
            );
        }
    }
}

#[test]
fn clock_forward_by_days_sends_what_is_useful_and_by_years_holds_everything() {
    let three = format!(
        "{MEETINGS}{}{}",
        MEETINGS.replace("m1", "m2").replace("06-07", "06-14"),
        MEETINGS.replace("m1", "m3").replace("06-07", "06-21")
    );
    let c = config(&three);
    let planned = t("2030-05-01T00:00:00Z");

    // Days: by 2030-06-07T10:00Z, three mails fell due (not more than max_catch_up = 3).
    let mut sim = Sim::new();
    sim.load(&c, planned);
    let actions = sim.step(&c.scheduler, t("2030-06-07T10:00:00Z"), ok);
    assert_eq!(
        kinds(&actions),
        [
            ("m1/week/list".to_owned(), "skip"),
            ("m1/day/list".to_owned(), "skip"),
            ("m2/week/list".to_owned(), "send"),
        ]
    );

    // Years: all six fell due at once: every one is held, none sent or skipped.
    let mut sim = Sim::new();
    sim.load(&c, planned);
    let actions = sim.step(&c.scheduler, t("2036-03-01T00:00:00Z"), ok);
    assert_eq!(actions.len(), 6);
    assert!(
        actions.iter().all(
            |a| matches!(a, Action::Hold { reason, .. } if reason.contains("max_catch_up = 3"))
        ),
        "{actions:?}"
    );
    assert!(sim.states().iter().all(|(_, s)| *s == MailState::Held));
    // Held rows do not wake the loop and stay held on the next pass.
    assert_eq!(next_wake(&sim.store.rows().expect("rows")), None);
    assert!(
        sim.step(&c.scheduler, t("2036-03-01T00:01:00Z"), ok)
            .is_empty()
    );
    // The operator releases one meeting: its mails are judged normally (too late: skipped),
    // the others stay held.
    let n = sim
        .store
        .release(&ReleaseFilter {
            meeting: Some("m1".into()),
            email: None,
        })
        .expect("release");
    assert_eq!(n, 2);
    let actions = sim.step(&c.scheduler, t("2036-03-01T00:02:00Z"), ok);
    assert_eq!(
        kinds(&actions),
        [
            ("m1/week/list".to_owned(), "skip"),
            ("m1/day/list".to_owned(), "skip")
        ]
    );
    // If the clock was wrong and is put right, released-and-still-useful mail goes out.
    let n = sim
        .store
        .release(&ReleaseFilter::default())
        .expect("release");
    assert_eq!(n, 4);
    let actions = sim.step(&c.scheduler, t("2030-06-13T09:00:00Z"), ok);
    assert_eq!(
        kinds(&actions),
        [
            ("m2/week/list".to_owned(), "skip"),
            ("m2/day/list".to_owned(), "send")
        ],
        "m2/week is past its grace, m2/day is inside it, m3's are not due yet"
    );
}

/// Mails that fall due at the same instant and are seen on time go out however many they are:
/// only mails found overdue by more than `ON_TIME` count for the clock-jump guard. Four
/// meetings on one day (max_catch_up = 3): their week mails all fall due at 08:00Z.
#[test]
fn many_mails_due_together_and_seen_on_time_are_sent_not_held() {
    let four = format!(
        "{MEETINGS}{}{}{}",
        MEETINGS.replace("m1", "m2"),
        MEETINGS.replace("m1", "m3"),
        MEETINGS.replace("m1", "m4")
    );
    let c = config(&four);
    let due = t(WEEK_DUE);
    // (seen at, what every one of the four week mails gets)
    let table = [
        (due, "send"),
        (due + super::decide::ON_TIME, "send"),
        (
            due + super::decide::ON_TIME + SignedDuration::from_secs(1),
            "hold",
        ),
        (due + SignedDuration::from_hours(3), "hold"),
    ];
    for (now, expected) in table {
        let mut sim = Sim::new();
        sim.load(&c, t("2030-05-01T00:00:00Z"));
        let actions = sim.step(&c.scheduler, now, ok);
        let got: Vec<&str> = kinds(&actions).into_iter().map(|(_, k)| k).collect();
        assert_eq!(got, [expected; 4], "at {now}: {actions:?}");
    }
}

/// The claim itself refuses what the decision would not send at the claim's instant: a first
/// attempt after its deadline, any attempt once the meeting has started. A retry may go after
/// the deadline, until the start. m1's week mail: due 2030-05-31T08:00Z, deadline (1d grace)
/// 2030-06-01T08:00Z, meeting at 2030-06-07T09:00Z.
#[test]
fn a_claim_refuses_a_first_attempt_past_its_deadline_and_any_attempt_once_the_meeting_started() {
    let c = config(MEETINGS);
    let week = key("m1", "week", 0);
    let first_attempt = [
        ("2030-06-01T08:00:00Z", true),
        ("2030-06-01T08:00:01Z", false),
        ("2030-06-07T09:00:00Z", false),
    ];
    for (at, claimed) in first_attempt {
        let mut sim = Sim::new();
        sim.load(&c, t("2030-05-01T00:00:00Z"));
        let row = sim.store.claim(&week, t(at)).expect("claim");
        assert_eq!(row.is_some(), claimed, "first attempt at {at}");
        let state = sim.row(&week).state;
        let expected = if claimed {
            MailState::Sending
        } else {
            MailState::Pending
        };
        assert_eq!(state, expected, "first attempt at {at}");
    }
    let retry = [
        ("2030-06-03T00:00:00Z", true),
        ("2030-06-07T08:59:59Z", true),
        ("2030-06-07T09:00:00Z", false),
    ];
    for (at, claimed) in retry {
        let mut sim = Sim::new();
        sim.load(&c, t("2030-05-01T00:00:00Z"));
        sim.store
            .claim(&week, t(WEEK_DUE))
            .expect("claim")
            .expect("first attempt");
        let failed = Outcome::Retry {
            at: t("2030-06-02T00:00:00Z"),
            error: "451 try later".into(),
            done: Vec::new(),
        };
        assert!(
            sim.store
                .settle(&week, MailState::Sending, &failed)
                .expect("settle")
                .is_some()
        );
        let row = sim.store.claim(&week, t(at)).expect("claim");
        assert_eq!(row.is_some(), claimed, "retry at {at}");
    }
}

#[test]
fn clock_backwards_never_resends_or_lowers_the_sequence() {
    let c = config(MEETINGS);
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    assert_eq!(
        sim.step(&c.scheduler, t("2030-05-31T08:00:05Z"), ok).len(),
        1
    );
    let sent = sim.row(&key("m1", "week", 0));
    assert_eq!(sent.state, MailState::Sent);
    let revs = sim.store.revisions().expect("revisions");
    // The clock steps back two days; a restart reconciles and decides at that instant.
    let back = t("2030-05-29T08:00:00Z");
    sim.load(&c, back);
    assert!(sim.step(&c.scheduler, back, ok).is_empty());
    assert_eq!(sim.row(&key("m1", "week", 0)), sent);
    assert_eq!(sim.store.revisions().expect("revisions"), revs);
    assert_eq!(
        next_wake(&sim.store.rows().expect("rows")),
        Some(t("2030-06-06T08:00:00Z"))
    );
}

#[test]
fn a_moved_meeting_moves_pending_mail_keeps_sent_mail_and_queues_one_notice_per_change() {
    let moved = MEETINGS.replace("2030-06-07", "2030-06-10");
    let moved_again = MEETINGS.replace("2030-06-07", "2030-06-12");

    // Moved before anything was sent.
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    let week0 = sim.row(&key("m1", "week", 0));
    sim.load(&config(&moved), t("2030-05-20T00:00:00Z"));
    let week = sim.row(&key("m1", "week", 0));
    assert_eq!(
        (week.state, week.due),
        (MailState::Pending, t("2030-06-03T08:00:00Z"))
    );
    assert_eq!(
        week.message_id, week0.message_id,
        "the mail keeps its Message-ID"
    );
    assert_eq!(sim.row(&key("m1", "day", 0)).due, t("2030-06-09T08:00:00Z"));
    assert_eq!(sim.row(&key("m1", "change", 1)).state, MailState::Pending);
    assert_eq!(
        sim.store.revisions().expect("revs")[&crate::model::MeetingId::parse("m1").expect("id")]
            .sequence,
        1
    );
    // A restart with the same config queues nothing more.
    let rows = sim.store.rows().expect("rows");
    sim.load(&config(&moved), t("2030-05-20T00:05:00Z"));
    assert_eq!(sim.store.rows().expect("rows"), rows);
    // The notice goes out at once.
    assert_eq!(
        kinds(&sim.step(&config(&moved).scheduler, t("2030-05-20T00:06:00Z"), ok)),
        [("m1/change/list#1".to_owned(), "send")]
    );
    // A second change queues a second notice and raises SEQUENCE again.
    sim.load(&config(&moved_again), t("2030-05-21T00:00:00Z"));
    assert_eq!(sim.row(&key("m1", "change", 2)).state, MailState::Pending);
    assert_eq!(sim.row(&key("m1", "change", 1)).state, MailState::Sent);

    // Moved after the week mail was sent: it stays sent; the day mail moves.
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.step(&config(MEETINGS).scheduler, t("2030-05-31T08:00:00Z"), ok);
    sim.load(&config(&moved), t("2030-06-02T00:00:00Z"));
    let week = sim.row(&key("m1", "week", 0));
    assert_eq!(
        (week.state, week.due),
        (MailState::Sent, t("2030-05-31T08:00:00Z"))
    );
    assert_eq!(sim.row(&key("m1", "day", 0)).due, t("2030-06-09T08:00:00Z"));
    assert_eq!(sim.row(&key("m1", "change", 1)).state, MailState::Pending);
}

#[test]
fn a_cancellation_skips_pending_mail_and_queues_one_cancellation_notice() {
    let cancelled = MEETINGS.replace(
        "title = \"Meeting one\"",
        "title = \"Meeting one\"\nstatus = \"cancelled\"",
    );
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.step(&config(MEETINGS).scheduler, t("2030-05-31T08:00:00Z"), ok);
    sim.load(&config(&cancelled), t("2030-06-02T00:00:00Z"));
    assert_eq!(
        sim.states(),
        [
            ("m1/week/list".to_owned(), MailState::Sent),
            ("m1/cancel/list#1".to_owned(), MailState::Pending),
            ("m1/day/list".to_owned(), MailState::Skipped),
        ]
    );
    assert_eq!(
        sim.row(&key("m1", "day", 0)).last_error.as_deref(),
        Some("withdrawn: meeting cancelled")
    );
    // Restart: nothing new. Then the notice goes out, once.
    sim.load(&config(&cancelled), t("2030-06-02T00:01:00Z"));
    assert_eq!(sim.states().len(), 3);
    assert_eq!(
        kinds(&sim.step(&config(&cancelled).scheduler, t("2030-06-02T00:02:00Z"), ok)),
        [("m1/cancel/list#1".to_owned(), "send")]
    );
    assert!(
        sim.step(&config(&cancelled).scheduler, t("2030-06-06T09:00:00Z"), ok)
            .is_empty()
    );
    // Reinstated: the withdrawn day mail is wanted again; a change notice is queued.
    sim.load(&config(MEETINGS), t("2030-06-03T00:00:00Z"));
    assert_eq!(sim.row(&key("m1", "day", 0)).state, MailState::Pending);
    assert_eq!(sim.row(&key("m1", "change", 2)).state, MailState::Pending);
}

/// A reload that moves mails into the past is not a clock jump: a moved row counts as planned
/// when it moved, so it is sent or skipped by its grace; a real clock jump is still held.
mod moved_into_the_past {
    use super::*;

    /// Meetings `m1`.. on the given dates, each like [`MEETINGS`]'s `m1`.
    fn meetings(dates: &[&str]) -> String {
        dates
            .iter()
            .enumerate()
            .map(|(i, date)| {
                MEETINGS
                    .replace("m1", &format!("m{}", i + 1))
                    .replace("2030-06-07", date)
            })
            .collect()
    }

    #[test]
    fn a_schedule_change_moving_many_mails_into_the_past_sends_or_skips_them_not_holds() {
        // Five meetings 10-14 June 2030 (09:00Z), and four in July that stay pending.
        let dates = [
            "2030-06-10",
            "2030-06-11",
            "2030-06-12",
            "2030-06-13",
            "2030-06-14",
            "2030-07-01",
            "2030-07-02",
            "2030-07-03",
            "2030-07-04",
        ];
        let text = config_text(&meetings(&dates));
        let before = parse_config(&text);
        // The operator changes the day mail from 1 day before to 5.
        let after = parse_config(&text.replace("days_before = 1\n", "days_before = 5\n"));
        assert_eq!(after.scheduler.max_catch_up, 3);

        let mut sim = Sim::new();
        sim.load(&before, t("2030-05-01T00:00:00Z"));
        // Each June week mail goes out on time (3-7 June, 08:00Z).
        for day in 3..=7 {
            let now = t(&format!("2030-06-0{day}T08:00:00Z"));
            assert_eq!(
                kinds(&sim.step(&before.scheduler, now, ok)),
                [(format!("m{}/week/list", day - 2), "send")]
            );
        }
        // Reload at 09:00Z on 9 June: the five June day mails move to 5-9 June 08:00Z, all in
        // the past. m5's (due an hour ago, grace 2h) is still useful; the others are not.
        let reload = t("2030-06-09T09:00:00Z");
        sim.load(&after, reload);
        let moved = sim.row(&key("m1", "day", 0));
        assert_eq!(
            (moved.due, moved.created),
            (t("2030-06-05T08:00:00Z"), reload),
            "a moved row is planned again at the reload"
        );
        let actions = sim.step(&after.scheduler, reload, ok);
        assert_eq!(
            kinds(&actions),
            [
                ("m1/day/list".to_owned(), "skip"),
                ("m2/day/list".to_owned(), "skip"),
                ("m3/day/list".to_owned(), "skip"),
                ("m4/day/list".to_owned(), "skip"),
                ("m5/day/list".to_owned(), "send"),
            ],
            "moved rows are judged by their grace, not held as a clock jump: {actions:?}"
        );
        assert!(
            sim.states().iter().all(|(_, s)| *s != MailState::Held),
            "{:?}",
            sim.states()
        );

        // A real clock jump afterwards (to 2036): the eight July mails fell due at once and
        // are held.
        let actions = sim.step(&after.scheduler, t("2036-03-01T00:00:00Z"), ok);
        assert_eq!(actions.len(), 8, "{actions:?}");
        assert!(
            actions.iter().all(|a| matches!(a, Action::Hold { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn rows_moved_into_the_future_still_count_when_a_clock_jump_passes_them() {
        // Rows moved into the future count when they fall due, like rows inserted then.
        let dates = ["2030-07-01", "2030-07-02", "2030-07-03", "2030-07-04"];
        let text = config_text(&meetings(&dates));
        let before = parse_config(&text);
        let after = parse_config(&text.replace("days_before = 1\n", "days_before = 2\n"));
        let mut sim = Sim::new();
        sim.load(&before, t("2030-05-01T00:00:00Z"));
        sim.load(&after, t("2030-06-01T00:00:00Z"));
        assert_eq!(
            sim.row(&key("m1", "day", 0)).created,
            t("2030-06-01T00:00:00Z")
        );
        let actions = sim.step(&after.scheduler, t("2036-03-01T00:00:00Z"), ok);
        assert_eq!(actions.len(), 8, "{actions:?}");
        assert!(
            actions.iter().all(|a| matches!(a, Action::Hold { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn held_rows_moved_while_the_clock_is_still_wrong_are_held_again_not_skipped() {
        let dates = ["2030-07-01", "2030-07-02", "2030-07-03", "2030-07-04"];
        let text = config_text(&meetings(&dates));
        let before = parse_config(&text);
        let after = parse_config(&text.replace("days_before = 1\n", "days_before = 2\n"));
        let mut sim = Sim::new();
        sim.load(&before, t("2030-05-01T00:00:00Z"));
        // The clock jumps to 2036: the eight July mails are held.
        let jumped = t("2036-03-01T00:00:00Z");
        let actions = sim.step(&before.scheduler, jumped, ok);
        assert_eq!(actions.len(), 8, "{actions:?}");
        // The operator edits a rule and reloads before fixing the clock: the four day mails
        // move, and are still mails that fell due at once after planning.
        sim.load(&after, jumped);
        assert_eq!(
            sim.row(&key("m1", "day", 0)).created,
            t("2030-05-01T00:00:00Z"),
            "a held row keeps when it was planned"
        );
        let actions = sim.step(&after.scheduler, jumped, ok);
        assert_eq!(actions.len(), 4, "{actions:?}");
        assert!(
            actions.iter().all(|a| matches!(a, Action::Hold { .. })),
            "held again, not skipped: {actions:?}"
        );
    }
}

#[test]
fn transient_failures_retry_with_backoff_until_the_meeting_then_fail_and_permanent_fail_at_once() {
    let c = config(MEETINGS);
    let settings = &c.scheduler;
    let down = |_: &LedgerRow| {
        Err(SendFailure {
            transient: true,
            message: "Connection refused".into(),
            done: Vec::new(),
        })
    };
    let rejected = |_: &LedgerRow| {
        Err(SendFailure {
            transient: false,
            message: "550 5.1.1 no such user".into(),
            done: Vec::new(),
        })
    };
    let k = key("m1", "day", 0);

    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    let mut now = t("2030-06-06T08:00:00Z");
    sim.step(settings, t("2030-05-31T08:00:00Z"), ok);
    // Jitter 0.5: waits of 45s, 90s, 180s: base 1m doubling, times 0.75.
    for (attempt, wait) in [(1, 45), (2, 90), (3, 180)] {
        assert_eq!(
            kinds(&sim.step(settings, now, down)),
            [(k.to_string(), "send")]
        );
        let row = sim.row(&k);
        assert_eq!((row.state, row.attempts), (MailState::Pending, attempt));
        assert_eq!(
            row.next_attempt,
            Some(now + SignedDuration::from_secs(wait))
        );
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Connection refused"))
        );
        // Not before the next attempt.
        assert!(
            sim.step(settings, now + SignedDuration::from_secs(wait - 1), down)
                .is_empty()
        );
        now += SignedDuration::from_secs(wait);
    }
    // Retries are not bound by the grace (2h): only by the meeting start.
    let row = sim.row(&k);
    assert_eq!(
        decide(
            &[LedgerRow {
                next_attempt: None,
                ..row.clone()
            }],
            t("2030-06-07T08:59:00Z"),
            settings
        )
        .len(),
        1
    );
    let at_start = decide(
        &[LedgerRow {
            next_attempt: None,
            ..row.clone()
        }],
        t("2030-06-07T09:00:00Z"),
        settings,
    );
    assert!(
        matches!(&at_start[..], [Action::Fail { reason, .. }] if reason.contains("Connection refused")),
        "{at_start:?}"
    );
    // A failure whose next attempt would fall after the start fails at once.
    let late = after_failure(
        &row,
        &SendFailure {
            transient: true,
            message: "421 busy".into(),
            done: Vec::new(),
        },
        t("2030-06-07T08:59:30Z"),
        settings,
        0.0,
    );
    assert!(
        matches!(&late, Outcome::Failed { error, .. } if error.contains("421 busy")),
        "{late:?}"
    );
    // A failure after which some recipients had it: the retry carries them to the row, and
    // giving up names those earlier attempts reached.
    let partly = SendFailure {
        transient: true,
        message: "451 put off".into(),
        done: vec!["a@example.org".into()],
    };
    let retry = after_failure(&row, &partly, t("2030-06-07T08:00:00Z"), settings, 0.0);
    assert!(
        matches!(&retry, Outcome::Retry { done, .. } if done == &["a@example.org"]),
        "{retry:?}"
    );
    let reached = LedgerRow {
        done_recipients: vec!["a@example.org".into(), "b@example.org".into()],
        ..row.clone()
    };
    let gave_up = after_failure(&reached, &partly, t("2030-06-07T08:59:30Z"), settings, 0.0);
    assert!(
        matches!(&gave_up, Outcome::Failed { error, done }
            if error.contains("451 put off") && error.contains("a@example.org, b@example.org")
                && done == &["a@example.org"]),
        "{gave_up:?}"
    );
    // Then the server rejects it: permanent, failed at once, with the server's reply.
    assert_eq!(
        kinds(&sim.step(settings, now, rejected)),
        [(k.to_string(), "send")]
    );
    let row = sim.row(&k);
    assert_eq!((row.state, row.attempts), (MailState::Failed, 4));
    assert_eq!(
        row.last_error.as_deref(),
        Some("permanent failure: 550 5.1.1 no such user")
    );
    assert!(
        sim.step(settings, now + SignedDuration::from_hours(1), ok)
            .is_empty()
    );
}

#[test]
fn backoff_doubles_up_to_an_hour_within_jitter_bounds() {
    let base = SignedDuration::from_mins(1);
    let table: [(u32, i64); 9] = [
        (1, 60),
        (2, 120),
        (3, 240),
        (4, 480),
        (5, 960),
        (6, 1920),
        (7, 3600),
        (8, 3600),
        (40, 3600),
    ];
    for (attempts, full) in table {
        let full = SignedDuration::from_secs(full);
        assert_eq!(backoff(base, attempts, 0.0), full / 2, "attempt {attempts}");
        assert_eq!(backoff(base, attempts, 1.0), full, "attempt {attempts}");
        for _ in 0..200 {
            let d = backoff(base, attempts, fastrand::f64());
            assert!(d >= full / 2 && d <= full, "attempt {attempts}: {d:?}");
        }
    }
    // A base longer than the cap is used as is; a tiny base for tests doubles from 1s.
    assert_eq!(
        backoff(SignedDuration::from_hours(2), 3, 1.0),
        SignedDuration::from_hours(2)
    );
    assert_eq!(
        backoff(SignedDuration::from_secs(1), 3, 1.0),
        SignedDuration::from_secs(4)
    );
}

#[test]
fn a_row_left_sending_by_a_crash_is_sent_again_with_the_same_message_id() {
    let c = config(MEETINGS);
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    let k = key("m1", "week", 0);
    let now = t("2030-05-31T08:00:00Z");
    let claimed = sim.store.claim(&k, now).expect("claim").expect("claimed");
    // Crash here. On start:
    assert_eq!(
        sim.store.recover_sending().expect("recover"),
        vec![k.clone()]
    );
    // Even after its grace, it goes out again (it may already have), with the same Message-ID.
    let later = t("2030-06-03T00:00:00Z");
    let ids = std::cell::RefCell::new(Vec::new());
    let actions = sim.step(&c.scheduler, later, |row| {
        ids.borrow_mut().push(row.message_id.clone());
        Ok("250 ok".into())
    });
    assert_eq!(kinds(&actions)[0], (k.to_string(), "send"));
    assert_eq!(ids.into_inner(), vec![claimed.message_id.clone()]);
    assert_eq!(
        (sim.row(&k).state, sim.row(&k).attempts),
        (MailState::Sent, 2)
    );
}

/// What the ledger's plan stamp relies on (`daemon::replan` skips reconciling a config the
/// ledger is stamped with): once a config is reconciled, nothing the scheduler does to the rows
/// (sends, retries, failures, skips, holds, releases, at any clock) makes reconciling that same
/// config want a write or a log line, whenever it runs.
#[test]
fn after_any_scheduler_activity_reconciling_the_same_config_again_changes_nothing() {
    let four = format!(
        "{MEETINGS}{}{}{}",
        MEETINGS.replace("m1", "m2").replace("06-07", "06-14"),
        MEETINGS.replace("m1", "m3").replace("06-07", "06-21"),
        MEETINGS.replace("m1", "m4").replace("06-07", "07-05"),
    );
    let a = config(&four);
    // b moves m1 by an hour (a change notice); c also cancels m3 (a cancellation notice); d adds
    // meetings in 2031 to c.
    let b = config(&four.replacen("start = \"10:00\"", "start = \"11:00\"", 1));
    let cancel_m3 =
        |text: String| text.replacen("id = \"m3\"", "id = \"m3\"\nstatus = \"cancelled\"", 1);
    let c = config(&cancel_m3(four.replacen(
        "start = \"10:00\"",
        "start = \"11:00\"",
        1,
    )));
    let mut sim = Sim::new();
    let unchanged = |sim: &Sim, config: &Config, now: Timestamp, what: &str| {
        let rows = sim.store.rows().expect("rows");
        let revisions = sim.store.revisions().expect("revisions");
        let again = reconcile(config, &rows, &revisions, &Default::default(), now);
        assert_eq!(again, super::Reconciled::default(), "{what} at {now}");
    };
    // "day" mails fail for good, "week" mails fail once for a while, notices go through.
    let flaky = |row: &LedgerRow| match row.key.email.as_str() {
        "day" => Err(SendFailure {
            transient: false,
            message: "550 no such list".into(),
            done: Vec::new(),
        }),
        "week" if row.attempts < 2 => Err(SendFailure {
            transient: true,
            message: "451 try later".into(),
            done: Vec::new(),
        }),
        _ => Ok("250 2.0.0 queued".into()),
    };

    let start = t("2030-05-01T00:00:00Z");
    sim.load(&a, start);
    unchanged(&sim, &a, start, "after the first plan");
    let moved = t("2030-05-02T00:00:00Z");
    sim.load(&b, moved);
    unchanged(&sim, &b, moved, "after a move");
    let mut now = moved;
    let mut current = &b;
    let mut acted = 0;
    while now < t("2030-07-10T00:00:00Z") {
        if now == t("2030-06-10T00:00:00Z") {
            sim.load(&c, now);
            current = &c;
            unchanged(&sim, current, now, "after a cancellation");
        }
        acted += sim.step(&current.scheduler, now, flaky).len();
        unchanged(&sim, current, now, "after a pass");
        // Reconciling later (a restart days on) wants nothing either.
        let later = now
            .checked_add(SignedDuration::from_hours(24 * 30))
            .expect("add");
        unchanged(&sim, current, later, "a month on");
        now = now.checked_add(SignedDuration::from_mins(90)).expect("add");
    }
    assert!(acted >= 8, "the passes acted on {acted} mails");
    let states = sim.states();
    for state in [MailState::Sent, MailState::Failed, MailState::Skipped] {
        assert!(states.iter().any(|(_, s)| *s == state), "{states:?}");
    }

    // A clock jump: everything left falls due at once and is held, then released.
    let mut more = String::new();
    for i in 5..9 {
        more.push_str(
            &MEETINGS
                .replace("m1", &format!("m{i}"))
                .replace("2030-06-07", &format!("2031-0{}-07", i - 3)),
        );
    }
    let d = config(&cancel_m3(format!("{four}{more}").replacen(
        "start = \"10:00\"",
        "start = \"11:00\"",
        1,
    )));
    assert_eq!(d.meetings.iter().filter(|m| m.is_cancelled()).count(), 1);
    sim.load(&d, now);
    unchanged(&sim, &d, now, "after adding meetings");
    let jumped = t("2033-01-01T00:00:00Z");
    let held = sim.step(&d.scheduler, jumped, ok);
    assert!(
        held.iter().all(|a| matches!(a, Action::Hold { .. })) && held.len() > 3,
        "{held:?}"
    );
    unchanged(&sim, &d, jumped, "after a hold");
    sim.store
        .release(&ReleaseFilter::default())
        .expect("release");
    unchanged(&sim, &d, jumped, "after a release");
    sim.step(&d.scheduler, jumped, ok);
    unchanged(&sim, &d, jumped, "after the released mails were decided");
}

/// Every planned row carries the Message-ID that `convenor preview` shows for its key
/// ([`crate::mail::message_id`] of the key's parts): timed mails to the list and to each lead,
/// and a change notice, whose occurrence is the SEQUENCE that queued it.
#[test]
fn planned_rows_carry_the_message_id_of_their_key() {
    use crate::{
        model::{EmailId, MeetingId},
        schedule::Recipient,
    };
    let by_key = |config: &Config, k: &MailKey| {
        crate::mail::message_id(
            config,
            &MeetingId::parse(&k.meeting).expect("meeting id"),
            &EmailId::parse(&k.email).expect("email id"),
            &Recipient::from_key(&k.audience).expect("recipient"),
            k.occurrence,
        )
    };
    let path = std::path::Path::new("config/lednet.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let shipped = parse(path, &text, &Environment::default())
        .expect("valid")
        .config;
    let rows = reconcile(
        &shipped,
        &[],
        &Default::default(),
        &Default::default(),
        t("2023-01-01T00:00:00Z"),
    )
    .replan
    .inserts;
    assert!(rows.iter().any(|r| r.key.audience.starts_with("lead:")));
    for row in &rows {
        assert_eq!(row.message_id, by_key(&shipped, &row.key), "{}", row.key);
    }

    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    let moved = config(&MEETINGS.replace("2030-06-07", "2030-06-10"));
    sim.load(&moved, t("2030-05-20T00:00:00Z"));
    let notice = sim.row(&key("m1", "change", 1));
    assert_eq!(notice.message_id, by_key(&moved, &notice.key));
    assert_ne!(notice.message_id, by_key(&moved, &key("m1", "change", 0)));
}

/// Three meetings on one day: their week mails fall due together at 2030-05-31T08:00Z, as many
/// as `max_catch_up` lets through.
fn three_at_once() -> Config {
    config(&format!(
        "{MEETINGS}{}{}",
        MEETINGS.replace("m1", "m2"),
        MEETINGS.replace("m1", "m3")
    ))
}

const WEEK_DUE: &str = "2030-05-31T08:00:00Z";

/// A sender that logs each delivery in `events` and, on its first, calls `first` (which the
/// tests use to stop the loop while that mail is in flight) and yields once before answering.
struct StandIn {
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    first: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Log the title the config in force gives each mail's meeting.
    titles: bool,
}

impl StandIn {
    fn new(events: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> Self {
        Self {
            events: events.clone(),
            first: std::sync::Mutex::new(None),
            titles: false,
        }
    }

    fn deliveries(&self) -> usize {
        log(&self.events)
            .iter()
            .filter(|e| e.starts_with("deliver"))
            .count()
    }
}

fn log(events: &std::sync::Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl super::Outbox for StandIn {
    async fn deliver(
        &self,
        row: &LedgerRow,
        config: &tokio::sync::watch::Receiver<std::sync::Arc<Config>>,
    ) -> Result<String, SendFailure> {
        if self.titles {
            // What this mail would be composed with: its meeting's title in the config in force.
            let config = config.borrow().clone();
            let title = crate::model::MeetingId::parse(&row.key.meeting)
                .ok()
                .and_then(|id| config.meeting(&id).map(|m| m.title.to_string()))
                .unwrap_or_else(|| "(not in the config)".into());
            log(&self.events).push(format!("deliver {}: {title}", row.key));
        } else {
            log(&self.events).push(format!("deliver {}", row.key));
        }
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(first) = first {
            first();
            // In flight: the loop sees the shutdown before this mail's answer.
            tokio::task::yield_now().await;
        }
        Ok("250 2.0.0 queued".into())
    }
}

/// A scheduler over `store` planned with `config`, its clock fixed at `now`.
fn scheduler<S: Store + 'static>(
    store: S,
    config: &Config,
    now: Timestamp,
    outbox: StandIn,
) -> super::Scheduler<S, StandIn, impl super::Clock> {
    let (_, config_rx) = tokio::sync::watch::channel(std::sync::Arc::new(config.clone()));
    super::Scheduler::new(
        std::sync::Arc::new(std::sync::Mutex::new(store)),
        outbox,
        move || now,
        config_rx,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
}

fn states_of<S: Store>(store: &super::SharedStore<S>) -> Vec<(String, MailState)> {
    super::run::lock(store)
        .rows()
        .expect("rows")
        .into_iter()
        .map(|r| (r.key.to_string(), r.state))
        .collect()
}

/// The README's promise for `systemctl stop`: a mail in mid-send finishes, mails not yet started
/// stay `pending`. Three mails are due at once; the shutdown comes while the first is in flight.
#[tokio::test(flavor = "current_thread")]
async fn after_the_shutdown_signal_a_pass_finishes_the_send_in_flight_and_claims_no_other() {
    let c = three_at_once();
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let outbox = StandIn::new(&events);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    *outbox.first.lock().expect("lock") = Some(Box::new(move || {
        let _ = stop_tx.send(());
    }));
    let Sim { _dir, store } = sim;
    let scheduler = scheduler(store, &c, t(WEEK_DUE), outbox);
    let store = scheduler.store.clone();
    let shutdown = async {
        let _ = stop_rx.await;
    };
    let events_seen = events.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        scheduler.run_observed(shutdown, super::run::MAX_SLICE, |_| {}),
    )
    .await
    .expect("the loop stops");
    assert_eq!(
        *log(&events_seen),
        ["deliver m1/week/list"],
        "one mail was started"
    );
    assert_eq!(
        states_of(&store),
        [
            ("m1/week/list".to_owned(), MailState::Sent),
            ("m2/week/list".to_owned(), MailState::Pending),
            ("m3/week/list".to_owned(), MailState::Pending),
            ("m1/day/list".to_owned(), MailState::Pending),
            ("m2/day/list".to_owned(), MailState::Pending),
            ("m3/day/list".to_owned(), MailState::Pending),
        ]
    );
}

/// The loop tells its observer before every send, not only after the pass: the daemon pets the
/// systemd watchdog there, so a pass of many slow sends is not taken for a hung loop.
#[tokio::test(flavor = "current_thread")]
async fn the_loop_reports_before_each_send_of_a_pass_and_after_the_pass() {
    let c = three_at_once();
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let Sim { _dir, store } = sim;
    let scheduler = scheduler(store, &c, t(WEEK_DUE), StandIn::new(&events));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let observed = events.clone();
    let observe = move |event: super::LoopEvent<'_>| {
        let line = match event {
            super::LoopEvent::Sending(key) => format!("sending {key}"),
            super::LoopEvent::PassEnded(pass) => {
                // Stop after the first pass.
                if let Some(tx) = stop_tx.take() {
                    let _ = tx.send(());
                }
                format!("pass ended: {:?}", pass.map_err(ToString::to_string))
            }
        };
        log(&observed).push(line);
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        scheduler.run_observed(
            async {
                let _ = stop_rx.await;
            },
            super::run::MAX_SLICE,
            observe,
        ),
    )
    .await
    .expect("the loop stops");
    assert_eq!(
        *log(&events),
        [
            "sending m1/week/list",
            "deliver m1/week/list",
            "sending m2/week/list",
            "deliver m2/week/list",
            "sending m3/week/list",
            "deliver m3/week/list",
            "pass ended: Ok(Some(2030-06-06T08:00:00Z))",
        ]
    );
}

/// A ledger whose first `settle` of a `sending` row fails (a full disk, a lock held too long).
struct SettleFailsOnce {
    inner: SqliteStore,
    failed: bool,
}

impl Store for SettleFailsOnce {
    fn rows(&self) -> Result<Vec<LedgerRow>, crate::ledger::LedgerError> {
        self.inner.rows()
    }
    fn revisions(
        &self,
    ) -> Result<
        std::collections::BTreeMap<crate::model::MeetingId, crate::revision::StoredRevision>,
        crate::ledger::LedgerError,
    > {
        self.inner.revisions()
    }
    fn revision_at(
        &self,
        meeting: &crate::model::MeetingId,
        sequence: u32,
    ) -> Result<Option<crate::revision::StoredRevision>, crate::ledger::LedgerError> {
        self.inner.revision_at(meeting, sequence)
    }
    fn apply(&mut self, replan: &crate::ledger::Replan) -> Result<(), crate::ledger::LedgerError> {
        self.inner.apply(replan)
    }
    fn plan_stamp(&self) -> Result<Option<String>, crate::ledger::LedgerError> {
        self.inner.plan_stamp()
    }
    fn uid_domain(&self) -> Result<Option<String>, crate::ledger::LedgerError> {
        self.inner.uid_domain()
    }
    fn pin_uid_domain(&mut self, proposed: &str) -> Result<String, crate::ledger::LedgerError> {
        self.inner.pin_uid_domain(proposed)
    }
    fn recover_sending(&mut self) -> Result<Vec<MailKey>, crate::ledger::LedgerError> {
        self.inner.recover_sending()
    }
    fn claim(
        &mut self,
        key: &MailKey,
        now: Timestamp,
    ) -> Result<Option<LedgerRow>, crate::ledger::LedgerError> {
        self.inner.claim(key, now)
    }
    fn settle(
        &mut self,
        key: &MailKey,
        from: MailState,
        outcome: &Outcome,
    ) -> Result<Option<MailState>, crate::ledger::LedgerError> {
        if from == MailState::Sending && !self.failed {
            self.failed = true;
            return Err(crate::ledger::LedgerError::Corrupt {
                path: "ledger.sqlite3".into(),
                detail: "disk I/O error (test)".into(),
            });
        }
        self.inner.settle(key, from, outcome)
    }
    fn settle_decided(
        &mut self,
        row: &LedgerRow,
        outcome: &Outcome,
    ) -> Result<bool, crate::ledger::LedgerError> {
        self.inner.settle_decided(row, outcome)
    }
    fn withdrawn(&self, key: &MailKey) -> Result<Option<String>, crate::ledger::LedgerError> {
        self.inner.withdrawn(key)
    }
    fn release(&mut self, filter: &ReleaseFilter) -> Result<usize, crate::ledger::LedgerError> {
        self.inner.release(filter)
    }
}

/// A mail went out but the ledger refused to record it: the pass fails (health shows it), the
/// outcome is kept, and the next pass records it before anything else. The row is never left
/// `sending` (which no pass looks at, and which a restart would send again), and the mail is
/// not sent twice.
#[tokio::test(flavor = "current_thread")]
async fn an_outcome_the_ledger_refuses_once_is_recorded_at_the_next_pass_and_not_sent_again() {
    let c = config(MEETINGS);
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    let Sim { _dir, store } = sim;
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = SettleFailsOnce {
        inner: store,
        failed: false,
    };
    let scheduler = scheduler(store, &c, t(WEEK_DUE), StandIn::new(&events));
    let week = ("m1/week/list".to_owned(), MailState::Sending);
    let first = scheduler.tick().await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.to_string().contains("disk I/O error")),
        "{first:?}"
    );
    assert_eq!(states_of(&scheduler.store)[0], week);
    assert_eq!(scheduler.unsettled(), 1);

    let second = scheduler.tick().await;
    assert_eq!(
        second.expect("the second pass succeeds"),
        Some(t("2030-06-06T08:00:00Z"))
    );
    let row = super::run::lock(&scheduler.store)
        .rows()
        .expect("rows")
        .into_iter()
        .find(|r| r.key == key("m1", "week", 0))
        .expect("week row");
    assert_eq!(
        (row.state, row.attempts, row.sent_at),
        (MailState::Sent, 1, Some(t(WEEK_DUE)))
    );
    assert_eq!(scheduler.unsettled(), 0);
    scheduler.tick().await.expect("a third pass");
    assert_eq!(scheduler.outbox.deliveries(), 1, "{:?}", log(&events));
}

/// A pass decides at its start but sends one mail after another: a mail whose grace runs out,
/// or whose meeting starts, while the sends before it take their time is not sent by that pass
/// (the claim checks the deadline and the start at the instant of the claim); the next pass
/// skips it with the reason. Three meetings on one day; the first send takes until `after`.
#[tokio::test(flavor = "current_thread")]
async fn a_mail_whose_grace_or_meeting_passes_during_a_slow_pass_is_not_sent() {
    // (the clock after the first send, what the other two week mails become)
    let table = [
        // Inside the 1d grace: sent by the same pass.
        ("2030-05-31T09:00:00Z", MailState::Sent, ""),
        // Past the grace (2030-06-01T08:00Z), before the meeting.
        ("2030-06-01T08:00:01Z", MailState::Skipped, "grace ran out"),
        // Past the meeting's start (2030-06-07T09:00Z): not sent by the slow pass either; by
        // then the day mails fell due too, five at once, which the next pass takes for a clock
        // jump.
        ("2030-06-07T09:00:00Z", MailState::Held, "clock-jump guard"),
    ];
    for (after, expected, reason) in table {
        let c = three_at_once();
        let mut sim = Sim::new();
        sim.load(&c, t("2030-05-01T00:00:00Z"));
        let Sim { _dir, store } = sim;
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let outbox = StandIn::new(&events);
        let clock = std::sync::Arc::new(std::sync::Mutex::new(t(WEEK_DUE)));
        let advance = clock.clone();
        *outbox.first.lock().expect("lock") = Some(Box::new(move || {
            *advance.lock().expect("clock") = t(after);
        }));
        let (_, config_rx) = tokio::sync::watch::channel(std::sync::Arc::new(c.clone()));
        let scheduler = super::Scheduler::new(
            std::sync::Arc::new(std::sync::Mutex::new(store)),
            outbox,
            move || *clock.lock().expect("clock"),
            config_rx,
            std::sync::Arc::new(tokio::sync::Notify::new()),
        );
        scheduler.tick().await.expect("the slow pass");
        scheduler.tick().await.expect("the next pass");
        let rows = super::run::lock(&scheduler.store).rows().expect("rows");
        let week = |m: &str| {
            (rows.iter())
                .find(|r| r.key == key(m, "week", 0))
                .expect("week row")
        };
        assert_eq!(week("m1").state, MailState::Sent, "{after}");
        for m in ["m2", "m3"] {
            let row = week(m);
            assert_eq!(row.state, expected, "{after}: {m} {row:?}");
            assert!(
                row.last_error.as_deref().unwrap_or("").contains(reason),
                "{after}: {m}: {:?}",
                row.last_error
            );
            if expected != MailState::Sent {
                assert_eq!(row.attempts, 0, "{after}: {m} was never claimed");
            }
        }
        let sent = if expected == MailState::Sent { 3 } else { 1 };
        assert_eq!(
            scheduler.outbox.deliveries(),
            sent,
            "{after}: {:?}",
            log(&events)
        );
    }
}

/// A reload that lands in the middle of a pass (its plan written and its config published under
/// the store lock while the pass's first mail is in flight, as the daemon does): the pass's
/// next mails are composed with the reloaded config, not the one the pass started with, so a
/// mail never pairs the old meeting details with the SEQUENCE the new plan stored.
#[tokio::test(flavor = "current_thread")]
async fn a_reload_during_a_pass_reaches_the_next_mails_of_that_pass() {
    use std::sync::{Arc, Mutex};
    let before = three_at_once();
    let renamed = config(&format!(
        "{MEETINGS}{}{}",
        MEETINGS
            .replace("m1", "m2")
            .replace("Meeting one", "Meeting two, renamed"),
        MEETINGS.replace("m1", "m3")
    ));
    let mut sim = Sim::new();
    sim.load(&before, t("2030-05-01T00:00:00Z"));
    let Sim { _dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(before));
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut outbox = StandIn::new(&events);
    outbox.titles = true;
    let reload_store = store.clone();
    *outbox.first.lock().expect("lock") = Some(Box::new(move || {
        let mut ledger = super::run::lock(&reload_store);
        replan(&mut *ledger, &renamed, t(WEEK_DUE)).expect("replan");
        config_tx.send_replace(Arc::new(renamed));
    }));
    let now = t(WEEK_DUE);
    let scheduler = super::Scheduler::new(
        store,
        outbox,
        move || now,
        config_rx,
        Arc::new(tokio::sync::Notify::new()),
    );
    scheduler.tick().await.expect("a pass");
    assert_eq!(
        *log(&events),
        [
            "deliver m1/week/list: Meeting one",
            "deliver m2/week/list: Meeting two, renamed",
            "deliver m3/week/list: Meeting one",
        ]
    );
}

mod reload_races;
