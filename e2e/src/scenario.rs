//! Building blocks shared by the end-to-end tests: a namespace with its scope, object
//! constructors, status accessors, and a raw MQTT "device" for sending exact messages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, api::PostParams};
use kubetwin_api::{Device, RebootPhase, RebootRequest};
use serde_json::{Value, json};

use crate::{
    broker::BrokerSetup,
    env::{TestEnv, install_crds},
    fleet::Scope,
    mqtt::TestClient,
};

/// A test's namespace on the shared environment, with typed APIs for it.
pub struct Setup {
    /// The shared environment.
    pub env: &'static TestEnv,
    /// Namespace, topic root and folder of the test.
    pub scope: Scope,
    /// Devices in the namespace.
    pub devices: Api<Device>,
    /// RebootRequests in the namespace.
    pub requests: Api<RebootRequest>,
}

/// Installs the CRDs and policies (idempotent) and creates a fresh namespace named after
/// `prefix`, with its own broker (per-device identity and ACLs on).
///
/// Panics when the environment cannot be used: this is for tests.
pub async fn setup(prefix: &str) -> Setup {
    setup_with_broker(prefix, |_, _| {}).await
}

/// Like [`setup`], with the test's broker set up as `adjust` says.
pub async fn setup_with_broker(prefix: &str, adjust: impl FnOnce(&mut BrokerSetup, &str)) -> Setup {
    let env = TestEnv::shared();
    let client = env.client().await.expect("admin client");
    install_crds(&client).await.expect("CRDs install");
    let namespace = env.namespace(&client, prefix).await.expect("namespace").name;
    let scope = Scope::with_broker(env, &namespace, adjust).await.expect("scope");
    let devices = Api::namespaced(client.clone(), &namespace);
    let requests = Api::namespaced(client, &namespace);
    Setup { env, scope, devices, requests }
}

/// Runs the `kubectl-twin` plugin with `args` in the test's namespace (as a person would type
/// `kubectl twin …`, with the test control plane's kubeconfig).
pub fn twin(s: &Setup, args: &[&str]) -> std::process::Output {
    let binary = crate::fleet::workspace_binary("kubectl-twin").expect("kubectl-twin is built");
    std::process::Command::new(binary)
        .args(["--namespace", &s.scope.namespace])
        .args(args)
        .env("KUBECONFIG", s.env.kubeconfig())
        .output()
        .expect("kubectl-twin runs")
}

/// Creates Device `name` with `spec` (JSON, so defaults come from the API server).
pub async fn create_device(devices: &Api<Device>, name: &str, spec: Value) -> Device {
    let device: Device = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "Device",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("device");
    devices.create(&PostParams::default(), &device).await.expect("device created")
}

/// Creates RebootRequest `name` with `spec`.
pub async fn create_reboot(
    requests: &Api<RebootRequest>,
    name: &str,
    spec: Value,
) -> RebootRequest {
    let request: RebootRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "RebootRequest",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("request");
    requests.create(&PostParams::default(), &request).await.expect("request created")
}

/// The Device condition of `type_`.
pub fn condition<'a>(device: &'a Device, type_: &str) -> Option<&'a Condition> {
    device.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

pub use crate::bulk::is_connected;

/// The phase of a RebootRequest.
pub fn phase(request: &RebootRequest) -> Option<RebootPhase> {
    request.status.as_ref().and_then(|s| s.phase)
}

/// The reason of a RebootRequest's phase.
pub fn reason(request: &RebootRequest) -> Option<String> {
    request.status.as_ref().and_then(|s| s.reason.clone())
}

/// A reported property of a Device.
pub fn reported(device: &Device, key: &str) -> Option<Value> {
    device.status.as_ref()?.reported.as_ref()?.get(key).cloned()
}

/// A raw MQTT client that plays one device, for sending exact (or broken) messages.
pub struct RawDevice {
    /// The MQTT client.
    pub mqtt: TestClient,
    /// `{root}/{id}/presence`.
    pub presence_topic: String,
    /// `{root}/{id}/twin/reported`.
    pub reported_topic: String,
}

impl RawDevice {
    /// Connects as the device of Device `name` in the setup's scope.
    pub async fn connect(s: &Setup, name: &str) -> Self {
        let id = s.scope.device_id(name);
        let root = &s.scope.topic_root;
        let mqtt = TestClient::with_certificate(&s.scope.broker, &id).await.expect("mqtt");
        Self {
            mqtt,
            presence_topic: format!("{root}/{id}/presence"),
            reported_topic: format!("{root}/{id}/twin/reported"),
        }
    }

    /// Publishes a (retained) presence message with `state`, `boot` and `conn`.
    pub async fn presence(&self, state: &str, boot: u64, conn: u64) {
        let body = json!({"v": 1, "state": state, "boot": boot, "conn": conn});
        self.mqtt
            .publish_json(&self.presence_topic, &body, true)
            .await
            .expect("presence published");
    }

    /// Publishes a reported message at (`boot`, `seq`) with the `reported` patch.
    pub async fn report(&self, boot: u64, seq: u64, full: bool, reported: Value) {
        let body = json!({"v": 1, "boot": boot, "seq": seq, "full": full, "reported": reported});
        self.mqtt.publish_json(&self.reported_topic, &body, false).await.expect("report published");
    }

    /// Publishes raw bytes on the reported topic.
    pub async fn report_raw(&self, payload: impl Into<Vec<u8>>) {
        self.mqtt.publish(&self.reported_topic, payload, false).await.expect("published");
    }
}
