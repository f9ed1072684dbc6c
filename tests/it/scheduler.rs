//! The scheduler through the real binary and a real SMTP server on loopback: a kill -9 after
//! the server took a mail and before its 250 sends that mail again, with the same Message-ID,
//! and no other twice; kill -9 at random points never loses a mail; a server that is down gets
//! retries with backoff, and the mail goes out once it is back; a refused SMTP password is
//! retried, a refused recipient is not.

use std::{collections::HashSet, time::Duration};

use crate::daemon::harness::*;

/// [`soon_text`] with subjects keyed by [`keyed_templates`] and a 60 s SMTP timeout.
fn keyed_config(dir: &std::path::Path, offsets: &[i64], port: u16) -> std::path::PathBuf {
    let templates = keyed_templates(dir);
    let text = soon_text(offsets, Some(port), "")
        .replace(
            "# templates_dir = \"templates\"",
            &format!("templates_dir = \"{}\"", templates.display()),
        )
        .replace("timeout = \"5s\"\n", "timeout = \"60s\"\n");
    crate::support::write_config(dir, &text)
}

/// The window at-least-once delivery allows: the server stored the mail and the daemon dies
/// before its 250 arrives. The restarted daemon sends that mail again with the same Message-ID
/// (`recover_sending`), sends the others once, and every mail has its own Message-ID.
#[test]
fn kill_9_between_the_servers_taking_a_mail_and_its_250_sends_it_again_with_its_message_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let holding = Sink::start_holding(&mails);
    let port = holding.port;
    // The SMTP timeout (60 s) only has to outlast the few polls between the sink's storing a
    // mail and the kill below; were it to run out first, the daemon would settle that attempt,
    // and the check on the row's state after the kill fails the test (never a false pass).
    let config = keyed_config(dir.path(), &[1, 2, 3], port);
    let state = dir.path().join("state");
    let keys: Vec<String> = (0..3).map(|i| format!("soon/mail-{i}")).collect();

    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve-1.log"));
    daemon.wait_ready();
    wait_for(
        "a mail stored by the sink that holds its 250",
        || !subject_keys(&mails).is_empty(),
        || daemon.log_text(),
    );
    let log = daemon.log_text();
    drop(daemon); // kill -9
    // Nothing more can reach the sink from a dead client: what it holds now is final.
    let held = subject_keys(&mails);
    let rows = ledger_rows(&state);
    assert_eq!(rows.len(), keys.len(), "{rows:?}");
    for key in held.keys() {
        assert_eq!(held[key].len(), 1, "{key}: {held:?}");
        let row = &rows[&format!("{key}/list")];
        assert_eq!(
            (row.0.as_str(), row.1),
            ("sending", 1),
            "{key}: killed in its first attempt, before any settle\n{log}"
        );
    }
    drop(holding);

    let _sink = Sink::start(&mails, Some(port));
    let daemon = Daemon::spawn(&config, &dir.path().join("serve-2.log"));
    wait_for(
        "every mail sent after the restart",
        || {
            let rows = ledger_rows(&state);
            rows.len() == keys.len() && rows.values().all(|r| r.0 == "sent")
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    drop(daemon);

    let got = subject_keys(&mails);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), keys, "{got:?}");
    for (key, ids) in &got {
        if held.contains_key(key) {
            assert_eq!(ids.len(), 2, "{key}: held, then sent again: {got:?}");
            assert_eq!(
                ids[0], ids[1],
                "{key}: the copy sent again keeps its Message-ID"
            );
        } else {
            assert_eq!(ids.len(), 1, "{key}: never in flight at the kill: {got:?}");
        }
    }
    let distinct: HashSet<&String> = got.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "one Message-ID per mail, none shared by two mails: {got:?}"
    );
}

