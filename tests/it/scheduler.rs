//! The scheduler through the real binary and a real SMTP server on loopback: kill -9 at random
//! points never loses a mail and any repeat carries the same Message-ID; a server that is down
//! gets retries with backoff, and the mail goes out once it is back.

use std::time::Duration;

use crate::daemon::harness::*;

#[test]
fn kill_9_at_random_points_loses_nothing_and_repeats_keep_their_message_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start(&mails, None);
    let offsets: Vec<i64> = (0..8).map(|i| 2 + i).collect();
    let config = soon_config(dir.path(), &offsets, Some(sink.port));
    let state = dir.path().join("state");

    for i in 0..15 {
        let daemon = Daemon::spawn(&config, &dir.path().join(format!("serve-{i}.log")));
        // Let it live a random while (start-up, claims and sends happen in here), then kill -9.
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..900)));
        drop(daemon);
    }
    let daemon = Daemon::spawn(&config, &dir.path().join("serve-final.log"));
    wait_for(
        "every mail sent",
        || {
            let rows = ledger_rows(&state);
            rows.len() == offsets.len() && rows.values().all(|r| r.0 == "sent")
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    drop(daemon);

    let got = by_key(&mails);
    let keys: Vec<String> = (0..offsets.len())
        .map(|i| format!("soon/mail-{i}/list"))
        .collect();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        keys,
        "every mail arrived at least once"
    );
    let mut all_ids = Vec::new();
    for (key, ids) in &got {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{key}: a repeat with another Message-ID: {ids:?}"
        );
        all_ids.push(ids[0].clone());
    }
    all_ids.dedup();
    assert_eq!(
        all_ids.len(),
        keys.len(),
        "Message-IDs are distinct per mail"
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
    let daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    wait_for(
        "at least three attempts against the stopped server",
        || {
            ledger_rows(&state)
                .get("soon/mail-0/list")
                .is_some_and(|r| r.1 >= 3)
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    let row = ledger_rows(&state)["soon/mail-0/list"].clone();
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
