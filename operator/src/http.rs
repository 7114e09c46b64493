//! Health and metrics endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Where the process stands, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Starting up.
    Starting,
    /// Waiting for the leader Lease; healthy and ready to take over.
    Standby,
    /// Leader, but caches are syncing or MQTT is disconnected.
    NotReady,
    /// Leader with synced caches and a live MQTT session.
    Ready,
}

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Current readiness.
    pub ready: watch::Receiver<Readiness>,
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: HttpState) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    match *state.ready.borrow() {
        Readiness::Ready => (StatusCode::OK, "ok"),
        Readiness::Standby => (StatusCode::OK, "ok: standby, waiting for the leader Lease"),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting"),
        Readiness::NotReady => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: caches syncing or MQTT disconnected")
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}
