//! What the feed keeps across restarts of the real daemon: SEQUENCE and the stamps come from the
//! ledger, rise when a meeting moves, and never go down, whatever the config does next; and what
//! a SIGTERM or SIGHUP that comes during start-up does.

use std::path::Path;

use crate::{
    daemon::harness::{Daemon, serve_command_of, wait_for},
    feed::parse_ics,
    support::{example_config_text, june_moved, write_config},
};

/// One run of `convenor serve` on `config`: waits until it runs, fetches `/calendar.ics`, stops
/// it with SIGTERM (checking it exits 0). Returns the feed's body, its ETag and the run's log.
fn serve_once(config: &Path, log: &Path) -> (String, String, String) {
    serve_once_with(&crate::support::binary(), config, log)
}

/// [`serve_once`] with the executable at `binary`.
fn serve_once_with(binary: &Path, config: &Path, log: &Path) -> (String, String, String) {
    let mut daemon = Daemon::spawn_command(serve_command_of(binary, config), log);
    let addr = daemon.wait_ready();
    let response = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
        .and_then(|r| r.error_for_status())
        .expect("GET /calendar.ics");
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let body = response.text().expect("body");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
    (body, etag, daemon.log_text())
}

/// Runs `convenor serve` on `config` until the feed answers, returns the feed's
/// (SEQUENCE, DTSTAMP) of the 2023-06-07 meeting as read by the independent parser, then stops
/// the daemon with SIGTERM and checks it exits 0.
fn feed_after_start(config: &Path, log: &Path) -> (i64, String) {
    let (body, _, _) = serve_once(config, log);
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

/// A restart on the same config serves the feeds from the cache in the state directory: the
/// same bytes and ETag as rendered; a changed config, a damaged cache or none at all are
/// rendered afresh, never served stale.
#[test]
fn a_restart_serves_cached_feeds_only_when_they_are_the_feeds_of_this_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let cache = dir.path().join("state").join("feeds.cache");
    let original = example_config_text();
    let june = "date = 2023-06-07\nstart = \"10:00\"";
    let moved = original.replacen(june, "date = 2023-06-07\nstart = \"09:30\"", 1);
    let config = write_config(dir.path(), &original);
    let from_cache = |log: &str| {
        let ready = log
            .lines()
            .find(|l| l.contains("\"message\":\"ready "))
            .expect("ready line");
        ready.contains("feeds (from the cache)")
    };

    let (rendered, etag, log0) = serve_once(&config, &log);
    assert!(
        !from_cache(&log0),
        "nothing cached on a first start:\n{log0}"
    );
    assert!(cache.exists(), "the cache is written after start");
    let (cached, cached_etag, log1) = serve_once(&config, &log);
    assert!(from_cache(&log1), "same config, same build:\n{log1}");
    assert_eq!((&cached, &cached_etag), (&rendered, &etag));
    let skipped = "the ledger is already reconciled with this config";
    assert!(!log0.contains(skipped), "{log0}");
    assert!(log1.contains(skipped), "{log1}");

    // The meeting moves: rendered afresh, with the new time and SEQUENCE 1.
    write_config(dir.path(), &moved);
    let (after_move, moved_etag, log2) = serve_once(&config, &log);
    assert!(!from_cache(&log2), "a changed config is rendered:\n{log2}");
    assert!(
        !log2.contains(skipped),
        "a changed config is reconciled:\n{log2}"
    );
    assert_ne!(after_move, rendered);
    assert_ne!(moved_etag, etag);
    assert!(after_move.contains("DTSTART;TZID=Europe/London:20230607T093000"));
    assert_eq!(feed_after_start(&config, &log).0, 1);
    let (again, again_etag, log3) = serve_once(&config, &log);
    assert!(from_cache(&log3), "{log3}");
    assert_eq!((&again, &again_etag), (&after_move, &moved_etag));

    // A damaged cache is rendered over, and the feed is the same.
    let mut bytes = std::fs::read(&cache).expect("read cache");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&cache, &bytes).expect("damage cache");
    let (repaired, repaired_etag, log4) = serve_once(&config, &log);
    assert!(!from_cache(&log4), "a damaged cache is not used:\n{log4}");
    assert_eq!((&repaired, &repaired_etag), (&after_move, &moved_etag));

    // Another build (here: a copy of the binary, another file) trusts neither the cache nor
    // the plan stamp, and renders the same bytes.
    let copy = dir.path().join("convenor-copy");
    std::fs::copy(crate::support::binary(), &copy).expect("copy the binary");
    let (other, other_etag, log_other) = serve_once_with(&copy, &config, &log);
    assert!(!from_cache(&log_other), "{log_other}");
    assert!(!log_other.contains(skipped), "{log_other}");
    assert_eq!((&other, &other_etag), (&after_move, &moved_etag));

    // No cache at all: rendered, the same.
    std::fs::remove_file(&cache).expect("remove cache");
    let (fresh, fresh_etag, log5) = serve_once(&config, &log);
    assert!(!from_cache(&log5), "{log5}");
    assert_eq!((&fresh, &fresh_etag), (&after_move, &moved_etag));
}

