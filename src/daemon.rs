//! `convenor serve`: the long-running service.
//!
//! Order of start: state directory, its lock ([`crate::lock`]), the ledger, crash recovery
//! (rows left `sending` go out again with the same Message-ID), reconciliation with the config,
//! the HTTP listener, then the scheduler task and the HTTP task side by side (sending never
//! blocks the HTTP server). SIGHUP reloads the config: an invalid one is logged, diagnostic by
//! diagnostic, and the running one stays; a valid one is reconciled and swapped in, and the
//! scheduler woken. The shutdown future (SIGTERM or Ctrl-C from the CLI) stops both tasks.
//!
//! systemd ([`crate::notify`]): READY=1 once the listeners are bound; RELOADING=1 (with
//! MONOTONIC_USEC) then READY=1 around each reload, whatever its outcome; STOPPING=1 before
//! draining; WATCHDOG=1 from the scheduler loop after successful passes, the loop sleeping at
//! most half the watchdog interval, and before every send, so a pass sending many mails through
//! a slow relay is not taken for a hung loop (a warning at start and reload when the SMTP
//! timeout, the bound on one send, is more than half of `WatchdogSec`). `GET /healthz`
//! ([`crate::health`]) and `GET /metrics` ([`crate::metrics`]) answer at their public paths
//! even when a feed token is set: they hold no meeting, address or token, and monitoring should
//! not need the feed's secret; put `/metrics` on a private address with
//! `[http] metrics_listen`.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

mod ops;
mod reload;
pub mod served;

pub use ops::{Ops, ops_router, router};
use reload::{Live, agenda_changed, reload};

