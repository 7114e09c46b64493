//! The `Device` custom resource: the twin of one IoT device.
// `printcolumn(type_ = ...)` repeats by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest `spec.desired` document, serialized as JSON, that the operator publishes.
pub const MAX_DESIRED_BYTES: usize = 32 * 1024;

/// Desired state of a device twin.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubetwin.io",
    version = "v1alpha1",
    kind = "Device",
    namespaced,
    status = "DeviceStatus",
    shortname = "dev",
    category = "kubetwin",
    doc = "Device is the twin of one IoT device: desired properties in spec, what the device \
           reports (properties, connection, applied version) in status.",
    printcolumn(
        name = "Device-ID",
        type_ = "string",
        json_path = ".status.deviceId",
        description = "Device id used on MQTT topics"
    ),
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Connected\")].status",
        description = "Whether the device is connected to the broker"
    ),
    printcolumn(
        name = "In-Sync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].status",
        description = "Whether the device applied the current desired properties"
    ),
    printcolumn(
        name = "Firmware",
        type_ = "string",
        json_path = ".status.reported.firmwareVersion",
        description = "Firmware version the device reported"
    ),
    printcolumn(
        name = "Update",
        type_ = "string",
        json_path = ".status.firmware.phase",
        description = "Progress of the firmware update to spec.firmware"
    ),
    printcolumn(
        name = "Last-Reboot",
        type_ = "date",
        json_path = ".status.reported.lastReboot",
        description = "When the device last rebooted, as it reported"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.deviceId",
    selectable = ".status.connection.state",
    selectable = ".status.inSync",
    selectable = ".status.firmware.current",
    selectable = ".status.firmware.target",
    selectable = ".status.firmware.phase"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.deviceId) == has(oldSelf.deviceId) && (!has(self.deviceId) || self.deviceId == oldSelf.deviceId)"
).message("spec.deviceId is immutable: create a new Device to use another device id"))]
pub struct DeviceSpec {
    /// Id of the device on MQTT topics (`<root>/<deviceId>/...`). Defaults to
    /// `<namespace>.<name>`. Lowercase letters, digits, '-' and '.', starting and ending with a
    /// letter or digit, at most 253 characters. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message(
        "deviceId must consist of lowercase letters, digits, '-' and '.', and start and end with a letter or digit (for example 'plant-1.sensor-42')"
    ))]
    pub device_id: Option<String>,

    /// Desired properties of the device: any JSON object (at most 32 KiB serialized). The
    /// operator publishes it to the device as a retained MQTT message on every change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::desired_properties")]
    pub desired: Option<BTreeMap<String, Value>>,

    /// The firmware the device should run. It travels in the desired document; the device
    /// downloads, verifies, applies and reboots, and status.firmware follows the update. The
    /// update counts as Succeeded only when the device reports, after a reboot, that it runs
    /// this version and committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareTarget>,
}

/// Default of `spec.firmware.timeoutSeconds`.
pub const DEFAULT_FIRMWARE_TIMEOUT_SECONDS: i32 = 1800;

/// A firmware image for a device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareTarget {
    /// Version the image contains (for example 1.4.2): letters, digits, '.', '-', '+' and '_',
    /// at most 64 characters.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._+-]*$')").message(
        "firmware.version must start with a letter or digit followed by letters, digits, '.', '_', '+' or '-' (for example 1.4.2)"
    ))]
    pub version: String,

    /// Where the device downloads the image: an http:// or https:// URL, at most 2048
    /// characters.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message(
        "firmware.url must be an http:// or https:// URL"
    ))]
    pub url: String,

    /// SHA-256 of the image, 64 lowercase hex digits; the device refuses an image that does
    /// not match.
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')").message(
        "firmware.sha256 must be 64 lowercase hexadecimal digits"
    ))]
    pub sha256: String,

    /// Size of the image in bytes, if known (the device may check it before downloading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size_bytes: Option<i64>,

    /// Seconds the update may take from when the operator first saw this target until the
    /// device runs it (60 to 86400; default 1800). After that it is TimedOut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 86400))]
    pub timeout_seconds: Option<i32>,
}

impl FirmwareTarget {
    /// `timeoutSeconds`, or its default.
    pub fn timeout_seconds(&self) -> i32 {
        self.timeout_seconds.unwrap_or(DEFAULT_FIRMWARE_TIMEOUT_SECONDS)
    }
}

/// Progress of a firmware update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FirmwarePhase {
    /// The device runs the target (or no target is set and the device reported its version).
    Current,
    /// A new target the device has not started on yet (for example it is offline).
    Pending,
    /// The device is downloading the image.
    Downloading,
    /// The device is checking the image's checksum.
    Verifying,
    /// The device is writing the image.
    Applying,
    /// The device is restarting into the new image.
    Rebooting,
    /// After a reboot, the device runs the target and committed it. Terminal for the target.
    Succeeded,
    /// The device reported an error (for example a checksum mismatch). Terminal for the target.
    Failed,
    /// The device came back running its old image. Terminal for the target.
    RolledBack,
    /// The update did not finish within timeoutSeconds. Terminal for the target.
    TimedOut,
}

impl FirmwarePhase {
    /// Whether the update of the current target is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::RolledBack | Self::TimedOut)
    }
}

