//! The method engine: what to do next with a request, as a pure function of the request, what
//! is known about its device, the time and the settings. It returns [`Effect`]s; the
//! controller's executor carries them out, the same split as the simulator's device
//! (`device-sim/src/device.rs` returns effects, `runner.rs` executes them).
//!
//! Every method kind runs through [`step`]; what differs per kind is a [`MethodKind`].

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::runtime::events::EventType;
use kubetwin_api::{
    RecordedResponse,
    condition::{ConditionStatus, RequestCondition, RequestReason},
};
use kubetwin_protocol::ResponseStatus;
use serde_json::{Map, Value};

use super::kind::{Confirmation, MethodKind};
use crate::{
    fleet::Answer,
    k8s::{
        conditions::{ConditionUpdate, merge, with_one_reason},
        status::Priority,
    },
};

/// How often a request without an answer is published again (devices ignore repeats).
pub const RESEND_INTERVAL: Duration = Duration::from_secs(5);

/// How long the status `Sent` waits before it is written. The request is published first
/// and a device usually answers well within this, so one write carries the answer instead
/// of two writes in a row (the second waiting for the first). Safe without the record: the
/// request id is the object's uid, so a successor that finds no `Sent` publishes the same
/// request again and the device deduplicates it (and a restart is judged from the boot of the
/// device's first answer, which the repeat carries).
pub const SENT_STATUS_HOLD: Duration = Duration::from_secs(1);

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not sent yet.
    Pending,
    /// Published; no answer yet.
    Sent,
    /// The device accepted it.
    Accepted,
    /// The device is executing it.
    InProgress,
    /// The device is restarting for it.
    Rebooting,
    /// Done. Terminal.
    Succeeded,
    /// The device reported a failure. Terminal.
    Failed,
    /// A deadline passed. Terminal.
    TimedOut,
    /// Refused, by the device or before sending. Terminal.
    Rejected,
}

impl Phase {
    /// Whether the phase never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::TimedOut | Self::Rejected)
    }

    /// The phase's name (CamelCase), as in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Sent => "Sent",
            Self::Accepted => "Accepted",
            Self::InProgress => "InProgress",
            Self::Rebooting => "Rebooting",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimedOut => "TimedOut",
            Self::Rejected => "Rejected",
        }
    }
}

/// The status of a request, whatever its resource kind (each kind converts to and from it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The generation this status was computed for.
    pub observed_generation: Option<i64>,
    /// The phase (`None`: no status yet).
    pub phase: Option<Phase>,
    /// Id of the request on MQTT.
    pub request_id: Option<String>,
    /// When it was first published.
    pub sent_at: Option<Timestamp>,
    /// When the device accepted it.
    pub accepted_at: Option<Timestamp>,
    /// When it reached a terminal phase.
    pub completed_at: Option<Timestamp>,
    /// From sending to the end, for people.
    pub duration: Option<String>,
    /// The device's boot counter when the request was sent.
    pub boot_before: Option<u64>,
    /// The device's boot counter when it came back.
    pub boot_after: Option<u64>,
    /// The device's latest answer.
    pub response: Option<RecordedResponse>,
    /// Percent done, from the device's InProgress answers.
    pub percent: Option<u8>,
    /// The device's message with its latest InProgress answer.
    pub progress_message: Option<String>,
    /// The method's result, from the device's final answer.
    pub payload: Option<Value>,
    /// The device's result was too large to show.
    pub payload_truncated: bool,
    /// Why it is in its phase (a [`RequestReason`]).
    pub reason: Option<String>,
    /// What happened last, for people.
    pub message: Option<String>,
    /// Complete, Succeeded and Failed.
    pub conditions: Vec<Condition>,
}

