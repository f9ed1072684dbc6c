//! Config loading: every validation error with its message and file:line:column, the warnings,
//! and the `check` and `plan` commands of the real binary.

use std::path::Path;

use convenor::config::{self, ConfigError, Environment, Severity};

use crate::support::{config_with_meetings, convenor, example_config_text, repo, write_config};

/// Parses config text as if it were `config/lednet.toml` in the repository.
fn parse(text: &str) -> Result<config::Loaded, ConfigError> {
    config::parse(
        &repo().join("config/lednet.toml"),
        text,
        &Environment::default(),
    )
}

/// The shipped config with `from` replaced by `to` (which must occur exactly once).
fn edited(from: &str, to: &str) -> String {
    let text = example_config_text();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in the example"
    );
    text.replacen(from, to, 1)
}

/// The 1-based line and column of the first occurrence of `needle` after `after` in `text`.
fn position_of(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("`{after}` not in text"));
    let at = start
        + text[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not after `{after}`"));
    let line = text[..at].matches('\n').count() + 1;
    let col = text[..at]
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.chars().count())
        + 1;
    (line, col)
}

/// One bad edit per row: what to replace, with what, the message fragment expected, and the
/// text at which the error must point (searched after the replacement's start).
#[test]
fn every_validation_error_names_its_place() {
    let rows: &[(&str, &str, &str, &str)] = &[
        // unknown key
        (
            "short_name = \"LEDNet\"",
            "short_name = \"LEDNet\"\nshortname = \"x\"",
            "unknown key `shortname`",
            "shortname",
        ),
        // bad date
        (
            "date = 2023-04-19",
            "date = \"2023-02-30\"",
            "`2023-02-30` is not a valid date",
            "\"2023-02-30\"",
        ),
        ("date = 2023-04-19", "date = 42", "expected a date", "42"),
        // bad time
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = \"25:00\"",
            "`25:00` is not a valid time",
            "\"25:00\"",
        ),
        // dates and times parsed strictly: an offset, a date or a zone is refused, never
        // dropped; times are to the minute (seconds are lost in mail and revisions)
        (
            "date = 2023-04-19",
            "date = \"2023-04-19T23:30-05:00\"",
            "`2023-04-19T23:30-05:00` is not a valid date: a date carries no time, offset or zone",
            "\"2023-04-19T23:30-05:00\"",
        ),
        (
            "date = 2023-04-19",
            "date = \"2023-04-19[Europe/Paris]\"",
            "`2023-04-19[Europe/Paris]` is not a valid date",
            "\"2023-04-19[Europe/Paris]\"",
        ),
        (
            "date = 2023-04-19",
            "date = 2023-04-19T10:00:00",
            "expected a date such as 2023-02-24, found the date-time 2023-04-19T10:00:00",
            "2023-04-19T10:00:00",
        ),
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = \"2023-03-05T18:00+01:00\"",
            "`2023-03-05T18:00+01:00` is not a valid time of day: a time carries no date",
            "\"2023-03-05T18:00+01:00\"",
        ),
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = \"10:45:50\"",
            "`10:45:50` is not a valid time of day: times are to the minute, without seconds \
             (write HH:MM",
            "\"10:45:50\"",
        ),
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = 10:45:50",
            "the time 10:45:50 has seconds: times are to the minute; write HH:MM, such as \"10:45\"",
            "10:45:50",
        ),
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = 10:45:00.5",
            "the time 10:45:00.5 has seconds",
            "10:45:00.5",
        ),
        (
            "date = 2023-06-07\nstart = \"10:00\"",
            "date = 2023-06-07\nstart = 2023-06-07T10:00:00+01:00",
            "expected a local time such as \"10:00\", found the date-time",
            "2023-06-07T10:00:00+01:00",
        ),
        (
            "days_before = 28\nat = \"09:00\"",
            "days_before = 28\nat = \"09:00+05:00\"",
            "`09:00+05:00` is not a valid time of day: a time carries no offset or zone",
            "\"09:00+05:00\"",
        ),
        (
            "days_before = 28\nat = \"09:00\"",
            "days_before = 28\nat = \"0900\"",
            "`0900` is not a valid time of day (write HH:MM",
            "\"0900\"",
        ),
        (
            "days_before = 28\nat = \"09:00\"",
            "days_before = 28\nat = \"09\"",
            "`09` is not a valid time of day (write HH:MM",
            "\"09\"",
        ),
        (
            "days_before = 28\nat = \"09:00\"",
            "days_before = 28\nat = \"09:00:60\"",
            "`09:00:60` is not a valid time of day: times are to the minute",
            "\"09:00:60\"",
        ),
        // each bad address of a list at its own place, on any line of the array
        (
            "list = [\"LEDNet members <lednet-members@example.org>\"]",
            "list = [\n  \"LEDNet members <lednet-members@example.org>\",\n  \"no address\",\n]",
            "`no address` is not a mail address",
            "\"no address\"",
        ),
        (
            "list = [\"LEDNet members <lednet-members@example.org>\"]",
            "list = 5",
            "invalid type: integer `5`, expected an address or a list of addresses",
            "5",
        ),
        (
            "retry_base = \"1m\"",
            "retry_base = \"1000d\"",
            "retry_base `1000d` is over an hour",
            "\"1000d\"",
        ),
        (
            "retry_base = \"1m\"",
            "retry_base = \"61m\"",
            "retry_base `61m` is over an hour",
            "\"61m\"",
        ),
        // unknown time zone
        (
            "time_zone = \"Europe/London\"",
            "time_zone = \"Europe/Londn\"",
            "unknown time zone `Europe/Londn`",
            "\"Europe/Londn\"",
        ),
        // end not after start
        (
            "date = 2023-09-29\nstart = \"10:00\"\nend = \"12:30\"",
            "date = 2023-09-29\nstart = \"10:00\"\nend = \"09:00\"",
            "ends (09:00:00) before or when it starts",
            "\"09:00\"",
        ),
        // end not after start as the clocks go: the start is in the spring-forward gap
        (
            "date = 2023-09-29\nstart = \"10:00\"\nend = \"12:30\"",
            "date = 2024-03-31\nstart = \"01:30\"\nend = \"02:15\"",
            "ends (02:15:00) before or when it starts (01:30:00) as the clocks go on 2024-03-31: \
             01:30 does not exist that day and is taken as 02:30 BST",
            "\"02:15\"",
        ),
        // duplicate ids
        (
            "id = \"2023-11-30\"",
            "id = \"2023-02-24\"",
            "duplicate meeting id `2023-02-24`",
            "\"2023-02-24\"",
        ),
        (
            "id = \"future-places\"",
            "id = \"finance-investment\"",
            "duplicate priority id `finance-investment`",
            "\"finance-investment\"",
        ),
        (
            "id = \"reminder-day\"",
            "id = \"reminder-week\"",
            "duplicate email id `reminder-week`",
            "\"reminder-week\"",
        ),
        // focus naming an unknown priority
        (
            "date = 2023-04-19",
            "date = 2023-04-19\nfocus = [\"future-transport\", \"space-travel\"]",
            "focus names unknown priority `space-travel`",
            "\"space-travel\"",
        ),
        // a priority without a lead
        (
            "[priority.lead]\nname = \"Lead to be confirmed (placeholder)\"\nemail = \"future-transport-lead@example.org\"\norganisation = \"LEDNet Director, to be named\"\n",
            "",
            "this priority has no lead",
            "[[priority]]\nid = \"future-transport\"",
        ),
        // an address that does not parse
        (
            "contact = \"LEDNet team <lednet-team@example.org>\"",
            "contact = \"LEDNet team <not an address>\"",
            "is not a mail address",
            "\"LEDNet team <not",
        ),
        (
            "email = \"future-places-lead@example.org\"",
            "email = \"future-places-lead@\"",
            "is not a mail address",
            "\"future-places-lead@\"",
        ),
        // CR or LF in a value that ends up in a header
        (
            "title = \"LEDNet meeting\"\nlocation = \"London (venue to be confirmed)\"\n\n[[meeting]]\nid = \"2023-04-19\"",
            "title = \"LEDNet meeting\\r\\nBcc: victim@example.org\"\nlocation = \"London (venue to be confirmed)\"\n\n[[meeting]]\nid = \"2023-04-19\"",
            "contains a carriage return (CR)",
            "\"LEDNet meeting\\r",
        ),
        (
            "name = \"London Environment Directors' Network\"",
            "name = \"London Environment\\nDirectors\"",
            "contains a line feed (LF)",
            "\"London Environment\\n",
        ),
        (
            "from = \"LEDNet team <lednet-team@example.org>\"",
            "from = \"LEDNet team <lednet-team@example.org>\\nBcc: x@example.org\"",
            "contains a line feed (LF)",
            "\"LEDNet team <lednet-team@example.org>\\n",
        ),
        // a template the schedule names that does not exist
        (
            "template = \"lead-nudge\"",
            "template = \"lead-nag\"",
            "template `lead-nag` does not exist",
            "\"lead-nag\"",
        ),
        // other value errors
        (
            "transport = \"file\"",
            "transport = \"pigeon\"",
            "unknown transport `pigeon`",
            "\"pigeon\"",
        ),
        (
            "audience = \"leads\"",
            "audience = \"directors\"",
            "unknown audience `directors`",
            "\"directors\"",
        ),
        (
            "days_before = 28\nat = \"09:00\"",
            "before = \"four weeks\"",
            "`four weeks` is not a duration",
            "\"four weeks\"",
        ),
        // a schedule entry that can never send: due as every meeting starts
        (
            "days_before = 28\nat = \"09:00\"",
            "before = \"0s\"",
            "before = \"0s\" falls due as the meeting starts",
            "\"0s\"",
        ),
        (
            "listen = \"127.0.0.1:8080\"",
            "listen = \"localhost\"",
            "is not a listen address",
            "\"localhost\"",
        ),
        (
            "base_url = \"http://127.0.0.1:8080\"",
            "base_url = \"lednet.example.org\"",
            "is not an absolute http",
            "\"lednet.example.org\"",
        ),
        (
            "id = \"reminder-day\"",
            "id = \"reminder-day\"\ngrace = \"0s\"",
            "a grace of `0s` can skip the mail",
            "\"0s\"",
        ),
        (
            "# metrics_listen = \"127.0.0.1:9187\"",
            "metrics_listen = \"127.0.0.1:8080\"",
            "`127.0.0.1:8080` is also `listen`",
            "\"127.0.0.1:8080\"",
        ),
        (
            "max_catch_up = 20",
            "max_catch_up = 0",
            "must be a whole number of at least 1",
            "0",
        ),
        (
            "lead_link_lifetime = \"30d\"",
            "lead_link_lifetime = \"30m\"",
            "lead_link_lifetime `30m`: a lead link lifetime under 1 hour",
            "\"30m\"",
        ),
        (
            "lead_link_lifetime = \"30d\"",
            "lead_link_lifetime = \"366d\"",
            "lead_link_lifetime `366d`: a lead link lifetime over 365 days",
            "\"366d\"",
        ),
        (
            "lead_link_lifetime = \"30d\"",
            "lead_link_lifetime = \"a month\"",
            "lead_link_lifetime `a month`: `a month` is not a duration",
            "\"a month\"",
        ),
        (
            "# feed_token = \"a-long-random-string\"",
            "feed_token = \"short\"",
            "at least 16 characters",
            "\"short\"",
        ),
    ];
    for (from, to, message, point) in rows {
        let text = edited(from, to);
        let err = match parse(&text) {
            Ok(_) => panic!("accepted a config with `{to}`"),
            Err(e) => e,
        };
        let diags = err.diagnostics();
        let d = diags
            .iter()
            .find(|d| d.message.contains(message))
            .unwrap_or_else(|| panic!("no error containing `{message}` for `{to}`; got:\n{err}"));
        assert_eq!(d.severity, Severity::Error);
        let offset = if to.is_empty() {
            0
        } else {
            example_config_text().find(from).unwrap_or(0)
        };
        let (line, column) = position_of(&text[offset..], point, point);
        let line = line + text[..offset].matches('\n').count();
        let column = if line == 1 + text[..offset].matches('\n').count() && offset > 0 {
            column
                + text[..offset]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
        } else {
            column
        };
        assert_eq!(
            (d.line, d.column),
            (line, column),
            "wrong place for `{message}`: {d}"
        );
        assert!(
            d.to_string()
                .starts_with(&format!("{}:{line}:{column}: error: ", d.file.display()))
        );
    }
}

