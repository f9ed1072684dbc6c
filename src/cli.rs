//! The command line: clap definitions and one small function per subcommand.
//!
//! Stage one is clap's parse of raw arguments into [`Cli`]; stage two loads the config into
//! validated types. Each command reads the clock here, at the edge, and hands it to the pure core.

pub mod agenda;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jiff::{Timestamp, civil::Date};

use std::io::Write as _;

use crate::{
    config::{self, ConfigError, Environment, Loaded},
    daemon,
    ledger::{self, Store as _},
    mail,
    model::{
        Config, EmailId, MailSettings, Meeting, MeetingId, PasswordSource, TransportSettings,
        Trigger,
    },
    plan,
    revision::{self, Significant, StoredRevision},
    schedule::{self, Recipient},
};

/// sysexits.h EX_CONFIG: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Runs the meeting calendar feed and meeting mail of a network.
#[derive(Debug, Parser)]
#[command(name = "convenor", version, about)]
pub struct Cli {
    /// The config file [default: config/lednet.toml when run from the repository, else /etc/convenor/convenor.toml]
    #[arg(long, global = true, env = "CONVENOR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// True for `convenor serve`, the daemon.
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and print a short summary; exits 78 when it is invalid.
    Check,
    /// Print the timeline of scheduled emails, local and UTC, with their ledger state.
    Plan {
        /// Only mails due on or after this local date (YYYY-MM-DD).
        #[arg(long)]
        from: Option<Date>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print an iCalendar feed to stdout (every meeting, or one priority's).
    Ics {
        /// Only the meetings with this priority in focus.
        #[arg(long)]
        priority: Option<String>,
    },
    /// Print what a scheduled email would send: subject and text body, or the whole message
    /// with --eml (with the ledger's SEQUENCE, Message-ID and thread when there is a ledger).
    Preview {
        /// The meeting's id.
        #[arg(long)]
        meeting: String,
        /// The schedule entry's id (`[[email]] id`).
        #[arg(long)]
        email: String,
        /// `list` or `lead:<priority-id>` [default: the entry's first recipient].
        #[arg(long)]
        recipient: Option<String>,
        /// Print the whole message as it would be sent (.eml).
        #[arg(long)]
        eml: bool,
    },
    /// Send one test message through the configured transport and print the server's reply.
    SendTest {
        /// The address to send to.
        #[arg(long)]
        to: String,
    },
    /// Ask a running `convenor serve` to reload (SIGHUP) and wait for the outcome: exits 0 when
    /// it runs the new config, 1 when it refused it (the error is printed; it keeps the running
    /// config), exited or did not finish in time, or PID is not the process the state
    /// directory's lock names (then no signal is sent), 78 when the config is invalid here (no
    /// signal is sent). systemd's ExecReload.
    Reload {
        /// The process of `convenor serve` (`$MAINPID` in the unit).
        #[arg(long)]
        pid: u32,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run the service: the HTTP server and the mail scheduler, until SIGTERM (SIGHUP reloads).
    Serve {
        /// Listen on this address instead of `[http] listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Release mails held by the clock-jump guard back to pending (all, or by meeting/email).
    Release {
        /// Only the mails of this meeting id.
        #[arg(long)]
        meeting: Option<String>,
        /// Only the mails of this schedule entry (email id).
        #[arg(long)]
        email: Option<String>,
    },
    /// The agenda loop: list, add, accept, decline, move and order proposals; lead links.
    Agenda {
        /// What to do.
        #[command(subcommand)]
        command: agenda::AgendaCommand,
    },
}

impl Cli {
    /// The config path given, or the default.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(config::default_path)
    }
}

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config_path();
    let loading = std::time::Instant::now();
    // Only `serve` needs the feed token itself; the other commands run from a shell too.
    let env = Environment {
        feed_token_may_be_absent: !matches!(cli.command, Command::Serve { .. }),
        ..Environment::from_process()
    };
    let mut loaded = match config::load(&path, &env) {
        Ok(loaded) => loaded,
        Err(err) => {
            if let Command::Reload { pid, .. } = cli.command {
                // The service would refuse it too (but during an upgrade, before the restart,
                // when the running build's rules are older): it is not asked to.
                crate::logging::to_stderr(
                    tracing::Level::ERROR,
                    &format!("not reloaded: convenor (pid {pid}) keeps its running config"),
                );
            }
            return Ok(report_config_error(&err));
        }
    };
    let config_load = loading.elapsed();
    // Run as root, every command but `serve` (which systemd runs as that user) touches files as
    // the state directory's owner: it cannot be led by a link the owner left there, and what
    // it creates is the owner's. Before any thread starts.
    if !matches!(cli.command, Command::Serve { .. })
        && let Some(owner) = crate::state_owner::act_as_owner(&loaded.config.state_dir)?
    {
        crate::logging::to_stderr(
            tracing::Level::INFO,
            &format!(
                "writing as the owner of {} (uid {}, gid {}), not as root",
                loaded.config.state_dir.display(),
                owner.uid,
                owner.gid
            ),
        );
    }
    // `serve` compiles the agenda itself, under the store it keeps open; `reload` leaves it to
    // the service.
    if !matches!(cli.command, Command::Serve { .. } | Command::Reload { .. }) {
        agenda::attach_stored(&mut loaded.config)?;
    }
    for w in &loaded.warnings {
        crate::logging::to_stderr(tracing::Level::WARN, &w.to_string());
    }
    match cli.command {
        Command::Check => check(&loaded),
        Command::Plan { from, json } => plan_command(&loaded, from, json),
        Command::Ics { priority } => ics_command(&loaded, priority.as_deref()),
        Command::Preview {
            meeting,
            email,
            recipient,
            eml,
        } => preview(&loaded, &meeting, &email, recipient.as_deref(), eml),
        Command::SendTest { to } => send_test(&loaded, &to),
        Command::Serve { listen } => serve(loaded, path, listen, config_load),
        Command::Reload { pid, timeout } => reload(&loaded.config.state_dir, pid, timeout),
        Command::Release { meeting, email } => release(&loaded, meeting, email),
        Command::Agenda { command } => agenda::run(&loaded, command),
    }
}

/// `convenor reload`: sends SIGHUP to `pid`, once its lock file in the state directory `dir`
/// says it is the convenor serving there, and waits up to `timeout` seconds for the outcome of
/// the first reload to begin after it ([`crate::reload_status`]).
fn reload(dir: &Path, pid: u32, timeout: u64) -> anyhow::Result<ExitCode> {
    use crate::reload_status::{self, Asked, Waits};
    use rustix::process::{Pid, Signal, kill_process, test_kill_process};
    let process = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    // A mistyped pid must not get the signal (SIGHUP ends most processes).
    let lock = dir.join(crate::lock::LOCK_FILE);
    let holder = std::fs::read_to_string(&lock).with_context(|| {
        format!(
            "no convenor serves {}: cannot read {}",
            dir.display(),
            lock.display()
        )
    })?;
    if holder.trim().parse::<u32>().ok() != Some(pid) {
        anyhow::bail!(
            "pid {pid} is not the convenor serving {} (its lock file names {}); not signalled",
            dir.display(),
            holder.trim()
        );
    }
    let asked = reload_status::ask_and_wait(
        pid,
        || reload_status::read(dir),
        || kill_process(process, Signal::HUP).map_err(std::io::Error::from),
        || test_kill_process(process).is_ok(),
        Waits {
            timeout: std::time::Duration::from_secs(timeout),
            first_word: std::time::Duration::from_secs(5),
            poll: std::time::Duration::from_millis(20),
        },
    )
    .with_context(|| format!("cannot signal convenor (pid {pid})"))?;
    match asked {
        Asked::Taken => {
            println!("reloaded: convenor (pid {pid}) runs the new config");
            Ok(ExitCode::SUCCESS)
        }
        Asked::Refused(error) => {
            crate::logging::to_stderr(
                tracing::Level::ERROR,
                &format!(
                    "not reloaded: convenor (pid {pid}) refused the new config and keeps \
                     its running one:\n{error}"
                ),
            );
            Ok(ExitCode::FAILURE)
        }
        Asked::Unrecorded => {
            println!(
                "signal sent; convenor (pid {pid}) does not record its reloads in {} (a build \
                 from before `convenor reload`, or one that cannot write there): its log says \
                 how the reload went",
                reload_status::path(dir).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Asked::Gone => anyhow::bail!("convenor (pid {pid}) exited before its reload finished"),
        Asked::TimedOut => anyhow::bail!(
            "convenor (pid {pid}) did not finish its reload within {timeout} s (it may still): \
             its log says what it is doing"
        ),
    }
}

/// Renders every feed (without the ledger: SEQUENCE 0, a few bytes from what is served), prints
/// their count and the largest, and warns of each that nears Google's limit
/// ([`crate::feed::size_warning`], the rule the daemon logs too). Returns the warnings printed.
fn check_feed_sizes(config: &crate::model::Config) -> usize {
    let selections = crate::feed::selections(config);
    let calendars =
        crate::feed::Calendars::render(config, &std::collections::BTreeMap::new(), &selections);
    let mut warnings = 0;
    let mut largest = (0, String::new());
    for (i, &selection) in selections.iter().enumerate() {
        let path = crate::feed::urls::relative_path(selection);
        let bytes = calendars.text_len(i);
        if let Some(w) = crate::feed::size_warning(&path, bytes) {
            crate::logging::to_stderr(tracing::Level::WARN, &format!("warning: {w}"));
            warnings += 1;
        }
        largest = largest.max((bytes, path));
    }
    println!(
        "feeds:      {}, the largest {} at {} KiB",
        selections.len(),
        largest.1,
        largest.0.div_ceil(1024)
    );
    warnings
}

/// Prints a config error (at error priority under journald) and returns exit code 78
/// (EX_CONFIG).
pub fn report_config_error(err: &ConfigError) -> ExitCode {
    let mut text = err.to_string();
    if let ConfigError::Invalid(d) = err {
        text.push_str(&format!("\n{} error(s); the config was not used", d.len()));
    }
    crate::logging::to_stderr(tracing::Level::ERROR, &text);
    ExitCode::from(EXIT_CONFIG)
}

/// `convenor check`: the config (already loaded), every template against every meeting, and
/// the transport as `serve` builds it. Exits 78 when any of them would stop `serve`.
fn check(loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let summary = plan::Summary::of(&loaded.config, Timestamp::now());
    write_stdout(&summary.to_string())?;
    let config = &loaded.config;
    let mut warnings = loaded.warnings.len();
    let mut errors: Vec<String> = Vec::new();
    let checked = mail::Templates::load(&config.mail.templates_dir)
        .map_err(|e| vec![e])
        .and_then(|t| {
            let report = t.check_all(config)?;
            agenda::check_templates(config, &t)?;
            Ok(report)
        });
    match checked {
        Ok(r) => println!("templates:  {} sets, {} renders fine", r.sets, r.renders),
        Err(e) => errors.extend(e.iter().map(ToString::to_string)),
    }
    warnings += check_feed_sizes(config);
    if let Some(w) = crate::feed::zone_rule_warning(config) {
        crate::logging::to_stderr(tracing::Level::WARN, &format!("warning: {w}"));
        warnings += 1;
    }
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").is_some();
    match check_transport(&config.mail, &config.state_dir, credentials) {
        Ok(checked) => {
            println!("transport:  {}", checked.summary);
            if let Some(w) = checked.warning {
                crate::logging::to_stderr(tracing::Level::WARN, &format!("warning: {w}"));
                warnings += 1;
            }
        }
        Err(e) => errors.push(format!("mail transport: {e}")),
    }
    if warnings > 0 {
        println!("{warnings} warning(s), see above");
    }
    if errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &errors {
        crate::logging::to_stderr(tracing::Level::ERROR, e);
    }
    crate::logging::to_stderr(
        tracing::Level::ERROR,
        &format!("{} error(s); the config was not used", errors.len()),
    );
    Ok(ExitCode::from(EXIT_CONFIG))
}

/// What `check` found of the transport.
#[derive(Debug)]
struct TransportChecked {
    /// One line for the summary.
    summary: String,
    /// Something `check` could not check from here, and why.
    warning: Option<String>,
}

/// Builds the SMTP transport as `serve` does ([`mail::Transport::from_settings`]: the CA file,
/// the TLS settings, the password), opening no connection. The file transport is not built:
/// building it creates `<state>/outbox`, and `check` creates nothing in the state directory
/// (`serve` creates it, and says so if it cannot). A `password_credential` is read only when
/// `credentials_directory_set` (`$CREDENTIALS_DIRECTORY`, which systemd sets inside the
/// service and a shell never has); otherwise the rest is built without it and the warning says
/// the password was not checked.
fn check_transport(
    settings: &MailSettings,
    state_dir: &Path,
    credentials_directory_set: bool,
) -> Result<TransportChecked, mail::MailError> {
    let TransportSettings::Smtp(smtp) = &settings.transport else {
        return Ok(TransportChecked {
            summary: format!(
                "file: one .eml per mail in {} (made by serve)",
                state_dir.join("outbox").display()
            ),
            warning: None,
        });
    };
    let relay = format!("{}:{}", smtp.host, smtp.port);
    let (built, warning) = match &smtp.password {
        PasswordSource::Credential(name) if !credentials_directory_set => {
            let mut without = smtp.clone();
            without.user = None;
            without.password = PasswordSource::None;
            let warning = format!(
                "the SMTP password (password_credential `{name}`) was not checked: \
                 $CREDENTIALS_DIRECTORY is not set, as in any shell (systemd sets it only inside \
                 the service); the rest of [mail.smtp] was. `convenor send-test` run under \
                 systemd with the credential checks the password too (see the README, \
                 \"Credentials\")"
            );
            let without = MailSettings {
                transport: TransportSettings::Smtp(without),
                ..settings.clone()
            };
            (std::borrow::Cow::Owned(without), Some(warning))
        }
        _ => (std::borrow::Cow::Borrowed(settings), None),
    };
    mail::Transport::from_settings(&built, state_dir)?;
    Ok(TransportChecked {
        summary: format!(
            "smtp to {relay}, set up as serve sets it up (no connection made: send-test makes one)"
        ),
        warning,
    })
}

fn preview(
    loaded: &Loaded,
    meeting: &str,
    email: &str,
    recipient: Option<&str>,
    eml: bool,
) -> anyhow::Result<ExitCode> {
    // A whole message could be sent on by hand: never with the placeholder for a feed token
    // this shell could not read (the text preview shows it, with the warning above).
    if eml && loaded.config.http.feed_token == Some(crate::model::FeedToken::placeholder()) {
        anyhow::bail!(
            "--eml needs the real feed token, which is in a systemd credential this shell does \
             not have; run it under systemd with the credential (README, \"Credentials\"), or \
             leave out --eml for a preview whose feed links hold a placeholder"
        );
    }
    let store = open_ledger_if_any(&loaded.config)?;
    let pinned = with_pinned_uid_domain(&loaded.config, store.as_ref())?;
    let config: &Config = &pinned;
    let meeting = MeetingId::parse(meeting)
        .ok()
        .and_then(|id| config.meeting(&id))
        .with_context(|| format!("no meeting `{meeting}` in {}", config.source.display()))?;
    let rule = EmailId::parse(email)
        .ok()
        .and_then(|id| config.email(&id))
        .with_context(|| format!("no [[email]] `{email}` in {}", config.source.display()))?;
    let recipient = match recipient {
        Some(key) => Recipient::from_key(key)
            .with_context(|| format!("recipient `{key}` is not `list` or `lead:<priority-id>`"))?,
        None => schedule::recipients(config, meeting, rule)
            .into_iter()
            .next()
            .unwrap_or(Recipient::List),
    };
    let templates = mail::Templates::load(&config.mail.templates_dir)?;
    let now = Timestamp::now();
    let from_ledger = preview_ledger(config, store.as_ref(), meeting, rule, &recipient, now)?;
    let PreviewLedger {
        revision,
        message_id,
        thread_root,
        before,
    } = from_ledger;
    // Change and cancellation notices carry `change`, as the outbox sends them.
    let change = mail::check::carries_change(rule).then(|| {
        before.unwrap_or_else(|| {
            eprintln!(
                "preview: no previous time and place is in the ledger; showing the current ones \
                 as both"
            );
            Significant::of(config, meeting)
        })
    });
    let invite = meeting_invite(config, meeting, &revision);
    let input = mail::ComposeInput {
        config,
        templates: &templates,
        meeting,
        rule,
        recipient: &recipient,
        revision: &revision,
        message_id: &message_id,
        thread_root: thread_root.as_deref(),
        date: now,
        change: change.as_ref(),
        invite_ics: &invite,
    };
    if eml {
        let message = mail::compose(&input)?;
        std::io::stdout()
            .write_all(&message.formatted())
            .context("writing to stdout")?;
    } else {
        let r = mail::render(&input)?;
        print!("Subject: {}\n\n{}", r.subject, r.text);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `preview` takes from the ledger, so it shows what the scheduler would send.
struct PreviewLedger {
    /// The meeting's revision: the stored one, raised as reconciling this config would raise
    /// it (SEQUENCE 0 stamped now without a ledger).
    revision: StoredRevision,
    /// The row's Message-ID, or the one a row of this key is planned with.
    message_id: String,
    /// The first mail sent about the meeting, which the mail is threaded under.
    thread_root: Option<String>,
    /// For a change or cancellation notice: the time and place before the change it
    /// announces, as the outbox reads it (what the recipients last heard).
    before: Option<Significant>,
}

/// Reads the ledger `store`, when there is one, for `preview`: the meeting's revision, the
/// mail's Message-ID, its thread root and (for a change or cancellation notice) the state
/// before. A notice previewed is the one for the meeting's current SEQUENCE.
fn preview_ledger(
    config: &Config,
    store: Option<&ledger::SqliteStore>,
    meeting: &Meeting,
    rule: &crate::model::EmailRule,
    recipient: &Recipient,
    now: Timestamp,
) -> anyhow::Result<PreviewLedger> {
    let stored = match store {
        Some(s) => s.revision(&meeting.id)?,
        None => None,
    };
    if store.is_some() && stored.is_none() {
        eprintln!(
            "preview: the ledger has no revision of `{}` yet (a reload plans it): SEQUENCE 0",
            meeting.id
        );
    }
    let (revision, _) = revision::next_revision(stored.as_ref(), config, meeting, now);
    let occurrence = match rule.trigger {
        Trigger::OnChange | Trigger::OnCancel => revision.sequence,
        Trigger::DaysBefore { .. } | Trigger::Before(_) => 0,
    };
    let planned = mail::message_id(config, &meeting.id, &rule.id, recipient, occurrence);
    let Some(store) = store else {
        return Ok(PreviewLedger {
            revision,
            message_id: planned,
            thread_root: None,
            before: None,
        });
    };
    let key = ledger::MailKey {
        meeting: meeting.id.to_string(),
        email: rule.id.to_string(),
        audience: recipient.key(),
        occurrence,
    };
    let message_id = store
        .rows()?
        .into_iter()
        .find(|r| r.key == key)
        .map_or(planned, |r| r.message_id);
    let thread_root = store.thread_root(meeting.id.as_str(), &message_id)?;
    let before = match (rule.trigger, revision.sequence) {
        (Trigger::OnChange | Trigger::OnCancel, sequence) if sequence > 0 => {
            // As the outbox: before the notices this one superseded unsent.
            let from = crate::scheduler::reconcile::announced_from(&store.notices(&key)?, sequence);
            match store.revision_at(&meeting.id, from)? {
                Some(r) => Some(r.significant),
                // Raised by this config, not yet by the ledger: the stored one is the before.
                None => stored.map(|r| r.significant),
            }
        }
        _ => None,
    };
    Ok(PreviewLedger {
        revision,
        message_id,
        thread_root,
        before,
    })
}

/// The meeting as a METHOD:PUBLISH calendar for mail, with the feed's UID and SEQUENCE.
fn meeting_invite(config: &Config, meeting: &Meeting, revision: &StoredRevision) -> String {
    crate::feed::render_meeting_invite(config, meeting, Some(revision))
}

fn send_test(loaded: &Loaded, to: &str) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let to = config::validate::parse_mailbox(to).map_err(anyhow::Error::msg)?;
    let message = mail::test_message(config, to, Timestamp::now())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The SMTP pool spawns its tasks on creation: set it up inside the runtime.
    let sent = runtime.block_on(async {
        let transport = mail::Transport::from_settings(&config.mail, &config.state_dir)?;
        anyhow::Ok(transport.send(&message).await)
    })?;
    match sent {
        Ok(delivery) => {
            println!("{delivery}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("convenor: send-test: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn plan_command(loaded: &Loaded, from: Option<Date>, json: bool) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let from = from.map(|d| crate::schedule::local_instant(&config.network.time_zone, d.into()));
    let ledger_file = config.state_dir.join(ledger::LEDGER_FILE);
    let snapshot = if store_file_exists(&ledger_file)? {
        let store = ledger::SqliteStore::open(&ledger_file)?;
        Some(ledger::Snapshot::new(store.rows()?))
    } else {
        None
    };
    let states: &dyn plan::MailStates = match &snapshot {
        Some(s) => s,
        None => &plan::NoLedger,
    };
    let rows = plan::rows(config, from, states);
    if json {
        let text = serde_json::to_string_pretty(&rows).context("serialising the plan")?;
        write_stdout(&format!("{text}\n"))?;
    } else {
        let mut text = plan::Table(&rows).to_string();
        let notices: Vec<_> = snapshot.iter().flat_map(|s| s.notices()).collect();
        if !notices.is_empty() {
            text.push_str("\nChange and cancellation notices:\n");
            for r in notices {
                let detail = r
                    .last_error
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                text.push_str(&format!("  {}  {}  {}{detail}\n", r.due, r.key, r.state));
            }
        }
        write_stdout(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a store file of the state directory (the ledger, the agenda store) exists: `false`
/// only when it certainly does not; an error naming the file when that cannot be told (the
/// state directory unreadable by this user, a path through a file). [`Path::exists`] says
/// `false` for both, which made an unreadable state directory look empty: `plan` showed every
/// mail planned, `ics` SEQUENCE 0, `release` nothing held.
pub fn store_file_exists(file: &Path) -> anyhow::Result<bool> {
    file.try_exists().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the installed service's state directory is readable by root only: use sudo)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "cannot tell whether {} exists: {e}{hint}; the state directory must be readable",
            file.display()
        )
    })
}

/// Writes to stdout; a reader that went away (`convenor plan | head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Prints a feed with the ledger's SEQUENCE and stamps. Without a ledger the revisions are
/// empty: every meeting has SEQUENCE 0 and the fallback stamp (see [`crate::feed::FALLBACK_STAMP`]).
fn ics_command(loaded: &Loaded, priority: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::feed::{self, Selection};
    let store = open_ledger_if_any(&loaded.config)?;
    let pinned = with_pinned_uid_domain(&loaded.config, store.as_ref())?;
    let config: &Config = &pinned;
    let selection = match priority {
        None => Selection::All,
        Some(id) => {
            let found = config.priorities.iter().find(|p| p.id.as_str() == id);
            match found {
                Some(p) => Selection::Priority(p),
                None => {
                    let known: Vec<&str> =
                        config.priorities.iter().map(|p| p.id.as_str()).collect();
                    anyhow::bail!(
                        "no priority `{id}` in the config; known: {}",
                        known.join(", ")
                    );
                }
            }
        }
    };
    let revisions = match &store {
        Some(s) => s.revisions()?,
        None => std::collections::BTreeMap::new(),
    };
    write_stdout(&feed::render_calendar(config, &revisions, selection))?;
    Ok(ExitCode::SUCCESS)
}

/// `config` with the calendar UID domain the service's ledger pinned at its first start (see
/// [`crate::model::Network::uid_domain`]), so what `ics` and `preview` print carries the UIDs
/// subscribers have; the config as loaded when there is no ledger (`store`) or nothing is pinned
/// yet.
fn with_pinned_uid_domain<'a>(
    config: &'a Config,
    store: Option<&ledger::SqliteStore>,
) -> anyhow::Result<std::borrow::Cow<'a, Config>> {
    let Some(store) = store else {
        return Ok(std::borrow::Cow::Borrowed(config));
    };
    let pinned = store.uid_domain()?;
    Ok(match pinned {
        Some(domain) if domain != config.network.uid_domain => {
            let mut renamed = config.clone();
            renamed.network.uid_domain = domain;
            std::borrow::Cow::Owned(renamed)
        }
        _ => std::borrow::Cow::Borrowed(config),
    })
}

/// The config's ledger, opened once for all a command reads from it; `None` when there is no
/// ledger yet (a state directory that cannot be read is an error).
fn open_ledger_if_any(config: &Config) -> anyhow::Result<Option<ledger::SqliteStore>> {
    let file = config.state_dir.join(ledger::LEDGER_FILE);
    if !store_file_exists(&file)? {
        return Ok(None);
    }
    Ok(Some(ledger::SqliteStore::open(&file)?))
}

fn serve(
    loaded: Loaded,
    config_path: PathBuf,
    listen: Option<std::net::SocketAddr>,
    config_load: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let opts = daemon::ServeOptions {
        config_path,
        env: Environment::from_process(),
        listen,
        config_load,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // The signal handlers are installed inside the runtime, before anything else is done.
    let served = runtime.block_on(async {
        let shutdown = daemon::terminate_signal();
        daemon::run(opts, loaded.config, shutdown).await
    });
    match served {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err @ daemon::DaemonError::Mail(_)) => {
            crate::logging::to_stderr(tracing::Level::ERROR, &format!("convenor: {err}"));
            Ok(ExitCode::from(EXIT_CONFIG))
        }
        Err(err) => Err(err.into()),
    }
}

fn release(
    loaded: &Loaded,
    meeting: Option<String>,
    email: Option<String>,
) -> anyhow::Result<ExitCode> {
    let file = loaded.config.state_dir.join(ledger::LEDGER_FILE);
    anyhow::ensure!(
        store_file_exists(&file)?,
        "no ledger at {}: nothing is held",
        file.display()
    );
    let mut store = ledger::SqliteStore::open(&file)?;
    let n = store.release(&ledger::ReleaseFilter { meeting, email })?;
    println!(
        "released {n} held mail(s); a running convenor sends those still useful within a minute"
    );
    Ok(ExitCode::SUCCESS)
}
