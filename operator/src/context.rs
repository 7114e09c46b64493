//! What every controller shares: the services, and nothing that belongs to one kind.

use std::sync::{Arc, Mutex, MutexGuard};

use kube::{
    Client,
    runtime::{events::EventType, reflector::Store},
};
use kubetwin_api::Device;
use kubetwin_mqtt::LinkState;
use tokio::sync::watch;

use crate::{
    fleet::FleetIndex,
    k8s::{events::EventSink, status::StatusWriter},
    telemetry::metrics::Metrics,
    transport::outbound::Publisher,
};

/// Shared services of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The fleet index, fed by the Device watch and by MQTT messages.
    pub fleet: Arc<Mutex<FleetIndex>>,
    /// Cache of Device objects (every method kind looks its target up here).
    pub devices: Store<Device>,
    /// Publishes MQTT messages.
    pub publisher: Publisher,
    /// The broker connection's state.
    pub link: watch::Receiver<LinkState>,
    /// Writes statuses within the budget.
    pub writer: Arc<StatusWriter>,
    /// Publishes Events within their budget.
    pub events: EventSink,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Locks the fleet index (never held across an await).
    pub fn fleet(&self) -> MutexGuard<'_, FleetIndex> {
        self.fleet.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the MQTT session is up.
    pub fn mqtt_up(&self) -> bool {
        matches!(*self.link.borrow(), LinkState::Up { .. })
    }

    /// Publishes a Kubernetes Event about `object` (and, as `related`, a second object) in
    /// the background: a reconcile never waits for it.
    pub fn event<K, R>(
        &self,
        object: &K,
        related: Option<&R>,
        type_: EventType,
        reason: &str,
        note: String,
    ) where
        K: kube::Resource<DynamicType = ()>,
        R: kube::Resource<DynamicType = ()>,
    {
        self.events.publish(
            object.object_ref(&()),
            related.map(|r| r.object_ref(&())),
            type_,
            reason,
            note,
        );
    }
}
