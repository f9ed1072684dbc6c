//! Mail end to end: composed messages through a real SMTP server on loopback (aiosmtpd), read
//! back with Python's email package and icalendar; the file transport; template errors through
//! `convenor check`; `preview`.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use convenor::{
    config::{self, Environment},
    mail::{self, ComposeInput, Delivery, SendClass, Templates, Transport},
    model::{Config, EmailId},
    revision,
    schedule::Recipient,
};
use jiff::Timestamp;
use serde_json::Value;

use crate::support::{convenor, example_config_text, python, repo, run_tool, write_config};

/// The test server, killed when dropped.
pub(crate) struct SmtpServer {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub(crate) port: u16,
    store: PathBuf,
}

impl SmtpServer {
    /// Starts `tests/tools/smtp_server.py` storing into `store`, with `args` (see its doc).
    pub(crate) fn start(store: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(repo().join("tests/tools/smtp_server.py"))
            .arg("--store")
            .arg(store)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start smtp_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("smtp_server.py said {line:?}"));
        Self {
            child,
            port,
            store: store.to_path_buf(),
        }
    }

    /// The stored messages, in order of arrival.
    pub(crate) fn received(&self) -> Vec<Vec<u8>> {
        (1..)
            .map(|n| self.store.join(format!("{n}.eml")))
            .take_while(|p| p.exists())
            .map(|p| std::fs::read(p).expect("read stored message"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example config with `[mail.smtp]` filled in.
fn smtp_config(dir: &Path, smtp: &str) -> Config {
    let text = example_config_text()
        .replace("transport = \"file\"", "transport = \"smtp\"")
        .replace("# [mail.smtp]\n", &format!("[mail.smtp]\n{smtp}\n"));
    load(dir, &text)
}

fn load(dir: &Path, text: &str) -> Config {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = write_config(dir, text);
    config::load(&path, &Environment::default())
        .unwrap_or_else(|e| panic!("config: {e}"))
        .config
}

const UID: &str = "2023-02-24@lednet.test";

/// A small valid calendar standing in for the feed's invite.
fn invite(sequence: u32) -> String {
    [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//LEDNet//convenor test//EN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        &format!("UID:{UID}"),
        &format!("SEQUENCE:{sequence}"),
        "DTSTAMP:20230101T000000Z",
        "DTSTART:20230224T100000Z",
        "DTEND:20230224T123000Z",
        "SUMMARY:LEDNet meeting",
        "ORGANIZER:mailto:lednet-team@example.org",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
    .join("\r\n")
}

/// Composes one mail of the example schedule for the first meeting, with a fixed invite.
fn compose(
    config: &Config,
    email: &str,
    recipient: &Recipient,
    thread_root: Option<&str>,
) -> lettre::Message {
    compose_with_invite(config, email, recipient, thread_root, |_| invite(3))
}

/// [`compose`] with the invite `ics` makes of the meeting's revision (SEQUENCE 3).
fn compose_with_invite(
    config: &Config,
    email: &str,
    recipient: &Recipient,
    thread_root: Option<&str>,
    ics: impl FnOnce(&revision::StoredRevision) -> String,
) -> lettre::Message {
    let templates = Templates::load(&config.mail.templates_dir).expect("templates");
    let meeting = &config.meetings[0];
    let rule = config
        .email(&EmailId::parse(email).expect("id"))
        .expect("rule");
    let t0: Timestamp = "2023-01-20T09:00:00Z".parse().expect("ts");
    let (mut rev, _) = revision::next_revision(None, config, meeting, t0);
    rev.sequence = 3;
    let id = mail::message_id(config, &meeting.id, &rule.id, recipient, 0);
    let ics = ics(&rev);
    mail::compose(&ComposeInput {
        config,
        templates: &templates,
        meeting,
        rule,
        recipient,
        revision: &rev,
        message_id: &id,
        thread_root,
        date: t0,
        change: None,
        invite_ics: &ics,
    })
    .expect("compose")
}

fn parse(bytes: &[u8]) -> Value {
    let out = run_tool("mime_parse.py", &[], bytes);
    serde_json::from_slice(&out.stdout).expect("mime_parse json")
}

fn header<'a>(m: &'a Value, name: &str) -> Vec<&'a str> {
    m["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn smtp_delivery_has_the_mime_shape_headers_and_calendar() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &[]);
    let config = smtp_config(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"\ntimeout = \"10s\"",
            server.port
        ),
    );
    let root = "<2023-02-24.agenda-call.0.root@example.org>";
    let msg = compose(&config, "reminder-week", &Recipient::List, Some(root));
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("transport");
    let delivery = transport.send(&msg).await.expect("delivered");
    assert!(
        delivery.to_string().contains("queued as test-1"),
        "{delivery}"
    );

    let received = server.received();
    assert_eq!(received.len(), 1);
    let m = parse(&received[0]);
    assert_eq!(m["defects"], serde_json::json!([]), "{m}");

    // Headers.
    assert_eq!(
        header(&m, "from"),
        ["LEDNet team <lednet-team@example.org>"]
    );
    assert_eq!(
        header(&m, "to"),
        ["LEDNet members <lednet-members@example.org>"]
    );
    assert_eq!(
        header(&m, "reply-to"),
        ["LEDNet team <lednet-team@example.org>"]
    );
    assert_eq!(header(&m, "auto-submitted"), ["auto-generated"]);
    assert!(header(&m, "precedence").is_empty());
    assert_eq!(header(&m, "date"), ["Fri, 20 Jan 2023 09:00:00 +0000"]);
    let id = mail::message_id(
        &config,
        &config.meetings[0].id,
        &EmailId::parse("reminder-week").expect("id"),
        &Recipient::List,
        0,
    );
    assert_eq!(header(&m, "message-id"), [id.as_str()]);
    assert!(id.ends_with("@example.org>"), "{id}");
    assert_eq!(header(&m, "in-reply-to"), [root]);
    assert_eq!(header(&m, "references"), [root]);
    assert_eq!(
        header(&m, "subject"),
        ["Reminder: LEDNet meeting, Friday 24 February 2023, 10:00–12:30 GMT"]
    );

    // MIME shape: mixed > (alternative > plain, html, calendar), calendar attachment.
    let tree = &m["tree"];
    assert_eq!(tree["type"], "multipart/mixed");
    let kids = tree["children"].as_array().expect("children");
    assert_eq!(kids.len(), 2);
    let alt = &kids[0];
    assert_eq!(alt["type"], "multipart/alternative");
    let types: Vec<&str> = alt["children"]
        .as_array()
        .expect("alt")
        .iter()
        .map(|c| c["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["text/plain", "text/html", "text/calendar"]);
    let plain = &alt["children"][0];
    assert_eq!(plain["charset"], "utf-8");
    let text = plain["text"].as_str().expect("text");
    assert!(
        text.contains("When:  Friday 24 February 2023, 10:00–12:30 GMT"),
        "{text}"
    );
    assert!(
        text.contains("http://127.0.0.1:8080/meetings/2023-02-24"),
        "{text}"
    );
    let html = alt["children"][1]["text"].as_str().expect("html");
    assert!(
        html.contains("Friday 24 February 2023, 10:00–12:30 GMT"),
        "{html}"
    );
    let attachment = &kids[1];
    for cal in [&alt["children"][2], attachment] {
        assert_eq!(cal["type"], "text/calendar");
        assert_eq!(cal["params"]["method"], "PUBLISH", "{cal}");
        assert_eq!(cal["charset"], "utf-8");
        assert_eq!(cal["cte"], "base64");
        assert_eq!(cal["calendar"]["method"], "PUBLISH");
        assert_eq!(cal["calendar"]["events"][0]["uid"], UID);
        assert_eq!(cal["calendar"]["events"][0]["sequence"], 3);
    }
    assert_eq!(attachment["disposition"], "attachment");
    assert_eq!(attachment["filename"], "meeting.ics");
    assert_eq!(alt["children"][2]["disposition"], Value::Null);
}

#[tokio::test]
async fn lead_mail_goes_to_the_lead() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &[]);
    let config = smtp_config(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"",
            server.port
        ),
    );
    let lead = Recipient::Lead(convenor::model::PriorityId::parse("future-places").expect("id"));
    let msg = compose(&config, "lead-nudge", &lead, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("transport");
    transport.send(&msg).await.expect("delivered");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("received/1.json")).expect("meta"))
            .expect("json");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["future-places-lead@example.org"])
    );
    let m = parse(&server.received()[0]);
    assert!(header(&m, "in-reply-to").is_empty());
    let subject = header(&m, "subject")[0];
    assert!(subject.contains("items for Future Places"), "{subject}");
}