/// What the engine needs of a request object.
pub struct RequestView<'a> {
    /// Name of the target Device (same namespace).
    pub device_name: &'a str,
    /// The request id (the object's uid).
    pub uid: &'a str,
    /// The object's generation.
    pub generation: Option<i64>,
    /// When the object was created.
    pub created: Option<Timestamp>,
    /// How long to wait for the device's first answer.
    pub response_timeout: Duration,
    /// How long to wait for an offline device before sending.
    pub connect_timeout: Duration,
    /// How long after finishing the object is deleted (`None`: never).
    pub ttl_after_finished: Option<Duration>,
    /// The method.
    pub kind: &'a dyn MethodKind,
    /// The newest status (default when there is none).
    pub progress: Progress,
    /// The phase of the status the API server holds (the newest status may not be written
    /// yet): a finished request is deleted only once its terminal status is persisted.
    pub persisted_phase: Option<Phase>,
    /// When this process first saw the request (by its own clock). Every deadline counts from
    /// no earlier than this, so a clock that differs between processes, or from the API
    /// server's, can delay a deadline but never bring it forward.
    pub first_seen: Option<Timestamp>,
}

impl RequestView<'_> {
    /// `t` as the start of a deadline: not before this process first saw the request.
    fn anchor(&self, t: Timestamp) -> Timestamp {
        self.first_seen.map_or(t, |seen| t.max(seen))
    }
}

/// What the operator knows about the target device right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// The Device object exists.
    pub exists: bool,
    /// The Device does not own its device id: an older Device does.
    pub id_conflict: bool,
    /// The device is online (`None`: no presence seen).
    pub online: Option<bool>,
    /// The device's current boot counter, from its presence.
    pub boot: Option<u64>,
    /// The device's latest answer to this request.
    pub answer: Option<Answer>,
    /// The device reported that it is restarting for this request.
    pub reported_rebooting: bool,
    /// When this operator process last published the request (`None`: not since it started).
    pub last_sent: Option<Timestamp>,
    /// The operator's MQTT connection is up.
    pub mqtt_connected: bool,
    /// Methods the device lists as supported (empty: it did not say).
    pub methods: Vec<String>,
    /// A disruption budget has no room for this device now (for people); only filled for
    /// disruptive methods.
    pub budget_exhausted: Option<String>,
}

/// Settings of the engine that are not part of the API objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a device that accepted a restart may stay away (plus the kind's extra time)
    /// before the request times out with reason `NoReturn`.
    pub return_timeout: Duration,
    /// How long a disruptive request waits for room in a disruption budget before it times
    /// out with reason `DisruptionBudgetExhausted` (counted from its creation).
    pub budget_wait: Duration,
}

/// Default of [`Settings::budget_wait`].
pub const DEFAULT_BUDGET_WAIT: Duration = Duration::from_secs(1800);

/// How often a request held back by a disruption budget looks for room again.
pub const BUDGET_RECHECK: Duration = Duration::from_secs(1);

impl Default for Settings {
    fn default() -> Self {
        Self { return_timeout: Duration::from_secs(300), budget_wait: DEFAULT_BUDGET_WAIT }
    }
}

/// What an Event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The request itself.
    Request,
    /// The target Device (with the request as the related object).
    Device,
}

/// The request message to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Method name.
    pub method: String,
    /// Parameters.
    pub params: Map<String, Value>,
    /// After this instant the device must not execute it.
    pub expires_at: Timestamp,
}

/// Something the executor must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Publish the request to the device.
    Publish(Call),
    /// Offer this status to the status writer.
    OfferStatus {
        /// The status (boxed: it is much larger than the other effects).
        progress: Box<Progress>,
        /// How urgent the write is.
        priority: Priority,
        /// Write it only after this long unless a newer urgent status replaces it first.
        hold: Option<Duration>,
    },
    /// Record a Kubernetes Event.
    Event {
        /// What it is about.
        subject: Subject,
        /// Normal or Warning.
        type_: EventType,
        /// CamelCase reason.
        reason: String,
        /// Text for people.
        note: String,
    },
    /// Delete the request object (its TTL after finishing ran out).
    Delete,
    /// Look again after this long, at the latest.
    Requeue(Duration),
}

