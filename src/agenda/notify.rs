//! The proposal-received mail: each new proposal goes to the lead of its priority, copy to the
//! team (`[network] contact`), with a private link to the lead's page.
//!
//! Only a token's hash is stored, so each run of [`send_with_retries`] issues one fresh token for
//! that lead (used by every attempt of the run), working for `[agenda] lead_link_lifetime` (30
//! days by default) unless `convenor agenda token rotate|revoke` revokes it first; a lead with
//! proposals coming in always has a recent link.
//! The mail is rendered from the `proposal-received` template set with the usual context plus
//! `proposal`, with the daemon's checked templates and transport ([`Notifier`]: the same ones the
//! scheduler uses, swapped at reload), never from what is on disk but not yet checked.
//! Its Message-ID is fixed per proposal (its number, meeting and creation instant), so a
//! duplicate delivered after a lost reply can be recognised.
//! It is sent right after the proposal is stored and retried after a transient failure with
//! capped exponential backoff ([`after_failure`]: `[scheduler] retry_base`, doubling, at most an
//! hour) until it is sent, the server refuses it for good, or the meeting has started. Whether it
//! went out is recorded on the proposal (`notified_ms`, `notify_error`). A mail still owed when
//! the daemon stops goes out at its next start ([`resend_pending`]). A mail owed again (an
//! undecided proposal moved to another meeting with `convenor agenda move`:
//! [`AgendaStore::move_to`]) goes out after the next reload ([`send_owed`]). One run at a time
//! mails a proposal's lead, whoever starts it. A mail given up (the meeting
//! started first, or the server refused it for good) is recorded as no longer owed
//! ([`AgendaStore::give_up_notify`]), so it is given up and logged once, not at every start
//! ([`settle_owed`] decides which owed mails a start sends, given `now`). The mail shows until
//! when its link works (`proposal.link_expires`, local time in the network's zone). The
//! proposal itself never depends on the mail.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use jiff::{SignedDuration, Timestamp};
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
        Rendered, SendClass, Templates,
        context::{self, ContextInput, ProposalCtx},
    },
    model::{
        Audience, Config, EmailId, EmailRule, LeadLinkLifetime, Meeting, MeetingId, PriorityId,
        TemplateName, Trigger,
    },
    schedule::Recipient,
    scheduler::MailParts,
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
    /// Sending failed: transient (retried) or permanent (a 5xx to the message).
    #[error("sending: {message}")]
    Send {
        /// Whether a retry may succeed.
        class: SendClass,
        /// What happened, with the server's reply.
        message: String,
        /// Recipients that got the mail although the send failed (the team, while the relay
        /// put the lead off): the retries leave them out.
        done: Vec<String>,
    },
}

impl NotifyError {
    /// Whether a later attempt may succeed: only a transient failure to send.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Send {
                class: SendClass::Transient,
                ..
            }
        )
    }
}

/// The lead's private link a mail carries, and when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadLink {
    /// The lead's page (see [`super::lead_url`]).
    pub url: String,
    /// The token's stored expiry.
    pub expires: Timestamp,
}

