//! Device controller: publishes the retained desired document when it changes and keeps each
//! Device's status (reported state, connection, conditions) current.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Client, ResourceExt,
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef},
};
use kubetwin_api::{Device, DeviceStatus};
use kubetwin_protocol::{DesiredDocument, timestamp::format_rfc3339};

use super::Context;
use crate::{
    Error, OperatorConfig, Result,
    budget::{Offer, Priority},
    device_status::{Problem, desired_status},
    mqtt::Outbound,
    twin::Claim,
    writer::{Kind, StatusKey},
};

/// Re-check interval when nothing else triggers a reconcile.
const RESYNC: Duration = Duration::from_secs(600);

/// The Device controller (not yet running), with a lean cache.
pub fn controller(client: &Client, config: &OperatorConfig) -> Controller<Device> {
    super::lean_controller(client, config)
}

/// Publishes desired properties when needed and writes the status computed by
/// [`desired_status`] when it differs from the current one.
pub async fn reconcile(device: Arc<Device>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("device");
    let namespace = device.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
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
            (desired_status(&device, None, problem.as_ref(), Timestamp::now()), false)
        } else {
            let twin = index.twin_mut(&device_id, device.status.as_ref());
            let publish =
                problem.is_none() && twin.published.as_ref() != Some(&(uid.clone(), generation));
            (desired_status(&device, Some(twin), problem.as_ref(), Timestamp::now()), publish)
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
        ctx.publisher.publish(message).await.map_err(Error::Publish)?;
        ctx.metrics.published("desired");
        ctx.index().twin_mut(&device_id, device.status.as_ref()).published =
            Some((uid, generation));
        tracing::debug!(device = %name, %namespace, generation, "desired document published");
    }

    let key = StatusKey { kind: Kind::Device, namespace: namespace.clone(), name: name.clone() };
    let priority = priority_of(device.status.as_ref(), &status);
    let offer = ctx.writer.offer(key, &status, device.status.as_ref(), priority);
    if offer != Offer::Unchanged
        && let Some(Problem::DuplicateDeviceId(owner)) = &problem
        && !is_duplicate(device.status.as_ref())
    {
        let note = format!("deviceId {device_id} is already used by Device {owner}");
        ctx.event(&*device, EventType::Warning, "DuplicateDeviceId", note);
    }
    Ok(Action::requeue(RESYNC))
}

/// Connection and readiness changes are written first; reported properties can wait.
fn priority_of(current: Option<&DeviceStatus>, wanted: &DeviceStatus) -> Priority {
    let state = |s: Option<&DeviceStatus>| s.and_then(|s| s.connection.as_ref()).map(|c| c.state);
    let ready = |s: Option<&DeviceStatus>| {
        s.and_then(|s| crate::conditions::find(&s.conditions, "Ready"))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if current.is_none()
        || state(current) != state(Some(wanted))
        || ready(current) != ready(Some(wanted))
    {
        Priority::Urgent
    } else {
        Priority::Routine
    }
}

fn is_duplicate(status: Option<&DeviceStatus>) -> bool {
    status
        .and_then(|s| crate::conditions::find(&s.conditions, "Ready"))
        .is_some_and(|c| c.reason == "DuplicateDeviceId")
}

/// ObjectRef of a Device by namespace and name.
pub fn device_ref(namespace: &str, name: &str) -> ObjectRef<Device> {
    ObjectRef::new(name).within(namespace)
}
