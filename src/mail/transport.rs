//! How a composed message leaves: written to the outbox directory, or delivered over SMTP.
//!
//! This is the mail module's I/O edge. Every SMTP send is bounded by a timeout of our own
//! (lettre's own timeout covers single reads and writes, not a whole conversation). Failures are
//! classified for the scheduler: a 5xx reply to the message itself (MAIL FROM, RCPT TO, DATA) is
//! [`SendClass::Permanent`]; a 4xx reply, a refused or dropped connection, a TLS failure and a
//! timeout are [`SendClass::Transient`]. A fault while setting up the connection, before MAIL
//! FROM (the greeting, EHLO, TLS, STARTTLS, AUTH), is transient whatever its reply code, 5xx
//! included (a rotated password answers 535): it says nothing about the message, so the mail is
//! retried with the normal backoff until an operator fixes the relay settings or the password,
//! rather than lost. Such a fault is logged as a setup fault at error level, naming the step.
//! So is a relay that lacks an extension the message needs (SMTPUTF8, 8BITMIME).
//!
//! A recipient the server refuses for good (5xx to its RCPT TO) does not fail the message for
//! the others: it goes to every recipient the server accepted, and the refused ones are logged
//! and named in the [`Delivery`] (see [`super::smtp`]). Only when every recipient is refused is
//! the failure permanent. A recipient put off (4xx to its RCPT TO) is left out the same way:
//! the message goes to the others, and the send reports a transient failure naming the
//! recipients that got it ([`SendError::done`]), so the retry goes only to the rest
//! ([`Transport::send_except`]) and nobody gets the message twice. One list address that
//! answers 451 for days no longer holds the mail back from every other list. A retry whose
//! recipients left are all refused for good succeeds ([`Delivery::Earlier`]): the message
//! reached the others before, as a first attempt with the same refusals would have.
//!
//! A message is the server's once it has answered 250 to the end of DATA. A connection dropped
//! between our final "." and that 250 reports a transient failure although the server may have
//! accepted the message: the retry then delivers it twice, with the same Message-ID, which
//! receiving systems can use to drop the copy.

use std::{
    borrow::Cow,
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lettre::{
    Message,
    address::Envelope,
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, TlsParameters},
    },
};

use super::smtp::{Accepted, Failure, Relay, Security, SetupStage};
use crate::model::{MailSettings, PasswordSource, SmtpSettings, TlsMode, TransportSettings};

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP password could not be read.
    #[error("cannot read the SMTP password from {source_desc}: {message}")]
    Password {
        /// Where it was looked for.
        source_desc: String,
        /// What went wrong.
        message: String,
    },
    /// A user is configured but no password source.
    #[error("[mail.smtp] has a user but no password source")]
    NoPassword,
    /// The extra CA file could not be read or parsed.
    #[error("cannot use CA file {}: {message}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The TLS settings were refused.
    #[error("TLS setup for {host} failed: {message}")]
    Tls {
        /// The relay.
        host: String,
        /// What went wrong.
        message: String,
    },
    /// The outbox directory could not be created.
    #[error("cannot create outbox {}: {message}", path.display())]
    Outbox {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Whether a failed send may succeed later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendClass {
    /// Retry with backoff: 4xx, refused or dropped connection, TLS failure, timeout, and any
    /// fault setting up the connection (greeting, EHLO, STARTTLS, AUTH), 5xx included.
    Transient,
    /// Do not retry: the server answered 5xx to MAIL FROM or DATA, or to the RCPT TO of every
    /// recipient (or the message cannot be written at all).
    Permanent,
}

/// A failed send, with the server's reply text when there was one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} failure: {message}", match class { SendClass::Transient => "transient", SendClass::Permanent => "permanent" })]
pub struct SendError {
    /// Transient or permanent.
    pub class: SendClass,
    /// What happened, including the server's reply code and text.
    pub message: String,
    /// The recipients that got the message although the send as a whole failed (the server
    /// took it for them while it put others off with a 4xx). A retry leaves them out
    /// ([`Transport::send_except`]). Empty unless some recipients were taken and others put
    /// off.
    pub done: Vec<String>,
}

impl SendError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            class: SendClass::Transient,
            message: message.into(),
            done: Vec::new(),
        }
    }
}