/// A reload renders the new feeds and stores them in the cache, and its reconciliation stamps
/// the ledger: the restart after it is a warm one, serving what the reload served.
#[test]
fn a_restart_after_a_reload_starts_from_what_the_reload_rendered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let original = example_config_text();
    let june = "date = 2023-06-07\nstart = \"10:00\"";
    let moved = original.replacen(june, "date = 2023-06-07\nstart = \"08:45\"", 1);
    let config = write_config(dir.path(), &original);

    let mut daemon = Daemon::spawn(&config, &log);
    let addr = daemon.wait_ready();
    let fetch = || {
        let r = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
            .and_then(|r| r.error_for_status())
            .expect("GET /calendar.ics");
        let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
        (r.text().expect("body"), etag)
    };
    let (before, _) = fetch();
    write_config(dir.path(), &moved);
    daemon.signal("HUP");
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let (reloaded, reloaded_etag) = fetch();
    assert_ne!(reloaded, before);
    assert!(reloaded.contains("DTSTART;TZID=Europe/London:20230607T084500"));
    // The cache is written off the request path: wait until it holds the reloaded feeds.
    let cache = dir.path().join("state").join("feeds.cache");
    wait_for(
        "the cache of the reloaded feeds",
        || {
            std::fs::read(&cache)
                .is_ok_and(|bytes| bytes.windows(15).any(|w| w == b"20230607T084500"))
        },
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    let child = &mut daemon.child;
    wait_for(
        "convenor serve to exit after SIGTERM",
        || child.try_wait().ok().flatten().is_some(),
        String::new,
    );

    let (after, after_etag, log_after) = serve_once(&config, &log);
    assert!(
        log_after.contains("feeds (from the cache)"),
        "the restart uses the feeds the reload rendered:\n{log_after}"
    );
    assert!(
        log_after.contains("the ledger is already reconciled with this config"),
        "the reload stamped the ledger:\n{log_after}"
    );
    assert_eq!((after, after_etag), (reloaded, reloaded_etag));
}

/// A meeting added to the example config (after its last one), for restarts that change the
/// config without raising any SEQUENCE.
const ADDED_MEETING: &str = "\n[[meeting]]\nid = \"2031-02-05\"\ndate = 2031-02-05\n\
    start = \"10:00\"\nend = \"12:00\"\ntitle = \"LEDNet meeting\"\n";

/// A meeting's SEQUENCE in the ledger (`None`: no revision stored), read beside a running
/// daemon.
fn sequence_in_ledger(state: &Path, meeting: &str) -> Option<i64> {
    use rusqlite::OptionalExtension as _;
    let conn = rusqlite::Connection::open(state.join(convenor::ledger::LEDGER_FILE))
        .expect("open the ledger");
    conn.query_row(
        "SELECT sequence FROM meeting_revisions WHERE meeting = ?1",
        [meeting],
        |r| r.get(0),
    )
    .optional()
    .expect("read the ledger")
}

