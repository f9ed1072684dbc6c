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
        &[
            "agenda",
            "add",
            "--meeting",
            meeting,
            "--priority",
            priority,
            "--name",
            "Ada Lovelace",
            "--organisation",
            "Camden",
            "--email",
            "ada@camden.example",
            "--title",
            title,
            "--summary",
            "What we learnt.",
            "--presents",
            "--minutes",
            "15",
        ],
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

#[test]
fn lead_links_are_issued_rotated_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &example_config_text());
    let link = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("http://"))
            .expect("a link")
            .to_owned()
    };
    let first = link(&ok(&cli(
        &config,
        &["agenda", "token", "issue", "--priority", "future-places"],
    )));
    assert!(first.starts_with("http://127.0.0.1:8080/leads/") && first.ends_with('/'));
    let token = first
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("token");
    assert_eq!(token.len(), 64);
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
