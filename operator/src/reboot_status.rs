//! What to do with a RebootRequest: a pure function of the object, what is known about its
//! device, and the time. The controller carries out the returned [`RebootStep`].

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kubetwin_api::{
    MethodResponse, RebootPhase, RebootRequest, RebootRequestStatus,
    condition::{FALSE, TRUE, UNKNOWN, reboot as types},
};

use crate::conditions::{ConditionUpdate, merge};
pub use kubetwin_protocol::ResponseStatus;

/// How often a request without an answer is published again (devices ignore repeats).
pub const RESEND_INTERVAL: Duration = Duration::from_secs(5);

/// The latest answer of the device to this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What the device said.
    pub kind: ResponseStatus,
    /// HTTP-like code.
    pub code: i32,
    /// Message of the device.
    pub message: String,
}

/// What the operator knows about the target device right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// The Device object exists.
    pub exists: bool,
    /// The device is online (`None`: no presence seen).
    pub online: Option<bool>,
    /// The device's current boot counter, from its presence.
    pub boot: Option<i64>,
    /// The device's latest answer to this request.
    pub answer: Option<Answer>,
    /// The device reported that it is rebooting for this request.
    pub reported_rebooting: bool,
    /// When this operator process last published the request (`None`: not since it started).
    pub last_sent: Option<Timestamp>,
    /// The operator's MQTT connection is up.
    pub mqtt_connected: bool,
}

/// Settings of the reboot logic that are not part of the API object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebootSettings {
    /// How long a device that accepted may stay away (after the request's delay) before the
    /// request times out with reason `NoReturn`.
    pub return_timeout: Duration,
}

impl Default for RebootSettings {
    fn default() -> Self {
        Self { return_timeout: Duration::from_secs(300) }
    }
}

/// Result of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct RebootStep {
    /// The status to write (equal to the current one when nothing changed).
    pub status: RebootRequestStatus,
    /// Publish the request to the device now.
    pub send: bool,
    /// Look again after this long, at the latest.
    pub requeue_after: Option<Duration>,
    /// Delete the object: its TTL after finishing ran out.
    pub delete: bool,
    /// The phase changed (for an Event).
    pub transition: bool,
}

/// Where a request goes next, and why.
struct Outcome {
    phase: RebootPhase,
    reason: &'static str,
    message: String,
}

impl Outcome {
    fn new(phase: RebootPhase, reason: &'static str, message: String) -> Self {
        Self { phase, reason, message }
    }
}

/// Decides the next step of `request` at time `now`.
pub fn step(
    request: &RebootRequest,
    device: &DeviceView,
    now: Timestamp,
    settings: RebootSettings,
) -> RebootStep {
    let current = request.status.clone().unwrap_or_default();
    let phase = current.phase.unwrap_or_default();
    if current.phase.is_some_and(RebootPhase::is_terminal) {
        return finished(request, current, now);
    }

    let mut next = current.clone();
    next.request_id = request.metadata.uid.clone();
    next.observed_generation = request.metadata.generation;
    let mut send = false;
    let requeue;
    let outcome = match phase {
        RebootPhase::Pending => {
            let (outcome, wait) = pending(request, device, now);
            if outcome.phase == RebootPhase::Sent {
                send = true;
                next.sent_at = Some(Time(now));
                next.boot_before = device.boot;
            }
            requeue = wait;
            outcome
        }
        _ => {
            if let Some(answer) = &device.answer {
                next.response =
                    Some(MethodResponse { code: answer.code, message: answer.message.clone() });
            }
            let (outcome, wait, resend) = in_flight(request, &current, device, now, settings);
            send = resend;
            requeue = wait;
            if outcome.phase == RebootPhase::Succeeded {
                next.boot_after = device.boot;
            }
            let acknowledged = device.answer.is_some() || phase != RebootPhase::Sent;
            let past_acceptance = matches!(
                outcome.phase,
                RebootPhase::Accepted | RebootPhase::Rebooting | RebootPhase::Succeeded
            );
            if past_acceptance && acknowledged && next.accepted_at.is_none() {
                next.accepted_at = Some(Time(now));
            }
            outcome
        }
    };

    let transition = current.phase != Some(outcome.phase);
    next.phase = Some(outcome.phase);
    next.reason = Some(outcome.reason.to_string());
    next.message = Some(outcome.message);
    let mut requeue_after = requeue;
    if outcome.phase.is_terminal() {
        send = false;
        next.completed_at = Some(Time(now));
        let started =
            next.sent_at.as_ref().or(request.metadata.creation_timestamp.as_ref()).map(|t| t.0);
        next.duration =
            started.map(|start| human_duration(now.duration_since(start).unsigned_abs()));
        requeue_after = request
            .spec
            .ttl_seconds_after_finished
            .map(|ttl| Duration::from_secs(ttl.max(0) as u64));
    }
    next.conditions =
        merge(&current.conditions, conditions_for(&next), request.metadata.generation, now);
    RebootStep { status: next, send, requeue_after, delete: false, transition }
}

