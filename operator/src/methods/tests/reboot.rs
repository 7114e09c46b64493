//! Table tests of the engine's [`step`](crate::methods::engine::step) with the reboot kind:
//! the whole life of a RebootRequest, driven by hand-made device views and timestamps.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kubetwin_api::{
    RebootPhase, RebootRequest, RebootRequestSpec, RebootRequestStatus, RecordedResponse,
    condition::{FALSE, TRUE, UNKNOWN, reboot as types},
};

use super::*;
use crate::k8s::conditions::find;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Creation time of every request in these tests.
const CREATED: i64 = 1_700_000_000;
const BOOT: i64 = 7;
const NAME: &str = "sensor-1";

/// `CREATED + offset` seconds.
fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(CREATED + offset).expect("valid timestamp")
}

fn time(offset: i64) -> Option<Time> {
    Some(Time(at(offset)))
}

fn spec() -> RebootRequestSpec {
    RebootRequestSpec {
        device_name: NAME.into(),
        delay_seconds: 0,
        response_timeout_seconds: 30,
        connect_timeout_seconds: 0,
        ttl_seconds_after_finished: None,
    }
}

fn request_with(spec: RebootRequestSpec) -> RebootRequest {
    let mut request = RebootRequest::new("reboot-1", spec);
    request.metadata.namespace = Some("plant".into());
    request.metadata.uid = Some("uid-1".into());
    request.metadata.generation = Some(1);
    request.metadata.creation_timestamp = Some(Time(at(0)));
    request
}

fn request() -> RebootRequest {
    request_with(spec())
}

fn with_status(mut request: RebootRequest, status: RebootRequestStatus) -> RebootRequest {
    request.status = Some(status);
    request
}

/// A boot counter as the device view holds it.
fn boot(value: i64) -> u64 {
    u64::try_from(value).expect("boot counters are not negative")
}

/// An existing, online device with `boot`, and the operator connected to the broker.
fn online(boot: i64) -> DeviceView {
    DeviceView {
        exists: true,
        online: Some(true),
        boot: Some(self::boot(boot)),
        mqtt_connected: true,
        ..Default::default()
    }
}

/// An existing device that is offline (last seen with boot [`BOOT`]).
fn offline() -> DeviceView {
    DeviceView {
        exists: true,
        online: Some(false),
        boot: Some(boot(BOOT)),
        mqtt_connected: true,
        ..Default::default()
    }
}

/// No Device object at all.
fn missing() -> DeviceView {
    DeviceView { mqtt_connected: true, ..Default::default() }
}

fn answer(kind: ResponseStatus, code: i32, message: &str) -> Option<Answer> {
    Some(Answer {
        request_id: RequestId::new("uid-1").expect("valid"),
        // Answered in the boot the request was sent in.
        cursor: Cursor { boot: boot(BOOT), seq: 1 },
        status: kind,
        code: u16::try_from(code).expect("an HTTP-like code"),
        message: message.into(),
        progress: None,
        payload: None,
        payload_truncated: false,
    })
}

fn answered(mut device: DeviceView, kind: ResponseStatus, code: i32, message: &str) -> DeviceView {
    device.answer = answer(kind, code, message);
    device
}

fn run(request: &RebootRequest, device: &DeviceView, now: Timestamp) -> RebootStep {
    step(request, device, now, RebootSettings::default())
}

/// Runs one step and stores the resulting status on `request`, like the controller would.
fn advance(
    request: &mut RebootRequest,
    device: &DeviceView,
    now: Timestamp,
    settings: RebootSettings,
) -> RebootStep {
    let result = step(request, device, now, settings);
    request.status = Some(result.status.clone());
    result
}

fn phase(step: &RebootStep) -> RebootPhase {
    step.status.phase.expect("phase is always set")
}

fn reason(step: &RebootStep) -> &str {
    step.status.reason.as_deref().expect("reason is always set")
}

fn message(step: &RebootStep) -> &str {
    step.status.message.as_deref().expect("message is always set")
}

/// Asserts the three conditions: their statuses, that all carry the status' reason and
/// message, and the request's generation.
#[track_caller]
fn assert_conditions(status: &RebootRequestStatus, complete: &str, succeeded: &str, failed: &str) {
    assert_eq!(
        status.conditions.len(),
        3,
        "exactly Complete, Succeeded and Failed: {:?}",
        status.conditions
    );
    for (type_, expected) in
        [(types::COMPLETE, complete), (types::SUCCEEDED, succeeded), (types::FAILED, failed)]
    {
        let condition =
            find(&status.conditions, type_).unwrap_or_else(|| panic!("condition {type_} missing"));
        assert_eq!(condition.status, expected, "status of {type_}");
        assert_eq!(Some(&condition.reason), status.reason.as_ref(), "reason of {type_}");
        assert_eq!(Some(&condition.message), status.message.as_ref(), "message of {type_}");
        assert_eq!(condition.observed_generation, Some(1), "observedGeneration of {type_}");
    }
}

#[track_caller]
fn assert_in_progress_conditions(status: &RebootRequestStatus) {
    assert_conditions(status, FALSE, UNKNOWN, FALSE);
}

#[track_caller]
fn assert_failed_conditions(status: &RebootRequestStatus) {
    assert_conditions(status, TRUE, FALSE, TRUE);
}

#[track_caller]
fn assert_succeeded_conditions(status: &RebootRequestStatus) {
    assert_conditions(status, TRUE, TRUE, FALSE);
}

#[track_caller]
fn transition_time(status: &RebootRequestStatus, type_: &str) -> Timestamp {
    find(&status.conditions, type_)
        .unwrap_or_else(|| panic!("condition {type_} missing"))
        .last_transition_time
        .0
}

/// Applies `step` to `request`, then again to its own output with the same `now`, and asserts
/// that the second application changes nothing and is no transition. Returns the first step.
#[track_caller]
fn assert_idempotent(request: &RebootRequest, device: &DeviceView, now: Timestamp) -> RebootStep {
    let first = run(request, device, now);
    let again = with_status(request.clone(), first.status.clone());
    let second = run(&again, device, now);
    assert_eq!(second.status, first.status, "step applied to its own output changed the status");
    assert!(!second.transition, "step applied to its own output reported a transition");
    assert_eq!(second.delete, first.delete);
    first
}

/// A request that was sent at `sent` (offset) to a device with boot [`BOOT`], with no answer.
fn sent_request(spec: RebootRequestSpec, sent: i64) -> RebootRequest {
    let mut request = request_with(spec);
    let result = advance(&mut request, &online(BOOT), at(sent), RebootSettings::default());
    assert_eq!(phase(&result), RebootPhase::Sent);
    request
}

/// A request that was sent at `sent` and accepted at `accepted` (offsets).
fn accepted_request(spec: RebootRequestSpec, sent: i64, accepted: i64) -> RebootRequest {
    let mut request = sent_request(spec, sent);
    let device = answered(online(BOOT), ResponseStatus::Accepted, 202, "rebooting soon");
    let result = advance(&mut request, &device, at(accepted), RebootSettings::default());
    assert_eq!(phase(&result), RebootPhase::Accepted);
    request
}

