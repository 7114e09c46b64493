//! The kubetwin API as the real kube-apiserver serves it: generated CRDs, defaults, admission
//! rules with readable messages, printer columns and categories.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use kubetwin_api::{Device, DeviceSpec, RebootRequest};
use kubetwin_e2e::{TestEnv, install_crds};
use serde_json::json;

async fn setup(prefix: &str) -> (Client, String) {
    let env = TestEnv::shared();
    let client = env.client().await.expect("admin client");
    install_crds(&client).await.expect("CRDs install");
    let namespace = env.namespace(&client, prefix).await.expect("namespace");
    (client, namespace.name)
}

/// The message the API server gave for a rejected request.
fn rejection(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        other => panic!("expected the API server to reject the object, got {other:?}"),
    }
}

#[tokio::test]
async fn crds_install_and_serve_both_kinds() {
    let client = TestEnv::shared().client().await.expect("client");
    let names = install_crds(&client).await.expect("CRDs install");
    assert_eq!(
        names,
        [
            "deviceconfigurations.kubetwin.io",
            "devicedisruptionbudgets.kubetwin.io",
            "devicejobs.kubetwin.io",
            "devices.kubetwin.io",
            "methodrequests.kubetwin.io",
            "rebootrequests.kubetwin.io"
        ]
    );
}

#[tokio::test]
async fn device_and_reboot_request_read_back_with_defaults() {
    let (client, ns) = setup("defaults").await;
    let devices: Api<Device> = Api::namespaced(client.clone(), &ns);
    let device: Device = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": "sensor-1"},
        "spec": {"desired": {"telemetryIntervalSeconds": 10, "led": {"color": "green"}}}
    }))
    .expect("device");
    devices.create(&PostParams::default(), &device).await.expect("device created");
    let read = devices.get("sensor-1").await.expect("device read");
    assert_eq!(read.spec.device_id, None);
    assert_eq!(read.effective_device_id(), format!("{ns}.sensor-1"));
    let desired = read.spec.desired.expect("desired kept");
    assert_eq!(desired["telemetryIntervalSeconds"], json!(10));
    assert_eq!(desired["led"], json!({"color": "green"}), "unknown fields are preserved");

    let requests: Api<RebootRequest> = Api::namespaced(client.clone(), &ns);
    // Create from raw JSON so the API server, not serde, fills in the defaults.
    let raw = json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "RebootRequest",
        "metadata": {"name": "reboot-1"},
        "spec": {"deviceName": "sensor-1"}
    });
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<RebootRequest>(&()),
    );
    let created: kube::api::DynamicObject = dynamic
        .create(&PostParams::default(), &serde_json::from_value(raw).expect("object"))
        .await
        .expect("created");
    assert_eq!(
        created.data["spec"],
        json!({"deviceName": "sensor-1", "delaySeconds": 0, "responseTimeoutSeconds": 30, "connectTimeoutSeconds": 0}),
        "the API server fills in the defaults"
    );
    let typed = requests.get("reboot-1").await.expect("typed read");
    assert_eq!(typed.spec.response_timeout_seconds, 30);
    assert_eq!(typed.status, None, "nothing but the operator writes status");
}

#[tokio::test]
async fn invalid_device_id_is_rejected_with_a_readable_message() {
    let (client, ns) = setup("bad-id").await;
    let devices: Api<Device> = Api::namespaced(client, &ns);
    let device = Device::new(
        "sensor-1",
        DeviceSpec { device_id: Some("Sensor_1!".into()), desired: None, firmware: None },
    );
    let message = rejection(devices.create(&PostParams::default(), &device).await);
    assert!(
        message.contains("deviceId must consist of lowercase letters, digits, '-' and '.'"),
        "unexpected message: {message}"
    );

    let too_long = Device::new(
        "sensor-2",
        DeviceSpec { device_id: Some("a".repeat(254)), desired: None, firmware: None },
    );
    let message = rejection(devices.create(&PostParams::default(), &too_long).await);
    assert!(message.contains("spec.deviceId"), "message names the field: {message}");
    assert!(message.contains("253"), "message names the limit: {message}");
}

