//! The `DeviceJob` custom resource: one method run across the Devices a label selector picks,
//! in waves, rate-limited, with abort criteria and retries. Each device's call is a child
//! `MethodRequest`.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{Condition, LabelSelector, Time},
    util::intstr::IntOrString,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Label on every child MethodRequest: the name of its DeviceJob.
pub const JOB_LABEL: &str = "kubetwin.io/job";
/// Label on every child MethodRequest: the Device it calls.
pub const DEVICE_LABEL: &str = "kubetwin.io/device";
/// Label on every child MethodRequest: the attempt (0 first, then 1, 2, … for retries).
pub const ATTEMPT_LABEL: &str = "kubetwin.io/attempt";
/// Finalizer the operator keeps on a running DeviceJob, so that deleting it lets the
/// children already sent finish before they are garbage-collected.
pub const JOB_FINALIZER: &str = "kubetwin.io/in-flight-children";
/// Most failed devices listed in `status.failedDevices`.
pub const MAX_LISTED_FAILURES: usize = 20;
/// Most device names shown in `status.plan.sample`.
pub const PLAN_SAMPLE_SIZE: usize = 5;

/// What to run on which devices, how fast, and when to stop.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "DeviceJob",
    namespaced,
    status = "DeviceJobStatus",
    shortname = "devjob",
    category = "kubetwin",
    doc = "DeviceJob runs one method (reboot, factoryReset or any named method) on every \
           Device its selector picks when it starts, in waves, at most maxInFlight at a time \
           and maxPerMinute started per minute, with abort criteria and retries. Each device's \
           call is a child MethodRequest named <job>-<device>. Phases: Suspended, Running, \
           Paused, then Succeeded, Failed or Aborted.",
    printcolumn(name = "Method", type_ = "string", json_path = ".spec.method"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the job stands"
    ),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress",
        description = "Devices finished / targeted"
    ),
    printcolumn(name = "Succeeded", type_ = "integer", json_path = ".status.counts.succeeded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.counts.failed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.method == oldSelf.method && self.selector == oldSelf.selector && has(self.params) == has(oldSelf.params) && (!has(self.params) || self.params == oldSelf.params)").message(
    "method, params and selector are immutable: create a new DeviceJob to run something else"
))]
pub struct DeviceJobSpec {
    /// Which Devices in this namespace the job runs on (when it starts; Devices created
    /// later are not included). An empty selector selects every Device.
    pub selector: LabelSelector,

    /// The method to run on each device, as in MethodRequest (reboot, factoryReset, or any
    /// named method the devices support).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-zA-Z0-9_-]*$')").message(
        "method must start with a lowercase letter followed by letters, digits, '_' or '-' (for example reboot)"
    ))]
    pub method: String,

    /// Parameters of the method, sent to every device as is (at most 16 KiB serialized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::method_params")]
    pub params: Option<Map<String, Value>>,

    /// The method takes the device out of service (reboot and factoryReset always do):
    /// every DeviceDisruptionBudget that selects the device must have room before it starts.
    #[serde(default)]
    pub disruptive: bool,

    /// Seconds each device has to answer its request (5 to 300; default 30).
    #[serde(default = "default_response_timeout_seconds")]
    #[schemars(range(min = 5, max = 300))]
    pub response_timeout_seconds: i32,

    /// Seconds an accepted method may run on a device (1 to 86400; default 300).
    #[serde(default = "default_execution_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub execution_timeout_seconds: i32,

    /// What to do with a device that is offline when its turn comes: Wait (up to
    /// connectTimeoutSeconds, then it counts as TimedOut) or Skip (counted as skipped, nothing
    /// is sent). Default Wait.
    #[serde(default)]
    pub offline_devices: OfflinePolicy,

    /// Seconds to wait for an offline device when offlineDevices is Wait (1 to 3600; default
    /// 300).
    #[serde(default = "default_connect_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub connect_timeout_seconds: i32,

    /// How fast the job goes: waves, in-flight limit, rate.
    #[serde(default)]
    pub rollout: RolloutStrategy,

    /// Waves a person has let the job go past: a wave with pauseAfter stops the job (phase
    /// Paused) until this is at least that wave's number (waves count from 1). A spec field,
    /// so continuing works from Git.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub continue_after_wave: i32,

    /// When the job stops starting devices: it is Aborted as soon as any criterion holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub abort: Vec<AbortCriterion>,

    /// Retries of a device whose call failed.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// While true nothing starts (Kubernetes Job semantics); the operator fills status.plan
    /// with what would happen.
    #[serde(default)]
    pub suspend: bool,

    /// Seconds after the job finished when the operator deletes it (and its children). Unset:
    /// never. Do not combine with GitOps tools that re-create deleted objects: a re-created
    /// job runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

