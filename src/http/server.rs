//! The listener: accepts connections under limits and serves an axum [`Router`] on each.
//!
//! `axum::serve` has no knobs for slow or greedy clients, so connections are driven here with
//! hyper's HTTP/1 builder (a timer installed, without which hyper's header timeout does
//! nothing):
//! - a client must send a request's headers within `[http] header_timeout`, also between
//!   requests on a kept-alive connection, or the connection is closed;
//! - request headers are capped at [`MAX_HEADER_BYTES`] (hyper answers 431 beyond);
//! - a request must be answered within `[http] request_timeout` (else 503);
//! - writing a response must take at least [`super::sendfile::MIN_PROGRESS`] bytes every
//!   `[http] request_timeout` (and never less than [`MIN_WRITE_STALL`]) while the socket is
//!   full, or the connection is closed: a client that stops reading (its receive window full, the
//!   server's send buffer full) would otherwise hold its slot for ever, and `max_connections`
//!   such clients, each pipelining requests it never reads the answers to, would take the
//!   server down. [`SendfileStream`] fails a write that has waited that long without progress
//!   with `TimedOut`, and hyper drops the connection. Pipelining needs no bound of its own:
//!   hyper's buffers are capped (at [`MAX_HEADER_BYTES`]), so a client that sends many requests
//!   and reads no answer stalls the server's writes (and is cut off by this rule) while its
//!   further requests wait in the kernel's buffers;
//! - only a POST may carry a body (the agenda pages' forms), announced with a Content-Length of
//!   at most [`super::agenda_pages::MAX_BODY`]; any other body gets 413 (a chunked one 411) and
//!   the connection is closed, so the feeds never read a body;
//! - at most `[http] max_connections` connections are served at once: the accept loop takes a
//!   semaphore permit before accepting, so further clients wait in the kernel's backlog until a
//!   slot frees. A client that trickles its headers frees its slot at the header timeout, one
//!   that stops reading its responses (or reads next to nothing) at the request timeout; a
//!   client that reads at least that minimum keeps its slot as long as it reads.
//!
//! Every request carries its connection's TCP peer address as a [`Peer`] extension (see
//! [`super::client`]).
//!
//! Each connection is a [`SendfileStream`]: feed bodies sealed into a memfd go out with
//! `sendfile` (see [`super::sendfile`]).
//!
//! Shutdown: the listener closes, idle connections close, requests in flight finish (bounded by
//! the request timeout and by [`MAX_DRAIN`], after which the remaining connections are
//! dropped).

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

use super::{client::Peer, sendfile::SendfileStream};
use crate::model::HttpSettings;

/// The cap on a request's line and headers together (hyper's smallest allowed buffer is 8 KiB;
/// nginx allows 1 KiB plus up to 4 x 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The least time a response's writing may wait on its client before the connection is closed,
/// whatever `[http] request_timeout` says: a short request timeout suits answers rendered in
/// advance, but a healthy client on a lossy link can leave a write waiting for a second or two
/// of retransmissions.
pub const MIN_WRITE_STALL: Duration = Duration::from_secs(5);

/// The longest the HTTP server waits at shutdown for the responses in flight: the stop,
/// drain and a send finishing side by side (at most `scheduler::run::STOP_GRACE`, 20 s), must
/// fit the unit's `TimeoutStopSec=30s` with room for the background writes.
pub const MAX_DRAIN: Duration = Duration::from_secs(10);

/// The limits one listener enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time allowed from a request's headers to its response, and for each wait of a
    /// response's writing on a client that reads nothing.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits of `[http]`.
    pub fn from_settings(http: &HttpSettings) -> Self {
        let dur =
            |d: jiff::SignedDuration| Duration::try_from(d).unwrap_or(Duration::from_secs(10));
        Self {
            header_timeout: dur(http.header_timeout),
            request_timeout: dur(http.request_timeout),
            max_connections: usize::try_from(http.max_connections).unwrap_or(256),
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // As nginx's `tcp_nodelay on`: the last, short segment of a body sent in pieces
        // (sendfile on a full socket) must not wait for the client's delayed ACK (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let timeout = limits.request_timeout;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            req.extensions_mut().insert(Peer(peer));
            async move { Ok::<_, Infallible>(respond(app, req, timeout).await) }
        });
        let io = TokioIo::new(SendfileStream::new(
            stream,
            limits.request_timeout.max(MIN_WRITE_STALL),
        ));
        let conn = graceful.watch(http1.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header time-outs, stalled writes, resets and malformed requests: the
                // client's business.
                tracing::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drain = limits.request_timeout.min(MAX_DRAIN);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {drain:?}; closing them");
    }
    Ok(())
}

/// One request: refuse a body it may not carry, else run the router under the request timeout.
async fn respond(app: Router, req: Request<Incoming>, timeout: Duration) -> Response<Body> {
    if let Some((status, text)) = refuse_body(req.method(), req.headers()) {
        let mut res = plain(status, text);
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    match tokio::time::timeout(timeout, app.oneshot(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::warn!("a request took longer than {timeout:?}; answered 503");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long\n",
            )
        }
    }
}

/// Why a request's body is refused, if it is: a body on anything but POST (413), a chunked body
/// (411: forms announce their length), or a Content-Length over the form limit (413).
fn refuse_body(method: &Method, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    if !has_body(headers) {
        return None;
    }
    if method != Method::POST {
        return Some((
            StatusCode::PAYLOAD_TOO_LARGE,
            "this request takes no body\n",
        ));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some((StatusCode::LENGTH_REQUIRED, "send a Content-Length\n"));
    }
    let lengths: Vec<Option<usize>> = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse().ok()))
        .collect();
    match lengths.as_slice() {
        [Some(n)] if *n <= super::agenda_pages::MAX_BODY => None,
        _ => Some((StatusCode::PAYLOAD_TOO_LARGE, "the body is too large\n")),
    }
}

/// True when the request announces a body: any Transfer-Encoding, or a Content-Length that is
/// not 0.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    super::no_sniff(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_announced_by_transfer_encoding_or_a_non_zero_length() {
        let with = |name: header::HeaderName, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            has_body(&h)
        };
        assert!(!has_body(&HeaderMap::new()));
        assert!(!with(header::CONTENT_LENGTH, "0"));
        assert!(with(header::CONTENT_LENGTH, "5"));
        assert!(with(header::TRANSFER_ENCODING, "chunked"));
    }

    #[test]
    fn only_a_post_within_the_form_limit_may_carry_a_body() {
        let length = |n: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from_str(n).expect("value"),
            );
            h
        };
        let status = |m: Method, h: &HeaderMap| refuse_body(&m, h).map(|(s, _)| s);
        assert_eq!(status(Method::GET, &HeaderMap::new()), None);
        assert_eq!(
            status(Method::GET, &length("5")),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            status(Method::PUT, &length("5")),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(status(Method::POST, &length("5")), None);
        assert_eq!(status(Method::POST, &length("16384")), None);
        assert_eq!(
            status(Method::POST, &length("16385")),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            status(Method::POST, &length("x")),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            status(Method::POST, &chunked),
            Some(StatusCode::LENGTH_REQUIRED)
        );
    }
}