/// A request that went Sent → Accepted → Rebooting at the given offsets.
fn rebooting_request(
    spec: RebootRequestSpec,
    sent: i64,
    accepted: i64,
    down: i64,
) -> RebootRequest {
    let mut request = accepted_request(spec, sent, accepted);
    let device = answered(offline(), ResponseStatus::Accepted, 202, "rebooting soon");
    let result = advance(&mut request, &device, at(down), RebootSettings::default());
    assert_eq!(phase(&result), RebootPhase::Rebooting);
    request
}

/// A request in a terminal `phase`, reached at offset 20, with `ttl`.
fn terminal_request(phase_wanted: RebootPhase, ttl: Option<i32>) -> RebootRequest {
    let spec = RebootRequestSpec { ttl_seconds_after_finished: ttl, ..spec() };
    let mut request = sent_request(spec, 1);
    let device = match phase_wanted {
        RebootPhase::Succeeded => {
            answered(online(BOOT + 1), ResponseStatus::Succeeded, 200, "back")
        }
        RebootPhase::Failed => answered(online(BOOT), ResponseStatus::Failed, 500, "watchdog"),
        RebootPhase::Rejected => answered(online(BOOT), ResponseStatus::Rejected, 409, "busy"),
        RebootPhase::TimedOut => answered(online(BOOT), ResponseStatus::Expired, 410, "too late"),
        other => panic!("{other:?} is not terminal"),
    };
    let result = advance(&mut request, &device, at(20), RebootSettings::default());
    assert_eq!(phase(&result), phase_wanted);
    request
}

const TERMINAL: [RebootPhase; 4] =
    [RebootPhase::Succeeded, RebootPhase::Failed, RebootPhase::TimedOut, RebootPhase::Rejected];

/// Device views that would move an in-flight request somewhere, one of each kind.
fn every_kind_of_device_view() -> Vec<DeviceView> {
    let mut views = vec![
        online(BOOT),
        online(BOOT + 5),
        offline(),
        missing(),
        DeviceView { mqtt_connected: false, ..online(BOOT) },
        DeviceView { reported_rebooting: true, ..online(BOOT) },
        DeviceView { last_sent: Some(at(-100)), ..online(BOOT) },
        DeviceView::default(),
    ];
    for kind in [
        ResponseStatus::Accepted,
        ResponseStatus::InProgress,
        ResponseStatus::Succeeded,
        ResponseStatus::Failed,
        ResponseStatus::Rejected,
        ResponseStatus::Expired,
    ] {
        views.push(answered(online(BOOT + 1), kind, 299, "other answer"));
    }
    views
}

// ---------------------------------------------------------------------------------------------
// Happy path
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_request_for_an_online_device_is_sent_at_once() {
    let result = run(&request(), &online(BOOT), at(1));
    assert_eq!(phase(&result), RebootPhase::Sent);
    assert_eq!(reason(&result), "Sent");
    assert_eq!(message(&result), "Reboot request sent to sensor-1");
    assert!(result.send);
    assert!(result.transition);
    assert!(!result.delete);
    assert_eq!(result.requeue_after, Some(RESEND_INTERVAL));
    // Published first; `Sent` waits for the device's answer to share its write.
    assert_eq!(result.hold, Some(SENT_STATUS_HOLD));
    let status = &result.status;
    assert_eq!(status.request_id.as_deref(), Some("uid-1"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.sent_at, time(1));
    assert_eq!(status.boot_before, Some(BOOT));
    assert_eq!(status.accepted_at, None);
    assert_eq!(status.completed_at, None);
    assert_eq!(status.duration, None);
    assert_eq!(status.boot_after, None);
    assert_eq!(status.response, None);
    assert_in_progress_conditions(status);
    for type_ in [types::COMPLETE, types::SUCCEEDED, types::FAILED] {
        assert_eq!(transition_time(status, type_), at(1));
    }
}

#[test]
fn happy_path_goes_through_every_phase_with_its_timestamps() {
    let settings = RebootSettings::default();
    let spec = RebootRequestSpec {
        connect_timeout_seconds: 60,
        ttl_seconds_after_finished: Some(600),
        ..spec()
    };
    let mut request = request_with(spec);

    // Pending: the device is offline, wait for it.
    let pending = advance(&mut request, &offline(), at(2), settings);
    assert_eq!(phase(&pending), RebootPhase::Pending);
    assert_eq!(reason(&pending), "WaitingForDevice");
    assert_eq!(message(&pending), "Waiting up to 60s for sensor-1 to come online");
    assert!(!pending.send);
    assert!(pending.transition, "no status → Pending is the first phase");
    assert_eq!(pending.requeue_after, Some(Duration::from_secs(58)));
    assert_eq!(pending.hold, None, "only Sent waits for the answer");
    assert_eq!(pending.status.request_id.as_deref(), Some("uid-1"));
    assert_eq!(pending.status.observed_generation, Some(1));
    assert_eq!(pending.status.sent_at, None);
    assert_eq!(pending.status.boot_before, None);
    assert_in_progress_conditions(&pending.status);

    // Sent: the device came online.
    let sent = advance(&mut request, &online(BOOT), at(10), settings);
    assert_eq!(phase(&sent), RebootPhase::Sent);
    assert_eq!(reason(&sent), "Sent");
    assert!(sent.send);
    assert!(sent.transition);
    assert_eq!(sent.requeue_after, Some(RESEND_INTERVAL));
    assert_eq!(sent.hold, Some(SENT_STATUS_HOLD));
    assert_eq!(sent.status.sent_at, time(10));
    assert_eq!(sent.status.boot_before, Some(BOOT));
    assert_eq!(sent.status.accepted_at, None);
    assert_in_progress_conditions(&sent.status);

    // Accepted: the device said so; it delays its reboot.
    let device = DeviceView {
        last_sent: Some(at(10)),
        ..answered(online(BOOT), ResponseStatus::Accepted, 202, "rebooting in 5s")
    };
    let accepted = advance(&mut request, &device, at(12), settings);
    assert_eq!(phase(&accepted), RebootPhase::Accepted);
    assert_eq!(reason(&accepted), "Accepted");
    assert_eq!(message(&accepted), "sensor-1 accepted the reboot");
    assert!(!accepted.send);
    assert!(accepted.transition);
    assert_eq!(accepted.requeue_after, Some(settings.return_timeout));
    assert_eq!(accepted.hold, None, "the answer is written at once, carrying Sent's fields");
    assert_eq!(accepted.status.sent_at, time(10));
    assert_eq!(accepted.status.accepted_at, time(12));
    assert_eq!(
        accepted.status.response,
        Some(RecordedResponse { code: 202, message: "rebooting in 5s".into() })
    );
    assert_eq!(accepted.status.completed_at, None);
    assert_in_progress_conditions(&accepted.status);

    // Rebooting: the device went offline.
    let device = DeviceView {
        last_sent: Some(at(10)),
        ..answered(offline(), ResponseStatus::Accepted, 202, "rebooting in 5s")
    };
    let rebooting = advance(&mut request, &device, at(20), settings);
    assert_eq!(phase(&rebooting), RebootPhase::Rebooting);
    assert_eq!(reason(&rebooting), "Rebooting");
    assert_eq!(message(&rebooting), "sensor-1 is rebooting");
    assert!(!rebooting.send);
    assert!(rebooting.transition);
    assert_eq!(rebooting.requeue_after, Some(settings.return_timeout - Duration::from_secs(8)));
    assert_eq!(rebooting.status.accepted_at, time(12), "acceptedAt is kept");
    assert_in_progress_conditions(&rebooting.status);

    // Succeeded: the device is back with a new boot and says so.
    let device = DeviceView {
        last_sent: Some(at(10)),
        ..answered(online(BOOT + 1), ResponseStatus::Succeeded, 200, "")
    };
    let succeeded = advance(&mut request, &device, at(133), settings);
    assert_eq!(phase(&succeeded), RebootPhase::Succeeded);
    assert_eq!(reason(&succeeded), "Rebooted");
    assert_eq!(message(&succeeded), "sensor-1 rebooted and is back online");
    assert!(!succeeded.send);
    assert!(succeeded.transition);
    assert!(!succeeded.delete);
    assert_eq!(succeeded.requeue_after, Some(Duration::from_secs(600)), "requeue for the TTL");
    let status = &succeeded.status;
    assert_eq!(status.sent_at, time(10));
    assert_eq!(status.accepted_at, time(12));
    assert_eq!(status.completed_at, time(133));
    assert_eq!(status.duration.as_deref(), Some("2m3s"), "from sentAt to completedAt");
    assert_eq!(status.boot_before, Some(BOOT));
    assert_eq!(status.boot_after, Some(BOOT + 1));
    assert_eq!(status.response, Some(RecordedResponse { code: 200, message: String::new() }));
    assert_eq!(status.request_id.as_deref(), Some("uid-1"));
    assert_eq!(status.observed_generation, Some(1));
    assert_succeeded_conditions(status);
    // Complete and Succeeded flipped now; Failed stayed False since the first step.
    assert_eq!(transition_time(status, types::COMPLETE), at(133));
    assert_eq!(transition_time(status, types::SUCCEEDED), at(133));
    assert_eq!(transition_time(status, types::FAILED), at(2));

    // Finished: nothing changes any more; the TTL deletes it.
    let later = advance(&mut request, &device, at(433), settings);
    assert_eq!(later.status, *status);
    assert!(!later.transition);
    assert!(!later.send);
    assert!(!later.delete);
    assert_eq!(later.requeue_after, Some(Duration::from_secs(300)));
    assert_eq!(later.hold, None);
    let due = advance(&mut request, &device, at(733), settings);
    assert!(due.delete);
    assert_eq!(due.status, *status);
}

#[test]
fn condition_transition_times_move_only_when_their_status_flips() {
    let mut request = request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() });
    let settings = RebootSettings::default();
    advance(&mut request, &offline(), at(1), settings);
    advance(&mut request, &online(BOOT), at(5), settings);
    let accepted = advance(
        &mut request,
        &answered(online(BOOT), ResponseStatus::Accepted, 202, ""),
        at(6),
        settings,
    );
    for type_ in [types::COMPLETE, types::SUCCEEDED, types::FAILED] {
        assert_eq!(
            transition_time(&accepted.status, type_),
            at(1),
            "{type_} did not flip while in progress"
        );
    }
    let failed = advance(
        &mut request,
        &answered(online(BOOT), ResponseStatus::Failed, 500, "disk"),
        at(9),
        settings,
    );
    for type_ in [types::COMPLETE, types::SUCCEEDED, types::FAILED] {
        assert_eq!(transition_time(&failed.status, type_), at(9), "{type_} flipped at the failure");
    }
}

