//! `convenor serve` as a process: the state-directory lock, SIGHUP reloads (broken and valid),
//! the HTTP listener; and the harness the scheduler tests share (daemon, SMTP sink, configs).

use std::collections::BTreeMap;

use harness::*;

/// Shared by the process-level tests of the daemon and the scheduler.
pub mod harness {
    use std::{
        collections::BTreeMap,
        fs::File,
        io::{BufRead as _, BufReader},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use jiff::{SignedDuration, Timestamp, tz::TimeZone};

    use crate::support::{binary, python, repo, write_config};

    /// Polls `cond` every 100 ms for up to 60 s; panics with `what` (and `diag()`) on time-out.
    pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}\n{}",
                diag()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ledger's write lock in a state directory, held by this test process until dropped.
    /// A first `convenor serve` started meanwhile stops in start-up, before READY, with its
    /// signal handlers installed: its first write (pinning the calendar's UID domain) waits
    /// under the ledger's busy timeout (10 s). A signal sent to it while this is held certainly
    /// comes during start-up, however fast the start would otherwise be. A later start on a
    /// changed config gets to READY and waits to write its plan.
    pub struct LedgerWriteLock {
        _conn: rusqlite::Connection,
    }

    impl LedgerWriteLock {
        /// Creates the ledger in `state_dir` (a first start finds it empty) and takes its write
        /// lock.
        pub fn hold(state_dir: &Path) -> Self {
            std::fs::create_dir_all(state_dir).expect("state directory");
            drop(convenor::ledger::SqliteStore::open_in(state_dir).expect("create the ledger"));
            let conn = rusqlite::Connection::open(state_dir.join(convenor::ledger::LEDGER_FILE))
                .expect("open the ledger");
            conn.execute_batch("BEGIN IMMEDIATE")
                .expect("take the ledger's write lock");
            Self { _conn: conn }
        }
    }

    /// The Python SMTP sink (tests/tools/ledger_smtp_sink.py), killed on drop.
    pub struct Sink {
        child: Child,
        /// Its port.
        pub port: u16,
    }

    impl Sink {
        /// Starts the sink storing into `dir`, on `port` or a free one.
        pub fn start(dir: &Path, port: Option<u16>) -> Self {
            Self::spawn(dir, port, &[])
        }

        /// Like [`Sink::start`], but answering each DATA `delay_secs` seconds late.
        pub fn start_slow(dir: &Path, port: Option<u16>, delay_secs: u32) -> Self {
            Self::spawn(dir, port, &["--delay", &delay_secs.to_string()])
        }

        /// Like [`Sink::start`], but holding the `k`-th DATA (from 0) until the test calls
        /// [`Sink::release`] for it; [`Sink::wait_held`] waits until it is held, so a send is
        /// certainly in flight.
        pub fn start_gated(dir: &Path) -> Self {
            Self::spawn(dir, None, &["--gate"])
        }

        /// Like [`Sink::start`], but storing each message and then never answering its DATA
        /// (`--hold-reply`): once a message is in `dir`, its sender certainly waits for a 250
        /// that will not come.
        pub fn start_holding(dir: &Path) -> Self {
            Self::spawn(dir, None, &["--hold-reply"])
        }

        /// Waits until the gated sink holds its `k`-th DATA (`diag` explains a time-out).
        pub fn wait_held(dir: &Path, k: usize, diag: impl Fn() -> String) {
            let held = dir.join(format!(".held-{k}"));
            wait_for(&format!("DATA {k} at the sink"), || held.exists(), diag);
        }

        /// Lets the gated sink answer its `k`-th DATA (now or when it comes).
        pub fn release(dir: &Path, k: usize) {
            std::fs::create_dir_all(dir).expect("sink directory");
            File::create(dir.join(format!(".release-{k}"))).expect("release file");
        }