/// A successful send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The SMTP server accepted the message.
    Smtp {
        /// The reply code, such as `250`.
        code: String,
        /// The reply text.
        reply: String,
        /// The recipients the server refused for good, each with its reply (`a@b.org: 550
        /// ...`): the message went to every other recipient, not to these.
        refused: Vec<String>,
    },
    /// The message was written to this file.
    File {
        /// The `.eml` file.
        path: PathBuf,
    },
    /// Nothing more was sent: earlier attempts got the message to some recipients, and the
    /// recipients left were refused for good now (or taken out of the config meanwhile).
    Earlier {
        /// The recipients left that the server refused for good, each with its reply.
        refused: Vec<String>,
    },
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Smtp {
                code,
                reply,
                refused,
            } => {
                write!(f, "{code} {reply}")?;
                if !refused.is_empty() {
                    write!(f, "; not sent to {} refused for good: ", refused.len())?;
                    f.write_str(&refused.join("; "))?;
                }
                Ok(())
            }
            Self::File { path } => write!(f, "written to {}", path.display()),
            Self::Earlier { refused } => {
                f.write_str("the others had it from earlier attempts")?;
                if !refused.is_empty() {
                    write!(f, "; not sent to {} refused for good: ", refused.len())?;
                    f.write_str(&refused.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

/// The configured transport.
pub enum Transport {
    /// One `.eml` per message in `<state_dir>/outbox`.
    File {
        /// The outbox directory.
        outbox: PathBuf,
    },
    /// SMTP to the relay, on connections kept for reuse ([`super::smtp`]).
    Smtp {
        /// The relay and its kept connections.
        client: Arc<Relay>,
        /// The bound on every send.
        timeout: Duration,
        /// `host:port`, for messages.
        relay: String,
    },
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { outbox } => f.debug_struct("File").field("outbox", outbox).finish(),
            Self::Smtp { relay, timeout, .. } => f
                .debug_struct("Smtp")
                .field("relay", relay)
                .field("timeout", timeout)
                .finish_non_exhaustive(),
        }
    }
}

impl Transport {
    /// Sets up the transport the settings name. Reads the password and the CA file now (the
    /// edge), and creates the outbox directory for the file transport. Opens no connection.
    pub fn from_settings(settings: &MailSettings, state_dir: &Path) -> Result<Self, MailError> {
        match &settings.transport {
            TransportSettings::File => {
                let outbox = state_dir.join("outbox");
                std::fs::create_dir_all(&outbox).map_err(|e| MailError::Outbox {
                    path: outbox.clone(),
                    message: e.to_string(),
                })?;
                Ok(Self::File { outbox })
            }
            TransportSettings::Smtp(s) => smtp(s),
        }
    }

    /// Sends one message to every recipient of its envelope: to the relay, or into the outbox.
    pub async fn send(&self, message: &Message) -> Result<Delivery, SendError> {
        self.send_except(message, &[]).await
    }

    /// Sends one message to the recipients of its envelope except those in `done` (addresses
    /// earlier attempts got it to, [`SendError::done`]; the domain compared without regard to
    /// ASCII case, the local part exactly, as RFC 5321 2.4 has it): to the relay, or into the
    /// outbox, which writes the message once, whole (so a reload from SMTP to the file
    /// transport between two attempts writes it for everyone). When earlier attempts got it to
    /// a recipient of this message, recipients left that are all refused for good end the mail
    /// as delivered ([`Delivery::Earlier`]), not as a failure; when none of its recipients had
    /// it (the list changed meanwhile), that is a permanent failure as on a first attempt.
    pub async fn send_except(
        &self,
        message: &Message,
        done: &[String],
    ) -> Result<Delivery, SendError> {
        match self {
            Self::File { outbox } => write_eml(outbox, message).await,
            Self::Smtp {
                client,
                timeout,
                relay,
            } => {
                // `reached_before`: some recipient of this very envelope had it already.
                let (envelope, reached_before) = match remaining(message.envelope(), done) {
                    Remaining::All => (Cow::Borrowed(message.envelope()), false),
                    Remaining::Some(envelope) => (Cow::Owned(envelope), true),
                    Remaining::None => {
                        return Ok(Delivery::Earlier {
                            refused: Vec::new(),
                        });
                    }
                };
                let bytes = message.formatted();
                let sending = client.send(&envelope, &bytes);
                match tokio::time::timeout(*timeout, sending).await {
                    Err(_) => Err(SendError::transient(format!(
                        "{relay} did not finish within {}s",
                        timeout.as_secs_f64()
                    ))),
                    Ok(Err(Failure::Connect(e))) => Err(SendError::transient(format!(
                        "{relay}: cannot connect: {e}"
                    ))),
                    Ok(Err(Failure::Setup { stage, error })) => {
                        Err(setup_fault(stage, &error, relay))
                    }
                    Ok(Err(Failure::Smtp(e))) => Err(classify(&e, relay)),
                    Ok(Err(Failure::Refused(refused))) if reached_before => {
                        let refused = each_refusal(&refused);
                        let message_id =
                            message.headers().get_raw("Message-ID").unwrap_or_default();
                        tracing::warn!(
                            relay,
                            message_id,
                            refused = %refused.join("; "),
                            "the relay refused the recipients left for good; the others had \
                             the message from earlier attempts"
                        );
                        Ok(Delivery::Earlier { refused })
                    }
                    Ok(Err(Failure::Refused(refused))) => Err(SendError {
                        class: SendClass::Permanent,
                        message: format!(
                            "{relay}: every recipient was refused: {}",
                            describe(&refused)
                        ),
                        done: Vec::new(),
                    }),
                    Ok(Err(Failure::Deferred { deferred, refused })) => {
                        let mut message = format!(
                            "{relay}: no recipient was taken: put off: {}",
                            describe(&deferred)
                        );
                        if !refused.is_empty() {
                            message += &format!("; refused for good: {}", describe(&refused));
                        }
                        Err(SendError::transient(message))
                    }
                    Ok(Err(Failure::Unsupported(what))) => Err(unsupported(what, relay)),
                    Ok(Ok(accepted)) if !accepted.deferred.is_empty() => {
                        Err(partly_delivered(accepted, message, relay))
                    }
                    Ok(Ok(accepted)) => Ok(delivered(accepted, message, relay)),
                }
            }
        }
    }

    /// SMTP connections kept open for reuse now (0 for the file transport).
    pub fn idle_connections(&self) -> usize {
        match self {
            Self::File { .. } => 0,
            Self::Smtp { client, .. } => client.idle_connections(),
        }
    }
}

/// A connection that could not be set up for sending: transient, whatever the reply code, and
/// logged for the operator. lettre reports a 5xx to AUTH (535, 530, 534) or to the greeting or
/// EHLO (554) as a permanent error (`Error::is_permanent`), but it is not the message's fault:
/// every mail would fail the same way until the settings or the password are fixed. The step
/// comes from where [`Relay`] got the error ([`SetupStage`]), not from lettre's error.
fn setup_fault(stage: SetupStage, e: &lettre::transport::smtp::Error, relay: &str) -> SendError {
    let fix = match stage {
        SetupStage::Auth => "check [mail.smtp] user and the password",
        SetupStage::Tls | SetupStage::StartTls => "check [mail.smtp] tls, port and ca_file",
        SetupStage::GreetingOrEhlo => "check [mail.smtp] host and port, and the relay",
    };
    tracing::error!(
        relay,
        stage = %stage,
        error = %e,
        "SMTP setup fault: the relay refused {stage}; nothing can be sent until it is fixed \
         ({fix}); due mail is retried with backoff meanwhile"
    );
    SendError::transient(format!(
        "{relay}: connection setup failed at {stage} ({fix}; retried until fixed): {e}"
    ))
}

/// A message the server took, some recipients perhaps refused: those are logged for the
/// operator (an address in `[mail] list` or a lead's that no longer exists needs fixing in the
/// config), and named in the delivery the ledger records.
fn delivered(accepted: Accepted, message: &Message, relay: &str) -> Delivery {
    let refused = each_refusal(&accepted.refused);
    if !refused.is_empty() {
        let message_id = message.headers().get_raw("Message-ID").unwrap_or_default();
        tracing::warn!(
            relay,
            message_id,
            refused = %refused.join("; "),
            "the relay refused some recipients for good; the message went to the others \
             (fix or remove the refused addresses in the config)"
        );
    }
    Delivery::Smtp {
        code: accepted.response.code().to_string(),
        reply: accepted.response.message().collect::<Vec<_>>().join(" "),
        refused,
    }
}

/// What is left of an envelope once the recipients in `done` are taken out.
enum Remaining {
    /// None of its recipients had it: the envelope as it is.
    All,
    /// The envelope to the recipients left.
    Some(Envelope),
    /// Nobody is left.
    None,
}

fn remaining(envelope: &Envelope, done: &[String]) -> Remaining {
    if done.is_empty() {
        return Remaining::All;
    }
    let is_done = |a: &lettre::Address| done.iter().any(|d| same_mailbox(d, a));
    let left: Vec<lettre::Address> = (envelope.to().iter())
        .filter(|a| !is_done(a))
        .cloned()
        .collect();
    if left.len() == envelope.to().len() {
        return Remaining::All;
    }
    // `Envelope::new` refuses only an empty recipient list, which is handled here.
    match Envelope::new(envelope.from().cloned(), left) {
        Ok(envelope) => Remaining::Some(envelope),
        Err(_) => Remaining::None,
    }
}

/// Whether `stored` (an address as [`SendError::done`] recorded it) is `address`: the local part
/// compared exactly, the domain without regard to ASCII case (RFC 5321 2.4).
fn same_mailbox(stored: &str, address: &lettre::Address) -> bool {
    stored.rsplit_once('@').is_some_and(|(user, domain)| {
        user == address.user() && domain.eq_ignore_ascii_case(address.domain())
    })
}

/// A message the server took for some recipients while it put others off (4xx): a transient
/// failure that names the recipients that got it, so the retry goes to the others only (those
/// refused for good are offered again and refused again, which costs one RCPT).
fn partly_delivered(accepted: Accepted, message: &Message, relay: &str) -> SendError {
    let message_id = message.headers().get_raw("Message-ID").unwrap_or_default();
    let taken: Vec<String> = (accepted.accepted.iter())
        .map(|a| AsRef::<str>::as_ref(a).to_owned())
        .collect();
    let put_off = describe(&accepted.deferred);
    tracing::warn!(
        relay,
        message_id,
        delivered_to = %taken.join(", "),
        put_off = %put_off,
        "the relay took the message for some recipients and put others off; they get it at \
         the retry"
    );
    let mut text = format!(
        "{relay}: put off: {put_off}; delivered to {} ({} {})",
        taken.join(", "),
        accepted.response.code(),
        accepted.response.message().collect::<Vec<_>>().join(" ")
    );
    if !accepted.refused.is_empty() {
        text += &format!("; refused for good: {}", describe(&accepted.refused));
    }
    SendError {
        class: SendClass::Transient,
        message: text,
        done: taken,
    }
}

/// Each refused recipient with the server's reply, for a message.
fn describe(refused: &[(lettre::Address, lettre::transport::smtp::Error)]) -> String {
    each_refusal(refused).join("; ")
}

/// Each refused recipient as `address: the server's reply`.
fn each_refusal(refused: &[(lettre::Address, lettre::transport::smtp::Error)]) -> Vec<String> {
    (refused.iter())
        .map(|(address, e)| format!("{address}: {e}"))
        .collect()
}

/// A message that needs an extension the relay does not offer: transient, like a setup fault
/// (a relay's settings, not the message, are at fault, and ops can fix them before the meeting),
/// and logged for the operator.
fn unsupported(what: &str, relay: &str) -> SendError {
    tracing::error!(
        relay,
        "the relay does not offer {what}; the mail is retried with backoff until it does"
    );
    SendError::transient(format!("{relay}: the relay does not offer {what}"))
}

/// A failure of the message itself on a set-up connection: lettre's permanent errors (5xx to
/// MAIL FROM, RCPT TO or DATA) are permanent, everything else transient.
fn classify(e: &lettre::transport::smtp::Error, relay: &str) -> SendError {
    let class = if e.is_permanent() {
        SendClass::Permanent
    } else {
        SendClass::Transient
    };
    SendError {
        class,
        message: format!("{relay}: {e}"),
        done: Vec::new(),
    }
}

fn smtp(s: &SmtpSettings) -> Result<Transport, MailError> {
    let timeout = s.timeout.unsigned_abs();
    let tls_err = |e: lettre::transport::smtp::Error| MailError::Tls {
        host: s.host.clone(),
        message: e.to_string(),
    };
    let params = || -> Result<TlsParameters, MailError> {
        let mut p = TlsParameters::builder(s.host.clone());
        if let Some(path) = &s.ca_file {
            let pem = std::fs::read(path).map_err(|e| MailError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| MailError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            p = p.add_root_certificate(cert);
        }
        p.build_rustls().map_err(tls_err)
    };
    let security = match s.tls {
        TlsMode::Implicit => Security::Implicit(params()?),
        TlsMode::StartTls => Security::StartTls(params()?),
        // Config validation accepts plaintext only for a loopback relay, and only when asked.
        TlsMode::Plaintext => Security::Plaintext,
    };
    let credentials = match &s.user {
        Some(user) => {
            let password = read_password(&s.password)?.ok_or(MailError::NoPassword)?;
            Some(Credentials::new(user.clone(), password))
        }
        None => None,
    };
    let client = Relay::new(s.host.clone(), s.port, timeout, security, credentials);
    Ok(Transport::Smtp {
        client: Arc::new(client),
        timeout,
        relay: format!("{}:{}", s.host, s.port),
    })
}

/// Reads the SMTP password from where the config says; `None` for no authentication.
pub fn read_password(source: &PasswordSource) -> Result<Option<String>, MailError> {
    let from_file = |path: &Path, desc: String| -> Result<Option<String>, MailError> {
        let text = std::fs::read_to_string(path).map_err(|e| MailError::Password {
            source_desc: desc,
            message: e.to_string(),
        })?;
        Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
    };
    match source {
        PasswordSource::None => Ok(None),
        PasswordSource::File(path) => from_file(path, format!("file {}", path.display())),
        PasswordSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
            let path = credential_path(name, dir.as_deref())?;
            from_file(&path, credential_desc(name))
        }
        PasswordSource::Env(var) => std::env::var(var)
            .map(Some)
            .map_err(|e| MailError::Password {
                source_desc: format!("environment variable {var}"),
                message: e.to_string(),
            }),
    }
}

fn credential_desc(name: &str) -> String {
    format!("systemd credential `{name}`")
}

/// Where systemd put the credential `name`: in `credentials_directory`, the process's
/// `$CREDENTIALS_DIRECTORY`. systemd sets that only inside a unit that loads a credential, so
/// without it the error says what to do both in the service (a `LoadCredential=` drop-in) and
/// in a shell, where it is never set: run the command under systemd with the credential, or
/// name the password another way for a one-off.
pub fn credential_path(
    name: &str,
    credentials_directory: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, MailError> {
    let dir = credentials_directory.ok_or_else(|| MailError::Password {
        source_desc: credential_desc(name),
        message: format!(
            "$CREDENTIALS_DIRECTORY is not set. systemd sets it only inside a unit that loads \
             the credential: for the service, LoadCredential={name}:<file> in its drop-in (see \
             the README, \"Credentials\"). A shell never has it: run the command under systemd \
             with the credential, as in `sudo systemd-run --pipe --wait --quiet -p \
             LoadCredential={name}:/etc/convenor/{name} convenor send-test --config \
             /etc/convenor/convenor.toml --to ADDR`, or, for a one-off, give the password with \
             password_file or password_env in a copy of the config"
        ),
    })?;
    Ok(Path::new(dir).join(name))
}

/// The outbox file name for a Message-ID: the id without brackets, with anything but
/// `A-Z a-z 0-9 . - _ @ +` replaced by `_`.
pub fn eml_file_name(message_id: &str) -> String {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let safe: String = inner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.eml", safe.trim_start_matches('.'))
}

/// Writes the message to `<outbox>/<message-id>.eml` atomically: a temp file in the same
/// directory, synced, then renamed over the final name (a retry of the same message replaces
/// its own file), then the directory synced.
async fn write_eml(outbox: &Path, message: &Message) -> Result<Delivery, SendError> {
    let id = message
        .headers()
        .get_raw("Message-ID")
        .map(str::to_owned)
        .ok_or_else(|| SendError {
            class: SendClass::Permanent,
            message: "the message has no Message-ID to name its file".into(),
            done: Vec::new(),
        })?;
    let name = eml_file_name(&id);
    let bytes = message.formatted();
    let outbox = outbox.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> io::Result<PathBuf> {
        use std::io::Write as _;
        let path = outbox.join(&name);
        let tmp = outbox.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&outbox)?.sync_all()?;
        Ok(path)
    })
    .await;
    match result {
        Ok(Ok(path)) => Ok(Delivery::File { path }),
        Ok(Err(e)) => Err(SendError::transient(format!("writing to the outbox: {e}"))),
        Err(e) => Err(SendError::transient(format!("outbox writer failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eml_names_are_safe_file_names() {
        assert_eq!(
            eml_file_name("<2023-02-24.agenda-call.0.ab12@example.org>"),
            "2023-02-24.agenda-call.0.ab12@example.org.eml"
        );
        assert_eq!(eml_file_name("<../../etc/x@y>"), "_.._etc_x@y.eml");
    }

    /// A shell has no `$CREDENTIALS_DIRECTORY`: the error says how to run the command with the
    /// credential from there, not only how to fix the unit.
    #[test]
    fn a_credential_without_its_directory_says_how_to_load_it_from_a_shell() {
        let err = credential_path("smtp-password", None).expect_err("no directory");
        let text = err.to_string();
        for part in [
            "cannot read the SMTP password from systemd credential `smtp-password`",
            "LoadCredential=smtp-password:<file> in its drop-in",
            "sudo systemd-run --pipe --wait --quiet -p \
             LoadCredential=smtp-password:/etc/convenor/smtp-password convenor send-test",
            "password_file or password_env",
        ] {
            assert!(text.contains(part), "`{part}` not in: {text}");
        }
        assert_eq!(
            credential_path(
                "smtp-password",
                Some(std::ffi::OsStr::new("/run/credentials/x"))
            )
            .expect("path"),
            Path::new("/run/credentials/x/smtp-password")
        );
    }
}
