//! The single status writer (I/O edge of the write budget): controllers offer the status they
//! want; this task writes it with server-side apply within the budget of [`super::budget`].
//! It writes the status of any kind: a new custom resource's status goes through the same
//! budget by naming its [`StatusKind`], without a change here.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{
    Api, Client, Resource,
    api::{DynamicObject, Patch, PatchParams},
    discovery::ApiResource,
};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, trace, warn};

use super::budget::{Flush, Offer, Priority, TokenBucket, WriteQueue, fingerprint};
use crate::{error::Error, telemetry::metrics::Metrics};

/// Field manager of every status write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "kubetwin-operator";

/// How many writes may be in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// How many queue entries one scheduling step looks at.
const SCAN: usize = 1024;
/// How long one write may wait for its answer. Longer than kube-apiserver's own request
/// timeout (60 s), so a server that is merely slow answers first; a write still unanswered
/// after this (a dead connection) is abandoned and retried like any failed write, instead of
/// holding one of the [`MAX_IN_FLIGHT`] slots for good.
const WRITE_TIMEOUT: Duration = Duration::from_secs(75);

/// What the writer needs to know about a kind: where its status subresource is, and its
/// metric label. One per kind for the life of the process (see [`StatusKind::of`]).
#[derive(Debug)]
pub struct StatusKind {
    resource: ApiResource,
    label: String,
}

impl StatusKind {
    /// The status kind of `K`, registered once and then shared (keys hold a plain reference,
    /// so 100,000 queued keys do not repeat the kind's strings).
    pub fn of<K: Resource<DynamicType = ()>>() -> &'static StatusKind {
        static KINDS: Mutex<Vec<&'static StatusKind>> = Mutex::new(Vec::new());
        let resource = ApiResource::erase::<K>(&());
        let mut kinds = KINDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = kinds.iter().find(|k| {
            k.resource.group == resource.group
                && k.resource.version == resource.version
                && k.resource.kind == resource.kind
        }) {
            return known;
        }
        let label = resource.kind.to_ascii_lowercase();
        let kind: &'static StatusKind = Box::leak(Box::new(StatusKind { resource, label }));
        kinds.push(kind);
        kind
    }

    /// Metric label: the lowercase kind name.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl PartialEq for StatusKind {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label && self.resource.group == other.resource.group
    }
}

impl Eq for StatusKind {}

impl std::hash::Hash for StatusKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.label.hash(state);
    }
}

impl PartialOrd for StatusKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StatusKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.resource.group, &self.label).cmp(&(&other.resource.group, &other.label))
    }
}

/// The object a status is written to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusKey {
    /// Its kind.
    pub kind: &'static StatusKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl StatusKey {
    /// The key of object `namespace/name` of `kind`.
    pub fn new(kind: &'static StatusKind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_string(), name: name.to_string() }
    }
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
    /// Objects that show [`PROBLEM_CONDITION`].
    problems: std::collections::HashSet<StatusKey>,
}

/// The condition the writer puts on an object whose status the API server refuses.
pub const PROBLEM_CONDITION: &str = "StatusWriteFailed";
/// Field manager of [`PROBLEM_CONDITION`] (apart from [`FIELD_MANAGER`], which never owns it).
pub const PROBLEM_MANAGER: &str = "kubetwin-operator-status-problems";

/// A status document as canonical JSON (object keys sorted), so the wanted status and the
/// cached one compare equal exactly when they are equal.
fn canonical(value: serde_json::Value) -> String {
    value.to_string()
}

/// Removes [`PROBLEM_CONDITION`] from a status document (it is not the operator's to write).
fn strip_problem(status: &mut serde_json::Value) {
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        conditions.retain(|c| c.get("type").and_then(|t| t.as_str()) != Some(PROBLEM_CONDITION));
    }
}