fn default_response_timeout_seconds() -> i32 {
    crate::reboot::DEFAULT_RESPONSE_TIMEOUT_SECONDS
}

fn default_execution_timeout_seconds() -> i32 {
    crate::method::DEFAULT_EXECUTION_TIMEOUT_SECONDS
}

fn default_connect_timeout_seconds() -> i32 {
    300
}

/// What to do with a device that is offline when its turn comes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OfflinePolicy {
    /// Send its request; the request waits up to connectTimeoutSeconds for the device.
    #[default]
    Wait,
    /// Do not wait: count the device as skipped.
    Skip,
}

/// Waves, in-flight limit and start rate of a rollout (shared by DeviceJob and, later,
/// configuration rollouts).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Most devices in flight at once: a count or a percent of the targeted devices (default
    /// 10; a percent rounds up, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1 : self.matches('^[0-9]+%$')").message(
        "maxInFlight must be a count of at least 1 or a percent such as \"10%\""
    ))]
    pub max_in_flight: Option<IntOrString>,

    /// Most devices started per minute (1 to 100000; unset: no limit besides maxInFlight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_per_minute: Option<i32>,

    /// Start slowly and speed up as devices succeed (AWS IoT Jobs' exponential rate); capped
    /// by maxPerMinute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_rate: Option<ExponentialRate>,

    /// Waves in order; each takes the next share of the targeted devices (ordered by name).
    /// Unset: one wave of every device. The last wave always takes the rest. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub waves: Vec<Wave>,
}

/// A start rate that grows by a factor after each given number of successes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExponentialRate {
    /// Devices started per minute at first (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub base_rate_per_minute: i32,
    /// Factor applied to the rate each time (1.1 to 5).
    #[schemars(range(min = 1.1, max = 5.0))]
    pub increment_factor: f64,
    /// Successes between two increases (1 or more).
    #[schemars(range(min = 1))]
    pub succeeded_per_increase: i32,
}

/// One wave of a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Devices in this wave: a count or a percent of the targeted devices (a percent rounds
    /// up, at least 1). The last wave takes every device left whatever its size.
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1 : self.endsWith('%')").message(
        "a wave's size must be a count of at least 1 or a percent such as \"10%\""
    ))]
    pub size: IntOrString,
    /// After this wave finished, wait until spec.continueAfterWave reaches its number.
    #[serde(default)]
    pub pause_after: bool,
}

/// Which failures an abort criterion or a retry counts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailureType {
    /// The device reported a failure.
    Failed,
    /// The device (or the operator, before sending) refused the request.
    Rejected,
    /// A deadline passed.
    TimedOut,
    /// Any of the above.
    Any,
}

/// Abort the job when, among at least `minExecuted` finished devices, at least
/// `thresholdPercent` ended with `failureType`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortCriterion {
    /// Which failures count.
    pub failure_type: FailureType,
    /// Finished devices needed before the criterion is judged (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_executed: i32,
    /// Percent of finished devices that must have failed (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub threshold_percent: i32,
}

fn one() -> i32 {
    1
}

/// How often a failed device is tried again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries per device (0 to 10; default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub limit: i32,
    /// Which failures are retried (default Failed and TimedOut). Named `onFailures`, not
    /// `on`: YAML 1.1 parsers (kubectl's among them) read a bare `on` key as `true`.
    #[serde(default = "default_retry_on")]
    pub on_failures: Vec<FailureType>,
    /// Seconds between a failure and its retry (0 to 3600; default 10).
    #[serde(default = "default_retry_backoff_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub backoff_seconds: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            limit: 0,
            on_failures: default_retry_on(),
            backoff_seconds: default_retry_backoff_seconds(),
        }
    }
}