#[test]
fn an_in_progress_answer_counts_as_acceptance() {
    let request = sent_request(spec(), 1);
    let result =
        run(&request, &answered(online(BOOT), ResponseStatus::InProgress, 102, "working"), at(3));
    assert_eq!(phase(&result), RebootPhase::Accepted);
    assert_eq!(result.status.accepted_at, time(3));
    assert_eq!(
        result.status.response,
        Some(RecordedResponse { code: 102, message: "working".into() })
    );
    assert!(!result.send);
    assert!(result.transition);
}

#[test]
fn acceptance_from_a_device_that_is_already_offline_goes_straight_to_rebooting() {
    let request = sent_request(spec(), 1);
    let result = run(&request, &answered(offline(), ResponseStatus::Accepted, 202, ""), at(3));
    assert_eq!(phase(&result), RebootPhase::Rebooting);
    assert_eq!(result.status.accepted_at, time(3), "acceptedAt is set on the way to Rebooting");
    assert!(result.transition);
    assert_in_progress_conditions(&result.status);
}

#[test]
fn a_device_that_reports_rebooting_is_rebooting_even_while_still_online() {
    let request = accepted_request(spec(), 1, 2);
    let device = DeviceView {
        reported_rebooting: true,
        ..answered(online(BOOT), ResponseStatus::InProgress, 102, "")
    };
    let result = run(&request, &device, at(4));
    assert_eq!(phase(&result), RebootPhase::Rebooting);
    assert_eq!(result.status.accepted_at, time(2));
    assert!(result.transition);
}

#[test]
fn accepted_stays_accepted_while_the_device_is_online_with_its_old_boot() {
    let request = accepted_request(spec(), 1, 2);
    let result = run(
        &request,
        &answered(online(BOOT), ResponseStatus::Accepted, 202, "rebooting soon"),
        at(30),
    );
    assert_eq!(phase(&result), RebootPhase::Accepted);
    assert!(!result.transition);
    assert!(!result.send);
    assert_eq!(result.status, request.status.clone().expect("status"), "nothing changed");
}

#[test]
fn rebooting_does_not_fall_back_to_accepted_when_the_device_shows_up_with_its_old_boot() {
    let request = rebooting_request(spec(), 1, 2, 3);
    let result = run(
        &request,
        &answered(online(BOOT), ResponseStatus::Accepted, 202, "rebooting soon"),
        at(10),
    );
    assert_eq!(phase(&result), RebootPhase::Rebooting);
    assert!(!result.transition);
    assert_eq!(result.status, request.status.clone().expect("status"));
}

// ---------------------------------------------------------------------------------------------
// Success without a final answer, and what does not count as success
// ---------------------------------------------------------------------------------------------

#[test]
fn a_device_back_with_a_higher_boot_succeeds_without_a_final_answer() {
    // The last answer is still "Accepted" (the final answer was lost).
    let request = rebooting_request(spec(), 1, 2, 3);
    let result = run(
        &request,
        &answered(online(BOOT + 1), ResponseStatus::Accepted, 202, "rebooting soon"),
        at(40),
    );
    assert_eq!(phase(&result), RebootPhase::Succeeded);
    assert_eq!(reason(&result), "Rebooted");
    assert!(result.transition);
    assert!(!result.send);
    assert_eq!(result.status.boot_before, Some(BOOT));
    assert_eq!(result.status.boot_after, Some(BOOT + 1));
    assert_eq!(result.status.completed_at, time(40));
    assert_eq!(result.status.duration.as_deref(), Some("39s"));
    assert_succeeded_conditions(&result.status);

    // No answer known at all (for example after an operator restart) also works past Sent.
    let result = run(&request, &online(BOOT + 3), at(40));
    assert_eq!(phase(&result), RebootPhase::Succeeded);
    assert_eq!(result.status.boot_after, Some(BOOT + 3));
    assert_eq!(
        result.status.response,
        Some(RecordedResponse { code: 202, message: "rebooting soon".into() }),
        "the recorded answer is kept when none is known now"
    );

    // Straight from Accepted, without ever being seen offline.
    let request = accepted_request(spec(), 1, 2);
    let result = run(&request, &online(BOOT + 1), at(40));
    assert_eq!(phase(&result), RebootPhase::Succeeded);
    assert_eq!(result.status.accepted_at, time(2));
}

