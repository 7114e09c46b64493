//! The committed `crds/` folder must match what `crdgen` generates from the Rust types.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{fs, path::Path};

#[test]
fn committed_crds_match_the_rust_types() {
    let crds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut stale = Vec::new();
    for crd in kubetwin_api::crds() {
        let name = kubetwin_api::crd_file_name(&crd);
        let expected = kubetwin_api::crd_yaml(&crd).expect("CRD renders as YAML");
        match fs::read_to_string(crds_dir.join(&name)) {
            Ok(actual) if actual == expected => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(error) => stale.push(format!("{name}: {error}")),
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is stale ({}): run `make crds` (cargo run -p kubetwin-api --bin crdgen) and commit the result",
        stale.join(", ")
    );
}

#[test]
fn crds_declare_names_categories_and_status() {
    let crds = kubetwin_api::crds();
    let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone().unwrap_or_default()).collect();
    assert_eq!(
        names,
        [
            "devices.kubetwin.io",
            "rebootrequests.kubetwin.io",
            "methodrequests.kubetwin.io",
            "devicejobs.kubetwin.io",
            "devicedisruptionbudgets.kubetwin.io",
            "deviceconfigurations.kubetwin.io"
        ]
    );
    for crd in &crds {
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["kubetwin".to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    }
    assert_eq!(crds[0].spec.names.short_names.as_deref(), Some(&["dev".to_string()][..]));
    assert_eq!(crds[1].spec.names.short_names.as_deref(), Some(&["reboot".to_string()][..]));
    assert_eq!(crds[2].spec.names.short_names.as_deref(), Some(&["devmethod".to_string()][..]));
    // Short names that clash with nothing common (Argo Rollouts owns `rollout`, core owns `job`).
    assert_eq!(crds[3].spec.names.short_names.as_deref(), Some(&["devjob".to_string()][..]));
    assert_eq!(crds[4].spec.names.short_names.as_deref(), Some(&["devbudget".to_string()][..]));
    assert_eq!(crds[5].spec.names.short_names.as_deref(), Some(&["devconf".to_string()][..]));
}

#[test]
fn method_request_spec_fills_defaults_and_keeps_params() {
    let spec: kubetwin_api::MethodRequestSpec = serde_json::from_value(serde_json::json!({
        "deviceName": "sensor-1", "method": "setLed", "params": {"on": true, "nested": {"a": [1]}}
    }))
    .expect("valid spec");
    assert_eq!(spec.response_timeout_seconds, 30);
    assert_eq!(spec.connect_timeout_seconds, 0);
    assert_eq!(spec.execution_timeout_seconds, 300);
    assert_eq!(
        spec.params.map(serde_json::Value::Object),
        Some(serde_json::json!({"on": true, "nested": {"a": [1]}}))
    );
}

#[test]
fn reboot_request_spec_fills_defaults_when_read() {
    let spec: kubetwin_api::RebootRequestSpec =
        serde_json::from_value(serde_json::json!({"deviceName": "sensor-1"})).expect("valid spec");
    assert_eq!(spec.delay_seconds, 0);
    assert_eq!(spec.response_timeout_seconds, 30);
    assert_eq!(spec.connect_timeout_seconds, 0);
    assert_eq!(spec.ttl_seconds_after_finished, None);
}

#[test]
fn device_id_defaults_to_namespace_dot_name() {
    let mut device = kubetwin_api::Device::new("sensor-1", Default::default());
    device.metadata.namespace = Some("plant-a".into());
    assert_eq!(device.effective_device_id(), "plant-a.sensor-1");
    device.spec.device_id = Some("custom.id".into());
    assert_eq!(device.effective_device_id(), "custom.id");
}
