//! The pre-rendered feeds, shared by every request and swapped whole on a config reload.
//!
//! Each feed is rendered once per load into [`Bytes`] with its header values computed, so a
//! request only clones an `Arc` and a few reference-counted values. Bodies of at least
//! [`super::sendfile::SEAL_MIN_BYTES`] live in a sealed memfd, sent with `sendfile`. Last-Modified never moves
//! backwards, and moves forward whenever a feed's bytes change: across a reload from the feeds
//! being replaced, across a restart from the [`FeedStamp`]s the last run stored with the feed
//! cache; one rule for both (`next_last_modified`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use axum::http::HeaderValue;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};

use crate::{
    digest::Digest,
    feed,
    http::feed_cache::{self, FeedStamp, FeedStamps},
    model::{Config, MeetingId},
    revision::StoredRevision,
};

/// One rendered feed with its precomputed response headers.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The iCalendar bytes.
    pub body: Bytes,
    /// Their BLAKE3 (the ETag is made of it; the feed cache stores it).
    pub hash: blake3::Hash,
    /// Strong ETag: `"` + the first 32 hex digits of the body's BLAKE3 + `"` (BLAKE3 rather
    /// than SHA-256: the same strength for an ETag, and a few times faster over the 5 MB of
    /// feeds of a 5,000-meeting config).
    pub etag: HeaderValue,
    /// Last-Modified as an HTTP date.
    pub last_modified_header: HeaderValue,
    /// Last-Modified, whole seconds.
    pub last_modified: Timestamp,
    /// Request counters, carried over from the feed at the same path across reloads.
    pub hits: Arc<FeedHits>,
}

impl Feed {
    /// What this feed is served with: its Last-Modified and its body's BLAKE3.
    pub fn stamp(&self) -> FeedStamp {
        FeedStamp {
            last_modified: self.last_modified,
            hash: self.hash,
        }
    }
}

/// A feed's request counters for `/metrics`: atomics allocated once with the feed, so
/// counting a request allocates nothing.
#[derive(Debug, Default)]
pub struct FeedHits {
    requests: AtomicU64,
    not_modified: AtomicU64,
}

impl FeedHits {
    /// Counts one request; `not_modified` when it was answered 304.
    pub fn count(&self, not_modified: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if not_modified {
            self.not_modified.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (requests, of which 304) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.not_modified.load(Ordering::Relaxed),
        )
    }
}

/// Everything the server answers from, built from one config load.
#[derive(Debug)]
pub struct Feeds {
    /// The config the feeds were rendered from (the subscribe page reads it), shared with the
    /// scheduler's copy rather than cloned: at 5,000 meetings a clone is megabytes.
    pub config: Arc<Config>,
    /// The feed of every meeting.
    pub calendar: Feed,
    /// One feed per priority, keyed by priority id.
    pub priorities: BTreeMap<String, Feed>,
    /// `max-age=<cache_max_age>, no-transform` (no-transform: no proxy may compress the feed).
    pub cache_control: HeaderValue,
    /// The key of what the feeds were rendered from ([`feed_cache::cache_key`]).
    pub key: Digest,
}

impl Feeds {
    /// Renders every feed of `config`. `previous` is the state being replaced, if any: a feed's
    /// Last-Modified is never earlier than before, and when its bytes changed but no meeting's
    /// last change is later, it becomes `now` (or a second after the previous one).
    pub fn build(
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        previous: Option<&Feeds>,
        now: Timestamp,
    ) -> Self {
        let key = feed_cache::cache_key(config, revisions);
        let bodies = render_bodies(config, revisions);
        let before = previous.map_or(Before::Nothing, Before::Served);
        Self::from_bodies(config, revisions, key, bodies, &before, now)
    }

    /// [`Feeds::build`] for a start: the bodies come from the feed cache in `state_dir` when it
    /// holds the feeds of this config, these revisions and this build. Says whether they did.
    /// Last-Modified continues from the stamps the cache holds, whatever the feeds were
    /// rendered from, by the rule of a reload: kept when a feed's bytes are the ones stored,
    /// moved forward when they changed.
    pub fn build_cached(
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        state_dir: &std::path::Path,
        now: Timestamp,
    ) -> (Self, bool) {
        let key = feed_cache::cache_key(config, revisions);
        let count = 1 + config.priorities.len();
        let cached = feed_cache::load(state_dir, &key, count);
        let before = Before::Stored(&cached.stamps);
        match cached.bodies {
            Some(bodies) => (
                Self::from_bodies(config, revisions, key, bodies, &before, now),
                true,
            ),
            None => {
                let bodies = render_bodies(config, revisions);
                let feeds = Self::from_bodies(config, revisions, key, bodies, &before, now);
                (feeds, false)
            }
        }
    }

