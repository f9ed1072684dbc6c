//! STAND-IN SENDER, to be replaced at merge by the mail module's `compose` + `Transport`.
//!
//! [`Outbox`] is the narrow interface the scheduler loop sends through. [`LettreOutbox`] is a
//! deliberately small real implementation so the scheduler can be tested end to end: a plain
//! text message carrying the row's Message-ID, written as an `.eml` file under
//! `<state>/outbox` (`transport = "file"`) or handed to an SMTP server with lettre.
//! It renders no templates.

use std::{future::Future, path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};

use super::decide::SendFailure;
use crate::{
    ledger::LedgerRow,
    model::{Config, EmailId, MeetingId, PasswordSource, PriorityId, TlsMode, TransportSettings},
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

/// The stand-in sender (see the module docs).
#[derive(Clone, Debug)]
pub struct LettreOutbox {
    /// The state directory (`.eml` files go to its `outbox` sub-directory).
    pub state_dir: PathBuf,
}

fn permanent(message: impl Into<String>) -> SendFailure {
    SendFailure {
        transient: false,
        message: message.into(),
    }
}

fn transient(message: impl Into<String>) -> SendFailure {
    SendFailure {
        transient: true,
        message: message.into(),
    }
}

/// Builds the stand-in plain text message of a row.
pub fn build_message(row: &LedgerRow, config: &Config) -> Result<Message, SendFailure> {
    let key = &row.key;
    let meeting = MeetingId::parse(&key.meeting)
        .ok()
        .and_then(|id| config.meeting(&id))
        .ok_or_else(|| permanent(format!("meeting `{}` is not in the config", key.meeting)))?;
    let rule = EmailId::parse(&key.email)
        .ok()
        .and_then(|id| config.email(&id))
        .ok_or_else(|| permanent(format!("email `{}` is not in the schedule", key.email)))?;
    let to: Vec<Mailbox> = if key.audience == "list" {
        config.mail.list.clone()
    } else {
        let lead = key
            .audience
            .strip_prefix("lead:")
            .and_then(|p| PriorityId::parse(p).ok())
            .and_then(|p| config.priority(&p))
            .ok_or_else(|| permanent(format!("no recipient for `{}`", key.audience)))?;
        vec![lead.lead.email.clone()]
    };
    let mut builder = Message::builder()
        .from(config.mail.from.clone())
        .message_id(Some(row.message_id.clone()))
        .subject(format!(
            "{}: {} ({} {})",
            config.network.short_name, meeting.title, rule.id, meeting.date
        ));
    for mailbox in to {
        builder = builder.to(mailbox);
    }
    let body = format!(
        "{} on {} at {}.\n\nKey: {}\nMessage-ID: {}\n",
        meeting.title,
        meeting.date,
        meeting.start.strftime("%H:%M"),
        key,
        row.message_id
    );
    builder
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| permanent(format!("cannot build the message: {e}")))
}

fn password(source: &PasswordSource) -> Result<Option<String>, SendFailure> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|e| {
                transient(format!(
                    "cannot read the SMTP password {}: {e}",
                    path.display()
                ))
            })
    };
    match source {
        PasswordSource::None => Ok(None),
        PasswordSource::File(p) => read(p.clone()),
        PasswordSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| transient("$CREDENTIALS_DIRECTORY is not set"))?;
            read(PathBuf::from(dir).join(name))
        }
        PasswordSource::Env(var) => std::env::var(var)
            .map(Some)
            .map_err(|_| transient(format!("${var} is not set"))),
    }
}

impl Outbox for LettreOutbox {
    async fn deliver(&self, row: &LedgerRow, config: &Config) -> Result<String, SendFailure> {
        let message = build_message(row, config)?;
        match &config.mail.transport {
            TransportSettings::File => {
                let dir = self.state_dir.join("outbox");
                let name: String = row
                    .message_id
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = dir.join(format!("{name}.eml"));
                let tmp = dir.join(format!(".{name}.tmp"));
                let io = |e: std::io::Error| transient(format!("{}: {e}", path.display()));
                tokio::fs::create_dir_all(&dir).await.map_err(io)?;
                tokio::fs::write(&tmp, message.formatted())
                    .await
                    .map_err(io)?;
                tokio::fs::rename(&tmp, &path).await.map_err(io)?;
                Ok(format!("written to {}", path.display()))
            }
            TransportSettings::Smtp(s) => {
                let builder = match s.tls {
                    TlsMode::Plaintext => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    }
                    TlsMode::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                        .map_err(|e| permanent(e.to_string()))?,
                    TlsMode::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                            .map_err(|e| permanent(e.to_string()))?
                    }
                };
                let timeout = s.timeout.unsigned_abs();
                let mut builder = builder.port(s.port).timeout(Some(timeout));
                if let (Some(user), Some(pass)) = (&s.user, password(&s.password)?) {
                    builder = builder.credentials(Credentials::new(user.clone(), pass));
                }
                let transport = builder.build();
                // lettre's own timeout covers each read and write, not the whole conversation.
                let bound = timeout + Duration::from_secs(5);
                match tokio::time::timeout(bound, transport.send(message)).await {
                    Err(_) => Err(transient(format!(
                        "no answer from {} within {bound:?}",
                        s.host
                    ))),
                    Ok(Err(e)) => Err(SendFailure {
                        transient: !e.is_permanent(),
                        message: e.to_string(),
                    }),
                    Ok(Ok(response)) => Ok(format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    )),
                }
            }
        }
    }
}
