//! Handles what arrives over MQTT: decodes, checks order against the fleet index, and
//! triggers the reconciles that turn accepted messages into status. Bad input is dropped,
//! counted and logged at most once a minute per device; it never changes status.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kubetwin_protocol::{Admission, DecodeError, Inbound};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{controller::Context, mqtt::MqttEvent, twin::DeviceTwin};

/// How often a dropped message is logged per device.
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most devices remembered for log rate limiting.
const LOG_MEMORY: usize = 10_000;

/// Processes MQTT events until the connection task ends.
pub async fn run(ctx: Arc<Context>, mut events: mpsc::Receiver<MqttEvent>) {
    // Messages wait in the channel until the Device cache is complete, so retained presence
    // delivered at start is matched against every existing Device.
    if !crate::controller::wait_synced(&ctx.devices).await {
        return;
    }
    let mut log_limiter = LogLimiter::default();
    while let Some(event) = events.recv().await {
        match event {
            MqttEvent::Connected { session_present } => {
                if session_present {
                    // The broker kept our session, so it kept the retained desired documents.
                    info!("MQTT session resumed");
                } else {
                    info!("new MQTT session: republishing desired documents");
                    ctx.index().forget_published();
                }
                for device in ctx.devices.state() {
                    let _ = ctx.device_trigger.unbounded_send(ObjectRef::from_obj(&*device));
                }
                for request in ctx.requests.state() {
                    let _ = ctx.request_trigger.unbounded_send(ObjectRef::from_obj(&*request));
                }
            }
            MqttEvent::Disconnected(reason) => debug!(%reason, "MQTT session down"),
            MqttEvent::Message { topic, payload, retained } => {
                handle(&ctx, &topic, &payload, retained, &mut log_limiter)
            }
        }
    }
}

/// Applies one message to the index and triggers reconciles when it changed something.
pub fn handle(ctx: &Context, topic: &str, payload: &[u8], retained: bool, log: &mut LogLimiter) {
    let inbound = match ctx.codec.decode_inbound(&ctx.topics, topic, payload) {
        Ok(inbound) => inbound,
        Err(error) => {
            let device =
                ctx.topics.parse(topic).map(|t| t.device_id().to_string()).unwrap_or_default();
            reject(ctx, log, &device, topic, &error);
            return;
        }
    };
    let device_id = inbound.device_id().to_string();
    let now = Timestamp::now();
    let Some((owner, status)) = find_owner(ctx, &device_id) else {
        // No Device has this id (yet). Nothing changes in the API; the latest state is kept
        // (bounded) so that a Device created a moment later starts from it.
        if let Some(twin) = ctx.index().unclaimed_twin_mut(&device_id) {
            apply(twin, &inbound, retained, now);
        }
        let error = DecodeError::UnknownDevice(device_id.clone());
        reject(ctx, log, &device_id, topic, &error);
        return;
    };
    let mut index = ctx.index();
    let twin = index.twin_mut(&device_id, status.as_ref());
    let (kind, admission) = apply(twin, &inbound, retained, now);
    if let Some(reason) = admission.drop_reason() {
        ctx.metrics.dropped(reason);
        debug!(device = %device_id, kind, reason, "message dropped");
        return;
    }
    ctx.metrics.received(kind);
    let requests = index.requests_for(&owner);
    drop(index);
    let _ = ctx.device_trigger.unbounded_send(owner);
    for request in requests {
        let _ = ctx.request_trigger.unbounded_send(request);
    }
}

/// Applies a decoded message to a twin; returns its kind and whether it was taken.
fn apply(
    twin: &mut DeviceTwin,
    inbound: &Inbound,
    retained: bool,
    now: Timestamp,
) -> (&'static str, Admission) {
    match inbound {
        Inbound::Reported { message, .. } => ("reported", twin.apply_reported(message, now)),
        Inbound::Presence { message, .. } => {
            ("presence", twin.apply_presence(message, now, retained))
        }
        Inbound::Response { message, .. } => ("response", twin.apply_response(message)),
        Inbound::Get { .. } => {
            twin.published = None;
            ("get", Admission::Accept)
        }
        Inbound::Desired { .. } | Inbound::Request { .. } => ("operator", Admission::Stale),
    }
}

/// The Device that owns `device_id` and its current status; claims it from the cache when
/// the Device has not been reconciled yet.
fn find_owner(
    ctx: &Context,
    device_id: &str,
) -> Option<(ObjectRef<kubetwin_api::Device>, Option<kubetwin_api::DeviceStatus>)> {
    let known = ctx.index().owner(device_id).cloned();
    if let Some(owner) = known {
        if let Some(device) = ctx.devices.get(&owner) {
            return Some((owner, device.status.clone()));
        }
        ctx.index().forget(&owner);
    }
    let device = ctx.devices.find(|d| d.effective_device_id() == device_id)?;
    let devices = ctx.devices.clone();
    ctx.index().claim(&device, |o| devices.get(o).is_some());
    let owner = ctx.index().owner(device_id).cloned()?;
    let status = ctx.devices.get(&owner).and_then(|d| d.status.clone());
    Some((owner, status))
}

fn reject(ctx: &Context, log: &mut LogLimiter, device: &str, topic: &str, error: &DecodeError) {
    ctx.metrics.dropped(error.reason());
    if log.should_log(device) {
        warn!(device, topic, reason = error.reason(), %error, "MQTT message dropped (logged once a minute per device)");
    }
}

/// Logs a device's dropped messages at most once per [`LOG_INTERVAL`].
#[derive(Default)]
pub struct LogLimiter {
    last: HashMap<String, Instant>,
}

impl LogLimiter {
    /// Whether to log a drop for `device` now.
    pub fn should_log(&mut self, device: &str) -> bool {
        let now = Instant::now();
        if self.last.len() > LOG_MEMORY {
            self.last.retain(|_, t| now.duration_since(*t) < LOG_INTERVAL);
        }
        match self.last.get(device) {
            Some(t) if now.duration_since(*t) < LOG_INTERVAL => false,
            _ => {
                self.last.insert(device.to_string(), now);
                true
            }
        }
    }
}
