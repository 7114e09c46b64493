//! The single status writer (I/O edge of the write budget): controllers offer the status they
//! want; this task writes it with server-side apply within the budget of [`crate::budget`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use kubetwin_api::{Device, RebootRequest};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use crate::{
    FIELD_MANAGER,
    budget::{Flush, Offer, Priority, TokenBucket, WriteQueue, fingerprint},
    metrics::Metrics,
};

/// How many writes may be in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// How many queue entries one scheduling step looks at.
const SCAN: usize = 1024;

/// Which kind of object a status belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A Device.
    Device,
    /// A RebootRequest.
    RebootRequest,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::RebootRequest => "rebootrequest",
        }
    }
}

/// The object a status is written to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusKey {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Settings of the write budget.
#[derive(Clone, Copy, Debug)]
pub struct WriteBudget {
    /// Status writes per second, at most.
    pub rate: f64,
    /// Writes that may go at once after a quiet time.
    pub burst: f64,
    /// Least time between two routine writes of one object.
    pub min_interval: Duration,
}

struct State {
    queue: WriteQueue<StatusKey, String>,
    bucket: TokenBucket,
}

/// Queues status changes and writes them within the budget.
pub struct StatusWriter {
    state: Mutex<State>,
    wake: Notify,
    client: Client,
    metrics: Arc<Metrics>,
}

impl StatusWriter {
    /// A writer with `budget`; call [`StatusWriter::run`] to start writing.
    pub fn new(client: Client, metrics: Arc<Metrics>, budget: WriteBudget) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                queue: WriteQueue::new(budget.min_interval),
                bucket: TokenBucket::new(budget.rate, budget.burst, now),
            }),
            wake: Notify::new(),
            client,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers the status `wanted` for `key`; `current` is the status the cache shows. Nothing
    /// is queued when they are equal.
    pub fn offer<S: Serialize>(
        &self,
        key: StatusKey,
        wanted: &S,
        current: Option<&S>,
        priority: Priority,
    ) -> Offer {
        let Ok(json) = serde_json::to_string(wanted) else {
            return Offer::Unchanged;
        };
        let current = current.and_then(|c| serde_json::to_string(c).ok()).map(|c| fingerprint(&c));
        let mut state = self.lock();
        let offer = state.queue.offer(key, json, priority, current, Instant::now());
        let depth = state.queue.depth();
        drop(state);
        self.metrics.set_queue_depth(depth);
        match offer {
            Offer::Unchanged => {}
            Offer::Merged => {
                self.metrics.status_merged();
                // The merge may have made it urgent.
                self.wake.notify_one();
            }
            Offer::Queued => self.wake.notify_one(),
        }
        offer
    }

    /// The queued, not yet written status of `key`.
    pub fn pending(&self, key: &StatusKey) -> Option<String> {
        self.lock().queue.pending(key).cloned()
    }

    /// Forgets an object that is gone.
    pub fn forget(&self, key: &StatusKey) {
        self.lock().queue.forget(key);
    }

    /// Number of objects waiting for a write.
    pub fn depth(&self) -> usize {
        self.lock().queue.depth()
    }

    /// Writes queued changes until the process ends.
    pub async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let flush = self.next().await;
            let writer = self.clone();
            tokio::spawn(async move {
                writer.write(flush).await;
                drop(permit);
            });
        }
    }

    /// Waits for a token and a change that may be written.
    async fn next(&self) -> Flush<StatusKey, String> {
        loop {
            let wait = {
                let mut state = self.lock();
                let now = Instant::now();
                let wait = state.bucket.wait_time(now);
                if wait.is_zero() {
                    if let Some(flush) = state.queue.take(now, SCAN) {
                        state.bucket.try_take(now);
                        self.metrics.set_queue_depth(state.queue.depth());
                        return flush;
                    }
                    state
                        .queue
                        .next_due(now, SCAN)
                        .map_or(Duration::from_secs(1), |due| due.saturating_duration_since(now))
                } else {
                    wait
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            }
        }
    }

    async fn write(&self, flush: Flush<StatusKey, String>) {
        self.write_one(flush).await;
        // A change that arrived while this write was in flight may be due now.
        self.wake.notify_one();
    }

    async fn write_one(&self, flush: Flush<StatusKey, String>) {
        let key = flush.key.clone();
        let result = match serde_json::from_str::<serde_json::Value>(&flush.value) {
            Ok(status) => self.patch(&key, status).await,
            Err(error) => Err(kube::Error::SerdeError(error)),
        };
        let now = Instant::now();
        match result {
            Ok(()) => {
                self.lock().queue.written(&key, now);
                self.metrics.status_written(key.kind.label());
                self.metrics.observe_staleness(flush.staleness);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!(?key, "object gone; status dropped");
                let mut state = self.lock();
                state.queue.written(&key, now);
                state.queue.forget(&key);
            }
            Err(kube::Error::Api(status)) if status.code == 422 => {
                warn!(?key, message = %status.message, "status rejected by the API server; dropped");
                self.lock().queue.written(&key, now);
            }
            Err(error) => {
                warn!(?key, %error, "status write failed; will retry");
                self.metrics.reconcile_failed("status-writer");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.lock().queue.failed(flush, Instant::now());
                self.wake.notify_one();
            }
        }
    }

    async fn patch(&self, key: &StatusKey, status: serde_json::Value) -> Result<(), kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match key.kind {
            Kind::Device => {
                let api: Api<Device> = Api::namespaced(self.client.clone(), &key.namespace);
                let body = serde_json::json!({"apiVersion": "kubetwin.io/v1alpha1", "kind": "Device", "status": status});
                api.patch_status(&key.name, &params, &Patch::Apply(&body)).await.map(drop)
            }
            Kind::RebootRequest => {
                let api: Api<RebootRequest> = Api::namespaced(self.client.clone(), &key.namespace);
                let body = serde_json::json!({"apiVersion": "kubetwin.io/v1alpha1", "kind": "RebootRequest", "status": status});
                api.patch_status(&key.name, &params, &Patch::Apply(&body)).await.map(drop)
            }
        }
    }
}

/// Statuses computed but maybe not yet visible in the cache, per object (small; entries go
/// once the cache shows them).
#[derive(Default)]
pub struct LatestStatuses<S> {
    inner: Mutex<HashMap<StatusKey, S>>,
}

impl<S: Clone + PartialEq> LatestStatuses<S> {
    /// The newest known status: ours if the cache has not caught up, else the cache's.
    pub fn newest(&self, key: &StatusKey, cached: Option<&S>) -> Option<S> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(ours) if Some(ours) == cached => {
                map.remove(key);
                cached.cloned()
            }
            Some(ours) => Some(ours.clone()),
            None => cached.cloned(),
        }
    }

    /// Records the status just offered for `key`.
    pub fn record(&self, key: StatusKey, status: S) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).insert(key, status);
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &StatusKey) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}