#[test]
fn several_errors_are_reported_together() {
    let text = edited(
        "time_zone = \"Europe/London\"",
        "time_zone = \"Mars/Olympus\"",
    )
    .replacen("audience = \"leads\"", "audience = \"nobody\"", 1);
    let err = parse(&text).expect_err("invalid");
    assert_eq!(err.diagnostics().len(), 2, "{err}");
}

#[test]
fn smtp_settings_are_checked() {
    let smtp = |body: &str| {
        edited("transport = \"file\"", "transport = \"smtp\"").replacen(
            "[http]",
            &format!("[mail.smtp]\n{body}\n\n[http]"),
            1,
        )
    };
    let ok = parse(&smtp(
        "host = \"127.0.0.1\"\nport = 2525\ntls = \"plaintext\"",
    ))
    .expect("loopback plaintext is allowed");
    assert!(matches!(
        ok.config.mail.transport,
        convenor::model::TransportSettings::Smtp(_)
    ));
    let cases = [
        (
            "host = \"smtp.example.org\"\ntls = \"plaintext\"",
            "plaintext SMTP is only allowed to a loopback relay",
        ),
        (
            "host = \"smtp.example.org\"\npassword = \"hunter2\"",
            "unknown key `password`",
        ),
        (
            "host = \"smtp.example.org\"\nuser = \"u\"\npassword_env = \"A\"\npassword_file = \"/x\"",
            "give only one of",
        ),
        (
            "host = \"smtp.example.org\"\npassword_env = \"A\"",
            "no `user`",
        ),
        (
            "host = \"smtp.example.org\"\nport = 70000",
            "70000 is not a port number",
        ),
        (
            "host = \"smtp.example.org\"\ntls = \"sometimes\"",
            "unknown TLS mode `sometimes`",
        ),
    ];
    for (body, message) in cases {
        let err = parse(&smtp(body))
            .err()
            .unwrap_or_else(|| panic!("accepted {body}"));
        assert!(err.to_string().contains(message), "{body}: {err}");
    }
}

