//! Meeting mail: templates to a `lettre::Message`, and the transports that deliver it.
//!
//! - [`context`]: what templates see (pure), including the agenda and lead deadlines.
//! - [`templates`]: loading, rendering and error positions; [`check`]: render everything up front.
//! - [`compose`](mod@compose): one scheduled mail as a MIME message with the meeting's calendar (pure).
//! - [`transport`]: the outbox directory or SMTP, with transient/permanent failure classes;
//!   [`smtp`]: SMTP connections with `TCP_NODELAY`, kept for reuse (a lettre workaround).

pub mod check;
pub mod compose;
pub mod context;
pub mod smtp;
pub mod templates;
pub mod transport;

pub use check::CheckReport;
pub use compose::{ComposeError, ComposeInput, compose, message_id, render, test_message};
pub use context::Context;
pub use templates::{Rendered, TemplateError, Templates};
pub use transport::{Delivery, MailError, SendClass, SendError, Transport};