    /// Every feed with its path below the token prefix (the path [`Feeds::feed`] takes): the
    /// whole calendar, then each priority's feed in config order.
    pub fn by_path(&self) -> impl Iterator<Item = (String, &Feed)> {
        std::iter::once((CALENDAR_PATH.to_owned(), &self.calendar)).chain(
            self.config.priorities.iter().filter_map(|p| {
                let path = priority_path(p.id.as_str());
                self.priorities.get(p.id.as_str()).map(|f| (path, f))
            }),
        )
    }

    /// What every feed is served with, to be stored with the feed cache for the next start.
    pub fn stamps(&self) -> FeedStamps {
        self.by_path()
            .map(|(path, feed)| (path, feed.stamp()))
            .collect()
    }

    /// Every body, in the order [`render_bodies`] renders them: the whole calendar, then each
    /// priority's feed in config order.
    pub fn bodies(&self) -> Vec<HashedBody> {
        self.by_path()
            .map(|(_, f)| HashedBody {
                body: f.body.clone(),
                hash: f.hash,
            })
            .collect()
    }

    /// The feeds of `bodies`, in the order of [`render_bodies`].
    fn from_bodies(
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        key: Digest,
        bodies: Vec<HashedBody>,
        before: &Before<'_>,
        now: Timestamp,
    ) -> Self {
        // Bodies and last changes come in the same order: the calendar, then each priority.
        let mut feeds = bodies
            .into_iter()
            .zip(feed::last_changes(config, revisions));
        let mut one = |path: &str| {
            let (body, last_change) = feeds
                .next()
                .unwrap_or_else(|| (HashedBody::new(Bytes::new()), feed::FALLBACK_STAMP));
            render_feed(
                body,
                last_change,
                before.stamp(path),
                before.hits(path),
                now,
            )
        };
        let calendar = one(CALENDAR_PATH);
        let priorities = config
            .priorities
            .iter()
            .map(|p| {
                let id = p.id.as_str();
                (id.to_owned(), one(&priority_path(id)))
            })
            .collect();
        let max_age = config.http.cache_max_age.as_secs().max(0);
        let cache_control = HeaderValue::try_from(format!("max-age={max_age}, no-transform"))
            .unwrap_or(HeaderValue::from_static("max-age=0, no-transform"));
        Self {
            config: Arc::clone(config),
            calendar,
            priorities,
            cache_control,
            key,
        }
    }

    /// The warnings of [`feed::size_warning`] for these feeds, each named by its path below the
    /// token prefix.
    pub fn size_warnings(&self) -> Vec<String> {
        self.by_path()
            .filter_map(|(path, f)| feed::size_warning(&path, f.body.len()))
            .collect()
    }

    /// The feed at a path relative to the token prefix (`/calendar.ics`,
    /// `/priorities/<id>.ics`), if there is one.
    pub fn feed(&self, path: &str) -> Option<&Feed> {
        if path == CALENDAR_PATH {
            return Some(&self.calendar);
        }
        let id = path.strip_prefix("/priorities/")?.strip_suffix(".ics")?;
        self.priorities.get(id)
    }
}

/// The whole calendar's path below the token prefix.
const CALENDAR_PATH: &str = "/calendar.ics";

/// The path of priority `id`'s feed below the token prefix.
fn priority_path(id: &str) -> String {
    format!("/priorities/{id}.ics")
}