/// Why one write did not succeed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The API server (or the connection to it) answered with an error.
    #[error(transparent)]
    Api(kube::Error),
    /// No answer within [`WRITE_TIMEOUT`].
    #[error("no answer from the API server within {}s", WRITE_TIMEOUT.as_secs())]
    TimedOut,
}

/// How a failed write is counted and retried.
#[derive(Debug, PartialEq, Eq)]
struct WriteFailure {
    /// Metric label, one of [`crate::telemetry::metrics::WRITE_FAILURE_REASONS`].
    reason: &'static str,
    /// The API server's Retry-After, if it gave one.
    retry_after: Duration,
}

impl WriteFailure {
    fn of(error: &WriteError) -> Self {
        let no_wait = Duration::ZERO;
        match error {
            WriteError::TimedOut => Self { reason: "timeout", retry_after: no_wait },
            WriteError::Api(kube::Error::Api(status)) => {
                let retry_after = status
                    .details
                    .as_ref()
                    .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds)))
                    .unwrap_or_default();
                let reason = match status.code {
                    422 | 400 => "invalid",
                    409 => "conflict",
                    429 => "throttled",
                    500..=599 => "unavailable",
                    _ => "other",
                };
                Self { reason, retry_after }
            }
            WriteError::Api(kube::Error::SerdeError(_)) => {
                Self { reason: "invalid", retry_after: no_wait }
            }
            WriteError::Api(_) => Self { reason: "unavailable", retry_after: no_wait },
        }
    }
}

/// Queues status changes and writes them within the budget.
pub struct StatusWriter {
    state: Mutex<State>,
    wake: Notify,
    client: Client,
    metrics: Arc<Metrics>,
    /// Writes sent and not yet answered.
    in_flight: AtomicUsize,
}