/// Kill -9 at random points (start-up, claims, sends): no mail is lost, any copy sent again
/// carries its mail's Message-ID, and no two mails share one. How many copies are sent again
/// varies from run to run; the test above makes one for certain.
#[test]
fn kill_9_at_random_points_loses_nothing_and_repeats_keep_their_message_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start(&mails, None);
    let offsets: Vec<i64> = (0..8).map(|i| 2 + i).collect();
    let config = keyed_config(dir.path(), &offsets, sink.port);
    let state = dir.path().join("state");

    for i in 0..15 {
        let daemon = Daemon::spawn(&config, &dir.path().join(format!("serve-{i}.log")));
        // Let it live a random while (start-up, claims and sends happen in here), then kill -9.
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..900)));
        drop(daemon);
    }
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve-final.log"));
    daemon.wait_ready();
    wait_for(
        "every mail sent",
        || {
            let rows = ledger_rows(&state);
            rows.len() == offsets.len() && rows.values().all(|r| r.0 == "sent")
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    drop(daemon);

    let got = subject_keys(&mails);
    let keys: Vec<String> = (0..offsets.len())
        .map(|i| format!("soon/mail-{i}"))
        .collect();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        keys,
        "every mail arrived at least once"
    );
    for (key, ids) in &got {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{key}: a repeat with another Message-ID: {ids:?}"
        );
    }
    let distinct: HashSet<&String> = got.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "one Message-ID per mail, none shared by two mails: {got:?}"
    );
    let repeats: usize = got.values().map(|ids| ids.len() - 1).sum();
    eprintln!(
        "{} mails, {repeats} repeat(s) caused by kill -9",
        keys.len()
    );
}

#[test]
fn a_server_that_is_down_gets_retries_and_the_mail_goes_out_when_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let port = Sink::start(&mails, None).port; // started to learn a free port, then stopped
    let config = soon_config(dir.path(), &[1], Some(port));
    let state = dir.path().join("state");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    // The row is read between attempts: an attempt claims it (`sending`, its count already
    // raised) before it fails, so a read during one sees `sending`.
    let mut row = None;
    wait_for(
        "at least three attempts against the stopped server, the last one settled",
        || {
            row = ledger_rows(&state)
                .get("soon/mail-0/list")
                .filter(|r| r.1 >= 3 && r.0 != "sending")
                .cloned();
            row.is_some()
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    let row = row.expect("a settled row");
    assert_eq!(row.0, "pending");
    assert!(
        row.2
            .as_deref()
            .is_some_and(|e| e.starts_with("transient failure")),
        "{row:?}"
    );
    let log = daemon.log_text();
    assert!(
        log.matches("will retry at").count() >= 2 && log.contains("soon") && log.contains("mail-0"),
        "{log}"
    );
    // The plan shows the failure with the server's reply.
    let plan = crate::support::convenor(&["plan", "--config", config.to_str().expect("utf-8")]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("pending (transient failure"), "{plan}");

    let _sink = Sink::start(&mails, Some(port));
    wait_for(
        "delivery once the server is back",
        || {
            by_key(&mails).contains_key("soon/mail-0/list")
                && ledger_rows(&state)["soon/mail-0/list"].0 == "sent"
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    assert_eq!(by_key(&mails)["soon/mail-0/list"].len(), 1);
}

/// The loop driven by a test clock: a real ledger, the real file outbox, a clock the test moves;
/// the loop wakes on Notify after a "reload" and stops when its shutdown future completes.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_follows_the_clock_it_is_given_and_stops_on_its_shutdown_future() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    };

    use convenor::{
        config::{Environment, load},
        daemon::mail_parts,
        daemon::replan,
        ledger::{SqliteStore, Store as _},
        scheduler::{MailOutbox, Scheduler},
    };
    use jiff::Timestamp;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(
        &soon_config(dir.path(), &[120], None),
        &Environment::default(),
    )
    .expect("config")
    .config;
    std::fs::create_dir_all(&config.state_dir).expect("state dir");
    let mut store = SqliteStore::open_in(&config.state_dir).expect("open");
    let start = Timestamp::now();
    replan(&mut store, &config, start).expect("replan");
    let due = store.rows().expect("rows")[0].due;

    let clock_ms = Arc::new(AtomicI64::new(start.as_millisecond()));
    let clock = {
        let ms = clock_ms.clone();
        move || Timestamp::from_millisecond(ms.load(Ordering::SeqCst)).expect("ts")
    };
    let (_config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let wake = Arc::new(tokio::sync::Notify::new());
    let store = Arc::new(Mutex::new(store));
    let parts = mail_parts(&config).expect("templates and transport");
    let scheduler = Scheduler::new(
        store.clone(),
        MailOutbox::new(store.clone(), parts),
        clock,
        config_rx,
        wake.clone(),
    );
    let outbox = config.state_dir.join("outbox");
    let files = || std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0);

    // One pass a second before the due instant sends nothing and names the next wake.
    clock_ms.store(due.as_millisecond() - 1000, Ordering::SeqCst);
    assert_eq!(scheduler.tick().await.expect("tick"), Some(due));
    assert_eq!(files(), 0);

    // The loop runs; the clock moves to the due instant and a Notify wakes the loop if it was
    // already asleep (as a reload does): the mail goes out through the file outbox.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(async {
        let _ = stop_rx.await;
    }));
    clock_ms.store(due.as_millisecond(), Ordering::SeqCst);
    wake.notify_one();
    let state = config.state_dir.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "the mail in the outbox",
            || {
                let rows = ledger_rows(&state);
                rows.len() == 1 && rows.values().all(|r| r.0 == "sent")
            },
            || format!("{:?}", ledger_rows(&state)),
        )
    })
    .await
    .expect("wait");
    assert_eq!(files(), 1);
    stop_tx.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the loop stops on its shutdown future")
        .expect("join");
}