#[tokio::test]
async fn starttls_verifies_the_server_against_the_given_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("certs");
    run_tool("make_certs.py", &[certs.to_str().expect("utf-8")], b"");
    let server = SmtpServer::start(
        &dir.path().join("received"),
        &[
            "--tls-cert",
            certs.join("server.pem").to_str().expect("utf-8"),
            "--tls-key",
            certs.join("server.key").to_str().expect("utf-8"),
        ],
    );
    let base = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\ntimeout = \"10s\"",
        server.port
    );

    // Without the test CA the certificate is not trusted: nothing is sent.
    let untrusting = smtp_config(&dir.path().join("a"), &base);
    let msg = compose(&untrusting, "reminder-day", &Recipient::List, None);
    let transport = Transport::from_settings(&untrusting.mail, &untrusting.state_dir).expect("t");
    let err = transport
        .send(&msg)
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.class, SendClass::Transient, "{err}");
    assert!(
        err.message.contains("certificate"),
        "refused for its certificate: {err}"
    );
    assert!(server.received().is_empty());

    // With it, STARTTLS succeeds and the message arrives over TLS.
    let ca = certs.join("ca.pem");
    let trusting = smtp_config(
        &dir.path().join("b"),
        &format!("{base}\nca_file = \"{}\"", ca.display()),
    );
    let transport = Transport::from_settings(&trusting.mail, &trusting.state_dir).expect("t");
    let delivery = transport.send(&msg).await.expect("delivered over STARTTLS");
    assert!(delivery.to_string().starts_with("250"), "{delivery}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("received/1.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["tls"], true);
}