#[test]
fn a_device_back_with_the_same_boot_does_not_succeed() {
    let request = rebooting_request(spec(), 1, 2, 3);
    for boot in [BOOT, BOOT - 1] {
        let result = run(&request, &online(boot), at(40));
        assert_eq!(phase(&result), RebootPhase::Rebooting, "boot {boot}");
        assert_eq!(result.status.boot_after, None);
        assert_eq!(result.status.completed_at, None);
    }
    let request = accepted_request(spec(), 1, 2);
    let result = run(&request, &online(BOOT), at(40));
    assert_eq!(phase(&result), RebootPhase::Accepted);
}

#[test]
fn a_higher_boot_counts_only_while_the_device_is_online() {
    let request = rebooting_request(spec(), 1, 2, 3);
    for online in [Some(false), None] {
        let device = DeviceView { online, ..self::online(BOOT + 1) };
        let result = run(&request, &device, at(40));
        assert_eq!(phase(&result), RebootPhase::Rebooting, "online {online:?}");
    }
}

#[test]
fn a_higher_boot_without_any_answer_while_sent_is_not_a_success() {
    // Without an answer the device never accepted: a reboot for another reason is not ours.
    let request = sent_request(spec(), 1);
    let result = run(&request, &online(BOOT + 1), at(4));
    assert_eq!(phase(&result), RebootPhase::Sent);
    assert!(!result.transition);
    assert_eq!(result.status.boot_after, None);
}

#[test]
fn a_successor_without_the_sent_record_judges_the_restart_from_the_answer_s_boot() {
    // The leader published, the device accepted and rebooted, and the leader died before
    // any status was written: its successor finds no status and the device back with a new
    // boot. It sends again and records the new boot; the device repeats its answer unchanged,
    // from the boot it first answered in, so the restart is still seen.
    let request = request();
    let resent = run(&request, &online(BOOT + 1), at(20));
    assert_eq!(phase(&resent), RebootPhase::Sent);
    assert!(resent.send);
    assert_eq!(resent.status.boot_before, Some(BOOT + 1));
    let request = with_status(request, resent.status);
    let device = DeviceView {
        last_sent: Some(at(20)),
        ..answered(online(BOOT + 1), ResponseStatus::Accepted, 202, "")
    };
    let result = run(&request, &device, at(21));
    assert_eq!(phase(&result), RebootPhase::Succeeded, "{}", message(&result));
}

#[test]
fn an_acceptance_and_a_return_seen_together_succeed_from_sent() {
    let request = sent_request(spec(), 1);
    let result =
        run(&request, &answered(online(BOOT + 1), ResponseStatus::Accepted, 202, ""), at(9));
    assert_eq!(phase(&result), RebootPhase::Succeeded);
    assert_eq!(result.status.boot_after, Some(BOOT + 1));
    assert_eq!(result.status.completed_at, time(9));
    assert_eq!(result.status.duration.as_deref(), Some("8s"));
    assert!(result.transition);
    assert!(!result.send);
}

#[test]
fn a_succeeded_answer_succeeds_from_any_in_flight_phase() {
    let requests = [
        sent_request(spec(), 1),
        accepted_request(spec(), 1, 2),
        rebooting_request(spec(), 1, 2, 3),
    ];
    for request in &requests {
        let result = run(
            request,
            &answered(online(BOOT + 1), ResponseStatus::Succeeded, 200, "back"),
            at(61),
        );
        assert_eq!(phase(&result), RebootPhase::Succeeded);
        assert_eq!(reason(&result), "Rebooted");
        assert_eq!(result.status.boot_after, Some(BOOT + 1));
        assert_eq!(
            result.status.response,
            Some(RecordedResponse { code: 200, message: "back".into() })
        );
        assert_eq!(result.status.completed_at, time(61));
        assert_eq!(result.status.duration.as_deref(), Some("1m0s"));
        assert_succeeded_conditions(&result.status);
        assert!(result.transition);
        assert!(!result.send);
        assert_eq!(result.requeue_after, None, "no TTL");
    }
}

// ---------------------------------------------------------------------------------------------
// Sending and resending
// ---------------------------------------------------------------------------------------------

#[test]
fn a_sent_request_is_resent_only_after_the_resend_interval() {
    let request = sent_request(spec(), 1);
    let interval = RESEND_INTERVAL.as_secs() as i64;
    let cases = [
        (None, at(2), true, "not published since the operator started"),
        (Some(at(1)), at(1), false, "just published"),
        (Some(at(1)), at(2), false, "a second later"),
        (Some(at(1)), at(interval), false, "a second before the interval ends"),
        (Some(at(1)), at(1 + interval), true, "exactly the interval later"),
        (Some(at(1)), at(1 + 3 * interval), true, "long after the last send"),
    ];
    for (last_sent, now, expected, why) in cases {
        let device = DeviceView { last_sent, ..online(BOOT) };
        let result = run(&request, &device, now);
        assert_eq!(result.send, expected, "{why}");
        assert_eq!(phase(&result), RebootPhase::Sent, "{why}");
        assert!(!result.transition, "{why}");
        assert_eq!(
            result.status,
            request.status.clone().expect("status"),
            "a resend does not change the status"
        );
    }
}

#[test]
fn resending_keeps_sent_at_and_boot_before_of_the_first_send() {
    let request = sent_request(spec(), 1);
    let result = run(&request, &online(BOOT + 2), at(20));
    assert!(result.send);
    assert_eq!(result.status.sent_at, time(1));
    assert_eq!(result.status.boot_before, Some(BOOT));
}

#[test]
fn sent_requeues_at_the_next_resend_or_the_response_deadline_whichever_is_first() {
    let request = sent_request(spec(), 1);
    assert_eq!(run(&request, &online(BOOT), at(2)).requeue_after, Some(RESEND_INTERVAL));
    assert_eq!(run(&request, &online(BOOT), at(29)).requeue_after, Some(Duration::from_secs(2)));
}

