//! Benchmark inputs: the shipped config with its meetings replaced by `n` generated ones.
//!
//! Shared by the criterion benches (`#[path]`-included) and `examples/bench_tool.rs`, which
//! writes the same configs for `bench/run.sh`. Everything but the meetings (network, priorities,
//! mail schedule) is the shipped `config/lednet.toml`, so the figures are for the real shape.
#![allow(dead_code)] // Each including target uses a different part.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use convenor::{
    config::{self, Environment},
    model::{Config, MeetingId},
    revision::{self, StoredRevision},
};

/// The shipped config, as text.
pub const SHIPPED: &str = include_str!("../../config/lednet.toml");

/// The priority ids of the shipped config, cycled through for `focus`.
const PRIORITIES: [&str; 5] = [
    "finance-investment",
    "future-places",
    "future-transport",
    "health-environment",
    "adaptation-flooding",
];

/// Settings that a run of the daemon needs beyond the shipped config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `[mail] templates_dir` (absolute), when the file is written away from the repository.
    pub templates_dir: Option<String>,
    /// `[state] dir`.
    pub state_dir: Option<String>,
    /// `[http] listen`.
    pub listen: Option<String>,
    /// Deliver over plaintext SMTP to this loopback port instead of the outbox.
    pub smtp_port: Option<u16>,
}

/// The shipped config with `n` generated meetings, one a weekday from 2027-01-04 (after every
/// mail's lead time from today, so none is due while a benchmark runs). They vary the way real
/// ones do: start time, focus (none = all five priorities), location, join link, notes, and
/// every 50th is cancelled. Each meeting's `id` is its date (the id it had when `id` defaulted
/// to the date), so the feeds are the same bytes as before `id` was required.
pub fn config_toml(n: usize, o: &Overrides) -> String {
    let first_meeting = SHIPPED
        .find("\n[[meeting]]")
        .map_or(SHIPPED.len(), |i| i + 1);
    let first_email = SHIPPED.find("\n[[email]]").map_or(SHIPPED.len(), |i| i + 1);
    let mut head = SHIPPED[..first_meeting].to_owned();
    if let Some(dir) = &o.templates_dir {
        head = head.replacen("[mail]\n", &format!("[mail]\ntemplates_dir = {dir:?}\n"), 1);
    }
    if o.smtp_port.is_some() {
        head = head.replacen("transport = \"file\"", "transport = \"smtp\"", 1);
    }
    if let Some(listen) = &o.listen {
        head = head.replacen(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = {listen:?}"),
            1,
        );
    }
    let mut out = head;
    // Weekdays only: no weekend or clock-change-day warnings at load.
    let mut dates =
        std::iter::successors(Some(jiff::civil::date(2027, 1, 4)), |d| d.tomorrow().ok())
            .filter(|d| d.weekday().to_monday_one_offset() <= 5);
    for i in 0..n {
        let Some(date) = dates.next() else { break };
        let (from, to) = if i % 2 == 0 {
            ("10:00", "12:30")
        } else {
            ("14:00", "16:00")
        };
        let _ = writeln!(
            out,
            "[[meeting]]\nid = \"{date}\"\ndate = {date}\nstart = \"{from}\"\nend = \"{to}\"\n\
             title = \"LEDNet meeting {}\"",
            i + 1
        );
        if i % 4 != 3 {
            let _ = writeln!(out, "location = \"Room {}, City Hall, London\"", i % 17 + 1);
        }
        if i % 2 == 1 {
            let _ = writeln!(
                out,
                "join_url = \"https://meet.example.org/lednet-{}\"",
                i + 1
            );
        }
        match i % 3 {
            0 => {}
            1 => {
                let _ = writeln!(out, "focus = [{:?}]", PRIORITIES[i % 5]);
            }
            _ => {
                let _ = writeln!(
                    out,
                    "focus = [{:?}, {:?}]",
                    PRIORITIES[i % 5],
                    PRIORITIES[(i + 2) % 5]
                );
            }
        }
        if i % 3 == 2 {
            out.push_str(
                "notes = \"\"\"\nPapers go out a week before. Please send apologies to the team; \
                 a deputy may attend in your place.\"\"\"\n",
            );
        }
        if i % 50 == 49 {
            out.push_str("status = \"cancelled\"\n");
        }
        out.push('\n');
    }
    out.push_str(&SHIPPED[first_email..]);
    if let Some(port) = o.smtp_port {
        let _ = write!(
            out,
            "\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"plaintext\"\ntimeout = \"30s\"\n"
        );
    }
    if let Some(dir) = &o.state_dir {
        let _ = write!(out, "\n[state]\ndir = {dir:?}\n");
    }
    out
}

/// The generated config of `n` meetings, loaded and validated as if it were
/// `config/bench.toml` in the repository (so the shipped templates are found beside it).
pub fn config(n: usize, o: &Overrides) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bench.toml");
    match config::parse(&path, &config_toml(n, o), &Environment::default()) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("the generated config of {n} meetings is invalid: {e}"),
    }
}

/// A first revision of every meeting, as the ledger would store them (SEQUENCE 0, stamped at
/// `now`).
pub fn revisions(config: &Config, now: jiff::Timestamp) -> BTreeMap<MeetingId, StoredRevision> {
    config
        .meetings
        .iter()
        .map(|m| {
            let (rev, _) = revision::next_revision(None, config, m, now);
            (m.id.clone(), rev)
        })
        .collect()
}