#[test]
fn warnings_for_weekend_and_clock_change_days_do_not_fail() {
    // 2023-03-26 is a Sunday and the day BST starts; 2023-10-28 is a Saturday.
    let text = edited("date = 2023-04-19", "date = 2023-03-26").replacen(
        "date = 2023-09-29",
        "date = 2023-10-28",
        1,
    );
    let loaded = parse(&text).expect("warnings only");
    let messages: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("2023-03-26 is on a Sunday")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("the clocks change on 2023-03-26 (to BST)")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("2023-10-28 is on a Saturday")),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("2023-10-28") && m.contains("clocks")),
        "{messages:?}"
    );
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
}

/// `convenor check` on a meeting whose start the clocks skip over says, in its clock-change
/// warning, the time the start is taken as (the feed's event and the schedule agree on it),
/// and still exits 0.
#[test]
fn check_says_what_a_start_in_the_spring_forward_gap_is_taken_as() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = edited(
        "date = 2023-04-19\nstart = \"10:00\"",
        "date = 2023-03-26\nstart = \"01:30\"",
    );
    let path = write_config(dir.path(), &text);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "the clocks change on 2023-03-26 (to BST): check the meeting's time with members; \
             its start 01:30 does not exist that day and is taken as 02:30 BST"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("its end"), "{stderr}");
}

