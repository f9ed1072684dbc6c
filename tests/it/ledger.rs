//! The SQLite ledger as a file: its settings, claims from two connections, SEQUENCE that never
//! falls, and `convenor plan` / `convenor release` on held mail through the real binary.

use convenor::{
    config::{Environment, load},
    daemon::replan,
    ledger::{MailState, SqliteStore, Store},
    revision::next_revision,
    scheduler::{Action, decide},
};
use jiff::Timestamp;

use crate::{daemon::harness::soon_config, support::convenor};

#[test]
fn the_ledger_file_is_wal_with_full_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = SqliteStore::open_in(dir.path()).expect("open");
    let conn = rusqlite::Connection::open(dir.path().join("ledger.sqlite3")).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    // `synchronous` is per connection; src/ledger/sqlite.rs checks the store's own.
}

#[test]
fn only_one_of_two_connections_claims_a_row_and_sequence_never_falls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(
        &soon_config(dir.path(), &[-5], None),
        &Environment::default(),
    )
    .expect("config")
    .config;
    let now = Timestamp::now();
    let mut a = SqliteStore::open_in(dir.path()).expect("open a");
    let mut b = SqliteStore::open_in(dir.path()).expect("open b");
    replan(&mut a, &config, now).expect("replan");
    let rows = b.rows().expect("rows");
    let [Action::Send(key)] = &decide(&rows, now, &config.scheduler)[..] else {
        panic!("one mail to send: {rows:?}");
    };
    let first = a.claim(key, now).expect("claim a");
    let second = b.claim(key, now).expect("claim b");
    assert!(first.is_some() && second.is_none(), "{first:?} {second:?}");
    assert_eq!(b.rows().expect("rows")[0].state, MailState::Sending);

    // A revision with a lower SEQUENCE than the stored one is not written.
    let meeting = &config.meetings[0];
    let (mut rev, _) = next_revision(None, &config, meeting, now);
    rev.sequence = 5;
    let replan5 = convenor::ledger::Replan {
        revisions: vec![(meeting.id.clone(), rev.clone())],
        ..Default::default()
    };
    a.apply(&replan5).expect("apply");
    rev.sequence = 2;
    b.apply(&convenor::ledger::Replan {
        revisions: vec![(meeting.id.clone(), rev)],
        ..Default::default()
    })
    .expect("apply");
    assert_eq!(a.revisions().expect("revs")[&meeting.id].sequence, 5);
}