use crate::{
    config::Environment,
    health::Health,
    http::{FeedState, server},
    ledger::{LedgerError, SqliteStore, Store},
    lock::{LockError, StateLock},
    mail::{Templates, Transport},
    metrics::Counters,
    model::{Config, MeetingId, TransportSettings},
    notify,
    reload_status::ReloadStatus,
    revision::{Change, StoredRevision},
    scheduler::{
        MailOutbox, MailParts, Scheduler, SharedStore, SystemClock,
        reconcile::{Announced, announced_wanted, reconcile_revised},
        run::{LoopEvent, MAX_SLICE},
    },
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
    /// How long reading and validating the config took (shown in the READY log line).
    pub config_load: Duration,
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
    /// The templates do not load or do not render, or the transport cannot be set up.
    #[error("{0}")]
    Mail(String),
    /// A signal handler could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The agenda store failed.
    #[error(transparent)]
    Agenda(#[from] crate::agenda::AgendaError),
}

/// Reconciles `config` with the ledger at `now` and writes the result with the config's digest
/// as the plan stamp; logs what changed. When the ledger's stamp already is that digest (a
/// restart or reload with the same config, by the same build), reconciling would write nothing,
/// and the rows are not even read: at 5,000 meetings that is 40,000 rows, most of a warm start.
pub fn replan<S: Store>(store: &mut S, config: &Config, now: Timestamp) -> Result<(), LedgerError> {
    match PendingPlan::prepare(store, config, now)? {
        Some(plan) => store.apply(&plan.replan),
        None => Ok(()),
    }
}

/// [`replan`], returning the revisions the ledger holds once the plan is written: those the
/// reconciliation computed ([`PendingPlan::revisions`]), so a change that applied its plan has
/// no second fallible read before it can publish the config that plan belongs to. Only when the
/// ledger already is reconciled with `config` (nothing written) are they read from the ledger.
pub fn replan_revisions<S: Store>(
    store: &mut S,
    config: &Config,
    now: Timestamp,
) -> Result<BTreeMap<MeetingId, StoredRevision>, LedgerError> {
    match PendingPlan::prepare(store, config, now)? {
        Some(plan) => {
            store.apply(&plan.replan)?;
            Ok(plan.revisions)
        }
        None => store.revisions(),
    }
}

/// A reconciliation not yet written: what [`replan`] would apply, and the revisions the ledger
/// holds once it is applied (so the feeds can be rendered while it is being written).
#[derive(Debug)]
pub struct PendingPlan {
    /// The writes, stamped with the config's digest.
    pub replan: crate::ledger::Replan,
    /// The stored revisions with this plan's over them: what [`Store::revisions`] returns after
    /// [`Store::apply`] of `replan` (a revision's SEQUENCE never goes down, and reconciliation
    /// only ever computes it from the stored one, so the ledger's guard never refuses one).
    pub revisions: BTreeMap<MeetingId, StoredRevision>,
}

impl PendingPlan {
    /// Reconciles `config` with `store` at `now` and logs what changed; `None` when the ledger's
    /// plan stamp says it is already reconciled with this config.
    pub fn prepare<S: Store>(
        store: &S,
        config: &Config,
        now: Timestamp,
    ) -> Result<Option<Self>, LedgerError> {
        let Some(revised) = Revised::read(store, config, now)? else {
            return Ok(None);
        };
        revised.replan(store, config).map(Some)
    }
}

/// A reconciliation's first half: the revision every meeting has now, which is all the feeds
/// need of it, computed without reading the ledger's rows (at 5,000 meetings, 40,000 of them).
/// [`Revised::replan`] does the rest. A start serves the feeds from these revisions and writes
/// the plan after READY unless it raises a SEQUENCE (`FirstPlan`, private to this module).
#[derive(Debug)]
pub struct Revised {
    /// The config's digest, the plan stamp.
    stamp: String,
    /// The instant of the reconciliation.
    now: Timestamp,
    /// The revisions the ledger held, with those served before a plan never committed
    /// ([`served`]).
    stored: BTreeMap<MeetingId, StoredRevision>,
    /// The meetings of `stored` the ledger does not hold (from [`served`]).
    unplanned: BTreeSet<MeetingId>,
    /// Each meeting's change, in the config's order (its next revision is in `revisions`).
    changes: Vec<Change>,
    /// The revisions the ledger holds once the plan is written ([`PendingPlan::revisions`]).
    pub revisions: BTreeMap<MeetingId, StoredRevision>,
}

impl Revised {
    /// The next revisions of `config`'s meetings at `now`; `None` when the ledger's plan stamp
    /// says it is already reconciled with this config.
    pub fn read<S: Store>(
        store: &S,
        config: &Config,
        now: Timestamp,
    ) -> Result<Option<Self>, LedgerError> {
        let stamp = crate::digest::config_digest(config).to_string();
        if store.plan_stamp()?.as_deref() == Some(stamp.as_str()) {
            tracing::info!("plan: the ledger is already reconciled with this config");
            return Ok(None);
        }
        let mut stored = store.revisions()?;
        // Served by a start whose plan was never committed: read as if the ledger held them.
        let served = served::read(&config.state_dir);
        let mut unplanned = BTreeSet::new();
        for (id, rev) in served {
            if let std::collections::btree_map::Entry::Vacant(vacant) = stored.entry(id) {
                unplanned.insert(vacant.key().clone());
                vacant.insert(rev);
            }
        }
        let mut next = crate::revision::next_revisions(config, &stored, now);
        for (meeting, (_, change)) in config.meetings.iter().zip(&mut next) {
            // Written to the ledger as served, like a revision that lacks a recorded field.
            if *change == Change::Unchanged && unplanned.contains(&meeting.id) {
                *change = Change::Recorded;
            }
        }
        let (revisions, changes) = crate::revision::revised(config, &stored, next);
        Ok(Some(Self {
            stamp,
            now,
            stored,
            unplanned,
            changes,
            revisions,
        }))
    }

    /// The revisions of the meetings the ledger does not hold yet: what a start serving the
    /// feeds before the plan is committed keeps in [`served`].
    pub fn unstored(&self) -> impl Iterator<Item = (&MeetingId, &StoredRevision)> {
        (self.revisions.iter())
            .filter(|(id, _)| !self.stored.contains_key(*id) || self.unplanned.contains(*id))
    }

    /// True when the plan raises a stored SEQUENCE (a move, a cancellation, an agenda change);
    /// every other change leaves it as stored, and a new meeting starts at 0.
    pub fn raises_a_sequence(&self) -> bool {
        (self.revisions.iter()).any(|(id, next)| {
            (self.stored.get(id)).is_some_and(|stored| next.sequence > stored.sequence)
        })
    }

    /// Reads the ledger's rows and reconciles them with `config` (the config these revisions
    /// were computed from), logs what changed, and returns the writes, stamped, with the
    /// revisions they leave.
    pub fn replan<S: Store>(self, store: &S, config: &Config) -> Result<PendingPlan, LedgerError> {
        let rows = store.rows()?;
        // What recipients of notices still to go out last heard: a few history rows at most.
        let mut announced = Announced::new();
        for (meeting, sequence) in announced_wanted(&rows) {
            let Ok(id) = MeetingId::parse(&meeting) else {
                continue;
            };
            if let Some(heard) = store.revision_at(&id, sequence)? {
                announced.insert((meeting, sequence), heard.significant);
            }
        }
        let next = crate::revision::next_of(config, &self.revisions, self.changes);
        let mut result = reconcile_revised(config, &rows, &self.stored, next, &announced, self.now);
        for note in &result.notes {
            tracing::info!("plan: {note}");
        }
        for warning in &result.warnings {
            tracing::warn!("plan: {warning}");
        }
        result.replan.stamp = Some(self.stamp);
        Ok(PendingPlan {
            replan: result.replan,
            revisions: self.revisions,
        })
    }
}

/// Blocking writes started off the request path (the feed cache, a ledger checkpoint). Shutdown
/// waits for them: a SIGTERM right after a start would otherwise drop a cache write still
/// queued for a blocking thread, and the next start would render everything again.
#[derive(Clone, Debug, Default)]
pub struct BackgroundWrites {
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl BackgroundWrites {
    /// Runs `write` on one of the runtime's blocking threads and remembers it; outside a
    /// runtime, runs it now.
    pub fn spawn(&self, write: impl FnOnce() + Send + 'static) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let handle = rt.spawn_blocking(write);
                let mut pending = self
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.retain(|h| !h.is_finished());
                pending.push(handle);
            }
            Err(_) => write(),
        }
    }

    /// Completes when every write started so far (and any they started) has finished.
    pub async fn finish(&self) {
        loop {
            let pending = std::mem::take(
                &mut *self
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if pending.is_empty() {
                return;
            }
            for handle in pending {
                if let Err(e) = handle.await {
                    tracing::error!("a background write ended abnormally: {e}");
                }
            }
        }
    }
}

/// Runs a ledger checkpoint a bulk write left due, as a background write (it copies megabytes
/// and syncs the file).
pub fn run_checkpoint(
    checkpoint: Option<crate::ledger::Checkpoint>,
    background: &BackgroundWrites,
) {
    if let Some(checkpoint) = checkpoint {
        background.spawn(move || checkpoint.run());
    }
}

/// Logs a warning for each feed being served that nears Google's limit
/// ([`crate::feed::size_warning`], the rule `convenor check` prints too).
pub fn warn_of_big_feeds(feeds: &FeedState) {
    for warning in feeds.current().size_warnings() {
        tracing::warn!("{warning}");
    }
}

/// Logs [`crate::feed::zone_rule_warning`] for `config` (at start and reload; `convenor check`
/// prints it too).
pub fn warn_of_zone_rules(config: &Config) {
    if let Some(warning) = crate::feed::zone_rule_warning(config) {
        tracing::warn!("{warning}");
    }
}

/// Stores the feeds being served in the feed cache of `state_dir`, as a background write; a
/// failure is logged (it costs a rendering at the next start, and that start's Last-Modified
/// is worked out without the stamps it would have kept).
pub fn save_feed_cache(
    feeds: &FeedState,
    state_dir: &std::path::Path,
    background: &BackgroundWrites,
) {
    let (feeds, dir) = (feeds.clone(), state_dir.to_path_buf());
    background.spawn(move || {
        if let Err(e) = feeds.save_cache(&dir) {
            tracing::warn!("cannot write the feed cache in {}: {e}", dir.display());
        }
    });
}

/// Loads the templates, renders every rule's template for every recipient kind against a sample
/// of meetings ([`Templates::check_sample`]; `convenor check` renders them against all), and
/// builds the transport: everything a config needs before it may be used for mail. Must run
/// inside the runtime.
pub fn mail_parts(config: &Config) -> Result<MailParts, DaemonError> {
    let templates = Templates::load(&config.mail.templates_dir)
        .map_err(|e| DaemonError::Mail(e.to_string()))?;
    let sample = crate::mail::check::sample(config);
    if let Err(errors) = templates.check_sample_of(config, &sample) {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(DaemonError::Mail(lines.join("\n")));
    }
    crate::agenda::notify::check(config, &templates, &sample)
        .map_err(|e| DaemonError::Mail(format!("template proposal-received: {e}")))?;
    let transport = Transport::from_settings(&config.mail, &config.state_dir)
        .map_err(|e| DaemonError::Mail(e.to_string()))?;
    Ok(MailParts {
        templates,
        transport,
    })
}

/// Gives `config` the UID domain the ledger pinned at the first start (pinning the config's own
/// on a first start), so a renamed network keeps every calendar UID; says so when the names
/// differ.
pub fn pin_uid_domain<S: Store>(store: &mut S, config: &mut Config) -> Result<(), LedgerError> {
    let pinned = store.pin_uid_domain(&config.network.uid_domain)?;
    if pinned != config.network.uid_domain {
        tracing::info!(
            pinned = %pinned,
            from_short_name = %config.network.uid_domain,
            "the network's short name has changed since the first start; calendar UIDs keep \
             the domain pinned then, so subscribers see no duplicates"
        );
        config.network.uid_domain = pinned;
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that completes on either.
/// Installed when called, not when first polled: a SIGTERM during start-up (systemd stopping a
/// service that is still starting) then waits for READY and a graceful stop, where the default
/// action would kill the process before its background writes are done. Must be called inside
/// the runtime.
pub fn terminate_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
                // A second one while stopping (Ctrl-C twice in a terminal) ends the process at
                // once; a send cut off stays `sending` and goes again at the next start.
                tokio::spawn(async move {
                    tokio::select! {
                        Some(()) = term.recv() => {}
                        Some(()) = int.recv() => {}
                        // Both streams closed (the runtime going away): no second signal.
                        else => return,
                    }
                    tracing::warn!(
                        "a second stop signal: exiting now (a send cut off goes again at the \
                         next start, with the same Message-ID)"
                    );
                    std::process::exit(EXIT_STOPPED_AGAIN);
                });
            }
            _ => {
                // Without handlers, Ctrl-C is the only way to ask; tokio reports failure there
                // too.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// The exit status after a second SIGTERM or SIGINT cut a stop short (as a shell reports a
/// process ended by SIGINT).
pub const EXIT_STOPPED_AGAIN: i32 = 130;

/// Runs the service until `shutdown` completes.
pub async fn run(
    opts: ServeOptions,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    // Installed before any work, like the SIGTERM handler (see [`terminate_signal`]): a SIGHUP
    // during start-up would otherwise kill the process (its default action). One that comes
    // before READY is kept, and reloads the config as soon as the service is running.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    // One that came before the handler was held (`main`): it is delivered now, and kept.
    crate::hangup::release();
    let mut phases = Phases::default();
    let dir = config.state_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| DaemonError::StateDir {
        dir: dir.clone(),
        source,
    })?;
    let state_lock = StateLock::acquire(&dir)?;
    tracing::info!(lock = %state_lock.path().display(), "state directory locked");
    // This process's reloads start from none (`convenor reload` tells it from an earlier one's
    // by the pid, and waits until it has written this).
    let mut reloads = ReloadStatus::started(std::process::id());
    reload::record(&dir, &reloads);

    let agenda = crate::agenda::AgendaStore::open_in(&dir)?;
    let mut config = config;
    crate::agenda::attach(&mut config, &agenda)?;
    let mut store = SqliteStore::open_in(&dir)?;
    pin_uid_domain(&mut store, &mut config)?;
    // One copy, shared by the feeds, the scheduler and the agenda notices from here on.
    let config = Arc::new(config);
    let agenda = Arc::new(Mutex::new(agenda));
    for key in store.recover_sending()? {
        tracing::warn!(
            mail = %key,
            "an attempt was cut short (crash or kill); sending again with the same Message-ID"
        );
    }
    phases.lap("ledger");
    // Templates and transport are checked before anything is planned (a broken template stops
    // the start with no mail planned), on a thread of their own beside the revisions and feeds.
    let checking = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (mail_parts(&config), started.elapsed())
        })
    };
    crate::http::feed_cache::remove_unfinished(&dir);
    let (feeds, feeds_cached, revised, kept) = revise_and_render(&store, &config, &mut phases)?;
    let (parts, checked_in) = match checking.await {
        Ok(checked) => checked,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let parts = parts?;
    phases.note(format!(
        "templates checked beside them in {:.1} ms",
        checked_in.as_secs_f64() * 1000.0
    ));
    warn_of_big_feeds(&feeds);
    let store: SharedStore<SqliteStore> = Arc::new(Mutex::new(store));
    // The plan holds the ledger from now until it is committed. One that raises a SEQUENCE is
    // committed before READY, so no SEQUENCE is served before it is stored; any other (a first
    // start, new meetings, descriptive changes) is written after READY ([`FirstPlan`]).
    let first_plan = match revised {
        Some(revised) => {
            let mut raises = revised.raises_a_sequence();
            match kept {
                Kept::Nothing => {}
                Kept::Done(count, took) => phases.note(format!(
                    "{count} new revisions kept beside them in {:.1} ms",
                    took.as_secs_f64() * 1000.0
                )),
                // If they cannot be kept before they are served, the plan goes first.
                Kept::Failed(e) => {
                    tracing::warn!(
                        "cannot keep the new meetings' revisions in {}: {e}; the plan is \
                         written before READY",
                        dir.join(served::FILE).display()
                    );
                    raises = true;
                }
            }
            let plan = FirstPlan::start(store.clone(), config.clone(), revised).await;
            if raises {
                let written = plan.go_and_wait().await?;
                phases.lap(&format!(
                    "plan first (reconciled in {:.1} ms, written in {:.1} ms)",
                    written.reconciled.as_secs_f64() * 1000.0,
                    written.written.as_secs_f64() * 1000.0,
                ));
                None
            } else {
                Some(plan)
            }
        }
        None => None,
    };
    let outbox = Arc::new(MailOutbox::new(store.clone(), parts));

    let addr = opts.listen.unwrap_or(config.http.listen);
    let listener = bind(addr).await?;
    tracing::info!("listening on http://{}", local(&listener, addr)?);
    let metrics_listener = match config.http.metrics_listen {
        Some(addr) => {
            let l = bind(addr).await?;
            tracing::info!("metrics on http://{}/metrics", local(&l, addr)?);
            Some(l)
        }
        None => None,
    };
    let limits = server::Limits::from_settings(&config.http);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (config_tx, config_rx) = watch::channel(config);
    let wake = Arc::new(Notify::new());

    let watchdog = notify::watchdog_interval();
    let slice = watchdog.map_or(MAX_SLICE, |d| d.min(MAX_SLICE));
    if let Some(every) = watchdog {
        tracing::info!(
            "systemd watchdog on: WATCHDOG=1 every {every:?} and before each send from the \
             scheduler loop"
        );
        if let Some(warning) = smtp_timeout_warning(&config_tx.borrow().mail.transport, every * 2) {
            tracing::warn!("{warning}");
        }
    }
    let ops = Ops {
        store: store.clone(),
        health: Arc::new(Health::new(
            Instant::now(),
            slice * 3 + Duration::from_secs(60),
        )),
        counters: Arc::new(Counters::default()),
        feeds: feeds.clone(),
        counts: Arc::default(),
    };

    let mut servers = Vec::new();
    let background = BackgroundWrites::default();
    // The mail to a lead uses the config in force with its checked templates and transport,
    // read under the store lock where a reload publishes them together.
    let notifier = {
        let (store, outbox, config) = (store.clone(), outbox.clone(), config_tx.clone());
        crate::agenda::notify::Notifier::new(move || {
            let _published = crate::scheduler::run::lock(&store);
            (config.borrow().clone(), outbox.parts())
        })
    };
    let live = Arc::new(Live {
        store: store.clone(),
        config: config_tx.clone(),
        feeds: feeds.clone(),
        outbox: outbox.clone(),
        wake: wake.clone(),
        agenda: agenda.clone(),
        notifier: notifier.clone(),
        background: background.clone(),
        changes: reload::ChangeLock::default(),
    });
    let hook = {
        let live = live.clone();
        Arc::new(move || {
            // An agenda change may wait for a reload under way (they are serialised): on the
            // multi-thread runtime the worker hands its other tasks on while it waits.
            crate::sqlite_file::off_the_async_workers(|| agenda_changed(&live));
        })
    };
    let pages = crate::http::agenda_pages::AgendaPages::new(
        feeds.clone(),
        agenda.clone(),
        hook,
        Some(notifier.clone()),
    );
    let app = router(
        feeds.clone(),
        pages,
        ops.clone(),
        metrics_listener.is_none(),
    );
    servers.push(tokio::spawn(serve_http(listener, app, limits, stopped())));
    if let Some(l) = metrics_listener {
        let app = ops_router(ops.clone(), true);
        servers.push(tokio::spawn(serve_http(l, app, limits, stopped())));
    }
    let scheduler = Scheduler::new(
        store.clone(),
        outbox.clone(),
        SystemClock,
        config_rx,
        wake.clone(),
    );
    let health = ops.health.clone();
    let mut petted: Option<Instant> = None;
    let on_event = move |event: LoopEvent<'_>| {
        let now = Instant::now();
        match event {
            // Before every send: a pass sends its due mails one after another, each bounded by
            // the SMTP timeout, so the gap between two WATCHDOG=1 is one send, not one pass.
            // (One datagram per mail costs little beside the mail's SMTP round trips and its
            // two ledger commits.)
            LoopEvent::Sending(_) => {
                health.progress(now);
                if watchdog.is_some() {
                    notify::watchdog();
                    petted = Some(now);
                }
            }
            LoopEvent::PassEnded(pass) => {
                health.pass(pass.map_err(ToString::to_string), now);
                // A failed pass is a loop at work too (the ledger refusing writes: an outcome
                // it could not record is kept in memory and recorded at the next passes, which
                // a watchdog kill would lose, sending the mail again after the restart);
                // `/healthz` reports the error. Only a loop that stops passing is hung.
                if let Some(every) = watchdog {
                    // Passes can come every 100 ms; about two WATCHDOG=1 per interval is plenty.
                    // With passes at most `every` apart, two pets are then at most 1.5 `every`
                    // (three quarters of WatchdogSec) apart when no mail is sent.
                    if petted.is_none_or(|t| now.duration_since(t) >= every / 2) {
                        notify::watchdog();
                        petted = Some(now);
                    }
                }
            }
        }
    };
    // Config valid, ledger open, sockets bound: ready (before the loop's first WATCHDOG=1).
    notify::ready();
    tracing::info!(
        "ready {} ms after start (config {:.1} ms, {})",
        (opts.config_load + started.elapsed()).as_millis(),
        opts.config_load.as_secs_f64() * 1000.0,
        phases.laps.join(", ")
    );
    tokio::pin!(shutdown);
    // A SIGTERM while the plan is written is taken (and logged, and a second one armed) at
    // once, and the stop comes once the plan is committed: no mail is started then.
    let mut stop_taken = false;
    if let Some(plan) = first_plan {
        let written = plan.go_and_wait();
        tokio::pin!(written);
        let written = loop {
            tokio::select! {
                written = &mut written => break written,
                () = &mut shutdown, if !stop_taken => stop_taken = true,
            }
        };
        match written {
            Ok(written) => tracing::info!(
                "plan written {} ms after start (reconciled in {:.1} ms, written in {:.1} ms)",
                (opts.config_load + started.elapsed()).as_millis(),
                written.reconciled.as_secs_f64() * 1000.0,
                written.written.as_secs_f64() * 1000.0,
            ),
            Err(e) => {
                // Nothing was sent (the scheduler has not started) and nothing is lost: the
                // next start plans again. The feeds served meanwhile stop like at any stop.
                notify::stopping();
                let _ = stop_tx.send(true);
                for task in servers {
                    let _ = task.await;
                }
                background.finish().await;
                return Err(e.into());
            }
        }
    }
    // Mails to leads owed from before this start read the config under the ledger's lock.
    if !stop_taken {
        tokio::spawn(crate::agenda::notify::resend_pending(
            notifier,
            agenda.clone(),
        ));
    }
    warn_of_zone_rules(&config_tx.borrow());
    // Start-up's transient memory (rendering, reconciling, the plan written on a second
    // thread) goes back to the kernel rather than staying in RSS for the daemon's life.
    crate::memory::end_bulk_work();
    if !feeds_cached {
        save_feed_cache(&feeds, &dir, &background);
    }
    // A first plan's pages go from the WAL into the database file now, off the request path.
    let checkpoint = crate::scheduler::run::lock(&store).take_checkpoint();
    run_checkpoint(checkpoint, &background);
    let sched = (!stop_taken).then(|| {
        let sched = tokio::spawn(scheduler.run_observed(stopped(), slice, on_event));
        tracing::info!("convenor is running");
        sched
    });
    if !stop_taken {
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = hangup.recv() => reload(&opts, &live, &ops, &mut reloads),
            }
        }
    }
    notify::stopping();
    tracing::info!("stopping: HTTP drains, a send in flight finishes");
    let _ = stop_tx.send(true);
    // The HTTP drain and the send in flight run side by side: the stop takes the longer of
    // the two (at most `STOP_GRACE`), inside the unit's TimeoutStopSec.
    let http = async {
        for task in servers {
            if let Err(e) = task.await {
                tracing::error!("HTTP server task ended abnormally: {e}");
            }
        }
    };
    let sched = async {
        match sched {
            Some(task) => task.await,
            None => Ok(()),
        }
    };
    let (_, scheduled) = tokio::join!(http, sched);
    if let Err(e) = scheduled {
        tracing::error!("scheduler task ended abnormally: {e}");
    }
    background.finish().await;
    drop(state_lock);
    tracing::info!("stopped");
    Ok(())
}