#[test]
fn the_shipped_meeting_ids_are_their_dates_and_state_dir_follows_systemd() {
    let loaded = parse(&example_config_text()).expect("valid");
    let ids: Vec<&str> = loaded
        .config
        .meetings
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "2023-02-24",
            "2023-04-19",
            "2023-06-07",
            "2023-09-29",
            "2023-11-30"
        ]
    );
    assert_eq!(loaded.config.state_dir, Path::new("state"));
    let env = Environment {
        state_directory: Some("/var/lib/convenor".into()),
        ..Environment::default()
    };
    let sd = config::parse(
        &repo().join("config/lednet.toml"),
        &example_config_text(),
        &env,
    )
    .expect("valid");
    assert_eq!(sd.config.state_dir, Path::new("/var/lib/convenor"));
    // The installed config, read from a shell (no $STATE_DIRECTORY): the service's state.
    let installed = config::parse(
        Path::new("/etc/convenor/convenor.toml"),
        &example_config_text().replace(
            "# templates_dir = \"templates\"",
            &format!("templates_dir = \"{}\"", repo().join("templates").display()),
        ),
        &Environment::default(),
    )
    .expect("valid");
    assert_eq!(installed.config.state_dir, Path::new("/var/lib/convenor"));
    // A relative `[state] dir` stays relative to the working directory, as it always was (an
    // existing deployment must find its ledger where it left it).
    let relative = parse(&edited(
        "# [state]\n# dir = \"state\"",
        "[state]\ndir = \"run/state\"",
    ))
    .expect("valid");
    assert_eq!(relative.config.state_dir, Path::new("run/state"));
}