/// Where a request goes next, and why.
struct Outcome {
    phase: Phase,
    reason: RequestReason,
    message: String,
}

fn outcome(phase: Phase, reason: RequestReason, message: String) -> Outcome {
    Outcome { phase, reason, message }
}

/// Decides the next step of `request` at time `now`.
pub fn step(
    request: &RequestView<'_>,
    device: &DeviceView,
    now: Timestamp,
    settings: &Settings,
) -> Vec<Effect> {
    let current = &request.progress;
    if current.phase.is_some_and(Phase::is_terminal) {
        return finished(request, now);
    }
    let phase = current.phase.unwrap_or(Phase::Pending);
    let mut next = current.clone();
    next.request_id = Some(request.uid.to_string());
    next.observed_generation = request.generation;
    let mut send = false;
    let requeue;
    let outcome = match phase {
        Phase::Pending => {
            let (outcome, wait) = pending(request, device, now, settings);
            if outcome.phase == Phase::Sent {
                send = true;
                next.sent_at = Some(now);
                next.boot_before = device.boot;
            }
            requeue = wait;
            outcome
        }
        _ => {
            if let Some(answer) = &device.answer {
                next.response = Some(RecordedResponse::from(answer));
                if answer.status == ResponseStatus::InProgress {
                    next.percent = answer.progress.or(next.percent);
                    next.progress_message = Some(answer.message.clone()).filter(|m| !m.is_empty());
                }
                if answer.status.is_terminal() {
                    next.payload.clone_from(&answer.payload);
                    next.payload_truncated = answer.payload_truncated;
                }
            }
            let (outcome, wait, resend) = in_flight(request, current, device, now, settings);
            send = resend;
            requeue = wait;
            if outcome.phase == Phase::Succeeded {
                next.boot_after = device.boot;
            }
            let acknowledged = device.answer.is_some() || phase != Phase::Sent;
            let past_acceptance = matches!(
                outcome.phase,
                Phase::Accepted | Phase::InProgress | Phase::Rebooting | Phase::Succeeded
            );
            if past_acceptance && acknowledged && next.accepted_at.is_none() {
                next.accepted_at = Some(now);
            }
            outcome
        }
    };

    // A method that reported progress shows it complete once it succeeded.
    if outcome.phase == Phase::Succeeded && next.percent.is_some() {
        next.percent = Some(100);
        next.progress_message = None;
    }
    let transition = current.phase != Some(outcome.phase);
    next.phase = Some(outcome.phase);
    next.reason = Some(outcome.reason.as_str().to_string());
    next.message = Some(outcome.message.clone());
    let mut requeue_after = requeue;
    if outcome.phase.is_terminal() {
        send = false;
        next.completed_at = Some(now);
        let started = next.sent_at.or(request.created);
        next.duration =
            started.map(|start| human_duration(now.duration_since(start).unsigned_abs()));
        requeue_after = request.ttl_after_finished;
    }
    next.conditions = merge(
        &current.conditions,
        conditions_for(outcome.phase, outcome.reason, &outcome.message),
        request.generation,
        now,
    );

    let mut effects = Vec::new();
    if send {
        let sent_at = next.sent_at.unwrap_or(now);
        effects.push(Effect::Publish(Call {
            method: request.kind.method().to_string(),
            params: request.kind.params(),
            expires_at: add_duration(sent_at, request.response_timeout),
        }));
    }
    let priority = if transition || outcome.phase.is_terminal() {
        Priority::Urgent
    } else {
        Priority::Routine
    };
    let hold = (transition && outcome.phase == Phase::Sent).then_some(SENT_STATUS_HOLD);
    effects.push(Effect::OfferStatus { progress: Box::new(next), priority, hold });
    if transition {
        let type_ = match outcome.phase {
            Phase::Failed | Phase::TimedOut | Phase::Rejected => EventType::Warning,
            _ => EventType::Normal,
        };
        effects.push(Effect::Event {
            subject: Subject::Request,
            type_,
            reason: outcome.reason.as_str().to_string(),
            note: outcome.message.clone(),
        });
        let prefix = request.kind.wording().event_prefix;
        effects.push(Effect::Event {
            subject: Subject::Device,
            type_,
            reason: format!("{prefix}{}", outcome.phase.as_str()),
            note: outcome.message,
        });
    }
    if let Some(wait) = requeue_after {
        effects.push(Effect::Requeue(wait));
    }
    effects
}

