//! The operations routes of `convenor serve`: `GET /healthz` ([`crate::health`]) and
//! `GET /metrics` ([`crate::metrics`]), and the router that puts them beside the feeds, the
//! subscribe page and the agenda pages.

use std::{sync::Arc, time::Instant};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    health::Health,
    http::FeedState,
    ledger::{SqliteStore, Store as _},
    metrics::{Counters, CountsCache, LedgerCounts},
    scheduler::{SharedStore, run::lock},
};

/// What `/healthz` and `/metrics` read: the ledger, the loop's health, the counters, the feeds.
#[derive(Clone)]
pub struct Ops {
    /// The ledger (probed by `/healthz`, counted by `/metrics`).
    pub store: SharedStore<SqliteStore>,
    /// The scheduler loop's and reloads' record.
    pub health: Arc<Health>,
    /// Reload counters.
    pub counters: Arc<Counters>,
    /// The feeds (their request counters).
    pub feeds: FeedState,
    /// The ledger counts `/metrics` served last: scrapes at once wait for one count, and
    /// scrapes within a second share it.
    pub counts: Arc<tokio::sync::Mutex<CountsCache>>,
}

/// The ledger's counts, from the cache when fresh, else counted off the async threads.
async fn ledger_counts(ops: &Ops) -> Result<Arc<LedgerCounts>, String> {
    let mut cache = ops.counts.lock().await;
    if let Some(counts) = cache.fresh(Instant::now()) {
        return Ok(counts);
    }
    let store = ops.store.clone();
    let counts = tokio::task::spawn_blocking(move || {
        LedgerCounts::read(&*lock(&store)).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("ledger probe panicked: {e}")))?;
    let counts = Arc::new(counts);
    cache.keep(Instant::now(), counts.clone());
    Ok(counts)
}

/// Whether the ledger answers, asked off the async threads.
async fn ledger_ping(ops: &Ops) -> Result<(), String> {
    let store = ops.store.clone();
    tokio::task::spawn_blocking(move || lock(&store).ping().map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(format!("ledger probe panicked: {e}")))
}

async fn healthz(ops: Ops) -> Response {
    let ledger = ledger_ping(&ops).await;
    let report = ops.health.report(ledger, Instant::now());
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut res = (status, body + "\n").into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn metrics(ops: Ops) -> Response {
    match ledger_counts(&ops).await {
        Ok(counts) => {
            let text = crate::metrics::render(&counts, &ops.feeds.current(), &ops.counters);
            let mut res = text.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            res
        }
        Err(e) => {
            tracing::error!("/metrics: the ledger failed: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "the ledger failed\n").into_response()
        }
    }
}

/// `GET /healthz` and, when `with_metrics`, `GET /metrics`.
pub fn ops_router(ops: Ops, with_metrics: bool) -> axum::Router {
    let health = ops.clone();
    let router = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || healthz(health.clone())),
    );
    if with_metrics {
        router.route("/metrics", axum::routing::get(move || metrics(ops.clone())))
    } else {
        router
    }
}

/// The HTTP routes: `GET /healthz`, `GET /metrics` when `with_metrics`, and the feeds,
/// subscribe page and agenda pages of [`crate::http`].
pub fn router(
    feeds: FeedState,
    agenda: crate::http::agenda_pages::AgendaPages,
    ops: Ops,
    with_metrics: bool,
) -> axum::Router {
    ops_router(ops, with_metrics).merge(crate::http::router_with_agenda(feeds, agenda))
}
