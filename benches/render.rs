//! Criterion benches of the pure cores: feed rendering, mail planning (the timeline and the
//! scheduler's reconcile), one mail; and the one disk-bound step of a first start, writing the
//! plan into a new ledger.
//!
//! Sizes are 5 (the shipped year), 500 and 5,000 generated meetings (benches/support). Each
//! size-dependent group sets `Throughput::Elements(meetings)`, so criterion prints meetings per
//! second beside the time: a constant rate across sizes is linear growth. `bench/run.sh` turns
//! the estimates into time per meeting. CI builds these (`cargo bench --no-run`) and never times
//! them.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;

use convenor::{
    feed::{self, Selection},
    http::Feeds,
    mail::{self, ComposeInput, Templates},
    schedule::{self, Recipient},
    scheduler,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;

/// The meeting counts every size-dependent bench runs at.
const SIZES: [usize; 3] = [5, 500, 5_000];

/// A fixed "now" (2026-11-28T12:00:00Z): the benches never read the clock.
fn now() -> Timestamp {
    Timestamp::from_second(1_795_867_200).expect("in range")
}

fn feed_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("feed_render");
    for n in SIZES {
        let config = support::config(n, &support::Overrides::default());
        let revisions = support::revisions(&config, now());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| feed::render_calendar(black_box(&config), &revisions, Selection::All));
        });
    }
    g.finish();

    // Everything a (re)load renders: the whole feed, one per priority, ETags, headers.
    let mut g = c.benchmark_group("feeds_build");
    for n in SIZES {
        let config = std::sync::Arc::new(support::config(n, &support::Overrides::default()));
        let revisions = support::revisions(&config, now());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| Feeds::build(black_box(&config), &revisions, None, now()));
        });
    }
    g.finish();
}

fn schedule_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule_timeline");
    for n in SIZES {
        let config = support::config(n, &support::Overrides::default());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| schedule::timeline(black_box(&config)));
        });
    }
    g.finish();

    // The scheduler's planning core on a first start: every mail of the config is new.
    let mut g = c.benchmark_group("scheduler_reconcile");
    for n in SIZES {
        let config = support::config(n, &support::Overrides::default());
        let revisions = std::collections::BTreeMap::new();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                scheduler::reconcile(
                    black_box(&config),
                    &[],
                    &revisions,
                    &Default::default(),
                    now(),
                )
            });
        });
    }
    g.finish();
}

/// Writing a first plan into a new ledger (the bulk write of a first start): every row of the
/// reconcile above, in one transaction, committed (with the WAL synced) into a fresh SQLite
/// file in a temporary directory. Disk-bound in part: compare runs on one machine only.
fn ledger_benches(c: &mut Criterion) {
    use convenor::ledger::{SqliteStore, Store as _};
    let mut g = c.benchmark_group("ledger_first_plan");
    g.sample_size(10);
    for n in [500, 5_000] {
        let config = support::config(n, &support::Overrides::default());
        let replan = scheduler::reconcile(
            &config,
            &[],
            &Default::default(),
            &Default::default(),
            now(),
        )
        .replan;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("temporary directory");
                    let store = SqliteStore::open_in(dir.path()).expect("ledger");
                    (dir, store)
                },
                |(dir, mut store)| {
                    store.apply(black_box(&replan)).expect("apply");
                    (dir, store)
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

fn mail_benches(c: &mut Criterion) {
    let config = support::config(5, &support::Overrides::default());
    let templates = match Templates::load(&config.mail.templates_dir) {
        Ok(t) => t,
        Err(e) => panic!("shipped templates: {e}"),
    };
    let meeting = &config.meetings[2];
    let rule = &config.emails[0];
    let recipient = Recipient::List;
    let revisions = support::revisions(&config, now());
    let revision = &revisions[&meeting.id];
    let message_id = mail::message_id(&config, &meeting.id, &rule.id, &recipient, 0);
    let invite = feed::render_meeting_invite(&config, meeting, Some(revision));
    let input = ComposeInput {
        config: &config,
        templates: &templates,
        meeting,
        rule,
        recipient: &recipient,
        revision,
        message_id: &message_id,
        thread_root: None,
        date: now(),
        change: None,
        invite_ics: &invite,
    };
    let mut g = c.benchmark_group("mail");
    g.bench_function("render", |b| b.iter(|| mail::render(black_box(&input))));
    g.bench_function("invite", |b| {
        b.iter(|| feed::render_meeting_invite(black_box(&config), meeting, Some(revision)))
    });
    g.bench_function("compose", |b| b.iter(|| mail::compose(black_box(&input))));
    g.bench_function("compose_and_format", |b| {
        b.iter(|| mail::compose(black_box(&input)).map(|m| m.formatted()))
    });
    g.finish();
}

criterion_group!(
    benches,
    feed_benches,
    schedule_benches,
    ledger_benches,
    mail_benches
);
criterion_main!(benches);
