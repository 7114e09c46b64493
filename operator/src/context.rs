//! What every controller shares: the services, and nothing that belongs to one kind.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex, MutexGuard},
};

use kube::{
    Api, Client, ResourceExt,
    runtime::{events::EventType, reflector::Store},
};
use kubetwin_api::{Device, DeviceConfiguration};
use kubetwin_mqtt::LinkState;
use tokio::sync::watch;

use crate::{
    budgets::index::BudgetIndex,
    configurations::{admissions::Admissions, watch::Seen},
    error::Error,
    fleet::{Claim, FleetIndex},
    k8s::{events::EventSink, status::StatusWriter},
    telemetry::metrics::Metrics,
    transport::outbound::Publisher,
    twin::cache::{self, CachedDevice},
};

/// Shared services of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The fleet index, fed by the Device watch and by MQTT messages.
    pub fleet: Arc<Mutex<FleetIndex>>,
    /// Cache of Device objects (every method kind looks its target up here).
    pub devices: Store<CachedDevice>,
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
    /// Disruption budgets and the devices requests disrupt now.
    pub budgets: Arc<Mutex<BudgetIndex>>,
    /// Cache of DeviceConfiguration objects (each Device's effective twin comes from them).
    pub configurations: Store<DeviceConfiguration>,
    /// Devices configuration rollouts admitted that their status does not record yet.
    pub admissions: Arc<Mutex<Admissions>>,
    /// What the configuration watch saw (whether it listed every configuration yet).
    pub configuration_watch: Arc<Seen>,
}

/// A Device with whether it is online now, for job planning.
pub struct DeviceOnline {
    /// The cached Device (its metadata typed; [`CachedDevice::device`] reads the rest).
    pub device: Arc<CachedDevice>,
    /// Online now (from the fleet index).
    pub online: bool,
}

impl Context {
    /// Locks the fleet index (never held across an await).
    pub fn fleet(&self) -> MutexGuard<'_, FleetIndex> {
        self.fleet.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the rollout admissions (never held across an await).
    pub fn admissions(&self) -> MutexGuard<'_, Admissions> {
        self.admissions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the budget index (never held across an await).
    pub fn budgets(&self) -> MutexGuard<'_, BudgetIndex> {
        self.budgets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Devices of `namespace`, each with whether it is online now.
    pub fn devices_online(&self, namespace: &str) -> Vec<DeviceOnline> {
        let devices: Vec<Arc<CachedDevice>> = self
            .devices
            .state()
            .into_iter()
            .filter(|d| d.metadata.namespace.as_deref() == Some(namespace))
            .collect();
        let fleet = self.fleet();
        devices
            .into_iter()
            .map(|device| {
                let online = match fleet.claim_of(&device.device_ref()) {
                    Some(Claim::Owner(id)) => {
                        fleet.state(&id).and_then(|s| s.online()) == Some(true)
                    }
                    _ => false,
                };
                DeviceOnline { device, online }
            })
            .collect()
    }

    /// `device` from the cache as the API stores it, or newer: the reported map the cache
    /// dropped comes from the fleet index or, for a Device it holds no state for, the API.
    pub async fn whole_device<'a>(&self, device: &'a Device) -> Result<Cow<'a, Device>, Error> {
        let reports = {
            let fleet = self.fleet();
            match fleet.claim_of(&crate::fleet::bare_ref(device)) {
                Some(Claim::Owner(id)) => fleet.state(&id).map(|s| s.reported.to_map()),
                _ => None,
            }
        }
        .transpose()
        .map_err(Error::Reported)?;
        if let Some(whole) = cache::whole(device, reports) {
            return Ok(whole);
        }
        let namespace = device.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let api: Api<Device> = Api::namespaced(self.client.clone(), &namespace);
        Ok(Cow::Owned(crate::k8s::answered(api.get_status(&device.name_any())).await??))
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
