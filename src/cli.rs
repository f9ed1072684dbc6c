//! The command line: clap definitions and one small function per subcommand.
//!
//! Stage one is clap's parse of raw arguments into [`Cli`]; stage two loads the config into
//! validated types. Each command reads the clock here, at the edge, and hands it to the pure core.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jiff::{Timestamp, civil::Date};

use crate::{
    config::{self, ConfigError, Environment, Loaded},
    daemon,
    ledger::{self, Store as _},
    plan,
};

/// sysexits.h EX_CONFIG: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Runs the meeting calendar feed and meeting mail of a network.
#[derive(Debug, Parser)]
#[command(name = "convenor", version, about)]
pub struct Cli {
    /// The config file [default: /etc/convenor/convenor.toml if it exists, else config/lednet.toml]
    #[arg(long, global = true, env = "CONVENOR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    let loaded = match config::load(&path, &Environment::from_process()) {
        Ok(loaded) => loaded,
        Err(err) => return Ok(report_config_error(&err)),
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    match cli.command {
        Command::Check => check(&loaded),
        Command::Plan { from, json } => plan_command(&loaded, from, json),
        Command::Serve { listen } => serve(loaded, path, listen),
        Command::Release { meeting, email } => release(&loaded, meeting, email),
    }
}

/// Prints a config error and returns exit code 78 (EX_CONFIG).
pub fn report_config_error(err: &ConfigError) -> ExitCode {
    eprintln!("{err}");
    if let ConfigError::Invalid(d) = err {
        eprintln!("{} error(s); the config was not used", d.len());
    }
    ExitCode::from(EXIT_CONFIG)
}

fn check(loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let summary = plan::Summary::of(&loaded.config, Timestamp::now());
    print!("{summary}");
    if !loaded.warnings.is_empty() {
        println!("{} warning(s), see above", loaded.warnings.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_command(loaded: &Loaded, from: Option<Date>, json: bool) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let from = from.map(|d| crate::schedule::local_instant(&config.network.time_zone, d.into()));
    let ledger_file = config.state_dir.join(ledger::LEDGER_FILE);
    let snapshot = if ledger_file.exists() {
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
        println!("{text}");
    } else {
        print!("{}", plan::Table(&rows));
        let notices: Vec<_> = snapshot.iter().flat_map(|s| s.notices()).collect();
        if !notices.is_empty() {
            println!("\nChange and cancellation notices:");
            for r in notices {
                let detail = r
                    .last_error
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                println!("  {}  {}  {}{detail}", r.due, r.key, r.state);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(
    loaded: Loaded,
    config_path: PathBuf,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let opts = daemon::ServeOptions {
        config_path,
        env: Environment::from_process(),
        listen,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(daemon::run(opts, loaded.config, daemon::terminate_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn release(
    loaded: &Loaded,
    meeting: Option<String>,
    email: Option<String>,
) -> anyhow::Result<ExitCode> {
    let file = loaded.config.state_dir.join(ledger::LEDGER_FILE);
    anyhow::ensure!(
        file.exists(),
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