#[test]
fn plan_shows_held_mail_and_release_lets_it_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Ten mails due within the next minutes, planned now; max_catch_up lowered to 3.
    let offsets: Vec<i64> = (0..10).map(|i| 60 + i).collect();
    let path = soon_config(dir.path(), &offsets, None);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("max_catch_up = 100", "max_catch_up = 3"),
    )
    .expect("write");
    let config = load(&path, &Environment::default()).expect("config").config;
    std::fs::create_dir_all(&config.state_dir).expect("state dir");
    let mut store = SqliteStore::open_in(&config.state_dir).expect("open");
    let now = Timestamp::now();
    replan(&mut store, &config, now).expect("replan");
    // The clock jumps half an hour ahead: all ten are found overdue by more than the guard's
    // ten minutes at once, and are held.
    let later = now + jiff::SignedDuration::from_mins(30);
    for action in decide(&store.rows().expect("rows"), later, &config.scheduler) {
        let outcome = action.outcome().expect("not a send");
        assert!(
            store
                .settle(action.key(), MailState::Pending, &outcome)
                .expect("settle")
                .is_some()
        );
    }
    drop(store);
    let p = path.to_str().expect("utf-8");
    let plan = String::from_utf8_lossy(&convenor(&["plan", "--config", p]).stdout).to_string();
    assert_eq!(
        plan.matches(" held (clock-jump guard").count(),
        10,
        "{plan}"
    );

    let out = convenor(&["release", "--config", p, "--email", "mail-3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("released 1 held mail(s)"));
    let out = convenor(&["release", "--config", p, "--meeting", "soon"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("released 9 held mail(s)"));
    let plan = String::from_utf8_lossy(&convenor(&["plan", "--config", p]).stdout).to_string();
    assert_eq!(plan.matches(" pending").count(), 10, "{plan}");
}

/// What sending asks the ledger per mail, answered from the index, agrees with the whole
/// ledger: the meeting's revision, and the first mail sent about it to thread under.
#[test]
fn one_meetings_revision_and_thread_root_agree_with_the_whole_ledger() {
    use convenor::{ledger::Outcome, model::MeetingId};

    let dir = tempfile::tempdir().expect("tempdir");
    let later = "[[meeting]]\nid = \"later\"\ndate = 2031-03-04\nstart = \"10:00\"\n\
                 end = \"11:00\"\ntitle = \"Later\"\n";
    let text = crate::daemon::harness::soon_text(&[-5, -4, -3], None, later);
    let path = crate::support::write_config(dir.path(), &text);
    let config = load(&path, &Environment::default()).expect("config").config;
    let now = Timestamp::now();
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &config, now).expect("replan");
    let id = |email: &str| {
        store
            .rows()
            .expect("rows")
            .into_iter()
            .find(|r| r.key.meeting == "soon" && r.key.email == email)
            .unwrap_or_else(|| panic!("no row for {email}"))
    };
    let (m0, m1, m2) = (id("mail-0"), id("mail-1"), id("mail-2"));
    assert_eq!(
        store.thread_root("soon", &m2.message_id).expect("root"),
        None
    );
    // mail-1 went out first, then mail-0.
    for (row, secs) in [(&m1, 10), (&m0, 20)] {
        store.claim(&row.key, now).expect("claim").expect("claimed");
        let at = Timestamp::from_second(now.as_second() + secs).expect("ts");
        let sent = Outcome::Sent {
            at,
            reply: "250 ok".into(),
        };
        assert!(
            store
                .settle(&row.key, MailState::Sending, &sent)
                .expect("settle")
                .is_some()
        );
    }
    let whole = |meeting: &str, except: &str| {
        store
            .rows()
            .expect("rows")
            .into_iter()
            .filter(|r| r.key.meeting == meeting && r.state == MailState::Sent)
            .filter(|r| r.message_id != except)
            .min_by_key(|r| (r.sent_at, r.message_id.clone()))
            .map(|r| r.message_id)
    };
    for (meeting, except, want) in [
        ("soon", &m2.message_id, Some(&m1.message_id)),
        ("soon", &m1.message_id, Some(&m0.message_id)),
        ("soon", &m0.message_id, Some(&m1.message_id)),
        ("later", &m2.message_id, None),
    ] {
        let got = store.thread_root(meeting, except).expect("root");
        assert_eq!(got.as_ref(), want, "{meeting} except {except}");
        assert_eq!(got, whole(meeting, except));
    }
    let all = store.revisions().expect("revisions");
    for m in ["soon", "later", "absent"] {
        let m = MeetingId::parse(m).expect("id");
        assert_eq!(store.revision(&m).expect("revision"), all.get(&m).cloned());
    }
    assert!(all.contains_key(&MeetingId::parse("later").expect("id")));
}

/// The plan stamp lets a restart with the same config skip reconciling, and nothing else: a
/// config that differs in any way reconciles in full, and writes not stamped with a config
/// clear the stamp.
#[test]
fn the_plan_stamp_skips_only_an_unchanged_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load_text = |text: &str| {
        let path = crate::support::write_config(dir.path(), text);
        load(&path, &Environment::default()).expect("config").config
    };
    let a = load_text(&crate::daemon::harness::soon_text(&[600, 1200], None, ""));
    let b = load_text(&crate::daemon::harness::soon_text(&[600, 900], None, ""));
    let digest = |c: &convenor::model::Config| convenor::digest::config_digest(c).to_string();
    assert_ne!(
        digest(&a),
        digest(&b),
        "the configs differ in one mail's offset"
    );

    let now = Timestamp::now();
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    assert_eq!(
        store.plan_stamp().expect("stamp"),
        None,
        "a new ledger has none"
    );
    replan(&mut store, &a, now).expect("replan a");
    assert_eq!(store.plan_stamp().expect("stamp"), Some(digest(&a)));
    let pending = |s: &SqliteStore| {
        s.rows()
            .expect("rows")
            .iter()
            .filter(|r| r.state == MailState::Pending)
            .map(|r| r.key.email.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(pending(&store), ["mail-0", "mail-1"]);

    // Withdraw mail-1 behind the reconciliation's back, keeping the stamp: reconciling `a`
    // again would bring it back, so its staying withdrawn shows the reconciliation was skipped.
    let mail1 = store.rows().expect("rows")[1].key.clone();
    let withdraw = |stamp: Option<String>| convenor::ledger::Replan {
        withdrawals: vec![(mail1.clone(), "withdrawn: by the test".to_owned())],
        stamp,
        ..Default::default()
    };
    store.apply(&withdraw(Some(digest(&a)))).expect("apply");
    replan(&mut store, &a, now).expect("replan a again");
    assert_eq!(
        pending(&store),
        ["mail-0"],
        "same config, same build: skipped"
    );

    // Another config reconciles in full (mail-1 moves and is wanted again) and is stamped.
    replan(&mut store, &b, now).expect("replan b");
    assert_eq!(pending(&store), ["mail-0", "mail-1"]);
    assert_eq!(store.plan_stamp().expect("stamp"), Some(digest(&b)));
    let due_b = store.rows().expect("rows")[1].due;

    // Writes without a stamp clear it: the next reconciliation of `b` runs and revives mail-1.
    store.apply(&withdraw(None)).expect("apply");
    assert_eq!(store.plan_stamp().expect("stamp"), None);
    replan(&mut store, &b, now).expect("replan b again");
    assert_eq!(pending(&store), ["mail-0", "mail-1"]);
    assert_eq!(store.rows().expect("rows")[1].due, due_b);

    // Back to `a`: reconciled, mail-1 due at `a`'s time again.
    replan(&mut store, &a, now).expect("replan a at last");
    assert_ne!(store.rows().expect("rows")[1].due, due_b);
    assert_eq!(store.plan_stamp().expect("stamp"), Some(digest(&a)));
}

/// The config digest changes with any field the ledger or the feeds depend on, down to a
/// lead's address, the feed token and an attached agenda.
#[test]
fn the_config_digest_changes_with_every_kind_of_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = crate::support::example_config_text();
    let load_text = |text: &str| {
        let path = crate::support::write_config(dir.path(), text);
        load(&path, &Environment::default()).expect("config").config
    };
    let digest = |c: &convenor::model::Config| convenor::digest::config_digest(c);
    let original = load_text(&base);
    assert_eq!(
        digest(&original),
        digest(&load_text(&base)),
        "deterministic"
    );
    let edits: [(&str, &str); 3] = [
        ("start = \"10:00\"", "start = \"10:05\""),
        (
            "time_zone = \"Europe/London\"",
            "time_zone = \"Europe/Dublin\"",
        ),
        ("title = \"", "title = \"X"),
    ];
    for (from, to) in edits {
        assert!(base.contains(from), "{from}");
        let edited = load_text(&base.replacen(from, to, 1));
        assert_ne!(digest(&original), digest(&edited), "{from} -> {to}");
    }
    let mut lead = original.clone();
    lead.priorities[0].lead.email = "someone.else@example.org".parse().expect("address");
    assert_ne!(digest(&original), digest(&lead), "a lead's address");
    let mut token = original.clone();
    token.http.feed_token =
        Some(convenor::model::FeedToken::parse("abcdefghijklmnopq").expect("token"));
    let mut token2 = original.clone();
    token2.http.feed_token =
        Some(convenor::model::FeedToken::parse("abcdefghijklmnopr").expect("token"));
    assert_ne!(
        digest(&token),
        digest(&token2),
        "the feed token (redacted in Debug)"
    );
    let mut agenda = original.clone();
    agenda.agenda.0.insert(
        original.meetings[0].id.as_str().to_owned(),
        convenor::agenda::Agenda::default(),
    );
    assert_ne!(digest(&original), digest(&agenda), "an attached agenda");
    // The same zone name with other rules (the system's tzdata updated): not the same config.
    let mut rules = original.clone();
    rules.network.time_zone = jiff::tz::TimeZone::posix("GMT0BST,M3.5.0/1,M10.4.0").expect("tz");
    assert_ne!(digest(&original), digest(&rules), "the zone's rules");
    let mut same_rules = original.clone();
    same_rules.network.time_zone = jiff::tz::TimeZone::get("Europe/London").expect("tz");
    assert_eq!(
        digest(&original),
        digest(&same_rules),
        "the zone looked up again"
    );
}

/// The indexed queries the scheduler runs every pass answer exactly what the pure definitions
/// answer over every row: the due rows (`pending`, `due <= now`) and the next wake (due
/// instants, and retries not before their next attempt).
#[test]
fn due_rows_and_next_wake_from_the_index_match_the_whole_ledger() {
    use convenor::ledger::Outcome;
    use jiff::SignedDuration;
    let dir = tempfile::tempdir().expect("tempdir");
    let offsets = [-600, -60, 60, 600, 900];
    let config = load(
        &soon_config(dir.path(), &offsets, None),
        &Environment::default(),
    )
    .expect("config")
    .config;
    // Whole milliseconds, as the ledger stores instants.
    let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).expect("now");
    let at = |secs: i64| {
        now.checked_add(SignedDuration::from_secs(secs))
            .expect("add")
    };
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &config, now).expect("replan");
    let key = |i: usize| {
        store
            .rows()
            .expect("rows")
            .into_iter()
            .find(|r| r.key.email == format!("mail-{i}"))
            .expect("row")
            .key
    };
    let keys: Vec<_> = (0..offsets.len()).map(key).collect();
    let check = |store: &SqliteStore, what: &str| {
        let all = store.rows().expect("rows");
        for t in [-3600, -300, 0, 30, 120, 700, 1000, 1300, 7200] {
            let expected: Vec<_> = all
                .iter()
                .filter(|r| r.state == MailState::Pending && r.due <= at(t))
                .cloned()
                .collect();
            assert_eq!(
                store.due_rows(at(t)).expect("due"),
                expected,
                "{what} at {t}"
            );
        }
        let wake = store.next_wake().expect("wake");
        assert_eq!(wake, convenor::scheduler::next_wake(&all), "{what}");
        wake
    };
    assert_eq!(
        check(&store, "as planned"),
        Some(keys_due(&store, &keys[0]))
    );

    // mail-0 fails and retries after 20 minutes; mail-1 is sent.
    store.claim(&keys[0], now).expect("claim").expect("claimed");
    let retry = |at: Timestamp| Outcome::Retry {
        at,
        error: "451 try later".into(),
        done: Vec::new(),
    };
    assert!(
        store
            .settle(&keys[0], MailState::Sending, &retry(at(1200)))
            .expect("settle")
            .is_some()
    );
    store.claim(&keys[1], now).expect("claim").expect("claimed");
    let sent = Outcome::Sent {
        at: now,
        reply: "250 ok".into(),
    };
    assert!(
        store
            .settle(&keys[1], MailState::Sending, &sent)
            .expect("settle")
            .is_some()
    );
    assert_eq!(
        check(&store, "a retry and a sent"),
        Some(keys_due(&store, &keys[2]))
    );

    // mail-2 skipped, mail-3 held, mail-4 retried after its due instant: the earliest wake is
    // now mail-4's next attempt, found through the index of retrying rows.
    let skipped = Outcome::Skipped {
        reason: "test".into(),
    };
    assert!(
        store
            .settle(&keys[2], MailState::Pending, &skipped)
            .expect("settle")
            .is_some()
    );
    let held = Outcome::Held {
        reason: "test".into(),
    };
    assert!(
        store
            .settle(&keys[3], MailState::Pending, &held)
            .expect("settle")
            .is_some()
    );
    store
        .claim(&keys[4], at(901))
        .expect("claim")
        .expect("claimed");
    assert!(
        store
            .settle(&keys[4], MailState::Sending, &retry(at(960)))
            .expect("settle")
            .is_some()
    );
    assert_eq!(check(&store, "retries only"), Some(at(960)));

    // Nothing pending: no wake.
    for (k, a) in [(&keys[0], at(1200)), (&keys[4], at(960))] {
        store.claim(k, a).expect("claim").expect("claimed");
        assert!(
            store
                .settle(k, MailState::Sending, &sent)
                .expect("settle")
                .is_some()
        );
    }
    assert_eq!(check(&store, "all done"), None);
}

