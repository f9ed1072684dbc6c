//! A reload that lands while the loop is at work: on a row a pass decided about but has not
//! recorded yet, on a row being sent, and on a change notice still to go out when the meeting
//! changes again. Each test reconciles, claims and settles on a real SQLite ledger at given
//! instants, the reload placed where the loop would meet it.

use std::sync::{Arc, Mutex};

use super::*;
use crate::model::MeetingId;
use crate::scheduler::{
    MailOutbox,
    reconcile::{BACK_AS_ANNOUNCED, SUPERSEDED, WITHDRAWN, announced_from},
};

/// The config of [`MEETINGS`] with m1 cancelled.
fn cancelled() -> Config {
    config(&MEETINGS.replace(
        "title = \"Meeting one\"",
        "title = \"Meeting one\"\nstatus = \"cancelled\"",
    ))
}

/// [`MEETINGS`] with m1 on another day.
fn moved_to(date: &str) -> Config {
    config(&MEETINGS.replace("2030-06-07", date))
}

fn transient() -> SendFailure {
    SendFailure {
        transient: true,
        message: "421 4.3.0 try later".into(),
        done: vec![],
    }
}

/// The ledger of [`MEETINGS`], planned on 1 May, with m1's day mail claimed at 08:00 on its
/// day: the SMTP conversation is about to start.
fn day_mail_claimed() -> (Sim, LedgerRow) {
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    let row = sim
        .store
        .claim(&key("m1", "day", 0), t("2030-06-06T08:00:00Z"))
        .expect("claim")
        .expect("claimed");
    (sim, row)
}

/// What becomes of m1's day mail when a reload brings `during` while it is being sent and the
/// attempt then ends as `ending` says: the row's state and last error.
fn in_flight(during: &Config, ending: &str) -> (Sim, LedgerRow) {
    let c = config(MEETINGS);
    let (mut sim, row) = day_mail_claimed();
    let day = row.key.clone();
    sim.load(during, t("2030-06-06T08:00:10Z"));
    let marked = sim.row(&day).withdrawn;
    assert_eq!(
        marked.is_some(),
        during
            .meeting(&MeetingId::parse("m1").expect("id"))
            .is_some_and(|m| m.is_cancelled()),
        "marked while in flight only when withdrawn: {marked:?}"
    );
    let at = t("2030-06-06T08:00:20Z");
    let settled = match ending {
        "retry" => sim.store.settle(
            &day,
            MailState::Sending,
            &after_failure(&row, &transient(), at, &c.scheduler, 0.5),
        ),
        "refused" => sim.store.settle(
            &day,
            MailState::Sending,
            &Outcome::Failed {
                error: "550 5.1.1 no such list".into(),
                done: vec![],
            },
        ),
        "sent" => sim.store.settle(
            &day,
            MailState::Sending,
            &Outcome::Sent {
                at,
                reply: "250 2.0.0 queued".into(),
            },
        ),
        "crash" => {
            let again = sim.store.recover_sending().expect("recover");
            Ok(Some(if again.contains(&day) {
                MailState::Pending
            } else {
                MailState::Skipped
            }))
        }
        other => panic!("no ending {other}"),
    };
    let state = settled.expect("settle").expect("the row was sending");
    let row = sim.row(&day);
    assert_eq!(
        state, row.state,
        "{ending}: what settle reports is what it wrote"
    );
    (sim, row)
}

/// Reconciling `config` again, at `now`, writes nothing: the reload's plan stands whatever the
/// attempt ended in (the plan stamp lets restarts skip reconciling, so it must).
fn reconciles_to_nothing(sim: &Sim, config: &Config, now: Timestamp) {
    let rows = sim.store.rows().expect("rows");
    let revisions = sim.store.revisions().expect("revisions");
    let again = reconcile(config, &rows, &revisions, &Default::default(), now);
    assert!(again.replan.is_empty(), "{:?}", again.replan);
}

