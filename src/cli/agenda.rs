//! `convenor agenda`: the team's view of the agenda loop, from a shell.
//!
//! The CLI writes the agenda store directly (WAL lets it share the file with a running daemon).
//! It does not reach the daemon's memory: a running convenor shows a CLI change in its feeds and
//! mail after its next reload (SIGHUP, `systemctl reload convenor`), which re-reads the config
//! and re-compiles the agenda; every command that changes the agenda says so. Changes made on
//! the web pages show at once.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use jiff::Timestamp;

use crate::{
    agenda::{
        AgendaStore, Proposal, ProposalForm, Status,
        model::{self, FormRefusal},
    },
    config::Loaded,
    model::{Config, MeetingId, PriorityId},
};

/// What `convenor agenda` does.
#[derive(Debug, Subcommand)]
pub enum AgendaCommand {
    /// List the proposals of a meeting (all meetings without --meeting) and its compiled agenda.
    List {
        /// The meeting's id.
        #[arg(long)]
        meeting: Option<String>,
    },
    /// Add a proposal on someone's behalf (stored as proposed, like the web form).
    Add {
        /// The meeting's id.
        #[arg(long)]
        meeting: String,
        /// The priority's id.
        #[arg(long)]
        priority: String,
        /// Who proposes.
        #[arg(long)]
        name: String,
        /// Their organisation.
        #[arg(long)]
        organisation: String,
        /// Their mail address.
        #[arg(long)]
        email: String,
        /// The item's title.
        #[arg(long)]
        title: String,
        /// A short summary.
        #[arg(long)]
        summary: String,
        /// They offer to present it.
        #[arg(long)]
        presents: bool,
        /// Minutes wanted.
        #[arg(long)]
        minutes: u32,
    },
    /// Accept a proposal onto the agenda.
    Accept(Pick),
    /// Decline a proposal.
    Decline(Pick),
    /// Move a proposal to another meeting (for instance from a cancelled one).
    Move {
        /// Which proposal.
        #[command(flatten)]
        pick: Pick,
        /// The meeting to move it to.
        #[arg(long)]
        to: String,
    },
    /// Set a proposal's place in the running order, and optionally its minutes.
    Order {
        /// Which proposal.
        #[command(flatten)]
        pick: Pick,
        /// Position in the running order within its priority (lower goes first).
        #[arg(long)]
        position: i64,
        /// Minutes allotted.
        #[arg(long)]
        minutes: Option<u32>,
    },
    /// Lead links: issue one more, rotate (revoke all, issue one) or revoke all. A link works
    /// for `[agenda] lead_link_lifetime` (default 30 days) after it is issued.
    Token {
        /// What to do.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// Which proposal, of which meeting.
#[derive(Debug, clap::Args)]
pub struct Pick {
    /// The meeting the proposal belongs to (a guard against typos in the number).
    #[arg(long)]
    meeting: String,
    /// The proposal's number (see `convenor agenda list`).
    proposal: i64,
    /// Who decides, for the record [default: team (cli, $USER)].
    #[arg(long)]
    by: Option<String>,
}

/// Lead token actions.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Issue one more link for the lead of a priority (existing links keep working).
    Issue {
        /// The priority's id.
        #[arg(long)]
        priority: String,
    },
    /// Revoke every link of the priority's lead and issue a new one.
    Rotate {
        /// The priority's id.
        #[arg(long)]
        priority: String,
    },
    /// Revoke every link of the priority's lead that still works.
    Revoke {
        /// The priority's id.
        #[arg(long)]
        priority: String,
    },
}

const RELOAD_HINT: &str = "a running convenor shows this in its feeds and mail after its next \
     reload (systemctl reload convenor, or SIGHUP)";

fn open(config: &Config) -> anyhow::Result<AgendaStore> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    Ok(AgendaStore::open_in(&config.state_dir)?)
}

fn who(by: Option<String>) -> String {
    by.unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        format!("team (cli, {user})")
    })
}