/// Builds the mail about `proposal` with the lead's `link`, dated `now` (pure).
pub fn compose(
    config: &Config,
    templates: &Templates,
    proposal: &Proposal,
    link: &LeadLink,
    now: Timestamp,
) -> Result<Message, NotifyError> {
    let (rendered, lead) = render_for(config, templates, proposal, link, now, None)?;
    let render = |e: String| NotifyError::Render(e);
    let date = std::time::SystemTime::try_from(now).map_err(|e| render(e.to_string()))?;
    let message_id = message_id(config, proposal);
    let mut b = Message::builder()
        .from(config.mail.from.clone())
        .to(lead)
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

/// Renders the subject and bodies of the mail about `proposal` with the lead's `link`, at
/// `now` (pure): what [`compose`] puts into the message.
pub fn render(
    config: &Config,
    templates: &Templates,
    proposal: &Proposal,
    link: &LeadLink,
    now: Timestamp,
) -> Result<Rendered, NotifyError> {
    render_for(config, templates, proposal, link, now, None).map(|(rendered, _)| rendered)
}

/// [`render`], with the lead's mailbox; with `agenda` in place of the meeting's own when given
/// ([`check`] renders a made-up one).
fn render_for(
    config: &Config,
    templates: &Templates,
    proposal: &Proposal,
    link: &LeadLink,
    now: Timestamp,
    agenda: Option<&super::Agenda>,
) -> Result<(Rendered, lettre::message::Mailbox), NotifyError> {
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
    if let Some(agenda) = agenda {
        ctx.agenda = agenda.clone();
    }
    ctx.proposal = Some(ProposalCtx {
        proposal: proposal.clone(),
        priority_name: priority.name.to_string(),
        lead_url: link.url.clone(),
        link_expires: super::local_time(config, link.expires),
    });
    let rendered = templates.render(&rule.template, &ctx)?;
    Ok((rendered, priority.lead.email.clone()))
}

/// The Message-ID of the mail about `proposal`: the same for every attempt and restart (its
/// number, meeting and creation instant), so a receiver can recognise a duplicate. The domain is
/// `[mail] from`'s, in ASCII (punycode for an internationalised one).
pub fn message_id(config: &Config, proposal: &Proposal) -> String {
    format!(
        "<proposal.{}.{}.{}@{}>",
        proposal.id,
        proposal.meeting,
        proposal.created.as_millisecond(),
        crate::mail::compose::ascii_domain(config.mail.from.email.domain())
    )
}

/// The longest wait between two attempts of [`send_with_retries`].
pub const MAX_WAIT: SignedDuration = SignedDuration::from_hours(1);

/// What [`send_with_retries`] does after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Attempt again at this instant.
    At(Timestamp),
    /// Stop: the next attempt would come when the meeting has started.
    GiveUp,
}

/// The retry schedule (pure): after the `failures`-th failure in a row (1 for the first), at
/// `now`, wait `base` doubled `failures - 1` times, at most [`MAX_WAIT`]; give up when that
/// instant is not before `meeting_start`.
pub fn after_failure(
    base: SignedDuration,
    failures: u32,
    now: Timestamp,
    meeting_start: Timestamp,
) -> Retry {
    let doublings = failures.saturating_sub(1).min(30);
    let wait = base
        .checked_mul(1_i32 << doublings)
        .map_or(MAX_WAIT, |w| w.min(MAX_WAIT))
        .max(SignedDuration::ZERO);
    match now.checked_add(wait) {
        Ok(at) if at < meeting_start => Retry::At(at),
        _ => Retry::GiveUp,
    }
}

/// Where the mail takes the config in force and its checked templates and transport from, read
/// together at each attempt (the daemon reads them under the store lock where a reload publishes
/// them, see [`crate::daemon`]).
#[derive(Clone)]
pub struct Notifier {
    current: Arc<dyn Fn() -> (Arc<Config>, Arc<MailParts>) + Send + Sync>,
    /// The proposals a [`send_with_retries`] of this notifier is mailing now: one run per
    /// proposal, whoever starts it (a new proposal, a start, a reload).
    sending: Arc<Mutex<HashSet<i64>>>,
}

/// A proposal's place in [`Notifier::sending`], given back when its run ends.
struct Sending {
    set: Arc<Mutex<HashSet<i64>>>,
    id: i64,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier reading the config in force and its mail parts with `current`.
    pub fn new(
        current: impl Fn() -> (Arc<Config>, Arc<MailParts>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            current: Arc::new(current),
            sending: Arc::default(),
        }
    }

    /// The config in force and its mail parts. Read off the async workers: the daemon's
    /// `current` waits for the ledger's lock, which a reload or the start's plan holds for a
    /// while (at 5,000 meetings, a tenth of a second and more), and a worker blocked on it
    /// would stall the HTTP requests queued on it.
    fn current(&self) -> (Arc<Config>, Arc<MailParts>) {
        crate::sqlite_file::off_the_async_workers(|| (self.current)())
    }

    /// Takes proposal `id`'s place among those being mailed; `None` when a run has it.
    fn start_sending(&self, id: i64) -> Option<Sending> {
        let mut set = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(id).then(|| Sending {
            set: self.sending.clone(),
            id,
        })
    }
}

