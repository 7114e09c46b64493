//! Firmware updates end to end: `spec.firmware` on a Device, a real HTTP server on loopback
//! serving the images, the simulator downloading, verifying, applying and rebooting into them,
//! and `status.firmware` followed by a watch. Success needs evidence: a report from a later
//! boot, running the target, committed.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{Device, FirmwarePhase, FirmwareStatus};
use kubetwin_e2e::{
    firmware::{FirmwareServer, Image},
    fleet::{Operator, Simulator},
    scenario::{Setup, condition, create_device, is_connected, reported, setup},
    wait::wait_for,
};
use serde_json::json;

/// The distinct firmware phases a watch saw, in order.
type Seen = Arc<Mutex<Vec<FirmwarePhase>>>;

fn firmware(device: &Device) -> Option<&FirmwareStatus> {
    device.status.as_ref().and_then(|s| s.firmware.as_ref())
}

fn phase(device: &Device) -> Option<FirmwarePhase> {
    firmware(device).and_then(|f| f.phase)
}

/// Records every distinct firmware phase of Device `name`.
fn record(devices: &Api<Device>, name: &str) -> Seen {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(devices.clone(), config).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(device)) = stream.next().await {
            if let (Some(phase), Ok(mut seen)) = (phase(&device), sink.lock())
                && seen.last() != Some(&phase)
            {
                seen.push(phase);
            }
        }
    });
    seen
}

/// Sets `spec.firmware` of Device `name` to `image` at `server`.
async fn target(s: &Setup, name: &str, server: &FirmwareServer, image: &Image, timeout: u32) {
    let patch = json!({"spec": {"firmware": {
        "version": image.version, "url": server.url(image), "sha256": image.sha256,
        "sizeBytes": image.bytes.len(), "timeoutSeconds": timeout,
    }}});
    s.devices.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Waits until the firmware update of `name` ends, and the recording watch saw its end.
async fn ended(s: &Setup, name: &str, seen: &Seen, version: &str) -> (Device, Vec<FirmwarePhase>) {
    let done = wait_for(&s.devices, name, "the firmware update ends", |d| {
        firmware(d).is_some_and(|f| {
            f.target.as_deref() == Some(version) && f.phase.is_some_and(FirmwarePhase::is_terminal)
        })
    })
    .await;
    let end = phase(&done);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let phases = seen.lock().unwrap().clone();
        if phases.last().copied() == end {
            return (done, phases);
        }
        assert!(tokio::time::Instant::now() < deadline, "the watch never showed {end:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_order(seen: &[FirmwarePhase], order: &[FirmwarePhase]) -> bool {
    let positions: Vec<Option<usize>> =
        order.iter().map(|p| seen.iter().position(|s| s == p)).collect();
    positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
}

/// One device on a fresh operator, with `flags` for the simulator.
async fn one_device(prefix: &str, flags: &[&str]) -> (Setup, Operator, Simulator, String) {
    let s = setup(prefix).await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "gw-1", json!({"desired": {"mode": "eco"}})).await;
    let id = s.scope.device_id("gw-1");
    let mut all = vec!["--boot-seconds=1"];
    all.extend_from_slice(flags);
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &all).expect("sim");
    wait_for(&s.devices, "gw-1", "connected, firmware 1.0.0", |d| {
        is_connected(d) && reported(d, "firmwareVersion") == Some(json!("1.0.0"))
    })
    .await;
    (s, operator, sim, id)
}