/// A reload cancels the meeting while its day mail is being sent. The server cannot be asked to
/// give the mail back, so the row is marked: an attempt that sends it leaves it sent, one that
/// does not (a retry, a refusal, a crash before the reply) leaves it skipped for the
/// cancellation, never pending for another try.
#[test]
fn a_mail_withdrawn_while_it_is_being_sent_is_not_tried_again() {
    let reason = format!("{WITHDRAWN}meeting cancelled");
    for (ending, state) in [
        ("retry", MailState::Skipped),
        ("refused", MailState::Skipped),
        ("crash", MailState::Skipped),
        ("sent", MailState::Sent),
    ] {
        let (mut sim, row) = in_flight(&cancelled(), ending);
        assert_eq!(row.state, state, "{ending}: {row:?}");
        assert_eq!(
            row.withdrawn, None,
            "{ending}: the mark ends with the attempt"
        );
        if state == MailState::Skipped {
            assert_eq!(row.last_error.as_deref(), Some(reason.as_str()), "{ending}");
            assert_eq!(row.next_attempt, None, "{ending}");
        }
        reconciles_to_nothing(&sim, &cancelled(), t("2030-06-06T08:00:30Z"));
        let actions = sim.step(&cancelled().scheduler, t("2030-06-06T08:05:00Z"), ok);
        assert!(
            !actions.contains(&Action::Send(key("m1", "day", 0))),
            "{ending}: {:?}",
            kinds(&actions)
        );
    }
}

/// The meeting moves a week later while its day mail is being sent: whatever the attempt ends
/// in, the row has the new due instant, deadline and start, so a retry goes on until the new
/// start (not the old one) and a crash sends it when it is due again, not at once.
#[test]
fn a_mail_being_sent_when_its_meeting_moves_takes_the_new_times() {
    let later = moved_to("2030-06-14");
    for (ending, state) in [
        ("retry", MailState::Pending),
        ("crash", MailState::Pending),
        ("sent", MailState::Sent),
    ] {
        let (sim, row) = in_flight(&later, ending);
        assert_eq!(row.state, state, "{ending}");
        assert_eq!(
            (row.due, row.deadline, row.starts),
            (
                t("2030-06-13T08:00:00Z"),
                t("2030-06-13T10:00:00Z"),
                t("2030-06-14T09:00:00Z")
            ),
            "{ending}: the row follows the meeting"
        );
        assert_eq!(row.withdrawn, None, "{ending}");
        assert_eq!(
            row.attempts, 1,
            "{ending}: the attempt in flight still counts"
        );
        reconciles_to_nothing(&sim, &later, t("2030-06-06T08:00:30Z"));
    }
    // Retried once the server is back, while the old day has passed: still sent, before the new
    // start.
    let (mut sim, _) = in_flight(&later, "retry");
    let actions = sim.step(&later.scheduler, t("2030-06-13T08:30:00Z"), ok);
    assert!(actions.contains(&Action::Send(key("m1", "day", 0))));
}

/// Cancelled and reinstated before the attempt in flight ends: the mark is gone, and a retry is
/// a retry.
#[test]
fn a_mail_withdrawn_in_flight_and_wanted_again_before_the_attempt_ends_is_retried() {
    let c = config(MEETINGS);
    let (mut sim, row) = day_mail_claimed();
    let day = row.key.clone();
    sim.load(&cancelled(), t("2030-06-06T08:00:05Z"));
    assert!(sim.row(&day).withdrawn.is_some());
    sim.load(&c, t("2030-06-06T08:00:10Z"));
    assert_eq!(sim.row(&day).withdrawn, None, "wanted again");
    let retry = after_failure(
        &row,
        &transient(),
        t("2030-06-06T08:00:20Z"),
        &c.scheduler,
        0.5,
    );
    let state = sim
        .store
        .settle(&day, MailState::Sending, &retry)
        .expect("settle");
    assert_eq!(state, Some(MailState::Pending));
    reconciles_to_nothing(&sim, &c, t("2030-06-06T08:00:30Z"));
}