#[tokio::test]
async fn reply_codes_are_classified_transient_or_permanent() {
    let table = [
        ("mail", "421", SendClass::Transient),
        ("rcpt", "451", SendClass::Transient),
        ("data", "451", SendClass::Transient),
        ("rcpt", "550", SendClass::Permanent),
        ("data", "550", SendClass::Permanent),
    ];
    for (stage, code, class) in table {
        let dir = tempfile::tempdir().expect("tmp");
        let server = SmtpServer::start(
            &dir.path().join("received"),
            &["--fail-at", stage, "--code", code],
        );
        let config = smtp_config(
            dir.path(),
            &format!(
                "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"",
                server.port
            ),
        );
        let msg = compose(&config, "agenda-call", &Recipient::List, None);
        let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
        let err = transport.send(&msg).await.expect_err("refused");
        assert_eq!(err.class, class, "{stage} {code}: {err}");
        assert!(
            err.message.contains(code) && err.message.contains("test server refuses"),
            "the server's reply text is kept: {err}"
        );
        assert!(server.received().is_empty());
    }
}

/// The shipped config sending over SMTP, in plain text, to the server on loopback `port`, with
/// `list` (TOML strings, comma-separated) as `[mail] list`.
fn smtp_config_text(port: u16, list: &str) -> String {
    example_config_text()
        .replace("transport = \"file\"", "transport = \"smtp\"")
        .replace(
            "list = [\"LEDNet members <lednet-members@example.org>\"]",
            &format!("list = [{list}]"),
        )
        .replace(
            "# [mail.smtp]\n",
            &format!("[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"plaintext\"\n"),
        )
}

/// A mail to an address that is not ASCII needs SMTPUTF8 (RFC 6531): a relay that does not offer
/// it gets no transaction (nothing stored) and the send is a transient failure naming SMTPUTF8
/// (the relay's settings are at fault, and ops can fix them before the meeting); a relay that
/// offers it gets the mail, with SMTPUTF8 among the MAIL FROM parameters.
#[tokio::test]
async fn a_non_ascii_address_needs_a_relay_offering_smtputf8() {
    const ADDRESS: &str = "jörg@example.org";
    let list = format!("\"{ADDRESS}\"");

    let dir = tempfile::tempdir().expect("tmp");
    let without = SmtpServer::start(&dir.path().join("received"), &["--no-smtputf8"]);
    let config = load(dir.path(), &smtp_config_text(without.port, &list));
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    assert!(
        msg.envelope()
            .to()
            .iter()
            .any(|a| AsRef::<str>::as_ref(a) == ADDRESS),
        "the envelope holds the address as written: {:?}",
        msg.envelope()
    );
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let e = transport
        .send(&msg)
        .await
        .expect_err("a relay without SMTPUTF8 cannot take it");
    assert_eq!(e.class, SendClass::Transient, "{e}");
    assert!(e.message.contains("SMTPUTF8"), "names SMTPUTF8: {e}");
    assert!(e.done.is_empty(), "nobody got it: {e}");
    assert!(without.received().is_empty(), "no message stored");

    let dir = tempfile::tempdir().expect("tmp");
    let with = SmtpServer::start(&dir.path().join("received"), &[]);
    let config = load(dir.path(), &smtp_config_text(with.port, &list));
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let delivery = transport.send(&msg).await.expect("delivered");
    assert!(delivery.to_string().starts_with("250 "), "{delivery}");
    assert_eq!(with.received().len(), 1);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("received/1.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["rcpt_tos"], serde_json::json!([ADDRESS]), "{meta}");
    let options = meta["mail_options"].as_array().expect("mail_options");
    assert!(
        options.iter().any(|o| o == "SMTPUTF8"),
        "MAIL FROM carried SMTPUTF8: {meta}"
    );
}

/// Mail is 7-bit clean whatever its text (lettre writes bodies and the calendar part as
/// quoted-printable or base64, and headers as encoded words), so a relay that does not offer
/// 8BITMIME (RFC 6152) takes it: no BODY=8BITMIME in MAIL FROM, every byte ASCII, and the
/// text that is not ASCII (a title with accents and a dash) reads back whole in the subject,
/// the text body and the calendar part.
#[tokio::test]
async fn mail_that_is_not_ascii_goes_to_a_relay_without_8bitmime() {
    const TITLE: &str = "Réunion LEDNet — café";
    let dir = tempfile::tempdir().expect("tmp");
    let relay = SmtpServer::start(&dir.path().join("received"), &["--no-8bitmime"]);
    let text = smtp_config_text(
        relay.port,
        "\"LEDNet members <lednet-members@example.org>\"",
    )
    .replacen(
        "title = \"LEDNet meeting\"",
        &format!("title = \"{TITLE}\""),
        1,
    );
    let config = load(dir.path(), &text);
    // Composed as the outbox does, with the meeting's own invite (SUMMARY is the title).
    let msg = compose_with_invite(&config, "reminder-week", &Recipient::List, None, |rev| {
        convenor::feed::render_meeting_invite(&config, &config.meetings[0], Some(rev))
    });
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let delivery = transport.send(&msg).await.expect("delivered");
    assert!(delivery.to_string().starts_with("250 "), "{delivery}");
    let received = relay.received();
    assert_eq!(received.len(), 1);
    let bytes = &received[0];
    assert!(bytes.is_ascii(), "every byte of the message is ASCII");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("received/1.json")).expect("meta"))
            .expect("json");
    let options = meta["mail_options"].as_array().expect("mail_options");
    assert!(
        !options
            .iter()
            .any(|o| o.as_str().is_some_and(|o| o.contains("8BITMIME"))),
        "no BODY=8BITMIME: {meta}"
    );
    let parsed = parse(bytes);
    let subject = header(&parsed, "subject").join(" ");
    assert!(subject.contains(TITLE), "the subject reads back: {subject}");
    // Every part, depth first.
    let mut parts = vec![&parsed["tree"]];
    let (mut text, mut summaries) = (String::new(), Vec::new());
    while let Some(part) = parts.pop() {
        if part["type"] == "text/plain" {
            text.push_str(part["text"].as_str().unwrap_or_default());
        }
        for event in part["calendar"]["events"].as_array().into_iter().flatten() {
            summaries.push(event["summary"].as_str().unwrap_or_default().to_owned());
        }
        parts.extend(part["children"].as_array().into_iter().flatten());
    }
    assert!(text.contains(TITLE), "the text body reads back: {text}");
    assert!(!summaries.is_empty(), "a calendar part");
    assert!(
        summaries.iter().all(|s| s == TITLE),
        "every calendar part's SUMMARY reads back: {summaries:?}"
    );
}