fn keys_due(store: &SqliteStore, key: &convenor::ledger::MailKey) -> Timestamp {
    store
        .rows()
        .expect("rows")
        .into_iter()
        .find(|r| &r.key == key)
        .expect("row")
        .due
}

/// A first plan's rows go in many to a statement: every row reads back as reconciled, across
/// whole batches and a remainder, and inserting rows already there changes none of them.
#[test]
fn rows_inserted_in_batches_read_back_whole_and_never_overwrite() {
    use convenor::ledger::Replan;
    let config = crate::perf::generated::config(41, &Default::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    // Whole milliseconds, as the ledger stores instants.
    let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).expect("now");
    let mut inserts =
        convenor::scheduler::reconcile(&config, &[], &Default::default(), &Default::default(), now)
            .replan
            .inserts;
    assert!(
        inserts.len() > 4 * 64 && !inserts.len().is_multiple_of(64),
        "{}",
        inserts.len()
    );
    let replan = Replan {
        inserts: inserts.clone(),
        ..Default::default()
    };
    store.apply(&replan).expect("apply");
    let mut rows = store.rows().expect("rows");
    let by_key = |a: &convenor::ledger::LedgerRow, b: &convenor::ledger::LedgerRow| {
        a.key.to_string().cmp(&b.key.to_string())
    };
    rows.sort_by(by_key);
    inserts.sort_by(by_key);
    assert_eq!(rows, inserts);

    // One row sent; inserting every row again leaves it sent and the others as they were.
    let first = &rows[0].key;
    let due = rows[0].due;
    store.claim(first, due).expect("claim").expect("claimed");
    let sent = convenor::ledger::Outcome::Sent {
        at: due,
        reply: "250 ok".into(),
    };
    assert!(
        store
            .settle(first, MailState::Sending, &sent)
            .expect("settle")
            .is_some()
    );
    let before = store.rows().expect("rows");
    store.apply(&replan).expect("apply again");
    assert_eq!(store.rows().expect("rows"), before);
}

