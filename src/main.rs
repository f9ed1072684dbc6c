//! The `convenor` binary: parse arguments, set up logging, run one command.

use std::process::ExitCode;

use clap::Parser;
use convenor::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serves() {
        // Before any thread exists: see `convenor::hangup`.
        convenor::hangup::hold();
        convenor::memory::keep_freed_memory_for_bulk_work();
    }
    convenor::logging::init(cli.log_json);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            convenor::logging::to_stderr(tracing::Level::ERROR, &format!("convenor: {err:#}"));
            ExitCode::FAILURE
        }
    }
}
