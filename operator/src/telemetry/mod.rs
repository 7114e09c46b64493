//! What the operator tells about itself: Prometheus metrics and the health endpoints.

pub mod fleet;
pub mod http;
pub mod metrics;