/// A list of several addresses where the server refuses some recipients: one refused for good
/// (5xx) or put off (4xx) is left out and the others get the message (once, in one
/// transaction). A put-off recipient makes the send a transient failure that names the
/// recipients that got it; `send_except` with them then goes to the rest only. When no recipient is taken, nobody gets it: transient if any was put off,
/// permanent when every one was refused for good. Nothing is stored unless the message went out.
#[tokio::test]
async fn a_recipient_refused_or_put_off_does_not_stop_the_others() {
    const LISTS: [&str; 3] = [
        "members@example.org",
        "gone@example.org",
        "observers@example.org",
    ];
    /// Each address the server refuses, with its reply code.
    type Refusals<'a> = &'a [(&'a str, &'a str)];
    // (refusals, delivered to, error class when the send fails, recipients that got it then)
    type Case<'a> = (
        Refusals<'a>,
        &'a [&'a str],
        Option<SendClass>,
        &'a [&'a str],
    );
    let table: [Case; 7] = [
        (&[], &LISTS, None, &[]),
        // 552 to RCPT TO is RFC 821's "too many recipients": put off (RFC 5321 4.5.3.1.10).
        (
            &[("gone@example.org", "552")],
            &["members@example.org", "observers@example.org"],
            Some(SendClass::Transient),
            &["members@example.org", "observers@example.org"],
        ),
        (
            &[("gone@example.org", "550")],
            &["members@example.org", "observers@example.org"],
            None,
            &[],
        ),
        (
            &[("gone@example.org", "451")],
            &["members@example.org", "observers@example.org"],
            Some(SendClass::Transient),
            &["members@example.org", "observers@example.org"],
        ),
        (
            &[("members@example.org", "550"), ("gone@example.org", "452")],
            &["observers@example.org"],
            Some(SendClass::Transient),
            &["observers@example.org"],
        ),
        (
            &[
                ("members@example.org", "550"),
                ("gone@example.org", "450"),
                ("observers@example.org", "451"),
            ],
            &[],
            Some(SendClass::Transient),
            &[],
        ),
        (
            &[
                ("members@example.org", "550"),
                ("gone@example.org", "551"),
                ("observers@example.org", "553"),
            ],
            &[],
            Some(SendClass::Permanent),
            &[],
        ),
    ];
    for (refusals, delivered_to, failure, done) in table {
        let dir = tempfile::tempdir().expect("tmp");
        let args: Vec<String> = (refusals.iter())
            .flat_map(|(address, code)| ["--refuse-rcpt".to_owned(), format!("{address}={code}")])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = SmtpServer::start(&dir.path().join("received"), &args);
        let list = LISTS.map(|a| format!("\"{a}\"")).join(", ");
        let config = load(dir.path(), &smtp_config_text(server.port, &list));
        assert_eq!(config.mail.list.len(), 3, "the config has the three lists");
        let msg = compose(&config, "agenda-call", &Recipient::List, None);
        let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
        let result = transport.send(&msg).await;
        let case = format!("{refusals:?}");
        match failure {
            None => {
                let delivery = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                let text = delivery.to_string();
                assert!(text.starts_with("250 "), "{case}: {text}");
                for (address, code) in refusals {
                    assert!(
                        text.contains(address) && text.contains(code),
                        "{case}: the delivery names each refused address and its reply: {text}"
                    );
                }
                if refusals.is_empty() {
                    assert!(!text.contains("refused"), "{case}: {text}");
                }
            }
            Some(class) => {
                let e = result.expect_err(&case);
                assert_eq!(e.class, class, "{case}: {e}");
                assert_eq!(e.done, done, "{case}: the recipients done with: {e}");
                for (address, code) in refusals {
                    assert!(
                        e.message.contains(address) && e.message.contains(code),
                        "{case}: the error names each refusal: {e}"
                    );
                }
                for address in delivered_to {
                    assert!(
                        e.message.contains(&format!("delivered to {address}"))
                            || e.message.contains(&format!(", {address}")),
                        "{case}: the error names who got it: {e}"
                    );
                }
            }
        }
        let received = server.received();
        if delivered_to.is_empty() {
            assert!(received.is_empty(), "{case}: nobody got it");
            continue;
        }
        assert_eq!(received.len(), 1, "{case}: one transaction");
        let meta: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("received/1.json")).expect("meta"),
        )
        .expect("json");
        assert_eq!(meta["rcpt_tos"], serde_json::json!(delivered_to), "{case}");
        let m = parse(&received[0]);
        let to = header(&m, "to").join(", ");
        for address in LISTS {
            assert!(to.contains(address), "{case}: To: names every list: {to}");
        }
        assert_eq!(
            transport.idle_connections(),
            1,
            "{case}: the connection ends the transaction cleanly and is kept"
        );
        // The retry leaves out the recipients that got it (their domains compared without
        // regard to case): only the others are offered again, and here the server refuses or
        // puts them off again, so nobody gets a second copy.
        if !done.is_empty() {
            let done: Vec<String> = (done.iter())
                .map(|a| a.replace("example.org", "EXAMPLE.org"))
                .collect();
            let again = transport
                .send_except(&msg, &done)
                .await
                .expect_err("put off again");
            assert_eq!(
                (again.class, again.done.len()),
                (SendClass::Transient, 0),
                "{case}: {again}"
            );
            for address in LISTS {
                let offered = again.message.contains(address);
                let left = !done.iter().any(|d| d.eq_ignore_ascii_case(address));
                assert_eq!(offered, left, "{case}: {address} offered again: {again}");
            }
            assert_eq!(server.received().len(), 1, "{case}: no second copy");
        }
    }
}