/// The warning to log when the systemd watchdog is on (`watchdog`: `WatchdogSec`) and the SMTP
/// timeout, which bounds one send and so the gap between two WATCHDOG=1 during a pass, is more
/// than half of it: a slow relay would then come close to getting the service killed in
/// mid-send. A warning, not a refusal: such a config still sends, and a service that worked
/// must not stop starting on an upgrade; at most half (the shipped 30 s against 60 s) leaves
/// the other half for composing and recording the mail.
pub fn smtp_timeout_warning(transport: &TransportSettings, watchdog: Duration) -> Option<String> {
    let TransportSettings::Smtp(smtp) = transport else {
        return None;
    };
    let timeout = smtp.timeout.unsigned_abs();
    (timeout * 2 > watchdog).then(|| {
        format!(
            "[mail.smtp] timeout = {timeout:?} is more than half the systemd watchdog \
             (WatchdogSec = {watchdog:?}): one slow send may get the service killed and \
             restarted; lower the timeout or raise WatchdogSec"
        )
    })
}

/// The feeds of `config`, rendered (or taken from the cache in the state directory when it
/// holds them) from the revisions the ledger holds once it is reconciled with `config`, and the
/// reconciliation still to finish and write ([`FirstPlan`]), if the ledger is not.
fn revise_and_render(
    store: &SqliteStore,
    config: &Arc<Config>,
    phases: &mut Phases,
) -> Result<(FeedState, bool, Option<Revised>, Kept), DaemonError> {
    let dir = &config.state_dir;
    let revised = Revised::read(store, config, Timestamp::now())?;
    let (feeds, cached, kept) = match &revised {
        Some(revised) => {
            phases.lap("revisions");
            // A plan that raises no SEQUENCE goes after READY: the new meetings' revisions are
            // kept first (`served`), on a thread of their own beside the rendering.
            let keep = !revised.raises_a_sequence() && revised.unstored().next().is_some();
            std::thread::scope(|scope| {
                let keeping = keep.then(|| {
                    scope.spawn(|| {
                        let started = Instant::now();
                        let kept = served::write(dir, revised.unstored());
                        (kept, revised.unstored().count(), started.elapsed())
                    })
                });
                let (feeds, cached) = FeedState::new_cached(config, &revised.revisions, dir);
                let kept = match keeping.map(std::thread::ScopedJoinHandle::join) {
                    None => Kept::Nothing,
                    Some(Ok((Ok(()), count, took))) => Kept::Done(count, took),
                    Some(Ok((Err(e), _, _))) => Kept::Failed(e),
                    Some(Err(panic)) => std::panic::resume_unwind(panic),
                };
                (feeds, cached, kept)
            })
        }
        None => {
            phases.lap("plan");
            let (feeds, cached) = FeedState::new_cached(config, &store.revisions()?, dir);
            (feeds, cached, Kept::Nothing)
        }
    };
    phases.lap(if cached {
        "feeds (from the cache)"
    } else {
        "feeds"
    });
    Ok((feeds, cached, revised, kept))
}

