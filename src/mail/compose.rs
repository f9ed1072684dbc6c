//! Composing one scheduled mail: templates and meeting to a `lettre::Message` (pure).
//!
//! The shape (calendar-and-mail facts): `multipart/mixed` holding a `multipart/alternative`
//! (text/plain, text/html, text/calendar; method=PUBLISH) and the same calendar as a
//! `meeting.ics` attachment; calendar parts are base64. Headers: From, To (the list, or the lead),
//! Reply-To, Subject, Date (passed in, never read from the clock), our own Message-ID,
//! In-Reply-To and References to the meeting's thread root, and `Auto-Submitted:
//! auto-generated`. No `Precedence: bulk` (ezmlm drops such posts).

use std::time::SystemTime;

use jiff::Timestamp;
use lettre::{
    Message,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{
            ContentDisposition, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
        },
    },
};
use sha2::{Digest, Sha256};

use super::{
    context::{self, ContextError, ContextInput},
    templates::{Rendered, TemplateError, Templates},
};
use crate::{
    model::{Config, EmailId, EmailRule, Meeting, MeetingId},
    revision::{Significant, StoredRevision},
    schedule::Recipient,
};

/// The file name of the calendar attachment.
pub const INVITE_FILE_NAME: &str = "meeting.ics";
/// The MIME type of both calendar parts (RFC 6047: method present, uppercase, equal to the
/// body's METHOD).
pub const CALENDAR_CONTENT_TYPE: &str = "text/calendar; charset=utf-8; method=PUBLISH";

/// Why a message could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A template failed (names the file and line).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The template context could not be built.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A change or cancellation notice was asked for without the previous values.
    #[error(
        "email `{0}` is a change or cancellation notice and needs the meeting's previous time \
         and place"
    )]
    MissingChange(String),
    /// A Message-ID (ours or the thread root) is malformed.
    #[error("{what} `{value}` is not a Message-ID of the form <left@right>")]
    MessageId {
        /// Which one.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The calendar text does not announce `METHOD:PUBLISH`.
    #[error("the meeting invite must be a VCALENDAR with METHOD:PUBLISH")]
    Invite,
    /// The Date is outside what the system clock type can hold.
    #[error("date {0} cannot be a Date header")]
    Date(Timestamp),
    /// lettre refused to build the message.
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// What [`compose`] needs to build one message.
#[derive(Clone, Copy, Debug)]
pub struct ComposeInput<'a> {
    /// The validated config.
    pub config: &'a Config,
    /// The loaded templates (`config.mail.templates_dir`).
    pub templates: &'a Templates,
    /// The meeting the mail is about.
    pub meeting: &'a Meeting,
    /// The schedule entry being sent.
    pub rule: &'a EmailRule,
    /// Who this message goes to.
    pub recipient: &'a Recipient,
    /// The meeting's current revision (SEQUENCE for the context).
    pub revision: &'a StoredRevision,
    /// This message's Message-ID, with angle brackets (see [`message_id`]).
    pub message_id: &'a str,
    /// The Message-ID of the first mail about this meeting, if any; In-Reply-To and References
    /// point to it (omitted when it is this message's own id).
    pub thread_root: Option<&'a str>,
    /// The Date header.
    pub date: Timestamp,
    /// The meeting's previous time and place: required for change notices, shown side by side.
    pub change: Option<&'a Significant>,
    /// The meeting as an iCalendar object with `METHOD:PUBLISH`, the same UID and SEQUENCE as
    /// the feed (`crate::feed::render_meeting_invite`).
    pub invite_ics: &'a str,
}