/// A retry after some recipients got the message: those are left out when their address is
/// the same mailbox (the domain in any case), not when only the local part's case matches; and
/// when the recipients left are all refused for good, the mail is delivered (the others had
/// it), not failed, while nobody gets a copy.
#[tokio::test]
async fn a_retry_leaves_out_the_same_mailboxes_and_ends_delivered_when_the_rest_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(
        &dir.path().join("received"),
        &["--refuse-rcpt", "gone@example.org=550"],
    );
    let config = load(
        dir.path(),
        &smtp_config_text(
            server.port,
            "\"members@example.org\", \"gone@example.org\", \"observers@example.org\"",
        ),
    );
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let done = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    let delivery = transport
        .send_except(
            &msg,
            &done(&["members@EXAMPLE.ORG", "observers@example.org"]),
        )
        .await
        .expect("delivered: the others had it");
    assert!(
        matches!(&delivery, Delivery::Earlier { refused } if refused.len() == 1 && refused[0].contains("gone@example.org") && refused[0].contains("550")),
        "{delivery:?}"
    );
    assert!(server.received().is_empty(), "nobody got a copy");

    // `Members@…` is another mailbox than `members@…` (local parts are exact): it gets the mail.
    let delivery = transport
        .send_except(
            &msg,
            &done(&["Members@example.org", "observers@example.org"]),
        )
        .await
        .expect("delivered");
    assert!(delivery.to_string().starts_with("250 "), "{delivery}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("received/1.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["rcpt_tos"], serde_json::json!(["members@example.org"]));
}

/// Earlier attempts reached an address that is no longer among the message's recipients (the
/// list changed between attempts): when the recipients now are all refused for good, nobody on
/// this envelope has the mail, so it is a permanent failure as on a first attempt, not
/// "delivered earlier".
#[tokio::test]
async fn earlier_delivery_counts_only_for_recipients_of_this_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(
        &dir.path().join("received"),
        &["--refuse-rcpt", "gone@example.org=550"],
    );
    let config = load(
        dir.path(),
        &smtp_config_text(server.port, "\"gone@example.org\""),
    );
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let first = transport.send_except(&msg, &[]).await.expect_err("refused");
    assert_eq!(first.class, SendClass::Permanent, "{first}");
    let stale = transport
        .send_except(&msg, &["old-list@example.org".to_owned()])
        .await
        .expect_err("nobody on this envelope has it");
    assert_eq!(stale.class, SendClass::Permanent, "{stale}");
    assert!(server.received().is_empty());
}

