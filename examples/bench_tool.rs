//! Helper of `bench/run.sh`: writes the generated benchmark configs, and measures mail
//! throughput through the real SMTP transport.
//!
//! `bench_tool config --meetings N [...]` prints the shipped config with N generated meetings
//! (benches/support). `bench_tool smtp --port P --count N` composes N distinct scheduled mails
//! (meeting x email x recipient from the timeline of a generated config) and sends each through
//! `mail::Transport` with `TlsMode::Plaintext` to 127.0.0.1:P, timing compose and send together.

#[path = "../benches/support/mod.rs"]
mod support;

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use convenor::{
    feed,
    mail::{self, ComposeInput, Templates, Transport},
    model::Config,
    schedule::{self, DueMail},
};

#[derive(Debug, Parser)]
#[command(about = "Inputs and mail throughput for bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the shipped config with N generated meetings.
    Config {
        /// How many meetings.
        #[arg(long)]
        meetings: usize,
        /// `[mail] templates_dir` (absolute).
        #[arg(long)]
        templates_dir: Option<String>,
        /// `[state] dir`.
        #[arg(long)]
        state_dir: Option<String>,
        /// `[http] listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Deliver over plaintext SMTP to 127.0.0.1 on this port.
        #[arg(long)]
        smtp_port: Option<u16>,
    },
    /// Compose and send N distinct mails to an SMTP server on 127.0.0.1.
    Smtp {
        /// The server's port.
        #[arg(long)]
        port: u16,
        /// How many messages.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Sends in flight at once (the scheduler sends one at a time).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Config {
            meetings,
            templates_dir,
            state_dir,
            listen,
            smtp_port,
        } => {
            let o = support::Overrides {
                templates_dir,
                state_dir,
                listen,
                smtp_port,
            };
            print!("{}", support::config_toml(meetings, &o));
            Ok(ExitCode::SUCCESS)
        }
        Command::Smtp {
            port,
            count,
            concurrency,
        } => smtp(port, count, concurrency.max(1)),
    }
}

/// Everything the senders share.
struct Job {
    config: Config,
    templates: Templates,
    revisions:
        std::collections::BTreeMap<convenor::model::MeetingId, convenor::revision::StoredRevision>,
    due: Vec<DueMail>,
    transport: Transport,
    next: AtomicUsize,
    failed: AtomicUsize,
    bytes: AtomicUsize,
}

fn smtp(port: u16, count: usize, concurrency: usize) -> anyhow::Result<ExitCode> {
    let state = tempfile::tempdir().context("a temporary state directory")?;
    let o = support::Overrides {
        smtp_port: Some(port),
        ..Default::default()
    };
    // 500 meetings give about 4,000 distinct (meeting, email, recipient) mails.
    let config = support::config(500, &o);
    let templates = Templates::load(&config.mail.templates_dir)?;
    let now = jiff::Timestamp::now();
    let revisions = support::revisions(&config, now);
    let due: Vec<DueMail> = schedule::timeline(&config)
        .into_iter()
        .take(count)
        .collect();
    anyhow::ensure!(
        due.len() == count,
        "only {} distinct mails available",
        due.len()
    );
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let (elapsed, job) = runtime.block_on(async {
        let transport = Transport::from_settings(&config.mail, state.path())?;
        let job = Arc::new(Job {
            config,
            templates,
            revisions,
            due,
            transport,
            next: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        });
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            tasks.spawn(sender(Arc::clone(&job), now));
        }
        while let Some(done) = tasks.join_next().await {
            done.context("sender task")??;
        }
        let elapsed = started.elapsed();
        let counts = (
            job.failed.load(Ordering::Relaxed),
            job.bytes.load(Ordering::Relaxed),
        );
        // The SMTP pool's drop spawns a task: drop it inside the runtime.
        drop(job);
        anyhow::Ok((elapsed, counts))
    })?;
    let (failed, bytes) = job;
    let secs = elapsed.as_secs_f64();
    println!(
        "smtp: {count} messages ({:.1} KiB average) in {secs:.3} s with {concurrency} in flight: {:.0} messages/s, {failed} failed",
        bytes as f64 / count as f64 / 1024.0,
        count as f64 / secs
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Takes the next mail, composes it as the scheduler would, sends it.
async fn sender(job: Arc<Job>, now: jiff::Timestamp) -> anyhow::Result<()> {
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        let Some(d) = job.due.get(i) else {
            return Ok(());
        };
        let config = &job.config;
        let meeting = config.meeting(&d.meeting).context("meeting")?;
        let rule = config.email(&d.email).context("email")?;
        let revision = job.revisions.get(&d.meeting).context("revision")?;
        let message_id = mail::message_id(config, &d.meeting, &d.email, &d.recipient, 0);
        let invite = feed::render_meeting_invite(config, meeting, Some(revision));
        let message = mail::compose(&ComposeInput {
            config,
            templates: &job.templates,
            meeting,
            rule,
            recipient: &d.recipient,
            revision,
            message_id: &message_id,
            thread_root: None,
            date: now,
            change: None,
            invite_ics: &invite,
        })?;
        job.bytes
            .fetch_add(message.formatted().len(), Ordering::Relaxed);
        if let Err(e) = job.transport.send(&message).await
            && job.failed.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("smtp: first failure: {e}");
        }
    }
}
