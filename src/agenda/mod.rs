//! The agenda loop: members propose items for a meeting's priorities, each priority's lead
//! decides, and the compiled agenda reaches the meeting page, the mails and the feeds.
//!
//! - [`model`] (pure): proposals, validation of the public form, the compiled agenda with
//!   running order and timings, its digest (what raises SEQUENCE) and its text.
//! - [`token`] (pure but for the random source): lead tokens (256-bit, only their SHA-256 is
//!   stored, each expiring a lifetime after it is issued) and CSRF tokens bound to a lead token.
//! - [`store`]: the SQLite file `agenda.sqlite3` in the state directory.
//! - [`notify`]: the proposal-received mail to a priority's lead (copy to the team).
//!
//! The compiled agenda travels inside [`crate::model::Config`] (`Config::agenda`, attached by
//! [`attach`] after every load), so the feed, the revisions and the mail context see it with no
//! change to their signatures.

pub mod model;
pub mod notify;

pub mod store;
pub mod token;

use std::collections::BTreeMap;

use jiff::Timestamp;

pub use model::{
    Agenda, AgendaItem, Book, FieldError, NewProposal, Proposal, ProposalForm, Status,
};
pub use store::{AgendaError, AgendaStore};

use crate::{
    ledger::{LedgerError, Store},
    model::{Config, MeetingId},
    revision::StoredRevision,
};

/// The private page of a lead token: `<base_url>/leads/<token>/`.
pub fn lead_url(config: &Config, token: &str) -> String {
    format!("{}/leads/{token}/", config.network.base_url)
}

/// `instant` in the network's time zone, for people: `Monday 9 February 2026, 10:00 GMT`.
pub fn local_time(config: &Config, instant: Timestamp) -> String {
    instant
        .to_zoned_datetime(config.network.time_zone.clone())
        .strftime("%A %-d %B %Y, %H:%M %Z")
        .to_string()
}

/// Compiles the agenda of every meeting from the store and puts it into `config`.
pub fn attach(config: &mut Config, store: &AgendaStore) -> Result<(), AgendaError> {
    let proposals = store.proposals(None)?;
    config.agenda = model::compile(config, &proposals);
    Ok(())
}

/// Why an agenda change could not be applied to the running service.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The agenda store failed.
    #[error(transparent)]
    Agenda(#[from] AgendaError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// After an agenda change: `config` with the agenda compiled afresh, reconciled with the ledger
/// at `now` (an agenda change raises the meeting's SEQUENCE, see
/// [`crate::revision::next_revision`]), and the revisions to render the feeds with. The caller
/// swaps the returned config and feeds in (the daemon does, see `crate::daemon`).
pub fn refresh<S: Store>(
    config: &Config,
    agenda: &AgendaStore,
    ledger: &mut S,
    now: Timestamp,
) -> Result<(Config, BTreeMap<MeetingId, StoredRevision>), RefreshError> {
    let mut config = config.clone();
    attach(&mut config, agenda)?;
    let revisions = crate::daemon::replan_revisions(ledger, &config, now)?;
    Ok((config, revisions))
}
