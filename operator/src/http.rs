//! Health and metrics endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// True once the caches are synced and MQTT is connected.
    pub ready: watch::Receiver<bool>,
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
    if *state.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: caches syncing or MQTT disconnected")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}