/// The Message-ID of one scheduled message, with angle brackets, at the From domain.
///
/// Deterministic: the same meeting, email, recipient and `n` give the same id on every retry;
/// any difference gives another. `n` tells instances of one scheduled mail apart: 0 for timed
/// mail, a change counter (such as the SEQUENCE reached) for change and cancellation notices.
pub fn message_id(
    config: &Config,
    meeting_id: &MeetingId,
    email_id: &EmailId,
    recipient: &Recipient,
    n: u32,
) -> String {
    // Reconciliation computes this for every row it plans (50,000 at 5,000 meetings): the
    // parts are hashed and written without a temporary string each. The bytes hashed are those
    // of the five parts, each after its length: short name, meeting, email, recipient key
    // (`Recipient::key_parts`) and `n` in decimal.
    let mut h = Sha256::new();
    let mut put = |pieces: &[&[u8]]| {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        h.update((len as u64).to_le_bytes());
        pieces.iter().for_each(|p| h.update(p));
    };
    put(&[config.network.short_name.as_str().as_bytes()]);
    put(&[meeting_id.as_str().as_bytes()]);
    put(&[email_id.as_str().as_bytes()]);
    let [kind, id] = recipient.key_parts();
    put(&[kind.as_bytes(), id.as_bytes()]);
    let mut decimal = itoa::Buffer::new();
    let n_text = decimal.format(n);
    put(&[n_text.as_bytes()]);
    let mut digest = [0_u8; 20];
    // 10 bytes of hash give exactly 20 hex digits: this cannot fail.
    let _ = hex::encode_to_slice(&h.finalize()[..10], &mut digest);
    let domain = ascii_domain(config.mail.from.email.domain());
    let domain = domain.as_ref();
    let mut id = String::with_capacity(
        meeting_id.as_str().len() + email_id.as_str().len() + n_text.len() + domain.len() + 26,
    );
    for piece in [
        "<",
        meeting_id.as_str(),
        ".",
        email_id.as_str(),
        ".",
        n_text,
        ".",
        std::str::from_utf8(&digest).unwrap_or_default(),
        "@",
        domain,
        ">",
    ] {
        id.push_str(piece);
    }
    id
}

/// Renders the templates for one scheduled mail (subject, text and HTML), with the same checks
/// as [`compose`] but without building the message.
pub fn render(input: &ComposeInput<'_>) -> Result<Rendered, ComposeError> {
    let ComposeInput {
        config,
        templates,
        meeting,
        rule,
        recipient,
        ..
    } = *input;
    if super::check::carries_change(rule) && input.change.is_none() {
        return Err(ComposeError::MissingChange(rule.id.to_string()));
    }
    let ctx = context::build(ContextInput {
        config,
        meeting,
        rule,
        recipient,
        revision: input.revision,
        change: input.change,
    })?;
    Ok(templates
        .render(&rule.template, &ctx)
        .map_err(|e| e.during(describe(meeting, rule, recipient)))?)
}

/// Renders the templates and builds the message (see the module docs for its shape).
pub fn compose(input: &ComposeInput<'_>) -> Result<Message, ComposeError> {
    let ComposeInput {
        config, recipient, ..
    } = *input;
    check_message_id("Message-ID", input.message_id)?;
    if let Some(root) = input.thread_root {
        check_message_id("the thread root", root)?;
    }
    if !input
        .invite_ics
        .lines()
        .any(|l| l.trim_end() == "METHOD:PUBLISH")
    {
        return Err(ComposeError::Invite);
    }
    let rendered = render(input)?;

    let to: Vec<Mailbox> = match recipient {
        Recipient::List => config.mail.list.clone(),
        Recipient::Lead(id) => {
            let p = config
                .priority(id)
                .ok_or_else(|| ContextError::UnknownPriority(recipient.key()))?;
            vec![p.lead.email.clone()]
        }
    };
    let mut builder = headers(config, input.message_id, input.date)?.subject(rendered.subject);
    for mbox in to {
        builder = builder.to(mbox);
    }
    if let Some(root) = input.thread_root.filter(|r| *r != input.message_id) {
        builder = builder
            .in_reply_to(root.to_owned())
            .references(root.to_owned());
    }
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(rendered.text))
        .singlepart(SinglePart::html(rendered.html))
        .singlepart(calendar_part(input.invite_ics, None)?);
    let mixed = MultiPart::mixed()
        .multipart(alternative)
        .singlepart(calendar_part(input.invite_ics, Some(INVITE_FILE_NAME))?);
    builder
        .multipart(mixed)
        .map_err(|e| ComposeError::Build(e.to_string()))
}

/// A one-part test message for `convenor send-test`: From, Reply-To, To, Date and a Message-ID
/// made from the instant (at the ASCII form of the sender's domain, as every Message-ID).
pub fn test_message(config: &Config, to: Mailbox, now: Timestamp) -> Result<Message, ComposeError> {
    let id = format!(
        "<send-test.{}@{}>",
        now.as_nanosecond(),
        ascii_domain(config.mail.from.email.domain())
    );
    let text = format!(
        "This is a test message from convenor for {}.\n\nIf you can read it, mail from convenor reaches {}.\n",
        config.network.name, to.email
    );
    headers(config, &id, now)?
        .to(to)
        .subject(format!(
            "{}: convenor test message",
            config.network.short_name
        ))
        .singlepart(SinglePart::plain(text))
        .map_err(|e| ComposeError::Build(e.to_string()))
}

