//! The scheduler's sender: renders a claimed ledger row with the mail module and hands it to
//! the configured transport.
//!
//! [`Outbox`] is the narrow interface the loop sends through; [`MailOutbox`] implements it with
//! [`mail::compose()`] and [`mail::Transport`]. The row's stored Message-ID is used as it is, so
//! every retry of one mail carries the same Message-ID. Templates and transport are swapped as
//! one on reload ([`MailOutbox::replace`]).

use std::{
    future::Future,
    sync::{Arc, PoisonError, RwLock},
};

use jiff::Timestamp;

use super::{SharedStore, decide::SendFailure, run::lock};
use crate::{
    feed,
    ledger::{LedgerRow, Store},
    mail::{self, ComposeInput, SendClass, Templates, Transport},
    model::{Config, EmailId, MeetingId, Trigger},
    schedule::Recipient,
};

/// Where the scheduler hands a claimed mail; returns the server's reply to the end of DATA.
pub trait Outbox: Send + Sync + 'static {
    /// Builds and delivers the mail of `row` as configured by `config`.
    fn deliver(
        &self,
        row: &LedgerRow,
        config: &Config,
    ) -> impl Future<Output = Result<String, SendFailure>> + Send;
}

/// What rendering and sending need besides the config: swapped together on reload.
pub struct MailParts {
    /// The loaded templates.
    pub templates: Templates,
    /// The transport built from the config's mail settings.
    pub transport: Transport,
}

/// The real sender (see the module docs).
pub struct MailOutbox<S> {
    store: SharedStore<S>,
    parts: RwLock<Arc<MailParts>>,
}

fn permanent(message: impl Into<String>) -> SendFailure {
    SendFailure {
        transient: false,
        message: message.into(),
    }
}

impl<S: Store> MailOutbox<S> {
    /// A sender over `store` (for revisions and threading) with these templates and transport.
    pub fn new(store: SharedStore<S>, parts: MailParts) -> Self {
        Self {
            store,
            parts: RwLock::new(Arc::new(parts)),
        }
    }

    /// Swaps in the templates and transport of a reloaded config.
    pub fn replace(&self, parts: MailParts) {
        *self.parts.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(parts);
    }

    fn parts(&self) -> Arc<MailParts> {
        self.parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Renders the message of `row` (no I/O but short ledger reads).
    pub fn compose(
        &self,
        row: &LedgerRow,
        config: &Config,
        templates: &Templates,
        date: Timestamp,
    ) -> Result<lettre::Message, SendFailure> {
        let key = &row.key;
        let meeting = MeetingId::parse(&key.meeting)
            .ok()
            .and_then(|id| config.meeting(&id))
            .ok_or_else(|| permanent(format!("meeting `{}` is not in the config", key.meeting)))?;
        let rule = EmailId::parse(&key.email)
            .ok()
            .and_then(|id| config.email(&id))
            .ok_or_else(|| permanent(format!("email `{}` is not in the schedule", key.email)))?;
        let recipient = Recipient::from_key(&key.audience)
            .ok_or_else(|| permanent(format!("unknown recipient `{}`", key.audience)))?;
        let ledger = |e: crate::ledger::LedgerError| SendFailure {
            transient: true,
            message: format!("reading the ledger: {e}"),
        };
        let (revision, before, thread_root) = {
            let store = lock(&self.store);
            // One meeting's revision and thread, not the whole ledger: this runs per mail.
            let revision = store
                .revision(&meeting.id)
                .map_err(ledger)?
                .ok_or_else(|| permanent(format!("no revision stored for `{}`", meeting.id)))?;
            // A notice's occurrence is the SEQUENCE it announces; the one before is the old state.
            let before = match rule.trigger {
                Trigger::OnChange | Trigger::OnCancel if key.occurrence > 0 => store
                    .revision_at(&meeting.id, key.occurrence - 1)
                    .map_err(ledger)?
                    .map(|r| r.significant),
                _ => None,
            };
            // Thread every mail about a meeting under the first one that went out.
            let thread_root = store
                .thread_root(&key.meeting, &row.message_id)
                .map_err(ledger)?;
            (revision, before, thread_root)
        };
        if rule.trigger == Trigger::OnChange && before.is_none() {
            return Err(permanent(format!(
                "the revision before SEQUENCE {} of `{}` is not in the ledger",
                key.occurrence, meeting.id
            )));
        }
        let invite = feed::render_meeting_invite(config, meeting, Some(&revision));
        let input = ComposeInput {
            config,
            templates,
            meeting,
            rule,
            recipient: &recipient,
            revision: &revision,
            message_id: &row.message_id,
            thread_root: thread_root.as_deref(),
            date,
            change: before.as_ref(),
            invite_ics: &invite,
        };
        mail::compose(&input).map_err(|e| permanent(format!("cannot compose the message: {e}")))
    }
}

impl<S: Store + 'static> Outbox for MailOutbox<S> {
    async fn deliver(&self, row: &LedgerRow, config: &Config) -> Result<String, SendFailure> {
        let parts = self.parts();
        let message = self.compose(row, config, &parts.templates, Timestamp::now())?;
        match parts.transport.send(&message).await {
            Ok(delivery) => Ok(delivery.to_string()),
            Err(e) => Err(SendFailure {
                transient: e.class == SendClass::Transient,
                message: e.message,
            }),
        }
    }
}

impl<O: Outbox> Outbox for Arc<O> {
    fn deliver(
        &self,
        row: &LedgerRow,
        config: &Config,
    ) -> impl Future<Output = Result<String, SendFailure>> + Send {
        O::deliver(self, row, config)
    }
}