/// A bulk write (a first plan) commits durably without copying its pages into the database
/// file: a second connection reads every row from the WAL, the copy is left to the checkpoint
/// the store hands out once (src/sqlite_file.rs checks that the automatic one comes back on).
#[test]
fn a_bulk_plan_leaves_the_copy_into_the_database_file_to_its_checkpoint() {
    // Enough rows for more WAL pages than the automatic checkpoint's threshold (1,000 pages).
    let config = crate::perf::generated::config(2000, &Default::default());
    let file_len = |dir: &std::path::Path, name: &str| {
        std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
    };
    let now = Timestamp::now();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    let empty = file_len(dir.path(), "ledger.sqlite3");
    replan(&mut store, &config, now).expect("replan");
    let rows = SqliteStore::open_in(dir.path())
        .expect("second connection")
        .rows()
        .expect("rows");
    assert!(rows.len() >= convenor::ledger::BULK_ROWS, "{}", rows.len());
    assert_eq!(
        file_len(dir.path(), "ledger.sqlite3"),
        empty,
        "no checkpoint at the commit"
    );
    assert!(file_len(dir.path(), "ledger.sqlite3-wal") > 100 * 4096);
    let checkpoint = store.take_checkpoint().expect("a checkpoint is due");
    assert!(store.take_checkpoint().is_none(), "handed out once");
    let (log, done) =
        convenor::sqlite_file::checkpoint(&dir.path().join("ledger.sqlite3")).expect("checkpoint");
    assert!(
        log > u64::from(convenor::sqlite_file::AUTOCHECKPOINT_PAGES) && done == log,
        "{done} of {log} frames"
    );
    assert!(file_len(dir.path(), "ledger.sqlite3") > 100 * 4096);
    checkpoint.run(); // nothing left to copy; it must not fail either
    drop(store);
    let reopened = SqliteStore::open_in(dir.path()).expect("reopen");
    assert_eq!(reopened.rows().expect("rows").len(), rows.len());

    // A small write is not a bulk one.
    let few = crate::perf::generated::config(3, &Default::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &few, now).expect("replan");
    assert!(store.take_checkpoint().is_none());
}

