//! A method kind that exists only in this test module runs through the engine unchanged:
//! adding a kind needs no change to the engine.

use std::{borrow::Cow, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};

use super::{Answer, Cursor, DeviceView, RequestId, ResponseStatus};
use crate::methods::{
    engine::{Effect, Phase, Progress, RequestView, Settings, Subject, step},
    kind::{Confirmation, MethodKind, Wording},
};

/// `blink`: a plain method confirmed by the device's final answer.
struct Blink {
    times: u32,
}

impl MethodKind for Blink {
    fn method(&self) -> &str {
        "blink"
    }

    fn metric_label(&self) -> &'static str {
        "custom"
    }

    fn params(&self) -> Map<String, Value> {
        let mut params = Map::new();
        params.insert("times".into(), json!(self.times));
        params
    }

    fn confirmation(&self) -> Confirmation {
        Confirmation::FinalAnswer { execution_timeout: Duration::from_secs(60) }
    }

    fn wording(&self) -> Wording {
        Wording {
            request: Cow::Borrowed("Blink request"),
            noun: Cow::Borrowed("the blink"),
            verb: Cow::Borrowed("blink"),
            done: Cow::Borrowed("blinked"),
            away: Cow::Borrowed("is away"),
            event_prefix: Cow::Borrowed("Blink"),
        }
    }
}

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + offset).expect("valid")
}

fn online() -> DeviceView {
    DeviceView {
        exists: true,
        online: Some(true),
        boot: Some(3),
        mqtt_connected: true,
        ..Default::default()
    }
}

fn answering(status: ResponseStatus, progress: Option<u8>) -> DeviceView {
    DeviceView {
        answer: Some(Answer {
            request_id: RequestId::new("uid-b").expect("valid"),
            cursor: Cursor { boot: 3, seq: 9 },
            status,
            code: status.default_code(),
            message: String::new(),
            progress,
            payload: None,
            payload_truncated: false,
        }),
        ..online()
    }
}

/// Runs one step and returns the offered status and the other effects.
fn run(
    kind: &Blink,
    progress: Progress,
    device: &DeviceView,
    now: Timestamp,
) -> (Progress, Vec<Effect>) {
    let view = RequestView {
        device_name: "lamp-1",
        uid: "uid-b",
        generation: Some(1),
        created: Some(at(0)),
        response_timeout: Duration::from_secs(30),
        connect_timeout: Duration::ZERO,
        ttl_after_finished: None,
        kind,
        progress: progress.clone(),
        persisted_phase: progress.phase,
        first_seen: None,
    };
    let effects = step(&view, device, now, &Settings::default());
    let offered = effects
        .iter()
        .find_map(|e| match e {
            Effect::OfferStatus { progress, .. } => Some((**progress).clone()),
            _ => None,
        })
        .unwrap_or(progress);
    (offered, effects)
}

#[test]
fn a_kind_defined_outside_the_engine_is_sent_followed_and_succeeds_on_its_final_answer() {
    let kind = Blink { times: 3 };
    let (sent, effects) = run(&kind, Progress::default(), &online(), at(1));
    assert_eq!(sent.phase, Some(Phase::Sent));
    assert_eq!(sent.message.as_deref(), Some("Blink request sent to lamp-1"));
    let call = effects.iter().find_map(|e| match e {
        Effect::Publish(call) => Some(call.clone()),
        _ => None,
    });
    let call = call.expect("the request is published");
    assert_eq!((call.method.as_str(), call.params.get("times")), ("blink", Some(&json!(3))));
    assert_eq!(call.expires_at, at(31), "sent at 1 with a 30 s response timeout");
    assert!(effects.contains(&Effect::Event {
        subject: Subject::Device,
        type_: EventType::Normal,
        reason: "BlinkSent".into(),
        note: "Blink request sent to lamp-1".into(),
    }));

    let (running, _) = run(&kind, sent, &answering(ResponseStatus::InProgress, Some(40)), at(2));
    assert_eq!(running.phase, Some(Phase::InProgress));
    assert_eq!(running.percent, Some(40));
    assert_eq!(running.message.as_deref(), Some("lamp-1 is running the blink (40%)"));
    assert_eq!(running.accepted_at, Some(at(2)));

    let (done, _) = run(&kind, running, &answering(ResponseStatus::Succeeded, None), at(3));
    assert_eq!(done.phase, Some(Phase::Succeeded));
    assert_eq!(done.reason.as_deref(), Some("Completed"));
    assert_eq!(done.message.as_deref(), Some("lamp-1 blinked"));
    assert_eq!(done.duration.as_deref(), Some("2s"));
    assert_eq!(done.boot_after, Some(3), "a plain method does not need a new boot");
}

#[test]
fn an_accepted_plain_method_times_out_after_its_execution_timeout() {
    let kind = Blink { times: 1 };
    let (sent, _) = run(&kind, Progress::default(), &online(), at(1));
    let (accepted, _) = run(&kind, sent, &answering(ResponseStatus::Accepted, None), at(2));
    assert_eq!(accepted.phase, Some(Phase::Accepted));
    let (still, _) =
        run(&kind, accepted.clone(), &answering(ResponseStatus::Accepted, None), at(61));
    assert_eq!(still.phase, Some(Phase::Accepted), "59 s after acceptance");
    let (late, effects) = run(&kind, accepted, &answering(ResponseStatus::Accepted, None), at(62));
    assert_eq!(late.phase, Some(Phase::TimedOut));
    assert_eq!(late.reason.as_deref(), Some("ExecutionTimeout"));
    assert_eq!(
        late.message.as_deref(),
        Some("lamp-1 gave no final answer within 60s after accepting")
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::Event { type_: EventType::Warning, .. })));
}