/// A pass decides from the rows it read at its start; a reload during one of its sends moves a
/// meeting whose day mail the same pass decided to skip (its grace had run out). The skip is
/// not recorded over the move: the mail, now due next week, stays pending and goes out then.
/// (m1's week mail, skipped before the reload, is brought back by it: the contrast.)
#[tokio::test(flavor = "current_thread")]
async fn a_skip_decided_before_a_reload_yields_to_the_move_the_reload_made() {
    let a2 = MEETINGS
        .replace("m1", "a2")
        .replace("2030-06-07", "2030-06-13");
    let before = config(&format!("{MEETINGS}{a2}"));
    let moved = config(&format!(
        "{}{a2}",
        MEETINGS.replace("2030-06-07", "2030-06-14")
    ));
    let mut sim = Sim::new();
    sim.load(&before, t("2030-05-01T00:00:00Z"));
    let Sim { _dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(before));
    let events = Arc::new(Mutex::new(Vec::new()));
    let outbox = StandIn::new(&events);
    let reload_store = store.clone();
    let now = t("2030-06-06T11:00:00Z");
    // The reload lands while the pass sends a2's week mail, after it decided to skip m1's day
    // mail (due 08:00, grace 2 h) and before it records that.
    let reloaded = moved.clone();
    *outbox.first.lock().expect("lock") = Some(Box::new(move || {
        let mut ledger = super::super::run::lock(&reload_store);
        replan(&mut *ledger, &reloaded, now).expect("replan");
        config_tx.send_replace(Arc::new(reloaded));
    }));
    let scheduler = super::super::Scheduler::new(
        store.clone(),
        outbox,
        move || now,
        config_rx,
        Arc::new(tokio::sync::Notify::new()),
    );
    scheduler.tick().await.expect("a pass");
    assert_eq!(log(&events).len(), 1, "{:?}", log(&events));
    let rows = super::super::run::lock(&store).rows().expect("rows");
    let day = rows
        .iter()
        .find(|r| r.key == key("m1", "day", 0))
        .expect("row");
    assert_eq!(
        (day.due, day.state),
        (t("2030-06-13T08:00:00Z"), MailState::Pending),
        "{day:?}"
    );
    let week = rows
        .iter()
        .find(|r| r.key == key("m1", "week", 0))
        .expect("row");
    assert_eq!(
        (week.due, week.state),
        (t("2030-06-07T08:00:00Z"), MailState::Pending)
    );
    // The next pass decides on the rows as they are: no timed mail of m1 is due (the change
    // notice the move queued is).
    drop(scheduler);
    let mut sim = Sim {
        _dir,
        store: Arc::try_unwrap(store)
            .ok()
            .expect("one owner")
            .into_inner()
            .expect("lock"),
    };
    let actions = sim.step(&moved.scheduler, now, ok);
    assert!(
        actions
            .iter()
            .all(|a| a.key().meeting != "m1" || a.key().occurrence > 0),
        "{:?}",
        kinds(&actions)
    );
}

/// A change notice that has not gone out yet (the relay is down) when the meeting changes
/// again is superseded by the newer notice, not sent beside it (both would show the meeting as
/// it is now) nor after the meeting, as it kept the start it was queued with.
#[test]
fn a_notice_not_yet_sent_is_superseded_by_the_next_change() {
    let later = moved_to("2030-06-10");
    let earlier = moved_to("2030-06-06");
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.load(&later, t("2030-06-05T00:00:00Z"));
    let down = |_: &LedgerRow| Err(transient());
    sim.step(&later.scheduler, t("2030-06-05T00:00:00Z"), down);
    assert_eq!(sim.row(&key("m1", "change", 1)).state, MailState::Pending);
    sim.load(&earlier, t("2030-06-05T00:10:00Z"));
    let first = sim.row(&key("m1", "change", 1));
    assert_eq!(first.state, MailState::Skipped);
    assert_eq!(
        first.last_error.as_deref(),
        Some(format!("{SUPERSEDED}2").as_str())
    );
    assert_eq!(sim.row(&key("m1", "change", 2)).state, MailState::Pending);
    reconciles_to_nothing(&sim, &earlier, t("2030-06-05T00:20:00Z"));
    // The relay is back: the newer notice goes, the older never does (the week mail, moved
    // into the past, is skipped by its grace).
    let actions = sim.step(&earlier.scheduler, t("2030-06-05T00:30:00Z"), ok);
    let notices: Vec<_> = kinds(&actions)
        .into_iter()
        .filter(|(k, _)| k.contains("/change/"))
        .collect();
    assert_eq!(notices, [("m1/change/list#2".to_owned(), "send")]);
}

/// A notice superseded while being sent is marked like any mail withdrawn in flight: sent if
/// that attempt sends it, skipped otherwise.
#[test]
fn a_notice_superseded_while_it_is_being_sent_is_not_tried_again() {
    let later = moved_to("2030-06-10");
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.load(&later, t("2030-06-05T00:00:00Z"));
    let first = key("m1", "change", 1);
    let row = sim
        .store
        .claim(&first, t("2030-06-05T00:00:01Z"))
        .expect("claim")
        .expect("claimed");
    sim.load(&moved_to("2030-06-06"), t("2030-06-05T00:00:02Z"));
    let retry = after_failure(
        &row,
        &transient(),
        t("2030-06-05T00:00:03Z"),
        &later.scheduler,
        0.5,
    );
    let state = sim
        .store
        .settle(&first, MailState::Sending, &retry)
        .expect("settle");
    assert_eq!(state, Some(MailState::Skipped));
    assert_eq!(
        sim.row(&first).last_error.as_deref(),
        Some(format!("{SUPERSEDED}2").as_str())
    );
}

