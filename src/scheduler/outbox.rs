//! The scheduler's sender: renders a claimed ledger row with the mail module and hands it to
//! the configured transport.
//!
//! [`Outbox`] is the narrow interface the loop sends through; [`MailOutbox`] implements it with
//! [`mail::compose()`] and [`mail::Transport`]. The row's stored Message-ID is used as it is, so
//! every retry of one mail carries the same Message-ID. Templates and transport are swapped as
//! one on reload ([`MailOutbox::replace`]).
//!
//! A mail is composed from the config in force when it is composed, read under the store lock
//! together with the meeting's revision and the templates: a reload or an agenda change
//! publishes its config (and a reload its templates and transport) while it still holds the
//! store lock it replanned under, so the meeting, its SEQUENCE and the templates of one mail
//! always come from the same plan, even when the change lands in the middle of a pass.

use std::{
    future::Future,
    sync::{Arc, PoisonError, RwLock},
};

use jiff::Timestamp;
use tokio::sync::watch;

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
    /// Builds and delivers the mail of `row` as configured by the config in force (`config`),
    /// read when the mail is composed: under the store lock, where reloads and agenda changes
    /// publish a config together with the plan they wrote for it.
    fn deliver(
        &self,
        row: &LedgerRow,
        config: &watch::Receiver<Arc<Config>>,
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
        done: Vec::new(),
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

    /// Swaps in the templates and transport of a reloaded config. A reload does it under the
    /// store lock, beside publishing the config, so no mail meets new templates with the old
    /// config or the reverse.
    pub fn replace(&self, parts: MailParts) {
        *self.parts.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(parts);
    }

    /// The templates and transport in force (the agenda's mail to a lead sends with them too).
    pub fn parts(&self) -> Arc<MailParts> {
        self.parts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Renders the message of `row` with the config in force (`config`) and the templates,
    /// both read under the store lock with the meeting's revision and thread (see the module
    /// docs); returns the message with the parts whose transport is to send it. No I/O but
    /// short ledger reads.
    pub fn compose(
        &self,
        row: &LedgerRow,
        config: &watch::Receiver<Arc<Config>>,
        date: Timestamp,
    ) -> Result<(lettre::Message, Arc<MailParts>), SendFailure> {
        let key = &row.key;
        let ledger = |e: crate::ledger::LedgerError| SendFailure {
            transient: true,
            message: format!("reading the ledger: {e}"),
            done: Vec::new(),
        };
        let store = lock(&self.store);
        // A reload that withdrew the mail after it was claimed (its meeting cancelled): not sent,
        // and the settle leaves the row skipped with this reason. A transient failure, not a
        // permanent one: should a reload want the mail again before the settle (the mark
        // cleared), the row is retried instead of failed for good.
        if let Some(reason) = store.withdrawn(key).map_err(ledger)? {
            return Err(SendFailure {
                transient: true,
                message: reason,
                done: Vec::new(),
            });
        }
        // Under the store lock: the config and parts published with the plan this row is in.
        let config = config.borrow().clone();
        let parts = self.parts();
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
        // One meeting's revision and thread, not the whole ledger: this runs per mail.
        let revision = store
            .revision(&meeting.id)
            .map_err(ledger)?
            .ok_or_else(|| permanent(format!("no revision stored for `{}`", meeting.id)))?;
        // A notice's occurrence is the SEQUENCE it announces; the old state is the one before,
        // or before the notices it superseded unsent (`reconcile::announced_from`): what its
        // recipients last heard.
        let before = match rule.trigger {
            Trigger::OnChange | Trigger::OnCancel if key.occurrence > 0 => {
                let notices = store.notices(key).map_err(ledger)?;
                let from = super::reconcile::announced_from(&notices, key.occurrence);
                store
                    .revision_at(&meeting.id, from)
                    .map_err(ledger)?
                    .map(|r| r.significant)
            }
            _ => None,
        };
        // Thread every mail about a meeting under the first one that went out.
        let thread_root = store
            .thread_root(&key.meeting, &row.message_id)
            .map_err(ledger)?;
        drop(store);
        // A change notice without its "before" cannot say what changed; a cancellation notice
        // still goes, showing the meeting as it is as what was planned (its templates always
        // see `change`, as `convenor check` renders them).
        let before = match (rule.trigger, before) {
            (Trigger::OnChange, None) => {
                return Err(permanent(format!(
                    "the revision before SEQUENCE {} of `{}` is not in the ledger",
                    key.occurrence, meeting.id
                )));
            }
            (Trigger::OnCancel, None) => Some(crate::revision::Significant::of(&config, meeting)),
            (_, before) => before,
        };
        let invite = feed::render_meeting_invite(&config, meeting, Some(&revision));
        let input = ComposeInput {
            config: &config,
            templates: &parts.templates,
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
        let message = mail::compose(&input)
            .map_err(|e| permanent(format!("cannot compose the message: {e}")))?;
        Ok((message, parts))
    }
}

impl<S: Store + 'static> Outbox for MailOutbox<S> {
    async fn deliver(
        &self,
        row: &LedgerRow,
        config: &watch::Receiver<Arc<Config>>,
    ) -> Result<String, SendFailure> {
        let (message, parts) = self.compose(row, config, Timestamp::now())?;
        // Recipients earlier attempts got it to are left out (see `done_recipients`).
        match parts
            .transport
            .send_except(&message, &row.done_recipients)
            .await
        {
            Ok(delivery) => Ok(delivery.to_string()),
            Err(e) => Err(SendFailure {
                transient: e.class == SendClass::Transient,
                message: e.message,
                done: e.done,
            }),
        }
    }
}

impl<O: Outbox> Outbox for Arc<O> {
    fn deliver(
        &self,
        row: &LedgerRow,
        config: &watch::Receiver<Arc<Config>>,
    ) -> impl Future<Output = Result<String, SendFailure>> + Send {
        O::deliver(self, row, config)
    }
}