/// Whether the revisions of meetings new to the ledger were kept ([`served`]) before the feeds
/// serve them.
enum Kept {
    /// None to keep (no plan, no new meeting, or a plan committed before READY).
    Nothing,
    /// That many, in that time.
    Done(usize, Duration),
    /// They could not be: the plan is committed before READY.
    Failed(std::io::Error),
}

/// A start's plan, finished and written on a blocking thread: after READY, while the feeds are
/// served from the revisions it will leave ([`Revised`]), unless it raises a SEQUENCE. It reads
/// the ledger's rows, reconciles them and commits (at 5,000 meetings, 40,000 rows: most of a
/// first start). It holds the ledger's lock from before READY until it has committed, so
/// whatever else reads or writes the ledger (a reload, an agenda change, `/metrics`) waits for
/// it, and the scheduler starts after it.
///
/// Why a plan that raises a SEQUENCE goes first: a crash between READY and the commit would
/// have served a SEQUENCE the ledger never stored, and the next start, on an edited config,
/// could serve the same SEQUENCE for other times, or a lower one. One that raises none serves
/// the stored SEQUENCE, or 0 for a meeting the ledger does not have yet; after such a crash the
/// next start serves the same, with a later LAST-MODIFIED.
struct FirstPlan {
    task: tokio::task::JoinHandle<Result<Option<PlanWritten>, LedgerError>>,
    go: tokio::sync::oneshot::Sender<()>,
}

