//! The systemd notification protocol (`sd_notify`), as the service uses it.
//!
//! A thin wrapper over the `sd-notify` crate: each function sends one message to
//! `$NOTIFY_SOCKET` and logs (at debug) when that fails; without `$NOTIFY_SOCKET` (not under
//! systemd) every call does nothing. Readiness follows systemd's order: READY=1 once the
//! config is valid, the ledger open and the socket bound; on reload RELOADING=1 with
//! MONOTONIC_USEC, then READY=1 again; STOPPING=1 on the way out; WATCHDOG=1 from the scheduler
//! loop after successful passes and before each send.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// READY=1: the service is up (or back up after a reload).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC in microseconds), as `Type=notify-reload`
/// and newer systemd expect; follow it with [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::debug!("reading CLOCK_MONOTONIC failed: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// STOPPING=1: the service is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// WATCHDOG=1: the scheduler loop is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1: half of `$WATCHDOG_USEC` when the watchdog is on for this
/// process, else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