/// Mails the lead about proposal `id`: one lead token for the run, then attempts until the mail
/// is sent, refused for good, or the meeting has started, waiting as [`after_failure`] says
/// between attempts; records each attempt on the proposal and logs the outcome.
pub async fn send_with_retries(notifier: Notifier, store: Arc<Mutex<AgendaStore>>, id: i64) {
    let Some(_sending) = notifier.start_sending(id) else {
        tracing::debug!(proposal = id, "the mail to the lead is being sent already");
        return;
    };
    // Checked once the place is taken: a run that ended between the caller's reading of the
    // owed mails and now may have sent it.
    if !still_owed(&store, id) {
        return;
    }
    let (config, _) = notifier.current();
    let (mut proposal, mut link) = match prepare(&config, &store, id, Timestamp::now()) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!(proposal = id, "cannot mail the lead: {e}");
            return;
        }
    };
    let mut failures = 0_u32;
    // Recipients earlier attempts (of this run or of one before a restart) got the mail to:
    // the retries leave them out.
    let mut done = match with_store(&store, |s| s.notify_done(id)) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(proposal = id, "cannot read whom the lead mail reached: {e}");
            Vec::new()
        }
    };
    loop {
        // And before every attempt: nothing but this run settles it, but nothing is sent twice
        // on that word alone.
        if !still_owed(&store, id) {
            return;
        }
        let (config, parts) = notifier.current();
        // Read again: `convenor agenda move` may have moved it to another meeting since. The
        // mail is then about that meeting (another Message-ID), and whom it reached is what
        // the store says now (the move forgot it).
        match with_store(&store, |s| s.proposal(id)) {
            Ok(stored) if stored.meeting != proposal.meeting => {
                tracing::info!(proposal = id, meeting = %stored.meeting, "the proposal moved; \
                    the mail to the lead is about its new meeting");
                done = with_store(&store, |s| s.notify_done(id)).unwrap_or_default();
                proposal = stored;
            }
            Ok(stored) => proposal = stored,
            Err(e) => tracing::error!(proposal = id, "cannot read the proposal again: {e}"),
        }
        let Some(start) = meeting_start(&config, &proposal) else {
            tracing::error!(proposal = id, "{}", NotifyError::Unknown(id));
            return;
        };
        let now = Timestamp::now();
        if now >= start {
            if !give_up(&store, id, &proposal.meeting, STARTED) {
                continue;
            }
            tracing::warn!(
                proposal = id,
                "the meeting has started; the lead was not mailed about this proposal"
            );
            return;
        }
        let lifetime = config.agenda_settings.lead_link_lifetime;
        if link_is_stale(link.expires, lifetime, now) {
            // Retries outlived half the link's life: the mail carries a new one (the same
            // Message-ID; the old link works until it expires).
            match issue_link(&config, &store, &proposal, now) {
                Ok(fresh) => link = fresh,
                Err(e) => tracing::error!(
                    proposal = id,
                    "cannot issue a new lead link; the mail keeps the old one: {e}"
                ),
            }
        }
        let result = attempt(&config, &parts, &proposal, &link, &done, now).await;
        let error = result.as_ref().err().map(ToString::to_string);
        // Whom this attempt reached although it failed, recorded with the attempt in one
        // commit (a restart then leaves them out too).
        let reached: &[String] = match &result {
            Err(NotifyError::Send { done, .. }) => done,
            _ => &[],
        };
        match with_store(&store, |s| {
            s.mark_notified_for(id, &proposal.meeting, now, error.as_deref(), reached)
        }) {
            Ok(true) => {}
            Ok(false) => {
                // Moved during the attempt: the mail owed now is about the new meeting.
                tracing::info!(
                    proposal = id,
                    "the proposal moved during this attempt; mailing the lead about its new \
                     meeting"
                );
                continue;
            }
            Err(e) => tracing::error!(
                proposal = id,
                "cannot record the mail to the lead (a restart sends it again, also to whom \
                 it reached): {e}"
            ),
        }
        let e = match result {
            Ok(()) => {
                tracing::info!(proposal = id, "the lead was mailed");
                return;
            }
            Err(e) if e.is_transient() => {
                if let NotifyError::Send { done: reached, .. } = &e {
                    done.extend(reached.iter().cloned());
                }
                e
            }
            Err(e @ (NotifyError::Template(_) | NotifyError::Render(_))) => {
                tracing::error!(
                    proposal = id,
                    "the mail to the lead cannot be rendered with the checked templates; \
                     not retried before the next start: {e}"
                );
                return;
            }
            Err(e @ NotifyError::Send { .. }) => {
                if !give_up(
                    &store,
                    id,
                    &proposal.meeting,
                    &format!("{e}{}", reached_note(&done)),
                ) {
                    continue;
                }
                tracing::error!(proposal = id, "the mail to the lead failed for good: {e}");
                return;
            }
            Err(e) => {
                tracing::error!(proposal = id, "the mail to the lead failed: {e}");
                return;
            }
        };
        failures = failures.saturating_add(1);
        let base = config.scheduler.retry_base;
        let now = Timestamp::now();
        match after_failure(base, failures, now, start) {
            Retry::At(at) => {
                tracing::warn!(
                    proposal = id,
                    attempt = failures,
                    retry_at = %at,
                    "the mail to the lead failed, will retry: {e}"
                );
                let wait = at.duration_since(now).unsigned_abs();
                tokio::time::sleep(wait).await;
            }
            Retry::GiveUp => {
                let reason = format!(
                    "not sent: the meeting starts before another attempt; last: {e}{}",
                    reached_note(&done)
                );
                if !give_up(&store, id, &proposal.meeting, &reason) {
                    continue;
                }
                tracing::warn!(
                    proposal = id,
                    attempt = failures,
                    "the mail to the lead failed and the meeting starts before another attempt; \
                     giving up: {e}"
                );
                return;
            }
        }
    }
}