/// The daemon's first start plans in bulk and copies the WAL into the ledger file after READY,
/// on its own (a restart, or the next big write, would otherwise be left to do it).
#[test]
fn the_daemon_checkpoints_its_first_plan_after_ready() {
    use crate::daemon::harness::{Daemon, wait_for};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::sendfile::generated_config(dir.path(), 2000);
    let ledger = dir.path().join("state").join("ledger.sqlite3");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    let log = daemon.log.clone();
    wait_for(
        "the checkpoint of the first plan",
        || std::fs::metadata(&ledger).is_ok_and(|m| m.len() > 1000 * 4096),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    daemon.signal("TERM");
}

/// A prepared plan's revisions are what the ledger holds once the plan is written (the first
/// start renders the feeds from them while it writes): on a first plan, after a meeting moved,
/// was retitled, was removed and came back as it was. An unchanged config prepares nothing.
#[test]
fn a_pending_plans_revisions_are_the_ledgers_after_it_is_written() {
    use convenor::daemon::PendingPlan;
    let parse = |text: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bench.toml");
        convenor::config::parse(&path, text, &Environment::default())
            .expect("config")
            .config
    };
    let text = crate::perf::generated::config_toml(12, &Default::default());
    let moved = text.replacen("start = \"14:00\"", "start = \"15:00\"", 1);
    let retitled = moved.replacen("LEDNet meeting 4\"", "LEDNet meeting four\"", 1);
    let third = retitled
        .find("[[meeting]]\nid = \"2027-01-06\"")
        .expect("meeting 3");
    let next = third
        + 1
        + retitled[third + 1..]
            .find("[[meeting]]")
            .expect("meeting 4");
    let removed = format!("{}{}", &retitled[..third], &retitled[next..]);
    let steps = [&text, &moved, &retitled, &removed, &text];

    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    let mut now = Timestamp::from_second(1_790_000_000).expect("now");
    for (i, step) in steps.into_iter().enumerate() {
        let config = parse(step);
        now += jiff::SignedDuration::from_hours(1);
        let plan = PendingPlan::prepare(&store, &config, now)
            .expect("prepare")
            .expect("a changed config has a plan");
        store.apply(&plan.replan).expect("apply");
        assert_eq!(
            store.revisions().expect("revisions"),
            plan.revisions,
            "step {i}"
        );
        assert!(
            PendingPlan::prepare(&store, &config, now)
                .expect("prepare")
                .is_none(),
            "step {i}: reconciled already"
        );
    }
    let sequences: Vec<u32> = store
        .revisions()
        .expect("revisions")
        .values()
        .map(|r| r.sequence)
        .collect();
    assert!(sequences.iter().any(|&s| s >= 2), "{sequences:?}");
    assert_eq!(sequences.len(), 12, "a removed meeting's revision stays");
}

