//! `MethodRequest` through the engine: refusals before sending (an unsupported method, params
//! too large), progress and a result payload, and factory reset confirmed by a higher boot.

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{MethodPhase, MethodRequest, MethodRequestStatus};
use serde_json::{Value, json};

use super::{Answer, Cursor, DeviceView, RequestId, ResponseStatus};
use crate::methods::{
    engine::{Effect, RequestView, Settings, step},
    resource::RequestResource,
};

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + offset).expect("valid")
}

fn request(method: &str, params: Value) -> MethodRequest {
    serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "MethodRequest",
        "metadata": {"name": "m", "namespace": "ns", "uid": "uid-m", "generation": 1,
            "creationTimestamp": "2023-11-14T22:13:20Z"},
        "spec": {"deviceName": "lamp-1", "method": method, "params": params,
            "responseTimeoutSeconds": 30, "executionTimeoutSeconds": 60},
    }))
    .expect("valid request")
}

fn online(methods: &[&str]) -> DeviceView {
    DeviceView {
        exists: true,
        online: Some(true),
        boot: Some(3),
        mqtt_connected: true,
        methods: methods.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn answer(
    status: ResponseStatus,
    progress: Option<u8>,
    message: &str,
    payload: Option<Value>,
) -> Answer {
    Answer {
        request_id: RequestId::new("uid-m").expect("valid"),
        cursor: Cursor { boot: 3, seq: 9 },
        status,
        code: status.default_code(),
        message: message.into(),
        progress,
        payload,
        payload_truncated: false,
    }
}

/// One step: the status it offers (the current one when none) and whether it published.
fn run(
    request: &MethodRequest,
    status: Option<MethodRequestStatus>,
    device: &DeviceView,
    now: Timestamp,
) -> (MethodRequestStatus, bool) {
    let progress = MethodRequest::progress_of(status.as_ref()).expect("converts");
    let kind = request.method_kind();
    let timeouts = request.timeouts();
    let view = RequestView {
        device_name: request.device_name(),
        uid: "uid-m",
        generation: Some(1),
        created: Some(at(0)),
        response_timeout: timeouts.response,
        connect_timeout: timeouts.connect,
        ttl_after_finished: None,
        kind: &kind,
        progress,
        persisted_phase: None,
        first_seen: None,
    };
    let effects = step(&view, device, now, &Settings::default());
    let published = effects.iter().any(|e| matches!(e, Effect::Publish(_)));
    let offered = effects.into_iter().find_map(|e| match e {
        Effect::OfferStatus { progress, .. } => {
            Some(MethodRequest::status_of(&progress).expect("converts"))
        }
        _ => None,
    });
    (offered.or(status).unwrap_or_default(), published)
}

#[test]
fn requests_refused_before_sending_say_why_and_publish_nothing() {
    let table = [
        (
            "setLed",
            json!({}),
            online(&["reboot", "factoryReset"]),
            "MethodNotSupported",
            "lamp-1 does not support the method setLed (it lists reboot, factoryReset): nothing is sent",
        ),
        (
            "setLed",
            json!({"blob": "x".repeat(17 * 1024)}),
            online(&[]),
            "ParamsTooLarge",
            "params are 17419 bytes serialized; a request carries at most 16384: nothing is sent",
        ),
    ];
    for (method, params, device, reason, message) in table {
        let (status, published) = run(&request(method, params), None, &device, at(1));
        assert_eq!(status.phase, Some(MethodPhase::Rejected), "{reason}");
        assert_eq!(status.reason.as_deref(), Some(reason));
        assert_eq!(status.message.as_deref(), Some(message));
        assert!(!published, "{reason}: nothing is sent");
    }
    // A device that lists nothing is asked anyway (it answers 404 itself if it must).
    let (status, published) = run(&request("setLed", json!({})), None, &online(&[]), at(1));
    assert_eq!((status.phase, published), (Some(MethodPhase::Sent), true));
}

#[test]
fn a_plain_method_shows_its_progress_then_its_result_payload() {
    let call = request("collectDiagnostics", json!({"level": "full"}));
    let device = online(&["collectDiagnostics"]);
    let (sent, published) = run(&call, None, &device, at(1));
    assert_eq!((sent.phase, published), (Some(MethodPhase::Sent), true));
    let running_device = DeviceView {
        answer: Some(answer(ResponseStatus::InProgress, Some(50), "collecting logs", None)),
        ..device.clone()
    };
    let (running, _) = run(&call, Some(sent), &running_device, at(2));
    assert_eq!(running.phase, Some(MethodPhase::InProgress));
    let progress = running.progress.clone().expect("progress");
    assert_eq!((progress.percent, progress.message.as_str()), (Some(50), "collecting logs"));
    let done_device = DeviceView {
        answer: Some(answer(ResponseStatus::Succeeded, None, "done", Some(json!({"files": 3})))),
        ..device
    };
    let (done, _) = run(&call, Some(running), &done_device, at(4));
    assert_eq!(done.phase, Some(MethodPhase::Succeeded));
    let result = done.result.expect("result");
    assert_eq!((result.code, result.message.as_str()), (200, "done"));
    assert_eq!(result.payload, Some(json!({"files": 3})));
    let progress = done.progress.expect("progress");
    assert_eq!((progress.percent, progress.message.as_str()), (Some(100), ""), "complete");
    assert_eq!(done.duration.as_deref(), Some("3s"));
}

#[test]
fn a_factory_reset_succeeds_only_when_the_device_is_back_with_a_higher_boot() {
    let call = request("factoryReset", json!({}));
    let device = online(&[]);
    let (sent, _) = run(&call, None, &device, at(1));
    assert_eq!(sent.boot_before, Some(3));
    let accepted_device = DeviceView {
        answer: Some(answer(ResponseStatus::Accepted, None, "resetting", None)),
        ..device.clone()
    };
    let (accepted, _) = run(&call, Some(sent), &accepted_device, at(2));
    assert_eq!(accepted.phase, Some(MethodPhase::Accepted));
    let away = DeviceView { online: Some(false), ..accepted_device.clone() };
    let (rebooting, _) = run(&call, Some(accepted), &away, at(3));
    assert_eq!(rebooting.phase, Some(MethodPhase::Rebooting));
    assert_eq!(rebooting.message.as_deref(), Some("lamp-1 is resetting"));
    let same_boot = DeviceView { online: Some(true), ..accepted_device.clone() };
    let (still, _) = run(&call, Some(rebooting.clone()), &same_boot, at(4));
    assert_eq!(still.phase, Some(MethodPhase::Rebooting), "back on the same boot is not a reset");
    let back = DeviceView { online: Some(true), boot: Some(4), ..accepted_device };
    let (done, _) = run(&call, Some(rebooting), &back, at(9));
    assert_eq!(done.phase, Some(MethodPhase::Succeeded));
    assert_eq!(done.boot_after, Some(4));
    assert_eq!(
        done.message.as_deref(),
        Some("lamp-1 was reset to factory state and is back online")
    );
}

#[test]
fn a_request_without_budget_room_waits_pending_then_sends_or_times_out() {
    let blocked = DeviceView {
        budget_exhausted: Some(
            "DeviceDisruptionBudget per-line (group a) has no room: 1 of 5 devices unavailable"
                .into(),
        ),
        ..online(&[])
    };
    let reset = request("factoryReset", json!({}));
    let (status, published) = run(&reset, None, &blocked, at(1));
    assert_eq!(status.phase, Some(MethodPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("DisruptionBudgetExhausted"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "DeviceDisruptionBudget per-line (group a) has no room: 1 of 5 devices unavailable; waiting up to 1800s for room"
        )
    );
    let complete = status.conditions.iter().find(|c| c.type_ == "Complete").expect("Complete");
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("False", "DisruptionBudgetExhausted")
    );
    assert!(!published, "nothing is sent while the budget has no room");
    // Room freed: sent.
    let (status, published) = run(&reset, Some(status), &online(&[]), at(5));
    assert_eq!((status.phase, published), (Some(MethodPhase::Sent), true));
    // No room for the whole wait: timed out, nothing sent.
    let (status, published) = run(&reset, None, &blocked, at(1800));
    assert_eq!((status.phase, published), (Some(MethodPhase::TimedOut), false));
    assert_eq!(status.reason.as_deref(), Some("DisruptionBudgetExhausted"));
}