#[test]
fn nothing_is_sent_while_the_operator_is_not_connected_to_the_broker() {
    // Pending: waits for the broker instead of sending.
    let spec_with_wait = RebootRequestSpec { connect_timeout_seconds: 60, ..spec() };
    let device = DeviceView { mqtt_connected: false, ..online(BOOT) };
    let result = run(&request_with(spec_with_wait.clone()), &device, at(1));
    assert!(!result.send);
    assert_eq!(phase(&result), RebootPhase::Pending);
    assert_eq!(reason(&result), "BrokerUnavailable");
    assert_eq!(message(&result), "Waiting for the operator's MQTT connection");
    assert_eq!(result.status.sent_at, None);
    assert_eq!(result.requeue_after, Some(Duration::from_secs(5)));

    // Sent: no resend, however long ago the last one was, but the response deadline still runs.
    let request = sent_request(spec(), 1);
    for last_sent in [None, Some(at(1)), Some(at(-1000))] {
        let device = DeviceView { mqtt_connected: false, last_sent, ..online(BOOT) };
        let result = run(&request, &device, at(20));
        assert!(!result.send, "last_sent {last_sent:?}");
        assert_eq!(phase(&result), RebootPhase::Sent);
    }
    let device = DeviceView { mqtt_connected: false, ..online(BOOT) };
    assert_eq!(phase(&run(&request, &device, at(31))), RebootPhase::TimedOut);
}

#[test]
fn nothing_is_sent_once_the_device_answered() {
    let requests = [accepted_request(spec(), 1, 2), rebooting_request(spec(), 1, 2, 3)];
    for request in &requests {
        for device in [
            answered(online(BOOT), ResponseStatus::Accepted, 202, ""),
            answered(offline(), ResponseStatus::InProgress, 102, ""),
            online(BOOT),
            offline(),
        ] {
            let result = run(request, &device, at(60));
            assert!(
                !result.send,
                "{:?} with {device:?}",
                request.status.as_ref().and_then(|s| s.phase)
            );
        }
    }
    // A first answer while Sent does not trigger a send either, even if a resend is due.
    let request = sent_request(spec(), 1);
    let result = run(&request, &answered(online(BOOT), ResponseStatus::Accepted, 202, ""), at(60));
    assert!(!result.send);
}

#[test]
fn nothing_is_sent_in_or_into_a_terminal_phase() {
    for phase_wanted in TERMINAL {
        let request = terminal_request(phase_wanted, None);
        for device in every_kind_of_device_view() {
            assert!(!run(&request, &device, at(25)).send, "{phase_wanted:?} with {device:?}");
        }
    }
    // Transitions into a terminal phase do not send, even from Sent with a resend due.
    let request = sent_request(spec(), 1);
    for kind in [
        ResponseStatus::Succeeded,
        ResponseStatus::Failed,
        ResponseStatus::Rejected,
        ResponseStatus::Expired,
    ] {
        let result = run(&request, &answered(online(BOOT), kind, 400, ""), at(60));
        assert!(phase(&result).is_terminal());
        assert!(!result.send, "{kind:?}");
    }
    assert!(!run(&request, &online(BOOT), at(31)).send, "NoResponse timeout");
}

// ---------------------------------------------------------------------------------------------
// Offline and missing devices
// ---------------------------------------------------------------------------------------------

#[test]
fn an_offline_device_with_no_connect_timeout_fails_at_once() {
    let result = run(&request(), &offline(), at(3));
    assert_eq!(phase(&result), RebootPhase::Failed, "nothing timed out");
    assert_eq!(reason(&result), "DeviceNotOnline");
    assert_eq!(message(&result), "Device sensor-1 is not online and connectTimeoutSeconds is 0");
    assert!(!result.send);
    assert!(result.transition);
    assert!(!result.delete);
    assert_eq!(result.requeue_after, None);
    let status = &result.status;
    assert_eq!(status.sent_at, None);
    assert_eq!(status.accepted_at, None);
    assert_eq!(status.boot_before, None);
    assert_eq!(status.completed_at, time(3));
    assert_eq!(status.duration.as_deref(), Some("3s"), "measured from creation when never sent");
    assert_eq!(status.request_id.as_deref(), Some("uid-1"));
    assert_failed_conditions(status);
}

#[test]
fn a_device_without_presence_counts_as_offline() {
    let device = DeviceView { online: None, boot: None, ..offline() };
    let result = run(&request(), &device, at(0));
    assert_eq!(phase(&result), RebootPhase::Failed);
    assert_eq!(reason(&result), "DeviceNotOnline");
    assert_eq!(result.status.duration.as_deref(), Some("0ms"));
}

#[test]
fn an_offline_device_is_waited_for_and_sent_to_when_it_comes_online() {
    let mut request = request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() });
    let settings = RebootSettings::default();
    let waiting = advance(&mut request, &offline(), at(1), settings);
    assert_eq!(phase(&waiting), RebootPhase::Pending);
    assert_eq!(reason(&waiting), "WaitingForDevice");
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(59)));
    assert!(!waiting.send);
    assert_in_progress_conditions(&waiting.status);

    let still = advance(&mut request, &offline(), at(59), settings);
    assert_eq!(phase(&still), RebootPhase::Pending);
    assert!(!still.transition);
    assert_eq!(still.status, waiting.status, "nothing changed while waiting");
    assert_eq!(still.requeue_after, Some(Duration::from_secs(1)));

    let sent = advance(&mut request, &online(BOOT + 4), at(59), settings);
    assert_eq!(phase(&sent), RebootPhase::Sent);
    assert!(sent.send);
    assert!(sent.transition);
    assert_eq!(sent.status.sent_at, time(59));
    assert_eq!(sent.status.boot_before, Some(BOOT + 4));
    // The response timeout now counts from sentAt, not from creation.
    let result = advance(&mut request, &online(BOOT + 4), at(88), settings);
    assert_eq!(phase(&result), RebootPhase::Sent);
}

#[test]
fn an_offline_device_times_out_after_the_connect_timeout() {
    let request = request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() });
    let before = run(&request, &offline(), at(59));
    assert_eq!(phase(&before), RebootPhase::Pending);

    let result = run(&with_status(request.clone(), before.status.clone()), &offline(), at(60));
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(reason(&result), "DeviceNotOnline");
    assert_eq!(message(&result), "Device sensor-1 did not come online within 60s");
    assert!(result.transition);
    assert!(!result.send);
    assert_eq!(result.status.completed_at, time(60));
    assert_eq!(result.status.duration.as_deref(), Some("1m0s"));
    assert_eq!(result.status.sent_at, None);
    assert_failed_conditions(&result.status);

    // A device that comes online exactly at the deadline is still sent to.
    let sent = run(&with_status(request, before.status), &online(BOOT), at(60));
    assert_eq!(phase(&sent), RebootPhase::Sent);
    assert!(sent.send);
}

#[test]
fn a_missing_device_fails_with_device_not_found() {
    let result = run(&request(), &missing(), at(1));
    assert_eq!(phase(&result), RebootPhase::Failed, "nothing timed out");
    assert_eq!(reason(&result), "DeviceNotFound");
    assert_eq!(message(&result), "Device sensor-1 does not exist");
    assert!(!result.send);
    assert!(result.transition);
    assert_eq!(result.status.completed_at, time(1));
    assert_failed_conditions(&result.status);

    // Presence data without a Device object does not count either.
    let ghost = DeviceView { exists: false, ..online(BOOT) };
    let result = run(&request(), &ghost, at(1));
    assert_eq!(reason(&result), "DeviceNotFound");
    assert!(!result.send);
}

