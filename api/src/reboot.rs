//! The `RebootRequest` custom resource: a direct-method call that reboots one device.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default of `spec.responseTimeoutSeconds`.
pub const DEFAULT_RESPONSE_TIMEOUT_SECONDS: i32 = 30;

/// What to reboot and how long to wait. Immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "RebootRequest",
    namespaced,
    status = "RebootRequestStatus",
    shortname = "reboot",
    category = "kubetwin",
    doc = "RebootRequest asks one device to reboot (a direct-method call over MQTT) and shows \
           its progress: Pending, Sent, Accepted, Rebooting, then Succeeded, Failed, TimedOut \
           or Rejected.",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.deviceName",
        description = "Device that is rebooted"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Progress of the reboot"
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
    selectable = ".spec.deviceName"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message(
    "spec is immutable: delete this RebootRequest and create a new one to reboot again"
))]
pub struct RebootRequestSpec {
    /// Name of the Device to reboot, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message(
        "deviceName must be the name of a Device in this namespace (lowercase letters, digits, '-' and '.')"
    ))]
    pub device_name: String,

    /// Seconds the device waits after accepting before it reboots (0 to 3600; default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub delay_seconds: i32,

    /// Seconds to wait for the device to answer the request (5 to 300; default 30).
    #[serde(default = "default_response_timeout_seconds")]
    #[schemars(range(min = 5, max = 300))]
    pub response_timeout_seconds: i32,

    /// Seconds to wait for an offline device to come online before sending (0 to 3600;
    /// default 0: a device that is offline fails the request at once, reason DeviceNotOnline;
    /// when a wait above 0 runs out, the request is TimedOut).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub connect_timeout_seconds: i32,

    /// Seconds after the request finished when the operator deletes it. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

fn default_response_timeout_seconds() -> i32 {
    DEFAULT_RESPONSE_TIMEOUT_SECONDS
}

/// Progress of a reboot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RebootPhase {
    /// Created; not sent yet (for example waiting for the device to come online).
    #[default]
    Pending,
    /// Published to the device; no answer yet.
    Sent,
    /// The device accepted the request.
    Accepted,
    /// The device is rebooting (it went offline or said so).
    Rebooting,
    /// The device came back with a new boot. Terminal.
    Succeeded,
    /// The device reported a failure. Terminal.
    Failed,
    /// The device did not answer, or did not come back, in time. Terminal.
    TimedOut,
    /// The device refused the request. Terminal.
    Rejected,
}

impl RebootPhase {
    /// Whether the phase never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::TimedOut | Self::Rejected)
    }

    /// Rank of a phase (`None`: no status yet): a request only ever moves to a higher rank,
    /// and every terminal phase has the same, highest one.
    pub fn rank(phase: Option<Self>) -> u8 {
        match phase {
            None | Some(Self::Pending) => 0,
            Some(Self::Sent) => 1,
            Some(Self::Accepted) => 2,
            Some(Self::Rebooting) => 3,
            Some(_) => 4,
        }
    }
}

/// Progress of a reboot, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootRequestStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Progress of the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RebootPhase>,

    /// Id of the request on MQTT (the RebootRequest's metadata.uid).
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

    /// Boot counter of the device before the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub boot_before: Option<i64>,

    /// Boot counter of the device after the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub boot_after: Option<i64>,

    /// The device's last answer to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,

    /// Why the request is in its phase, as a CamelCase word (for example NoResponse,
    /// DeviceNotOnline, NoReturn, DeviceRejected).
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

/// A device's answer to a request, as recorded in status (the wire message is
/// `kubetwin_protocol::MethodResponse`; the operator converts explicitly).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedResponse {
    /// HTTP-like status code from the device (200, 202, 400, 404, 409, 410, 500).
    pub code: i32,
    /// Message from the device.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
