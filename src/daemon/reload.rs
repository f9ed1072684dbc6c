//! Changes to the running service: a SIGHUP reload (config, templates, transport, agenda,
//! all or nothing) and an agenda decision made on the web.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::{BackgroundWrites, Ops, ServeOptions, mail_parts, replan};
use crate::{
    config::{self, ConfigError},
    http::{FeedState, server},
    ledger::{SqliteStore, Store as _},
    model::Config,
    notify,
    scheduler::{MailOutbox, SharedStore, run::lock},
};

/// Applies an agenda change (a lead's decision on the web) to the running service: recompiles
/// the agenda into the running config, reconciles (the meeting's SEQUENCE rises), re-renders the
/// feeds, hands the scheduler the new config and wakes it. A failure is logged; the change stays
/// stored and shows at the next change or reload.
pub fn agenda_changed(
    ledger: &SharedStore<SqliteStore>,
    agenda: &Mutex<crate::agenda::AgendaStore>,
    config: &watch::Sender<Arc<Config>>,
    feeds: &FeedState,
    wake: &Notify,
    background: &BackgroundWrites,
) {
    let current = config.borrow().clone();
    let refreshed = {
        let agenda = agenda
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ledger = lock(ledger);
        let refreshed = crate::agenda::refresh(&current, &agenda, &mut *ledger, Timestamp::now());
        super::run_checkpoint(ledger.take_checkpoint(), background);
        refreshed
    };
    match refreshed {
        Ok((config_now, revisions)) => {
            let config_now = Arc::new(config_now);
            if feeds.replace(&config_now, &revisions) {
                super::save_feed_cache(feeds, &config_now.state_dir, background);
            }
            config.send_replace(config_now);
            wake.notify_one();
            tracing::info!("agenda changed: feeds re-rendered");
        }
        Err(e) => tracing::error!("agenda changed but could not be applied: {e}"),
    }
}

/// What a reload swaps: the config for the scheduler, the feeds, the templates and transport.
pub(super) struct Live {
    pub(super) store: SharedStore<SqliteStore>,
    pub(super) config: watch::Sender<Arc<Config>>,
    pub(super) feeds: FeedState,
    pub(super) outbox: Arc<MailOutbox<SqliteStore>>,
    pub(super) wake: Arc<Notify>,
    pub(super) agenda: Arc<Mutex<crate::agenda::AgendaStore>>,
    pub(super) background: BackgroundWrites,
}

/// Reloads between RELOADING=1 and READY=1, and records the outcome for health and metrics.
pub(super) fn reload(opts: &ServeOptions, live: &Live, ops: &Ops) {
    notify::reloading();
    let result = try_reload(opts, live);
    // Loading, reconciling and rendering are transient: their memory goes back to the kernel.
    crate::memory::release_free_heap();
    ops.counters.reload(result.is_ok());
    ops.health.reload(result);
    notify::ready();
}

/// Reads the config again; on success reconciles it and swaps it in.
fn try_reload(opts: &ServeOptions, live: &Live) -> Result<(), String> {
    tracing::info!(config = %opts.config_path.display(), "SIGHUP: reloading the config");
    let loaded = match config::load(&opts.config_path, &opts.env) {
        Ok(loaded) => loaded,
        Err(err) => {
            match &err {
                ConfigError::Read { .. } => tracing::error!("config reload failed: {err}"),
                ConfigError::Invalid(diagnostics) => {
                    for d in diagnostics {
                        tracing::error!("config reload failed: {d}");
                    }
                }
            }
            tracing::error!("the new config was not used; the running config stays in force");
            return Err(err.to_string());
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if let Some(every) = notify::watchdog_interval()
        && let Some(w) = super::smtp_timeout_warning(&loaded.config.mail.transport, every * 2)
    {
        tracing::warn!("{w}");
    }
    let mut config = loaded.config;
    // The agenda (possibly changed from the CLI) is compiled afresh at every reload.
    if let Err(e) = crate::agenda::attach(
        &mut config,
        &live
            .agenda
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ) {
        tracing::error!("config reload: the agenda store failed, keeping the running config: {e}");
        return Err(e.to_string());
    }
    let old = live.config.borrow().clone();
    if config.state_dir != old.state_dir {
        tracing::warn!(
            "the state directory changed to {}; that takes a restart, keeping {}",
            config.state_dir.display(),
            old.state_dir.display()
        );
        config.state_dir = old.state_dir.clone();
    }
    if config.http.listen != old.http.listen
        || config.http.metrics_listen != old.http.metrics_listen
        || server::Limits::from_settings(&config.http) != server::Limits::from_settings(&old.http)
    {
        tracing::warn!("[http] listen, metrics_listen and the connection limits take a restart");
    }
    let parts = match mail_parts(&config) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!("config reload failed: {e}");
            tracing::error!("the new config was not used; the running config stays in force");
            return Err(e.to_string());
        }
    };
    let revisions = {
        let mut store = lock(&live.store);
        let revisions =
            replan(&mut *store, &config, Timestamp::now()).and_then(|()| store.revisions());
        super::run_checkpoint(store.take_checkpoint(), &live.background);
        revisions
    };
    let revisions = match revisions {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("config reload: the ledger failed, keeping the running config: {e}");
            return Err(e.to_string());
        }
    };
    let config = Arc::new(config);
    if live.feeds.replace(&config, &revisions) {
        super::save_feed_cache(&live.feeds, &config.state_dir, &live.background);
    }
    live.outbox.replace(parts);
    live.config.send_replace(config);
    live.wake.notify_one();
    tracing::info!("config reloaded");
    Ok(())
}
