//! Many objects at once, for benchmarks and fault tests: creating them at a fixed concurrency,
//! the minimal status patch of the benchmark floors, paged reads, and [`Tracker`], a watch that
//! records when each object reached each state.

use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use kube::{
    Api, Resource, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use kubetwin_api::{ConnectionState, Device, RebootPhase, RebootRequest};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Field manager of the bulk server-side applies.
pub const FIELD_MANAGER: &str = "kubetwin-bench";

/// Prints a progress line, prefixed with the time since the first line.
pub fn progress(message: impl std::fmt::Display) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    println!("[{:>7.1}s] {message}", elapsed.as_secs_f64());
}

/// How often long loops print their progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs `task` for every item, `concurrency` at a time, printing progress as `what`; fails on
/// the first error. Returns the wall time.
pub async fn run_all<T, F, Fut>(
    what: &str,
    items: Vec<T>,
    concurrency: usize,
    task: F,
) -> anyhow::Result<Duration>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let total = items.len();
    let started = Instant::now();
    let mut last_print = started;
    let mut done = 0usize;
    let mut stream =
        futures::stream::iter(items.into_iter().map(task)).buffer_unordered(concurrency.max(1));
    while let Some(result) = stream.next().await {
        result.with_context(|| format!("{what}: item {} of {total} failed", done + 1))?;
        done += 1;
        if last_print.elapsed() >= PROGRESS_EVERY {
            last_print = Instant::now();
            progress(format!("  {what}: {done}/{total}"));
        }
    }
    Ok(started.elapsed())
}

/// The applied manifest of the `Device` for `device_id`: named after it, `spec.deviceId` = it.
pub fn device_manifest(device_id: &str) -> Value {
    json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "Device",
        "metadata": { "name": device_id },
        "spec": { "deviceId": device_id },
    })
}

