//! The `MethodRequest` custom resource: any named direct method (with parameters and a
//! result) called on one device, factory reset included.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest `spec.params`, serialized as JSON: larger requests are rejected before sending.
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// Largest result payload shown in `status.result.payload`, serialized as JSON; a larger
/// one is left out and `status.result.truncated` says so.
pub const MAX_RESULT_PAYLOAD_BYTES: usize = 8 * 1024;
/// Default of `spec.executionTimeoutSeconds`.
pub const DEFAULT_EXECUTION_TIMEOUT_SECONDS: i32 = 300;

/// Which method to call on which device, with what, and how long to wait. Immutable once
/// created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "MethodRequest",
    namespaced,
    status = "MethodRequestStatus",
    shortname = "devmethod",
    category = "kubetwin",
    doc = "MethodRequest calls one named direct method on one device over MQTT (for example \
           factoryReset, setLed, collectDiagnostics) and shows its progress and result: \
           Pending, Sent, Accepted, InProgress, Rebooting (methods that restart the device), \
           then Succeeded, Failed, TimedOut or Rejected.",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.deviceName",
        description = "Device the method runs on"
    ),
    printcolumn(name = "Method", type_ = "string", json_path = ".spec.method"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Progress of the call"
    ),
    printcolumn(
        name = "Progress",
        type_ = "integer",
        json_path = ".status.progress.percent",
        description = "Percent done, as the device reports it"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        description = "What happened last"
    ),
    printcolumn(
        name = "Took",
        type_ = "string",
        json_path = ".status.duration",
        description = "Time from sending the request to its end"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.deviceName",
    selectable = ".spec.method"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message(
    "spec is immutable: delete this MethodRequest and create a new one to call the method again"
))]
pub struct MethodRequestSpec {
    /// Name of the Device to call, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message(
        "deviceName must be the name of a Device in this namespace (lowercase letters, digits, '-' and '.')"
    ))]
    pub device_name: String,

    /// The method to call: a lowercase letter, then up to 63 letters, digits, '_' or '-'
    /// (for example factoryReset, setLed, collectDiagnostics). `reboot` and `factoryReset`
    /// restart the device and succeed only when it is back with a higher boot.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-zA-Z0-9_-]*$')").message(
        "method must start with a lowercase letter followed by letters, digits, '_' or '-' (for example factoryReset)"
    ))]
    pub method: String,

    /// Parameters of the method, a JSON object sent as is (at most 16 KiB serialized; a
    /// larger one is rejected before anything is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::method_params")]
    pub params: Option<Map<String, Value>>,

    /// The method takes the device out of service: every DeviceDisruptionBudget that selects
    /// the device must have room before it is sent. reboot and factoryReset always count as
    /// disruptive; for other methods the default is false.
    #[serde(default)]
    pub disruptive: bool,

    /// Seconds to wait for the device to answer the request (5 to 300; default 30).
    #[serde(default = "default_response_timeout_seconds")]
    #[schemars(range(min = 5, max = 300))]
    pub response_timeout_seconds: i32,

    /// Seconds to wait for an offline device to come online before sending (0 to 3600;
    /// default 0: a device that is offline fails the request at once with DeviceNotOnline).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub connect_timeout_seconds: i32,

    /// Seconds an accepted method may run before the request times out (1 to 86400; default
    /// 300). For methods that restart the device, the operator's return timeout applies.
    #[serde(default = "default_execution_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub execution_timeout_seconds: i32,

    /// Seconds after the request finished when the operator deletes it. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

fn default_response_timeout_seconds() -> i32 {
    crate::reboot::DEFAULT_RESPONSE_TIMEOUT_SECONDS
}

fn default_execution_timeout_seconds() -> i32 {
    DEFAULT_EXECUTION_TIMEOUT_SECONDS
}

/// Progress of a method call.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum MethodPhase {
    /// Created; not sent yet (for example waiting for the device to come online).
    #[default]
    Pending,
    /// Published to the device; no answer yet.
    Sent,
    /// The device accepted the request.
    Accepted,
    /// The device is executing it and reports progress.
    InProgress,
    /// The device is restarting for it (reboot and factoryReset only).
    Rebooting,
    /// The device finished it (methods that restart: came back with a higher boot). Terminal.
    Succeeded,
    /// The device reported a failure. Terminal.
    Failed,
    /// The device did not answer, finish or come back in time. Terminal.
    TimedOut,
    /// The device refused the request, or it was refused before sending. Terminal.
    Rejected,
}

impl MethodPhase {
    /// Whether the phase never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::TimedOut | Self::Rejected)
    }
}

/// Percent done and what the device is doing, from its InProgress answers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MethodProgress {
    /// Percent done (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,
    /// The device's message with its latest progress.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The device's final answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MethodResult {
    /// HTTP-like code from the device (200, 400, 404, 409, 410, 500).
    pub code: i32,
    /// The device's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the method returned, as the device sent it (at most 8 KiB serialized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::method_result_payload")]
    pub payload: Option<Value>,
    /// The device returned a payload larger than 8 KiB; it is not shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Progress and result of a method call, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequestStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Progress of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MethodPhase>,

    /// Id of the request on MQTT (the MethodRequest's metadata.uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,

    /// When the request was published to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,

    /// When the device accepted the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Time>,

    /// When the request reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// Time from sending the request to its end, for people (for example "14s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,

    /// Boot counter of the device when the request was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub boot_before: Option<i64>,

    /// Boot counter of the device after a method that restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub boot_after: Option<i64>,

    /// Percent done and the device's message, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MethodProgress>,

    /// The device's final answer: code, message and payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MethodResult>,

    /// Why the request is in its phase, as a CamelCase word (for example NoResponse,
    /// DeviceNotOnline, MethodNotSupported, ParamsTooLarge, DeviceRejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// What happened last, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Complete, Succeeded and Failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