#[test]
fn a_device_deleted_in_flight_fails_the_request_at_once() {
    let mut request = request();
    let settings = RebootSettings::default();
    let sent = advance(&mut request, &online(BOOT), at(1), settings);
    assert_eq!(phase(&sent), RebootPhase::Sent);
    let gone = run(&request, &missing(), at(2));
    assert_eq!(phase(&gone), RebootPhase::Failed);
    assert_eq!(reason(&gone), "DeviceNotFound");
    assert_eq!(
        message(&gone),
        "Device sensor-1 was deleted while the request was in flight; whether the device executed it is unknown"
    );
    assert!(!gone.send);
    assert_eq!(gone.status.completed_at, time(2));
}

#[test]
fn a_missing_device_is_waited_for_up_to_the_connect_timeout() {
    let mut request = request_with(RebootRequestSpec { connect_timeout_seconds: 30, ..spec() });
    let settings = RebootSettings::default();
    let waiting = advance(&mut request, &missing(), at(1), settings);
    assert_eq!(phase(&waiting), RebootPhase::Pending);
    assert_eq!(reason(&waiting), "DeviceNotFound");
    assert_eq!(message(&waiting), "Waiting up to 30s for Device sensor-1 to exist");
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(29)));
    assert_in_progress_conditions(&waiting.status);

    // It appears, offline: keep waiting, for another reason.
    let offline_now = advance(&mut request, &offline(), at(10), settings);
    assert_eq!(phase(&offline_now), RebootPhase::Pending);
    assert_eq!(reason(&offline_now), "WaitingForDevice");
    assert!(!offline_now.transition, "same phase, other reason");

    let timed_out = run(&request, &missing(), at(30));
    assert_eq!(phase(&timed_out), RebootPhase::TimedOut);
    assert_eq!(reason(&timed_out), "DeviceNotFound");
    assert!(timed_out.transition);
}

#[test]
fn an_online_device_is_not_reported_offline_when_the_broker_is_down() {
    // connectTimeoutSeconds 0, the device is online, but the operator lost the broker: the
    // request must not claim that the device is not online (it should wait for the broker,
    // Pending/BrokerUnavailable, as it does when connectTimeoutSeconds > 0).
    let device = DeviceView { mqtt_connected: false, ..online(BOOT) };
    let result = run(&request(), &device, at(1));
    assert!(!result.send);
    assert_ne!(reason(&result), "DeviceNotOnline", "{}", message(&result));
    assert_eq!(phase(&result), RebootPhase::Pending);
    assert_eq!(reason(&result), "BrokerUnavailable");
}

// ---------------------------------------------------------------------------------------------
// Time-outs after sending
// ---------------------------------------------------------------------------------------------

#[test]
fn no_answer_within_the_response_timeout_times_out_with_no_response() {
    let request = sent_request(spec(), 5);
    let before = run(&request, &online(BOOT), at(34));
    assert_eq!(phase(&before), RebootPhase::Sent);
    assert_eq!(before.requeue_after, Some(Duration::from_secs(1)));

    let result = run(&request, &online(BOOT), at(35));
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(reason(&result), "NoResponse");
    assert_eq!(message(&result), "sensor-1 did not answer within 30s");
    assert!(!result.send);
    assert!(result.transition);
    assert_eq!(result.requeue_after, None);
    assert_eq!(result.status.sent_at, time(5));
    assert_eq!(result.status.completed_at, time(35));
    assert_eq!(result.status.duration.as_deref(), Some("30s"));
    assert_eq!(result.status.response, None);
    assert_eq!(result.status.accepted_at, None);
    assert_failed_conditions(&result.status);
}

#[test]
fn an_answer_that_arrives_after_the_response_deadline_still_counts() {
    let request = sent_request(spec(), 5);
    let result = run(&request, &answered(online(BOOT), ResponseStatus::Accepted, 202, ""), at(100));
    assert_eq!(phase(&result), RebootPhase::Accepted);
}

#[test]
fn accepted_but_never_back_times_out_with_no_return_after_return_timeout_plus_delay() {
    let settings =
        RebootSettings { return_timeout: Duration::from_secs(60), ..RebootSettings::default() };
    let spec = RebootRequestSpec { delay_seconds: 10, ..spec() };
    let mut request = request_with(spec);
    advance(&mut request, &online(BOOT), at(1), settings);
    let accepted = advance(
        &mut request,
        &answered(online(BOOT), ResponseStatus::Accepted, 202, ""),
        at(2),
        settings,
    );
    assert_eq!(phase(&accepted), RebootPhase::Accepted);
    assert_eq!(accepted.requeue_after, Some(Duration::from_secs(70)));

    let down = advance(
        &mut request,
        &answered(offline(), ResponseStatus::Accepted, 202, ""),
        at(20),
        settings,
    );
    assert_eq!(phase(&down), RebootPhase::Rebooting);
    assert_eq!(down.requeue_after, Some(Duration::from_secs(52)));

    let before =
        step(&request, &answered(offline(), ResponseStatus::Accepted, 202, ""), at(71), settings);
    assert_eq!(phase(&before), RebootPhase::Rebooting);
    assert_eq!(before.requeue_after, Some(Duration::from_secs(1)));

    let result =
        step(&request, &answered(offline(), ResponseStatus::Accepted, 202, ""), at(72), settings);
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(reason(&result), "NoReturn");
    assert_eq!(message(&result), "sensor-1 did not come back within 70s after accepting");
    assert!(result.transition);
    assert!(!result.send);
    assert_eq!(result.status.accepted_at, time(2));
    assert_eq!(result.status.completed_at, time(72));
    assert_eq!(result.status.duration.as_deref(), Some("1m11s"));
    assert_eq!(result.status.boot_after, None);
    assert_failed_conditions(&result.status);
}

#[test]
fn accepted_with_the_device_online_on_its_old_boot_also_times_out_with_no_return() {
    let settings = RebootSettings::default();
    let request = accepted_request(spec(), 1, 2);
    let result = step(&request, &online(BOOT), at(302), settings);
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(reason(&result), "NoReturn");
    assert_eq!(message(&result), "sensor-1 did not come back within 300s after accepting");
}

