//! The engine under faults: a terminal status not yet persisted, a broker that stays away,
//! clocks that differ between processes, and random device views with clock jumps.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{RebootPhase, RebootRequest, RebootRequestSpec};
use proptest::prelude::*;

use super::{DeviceView, RebootSettings, RebootStep, ResponseStatus, step, step_with};
use crate::methods::{engine::Phase, resource::RequestResource};

const CREATED: i64 = 1_700_000_000;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(CREATED + offset).expect("valid")
}

fn request(spec: RebootRequestSpec) -> RebootRequest {
    let mut request = RebootRequest::new("reboot-1", spec);
    request.metadata.namespace = Some("plant".into());
    request.metadata.uid = Some("uid-1".into());
    request.metadata.generation = Some(1);
    request.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
    request
}

fn spec() -> RebootRequestSpec {
    RebootRequestSpec {
        device_name: "sensor-1".into(),
        delay_seconds: 0,
        response_timeout_seconds: 30,
        connect_timeout_seconds: 0,
        ttl_seconds_after_finished: None,
    }
}

fn online(boot: u64) -> DeviceView {
    DeviceView {
        exists: true,
        online: Some(true),
        boot: Some(boot),
        mqtt_connected: true,
        ..Default::default()
    }
}

fn phase(result: &RebootStep) -> RebootPhase {
    result.status.phase.expect("phase")
}

#[test]
fn a_finished_request_is_deleted_only_once_its_terminal_status_is_persisted() {
    let mut request = request(RebootRequestSpec { ttl_seconds_after_finished: Some(0), ..spec() });
    let rejected = DeviceView {
        answer: Some(super::Answer {
            request_id: super::RequestId::new("uid-1").expect("valid"),
            cursor: Default::default(),
            status: ResponseStatus::Rejected,
            code: 409,
            message: "busy".into(),
            progress: None,
            payload: None,
            payload_truncated: false,
        }),
        ..online(3)
    };
    let sent = step(&request, &online(3), at(1), RebootSettings::default());
    request.status = Some(sent.status);
    let done = step(&request, &rejected, at(2), RebootSettings::default());
    assert_eq!(phase(&done), RebootPhase::Rejected);
    request.status = Some(done.status);
    // The terminal status is ours but the API server still holds Sent.
    let waiting =
        step_with(&request, &rejected, at(2), RebootSettings::default(), Some(Phase::Sent), None);
    assert!(!waiting.delete, "never delete before the outcome is recorded");
    assert_eq!(waiting.requeue_after, Some(crate::methods::engine::PERSIST_RECHECK));
    let persisted = step_with(
        &request,
        &rejected,
        at(3),
        RebootSettings::default(),
        Some(Phase::Rejected),
        None,
    );
    assert!(persisted.delete, "deleted once the terminal status is persisted");
}

#[test]
fn a_request_does_not_wait_forever_for_the_operators_broker() {
    let request = request(RebootRequestSpec { connect_timeout_seconds: 10, ..spec() });
    let no_broker = DeviceView { mqtt_connected: false, ..online(3) };
    let waiting = step(&request, &no_broker, at(29), RebootSettings::default());
    assert_eq!(phase(&waiting), RebootPhase::Pending);
    assert_eq!(waiting.status.reason.as_deref(), Some("BrokerUnavailable"));
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(1)), "until the deadline");
    let given_up = step(&request, &no_broker, at(30), RebootSettings::default());
    assert_eq!(phase(&given_up), RebootPhase::TimedOut);
    assert_eq!(given_up.status.reason.as_deref(), Some("BrokerUnavailable"));
    assert_eq!(
        given_up.status.message.as_deref(),
        Some("The operator had no MQTT connection for 30s; nothing was sent"),
        "the longer of the connect and response timeouts"
    );
    assert!(!given_up.send);
}