/// A rotated SMTP password through the real loop, outbox and transport, against a real server
/// that answers 535 to AUTH: the due mail is retried with backoff, not failed, and goes out once
/// the transport has the right password again (rebuilt, as a reload does). On the same
/// authenticated server, a 550 to RCPT TO fails the mail at its first attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_smtp_password_is_retried_until_fixed_and_a_refused_recipient_fails() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    };

    use convenor::{
        config::{Environment, load},
        daemon::{mail_parts, replan},
        ledger::{MailState, SqliteStore, Store as _},
        scheduler::{MailOutbox, Scheduler},
    };
    use jiff::Timestamp;

    use crate::{mail::SmtpServer, support::write_config};

    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("smtp-password");
    // (server arguments, password): the scheduler of each case, its clock, its outbox, its store.
    let setup = |case: &str, args: &[&str], secret: &str| {
        let here = dir.path().join(case);
        let server = SmtpServer::start(&here.join("received"), args);
        std::fs::write(&password, secret).expect("password file");
        let text = soon_text(&[120], Some(server.port), "").replace(
            "tls = \"plaintext\"\n",
            &format!(
                "tls = \"plaintext\"\nuser = \"convenor\"\npassword_file = \"{}\"\n",
                password.display()
            ),
        );
        std::fs::create_dir_all(&here).expect("mkdir");
        let config = load(&write_config(&here, &text), &Environment::default())
            .expect("config")
            .config;
        std::fs::create_dir_all(&config.state_dir).expect("state dir");
        let mut store = SqliteStore::open_in(&config.state_dir).expect("open");
        replan(&mut store, &config, Timestamp::now()).expect("replan");
        let due = store.rows().expect("rows")[0].due;
        let clock_ms = Arc::new(AtomicI64::new(due.as_millisecond()));
        let clock = {
            let ms = clock_ms.clone();
            move || Timestamp::from_millisecond(ms.load(Ordering::SeqCst)).expect("ts")
        };
        let store = Arc::new(Mutex::new(store));
        let outbox = Arc::new(MailOutbox::new(
            store.clone(),
            mail_parts(&config).expect("templates and transport"),
        ));
        let (_config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
        let scheduler = Scheduler::new(
            store.clone(),
            outbox.clone(),
            clock,
            config_rx,
            Arc::new(tokio::sync::Notify::new()),
        );
        (server, config, scheduler, clock_ms, outbox, store)
    };
    let only_row = |store: &Arc<Mutex<SqliteStore>>| {
        let rows = store.lock().expect("store").rows().expect("rows");
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.into_iter().next().expect("one row")
    };

    // The relay's password was rotated: every attempt is refused with 535 and retried.
    let (server, config, scheduler, clock_ms, outbox, store) =
        setup("rotated", &["--auth", "convenor:right"], "old-password");
    for attempt in 1..=2 {
        let next = scheduler.tick().await.expect("tick");
        let row = only_row(&store);
        let error = row.last_error.clone().unwrap_or_default();
        assert_eq!(
            (row.state, row.attempts),
            (MailState::Pending, attempt),
            "retried, not failed: {error}"
        );
        assert!(
            error.starts_with("transient failure")
                && error.contains("535")
                && error.contains("AUTH"),
            "{error}"
        );
        let at = row.next_attempt.expect("a next attempt");
        assert_eq!(next, Some(at));
        clock_ms.store(at.as_millisecond(), Ordering::SeqCst);
    }
    assert!(server.received().is_empty());
    // The operator puts the new password in place and reloads: the next attempt delivers.
    std::fs::write(&password, "right").expect("password file");
    outbox.replace(mail_parts(&config).expect("templates and transport"));
    scheduler.tick().await.expect("tick");
    assert_eq!(only_row(&store).state, MailState::Sent);
    assert_eq!(server.received().len(), 1);

    // A recipient the relay refuses for good: failed at the first attempt, not retried.
    let (server, _config, scheduler, _clock, _outbox, store) = setup(
        "recipient",
        &[
            "--auth",
            "convenor:right",
            "--fail-at",
            "rcpt",
            "--code",
            "550",
        ],
        "right",
    );
    assert_eq!(scheduler.tick().await.expect("tick"), None);
    let row = only_row(&store);
    let error = row.last_error.clone().unwrap_or_default();
    assert_eq!((row.state, row.attempts), (MailState::Failed, 1), "{error}");
    assert!(
        error.starts_with("permanent failure") && error.contains("550"),
        "{error}"
    );
    assert!(server.received().is_empty());
}