/// Which SEQUENCE a notice shows as "before": the one before it, unless it superseded notices
/// that never went out, then the one before the oldest of those (what recipients last heard).
#[test]
fn a_notice_shows_what_changed_since_the_last_notice_that_went_out() {
    let notice = |occurrence: u32, state: MailState, error: Option<&str>| LedgerRow {
        key: key("m1", "change", occurrence),
        state,
        last_error: error.map(str::to_owned),
        ..sample_row()
    };
    let superseded = format!("{SUPERSEDED}9");
    let s = Some(superseded.as_str());
    let late = Some("too late: due ...");
    for (notices, occurrence, from) in [
        (vec![], 1, 0),
        (vec![notice(1, MailState::Sent, None)], 2, 1),
        (vec![notice(1, MailState::Skipped, s)], 2, 0),
        (
            vec![
                notice(1, MailState::Sent, None),
                notice(2, MailState::Skipped, s),
                notice(3, MailState::Skipped, s),
            ],
            4,
            1,
        ),
        // Skipped for another reason (too late): it was its own notice, not superseded.
        (vec![notice(1, MailState::Skipped, late)], 2, 1),
        // A gap: notice 2 was never queued (the meeting had started, say).
        (vec![notice(1, MailState::Skipped, s)], 3, 2),
        (vec![notice(1, MailState::Failed, None)], 2, 1),
    ] {
        assert_eq!(
            announced_from(&notices, occurrence),
            from,
            "notice #{occurrence} after {:?}",
            notices
                .iter()
                .map(|n| (n.key.occurrence, n.state))
                .collect::<Vec<_>>()
        );
    }
}

/// A row to build others from.
fn sample_row() -> LedgerRow {
    let c = config(MEETINGS);
    let mut sim = Sim::new();
    sim.load(&c, t("2030-05-01T00:00:00Z"));
    sim.row(&key("m1", "week", 0))
}

/// The real outbox, over a ledger shared the way the daemon shares it.
fn outbox(store: &Arc<Mutex<SqliteStore>>, config: &Config) -> MailOutbox<SqliteStore> {
    let parts = crate::daemon::mail_parts(config).expect("templates and transport");
    MailOutbox::new(store.clone(), parts)
}

/// Between the claim and the compose, a reload cancels the meeting: the outbox composes
/// nothing and the attempt ends as the withdrawal says, skipped.
#[test]
fn the_outbox_composes_no_mail_withdrawn_after_its_claim() {
    let Refused {
        store,
        row,
        failure,
        ..
    } = refused_after_cancel();
    assert_eq!(failure.message, format!("{WITHDRAWN}meeting cancelled"));
    // Settled as the loop does: the withdrawal decides, skipped.
    let outcome = after_failure(
        &row,
        &failure,
        t("2030-06-06T08:00:03Z"),
        &config(MEETINGS).scheduler,
        0.5,
    );
    let state = super::super::run::lock(&store)
        .settle(&row.key, MailState::Sending, &outcome)
        .expect("settle");
    assert_eq!(state, Some(MailState::Skipped));
}

/// What [`refused_after_cancel`] leaves: the ledger (shared as the daemon shares it, in its
/// temporary directory), the claimed row and the outbox's refusal.
struct Refused {
    dir: tempfile::TempDir,
    store: Arc<Mutex<SqliteStore>>,
    row: LedgerRow,
    failure: SendFailure,
}

/// m1's day mail claimed at 08:00 on its day; a reload cancels m1 before the outbox composes it.
fn refused_after_cancel() -> Refused {
    let c = config(MEETINGS);
    let (sim, row) = day_mail_claimed();
    let Sim { _dir: dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let outbox = outbox(&store, &c);
    replan(
        &mut *super::super::run::lock(&store),
        &cancelled(),
        t("2030-06-06T08:00:01Z"),
    )
    .expect("reload");
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(cancelled()));
    let Err(failure) = outbox.compose(&row, &rx, t("2030-06-06T08:00:02Z")) else {
        panic!("a mail withdrawn after its claim was composed");
    };
    Refused {
        dir,
        store,
        row,
        failure,
    }
}

/// The notice that superseded one never sent tells recipients the change since what they last
/// heard: "Was" is the meeting's first day, not the one the unsent notice would have announced.
#[test]
fn the_notice_after_one_superseded_shows_the_time_before_that_one() {
    let later = moved_to("2030-06-10");
    let earlier = moved_to("2030-06-06");
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.load(&later, t("2030-06-05T00:00:00Z"));
    sim.load(&earlier, t("2030-06-05T00:10:00Z"));
    let (was, now) = was_and_now(sim, &earlier, 2);
    assert!(was.contains("Friday 7 June 2030"), "{was}");
    assert!(now.contains("Thursday 6 June 2030"), "{now}");
}

