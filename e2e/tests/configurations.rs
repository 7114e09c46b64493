//! DeviceConfiguration end to end, read as a specification: configurations merge by priority
//! (ties: the newest) under each Device's own desired properties, and what the simulated
//! devices applied is exactly that merge; a changed patch reaches every targeted device with a
//! higher desired version; counts and custom metrics are right; relabelling a device takes the
//! configuration's contribution away. A firmware configuration rolls out canary first, at most
//! maxInFlight at once and within a grouped disruption budget, stops at its failure threshold,
//! and rolls back the devices it updated.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{
    Device, DeviceConfiguration, DeviceDisruptionBudget, FirmwarePhase, RolloutPhase,
};
use kubetwin_e2e::{
    firmware::{FirmwareServer, Image},
    fleet::{Operator, Simulator},
    scenario::{Setup, is_connected, reported, setup, twin},
    wait::wait_for,
};
use serde_json::{Map, Value, json};

async fn create_labelled(s: &Setup, name: &str, labels: Value, spec: Value) {
    let device: Device = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "Device",
        "metadata": {"name": name, "labels": labels}, "spec": spec,
    }))
    .unwrap();
    s.devices.create(&PostParams::default(), &device).await.unwrap();
}

fn configurations(s: &Setup) -> Api<DeviceConfiguration> {
    Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace)
}

async fn apply_configuration(s: &Setup, name: &str, spec: Value) -> DeviceConfiguration {
    let configuration: DeviceConfiguration = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceConfiguration",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    configurations(s).create(&PostParams::default(), &configuration).await.unwrap()
}

