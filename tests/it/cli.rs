//! The operator's commands against the state they read: an unreadable state directory is an
//! error, never an empty ledger; `check` builds the transport as `serve` does; `preview` shows
//! the ledger's SEQUENCE, Message-ID and thread; `send-test` with a systemd credential from a
//! shell says how to run it; skipped and held mail are logged with their Message-ID.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use convenor::{
    config::{Environment, load},
    daemon::replan,
    ledger::{MailKey, MailState, Outcome, SqliteStore, Store as _},
};
use jiff::Timestamp;
use serde_json::Value;

use crate::support::{binary, example_config_text, repo, run_tool, write_config};

/// Runs the binary from the repository with `args`, in an environment without systemd's
/// variables (a shell), plus `env`.
fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(repo())
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("JOURNAL_STREAM");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run convenor")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The commands that read the ledger, on the config at `config`.
fn ledger_readers(config: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["plan", "--config", config],
        vec!["plan", "--config", config, "--json"],
        vec!["ics", "--config", config],
        vec!["release", "--config", config],
        vec![
            "preview",
            "--config",
            config,
            "--meeting",
            "2023-02-24",
            "--email",
            "reminder-week",
        ],
    ]
}

/// A ledger that cannot be looked at (a symbolic link to itself: ELOOP, for root as for anyone)
/// is an error naming it: `plan` no longer shows every mail planned, `ics` SEQUENCE 0,
/// `release` "nothing is held".
#[test]
fn a_ledger_that_cannot_be_looked_at_is_an_error_not_an_empty_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &example_config_text());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let ledger = state.join("ledger.sqlite3");
    std::os::unix::fs::symlink("ledger.sqlite3", &ledger).expect("symlink");
    let p = path.to_str().expect("utf-8");
    let wanted = format!("cannot tell whether {} exists", ledger.display());
    let wrong: Vec<String> = ledger_readers(p)
        .iter()
        .map(|args| (args, run(args, &[])))
        .filter(|(_, out)| {
            out.status.code() != Some(1)
                || !text(&out.stderr).contains(&wanted)
                || !out.stdout.is_empty()
        })
        .map(|(args, out)| format!("{args:?}: {:?}\n{}", out.status, text(&out.stderr)))
        .collect();
    assert!(
        wrong.is_empty(),
        "not refused with `{wanted}`:\n{}",
        wrong.join("\n")
    );
}

/// The agenda store, read by every command but `serve` before it runs (so `plan`, `ics` and
/// `preview` show the agenda the daemon shows), is looked for the same way.
#[test]
fn an_agenda_store_that_cannot_be_looked_at_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &example_config_text());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let agenda = state.join("agenda.sqlite3");
    std::os::unix::fs::symlink("agenda.sqlite3", &agenda).expect("symlink");
    let p = path.to_str().expect("utf-8");
    let wanted = format!("cannot tell whether {} exists", agenda.display());
    let wrong: Vec<String> = [
        vec!["check", "--config", p],
        vec!["ics", "--config", p],
        vec!["agenda", "--config", p, "list"],
    ]
    .iter()
    .map(|args| (args, run(args, &[])))
    .filter(|(_, out)| out.status.code() != Some(1) || !text(&out.stderr).contains(&wanted))
    .map(|(args, out)| format!("{args:?}: {:?}\n{}", out.status, text(&out.stderr)))
    .collect();
    assert!(
        wrong.is_empty(),
        "not refused with `{wanted}`:\n{}",
        wrong.join("\n")
    );
}