/// A meeting's (start in UTC, SEQUENCE) in the feed at `addr`, as the independent parser
/// reads it; `None` when the feed does not have it.
fn event_in_feed(addr: &str, meeting: &str) -> Option<(String, i64)> {
    let body = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /calendar.ics");
    let v = parse_ics(&body);
    let prefix = format!("{meeting}@");
    let event = (v["events"].as_array().expect("events").iter())
        .find(|e| (e["uid"].as_str()).is_some_and(|u| u.starts_with(&prefix)))?
        .clone();
    Some((
        event["start_utc"].as_str().expect("start").to_owned(),
        event["sequence"].as_i64().expect("sequence"),
    ))
}

/// A state directory whose first start (on the example config) committed its plan, the config
/// edited for a restart, and the ledger's write lock held by the test until `held` is dropped:
/// the restart's plan cannot be committed meanwhile.
struct HeldRestart {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    state: std::path::PathBuf,
    original: String,
    held: crate::daemon::harness::LedgerWriteLock,
}

/// [`HeldRestart`] for the example config as `edit` makes it.
fn held_restart(edit: impl FnOnce(&str) -> String) -> HeldRestart {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = example_config_text();
    let config = write_config(dir.path(), &original);
    let state = dir.path().join("state");
    serve_once(&config, &dir.path().join("first.log"));
    write_config(dir.path(), &edit(&original));
    let held = crate::daemon::harness::LedgerWriteLock::hold(&state);
    HeldRestart {
        dir,
        config,
        state,
        original,
        held,
    }
}

/// Starts `convenor serve` on a [`HeldRestart`] with [`ADDED_MEETING`]: it serves the new
/// meeting at SEQUENCE 0 (READY), then its plan times out on the lock and it exits 1, running
/// nothing. Returns what the run logged.
fn served_then_refused(restart: &HeldRestart) -> String {
    let mut daemon = Daemon::spawn(&restart.config, &restart.dir.path().join("refused.log"));
    let addr = daemon.wait_serving();
    let served = Some(("2031-02-05T10:00:00Z".to_owned(), 0));
    assert_eq!(event_in_feed(&addr, "2031-02-05"), served);
    let status = daemon.wait_exit();
    let text = daemon.log_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("database is locked"), "{text}");
    assert!(!text.contains("convenor is running"), "{text}");
    assert_eq!(sequence_in_ledger(&restart.state, "2031-02-05"), None);
    text
}

/// A restart on a config that raises no SEQUENCE (a meeting added) serves the feeds (READY)
/// before it writes its plan: the ledger's write lock, held by the test, keeps the plan from
/// being written, and the feed already has the new meeting, at the SEQUENCE the plan then
/// stores. The scheduler starts (the log says "running") only once the plan is written. With
/// one async worker (as on a machine with one CPU), nothing blocks that worker on the ledger
/// the plan holds.
#[test]
fn a_restart_serves_the_changed_feed_before_its_plan_is_written() {
    use crate::daemon::harness::serve_command;
    let restart = held_restart(|text| format!("{text}{ADDED_MEETING}"));
    let (config, state) = (&restart.config, &restart.state);
    let mut one_worker = serve_command(config);
    one_worker.env("TOKIO_WORKER_THREADS", "1");
    let mut daemon = Daemon::spawn_command(one_worker, &restart.dir.path().join("second.log"));
    let addr = daemon.wait_serving();
    let added = Some(("2031-02-05T10:00:00Z".to_owned(), 0));
    assert_eq!(event_in_feed(&addr, "2031-02-05"), added);
    let text = daemon.log_text();
    assert!(!text.contains("plan written"), "{text}");
    assert!(!text.contains("convenor is running"), "{text}");
    assert_eq!(
        sequence_in_ledger(state, "2031-02-05"),
        None,
        "not written yet"
    );

    drop(restart.held);
    daemon.wait_ready();
    assert!(daemon.log_text().contains("plan written"));
    assert_eq!(sequence_in_ledger(state, "2031-02-05"), Some(0));
    assert_eq!(event_in_feed(&addr, "2031-02-05"), added);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// A SIGTERM that comes after READY while the plan waits for the ledger is taken at once and
/// stops the service once the plan is written, without starting the scheduler or any mail:
/// nothing of the plan is lost, and the exit is clean.
#[test]
fn a_sigterm_while_the_plan_is_written_after_ready_waits_for_it() {
    let restart = held_restart(|text| format!("{text}{ADDED_MEETING}"));
    let mut daemon = Daemon::spawn(&restart.config, &restart.dir.path().join("second.log"));
    daemon.wait_serving();
    daemon.signal("TERM");
    wait_for(
        "the SIGTERM to be taken while the plan waits",
        || daemon.log_text().contains("SIGTERM: shutting down"),
        || daemon.log_text(),
    );
    drop(restart.held);
    let status = daemon.wait_exit();
    let text = daemon.log_text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("plan written"), "{text}");
    // Neither the scheduler nor the owed mails to leads started.
    assert!(!text.contains("convenor is running"), "{text}");
    assert!(!text.contains("mails to leads owed"), "{text}");
    assert_eq!(sequence_in_ledger(&restart.state, "2031-02-05"), Some(0));
}