/// A relay that cannot be set up for sending (before MAIL FROM) fails every mail alike, so the
/// failure is transient whatever its code: a rotated password (535 to AUTH), a 554 greeting, a
/// 5xx to EHLO or STARTTLS. The message says which step failed. A 5xx to the message itself on
/// the same authenticated relay stays permanent; the right password delivers.
#[tokio::test]
async fn setup_faults_are_transient_even_as_5xx_and_message_refusals_stay_permanent() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("certs");
    run_tool("make_certs.py", &[certs.to_str().expect("utf-8")], b"");
    let cert = certs.join("server.pem");
    let key = certs.join("server.key");
    let tls_args = [
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    // `[mail.smtp]` user and password file in `here`, whose password the file holds.
    let auth = |here: &Path| {
        let file = here.join("password");
        format!(
            "user = \"convenor\"\npassword_file = \"{}\"",
            file.display()
        )
    };
    // (case, server arguments, tls mode, password file content or no AUTH, class, words in
    // the error)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        &'a str,
        Option<&'a str>,
        SendClass,
        &'a [&'a str],
    );
    let table: [Case<'_>; 6] = [
        (
            "wrong password",
            vec!["--auth", "convenor:right"],
            "plaintext",
            Some("rotated"),
            SendClass::Transient,
            &["535", "AUTH", "setup failed"],
        ),
        (
            "554 greeting",
            vec!["--fail-at", "greeting", "--code", "554"],
            "plaintext",
            None,
            SendClass::Transient,
            &["554", "greeting", "setup failed"],
        ),
        (
            "550 to EHLO",
            vec!["--fail-at", "ehlo", "--code", "550"],
            "plaintext",
            None,
            SendClass::Transient,
            &["550", "EHLO", "setup failed"],
        ),
        (
            "554 to STARTTLS",
            [
                &["--fail-at", "starttls", "--code", "554"][..],
                &tls_args[..],
            ]
            .concat(),
            "starttls",
            None,
            SendClass::Transient,
            &["554", "STARTTLS", "setup failed"],
        ),
        (
            "550 to RCPT TO, authenticated",
            vec![
                "--auth",
                "convenor:right",
                "--fail-at",
                "rcpt",
                "--code",
                "550",
            ],
            "plaintext",
            Some("right"),
            SendClass::Permanent,
            &["550", "test server refuses at RCPT"],
        ),
        (
            "550 to MAIL FROM",
            vec!["--fail-at", "mail", "--code", "550"],
            "plaintext",
            None,
            SendClass::Permanent,
            &["550", "test server refuses at MAIL"],
        ),
    ];
    for (i, (case, args, tls, password, class, words)) in table.into_iter().enumerate() {
        let here = dir.path().join(format!("case-{i}"));
        let server = SmtpServer::start(&here.join("received"), &args);
        std::fs::create_dir_all(&here).expect("mkdir");
        let extra = match password {
            Some(password) => {
                std::fs::write(here.join("password"), password).expect("password file");
                auth(&here)
            }
            None => String::new(),
        };
        let config = smtp_config(
            &here,
            &format!(
                "host = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\ntimeout = \"10s\"\n\
                 ca_file = \"{}\"\n{extra}",
                server.port,
                certs.join("ca.pem").display()
            ),
        );
        let msg = compose(&config, "agenda-call", &Recipient::List, None);
        let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
        let err = transport.send(&msg).await.expect_err("refused");
        assert_eq!(err.class, class, "{case}: {err}");
        for word in words {
            assert!(err.message.contains(word), "{case}: `{word}` in {err}");
        }
        assert!(server.received().is_empty(), "{case}");
    }

    // The right password: delivered, after AUTH.
    let here = dir.path().join("right");
    let server = SmtpServer::start(&here.join("received"), &["--auth", "convenor:right"]);
    std::fs::create_dir_all(&here).expect("mkdir");
    std::fs::write(here.join("password"), "right\n").expect("password file");
    let config = smtp_config(
        &here,
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"\n{}",
            server.port,
            auth(&here)
        ),
    );
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    transport
        .send(&msg)
        .await
        .expect("delivered with the right password");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(here.join("received/1.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["authenticated"], true);
}

#[tokio::test]
async fn a_stalled_server_hits_our_timeout_and_is_transient() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &["--stall"]);
    let config = smtp_config(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"\ntimeout = \"2s\"",
            server.port
        ),
    );
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let err = transport.send(&msg).await.expect_err("stalled");
    assert_eq!(err.class, SendClass::Transient, "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let dir = tempfile::tempdir().expect("tmp");
    // A port that was just free: bind, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = smtp_config(
        dir.path(),
        &format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"plaintext\"\ntimeout = \"5s\""),
    );
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let err = transport.send(&msg).await.expect_err("refused");
    assert_eq!(err.class, SendClass::Transient, "{err}");
}

/// The peer (client) ports of the stored messages, in order: one port per connection.
fn peers(store: &Path, n: usize) -> Vec<u64> {
    (1..=n)
        .map(|i| {
            let meta: Value = serde_json::from_slice(
                &std::fs::read(store.join(format!("{i}.json"))).expect("meta"),
            )
            .expect("json");
            meta["peer"][1].as_u64().expect("peer port")
        })
        .collect()
}

#[tokio::test]
async fn a_burst_goes_over_one_kept_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &[]);
    let config = smtp_config(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"",
            server.port
        ),
    );
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    assert_eq!(
        transport.idle_connections(),
        0,
        "nothing opened before a send"
    );
    for rule in ["agenda-call", "reminder-week", "reminder-day"] {
        let msg = compose(&config, rule, &Recipient::List, None);
        transport.send(&msg).await.expect("delivered");
        assert_eq!(transport.idle_connections(), 1);
    }
    let ports = peers(&dir.path().join("received"), 3);
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "one connection: {ports:?}"
    );
}

/// A server that closes the channel (421) on a kept connection: the message goes out on a new
/// connection within the same send, not as a failure.
#[tokio::test]
async fn a_kept_connection_the_server_gave_up_is_replaced_within_the_send() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &["--one-per-connection"]);
    let config = smtp_config(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"",
            server.port
        ),
    );
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    for rule in ["agenda-call", "reminder-week", "reminder-day"] {
        let msg = compose(&config, rule, &Recipient::List, None);
        let delivery = transport
            .send(&msg)
            .await
            .expect("delivered on a new connection");
        assert!(delivery.to_string().starts_with("250"), "{delivery}");
    }
    assert_eq!(server.received().len(), 3);
    let mut ports = peers(&dir.path().join("received"), 3);
    ports.dedup();
    assert_eq!(ports.len(), 3, "three connections: {ports:?}");
}

