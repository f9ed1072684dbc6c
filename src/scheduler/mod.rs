//! The scheduler: a pure planning core and the loop that applies it.
//!
//! - [`reconcile`](mod@reconcile) (pure): config + stored rows + revisions + `now` -> the ledger writes (new
//!   rows, moved due instants, withdrawn mails, revisions, change notices).
//! - [`decide`](mod@decide) (pure): rows + `now` -> what to do with each due mail (send, skip, hold, fail),
//!   and what a failed attempt leads to (retry with backoff and jitter, or fail).
//! - [`run`]: the loop, which owns the clock reading, the ledger calls and the sending, stops
//!   claiming mail once told to stop, and reports each send and each pass to its observer.
//! - [`outbox`]: the narrow sending interface, with a small stand-in sender.

pub mod decide;
pub mod outbox;
pub mod reconcile;
pub mod run;

pub use decide::{Action, SendFailure, after_failure, backoff, decide, next_wake};
pub use outbox::{MailOutbox, MailParts, Outbox};
pub use reconcile::{Reconciled, reconcile};
pub use run::{Clock, LoopEvent, Scheduler, SharedStore, SystemClock};

#[cfg(test)]
mod tests;