/// A plan that cannot be written after READY (the ledger refuses writes past its busy
/// timeout) ends the service with an error naming the ledger, a non-zero exit that systemd
/// restarts it on, and nothing sent; the next start writes it.
#[test]
fn a_plan_the_ledger_refuses_after_ready_ends_the_service_with_an_error() {
    let restart = held_restart(|text| format!("{text}{ADDED_MEETING}"));
    served_then_refused(&restart);
    drop(restart.held);
    let (body, _, log) = serve_once(&restart.config, &restart.dir.path().join("third.log"));
    assert!(log.contains("plan written"), "{log}");
    assert!(body.contains("2031-02-05@"), "{body}");
    assert_eq!(sequence_in_ledger(&restart.state, "2031-02-05"), Some(0));
}

/// A meeting new to the ledger, served at SEQUENCE 0 by a start whose plan was then refused,
/// and moved before the next start, is served at SEQUENCE 1 by that start: the revisions
/// served before the plan are kept (`served-unplanned.json`) and read as if the ledger held
/// them. Once a plan is committed the file is gone.
#[test]
fn a_new_meeting_served_before_a_plan_that_failed_rises_when_it_moves() {
    let restart = held_restart(|text| format!("{text}{ADDED_MEETING}"));
    let (dir, config, state) = (restart.dir.path(), &restart.config, &restart.state);
    served_then_refused(&restart);
    drop(restart.held);
    assert!(state.join("served-unplanned.json").exists());

    let moved = ADDED_MEETING.replace("start = \"10:00\"", "start = \"09:00\"");
    write_config(dir, &(restart.original.clone() + &moved));
    let mut daemon = Daemon::spawn(config, &dir.join("third.log"));
    let addr = daemon.wait_ready();
    let text = daemon.log_text();
    assert!(text.contains("plan first"), "a SEQUENCE rose: {text}");
    let moved = Some(("2031-02-05T09:00:00Z".to_owned(), 1));
    assert_eq!(event_in_feed(&addr, "2031-02-05"), moved);
    assert_eq!(sequence_in_ledger(state, "2031-02-05"), Some(1));
    assert!(!state.join("served-unplanned.json").exists());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// New meetings' revisions that cannot be kept before they are served (here a directory
/// stands where their file's temporary copy goes) make the plan go first, before READY: the
/// start still serves them, and the ledger has them by then.
#[test]
fn revisions_that_cannot_be_kept_send_the_plan_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = example_config_text();
    let config = write_config(dir.path(), &original);
    let state = dir.path().join("state");
    serve_once(&config, &dir.path().join("first.log"));
    std::fs::create_dir(state.join(".served-unplanned.json.tmp")).expect("the obstacle");

    write_config(dir.path(), &(original + ADDED_MEETING));
    let mut daemon = Daemon::spawn(&config, &dir.path().join("second.log"));
    let addr = daemon.wait_ready();
    let text = daemon.log_text();
    assert!(
        text.contains("cannot keep the new meetings' revisions"),
        "{text}"
    );
    // A phase of the start, before READY.
    let ready = (text.lines())
        .find(|l| l.contains("\"message\":\"ready "))
        .expect("ready");
    assert!(ready.contains("plan first"), "{text}");
    assert_eq!(sequence_in_ledger(&state, "2031-02-05"), Some(0));
    let added = Some(("2031-02-05T10:00:00Z".to_owned(), 0));
    assert_eq!(event_in_feed(&addr, "2031-02-05"), added);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// A restart on a config that raises a SEQUENCE (a meeting moved) commits its plan before
/// READY: no SEQUENCE is served before it is stored (after a crash in between, an edited
/// config could serve the same SEQUENCE for other times). With the ledger refusing writes past
/// its busy timeout, the start fails without ever being ready; the next one serves the move.
#[test]
fn a_plan_that_raises_a_sequence_is_written_before_ready() {
    let restart = held_restart(|_| june_moved());
    let (dir, config, state) = (restart.dir.path(), &restart.config, &restart.state);
    let mut daemon = Daemon::spawn(config, &dir.join("second.log"));
    let status = daemon.wait_exit();
    drop(restart.held);
    let text = daemon.log_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("database is locked"), "{text}");
    assert!(!text.contains("\"message\":\"ready "), "{text}");
    assert!(!text.contains("listening on"), "{text}");
    assert_eq!(sequence_in_ledger(state, "2023-06-07"), Some(0));

    let mut daemon = Daemon::spawn(config, &dir.join("third.log"));
    let addr = daemon.wait_ready();
    let text = daemon.log_text();
    assert!(text.contains("plan first"), "{text}");
    assert_eq!(sequence_in_ledger(state, "2023-06-07"), Some(1));
    let moved = Some(("2023-06-07T07:45:00Z".to_owned(), 1));
    assert_eq!(event_in_feed(&addr, "2023-06-07"), moved);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// A SIGTERM while `convenor serve` is still starting (systemd stopping a unit that is being
/// started) is handled, not fatal: the start completes, the service stops gracefully with exit
/// 0, and the background writes it started (the feed cache) are finished first, so the next
/// start serves the feeds from the cache. The ledger's write lock, held by the test, keeps the
/// start from finishing until the signal has been sent.
#[test]
fn a_sigterm_during_start_up_stops_gracefully_after_the_start() {
    use crate::daemon::harness::{Daemon, LedgerWriteLock};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &example_config_text());
    let state = dir.path().join("state");
    let held = LedgerWriteLock::hold(&state);
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    wait_for(
        "the state directory lock (start-up under way)",
        || daemon.log_text().contains("state directory locked"),
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    drop(held);
    let status = daemon.wait_exit();
    let text = daemon.log_text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("\"message\":\"ready "), "{text}");
    assert!(text.contains("SIGTERM: shutting down"), "{text}");
    assert!(
        state.join("feeds.cache").exists(),
        "the cache write finished before exit"
    );

    let mut again = Daemon::spawn(&config, &dir.path().join("serve2.log"));
    again.wait_ready();
    let text = again.log_text();
    assert!(text.contains("feeds (from the cache)"), "{text}");
}