/// The recipients a failed attempt was done with accumulate in the row across retries and are
/// read back from the file; a ledger written before the column existed gets it when opened
/// (its rows intact, none done with), and an old binary's INSERT without it still works.
#[test]
fn recipients_done_with_accumulate_and_an_old_ledger_gets_the_column() {
    use convenor::ledger::Outcome;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(
        &soon_config(dir.path(), &[-5], None),
        &Environment::default(),
    )
    .expect("config")
    .config;
    let now = Timestamp::now();
    let file = dir.path().join("ledger.sqlite3");
    {
        let mut store = SqliteStore::open_in(dir.path()).expect("open");
        replan(&mut store, &config, now).expect("replan");
    }
    // Make it a ledger of the version before: the column dropped (SQLite 3.35+).
    {
        let conn = rusqlite::Connection::open(&file).expect("open");
        conn.execute_batch("ALTER TABLE mails DROP COLUMN done_rcpt")
            .expect("drop column");
    }
    let mut store = SqliteStore::open_in(dir.path()).expect("open the old ledger");
    let rows = store.rows().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].done_recipients.is_empty());
    let key = rows[0].key.clone();
    let retry = |done: &[&str]| Outcome::Retry {
        at: now,
        error: "put off".into(),
        done: done.iter().map(|s| (*s).to_owned()).collect(),
    };
    for done in [
        &["a@example.org", "b@example.org"][..],
        &[],
        &["c@example.org"],
    ] {
        store.claim(&key, now).expect("claim").expect("claimed");
        assert!(
            store
                .settle(&key, MailState::Sending, &retry(done))
                .expect("settle")
                .is_some()
        );
    }
    let reopened = SqliteStore::open_in(dir.path()).expect("reopen");
    let row = reopened.rows().expect("rows").remove(0);
    assert_eq!(
        row.done_recipients,
        ["a@example.org", "b@example.org", "c@example.org"]
    );
    assert_eq!((row.state, row.attempts), (MailState::Pending, 3));
    // A binary of the version before inserts without the column.
    let conn = rusqlite::Connection::open(&file).expect("open");
    conn.execute(
        "INSERT INTO mails (meeting, email, audience, occurrence, due_ms, deadline_ms, \
         starts_ms, state, message_id, created_ms) \
         VALUES ('old', 'e', 'list', 0, 0, 0, 0, 'sent', '<x@y>', 0)",
        [],
    )
    .expect("an old INSERT");
    let rows = reopened.rows().expect("rows");
    assert!(
        rows.iter()
            .any(|r| r.key.meeting == "old" && r.done_recipients.is_empty())
    );
}

