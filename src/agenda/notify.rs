//! The proposal-received mail: each new proposal goes to the lead of its priority, copy to the
//! team (`[network] contact`), with a private link to the lead's page.
//!
//! Only a token's hash is stored, so each such mail carries a freshly issued token for that lead
//! (all of a lead's links stay valid until `convenor agenda token rotate|revoke`). The mail is
//! rendered from the `proposal-received` template set with the usual context plus `proposal`.
//! It is sent once, right after the proposal is stored; whether it went out is recorded on the
//! proposal (`notified_ms`, `notify_error`), and the proposal itself never depends on the mail.

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
    model::{Audience, Config, EmailId, EmailRule, MeetingId, PriorityId, TemplateName, Trigger},
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
    /// Rendering failed.
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
    let rendered = templates
        .render(&rule.template, &ctx)
        .map_err(|e| render(e.to_string()))?;
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
        let raw = s.issue_token(
            priority.id.as_str(),
            priority.lead.email.email.as_ref(),
            &format!("mail for proposal #{id}"),
            now,
        )?;
        drop(s);
        let templates = Templates::load(&config.mail.templates_dir)
            .map_err(|e| NotifyError::Render(e.to_string()))?;
        let url = super::lead_url(&config, &raw);
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