/// A list address the relay puts off (451 to its RCPT TO) while it takes the others: the others
/// get the mail at once, the ledger row stays pending with them recorded as done, and the retry
/// goes to the put-off address only, with the same Message-ID. Before, one such address held the
/// mail back from every list until the meeting started.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_address_put_off_gets_the_retry_alone_and_the_others_get_it_once() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    };

    use convenor::{
        config::{Environment, load},
        daemon::{mail_parts, replan},
        ledger::{MailState, SqliteStore, Store as _},
        scheduler::{MailOutbox, Scheduler},
    };
    use jiff::Timestamp;

    use crate::{mail::SmtpServer, support::write_config};

    let dir = tempfile::tempdir().expect("tempdir");
    let server = SmtpServer::start(
        &dir.path().join("received"),
        &[
            "--refuse-rcpt",
            "gone@example.org=451",
            "--refuse-rcpt-times",
            "1",
        ],
    );
    let text = soon_text(&[120], Some(server.port), "").replace(
        "list = [\"list@example.org\"]",
        "list = [\"members@example.org\", \"gone@example.org\", \"observers@example.org\"]",
    );
    let config = load(&write_config(dir.path(), &text), &Environment::default())
        .expect("config")
        .config;
    assert_eq!(config.mail.list.len(), 3);
    std::fs::create_dir_all(&config.state_dir).expect("state dir");
    let mut store = SqliteStore::open_in(&config.state_dir).expect("open");
    replan(&mut store, &config, Timestamp::now()).expect("replan");
    let due = store.rows().expect("rows")[0].due;
    let clock_ms = Arc::new(AtomicI64::new(due.as_millisecond()));
    let clock = {
        let ms = clock_ms.clone();
        move || Timestamp::from_millisecond(ms.load(Ordering::SeqCst)).expect("ts")
    };
    let store = Arc::new(Mutex::new(store));
    let outbox = MailOutbox::new(store.clone(), mail_parts(&config).expect("parts"));
    let (_config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let scheduler = Scheduler::new(
        store.clone(),
        outbox,
        clock,
        config_rx,
        Arc::new(tokio::sync::Notify::new()),
    );
    let rcpts = |n: usize| -> Vec<String> {
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("received/{n}.json"))).expect("meta"),
        )
        .expect("json");
        (meta["rcpt_tos"].as_array().expect("rcpt_tos").iter())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    // The row as a new connection reads it from the file.
    let row_on_disk = || {
        let rows = SqliteStore::open_in(&config.state_dir)
            .expect("open")
            .rows()
            .expect("rows");
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.into_iter().next().expect("one row")
    };

    let next = scheduler.tick().await.expect("tick");
    let row = row_on_disk();
    let error = row.last_error.clone().unwrap_or_default();
    assert_eq!(
        (row.state, row.attempts),
        (MailState::Pending, 1),
        "{error}"
    );
    assert_eq!(
        row.done_recipients,
        ["members@example.org", "observers@example.org"],
        "{error}"
    );
    assert!(
        error.starts_with("transient failure")
            && error.contains("gone@example.org")
            && error.contains("451"),
        "{error}"
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(rcpts(1), ["members@example.org", "observers@example.org"]);
    let at = row.next_attempt.expect("a retry");
    assert_eq!(next, Some(at));

    clock_ms.store(at.as_millisecond(), Ordering::SeqCst);
    scheduler.tick().await.expect("tick");
    let row = row_on_disk();
    assert_eq!((row.state, row.attempts), (MailState::Sent, 2), "{row:?}");
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(rcpts(2), ["gone@example.org"], "the retry goes to it alone");
    let id = |m: &[u8]| {
        String::from_utf8_lossy(m)
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
            .map(str::to_owned)
    };
    assert!(id(&received[0]).is_some());
    assert_eq!(id(&received[0]), id(&received[1]), "the same Message-ID");
}