/// A SIGHUP while `convenor serve` is still starting (ops reloading right after a start, or
/// a config edited meanwhile) is kept, not fatal: once the service runs it reloads the config,
/// and the feed shows the edit.
#[test]
fn a_sighup_during_start_up_reloads_once_running() {
    use crate::daemon::harness::{Daemon, LedgerWriteLock};
    let dir = tempfile::tempdir().expect("tempdir");
    let original = example_config_text();
    let moved = june_moved();
    let config = write_config(dir.path(), &original);
    let held = LedgerWriteLock::hold(&dir.path().join("state"));
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    wait_for(
        "the state directory lock (start-up under way)",
        || daemon.log_text().contains("state directory locked"),
        || daemon.log_text(),
    );
    write_config(dir.path(), &moved);
    daemon.signal("HUP");
    drop(held);
    let addr = daemon.wait_ready();
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let body = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /calendar.ics");
    assert!(
        body.contains("DTSTART;TZID=Europe/London:20230607T084500"),
        "{body}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// What one GET of a feed got: status, body (unfolded, so a long value can be searched for),
/// ETag and Last-Modified.
struct Fetched {
    status: u16,
    body: String,
    etag: String,
    last_modified: String,
}

/// GETs `path` from the daemon at `addr`, with only `If-Modified-Since: since` when given (no
/// `If-None-Match`: the client the Last-Modified rule protects).
fn fetch(addr: &str, path: &str, since: Option<&str>) -> Fetched {
    let client = reqwest::blocking::Client::new();
    let mut request = client.get(format!("http://{addr}{path}"));
    if let Some(since) = since {
        request = request.header("If-Modified-Since", since);
    }
    let response = request.send().expect("GET");
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .expect("header text")
            .to_owned()
    };
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let status = response.status().as_u16();
    let body = response.text().expect("body").replace("\r\n ", "");
    Fetched {
        status,
        body,
        etag,
        last_modified,
    }
}

/// One run of `convenor serve` on `config`: for each of `paths`, a plain GET and, for the
/// `since` given with it, a GET with only that If-Modified-Since; then SIGTERM (exit 0, the
/// feed cache written).
fn serve_and_fetch(
    config: &Path,
    log: &Path,
    paths: &[(&str, Option<&str>)],
) -> Vec<(Fetched, Option<Fetched>)> {
    let mut daemon = Daemon::spawn(config, log);
    let addr = daemon.wait_ready();
    let fetched = paths
        .iter()
        .map(|&(path, since)| {
            let plain = fetch(&addr, path, None);
            assert_eq!(plain.status, 200, "{path}");
            (plain, since.map(|since| fetch(&addr, path, Some(since))))
        })
        .collect();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
    fetched
}

/// An HTTP date as a timestamp, to compare Last-Modified values.
fn http_date(text: &str) -> std::time::SystemTime {
    httpdate::parse_http_date(text).expect("an HTTP date")
}

/// The reviewer's case: Last-Modified never goes back across a restart. A meeting retitled by
/// a reload, then deleted from the config before a restart (its stored revision was the latest
/// change), and then a restart that changes only what no meeting's revision covers
/// (`network.name`): each time the feed's bytes change, Last-Modified moves strictly forward, so
/// a client revalidating with only If-Modified-Since gets the new body, never a 304 over stale
/// data. A restart that changes nothing keeps Last-Modified and ETag as they were.
#[test]
fn last_modified_moves_forward_across_restarts_that_change_the_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let original = example_config_text();
    let september = "[[meeting]]\nid = \"2023-09-29\"\ndate = 2023-09-29\nstart = \"10:00\"\nend = \"12:30\"\n\
                     title = \"LEDNet meeting\"\n";
    assert_eq!(
        original.matches(september).count(),
        1,
        "the September meeting"
    );
    let retitled = original.replacen(
        september,
        &september.replace("LEDNet meeting", "LEDNet meeting (retitled)"),
        1,
    );
    let september_whole = format!("{september}location = \"London (venue to be confirmed)\"\n\n");
    assert_eq!(retitled.matches(&september_whole).count(), 0);
    let retitled_whole = september_whole.replace("LEDNet meeting", "LEDNet meeting (retitled)");
    assert_eq!(retitled.matches(&retitled_whole).count(), 1);
    let removed = retitled.replacen(&retitled_whole, "", 1);
    let name = "name = \"London Environment Directors' Network\"";
    assert_eq!(removed.matches(name).count(), 1, "the network's name");
    let renamed = removed.replacen(name, "name = \"London Environment Directors' Forum\"", 1);
    let config = write_config(dir.path(), &original);
    let september_uid = "UID:2023-09-29@";
    let priority = "/priorities/future-places.ics";

    // A first start, then the retitle by a reload: its Last-Modified is the retitle's time.
    let mut daemon = Daemon::spawn(&config, &log);
    let addr = daemon.wait_ready();
    let first = fetch(&addr, "/calendar.ics", None);
    write_config(dir.path(), &retitled);
    daemon.signal("HUP");
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let reloaded = fetch(&addr, "/calendar.ics", None);
    assert!(reloaded.body.contains("LEDNet meeting (retitled)"));
    assert!(http_date(&reloaded.last_modified) >= http_date(&first.last_modified));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());

    // The retitled meeting is deleted, and the service restarted.
    write_config(dir.path(), &removed);
    let run = serve_and_fetch(
        &config,
        &log,
        &[("/calendar.ics", Some(&reloaded.last_modified))],
    );
    let (after_removal, revalidated) = (&run[0].0, run[0].1.as_ref().expect("revalidated"));
    assert!(!after_removal.body.contains(september_uid));
    assert_ne!(after_removal.etag, reloaded.etag);
    assert!(
        http_date(&after_removal.last_modified) > http_date(&reloaded.last_modified),
        "Last-Modified went from {} to {} over a changed feed",
        reloaded.last_modified,
        after_removal.last_modified
    );
    assert_eq!(
        revalidated.status, 200,
        "a 304 would keep the deleted meeting"
    );
    assert_eq!(revalidated.body, after_removal.body);

    // A restart that changes nothing: the same validators, and the old ones still answer 304.
    let unchanged = serve_and_fetch(
        &config,
        &log,
        &[
            ("/calendar.ics", Some(&after_removal.last_modified)),
            (priority, None),
        ],
    );
    let (same, same_revalidated) = (&unchanged[0].0, unchanged[0].1.as_ref().expect("304"));
    assert_eq!(
        (&same.etag, &same.last_modified, &same.body),
        (
            &after_removal.etag,
            &after_removal.last_modified,
            &after_removal.body
        )
    );
    assert_eq!(same_revalidated.status, 304);
    let priority_before = &unchanged[1].0;

    // Only the network's name changes: in every feed's bytes, in no meeting's revision.
    write_config(dir.path(), &renamed);
    let run = serve_and_fetch(
        &config,
        &log,
        &[
            ("/calendar.ics", Some(&same.last_modified)),
            (priority, Some(&priority_before.last_modified)),
        ],
    );
    for ((after, revalidated), before) in run.iter().zip([same, priority_before]) {
        let revalidated = revalidated.as_ref().expect("revalidated");
        assert!(after.body.contains("Directors' Forum"), "{}", after.body);
        assert_ne!(after.etag, before.etag);
        assert!(
            http_date(&after.last_modified) > http_date(&before.last_modified),
            "Last-Modified went from {} to {} over a changed feed",
            before.last_modified,
            after.last_modified
        );
        assert_eq!(revalidated.status, 200);
        assert_eq!(revalidated.body, after.body);
    }
}