impl StatusWriter {
    /// A writer with `budget`; call [`StatusWriter::run`] to start writing.
    pub fn new(client: Client, metrics: Arc<Metrics>, budget: WriteBudget) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                queue: WriteQueue::new(budget.min_interval),
                bucket: TokenBucket::new(budget.rate, budget.burst, now),
                problems: std::collections::HashSet::new(),
            }),
            wake: Notify::new(),
            client,
            metrics,
            in_flight: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers the status `wanted` for `key`; `current` is the status the cache shows. Nothing
    /// is queued when they are equal. A status that cannot be serialized is an error (and
    /// nothing is queued).
    pub fn offer<S: Serialize>(
        &self,
        key: StatusKey,
        wanted: &S,
        current: Option<&S>,
        priority: Priority,
    ) -> Result<Offer, Error> {
        self.offer_held(key, wanted, current, priority, None)
    }

    /// Like [`StatusWriter::offer`], but `hold` (if any) defers a new change that long unless
    /// an urgent change of the same object replaces it first
    /// ([`WriteQueue::offer_deferred`]).
    pub fn offer_held<S: Serialize>(
        &self,
        key: StatusKey,
        wanted: &S,
        current: Option<&S>,
        priority: Priority,
        hold: Option<Duration>,
    ) -> Result<Offer, Error> {
        let json = canonical(serde_json::to_value(wanted)?);
        let current = match current {
            Some(current) => {
                let mut current = serde_json::to_value(current)?;
                strip_problem(&mut current);
                Some(fingerprint(&canonical(current)))
            }
            None => None,
        };
        let mut state = self.lock();
        let now = Instant::now();
        let offer = match hold {
            Some(hold) => state.queue.offer_deferred(key, json, priority, current, now, now + hold),
            None => state.queue.offer(key, json, priority, current, now),
        };
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
        Ok(offer)
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

    /// Writes everything queued without waiting for the per-object minimum interval (still
    /// within the rate budget), until nothing is left or `within` has passed. Returns how
    /// many objects are left unwritten. Keeps [`StatusWriter::run`] going meanwhile.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        self.lock().queue.drain();
        self.wake.notify_one();
        loop {
            let left = self.depth() + self.in_flight.load(Ordering::SeqCst);
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
            let count = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.metrics.set_writes_in_flight(count);
            tokio::spawn(async move {
                writer.write(flush).await;
                drop(permit);
                let count = writer.in_flight.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
                writer.metrics.set_writes_in_flight(count);
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
                    // Nothing may go now: a moment to give back what idle tables hold.
                    state.queue.settle(now);
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
        let sent = Instant::now();
        trace!(?key, priority = flush.priority.as_str(), staleness = ?flush.staleness, "status write sent");
        let result = match serde_json::from_str::<serde_json::Value>(&flush.value) {
            Ok(status) => self.patch(&key, status).await,
            Err(error) => Err(WriteError::Api(kube::Error::SerdeError(error))),
        };
        let now = Instant::now();
        match result {
            Ok(()) => {
                trace!(?key, took = ?now.saturating_duration_since(sent), "status written");
                let had_problem = {
                    let mut state = self.lock();
                    state.queue.written(&key, now);
                    state.problems.remove(&key)
                };
                self.metrics.status_written(key.kind.label());
                self.metrics.observe_staleness(flush.priority.as_str(), flush.staleness);
                if had_problem {
                    self.clear_problem(&key).await;
                }
            }
            Err(WriteError::Api(kube::Error::Api(status))) if status.code == 404 => {
                debug!(?key, "object gone; status dropped");
                let mut state = self.lock();
                state.queue.written(&key, now);
                state.queue.forget(&key);
                state.problems.remove(&key);
            }
            Err(error) => {
                let failure = WriteFailure::of(&error);
                let delay = self.lock().queue.failed(flush, now, failure.retry_after);
                self.metrics.status_write_failed(key.kind.label(), failure.reason);
                warn!(?key, reason = failure.reason, %error, retry_in = ?delay, "status write failed; retrying later");
                if failure.reason == "invalid" {
                    // The API server will refuse this status until it changes: say so on the
                    // object itself, where people look.
                    let first = self.lock().problems.insert(key.clone());
                    if first {
                        self.show_problem(&key, &error.to_string()).await;
                    }
                }
                self.wake.notify_one();
            }
        }
    }

    /// Puts the condition [`PROBLEM_CONDITION`] on the object, written by its own field manager
    /// so the operator's regular status writes neither keep nor remove it.
    async fn show_problem(&self, key: &StatusKey, message: &str) {
        let mut message = message.to_string();
        message.truncate(1024);
        let condition = serde_json::json!({
            "type": PROBLEM_CONDITION,
            "status": "True",
            "reason": "Invalid",
            "message": format!("The API server refused the status the operator computed: {message}"),
            "lastTransitionTime": crate::clock::now().to_string(),
        });
        let body = serde_json::json!({"conditions": [condition]});
        if let Err(error) = self.patch_as(key, body, PROBLEM_MANAGER).await {
            warn!(?key, %error, "cannot show the status problem on the object");
        }
    }

    /// Removes [`PROBLEM_CONDITION`] after a status write succeeded again.
    async fn clear_problem(&self, key: &StatusKey) {
        if let Err(error) = self.patch_as(key, serde_json::json!({}), PROBLEM_MANAGER).await {
            warn!(?key, %error, "cannot clear the status problem on the object");
        }
    }

    async fn patch(&self, key: &StatusKey, status: serde_json::Value) -> Result<(), WriteError> {
        self.patch_as(key, status, FIELD_MANAGER).await
    }

    /// One server-side apply of `status` by field manager `manager`, within [`WRITE_TIMEOUT`].
    async fn patch_as(
        &self,
        key: &StatusKey,
        status: serde_json::Value,
        manager: &str,
    ) -> Result<(), WriteError> {
        let params = PatchParams::apply(manager).force();
        let resource = &key.kind.resource;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, resource);
        let body = serde_json::json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": status,
        });
        let apply = Patch::Apply(&body);
        let patch = api.patch_status(&key.name, &params, &apply);
        match tokio::time::timeout(WRITE_TIMEOUT, patch).await {
            Ok(answer) => answer.map(drop).map_err(WriteError::Api),
            Err(_) => Err(WriteError::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::WRITE_FAILURE_REASONS;

    #[test]
    fn failures_are_classified_with_the_api_servers_retry_after() {
        let status = |code: u16, retry: u32| {
            WriteError::Api(kube::Error::Api(Box::new(kube::core::Status {
                code,
                details: Some(kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: retry,
                }),
                ..Default::default()
            })))
        };
        assert_eq!(WriteFailure::of(&status(422, 0)).reason, "invalid");
        assert_eq!(
            WriteFailure::of(&status(429, 7)),
            WriteFailure { reason: "throttled", retry_after: Duration::from_secs(7) }
        );
        assert_eq!(WriteFailure::of(&status(503, 0)).reason, "unavailable");
        assert_eq!(WriteFailure::of(&status(409, 0)).reason, "conflict");
        assert_eq!(
            WriteFailure::of(&WriteError::TimedOut),
            WriteFailure { reason: "timeout", retry_after: Duration::ZERO }
        );
        // Every reason a failure can get is one the metrics pre-register.
        for code in [400, 404, 409, 422, 429, 500, 503, 504] {
            assert!(WRITE_FAILURE_REASONS.contains(&WriteFailure::of(&status(code, 0)).reason));
        }
    }

    /// A connection the API server accepts and never answers on (a dead peer) costs a write
    /// its timeout, not its slot for good: the write fails as `timeout` and stays queued.
    #[tokio::test(start_paused = true)]
    async fn a_write_never_answered_fails_as_a_timeout_and_stays_queued() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut config = kube::Config::new(format!("http://{address}").parse().unwrap());
        // Only the writer's own timeout may end the write (the paused clock jumps to it).
        config.connect_timeout = None;
        config.default_retry = false;
        let client = Client::try_from(config).unwrap();
        let metrics = Arc::new(Metrics::new());
        let budget = WriteBudget { rate: 100.0, burst: 10.0, min_interval: Duration::from_secs(1) };
        let writer = StatusWriter::new(client, metrics.clone(), budget);
        let key = StatusKey::new(StatusKind::of::<kubetwin_api::Device>(), "fleet", "d-1");
        let status = serde_json::json!({"connection": "Connected"});
        writer.offer(key, &status, None, Priority::Urgent).unwrap();
        tokio::spawn(writer.clone().run());

        tokio::time::sleep(WRITE_TIMEOUT + Duration::from_secs(1)).await;

        let text = metrics.render().unwrap();
        let timed_out = "kubetwin_status_write_errors_total{kind=\"device\",reason=\"timeout\"} 1";
        assert!(text.contains(timed_out), "no timeout counted:\n{text}");
        let waiting = writer.depth() + writer.in_flight.load(Ordering::SeqCst);
        assert_eq!(waiting, 1, "the status must stay queued (or be written again)");
    }

    #[test]
    fn the_problem_condition_is_not_part_of_what_is_compared() {
        let mut cached = serde_json::json!({"phase": "Sent", "conditions": [
            {"type": "Complete", "status": "False"},
            {"type": PROBLEM_CONDITION, "status": "True"},
        ]});
        strip_problem(&mut cached);
        assert_eq!(
            cached,
            serde_json::json!({"phase": "Sent", "conditions": [{"type": "Complete", "status": "False"}]})
        );
    }

    #[test]
    fn each_kind_is_registered_once_with_its_label() {
        let device = StatusKind::of::<kubetwin_api::Device>();
        let again = StatusKind::of::<kubetwin_api::Device>();
        assert!(std::ptr::eq(device, again));
        assert_eq!(device.label(), "device");
        let reboot = StatusKind::of::<kubetwin_api::RebootRequest>();
        assert_eq!(reboot.label(), "rebootrequest");
        assert_eq!(reboot.resource.api_version, "kubetwin.io/v1alpha1");
        assert_ne!(device, reboot);
    }
}
