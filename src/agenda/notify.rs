//! The proposal-received mail: each new proposal goes to the lead of its priority, copy to the
//! team (`[network] contact`), with a private link to the lead's page.
//!
//! Only a token's hash is stored, so each such mail carries a freshly issued token for that lead,
//! working for `[agenda] lead_link_lifetime` (30 days by default) unless `convenor agenda token
//! rotate|revoke` revokes it first; a lead with proposals coming in always has a recent link.
//! The mail is rendered from the `proposal-received` template set with the usual context plus
//! `proposal`.
//! It is sent right after the proposal is stored, retried a few times on failure
//! ([`send_with_retries`]), and whether it went out is recorded on the proposal (`notified_ms`,
//! `notify_error`). A mail still owed when the daemon stops goes out at its next start
//! ([`resend_pending`]). The proposal itself never depends on the mail.

use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use lettre::{
    Message,
    message::{
        MultiPart,
        header::{HeaderName, HeaderValue},
    },
};

use super::{AgendaStore, Proposal};
use crate::{
    mail::{
        Templates, Transport,
        context::{self, ContextInput, ProposalCtx},
    },
    model::{
        Audience, Config, EmailId, EmailRule, Meeting, MeetingId, PriorityId, TemplateName, Trigger,
    },
    schedule::Recipient,
};

/// The template set of the mail.
pub const TEMPLATE: &str = "proposal-received";

/// Why the mail could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The proposal's meeting or priority is not in the config.
    #[error("proposal #{0}: its meeting or priority is not in the config")]
    Unknown(i64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] super::AgendaError),
    /// A template failed (names the file and line).
    #[error(transparent)]
    Template(#[from] crate::mail::TemplateError),
    /// Building the message failed.
    #[error("{0}")]
    Render(String),
    /// Sending failed.
    #[error("sending: {0}")]
    Send(String),
}

/// Builds the mail about `proposal` with the lead link `lead_url`, dated `now` (pure).
pub fn compose(
    config: &Config,
    templates: &Templates,
    proposal: &Proposal,
    lead_url: &str,
    now: Timestamp,
) -> Result<Message, NotifyError> {
    let unknown = || NotifyError::Unknown(proposal.id);
    let meeting = MeetingId::parse(&proposal.meeting)
        .ok()
        .and_then(|id| config.meeting(&id))
        .ok_or_else(unknown)?;
    let priority = PriorityId::parse(&proposal.priority)
        .ok()
        .and_then(|id| config.priority(&id))
        .ok_or_else(unknown)?;
    let render = |e: String| NotifyError::Render(e);
    let rule = EmailRule {
        id: EmailId::parse(TEMPLATE).map_err(render)?,
        template: TemplateName::parse(TEMPLATE).map_err(render)?,
        trigger: Trigger::OnChange,
        audience: Audience::Leads,
        grace: jiff::SignedDuration::ZERO,
    };
    let recipient = Recipient::Lead(priority.id.clone());
    let (revision, _) = crate::revision::next_revision(None, config, meeting, now);
    let mut ctx = context::build(ContextInput {
        config,
        meeting,
        rule: &rule,
        recipient: &recipient,
        revision: &revision,
        change: None,
    })
    .map_err(|e| render(e.to_string()))?;
    ctx.proposal = Some(ProposalCtx {
        proposal: proposal.clone(),
        priority_name: priority.name.to_string(),
        lead_url: lead_url.to_owned(),
    });
    let rendered = templates.render(&rule.template, &ctx)?;
    let date = std::time::SystemTime::try_from(now).map_err(|e| render(e.to_string()))?;
    let message_id = format!(
        "<proposal.{}.{}.{}@{}>",
        proposal.id,
        proposal.meeting,
        now.as_millisecond(),
        config.mail.from.email.domain()
    );
    let mut b = Message::builder()
        .from(config.mail.from.clone())
        .to(priority.lead.email.clone())
        .cc(config.network.contact.clone())
        .date(date)
        .message_id(Some(message_id))
        .subject(rendered.subject)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ));
    if let Some(r) = &config.mail.reply_to {
        b = b.reply_to(r.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(
        rendered.text,
        rendered.html,
    ))
    .map_err(|e| render(e.to_string()))
}