/// The reason recorded ([`AgendaStore::give_up_notify`]) for a mail given up because its
/// meeting started first.
pub const STARTED: &str = "not sent: the meeting started first";

/// The mails to leads owed at a start (see [`settle_owed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owed {
    /// Proposals whose mail is to be sent now.
    pub send: Vec<i64>,
    /// Proposals whose meeting has started: recorded as no longer owed, not sent.
    pub given_up: Vec<i64>,
}

/// Sorts the mails owed at `now` (the clock is the caller's): those whose meeting has started
/// are given up for good in `store` ([`AgendaStore::give_up_notify`], so the next start does not
/// see them again), the others are to be sent. A proposal whose meeting is not in `config` stays
/// owed and is to be sent ([`send_with_retries`] reports it; the meeting may come back).
pub fn settle_owed(
    config: &Config,
    store: &mut AgendaStore,
    now: Timestamp,
) -> Result<Owed, super::AgendaError> {
    let mut owed = Owed::default();
    for id in store.unnotified()? {
        let proposal = store.proposal(id)?;
        match meeting_start(config, &proposal) {
            Some(start) if now >= start => {
                store.give_up_notify(id, STARTED)?;
                owed.given_up.push(id);
            }
            _ => owed.send.push(id),
        }
    }
    Ok(owed)
}

/// `done` (whom earlier attempts reached) as a note for a give-up reason, or nothing.
fn reached_note(done: &[String]) -> String {
    if done.is_empty() {
        String::new()
    } else {
        format!(" (earlier attempts reached {})", done.join(", "))
    }
}

/// Runs `f` on the agenda store off the async workers: a write waits up to SQLite's busy
/// timeout for another writer (the CLI, a backup), and the feeds and the scheduler must not
/// wait with it ([`crate::sqlite_file::off_the_async_workers`]).
fn with_store<T>(store: &Mutex<AgendaStore>, f: impl FnOnce(&mut AgendaStore) -> T) -> T {
    crate::sqlite_file::off_the_async_workers(|| {
        f(&mut store.lock().unwrap_or_else(PoisonError::into_inner))
    })
}

/// Records in `store` that proposal `id`'s mail is given up for `reason`; logs a failure.
/// Whether proposal `id` is still owed its lead mail; logs why not.
fn still_owed(store: &Mutex<AgendaStore>, id: i64) -> bool {
    match with_store(store, |s| s.is_owed(id)) {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(proposal = id, "the mail to the lead is no longer owed");
            false
        }
        Err(e) => {
            tracing::error!(
                proposal = id,
                "cannot read whether the lead is owed a mail: {e}"
            );
            false
        }
    }
}

/// False when the proposal was moved to another meeting meanwhile: the mail owed now is about
/// that one, and the run goes on with it.
fn give_up(store: &Mutex<AgendaStore>, id: i64, meeting: &str, reason: &str) -> bool {
    match with_store(store, |s| s.give_up_notify_for(id, meeting, reason)) {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::error!(
                proposal = id,
                "cannot record that the mail to the lead is given up: {e}"
            );
            true
        }
    }
}

