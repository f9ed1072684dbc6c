//! Changes to the running service: a SIGHUP reload (config, templates, transport, agenda,
//! all or nothing) and an agenda decision made on the web.
//!
//! The two run on different threads (the main task, an HTTP handler) and each goes from the
//! config in force to a new one, a new plan in the ledger and new feeds. They are serialised by
//! one lock ([`Live::lock_changes`]) held from reading the config in force to publishing the new
//! config and feeds, so neither starts from a config the other is replacing: a decision made
//! during a reload is applied on top of the reloaded config, and a reload during a decision
//! compiles the agenda with it. Each publishes its config (a reload also its templates and
//! transport) while still holding the store lock it replanned under, which is where the
//! scheduler's outbox reads them ([`crate::scheduler::outbox`]): a mail never pairs one plan's
//! SEQUENCE with another plan's meeting.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::{BackgroundWrites, Ops, ServeOptions, mail_parts, replan_revisions};
use crate::{
    config::{self, ConfigError},
    http::{FeedState, server},
    ledger::SqliteStore,
    model::Config,
    notify,
    reload_status::ReloadStatus,
    scheduler::{MailOutbox, SharedStore, run::lock},
};

/// Applies an agenda change (a lead's decision on the web) to the running service: recompiles
/// the agenda into the running config, reconciles (the meeting's SEQUENCE rises), re-renders the
/// feeds, hands the scheduler the new config and wakes it. Waits for a reload under way and
/// starts from the config it leaves. A failure is logged; the change stays stored and shows at
/// the next change or reload. No template is checked here: start and reload rendered every
/// template with a made-up agenda holding items ([`crate::mail::check::made_up_agenda`]).
pub(super) fn agenda_changed(live: &Live) {
    let _changing = live.lock_changes();
    // Read inside the lock: a reload that finished meanwhile is the base of this change.
    let current = live.config.borrow().clone();
    let refreshed = {
        let agenda = live.agenda.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ledger = lock(&live.store);
        let refreshed = crate::agenda::refresh(&current, &agenda, &mut *ledger, Timestamp::now())
            .map(|(config_now, revisions)| {
                let config_now = Arc::new(config_now);
                // Published with the plan, under the store lock (see the module docs).
                live.config.send_replace(config_now.clone());
                (config_now, revisions)
            });
        super::run_checkpoint(ledger.take_checkpoint(), &live.background);
        refreshed
    };
    match refreshed {
        Ok((config_now, revisions)) => {
            if live.feeds.replace(&config_now, &revisions) {
                super::save_feed_cache(&live.feeds, &config_now.state_dir, &live.background);
                super::warn_of_big_feeds(&live.feeds);
            }
            live.wake.notify_one();
            tracing::info!("agenda changed: feeds re-rendered");
        }
        Err(e) => tracing::error!("agenda changed but could not be applied: {e}"),
    }
}

/// The running service's shared parts that a reload or an agenda change swaps: the config for
/// the scheduler, the feeds, the templates and transport; and the lock that serialises the two.
pub(super) struct Live {
    pub(super) store: SharedStore<SqliteStore>,
    pub(super) config: watch::Sender<Arc<Config>>,
    pub(super) feeds: FeedState,
    pub(super) outbox: Arc<MailOutbox<SqliteStore>>,
    pub(super) wake: Arc<Notify>,
    pub(super) agenda: Arc<Mutex<crate::agenda::AgendaStore>>,
    /// Mails leads about proposals; after a reload, those owed again (see
    /// [`crate::agenda::notify::send_owed`]).
    pub(super) notifier: crate::agenda::notify::Notifier,
    pub(super) background: BackgroundWrites,
    /// Held by a reload or an agenda change from reading the config in force to publishing
    /// the new config and feeds.
    pub(super) changes: ChangeLock,
}

/// The lock that serialises reloads and agenda changes (see the module docs). A std mutex: both
/// paths are synchronous, and an agenda change waits on it from a runtime worker only as long
/// as a reload takes.
#[derive(Default)]
pub(super) struct ChangeLock {
    held: Mutex<()>,
    /// How many threads wait for the lock (tests interleave the two paths with it).
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
    /// Runs inside a reload's window, after it read the config in force and the agenda and
    /// before it writes its plan (tests start an agenda change there).
    #[cfg(test)]
    in_reload: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Live {
    /// Takes the lock that serialises reloads and agenda changes; a panic while it was held
    /// left nothing half-published that the next holder could not redo, so it is taken back.
    fn lock_changes(&self) -> MutexGuard<'_, ()> {
        #[cfg(test)]
        self.changes
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = self
            .changes
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        #[cfg(test)]
        self.changes
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }
}

