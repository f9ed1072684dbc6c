//! How the reloads of a running `convenor serve` went, kept in its state directory so that
//! `convenor reload` (systemd's `ExecReload=`) can wait for the one its SIGHUP asked for and
//! say whether the new config was taken.
//!
//! Why a file: `systemctl reload` returns when `ExecReload=` does, and with `kill -HUP` that was
//! as soon as the signal was sent, before the daemon had read anything, and always with
//! success (`Type=notify-reload`, which waits, needs systemd 253; Debian 12 has 252). The
//! daemon writes [`FILE`] when it starts and at the beginning and end of every reload; each
//! write replaces the file whole (written beside it, then renamed), so a reader sees one
//! version or the next, never a mix. Nothing in it needs to survive a crash: a new process
//! writes its own first.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The file, in the state directory.
pub const FILE: &str = "reload-status.json";

/// What one daemon process has done with the reloads asked of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// The process whose reloads these are.
    pub pid: u32,
    /// Reloads begun since it started (each after a SIGHUP, or several close together).
    pub begun: u64,
    /// Reloads finished; the last one's outcome is `error`.
    pub finished: u64,
    /// Why the last finished reload was refused (the running config stayed in force); `None`
    /// when it was taken, or none has finished.
    pub error: Option<String>,
}

impl ReloadStatus {
    /// A process's status before any reload.
    pub fn started(pid: u32) -> Self {
        Self {
            pid,
            ..Self::default()
        }
    }

    /// The number of the reload that a SIGHUP sent to `pid` now will be answered by, given
    /// the status read just before sending it: the first to begin after this read. A reload
    /// that had begun by then may have read the config before it was last changed.
    pub fn awaited(read: Option<&ReloadStatus>, pid: u32) -> u64 {
        read.filter(|s| s.pid == pid).map_or(0, |s| s.begun) + 1
    }

    /// The outcome of reload number `awaited` of `pid` (or of a later one, which read the
    /// config later still), once this status has it: `Some(Ok)` taken, `Some(Err)` refused.
    pub fn outcome(&self, pid: u32, awaited: u64) -> Option<Result<(), String>> {
        (self.pid == pid && self.finished >= awaited).then(|| match &self.error {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        })
    }
}

/// What asking a service for a reload came to ([`ask_and_wait`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    /// The service runs the new config.
    Taken,
    /// The service refused it, for this reason, and keeps its running config.
    Refused(String),
    /// The service never recorded its reloads in the status file read (a build from before
    /// this file, or another state directory): the signal was sent, the outcome is unknown.
    Unrecorded,
    /// The process is gone before the reload it was asked for finished.
    Gone,
    /// The reload asked for did not finish in time.
    TimedOut,
}

/// How long [`ask_and_wait`] waits.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// For the outcome, in all.
    pub timeout: Duration,
    /// For a first word from a process that has never written the status file: a service still
    /// loading its config writes it within a second; one of an older build never.
    pub first_word: Duration,
    /// Between two reads of the file.
    pub poll: Duration,
}

/// Asks process `pid` for a reload and waits for its outcome: reads the status (`read`), then
/// sends the signal (`signal`; in that order, so the reload awaited is one begun after the
/// read: [`ReloadStatus::awaited`]), then reads it again every `waits.poll` until the outcome
/// of that reload or a later one is there, `alive` says the process is gone, or `waits` runs
/// out. An error is the signal's.
pub fn ask_and_wait(
    pid: u32,
    mut read: impl FnMut() -> Option<ReloadStatus>,
    signal: impl FnOnce() -> io::Result<()>,
    mut alive: impl FnMut() -> bool,
    waits: Waits,
) -> io::Result<Asked> {
    let awaited = ReloadStatus::awaited(read().as_ref(), pid);
    signal()?;
    let sent = Instant::now();
    let mut heard_from = false;
    loop {
        let status = read();
        heard_from |= status.as_ref().is_some_and(|s| s.pid == pid);
        match status.and_then(|s| s.outcome(pid, awaited)) {
            Some(Ok(())) => return Ok(Asked::Taken),
            Some(Err(error)) => return Ok(Asked::Refused(error)),
            None => {}
        }
        if !alive() {
            return Ok(Asked::Gone);
        }
        if !heard_from && sent.elapsed() >= waits.first_word {
            return Ok(Asked::Unrecorded);
        }
        if sent.elapsed() >= waits.timeout {
            return Ok(Asked::TimedOut);
        }
        std::thread::sleep(waits.poll);
    }
}