/// When [`send_owed`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occasion {
    /// At start: mails owed from before it.
    Start,
    /// After a reload: mails owed again since (a proposal moved with `convenor agenda move`).
    Reload,
}

/// Sends every mail to a lead still owed (see the module docs), each in a task of its own,
/// except those a run is sending already, and gives up (once, recorded) those whose meeting has
/// started; run at start and after each reload.
pub async fn send_owed(notifier: Notifier, store: Arc<Mutex<AgendaStore>>, occasion: Occasion) {
    let (config, _) = notifier.current();
    let owed = with_store(&store, |s| settle_owed(&config, s, Timestamp::now()));
    let since = match occasion {
        Occasion::Start => "from before this start",
        Occasion::Reload => "at this reload",
    };
    match owed {
        Ok(Owed { send, given_up }) => {
            for id in given_up {
                tracing::warn!(
                    proposal = id,
                    "the meeting has started; the lead was not mailed about this proposal \
                     (owed {since}), given up"
                );
            }
            let running = notifier
                .sending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let send: Vec<i64> = send
                .into_iter()
                .filter(|id| !running.contains(id))
                .collect();
            if occasion == Occasion::Start || !send.is_empty() {
                tracing::info!(owed = send.len(), "mails to leads owed {since}");
            }
            for id in send {
                tracing::info!(proposal = id, "mailing the lead, owed {since}");
                tokio::spawn(send_with_retries(notifier.clone(), store.clone(), id));
            }
        }
        Err(e) => tracing::error!("cannot read the proposals owed a mail: {e}"),
    }
}

/// [`send_owed`] at start.
pub async fn resend_pending(notifier: Notifier, store: Arc<Mutex<AgendaStore>>) {
    send_owed(notifier, store, Occasion::Start).await;
}