/// Pending: send once the device is online, or give up after the connect timeout.
fn pending(
    request: &RequestView<'_>,
    device: &DeviceView,
    now: Timestamp,
    settings: &Settings,
) -> (Outcome, Option<Duration>) {
    let name = request.device_name;
    let wording = request.kind.wording();
    if device.exists && device.id_conflict {
        let message = format!(
            "Device {name} does not own its device id (an older Device does): nothing is sent"
        );
        return (outcome(Phase::Rejected, RequestReason::DeviceIdConflict, message), None);
    }
    if let Some(refusal) = request.kind.refusal() {
        return (outcome(Phase::Rejected, refusal.reason, refusal.message), None);
    }
    let method = request.kind.method();
    if device.exists && !device.methods.is_empty() && !device.methods.iter().any(|m| m == method) {
        let message = format!(
            "{name} does not support the method {method} (it lists {}): nothing is sent",
            device.methods.join(", ")
        );
        return (outcome(Phase::Rejected, RequestReason::MethodNotSupported, message), None);
    }
    if device.exists
        && device.online == Some(true)
        && device.mqtt_connected
        && let Some(exhausted) = &device.budget_exhausted
    {
        let created = request.anchor(request.created.unwrap_or(now));
        let deadline = add_duration(created, settings.budget_wait);
        let waited = settings.budget_wait.as_secs();
        if now >= deadline {
            let message = format!("{exhausted}; waited {waited}s: nothing was sent");
            return (
                outcome(Phase::TimedOut, RequestReason::DisruptionBudgetExhausted, message),
                None,
            );
        }
        let message = format!("{exhausted}; waiting up to {waited}s for room");
        return (
            outcome(Phase::Pending, RequestReason::DisruptionBudgetExhausted, message),
            Some(until(now, deadline).min(BUDGET_RECHECK)),
        );
    }
    if device.exists && device.online == Some(true) && device.mqtt_connected {
        let message = format!("{} sent to {name}", wording.request);
        return (outcome(Phase::Sent, RequestReason::Sent, message), Some(RESEND_INTERVAL));
    }
    if device.exists && device.online == Some(true) {
        // Only the operator's own broker connection is missing: never blame the device, but
        // do not wait forever either: as long as the request would wait for an answer.
        let created = request.anchor(request.created.unwrap_or(now));
        let patience = request.connect_timeout.max(request.response_timeout);
        let deadline = add_duration(created, patience);
        if now >= deadline {
            let message = format!(
                "The operator had no MQTT connection for {}s; nothing was sent",
                patience.as_secs()
            );
            return (outcome(Phase::TimedOut, RequestReason::BrokerUnavailable, message), None);
        }
        let message = "Waiting for the operator's MQTT connection".to_string();
        return (
            outcome(Phase::Pending, RequestReason::BrokerUnavailable, message),
            Some(until(now, deadline).min(RESEND_INTERVAL)),
        );
    }
    let created = request.anchor(request.created.unwrap_or(now));
    let deadline = add_duration(created, request.connect_timeout);
    let waited = request.connect_timeout.as_secs();
    if now >= deadline {
        // Without a connect timeout nothing timed out: the request fails at once. With one,
        // the wait for the device ran out.
        let phase = if waited == 0 { Phase::Failed } else { Phase::TimedOut };
        let result = if !device.exists {
            outcome(phase, RequestReason::DeviceNotFound, format!("Device {name} does not exist"))
        } else if waited == 0 {
            outcome(
                Phase::Failed,
                RequestReason::DeviceNotOnline,
                format!("Device {name} is not online and connectTimeoutSeconds is 0"),
            )
        } else {
            outcome(
                Phase::TimedOut,
                RequestReason::DeviceNotOnline,
                format!("Device {name} did not come online within {waited}s"),
            )
        };
        return (result, None);
    }
    let result = if !device.exists {
        outcome(
            Phase::Pending,
            RequestReason::DeviceNotFound,
            format!("Waiting up to {waited}s for Device {name} to exist"),
        )
    } else {
        outcome(
            Phase::Pending,
            RequestReason::WaitingForDevice,
            format!("Waiting up to {waited}s for {name} to come online"),
        )
    };
    (result, Some(until(now, deadline)))
}