#[test]
fn a_return_at_the_no_return_deadline_still_succeeds() {
    let request = rebooting_request(spec(), 1, 2, 3);
    let result = run(&request, &online(BOOT + 1), at(302));
    assert_eq!(phase(&result), RebootPhase::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// Final answers of the device
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rejection_ends_the_request_as_rejected_with_the_devices_response() {
    let request = sent_request(spec(), 1);
    let result = run(
        &request,
        &answered(online(BOOT), ResponseStatus::Rejected, 409, "another reboot is running"),
        at(3),
    );
    assert_eq!(phase(&result), RebootPhase::Rejected);
    assert_eq!(reason(&result), "DeviceRejected");
    assert_eq!(message(&result), "sensor-1 rejected the reboot: another reboot is running");
    assert_eq!(
        result.status.response,
        Some(RecordedResponse { code: 409, message: "another reboot is running".into() })
    );
    assert!(result.transition);
    assert!(!result.send);
    assert_eq!(result.status.completed_at, time(3));
    assert_eq!(result.status.duration.as_deref(), Some("2s"));
    assert_eq!(result.status.accepted_at, None);
    assert_eq!(result.status.boot_after, None);
    assert_failed_conditions(&result.status);
}

#[test]
fn a_rejection_without_a_message_names_the_code() {
    let request = sent_request(spec(), 1);
    let result = run(&request, &answered(online(BOOT), ResponseStatus::Rejected, 409, ""), at(3));
    assert_eq!(message(&result), "sensor-1 rejected the reboot: code 409");
    assert_eq!(
        result.status.response,
        Some(RecordedResponse { code: 409, message: String::new() })
    );
}

#[test]
fn a_failure_ends_the_request_as_failed() {
    for request in [
        sent_request(spec(), 1),
        accepted_request(spec(), 1, 2),
        rebooting_request(spec(), 1, 2, 3),
    ] {
        let from = request.status.as_ref().and_then(|s| s.phase);
        let result = run(
            &request,
            &answered(online(BOOT), ResponseStatus::Failed, 500, "bootloader locked"),
            at(9),
        );
        assert_eq!(phase(&result), RebootPhase::Failed, "from {from:?}");
        assert_eq!(reason(&result), "DeviceFailed");
        assert_eq!(message(&result), "sensor-1 failed to reboot: bootloader locked");
        assert_eq!(
            result.status.response,
            Some(RecordedResponse { code: 500, message: "bootloader locked".into() })
        );
        assert_eq!(result.status.completed_at, time(9));
        assert_eq!(result.status.duration.as_deref(), Some("8s"));
        assert!(result.transition);
        assert!(!result.send);
        assert_failed_conditions(&result.status);
    }
    let request = sent_request(spec(), 1);
    let result = run(&request, &answered(online(BOOT), ResponseStatus::Failed, 500, ""), at(9));
    assert_eq!(message(&result), "sensor-1 failed to reboot: code 500");
}

#[test]
fn an_expired_answer_times_out_with_reason_expired() {
    let request = sent_request(spec(), 1);
    let result =
        run(&request, &answered(online(BOOT), ResponseStatus::Expired, 410, "expired"), at(4));
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(reason(&result), "Expired");
    assert_eq!(message(&result), "The request reached sensor-1 after it expired");
    assert_eq!(
        result.status.response,
        Some(RecordedResponse { code: 410, message: "expired".into() })
    );
    assert_eq!(result.status.completed_at, time(4));
    assert!(result.transition);
    assert!(!result.send);
    assert_failed_conditions(&result.status);
}

#[test]
fn answers_are_ignored_while_pending() {
    let request = request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() });
    let device = answered(offline(), ResponseStatus::Rejected, 409, "stale");
    let result = run(&request, &device, at(1));
    assert_eq!(phase(&result), RebootPhase::Pending);
    assert_eq!(result.status.response, None);
}

// ---------------------------------------------------------------------------------------------
// Terminal phases and TTL
// ---------------------------------------------------------------------------------------------

#[test]
fn terminal_phases_never_change_whatever_the_device_view_says() {
    for phase_wanted in TERMINAL {
        let request = terminal_request(phase_wanted, None);
        let status = request.status.clone().expect("status");
        for device in every_kind_of_device_view() {
            for now in [at(20), at(21), at(100_000)] {
                let result = run(&request, &device, now);
                assert_eq!(result.status, status, "{phase_wanted:?} with {device:?}");
                assert!(!result.transition);
                assert!(!result.send);
                assert!(!result.delete, "no TTL");
                assert_eq!(result.requeue_after, None, "no TTL");
            }
        }
    }
}

#[test]
fn terminal_phases_keep_even_a_foreign_generation_and_settings() {
    let mut request = terminal_request(RebootPhase::Failed, None);
    let status = request.status.clone().expect("status");
    request.metadata.generation = Some(9);
    let settings = RebootSettings { return_timeout: Duration::ZERO, ..RebootSettings::default() };
    let result = step(&request, &online(BOOT + 1), at(1000), settings);
    assert_eq!(result.status, status);
}

#[test]
fn the_ttl_requeues_until_it_is_due_then_deletes() {
    for phase_wanted in TERMINAL {
        let request = terminal_request(phase_wanted, Some(60));
        assert_eq!(request.status.as_ref().and_then(|s| s.completed_at.clone()), time(20));
        let status = request.status.clone().expect("status");

        let early = run(&request, &online(BOOT), at(20));
        assert!(!early.delete);
        assert_eq!(early.requeue_after, Some(Duration::from_secs(60)));

        let later = run(&request, &online(BOOT), at(50));
        assert!(!later.delete);
        assert_eq!(later.requeue_after, Some(Duration::from_secs(30)));
        assert_eq!(later.status, status);

        for now in [at(80), at(81), at(10_000)] {
            let due = run(&request, &online(BOOT), now);
            assert!(due.delete, "{phase_wanted:?} at {now}");
            assert!(!due.send);
            assert!(!due.transition);
            assert_eq!(due.status, status);
        }
    }
}

#[test]
fn reaching_a_terminal_phase_requeues_for_the_ttl() {
    let spec = RebootRequestSpec { ttl_seconds_after_finished: Some(45), ..spec() };
    let request = sent_request(spec, 1);
    let result = run(&request, &answered(online(BOOT), ResponseStatus::Failed, 500, ""), at(5));
    assert_eq!(result.requeue_after, Some(Duration::from_secs(45)));
    assert!(!result.delete, "deletion only happens on a later step");
    let result = run(&request, &online(BOOT), at(31));
    assert_eq!(phase(&result), RebootPhase::TimedOut);
    assert_eq!(result.requeue_after, Some(Duration::from_secs(45)));
}

#[test]
fn a_zero_ttl_deletes_on_the_next_step() {
    let request = terminal_request(RebootPhase::Succeeded, Some(0));
    let result = run(&request, &online(BOOT + 1), at(20));
    assert!(result.delete);
}

#[test]
fn without_a_ttl_a_finished_request_is_never_deleted() {
    let request = terminal_request(RebootPhase::Rejected, None);
    let result = run(&request, &online(BOOT), at(1_000_000));
    assert!(!result.delete);
    assert_eq!(result.requeue_after, None);
}

// ---------------------------------------------------------------------------------------------
// Transitions, stability and idempotence
// ---------------------------------------------------------------------------------------------

#[test]
fn transition_is_true_only_when_the_phase_changes() {
    let settings = RebootSettings::default();
    let mut request = request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() });
    let accepted = answered(online(BOOT), ResponseStatus::Accepted, 202, "");
    let steps: Vec<(DeviceView, i64, RebootPhase, bool)> = vec![
        (missing(), 1, RebootPhase::Pending, true),
        (offline(), 2, RebootPhase::Pending, false),
        (DeviceView { mqtt_connected: false, ..online(BOOT) }, 3, RebootPhase::Pending, false),
        (online(BOOT), 4, RebootPhase::Sent, true),
        (online(BOOT), 5, RebootPhase::Sent, false),
        (DeviceView { last_sent: Some(at(4)), ..online(BOOT) }, 10, RebootPhase::Sent, false),
        (accepted.clone(), 11, RebootPhase::Accepted, true),
        (accepted.clone(), 12, RebootPhase::Accepted, false),
        (DeviceView { online: Some(false), ..accepted.clone() }, 13, RebootPhase::Rebooting, true),
        (DeviceView { online: Some(false), ..accepted.clone() }, 14, RebootPhase::Rebooting, false),
        (accepted.clone(), 15, RebootPhase::Rebooting, false),
        (DeviceView { boot: Some(boot(BOOT + 1)), ..accepted }, 16, RebootPhase::Succeeded, true),
        (online(BOOT + 1), 17, RebootPhase::Succeeded, false),
    ];
    for (device, offset, expected_phase, expected_transition) in steps {
        let result = advance(&mut request, &device, at(offset), settings);
        assert_eq!(phase(&result), expected_phase, "at +{offset}s");
        assert_eq!(result.transition, expected_transition, "at +{offset}s");
    }
}

