//! Loading the config file: TOML text to a validated [`Config`], in two stages.
//!
//! `raw` mirrors the file with spans; [`validate`] turns it into domain types once, so no other
//! module re-checks anything. Every problem is a [`Diagnostic`] with file, line and column.

pub mod diagnostic;
mod raw;
pub mod validate;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity};

use crate::model::Config;

/// What the process environment contributes to a config, read once at the edge.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `$STATE_DIRECTORY`, set by systemd's `StateDirectory=` (first entry).
    pub state_directory: Option<PathBuf>,
    /// The working directory, against which a relative config path is made absolute to tell
    /// whether it is the installed config (`cd /etc/convenor && convenor plan --config
    /// convenor.toml`). `None`: a relative config path is never the installed one.
    pub cwd: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`, set by systemd inside a unit that loads a credential
    /// (`LoadCredential=`); where `[http] feed_token_credential` is read from.
    pub credentials_directory: Option<PathBuf>,
    /// Whether a feed token that cannot be read because `credentials_directory` is unset (a
    /// shell) is a warning, with [`crate::model::FeedToken::placeholder`] in its place, rather
    /// than an error: for the commands that do not serve (`check`, `plan`, `release`,
    /// `agenda`...), which ops run from a shell. `serve` and its reloads leave it off.
    pub feed_token_may_be_absent: bool,
}

impl Environment {
    /// Reads the variables and the working directory of this process.
    pub fn from_process() -> Self {
        let state_directory = std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .map(PathBuf::from)
            })
            .filter(|p| !p.as_os_str().is_empty());
        let credentials_directory = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty());
        Self {
            state_directory,
            cwd: std::env::current_dir().ok(),
            credentials_directory,
            feed_token_may_be_absent: false,
        }
    }
}

/// A config that loaded, with its warnings.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Problems that do not stop it from working.
    pub warnings: Vec<Diagnostic>,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem found is listed.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The diagnostics, if the file was read.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid(d) => d,
        }
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path, env: &Environment) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, env)
}

/// Validates config text as if read from `path` (relative paths in it resolve against `path`'s
/// directory).
pub fn parse(path: &Path, text: &str, env: &Environment) -> Result<Loaded, ConfigError> {
    let locator = diagnostic::Locator::new(path, text);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::Invalid(vec![locator.at(
            Severity::Error,
            span,
            clean_toml_message(e.message()),
        )])
    })?;
    let (config, diagnostics) = validate::validate(raw, path, text, env);
    match config {
        Some(config) => Ok(Loaded {
            config,
            warnings: diagnostics,
        }),
        None => Err(ConfigError::Invalid(
            diagnostics
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .collect(),
        )),
    }
}

/// The toml crate's messages end with a newline and sometimes say "field" for "key".
fn clean_toml_message(message: &str) -> String {
    message
        .trim()
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
}

/// The config path to use when none is given: `config/lednet.toml` when run from the repository
/// (it exists relative to the working directory), else the installed
/// `/etc/convenor/convenor.toml`. So `cargo run -- serve` in a checkout uses the checkout's
/// config even on a machine where the package is installed.
pub fn default_path() -> PathBuf {
    default_path_in(Path::new("."))
}

/// [`default_path`] as seen from the working directory `cwd`.
pub fn default_path_in(cwd: &Path) -> PathBuf {
    let repo = Path::new("config/lednet.toml");
    if cwd.join(repo).is_file() {
        repo.to_path_buf()
    } else {
        PathBuf::from("/etc/convenor/convenor.toml")
    }
}
