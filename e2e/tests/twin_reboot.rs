//! Twin and reboot end to end: a real kube-apiserver, mosquitto, the operator binary and the
//! device simulator (or a raw MQTT client acting as a device). Each test has its own
//! namespace, topic root and operator.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{RebootPhase, RebootRequest};
use kubetwin_e2e::{
    fleet::{Operator, Simulator, metric_value as metric},
    mqtt::TestClient,
    scenario::{
        RawDevice, condition, create_device, create_reboot, is_connected, phase, reason, reported,
        setup, setup_with_broker,
    },
    wait::wait_for,
};
use serde_json::{Value, json};

/// Records every distinct phase a RebootRequest passes through, from a watch.
fn record_phases(requests: &Api<RebootRequest>, name: &str) -> Arc<Mutex<Vec<RebootPhase>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(requests.clone(), config).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(request)) = stream.next().await {
            if let (Some(phase), Ok(mut seen)) = (phase(&request), sink.lock())
                && seen.last() != Some(&phase)
            {
                seen.push(phase);
            }
        }
    });
    seen
}

fn phases(seen: &Arc<Mutex<Vec<RebootPhase>>>) -> Vec<RebootPhase> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_desired_change_reaches_the_device_and_in_sync_follows_the_generation() {
    let s = setup("desired").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({"desired": {"telemetryIntervalSeconds": 10}}))
        .await;
    let _sim = Simulator::start(s.env, &s.scope, &[s.scope.device_id("sensor-1")], &[])
        .expect("simulator");

    let device = wait_for(&s.devices, "sensor-1", "InSync at generation 1", |d| {
        condition(d, "InSync")
            .is_some_and(|c| c.status == "True" && c.observed_generation == Some(1))
    })
    .await;
    assert_eq!(reported(&device, "telemetryIntervalSeconds"), Some(json!(10)));
    assert_eq!(device.status.as_ref().and_then(|s| s.applied.as_ref()).map(|a| a.version), Some(1));
    assert!(condition(&device, "Ready").is_some_and(|c| c.status == "True"));

    let patch = json!({"spec": {"desired": {"telemetryIntervalSeconds": 30, "led": "blue"}}});
    s.devices
        .patch("sensor-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    let device = wait_for(&s.devices, "sensor-1", "InSync at generation 2", |d| {
        condition(d, "InSync")
            .is_some_and(|c| c.status == "True" && c.observed_generation == Some(2))
    })
    .await;
    let status = device.status.as_ref().expect("status");
    assert_eq!(
        status.applied.as_ref().map(|a| (a.epoch.as_str(), a.version)),
        Some((device.uid().as_deref().unwrap_or(""), 2))
    );
    assert_eq!(reported(&device, "telemetryIntervalSeconds"), Some(json!(30)));
    assert_eq!(reported(&device, "led"), Some(json!("blue")));
    assert_eq!(status.observed_generation, Some(2));
}

#[tokio::test]
async fn reported_properties_and_their_deletion_appear_in_status() {
    let s = setup("reported").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let device = RawDevice::connect(&s, "sensor-1").await;
    let started = k8s_openapi::jiff::Timestamp::now();
    device.presence("online", 1, 1).await;
    let full = json!({"firmwareVersion": "2.1.0", "battery": {"level": 80, "charging": false}, "site": "hall-3"});
    device.report(1, 1, true, full).await;
    let got =
        wait_for(&s.devices, "sensor-1", "reported properties", |d| reported(d, "site").is_some())
            .await;
    assert_eq!(reported(&got, "firmwareVersion"), Some(json!("2.1.0")));
    assert_eq!(reported(&got, "battery"), Some(json!({"level": 80, "charging": false})));
    assert!(is_connected(&got));

    device.report(1, 2, false, json!({"site": null, "battery": {"level": 75}})).await;
    let got =
        wait_for(&s.devices, "sensor-1", "site deleted", |d| reported(d, "site").is_none()).await;
    assert_eq!(
        reported(&got, "battery"),
        Some(json!({"level": 75, "charging": false})),
        "merge patch keeps siblings"
    );
    let cursor = got.status.as_ref().and_then(|s| s.last_reported).expect("lastReported");
    assert_eq!((cursor.boot, cursor.seq), (1, 2));
    let reported_at = got.status.as_ref().and_then(|s| s.reported_at.clone()).expect("reportedAt");
    // API times have whole seconds.
    assert!(
        reported_at.0.as_second() >= started.as_second()
            && reported_at.0 <= k8s_openapi::jiff::Timestamp::now(),
        "reportedAt {} is the time of the last accepted report, after the test started at {started}",
        reported_at.0
    );

    let table =
        s.env.kubectl(&["get", "device", "sensor-1", "-n", &s.scope.namespace]).expect("kubectl");
    assert!(table.contains("2.1.0"), "FIRMWARE column shows the reported firmware: {table}");
}