/// What new feeds continue from: their Last-Modified never goes back from it.
enum Before<'a> {
    /// A first start (or no stamps kept): Last-Modified is the meetings' last change.
    Nothing,
    /// The feeds being replaced (a reload or an agenda change): their stamps and counters.
    Served(&'a Feeds),
    /// The stamps the last run stored with the feed cache (a start).
    Stored(&'a FeedStamps),
}

impl Before<'_> {
    /// What the feed at `path` was served with before, if it was.
    fn stamp(&self, path: &str) -> Option<FeedStamp> {
        match self {
            Before::Nothing => None,
            Before::Served(feeds) => feeds.feed(path).map(Feed::stamp),
            Before::Stored(stamps) => stamps.get(path).copied(),
        }
    }

    /// The request counters of the feed at `path`, carried over from the feeds replaced.
    fn hits(&self, path: &str) -> Option<Arc<FeedHits>> {
        match self {
            Before::Served(feeds) => feeds.feed(path).map(|f| Arc::clone(&f.hits)),
            Before::Nothing | Before::Stored(_) => None,
        }
    }
}

/// Renders the whole calendar, then each priority's feed in config order; every VEVENT is
/// rendered once for all of them ([`feed::Calendars`]). A body of
/// [`super::sendfile::SEAL_MIN_BYTES`] or more goes from its pieces straight into a sealed memfd.
pub fn render_bodies(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
) -> Vec<HashedBody> {
    let selections = feed::selections(config);
    let threads = crate::parallel::worker_threads(config.meetings.len());
    let calendars = feed::Calendars::render_on(config, revisions, &selections, threads);
    let body = |i: usize| {
        let len = calendars.text_len(i);
        let sealed = (len >= super::sendfile::SEAL_MIN_BYTES)
            .then(|| super::sendfile::seal_pieces(calendars.pieces(i).map(str::as_bytes), len))
            .flatten();
        match sealed {
            // Hashed on the way into the memfd.
            Some((body, hash)) => HashedBody { body, hash },
            None => HashedBody::new(Bytes::from(calendars.text(i))),
        }
    };
    // The feeds in runs on the threads the events were rendered on (`in_runs` keeps them in
    // order; one thread runs them all on the caller's).
    let feeds: Vec<usize> = (0..calendars.len()).collect();
    crate::parallel::in_runs(&feeds, threads, |run| {
        run.iter().map(|&i| body(i)).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// A feed's bytes with their BLAKE3, computed once: it makes the ETag and checks the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedBody {
    /// The bytes.
    pub body: Bytes,
    /// Their BLAKE3.
    pub hash: blake3::Hash,
}

impl HashedBody {
    /// Hashes `body`.
    pub fn new(body: Bytes) -> Self {
        let hash = blake3::hash(&body);
        Self { body, hash }
    }
}

/// A feed of `body` whose meetings last changed at `last_change`, served before with `before`
/// (if it was), counting its requests in `hits` (carried over, or new).
fn render_feed(
    HashedBody { body, hash }: HashedBody,
    last_change: Timestamp,
    before: Option<FeedStamp>,
    hits: Option<Arc<FeedHits>>,
    now: Timestamp,
) -> Feed {
    // Big bodies go out with sendfile from a sealed memfd (super::sendfile), whether rendered
    // now or read from the feed cache.
    let body =
        if body.len() >= super::sendfile::SEAL_MIN_BYTES && !super::sendfile::is_sealed(&body) {
            super::sendfile::seal(body)
        } else {
            body
        };
    let hex = hex::encode(&hash.as_bytes()[..16]);
    let etag =
        HeaderValue::try_from(format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
    let modified = next_last_modified(last_change, hash, before, now);
    let system = SystemTime::try_from(modified).unwrap_or(SystemTime::UNIX_EPOCH);
    let last_modified_header = HeaderValue::try_from(httpdate::fmt_http_date(system))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
    Feed {
        body,
        hash,
        etag,
        last_modified_header,
        last_modified: modified,
        hits: hits.unwrap_or_default(),
    }
}

/// The Last-Modified of a feed whose body hashes to `hash` and whose meetings last changed at
/// `last_change`, served before with `before` (by the feeds a reload replaces, or by the last
/// run): never earlier than before; when the bytes changed but no meeting's last change is
/// later, `now` or a second after the previous one, whichever is later. The one rule for
/// reloads and restarts.
fn next_last_modified(
    last_change: Timestamp,
    hash: blake3::Hash,
    before: Option<FeedStamp>,
    now: Timestamp,
) -> Timestamp {
    let mut modified = whole_seconds(last_change);
    if let Some(prev) = before {
        modified = modified.max(prev.last_modified);
        if prev.hash != hash && modified <= prev.last_modified {
            let next = prev
                .last_modified
                .checked_add(SignedDuration::from_secs(1))
                .unwrap_or(prev.last_modified);
            modified = whole_seconds(now).max(next);
        }
    }
    modified
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The shared, swappable state: cheap to clone, one per server.
#[derive(Clone, Debug)]
pub struct FeedState {
    inner: Arc<RwLock<Arc<Feeds>>>,
    /// Held by a feed cache write from taking the feeds to its rename, so the cache ends up
    /// holding the feeds of the last write to start, never an older snapshot renamed last.
    saving: Arc<Mutex<()>>,
}

impl FeedState {
    /// Renders the feeds of a freshly loaded config.
    pub fn new(config: &Arc<Config>, revisions: &BTreeMap<MeetingId, StoredRevision>) -> Self {
        Self::of(Feeds::build(config, revisions, None, Timestamp::now()))
    }

    /// The feeds of a freshly loaded config, from the feed cache in `state_dir` when it holds
    /// them ([`Feeds::build_cached`]); says whether it did.
    pub fn new_cached(
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        state_dir: &std::path::Path,
    ) -> (Self, bool) {
        let (feeds, hit) = Feeds::build_cached(config, revisions, state_dir, Timestamp::now());
        (Self::of(feeds), hit)
    }

    fn of(feeds: Feeds) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(feeds))),
            saving: Arc::default(),
        }
    }

    /// Stores the feeds now being served, with their stamps (Last-Modified and BLAKE3, which the
    /// next start continues from), in the feed cache in `state_dir` (blocking file I/O: call it
    /// off the runtime's threads). Writes run one at a time, each taking the feeds being served
    /// when its turn comes: two started close together (a reload right after start) cannot
    /// leave the older feeds in the cache by renaming last.
    pub fn save_cache(&self, state_dir: &std::path::Path) -> std::io::Result<()> {
        let _turn = self.saving.lock().unwrap_or_else(PoisonError::into_inner);
        let feeds = self.current();
        feed_cache::store(state_dir, &feeds.key, &feeds.stamps(), &feeds.bodies())
    }

    /// Renders the feeds of a reloaded config and swaps them in; requests in flight finish with
    /// the old ones. Returns false when nothing they show changed (no rendering, no swap).
    pub fn replace(
        &self,
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
    ) -> bool {
        self.replace_at(config, revisions, Timestamp::now())
    }

    /// [`FeedState::replace`] with the clock given (for tests).
    pub fn replace_at(
        &self,
        config: &Arc<Config>,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        now: Timestamp,
    ) -> bool {
        let previous = self.current();
        if previous.key == feed_cache::cache_key(config, revisions) {
            // Same config, same revisions, same build: the same bytes. Nothing to render (a
            // reload that changed nothing the feeds show, at 5,000 meetings ~80 ms saved).
            return false;
        }
        let feeds = Arc::new(Feeds::build(config, revisions, Some(&previous), now));
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = feeds;
        true
    }

    /// The feeds now being served.
    pub fn current(&self) -> Arc<Feeds> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(title: &str) -> Arc<Config> {
        let text = include_str!("../../config/lednet.toml").replacen(
            "title = \"LEDNet meeting\"",
            &format!("title = \"{title}\""),
            1,
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lednet.toml");
        let loaded = crate::config::parse(&path, &text, &crate::config::Environment::default());
        Arc::new(loaded.expect("the shipped config").config)
    }

    /// A cache write waiting for its turn while the feeds are replaced writes the feeds being
    /// served when its turn comes, not those of when it was started.
    #[test]
    fn a_cache_write_takes_the_feeds_served_when_its_turn_comes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let revisions = BTreeMap::new();
        let state = FeedState::new(&shipped("First"), &revisions);
        let turn = state.saving.lock().expect("the turn");
        let (started, waiting) = std::sync::mpsc::channel();
        let writer = {
            let (state, dir) = (state.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                started.send(()).expect("started");
                state.save_cache(&dir)
            })
        };
        waiting.recv().expect("the writer started");
        let second = shipped("Second");
        assert!(state.replace(&second, &revisions), "the feeds changed");
        drop(turn);
        writer.join().expect("writer").expect("saved");
        let key = feed_cache::cache_key(&second, &revisions);
        let count = state.current().bodies().len();
        let cached = feed_cache::load(dir.path(), &key, count);
        assert!(
            cached.bodies.is_some(),
            "the cache holds the feeds of the first config"
        );
    }
}