/// Device ids (and names) `{prefix}-{i}` for i in `range`, as the simulator's `--count` and
/// `--id-prefix` name them.
pub fn device_ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Applies (server-side) a `Device` named after each id with `spec.deviceId` = the id (ids
/// start with `<namespace>.`, as the tenancy policy wants). Returns the wall time.
pub async fn apply_devices(
    api: &Api<Device>,
    ids: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let what = format!("applying {} Devices", ids.len());
    run_all(&what, ids, concurrency, |id| {
        let api = api.clone();
        let params = params.clone();
        async move {
            let manifest = device_manifest(&id);
            // Applying is idempotent: retry the rare transient failure of a busy API server.
            let mut attempt = 0;
            loop {
                attempt += 1;
                match api.patch(&id, &params, &Patch::Apply(&manifest)).await {
                    Ok(_) => return Ok(()),
                    Err(error) if attempt < 3 => {
                        progress(format!("  apply Device {id}: {error}; retrying"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(error) => {
                        return Err(error).with_context(|| format!("applying Device {id}"));
                    }
                }
            }
        }
    })
    .await
}

/// A `RebootRequest` named `name` for Device `device`, with further spec fields from `spec`.
pub fn reboot_request(name: &str, device: &str, spec: &Value) -> anyhow::Result<RebootRequest> {
    let mut full_spec = json!({ "deviceName": device });
    if let (Some(target), Some(extra)) = (full_spec.as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": RebootRequest::api_version(&()),
        "kind": RebootRequest::kind(&()),
        "metadata": { "name": name },
        "spec": full_spec,
    }))
    .context("building a RebootRequest")
}

/// Creates one `RebootRequest`.
pub async fn create_reboot(
    api: &Api<RebootRequest>,
    name: &str,
    device: &str,
    spec: &Value,
) -> anyhow::Result<()> {
    let request = reboot_request(name, device, spec)?;
    api.create(&PostParams::default(), &request)
        .await
        .with_context(|| format!("creating RebootRequest {name}"))?;
    Ok(())
}

/// The minimal status write of the floors: a JSON merge patch of `status.message`.
pub async fn patch_reboot_message(
    api: &Api<RebootRequest>,
    name: &str,
    message: &str,
) -> anyhow::Result<()> {
    let patch = json!({ "status": { "message": message } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching the status of RebootRequest {name}"))?;
    Ok(())
}

/// Calls `visit` for every object of `api`, reading pages of 500. Returns how many there were.
pub async fn for_each<K>(api: &Api<K>, mut visit: impl FnMut(&K)) -> anyhow::Result<usize>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams::default().limit(500);
    let mut count = 0;
    loop {
        let page = api.list(&params).await.context("listing objects")?;
        for object in &page.items {
            visit(object);
        }
        count += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(count),
        }
    }
}

/// Whether the Device's status shows it connected.
pub fn is_connected(device: &Device) -> bool {
    device
        .status
        .as_ref()
        .and_then(|s| s.connection.as_ref())
        .is_some_and(|c| c.state == ConnectionState::Connected)
}

/// Whether the Device's condition `type_` is `True`.
pub fn condition_true(device: &Device, type_: &str) -> bool {
    device
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the operator wrote a status for the Device's current generation.
pub fn is_synced(device: &Device) -> bool {
    device
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) == device.metadata.generation)
}

/// The RebootRequest's phase, if it has one.
pub fn phase(request: &RebootRequest) -> Option<RebootPhase> {
    request.status.as_ref().and_then(|s| s.phase)
}

/// `phase reason: message` of a RebootRequest, for error messages.
pub fn describe_request(request: &RebootRequest) -> String {
    let status = request.status.as_ref();
    format!(
        "{}: phase {:?}, reason {:?}, message {:?}",
        request.name_any(),
        status.and_then(|s| s.phase),
        status.and_then(|s| s.reason.clone()),
        status.and_then(|s| s.message.clone()),
    )
}

/// States of the objects of one watch.
struct Tracked<S> {
    synced: bool,
    history: HashMap<String, Vec<(S, Instant)>>,
}

/// Watches one kind in one namespace and records, for every object, each distinct state
/// `classify` gives it and the instant the watch delivered it. Stops when dropped.
pub struct Tracker<S> {
    shared: Arc<Mutex<Tracked<S>>>,
    task: JoinHandle<()>,
}

impl<S> Tracker<S>
where
    S: Clone + PartialEq + Send + 'static,
{
    /// Starts watching `api`.
    pub fn start<K>(api: Api<K>, classify: impl Fn(&K) -> S + Send + 'static) -> Self
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let shared = Arc::new(Mutex::new(Tracked { synced: false, history: HashMap::new() }));
        let sink = shared.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        let state = classify(&object);
                        let mut tracked = lock(&sink);
                        let history = tracked.history.entry(object.name_any()).or_default();
                        if history.last().is_none_or(|(last, _)| *last != state) {
                            history.push((state, now));
                        }
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        lock(&sink).history.remove(&object.name_any());
                    }
                    Ok(watcher::Event::InitDone) => lock(&sink).synced = true,
                    Ok(watcher::Event::Init) => {}
                    Err(error) => progress(format!("  watch error (retrying): {error}")),
                }
            }
        });
        Self { shared, task }
    }

    /// Waits until the initial list was delivered.
    pub async fn wait_synced(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !lock(&self.shared).synced {
            anyhow::ensure!(Instant::now() < deadline, "the watch did not list within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// How many state changes the watch delivered after `at`, over every object (an object's
    /// first state, when it appeared after `at`, counts as one).
    pub fn changes_after(&self, at: Instant) -> usize {
        lock(&self.shared).history.values().flatten().filter(|(_, seen)| *seen > at).count()
    }

    /// How many objects are currently in a state matching `matches`.
    pub fn count(&self, matches: impl Fn(&S) -> bool) -> usize {
        lock(&self.shared)
            .history
            .values()
            .filter(|h| h.last().is_some_and(|(s, _)| matches(s)))
            .count()
    }

    /// Up to `limit` names of objects currently in a state matching `matches`.
    pub fn names(&self, matches: impl Fn(&S) -> bool, limit: usize) -> Vec<String> {
        lock(&self.shared)
            .history
            .iter()
            .filter(|(_, h)| h.last().is_some_and(|(s, _)| matches(s)))
            .map(|(name, _)| name.clone())
            .take(limit)
            .collect()
    }

    /// When object `name` was first seen in a state matching `matches`.
    pub fn first_time(&self, name: &str, matches: impl Fn(&S) -> bool) -> Option<Instant> {
        lock(&self.shared).history.get(name)?.iter().find(|(s, _)| matches(s)).map(|(_, at)| *at)
    }

    /// The latest of the instants at which each object was first seen matching `matches`
    /// (the moment the last object got there).
    pub fn last_arrival(&self, matches: impl Fn(&S) -> bool) -> Option<Instant> {
        lock(&self.shared)
            .history
            .values()
            .filter_map(|h| h.iter().find(|(s, _)| matches(s)).map(|(_, at)| *at))
            .max()
    }
}

impl<S> Drop for Tracker<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<S>(shared: &Mutex<Tracked<S>>) -> MutexGuard<'_, Tracked<S>> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_requests_carry_the_device_and_extra_spec() {
        let request = reboot_request(
            "r-1",
            "dev-1",
            &json!({"responseTimeoutSeconds": 120, "connectTimeoutSeconds": 300}),
        )
        .expect("request");
        assert_eq!(request.name_any(), "r-1");
        assert_eq!(request.spec.device_name, "dev-1");
        assert_eq!(request.spec.response_timeout_seconds, 120);
        assert_eq!(request.spec.connect_timeout_seconds, 300);
        assert_eq!(device_ids("p", 0..3), vec!["p-0", "p-1", "p-2"]);
    }
}