/// The headers every message carries: From, Reply-To, Date, Message-ID, Auto-Submitted.
fn headers(
    config: &Config,
    message_id: &str,
    date: Timestamp,
) -> Result<lettre::message::MessageBuilder, ComposeError> {
    let date = SystemTime::try_from(date).map_err(|_| ComposeError::Date(date))?;
    let mut b = Message::builder()
        .from(config.mail.from.clone())
        .date(date)
        .message_id(Some(message_id.to_owned()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ));
    if let Some(r) = &config.mail.reply_to {
        b = b.reply_to(r.clone());
    }
    Ok(b)
}

fn calendar_part(ics: &str, attachment: Option<&str>) -> Result<SinglePart, ComposeError> {
    let ct = match attachment {
        Some(name) => format!("{CALENDAR_CONTENT_TYPE}; name=\"{name}\""),
        None => CALENDAR_CONTENT_TYPE.to_owned(),
    };
    let ct = ContentType::parse(&ct).map_err(|e| ComposeError::Build(e.to_string()))?;
    let body = Body::new_with_encoding(ics.to_owned(), ContentTransferEncoding::Base64)
        .map_err(|_| ComposeError::Build("cannot base64 the calendar".into()))?;
    let mut part = SinglePart::builder().header(ct);
    if let Some(name) = attachment {
        part = part.header(ContentDisposition::attachment(name));
    }
    Ok(part.body(body))
}

/// Accepts `<left@right>` with printable ASCII and no spaces (RFC 5322 msg-id, loosely).
/// A mail domain as a Message-ID may carry it: ASCII as it is, an internationalised one
/// (`bürger.example`) in its IDNA form (`xn--brger-kva.example`). A Message-ID is ASCII only
/// (RFC 5322), and `check_message_id` refuses anything else, so without this an IDN `from`
/// made every mail fail. A domain IDNA refuses is returned as it is (and refused there).
pub fn ascii_domain(domain: &str) -> std::borrow::Cow<'_, str> {
    if domain.is_ascii() {
        return std::borrow::Cow::Borrowed(domain);
    }
    match url::Host::parse(domain) {
        Ok(url::Host::Domain(ascii)) => std::borrow::Cow::Owned(ascii),
        _ => std::borrow::Cow::Borrowed(domain),
    }
}

fn check_message_id(what: &'static str, value: &str) -> Result<(), ComposeError> {
    let inner = value.strip_prefix('<').and_then(|v| v.strip_suffix('>'));
    let ok = inner.is_some_and(|i| {
        i.split_once('@')
            .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty())
            && i.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    });
    if ok {
        Ok(())
    } else {
        Err(ComposeError::MessageId {
            what,
            value: value.to_owned(),
        })
    }
}