/// How long a [`FirstPlan`] took.
struct PlanWritten {
    reconciled: Duration,
    written: Duration,
}

impl FirstPlan {
    /// Starts a blocking thread that takes the ledger and waits for [`FirstPlan::go_and_wait`]
    /// to finish `revised`; returns once the thread holds the ledger. Dropped before it goes
    /// (a start that fails before READY), it writes nothing and lets the ledger go.
    async fn start(store: SharedStore<SqliteStore>, config: Arc<Config>, revised: Revised) -> Self {
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let mut ledger = crate::scheduler::run::lock(&store);
            let _ = held_tx.send(());
            if go_rx.blocking_recv().is_err() {
                return Ok(None);
            }
            // The feeds are rendered: the bulk work before READY is done. Kept on, the plan's
            // memory, freed on this thread, would stay at the top of its arena.
            crate::memory::end_bulk_work();
            let started = Instant::now();
            let plan = revised.replan(&*ledger, &config)?;
            let reconciled = started.elapsed();
            ledger.apply(&plan.replan)?;
            served::remove(&config.state_dir);
            Ok(Some(PlanWritten {
                reconciled,
                written: started.elapsed() - reconciled,
            }))
        });
        // A thread that ended without holding the ledger panicked: `go_and_wait` resumes it.
        let _ = held_rx.await;
        Self { task, go }
    }

    /// Lets the plan be finished and written, and waits until it is committed.
    async fn go_and_wait(self) -> Result<PlanWritten, LedgerError> {
        let _ = self.go.send(());
        match self.task.await {
            Ok(Ok(Some(written))) => Ok(written),
            Ok(Ok(None)) => unreachable!("the plan was told to go"),
            Ok(Err(e)) => Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Start-up phase durations, for the log line at READY.
struct Phases {
    last: Instant,
    laps: Vec<String>,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }
}

impl Phases {
    /// Adds `text` as it is (work timed on another thread).
    fn note(&mut self, text: String) {
        self.laps.push(text);
    }

    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.laps.push(format!("{name} {ms:.1} ms"));
        self.last = now;
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })
}

