//! Health and metrics endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;

use super::metrics::Metrics;

/// Where the process stands, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Starting up.
    Starting,
    /// Waiting for the leader Lease; healthy and ready to take over.
    Standby,
    /// Leader, but not able to serve devices; the text says why.
    NotReady(String),
    /// Leader with synced caches and a live MQTT session with every subscription granted.
    Ready,
}

impl Readiness {
    /// The HTTP status and body `/readyz` answers with.
    pub fn response(&self) -> (StatusCode, String) {
        match self {
            Self::Ready => (StatusCode::OK, "ok".into()),
            Self::Standby => (StatusCode::OK, "ok: standby, waiting for the leader Lease".into()),
            Self::Starting => (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting".into()),
            Self::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
        }
    }
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
    state.ready.borrow().response()
}

async fn metrics(State(state): State<HttpState>) -> axum::response::Response {
    match state.metrics.render() {
        Ok(text) => {
            ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render metrics: {error}"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_says_why_it_is_not_ready() {
        let refused = Readiness::NotReady(
            "the broker refused the subscription to kt/+/presence (NotAuthorized)".into(),
        );
        assert_eq!(
            refused.response(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the broker refused the subscription to kt/+/presence (NotAuthorized)"
                    .into()
            )
        );
        assert_eq!(Readiness::Standby.response().0, StatusCode::OK);
        assert_eq!(Readiness::Ready.response(), (StatusCode::OK, "ok".into()));
    }
}