/// Sent and later: follow the device until it confirms success, or a deadline passes.
fn in_flight(
    request: &RequestView<'_>,
    current: &Progress,
    device: &DeviceView,
    now: Timestamp,
    settings: &Settings,
) -> (Outcome, Option<Duration>, bool) {
    let name = request.device_name;
    let wording = request.kind.wording();
    let phase = current.phase.unwrap_or(Phase::Pending);
    if !device.exists {
        // Deleted while in flight: nothing about the device can be seen any more, so waiting
        // for a deadline would only delay the same end.
        let message = format!(
            "Device {name} was deleted while the request was in flight; whether the device executed it is unknown"
        );
        return (outcome(Phase::Failed, RequestReason::DeviceNotFound, message), None, false);
    }
    let answer = device.answer.as_ref();
    match answer.map(|a| a.status) {
        Some(ResponseStatus::Rejected) => {
            let detail = answer.map(Answer::detail).unwrap_or_default();
            let message = format!("{name} rejected {}: {detail}", wording.noun);
            return (outcome(Phase::Rejected, RequestReason::DeviceRejected, message), None, false);
        }
        Some(ResponseStatus::Failed) => {
            let detail = answer.map(Answer::detail).unwrap_or_default();
            let message = format!("{name} failed to {}: {detail}", wording.verb);
            return (outcome(Phase::Failed, RequestReason::DeviceFailed, message), None, false);
        }
        Some(ResponseStatus::Expired) => {
            let message = format!("The request reached {name} after it expired");
            return (outcome(Phase::TimedOut, RequestReason::Expired, message), None, false);
        }
        Some(ResponseStatus::Succeeded) => {
            return (succeeded(request, name), None, false);
        }
        _ => {}
    }
    let accepted = phase != Phase::Sent || answer.is_some();
    if !accepted {
        let sent_at = request.anchor(current.sent_at.unwrap_or(now));
        let deadline = add_duration(sent_at, request.response_timeout);
        if now >= deadline {
            let message =
                format!("{name} did not answer within {}s", request.response_timeout.as_secs());
            return (outcome(Phase::TimedOut, RequestReason::NoResponse, message), None, false);
        }
        let resend = device.mqtt_connected
            && device.last_sent.is_none_or(|last| now >= add_duration(last, RESEND_INTERVAL));
        let message = format!("{} sent to {name}", wording.request);
        return (
            outcome(Phase::Sent, RequestReason::Sent, message),
            Some(until(now, deadline).min(RESEND_INTERVAL)),
            resend,
        );
    }
    let accepted_at = request.anchor(current.accepted_at.unwrap_or(now));
    match request.kind.confirmation() {
        Confirmation::Restart { extra_away } => {
            // The boot the restart started from: the one recorded when sent, or the boot of
            // the device's answer if older. A successor that found no `Sent` record (it is
            // written after the answer) sends again and records the boot of that moment,
            // possibly already the new one; the device repeats its answer unchanged, with the
            // boot it first answered in.
            let answered_in = device.answer.as_ref().map(|a| a.cursor.boot);
            let before = match (current.boot_before, answered_in) {
                (Some(sent), Some(answered)) => Some(sent.min(answered)),
                (sent, answered) => sent.or(answered),
            };
            let came_back = matches!(
                (device.online, device.boot, before),
                (Some(true), Some(boot), Some(before)) if boot > before
            );
            if came_back {
                return (succeeded(request, name), None, false);
            }
            let away = settings.return_timeout + extra_away;
            let deadline = add_duration(accepted_at, away);
            if now >= deadline {
                let message =
                    format!("{name} did not come back within {}s after accepting", away.as_secs());
                return (outcome(Phase::TimedOut, RequestReason::NoReturn, message), None, false);
            }
            let going_down = phase == Phase::Rebooting
                || device.online == Some(false)
                || device.reported_rebooting;
            let result = if going_down {
                outcome(
                    Phase::Rebooting,
                    RequestReason::Rebooting,
                    format!("{name} {}", wording.away),
                )
            } else {
                outcome(
                    Phase::Accepted,
                    RequestReason::Accepted,
                    format!("{name} accepted {}", wording.noun),
                )
            };
            (result, Some(until(now, deadline)), false)
        }
        Confirmation::FinalAnswer { execution_timeout } => {
            let deadline = add_duration(accepted_at, execution_timeout);
            if now >= deadline {
                let message = format!(
                    "{name} gave no final answer within {}s after accepting",
                    execution_timeout.as_secs()
                );
                return (
                    outcome(Phase::TimedOut, RequestReason::ExecutionTimeout, message),
                    None,
                    false,
                );
            }
            let result = match answer {
                Some(a) if a.status == ResponseStatus::InProgress => {
                    let percent = a.progress.map(|p| format!(" ({p}%)")).unwrap_or_default();
                    let detail = if a.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", a.message)
                    };
                    outcome(
                        Phase::InProgress,
                        RequestReason::InProgress,
                        format!("{name} is running {}{percent}{detail}", wording.noun),
                    )
                }
                _ => outcome(
                    Phase::Accepted,
                    RequestReason::Accepted,
                    format!("{name} accepted {}", wording.noun),
                ),
            };
            (result, Some(until(now, deadline)), false)
        }
    }
}