#[test]
fn a_clock_ten_minutes_fast_in_a_new_process_does_not_end_a_request_early() {
    // Sent at 1 by a process with a good clock; a new process whose clock is 10 minutes fast
    // first sees the request at its "601".
    let mut request = request(spec());
    let sent = step(&request, &online(3), at(1), RebootSettings::default());
    request.status = Some(sent.status);
    let first_seen = at(601);
    let persisted = Some(Phase::Sent);
    let early = step_with(
        &request,
        &online(3),
        at(602),
        RebootSettings::default(),
        persisted,
        Some(first_seen),
    );
    assert_eq!(phase(&early), RebootPhase::Sent, "the response timeout counts from first sight");
    let late = step_with(
        &request,
        &online(3),
        at(631),
        RebootSettings::default(),
        persisted,
        Some(first_seen),
    );
    assert_eq!(phase(&late), RebootPhase::TimedOut, "and still ends");
    assert_eq!(late.status.reason.as_deref(), Some("NoResponse"));
}

fn device_view() -> impl Strategy<Value = DeviceView> {
    let answer = prop::option::of(prop_oneof![
        Just(ResponseStatus::Accepted),
        Just(ResponseStatus::InProgress),
        Just(ResponseStatus::Succeeded),
        Just(ResponseStatus::Failed),
        Just(ResponseStatus::Rejected),
        Just(ResponseStatus::Expired),
    ]);
    (
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::of(0u64..6),
        answer,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(exists, online, boot, answer, rebooting, mqtt)| DeviceView {
            exists,
            online,
            boot,
            answer: answer.map(|status| super::Answer {
                request_id: super::RequestId::new("uid-1").expect("valid"),
                cursor: Default::default(),
                status,
                code: status.default_code(),
                message: String::new(),
                progress: None,
                payload: None,
                payload_truncated: false,
            }),
            reported_rebooting: rebooting,
            mqtt_connected: mqtt,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x6b75_6265_7477_696e),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Under random device views and clock jumps (the process clock never goes back, but a new
    /// process may see a very different wall time), a request only moves forward and reaches a
    /// terminal phase by its deadline.
    #[test]
    fn a_request_only_moves_forward_and_ends_by_its_deadline(
        views in prop::collection::vec(device_view(), 1..40),
        jumps in prop::collection::vec(0i64..900, 1..40),
        restart_skew in -600i64..600,
    ) {
        let settings = RebootSettings { return_timeout: Duration::from_secs(60), ..RebootSettings::default() };
        let mut request = request(RebootRequestSpec { connect_timeout_seconds: 20, ..spec() });
        // Real time `t`; the deciding process's clock shows `t + skew`. Halfway the operator
        // restarts with a clock `restart_skew` away from real time.
        let mut t = 0i64;
        let mut skew = 0i64;
        let mut last = RebootPhase::rank(None);
        let mut first_seen = None;
        for (i, view) in views.iter().enumerate() {
            t += jumps.get(i).copied().unwrap_or(1);
            if i == views.len() / 2 {
                skew = restart_skew;
                first_seen = Some(at(t + skew));
            }
            let persisted = RebootRequest::progress_of(request.status.as_ref()).map(|p| p.phase).ok().flatten();
            let result = step_with(&request, view, at(t + skew), settings, persisted, first_seen);
            let next = RebootPhase::rank(result.status.phase);
            prop_assert!(next >= last, "moved back from {last} to {next}");
            last = next;
            request.status = Some(result.status);
        }
        // Longest life: connect 20 s + response 30 s + return 60 s from first sight, plus the
        // restart's skew when the new clock is behind.
        let end = t + 1000 + restart_skew.abs();
        let persisted = RebootRequest::progress_of(request.status.as_ref()).map(|p| p.phase).ok().flatten();
        let result = step_with(&request, &DeviceView::default(), at(end + skew), settings, persisted, first_seen);
        let final_phase = result.status.phase;
        prop_assert!(final_phase.is_some_and(RebootPhase::is_terminal), "not terminal at the end: {final_phase:?}");
    }
}