#[tokio::test]
async fn device_id_cannot_change() {
    let (client, ns) = setup("id-immutable").await;
    let devices: Api<Device> = Api::namespaced(client, &ns);
    let device = Device::new(
        "sensor-1",
        DeviceSpec { device_id: Some(format!("{ns}.sensor-1")), desired: None, firmware: None },
    );
    devices.create(&PostParams::default(), &device).await.expect("created");
    let patch = json!({"spec": {"deviceId": format!("{ns}.sensor-9")}});
    let message =
        rejection(devices.patch("sensor-1", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert!(message.contains("spec.deviceId is immutable"), "unexpected message: {message}");
}

#[tokio::test]
async fn reboot_request_timeout_out_of_range_is_rejected() {
    let (client, ns) = setup("bad-timeout").await;
    let requests: Api<RebootRequest> = Api::namespaced(client, &ns);
    let request: RebootRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "RebootRequest",
        "metadata": {"name": "reboot-1"},
        "spec": {"deviceName": "sensor-1", "responseTimeoutSeconds": 1}
    }))
    .expect("request");
    let message = rejection(requests.create(&PostParams::default(), &request).await);
    assert!(
        message.contains("spec.responseTimeoutSeconds")
            && message.contains("greater than or equal to 5"),
        "unexpected message: {message}"
    );
}

#[tokio::test]
async fn reboot_request_spec_is_immutable() {
    let (client, ns) = setup("immutable").await;
    let requests: Api<RebootRequest> = Api::namespaced(client, &ns);
    let request: RebootRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "RebootRequest",
        "metadata": {"name": "reboot-1"},
        "spec": {"deviceName": "sensor-1"}
    }))
    .expect("request");
    requests.create(&PostParams::default(), &request).await.expect("created");
    let patch = json!({"spec": {"delaySeconds": 60}});
    let message =
        rejection(requests.patch("reboot-1", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert!(message.contains("spec is immutable"), "unexpected message: {message}");
    let unchanged = requests.get("reboot-1").await.expect("read");
    assert_eq!(unchanged.spec.delay_seconds, 0, "the rejected change left nothing behind");
}

#[tokio::test]
async fn kubectl_shows_printer_columns_and_the_kubetwin_category() {
    let env = TestEnv::shared();
    let (client, ns) = setup("kubectl").await;
    let devices: Api<Device> = Api::namespaced(client, &ns);
    devices
        .create(&PostParams::default(), &Device::new("sensor-1", DeviceSpec::default()))
        .await
        .expect("created");

    let table = env.kubectl(&["get", "devices", "-n", &ns]).expect("kubectl get devices");
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "DEVICE-ID", "CONNECTED", "IN-SYNC", "FIRMWARE", "UPDATE", "LAST-REBOOT", "AGE"]
    );
    assert!(table.lines().nth(1).is_some_and(|row| row.starts_with("sensor-1 ")), "{table}");

    let short = env.kubectl(&["get", "dev", "-n", &ns, "-o", "name"]).expect("short name works");
    assert_eq!(short.trim(), "device.kubetwin.io/sensor-1");

    let explain =
        env.kubectl(&["explain", "rebootrequest.spec.connectTimeoutSeconds"]).expect("explain");
    assert!(explain.contains("offline device"), "fields are documented: {explain}");

    let reboot: RebootRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "RebootRequest",
        "metadata": {"name": "reboot-1"},
        "spec": {"deviceName": "sensor-1"}
    }))
    .expect("request");
    let requests: Api<RebootRequest> = Api::namespaced(devices.clone().into_client(), &ns);
    requests.create(&PostParams::default(), &reboot).await.expect("created");
    let table = env.kubectl(&["get", "reboot", "-n", &ns]).expect("kubectl get reboot");
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DEVICE", "PHASE", "MESSAGE", "TOOK", "AGE"]);
    assert!(table.lines().nth(1).is_some_and(|row| row.starts_with("reboot-1 ")), "{table}");

    let method: kubetwin_api::MethodRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "MethodRequest",
        "metadata": {"name": "led-1"},
        "spec": {"deviceName": "sensor-1", "method": "setLed", "params": {"on": true}}
    }))
    .expect("request");
    let methods: Api<kubetwin_api::MethodRequest> = Api::namespaced(requests.into_client(), &ns);
    let created = methods.create(&PostParams::default(), &method).await.expect("created");
    assert_eq!(created.spec.params, method.spec.params, "params are kept as they are");
    assert_eq!(
        (created.spec.response_timeout_seconds, created.spec.execution_timeout_seconds),
        (30, 300),
        "defaults"
    );
    let table = env.kubectl(&["get", "devmethod", "-n", &ns]).expect("kubectl get devmethod");
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DEVICE", "METHOD", "PHASE", "PROGRESS", "MESSAGE", "TOOK", "AGE"]);
    for field in [
        ("methodrequest.spec.params", "16 KiB"),
        ("methodrequest.spec.executionTimeoutSeconds", "accepted method may run"),
        ("methodrequest.status.result.payload", "8 KiB"),
        ("methodrequest.status.progress.percent", "Percent done"),
        ("device.spec.firmware.sha256", "64 lowercase hex digits"),
        ("device.spec.firmware.timeoutSeconds", "default 1800"),
        ("device.status.firmware.startedBoot", "when the update started"),
    ] {
        let explain = env.kubectl(&["explain", field.0]).expect("explain");
        assert!(explain.contains(field.1), "{} is documented: {explain}", field.0);
    }

    let all = env.kubectl(&["get", "kubetwin", "-n", &ns, "-o", "name"]).expect("category works");
    let mut listed: Vec<&str> = all.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "device.kubetwin.io/sensor-1",
            "methodrequest.kubetwin.io/led-1",
            "rebootrequest.kubetwin.io/reboot-1"
        ]
    );

    let selected = env
        .kubectl(&[
            "get",
            "reboot",
            "-n",
            &ns,
            "--field-selector",
            "spec.deviceName=sensor-1",
            "-o",
            "name",
        ])
        .expect("field selector on spec.deviceName");
    assert_eq!(selected.trim(), "rebootrequest.kubetwin.io/reboot-1");
}