        fn spawn(dir: &Path, port: Option<u16>, args: &[&str]) -> Self {
            let mut cmd = Command::new(python());
            cmd.arg(repo().join("tests/tools/ledger_smtp_sink.py"))
                .arg(dir)
                .args(args);
            if let Some(p) = port {
                cmd.args(["--port", &p.to_string()]);
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the SMTP sink");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("read the sink's port");
            let port = line
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("sink said {line:?}"));
            Self { child, port }
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A running `convenor serve`, its log in a file; killed (SIGKILL) on drop.
    pub struct Daemon {
        /// The process.
        pub child: Child,
        /// Its stderr log (JSON lines).
        pub log: PathBuf,
    }

    impl Daemon {
        /// Starts `convenor serve` on `config`, listening on a free loopback port.
        pub fn spawn(config: &Path, log: &Path) -> Self {
            Self::spawn_command(serve_command(config), log)
        }

        /// Starts `command` (a [`serve_command`] or [`serve_command_of`]), its log in `log`.
        pub fn spawn_command(mut command: Command, log: &Path) -> Self {
            let child = command
                .stderr(File::create(log).expect("log file"))
                .spawn()
                .expect("start convenor serve");
            Self {
                child,
                log: log.to_path_buf(),
            }
        }

        /// The log so far.
        pub fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// Waits until the log says it is running, and returns its HTTP address.
        pub fn wait_ready(&mut self) -> String {
            self.wait_until_log_says("convenor is running")
        }

        /// Waits until the log says it is ready (READY=1 sent, the feeds served), though not
        /// yet running (a plan still to write), and returns its HTTP address.
        pub fn wait_serving(&mut self) -> String {
            self.wait_until_log_says("\"message\":\"ready ")
        }

        /// Waits until the log says where it listens and holds `text`; returns the address.
        fn wait_until_log_says(&mut self, text_wanted: &str) -> String {
            let mut addr = String::new();
            let log = self.log.clone();
            let child = &mut self.child;
            wait_for(
                "convenor serve to start",
                || {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "convenor serve exited with {status}:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if let Some(i) = text.find("listening on http://") {
                        let rest = &text[i + "listening on http://".len()..];
                        addr = rest
                            .chars()
                            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                            .collect();
                    }
                    !addr.is_empty() && text.contains(text_wanted)
                },
                || std::fs::read_to_string(&log).unwrap_or_default(),
            );
            addr
        }

        /// Sends a signal with kill(1).
        pub fn signal(&self, name: &str) {
            let ok = Command::new("kill")
                .args(["-s", name, &self.child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(ok.success(), "kill -s {name} failed");
        }

        /// Waits (up to [`wait_for`]'s limit) for the process to exit and returns its status.
        pub fn wait_exit(&mut self) -> std::process::ExitStatus {
            let mut status = None;
            let log = self.log.clone();
            let child = &mut self.child;
            wait_for(
                "convenor serve to exit",
                || {
                    status = child.try_wait().ok().flatten();
                    status.is_some()
                },
                || std::fs::read_to_string(&log).unwrap_or_default(),
            );
            status.expect("exited")
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// `convenor serve` on `config` with a free port and JSON logs.
    pub fn serve_command(config: &Path) -> Command {
        serve_command_of(&binary(), config)
    }

    /// [`serve_command`] running the executable at `binary`.
    pub fn serve_command_of(binary: &Path, config: &Path) -> Command {
        let mut cmd = Command::new(binary);
        serve_arguments(&mut cmd, config);
        cmd
    }

    /// Appends `serve`'s arguments and environment to `cmd` (a convenor binary, or a wrapper
    /// whose last argument so far is one).
    pub fn serve_arguments(cmd: &mut Command, config: &Path) {
        cmd.args(["--log-json", "--config"])
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(repo())
            .env_remove("STATE_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
    }

    /// A config whose one meeting starts soon, today, with one list mail due `offsets[i]`
    /// seconds from now for each `i` (ids `mail-0`, `mail-1`, ...), sent to `smtp_port` (or to
    /// the file outbox when `None`). Returns the config path.
    pub fn soon_config(dir: &Path, offsets: &[i64], smtp_port: Option<u16>) -> PathBuf {
        write_config(dir, &soon_text(offsets, smtp_port, ""))
    }

    /// The text of [`soon_config`]'s config, with `extra` appended.
    pub fn soon_text(offsets: &[i64], smtp_port: Option<u16>, extra: &str) -> String {
        let now = Timestamp::now();
        // A zone where the meeting (in 30 minutes, for 30 minutes) stays on today's date.
        let (zone, local) = ["Europe/London", "Asia/Tokyo", "America/New_York"]
            .iter()
            .map(|z| (*z, now.to_zoned_datetime(TimeZone::get(z).expect("zone"))))
            .find(|(_, l)| {
                let minutes = i32::from(l.hour()) * 60 + i32::from(l.minute());
                (10..=22 * 60).contains(&minutes)
            })
            .expect("one of three zones is between 00:10 and 22:00");
        let start_local = local
            .round(jiff::Unit::Minute)
            .expect("round")
            .checked_add(SignedDuration::from_mins(30))
            .expect("add");
        let end_local = start_local
            .checked_add(SignedDuration::from_mins(30))
            .expect("add");
        let start = start_local.timestamp();
        let transport = match smtp_port {
            Some(port) => format!(
                "transport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 tls = \"plaintext\"\ntimeout = \"5s\"\n"
            ),
            None => "transport = \"file\"\n".to_owned(),
        };
        let mut emails = String::new();
        for (i, off) in offsets.iter().enumerate() {
            let due = now
                .checked_add(SignedDuration::from_secs(*off))
                .expect("add");
            let before = start.duration_since(due).as_secs();
            emails.push_str(&format!(
                "[[email]]\nid = \"mail-{i}\"\ntemplate = \"reminder\"\nbefore = \"{before}s\"\n\
                 audience = \"list\"\ngrace = \"1h\"\n"
            ));
        }
        format!(
            "[network]\nshort_name = \"LEDNet\"\nname = \"Test network\"\ntime_zone = \"{zone}\"\n\
             base_url = \"http://127.0.0.1:8080\"\ncontact = \"team@example.org\"\n\
             [mail]\nfrom = \"team@example.org\"\nlist = [\"list@example.org\"]\n\
             # templates_dir = \"templates\"\n{transport}\
             # [state]\n# dir = \"state\"\n\
             [scheduler]\nmax_catch_up = 100\nretry_base = \"1s\"\n\
             [[priority]]\nid = \"p1\"\nname = \"P1\"\nsummary = \"s\"\n\
             [priority.lead]\nname = \"Lead\"\nemail = \"lead@example.org\"\n\
             [[meeting]]\nid = \"soon\"\ndate = {}\nstart = \"{}\"\nend = \"{}\"\n\
             title = \"Soon meeting\"\n{emails}{extra}",
            start_local.strftime("%Y-%m-%d"),
            start_local.strftime("%H:%M"),
            end_local.strftime("%H:%M"),
        )
    }

    /// A copy of the shipped templates in `dir/templates` whose every subject is
    /// `key <meeting id>/<email id>` (ASCII, so the raw header holds it as written): a test
    /// reading mails with [`subject_keys`] tells them apart by what the templates were given,
    /// not by the Message-ID under test. Returns the directory, for `[mail] templates_dir`.
    pub fn keyed_templates(dir: &Path) -> PathBuf {
        let to = dir.join("templates");
        for set in std::fs::read_dir(repo().join("templates"))
            .expect("templates")
            .flatten()
        {
            let set_dir = to.join(set.file_name());
            std::fs::create_dir_all(&set_dir).expect("template set directory");
            for file in std::fs::read_dir(set.path())
                .expect("template set")
                .flatten()
            {
                std::fs::copy(file.path(), set_dir.join(file.file_name())).expect("copy");
            }
            std::fs::write(
                set_dir.join("subject.txt"),
                "key {{ meeting.id }}/{{ email.id }}\n",
            )
            .expect("subject.txt");
        }
        to
    }

    /// Every complete message in `dir` (`*.eml`) sent with [`keyed_templates`]: each one's
    /// Message-ID, keyed `meeting/email` from its Subject (a message without such a subject
    /// fails the test).
    pub fn subject_keys(dir: &Path) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in std::fs::read_dir(dir).expect("mail directory").flatten() {
            let path = path.path();
            if path.extension().is_none_or(|x| x != "eml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read eml");
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                    .unwrap_or_else(|| panic!("{} has no {name}\n{text}", path.display()))
            };
            let key = header("Subject: key ");
            map.entry(key).or_default().push(header("Message-ID:"));
        }
        map
    }

    /// One received message: its ledger key (taken from its Message-ID, so two mails sharing a
    /// Message-ID by mistake share a key too: see [`subject_keys`] to tell them apart) and its
    /// Message-ID header.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Received {
        /// `meeting/email/audience`.
        pub key: String,
        /// The Message-ID header value.
        pub message_id: String,
    }

    /// Every complete message in `dir` (`*.eml`).
    pub fn received(dir: &Path) -> Vec<Received> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "eml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read eml");
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(name)
                            .filter(|_| l.len() > name.len())
                            .map(|v| v.trim().to_owned())
                    })
                    .unwrap_or_else(|| panic!("{} has no {name}\n{text}", path.display()))
            };
            // The Message-ID is `<meeting.email.n.digest@domain>` (mail::message_id); these
            // tests send list mail only.
            let message_id = header("Message-ID:");
            let parts: Vec<&str> = message_id.trim_matches(['<', '>']).split('.').collect();
            out.push(Received {
                key: format!("{}/{}/list", parts[0], parts[1]),
                message_id,
            });
        }
        out
    }

    /// Received messages grouped by key.
    pub fn by_key(dir: &Path) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in received(dir) {
            map.entry(r.key).or_default().push(r.message_id);
        }
        map
    }

    /// (state, attempts, last_error) of each ledger row, keyed `meeting/email/audience`. No
    /// ledger file yet is no rows; a ledger that cannot be read fails the test (a caller
    /// polling a daemon that may still be creating it waits for [`Daemon::wait_ready`] first).
    pub fn ledger_rows(state_dir: &Path) -> BTreeMap<String, (String, u32, Option<String>)> {
        let path = state_dir.join("ledger.sqlite3");
        if !path.exists() {
            return BTreeMap::new();
        }
        fn fail<T>(path: &Path, e: rusqlite::Error) -> T {
            panic!("read the ledger {}: {e}", path.display())
        }
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| fail(&path, e));
        conn.busy_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| fail(&path, e));
        let mut stmt = conn
            .prepare(
                "SELECT meeting || '/' || email || '/' || audience, state, attempts, last_error \
                 FROM mails",
            )
            .unwrap_or_else(|e| fail(&path, e));
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .and_then(|rows| rows.collect())
            .unwrap_or_else(|e| fail(&path, e))
    }
}