/// A notice still to go out when its meeting moves without a newer notice (the meeting had
/// started, so none was queued) takes the new start: it is never sent after the meeting.
#[test]
fn a_notice_still_to_go_out_follows_a_move_that_queues_no_newer_one() {
    let later = moved_to("2030-06-10");
    let mut sim = Sim::new();
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.load(&later, t("2030-06-05T00:00:00Z"));
    let down = |_: &LedgerRow| Err(transient());
    sim.step(&later.scheduler, t("2030-06-05T00:00:00Z"), down);
    let notice = key("m1", "change", 1);
    assert_eq!(sim.row(&notice).starts, t("2030-06-10T09:00:00Z"));
    // Moved back to the day before: it has started by the reload, so no newer notice.
    let now = t("2030-06-06T09:30:00Z");
    let earlier = moved_to("2030-06-06");
    sim.load(&earlier, now);
    let row = sim.row(&notice);
    assert_eq!(
        (row.state, row.starts),
        (MailState::Pending, t("2030-06-06T09:00:00Z")),
        "{row:?}"
    );
    assert!(
        sim.store
            .rows()
            .expect("rows")
            .iter()
            .all(|r| r.key.occurrence <= 1)
    );
    reconciles_to_nothing(&sim, &earlier, now);
    let actions = sim.step(&earlier.scheduler, t("2030-06-06T12:00:00Z"), ok);
    assert!(
        !actions.contains(&Action::Send(notice.clone())),
        "{:?}",
        kinds(&actions)
    );
}

/// A withdrawal mark lives only while its attempt does: the row the attempt left skipped is
/// unmarked, so a binary from before the mark (a rollback) that brings it back to `pending`
/// with its own statement leaves no mark behind for this one to refuse the wanted mail on.
#[test]
fn a_withdrawal_mark_does_not_outlive_its_attempt_even_across_a_rollback() {
    let c = config(MEETINGS);
    let (sim, _) = in_flight(&cancelled(), "retry");
    let day = key("m1", "day", 0);
    let old = sim.row(&day);
    assert_eq!(old.state, MailState::Skipped);
    assert_eq!(old.withdrawn, None, "the attempt is over: no mark");
    // The binary before the mark reconciles the reinstated config: its reschedule statement.
    {
        let conn =
            rusqlite::Connection::open(sim._dir.path().join("ledger.sqlite3")).expect("open");
        let n = conn
            .execute(
                "UPDATE mails SET due_ms = ?5, deadline_ms = ?6, starts_ms = ?7, created_ms = ?8, \
                 state = 'pending', attempts = 0, next_attempt_ms = NULL, \
                 last_error = NULL, released = 0 \
                 WHERE meeting = ?1 AND email = ?2 AND audience = ?3 AND occurrence = ?4 \
                 AND state IN ('pending', 'held', 'skipped', 'failed')",
                rusqlite::params![
                    "m1",
                    "day",
                    "list",
                    0,
                    old.due.as_millisecond(),
                    old.deadline.as_millisecond(),
                    old.starts.as_millisecond(),
                    t("2030-06-06T08:01:00Z").as_millisecond()
                ],
            )
            .expect("old reschedule");
        assert_eq!(n, 1);
        // Worse still, a mark left on the pending row (by any older state of the file): the
        // claim clears it, as it starts a new attempt.
        conn.execute(
            "UPDATE mails SET withdrawn = 'withdrawn: stale' WHERE meeting = 'm1' AND email = 'day'",
            [],
        )
        .expect("stale mark");
    }
    // Upgraded again: the wanted mail is pending and goes out.
    let mut sim = sim;
    sim.load(&c, t("2030-06-06T08:02:00Z"));
    assert_eq!(sim.row(&day).state, MailState::Pending);
    let Sim { _dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let row = super::super::run::lock(&store)
        .claim(&day, t("2030-06-06T08:03:00Z"))
        .expect("claim")
        .expect("claimed");
    let outbox = outbox(&store, &c);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(c.clone()));
    let composed = outbox.compose(&row, &rx, t("2030-06-06T08:03:01Z"));
    let withdrawn = super::super::run::lock(&store)
        .withdrawn(&day)
        .expect("read");
    assert!(
        composed.is_ok(),
        "a wanted, pending mail was refused: {:?} (stale mark {withdrawn:?})",
        composed.err()
    );
}

