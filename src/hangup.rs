//! SIGHUP held from the first instruction of `convenor serve` until the daemon's handler is in.
//!
//! SIGHUP's default action ends the process, and systemd counts that as a clean exit, so
//! `Restart=on-failure` would not bring the service back. Before `daemon::run` installs its
//! handler (after the arguments, the config and the runtime), a `kill -HUP` would do just that.
//! [`hold`] blocks the signal in the main thread before any other thread exists (every thread
//! started afterwards inherits the mask), so one that comes early stays pending; [`release`],
//! called once the handler is installed, unblocks it in the calling thread, which then takes
//! the pending signal: it reloads the config as soon as the service is running, like one that
//! comes during the rest of start-up.

/// Blocks SIGHUP in the calling thread (and in every thread it starts from now on).
pub fn hold() {
    set(libc::SIG_BLOCK);
}

/// Unblocks SIGHUP in the calling thread: a pending one is delivered (to the handler installed
/// by then).
pub fn release() {
    set(libc::SIG_UNBLOCK);
}

fn set(how: libc::c_int) {
    // SAFETY: `set` is a local, initialised by sigemptyset before use; pthread_sigmask only
    // reads it and changes the calling thread's mask (no old mask is asked for).
    let result = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    if result != 0 {
        tracing::warn!(
            "cannot change the SIGHUP mask: {}",
            std::io::Error::from_raw_os_error(result)
        );
    }
}