#[test]
fn a_second_serve_on_the_same_state_directory_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = soon_config(dir.path(), &[600], None);
    let mut first = Daemon::spawn(&config, &dir.path().join("first.log"));
    first.wait_ready();
    let second = serve_command(&config)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run a second serve");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second serve succeeded: {stderr}");
    assert!(
        stderr.contains("another convenor")
            && stderr.contains(&format!("pid {}", first.child.id()))
            && stderr.contains("convenor.lock"),
        "{stderr}"
    );
    // The first one is unharmed.
    assert!(first.log_text().contains("convenor is running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_config_keeps_serving_and_sending_and_a_valid_one_replans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start(&mails, None);
    // mail-0 soon; mail-1 later, due after the broken reload.
    let offsets = [2, 8];
    let config = soon_config(dir.path(), &offsets, Some(sink.port));
    let good_text = std::fs::read_to_string(&config).expect("config");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();
    let client = reqwest::Client::new();
    let health = format!("http://{addr}/healthz");
    assert_eq!(client.get(&health).send().await.expect("GET").status(), 200);

    // Break the config (two errors) and reload.
    let broken = good_text
        .replace("max_catch_up = 100", "max_catch_up = 0")
        .replace(
            "audience = \"list\"\ngrace = \"1h\"\n[[email]]",
            "audience = \"all\"\ngrace = \"1h\"\n[[email]]",
        );
    std::fs::write(&config, &broken).expect("write broken config");
    daemon.signal("HUP");
    wait_for(
        "the reload failure with every diagnostic",
        || {
            let log = daemon.log_text();
            log.contains("the running config stays in force")
                && log.contains("0 must be a whole number of at least 1")
                && log.contains("unknown audience `all`")
                && log.matches("config reload failed").count() == 2
        },
        || daemon.log_text(),
    );
    assert_eq!(client.get(&health).send().await.expect("GET").status(), 200);
    // Both mails still go out under the old config (mail-1 comes due after the broken reload).
    wait_for(
        "both mails",
        || by_key(&mails).len() == 2,
        || format!("{:?}\n{}", by_key(&mails), daemon.log_text()),
    );
    assert!(daemon.child.id() > 0);

    // A valid reload that adds a mail rule: the ledger plans it at once.
    let extra = good_text.clone()
        + "[[email]]\nid = \"added\"\ntemplate = \"reminder\"\nbefore = \"1m\"\naudience = \"list\"\n";
    std::fs::write(&config, extra).expect("write valid config");
    daemon.signal("HUP");
    wait_for(
        "the valid reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let state = dir.path().join("state");
    assert_eq!(
        ledger_rows(&state)
            .get("soon/added/list")
            .map(|r| r.0.clone()),
        Some("pending".to_owned()),
        "{:?}",
        ledger_rows(&state)
    );
}

/// The daemon logs a warning for each feed that nears Google's 1 MB limit when it builds the
/// feeds at start, and again at a reload (the rule `convenor check` prints), naming each by its
/// path below the token prefix.
#[test]
fn serve_warns_of_feeds_near_googles_limit_at_start_and_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        crate::support::write_config(dir.path(), &crate::support::config_with_meetings(700));
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    let warned = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("WARN") && l.contains("the feed /") && l.contains("over 800 KiB")
            })
            .count()
    };
    assert_eq!(warned(&daemon.log_text()), 6, "{}", daemon.log_text());
    assert!(
        daemon.log_text().contains("the feed /calendar.ics is "),
        "{}",
        daemon.log_text()
    );
    daemon.signal("HUP");
    wait_for(
        "the reload",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    assert_eq!(warned(&daemon.log_text()), 12, "{}", daemon.log_text());
}