/// The status file of the state directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Replaces the status file in `dir` with `status`: written beside it, then renamed over it.
pub fn write(dir: &Path, status: &ReloadStatus) -> io::Result<()> {
    let tmp = dir.join(format!(".{FILE}.{}.tmp", status.pid));
    let text = serde_json::to_vec(status).map_err(io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path(dir))
}

/// The status file in `dir`: `None` when there is none, or it does not parse (a daemon of an
/// older build writes none).
pub fn read(dir: &Path) -> Option<ReloadStatus> {
    let text = std::fs::read(path(dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_read_back_as_written_and_a_missing_or_damaged_file_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        let status = ReloadStatus {
            pid: 42,
            begun: 3,
            finished: 2,
            error: Some("config.toml:3:1: bad".into()),
        };
        write(dir.path(), &status).expect("write");
        assert_eq!(read(dir.path()), Some(status));
        std::fs::write(path(dir.path()), "{").expect("damage");
        assert_eq!(read(dir.path()), None);
    }

    /// The status is read before the signal is sent: a service that begins and finishes the
    /// reload asked for at once is heard (read after, that reload would look like one begun
    /// before, and the one after it would be waited for in vain).
    #[test]
    fn the_status_is_read_before_the_signal_and_a_fast_reload_is_heard() {
        use std::cell::RefCell;
        let status = RefCell::new(ReloadStatus {
            pid: 8,
            begun: 1,
            finished: 1,
            error: None,
        });
        let waits = Waits {
            timeout: Duration::from_millis(200),
            first_word: Duration::from_millis(200),
            poll: Duration::from_millis(1),
        };
        let asked = ask_and_wait(
            8,
            || Some(status.borrow().clone()),
            || {
                *status.borrow_mut() = ReloadStatus {
                    pid: 8,
                    begun: 2,
                    finished: 2,
                    error: Some("refused".into()),
                };
                Ok(())
            },
            || true,
            waits,
        );
        assert_eq!(asked.expect("asked"), Asked::Refused("refused".into()));
        // No word from the process: unrecorded; from it but no outcome: timed out; gone.
        let never = ask_and_wait(8, || None, || Ok(()), || true, waits);
        assert_eq!(never.expect("asked"), Asked::Unrecorded);
        let started = || Some(ReloadStatus::started(8));
        let slow = ask_and_wait(8, started, || Ok(()), || true, waits);
        assert_eq!(slow.expect("asked"), Asked::TimedOut);
        let gone = ask_and_wait(8, started, || Ok(()), || false, waits);
        assert_eq!(gone.expect("asked"), Asked::Gone);
        let refused = ask_and_wait(8, started, || Err(io::Error::other("no")), || true, waits);
        assert!(refused.is_err());
    }

    /// The reload awaited is the first to begin after the status was read: one of another
    /// process (an earlier run) or none counts from 0; the outcome is that reload's or a later
    /// one's, of the same process only.
    #[test]
    fn the_reload_awaited_is_the_first_to_begin_after_the_read() {
        let earlier_run = ReloadStatus {
            pid: 7,
            begun: 9,
            finished: 9,
            error: None,
        };
        assert_eq!(ReloadStatus::awaited(None, 8), 1);
        assert_eq!(ReloadStatus::awaited(Some(&earlier_run), 8), 1);
        // One begun and not finished when read: it may have read the old config.
        let in_flight = ReloadStatus {
            pid: 8,
            begun: 2,
            finished: 1,
            error: None,
        };
        let awaited = ReloadStatus::awaited(Some(&in_flight), 8);
        assert_eq!(awaited, 3);
        assert_eq!(in_flight.outcome(8, awaited), None);
        let second_done = ReloadStatus {
            finished: 2,
            ..in_flight.clone()
        };
        assert_eq!(second_done.outcome(8, awaited), None, "not the one awaited");
        let refused = ReloadStatus {
            pid: 8,
            begun: 3,
            finished: 3,
            error: Some("no".into()),
        };
        assert_eq!(refused.outcome(8, awaited), Some(Err("no".into())));
        assert_eq!(refused.outcome(9, awaited), None, "another process");
        let later = ReloadStatus {
            begun: 4,
            finished: 4,
            error: None,
            ..refused
        };
        assert_eq!(later.outcome(8, awaited), Some(Ok(())));
        assert_eq!(ReloadStatus::started(8).outcome(8, 1), None);
    }
}