#[tokio::test]
async fn implicit_tls_verifies_the_server_and_keeps_the_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("certs");
    run_tool("make_certs.py", &[certs.to_str().expect("utf-8")], b"");
    let server = SmtpServer::start(
        &dir.path().join("received"),
        &[
            "--implicit-tls",
            "--tls-cert",
            certs.join("server.pem").to_str().expect("utf-8"),
            "--tls-key",
            certs.join("server.key").to_str().expect("utf-8"),
        ],
    );
    let base = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\ntimeout = \"10s\"",
        server.port
    );
    let untrusting = smtp_config(&dir.path().join("a"), &base);
    let msg = compose(&untrusting, "reminder-day", &Recipient::List, None);
    let transport = Transport::from_settings(&untrusting.mail, &untrusting.state_dir).expect("t");
    let err = transport
        .send(&msg)
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.class, SendClass::Transient, "{err}");
    assert!(err.message.contains("certificate"), "{err}");
    assert!(server.received().is_empty());

    let trusting = smtp_config(
        &dir.path().join("b"),
        &format!("{base}\nca_file = \"{}\"", certs.join("ca.pem").display()),
    );
    let transport = Transport::from_settings(&trusting.mail, &trusting.state_dir).expect("t");
    for _ in 0..2 {
        let delivery = transport.send(&msg).await.expect("delivered over TLS");
        assert!(delivery.to_string().starts_with("250"), "{delivery}");
    }
    let store = dir.path().join("received");
    for i in 1..=2 {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(store.join(format!("{i}.json"))).expect("meta"))
                .expect("json");
        assert_eq!(meta["tls"], true, "{meta}");
    }
    let ports = peers(&store, 2);
    assert_eq!(ports[0], ports[1], "the TLS connection was kept");
}

#[tokio::test]
async fn file_transport_writes_one_eml_per_message_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = load(dir.path(), &example_config_text());
    let transport = Transport::from_settings(&config.mail, &config.state_dir).expect("t");
    let msg = compose(&config, "agenda-call", &Recipient::List, None);
    let first = transport.send(&msg).await.expect("written");
    // A retry of the same mail replaces its own file rather than adding one.
    let again = transport.send(&msg).await.expect("written");
    assert_eq!(first, again);
    let outbox = config.state_dir.join("outbox");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    let id = mail::message_id(
        &config,
        &config.meetings[0].id,
        &EmailId::parse("agenda-call").expect("id"),
        &Recipient::List,
        0,
    );
    let name = format!("{}.eml", id.trim_matches(['<', '>']));
    assert_eq!(
        files,
        std::slice::from_ref(&name),
        "no temp files left behind"
    );
    let m = parse(&std::fs::read(outbox.join(&name)).expect("eml"));
    assert_eq!(header(&m, "message-id"), [id.as_str()]);
    assert_eq!(m["tree"]["type"], "multipart/mixed");
}

fn config_with_templates(dir: &Path, templates: &Path) -> PathBuf {
    let text = example_config_text().replace(
        "# templates_dir = \"templates\"",
        &format!("templates_dir = \"{}\"", templates.display()),
    );
    write_config(dir, &text)
}

#[test]
fn check_reports_an_undefined_variable_with_file_and_line_and_exits_78() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = crate::support::templates_with(dir.path(), "reminder/body.txt", |s| {
        s.replacen("A reminder", "A {{ meeting.no_such_field }} reminder", 1)
    });
    let path = config_with_templates(dir.path(), &t);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let want = format!(
        "{}:3: undefined value",
        t.join("reminder/body.txt").display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        stderr.contains("meeting 2023-02-24, email reminder-week"),
        "{stderr}"
    );
}

/// A fault in a branch only real mail takes (a change of place or join link, a cancellation's
/// `change`, an accepted agenda item) fails `check` with the file and line: the made-up cases
/// render each branch, so it is not first met when a real mail fails for good.
#[test]
fn check_renders_the_branches_of_changes_cancellations_and_agenda_items() {
    /// A template file, its edit, and the line of the fault.
    type Case<'a> = (&'a str, &'a dyn Fn(&str) -> String, usize);
    let cases: [Case<'_>; 4] = [
        (
            "change-notice/body.txt",
            &|t| {
                t.replace(
                    "{{ change.before.location or \"not set\" }}",
                    "{{ change.before.locaton }}",
                )
            },
            11,
        ),
        (
            "change-notice/body.html",
            &|t| {
                t.replace(
                    "{{ change.before.join_url or \"none\" }}",
                    "{{ change.before.joinurl }}",
                )
            },
            22,
        ),
        (
            "cancellation-notice/body.txt",
            &|t| format!("{t}{{% if change %}}{{{{ change.before.whenn }}}}{{% endif %}}"),
            24,
        ),
        (
            "agenda-pack/body.txt",
            &|t| t.replace("{{ i.title }}", "{{ i.titel }}"),
            23,
        ),
    ];
    for (file, edit, line) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let t = crate::support::templates_with(dir.path(), file, edit);
        let path = config_with_templates(dir.path(), &t);
        let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{file}: {stderr}");
        let want = format!("{}:{line}: undefined value", t.join(file).display());
        assert!(stderr.contains(&want), "{want} in {stderr}");
    }
}