/// The UIDs of every event in a feed, as the independent parser reads them.
fn uids(body: &str) -> Vec<String> {
    let parsed = parse_ics(body);
    (parsed["events"].as_array().expect("events").iter())
        .map(|e| e["uid"].as_str().expect("uid").to_owned())
        .collect()
}

/// Renaming the network (its short name, which the first start's UIDs were made from) changes
/// the calendar's name but no UID, after a restart and after a reload alike: the ledger pinned
/// the UID domain at the first start. (A changed UID is a duplicate and an orphan in every
/// subscriber's calendar.)
#[test]
fn renaming_the_network_keeps_every_uid_across_restarts_and_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = example_config_text();
    let config = write_config(dir.path(), &original);
    let (first, _, _) = serve_once(&config, &dir.path().join("first.log"));
    let first_uids = uids(&first);
    assert_eq!(first_uids.len(), 5);
    assert!(
        first_uids.iter().all(|u| u.ends_with("@lednet.convenor")),
        "{first_uids:?}"
    );

    let renamed = |name: &str| {
        let text = original.replacen(
            "short_name = \"LEDNet\"",
            &format!("short_name = \"{name}\""),
            1,
        );
        assert_ne!(text, original, "the example config's short name is LEDNet");
        text
    };
    write_config(dir.path(), &renamed("London EDN"));
    let mut daemon = Daemon::spawn(&config, &dir.path().join("second.log"));
    let addr = daemon.wait_ready();
    let feed = || {
        reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("GET /calendar.ics")
    };
    let restarted = feed();
    assert!(
        restarted.contains("X-WR-CALNAME:London EDN meetings"),
        "{restarted}"
    );
    assert_eq!(uids(&restarted), first_uids, "after a restart");

    write_config(dir.path(), &renamed("LEDNet Two"));
    daemon.signal("HUP");
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let reloaded = feed();
    assert!(
        reloaded.contains("X-WR-CALNAME:LEDNet Two meetings"),
        "{reloaded}"
    );
    assert_eq!(uids(&reloaded), first_uids, "after a reload");
    // The CLI prints what is served: the pinned UIDs too.
    let printed = crate::support::convenor(&["ics", "--config", config.to_str().expect("utf-8")]);
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        reloaded,
        "`convenor ics` prints the served feed"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}