/// Reloads between RELOADING=1 and READY=1, and records the outcome for health and metrics,
/// and in `status` and its file (`crate::reload_status`), for `convenor reload` to wait on.
pub(super) fn reload(opts: &ServeOptions, live: &Live, ops: &Ops, status: &mut ReloadStatus) {
    notify::reloading();
    let dir = live.config.borrow().state_dir.clone();
    // Recorded before the config is read: `convenor reload` waits for a reload that began
    // after its own read of the file, so one that began before may have read an older config.
    status.begun += 1;
    let begun_recorded = record(&dir, status);
    let result = try_reload(opts, live);
    // Loading, reconciling and rendering are transient: their memory goes back to the kernel.
    crate::memory::release_free_heap();
    ops.counters.reload(result.is_ok());
    // A reload whose beginning went unrecorded is not reported as finished: a `convenor
    // reload` that read the file meanwhile would take its outcome for that of a reload begun
    // after its read. It waits for the next one instead.
    if begun_recorded {
        status.finished = status.begun;
        status.error = result.as_ref().err().cloned();
    }
    record(&dir, status);
    ops.health.reload(result);
    notify::ready();
}

/// Writes `status` to the state directory `dir`; says whether it did. A failure is logged
/// (`convenor reload` then waits for a reload it can hear of, or gives up), and changes nothing
/// else.
pub(super) fn record(dir: &std::path::Path, status: &ReloadStatus) -> bool {
    match crate::reload_status::write(dir, status) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "cannot write {}: {e}; `convenor reload` cannot wait for this reload",
                crate::reload_status::path(dir).display()
            );
            false
        }
    }
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
    // From reading the config in force to publishing: no agenda change in between.
    let _changing = live.lock_changes();
    // The agenda (possibly changed from the CLI) is compiled afresh at every reload.
    if let Err(e) = crate::agenda::attach(
        &mut config,
        &live.agenda.lock().unwrap_or_else(PoisonError::into_inner),
    ) {
        tracing::error!("config reload: the agenda store failed, keeping the running config: {e}");
        return Err(e.to_string());
    }
    let old = live.config.borrow().clone();
    // The UID domain was pinned in the ledger at the first start and is the running config's:
    // a renamed network keeps every calendar UID.
    config
        .network
        .uid_domain
        .clone_from(&old.network.uid_domain);
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
    #[cfg(test)]
    if let Some(in_window) = live
        .changes
        .in_reload
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        in_window();
    }
    let config = Arc::new(config);
    let revisions = {
        let mut store = lock(&live.store);
        // The revisions come from the step that writes the plan: once it is applied, nothing
        // else can fail before the config it belongs to is published.
        let revisions = replan_revisions(&mut *store, &config, Timestamp::now());
        if revisions.is_ok() {
            // Published together, with the plan, under the store lock (see the module docs).
            live.outbox.replace(parts);
            live.config.send_replace(config.clone());
        }
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
    if live.feeds.replace(&config, &revisions) {
        super::save_feed_cache(&live.feeds, &config.state_dir, &live.background);
    }
    // Also when the feeds did not change: the operator reloading sees what is served.
    super::warn_of_big_feeds(&live.feeds);
    super::warn_of_zone_rules(&live.feeds.current().config);
    live.wake.notify_one();
    tracing::info!("config reloaded");
    // A proposal moved from the CLI may be owed its lead mail again.
    tokio::spawn(crate::agenda::notify::send_owed(
        live.notifier.clone(),
        live.agenda.clone(),
        crate::agenda::notify::Occasion::Reload,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        sync::atomic::Ordering,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{
        agenda::{AgendaStore, NewProposal, Status},
        config::Environment,
        ledger::Store as _,
        model::MeetingId,
    };

    /// A config with one meeting titled `title`, its state in `state`, the shipped templates
    /// and the file transport.
    fn config_text(state: &Path, title: &str) -> String {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        format!(
            "
[network]
short_name = \"LEDNet\"
name = \"Test network\"
time_zone = \"Europe/London\"
base_url = \"http://127.0.0.1:8080\"
contact = \"team@example.org\"
[mail]
from = \"team@example.org\"
list = [\"list@example.org\"]
templates_dir = \"{}\"
[state]
dir = \"{}\"
[[priority]]
id = \"p1\"
name = \"P1\"
summary = \"s\"
[priority.lead]
name = \"Lead\"
email = \"lead@example.org\"
[[meeting]]
id = \"m1\"
date = 2030-06-07
start = \"10:00\"
end = \"12:00\"
title = \"{title}\"
[[email]]
id = \"week\"
template = \"reminder\"
days_before = 7
at = \"09:00\"
audience = \"list\"
grace = \"1d\"
",
            templates.display(),
            state.display()
        )
    }

    /// The running service's parts over a fresh state directory, started with the config at
    /// `path`; and the number of a proposal for `m1` waiting for its lead.
    fn start(path: &Path) -> (Arc<Live>, i64) {
        let mut config = config::load(path, &Environment::default())
            .expect("valid config")
            .config;
        std::fs::create_dir_all(&config.state_dir).expect("state directory");
        let mut agenda = AgendaStore::open_in(&config.state_dir).expect("agenda store");
        let proposal = NewProposal {
            meeting: MeetingId::parse("m1").expect("id"),
            priority: "p1".into(),
            name: "N".into(),
            organisation: "O".into(),
            email: "n@example.org".into(),
            title: "A talk".into(),
            summary: "S".into(),
            presents: true,
            minutes: 10,
        };
        let proposal = agenda
            .add(&proposal, "web", false, Timestamp::now())
            .expect("proposal");
        crate::agenda::attach(&mut config, &agenda).expect("attach");
        let mut store = SqliteStore::open_in(&config.state_dir).expect("ledger");
        let revisions = replan_revisions(&mut store, &config, Timestamp::now()).expect("plan");
        let config = Arc::new(config);
        let parts = mail_parts(&config).expect("templates and transport");
        let store: SharedStore<SqliteStore> = Arc::new(Mutex::new(store));
        let outbox = Arc::new(MailOutbox::new(store.clone(), parts));
        let notifier = {
            let (outbox, config) = (outbox.clone(), config.clone());
            crate::agenda::notify::Notifier::new(move || (config.clone(), outbox.parts()))
        };
        let live = Live {
            store,
            config: watch::channel(config.clone()).0,
            feeds: FeedState::new(&config, &revisions),
            outbox,
            wake: Arc::new(Notify::new()),
            agenda: Arc::new(Mutex::new(agenda)),
            notifier,
            background: BackgroundWrites::default(),
            changes: ChangeLock::default(),
        };
        (Arc::new(live), proposal)
    }

    /// [`start`] on a config with one meeting, "Meeting one", in `dir`, its state in
    /// `dir/state`: the state directory, the config's path, the service's parts and the
    /// proposal.
    fn start_in(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Arc<Live>, i64) {
        let state = dir.join("state");
        let path = dir.join("convenor.toml");
        std::fs::write(&path, config_text(&state, "Meeting one")).expect("write config");
        let (live, proposal) = start(&path);
        (state, path, live, proposal)
    }

    /// The options of a `convenor serve` on the config at `path`.
    fn serve_options(path: &Path) -> ServeOptions {
        ServeOptions {
            config_path: path.to_path_buf(),
            env: Environment::default(),
            listen: None,
            config_load: Duration::ZERO,
        }
    }

    /// Runs `f` inside the next reload's window of `live` (see `ChangeLock::in_reload`).
    fn in_reload(live: &Live, f: impl FnOnce() + Send + 'static) {
        *live
            .changes
            .in_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// The parts `/healthz` and `/metrics` read, for a reload run by hand.
    fn ops(live: &Live) -> Ops {
        Ops {
            store: live.store.clone(),
            health: Arc::new(crate::health::Health::new(
                Instant::now(),
                Duration::from_secs(60),
            )),
            counters: Arc::default(),
            feeds: live.feeds.clone(),
            counts: Arc::default(),
        }
    }

    /// A reload is recorded as begun before it reads the config (`convenor reload` waits for one
    /// begun after its own read) and as finished with its outcome after; one whose beginning
    /// could not be recorded is not recorded as finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_is_recorded_as_begun_before_it_reads_the_config_and_finished_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, path, live, _) = start_in(dir.path());
        let ops = ops(&live);
        let opts = serve_options(&path);
        let mut status = ReloadStatus::started(7);
        let seen_in_window = Arc::new(Mutex::new(None));
        let seen = seen_in_window.clone();
        let window_state = state.clone();
        in_reload(&live, move || {
            *seen.lock().unwrap_or_else(PoisonError::into_inner) =
                crate::reload_status::read(&window_state);
        });
        reload(&opts, &live, &ops, &mut status);
        let during = seen_in_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let begun = ReloadStatus {
            pid: 7,
            begun: 1,
            finished: 0,
            error: None,
        };
        assert_eq!(during, Some(begun), "while the reload reads the config");
        let done = crate::reload_status::read(&state).expect("the status");
        assert_eq!((done.begun, done.finished, done.error), (1, 1, None));

        // Refused: its error is the outcome.
        std::fs::write(&path, "[network\n").expect("break the config");
        reload(&opts, &live, &ops, &mut status);
        let done = crate::reload_status::read(&state).expect("the status");
        assert_eq!((done.begun, done.finished), (2, 2));
        assert!(done.error.is_some_and(|e| e.contains("convenor.toml:1:")));

        // Its beginning unrecorded (the file's place taken by a directory, gone by its end):
        // recorded as begun, not as finished; the next one is.
        std::fs::write(&path, config_text(&state, "Meeting two")).expect("write config");
        let file = crate::reload_status::path(&state);
        std::fs::remove_file(&file).expect("remove the status");
        std::fs::create_dir(&file).expect("a directory where the file goes");
        let in_window = file.clone();
        in_reload(&live, move || {
            std::fs::remove_dir(&in_window).expect("remove the directory");
        });
        reload(&opts, &live, &ops, &mut status);
        let done = crate::reload_status::read(&state).expect("the status");
        assert_eq!(
            (done.begun, done.finished),
            (3, 2),
            "not reported as finished"
        );
        reload(&opts, &live, &ops, &mut status);
        let done = crate::reload_status::read(&state).expect("the status");
        assert_eq!(
            (done.begun, done.finished),
            (4, 4),
            "the next one is reported"
        );
        assert_eq!(done.error, None);
    }

    /// A lead accepts a proposal while a reload is under way (after the reload read the agenda
    /// and the config in force, before it writes its plan): the decision is applied on top of
    /// the reloaded config, not lost to it, and the ledger is planned for what is published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agenda_decision_during_a_reload_lands_on_the_reloaded_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, path, live, proposal) = start_in(dir.path());
        std::fs::write(&path, config_text(&state, "Meeting one, renamed")).expect("write config");

        let decision = Arc::new(Mutex::new(None));
        let (in_window, decision_thread) = (live.clone(), decision.clone());
        in_reload(&live, move || {
            in_window
                .agenda
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .decide(proposal, Status::Accepted, "lead", Timestamp::now())
                .expect("decision stored");
            let change = in_window.clone();
            let thread = std::thread::spawn(move || agenda_changed(&change));
            // Until the change has run to its end, or waits for this reload to end.
            let started = Instant::now();
            while !thread.is_finished() && in_window.changes.waiting.load(Ordering::SeqCst) == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the change never ran"
                );
                std::thread::yield_now();
            }
            *decision_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(thread);
        });
        let opts = serve_options(&path);
        try_reload(&opts, &live).expect("reloaded");
        let thread = decision
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("the reload ran the decision in its window");
        thread.join().expect("the agenda change ran");

        let published = live.config.borrow().clone();
        let m1 = MeetingId::parse("m1").expect("id");
        let meeting = published.meeting(&m1).expect("m1");
        assert_eq!(
            meeting.title.to_string(),
            "Meeting one, renamed",
            "the reload"
        );
        let agenda = published.agenda.get(&m1);
        assert!(!agenda.empty, "the decision: {agenda:?}");
        let stamp = lock(&live.store).plan_stamp().expect("stamp");
        assert_eq!(
            stamp,
            Some(crate::digest::config_digest(&published).to_string()),
            "the ledger is planned for the published config"
        );
    }
}