#[tokio::test]
async fn kubectl_version_shows_the_pinned_server() {
    let env = TestEnv::shared();
    let pinned = kubetwin_e2e::tools::pinned_kubernetes_version().expect("pin");
    let version = env.kubectl(&["version", "-o", "json"]).expect("kubectl version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(version["serverVersion"]["gitVersion"], json!(pinned));
    assert_eq!(version["clientVersion"]["gitVersion"], json!(pinned));
}

/// Creates `device` until the device-id tenancy policy refuses it (a policy takes effect a
/// moment after it is installed) and returns the refusal; an object the API server accepted
/// before that is deleted and tried again.
async fn refused_by_policy(devices: &Api<Device>, device: &Device) -> kube::core::Status {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match devices.create(&PostParams::default(), device).await {
            Err(kube::Error::Api(status)) => return *status,
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                devices.delete(&name, &Default::default()).await.expect("deleted");
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the policy never took effect");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_device_id_outside_the_namespace_is_refused_unless_the_namespace_is_granted_its_prefix() {
    use k8s_openapi::api::core::v1::Namespace;
    let (client, ns) = setup("tenancy").await;
    let devices: Api<Device> = Api::namespaced(client.clone(), &ns);
    let foreign = Device::new(
        "sensor-1",
        DeviceSpec { device_id: Some("other-team.sensor-1".into()), desired: None, firmware: None },
    );
    let status = refused_by_policy(&devices, &foreign).await;
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{status:?}");
    assert!(
        status.message.ends_with(&format!(
            "deviceId other-team.sensor-1 does not belong to namespace {ns}: it must start with {ns}. \
             (a cluster admin can grant another prefix with the namespace annotation kubetwin.io/device-id-prefix)"
        )),
        "the refusal says why and what to do: {}",
        status.message
    );

    // A cluster admin grants the namespace the prefix: now it is accepted.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let grant = json!({"metadata": {"annotations": {"kubetwin.io/device-id-prefix": "other-team., legacy-"}}});
    namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&grant)).await.expect("granted");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let created = loop {
        match devices.create(&PostParams::default(), &foreign).await {
            Ok(created) => break created,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "still refused: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(created.effective_device_id(), "other-team.sensor-1");
    // Its own prefix is always allowed, and so is the second granted one.
    for id in [format!("{ns}.sensor-2"), "legacy-7".to_string()] {
        let name = format!("d-{}", id.len());
        let device = Device::new(
            &name,
            DeviceSpec { device_id: Some(id.clone()), desired: None, firmware: None },
        );
        devices
            .create(&PostParams::default(), &device)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}

#[tokio::test]
async fn a_default_device_id_longer_than_the_contract_allows_is_refused() {
    let (client, ns) = setup("long-id").await;
    let devices: Api<Device> = Api::namespaced(client, &ns);
    // A valid name, but `<namespace>.<name>` is over 253 characters.
    let name = "n".repeat(253 - ns.len());
    let device = Device::new(&name, DeviceSpec::default());
    let status = refused_by_policy(&devices, &device).await;
    let length = ns.len() + 1 + name.len();
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    assert!(
        status.message.ends_with(&format!(
            "the effective deviceId {ns}.{name} is {length} characters; the MQTT contract allows at most 253: use a shorter name or set spec.deviceId"
        )),
        "{}",
        status.message
    );
}
