//! RebootRequest controller: sends the reboot request over MQTT, follows the device through
//! the reboot and records each step in status (and as Events on the request and its Device).

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{Controller, controller::Action, events::EventType},
};
use kubetwin_api::{RebootPhase, RebootRequest};
use kubetwin_protocol::{
    MethodRequest, REBOOT_METHOD, RebootParams, RebootState, RebootStatus,
    timestamp::format_rfc3339,
};

use super::Context;
use crate::{
    Error, OperatorConfig, Result,
    budget::Priority,
    mqtt::{Outbound, RequestProperties},
    reboot_status::{Answer, DeviceView, step},
    twin::target_of,
    writer::{Kind, StatusKey},
};

/// The RebootRequest controller (not yet running), with a lean cache.
pub fn controller(client: &Client, config: &OperatorConfig) -> Controller<RebootRequest> {
    super::lean_controller(client, config)
}

/// Carries out one [`step`] of a RebootRequest.
pub async fn reconcile(request: Arc<RebootRequest>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("rebootrequest");
    let namespace = request.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = request.name_any();
    let uid = request.metadata.uid.clone().ok_or(Error::MissingField("metadata.uid"))?;
    let target = target_of(&request);
    let device = ctx.devices.get(&target);
    let now = Timestamp::now();

    // Decide from the newest status: ours may not be in the cache yet.
    let key =
        StatusKey { kind: Kind::RebootRequest, namespace: namespace.clone(), name: name.clone() };
    let newest = ctx.reboot_latest.newest(&key, request.status.as_ref());
    let mut current = (*request).clone();
    current.status = newest;
    let view = device_view(&ctx, device.as_deref(), &uid);
    let step = step(&current, &view, now, ctx.reboot);

    let device_id = device.as_ref().map(|d| d.effective_device_id());
    if step.send
        && let Some(device_id) = &device_id
    {
        send(&ctx, &request, device_id, &uid, now).await?;
    }

    let api: Api<RebootRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let phase = step.status.phase.unwrap_or_default();
    if current.status.as_ref() != Some(&step.status) {
        let priority = if step.transition || phase.is_terminal() {
            Priority::Urgent
        } else {
            Priority::Routine
        };
        ctx.writer.offer(key.clone(), &step.status, request.status.as_ref(), priority);
        ctx.reboot_latest.record(key.clone(), step.status.clone());
    }

    ctx.index().track_request(target, &request, !phase.is_terminal());
    if step.transition {
        ctx.metrics.reboot_entered(&format!("{phase:?}"));
        let reason = step.status.reason.clone().unwrap_or_else(|| format!("{phase:?}"));
        let note = step.status.message.clone().unwrap_or_default();
        let type_ = match phase {
            RebootPhase::Failed | RebootPhase::TimedOut | RebootPhase::Rejected => {
                EventType::Warning
            }
            _ => EventType::Normal,
        };
        tracing::info!(request = %name, %namespace, phase = ?phase, %reason, "reboot progressed");
        ctx.event(&*request, type_, &reason, note.clone());
        if let Some(device) = &device {
            ctx.event(&**device, type_, &format!("Reboot{phase:?}"), format!("{name}: {note}"));
        }
    }
    if phase.is_terminal() {
        ctx.last_sent_map().remove(&uid);
    }

    if step.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..Default::default()
        };
        ctx.writer.forget(&key);
        ctx.reboot_latest.forget(&key);
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(request = %name, %namespace, "deleted after ttlSecondsAfterFinished")
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        return Ok(Action::await_change());
    }
    Ok(step.requeue_after.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// What the reboot logic needs to know about the target device.
fn device_view(
    ctx: &Context,
    device: Option<&kubetwin_api::Device>,
    request_id: &str,
) -> DeviceView {
    let mqtt_connected = ctx.mqtt_up();
    let last_sent = ctx.last_sent_map().get(request_id).copied();
    let Some(device) = device else {
        return DeviceView { exists: false, mqtt_connected, last_sent, ..Default::default() };
    };
    let index = ctx.index();
    let twin = index.twin(&device.effective_device_id());
    let answer = twin.and_then(|t| t.response(request_id)).map(|r| Answer {
        kind: r.status,
        code: i32::from(r.code),
        message: r.message.clone(),
    });
    let reported_rebooting = twin
        .and_then(|t| RebootState::from_reported(&t.reported))
        .is_some_and(|s| s.request_id == request_id && s.status == RebootStatus::Rebooting);
    DeviceView {
        exists: true,
        online: twin.and_then(|t| t.online()),
        boot: twin.and_then(|t| t.boot()),
        answer,
        reported_rebooting,
        last_sent,
        mqtt_connected,
    }
}

/// Publishes the reboot request (MQTT 5: with response topic, correlation data and expiry).
async fn send(
    ctx: &Context,
    request: &RebootRequest,
    device_id: &str,
    uid: &str,
    now: Timestamp,
) -> Result<()> {
    let sent_at =
        request.status.as_ref().and_then(|s| s.sent_at.as_ref()).map(|t| t.0).unwrap_or(now);
    let timeout = Duration::from_secs(request.spec.response_timeout_seconds.max(1) as u64);
    let expires = sent_at.checked_add(timeout).unwrap_or(sent_at);
    let params =
        RebootParams { delay_seconds: request.spec.delay_seconds.max(0) as u32 }.to_params();
    let message = MethodRequest::new(
        uid,
        REBOOT_METHOD,
        params,
        format_rfc3339(now.as_millisecond()),
        format_rfc3339(expires.as_millisecond()),
    );
    let expiry = message.expiry_interval_secs(now.as_millisecond()).unwrap_or(1);
    let outbound = Outbound {
        topic: ctx.topics.request(device_id, REBOOT_METHOD, uid),
        payload: ctx.codec.encode(&message),
        retain: false,
        request: Some(RequestProperties {
            response_topic: ctx.topics.response(device_id, uid),
            correlation_data: uid.as_bytes().to_vec(),
            message_expiry_seconds: expiry,
        }),
    };
    ctx.publisher.publish(outbound).await.map_err(Error::Publish)?;
    ctx.metrics.published("request");
    ctx.last_sent_map().insert(uid.to_string(), now);
    tracing::debug!(device = device_id, request = uid, "reboot request published");
    Ok(())
}