/// Renders the proposal-received mail for every priority of each of `meetings` with a made-up
/// proposal, so a broken or missing template fails at check, start and reload, not on a
/// member's proposal. `convenor check` passes every meeting; start and reload pass the bounded
/// sample of [`crate::mail::check::sample`] (every shape of meeting, every lead). Once more, for
/// the first meeting and priority, with a made-up agenda holding items
/// ([`crate::mail::check::made_up_agenda`]) and with an empty one, so an item's fault fails
/// before a lead accepts an item.
pub fn check(
    config: &Config,
    templates: &Templates,
    meetings: &[&Meeting],
) -> Result<(), NotifyError> {
    let mut agenda_checked = false;
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
            let link = LeadLink {
                url: super::lead_url(config, &"0".repeat(64)),
                expires: config
                    .agenda_settings
                    .lead_link_lifetime
                    .expiry(Timestamp::UNIX_EPOCH),
            };
            compose(config, templates, &sample, &link, Timestamp::UNIX_EPOCH)?;
            if !agenda_checked {
                agenda_checked = true;
                let empty = super::Agenda {
                    empty: true,
                    ..super::Agenda::default()
                };
                for agenda in [crate::mail::check::made_up_agenda(config, meeting), empty] {
                    render_for(
                        config,
                        templates,
                        &sample,
                        &link,
                        Timestamp::UNIX_EPOCH,
                        Some(&agenda),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The instant `proposal`'s meeting starts, if the meeting is in `config`.
fn meeting_start(config: &Config, proposal: &Proposal) -> Option<Timestamp> {
    MeetingId::parse(&proposal.meeting)
        .ok()
        .and_then(|id| config.meeting(&id))
        .map(|m| m.starts_at(&config.network.time_zone))
}

/// Reads proposal `id` and issues its lead a token at `now`: the proposal and the lead's link.
fn prepare(
    config: &Config,
    store: &Mutex<AgendaStore>,
    id: i64,
    now: Timestamp,
) -> Result<(Proposal, LeadLink), NotifyError> {
    let proposal = with_store(store, |s| s.proposal(id))?;
    let link = issue_link(config, store, &proposal, now)?;
    Ok((proposal, link))
}

/// Issues the lead of `proposal`'s priority a token at `now`: the lead's link.
fn issue_link(
    config: &Config,
    store: &Mutex<AgendaStore>,
    proposal: &Proposal,
    now: Timestamp,
) -> Result<LeadLink, NotifyError> {
    let priority = PriorityId::parse(&proposal.priority)
        .ok()
        .and_then(|p| config.priority(&p))
        .ok_or(NotifyError::Unknown(proposal.id))?;
    let issued = with_store(store, |s| {
        s.issue_token(
            priority.id.as_str(),
            priority.lead.email.email.as_ref(),
            &format!("mail for proposal #{}", proposal.id),
            config.agenda_settings.lead_link_lifetime,
            now,
        )
    })?;
    Ok(LeadLink {
        url: super::lead_url(config, &issued.raw),
        expires: issued.expires,
    })
}

/// Whether a lead link expiring at `expires` is too old to mail at `now`: less than half of
/// `lifetime` (the lifetime in force) is left. A mail retried for long (a relay down for hours
/// under a short `lead_link_lifetime`) then carries a new link rather than one that is dead, or
/// nearly, when it arrives.
pub fn link_is_stale(expires: Timestamp, lifetime: LeadLinkLifetime, now: Timestamp) -> bool {
    let half = lifetime.duration() / 2;
    expires.duration_since(now) < half
}

/// One attempt: composes the mail with the checked templates and sends it with the transport
/// to its recipients but those in `done` (earlier attempts got it to them).
async fn attempt(
    config: &Config,
    parts: &MailParts,
    proposal: &Proposal,
    link: &LeadLink,
    done: &[String],
    now: Timestamp,
) -> Result<(), NotifyError> {
    let message = compose(config, &parts.templates, proposal, link, now)?;
    parts
        .transport
        .send_except(&message, done)
        .await
        .map(|_| ())
        .map_err(|e| NotifyError::Send {
            class: e.class,
            message: e.message,
            done: e.done,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agenda::{NewProposal, Status},
        config::{Environment, parse},
        model::LeadLinkLifetime,
    };

    fn config() -> Config {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        parse(path, &text, &Environment::default())
            .expect("valid")
            .config
    }

    fn new(meeting: &str) -> NewProposal {
        NewProposal {
            meeting: MeetingId::parse(meeting).expect("id"),
            priority: "future-places".into(),
            name: "N".into(),
            organisation: "O".into(),
            email: "n@example.org".into(),
            title: "T".into(),
            summary: "S".into(),
            presents: false,
            minutes: 10,
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("an instant")
    }

    /// One run at a time mails a proposal's lead, whoever starts it (a new proposal, a start,
    /// a reload): a run started while another has the proposal returns at once and sends
    /// nothing; once that run is over, the next one sends.
    #[tokio::test(flavor = "current_thread")]
    async fn one_run_at_a_time_mails_a_proposals_lead() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path)
            .expect("example config")
            .replace("date = 2023-02-24", "date = 2099-02-24")
            + &format!("\n[state]\ndir = \"{}\"\n", dir.path().display());
        let config = parse(path, &text, &Environment::default())
            .expect("valid")
            .config;
        let parts = Arc::new(crate::daemon::mail_parts(&config).expect("templates, transport"));
        let config = Arc::new(config);
        let notifier = Notifier::new(move || (config.clone(), parts.clone()));
        let mut agenda = AgendaStore::open_in(dir.path()).expect("agenda store");
        let id = agenda
            .add(&new("2023-02-24"), "web", true, Timestamp::now())
            .expect("add");
        let store = Arc::new(Mutex::new(agenda));
        let outbox = dir.path().join("outbox");
        let sent = || std::fs::read_dir(&outbox).map_or(0, Iterator::count);
        let owed =
            |store: &Mutex<AgendaStore>| store.lock().expect("lock").unnotified().expect("owed");

        let running = notifier.start_sending(id).expect("no run has it");
        send_with_retries(notifier.clone(), store.clone(), id).await;
        assert_eq!(sent(), 0, "a second run sent");
        assert_eq!(owed(&store), [id]);
        drop(running);
        send_with_retries(notifier.clone(), store.clone(), id).await;
        assert_eq!(sent(), 1);
        assert!(owed(&store).is_empty());
        // A run started from a list of owed mails read before that one ended (a reload's):
        // the mail is no longer owed, and nothing is sent again. (The outbox names a file by
        // its Message-ID, so a second mail would replace the first: with another lead link.)
        let mail = || {
            let file = std::fs::read_dir(&outbox)
                .expect("outbox")
                .next()
                .expect("a mail")
                .expect("entry")
                .path();
            std::fs::read_to_string(file).expect("read the mail")
        };
        let first = mail();
        send_with_retries(notifier.clone(), store.clone(), id).await;
        assert_eq!(sent(), 1);
        assert!(mail() == first, "the lead was mailed again");
    }

    /// A link is mailed while more than half its lifetime is left; retries past that carry a
    /// new one (a mail arriving with a link already dead, or nearly, is no use to a lead).
    #[test]
    fn a_link_past_half_its_lifetime_is_stale() {
        let lifetime = LeadLinkLifetime::DEFAULT;
        let issued = at("2026-01-01T00:00:00Z");
        let expires = lifetime.expiry(issued);
        let half = lifetime.duration() / 2;
        let just_before_half = issued + half - SignedDuration::from_secs(1);
        assert!(!link_is_stale(expires, lifetime, issued));
        assert!(!link_is_stale(expires, lifetime, just_before_half));
        assert!(link_is_stale(
            expires,
            lifetime,
            issued + half + SignedDuration::from_secs(1)
        ));
        assert!(link_is_stale(expires, lifetime, expires));
        assert!(link_is_stale(
            expires,
            lifetime,
            expires + SignedDuration::from_hours(1)
        ));
    }

    /// A mail owed for a meeting that has started at `now` is given up once and for good: the
    /// store no longer owes it (also after reopening), so the next start neither sends nor
    /// gives it up again; a mail for a meeting still ahead stays owed and is sent; one sent is
    /// never marked given up. Before, such a proposal stayed owed and every start gave it up
    /// (and logged it) again.
    #[test]
    fn a_mail_owed_for_a_meeting_that_started_is_given_up_once_and_for_good() {
        let c = config();
        let dir = tempfile::tempdir().expect("tmp");
        let created = at("2023-02-01T10:00:00Z");
        // The 2023-02-24 meeting starts at 10:00 GMT; 2023-06-07 is still ahead.
        let (started, ahead, sent) = {
            let mut s = AgendaStore::open_in(dir.path()).expect("open");
            let started = s
                .add(&new("2023-02-24"), "web", true, created)
                .expect("add");
            let ahead = s
                .add(&new("2023-06-07"), "web", true, created)
                .expect("add");
            let sent = s
                .add(&new("2023-02-24"), "web", true, created)
                .expect("add");
            s.mark_notified(sent, created, None, &[]).expect("sent");
            (started, ahead, sent)
        };
        let just_before = at("2023-02-24T09:59:59Z");
        let start = at("2023-02-24T10:00:00Z");
        {
            let mut s = AgendaStore::open_in(dir.path()).expect("open");
            assert_eq!(
                settle_owed(&c, &mut s, just_before).expect("settle"),
                Owed {
                    send: vec![started, ahead],
                    given_up: vec![]
                }
            );
            assert_eq!(s.unnotified().expect("owed"), [started, ahead]);
            assert_eq!(
                settle_owed(&c, &mut s, start).expect("settle"),
                Owed {
                    send: vec![ahead],
                    given_up: vec![started]
                }
            );
            assert_eq!(s.unnotified().expect("owed"), [ahead]);
            // Giving up a mail already sent changes nothing.
            s.give_up_notify(sent, STARTED).expect("no-op");
        }
        // The next start (the file reopened, later still) sees only the meeting ahead.
        let mut s = AgendaStore::open_in(dir.path()).expect("reopen");
        assert_eq!(
            settle_owed(&c, &mut s, at("2023-03-01T10:00:00Z")).expect("settle"),
            Owed {
                send: vec![ahead],
                given_up: vec![]
            }
        );
        let file = rusqlite::Connection::open(dir.path().join(super::super::store::AGENDA_FILE))
            .expect("second connection");
        let (wanted, notified, error): (bool, Option<i64>, Option<String>) = file
            .query_row(
                "SELECT notify_wanted, notified_ms, notify_error FROM proposals WHERE id = ?1",
                [started],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(
            (wanted, notified, error.as_deref()),
            (false, None, Some(STARTED))
        );
        let sent_row: (bool, Option<i64>, Option<String>) = file
            .query_row(
                "SELECT notify_wanted, notified_ms, notify_error FROM proposals WHERE id = ?1",
                [sent],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(sent_row, (true, Some(created.as_millisecond()), None));
        assert_eq!(s.proposal(started).expect("kept").status, Status::Proposed);
    }

    /// The mail says until when the lead's link works: the token's expiry in the network's
    /// zone and local time (GMT in winter, BST in summer), in the text and the HTML part.
    #[test]
    fn the_lead_mail_says_when_its_link_expires() {
        let c = config();
        let templates = Templates::load(&c.mail.templates_dir).expect("templates");
        let proposal = Proposal {
            id: 3,
            meeting: "2023-02-24".into(),
            priority: "future-places".into(),
            name: "Ada".into(),
            organisation: "Camden".into(),
            email: "ada@camden.example".into(),
            title: "Heat pumps".into(),
            summary: "S".into(),
            presents: true,
            minutes: 10,
            status: Status::Proposed,
            position: None,
            created: at("2023-01-20T10:00:00Z"),
            decided_by: None,
            decided_at: None,
        };
        for (expires, shown) in [
            ("2023-02-19T10:30:00Z", "Sunday 19 February 2023, 10:30 GMT"),
            ("2023-04-02T16:05:00Z", "Sunday 2 April 2023, 17:05 BST"),
        ] {
            let link = LeadLink {
                url: "https://x.example/leads/abc/".into(),
                expires: at(expires),
            };
            let r = render(&c, &templates, &proposal, &link, proposal.created).expect("render");
            let said = format!("The link works until {shown};");
            assert!(r.text.contains(&said), "{said}: {}", r.text);
            assert!(r.html.contains(&said), "{said}: {}", r.html);
        }
        // The default lifetime, as `check` renders it.
        let issued = at("2023-01-20T10:00:00Z");
        assert_eq!(
            crate::agenda::local_time(&c, LeadLinkLifetime::DEFAULT.expiry(issued)),
            "Sunday 19 February 2023, 10:00 GMT"
        );
    }

    /// The retry schedule: the base doubled per failure, capped at an hour, and given up when
    /// the next attempt would not come before the meeting starts.
    #[test]
    fn the_retry_schedule_backs_off_caps_and_gives_up_at_the_meeting() {
        let now: Timestamp = "2030-06-01T09:00:00Z".parse().expect("instant");
        let far: Timestamp = "2030-07-01T09:00:00Z".parse().expect("instant");
        let s = SignedDuration::from_secs;
        let at = |secs| Retry::At(now.checked_add(s(secs)).expect("instant"));
        let table = [
            // (base, failures, meeting start, expected)
            (s(30), 1, far, at(30)),
            (s(30), 2, far, at(60)),
            (s(30), 3, far, at(120)),
            (s(30), 7, far, at(1920)),
            (s(30), 8, far, at(3600)),
            (s(30), 9, far, at(3600)),
            (s(30), 40, far, at(3600)),
            (s(30), u32::MAX, far, at(3600)),
            (s(1), 1, far, at(1)),
            (s(1), 4, far, at(8)),
            (s(7200), 1, far, at(3600)),
            // The next attempt just before the start, at it, after it; the meeting started.
            (s(30), 1, now.checked_add(s(31)).expect("instant"), at(30)),
            (
                s(30),
                1,
                now.checked_add(s(30)).expect("instant"),
                Retry::GiveUp,
            ),
            (
                s(30),
                3,
                now.checked_add(s(100)).expect("instant"),
                Retry::GiveUp,
            ),
            (s(30), 1, now, Retry::GiveUp),
            (
                s(30),
                1,
                "2030-05-01T09:00:00Z".parse().expect("instant"),
                Retry::GiveUp,
            ),
        ];
        for (base, failures, start, expected) in table {
            assert_eq!(
                after_failure(base, failures, now, start),
                expected,
                "base {base}, failure {failures}, meeting at {start}"
            );
        }
    }

    /// The Message-ID's domain is ASCII: punycode for an internationalised one.
    #[test]
    fn the_message_id_domain_is_ascii() {
        for (domain, ascii) in [
            ("example.org", "example.org"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("Straße.de", "xn--strae-oqa.de"),
            ("[127.0.0.1]", "[127.0.0.1]"),
        ] {
            assert_eq!(
                crate::mail::compose::ascii_domain(domain),
                ascii,
                "{domain}"
            );
        }
    }
}