/// Pending: send once the device is online, or give up after `connectTimeoutSeconds`.
fn pending(
    request: &RebootRequest,
    device: &DeviceView,
    now: Timestamp,
) -> (Outcome, Option<Duration>) {
    let spec = &request.spec;
    let name = &spec.device_name;
    if device.exists && device.online == Some(true) && device.mqtt_connected {
        let outcome =
            Outcome::new(RebootPhase::Sent, "Sent", format!("Reboot request sent to {name}"));
        return (outcome, Some(RESEND_INTERVAL));
    }
    if device.exists && device.online == Some(true) {
        // Only the operator's own broker connection is missing: never blame the device.
        let outcome = Outcome::new(
            RebootPhase::Pending,
            "BrokerUnavailable",
            "Waiting for the operator's MQTT connection".into(),
        );
        return (outcome, Some(RESEND_INTERVAL));
    }
    let created = request.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let deadline = add_seconds(created, spec.connect_timeout_seconds);
    let waited = spec.connect_timeout_seconds;
    if now >= deadline {
        let outcome = if !device.exists {
            Outcome::new(
                RebootPhase::TimedOut,
                "DeviceNotFound",
                format!("Device {name} does not exist"),
            )
        } else if waited == 0 {
            Outcome::new(
                RebootPhase::TimedOut,
                "DeviceNotOnline",
                format!("Device {name} is not online and connectTimeoutSeconds is 0"),
            )
        } else {
            Outcome::new(
                RebootPhase::TimedOut,
                "DeviceNotOnline",
                format!("Device {name} did not come online within {waited}s"),
            )
        };
        return (outcome, None);
    }
    let outcome = if !device.exists {
        Outcome::new(
            RebootPhase::Pending,
            "DeviceNotFound",
            format!("Waiting up to {waited}s for Device {name} to exist"),
        )
    } else {
        Outcome::new(
            RebootPhase::Pending,
            "WaitingForDevice",
            format!("Waiting up to {waited}s for {name} to come online"),
        )
    };
    (outcome, Some(until(now, deadline)))
}

