//! The `DeviceConfiguration` custom resource: desired properties (a JSON merge patch) and
//! optionally a firmware target for every Device a label selector picks, with a priority for
//! conflicts, custom metrics, and a wave rollout for the firmware.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    device::FirmwareTarget,
    job::{FailedDevice, RolloutStrategy, WaveStatus},
};

/// A Device's effective desired properties: the `patches` of the configurations that apply to
/// it, in merge order (lowest priority first, equal priorities oldest first), each merged as a
/// JSON merge patch (RFC 7386: null deletes), then the Device's own desired properties merged
/// on top the same way. With no configuration, the Device's own document as it is.
pub fn merge_desired<'a>(
    own: Option<&BTreeMap<String, Value>>,
    configurations: usize,
    patches: impl IntoIterator<Item = &'a BTreeMap<String, Value>>,
) -> Map<String, Value> {
    let own = Map::from_iter(own.cloned().unwrap_or_default());
    if configurations == 0 {
        return own;
    }
    let mut document = Value::Object(Map::new());
    for patch in patches {
        json_patch::merge(&mut document, &Value::Object(Map::from_iter(patch.clone())));
    }
    json_patch::merge(&mut document, &Value::Object(own));
    match document {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Most custom metrics one configuration may define.
pub const MAX_CUSTOM_METRICS: usize = 10;

/// Configuration of a fleet: what every selected Device should have.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "DeviceConfiguration",
    namespaced,
    status = "DeviceConfigurationStatus",
    shortname = "devconf",
    category = "kubetwin",
    doc = "DeviceConfiguration applies desired properties (a JSON merge patch) and optionally a \
           firmware target to every Device its selector picks. Each Device's effective desired \
           document is the configurations in priority order (ties: the newest wins), then the \
           Device's own spec.desired on top. Firmware rolls out in waves under the disruption \
           budgets; a failure threshold pauses or rolls back.",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Targeted",
        type_ = "integer",
        json_path = ".status.targeted",
        description = "Devices the selector picks"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.applied",
        description = "Devices that applied a desired document with this configuration's content"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Where the firmware rollout stands"
    ),
    printcolumn(
        name = "Wave",
        type_ = "integer",
        json_path = ".status.rollout.currentWave",
        description = "Wave of the firmware rollout under way"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfigurationSpec {
    /// Which Devices of this namespace the configuration applies to (Devices created or
    /// relabelled later join and leave). An empty selector selects every Device.
    #[serde(default)]
    pub selector: LabelSelector,

    /// Which configuration wins where two set the same key or both set firmware: the higher
    /// priority; between equal priorities, the newest (by creation time). Default 0.
    #[serde(default)]
    pub priority: i32,

    /// A JSON merge patch (RFC 7386) applied to each selected Device's desired properties:
    /// objects merge key by key, any other value replaces, and null deletes the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::configuration_patch")]
    pub desired: Option<BTreeMap<String, Value>>,

    /// The firmware every selected Device should run (a Device's own spec.firmware wins). It
    /// rolls out as `rollout` says, each update waiting for room in the disruption budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareTarget>,

    /// How the firmware rolls out: waves (a canary first), in-flight limit and rate, as in
    /// DeviceJob.
    #[serde(default)]
    pub rollout: RolloutStrategy,

    /// Waves a person has let the rollout go past: a wave with pauseAfter stops it (phase
    /// Paused) until this is at least that wave's number (waves count from 1). A spec field,
    /// so continuing works from Git.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub continue_after_wave: i32,

    /// When the share of failed updates (Failed, RolledBack or TimedOut on the device) among
    /// the finished ones reaches this, the rollout stops: it pauses, or rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<FailureThreshold>,

    /// Named CEL expressions over each targeted Device (variables name, namespace, labels,
    /// spec, status); status.metrics counts the Devices for which each is true. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message(
        "metric names must be unique within a configuration"
    ))]
    pub metrics: Vec<CustomMetric>,
}

/// When a rollout stops for failures, and what it does then.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureThreshold {
    /// Percent of finished updates that failed (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub percent: i32,
    /// Finished updates needed before the threshold is looked at (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_finished: i32,
    /// Pause (nothing more starts; raise the threshold or change the firmware to go on) or
    /// Rollback (also every device this rollout updated gets the previous firmware back).
    pub action: FailureAction,
}

fn one() -> i32 {
    1
}

/// What a rollout does when its failure threshold is reached.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureAction {
    /// Start nothing more.
    Pause,
    /// Start nothing more, and give every device this rollout updated the firmware the
    /// configuration had before (status.rollout.previous).
    Rollback,
}

/// A named CEL expression counted over the targeted Devices.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// Name of the count in status.metrics: a letter, then letters, digits or '_' (at most 63).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_]*$')").message(
        "a metric name must start with a letter followed by letters, digits or '_' (for example onLatestFirmware)"
    ))]
    pub name: String,
    /// A CEL expression that is true or false for a Device, for example
    /// `has(status.reported.firmwareVersion) && status.reported.firmwareVersion == '2.0.0'`.
    #[schemars(length(min = 1, max = 1024))]
    pub expression: String,
}

/// Where a firmware rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// Updates are under way or waiting for their turn.
    #[default]
    Progressing,
    /// Waiting for spec.rollout.continueAfterWave, or stopped by the failure threshold.
    Paused,
    /// Every targeted device runs the firmware.
    Succeeded,
    /// Every device had its turn; some did not update.
    Failed,
    /// The failure threshold was reached; devices this rollout updated got the previous
    /// firmware back.
    RolledBack,
}

/// Observed state of a configuration, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfigurationStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Devices the selector picks.
    #[serde(default)]
    pub targeted: i32,
    /// Targeted devices that applied a desired document with this generation of the
    /// configuration in it.
    #[serde(default)]
    pub applied: i32,
    /// For each custom metric, the targeted devices for which it is true.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, i32>,
    /// The firmware rollout, when spec.firmware is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<ConfigurationRolloutStatus>,
    /// Ready (the configuration is valid and computed) and RolloutComplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Progress of a configuration's firmware rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationRolloutStatus {
    /// Where the rollout stands.
    pub phase: RolloutPhase,
    /// The firmware this rollout installs.
    pub firmware: FirmwareTarget,
    /// The firmware the configuration had before (what a rollback installs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<FirmwareTarget>,
    /// The wave under way (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<i32>,
    /// Progress per wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    /// Devices in the rollout (the targeted ones whose firmware comes from this configuration).
    #[serde(default)]
    pub members: i32,
    /// Devices updating now (their order sent, or waiting for budget room).
    #[serde(default)]
    pub updating: i32,
    /// Devices that run the firmware.
    #[serde(default)]
    pub succeeded: i32,
    /// Devices whose update failed, rolled back on the device or timed out.
    #[serde(default)]
    pub failed: i32,
    /// Devices given the previous firmware back by a rollback.
    #[serde(default)]
    pub rolled_back: i32,
    /// Up to 20 devices whose update failed, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_devices: Vec<FailedDevice>,
    /// Why the rollout is in its phase, as a CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened last, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
