//! API glue: one controller per resource, sharing one [`Context`].

pub mod device;
pub mod reboot;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{StreamExt, channel::mpsc::UnboundedSender};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use kubetwin_api::{Device, RebootRequest, RebootRequestStatus};
use kubetwin_protocol::{Codec, Topics};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    Error, OperatorConfig, Result,
    events::EventSink,
    http::Readiness,
    inbound,
    metrics::Metrics,
    mqtt::{self, MqttSettings, Publisher},
    reboot_status::RebootSettings,
    twin::TwinIndex,
    writer::{LatestStatuses, StatusWriter, WriteBudget},
};

/// What every reconcile gets: clients, the fleet index and the MQTT publisher.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings.
    pub config: OperatorConfig,
    /// In-memory fleet state.
    pub index: Mutex<TwinIndex>,
    /// Cache of Device objects.
    pub devices: Store<Device>,
    /// Cache of RebootRequest objects.
    pub requests: Store<RebootRequest>,
    /// Publishes MQTT messages.
    pub publisher: Publisher,
    /// Whether the MQTT session is up.
    pub mqtt_connected: watch::Receiver<bool>,
    /// Topic names.
    pub topics: Topics,
    /// Payload codec with the size limit.
    pub codec: Codec,
    /// Publishes Events within their budget.
    pub events: EventSink,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Triggers a Device reconcile.
    pub device_trigger: UnboundedSender<ObjectRef<Device>>,
    /// Triggers a RebootRequest reconcile.
    pub request_trigger: UnboundedSender<ObjectRef<RebootRequest>>,
    /// When this process last published each request id.
    pub last_sent: Mutex<HashMap<String, Timestamp>>,
    /// Reboot timing settings.
    pub reboot: RebootSettings,
    /// Writes statuses within the budget.
    pub writer: Arc<StatusWriter>,
    /// RebootRequest statuses computed but maybe not yet in the cache.
    pub reboot_latest: LatestStatuses<RebootRequestStatus>,
}

impl Context {
    /// Locks the fleet index (never held across an await).
    pub fn index(&self) -> MutexGuard<'_, TwinIndex> {
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the map of when each request id was last published.
    pub fn last_sent_map(&self) -> MutexGuard<'_, HashMap<String, Timestamp>> {
        self.last_sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the MQTT session is up.
    pub fn mqtt_up(&self) -> bool {
        *self.mqtt_connected.borrow()
    }

    /// Publishes a Kubernetes Event about `object` in the background (a reconcile never waits
    /// for it); failures are logged, never fatal.
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.events.publish(event, object.object_ref(&()));
    }
}

/// `Api` for a namespaced kind, limited to the watched namespace when one is set.
pub fn scoped_api<K>(client: &Client, config: &OperatorConfig) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &config.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A controller for a namespaced kind whose cache keeps no managedFields and no last-applied
/// annotation (reconciles never read them; at 100,000 objects they would be most of the
/// memory).
pub fn lean_controller<K>(client: &Client, config: &OperatorConfig) -> kube::runtime::Controller<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
{
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let api: Api<K> = scoped_api(client, config);
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_metadata)
        .reflect(writer)
        .applied_objects();
    kube::runtime::Controller::for_stream(stream, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
}

/// Drops what no reconcile reads from a cached object: managedFields and the kubectl
/// last-applied annotation.
pub fn strip_metadata<K: kube::ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Requeue after an error.
pub fn error_policy<K>(_object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed");
    ctx.metrics
        .reconcile_failed(std::any::type_name::<K>().rsplit("::").next().unwrap_or("unknown"));
    Action::requeue(Duration::from_secs(5))
}

/// Checks that the kubetwin CRDs are served.
pub async fn check_crds(client: &Client, config: &OperatorConfig) -> Result<()> {
    let devices: Api<Device> = scoped_api(client, config);
    match devices.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(Error::CrdsMissing(error.to_string())),
    }
}