#[tokio::test]
async fn an_update_goes_through_every_phase_and_succeeds_only_after_the_new_image_runs() {
    let (s, _operator, sim, id) = one_device("fw", &[]).await;
    let image = Image::new("1.1.0");
    let server = FirmwareServer::start(std::slice::from_ref(&image), Duration::from_millis(1500))
        .await
        .unwrap();
    let seen = record(&s.devices, "gw-1");
    let boot_before = sim.ledger(&id).unwrap().map(|l| l.boot).unwrap_or_default();
    target(&s, "gw-1", &server, &image, 600).await;
    let (done, phases) = ended(&s, "gw-1", &seen, "1.1.0").await;
    let status = firmware(&done).cloned().unwrap();
    assert_eq!(status.phase, Some(FirmwarePhase::Succeeded), "{status:#?}");
    assert!(
        in_order(
            &phases,
            &[
                FirmwarePhase::Downloading,
                FirmwarePhase::Verifying,
                FirmwarePhase::Applying,
                FirmwarePhase::Rebooting,
                FirmwarePhase::Succeeded
            ]
        ),
        "every phase, in order: {phases:?}"
    );
    assert_eq!(status.current.as_deref(), Some("1.1.0"));
    let cursor = done.status.as_ref().and_then(|st| st.last_reported).unwrap();
    assert!(
        status.started_boot.is_some_and(|b| cursor.boot > b),
        "success was recorded from a later boot"
    );
    assert_eq!(reported(&done, "firmwareVersion"), Some(json!("1.1.0")));
    assert!(condition(&done, "FirmwareCurrent").is_some_and(|c| c.status == "True"));
    let ledger = sim.ledger(&id).unwrap().unwrap();
    assert_eq!(ledger.firmware_current.as_deref(), Some("1.1.0"));
    assert_eq!(ledger.boot, boot_before + 1, "one reboot, into the new image");

    // Re-applying the same target (and changing something else) never restarts the update.
    let patch = json!({"spec": {"desired": {"mode": "sport"}}});
    s.devices.patch("gw-1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    target(&s, "gw-1", &server, &image, 600).await;
    let after = wait_for(&s.devices, "gw-1", "desired applied", |d| {
        reported(d, "mode") == Some(json!("sport"))
    })
    .await;
    let again = firmware(&after).cloned().unwrap();
    assert_eq!((again.phase, &again.started_at), (status.phase, &status.started_at));
    assert_eq!(sim.ledger(&id).unwrap().unwrap().boot, boot_before + 1, "no second reboot");
}

#[tokio::test]
async fn a_corrupt_download_fails_and_a_bad_image_rolls_back() {
    let image = Image::new("1.1.0");
    let server = FirmwareServer::start(std::slice::from_ref(&image), Duration::ZERO).await.unwrap();
    for (flag, end, says) in [
        ("--firmware-corrupt", FirmwarePhase::Failed, "checksum mismatch"),
        ("--firmware-bad-image", FirmwarePhase::RolledBack, "did not boot"),
    ] {
        let (s, _operator, _sim, _id) = one_device("fw-bad", &[flag]).await;
        let seen = record(&s.devices, "gw-1");
        target(&s, "gw-1", &server, &image, 600).await;
        let (done, _) = ended(&s, "gw-1", &seen, "1.1.0").await;
        let status = firmware(&done).cloned().unwrap();
        assert_eq!(status.phase, Some(end), "{flag}: {status:#?}");
        assert!(status.message.as_deref().is_some_and(|m| m.contains(says)), "{flag}: {status:?}");
        assert_eq!(status.current.as_deref(), Some("1.0.0"), "{flag}: still the old image");
        assert!(condition(&done, "FirmwareCurrent").is_some_and(|c| c.status == "False"));
    }
}

#[tokio::test]
async fn a_hung_download_times_out_and_a_new_target_supersedes_an_update_under_way() {
    let old = Image::new("1.1.0");
    let new = Image::new("1.2.0");
    let server =
        FirmwareServer::start(&[old.clone(), new.clone()], Duration::from_secs(3)).await.unwrap();
    let (hung, _operator, _sim, _id) = one_device("fw-hang", &["--firmware-hang"]).await;
    let seen = record(&hung.devices, "gw-1");
    target(&hung, "gw-1", &server, &old, 60).await;
    let (done, _) = ended(&hung, "gw-1", &seen, "1.1.0").await;
    assert_eq!(phase(&done), Some(FirmwarePhase::TimedOut), "{:#?}", firmware(&done));

    let (s, _operator, sim, id) = one_device("fw-new", &[]).await;
    let seen = record(&s.devices, "gw-1");
    target(&s, "gw-1", &server, &old, 600).await;
    wait_for(&s.devices, "gw-1", "downloading 1.1.0", |d| {
        phase(d) == Some(FirmwarePhase::Downloading)
    })
    .await;
    target(&s, "gw-1", &server, &new, 600).await;
    let (done, _) = ended(&s, "gw-1", &seen, "1.2.0").await;
    let status = firmware(&done).cloned().unwrap();
    assert_eq!(status.phase, Some(FirmwarePhase::Succeeded), "{status:#?}");
    assert_eq!(status.current.as_deref(), Some("1.2.0"));
    assert_eq!(sim.ledger(&id).unwrap().unwrap().firmware_current.as_deref(), Some("1.2.0"));
}

#[tokio::test]
async fn an_update_survives_operator_kills_and_boots_the_new_image_once() {
    let (s, operator, sim, id) = one_device("fw-kill", &[]).await;
    let image = Image::new("1.1.0");
    let server =
        FirmwareServer::start(std::slice::from_ref(&image), Duration::from_secs(2)).await.unwrap();
    let boot_before = sim.ledger(&id).unwrap().map(|l| l.boot).unwrap_or_default();
    target(&s, "gw-1", &server, &image, 600).await;
    wait_for(&s.devices, "gw-1", "downloading", |d| phase(d) == Some(FirmwarePhase::Downloading))
        .await;
    operator.kill();
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    wait_for(&s.devices, "gw-1", "applying or later", |d| {
        matches!(
            phase(d),
            Some(FirmwarePhase::Applying | FirmwarePhase::Rebooting | FirmwarePhase::Succeeded)
        )
    })
    .await;
    operator.kill();
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("restarted again");
    let done =
        wait_for(&s.devices, "gw-1", "ended", |d| phase(d).is_some_and(FirmwarePhase::is_terminal))
            .await;
    assert_eq!(phase(&done), Some(FirmwarePhase::Succeeded), "{:#?}", firmware(&done));
    assert_eq!(sim.ledger(&id).unwrap().unwrap().boot, boot_before + 1, "booted into it once");
}

#[tokio::test]
async fn a_disruption_budget_holds_a_firmware_order_back_until_it_has_room() {
    let s = setup("fw-budget").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let names = ["gw-a", "gw-b"];
    for name in names {
        let device = serde_json::from_value(json!({
            "apiVersion": "kubetwin.io/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "labels": {"site": "roof"}}, "spec": {},
        }))
        .unwrap();
        s.devices.create(&kube::api::PostParams::default(), &device).await.unwrap();
    }
    let ids: Vec<String> = names.iter().map(|n| s.scope.device_id(n)).collect();
    let sim = Simulator::start(s.env, &s.scope, &ids, &["--boot-seconds=1"]).expect("sim");
    for name in names {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }
    let budget: kubetwin_api::DeviceDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceDisruptionBudget",
        "metadata": {"name": "roof"},
        "spec": {"selector": {"matchLabels": {"site": "roof"}}, "maxUnavailable": 1},
    }))
    .unwrap();
    let budgets: Api<kubetwin_api::DeviceDisruptionBudget> =
        Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    budgets.create(&kube::api::PostParams::default(), &budget).await.unwrap();
    wait_for(&budgets, "roof", "status", |b| b.status.is_some()).await;

    let image = Image::new("1.1.0");
    let server = FirmwareServer::start(std::slice::from_ref(&image), Duration::from_millis(1500))
        .await
        .unwrap();
    // Every firmware phase of both devices, in the order a watch saw them.
    let timeline = Arc::new(Mutex::new(Vec::<(String, FirmwarePhase)>::new()));
    {
        let sink = timeline.clone();
        let config = watcher::Config::default().labels("site=roof");
        let stream = watcher(s.devices.clone(), config).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(device)) = stream.next().await {
                let name = device.metadata.name.clone().unwrap_or_default();
                if let (Some(phase), Ok(mut seen)) = (phase(&device), sink.lock())
                    && seen.iter().rev().find(|(n, _)| *n == name).map(|(_, p)| *p) != Some(phase)
                {
                    seen.push((name, phase));
                }
            }
        });
    }
    target(&s, "gw-a", &server, &image, 600).await;
    wait_for(&s.devices, "gw-a", "updating", |d| {
        matches!(
            phase(d),
            Some(FirmwarePhase::Downloading | FirmwarePhase::Verifying | FirmwarePhase::Applying)
        )
    })
    .await;
    target(&s, "gw-b", &server, &image, 600).await;
    let held = wait_for(&s.devices, "gw-b", "held back", |d| {
        firmware(d).is_some_and(|f| f.reason.as_deref() == Some("DisruptionBudgetExhausted"))
    })
    .await;
    let status = firmware(&held).cloned().unwrap();
    assert_eq!(status.phase, Some(FirmwarePhase::Pending));
    assert!(
        status.message.as_deref().is_some_and(|m| m.contains("roof has no room: 1 of 2")),
        "{status:#?}"
    );
    let current = condition(&held, "FirmwareCurrent").unwrap();
    assert_eq!(current.reason, "DisruptionBudgetExhausted");

    for name in names {
        wait_for(&s.devices, name, "updated", |d| phase(d) == Some(FirmwarePhase::Succeeded)).await;
    }
    for id in &ids {
        let ledger = sim.ledger(id).unwrap().expect("ledger");
        assert_eq!(ledger.firmware_current.as_deref(), Some("1.1.0"), "{id}");
    }
    // Never both updating at once: gw-b's first step comes after gw-a's end.
    let timeline = timeline.lock().unwrap().clone();
    let position = |name: &str, phases: &[FirmwarePhase]| {
        timeline.iter().position(|(n, p)| n == name && phases.contains(p))
    };
    let in_progress = [
        FirmwarePhase::Downloading,
        FirmwarePhase::Verifying,
        FirmwarePhase::Applying,
        FirmwarePhase::Rebooting,
    ];
    let a_done = position("gw-a", &[FirmwarePhase::Succeeded]).expect("gw-a succeeded");
    let b_started = position("gw-b", &in_progress).expect("gw-b updated");
    assert!(b_started > a_done, "gw-b started after gw-a ended: {timeline:?}");
}