async fn patch_configuration(s: &Setup, name: &str, spec: Value) {
    let patch = json!({ "spec": spec });
    configurations(s).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// Waits until the simulated device `id` applied exactly `expected`, and returns the desired
/// version (generation, revision) it applied.
async fn applied_exactly(sim: &Simulator, id: &str, expected: &Value) -> (i64, u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ledger = sim.ledger(id).unwrap();
        if let Some(ledger) = &ledger
            && ledger.properties == object(expected.clone())
            && let Some(applied) = &ledger.applied
        {
            return (applied.version, applied.revision);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never applied {expected}; its ledger: {:?}",
            ledger.map(|l| (l.properties, l.applied))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn listed(device: &Device) -> Vec<String> {
    device
        .status
        .as_ref()
        .map_or(vec![], |s| s.configurations.iter().map(|c| c.name.clone()).collect())
}

#[tokio::test]
async fn configurations_merge_by_priority_under_the_device_s_own_desired_and_follow_labels() {
    let s = setup("conf").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_labelled(
        &s,
        "d1",
        json!({"tier": "edge", "site": "x"}),
        json!({"desired": {"own": 1, "rate": 1}}),
    )
    .await;
    create_labelled(&s, "d2", json!({"tier": "edge"}), json!({})).await;
    create_labelled(&s, "d3", json!({"site": "x"}), json!({})).await;
    let ids: Vec<String> = ["d1", "d2", "d3"].iter().map(|n| s.scope.device_id(n)).collect();
    let sim = Simulator::start(s.env, &s.scope, &ids, &[]).expect("sim");
    for name in ["d1", "d2", "d3"] {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }

    apply_configuration(
        &s,
        "site",
        json!({"selector": {"matchLabels": {"site": "x"}}, "priority": 1,
            "desired": {"rate": 60, "mode": "eco", "led": {"blink": true}, "debug": true}}),
    )
    .await;
    // Same priority as "site" and newer: it wins their shared key; its null deletes "debug".
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_configuration(
        &s,
        "site-fix",
        json!({"selector": {"matchLabels": {"site": "x"}}, "priority": 1,
            "desired": {"mode": "sport", "debug": null}}),
    )
    .await;
    let edge = apply_configuration(
        &s,
        "edge",
        json!({"selector": {"matchLabels": {"tier": "edge"}}, "priority": 10,
            "desired": {"rate": 5, "led": {"color": "red"}},
            "metrics": [
                {"name": "redLed", "expression": "has(status.reported.led) && has(status.reported.led.color) && status.reported.led.color == 'red'"},
                {"name": "ownSettings", "expression": "has(status.reported.own)"}
            ]}),
    )
    .await;
    assert_eq!(
        edge.spec.desired.as_ref().and_then(|d| d.get("led")).cloned(),
        Some(json!({"color": "red"}))
    );

    // d1: site, then site-fix (newer), then edge (priority 10), then its own desired on top.
    let d1 = json!({"rate": 1, "mode": "sport", "led": {"color": "red", "blink": true}, "own": 1});
    let d2 = json!({"rate": 5, "led": {"color": "red"}});
    let d3 = json!({"rate": 60, "mode": "sport", "led": {"blink": true}});
    applied_exactly(&sim, &ids[0], &d1).await;
    let (d2_version, d2_revision) = applied_exactly(&sim, &ids[1], &d2).await;
    applied_exactly(&sim, &ids[2], &d3).await;
    // The device's report of what it applied reaches status after the list of configurations
    // (reports share the write budget), so wait for both.
    let shown = wait_for(&s.devices, "d1", "lists its configurations and reports them", |d| {
        listed(d).len() == 3 && reported(d, "mode") == Some(json!("sport"))
    })
    .await;
    assert_eq!(listed(&shown), ["site", "site-fix", "edge"], "merge order, last wins");
    // `kubectl twin get` shows what the device is asked to have: the same merge.
    let get = twin(&s, &["get", "d1", "-o", "json"]);
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    let shown: Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(shown["effectiveDesired"], d1);
    assert_eq!(shown["configurations"], json!(["site", "site-fix", "edge"]));
    assert_eq!(shown["differingProperties"], json!([]), "the device applied all of it");

    let edge = wait_for(&configurations(&s), "edge", "counts", |c| {
        c.status.as_ref().is_some_and(|st| {
            st.targeted == 2
                && st.applied == 2
                && st.metrics.get("redLed") == Some(&2)
                && st.metrics.get("ownSettings") == Some(&1)
        })
    })
    .await;
    let status = edge.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");

    // A changed patch reaches every targeted device, with a higher desired version although
    // the Devices themselves did not change.
    patch_configuration(&s, "edge", json!({"desired": {"rate": 7}})).await;
    let d2_after = json!({"rate": 7, "led": {"color": "red"}});
    let (version, revision) = applied_exactly(&sim, &ids[1], &d2_after).await;
    assert!(
        (version, revision) > (d2_version, d2_revision),
        "({version}, {revision}) after ({d2_version}, {d2_revision})"
    );
    assert_eq!(version, d2_version, "the Device's generation did not change");
    applied_exactly(&sim, &ids[0], &d1).await;
    wait_for(&configurations(&s), "edge", "applied generation 2 everywhere", |c| {
        c.metadata.generation == Some(2)
            && c.status
                .as_ref()
                .is_some_and(|st| st.observed_generation == Some(2) && st.applied == 2)
    })
    .await;

    // Relabelled out of "edge": its contribution disappears from d2.
    let patch = json!({"metadata": {"labels": {"tier": null}}});
    s.devices.patch("d2", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    applied_exactly(&sim, &ids[1], &json!({})).await;
    // The list changes as soon as the labels do; the device's report that it dropped "rate"
    // follows through the write budget, so wait for both.
    wait_for(&s.devices, "d2", "lists nothing and no longer reports rate", |d| {
        listed(d).is_empty() && reported(d, "rate").is_none()
    })
    .await;
    wait_for(&configurations(&s), "edge", "targets d1 only", |c| {
        c.status.as_ref().is_some_and(|st| st.targeted == 1 && st.metrics.get("redLed") == Some(&1))
    })
    .await;

    // Deleting a configuration takes its contribution away; the next one applies.
    configurations(&s).delete("site-fix", &Default::default()).await.unwrap();
    let d3_after = json!({"rate": 60, "mode": "eco", "led": {"blink": true}, "debug": true});
    let d3_version = applied_exactly(&sim, &ids[2], &d3_after).await;

    // A restarted operator continues from the revisions recorded in status: it republishes
    // the same documents, which the devices ignore, and a new change still goes higher.
    let applied = |id: &str| sim.ledger(id).unwrap().and_then(|l| l.applied);
    let before: Vec<_> = ids.iter().map(|id| applied(id)).collect();
    operator.kill();
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<_> = ids.iter().map(|id| applied(id)).collect();
    assert_eq!(before, after, "nothing applied again after the restart");
    patch_configuration(&s, "site", json!({"desired": {"rate": 61}})).await;
    let d3_new = json!({"rate": 61, "mode": "eco", "led": {"blink": true}, "debug": true});
    let version = applied_exactly(&sim, &ids[2], &d3_new).await;
    assert!(version > d3_version, "{version:?} after {d3_version:?}");
}

/// Phases during which a device is out of service for its update.
fn updating(device: &Device) -> bool {
    device.status.as_ref().and_then(|s| s.firmware.as_ref()).is_some_and(|f| {
        matches!(
            f.phase,
            Some(
                FirmwarePhase::Downloading
                    | FirmwarePhase::Verifying
                    | FirmwarePhase::Applying
                    | FirmwarePhase::Rebooting
            )
        )
    })
}

fn rollout_phase(c: &DeviceConfiguration) -> Option<RolloutPhase> {
    c.status.as_ref()?.rollout.as_ref().map(|r| r.phase)
}

/// A configuration's firmware target for `image` as `server` serves it.
fn firmware_target(server: &FirmwareServer, image: &Image) -> Value {
    json!({"version": image.version, "url": server.url(image), "sha256": image.sha256,
        "sizeBytes": image.bytes.len(), "timeoutSeconds": 300})
}

/// Starts the simulated devices of `names` (booting in a second); those in `bad` boot no new
/// image. Returns the simulators of the good and the bad ones once all are connected.
async fn start_simulators(s: &Setup, names: &[String], bad: &[String]) -> (Simulator, Simulator) {
    let id = |name: &String| s.scope.device_id(name);
    let good_ids: Vec<String> = names.iter().filter(|n| !bad.contains(n)).map(id).collect();
    let bad_ids: Vec<String> = bad.iter().map(id).collect();
    let good = Simulator::start(s.env, &s.scope, &good_ids, &["--boot-seconds=1"]).expect("sim");
    let failing =
        Simulator::start(s.env, &s.scope, &bad_ids, &["--boot-seconds=1", "--firmware-bad-image"])
            .expect("sim with a bad image");
    for name in names {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }
    (good, failing)
}

/// The racks of the firmware rollout's devices (the budget's groups).
const RACKS: [&str; 4] = ["a", "b", "c", "d"];

#[tokio::test]
async fn a_firmware_configuration_rolls_out_canary_first_stops_at_its_threshold_and_rolls_back() {
    let s = setup("conf-fw").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    // gw-01 … gw-20 in racks a, b, c, d; gw-05 … gw-08 boot no new image. The canary pair
    // gw-01 and gw-02 share rack a, so the per-rack budget holds the second back; from gw-03 on
    // the racks go round (b, c, d, a, …), so the second wave's first three devices are in three
    // racks and only maxInFlight (3) keeps a fourth from starting.
    let names: Vec<String> = (1..=20).map(|i| format!("gw-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let rack = if i < 2 { RACKS[0] } else { RACKS[(i - 1) % RACKS.len()] };
        create_labelled(&s, name, json!({"fleet": "fw", "rack": rack}), json!({})).await;
    }
    let id = |name: &str| s.scope.device_id(name);
    let bad: Vec<String> = names[4..8].to_vec();
    let (good, failing) = start_simulators(&s, &names, &bad).await;
    let budget: DeviceDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceDisruptionBudget",
        "metadata": {"name": "per-rack"},
        "spec": {"selector": {"matchLabels": {"fleet": "fw"}}, "maxUnavailable": 1, "groupBy": "rack"},
    }))
    .unwrap();
    let budgets: Api<DeviceDisruptionBudget> =
        Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    budgets.create(&PostParams::default(), &budget).await.unwrap();
    wait_for(&budgets, "per-rack", "status", |b| b.status.is_some()).await;

    let old = Image::new("1.0.0");
    let new = Image::new("2.0.0");
    // Downloads take 1.5 s, so updates started together overlap even on a loaded machine.
    let server = FirmwareServer::start(&[old.clone(), new.clone()], Duration::from_millis(1500))
        .await
        .unwrap();
    let firmware = |image: &Image| firmware_target(&server, image);

    // Every device's updating state, as a watch saw it: at no moment more than maxInFlight,
    // nor more than one per rack.
    let worst = Arc::new(Mutex::new((0usize, 0usize, String::new())));
    {
        let sink = worst.clone();
        let stream = watcher(s.devices.clone(), watcher::Config::default().labels("fleet=fw"))
            .applied_objects();
        tokio::spawn(async move {
            let mut now: BTreeMap<String, (String, bool)> = BTreeMap::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(device)) = stream.next().await {
                let name = device.metadata.name.clone().unwrap_or_default();
                let rack = device.metadata.labels.as_ref().and_then(|l| l.get("rack")).cloned();
                now.insert(name, (rack.unwrap_or_default(), updating(&device)));
                let total = now.values().filter(|(_, u)| *u).count();
                let per_rack = RACKS
                    .iter()
                    .map(|r| now.values().filter(|(rack, u)| *u && rack == r).count())
                    .max()
                    .unwrap_or(0);
                let mut worst = sink.lock().unwrap();
                if total > worst.0 || per_rack > worst.1 {
                    let busy: Vec<String> = now
                        .iter()
                        .filter(|(_, (_, u))| *u)
                        .map(|(n, (r, _))| format!("{n}@{r}"))
                        .collect();
                    worst.2 = busy.join(" ");
                }
                *worst = (worst.0.max(total), worst.1.max(per_rack), worst.2.clone());
            }
        });
    }

    // The fleet runs 1.0.0: the configuration's first content changes nothing on the devices.
    apply_configuration(
        &s,
        "fleet-fw",
        json!({"selector": {"matchLabels": {"fleet": "fw"}},
            "firmware": firmware(&old),
            "rollout": {"maxInFlight": 3, "waves": [{"size": 2, "pauseAfter": true}, {"size": 8}]},
            "continueAfterWave": 1,
            "failureThreshold": {"percent": 20, "minFinished": 3, "action": "Pause"}}),
    )
    .await;
    wait_for(&configurations(&s), "fleet-fw", "1.0.0 everywhere", |c| {
        rollout_phase(c) == Some(RolloutPhase::Succeeded)
    })
    .await;

    // 2.0.0: the canary wave (gw-01, gw-02) updates, then the rollout waits for a person.
    patch_configuration(
        &s,
        "fleet-fw",
        json!({"firmware": firmware(&new), "continueAfterWave": 0}),
    )
    .await;
    let paused = wait_for(&configurations(&s), "fleet-fw", "paused after the canary", |c| {
        rollout_phase(c) == Some(RolloutPhase::Paused)
            && c.status
                .as_ref()
                .and_then(|st| st.rollout.as_ref())
                .is_some_and(|r| r.firmware.version == "2.0.0" && r.succeeded == 2)
    })
    .await;
    let rollout = paused.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.reason.as_deref(), Some("WavePaused"), "{rollout:?}");
    assert_eq!(rollout.previous.as_ref().map(|p| p.version.as_str()), Some("1.0.0"));
    for name in &names[..2] {
        assert_eq!(
            good.ledger(&id(name)).unwrap().unwrap().firmware_current.as_deref(),
            Some("2.0.0")
        );
    }
    for name in &names[2..] {
        let device = s.devices.get(name).await.unwrap();
        assert!(!updating(&device), "{name} waits for its wave");
        assert_eq!(reported(&device, "firmwareVersion"), Some(json!("1.0.0")), "{name}");
    }

    // Go on: the second wave meets the failing devices and the threshold pauses the rollout.
    let continued = twin(&s, &["config", "continue", "fleet-fw"]);
    assert_eq!(
        String::from_utf8_lossy(&continued.stdout),
        "deviceconfiguration.kubetwin.io/fleet-fw continued after wave 1\n",
        "{}",
        String::from_utf8_lossy(&continued.stderr)
    );
    let stopped = wait_for(&configurations(&s), "fleet-fw", "stopped by failures", |c| {
        c.status.as_ref().and_then(|st| st.rollout.as_ref()).is_some_and(|r| {
            r.reason.as_deref() == Some("FailureThresholdReached") && r.updating == 0
        })
    })
    .await;
    let rollout = stopped.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.phase, RolloutPhase::Paused);
    assert!(rollout.failed >= 1, "{rollout:?}");
    assert!(
        rollout.failed_devices.iter().all(|f| bad.contains(&f.device) && f.phase == "RolledBack"),
        "only the bad-image devices failed, rolled back on the device: {:?}",
        rollout.failed_devices
    );
    for name in &names[10..] {
        let device = s.devices.get(name).await.unwrap();
        assert_eq!(
            reported(&device, "firmwareVersion"),
            Some(json!("1.0.0")),
            "{name} never started"
        );
    }

    // Roll back: every device this rollout updated gets 1.0.0 again.
    patch_configuration(&s, "fleet-fw", json!({"failureThreshold": {"action": "Rollback"}})).await;
    wait_for(&configurations(&s), "fleet-fw", "rolled back", |c| {
        rollout_phase(c) == Some(RolloutPhase::RolledBack)
    })
    .await;
    for name in &names {
        let device = wait_for(&s.devices, name, "runs 1.0.0", |d| {
            reported(d, "firmwareVersion") == Some(json!("1.0.0")) && !updating(d)
        })
        .await;
        let rolled_back =
            device.status.as_ref().is_some_and(|st| st.configurations.iter().any(|c| c.rollback));
        let sim = if bad.contains(name) { &failing } else { &good };
        let ledger = sim.ledger(&id(name)).unwrap().unwrap();
        assert_eq!(ledger.firmware_current.as_deref().unwrap_or("1.0.0"), "1.0.0", "{name}");
        if names[..2].contains(name) {
            assert!(rolled_back, "{name} was updated by the rollout: it is rolled back");
        }
    }
    let rolled = wait_for(&configurations(&s), "fleet-fw", "rolled back counted", |c| {
        c.status.as_ref().and_then(|st| st.rollout.as_ref()).is_some_and(|r| r.rolled_back >= 3)
    })
    .await;
    let rollout = rolled.status.unwrap().rollout.unwrap();
    assert!(
        rollout.rolled_back <= 10,
        "only the devices that started before the stop: {rollout:?}"
    );
    // `kubectl twin config status` shows it; followed, a rolled-back rollout exits 1.
    let shown = twin(&s, &["config", "status", "fleet-fw"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(
        text.starts_with(
            "DeviceConfiguration fleet-fw   RolledBack   firmware 2.0.0 (previous 1.0.0)"
        ),
        "{text}"
    );
    assert!(text.contains("targeted 20"), "{text}");
    let followed = twin(&s, &["config", "status", "fleet-fw", "--watch"]);
    assert_eq!(followed.status.code(), Some(1), "{}", String::from_utf8_lossy(&followed.stdout));

    // Each stop of the rollout was announced once, as a Warning Event on the configuration.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        let warnings: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fleet-fw"))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason.clone())
            .collect();
        if warnings.contains(&"RolledBack".to_string()) {
            assert_eq!(
                warnings.iter().filter(|r| *r == "FailureThresholdReached").count(),
                1,
                "{warnings:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no RolledBack event: {warnings:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (in_flight, per_rack, busiest) = worst.lock().unwrap().clone();
    assert_eq!(in_flight, 3, "maxInFlight bounds the devices updating at once: {busiest}");
    assert_eq!(per_rack, 1, "the per-rack budget allows one device per rack at a time: {busiest}");
}

#[tokio::test]
async fn with_rollback_as_its_action_a_rollout_rolls_back_by_itself_at_its_threshold() {
    let s = setup("conf-fw-rb").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    // rb-1 … rb-6, one at a time; rb-2 and rb-3 boot no new image.
    let names: Vec<String> = (1..=6).map(|i| format!("rb-{i}")).collect();
    for name in &names {
        create_labelled(&s, name, json!({"fleet": "rb"}), json!({})).await;
    }
    let id = |name: &str| s.scope.device_id(name);
    let bad: Vec<String> = names[1..3].to_vec();
    let (good, failing) = start_simulators(&s, &names, &bad).await;
    let old = Image::new("1.0.0");
    let new = Image::new("2.0.0");
    let server = FirmwareServer::start(&[old.clone(), new.clone()], Duration::from_millis(200))
        .await
        .unwrap();
    let firmware = |image: &Image| firmware_target(&server, image);
    apply_configuration(
        &s,
        "fleet-rb",
        json!({"selector": {"matchLabels": {"fleet": "rb"}},
            "firmware": firmware(&old),
            "rollout": {"maxInFlight": 1, "waves": [{"size": "100%"}]},
            "failureThreshold": {"percent": 40, "minFinished": 2, "action": "Rollback"}}),
    )
    .await;
    wait_for(&configurations(&s), "fleet-rb", "1.0.0 everywhere", |c| {
        rollout_phase(c) == Some(RolloutPhase::Succeeded)
    })
    .await;

    // 2.0.0, one device at a time in name order: rb-1 updates, rb-2 fails (1 of 2 finished,
    // 50 % ≥ 40 %), and the rollout rolls back on its own: no spec change, no pause first.
    patch_configuration(&s, "fleet-rb", json!({"firmware": firmware(&new)})).await;
    let rolled = wait_for(&configurations(&s), "fleet-rb", "rolled back by itself", |c| {
        c.status.as_ref().and_then(|st| st.rollout.as_ref()).is_some_and(|r| {
            r.phase == RolloutPhase::RolledBack
                && r.firmware.version == "2.0.0"
                && r.rolled_back >= 1
        })
    })
    .await;
    let rollout = rolled.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.reason.as_deref(), Some("RolledBack"), "{rollout:?}");
    assert_eq!(rollout.previous.as_ref().map(|p| p.version.as_str()), Some("1.0.0"));
    assert_eq!((rollout.succeeded, rollout.failed), (1, 1), "{rollout:?}");
    assert_eq!(
        rollout.failed_devices.iter().map(|f| f.device.as_str()).collect::<Vec<_>>(),
        ["rb-2"],
        "{rollout:?}"
    );
    // rb-1 is back on 1.0.0, rolled back by the configuration; rb-2 rolled back by itself;
    // rb-3 … rb-6 never started.
    let back = wait_for(&s.devices, "rb-1", "back on 1.0.0", |d| {
        reported(d, "firmwareVersion") == Some(json!("1.0.0")) && !updating(d)
    })
    .await;
    assert!(
        back.status.as_ref().is_some_and(|st| st.configurations.iter().any(|c| c.rollback)),
        "rb-1 runs the rollback's firmware: {:?}",
        back.status.map(|st| st.configurations)
    );
    assert_eq!(
        good.ledger(&id("rb-1")).unwrap().unwrap().firmware_current.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        failing
            .ledger(&id("rb-2"))
            .unwrap()
            .unwrap()
            .firmware_current
            .as_deref()
            .unwrap_or("1.0.0"),
        "1.0.0"
    );
    for name in &names[2..] {
        let sim = if bad.contains(name) { &failing } else { &good };
        let ledger = sim.ledger(&id(name)).unwrap().unwrap();
        assert_eq!(ledger.firmware_current.as_deref().unwrap_or("1.0.0"), "1.0.0", "{name}");
        let device = s.devices.get(name).await.unwrap();
        assert!(!updating(&device), "{name} never starts after the rollback");
    }
    let counted = wait_for(&configurations(&s), "fleet-rb", "rb-1 counted rolled back", |c| {
        c.status.as_ref().and_then(|st| st.rollout.as_ref()).is_some_and(|r| r.rolled_back == 2)
    })
    .await;
    assert_eq!(rollout_phase(&counted), Some(RolloutPhase::RolledBack), "it stays rolled back");
    // And nothing more starts later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = configurations(&s).get("fleet-rb").await.unwrap();
    let rollout = later.status.and_then(|st| st.rollout).unwrap();
    assert_eq!((rollout.phase, rollout.rolled_back), (RolloutPhase::RolledBack, 2), "{rollout:?}");
}