/// A reload whose plan the ledger cannot take (another process holds its write lock past the
/// busy timeout) changes nothing: the feed served stays byte for byte the same and no revision
/// is written, half or whole. The next reload, with the ledger free, applies the change once:
/// the moved meeting's SEQUENCE rises by exactly one and no other meeting's moves.
#[test]
fn a_reload_the_ledger_refuses_changes_nothing_and_the_next_applies_it_once() {
    use crate::support::{example_config_text, june_moved, write_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let original = example_config_text();
    let moved = june_moved();
    let config = write_config(dir.path(), &original);
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();
    let feed = || {
        reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .expect("GET /calendar.ics")
    };
    let revisions = || -> BTreeMap<String, (u32, u32)> {
        let conn = rusqlite::Connection::open(state.join(convenor::ledger::LEDGER_FILE))
            .expect("open the ledger");
        let mut stmt = conn
            .prepare(
                "SELECT meeting, sequence, \
                 (SELECT count(*) FROM revision_history h WHERE h.meeting = r.meeting) \
                 FROM meeting_revisions r",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let (feed_before, revisions_before) = (feed(), revisions());
    assert_eq!(revisions_before.len(), 5, "{revisions_before:?}");

    write_config(dir.path(), &moved);
    let held = LedgerWriteLock::hold(&state);
    daemon.signal("HUP");
    wait_for(
        "the reload the ledger refused",
        || {
            daemon
                .log_text()
                .contains("config reload: the ledger failed, keeping the running config")
        },
        || daemon.log_text(),
    );
    assert!(
        feed() == feed_before,
        "the running feed is served unchanged"
    );
    drop(held);
    assert_eq!(revisions(), revisions_before, "no revision was written");

    daemon.signal("HUP");
    wait_for(
        "the reload with the ledger free",
        || daemon.log_text().contains("config reloaded"),
        || daemon.log_text(),
    );
    let after = revisions();
    for (meeting, (sequence, history)) in &revisions_before {
        let bump = u32::from(meeting == "2023-06-07");
        assert_eq!(
            after[meeting],
            (sequence + bump, history + bump),
            "{meeting}: {after:?}"
        );
    }
    let text = String::from_utf8_lossy(&feed()).replace("\r\n ", "");
    assert!(
        text.contains("DTSTART;TZID=Europe/London:20230607T084500"),
        "{text}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
}

/// SIGTERM while a mail is in mid-conversation with a slow server: the send finishes, the row
/// is `sent`, and the process exits 0 (a send in flight is not cut off).
#[test]
fn sigterm_lets_a_send_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start_slow(&mails, None, 3);
    let config = soon_config(dir.path(), &[1], Some(sink.port));
    let state = dir.path().join("state");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    wait_for(
        "the mail to be claimed",
        || ledger_rows(&state).values().any(|r| r.0 == "sending"),
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
    assert_eq!(by_key(&mails).len(), 1, "{}", daemon.log_text());
    let rows = ledger_rows(&state);
    assert_eq!(rows.len(), 1, "the one mail's row: {rows:?}");
    assert!(rows.values().all(|r| r.0 == "sent"), "{rows:?}");
}

/// Under systemd (`JOURNAL_STREAM` set) the reason a start failed reaches journald as an error,
/// so `journalctl -p warning` shows it: every line of a config error, and a fatal error after
/// the config loaded (the port already taken), starts with the `<3>` priority prefix.
#[test]
fn a_failed_start_is_logged_at_error_priority_under_journald() {
    use crate::support::{binary, example_config_text, repo, write_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = |config: &std::path::Path, listen: &str| {
        std::process::Command::new(binary())
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", listen])
            .current_dir(repo())
            .env("JOURNAL_STREAM", "8:12345")
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run convenor serve")
    };

    let broken = write_config(
        dir.path(),
        &(example_config_text() + "\n[unknown_table]\nkey = 1\n"),
    );
    let out = serve(&broken, "127.0.0.1:0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("unknown_table"), "{stderr}");
    assert!(
        stderr.contains("error(s); the config was not used"),
        "{stderr}"
    );
    assert!(stderr.lines().all(|l| l.starts_with("<3>")), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let valid = write_config(dir.path(), &example_config_text());
    let out = serve(&valid, &addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let fatal = stderr
        .lines()
        .find(|l| l.contains("cannot listen on"))
        .unwrap_or_else(|| panic!("no bind error:\n{stderr}"));
    assert!(fatal.starts_with("<3>convenor: "), "{stderr}");
}

/// SIGTERM during a pass with three mails due at once, while the first is in mid-send (held by
/// the server): that send finishes and is `sent`, the process exits 0, and the two not started
/// stay `pending` (README, "Stop, restart, watchdog"), even though the server would take them.
#[test]
fn sigterm_during_a_pass_finishes_the_send_in_flight_and_starts_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start_gated(&mails);
    // A long SMTP timeout: the first send waits on the test, however slow the machine.
    let text =
        soon_text(&[1, 1, 1], Some(sink.port), "").replace("timeout = \"5s\"", "timeout = \"60s\"");
    let config = crate::support::write_config(dir.path(), &text);
    let state = dir.path().join("state");
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();
    Sink::wait_held(&mails, 0, || {
        format!("{:?}\n{}", ledger_rows(&state), daemon.log_text())
    });
    daemon.signal("TERM");
    wait_for(
        "the scheduler to take the stop",
        || daemon.log_text().contains("scheduler stopping"),
        || daemon.log_text(),
    );
    // The server now answers everything at once: only a send started before the stop may go.
    for k in 0..3 {
        Sink::release(&mails, k);
    }
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.log_text());
    assert_eq!(
        by_key(&mails).keys().collect::<Vec<_>>(),
        ["soon/mail-0/list"],
        "{}",
        daemon.log_text()
    );
    let states: Vec<(String, String)> = ledger_rows(&state)
        .into_iter()
        .map(|(k, r)| (k, r.0))
        .collect();
    let expected = [
        ("soon/mail-0/list", "sent"),
        ("soon/mail-1/list", "pending"),
        ("soon/mail-2/list", "pending"),
    ]
    .map(|(k, s)| (k.to_owned(), s.to_owned()));
    assert_eq!(states, expected, "{}", daemon.log_text());
}

/// Changing `network.time_zone` moves every meeting's instant, and is handled as the move it
/// is: on SIGHUP the feed's event keeps its UID at SEQUENCE 1, in the new zone, at the new
/// instant (read by an independent parser); the list gets one change notice that shows the
/// time before in the old zone and the time now in the new one. A restart on the same config
/// sends nothing more and raises nothing more.
#[test]
fn a_new_time_zone_is_a_move_with_a_higher_sequence_and_one_change_notice() {
    use serde_json::Value;

    use crate::{feed::parse_ics, support::write_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let mails = dir.path().join("mails");
    let sink = Sink::start(&mails, None);
    let notice = "[[email]]\nid = \"change-notice\"\ntemplate = \"change-notice\"\non = \"change\"\n\
                  audience = \"list\"\n";
    // The reminder is due in ten minutes: only the notice goes out during the test.
    let text = soon_text(&[600], Some(sink.port), notice);
    // A zone to the west of the one chosen, so the meeting moves later, not into the past.
    let (old_zone, new_zone, old_abbr, new_abbr) = [
        (
            "Europe/London",
            "America/New_York",
            ["GMT", "BST"],
            ["EST", "EDT"],
        ),
        (
            "Asia/Tokyo",
            "Europe/London",
            ["JST", "JST"],
            ["GMT", "BST"],
        ),
        (
            "America/New_York",
            "America/Los_Angeles",
            ["EST", "EDT"],
            ["PST", "PDT"],
        ),
    ]
    .into_iter()
    .find(|(zone, ..)| text.contains(&format!("time_zone = \"{zone}\"")))
    .expect("soon_text picks one of three zones");
    let config = write_config(dir.path(), &text);
    let feed = |addr: &str| {
        let body = reqwest::blocking::get(format!("http://{addr}/calendar.ics"))
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("GET /calendar.ics");
        let v = parse_ics(&body);
        let event = v["events"][0].clone();
        (body, event)
    };
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();
    let (body0, e0) = feed(&addr);
    assert_eq!(e0["sequence"], 0, "{body0}");
    assert!(body0.contains(&format!("TZID={old_zone}:")), "{body0}");

    write_config(
        dir.path(),
        &text.replace(
            &format!("time_zone = \"{old_zone}\""),
            &format!("time_zone = \"{new_zone}\""),
        ),
    );
    daemon.signal("HUP");
    wait_for(
        "the change notice",
        || by_key(&mails).contains_key("soon/change-notice/list"),
        || format!("{:?}\n{}", by_key(&mails), daemon.log_text()),
    );
    let (body1, e1) = feed(&addr);
    assert_eq!(e1["uid"], e0["uid"]);
    assert_eq!(e1["sequence"], 1, "{body1}");
    assert!(body1.contains(&format!("TZID={new_zone}:")), "{body1}");
    assert_ne!(e1["start_utc"], e0["start_utc"]);
    let notices: Vec<Value> = std::fs::read_dir(&mails)
        .expect("mails")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read(e.path()).expect("read mail"))
        .map(|bytes| {
            serde_json::from_slice(&crate::support::run_tool("mime_parse.py", &[], &bytes).stdout)
                .expect("json")
        })
        .filter(|m: &Value| {
            m["headers"]["message-id"][0]
                .as_str()
                .is_some_and(|id| id.starts_with("<soon.change-notice."))
        })
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let text_body = |node: &Value| -> Option<String> {
        fn find(node: &Value) -> Option<String> {
            if node["type"] == "text/plain" {
                return node["text"].as_str().map(str::to_owned);
            }
            node["children"].as_array()?.iter().find_map(find)
        }
        find(node)
    };
    let body = text_body(&notices[0]["tree"]).expect("a text/plain part");
    let line = |prefix: &str| {
        body.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{body}"))
            .to_owned()
    };
    let (was, now) = (line("Was:"), line("Now:"));
    assert!(
        old_abbr.iter().any(|a| was.ends_with(&format!(" {a}"))),
        "{was}"
    );
    assert!(
        new_abbr.iter().any(|a| now.ends_with(&format!(" {a}"))),
        "{now}"
    );
    // The notice's `sent` committed before the stop (the sink has it from before the commit).
    let state = dir.path().join("state");
    wait_for(
        "the notice recorded as sent",
        || {
            ledger_rows(&state)
                .iter()
                .any(|(k, r)| k.contains("change-notice") && r.0 == "sent")
        },
        || format!("{:?}\n{}", ledger_rows(&state), daemon.log_text()),
    );
    drop(daemon);

    // A restart on the same config, made to reconcile in full (its plan stamp removed, as a
    // new build would): no second notice, no second rise.
    let ledger = rusqlite::Connection::open(dir.path().join("state/ledger.sqlite3")).expect("open");
    assert_eq!(
        ledger
            .execute("DELETE FROM plan_stamp", [])
            .expect("remove the stamp"),
        1
    );
    drop(ledger);
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve-2.log"));
    let addr = daemon.wait_ready();
    let (_, e2) = feed(&addr);
    assert_eq!(e2["sequence"], 1);
    let log = daemon.log_text();
    assert!(
        !log.contains("already reconciled with this config"),
        "the restart reconciled:\n{log}"
    );
    drop(daemon);
    // The restart's reconciliation is committed before READY: a second notice would be a
    // second change-notice row in the ledger now, whether or not the scheduler got to send it
    // before the kill.
    let ledger = rusqlite::Connection::open(dir.path().join("state/ledger.sqlite3")).expect("open");
    let notice_rows: Vec<(i64, String)> = ledger
        .prepare("SELECT occurrence, state FROM mails WHERE email = 'change-notice'")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        notice_rows.len(),
        1,
        "one change notice, queued before the restart: {notice_rows:?}"
    );
    assert_eq!(notice_rows[0].1, "sent", "{notice_rows:?}");
    assert_eq!(
        by_key(&mails).get("soon/change-notice/list").map(Vec::len),
        Some(1)
    );
}

/// `convenor reload` (the unit's ExecReload) sends SIGHUP and waits for the outcome, so that
/// `systemctl reload` says how it went: 0 once the service runs the new config (the feed shows
/// it as soon as the command returns), 1 with the service's own error when the service refuses
/// it (a template that does not parse: only the service checks templates), 78 without a signal
/// when the config does not even load here (the service would refuse it the same way).
#[tokio::test]
async fn convenor_reload_waits_for_the_reload_and_says_how_it_went() {
    use std::process::Command;

    use crate::support::{binary, example_config_text, repo, templates_with, write_config};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &example_config_text());
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();
    let pid = daemon.child.id().to_string();
    let reload = |pid: &str| {
        Command::new(binary())
            .args(["--config"])
            .arg(&config)
            .args(["reload", "--pid", pid])
            .current_dir(repo())
            .env_remove("STATE_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("run convenor reload")
    };
    let feed = || async {
        let url = format!("http://{addr}/calendar.ics");
        let response = reqwest::get(url).await.expect("GET the feed");
        response.text().await.expect("the feed's body")
    };
    let reloads_begun = |log: &str| log.matches("SIGHUP: reloading the config").count();
    let text = std::fs::read_to_string(&config).expect("config");
    let titled = |title: &str| {
        let changed = text.replacen(
            "title = \"LEDNet meeting\"",
            &format!("title = \"{title}\""),
            1,
        );
        assert_ne!(changed, text, "the shipped config has a meeting titled so");
        changed
    };

    // Taken: the command returns once the service runs the new config.
    std::fs::write(&config, titled("Renamed meeting")).expect("write");
    let out = reload(&pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reloaded: convenor (pid"),
        "{out:?}"
    );
    assert!(feed().await.contains("SUMMARY:Renamed meeting"));
    assert_eq!(reloads_begun(&daemon.log_text()), 1);

    // Refused by the service: a template it cannot load. The running config stays.
    let templates = templates_with(dir.path(), "agenda-call/subject.txt", |t| {
        format!("{t}{{{{ unclosed")
    });
    let repo_templates = repo().join("templates");
    let broken = titled("Not taken").replace(
        &format!("templates_dir = \"{}\"", repo_templates.display()),
        &format!("templates_dir = \"{}\"", templates.display()),
    );
    assert!(broken.contains(&templates.display().to_string()));
    std::fs::write(&config, broken).expect("write");
    let out = reload(&pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the new config and keeps its running one")
            && stderr.contains("agenda-call/subject.txt"),
        "{stderr}"
    );
    let served = feed().await;
    assert!(served.contains("SUMMARY:Renamed meeting") && !served.contains("Not taken"));
    assert_eq!(reloads_begun(&daemon.log_text()), 2);

    // Not even a config: 78, and the service is not signalled. The next reload is the third
    // the service begins (a signal from the failed command would have made it the fourth).
    std::fs::write(&config, "[network\n").expect("write");
    let out = reload(&pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("not reloaded: convenor (pid") && stderr.contains("convenor.toml:1:"),
        "{stderr}"
    );
    std::fs::write(&config, titled("Third title")).expect("write");
    let out = reload(&pid);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(feed().await.contains("SUMMARY:Third title"));
    assert_eq!(
        reloads_begun(&daemon.log_text()),
        3,
        "{}",
        daemon.log_text()
    );

    // The unit's own ExecReload= line, with the test's binary, config and process.
    let unit = std::fs::read_to_string(repo().join("systemd/convenor.service")).expect("unit");
    let line = (unit.lines())
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("an ExecReload= line");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/convenor"), "{line}");
    let args: Vec<String> = words
        .map(|w| match w {
            "/etc/convenor/convenor.toml" => config.display().to_string(),
            "$MAINPID" => pid.clone(),
            other => other.to_owned(),
        })
        .collect();
    std::fs::write(&config, titled("Fourth title")).expect("write");
    let out = Command::new(binary())
        .args(&args)
        .current_dir(repo())
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run the unit's ExecReload");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reloaded: convenor (pid"),
        "{out:?}"
    );
    assert!(feed().await.contains("SUMMARY:Fourth title"));

    // Another process than the one serving the state directory (a mistyped pid): not
    // signalled, an error at once, naming both.
    let mut other = Command::new("sleep").arg("30").spawn().expect("run sleep");
    let out = reload(&other.id().to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} is not the convenor serving", other.id()))
            && stderr.contains(&format!("its lock file names {pid}")),
        "{stderr}"
    );
    assert_eq!(
        other.try_wait().expect("sleep's state"),
        None,
        "sleep was not signalled"
    );
    other.kill().expect("stop sleep");
    other.wait().expect("wait");
}
