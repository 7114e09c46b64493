//! Kubernetes Events, best effort and within a budget: a reconcile hands an Event to a
//! bounded queue and never waits; one task publishes at most `--event-rate` Events per second.
//! When a fleet-wide rollout produces more than the queue holds, the excess is dropped and
//! counted (`kubetwin_events_dropped_total`) instead of competing with status writes for the
//! API server.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;
use tracing::warn;

use crate::{k8s::status::budget::TokenBucket, telemetry::metrics::Metrics};

/// How many Events may wait for publishing.
pub const QUEUE: usize = 1_000;
/// How long publishing one Event may wait for the API server; one that never answers (a dead
/// connection) must not stop every later Event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands Events to the publishing task.
#[derive(Clone)]
pub struct EventSink {
    queue: mpsc::Sender<(Event, ObjectReference)>,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// Starts the publishing task with `rate` Events per second (burst `burst`).
    pub fn start(recorder: Recorder, metrics: Arc<Metrics>, rate: f64, burst: f64) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut bucket = TokenBucket::new(rate, burst, Instant::now());
            while let Some((event, reference)) = incoming.recv().await {
                let wait = bucket.wait_time(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                bucket.try_take(Instant::now());
                let publish = recorder.publish(&event, &reference);
                match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                    Ok(Ok(())) => task_metrics.event_published(),
                    Ok(Err(error)) => warn!(%error, reason = %event.reason, "cannot publish event"),
                    Err(_) => warn!(
                        reason = %event.reason,
                        timeout = ?PUBLISH_TIMEOUT,
                        "cannot publish event: no answer from the API server"
                    ),
                }
            }
        });
        Self { queue, metrics }
    }

    /// Queues an Event about `regarding`; drops it (counted) when the queue is full.
    ///
    /// `related` names a second object the Event is about (for example the request behind an
    /// Event on a Device). The recorder groups Events into series by object, reason and
    /// related object, so without it two requests' Events on one Device would merge into one
    /// series that keeps the first request's text.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: related,
        };
        if self.queue.try_send((event, regarding)).is_err() {
            self.metrics.event_dropped();
        }
    }
}