/// Sent, Accepted, Rebooting: follow the device until it is back, or time out.
fn in_flight(
    request: &RebootRequest,
    current: &RebootRequestStatus,
    device: &DeviceView,
    now: Timestamp,
    settings: RebootSettings,
) -> (Outcome, Option<Duration>, bool) {
    let spec = &request.spec;
    let name = &spec.device_name;
    let phase = current.phase.unwrap_or_default();
    let answer = device.answer.as_ref();
    let detail = |a: &Answer| {
        if a.message.is_empty() { format!("code {}", a.code) } else { a.message.clone() }
    };
    match answer.map(|a| a.kind) {
        Some(ResponseStatus::Rejected) => {
            let a = answer.map(detail).unwrap_or_default();
            return (
                Outcome::new(
                    RebootPhase::Rejected,
                    "DeviceRejected",
                    format!("{name} rejected the reboot: {a}"),
                ),
                None,
                false,
            );
        }
        Some(ResponseStatus::Failed) => {
            let a = answer.map(detail).unwrap_or_default();
            return (
                Outcome::new(
                    RebootPhase::Failed,
                    "DeviceFailed",
                    format!("{name} failed to reboot: {a}"),
                ),
                None,
                false,
            );
        }
        Some(ResponseStatus::Expired) => {
            let outcome = Outcome::new(
                RebootPhase::TimedOut,
                "Expired",
                format!("The request reached {name} after it expired"),
            );
            return (outcome, None, false);
        }
        Some(ResponseStatus::Succeeded) => {
            return (
                Outcome::new(
                    RebootPhase::Succeeded,
                    "Rebooted",
                    format!("{name} rebooted and is back online"),
                ),
                None,
                false,
            );
        }
        _ => {}
    }
    let accepted = phase != RebootPhase::Sent || answer.is_some();
    let came_back = matches!(
        (device.online, device.boot, current.boot_before),
        (Some(true), Some(boot), Some(before)) if boot > before
    );
    if accepted && came_back {
        return (
            Outcome::new(
                RebootPhase::Succeeded,
                "Rebooted",
                format!("{name} rebooted and is back online"),
            ),
            None,
            false,
        );
    }
    if !accepted {
        let sent_at = current.sent_at.as_ref().map(|t| t.0).unwrap_or(now);
        let deadline = add_seconds(sent_at, spec.response_timeout_seconds);
        if now >= deadline {
            let message =
                format!("{name} did not answer within {}s", spec.response_timeout_seconds);
            return (Outcome::new(RebootPhase::TimedOut, "NoResponse", message), None, false);
        }
        let resend = device.mqtt_connected
            && device.last_sent.is_none_or(|last| now >= add_duration(last, RESEND_INTERVAL));
        let outcome =
            Outcome::new(RebootPhase::Sent, "Sent", format!("Reboot request sent to {name}"));
        return (outcome, Some(until(now, deadline).min(RESEND_INTERVAL)), resend);
    }
    let accepted_at = current.accepted_at.as_ref().map(|t| t.0).unwrap_or(now);
    let away = settings.return_timeout + Duration::from_secs(spec.delay_seconds.max(0) as u64);
    let deadline = add_duration(accepted_at, away);
    if now >= deadline {
        let message =
            format!("{name} did not come back within {}s after accepting", away.as_secs());
        return (Outcome::new(RebootPhase::TimedOut, "NoReturn", message), None, false);
    }
    let going_down = phase == RebootPhase::Rebooting
        || device.online == Some(false)
        || device.reported_rebooting;
    let outcome = if going_down {
        Outcome::new(RebootPhase::Rebooting, "Rebooting", format!("{name} is rebooting"))
    } else {
        Outcome::new(RebootPhase::Accepted, "Accepted", format!("{name} accepted the reboot"))
    };
    (outcome, Some(until(now, deadline)), false)
}

fn conditions_for(status: &RebootRequestStatus) -> Vec<ConditionUpdate> {
    let phase = status.phase.unwrap_or_default();
    let reason = status.reason.clone().unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    let (complete, succeeded, failed) = match phase {
        RebootPhase::Succeeded => (TRUE, TRUE, FALSE),
        RebootPhase::Failed | RebootPhase::TimedOut | RebootPhase::Rejected => (TRUE, FALSE, TRUE),
        _ => (FALSE, UNKNOWN, FALSE),
    };
    vec![
        ConditionUpdate {
            type_: types::COMPLETE,
            status: complete,
            reason: reason.clone(),
            message: message.clone(),
        },
        ConditionUpdate {
            type_: types::SUCCEEDED,
            status: succeeded,
            reason: reason.clone(),
            message: message.clone(),
        },
        ConditionUpdate { type_: types::FAILED, status: failed, reason, message },
    ]
}

fn finished(request: &RebootRequest, current: RebootRequestStatus, now: Timestamp) -> RebootStep {
    let mut step = RebootStep {
        status: current,
        send: false,
        requeue_after: None,
        delete: false,
        transition: false,
    };
    if let (Some(ttl), Some(completed)) =
        (request.spec.ttl_seconds_after_finished, step.status.completed_at.as_ref())
    {
        let due = add_seconds(completed.0, ttl);
        if now >= due {
            step.delete = true;
        } else {
            step.requeue_after = Some(until(now, due));
        }
    }
    step
}

fn add_seconds(t: Timestamp, seconds: i32) -> Timestamp {
    add_duration(t, Duration::from_secs(seconds.max(0) as u64))
}

fn add_duration(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    then.duration_since(now).unsigned_abs().max(Duration::from_millis(100))
}

/// Formats a duration for people: `850ms`, `14s`, `2m3s`, `1h2m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests;