#[tokio::test]
async fn a_reboot_goes_through_every_phase() {
    let s = setup("reboot").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(
        s.env,
        &s.scope,
        std::slice::from_ref(&id),
        &["--response-delay-ms=1500", "--boot-seconds=2"],
    )
    .expect("simulator");
    let before = wait_for(&s.devices, "sensor-1", "connected with a report", |d| {
        is_connected(d) && reported(d, "lastReboot").is_some()
    })
    .await;
    let last_reboot_before = reported(&before, "lastReboot");

    let seen = record_phases(&s.requests, "reboot-1");
    let created = create_reboot(
        &s.requests,
        "reboot-1",
        json!({"deviceName": "sensor-1", "delaySeconds": 2}),
    )
    .await;
    let done = wait_for(&s.requests, "reboot-1", "a terminal phase", |r| {
        phase(r).is_some_and(RebootPhase::is_terminal)
    })
    .await;
    let status = done.status.clone().expect("status");
    assert_eq!(status.phase, Some(RebootPhase::Succeeded), "{status:#?}");

    // The recording watch sees the terminal phase too (a positive barrier, not a pause).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while phases(&seen).last() != Some(&RebootPhase::Succeeded) {
        assert!(tokio::time::Instant::now() < deadline, "the watch never showed Succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = phases(&seen);
    let order =
        [RebootPhase::Sent, RebootPhase::Accepted, RebootPhase::Rebooting, RebootPhase::Succeeded];
    let positions: Vec<Option<usize>> =
        order.iter().map(|p| seen.iter().position(|s| s == p)).collect();
    assert!(positions.iter().all(Option::is_some), "every phase was observed: {seen:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "phases in order: {seen:?}");

    assert_eq!(status.request_id.as_deref(), created.uid().as_deref());
    let sent = status.sent_at.expect("sentAt").0;
    let accepted = status.accepted_at.expect("acceptedAt").0;
    let completed = status.completed_at.expect("completedAt").0;
    assert!(sent <= accepted && accepted <= completed, "{sent} <= {accepted} <= {completed}");
    let boot_before = status.boot_before.expect("bootBefore");
    assert_eq!(status.boot_after, Some(boot_before + 1), "back with the next boot");
    // API times have whole seconds: the exact duration is within one second of theirs.
    let took = completed.as_second() - sent.as_second();
    let duration = status.duration.clone().expect("duration");
    let allowed: Vec<String> = (took - 1..=took + 1).map(|t| format!("{t}s")).collect();
    assert!(
        allowed.contains(&duration),
        "TOOK shows the time from sending to the end (about {took}s): {duration}"
    );
    assert_eq!(status.response.as_ref().map(|r| r.code), Some(200));
    let succeeded =
        status.conditions.iter().find(|c| c.type_ == "Succeeded").expect("Succeeded condition");
    assert_eq!(succeeded.status, "True");

    let after = wait_for(&s.devices, "sensor-1", "a new lastReboot", |d| {
        reported(d, "lastReboot") != last_reboot_before
    })
    .await;
    assert_eq!(
        reported(&after, "reboot"),
        Some(json!({"status": "done", "requestId": created.uid().unwrap_or_default()}))
    );
    assert_eq!(sim.executed(&id).expect("ledger"), vec![created.uid().unwrap_or_default()]);

    let events =
        s.env.kubectl(&["get", "events", "-n", &s.scope.namespace, "-o", "json"]).expect("events");
    let events: Value = serde_json::from_str(&events).expect("json");
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for reason in ["Sent", "Accepted", "Rebooting", "Rebooted", "RebootSucceeded"] {
        assert!(reasons.contains(&reason), "event {reason} recorded: {reasons:?}");
    }
}

#[tokio::test]
async fn an_offline_device_is_waited_for_only_with_a_connect_timeout() {
    let s = setup("offline").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    create_device(&s.devices, "sensor-2", json!({})).await;

    create_reboot(&s.requests, "no-wait", json!({"deviceName": "sensor-2"})).await;
    // Nothing timed out: without a connect timeout an offline device fails the request at once.
    let failed =
        wait_for(&s.requests, "no-wait", "Failed", |r| phase(r) == Some(RebootPhase::Failed)).await;
    assert_eq!(reason(&failed).as_deref(), Some("DeviceNotOnline"));

    create_reboot(
        &s.requests,
        "wait",
        json!({"deviceName": "sensor-1", "connectTimeoutSeconds": 300}),
    )
    .await;
    let waiting =
        wait_for(&s.requests, "wait", "Pending", |r| phase(r) == Some(RebootPhase::Pending)).await;
    assert_eq!(reason(&waiting).as_deref(), Some("WaitingForDevice"));
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &["--boot-seconds=1"])
        .expect("simulator");
    let done = wait_for(&s.requests, "wait", "a terminal phase", |r| {
        phase(r).is_some_and(RebootPhase::is_terminal)
    })
    .await;
    assert_eq!(phase(&done), Some(RebootPhase::Succeeded), "{:#?}", done.status);
    assert_eq!(sim.executed(&id).expect("ledger").len(), 1);
}

#[tokio::test]
async fn silent_and_rejecting_devices_end_their_requests() {
    let s = setup("silent").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "silent", json!({})).await;
    create_device(&s.devices, "stubborn", json!({})).await;
    let silent_id = s.scope.device_id("silent");
    let stubborn_id = s.scope.device_id("stubborn");
    let _silent =
        Simulator::start(s.env, &s.scope, std::slice::from_ref(&silent_id), &["--never-answer"])
            .expect("sim");
    let _stubborn = Simulator::start(
        s.env,
        &s.scope,
        std::slice::from_ref(&stubborn_id),
        &["--reject-methods"],
    )
    .expect("sim");
    for name in ["silent", "stubborn"] {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }

    create_reboot(
        &s.requests,
        "to-silent",
        json!({"deviceName": "silent", "responseTimeoutSeconds": 5}),
    )
    .await;
    create_reboot(&s.requests, "to-stubborn", json!({"deviceName": "stubborn"})).await;
    let timed_out =
        wait_for(&s.requests, "to-silent", "TimedOut", |r| phase(r) == Some(RebootPhase::TimedOut))
            .await;
    assert_eq!(reason(&timed_out).as_deref(), Some("NoResponse"));
    let rejected = wait_for(&s.requests, "to-stubborn", "Rejected", |r| {
        phase(r) == Some(RebootPhase::Rejected)
    })
    .await;
    let response = rejected.status.as_ref().and_then(|s| s.response.clone()).expect("response");
    assert_eq!(response.code, 409);
    assert!(!response.message.is_empty(), "the device's message is kept");
    assert!(
        rejected
            .status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains(&response.message))
    );
    let failed = rejected
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Failed").cloned());
    assert_eq!(failed.map(|c| c.status), Some("True".to_string()));
}