/// A state directory under a regular file (ENOTDIR, for root too): every reader says so.
#[test]
fn a_state_directory_under_a_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("file"), "not a directory").expect("file");
    let state = dir.path().join("file/state");
    let text_ = example_config_text().replace(
        "# [state]\n# dir = \"state\"",
        &format!("[state]\ndir = \"{}\"", state.display()),
    );
    let path = write_config(dir.path(), &text_);
    let p = path.to_str().expect("utf-8");
    let wanted = format!("cannot tell whether {}/", state.display());
    let wrong: Vec<String> = ledger_readers(p)
        .iter()
        .map(|args| (args, run(args, &[])))
        .filter(|(_, out)| {
            let stderr = text(&out.stderr);
            out.status.code() != Some(1)
                || !stderr.contains(&wanted)
                || !stderr.contains("Not a directory")
        })
        .map(|(args, out)| format!("{args:?}: {:?}\n{}", out.status, text(&out.stderr)))
        .collect();
    assert!(
        wrong.is_empty(),
        "not refused with `{wanted}`:\n{}",
        wrong.join("\n")
    );
}

/// The case met on a server: the service's state directory is readable by root only, and the
/// command runs as another user. Run as a user who cannot search the directory (here as root,
/// the binary runs as `nobody` through setpriv, on copies it can read).
#[test]
fn a_state_directory_this_user_cannot_read_is_a_permission_error_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let SharedLayout { bin, config, state } = shared_layout(dir.path());
    chmod(&state, 0o700);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let out = cmd
        .args(["plan", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run convenor as another user");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot tell whether {} exists: Permission denied",
            state.join("agenda.sqlite3").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("readable by root only: use sudo"),
        "{stderr}"
    );
    chmod(&state, 0o755);
}

/// Sets `p`'s permission bits to `mode`.
fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Files laid out as on a server, for a command run as another user: `dir` open to all, a copy
/// of the binary, templates and a config anyone can read, and a state directory with a ledger.
struct SharedLayout {
    /// The copy of the binary.
    bin: PathBuf,
    /// The config (0644), naming the templates and the state directory.
    config: PathBuf,
    /// The state directory (a ledger in it; mode and owner left to the test).
    state: PathBuf,
}

fn shared_layout(dir: &Path) -> SharedLayout {
    chmod(dir, 0o755);
    let bin = dir.join("convenor");
    std::fs::copy(binary(), &bin).expect("copy the binary");
    chmod(&bin, 0o755);
    let templates = crate::support::templates_with(dir, "reminder/body.txt", |t| format!("{t}\n"));
    for entry in walk(&templates) {
        chmod(&entry, if entry.is_dir() { 0o755 } else { 0o644 });
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    SqliteStore::open_in(&state).expect("a ledger");
    let config = dir.join("convenor.toml");
    let body = example_config_text()
        .replace(
            "# templates_dir = \"templates\"",
            &format!("templates_dir = \"{}\"", templates.display()),
        )
        .replace(
            "# [state]\n# dir = \"state\"",
            &format!("[state]\ndir = \"{}\"", state.display()),
        );
    std::fs::write(&config, body).expect("config");
    chmod(&config, 0o644);
    SharedLayout { bin, config, state }
}

/// True when this process runs as root (`id -u` says 0).
fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    text(&out.stdout).trim() == "0"
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            out.extend(walk(&e.expect("entry").path()));
        }
    }
    out
}

/// The shipped config delivering over SMTP with these `[mail.smtp]` lines.
fn smtp_config(dir: &Path, smtp: &str) -> PathBuf {
    let text = example_config_text()
        .replacen("transport = \"file\"", "transport = \"smtp\"", 1)
        .replacen("[http]", &format!("[mail.smtp]\n{smtp}\n\n[http]"), 1);
    write_config(dir, &text)
}