/// Attempts of [`send_with_retries`], and the wait before the first retry (then four times
/// longer each time).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// [`send`], retried after 30 s, 2 min and 8 min when sending failed; logs the outcome.
pub async fn send_with_retries(config: Arc<Config>, store: Arc<Mutex<AgendaStore>>, id: i64) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match send(config.clone(), store.clone(), id).await {
            Ok(()) => {
                tracing::info!(proposal = id, "the lead was mailed");
                return;
            }
            Err(e @ NotifyError::Send(_)) if attempt < ATTEMPTS => {
                tracing::warn!(
                    proposal = id,
                    attempt,
                    "the mail to the lead failed, will retry: {e}"
                );
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(e) => {
                tracing::error!(proposal = id, "the mail to the lead failed: {e}");
                return;
            }
        }
    }
}

/// Sends every mail to a lead still owed (see the module docs); run once at start.
pub async fn resend_pending(config: Arc<Config>, store: Arc<Mutex<AgendaStore>>) {
    let owed = store
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unnotified();
    match owed {
        Ok(ids) => {
            tracing::info!(
                owed = ids.len(),
                "mails to leads owed from before this start"
            );
            for id in ids {
                tracing::info!(
                    proposal = id,
                    "mailing the lead, owed from before the restart"
                );
                send_with_retries(config.clone(), store.clone(), id).await;
            }
        }
        Err(e) => tracing::error!("cannot read the proposals owed a mail: {e}"),
    }
}

/// Renders the proposal-received mail for every priority of each of `meetings` with a made-up
/// proposal, so a broken or missing template fails at check, start and reload, not on a
/// member's proposal. `convenor check` passes every meeting; start and reload pass the bounded
/// sample of [`crate::mail::check::sample`] (every shape of meeting, every lead).
pub fn check(
    config: &Config,
    templates: &Templates,
    meetings: &[&Meeting],
) -> Result<(), NotifyError> {
    for meeting in meetings.iter().copied() {
        for p in config.priorities_of(meeting) {
            let sample = Proposal {
                id: 1,
                meeting: meeting.id.to_string(),
                priority: p.id.to_string(),
                name: "Sample Person".into(),
                organisation: "Sample Borough".into(),
                email: "sample@example.org".into(),
                title: "Sample item".into(),
                summary: "A sample summary.\nOn two lines.".into(),
                presents: true,
                minutes: 15,
                status: super::Status::Proposed,
                position: None,
                created: Timestamp::UNIX_EPOCH,
                decided_by: None,
                decided_at: None,
            };
            let url = super::lead_url(config, &"0".repeat(64));
            compose(config, templates, &sample, &url, Timestamp::UNIX_EPOCH)?;
        }
    }
    Ok(())
}

/// Issues a lead link for proposal `id`, composes and sends the mail, and records the outcome.
/// Must run inside the tokio runtime (the SMTP transport spawns its pool there).
pub async fn send(
    config: Arc<Config>,
    store: Arc<Mutex<AgendaStore>>,
    id: i64,
) -> Result<(), NotifyError> {
    let now = Timestamp::now();
    let built = (|| {
        let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
        let proposal = s.proposal(id)?;
        let priority = PriorityId::parse(&proposal.priority)
            .ok()
            .and_then(|p| config.priority(&p))
            .ok_or(NotifyError::Unknown(id))?;
        let issued = s.issue_token(
            priority.id.as_str(),
            priority.lead.email.email.as_ref(),
            &format!("mail for proposal #{id}"),
            config.agenda_settings.lead_link_lifetime,
            now,
        )?;
        drop(s);
        let templates = Templates::load(&config.mail.templates_dir)
            .map_err(|e| NotifyError::Render(e.to_string()))?;
        let url = super::lead_url(&config, &issued.raw);
        compose(&config, &templates, &proposal, &url, now)
    })();
    let result = match built {
        Ok(message) => match Transport::from_settings(&config.mail, &config.state_dir) {
            Ok(t) => t
                .send(&message)
                .await
                .map(|_| ())
                .map_err(|e| NotifyError::Send(e.message)),
            Err(e) => Err(NotifyError::Send(e.to_string())),
        },
        Err(e) => Err(e),
    };
    let error = result.as_ref().err().map(ToString::to_string);
    let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
    s.mark_notified(id, now, error.as_deref())?;
    result
}
