//! The agenda loop end to end: the CLI over a real agenda store, the meeting and lead pages
//! against the real server (reqwest), and the compiled agenda in the feed (read back by Python's
//! icalendar) and in mail received by a real SMTP server.

use std::process::Output;

use serde_json::Value;

use crate::{
    feed::parse_ics,
    support::{binary, example_config_text, write_config},
};

/// Runs the binary with `--config <config>` and arguments.
fn cli(config: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run convenor")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add(config: &std::path::Path, meeting: &str, priority: &str, title: &str) -> String {
    ok(&cli(
        config,
        &crate::support::agenda_add_args(meeting, priority, title),
    ))
}

fn feed_event(config: &std::path::Path, meeting: &str) -> Value {
    let ics = ok(&cli(config, &["ics"]));
    let v = parse_ics(&ics);
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["uid"].as_str().is_some_and(|u| u.contains(meeting)))
        .cloned()
        .expect("event of the meeting")
}

#[test]
fn cli_adds_decides_orders_and_the_feed_shows_the_agenda() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &example_config_text());
    assert!(add(&config, "2023-04-19", "future-transport", "Bus lanes").contains("#1"));
    assert!(add(&config, "2023-04-19", "future-transport", "Cycle hangars").contains("#2"));
    assert!(add(&config, "2023-04-19", "finance-investment", "Green bonds").contains("#3"));

    // Bad input is refused naming the field, and changes nothing.
    let bad = cli(
        &config,
        &[
            "agenda",
            "add",
            "--meeting",
            "2023-04-19",
            "--priority",
            "nope",
            "--name",
            "X",
            "--organisation",
            "Y",
            "--email",
            "not-an-address",
            "--title",
            "T",
            "--summary",
            "S",
            "--minutes",
            "500",
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    for field in ["--priority", "--email", "--minutes"] {
        assert!(err.contains(field), "{err}");
    }
    // A proposal is decided only under its own meeting.
    let wrong = cli(
        &config,
        &["agenda", "accept", "--meeting", "2023-06-07", "1"],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("belongs to meeting 2023-04-19"));
    let missing = cli(
        &config,
        &["agenda", "accept", "--meeting", "2023-04-19", "99"],
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no proposal #99"));

    for (cmd, id) in [("accept", "1"), ("accept", "2"), ("decline", "3")] {
        let out = ok(&cli(
            &config,
            &[
                "agenda",
                cmd,
                "--meeting",
                "2023-04-19",
                id,
                "--by",
                "Team Tess",
            ],
        ));
        assert!(out.contains("reload"), "{out}");
    }
    ok(&cli(
        &config,
        &[
            "agenda",
            "order",
            "--meeting",
            "2023-04-19",
            "2",
            "--position",
            "1",
            "--minutes",
            "20",
        ],
    ));
    let list = ok(&cli(
        &config,
        &["agenda", "list", "--meeting", "2023-04-19"],
    ));
    assert!(
        list.contains("#1 2023-04-19 future-transport accepted by Team Tess"),
        "{list}"
    );
    assert!(
        list.contains("#3 2023-04-19 finance-investment declined"),
        "{list}"
    );
    let agenda: Vec<&str> = list
        .lines()
        .skip_while(|l| !l.starts_with("Agenda of"))
        .collect();
    assert_eq!(
        agenda,
        [
            "Agenda of 2023-04-19 (35 min):",
            "  Future Transport:",
            "    10:00–10:20 Cycle hangars (20 min, presented by Ada Lovelace (Camden))",
            "    10:20–10:35 Bus lanes (15 min, presented by Ada Lovelace (Camden))",
        ]
    );

    // The feed's DESCRIPTION carries the agenda; the declined item is not in it.
    let ev = feed_event(&config, "2023-04-19");
    let desc = ev["description"].as_str().expect("description");
    assert!(
        desc.contains("Agenda:\nFuture Transport:\n  10:00–10:20 Cycle hangars"),
        "{desc}"
    );
    assert!(!desc.contains("Green bonds"), "{desc}");
    let other = feed_event(&config, "2023-02-24");
    assert!(
        !other["description"]
            .as_str()
            .expect("d")
            .contains("Agenda:")
    );

    // Moving an item to another meeting moves it in the feed.
    ok(&cli(
        &config,
        &[
            "agenda",
            "move",
            "--meeting",
            "2023-04-19",
            "1",
            "--to",
            "2023-06-07",
        ],
    ));
    let moved = feed_event(&config, "2023-06-07");
    assert!(
        moved["description"]
            .as_str()
            .expect("d")
            .contains("Bus lanes")
    );
    let bad_move = cli(
        &config,
        &[
            "agenda",
            "move",
            "--meeting",
            "2023-06-07",
            "1",
            "--to",
            "2099-01-01",
        ],
    );
    assert!(String::from_utf8_lossy(&bad_move.stderr).contains("no meeting `2099-01-01`"));
}

/// The CLI's links, issued with the config's `[agenda] lead_link_lifetime` (here 2 hours):
/// the command says until when, and the stored expiry is the issue plus the lifetime.
#[test]
fn lead_links_are_issued_rotated_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = example_config_text();
    assert!(text.contains("lead_link_lifetime = \"30d\""));
    let text = text.replace(
        "lead_link_lifetime = \"30d\"",
        "lead_link_lifetime = \"2h\"",
    );
    let config = write_config(dir.path(), &text);
    let link = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("http://"))
            .expect("a link")
            .to_owned()
    };
    let issued = ok(&cli(
        &config,
        &["agenda", "token", "issue", "--priority", "future-places"],
    ));
    assert!(issued.contains("valid for 2 hours, until "), "{issued}");
    let first = link(&issued);
    assert!(first.starts_with("http://127.0.0.1:8080/leads/") && first.ends_with('/'));
    let token = first
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("token");
    assert_eq!(token.len(), 64);
    {
        let store = convenor::agenda::AgendaStore::open_in(&dir.path().join("state"))
            .expect("agenda store");
        let row = store
            .token(&convenor::agenda::token::hash(token))
            .expect("lookup")
            .expect("stored");
        assert_eq!(
            row.expires - row.issued,
            jiff::SignedDuration::from_hours(2)
        );
    }
    let second = link(&ok(&cli(
        &config,
        &["agenda", "token", "rotate", "--priority", "future-places"],
    )));
    assert_ne!(first, second);
    let revoked = ok(&cli(
        &config,
        &["agenda", "token", "revoke", "--priority", "future-places"],
    ));
    assert!(revoked.contains("revoked 1 link(s)"), "{revoked}");
    // Only hashes are stored: the token's text is nowhere in the state directory.
    for entry in std::fs::read_dir(dir.path().join("state")).expect("state") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }
    let unknown = cli(&config, &["agenda", "token", "issue", "--priority", "nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no priority `nope`"));
}

