//! Twin queries on a real API server: the Device status fields `kubectl get devices
//! --field-selector` can select (connection state, in sync, firmware version and phase).
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use kubetwin_api::Device;
use kubetwin_e2e::{
    fleet::{Operator, Simulator},
    scenario::{create_device, is_connected, setup},
    wait::wait_for,
};
use serde_json::json;

/// Names of the Devices `fields` selects, sorted.
async fn selected(devices: &Api<Device>, fields: &str) -> Vec<String> {
    let list = devices.list(&ListParams::default().fields(fields)).await.unwrap();
    let mut names: Vec<String> = list.items.into_iter().filter_map(|d| d.metadata.name).collect();
    names.sort();
    names
}

fn firmware_current(device: &Device) -> Option<&str> {
    device.status.as_ref()?.firmware.as_ref()?.current.as_deref()
}

fn in_sync(device: &Device) -> Option<bool> {
    device.status.as_ref()?.in_sync
}

#[tokio::test]
async fn field_selectors_pick_devices_by_connection_sync_and_firmware() {
    let s = setup("queries").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let old = ["old-0", "old-1"];
    let new = ["new-0", "new-1", "new-2"];
    for name in old.iter().chain(&new).chain(&["offline-0"]) {
        create_device(&s.devices, name, json!({"desired": {"interval": 30}})).await;
    }
    let ids = |names: &[&str]| names.iter().map(|n| s.scope.device_id(n)).collect::<Vec<_>>();
    let _old = Simulator::start(s.env, &s.scope, &ids(&old), &["--firmware=1.0.0"]).unwrap();
    let _new = Simulator::start(s.env, &s.scope, &ids(&new), &["--firmware=2.0.0"]).unwrap();
    for name in old.iter().chain(&new) {
        wait_for(&s.devices, name, "connected, in sync, firmware known", |d| {
            is_connected(d) && in_sync(d) == Some(true) && firmware_current(d).is_some()
        })
        .await;
    }
    let connected = ["new-0", "new-1", "new-2", "old-0", "old-1"];

    assert_eq!(selected(&s.devices, "status.connection.state=Connected").await, connected);
    assert_eq!(selected(&s.devices, "status.connection.state!=Connected").await, ["offline-0"]);
    assert_eq!(selected(&s.devices, "status.firmware.current=1.0.0").await, old);
    assert_eq!(
        selected(&s.devices, "status.firmware.current=2.0.0,status.connection.state=Connected")
            .await,
        new
    );
    assert_eq!(selected(&s.devices, "status.firmware.phase=Current").await, connected);
    assert_eq!(selected(&s.devices, "status.inSync=true").await, connected);

    // The same counts on /metrics, for dashboards (recounted every 15 s).
    let wanted = [
        r#"kubetwin_devices{connection="Connected"} 5"#,
        r#"kubetwin_devices{connection="Unknown"} 1"#,
        r#"kubetwin_devices_firmware{version="1.0.0"} 2"#,
        r#"kubetwin_devices_firmware{version="2.0.0"} 3"#,
        r#"kubetwin_devices_in_sync{in_sync="true"} 5"#,
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = operator.metrics().await.expect("metrics");
        if wanted.iter().all(|line| text.lines().any(|l| l == *line)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "fleet gauges {wanted:?} not in:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // A spec change the device has not applied yet: out of sync until it has. The device is
    // stopped first, so the state is held still while it is selected.
    drop(_old);
    for name in old {
        wait_for(&s.devices, name, "disconnected", |d| !is_connected(d)).await;
    }
    let patch = json!({"spec": {"desired": {"interval": 60}}});
    s.devices.patch("old-0", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(&s.devices, "old-0", "out of sync", |d| in_sync(d) == Some(false)).await;
    assert_eq!(selected(&s.devices, "status.inSync=false").await, ["old-0"]);
    assert_eq!(
        selected(&s.devices, "status.connection.state=Disconnected").await,
        ["old-0", "old-1"]
    );
    // Never seen: no connection state and no sync to select by, so only `!=` finds it.
    assert_eq!(
        selected(&s.devices, "status.inSync!=true,status.inSync!=false").await,
        ["offline-0"]
    );
}
