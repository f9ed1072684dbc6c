//! The HTTP server: the feeds from memory with conditional GET, and the subscribe page.
//!
//! Routes (all under `/<feed token>` when one is configured, the public ones then 404):
//! `GET /calendar.ics`, `GET /priorities/<id>.ics`, `GET /` (the page). HEAD answers as GET
//! without a body; other methods on those paths get 405. Feeds are never compressed (gzip broke
//! an Outlook subscription) and `no-transform` asks proxies not to either. The page carries
//! [`CONTENT_SECURITY_POLICY`], `X-Frame-Options: DENY` and `nosniff` ([`html_page_headers`]),
//! error answers `nosniff`; feed responses get none of them. The shutdown signal
//! is an argument of [`serve`], so tests stop the server by completing a future.

pub mod agenda_pages;
pub mod client;
pub mod feed_cache;
pub mod page;
pub mod sendfile;
pub mod server;
pub mod state;

use std::future::Future;

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

pub use state::{Feed, FeedHits, FeedState, Feeds};

const CALENDAR: HeaderValue = HeaderValue::from_static("text/calendar; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// The Content-Security-Policy of every HTML page. The pages load nothing (no script, image,
/// font or stylesheet file), style themselves with one inline `<style>` element, and post
/// forms only to their own origin; links out (webcal:, https:, a meeting's join URL) are
/// navigation, which CSP does not restrict. `frame-ancestors 'none'` (and
/// `X-Frame-Options: DENY` for older browsers) keeps them out of other sites' frames, so the
/// proposal form and the lead's buttons cannot be clickjacked.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// Adds `X-Content-Type-Options: nosniff`: browsers take the declared type (plain text stays
/// text). Every page and error answer has it; feed responses do not (their headers are the
/// measured fast path's, and a calendar is never rendered by a browser).
pub fn no_sniff(res: &mut Response) {
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Adds the headers of an HTML page: [`CONTENT_SECURITY_POLICY`], `X-Frame-Options: DENY`
/// and [`no_sniff`].
pub fn html_page_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    no_sniff(res);
}

/// A plain-text answer with `nosniff`.
fn text(status: StatusCode, body: &'static str) -> Response {
    let mut res = (status, body).into_response();
    no_sniff(&mut res);
    res
}

/// The application: one handler that routes by path against the current feeds, so a reload may
/// change the token and the priorities without rebuilding the router.
pub fn router(state: FeedState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// [`router`] with the agenda pages ([`agenda_pages`]) in front of it.
pub fn router_with_agenda(state: FeedState, agenda: agenda_pages::AgendaPages) -> Router {
    agenda_pages::routes(agenda).merge(router(state))
}

/// Serves on `listener` under the `[http]` limits ([`server`]) until `shutdown` completes,
/// then finishes requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: FeedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = server::Limits::from_settings(&state.current().config.http);
    server::serve(listener, router(state), limits, shutdown).await
}

/// What a path names, once the token prefix is checked and removed.
enum Target<'a> {
    Page,
    Feed(&'a str),
}

/// Strips the token prefix (compared in constant time) and classifies the rest.
fn target<'a>(feeds: &Feeds, path: &'a str) -> Option<Target<'a>> {
    let rest = match &feeds.config.http.feed_token {
        None => path,
        Some(token) => {
            let after = path.strip_prefix('/')?;
            let (segment, rest) = after.split_at(after.find('/')?);
            if !bool::from(segment.as_bytes().ct_eq(token.as_str().as_bytes())) {
                return None;
            }
            rest
        }
    };
    match rest {
        "/" => Some(Target::Page),
        _ => feeds.feed(rest).map(|_| Target::Feed(rest)),
    }
}

async fn handle(
    State(state): State<FeedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let feeds = state.current();
    let Some(target) = target(&feeds, uri.path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if method != Method::GET && method != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        res.headers_mut().insert(header::ALLOW, ALLOW);
        return res;
    }
    match target {
        Target::Page => page_response(&feeds),
        Target::Feed(path) => match feeds.feed(path) {
            Some(feed) => feed_response(feed, &feeds.cache_control, &headers),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn page_response(feeds: &Feeds) -> Response {
    match page::render(&feeds.config, jiff::Timestamp::now()) {
        Ok(html) => {
            let mut res = html.into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HTML);
            html_page_headers(&mut res);
            res
        }
        Err(err) => {
            tracing::error!(error = %err, "rendering the subscribe page");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
        }
    }
}

fn feed_response(feed: &Feed, cache_control: &HeaderValue, request: &HeaderMap) -> Response {
    let unchanged = not_modified(feed, request);
    feed.hits.count(unchanged);
    let status = if unchanged {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if status == StatusCode::OK {
        Body::from(feed.body.clone())
    } else {
        Body::empty()
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::ETAG, feed.etag.clone());
    h.insert(header::LAST_MODIFIED, feed.last_modified_header.clone());
    h.insert(header::CACHE_CONTROL, cache_control.clone());
    if status == StatusCode::OK {
        h.insert(header::CONTENT_TYPE, CALENDAR);
    } else {
        // A 304 may carry only the Content-Length a 200 would (RFC 9110 8.6). Left alone,
        // axum gives a HEAD's 304 that of its empty body, 0, which hyper passes on for HEAD
        // (it drops it from a GET's 304), and a cache updating its headers from the 304 would
        // take the feed for empty.
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(feed.body.len()));
    }
    res
}

/// RFC 9110 13.1.2 and 13.1.3: If-None-Match (weak comparison, `*` matches; its field lines
/// taken together, as one comma-joined list, RFC 9110 5.3) decides when present; otherwise
/// If-Modified-Since with whole seconds, when sent once (a repeated one is ignored). Written out
/// because it is a few lines over borrowed header bytes, with no allocation per request.
fn not_modified(feed: &Feed, request: &HeaderMap) -> bool {
    let mut lines = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if lines.peek().is_some() {
        let ours = feed.etag.as_bytes();
        let ours = &ours[1..ours.len() - 1];
        return lines
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .any(|tag| {
                let tag = tag.trim_ascii();
                let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
                tag == b"*"
                    || tag.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")) == Some(ours)
            });
    }
    let mut since = request.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (since.next(), since.next()) else {
        return false;
    };
    let Some(since) = Some(since)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let modified = std::time::SystemTime::try_from(feed.last_modified)
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    modified <= since
}