mod pages;

mod web {
    //! The pages against the real daemon, the lead's mail and the agenda pack through a real
    //! SMTP server, and a restart in between.

    use std::{
        path::{Path, PathBuf},
        process::{Command, Stdio},
    };

    use jiff::{SignedDuration, Timestamp, ToSpan as _, tz::TimeZone};
    use reqwest::{StatusCode, header};
    use serde_json::Value;

    use super::{cli, ok};
    use crate::{
        daemon::harness::{Daemon, Sink, wait_for},
        feed::parse_ics,
        support::{binary, repo, run_tool, write_config},
    };

    /// A free loopback port (bound, then released for the daemon).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    }

    /// A zone whose local time is between 00:10 and 22:00 now, so a meeting starting in 30
    /// minutes for 20 minutes stays on today's date there (one of three always is).
    pub fn zone() -> &'static str {
        let now = Timestamp::now();
        ["Europe/London", "Asia/Tokyo", "America/New_York"]
            .into_iter()
            .find(|z| {
                let l = now.to_zoned_datetime(TimeZone::get(z).expect("zone"));
                let minutes = i32::from(l.hour()) * 60 + i32::from(l.minute());
                (10..=22 * 60).contains(&minutes)
            })
            .expect("one of three zones is between 00:10 and 22:00")
    }

    /// Config text, in `zone`: meetings `m1` (at `m1`, local date and times) and `m2` (cancelled,
    /// far ahead), priorities p1 and p2, the server at `port`, mail to the SMTP sink, and
    /// `emails` as the schedule.
    pub fn text(zone: &str, port: u16, smtp: u16, m1: (&str, &str, &str), emails: &str) -> String {
        format!(
            "[network]\nshort_name = \"LEDNet\"\nname = \"Test network\"\n\
             time_zone = \"{zone}\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
             contact = \"Team <team@example.org>\"\n\
             [mail]\nfrom = \"team@example.org\"\nlist = [\"list@example.org\"]\n\
             # templates_dir = \"templates\"\ntransport = \"smtp\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"plaintext\"\ntimeout = \"5s\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\
             # [state]\n# dir = \"state\"\n\
             [scheduler]\nmax_catch_up = 100\nretry_base = \"1s\"\n\
             [[priority]]\nid = \"p1\"\nname = \"Future Transport\"\nsummary = \"s\"\n\
             [priority.lead]\nname = \"Lena Lead\"\nemail = \"lead1@example.org\"\n\
             [[priority]]\nid = \"p2\"\nname = \"Future Places\"\nsummary = \"s\"\n\
             [priority.lead]\nname = \"Paul Lead\"\nemail = \"lead2@example.org\"\n\
             [[meeting]]\nid = \"m1\"\ndate = {}\nstart = \"{}\"\nend = \"{}\"\ntitle = \"Network meeting\"\n\
             [[meeting]]\nid = \"m2\"\ndate = 2099-03-03\nstart = \"10:00\"\nend = \"11:00\"\n\
             title = \"Cancelled meeting\"\nstatus = \"cancelled\"\n{emails}",
            m1.0, m1.1, m1.2
        )
    }

    /// A meeting `m3` long after `m1`, to move proposals to (appended to [`text`]).
    pub const LATER_MEETING: &str = "[[meeting]]\nid = \"m3\"\ndate = 2099-05-05\n\
        start = \"10:00\"\nend = \"11:00\"\ntitle = \"Later meeting\"\n";

    /// `m1` two months ahead, 10:00 to 12:00: the call for items is open.
    pub fn far(zone: &str) -> (String, String, String) {
        let d = Timestamp::now()
            .to_zoned_datetime(TimeZone::get(zone).expect("zone"))
            .date()
            .checked_add(60.days())
            .expect("date");
        (d.to_string(), "10:00".into(), "12:00".into())
    }

    /// `m1` starting in 30 minutes (local time in `zone`, see [`zone`]) and the agenda pack due
    /// `secs` seconds from now.
    pub fn soon(zone: &str, secs: i64) -> Option<((String, String, String), String)> {
        let tz = TimeZone::get(zone).expect("zone");
        let now = Timestamp::now();
        let local = now.to_zoned_datetime(tz);
        let start = local
            .round(jiff::Unit::Minute)
            .ok()?
            .checked_add(SignedDuration::from_mins(30))
            .ok()?;
        let end = start.checked_add(SignedDuration::from_mins(20)).ok()?;
        if end.date() != local.date() || start.date() != local.date() {
            return None;
        }
        let due = now.checked_add(SignedDuration::from_secs(secs)).ok()?;
        let before = start.timestamp().duration_since(due).as_secs();
        let email = format!(
            "[[email]]\nid = \"agenda-pack\"\ntemplate = \"agenda-pack\"\nbefore = \"{before}s\"\n\
             audience = \"list\"\ngrace = \"1h\"\n"
        );
        Some((
            (
                start.date().to_string(),
                start.strftime("%H:%M").to_string(),
                end.strftime("%H:%M").to_string(),
            ),
            email,
        ))
    }

    /// `convenor serve` on the config's own `[http] listen`.
    pub fn spawn(config: &Path, log: &Path) -> Daemon {
        let child = Command::new(binary())
            .args(["--log-json", "--config"])
            .arg(config)
            .arg("serve")
            .current_dir(repo())
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start convenor serve");
        let mut d = Daemon {
            child,
            log: log.to_path_buf(),
        };
        d.wait_ready();
        d
    }

    /// Every message in the sink's directory, parsed by Python's email package.
    pub fn mails(dir: &Path) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).expect("read eml");
                let out = run_tool("mime_parse.py", &[], &bytes);
                serde_json::from_slice(&out.stdout).expect("json")
            })
            .collect()
    }

    /// A header of a parsed mail (first value).
    pub fn hdr(mail: &Value, name: &str) -> String {
        mail["headers"]
            .as_object()
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v[0].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// Every decoded text part of a parsed mail, concatenated.
    pub fn texts(node: &Value) -> String {
        let mut out = node["text"].as_str().unwrap_or_default().to_owned();
        for c in node["children"].as_array().into_iter().flatten() {
            out.push_str(&texts(c));
        }
        out
    }

    /// The lead link in a proposal-received mail.
    pub fn lead_link(mail: &Value) -> String {
        let t = texts(&mail["tree"]);
        let i = t.find("/leads/").expect("a lead link");
        let start = t[..i].rfind("http://").expect("link start");
        t[start..i + "/leads/".len() + 65].to_owned()
    }

    fn client() -> reqwest::Client {
        crate::support::no_redirect_client()
    }

    /// Ada's proposal `title` for meeting m1 (priority p1), posted to the daemon on `port`
    /// (redirects followed: 200 on the page confirming it).
    pub async fn propose_in_m1(port: u16, title: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/meetings/m1/proposals"))
            .form(&[
                ("name", "Ada"),
                ("organisation", "Camden"),
                ("email", "ada@camden.example"),
                ("priority", "p1"),
                ("title", title),
                ("summary", "S"),
                ("minutes", "10"),
            ])
            .send()
            .await
            .expect("post")
    }

    pub fn good(title: &str, priority: &str, email: &str) -> Vec<(&'static str, String)> {
        vec![
            ("name", "Ada Lovelace".into()),
            ("organisation", "Camden".into()),
            ("email", email.into()),
            ("priority", priority.into()),
            ("title", title.into()),
            (
                "summary",
                "Results of the trial <b>and</b> next steps.".into(),
            ),
            ("presents", "yes".into()),
            ("minutes", "15".into()),
            ("website", String::new()),
        ]
    }

    fn count(config: &Path) -> usize {
        ok(&cli(config, &["agenda", "list"]))
            .lines()
            .filter(|l| l.starts_with('#'))
            .count()
    }

    /// The CSRF token of a proposal's forms on a lead page.
    pub fn csrf(page: &str, proposal: i64) -> String {
        let at = page
            .find(&format!("id=\"proposal-{proposal}\""))
            .expect("proposal on the page");
        let rest = &page[at..];
        let v = rest.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
        rest[v..v + 64].to_owned()
    }

    fn event(ics: &str, uid_part: &str) -> Value {
        parse_ics(ics)["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["uid"].as_str().is_some_and(|u| u.contains(uid_part)))
            .cloned()
            .expect("event")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn propose_decide_refuse_restart_and_the_agenda_reaches_feed_and_mail() {
        let dir = tempfile::tempdir().expect("tmp");
        let inbox = dir.path().join("inbox");
        let sink = Sink::start(&inbox, None);
        let port = free_port();
        let zone = zone();
        let (d, s, e) = far(zone);
        let config = write_config(
            dir.path(),
            &format!(
                "{}[agenda]\nlead_link_lifetime = \"3d\"\n",
                text(zone, port, sink.port, (&d, &s, &e), "")
            ),
        );
        let log = dir.path().join("serve1.log");
        let mut daemon = spawn(&config, &log);
        let base = format!("http://127.0.0.1:{port}");
        let c = client();

        // The meeting page: meeting, priorities with leads, an empty agenda, the open form.
        let page = c
            .get(format!("{base}/meetings/m1"))
            .send()
            .await
            .expect("get");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("body");
        for want in [
            "Network meeting",
            "Lena Lead",
            "No items have been agreed yet",
            "id=\"propose\"",
        ] {
            assert!(html.contains(want), "{want}\n{html}");
        }

        // A proposal is stored, answered with a redirect to the page, which says what happens
        // next.
        let res = c
            .post(format!("{base}/meetings/m1/proposals"))
            .form(&good("Bus lanes", "p1", "ada@camden.example"))
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let to = res.headers()[header::LOCATION]
            .to_str()
            .expect("location")
            .to_owned();
        assert_eq!(to, "/meetings/m1?proposed=1");
        let html = c
            .get(format!("{base}{to}"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        assert!(html.contains("proposal #1"), "{html}");
        assert_eq!(count(&config), 1);

        // The lead gets a mail with a private link, copy to the team.
        wait_for(
            "the lead's mail",
            || mails(&inbox).len() == 1,
            || daemon.log_text(),
        );
        let mail = &mails(&inbox)[0];
        assert!(hdr(mail, "To").contains("lead1@example.org"), "{mail}");
        assert!(hdr(mail, "Cc").contains("team@example.org"), "{mail}");
        assert!(hdr(mail, "Subject").contains("Bus lanes"), "{mail}");
        let link = lead_link(mail);
        assert!(link.starts_with(&format!("{base}/leads/")), "{link}");
        // Its token expires the config's `lead_link_lifetime` after it was issued, and the mail
        // says when, in the network's zone.
        {
            let store = convenor::agenda::AgendaStore::open_in(&dir.path().join("state"))
                .expect("agenda store");
            let raw = link
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .expect("token");
            let row = store
                .token(&convenor::agenda::token::hash(raw))
                .expect("lookup")
                .expect("stored");
            assert_eq!(row.expires - row.issued, SignedDuration::from_hours(72));
            let until = row
                .expires
                .to_zoned_datetime(TimeZone::get(zone).expect("zone"))
                .strftime("%A %-d %B %Y, %H:%M %Z")
                .to_string();
            assert!(
                texts(&mail["tree"]).contains(&format!("The link works until {until};")),
                "{until}: {mail}"
            );
        }

        // Refusals change nothing.
        let post = |body: reqwest::RequestBuilder| async move { body.send().await.expect("post") };
        let url = format!("{base}/meetings/m1/proposals");
        let mut honey = good("Spam", "p1", "bot@example.org");
        honey.retain(|(k, _)| *k != "website");
        honey.push(("website", "http://spam.example".into()));
        let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
            (
                c.post(&url).form(&honey),
                StatusCode::BAD_REQUEST,
                "automated",
            ),
            (
                c.post(&url)
                    .header(header::ORIGIN, "https://evil.example")
                    .form(&good("X", "p1", "x@example.org")),
                StatusCode::FORBIDDEN,
                "another site",
            ),
            (
                c.post(&url)
                    .header("sec-fetch-site", "cross-site")
                    .form(&good("X", "p1", "x@example.org")),
                StatusCode::FORBIDDEN,
                "another site",
            ),
            (
                c.post(&url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(format!("name={}", "a".repeat(20_000))),
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
            ),
            (
                c.post(&url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body("name=a&name=b"),
                StatusCode::BAD_REQUEST,
                "posted twice",
            ),
            (
                c.post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body("{}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "x-www-form-urlencoded",
            ),
            (
                c.post(&url).form(&good("X", "p1", "not-an-address")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "email: is not a mail address",
            ),
            (
                c.post(&url)
                    .form(&good(&"t".repeat(151), "p9", "x@example.org")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "priority: must be one of",
            ),
            (
                c.post(format!("{base}/meetings/nope/proposals"))
                    .form(&good("X", "p1", "x@example.org")),
                StatusCode::NOT_FOUND,
                "no meeting",
            ),
            (
                c.post(format!("{base}/meetings/m2/proposals")).form(&good(
                    "X",
                    "p1",
                    "x@example.org",
                )),
                StatusCode::CONFLICT,
                "closed",
            ),
        ];
        for (req, status, says) in cases {
            let res = post(req).await;
            let got = res.status();
            let body = res.text().await.expect("body");
            assert_eq!(got, status, "{body}");
            assert!(body.contains(says), "{says}: {body}");
        }
        assert_eq!(count(&config), 1, "a refused request stored something");

        // The per-address limit: five an hour from one address.
        for i in 0..4 {
            let res = post(c.post(&url).form(&good(
                &format!("Extra {i}"),
                "p2",
                "ada@camden.example",
            )))
            .await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
        }
        let res = post(
            c.post(&url)
                .form(&good("One too many", "p2", "ada@camden.example")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(count(&config), 5);

        // The lead page lists p1's proposal only, with CSRF-protected buttons.
        let res = c.get(&link).send().await.expect("lead page");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        let html = res.text().await.expect("body");
        assert!(
            html.contains("Bus lanes") && !html.contains("Extra 0"),
            "{html}"
        );
        assert!(html.contains("This link works until"), "{html}");
        assert!(
            html.contains("&lt;b&gt;and&lt;&#x2f;b&gt;") || html.contains("&lt;b&gt;and"),
            "escaped: {html}"
        );
        let token = csrf(&html, 1);
        let accept = format!("{link}proposals/1/accept");
        let forged = format!("{base}/leads/{}/", "ab".repeat(32));
        for (req, status) in [
            (c.get(&forged), StatusCode::NOT_FOUND),
            (c.get(format!("{base}/leads/short/")), StatusCode::NOT_FOUND),
            (
                c.post(format!("{forged}proposals/1/accept"))
                    .form(&[("csrf", &token)]),
                StatusCode::NOT_FOUND,
            ),
            (
                c.post(&accept).form(&[("csrf", "0".repeat(64))]),
                StatusCode::FORBIDDEN,
            ),
            (
                c.post(&accept).form(&[("other", "1")]),
                StatusCode::FORBIDDEN,
            ),
            (
                c.post(&accept)
                    .header(header::ORIGIN, "https://evil.example")
                    .form(&[("csrf", &token)]),
                StatusCode::FORBIDDEN,
            ),
            // Another priority's proposal is not this lead's to decide.
            (
                c.post(format!("{link}proposals/2/accept"))
                    .form(&[("csrf", &token)]),
                StatusCode::NOT_FOUND,
            ),
        ] {
            let res = req.send().await.expect("request");
            assert_eq!(
                res.status(),
                status,
                "{}",
                res.text().await.unwrap_or_default()
            );
        }
        let ics = c
            .get(format!("{base}/calendar.ics"))
            .send()
            .await
            .expect("feed")
            .text()
            .await
            .expect("ics");
        let before = event(&ics, "m1");
        assert!(
            !before["description"]
                .as_str()
                .expect("d")
                .contains("Bus lanes")
        );
        assert_eq!(before["sequence"], 0);

        // The lead accepts: recorded with who and when; the feed shows it at once, SEQUENCE up.
        let res = c
            .post(&accept)
            .header(header::ORIGIN, base.as_str())
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf", &token)])
            .send()
            .await
            .expect("accept");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let list = ok(&cli(&config, &["agenda", "list", "--meeting", "m1"]));
        assert!(
            list.contains("#1 m1 p1 accepted by Lena Lead <lead1@example.org>, lead of p1"),
            "{list}"
        );
        let ics = c
            .get(format!("{base}/calendar.ics"))
            .send()
            .await
            .expect("feed")
            .text()
            .await
            .expect("ics");
        let after = event(&ics, "m1");
        let desc = after["description"].as_str().expect("d");
        assert!(desc.contains("Future Transport:\n  10:00–10:15 Bus lanes (15 min, presented by Ada Lovelace (Camden))"), "{desc}");
        assert_eq!(after["sequence"], 1);
        let html = c
            .get(format!("{base}/meetings/m1"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("body");
        assert!(
            html.contains("class=\"item\"") && html.contains("Bus lanes"),
            "{html}"
        );

        // A proposal for the cancelled meeting is kept and shown.
        ok(&cli(
            &config,
            &[
                "agenda",
                "add",
                "--meeting",
                "m2",
                "--priority",
                "p2",
                "--name",
                "Bo",
                "--organisation",
                "Hackney",
                "--email",
                "bo@hackney.example",
                "--title",
                "Kept item",
                "--summary",
                "S",
                "--minutes",
                "10",
            ],
        ));
        let html = c
            .get(format!("{base}/meetings/m2"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("body");
        assert!(
            html.contains("This meeting is cancelled") && html.contains("Kept item"),
            "{html}"
        );

        // A rotated link is stale: 410, and its buttons do nothing.
        let rotated = ok(&cli(
            &config,
            &["agenda", "token", "rotate", "--priority", "p1"],
        ));
        let new_link = rotated
            .lines()
            .find(|l| l.starts_with("http://"))
            .expect("link")
            .to_owned();
        assert_eq!(
            c.get(&link).send().await.expect("old").status(),
            StatusCode::GONE
        );
        let res = c
            .post(format!("{link}proposals/1/decline"))
            .form(&[("csrf", &token)])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), StatusCode::GONE);
        assert_eq!(
            c.get(&new_link).send().await.expect("new").status(),
            StatusCode::OK
        );

        // Restart with the meeting moved to today and the agenda pack due in a few seconds.
        daemon.signal("TERM");
        let _ = daemon.child.wait();
        let (m1, pack) = soon(zone, 4).expect("a meeting later today in the chosen zone");
        let moved = std::fs::read_to_string(&config).expect("config").replace(
            &format!("date = {d}\nstart = \"{s}\"\nend = \"{e}\""),
            &format!("date = {}\nstart = \"{}\"\nend = \"{}\"", m1.0, m1.1, m1.2),
        );
        std::fs::write(&config, format!("{moved}{pack}")).expect("rewrite config");
        let log2 = dir.path().join("serve2.log");
        let daemon = spawn(&config, &log2);
        let n = mails(&inbox).len();
        wait_for(
            "the agenda pack",
            || mails(&inbox).len() > n,
            || daemon.log_text(),
        );
        let pack = mails(&inbox)
            .into_iter()
            .find(|m| hdr(m, "Subject").starts_with("Agenda:"))
            .expect("the agenda pack");
        assert_eq!(hdr(&pack, "To"), "list@example.org");
        let body = texts(&pack["tree"]);
        assert!(
            body.contains("Future Transport")
                && body.contains("Bus lanes, presented by Ada Lovelace (Camden)"),
            "{body}"
        );
        assert!(!body.contains("Extra 0"), "only accepted items: {body}");
        let ics = c
            .get(format!("{base}/calendar.ics"))
            .send()
            .await
            .expect("feed")
            .text()
            .await
            .expect("ics");
        let ev = event(&ics, "m1");
        assert!(ev["description"].as_str().expect("d").contains("Bus lanes"));
        assert!(ev["sequence"].as_u64().expect("seq") >= 2, "{ev}");
        assert_eq!(count(&config), 6, "nothing lost across the restart");
        // The meeting is now past its call's deadline: no form, and a post is refused.
        let html = c
            .get(format!("{base}/meetings/m1"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("body");
        assert!(
            html.contains("id=\"closed\"") && !html.contains("id=\"propose\""),
            "{html}"
        );
        assert!(
            html.contains("Bus lanes"),
            "the agreed agenda is still shown: {html}"
        );
        let res = c
            .post(&url)
            .form(&good("Late", "p1", "late@example.org"))
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(count(&config), 6);
    }
}

/// The compiled agenda in the reminder, the agenda pack and the lead's mail, rendered from the
/// shipped templates against the shipped config.
#[test]
fn reminders_agenda_pack_and_lead_mail_show_the_agenda() {
    use convenor::{
        agenda::{Proposal, Status, model::compile, notify},
        mail::{self, ComposeInput, Templates},
        model::EmailId,
        revision::next_revision,
        schedule::Recipient,
    };
    let mut config = crate::feed::config_from(&example_config_text());
    let meeting = config.meetings[1].clone();
    let proposal = Proposal {
        id: 7,
        meeting: meeting.id.to_string(),
        priority: "future-places".into(),
        name: "Ada <Lovelace>".into(),
        organisation: "Camden".into(),
        email: "ada@camden.example".into(),
        title: "Heat pumps & schools".into(),
        summary: "Line one\nLine two".into(),
        presents: true,
        minutes: 25,
        status: Status::Accepted,
        position: None,
        created: jiff::Timestamp::UNIX_EPOCH,
        decided_by: None,
        decided_at: None,
    };
    config.agenda = compile(&config, std::slice::from_ref(&proposal));
    let templates = Templates::load(&config.mail.templates_dir).expect("templates");
    let now = jiff::Timestamp::UNIX_EPOCH;
    let (revision, _) = next_revision(None, &config, &meeting, now);
    for email in ["reminder-week", "reminder-day", "agenda-pack"] {
        let rule = config
            .email(&EmailId::parse(email).expect("id"))
            .expect("rule")
            .clone();
        let r = mail::render(&ComposeInput {
            config: &config,
            templates: &templates,
            meeting: &meeting,
            rule: &rule,
            recipient: &Recipient::List,
            revision: &revision,
            message_id: "<x@example.org>",
            thread_root: None,
            date: now,
            change: None,
            invite_ics: "",
        })
        .expect("render");
        assert!(
            r.text.contains(
                "10:00–10:25  Heat pumps & schools, presented by Ada <Lovelace> (Camden)"
            ),
            "{email}: {}",
            r.text
        );
        assert!(
            r.html.contains("Heat pumps &amp; schools") && r.html.contains("Ada &lt;Lovelace&gt;"),
            "{email}: {}",
            r.html
        );
    }
    let mut waiting = proposal.clone();
    waiting.status = Status::Proposed;
    let link = notify::LeadLink {
        url: "https://x.example/leads/abc/".into(),
        expires: "2026-02-09T10:00:00Z".parse().expect("instant"),
    };
    let m = notify::compose(&config, &templates, &waiting, &link, now).expect("lead mail");
    let text = String::from_utf8(m.formatted()).expect("utf-8");
    assert!(
        text.lines()
            .any(|l| l.starts_with("To: ") && l.ends_with("<future-places-lead@example.org>")),
        "{text}"
    );
    assert!(
        text.contains("Cc: \"LEDNet team\" <lednet-team@example.org>"),
        "{text}"
    );
    assert!(
        text.contains("Subject: New agenda proposal for Future Places: Heat pumps & schools"),
        "{text}"
    );
}

/// A change made from the CLI reaches the running daemon's feed at its next reload (SIGHUP), as
/// the CLI says; a reload raises SEQUENCE once, and a second reload without change does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_change_shows_in_the_served_feed_after_sighup() {
    use crate::daemon::harness::{Sink, wait_for};
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let sink = Sink::start(&dir.path().join("inbox"), None);
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(
        dir.path(),
        &web::text(zone, port, sink.port, (&d, &s, &e), ""),
    );
    let daemon = spawn(&config, &dir.path().join("serve.log"));
    let feed = || async {
        let ics = reqwest::get(format!("http://127.0.0.1:{port}/calendar.ics"))
            .await
            .expect("feed")
            .text()
            .await
            .expect("ics");
        crate::feed::parse_ics(&ics)["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["uid"].as_str().is_some_and(|u| u.contains("m1")))
            .cloned()
            .expect("m1")
    };
    add(&config, "m1", "p1", "From the shell");
    let out = ok(&cli(&config, &["agenda", "accept", "--meeting", "m1", "1"]));
    assert!(out.contains("after its next reload"), "{out}");
    let before = feed().await;
    assert!(
        !before["description"]
            .as_str()
            .expect("d")
            .contains("From the shell")
    );
    let log = dir.path().join("serve.log");
    let reloads = |n: usize| {
        let log = log.clone();
        move || daemon_log(&log).matches("config reloaded").count() >= n
    };
    daemon.signal("HUP");
    wait_for("the reload", reloads(1), || daemon.log_text());
    let after = feed().await;
    assert!(
        after["description"]
            .as_str()
            .expect("d")
            .contains("From the shell"),
        "{after}"
    );
    assert_eq!(after["sequence"], 1);
    daemon.signal("HUP");
    wait_for("the second reload", reloads(2), || daemon.log_text());
    assert_eq!(feed().await["sequence"], 1);
}

fn daemon_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lead's mail is owed, not lost: with the SMTP server down the proposal is stored and the
/// mail retried; after a restart with the server up it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_mail_that_could_not_go_out_is_sent_after_a_restart() {
    use crate::daemon::harness::{Sink, wait_for};
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let inbox = dir.path().join("inbox");
    let smtp = free_port();
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(dir.path(), &web::text(zone, port, smtp, (&d, &s, &e), ""));
    let daemon = spawn(&config, &dir.path().join("serve1.log"));
    let res = propose_in_m1(port, "Owed mail").await;
    // Followed: the POST's 303 leads to the page confirming it.
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert!(res.url().as_str().ends_with("/meetings/m1?proposed=1"));
    wait_for(
        "a failed attempt",
        || daemon.log_text().contains("will retry"),
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    let mut daemon = daemon;
    let _ = daemon.child.wait();

    let _sink = Sink::start(&inbox, Some(smtp));
    let daemon = spawn(&config, &dir.path().join("serve2.log"));
    wait_for(
        "the owed mail",
        || mails(&inbox).len() == 1,
        || daemon.log_text(),
    );
    let mail = &mails(&inbox)[0];
    assert!(hdr(mail, "Subject").contains("Owed mail"), "{mail}");
    // Sent once: recorded, so a further restart does not send it again.
    drop(daemon);
    let again = spawn(&config, &dir.path().join("serve3.log"));
    wait_for(
        "the count of owed mails",
        || again.log_text().contains("mails to leads owed"),
        || again.log_text(),
    );
    assert!(
        again.log_text().contains("\"owed\":0"),
        "{}",
        again.log_text()
    );
    assert_eq!(mails(&inbox).len(), 1);
}

/// A transient failure is retried, not lost, and with the daemon's checked templates: the SMTP
/// server answers 451 to the message (keeping what it was sent), the template on disk is then
/// broken without a reload, and a working server comes up on the same port. The lead gets
/// exactly one mail, with the Message-ID and the lead link of the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_mail_refused_for_now_is_retried_with_the_same_message_id() {
    use crate::{
        daemon::harness::{Sink, wait_for},
        mail::SmtpServer,
    };
    use web::*;

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }

    let dir = tempfile::tempdir().expect("tmp");
    let (refused, inbox) = (dir.path().join("refused"), dir.path().join("inbox"));
    let templates = dir.path().join("templates");
    copy_dir(&crate::support::repo().join("templates"), &templates);
    let failing = SmtpServer::start(
        &refused,
        &["--fail-at", "data", "--code", "451", "--keep-refused"],
    );
    let smtp = failing.port;
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let text = web::text(zone, port, smtp, (&d, &s, &e), "").replace(
        "# templates_dir = \"templates\"",
        &format!("templates_dir = \"{}\"", templates.display()),
    );
    let config = write_config(dir.path(), &text);
    let daemon = spawn(&config, &dir.path().join("serve.log"));
    // Edited on disk but neither checked nor reloaded: the running daemon must not use it.
    std::fs::write(
        templates.join("proposal-received/subject.txt"),
        "{{ no_such_variable }}\n",
    )
    .expect("break the template");
    let res = propose_in_m1(port, "Retried mail").await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    wait_for(
        "two refused attempts",
        || mails(&refused).len() >= 2 && daemon.log_text().contains("will retry"),
        || daemon.log_text(),
    );
    drop(failing);
    let first = mails(&refused).remove(0);
    let _sink = Sink::start(&inbox, Some(smtp));
    wait_for(
        "the retried mail",
        || daemon.log_text().contains("the lead was mailed"),
        || daemon.log_text(),
    );
    let got = mails(&inbox);
    assert_eq!(got.len(), 1, "exactly one mail: {got:?}");
    let mail = &got[0];
    assert!(hdr(mail, "Subject").contains("Retried mail"), "{mail}");
    assert!(hdr(mail, "To").contains("lead1@example.org"), "{mail}");
    let id = hdr(mail, "Message-ID");
    assert!(id.starts_with("<proposal.1.m1."), "{id}");
    assert_eq!(
        id,
        hdr(&first, "Message-ID"),
        "the first attempt's Message-ID"
    );
    assert_eq!(lead_link(mail), lead_link(&first), "one lead link per run");
}

/// The lead mail goes To the lead and Cc the team. When the relay puts the lead off (451 to its
/// RCPT TO, twice) and takes the team, the team gets the mail once, at the first attempt, and
/// the retries go to the lead alone, with the same Message-ID. Before, every retry sent the
/// whole envelope again, a copy to the team each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_put_off_gets_the_retries_alone_and_the_team_one_copy() {
    use crate::{daemon::harness::wait_for, mail::SmtpServer};
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let inbox = dir.path().join("inbox");
    let server = SmtpServer::start(
        &inbox,
        &[
            "--refuse-rcpt",
            "lead1@example.org=451",
            "--refuse-rcpt-times",
            "2",
        ],
    );
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let text = web::text(zone, port, server.port, (&d, &s, &e), "");
    let daemon = spawn(
        &write_config(dir.path(), &text),
        &dir.path().join("serve.log"),
    );
    let res = propose_in_m1(port, "Put off").await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    wait_for(
        "the lead mailed",
        || daemon.log_text().contains("the lead was mailed"),
        || daemon.log_text(),
    );
    let envelopes: Vec<Value> = (1..)
        .map(|n| inbox.join(format!("{n}.json")))
        .take_while(|p| p.exists())
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("meta")).expect("json"))
        .collect();
    let rcpts: Vec<&Value> = envelopes.iter().map(|m| &m["rcpt_tos"]).collect();
    assert_eq!(
        rcpts,
        [
            &serde_json::json!(["team@example.org"]),
            &serde_json::json!(["lead1@example.org"])
        ],
        "the team at the first attempt, the lead at the third, nobody twice"
    );
    let got = mails(&inbox);
    assert_eq!(got.len(), 2);
    assert_eq!(hdr(&got[0], "Message-ID"), hdr(&got[1], "Message-ID"));
}

/// The team got the lead mail while the relay put the lead off; the daemon stops; the next
/// start sends the mail still owed to the lead alone (to a new relay: the config changed
/// between the two runs), not to the team a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_lead_mail_still_owed_goes_only_to_whom_it_has_not_reached() {
    use crate::{daemon::harness::wait_for, mail::SmtpServer};
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let (first_inbox, second_inbox) = (dir.path().join("first"), dir.path().join("second"));
    let first = SmtpServer::start(&first_inbox, &["--refuse-rcpt", "lead1@example.org=451"]);
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(
        dir.path(),
        &web::text(zone, port, first.port, (&d, &s, &e), ""),
    );
    let mut daemon = spawn(&config, &dir.path().join("first.log"));
    let res = propose_in_m1(port, "Across a restart").await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    wait_for(
        "the team mailed and the lead put off",
        || !first.received().is_empty() && daemon.log_text().contains("will retry"),
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success(), "{}", daemon.log_text());
    let second = SmtpServer::start(&second_inbox, &[]);
    write_config(
        dir.path(),
        &web::text(zone, port, second.port, (&d, &s, &e), ""),
    );
    let daemon = spawn(&config, &dir.path().join("second.log"));
    wait_for(
        "the lead mailed after the restart",
        || daemon.log_text().contains("the lead was mailed"),
        || daemon.log_text(),
    );
    let envelope: Value = serde_json::from_slice(
        &std::fs::read(second_inbox.join("1.json")).expect("the second relay's envelope"),
    )
    .expect("json");
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["lead1@example.org"])
    );
    assert_eq!(second.received().len(), 1, "one mail after the restart");
    assert_eq!(first.received().len(), 1, "the team's one copy, before it");
}

/// The whole loop in a real browser: headless Chromium (tests/tools/browser.py, DevTools
/// protocol) fills and submits the meeting page's form, the lead's mail arrives at a real SMTP
/// server, Chromium opens the lead's link and presses Accept, the meeting page and the served
/// feed show the item; after a restart the agenda pack carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_proposal_is_accepted_and_reaches_the_agenda_pack_and_the_feed() {
    use crate::{
        daemon::harness::{Sink, wait_for},
        support::run_tool,
    };
    use web::*;

    let browser = |url: &str, steps: serde_json::Value| -> Value {
        let out = run_tool("browser.py", &[url, &steps.to_string()], b"");
        serde_json::from_slice(&out.stdout).expect("browser json")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let inbox = dir.path().join("inbox");
    let sink = Sink::start(&inbox, None);
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(
        dir.path(),
        &web::text(zone, port, sink.port, (&d, &s, &e), ""),
    );
    let mut daemon = spawn(&config, &dir.path().join("serve1.log"));
    let base = format!("http://127.0.0.1:{port}");

    let v = browser(
        &format!("{base}/meetings/m1"),
        serde_json::json!([
            {"fill": {
                "name": "Grace Hopper", "organisation": "Islington", "email": "grace@islington.example",
                "priority": "p2", "title": "Street trees for shade", "summary": "A plan for 2024.",
                "presents": true, "minutes": "20"
            }},
            {"click": "#submit"},
            {"text": "#thanks"},
        ]),
    );
    // POST/redirect/GET: the browser lands on the meeting page with the confirmation.
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["url"], format!("{base}/meetings/m1?proposed=1"), "{v}");
    let thanks = v["texts"][0].as_str().expect("the thank-you note");
    assert!(thanks.contains("proposal #1"), "{thanks}");

    wait_for(
        "the lead's mail",
        || mails(&inbox).len() == 1,
        || daemon.log_text(),
    );
    let mail = &mails(&inbox)[0];
    assert!(hdr(mail, "To").contains("lead2@example.org"), "{mail}");
    let link = lead_link(mail);

    let v = browser(
        &link,
        serde_json::json!([
            {"text": "#proposal-1 .status"},
            {"click": "#proposal-1 button.accept"},
            {"text": "#proposal-1 .status"},
        ]),
    );
    assert_eq!(
        v["texts"],
        serde_json::json!(["proposed", "accepted"]),
        "{v}"
    );
    assert_eq!(v["url"], link.as_str());

    let v = browser(
        &format!("{base}/meetings/m1"),
        serde_json::json!([{"text": "#agenda"}]),
    );
    let agenda = v["texts"][0].as_str().expect("agenda");
    assert!(
        agenda.contains("Street trees for shade")
            && agenda.contains("presented by Grace Hopper (Islington)"),
        "{agenda}"
    );
    let feed = || async {
        reqwest::get(format!("{base}/calendar.ics"))
            .await
            .expect("feed")
            .text()
            .await
            .expect("ics")
    };
    let ics = feed().await;
    let ev = crate::feed::parse_ics(&ics)["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["uid"].as_str().is_some_and(|u| u.contains("m1")))
        .cloned()
        .expect("m1");
    assert!(
        ev["description"]
            .as_str()
            .expect("d")
            .contains("10:00–10:20 Street trees for shade"),
        "{ev}"
    );
    assert_eq!(ev["sequence"], 1);

    // Restart, the meeting now later today with the agenda pack due in a few seconds.
    daemon.signal("TERM");
    let _ = daemon.child.wait();
    let (m1, pack) = soon(zone, 4).expect("a meeting later today");
    let moved = std::fs::read_to_string(&config).expect("config").replace(
        &format!("date = {d}\nstart = \"{s}\"\nend = \"{e}\""),
        &format!("date = {}\nstart = \"{}\"\nend = \"{}\"", m1.0, m1.1, m1.2),
    );
    std::fs::write(&config, format!("{moved}{pack}")).expect("rewrite config");
    let daemon = spawn(&config, &dir.path().join("serve2.log"));
    wait_for(
        "the agenda pack",
        || {
            mails(&inbox)
                .iter()
                .any(|m| hdr(m, "Subject").starts_with("Agenda:"))
        },
        || daemon.log_text(),
    );
    let pack = mails(&inbox)
        .into_iter()
        .find(|m| hdr(m, "Subject").starts_with("Agenda:"))
        .expect("pack");
    let body = texts(&pack["tree"]);
    assert!(
        body.contains("Street trees for shade, presented by Grace Hopper (Islington)"),
        "{body}"
    );
    let ics = feed().await;
    assert!(ics.contains("Street trees for shade"));
}

/// A proposal whose lead mail was given up (its meeting started first) is moved to a later
/// meeting from the CLI while the service runs: after the reload the lead gets the mail, about
/// the new meeting, once; a second reload sends nothing more (the mail is recorded as sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_moved_after_its_lead_mail_was_given_up_is_mailed_after_the_reload() {
    use convenor::{
        agenda::{AgendaStore, NewProposal, notify::STARTED},
        config::{Environment, load},
        model::MeetingId,
    };

    use crate::{daemon::harness::wait_for, mail::SmtpServer};
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let relay = SmtpServer::start(&dir.path().join("inbox"), &[]);
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(
        dir.path(),
        &web::text(zone, port, relay.port, (&d, &s, &e), LATER_MEETING),
    );
    let state = load(&config, &Environment::default())
        .expect("config")
        .config
        .state_dir;
    std::fs::create_dir_all(&state).expect("state dir");
    let id = {
        let mut agenda = AgendaStore::open_in(&state).expect("agenda store");
        let proposal = NewProposal {
            meeting: MeetingId::parse("m1").expect("id"),
            priority: "p1".into(),
            name: "Ada".into(),
            organisation: "Camden".into(),
            email: "ada@example.org".into(),
            title: "Kerbside charging".into(),
            summary: "S".into(),
            presents: true,
            minutes: 10,
        };
        let id = agenda
            .add(&proposal, "web", true, jiff::Timestamp::now())
            .expect("add");
        agenda.give_up_notify(id, STARTED).expect("give up");
        id
    };
    let daemon = spawn(&config, &dir.path().join("serve.log"));
    wait_for(
        "the start's count of owed mails",
        || daemon.log_text().contains("mails to leads owed"),
        || daemon.log_text(),
    );
    assert!(relay.received().is_empty(), "given up: not sent at start");
    let moved = ok(&cli(
        &config,
        &[
            "agenda",
            "move",
            "--meeting",
            "m1",
            &id.to_string(),
            "--to",
            "m3",
        ],
    ));
    assert!(moved.contains("mailed"), "{moved}");
    daemon.signal("HUP");
    wait_for(
        "the lead mailed after the reload",
        || daemon.log_text().contains("the lead was mailed"),
        || daemon.log_text(),
    );
    let got = relay.received();
    assert_eq!(got.len(), 1, "one mail");
    let text = String::from_utf8_lossy(&got[0]).to_string();
    // About the new meeting: its Message-ID names it (the body is encoded).
    assert!(text.contains(&format!("<proposal.{id}.m3.")), "{text}");
    let owed = AgendaStore::open_in(&state)
        .expect("agenda store")
        .unnotified()
        .expect("owed");
    assert!(owed.is_empty(), "{owed:?}");
    // Another reload: nothing is owed, nothing more is sent.
    daemon.signal("HUP");
    wait_for(
        "the second reload",
        || daemon.log_text().matches("config reloaded").count() == 2,
        || daemon.log_text(),
    );
    assert_eq!(relay.received().len(), 1);
}

/// A proposal moved from the CLI while its lead mail is being retried (the relay answers 451),
/// and the service reloaded: the run under way carries on alone (the reload starts no second
/// one) and its next attempt is about the new meeting. The lead gets exactly one mail once the
/// relay takes it, with the new meeting's Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_moved_while_its_lead_mail_is_retried_is_mailed_once_about_its_new_meeting() {
    use crate::{
        daemon::harness::{Sink, wait_for},
        mail::SmtpServer,
    };
    use web::*;

    let dir = tempfile::tempdir().expect("tmp");
    let (refused, inbox) = (dir.path().join("refused"), dir.path().join("inbox"));
    let failing = SmtpServer::start(
        &refused,
        &["--fail-at", "data", "--code", "451", "--keep-refused"],
    );
    let smtp = failing.port;
    let port = free_port();
    let zone = zone();
    let (d, s, e) = far(zone);
    let config = write_config(
        dir.path(),
        &web::text(zone, port, smtp, (&d, &s, &e), LATER_MEETING),
    );
    let daemon = spawn(&config, &dir.path().join("serve.log"));
    let res = propose_in_m1(port, "Moved while retried").await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    wait_for(
        "a refused attempt",
        || !mails(&refused).is_empty() && daemon.log_text().contains("will retry"),
        || daemon.log_text(),
    );
    ok(&cli(
        &config,
        &["agenda", "move", "--meeting", "m1", "1", "--to", "m3"],
    ));
    daemon.signal("HUP");
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    drop(failing);
    let _sink = Sink::start(&inbox, Some(smtp));
    wait_for(
        "the retried mail",
        || daemon.log_text().contains("the lead was mailed"),
        || daemon.log_text(),
    );
    let got = mails(&inbox);
    assert_eq!(got.len(), 1, "exactly one mail: {got:?}");
    let id = hdr(&got[0], "Message-ID");
    assert!(id.starts_with("<proposal.1.m3."), "{id}");
    assert_eq!(
        daemon.log_text().matches("the lead was mailed").count(),
        1,
        "{}",
        daemon.log_text()
    );
}