fn succeeded(request: &RequestView<'_>, name: &str) -> Outcome {
    let wording = request.kind.wording();
    let reason = match request.kind.confirmation() {
        Confirmation::Restart { .. } => RequestReason::Rebooted,
        Confirmation::FinalAnswer { .. } => RequestReason::Completed,
    };
    outcome(Phase::Succeeded, reason, format!("{name} {}", wording.done))
}

fn conditions_for(phase: Phase, reason: RequestReason, message: &str) -> Vec<ConditionUpdate> {
    use ConditionStatus::{False, True, Unknown};
    let (complete, succeeded, failed) = match phase {
        Phase::Succeeded => (True, True, False),
        Phase::Failed | Phase::TimedOut | Phase::Rejected => (True, False, True),
        _ => (False, Unknown, False),
    };
    with_one_reason(
        [
            (RequestCondition::Complete.as_str(), complete),
            (RequestCondition::Succeeded.as_str(), succeeded),
            (RequestCondition::Failed.as_str(), failed),
        ],
        reason.as_str(),
        message,
    )
}

/// How soon a finished request whose TTL ran out is looked at again while its terminal status
/// is still on its way to the API server.
pub const PERSIST_RECHECK: Duration = Duration::from_secs(1);

/// A terminal request: delete it once its TTL after finishing ran out and its terminal status
/// is persisted (deleting it earlier would lose the outcome).
fn finished(request: &RequestView<'_>, now: Timestamp) -> Vec<Effect> {
    match (request.ttl_after_finished, request.progress.completed_at) {
        (Some(ttl), Some(completed)) => {
            let due = add_duration(request.anchor(completed), ttl);
            if now < due {
                vec![Effect::Requeue(until(now, due))]
            } else if request.persisted_phase.is_some_and(Phase::is_terminal) {
                vec![Effect::Delete]
            } else {
                vec![Effect::Requeue(PERSIST_RECHECK)]
            }
        }
        _ => Vec::new(),
    }
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
