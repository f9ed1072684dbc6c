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
    metrics::Counters,
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
}

/// The ledger's rows, read off the async threads.
async fn ledger_rows(ops: &Ops) -> Result<Vec<crate::ledger::LedgerRow>, String> {
    let store = ops.store.clone();
    tokio::task::spawn_blocking(move || lock(&store).rows().map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(format!("ledger probe panicked: {e}")))
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
    match ledger_rows(&ops).await {
        Ok(rows) => {
            let text = crate::metrics::render(&rows, &ops.feeds.current(), &ops.counters);
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