/// The firmware update as the operator follows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareStatus {
    /// Version the device last reported running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// spec.firmware.version being rolled out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Progress of the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FirmwarePhase>,
    /// When the operator first saw the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the update of the target ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Boot counter of the device when the update started: success needs a later boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub started_boot: Option<i64>,
    /// Percent done, as the device reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<i32>,
    /// Why the update is in its phase, as a CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened last, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a device twin, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The device id in effect: spec.deviceId, or `<namespace>.<name>` when that is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,

    /// Connection of the device to the broker, from its presence messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,

    /// Properties the device reported, merged from its reported patches (a null value deletes
    /// a key). Well-known keys: firmwareVersion, lastReboot, reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::reported_properties")]
    pub reported: Option<BTreeMap<String, Value>>,

    /// When the operator accepted the last reported patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Time>,

    /// Position (boot, seq) of the last reported message accepted; older ones are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<ReportCursor>,

    /// The desired version the device last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedVersion>,

    /// The firmware update to spec.firmware, followed through the device's reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareStatus>,

    /// The desired document the operator publishes for this Device: its version, revision and
    /// a digest of its content. Recorded before the document is published, so the revision
    /// only grows, across operator restarts too, when only a configuration changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentVersion>,

    /// The DeviceConfigurations that apply to this Device, lowest priority first (later ones
    /// win where they overlap; the Device's own spec wins over all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<AppliedConfiguration>,

    /// Whether the device applied the current spec (the InSync condition, as a field that
    /// `kubectl get devices --field-selector status.inSync=false` can select).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<bool>,

    /// Current state of the twin: Ready, Connected, InSync, ReportedComplete and
    /// FirmwareCurrent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Never read from or written to the API: set only on the operator's cached copy, which
    /// drops `reported` (its fleet index holds what each device reported) and keeps this
    /// digest of it, so the operator can still tell whether a status it wants differs from
    /// the stored one.
    // Skipped both ways; `skip_serializing_if` rather than `skip` because KubeSchema's
    // schema-only copy of this struct would otherwise never read the field (dead code).
    #[serde(skip_deserializing, skip_serializing_if = "never_serialized")]
    #[schemars(skip)]
    pub reported_digest: Option<u64>,
}

/// `skip_serializing_if` of a field that exists only in memory.
fn never_serialized<T>(_: &T) -> bool {
    true
}

/// Connection state of a device as seen through its presence messages.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConnectionState {
    /// The device is online.
    Connected,
    /// The device went offline (gracefully or through its Last Will).
    Disconnected,
    /// The operator has not heard from the device yet.
    #[default]
    Unknown,
}

/// Connection of a device to the broker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Connected, Disconnected or Unknown.
    pub state: ConnectionState,
    /// When the device entered this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// When the operator last took in a change from the device (a report, or a change of
    /// connection); a reconnect that changes nothing shown does not move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// Why the device is in this state (for example the reason of its last presence message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Position of a reported message: boot counter of the device, then sequence within that boot.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ReportCursor {
    /// Boot counter of the device; it grows by one on every boot.
    #[schemars(range(min = 0))]
    pub boot: i64,
    /// Sequence number of the message within the boot.
    #[schemars(range(min = 0))]
    pub seq: i64,
}

/// A version of the desired properties, as applied by a device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedVersion {
    /// The Device's metadata.uid when the desired properties were issued.
    pub epoch: String,
    /// The Device's metadata.generation when the desired properties were issued.
    pub version: i64,
    /// The operator's revision of the document within the generation (absent: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision: Option<i64>,
}

impl From<&kubetwin_protocol::AppliedVersion> for AppliedVersion {
    fn from(applied: &kubetwin_protocol::AppliedVersion) -> Self {
        Self {
            epoch: applied.epoch.clone(),
            version: applied.version,
            revision: (applied.revision > 0).then_some(i64::from(applied.revision)),
        }
    }
}

impl AppliedVersion {
    /// The revision (0 when absent).
    pub fn revision(&self) -> i64 {
        self.revision.unwrap_or(0)
    }
}

/// One configuration that applies to a Device, as Device.status lists it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedConfiguration {
    /// The DeviceConfiguration's name.
    pub name: String,
    /// Its metadata.generation whose content is in the desired document.
    pub generation: i64,
    /// The firmware version it orders on this device (when its rollout admitted the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The order is a rollback to the configuration's previous firmware.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// The desired document the operator publishes for a Device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentVersion {
    /// The Device's metadata.generation.
    pub version: i64,
    /// Grows by one each time the document changes within the generation (a configuration
    /// changed, or a firmware order was released by a disruption budget).
    #[schemars(range(min = 0))]
    pub revision: i64,
    /// SHA-256 (first 16 hex digits) of the document's content: desired properties and
    /// firmware order.
    pub digest: String,
}

/// A position the API cannot hold: a counter above `i64::MAX`, or a negative one read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorOutOfRange;

impl std::fmt::Display for CursorOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a boot or seq counter is outside 0..=i64::MAX")
    }
}

impl std::error::Error for CursorOutOfRange {}

impl TryFrom<kubetwin_protocol::Cursor> for ReportCursor {
    type Error = CursorOutOfRange;

    fn try_from(cursor: kubetwin_protocol::Cursor) -> Result<Self, Self::Error> {
        Ok(Self {
            boot: i64::try_from(cursor.boot).map_err(|_| CursorOutOfRange)?,
            seq: i64::try_from(cursor.seq).map_err(|_| CursorOutOfRange)?,
        })
    }
}

impl TryFrom<ReportCursor> for kubetwin_protocol::Cursor {
    type Error = CursorOutOfRange;

    fn try_from(cursor: ReportCursor) -> Result<Self, Self::Error> {
        Ok(Self {
            boot: u64::try_from(cursor.boot).map_err(|_| CursorOutOfRange)?,
            seq: u64::try_from(cursor.seq).map_err(|_| CursorOutOfRange)?,
        })
    }
}

impl Device {
    /// The device id in effect: `spec.deviceId`, or `<namespace>.<name>` when that is unset.
    pub fn effective_device_id(&self) -> String {
        if let Some(id) = &self.spec.device_id {
            return id.clone();
        }
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("{namespace}.{name}")
    }
}
