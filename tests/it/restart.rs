//! What the feed keeps across restarts of the real daemon: SEQUENCE and the stamps come from the
//! ledger, rise when a meeting moves, and never go down, whatever the config does next.

use std::path::Path;

use crate::{
    daemon::harness::{Daemon, wait_for},
    feed::parse_ics,
    support::{example_config_text, write_config},
};

/// Runs `convenor serve` on `config` until the feed answers, returns the feed's
/// (SEQUENCE, DTSTAMP) of the 2023-06-07 meeting as read by the independent parser, then stops
/// the daemon with SIGTERM and checks it exits 0.
fn feed_after_start(config: &Path, log: &Path) -> (i64, String) {
    let mut daemon = Daemon::spawn(config, log);
    let addr = daemon.wait_ready();
    let body = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /calendar.ics");
    daemon.signal("TERM");
    let mut status = None;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let child = &mut daemon.child;
    wait_for(
        "convenor serve to exit after SIGTERM",
        || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        },
        log_text,
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log_text()
    );
    let v = parse_ics(&body);
    let event = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| {
            e["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("2023-06-07@"))
        })
        .expect("the June meeting")
        .clone();
    (
        event["sequence"].as_i64().expect("sequence"),
        event["dtstamp"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn sequence_survives_restarts_rises_on_a_move_and_never_falls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let original = example_config_text();
    let june = "date = 2023-06-07\nstart = \"10:00\"";
    assert_eq!(original.matches(june).count(), 1);
    let moved = original.replacen(june, "date = 2023-06-07\nstart = \"09:30\"", 1);

    let config = write_config(dir.path(), &original);
    let (seq0, stamp0) = feed_after_start(&config, &log);
    assert_eq!(seq0, 0);

    // A restart on the same config changes nothing: same SEQUENCE, same DTSTAMP.
    assert_eq!(feed_after_start(&config, &log), (0, stamp0.clone()));

    // Moving the meeting raises SEQUENCE, and the rise survives a restart.
    write_config(dir.path(), &moved);
    let (seq1, stamp1) = feed_after_start(&config, &log);
    assert_eq!(seq1, 1);
    assert!(stamp1 >= stamp0, "{stamp1} before {stamp0}");
    assert_eq!(feed_after_start(&config, &log), (1, stamp1));

    // Moving it back is another change: SEQUENCE goes on up, never back to 0.
    write_config(dir.path(), &original);
    assert_eq!(feed_after_start(&config, &log).0, 2);
}