fn local(listener: &tokio::net::TcpListener, addr: SocketAddr) -> Result<SocketAddr, DaemonError> {
    listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { addr, source })
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: server::Limits,
    stopped: impl Future<Output = ()>,
) {
    if let Err(e) = server::serve(listener, app, limits, stopped).await {
        tracing::error!("HTTP server failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn shutdown_waits_for_every_background_write_and_those_they_start() {
        let background = BackgroundWrites::default();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (done, again) = (done.clone(), background.clone());
            background.spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let inner = done.clone();
                // A write started by a write (a reload's cache write, say) is waited for too.
                again.spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    inner.fetch_add(1, Ordering::SeqCst);
                });
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        background.finish().await;
        assert_eq!(done.load(Ordering::SeqCst), 6);
        background.finish().await; // nothing pending: returns at once
    }

    #[test]
    fn the_smtp_timeout_is_warned_about_when_over_half_the_watchdog() {
        use crate::model::{PasswordSource, SmtpSettings, TlsMode};
        let smtp = |secs| {
            TransportSettings::Smtp(SmtpSettings {
                host: "relay.example.org".into(),
                port: 587,
                tls: TlsMode::StartTls,
                user: None,
                password: PasswordSource::None,
                ca_file: None,
                timeout: jiff::SignedDuration::from_secs(secs),
            })
        };
        let minute = Duration::from_secs(60);
        // The shipped defaults (30 s against WatchdogSec=60s) are quiet.
        assert_eq!(smtp_timeout_warning(&smtp(30), minute), None);
        assert_eq!(smtp_timeout_warning(&TransportSettings::File, minute), None);
        let warning = smtp_timeout_warning(&smtp(31), minute).expect("a warning");
        assert!(
            warning.contains("timeout = 31s") && warning.contains("WatchdogSec = 60s"),
            "{warning}"
        );
        assert!(smtp_timeout_warning(&smtp(90), minute).is_some());
    }

    #[test]
    fn outside_a_runtime_a_background_write_runs_at_once() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        BackgroundWrites::default().spawn(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