/// `convenor check`'s part: the proposal-received template renders for every priority of every
/// meeting ([`crate::agenda::notify::check`]).
pub fn check_templates(
    config: &Config,
    templates: &crate::mail::Templates,
) -> Result<(), Vec<crate::mail::TemplateError>> {
    use crate::{agenda::notify, mail::TemplateError};
    let every: Vec<&crate::model::Meeting> = config.meetings.iter().collect();
    notify::check(config, templates, &every).map_err(|e| match e {
        notify::NotifyError::Template(t) => vec![t],
        other => vec![TemplateError::Read {
            path: templates.dir().join(notify::TEMPLATE),
            message: other.to_string(),
        }],
    })
}

/// Compiles the stored agenda into `config` when there is an agenda store (`ics`, `preview`
/// and `plan` then show what the daemon shows); creates nothing.
pub fn attach_stored(config: &mut Config) -> anyhow::Result<()> {
    let file = config.state_dir.join(crate::agenda::store::AGENDA_FILE);
    if super::store_file_exists(&file)? {
        let store = AgendaStore::open(&file)?;
        crate::agenda::attach(config, &store)?;
    }
    Ok(())
}

/// Runs `convenor agenda ...`.
pub fn run(loaded: &Loaded, command: AgendaCommand) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let now = Timestamp::now();
    match command {
        AgendaCommand::List { meeting } => list(config, meeting.as_deref()),
        AgendaCommand::Add {
            meeting,
            priority,
            name,
            organisation,
            email,
            title,
            summary,
            presents,
            minutes,
        } => {
            let m = find_meeting(config, &meeting)?;
            let fields = [
                ("priority", priority),
                ("name", name),
                ("organisation", organisation),
                ("email", email),
                ("title", title),
                ("summary", summary),
                ("presents", if presents { "yes" } else { "no" }.to_owned()),
                ("minutes", minutes.to_string()),
            ];
            let form = ProposalForm {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            };
            let p = match model::validate(config, m, &form) {
                Ok(p) => p,
                Err(FormRefusal::Invalid(errors)) => {
                    for e in errors {
                        eprintln!("convenor: agenda add: --{e}");
                    }
                    return Ok(ExitCode::from(2));
                }
                Err(FormRefusal::Honeypot) => anyhow::bail!("refused"),
            };
            let id = open(config)?.add(&p, &who(None), false, now)?;
            println!(
                "added proposal #{id} to meeting {meeting} as proposed (no mail to the lead: \
                 accept or decline it here, or send them a link with `agenda token issue`)"
            );
            Ok(ExitCode::SUCCESS)
        }
        AgendaCommand::Accept(pick) => decide(config, pick, Status::Accepted, now),
        AgendaCommand::Decline(pick) => decide(config, pick, Status::Declined, now),
        AgendaCommand::Move { pick, to } => {
            find_meeting(config, &to)?;
            let mut store = open(config)?;
            check_pick(&store, &pick)?;
            store.move_to(pick.proposal, &to, &who(pick.by), now)?;
            println!(
                "moved proposal #{} to meeting {to}; {RELOAD_HINT}",
                pick.proposal
            );
            if store.unnotified()?.contains(&pick.proposal) {
                println!(
                    "its lead was never mailed about it: they are mailed about meeting {to} \
                     after that reload"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AgendaCommand::Order {
            pick,
            position,
            minutes,
        } => {
            if let Some(m) = minutes {
                anyhow::ensure!(
                    model::MINUTES.contains(&m),
                    "--minutes must be from {} to {}",
                    model::MINUTES.start(),
                    model::MINUTES.end()
                );
            }
            let mut store = open(config)?;
            check_pick(&store, &pick)?;
            store.order(pick.proposal, position, minutes, &who(pick.by), now)?;
            println!(
                "proposal #{} now at position {position}; {RELOAD_HINT}",
                pick.proposal
            );
            Ok(ExitCode::SUCCESS)
        }
        AgendaCommand::Token { action } => token(config, action, now),
    }
}

fn find_meeting<'a>(config: &'a Config, id: &str) -> anyhow::Result<&'a crate::model::Meeting> {
    MeetingId::parse(id)
        .ok()
        .and_then(|m| config.meeting(&m))
        .with_context(|| format!("no meeting `{id}` in {}", config.source.display()))
}

