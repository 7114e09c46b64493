//! The `DeviceDisruptionBudget` custom resource: how many of the Devices it selects may be
//! out of service at once (rebooting, resetting, applying firmware, or offline), optionally per
//! value of a label such as a production line. Every disruptive action honours it.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{Condition, LabelSelector},
    util::intstr::IntOrString,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most device names listed in `status.disruptedDevices`.
pub const MAX_LISTED_DISRUPTED: usize = 50;

/// Which devices, and how many of them may be unavailable at once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "DeviceDisruptionBudget",
    namespaced,
    status = "DeviceDisruptionBudgetStatus",
    shortname = "devbudget",
    category = "kubetwin",
    doc = "DeviceDisruptionBudget limits how many of the Devices it selects may be unavailable \
           at once (an offline device counts as unavailable), optionally per value of a label \
           (groupBy), like a PodDisruptionBudget for devices. Reboots, factory resets, methods \
           marked disruptive and firmware updates wait (Pending, reason \
           DisruptionBudgetExhausted) until it has room.",
    printcolumn(name = "Max-Unavailable", type_ = "string", json_path = ".spec.maxUnavailable"),
    printcolumn(name = "Min-Available", type_ = "string", json_path = ".spec.minAvailable"),
    printcolumn(name = "Group-By", type_ = "string", json_path = ".spec.groupBy"),
    printcolumn(
        name = "Allowed",
        type_ = "integer",
        json_path = ".status.disruptionsAllowed",
        description = "Disruptions allowed now (the smallest over the groups)"
    ),
    printcolumn(name = "Expected", type_ = "integer", json_path = ".status.expectedDevices"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxUnavailable) != has(self.minAvailable)").message(
    "set exactly one of maxUnavailable and minAvailable"
))]
pub struct DeviceDisruptionBudgetSpec {
    /// Which Devices in this namespace the budget protects. An empty selector selects every
    /// Device.
    pub selector: LabelSelector,

    /// Most devices of a group that may be unavailable at once: a count or a percent of the
    /// group (a percent rounds up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')").message(
        "maxUnavailable must be a count (0 or more) or a percent such as \"10%\""
    ))]
    pub max_unavailable: Option<IntOrString>,

    /// Fewest devices of a group that must stay available: a count or a percent of the group
    /// (a percent rounds up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')").message(
        "minAvailable must be a count (0 or more) or a percent such as \"90%\""
    ))]
    pub min_available: Option<IntOrString>,

    /// A label key: the budget applies to each value of this label separately (for example
    /// `line`: at most maxUnavailable per production line). Devices without the label form
    /// one group of their own. Unset: one group of every selected device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub group_by: Option<String>,
}

/// The budget of one group (one value of groupBy).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupBudget {
    /// The groupBy label's value ("" for devices without the label).
    pub group: String,
    /// Devices in the group.
    pub expected: i32,
    /// Of those, available now (online and not disrupted by a request).
    pub available: i32,
    /// How many more may be disrupted now.
    pub disruptions_allowed: i32,
}

/// What the budget allows now, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDisruptionBudgetStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Devices the budget selects.
    pub expected_devices: i32,
    /// Of those, available now.
    pub current_available: i32,
    /// Disruptions allowed now (the smallest over the groups).
    pub disruptions_allowed: i32,
    /// Per group, when groupBy is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupBudget>,
    /// Devices disrupted by a request now (at most 50 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disrupted_devices: Vec<String>,
    /// DisruptionAllowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