#[test]
fn check_exits_78_with_file_line_column_on_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        &edited(
            "time_zone = \"Europe/London\"",
            "time_zone = \"Europe/Londn\"",
        ),
    );
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let (line, col) = position_of(
        &std::fs::read_to_string(&path).expect("read"),
        "time_zone",
        "\"Europe/Londn\"",
    );
    assert!(
        stderr.contains(&format!(
            "{}:{line}:{col}: error: unknown time zone `Europe/Londn`",
            path.display()
        )),
        "{stderr}"
    );
    let missing = convenor(&["check", "--config", "/nonexistent/convenor.toml"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read config file /nonexistent/convenor.toml")
    );
}

/// `id` is required: a meeting without one is an error at its `[[meeting]]` line whose message
/// gives the line to add, the date (the id it had when `id` defaulted to the date). The shipped
/// config as it was before (no ids) gets one error per meeting; adding exactly the suggested
/// lines makes it the shipped config again.
#[test]
fn check_refuses_a_meeting_without_an_id_and_names_the_id_to_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = edited("id = \"2023-04-19\"\n", "");
    let path = write_config(dir.path(), &text);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let written = std::fs::read_to_string(&path).expect("read");
    let (line, col) = position_of(&written, "[[meeting]]\ndate = 2023-04-19", "[[meeting]]");
    assert!(
        stderr.contains(&format!(
            "{}:{line}:{col}: error: the meeting has no `id`: add id = \"2023-04-19\" (its date, \
             the id it has had so far, keeps its calendar UID and its mail)",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 error(s); the config was not used"),
        "{stderr}"
    );

    // The config of an existing deployment, written when `id` defaulted to the date.
    let mut old = example_config_text();
    let ids = [
        "2023-02-24",
        "2023-04-19",
        "2023-06-07",
        "2023-09-29",
        "2023-11-30",
    ];
    for id in ids {
        old = old.replacen(&format!("id = \"{id}\"\n"), "", 1);
    }
    let err = parse(&old).expect_err("meetings without ids");
    let diagnostics = err.diagnostics();
    assert_eq!(diagnostics.len(), ids.len(), "{err}");
    let mut upgraded = old.clone();
    for (d, id) in diagnostics.iter().zip(ids) {
        let add = format!("id = \"{id}\"");
        assert!(d.message.contains(&format!("add {add} (")), "{d}");
        let header = format!("[[meeting]]\ndate = {id}\n");
        assert_eq!(
            (d.line, d.column),
            position_of(&old, &header, "[[meeting]]"),
            "{d}"
        );
        upgraded = upgraded.replacen(&header, &format!("[[meeting]]\n{add}\ndate = {id}\n"), 1);
    }
    assert_eq!(upgraded, example_config_text());
}

/// A same-day mail at or after a meeting's start can never go out for that meeting: whether it
/// can depends on the meeting, so it is a warning naming them, at the entry's `at`; `check`
/// prints it and passes.
#[test]
fn a_same_day_mail_at_or_after_the_start_warns_naming_the_meetings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = edited(
        "days_before = 1\nat = \"09:00\"",
        "days_before = 0\nat = \"18:00\"",
    );
    let loaded = parse(&text).expect("a warning, not an error");
    let late: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("falls due at or after the start"))
        .collect();
    assert_eq!(late.len(), 1, "{:?}", loaded.warnings);
    let w = late[0];
    assert_eq!(w.severity, Severity::Warning);
    assert!(
        w.message.starts_with(
            "`reminder-day` (days_before = 0, at = \"18:00\") falls due at or after the start of \
             meetings `2023-02-24` (starts 10:00), `2023-04-19` (starts 10:00), `2023-06-07` \
             (starts 10:00), 2 more, and no mail goes out once its meeting has started"
        ),
        "{w}"
    );
    let (line, column) = position_of(&text, "days_before = 0\nat = ", "\"18:00\"");
    assert_eq!((w.line, w.column), (line, column), "{w}");

    let path = write_config(dir.path(), &text);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{line}:{column}: warning: `reminder-day` (days_before = 0",
            path.display()
        )),
        "{stderr}"
    );

    // 09:00 on the day is before every shipped meeting's 10:00 start.
    let early = parse(&edited(
        "days_before = 1\nat = \"09:00\"",
        "days_before = 0\nat = \"09:00\"",
    ))
    .expect("valid");
    assert!(early.warnings.is_empty(), "{:?}", early.warnings);
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = convenor(&["check", "--config", "config/lednet.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("meetings:   5 (0 cancelled)"), "{stdout}");
    assert!(stdout.contains("priorities: 5"), "{stdout}");
    assert!(stdout.contains("emails:     7 in the schedule"), "{stdout}");
    // Five meetings are far below the size a feed is warned about.
    assert!(stdout.contains("feeds:      6, the largest"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("the feed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `convenor check` warns of a feed that nears Google's 1 MB limit, naming it by its path and
/// size, and still exits 0 ([`config_with_meetings`]: every feed about 900 KiB).
#[test]
fn check_warns_of_a_feed_near_googles_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_meetings(700);
    let path = write_config(dir.path(), &text);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("warning: the feed /"))
        .collect();
    assert_eq!(warned.len(), 6, "{stderr}");
    assert!(
        warned[0].contains("the feed /calendar.ics is ") && warned[0].contains("over 800 KiB"),
        "{stderr}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("the feed /priorities/future-places.ics is ")),
        "{stderr}"
    );
    assert!(stdout.contains("6 warning(s), see above"), "{stdout}");
    assert!(stdout.contains("feeds:      6, the largest"), "{stdout}");
}

#[test]
fn plan_lists_every_timed_mail_in_local_time_and_utc() {
    let out = convenor(&["plan", "--config", "config/lednet.toml", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    // 5 meetings x (agenda call + 5 lead nudges + 2 reminders + agenda pack).
    assert_eq!(rows.len(), 5 * 9);
    let find = |meeting: &str, email: &str| {
        rows.iter()
            .find(|r| r["meeting"] == meeting && r["email"] == email)
            .unwrap_or_else(|| panic!("{meeting} {email}"))
    };
    // The week-before reminder of 2023-04-19 is on 2023-04-12 at 09:00 BST, 08:00Z.
    let r = find("2023-04-19", "reminder-week");
    assert_eq!(r["due_local"], "2023-04-12 09:00 BST");
    assert_eq!(r["due_utc"], "2023-04-12T08:00:00Z");
    // The agenda call of 2023-11-30 is on 2023-11-02 at 09:00 GMT.
    assert_eq!(
        find("2023-11-30", "agenda-call")["due_utc"],
        "2023-11-02T09:00:00Z"
    );
    // The agenda call of 2023-04-19 (2023-03-22) is still GMT: the clocks change on the 26th.
    assert_eq!(
        find("2023-04-19", "agenda-call")["due_utc"],
        "2023-03-22T09:00:00Z"
    );

    let from = convenor(&[
        "plan",
        "--config",
        "config/lednet.toml",
        "--from",
        "2023-11-01",
    ]);
    let table = String::from_utf8_lossy(&from.stdout);
    assert!(table.contains("2023-11-02 09:00 GMT"), "{table}");
    assert!(!table.contains("2023-09-29  "), "{table}");
}

#[test]
fn the_default_config_is_the_repositorys_in_a_checkout_and_the_installed_one_elsewhere() {
    use convenor::config::default_path_in;
    assert_eq!(default_path_in(&repo()), Path::new("config/lednet.toml"));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        default_path_in(elsewhere.path()),
        Path::new("/etc/convenor/convenor.toml")
    );
    // The binary without --config, run from the repository, checks the shipped config.
    let out = convenor(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("config config/lednet.toml is valid"),
        "{stdout}"
    );
}

/// A file saved with a UTF-8 byte order mark (as some Windows editors do) loads, and an error
/// on its first line is at the column an editor shows: the mark is no character.
#[test]
fn a_byte_order_mark_moves_no_column() {
    let text = format!("\u{FEFF}{}", example_config_text());
    parse(&text).expect("a config with a byte order mark loads");
    let bad = format!("\u{FEFF}shortname = \"x\"\n{}", example_config_text());
    let err = parse(&bad).expect_err("unknown key");
    let d = &err.diagnostics()[0];
    assert!(d.message.contains("unknown key `shortname`"), "{d}");
    assert_eq!((d.line, d.column), (1, 1), "{d}");
}

/// Template sets that are symbolic links to directories (a shared set linked in) pass `check`
/// as they pass validation: the templates are loaded through the links.
#[test]
fn check_accepts_template_sets_linked_to_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).expect("templates dir");
    for entry in std::fs::read_dir(repo().join("templates")).expect("repository templates") {
        let entry = entry.expect("entry");
        std::os::unix::fs::symlink(entry.path(), templates.join(entry.file_name()))
            .expect("symlink");
    }
    let text = edited(
        "# templates_dir = \"templates\"",
        &format!("templates_dir = \"{}\"", templates.display()),
    );
    let path = write_config(dir.path(), &text);
    let out = convenor(&["check", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("no such template set"), "{stderr}");
}
