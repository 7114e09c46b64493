//! Device controller: publishes the retained desired document when it changes and keeps each
//! Device's status (reported state, connection, conditions) current.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef, watcher},
};
use kubetwin_api::Device;
use kubetwin_protocol::{DesiredDocument, timestamp::format_rfc3339};
use serde_json::json;

use super::{Context, scoped_api};
use crate::{
    Error, FIELD_MANAGER, OperatorConfig, Result,
    device_status::{Problem, desired_status},
    mqtt::Outbound,
    twin::Claim,
};

/// Re-check interval when nothing else triggers a reconcile.
const RESYNC: Duration = Duration::from_secs(600);

/// The Device controller (not yet running).
pub fn controller(client: &Client, config: &OperatorConfig) -> Controller<Device> {
    let devices: Api<Device> = scoped_api(client, config);
    Controller::new(devices, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
}

/// Publishes desired properties when needed and writes the status computed by
/// [`desired_status`] when it differs from the current one.
pub async fn reconcile(device: Arc<Device>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("device");
    let namespace = device
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = device.name_any();
    let device_id = device.effective_device_id();
    let desired = serde_json::Map::from_iter(device.spec.desired.clone().unwrap_or_default());
    let desired_size = serde_json::to_vec(&desired)?.len();

    let devices = ctx.devices.clone();
    let claim = ctx.index().claim(&device, |o| devices.get(o).is_some());
    let problem = match claim {
        Claim::Conflict(owner) => Some(Problem::DuplicateDeviceId(owner)),
        Claim::Owner if desired_size > kubetwin_api::device::MAX_DESIRED_BYTES => {
            Some(Problem::DesiredTooLarge(desired_size))
        }
        Claim::Owner => None,
    };

    let uid = device.metadata.uid.clone().unwrap_or_default();
    let generation = device.metadata.generation.unwrap_or_default();
    let (status, publish) = {
        let mut index = ctx.index();
        if matches!(problem, Some(Problem::DuplicateDeviceId(_))) {
            (
                desired_status(&device, None, problem.as_ref(), Timestamp::now()),
                false,
            )
        } else {
            let twin = index.twin_mut(&device_id, device.status.as_ref());
            let publish =
                problem.is_none() && twin.published.as_ref() != Some(&(uid.clone(), generation));
            (
                desired_status(&device, Some(twin), problem.as_ref(), Timestamp::now()),
                publish,
            )
        }
    };

    if publish && ctx.mqtt_up() {
        let now_ms = Timestamp::now().as_millisecond();
        let document =
            DesiredDocument::new(uid.clone(), generation, format_rfc3339(now_ms), desired);
        let payload = ctx.codec.encode(&document);
        let message = Outbound {
            topic: ctx.topics.desired(&device_id),
            payload,
            retain: true,
            request: None,
        };
        ctx.publisher
            .publish(message)
            .await
            .map_err(Error::Publish)?;
        ctx.metrics.published("desired");
        ctx.index()
            .twin_mut(&device_id, device.status.as_ref())
            .published = Some((uid, generation));
        tracing::debug!(device = %name, %namespace, generation, "desired document published");
    }

    if device.status.as_ref() != Some(&status) {
        let was_duplicate = is_duplicate(device.status.as_ref());
        let api: Api<Device> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch =
            json!({ "apiVersion": "kubetwin.io/v1alpha1", "kind": "Device", "status": status });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.status_written("device");
        if let (Some(Problem::DuplicateDeviceId(owner)), false) = (&problem, was_duplicate) {
            let note = format!("deviceId {device_id} is already used by Device {owner}");
            ctx.event(&*device, EventType::Warning, "DuplicateDeviceId", note)
                .await;
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn is_duplicate(status: Option<&kubetwin_api::DeviceStatus>) -> bool {
    status
        .and_then(|s| crate::conditions::find(&s.conditions, "Ready"))
        .is_some_and(|c| c.reason == "DuplicateDeviceId")
}

/// ObjectRef of a Device by namespace and name.
pub fn device_ref(namespace: &str, name: &str) -> ObjectRef<Device> {
    ObjectRef::new(name).within(namespace)
}
