//! Signals at the edges of a run of `convenor serve`: a SIGHUP before its handler is in, a
//! second stop signal while a stop waits for a send, and the watchdog while the ledger refuses
//! the loop's writes. Real signals to a real process, a real SMTP sink, the notify socket.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use crate::{daemon::harness::*, service::spawn_watched, support::write_config};

/// Opens the FIFO at `path` for writing once a reader has it open (`ENXIO` until then: the
/// daemon is not yet reading its config).
fn open_fifo(path: &Path, daemon: &Daemon) -> std::fs::File {
    let mut fifo = None;
    wait_for(
        "convenor to open its config",
        || {
            fifo = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok();
            fifo.is_some()
        },
        || daemon.log_text(),
    );
    fifo.expect("opened")
}

/// A SIGHUP that comes while `convenor serve` is still reading its config (before it has a
/// handler: the default action would end the process, which systemd takes for a clean exit) is
/// kept: the service starts, then reloads. The config is a FIFO, so the test knows the daemon
/// is inside `config::load` when the signal is sent.
#[test]
fn a_sighup_before_the_handler_is_kept_and_reloads_once_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &soon_text(&[600], None, ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::remove_file(&config).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let mut fifo = open_fifo(&config, &daemon);
    daemon.signal("HUP");
    fifo.write_all(text.as_bytes()).expect("write the config");
    drop(fifo);
    daemon.wait_ready();
    // The kept SIGHUP reloads: the daemon reads its config (the FIFO) again.
    open_fifo(&config, &daemon)
        .write_all(text.as_bytes())
        .expect("write the config again");
    let log = daemon.log.clone();
    wait_for(
        "the reload of the kept SIGHUP",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("config reloaded")),
        || daemon.log_text(),
    );
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "still running"
    );
}

/// A second SIGTERM while a stop waits for a send in flight (held by the sink) ends the process
/// at once, with status 130; the row stays `sending`, to go again at the next start.
#[test]
fn a_second_stop_signal_ends_a_stop_that_waits_for_a_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start_gated(&mails);
    let config = write_config(dir.path(), &soon_text(&[1], Some(sink.port), ""));
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    let state = dir.path().join("state");
    Sink::wait_held(&mails, 0, || daemon.log_text());
    daemon.signal("TERM");
    let log = daemon.log.clone();
    wait_for(
        "the stop to begin",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("stopping: HTTP drains")),
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(convenor::daemon::EXIT_STOPPED_AGAIN),
        "{status}\n{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("a second stop signal"));
    let rows = ledger_rows(&state);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows.values().all(|r| r.0 == "sending"), "{rows:?}");
}

/// While the ledger refuses the loop's writes (another process holds its write lock), every
/// pass fails, keeping the outcome of a send it could not record: the loop is alive, so it
/// still sends WATCHDOG=1 (a watchdog kill would lose that outcome and send the mail again).
/// Once the lock goes, the outcome is recorded and the mail went out once.
#[test]
fn the_watchdog_hears_from_a_loop_whose_ledger_refuses_its_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start_gated(&mails);
    // WatchdogSec=2s: a WATCHDOG=1 at most every second.
    let text = soon_text(&[1], Some(sink.port), "");
    let (daemon, mut notes) = spawn_watched(dir.path(), &text, "2000000");
    let state = dir.path().join("state");
    Sink::wait_held(&mails, 0, || daemon.log_text());
    let lock = LedgerWriteLock::hold(&state);
    notes.drain();
    let before = notes.got.len();
    Sink::release(&mails, 0);
    // The outcome cannot be recorded (the ledger's busy timeout passes), the pass fails, and
    // the loop still pets the watchdog.
    let log = daemon.log.clone();
    wait_for(
        "a pass that could not record the send",
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("cannot be recorded in the ledger"))
        },
        || daemon.log_text(),
    );
    let failed = {
        notes.drain();
        notes.got.len()
    };
    notes.wait("WATCHDOG=1 after a failed pass", failed, |m| {
        m == "WATCHDOG=1"
    });
    assert!(notes.got.len() > before);
    drop(lock);
    wait_for(
        "the outcome recorded",
        || ledger_rows(&state).values().all(|r| r.0 == "sent"),
        || daemon.log_text(),
    );
    assert_eq!(by_key(&mails).values().map(Vec::len).sum::<usize>(), 1);
}
