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
    /// Print an iCalendar feed to stdout (every meeting, or one priority's).
    Ics {
        /// Only the meetings with this priority in focus.
        #[arg(long)]
        priority: Option<String>,
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
        Command::Ics { priority } => ics_command(&loaded, priority.as_deref()),
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
    write_stdout(&summary.to_string())?;
    if !loaded.warnings.is_empty() {
        println!("{} warning(s), see above", loaded.warnings.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_command(loaded: &Loaded, from: Option<Date>, json: bool) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let from = from.map(|d| crate::schedule::local_instant(&config.network.time_zone, d.into()));
    let rows = plan::rows(config, from, &plan::NoLedger);
    if json {
        let text = serde_json::to_string_pretty(&rows).context("serialising the plan")?;
        write_stdout(&format!("{text}\n"))?;
    } else {
        write_stdout(&plan::Table(&rows).to_string())?;
    }
    Ok(ExitCode::SUCCESS)
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

/// Prints a feed. Without a ledger the revisions are empty: every meeting has SEQUENCE 0 and
/// the fallback stamp (see [`crate::feed::FALLBACK_STAMP`]).
fn ics_command(loaded: &Loaded, priority: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::feed::{self, Selection};
    let config = &loaded.config;
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
    let revisions = std::collections::BTreeMap::new();
    write_stdout(&feed::render_calendar(config, &revisions, selection))?;
    Ok(ExitCode::SUCCESS)
}