/// "meeting 2023-02-24, email agenda-call, recipient list", for error messages.
pub(crate) fn describe(meeting: &Meeting, rule: &EmailRule, recipient: &Recipient) -> String {
    format!(
        "meeting {}, email {}, recipient {}",
        meeting.id,
        rule.id,
        recipient.key()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Environment, parse},
        model::PriorityId,
    };

    fn shipped() -> Config {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        parse(path, &text, &Environment::default())
            .expect("valid")
            .config
    }

    fn id(s: &str) -> EmailId {
        EmailId::parse(s).expect("slug")
    }

    /// An internationalised `from` domain gives Message-IDs in its IDNA (ASCII) form, which the
    /// message's own check accepts: such a config used to fail every mail.
    #[test]
    fn an_internationalised_from_domain_gives_ascii_message_ids() {
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path)
            .expect("example config")
            .replace(
                "from = \"LEDNet team <lednet-team@example.org>\"",
                "from = \"LEDNet team <team@bürger.example>\"",
            );
        let c = parse(path, &text, &Environment::default())
            .expect("valid")
            .config;
        assert_eq!(c.mail.from.email.domain(), "bürger.example");
        let m = &c.meetings[0].id;
        let message_id = message_id(&c, m, &id("agenda-call"), &Recipient::List, 0);
        assert!(
            message_id.ends_with("@xn--brger-kva.example>"),
            "{message_id}"
        );
        check_message_id("Message-ID", &message_id).expect("a valid Message-ID");
        assert_eq!(ascii_domain("example.org"), "example.org");
        // `convenor send-test`'s message too.
        let to: Mailbox = "someone@example.org".parse().expect("mailbox");
        let test =
            test_message(&c, to, "2026-11-29T12:00:00Z".parse().expect("now")).expect("composed");
        let text = String::from_utf8_lossy(&test.formatted()).to_string();
        let header = (text.lines())
            .find(|l| l.starts_with("Message-ID: "))
            .unwrap_or_else(|| panic!("no Message-ID in {text}"));
        assert!(header.ends_with("@xn--brger-kva.example>"), "{header}");
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let c = shipped();
        let m0 = &c.meetings[0].id;
        let m1 = &c.meetings[1].id;
        let lead = Recipient::Lead(PriorityId::parse("future-places").expect("slug"));
        let a = message_id(&c, m0, &id("agenda-call"), &Recipient::List, 0);
        assert_eq!(
            a,
            message_id(&c, m0, &id("agenda-call"), &Recipient::List, 0)
        );
        assert!(a.starts_with("<2023-02-24.agenda-call.0.") && a.ends_with("@example.org>"));
        check_message_id("test", &a).expect("well-formed");
        let others = [
            message_id(&c, m1, &id("agenda-call"), &Recipient::List, 0),
            message_id(&c, m0, &id("lead-nudge"), &Recipient::List, 0),
            message_id(&c, m0, &id("agenda-call"), &lead, 0),
            message_id(&c, m0, &id("agenda-call"), &Recipient::List, 1),
        ];
        let mut all: Vec<&String> = others.iter().chain([&a]).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5, "{all:?}");
    }

    /// Message-IDs are stored in planned rows: the way they are computed must not change (the
    /// pinned id is what `convenor preview --eml` printed before the parts were hashed in place).
    #[test]
    fn message_ids_are_computed_as_they_always_were() {
        let c = shipped();
        let by_definition = |meeting: &MeetingId, email: &EmailId, r: &Recipient, n: u32| {
            let mut h = Sha256::new();
            for part in [
                c.network.short_name.as_str(),
                meeting.as_str(),
                email.as_str(),
                &r.key(),
                &n.to_string(),
            ] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            let digest = hex::encode(&h.finalize()[..10]);
            format!(
                "<{meeting}.{email}.{n}.{digest}@{}>",
                c.mail.from.email.domain()
            )
        };
        let lead = Recipient::Lead(PriorityId::parse("future-places").expect("slug"));
        for m in &c.meetings {
            for r in [&Recipient::List, &lead] {
                for n in [0, 1, 9, 10, 4_294_967_295] {
                    let email = id("agenda-call");
                    assert_eq!(
                        message_id(&c, &m.id, &email, r, n),
                        by_definition(&m.id, &email, r, n)
                    );
                }
            }
        }
        assert_eq!(
            message_id(
                &c,
                &c.meetings[0].id,
                &id("agenda-call"),
                &Recipient::List,
                0
            ),
            "<2023-02-24.agenda-call.0.543053acc069643897ee@example.org>"
        );
    }

    #[test]
    fn message_id_syntax_is_checked() {
        for bad in [
            "",
            "x@y",
            "<x>",
            "<x y@z>",
            "<@z>",
            "<x@>",
            "<x@y>\r\nBcc: a@b",
        ] {
            assert!(check_message_id("t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_shipped_template_renders_against_every_shipped_meeting() {
        let c = shipped();
        let t = Templates::load(&c.mail.templates_dir).expect("templates");
        let report = t.check_all(&c).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(report.sets, 6);
        // 5 meetings x (agenda-call, reminder x2, agenda-pack, change, cancellation: 1 each;
        // nudge: 5 leads); then, once, each rule for each recipient with a made-up agenda and
        // an empty one (2 x (6 + 5)), and the two notices on four shapes of the first meeting
        // (no place or link, either, both) with the kinds of "before" a template can tell
        // apart on each (5, 6, 6 and 7).
        assert_eq!(
            report.renders,
            5 * (6 + 5) + 2 * (6 + 5) + 2 * (5 + 6 + 6 + 7)
        );
    }
}