/// A ledger file from before rows kept the recipients done with and withdrawal marks gets
/// both columns when opened. A reload that drops the mail from the schedule while it is being
/// sent marks it, the mark is in the file, and the start after a crash leaves the mail skipped
/// for that reason instead of sending it again.
#[test]
fn a_mail_withdrawn_in_flight_is_not_sent_again_after_a_crash_in_an_upgraded_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_of = |offsets: &[i64]| {
        load(
            &soon_config(dir.path(), offsets, None),
            &Environment::default(),
        )
        .expect("config")
        .config
    };
    let now = Timestamp::now();
    let file = dir.path().join("ledger.sqlite3");
    {
        let mut store = SqliteStore::open_in(dir.path()).expect("open");
        replan(&mut store, &config_of(&[-5]), now).expect("replan");
    }
    {
        let conn = rusqlite::Connection::open(&file).expect("open");
        conn.execute_batch(
            "ALTER TABLE mails DROP COLUMN withdrawn; ALTER TABLE mails DROP COLUMN done_rcpt",
        )
        .expect("drop columns");
    }
    let key = {
        let mut store = SqliteStore::open_in(dir.path()).expect("open the old ledger");
        let key = store.rows().expect("rows")[0].key.clone();
        store.claim(&key, now).expect("claim").expect("claimed");
        // SIGHUP with the mail gone from the schedule, while it is being sent; then a crash.
        replan(&mut store, &config_of(&[]), now).expect("reload");
        key
    };
    let reason = "withdrawn: the email is no longer in the schedule";
    let mut store = SqliteStore::open_in(dir.path()).expect("reopen");
    assert_eq!(
        store.withdrawn(&key).expect("mark").as_deref(),
        Some(reason)
    );
    assert_eq!(store.recover_sending().expect("recover"), []);
    let row = store.rows().expect("rows").remove(0);
    assert_eq!(row.state, MailState::Skipped, "{row:?}");
    assert_eq!(row.last_error.as_deref(), Some(reason));
}