fn default_retry_on() -> Vec<FailureType> {
    vec![FailureType::Failed, FailureType::TimedOut]
}

fn default_retry_backoff_seconds() -> i32 {
    10
}

/// Where a job stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum JobPhase {
    /// spec.suspend is true: nothing starts; status.plan shows what would.
    #[default]
    Suspended,
    /// Devices are being started or are in flight.
    Running,
    /// A wave with pauseAfter finished; waiting for spec.continueAfterWave.
    Paused,
    /// Every targeted device finished and none failed. Terminal.
    Succeeded,
    /// Every targeted device finished and at least one failed. Terminal.
    Failed,
    /// An abort criterion held: nothing more starts; calls already sent finish. Terminal.
    Aborted,
}

impl JobPhase {
    /// The phase as written in status (also a metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Suspended => "Suspended",
            Self::Running => "Running",
            Self::Paused => "Paused",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Aborted => "Aborted",
        }
    }

    /// Whether the job starts nothing any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }
}

/// How many targeted devices are where.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    /// Devices the job runs on (its membership snapshot).
    pub targeted: i32,
    /// Not started yet (or waiting for a retry).
    pub pending: i32,
    /// A request was created and has not finished.
    pub in_flight: i32,
    /// Finished with success.
    pub succeeded: i32,
    /// Finished with the device's failure, after its retries.
    pub failed: i32,
    /// Finished because a deadline passed, after its retries.
    pub timed_out: i32,
    /// Finished refused (by the device, or before sending), after its retries.
    pub rejected: i32,
    /// Offline at its turn with offlineDevices Skip, or no longer selected: nothing was sent.
    pub skipped: i32,
    /// Retries started so far (all devices).
    pub retried: i32,
}

/// Progress of one wave.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// The wave's number (from 1).
    pub wave: i32,
    /// Devices in the wave.
    pub size: i32,
    /// Devices of the wave started.
    pub started: i32,
    /// Devices of the wave finished (any outcome).
    pub finished: i32,
    /// Devices of the wave that succeeded.
    pub succeeded: i32,
}

/// A device whose call failed, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedDevice {
    /// The Device.
    pub device: String,
    /// Phase of its last request (Failed, TimedOut or Rejected).
    pub phase: String,
    /// Reason of its last request (for example DeviceRejected, NoResponse).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Attempts made.
    pub attempts: i32,
}

/// What the job would do (or does), from the same planner that runs it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPlan {
    /// Devices the selector picks now.
    pub targeted: i32,
    /// Of those, offline now.
    pub offline: i32,
    /// Of those, listing their methods without this one (their requests would be Rejected).
    pub not_supporting: i32,
    /// Of those, whose disruption budgets have no room now.
    pub budget_blocked: i32,
    /// Device count of each wave, in order.
    pub wave_sizes: Vec<i32>,
    /// In-flight limit as a count.
    pub max_in_flight: i32,
    /// The first devices, in the order they start.
    pub sample: Vec<String>,
}

/// Progress of a DeviceJob, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJobStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the job stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Finished / targeted, for people (for example 370/1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// When the job first left Suspended: its membership is the Devices the selector picked
    /// that existed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Device counts.
    #[serde(default)]
    pub counts: JobCounts,
    /// The wave running now (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<i32>,
    /// Progress of each wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    /// Devices whose call failed (at most 20), with their reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_devices: Vec<FailedDevice>,
    /// What the job does, from the same planner that runs it (filled while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<JobPlan>,
    /// Why the job is in its phase (a CamelCase word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened last, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Complete, Failed, Suspended and Progressing (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::JobPhase;

    #[test]
    fn a_phase_label_is_what_status_shows() {
        use JobPhase::*;
        for phase in [Suspended, Running, Paused, Succeeded, Failed, Aborted] {
            assert_eq!(serde_json::to_value(phase).ok(), Some(phase.as_str().into()));
        }
    }
}