#[test]
fn check_reports_a_syntax_error_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = crate::support::templates_with(dir.path(), "agenda-call/body.html", |s| {
        s.replacen("<p>Dear colleagues,</p>", "<p>{% if %}</p>", 1)
    });
    let path = config_with_templates(dir.path(), &t);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let want = format!(
        "{}:5: syntax error",
        t.join("agenda-call/body.html").display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

/// A subject that renders a line break could add headers (Bcc: ...). It is refused, not
/// sanitised: `check` reports it, and compose never builds such a message.
#[test]
fn a_subject_rendering_a_line_break_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = crate::support::templates_with(dir.path(), "reminder/subject.txt", |_| {
        "Reminder{{ \"\\r\\nBcc: victim@example.org\" }}\n".to_owned()
    });
    let path = config_with_templates(dir.path(), &t);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("reminder/subject.txt: the subject must be one line"),
        "{stderr}"
    );

    let config = config::load(&path, &Environment::default())
        .expect("config")
        .config;
    let templates = Templates::load(&config.mail.templates_dir).expect("templates");
    let meeting = &config.meetings[0];
    let rule = config
        .email(&EmailId::parse("reminder-day").expect("id"))
        .expect("rule");
    let (rev, _) = revision::next_revision(None, &config, meeting, Timestamp::UNIX_EPOCH);
    let id = mail::message_id(&config, &meeting.id, &rule.id, &Recipient::List, 0);
    let ics = invite(0);
    let err = mail::compose(&ComposeInput {
        config: &config,
        templates: &templates,
        meeting,
        rule,
        recipient: &Recipient::List,
        revision: &rev,
        message_id: &id,
        thread_root: None,
        date: Timestamp::UNIX_EPOCH,
        change: None,
        invite_ics: &ics,
    })
    .expect_err("refused");
    assert!(err.to_string().contains("must be one line"), "{err}");
}

#[test]
fn preview_prints_the_subject_and_text_or_the_whole_message() {
    let out = convenor(&[
        "preview",
        "--config",
        "config/lednet.toml",
        "--meeting",
        "2023-06-07",
        "--email",
        "reminder-day",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(
            "Subject: Reminder: LEDNet meeting, Wednesday 7 June 2023, 10:00–12:30 BST\n\n"
        ),
        "{stdout}"
    );

    let out = convenor(&[
        "preview",
        "--config",
        "config/lednet.toml",
        "--meeting",
        "2023-06-07",
        "--email",
        "lead-nudge",
        "--recipient",
        "lead:future-transport",
        "--eml",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = parse(&out.stdout);
    assert_eq!(
        header(&m, "to"),
        ["\"Lead to be confirmed (placeholder)\" <future-transport-lead@example.org>"]
    );
    assert_eq!(m["tree"]["children"][1]["calendar"]["method"], "PUBLISH");

    let out = convenor(&[
        "preview",
        "--config",
        "config/lednet.toml",
        "--meeting",
        "2099-01-01",
        "--email",
        "lead-nudge",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no meeting `2099-01-01`"));
}

#[test]
fn send_test_through_the_file_transport_prints_where_it_went() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = write_config(dir.path(), &example_config_text());
    let out = convenor(&[
        "send-test",
        "--config",
        path.to_str().expect("utf-8"),
        "--to",
        "someone@example.org",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("written to "), "{stdout}");
    let file = stdout.trim().trim_start_matches("written to ");
    let m = parse(&std::fs::read(file).expect("eml"));
    assert_eq!(header(&m, "to"), ["someone@example.org"]);
}

#[test]
fn send_test_through_smtp_prints_the_server_reply() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = SmtpServer::start(&dir.path().join("received"), &[]);
    let text = example_config_text()
        .replace("transport = \"file\"", "transport = \"smtp\"")
        .replace(
            "# [mail.smtp]\n",
            &format!(
                "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plaintext\"\n",
                server.port
            ),
        );
    let path = write_config(dir.path(), &text);
    let out = convenor(&[
        "send-test",
        "--config",
        path.to_str().expect("utf-8"),
        "--to",
        "someone@example.org",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "250 2.0.0 Ok: queued as test-1");
    assert_eq!(server.received().len(), 1);
}

/// `convenor serve` checks the templates before it plans anything: a broken one stops a first
/// start with a non-zero exit naming the file, and the ledger holds no mail.
#[test]
fn serve_with_a_broken_template_exits_before_planning_any_mail() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = crate::support::templates_with(dir.path(), "agenda-call/body.html", |s| {
        s.replacen("<p>Dear colleagues,</p>", "<p>{% if %}</p>", 1)
    });
    let path = config_with_templates(dir.path(), &t);
    let out = crate::daemon::harness::serve_command(&path)
        .output()
        .expect("run convenor serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("agenda-call/body.html"), "{stderr}");
    let state = dir.path().join("state");
    let store = convenor::ledger::SqliteStore::open_in(&state).expect("ledger");
    assert_eq!(
        convenor::ledger::Store::rows(&store).expect("rows").len(),
        0,
        "nothing planned"
    );
}