#[test]
fn a_status_with_an_explicit_pending_phase_is_no_transition() {
    let status = RebootRequestStatus { phase: Some(RebootPhase::Pending), ..Default::default() };
    let request = with_status(
        request_with(RebootRequestSpec { connect_timeout_seconds: 60, ..spec() }),
        status,
    );
    let result = run(&request, &offline(), at(1));
    assert_eq!(phase(&result), RebootPhase::Pending);
    assert!(!result.transition);
    assert_eq!(result.status.request_id.as_deref(), Some("uid-1"), "filled in");
    assert_in_progress_conditions(&result.status);
}

#[test]
fn step_is_idempotent_in_every_phase() {
    let wait = RebootRequestSpec { connect_timeout_seconds: 60, ..spec() };
    let accepted = answered(online(BOOT), ResponseStatus::Accepted, 202, "ok");
    let cases: Vec<(&str, RebootRequest, DeviceView, i64)> = vec![
        ("new, device offline", request_with(wait.clone()), offline(), 1),
        ("new, device missing", request_with(wait.clone()), missing(), 1),
        (
            "new, broker down",
            request_with(wait.clone()),
            DeviceView { mqtt_connected: false, ..online(BOOT) },
            1,
        ),
        ("new, device online", request(), online(BOOT), 1),
        ("new, times out at once", request(), offline(), 1),
        ("new, missing device fails", request(), missing(), 1),
        ("pending past deadline", request_with(wait), offline(), 61),
        ("sent, no answer", sent_request(spec(), 1), online(BOOT), 3),
        (
            "sent, resend due",
            sent_request(spec(), 1),
            DeviceView { last_sent: Some(at(1)), ..online(BOOT) },
            9,
        ),
        ("sent, response deadline", sent_request(spec(), 1), online(BOOT), 31),
        ("sent, accepted", sent_request(spec(), 1), accepted.clone(), 3),
        (
            "sent, accepted while offline",
            sent_request(spec(), 1),
            DeviceView { online: Some(false), ..accepted.clone() },
            3,
        ),
        (
            "sent, accepted and back",
            sent_request(spec(), 1),
            DeviceView { boot: Some(boot(BOOT + 1)), ..accepted.clone() },
            3,
        ),
        (
            "sent, rejected",
            sent_request(spec(), 1),
            answered(online(BOOT), ResponseStatus::Rejected, 409, "busy"),
            3,
        ),
        (
            "sent, failed",
            sent_request(spec(), 1),
            answered(online(BOOT), ResponseStatus::Failed, 500, "x"),
            3,
        ),
        (
            "sent, expired",
            sent_request(spec(), 1),
            answered(online(BOOT), ResponseStatus::Expired, 410, ""),
            3,
        ),
        (
            "sent, succeeded",
            sent_request(spec(), 1),
            answered(online(BOOT + 1), ResponseStatus::Succeeded, 200, ""),
            3,
        ),
        ("accepted, waiting", accepted_request(spec(), 1, 2), accepted.clone(), 10),
        ("accepted, goes down", accepted_request(spec(), 1, 2), offline(), 10),
        ("accepted, no return", accepted_request(spec(), 1, 2), accepted.clone(), 302),
        ("accepted, back", accepted_request(spec(), 1, 2), online(BOOT + 1), 10),
        ("rebooting, waiting", rebooting_request(spec(), 1, 2, 3), offline(), 10),
        ("rebooting, same boot", rebooting_request(spec(), 1, 2, 3), online(BOOT), 10),
        ("rebooting, back", rebooting_request(spec(), 1, 2, 3), online(BOOT + 1), 10),
        ("rebooting, no return", rebooting_request(spec(), 1, 2, 3), offline(), 302),
    ];
    for (name, request, device, offset) in cases {
        let first = assert_idempotent(&request, &device, at(offset));
        assert!(first.status.phase.is_some(), "{name}");
    }
    for phase_wanted in TERMINAL {
        for ttl in [None, Some(0), Some(60)] {
            let request = terminal_request(phase_wanted, ttl);
            for device in every_kind_of_device_view() {
                assert_idempotent(&request, &device, at(30));
            }
        }
    }
}

#[test]
fn an_unchanged_situation_yields_an_identical_status_later() {
    // The controller skips the write when the status is equal: waiting must not churn it.
    let wait = RebootRequestSpec { connect_timeout_seconds: 60, ..spec() };
    let accepted = answered(online(BOOT), ResponseStatus::Accepted, 202, "ok");
    let cases: Vec<(&str, RebootRequest, DeviceView)> = vec![
        ("pending", request_with(wait.clone()), offline()),
        ("pending, missing", request_with(wait), missing()),
        ("sent", sent_request(spec(), 1), online(BOOT)),
        ("accepted", accepted_request(spec(), 1, 2), accepted),
        ("rebooting", rebooting_request(spec(), 1, 2, 3), offline()),
    ];
    for (name, mut request, device) in cases {
        let settings = RebootSettings::default();
        let first = advance(&mut request, &device, at(5), settings);
        for offset in [6, 10, 25] {
            let later = step(&request, &device, at(offset), settings);
            assert_eq!(later.status, first.status, "{name} at +{offset}s");
            assert!(!later.transition, "{name} at +{offset}s");
        }
    }
}

#[test]
fn observed_generation_and_request_id_come_from_the_object() {
    let mut request = request();
    request.metadata.generation = Some(4);
    request.metadata.uid = Some("another-uid".into());
    let result = run(&request, &online(BOOT), at(1));
    assert_eq!(result.status.observed_generation, Some(4));
    assert_eq!(result.status.request_id.as_deref(), Some("another-uid"));
    assert!(result.status.conditions.iter().all(|c| c.observed_generation == Some(4)));
}

// ---------------------------------------------------------------------------------------------
// human_duration
// ---------------------------------------------------------------------------------------------

#[test]
fn human_duration_formats_for_people() {
    let cases = [
        (Duration::ZERO, "0ms"),
        (Duration::from_millis(850), "850ms"),
        (Duration::from_secs(1), "1s"),
        (Duration::from_millis(14_900), "14s"),
        (Duration::from_secs(59), "59s"),
        (Duration::from_secs(60), "1m0s"),
        (Duration::from_secs(123), "2m3s"),
        (Duration::from_secs(3599), "59m59s"),
        (Duration::from_secs(3600), "1h0m"),
        (Duration::from_secs(3720 + 59), "1h2m"),
        (Duration::from_secs(100 * 3600), "100h0m"),
    ];
    for (duration, expected) in cases {
        assert_eq!(human_duration(duration), expected, "{duration:?}");
    }
}
