//! The pre-rendered feeds, shared by every request and swapped whole on a config reload.
//!
//! Each feed is rendered once per load into [`Bytes`] with its header values computed, so a
//! request only clones an `Arc` and a few reference-counted values. Bodies of at least
//! [`super::sendfile::SEAL_MIN_BYTES`] live in a sealed memfd, sent with `sendfile`. Last-Modified never moves
//! backwards across reloads, and moves forward whenever a feed's bytes change.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use axum::http::HeaderValue;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::{
    feed::{self, Selection},
    model::{Config, MeetingId},
    revision::StoredRevision,
};

/// One rendered feed with its precomputed response headers.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The iCalendar bytes.
    pub body: Bytes,
    /// Strong ETag: `"` + the first 32 hex digits of the body's SHA-256 + `"`.
    pub etag: HeaderValue,
    /// Last-Modified as an HTTP date.
    pub last_modified_header: HeaderValue,
    /// Last-Modified, whole seconds.
    pub last_modified: Timestamp,
    /// Request counters, carried over from the feed at the same path across reloads.
    pub hits: Arc<FeedHits>,
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
    /// The config the feeds were rendered from (the subscribe page reads it).
    pub config: Config,
    /// The feed of every meeting.
    pub calendar: Feed,
    /// One feed per priority, keyed by priority id.
    pub priorities: BTreeMap<String, Feed>,
    /// `max-age=<cache_max_age>, no-transform` (no-transform: no proxy may compress the feed).
    pub cache_control: HeaderValue,
}

impl Feeds {
    /// Renders every feed of `config`. `previous` is the state being replaced, if any: a feed's
    /// Last-Modified is never earlier than before, and when its bytes changed but no meeting's
    /// last change is later, it becomes `now` (or a second after the previous one).
    pub fn build(
        config: &Config,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        previous: Option<&Feeds>,
        now: Timestamp,
    ) -> Self {
        // Every VEVENT is rendered once for all the feeds (feed::render_calendars).
        let selections: Vec<Selection<'_>> = std::iter::once(Selection::All)
            .chain(config.priorities.iter().map(Selection::Priority))
            .collect();
        let mut bodies = feed::render_calendars(config, revisions, &selections).into_iter();
        let mut one = |selection: Selection<'_>, before: Option<&Feed>| {
            let body = bodies.next().unwrap_or_default();
            render_feed(config, revisions, selection, body, before, now)
        };
        let calendar = one(Selection::All, previous.map(|p| &p.calendar));
        let priorities = config
            .priorities
            .iter()
            .map(|p| {
                let before = previous.and_then(|prev| prev.priorities.get(p.id.as_str()));
                (
                    p.id.as_str().to_owned(),
                    one(Selection::Priority(p), before),
                )
            })
            .collect();
        let max_age = config.http.cache_max_age.as_secs().max(0);
        let cache_control = HeaderValue::try_from(format!("max-age={max_age}, no-transform"))
            .unwrap_or(HeaderValue::from_static("max-age=0, no-transform"));
        Self {
            config: config.clone(),
            calendar,
            priorities,
            cache_control,
        }
    }

    /// The feed at a path relative to the token prefix (`/calendar.ics`,
    /// `/priorities/<id>.ics`), if there is one.
    pub fn feed(&self, path: &str) -> Option<&Feed> {
        if path == "/calendar.ics" {
            return Some(&self.calendar);
        }
        let id = path.strip_prefix("/priorities/")?.strip_suffix(".ics")?;
        self.priorities.get(id)
    }
}

fn render_feed(
    config: &Config,
    revisions: &BTreeMap<MeetingId, StoredRevision>,
    selection: Selection<'_>,
    body: String,
    before: Option<&Feed>,
    now: Timestamp,
) -> Feed {
    // Big bodies go out with sendfile from a sealed memfd (super::sendfile).
    let body = if body.len() >= super::sendfile::SEAL_MIN_BYTES {
        super::sendfile::seal(body.into_bytes())
    } else {
        Bytes::from(body)
    };
    let digest = Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let etag =
        HeaderValue::try_from(format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
    let mut modified = whole_seconds(feed::last_change(config, revisions, selection));
    if let Some(prev) = before {
        modified = modified.max(prev.last_modified);
        if prev.body != body && modified <= prev.last_modified {
            let next = prev
                .last_modified
                .checked_add(SignedDuration::from_secs(1))
                .unwrap_or(prev.last_modified);
            modified = whole_seconds(now).max(next);
        }
    }
    let system = SystemTime::try_from(modified).unwrap_or(SystemTime::UNIX_EPOCH);
    let last_modified_header = HeaderValue::try_from(httpdate::fmt_http_date(system))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
    Feed {
        body,
        etag,
        last_modified_header,
        last_modified: modified,
        hits: before.map(|b| Arc::clone(&b.hits)).unwrap_or_default(),
    }
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The shared, swappable state: cheap to clone, one per server.
#[derive(Clone, Debug)]
pub struct FeedState {
    inner: Arc<RwLock<Arc<Feeds>>>,
}

impl FeedState {
    /// Renders the feeds of a freshly loaded config.
    pub fn new(config: &Config, revisions: &BTreeMap<MeetingId, StoredRevision>) -> Self {
        let feeds = Feeds::build(config, revisions, None, Timestamp::now());
        Self {
            inner: Arc::new(RwLock::new(Arc::new(feeds))),
        }
    }

    /// Renders the feeds of a reloaded config and swaps them in; requests in flight finish with
    /// the old ones.
    pub fn replace(&self, config: &Config, revisions: &BTreeMap<MeetingId, StoredRevision>) {
        self.replace_at(config, revisions, Timestamp::now());
    }

    /// [`FeedState::replace`] with the clock given (for tests).
    pub fn replace_at(
        &self,
        config: &Config,
        revisions: &BTreeMap<MeetingId, StoredRevision>,
        now: Timestamp,
    ) {
        let previous = self.current();
        let feeds = Arc::new(Feeds::build(config, revisions, Some(&previous), now));
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = feeds;
    }

    /// The feeds now being served.
    pub fn current(&self) -> Arc<Feeds> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }
}