#[tokio::test]
async fn a_killed_operator_resumes_and_the_device_reboots_once() {
    let s = setup("restart").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(
        s.env,
        &s.scope,
        std::slice::from_ref(&id),
        &["--response-delay-ms=4000", "--boot-seconds=6"],
    )
    .expect("simulator");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;

    let created = create_reboot(&s.requests, "reboot-1", json!({"deviceName": "sensor-1"})).await;
    wait_for(&s.requests, "reboot-1", "Sent", |r| phase(r) == Some(RebootPhase::Sent)).await;
    operator.kill();
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    wait_for(&s.requests, "reboot-1", "Rebooting", |r| phase(r) == Some(RebootPhase::Rebooting))
        .await;
    operator.kill();
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted again");
    let done = wait_for(&s.requests, "reboot-1", "a terminal phase", |r| {
        phase(r).is_some_and(RebootPhase::is_terminal)
    })
    .await;
    assert_eq!(phase(&done), Some(RebootPhase::Succeeded), "{:#?}", done.status);
    assert_eq!(
        sim.executed(&id).expect("ledger"),
        vec![created.uid().unwrap_or_default()],
        "exactly one execution"
    );
}

#[tokio::test]
async fn duplicate_reordered_and_stale_messages_never_move_status_back() {
    let s = setup("order").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let device = RawDevice::connect(&s, "sensor-1").await;
    device.presence("online", 2, 2).await;
    device.report(2, 5, true, json!({"value": 5})).await;
    wait_for(&s.devices, "sensor-1", "value 5", |d| reported(d, "value") == Some(json!(5))).await;

    device.report(2, 5, false, json!({"value": "duplicate"})).await;
    device.report(2, 3, false, json!({"value": "reordered"})).await;
    device.report(1, 99, false, json!({"value": "previous boot"})).await;
    // A Last Will from the previous connection, delivered late.
    device.presence("offline", 2, 1).await;
    device.report(2, 6, false, json!({"marker": true})).await;

    let got = wait_for(&s.devices, "sensor-1", "the marker", |d| {
        reported(d, "marker") == Some(json!(true))
    })
    .await;
    assert_eq!(reported(&got, "value"), Some(json!(5)), "no older message changed the value");
    let cursor = got.status.as_ref().and_then(|s| s.last_reported).expect("lastReported");
    assert_eq!((cursor.boot, cursor.seq), (2, 6));
    assert!(is_connected(&got), "the late Last Will did not mark the device offline");
}