fn check_pick(store: &AgendaStore, pick: &Pick) -> anyhow::Result<Proposal> {
    let p = store.proposal(pick.proposal)?;
    anyhow::ensure!(
        p.meeting == pick.meeting,
        "proposal #{} belongs to meeting {}, not {}",
        p.id,
        p.meeting,
        pick.meeting
    );
    Ok(p)
}

fn decide(config: &Config, pick: Pick, status: Status, now: Timestamp) -> anyhow::Result<ExitCode> {
    let mut store = open(config)?;
    check_pick(&store, &pick)?;
    store.decide(pick.proposal, status, &who(pick.by), now)?;
    println!(
        "proposal #{} {}; {RELOAD_HINT}",
        pick.proposal,
        status.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(config: &Config, meeting: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(m) = meeting
        && MeetingId::parse(m)
            .ok()
            .and_then(|id| config.meeting(&id))
            .is_none()
    {
        eprintln!("note: meeting `{m}` is not in the config; listing its stored proposals");
    }
    let store = open(config)?;
    let proposals = store.proposals(meeting)?;
    let mut out = String::new();
    for p in &proposals {
        let state = match MeetingId::parse(&p.meeting)
            .ok()
            .and_then(|id| config.meeting(&id))
        {
            Some(m) if m.is_cancelled() => " [meeting cancelled]",
            Some(_) => "",
            None => " [meeting not in the config]",
        };
        let decided = p
            .decided_by
            .as_ref()
            .zip(p.decided_at)
            .map(|(by, at)| format!(" by {by} at {at}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "#{} {} {} {}{decided}{state}\n    {} ({} min{}) from {} ({}) <{}>\n",
            p.id,
            p.meeting,
            p.priority,
            p.status.as_str(),
            p.title,
            p.minutes,
            if p.presents {
                ", offers to present"
            } else {
                ""
            },
            p.name,
            p.organisation,
            p.email,
        ));
    }
    if proposals.is_empty() {
        out.push_str("no proposals\n");
    }
    let book = model::compile(config, &proposals);
    for (id, agenda) in &book.0 {
        out.push_str(&format!("\nAgenda of {id} ({} min):\n", agenda.minutes));
        for line in agenda.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    super::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn token(config: &Config, action: TokenAction, now: Timestamp) -> anyhow::Result<ExitCode> {
    let (TokenAction::Issue { priority }
    | TokenAction::Rotate { priority }
    | TokenAction::Revoke { priority }) = &action;
    let p = PriorityId::parse(priority)
        .ok()
        .and_then(|id| config.priority(&id))
        .with_context(|| format!("no priority `{priority}` in {}", config.source.display()))?;
    let mut store = open(config)?;
    let lead = p.lead.email.email.to_string();
    let revoked = match action {
        TokenAction::Issue { .. } => 0,
        TokenAction::Rotate { .. } | TokenAction::Revoke { .. } => {
            store.revoke_tokens(p.id.as_str(), now)?
        }
    };
    if revoked > 0 || matches!(action, TokenAction::Revoke { .. }) {
        println!("revoked {revoked} link(s) of the {} lead", p.id);
    }
    if !matches!(action, TokenAction::Revoke { .. }) {
        let lifetime = config.agenda_settings.lead_link_lifetime;
        let issued = store.issue_token(p.id.as_str(), &lead, "cli", lifetime, now)?;
        let expires = crate::agenda::local_time(config, issued.expires);
        println!(
            "lead link for {} ({lead}), valid for {lifetime}, until {expires}:",
            p.name
        );
        println!("{}", crate::agenda::lead_url(config, &issued.raw));
    }
    Ok(ExitCode::SUCCESS)
}