/// TLS and credentials for the broker, from the settings.
pub fn broker_security(config: &OperatorConfig) -> Result<mqtt::BrokerSecurity> {
    let tls = match (&config.broker_ca_file, config.broker_url.starts_with("mqtts://")) {
        (Some(ca), _) => {
            let client = config
                .broker_client_cert_file
                .as_deref()
                .zip(config.broker_client_key_file.as_deref());
            Some(mqtt::tls_config(ca, client).map_err(Error::Config)?)
        }
        (None, true) => return Err(Error::Config("mqtts:// needs --broker-ca-file".into())),
        (None, false) => None,
    };
    let credentials = match (&config.broker_username, &config.broker_password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
            Some((user.clone(), password.trim_end().to_string()))
        }
        (Some(user), None) => Some((user.clone(), String::new())),
        _ => None,
    };
    Ok(mqtt::BrokerSecurity { tls, credentials })
}

/// Connects to MQTT and runs every controller until a shutdown signal. Readiness is
/// reported through `ready`.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    ready: watch::Sender<Readiness>,
) -> Result<()> {
    check_crds(&client, &config).await?;
    let broker = mqtt::BrokerAddress::parse(&config.broker_url).map_err(Error::Config)?;
    let security = broker_security(&config)?;
    let topics = Topics::new(config.topic_root.clone());

    let (event_tx, event_rx) = mpsc::channel(10_000);
    let (connected_tx, connected_rx) = watch::channel(false);
    let publisher = mqtt::connect(
        MqttSettings {
            broker,
            client_id: config.mqtt_client_id.clone(),
            version: config.mqtt_version,
            subscriptions: topics.operator_subscriptions(),
            max_packet_bytes: config.max_payload_bytes.saturating_mul(2).max(64 * 1024),
            security,
        },
        event_tx,
        connected_tx,
    );

    let device_controller = device::controller(&client, &config);
    let request_controller = reboot::controller(&client, &config);
    let (device_trigger, device_triggers) = futures::channel::mpsc::unbounded();
    let (request_trigger, request_triggers) = futures::channel::mpsc::unbounded();
    let writer = StatusWriter::new(
        client.clone(),
        metrics.clone(),
        WriteBudget {
            rate: config.status_write_rate,
            burst: config.status_write_burst,
            min_interval: Duration::from_millis(config.status_min_interval_ms),
        },
    );
    tokio::spawn(writer.clone().run());
    let reporter = Reporter {
        controller: "kubetwin-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        events: EventSink::start(
            Recorder::new(client.clone(), reporter),
            metrics.clone(),
            config.event_rate,
            config.event_burst,
        ),
        client,
        index: Mutex::new(TwinIndex::default()),
        devices: device_controller.store(),
        requests: request_controller.store(),
        publisher,
        mqtt_connected: connected_rx.clone(),
        topics,
        codec: Codec::new(config.max_payload_bytes),
        metrics: metrics.clone(),
        device_trigger,
        request_trigger,
        last_sent: Mutex::new(HashMap::new()),
        reboot: RebootSettings {
            return_timeout: Duration::from_secs(config.reboot_return_timeout_seconds),
        },
        writer,
        reboot_latest: LatestStatuses::default(),
        config: config.clone(),
    });

    let _ = ready.send(Readiness::NotReady);
    tokio::spawn(readiness(ctx.clone(), ready));
    tokio::spawn(inbound::run(ctx.clone(), event_rx));

    info!(broker = %config.broker_url, root = %config.topic_root, "controllers starting");
    let devices = device_controller
        .reconcile_on(device_triggers)
        .run(device::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let requests = request_controller
        .reconcile_on(request_triggers)
        .run(reboot::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    futures::future::join(devices, requests).await;
    info!("controllers stopped");
    Ok(())
}

/// Waits until `store` holds its first complete list; false when its writer is gone.
///
/// `Store::wait_until_ready` wakes only one of several concurrent waiters (the controller
/// itself waits too), so this polls it with a short timeout instead of parking on it.
pub async fn wait_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
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

/// Ready once both caches are synced and while MQTT is connected.
async fn readiness(ctx: Arc<Context>, ready: watch::Sender<Readiness>) {
    if !wait_synced(&ctx.devices).await || !wait_synced(&ctx.requests).await {
        return;
    }
    tracing::debug!("caches synced");
    let mut connected = ctx.mqtt_connected.clone();
    loop {
        let up = *connected.borrow_and_update();
        ctx.metrics.set_mqtt_connected(up);
        let _ = ready.send(if up { Readiness::Ready } else { Readiness::NotReady });
        if connected.changed().await.is_err() {
            return;
        }
    }
}