#[tokio::test]
async fn malformed_wrong_version_and_oversized_messages_are_dropped() {
    // An identity the ACL lets publish anywhere, to send what no device could through it (as a
    // broken broker configuration would let through).
    let s = setup_with_broker("garbage", |b, _| b.superusers = vec!["intruder".into()]).await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let device = RawDevice::connect(&s, "sensor-1").await;
    device.presence("online", 1, 1).await;
    device.report(1, 1, true, json!({"ok": 1})).await;
    let before =
        wait_for(&s.devices, "sensor-1", "first report", |d| reported(d, "ok") == Some(json!(1)))
            .await;

    device.report_raw("{not json").await;
    let wrong_version = json!({"v": 2, "boot": 1, "seq": 2, "reported": {"ok": "v2"}});
    device.report_raw(wrong_version.to_string()).await;
    device.report(1, 3, false, json!({"ok": "x".repeat(70 * 1024)})).await;
    let mqtt = &device.mqtt;
    mqtt.publish(&device.presence_topic, vec![0xff, 0xfe, 0x00], false).await.expect("pub");
    let intruder = TestClient::with_password(&s.scope.broker, "intruder").await.expect("mqtt");
    let bad_topic = format!("{}/not-a-device!/twin/reported", s.scope.topic_root);
    intruder.publish_json(&bad_topic, &json!({"v": 1}), false).await.expect("pub");

    // Barrier: the operator counted every bad message and wrote everything it had queued.
    let wait = Duration::from_secs(30);
    let dropped =
        |reason: &str| format!("kubetwin_mqtt_messages_dropped_total{{kind=\"{reason}\"}}");
    for (reason, count) in
        [("malformed", 2.0), ("version", 1.0), ("oversized", 1.0), ("invalid", 1.0)]
    {
        operator.wait_metric(&dropped(reason), wait, |v| v >= count).await.expect("counted");
    }
    operator.wait_idle(wait).await.expect("idle");
    // Nothing above changed status.
    let unchanged = s.devices.get("sensor-1").await.expect("device");
    let shown =
        |d: &kubetwin_api::Device| d.status.as_ref().map(|s| (s.reported.clone(), s.last_reported));
    assert_eq!(shown(&unchanged), shown(&before));
    assert!(operator.is_running(), "the operator survived");

    // The operator still works, and the bad messages were counted by reason.
    device.report(1, 4, false, json!({"ok": 4})).await;
    wait_for(&s.devices, "sensor-1", "a later good report", |d| {
        reported(d, "ok") == Some(json!(4))
    })
    .await;
    let metrics = operator.metrics().await.expect("metrics");
    for (reason, count) in
        [("malformed", 2.0), ("version", 1.0), ("oversized", 1.0), ("invalid", 1.0)]
    {
        assert_eq!(metric(&metrics, &dropped(reason)), Some(count), "{reason} counted:\n{metrics}");
    }
}