/// `check` builds the SMTP transport as `serve` does, so what stops `serve` (exit 78) fails
/// `check`: a CA file or a password file that cannot be read, a password variable not set, a
/// credential missing from `$CREDENTIALS_DIRECTORY`. A `password_credential` from a shell, where
/// that is never set, is a warning saying the password was not checked.
#[test]
fn check_builds_the_smtp_transport_as_serve_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = "host = \"smtp.example.org\"\ntls = \"starttls\"\nuser = \"lednet\"";
    let check = |smtp_lines: &str, env: &[(&str, &Path)]| {
        let path = smtp_config(dir.path(), smtp_lines);
        run(&["check", "--config", path.to_str().expect("utf-8")], env)
    };
    let missing_ca = dir.path().join("no-such-ca.pem");
    let missing_pw = dir.path().join("no-such-password");
    let creds = tempfile::tempdir().expect("credentials");
    let cases = [
        (
            format!(
                "{smtp}\npassword_env = \"HOME\"\nca_file = \"{}\"",
                missing_ca.display()
            ),
            format!("cannot use CA file {}", missing_ca.display()),
        ),
        (
            format!("{smtp}\npassword_file = \"{}\"", missing_pw.display()),
            format!(
                "cannot read the SMTP password from file {}",
                missing_pw.display()
            ),
        ),
        (
            format!("{smtp}\npassword_env = \"CONVENOR_TEST_NO_SUCH_VARIABLE\""),
            "cannot read the SMTP password from environment variable \
             CONVENOR_TEST_NO_SUCH_VARIABLE"
                .to_owned(),
        ),
    ];
    for (lines, message) in &cases {
        let out = check(lines, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{lines}: {stderr}");
        assert!(
            stderr.contains(&format!("mail transport: {message}")),
            "{lines}: {stderr}"
        );
        assert!(
            stderr.contains("1 error(s); the config was not used"),
            "{stderr}"
        );
    }
    // A credential: from a shell, a warning (and the rest is still checked); in the service,
    // where $CREDENTIALS_DIRECTORY is set, a missing one is an error as in `serve`.
    let credential = format!("{smtp}\npassword_credential = \"smtp-password\"");
    let out = check(&credential, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: the SMTP password (password_credential `smtp-password`) was not checked: \
             $CREDENTIALS_DIRECTORY is not set"
        ),
        "{stderr}"
    );
    assert!(
        stdout.contains("transport:  smtp to smtp.example.org:587"),
        "{stdout}"
    );
    assert!(stdout.contains("1 warning(s), see above"), "{stdout}");
    let out = check(
        &format!("{credential}\nca_file = \"{}\"", missing_ca.display()),
        &[],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let out = check(&credential, &[("CREDENTIALS_DIRECTORY", creds.path())]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("cannot read the SMTP password from systemd credential `smtp-password`"),
        "{stderr}"
    );
    std::fs::write(creds.path().join("smtp-password"), "secret\n").expect("credential");
    let out = check(&credential, &[("CREDENTIALS_DIRECTORY", creds.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

/// The file transport is not built by `check`: building it creates the outbox, and `check`
/// creates nothing in the state directory.
#[test]
fn check_creates_nothing_in_the_state_directory() {
    let fresh = tempfile::tempdir().expect("tempdir");
    let path = write_config(fresh.path(), &example_config_text());
    let out = run(&["check", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !fresh.path().join("state").exists(),
        "check made {}",
        fresh.path().join("state").display()
    );
}

/// `send-test` with a systemd credential, from a shell: the error says how to run it there
/// (systemd-run with the credential loaded, or another password source for a one-off), not
/// only how to fix the unit.
#[test]
fn send_test_with_a_credential_from_a_shell_says_how_to_run_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = smtp_config(
        dir.path(),
        "host = \"127.0.0.1\"\nport = 9\ntls = \"plaintext\"\nuser = \"lednet\"\n\
         password_credential = \"smtp-password\"",
    );
    let out = run(
        &[
            "send-test",
            "--config",
            path.to_str().expect("utf-8"),
            "--to",
            "someone@example.org",
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "sudo systemd-run --pipe --wait --quiet -p \
             LoadCredential=smtp-password:/etc/convenor/smtp-password convenor send-test"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("password_file or password_env"), "{stderr}");
}

fn parse_mime(bytes: &[u8]) -> Value {
    serde_json::from_slice(&run_tool("mime_parse.py", &[], bytes).stdout).expect("json")
}

/// The first part of the MIME tree under `node` (depth first) for which `pick` says yes.
fn find_part<'a>(node: &'a Value, pick: &impl Fn(&Value) -> bool) -> Option<&'a Value> {
    if pick(node) {
        return Some(node);
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|child| find_part(child, pick))
}

fn calendar_of(m: &Value) -> &Value {
    find_part(&m["tree"], &|p| p["calendar"].is_object())
        .map(|p| &p["calendar"])
        .expect("a calendar part")
}

fn text_body(m: &Value) -> String {
    find_part(&m["tree"], &|p| p["type"] == "text/plain")
        .and_then(|p| p["text"].as_str())
        .expect("a text/plain part")
        .to_owned()
}

/// `preview` shows what the scheduler would send: with a ledger, the meeting's SEQUENCE, the
/// row's Message-ID, the thread of the first mail sent about the meeting, and for a change
/// notice the time before the change.
#[test]
fn preview_shows_the_ledgers_sequence_message_id_thread_and_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = example_config_text();
    let path = write_config(dir.path(), &original);
    let p = path.to_str().expect("utf-8");
    let env = Environment::default();
    let t0: Timestamp = "2023-01-05T08:00:00Z".parse().expect("t0");
    let t1: Timestamp = "2023-01-28T12:00:00Z".parse().expect("t1");
    let config0 = load(&path, &env).expect("config").config;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let mut store = SqliteStore::open_in(&state).expect("ledger");
    replan(&mut store, &config0, t0).expect("plan");
    // The agenda call of 2023-02-24 went out on 2023-01-27.
    let call = MailKey {
        meeting: "2023-02-24".into(),
        email: "agenda-call".into(),
        audience: "list".into(),
        occurrence: 0,
    };
    let sent_at: Timestamp = "2023-01-27T09:00:05Z".parse().expect("sent");
    let claimed = store
        .claim(&call, sent_at)
        .expect("claim")
        .expect("claimed");
    let sent = Outcome::Sent {
        at: sent_at,
        reply: "250 ok".into(),
    };
    assert!(
        store
            .settle(&call, MailState::Sending, &sent)
            .expect("settle")
            .is_some()
    );
    // Then the meeting moved to 10:30: SEQUENCE 1, a change notice queued.
    let moved = original.replacen(
        "date = 2023-02-24\nstart = \"10:00\"",
        "date = 2023-02-24\nstart = \"10:30\"",
        1,
    );
    write_config(dir.path(), &moved);
    let config1 = load(&path, &env).expect("config").config;
    replan(&mut store, &config1, t1).expect("replan");
    let rows = store.rows().expect("rows");
    let row_id = |email: &str, occurrence: u32| {
        rows.iter()
            .find(|r| {
                r.key.meeting == "2023-02-24"
                    && r.key.email == email
                    && r.key.occurrence == occurrence
            })
            .map(|r| r.message_id.clone())
            .unwrap_or_else(|| panic!("row {email}#{occurrence}"))
    };
    drop(store);

    let preview = |email: &str| {
        let out = run(
            &[
                "preview",
                "--config",
                p,
                "--meeting",
                "2023-02-24",
                "--email",
                email,
                "--eml",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        (parse_mime(&out.stdout), text(&out.stderr))
    };
    let header = |m: &Value, name: &str| -> Vec<String> {
        m["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (week, _) = preview("reminder-week");
    assert_eq!(header(&week, "message-id"), [row_id("reminder-week", 0)]);
    assert_eq!(header(&week, "in-reply-to"), [claimed.message_id.as_str()]);
    let invite = calendar_of(&week);
    assert_eq!(invite["events"][0]["sequence"], 1);
    assert_eq!(invite["events"][0]["uid"], "2023-02-24@lednet.convenor");

    let (notice, stderr) = preview("change-notice");
    assert_eq!(header(&notice, "message-id"), [row_id("change-notice", 1)]);
    assert_eq!(
        header(&notice, "in-reply-to"),
        [claimed.message_id.as_str()]
    );
    assert!(!stderr.contains("no previous time"), "{stderr}");
    let body = text_body(&notice);
    let line = |label: &str| {
        body.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{body}"))
            .to_owned()
    };
    assert!(line("Was:").contains("10:00"), "{body}");
    assert!(line("Now:").contains("10:30"), "{body}");
    assert_eq!(calendar_of(&notice)["events"][0]["sequence"], 1);
}

/// The log lines of mail skipped and held carry the row's Message-ID, as the README says of
/// every mail line. One mail is past its grace (skipped); four fell due at once after they were
/// planned, more than `max_catch_up` (held).
#[test]
fn skipped_and_held_mail_is_logged_with_its_message_id() {
    use crate::daemon::harness::{Daemon, soon_text};
    let dir = tempfile::tempdir().expect("tempdir");
    // Four fell due 20 minutes ago: overdue by more than the guard's ten minutes, so held.
    let text_ = soon_text(&[-7200, -1200, -1199, -1198, -1197], None, "")
        .replace("max_catch_up = 100", "max_catch_up = 3");
    let path = write_config(dir.path(), &text_);
    let config = load(&path, &Environment::default()).expect("config").config;
    std::fs::create_dir_all(&config.state_dir).expect("state");
    {
        // Planned half an hour ago, before the four fell due.
        let mut store = SqliteStore::open_in(&config.state_dir).expect("ledger");
        let planned = Timestamp::now() - jiff::SignedDuration::from_mins(30);
        replan(&mut store, &config, planned).expect("plan");
    }
    let mut daemon = Daemon::spawn(&path, &dir.path().join("serve.log"));
    daemon.wait_ready();
    let lines = |log: &str, what: &str| -> Vec<Value> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(what)))
            .collect()
    };
    crate::daemon::harness::wait_for(
        "the skipped and held mail to be logged",
        || {
            let log = daemon.log_text();
            lines(&log, "mail skipped").len() == 1 && lines(&log, "mail held").len() == 4
        },
        || daemon.log_text(),
    );
    daemon.signal("TERM");
    daemon.wait_exit();
    let store = SqliteStore::open_in(&config.state_dir).expect("ledger");
    let rows = store.rows().expect("rows");
    let log = daemon.log_text();
    for (what, state) in [
        ("mail skipped", MailState::Skipped),
        ("mail held", MailState::Held),
    ] {
        for line in lines(&log, what) {
            let email = line["email"].as_str().expect("email");
            let row = rows
                .iter()
                .find(|r| r.key.email == email)
                .unwrap_or_else(|| panic!("no row {email}"));
            assert_eq!(row.state, state, "{line}");
            assert_eq!(line["message_id"], row.message_id.as_str(), "{line}");
        }
    }
}

/// `sudo convenor agenda add` on the installed layout: the state directory is the service
/// user's, reached through a link into a directory only root may search (systemd's
/// `/var/lib/private`). Run as root, the command enters it and works as its owner: what it
/// makes there is the owner's (`nobody`, through setpriv, adds the next proposal), and a link
/// the owner left in it cannot make root write elsewhere. Run as another user than root,
/// nothing changes hands: the command works as that user, says nothing of an owner, and a link
/// it left to a place it may not write is an error, with nothing written there.
///
/// The README's test command runs as any user (root is needed only to install missing
/// packages), so this test does not refuse a non-root run; it checks there what a non-root
/// run does. The switch to the owner is root's alone: `.ci/run` runs as root, and so checks it.
#[test]
fn a_root_command_works_in_the_state_directory_as_its_owner() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let SharedLayout { bin, config, state } = shared_layout(dir.path());
    let root = running_as_root();
    // The service's user: `nobody` when we are root, else ourselves.
    let owner = if root {
        65534
    } else {
        std::fs::metadata(&state).expect("state").uid()
    };
    let private = dir.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::rename(&state, private.join("state")).expect("move the state");
    std::os::unix::fs::symlink("private/state", &state).expect("link");
    let add = |cmd: &mut Command, title: &str| {
        cmd.args(["--config"])
            .arg(&config)
            .args(crate::support::agenda_add_args(
                "2023-04-19",
                "future-transport",
                title,
            ))
            .current_dir(dir.path())
            .env_remove("STATE_DIRECTORY")
            .output()
            .expect("run convenor")
    };
    let hand_over = |state: &Path| {
        if root {
            for entry in walk(state) {
                std::os::unix::fs::lchown(&entry, Some(owner), Some(owner)).expect("chown");
            }
        }
        chmod(state, 0o700);
        chmod(&private, 0o700);
    };
    hand_over(&private.join("state"));

    let out = add(&mut Command::new(&bin), "Bus lanes");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Root takes on the owner, and says so; any other user works as itself, and says nothing.
    assert_eq!(
        text(&out.stderr).contains("writing as the owner of"),
        root,
        "{}",
        text(&out.stderr)
    );
    let owners: Vec<(PathBuf, u32)> = walk(&private.join("state"))
        .into_iter()
        .map(|p| {
            let uid = std::fs::symlink_metadata(&p).expect("stat").uid();
            (p, uid)
        })
        .collect();
    assert!(owners.len() > 2, "{owners:?}");
    assert!(
        owners.iter().all(|(_, uid)| *uid == owner),
        "owner {owner}: {owners:?}"
    );
    if root {
        // The service reaches its directory inside its own namespace; here, through an opened
        // `private`.
        chmod(&private, 0o755);
        let mut as_owner = Command::new("setpriv");
        as_owner
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        let out = add(&mut as_owner, "Cycle hangars");
        assert!(out.status.success(), "{}", text(&out.stderr));

        // The owner leaves the agenda store as a link to a place only root may write.
        let fresh = private.join("state");
        std::fs::remove_file(fresh.join("agenda.sqlite3")).expect("remove the store");
        let guarded = dir.path().join("root-only");
        std::fs::create_dir(&guarded).expect("mkdir");
        chmod(&guarded, 0o700);
        let victim = guarded.join("victim");
        std::os::unix::fs::symlink(&victim, fresh.join("agenda.sqlite3")).expect("link");
        hand_over(&fresh);
        // And a file an earlier version, run as root, left: named in a warning.
        let stray = fresh.join("left-by-root");
        std::fs::write(&stray, "").expect("write");
        let out = add(&mut Command::new(&bin), "Green bonds");
        assert!(
            text(&out.stderr).contains("not the state directory owner's")
                && text(&out.stderr).contains("state/left-by-root"),
            "{}",
            text(&out.stderr)
        );
        assert!(!out.status.success(), "root followed the owner's link");
        assert!(!victim.exists(), "root wrote through the owner's link");
        assert!(
            text(&out.stderr).contains("Permission denied")
                || text(&out.stderr).contains("unable to open"),
            "{}",
            text(&out.stderr)
        );
    } else {
        // Not root: the command has this user's rights and no others. The user leaves the
        // agenda store as a link into a directory it may not write: the command fails with
        // the permission error and writes nothing there, and leaves no warning about owners
        // (it checked none).
        let fresh = private.join("state");
        std::fs::remove_file(fresh.join("agenda.sqlite3")).expect("remove the store");
        let guarded = dir.path().join("read-only");
        std::fs::create_dir(&guarded).expect("mkdir");
        chmod(&guarded, 0o500);
        let victim = guarded.join("victim");
        std::os::unix::fs::symlink(&victim, fresh.join("agenda.sqlite3")).expect("link");
        let out = add(&mut Command::new(&bin), "Green bonds");
        chmod(&guarded, 0o700);
        assert!(!out.status.success(), "{}", text(&out.stderr));
        assert!(!victim.exists(), "wrote through the link into {guarded:?}");
        assert!(
            text(&out.stderr).contains("Permission denied")
                || text(&out.stderr).contains("unable to open"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("not the state directory owner's")
                && !text(&out.stderr).contains("writing as the owner of"),
            "{}",
            text(&out.stderr)
        );
    }
    chmod(&private, 0o755);
    chmod(&private.join("state"), 0o755);
}