/// The outbox refuses a marked row; a reload that wants the mail again (the meeting
/// reinstated, the mark cleared) lands before the attempt is settled. The refusal is a transient
/// failure, so the mail is retried, not failed for good (nothing would bring a failed row back
/// while its meeting stays put).
#[test]
fn a_withdrawal_undone_between_compose_and_settle_leaves_the_mail_to_be_sent() {
    let c = config(MEETINGS);
    let day = key("m1", "day", 0);
    let Refused {
        dir: _dir,
        store,
        row,
        failure,
    } = refused_after_cancel();
    // Reinstated before the loop takes the store lock again to settle.
    replan(
        &mut *super::super::run::lock(&store),
        &c,
        t("2030-06-06T08:00:03Z"),
    )
    .expect("reinstate");
    let outcome = after_failure(&row, &failure, t("2030-06-06T08:00:04Z"), &c.scheduler, 0.5);
    let state = super::super::run::lock(&store)
        .settle(&day, MailState::Sending, &outcome)
        .expect("settle");
    let mut sim = Sim {
        _dir,
        store: Arc::try_unwrap(store)
            .ok()
            .expect("one owner")
            .into_inner()
            .expect("lock"),
    };
    reconciles_to_nothing(&sim, &c, t("2030-06-06T08:00:05Z"));
    let actions = sim.step(&c.scheduler, t("2030-06-06T08:05:00Z"), ok);
    assert!(
        actions.contains(&Action::Send(day.clone())),
        "settled {state:?}, row {:?}; actions {:?}",
        sim.row(&day).state,
        kinds(&actions)
    );
}

/// A cancellation notice with a grace of an hour is being retried (relay down) past that grace,
/// as retries may until the start. The cancelled meeting's date is edited: no newer notice (a
/// cancelled meeting gets none), so the notice follows the start, keeping its attempts and
/// retry: it is still retried, not skipped as a first attempt past its grace.
#[test]
fn a_retried_notice_that_follows_its_meeting_keeps_its_attempts() {
    let graced = |m: &str| {
        parse_config(&config_text(m).replace(
            "on = \"cancellation\"\naudience = \"list\"\n",
            "on = \"cancellation\"\naudience = \"list\"\ngrace = \"1h\"\n",
        ))
    };
    let cancel_text = |date: &str| {
        MEETINGS
            .replace(
                "title = \"Meeting one\"",
                "title = \"Meeting one\"\nstatus = \"cancelled\"",
            )
            .replace("2030-06-07", date)
    };
    let mut sim = Sim::new();
    sim.load(&graced(MEETINGS), t("2030-05-01T00:00:00Z"));
    let cancelled = graced(&cancel_text("2030-06-07"));
    sim.load(&cancelled, t("2030-06-05T00:00:00Z"));
    let notice = key("m1", "cancel", 1);
    let down = |_: &LedgerRow| Err(transient());
    sim.step(&cancelled.scheduler, t("2030-06-05T00:00:00Z"), down);
    assert_eq!(sim.row(&notice).attempts, 1);
    // Control: past its grace (01:00), before the start, a retry is still a send.
    let rows = sim.store.rows().expect("rows");
    let control = decide(&rows, t("2030-06-05T02:00:00Z"), &cancelled.scheduler);
    assert!(
        control.contains(&Action::Send(notice.clone())),
        "{:?}",
        kinds(&control)
    );
    // The operator edits the cancelled meeting's date.
    let edited = graced(&cancel_text("2030-06-08"));
    sim.load(&edited, t("2030-06-05T01:59:00Z"));
    let row = sim.row(&notice);
    let actions = sim.step(&edited.scheduler, t("2030-06-05T02:00:00Z"), ok);
    assert!(
        actions.contains(&Action::Send(notice.clone())),
        "row after the edit: attempts {} deadline {}; actions {:?}",
        row.attempts,
        row.deadline,
        kinds(&actions)
    );
}

/// The change notices of m1 in the ledger, by SEQUENCE: (state, last error).
fn m1_notices(sim: &Sim) -> Vec<(u32, MailState, Option<String>)> {
    let mut notices: Vec<_> = (sim.store.rows().expect("rows").into_iter())
        .filter(|r| r.key.meeting == "m1" && r.key.occurrence > 0)
        .map(|r| (r.key.occurrence, r.state, r.last_error))
        .collect();
    notices.sort_by_key(|n| n.0);
    notices
}

