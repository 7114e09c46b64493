//! Kubernetes plumbing shared by every controller: API scoping, lean watch caches that feed
//! the fleet index one event at a time, cache-sync waits, error policy, conditions, Events,
//! leader election, the budgeted status writer and the shared pool of Device label sets.

pub mod conditions;
pub mod events;
pub mod labels;
pub mod leader;
pub mod status;

use std::{sync::Arc, time::Duration};

use futures::TryStreamExt;
use kube::{
    Api, Client, Resource,
    api::{WatchEvent, WatchParams},
    core::NamespaceResourceScope,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    config::{InitialList, OperatorConfig},
    error::Error,
    telemetry::metrics::Metrics,
};

/// How long one API call a reconcile makes may wait for its answer: longer than
/// kube-apiserver's own request timeout (60 s), so only a connection that died reaches it.
/// The client sets no read timeout, and a reconcile that never ends is never run again.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(75);

/// The answer to `call`, or [`Error::NoAnswer`] when there is none within [`CALL_TIMEOUT`].
pub async fn answered<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, Error> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| Error::NoAnswer(CALL_TIMEOUT))
}

/// A namespaced kind the operator watches through a lean cache.
pub trait Watched:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// The metric label of a kind: its lowercase kind name (`device`, `rebootrequest`), the same
/// for reconciles, errors and status writes.
pub fn kind_label<K: Resource<DynamicType = ()>>() -> &'static str {
    status::StatusKind::of::<K>().label()
}

