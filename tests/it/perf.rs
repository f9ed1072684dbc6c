//! What the start-up work was cut to still does the whole job: the feeds rendered together are
//! byte for byte the feeds rendered one by one, and the sampled template check at start and
//! reload still stops a template broken for one shape of meeting only.

use convenor::{
    feed::{self, Selection},
    http::state::Feeds,
    mail::{Templates, check},
};
use jiff::Timestamp;

use crate::daemon::harness::{Daemon, soon_text, wait_for};
use crate::support::write_config;

/// The benches' generated configs (benches/support).
#[path = "../../benches/support/mod.rs"]
pub(crate) mod generated;

fn generated_config(n: usize) -> convenor::model::Config {
    generated::config(n, &generated::Overrides::default())
}

/// The events rendered in runs on several threads are the events rendered on one, byte for
/// byte, however many threads (a start renders on every CPU it has).
#[test]
fn feeds_rendered_on_several_threads_are_the_feeds_rendered_on_one() {
    for n in [300, 1001] {
        let config = generated_config(n);
        let revisions =
            generated::revisions(&config, Timestamp::from_second(1_800_000_000).expect("ts"));
        let selections = feed::selections(&config);
        let text = |threads| {
            let calendars = feed::Calendars::render_on(&config, &revisions, &selections, threads);
            (0..calendars.len())
                .map(|i| calendars.text(i))
                .collect::<Vec<_>>()
        };
        let one = text(1);
        assert_eq!(one.len(), 6);
        for threads in [2, 3, 8] {
            assert!(text(threads) == one, "{n} meetings on {threads} threads");
        }
    }
}

#[test]
fn feeds_rendered_together_are_the_feeds_rendered_one_by_one() {
    // 600: over the size rendered and sealed on several threads where there are CPUs for it.
    for n in [0, 1, 120, 600] {
        let config = generated_config(n);
        let revisions =
            generated::revisions(&config, Timestamp::from_second(1_800_000_000).expect("ts"));
        let selections: Vec<Selection<'_>> = std::iter::once(Selection::All)
            .chain(config.priorities.iter().map(Selection::Priority))
            .collect();
        let together = feed::render_calendars(&config, &revisions, &selections);
        assert_eq!(together.len(), 6);
        for (selection, body) in selections.iter().zip(&together) {
            let alone = feed::render_calendar(&config, &revisions, *selection);
            assert!(alone == *body, "{n} meetings, {selection:?}: bytes differ");
        }
        let config = std::sync::Arc::new(config);
        let feeds = Feeds::build(&config, &revisions, None, Timestamp::now());
        // The feeds share the caller's config (megabytes at 5,000 meetings), not a copy.
        assert!(std::sync::Arc::ptr_eq(&feeds.config, &config));
        assert_eq!(feeds.calendar.body.as_ref(), together[0].as_bytes());
        for (p, body) in config.priorities.iter().zip(&together[1..]) {
            assert_eq!(
                feeds.priorities[p.id.as_str()].body.as_ref(),
                body.as_bytes()
            );
        }
    }
}

/// Breaks reminder/body.txt for meetings with a join link and notes but no location only.
fn break_for_one_shape(text: &str) -> String {
    text.replacen(
        "In focus:",
        "{% if meeting.join_url and meeting.notes and not meeting.location %}\
         {{ meeting.no_such_field }}{% endif %}In focus:",
        1,
    )
}

#[test]
fn the_sample_is_bounded_covers_every_shape_and_lead_and_catches_a_one_shape_fault() {
    let config = generated_config(600);
    let sample = check::sample(&config);
    assert!(
        sample.len() <= 64 + config.priorities.len() + 1,
        "{}",
        sample.len()
    );
    let shape = |m: &convenor::model::Meeting| {
        (
            m.is_cancelled(),
            m.location.is_some(),
            m.join_url.is_some(),
            m.notes.is_some(),
            m.focus.is_empty(),
        )
    };
    for m in &config.meetings {
        assert!(
            sample.iter().any(|s| shape(s) == shape(m)),
            "no meeting of the shape of {} in the sample",
            m.id
        );
    }
    for p in &config.priorities {
        assert!(
            sample
                .iter()
                .any(|m| config.priorities_of(m).any(|q| q.id == p.id)),
            "the lead of {} is never a recipient",
            p.id
        );
    }
    assert_eq!(
        sample.last().map(|m| &m.id),
        config.meetings.last().map(|m| &m.id)
    );

    let good = Templates::load(&config.mail.templates_dir).expect("templates");
    let all = good
        .check_all(&config)
        .expect("the shipped templates render");
    let some = good
        .check_sample(&config)
        .expect("the shipped templates render");
    assert_eq!(some.sets, all.sets);
    assert!(some.renders * 10 < all.renders, "{some:?} vs {all:?}");

    let dir = tempfile::tempdir().expect("tmp");
    let broken =
        crate::support::templates_with(dir.path(), "reminder/body.txt", break_for_one_shape);
    let broken = Templates::load(&broken).expect("the syntax is fine");
    assert!(
        config
            .meetings
            .iter()
            .any(|m| m.join_url.is_some() && m.notes.is_some() && m.location.is_none()),
        "the generated config has a meeting of the broken shape"
    );
    let errors = broken
        .check_sample(&config)
        .expect_err("the sample catches it");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("reminder/body.txt") && e.contains("undefined value")),
        "{text:?}"
    );
}

/// `convenor serve` checks the sample at reload: a template broken for one meeting out of
/// several stops the reload, and the running config stays.
#[test]
fn a_reload_with_a_template_broken_for_one_meeting_keeps_the_running_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = crate::support::templates_with(dir.path(), "reminder/body.txt", |t| {
        t.replacen("In focus:", "In focus: ", 1)
    });
    let later = "[[meeting]]\nid = \"later\"\ndate = 2031-03-04\nstart = \"10:00\"\nend = \"11:00\"\n\
                 title = \"Later\"\njoin_url = \"https://meet.example.org/later\"\n\
                 notes = \"Papers to follow.\"\n";
    let text = soon_text(&[600], None, later).replace(
        "# templates_dir = \"templates\"",
        &format!("templates_dir = {:?}", templates.display().to_string()),
    );
    let config = write_config(dir.path(), &text);
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    daemon.wait_ready();

    let body = templates.join("reminder/body.txt");
    let good = std::fs::read_to_string(&body).expect("read");
    std::fs::write(&body, break_for_one_shape(&good)).expect("break it");
    daemon.signal("HUP");
    wait_for(
        "the reload to fail on the broken template",
        || {
            let log = daemon.log_text();
            log.contains("config reload failed") && log.contains("running config stays in force")
        },
        || daemon.log_text(),
    );
    let log = daemon.log_text();
    assert!(
        log.contains("reminder/body.txt") && log.contains("undefined value"),
        "{log}"
    );
    assert!(
        log.contains("meeting later"),
        "the case named is the meeting of that shape: {log}"
    );
    assert!(!log.contains("config reloaded"), "{log}");
}