/// m1 moved, maybe moved again, and moved back to 7 June before any notice went out: recipients
/// last heard 7 June, so no notice is queued, and the unsent one is withdrawn. A later move is
/// announced from 7 June.
#[test]
fn a_meeting_moved_back_before_its_notice_went_out_gets_no_notice() {
    for moves in [&["2030-06-10"][..], &["2030-06-10", "2030-06-12"]] {
        let mut sim = Sim::new();
        sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
        let mut at = t("2030-06-01T00:00:00Z");
        for date in moves {
            sim.load(&moved_to(date), at);
            at += jiff::SignedDuration::from_mins(10);
        }
        sim.load(&config(MEETINGS), at);
        let back = u32::try_from(moves.len()).expect("few");
        let notices = m1_notices(&sim);
        assert!(
            notices
                .iter()
                .all(|(_, state, _)| *state == MailState::Skipped),
            "{moves:?}: no notice left to go out: {notices:?}"
        );
        assert_eq!(
            notices.last().map(|n| (n.0, n.2.as_deref())),
            Some((back, Some(BACK_AS_ANNOUNCED))),
            "{moves:?}: {notices:?}"
        );
        // Restarting with the same config changes nothing.
        reconciles_to_nothing(&sim, &config(MEETINGS), at);

        // A later move says what changed since 7 June.
        let later = moved_to("2030-06-14");
        sim.load(&later, at + jiff::SignedDuration::from_mins(10));
        let sequence = back + 2;
        assert_eq!(
            m1_notices(&sim).last().map(|n| (n.0, n.1)),
            Some((sequence, MailState::Pending)),
            "{moves:?}"
        );
        let (was, now) = was_and_now(sim, &later, sequence);
        assert!(was.contains("Friday 7 June 2030"), "{moves:?}: {was}");
        assert!(now.contains("Friday 14 June 2030"), "{moves:?}: {now}");
    }
}

/// Loads [`MEETINGS`], then m1 moved to 2030-06-10 a month later, and claims the change notice
/// that queued (its key and row), as a send about to start.
fn claim_the_notice_of_a_move(sim: &mut Sim) -> (MailKey, LedgerRow) {
    sim.load(&config(MEETINGS), t("2030-05-01T00:00:00Z"));
    sim.load(&moved_to("2030-06-10"), t("2030-06-01T00:00:00Z"));
    let first = key("m1", "change", 1);
    let claimed = sim.store.claim(&first, t("2030-06-01T00:00:01Z"));
    let row = claimed.expect("claim").expect("claimed");
    (first, row)
}

/// A notice being sent when its meeting is moved back may reach its recipients: a newer one is
/// queued, and says what changed since the day it announced.
#[test]
fn a_meeting_moved_back_while_its_notice_is_being_sent_gets_a_newer_one() {
    let mut sim = Sim::new();
    let (first, _) = claim_the_notice_of_a_move(&mut sim);
    sim.load(&config(MEETINGS), t("2030-06-01T00:00:02Z"));
    let sent = sim.store.settle(
        &first,
        MailState::Sending,
        &Outcome::Sent {
            at: t("2030-06-01T00:00:03Z"),
            reply: "250 2.0.0 queued".into(),
        },
    );
    assert_eq!(sent.expect("settle"), Some(MailState::Sent));
    assert_eq!(
        m1_notices(&sim).last().map(|n| (n.0, n.1)),
        Some((2, MailState::Pending))
    );
    let (was, now) = was_and_now(sim, &config(MEETINGS), 2);
    assert!(was.contains("Monday 10 June 2030"), "{was}");
    assert!(now.contains("Friday 7 June 2030"), "{now}");
}