/// The last attempt before the meeting reaches some recipients and is put off by others: the
/// row fails (the meeting starts before another attempt) but keeps who got the mail, so when
/// the meeting then moves and the row comes back, they are left out of its sends.
#[test]
fn a_row_given_up_after_reaching_some_recipients_keeps_them_when_it_comes_back() {
    use convenor::{
        config::{Environment, load},
        daemon::replan,
        ledger::{MailState, SqliteStore, Store as _},
        scheduler::{SendFailure, after_failure},
    };

    use crate::support::write_config;

    let dir = tempfile::tempdir().expect("tempdir");
    let text = soon_text(&[120], None, "").replace(
        "list = [\"list@example.org\"]",
        "list = [\"a@example.org\", \"b@example.org\"]",
    );
    let config = load(&write_config(dir.path(), &text), &Environment::default())
        .expect("config")
        .config;
    std::fs::create_dir_all(&config.state_dir).expect("state dir");
    let mut store = SqliteStore::open_in(&config.state_dir).expect("open");
    replan(&mut store, &config, jiff::Timestamp::now()).expect("replan");
    let row = store.rows().expect("rows")[0].clone();
    let row = store
        .claim(&row.key, row.due)
        .expect("claim")
        .expect("claimed");
    let partly = SendFailure {
        transient: true,
        message: "put off: b@example.org: 451; delivered to a@example.org".into(),
        done: vec!["a@example.org".into()],
    };
    let near_start = row
        .starts
        .checked_sub(jiff::SignedDuration::from_millis(100))
        .expect("instant");
    let outcome = after_failure(&row, &partly, near_start, &config.scheduler, 0.0);
    assert!(
        store
            .settle(&row.key, MailState::Sending, &outcome)
            .expect("settle")
            .is_some()
    );
    let row = store.rows().expect("rows")[0].clone();
    assert_eq!(row.state, MailState::Failed, "{row:?}");
    assert_eq!(row.done_recipients, ["a@example.org"]);
    // The meeting moves a day later: the failed row is wanted again.
    let line = (text.lines())
        .find(|l| l.starts_with("date = "))
        .expect("date line")
        .to_owned();
    let date: jiff::civil::Date = line["date = ".len()..].parse().expect("date");
    let moved = text.replace(
        &line,
        &format!("date = {}", date.tomorrow().expect("tomorrow")),
    );
    let moved = load(&write_config(dir.path(), &moved), &Environment::default())
        .expect("config")
        .config;
    replan(&mut store, &moved, jiff::Timestamp::now()).expect("replan");
    let row = store.rows().expect("rows")[0].clone();
    assert_eq!(row.state, MailState::Pending, "wanted again: {row:?}");
    assert_eq!(row.done_recipients, ["a@example.org"], "a@ has it: {row:?}");
}