/// A ledger file written before zones were recorded (its revisions carry no zone) is brought
/// up to date by the next reconciliation: every revision and every history row (of a meeting
/// since removed too) gains the zone configured then, with nothing visible moving (same
/// SEQUENCE and LAST-MODIFIED, no notice). A change of zone after that is seen as the move it
/// is: SEQUENCE 1, one change notice, and the revision before it names the old zone.
#[test]
fn revisions_stored_without_a_zone_gain_it_and_a_later_change_of_zone_is_a_move() {
    use crate::support::write_config;
    let dir = tempfile::tempdir().expect("tempdir");
    let notice = "[[email]]\nid = \"change-notice\"\ntemplate = \"change-notice\"\non = \"change\"\n\
                  audience = \"list\"\n";
    let text = crate::daemon::harness::soon_text(&[600], None, notice);
    let zone = ["Europe/London", "Asia/Tokyo", "America/New_York"]
        .into_iter()
        .find(|z| text.contains(&format!("time_zone = \"{z}\"")))
        .expect("soon_text picks one of three zones");
    // West of it: the meeting moves later, and its notice is still due.
    let west = match zone {
        "Europe/London" => "America/New_York",
        "Asia/Tokyo" => "Europe/London",
        _ => "America/Los_Angeles",
    };
    let load_text = |text: &str| {
        load(&write_config(dir.path(), text), &Environment::default())
            .expect("config")
            .config
    };
    let config = load_text(&text);
    let t0 = Timestamp::now();
    let t1 = t0
        .checked_add(jiff::SignedDuration::from_secs(1))
        .expect("t1");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &config, t0).expect("plan");
    let soon = convenor::model::MeetingId::parse("soon").expect("id");
    let stored = store.revision(&soon).expect("read").expect("revision");
    assert_eq!(stored.significant.zone.as_deref(), Some(zone));

    // As an earlier build left it: no zone in the JSON, and no plan stamp of this build.
    let conn = rusqlite::Connection::open(dir.path().join("ledger.sqlite3")).expect("open");
    for table in ["meeting_revisions", "revision_history"] {
        let changed = conn
            .execute(
                &format!(
                    "UPDATE {table} SET revision = json_remove(revision, '$.significant.zone')"
                ),
                [],
            )
            .expect("strip the zone");
        assert_eq!(changed, 1, "{table}");
    }
    conn.execute("DELETE FROM plan_stamp", []).expect("stamp");
    // And the history of a meeting no longer in the config, written then too.
    conn.execute(
        "INSERT INTO revision_history (meeting, sequence, revision) \
         SELECT 'gone', 0, revision FROM revision_history WHERE meeting = 'soon'",
        [],
    )
    .expect("an older history row");
    let old = store.revision(&soon).expect("read").expect("revision");
    assert_eq!(old.significant.zone, None);

    replan(&mut store, &config, t1).expect("replan");
    let recorded = store.revision(&soon).expect("read").expect("revision");
    assert_eq!(recorded, stored, "the zone recorded, nothing else moved");
    assert_eq!(
        store
            .revision_at(&soon, 0)
            .expect("read")
            .and_then(|r| r.significant.zone),
        Some(zone.to_owned())
    );
    let gone = convenor::model::MeetingId::parse("gone").expect("id");
    assert_eq!(
        store
            .revision_at(&gone, 0)
            .expect("read")
            .and_then(|r| r.significant.zone),
        Some(zone.to_owned()),
        "history rows without a zone get the one configured then"
    );
    let notices = |store: &SqliteStore| {
        store
            .rows()
            .expect("rows")
            .into_iter()
            .filter(|r| r.key.email == "change-notice")
            .map(|r| r.key.occurrence)
            .collect::<Vec<_>>()
    };
    assert_eq!(notices(&store), Vec::<u32>::new());

    let moved = load_text(&text.replace(
        &format!("time_zone = \"{zone}\""),
        &format!("time_zone = \"{west}\""),
    ));
    replan(&mut store, &moved, t1).expect("replan in the new zone");
    let after = store.revision(&soon).expect("read").expect("revision");
    assert_eq!(after.sequence, 1);
    assert_eq!(after.significant.zone.as_deref(), Some(west));
    assert_eq!(notices(&store), [1]);
    let before = store
        .revision_at(&soon, 0)
        .expect("read")
        .expect("the revision before");
    assert_eq!(before.significant.zone.as_deref(), Some(zone));
}

/// A change of zone mid-year moves every meeting: each one's SEQUENCE rises (the feed shows
/// new instants for all), but change notices are queued only for the meetings still to come;
/// one for a meeting that has started could only be skipped.
#[test]
fn a_change_of_zone_queues_notices_only_for_meetings_to_come() {
    use crate::support::{example_config_text, write_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let load_text = |text: &str| {
        load(&write_config(dir.path(), text), &Environment::default())
            .expect("config")
            .config
    };
    let text = example_config_text();
    let london = load_text(&text);
    let paris = load_text(&text.replace(
        "time_zone = \"Europe/London\"",
        "time_zone = \"Europe/Paris\"",
    ));
    assert_eq!(paris.network.time_zone_name, "Europe/Paris");
    let t0: Timestamp = "2023-01-05T08:00:00Z".parse().expect("t0");
    // After the February and April meetings, before June's.
    let t1: Timestamp = "2023-05-01T08:00:00Z".parse().expect("t1");
    let mut store = SqliteStore::open_in(dir.path()).expect("open");
    replan(&mut store, &london, t0).expect("plan");
    replan(&mut store, &paris, t1).expect("replan in Paris");
    let revisions = store.revisions().expect("revisions");
    assert_eq!(revisions.len(), 5);
    assert!(revisions.values().all(|r| r.sequence == 1), "{revisions:?}");
    let mut noticed: Vec<String> = store
        .rows()
        .expect("rows")
        .into_iter()
        .filter(|r| r.key.email == "change-notice")
        .map(|r| r.key.meeting)
        .collect();
    noticed.dedup();
    assert_eq!(noticed, ["2023-06-07", "2023-09-29", "2023-11-30"]);
}