/// `Api` for a namespaced kind, limited to the watched namespace when one is set.
pub fn scoped_api<K: Watched>(client: &Client, config: &OperatorConfig) -> Api<K> {
    match &config.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A controller for `K` whose cache keeps no managedFields and no last-applied annotation
/// (reconciles never read them; at 100,000 objects they would be most of the memory). Every
/// watch event is shown to `observe` after the cache applied it, so indexes stay in step with
/// the cache without their own watch.
pub fn lean_controller<K>(
    client: &Client,
    config: &OperatorConfig,
    observe: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> Controller<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let stream = lean_watch(client, config)
        .reflect(writer)
        .inspect_ok(move |event| observe(event))
        .applied_objects();
    controller_for(stream, reader, config)
}

/// Like [`lean_controller`], but the cache keeps each object `K` in the form `cache` makes of
/// it (`C`, which is the same kind to kube-runtime: a [`crate::twin::cache::CachedDevice`] for
/// a Device). `observe` (and so every index) sees the whole object, before the cache. A
/// reconcile that an index change triggers may then briefly read the older cached object; the
/// object's own event reconciles it again. An object `cache` cannot convert is logged as an
/// error and ends its event as a watch error, never silently.
pub fn lean_controller_caching<K, C>(
    client: &Client,
    config: &OperatorConfig,
    cache: impl Fn(K) -> Result<C, serde_json::Error> + Send + 'static,
    observe: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> Controller<C>
where
    K: Watched,
    C: Watched,
{
    let (reader, writer) = reflector::store();
    let stream = lean_watch(client, config)
        .inspect_ok(move |event| observe(event))
        .and_then(move |event| {
            let converted = cached_event(event, &cache).map_err(|error| {
                tracing::error!(kind = kind_label::<K>(), %error, "a watched object cannot be cached");
                watcher::Error::WatchFailed(kube::Error::SerdeError(error))
            });
            futures::future::ready(converted)
        })
        .reflect(writer)
        .applied_objects();
    controller_for(stream, reader, config)
}

/// `event` with its object in the form `cache` makes of it.
fn cached_event<K, C, E>(
    event: watcher::Event<K>,
    cache: impl Fn(K) -> Result<C, E>,
) -> Result<watcher::Event<C>, E> {
    Ok(match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(cache(object)?),
        watcher::Event::Delete(object) => watcher::Event::Delete(cache(object)?),
        watcher::Event::InitApply(object) => watcher::Event::InitApply(cache(object)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

/// The watch of `K` in the watched namespace (or all), retried with backoff, each object
/// without what no reconcile reads ([`strip_metadata`]).
fn lean_watch<K: Watched>(
    client: &Client,
    config: &OperatorConfig,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static {
    let api: Api<K> = scoped_api(client, config);
    let watch = match config.initial_list {
        InitialList::Streaming => watcher::Config::default().streaming_lists(),
        // `Auto` is resolved at start ([`resolve_initial_list`]); one left unresolved (a
        // caller that did not ask the API server) gets what every API server serves.
        InitialList::Paged | InitialList::Auto => watcher::Config::default(),
    };
    watcher(api, watch).default_backoff().modify(strip_metadata)
}

/// A controller of `K` driven by `stream`, with the configured concurrency.
fn controller_for<K: Watched>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    reader: Store<K>,
    config: &OperatorConfig,
) -> Controller<K> {
    Controller::for_stream(stream, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
}

/// Drops what no reconcile reads from a cached object: managedFields and the kubectl
/// last-applied annotation. Their room goes too: a cleared list keeps its buffer (a few
/// hundred bytes per object) and an emptied map its node, so they are replaced, not emptied.
pub fn strip_metadata<K: kube::ResourceExt>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Waits until `store` holds its first complete list; false when its writer is gone.
///
/// `Store::wait_until_ready` wakes only one of several concurrent waiters (the controller
/// itself waits too), so this polls it with a short timeout instead of parking on it.
pub async fn wait_synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await
        {
            return result.is_ok();
        }
    }
}

/// Retry delays of a failed reconcile: 1 s doubling to 5 min, so a persistent failure costs
/// little and a transient one is retried soon.
pub fn error_backoff(failures: u32) -> Duration {
    status::budget::backoff(failures)
}

/// Failed reconciles in a row, per object, so each retry waits longer ([`error_backoff`]).
#[derive(Debug, Default)]
pub struct Retries {
    failures: std::sync::Mutex<std::collections::HashMap<(String, String), u32>>,
}

impl Retries {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), u32>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a failure of `object` and returns how long to wait before the retry.
    pub fn failed<K: Resource>(&self, object: &K) -> Duration {
        let key = (
            object.meta().namespace.clone().unwrap_or_default(),
            object.meta().name.clone().unwrap_or_default(),
        );
        let mut failures = self.lock();
        let count = failures.entry(key).or_insert(0);
        let delay = error_backoff(*count);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of `object` after a successful reconcile.
    pub fn succeeded<K: Resource>(&self, object: &K) {
        let mut failures = self.lock();
        if failures.is_empty() {
            return;
        }
        let key = (
            object.meta().namespace.clone().unwrap_or_default(),
            object.meta().name.clone().unwrap_or_default(),
        );
        failures.remove(&key);
    }
}

/// Logs and counts a failed reconcile of `object` and asks for a retry after a delay that
/// grows with each failure in a row.
pub fn reconcile_failed<K: Resource<DynamicType = ()>>(
    object: &K,
    error: &Error,
    metrics: &Arc<Metrics>,
    retries: &Retries,
) -> Action {
    let kind = kind_label::<K>();
    let delay = retries.failed(object);
    let name = object.meta().name.as_deref().unwrap_or_default();
    warn!(%error, %kind, %name, retry_in = ?delay, "reconcile failed");
    metrics.reconcile_failed(kind);
    Action::requeue(delay)
}

/// The annotation of the bookmark that ends a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How long the API server may take to answer whether it streams lists.
const STREAMING_PROBE_SECONDS: u32 = 10;

/// `config.initial_list` with `auto` decided: streaming when the API server serves streaming
/// lists, paged otherwise. Asked once, with a watch of Devices that selects none: a server
/// that streams ends its (empty) initial events with the [`INITIAL_EVENTS_END`] bookmark; one
/// with the WatchList feature off refuses `sendInitialEvents` (400 or 422), and one that
/// predates it ignores the parameter and sends no bookmark.
pub async fn resolve_initial_list(
    client: &Client,
    config: &OperatorConfig,
) -> Result<InitialList, Error> {
    if config.initial_list != InitialList::Auto {
        return Ok(config.initial_list);
    }
    let devices: Api<kubetwin_api::Device> = scoped_api(client, config);
    let mut attempt = 1;
    loop {
        match probe_streaming(&devices).await? {
            Probe::Streams => {
                info!("the API server streams lists; watches start with a streaming list");
                return Ok(InitialList::Streaming);
            }
            Probe::Refused => {
                info!("the API server refuses streaming lists; lists are paged");
                return Ok(InitialList::Paged);
            }
            Probe::NoEnd => {
                info!("the API server sent no end of initial events; lists are paged");
                return Ok(InitialList::Paged);
            }
            // The API server is busy (for example its watch cache of Devices is still
            // initialising just after the CRDs were installed: 429): ask again, a bounded
            // number of times, then fail like any start-up call.
            Probe::Busy(status) if attempt >= STREAMING_PROBE_ATTEMPTS => {
                return Err(kube::Error::Api(status).into());
            }
            Probe::Busy(status) => {
                let wait = Duration::from_secs(u64::from(
                    status.details.as_ref().map_or(1, |d| d.retry_after_seconds.max(1)),
                ));
                info!(reason = %status.message, retry_in = ?wait, "the API server is busy; asking again whether it streams lists");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// How many times [`resolve_initial_list`] asks an API server that answers "busy".
const STREAMING_PROBE_ATTEMPTS: u32 = 30;

/// What one probe of [`resolve_initial_list`] learnt.
enum Probe {
    /// The initial events ended with the bookmark.
    Streams,
    /// `sendInitialEvents` was refused (the WatchList feature is off).
    Refused,
    /// The watch ended without the bookmark (the parameter was ignored).
    NoEnd,
    /// The API server was busy (429 or 5xx, at the start or in the stream).
    Busy(Box<kube::core::Status>),
}

/// One streaming watch of Devices that selects none.
async fn probe_streaming(devices: &Api<kubetwin_api::Device>) -> Result<Probe, Error> {
    let busy = |code: u16| code == 429 || code >= 500;
    let params = WatchParams::streaming_lists()
        .labels("kubetwin.io/initial-list-probe=none")
        .timeout(STREAMING_PROBE_SECONDS);
    let events = match answered(devices.watch(&params, "0")).await? {
        Ok(events) => events,
        Err(kube::Error::Api(status)) if status.code == 400 || status.code == 422 => {
            return Ok(Probe::Refused);
        }
        Err(kube::Error::Api(status)) if busy(status.code) => return Ok(Probe::Busy(status)),
        Err(error) => return Err(error.into()),
    };
    let probe = answered(async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Bookmark(bookmark)
                    if bookmark.metadata.annotations.contains_key(INITIAL_EVENTS_END) =>
                {
                    return Ok(Probe::Streams);
                }
                WatchEvent::Error(status) if busy(status.code) => return Ok(Probe::Busy(status)),
                _ => {}
            }
        }
        Ok(Probe::NoEnd)
    })
    .await??;
    Ok(probe)
}

/// Checks that the kubetwin CRDs are served.
pub async fn check_crds(client: &Client, config: &OperatorConfig) -> Result<(), Error> {
    let devices: Api<kubetwin_api::Device> = scoped_api(client, config);
    match devices.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(Error::CrdsMissing(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// What `auto` becomes against an API server that answers its first Device watch
    /// "busy" (429) and every one after it with `status` and `body` (served on a local
    /// port, as an API server would).
    async fn initial_list_against(status: u16, body: &'static str) -> InitialList {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = asked.clone();
        let answer = move || {
            let first = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    let busy = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"storage is (re)initializing","reason":"TooManyRequests","details":{"retryAfterSeconds":1},"code":429}"#;
                    return (axum::http::StatusCode::TOO_MANY_REQUESTS, busy);
                }
                (axum::http::StatusCode::from_u16(status).expect("a status code"), body)
            }
        };
        let app = axum::Router::new()
            .route("/apis/kubetwin.io/v1alpha1/devices", axum::routing::get(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::try_from(kube::Config::new(
            format!("http://{address}").parse().expect("a URL"),
        ))
        .expect("a client");
        let config = OperatorConfig::parse_from(["kubetwin-operator"]);
        assert_eq!(config.initial_list, InitialList::Auto, "auto is the default");
        let resolved = resolve_initial_list(&client, &config).await.expect("an answer");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2, "asked again after busy");
        resolved
    }

    #[tokio::test]
    async fn lists_stream_only_where_the_api_server_ends_its_initial_events() {
        let streams = r#"{"type":"BOOKMARK","object":{"kind":"Device","apiVersion":"kubetwin.io/v1alpha1","metadata":{"resourceVersion":"7","annotations":{"k8s.io/initial-events-end":"true"}}}}
"#;
        assert_eq!(initial_list_against(200, streams).await, InitialList::Streaming);
        // The WatchList feature off: the parameter is refused.
        let refused = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled","reason":"Invalid","code":422}"#;
        assert_eq!(initial_list_against(422, refused).await, InitialList::Paged);
        // An API server from before the feature: the parameter is ignored, no bookmark ends
        // the initial events, and the watch ends at its timeout.
        let ignored = r#"{"type":"BOOKMARK","object":{"kind":"Device","apiVersion":"kubetwin.io/v1alpha1","metadata":{"resourceVersion":"7"}}}
"#;
        assert_eq!(initial_list_against(200, ignored).await, InitialList::Paged);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_fails_after_the_call_timeout_and_an_answer_passes_through() {
        let started = tokio::time::Instant::now();
        let silent = answered(futures::future::pending::<Result<(), kube::Error>>()).await;
        assert!(matches!(silent, Err(Error::NoAnswer(timeout)) if timeout == CALL_TIMEOUT));
        assert_eq!(started.elapsed(), CALL_TIMEOUT);

        let refused = answered(async {
            Err::<(), _>(kube::Error::Api(Box::new(kube::core::Status {
                code: 409,
                ..Default::default()
            })))
        })
        .await;
        assert!(matches!(refused, Ok(Err(kube::Error::Api(status))) if status.code == 409));
        assert!(matches!(answered(async { Ok::<_, kube::Error>(7) }).await, Ok(Ok(7))));
    }

    #[test]
    fn reconcile_retries_back_off_to_five_minutes() {
        let delays: Vec<u64> =
            [0, 1, 2, 8, 20].iter().map(|f| error_backoff(*f).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 256, 300]);
    }

    #[test]
    fn retries_of_one_object_wait_longer_until_it_succeeds() {
        let retries = Retries::default();
        let mut device = kubetwin_api::Device::new("d1", Default::default());
        device.metadata.namespace = Some("ns".into());
        let delays: Vec<u64> = (0..3).map(|_| retries.failed(&device).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4]);
        retries.succeeded(&device);
        assert_eq!(retries.failed(&device).as_secs(), 1);
    }

    #[test]
    fn a_cached_object_keeps_no_managed_fields_nor_last_applied_annotation_nor_their_room() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
        let entry = ManagedFieldsEntry { manager: Some("kubectl".into()), ..Default::default() };
        // Annotation keys, if any.
        type Keys<'a> = Option<&'a [&'a str]>;
        // (annotations as delivered, annotations as cached)
        let table: [(Keys, Keys); 4] = [
            (None, None),
            (Some(&[LAST_APPLIED]), None),
            (Some(&[LAST_APPLIED, "team"]), Some(&["team"])),
            (Some(&["team"]), Some(&["team"])),
        ];
        for (delivered, cached) in table {
            let mut device = kubetwin_api::Device::new("d1", Default::default());
            device.metadata.managed_fields = Some(vec![entry.clone(), entry.clone()]);
            device.metadata.annotations = delivered
                .map(|keys| keys.iter().map(|k| (k.to_string(), "x".to_string())).collect());
            strip_metadata(&mut device);
            assert_eq!(device.metadata.managed_fields, None, "{delivered:?}");
            let kept = device.metadata.annotations.map(|a| a.into_keys().collect::<Vec<_>>());
            let cached = cached.map(|keys| keys.iter().map(|k| k.to_string()).collect());
            assert_eq!(kept, cached, "{delivered:?}");
        }
    }

    #[test]
    fn every_kind_has_one_label_for_all_metrics() {
        assert_eq!(kind_label::<kubetwin_api::Device>(), "device");
        assert_eq!(kind_label::<kubetwin_api::RebootRequest>(), "rebootrequest");
    }
}