#[tokio::test]
async fn two_devices_with_one_device_id_make_the_newer_not_ready() {
    let s = setup("dup").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let shared_id = format!("{}.shared", s.scope.namespace);
    let first = create_device(&s.devices, "first", json!({"deviceId": shared_id})).await;
    wait_for(&s.devices, "first", "status", |d| d.status.is_some()).await;
    // Ownership goes to the older creationTimestamp (then the smaller uid); API times have
    // whole seconds, so create the second Device in a later second than the first.
    let created = first.metadata.creation_timestamp.clone().expect("created").0.as_second();
    while k8s_openapi::jiff::Timestamp::now().as_second() <= created {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create_device(&s.devices, "second", json!({"deviceId": shared_id})).await;

    let second = wait_for(&s.devices, "second", "Ready=False DuplicateDeviceId", |d| {
        condition(d, "Ready")
            .is_some_and(|c| c.status == "False" && c.reason == "DuplicateDeviceId")
    })
    .await;
    let message = condition(&second, "Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(
        message.contains(&format!("{}/first", s.scope.namespace)),
        "names the owner: {message}"
    );
    let first = s.devices.get("first").await.expect("first");
    assert_eq!(
        condition(&first, "Ready").map(|c| c.reason.as_str()),
        Some("NotConnected"),
        "the owner is only waiting for its device"
    );
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_for_devices_that_did_not_change() {
    let s = setup("restart-idle").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let names = ["sensor-1", "sensor-2", "sensor-3"];
    for name in names {
        create_device(&s.devices, name, json!({"desired": {"mode": "eco"}})).await;
    }
    let ids: Vec<String> = names.iter().map(|n| s.scope.device_id(n)).collect();
    let _sim = Simulator::start(s.env, &s.scope, &ids, &[]).expect("simulator");
    for name in names {
        wait_for(&s.devices, name, "Ready", |d| {
            condition(d, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    }
    // Let the first operator finish every write it has queued.
    operator.wait_idle(Duration::from_secs(60)).await.expect("idle before the restart");
    operator.kill();

    let restarted = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    // Barrier: all three Devices reconciled, all three retained presences replayed and
    // applied, nothing queued or in flight.
    let wait = Duration::from_secs(60);
    restarted
        .wait_metric("kubetwin_reconciles_total{kind=\"device\"}", wait, |v| v >= 3.0)
        .await
        .expect("reconciled");
    restarted
        .wait_metric("kubetwin_mqtt_messages_received_total{kind=\"presence\"}", wait, |v| v >= 3.0)
        .await
        .expect("presence replayed");
    restarted.wait_idle(wait).await.expect("idle after the restart");
    let metrics = restarted.metrics().await.expect("metrics");
    let reconciles = metric(&metrics, "kubetwin_reconciles_total{kind=\"device\"}").unwrap_or(0.0);
    assert!(reconciles >= 3.0, "every Device was reconciled after the restart:\n{metrics}");
    let writes = metric(&metrics, "kubetwin_status_writes_total{kind=\"device\"}").unwrap_or(0.0);
    assert_eq!(writes, 0.0, "no redundant status writes after a restart:\n{metrics}");
}

#[tokio::test]
async fn each_request_keeps_its_own_events_on_the_device() {
    use k8s_openapi::api::events::v1::Event;

    let s = setup("events").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let id = s.scope.device_id("sensor-1");
    let _sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &["--boot-seconds=1"])
        .expect("simulator");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;
    let names = ["reboot-a", "reboot-b"];
    for name in names {
        create_reboot(&s.requests, name, json!({"deviceName": "sensor-1"})).await;
        wait_for(&s.requests, name, "Succeeded", |r| phase(r) == Some(RebootPhase::Succeeded))
            .await;
    }

    // Each request's Events on the Device name that request (as the related object and in
    // the note): two requests never merge into one series.
    let events: Api<Event> = Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        let on_device: Vec<(String, String, String)> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Device"))
            .filter(|e| e.reason.as_deref() == Some("RebootSucceeded"))
            .map(|e| {
                let related = e.related.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                (related, e.note.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default())
            })
            .collect();
        let found: Vec<bool> = names
            .iter()
            .map(|name| {
                on_device.iter().any(|(related, note, _)| {
                    related == name
                        && note == &format!("{name}: sensor-1 rebooted and is back online")
                })
            })
            .collect();
        if found == [true, true] {
            assert_eq!(on_device.len(), 2, "one series per request: {on_device:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "events on the Device: {on_device:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `client` has received a message that `wanted` accepts.
async fn wait_received(client: &TestClient, what: &str, wanted: impl Fn(&str, &[u8]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !client.received().iter().any(|(topic, payload)| wanted(topic, payload)) {
        assert!(tokio::time::Instant::now() < deadline, "never received: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The retained desired documents a new subscriber to every device's desired topic gets,
/// once it has got the one of Device `barrier` (the broker sends all retained messages of a
/// subscription together, so the others have arrived by then too).
async fn retained_desired(s: &kubetwin_e2e::scenario::Setup, barrier: &str) -> Vec<String> {
    let root = &s.scope.topic_root;
    let reader = TestClient::with_password(&s.scope.broker, "reader").await.expect("mqtt");
    assert_eq!(reader.subscribe(&format!("{root}/+/twin/desired")).await.expect("sub"), None);
    let barrier_topic = format!("{root}/{}/twin/desired", s.scope.device_id(barrier));
    wait_received(&reader, "the barrier's desired document", |t, _| t == barrier_topic).await;
    reader
        .received()
        .into_iter()
        .filter(|(_, payload)| !payload.is_empty())
        .map(|(topic, _)| topic)
        .collect()
}

#[tokio::test]
async fn a_deleted_device_leaves_no_desired_document_even_when_deleted_while_the_operator_was_down()
{
    let s = setup_with_broker("cleared", |b, _| b.superusers = vec!["reader".into()]).await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    for name in ["kept", "deleted", "orphaned"] {
        create_device(&s.devices, name, json!({"desired": {"mode": name}})).await;
    }
    let topic =
        |name: &str| format!("{}/{}/twin/desired", s.scope.topic_root, s.scope.device_id(name));
    // Barrier: a subscriber has received all three documents (retained or live).
    let watcher = TestClient::with_password(&s.scope.broker, "reader").await.expect("mqtt");
    let all = format!("{}/+/twin/desired", s.scope.topic_root);
    assert_eq!(watcher.subscribe(&all).await.expect("sub"), None);
    for name in ["kept", "deleted", "orphaned"] {
        let wanted = topic(name);
        wait_received(&watcher, &wanted, |t, payload| t == wanted && !payload.is_empty()).await;
    }
    drop(watcher);

    // Deleted while the operator runs: its document is cleared at once.
    s.devices.delete("deleted", &Default::default()).await.expect("deleted");
    let cleared = "kubetwin_desired_cleared_total{kind=\"deleted\"}";
    operator.wait_metric(cleared, Duration::from_secs(60), |v| v >= 1.0).await.expect("cleared");
    let left = retained_desired(&s, "kept").await;
    assert!(!left.contains(&topic("deleted")), "the deleted Device's document is gone: {left:?}");

    // Deleted while no operator runs: the next one finds the orphan and clears it.
    operator.kill();
    s.devices.delete("orphaned", &Default::default()).await.expect("deleted");
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let orphans = "kubetwin_desired_cleared_total{kind=\"orphan\"}";
    operator.wait_metric(orphans, Duration::from_secs(60), |v| v >= 1.0).await.expect("cleared");
    let left = retained_desired(&s, "kept").await;
    assert_eq!(left, vec![topic("kept")], "only the remaining Device's document is left");
    let metrics = operator.metrics().await.expect("metrics");
    assert_eq!(metric(&metrics, orphans), Some(1.0), "one orphan, cleared once:\n{metrics}");
}

#[tokio::test]
async fn a_status_the_api_server_refuses_shows_on_the_object_and_clears_when_one_is_accepted() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let s = setup("refused").await;
    let namespace = s.scope.namespace.clone();
    // A policy of this test only: the API server refuses any Device status in this namespace
    // whose reported properties have a key named "forbidden".
    let name = format!("kubetwin-test-refuse-{namespace}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubetwin.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["devices/status"],
            }]},
            "validations": [{
                "expression": "!has(object.status) || !has(object.status.reported) || !('forbidden' in object.status.reported)",
                "message": "test policy: reported.forbidden is not allowed",
            }],
        },
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }))
    .expect("binding");
    let client = s.env.client().await.expect("client");
    let apply = PatchParams::apply("kubetwin-e2e").force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client);
    policies.patch(&name, &apply, &Patch::Apply(&policy)).await.expect("policy applied");
    bindings.patch(&name, &apply, &Patch::Apply(&binding)).await.expect("binding applied");

    // Barrier: the policy is in effect (it takes a moment) — a forbidden status from the test
    // itself is refused (a dry run: nothing is stored either way).
    create_device(&s.devices, "probe", json!({})).await;
    let forbidden = json!({"status": {"reported": {"forbidden": true}}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s
        .devices
        .patch_status("probe", &PatchParams::default().dry_run(), &Patch::Merge(&forbidden))
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "the test policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({})).await;
    let device = RawDevice::connect(&s, "sensor-1").await;
    device.presence("online", 1, 1).await;
    device.report(1, 1, true, json!({"forbidden": true})).await;
    let refused = wait_for(&s.devices, "sensor-1", "StatusWriteFailed=True", |d| {
        condition(d, "StatusWriteFailed").is_some_and(|c| c.status == "True")
    })
    .await;
    let shown = condition(&refused, "StatusWriteFailed").expect("condition");
    assert!(
        shown.message.contains("test policy: reported.forbidden is not allowed"),
        "the condition quotes the API server: {}",
        shown.message
    );
    assert_eq!(reported(&refused, "forbidden"), None, "the refused status was not stored");
    operator
        .wait_metric(
            "kubetwin_status_write_errors_total{kind=\"device\",reason=\"invalid\"}",
            Duration::from_secs(30),
            |v| v >= 1.0,
        )
        .await
        .expect("the refusal is counted");

    // The device replaces its reported properties: the next status is accepted, and the
    // condition goes away.
    device.report(1, 2, true, json!({"allowed": 1})).await;
    wait_for(&s.devices, "sensor-1", "accepted, condition removed", |d| {
        reported(d, "allowed") == Some(json!(1)) && condition(d, "StatusWriteFailed").is_none()
    })
    .await;
    bindings.delete(&name, &Default::default()).await.expect("binding deleted");
    policies.delete(&name, &Default::default()).await.expect("policy deleted");
}