/// The "Was:" and "Now:" lines of m1's change notice of `sequence`, composed under `config` when
/// it fell due.
fn was_and_now(sim: Sim, config: &Config, sequence: u32) -> (String, String) {
    let notice = sim.row(&key("m1", "change", sequence));
    let Sim { _dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let outbox = outbox(&store, config);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let (message, _) = outbox.compose(&notice, &rx, notice.due).expect("composed");
    let text = String::from_utf8_lossy(&message.formatted()).to_string();
    let line = |label: &str| {
        (text.lines())
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in {text}"))
            .to_owned()
    };
    (line("Was:"), line("Now:"))
}

/// A cancellation notice carries `change` as `convenor check` renders it: the meeting as its
/// recipients last heard of it (here 7 June, moved to 10 June as it was called off), and the
/// meeting as it is now.
#[test]
fn the_outbox_gives_a_cancellation_notice_the_meeting_as_last_heard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    for set in std::fs::read_dir("templates").expect("templates") {
        let set = set.expect("entry").path();
        let to = templates.join(set.file_name().expect("name"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in std::fs::read_dir(&set).expect("set") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, to.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let body = templates.join("cancellation-notice/body.txt");
    let text = std::fs::read_to_string(&body).expect("read");
    let shown = "Planned: {{ change.before.when }}; now: {{ change.after.when }}\n";
    std::fs::write(&body, format!("{text}{shown}")).expect("write");
    let with_templates = |meetings: &str| {
        parse_config(&config_text(meetings).replace(
            "templates_dir = \"../templates\"",
            &format!("templates_dir = {:?}", templates.display().to_string()),
        ))
    };
    let planned = with_templates(MEETINGS);
    let called_off = with_templates(&MEETINGS.replace("2030-06-07", "2030-06-10").replace(
        "title = \"Meeting one\"",
        "title = \"Meeting one\"\nstatus = \"cancelled\"",
    ));
    let mut sim = Sim::new();
    sim.load(&planned, t("2030-05-01T00:00:00Z"));
    sim.load(&called_off, t("2030-06-01T00:00:00Z"));
    let notice = sim.row(&key("m1", "cancel", 1));
    let Sim { _dir, store } = sim;
    let store = Arc::new(Mutex::new(store));
    let outbox = outbox(&store, &called_off);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(called_off.clone()));
    let (message, _) = outbox
        .compose(&notice, &rx, t("2030-06-01T00:00:01Z"))
        .expect("composed");
    // The text part is quoted-printable: its soft line breaks joined, the en dash encoded.
    let text = String::from_utf8_lossy(&message.formatted()).replace("=\r\n", "");
    assert!(
        text.contains(
            "Planned: Friday 7 June 2030, 10:00=E2=80=9312:00 BST; now: Monday 10 June 2030"
        ),
        "{text}"
    );
}

/// A notice already attempted may have reached someone (a timeout after DATA; some addresses
/// of the list got it while others were put off): when its meeting is moved back, a newer
/// notice tells them, rather than the attempted one being withdrawn with none after it; its
/// "Was" is what the attempted one said.
#[test]
fn a_meeting_moved_back_after_its_notice_was_attempted_gets_a_newer_one() {
    for done in [vec![], vec!["members@example.org".to_owned()]] {
        let mut sim = Sim::new();
        let (first, row) = claim_the_notice_of_a_move(&mut sim);
        let failure = SendFailure {
            done: done.clone(),
            ..transient()
        };
        let retry = after_failure(
            &row,
            &failure,
            t("2030-06-01T00:00:02Z"),
            &moved_to("2030-06-10").scheduler,
            0.5,
        );
        let settled = sim.store.settle(&first, MailState::Sending, &retry);
        assert_eq!(
            settled.expect("settle"),
            Some(MailState::Pending),
            "{done:?}"
        );
        sim.load(&config(MEETINGS), t("2030-06-01T00:00:03Z"));
        assert_eq!(
            m1_notices(&sim)
                .iter()
                .map(|n| (n.0, n.1))
                .collect::<Vec<_>>(),
            [(1, MailState::Skipped), (2, MailState::Pending)],
            "{done:?}: the attempted notice is superseded by a newer one"
        );
        // Which says what changed since the attempted one, never "as before".
        let (was, now) = was_and_now(sim, &config(MEETINGS), 2);
        assert!(was.contains("Monday 10 June 2030"), "{done:?}: {was}");
        assert!(now.contains("Friday 7 June 2030"), "{done:?}: {now}");
    }
}

/// A meeting still to come that leaves the config without being cancelled is warned about (no
/// cancellation goes out); one cancelled first, or one already past, is not.
#[test]
fn a_meeting_removed_uncancelled_before_it_happens_is_warned_about() {
    let other = "[[meeting]]\nid = \"m2\"\ndate = 2030-07-01\nstart = \"10:00\"\nend = \"11:00\"\ntitle = \"Two\"\n";
    let both = config(&format!("{MEETINGS}{other}"));
    let without_m1 = config(other);
    let warnings = |first: &Config, now: &str| {
        let mut sim = Sim::new();
        sim.load(first, t("2030-05-01T00:00:00Z"));
        let rows = sim.store.rows().expect("rows");
        let revisions = sim.store.revisions().expect("revisions");
        reconcile(&without_m1, &rows, &revisions, &Default::default(), t(now)).warnings
    };
    let removed = warnings(&both, "2030-06-01T00:00:00Z");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(
        removed[0]
            .contains("meeting m1 (2030-06-07) is no longer in the config but was not cancelled"),
        "{removed:?}"
    );
    let cancelled_first = config(&format!(
        "{}{other}",
        MEETINGS.replace(
            "title = \"Meeting one\"",
            "title = \"Meeting one\"\nstatus = \"cancelled\""
        )
    ));
    assert_eq!(
        warnings(&cancelled_first, "2030-06-01T00:00:00Z"),
        Vec::<String>::new()
    );
    assert_eq!(
        warnings(&both, "2030-06-08T00:00:00Z"),
        Vec::<String>::new(),
        "past"
    );
}
