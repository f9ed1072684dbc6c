//! `convenor serve`: the long-running service.
//!
//! Order of start: state directory, its lock ([`crate::lock`]), the ledger, crash recovery
//! (rows left `sending` go out again with the same Message-ID), reconciliation with the config,
//! the HTTP listener, then the scheduler task and the HTTP task side by side (sending never
//! blocks the HTTP server). SIGHUP reloads the config: an invalid one is logged, diagnostic by
//! diagnostic, and the running one stays; a valid one is reconciled and swapped in, and the
//! scheduler woken. The shutdown future (SIGTERM or Ctrl-C from the CLI) stops both tasks.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use crate::{
    config::{self, ConfigError, Environment},
    ledger::{LedgerError, SqliteStore, Store},
    lock::{LockError, StateLock},
    model::Config,
    scheduler::{LettreOutbox, Scheduler, SharedStore, SystemClock, reconcile, run::lock},
};

/// What `convenor serve` was asked to do.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The config file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// The environment the config was loaded with.
    pub env: Environment,
    /// Listen here instead of `[http] listen`.
    pub listen: Option<SocketAddr>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}: {source}", dir.display())]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state directory is locked by another instance, or cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Reconciles `config` with the ledger at `now` and writes the result; logs what changed.
pub fn replan<S: Store>(store: &mut S, config: &Config, now: Timestamp) -> Result<(), LedgerError> {
    let rows = store.rows()?;
    let revisions = store.revisions()?;
    let result = reconcile(config, &rows, &revisions, now);
    for note in &result.notes {
        tracing::info!("plan: {note}");
    }
    if !result.replan.is_empty() {
        store.apply(&result.replan)?;
    }
    Ok(())
}

/// The HTTP routes. A minimal router for now (`GET /healthz`); the feed router is merged in here.
pub fn router() -> axum::Router {
    axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }))
}

/// Completes on SIGTERM or SIGINT.
pub async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            // Without handlers, Ctrl-C is the only way to ask; tokio reports failure there too.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reads the config again; on success reconciles it and swaps it in.
fn reload(
    opts: &ServeOptions,
    store: &SharedStore<SqliteStore>,
    config_tx: &watch::Sender<Arc<Config>>,
    wake: &Notify,
) {
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
            return;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut config = loaded.config;
    let old = config_tx.borrow().clone();
    if config.state_dir != old.state_dir {
        tracing::warn!(
            "the state directory changed to {}; that takes a restart, keeping {}",
            config.state_dir.display(),
            old.state_dir.display()
        );
        config.state_dir = old.state_dir.clone();
    }
    if config.http.listen != old.http.listen {
        tracing::warn!("[http] listen changed; that takes a restart");
    }
    if let Err(e) = replan(&mut *lock(store), &config, Timestamp::now()) {
        tracing::error!("config reload: the ledger failed, keeping the running config: {e}");
        return;
    }
    // LEAD: rebuild and swap the feed state here, from `config` and `store.revisions()`.
    config_tx.send_replace(Arc::new(config));
    wake.notify_one();
    tracing::info!("config reloaded");
}

/// Runs the service until `shutdown` completes.
pub async fn run(
    opts: ServeOptions,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let dir = config.state_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| DaemonError::StateDir {
        dir: dir.clone(),
        source,
    })?;
    let state_lock = StateLock::acquire(&dir)?;
    tracing::info!(lock = %state_lock.path().display(), "state directory locked");

    let mut store = SqliteStore::open_in(&dir)?;
    for key in store.recover_sending()? {
        tracing::warn!(
            mail = %key,
            "an attempt was cut short (crash or kill); sending again with the same Message-ID"
        );
    }
    replan(&mut store, &config, Timestamp::now())?;
    let store: SharedStore<SqliteStore> = Arc::new(Mutex::new(store));

    let addr = opts.listen.unwrap_or(config.http.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { addr, source })?;
    tracing::info!("listening on http://{local}");

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let wake = Arc::new(Notify::new());

    // LEAD: merge the feed router (with its swappable state) into `router()` here.
    let http = tokio::spawn({
        let stopped = stopped();
        async move {
            if let Err(e) = axum::serve(listener, router())
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!("HTTP server failed: {e}");
            }
        }
    });
    let scheduler = Scheduler {
        store: store.clone(),
        outbox: LettreOutbox {
            state_dir: dir.clone(),
        },
        clock: SystemClock,
        config: config_rx,
        wake: wake.clone(),
    };
    let sched = tokio::spawn(scheduler.run(stopped()));

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("convenor is running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => reload(&opts, &store, &config_tx, &wake),
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for (name, task) in [("HTTP server", http), ("scheduler", sched)] {
        if let Err(e) = task.await {
            tracing::error!("{name} task ended abnormally: {e}");
        }
    }
    drop(state_lock);
    tracing::info!("stopped");
    Ok(())
}
