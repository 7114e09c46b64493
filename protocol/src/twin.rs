//! Twin rules: when a device applies a desired document, how reported messages update the
//! reported properties (RFC 7386 JSON merge patch), and the well-known reported keys.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::{AppliedVersion, DesiredDocument, ReportedMessage};

/// Reported key: firmware version of the device (string).
pub const KEY_FIRMWARE_VERSION: &str = "firmwareVersion";
/// Reported key: when the device last rebooted (RFC 3339 string).
pub const KEY_LAST_REBOOT: &str = "lastReboot";
/// Reported key: progress of the last reboot request (a [`RebootState`] object).
pub const KEY_REBOOT: &str = "reboot";

/// Whether a device that applied `applied` applies `incoming`: when nothing was applied, the
/// epoch differs (a new Device), or (version, revision) is higher.
pub fn should_apply(applied: Option<&AppliedVersion>, incoming: &DesiredDocument) -> bool {
    match applied {
        None => true,
        Some(applied) => {
            applied.epoch != incoming.epoch
                || (incoming.version, incoming.revision) > (applied.version, applied.revision)
        }
    }
}

/// Updates the reported properties with a message: `full` replaces them all (dropping nulls),
/// otherwise `reported` is applied as an RFC 7386 merge patch.
pub fn apply_reported(current: &mut Map<String, Value>, msg: &ReportedMessage) {
    if msg.full {
        current.clear();
    }
    merge_patch_map(current, &msg.reported);
}

/// Applies an RFC 7386 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                merge_patch_map(target, patch);
            }
        }
        other => *target = other.clone(),
    }
}

/// Applies an RFC 7386 JSON merge patch object to a JSON object: `null` deletes a key, objects
/// merge recursively, anything else replaces.
pub fn merge_patch_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Progress of a reboot as the device reports it under the `reboot` key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RebootStatus {
    /// The device accepted a reboot and is about to go down.
    Rebooting,
    /// The device came back from the reboot.
    Done,
    /// The device could not reboot.
    Failed,
}

impl RebootStatus {
    /// The JSON name of the status: `rebooting`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rebooting => "rebooting",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Value of the `reboot` reported key: `{"status": "rebooting", "requestId": "..."}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RebootState {
    /// Progress of the reboot.
    pub status: RebootStatus,
    /// Id of the request that caused the reboot.
    pub request_id: String,
}

impl RebootState {
    /// A reboot state.
    pub fn new(status: RebootStatus, request_id: impl Into<String>) -> Self {
        Self { status, request_id: request_id.into() }
    }

    /// Reads the `reboot` key of reported properties, if present and well-formed.
    pub fn from_reported(reported: &Map<String, Value>) -> Option<Self> {
        reported.get(KEY_REBOOT).and_then(Self::from_value)
    }

    /// Reads the value of the `reboot` reported key, if well-formed.
    pub fn from_value(value: &Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }

    /// The state as a JSON value, to put under the `reboot` key.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("status".into(), Value::String(self.status.as_str().into()));
        map.insert("requestId".into(), Value::String(self.request_id.clone()));
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::examples::{self, EPOCH, REQUEST_ID};

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn doc(epoch: &str, version: i64) -> DesiredDocument {
        DesiredDocument::new(epoch, version, "2025-05-01T12:00:00Z", Map::new())
    }

    fn applied(epoch: &str, version: i64) -> AppliedVersion {
        AppliedVersion { epoch: epoch.into(), version, revision: 0 }
    }

    #[test]
    fn should_apply_rules() {
        assert!(should_apply(None, &doc(EPOCH, 1)));
        assert!(should_apply(Some(&applied(EPOCH, 2)), &doc(EPOCH, 3)));
        // Same version again (retained re-delivery, answer to twin/get): not applied again.
        assert!(!should_apply(Some(&applied(EPOCH, 3)), &doc(EPOCH, 3)));
        // Older version arriving late: ignored.
        assert!(!should_apply(Some(&applied(EPOCH, 3)), &doc(EPOCH, 2)));
        // A new Device with the same id (new uid) starts again at a low generation.
        assert!(should_apply(Some(&applied(EPOCH, 9)), &doc("new-uid", 1)));
        assert!(should_apply(Some(&applied(EPOCH, 1)), &doc("new-uid", 1)));
        // A later revision of the same generation (a firmware order released) is applied once.
        let mut released = doc(EPOCH, 3);
        released.revision = 1;
        assert!(should_apply(Some(&applied(EPOCH, 3)), &released));
        assert!(!should_apply(Some(&AppliedVersion::of(&released)), &released));
        // An earlier revision after it (re-published by a restarted operator) is not.
        assert!(!should_apply(Some(&AppliedVersion::of(&released)), &doc(EPOCH, 3)));
        // A new generation starts again at revision 0.
        assert!(should_apply(Some(&AppliedVersion::of(&released)), &doc(EPOCH, 4)));
    }

    #[test]
    fn patch_sets_replaces_and_deletes() {
        let mut current = object(json!({"a": 1, "b": "x", "c": true}));
        let msg = ReportedMessage::patch(1, 2, object(json!({"a": 2, "b": null, "d": [1, 2]})));
        apply_reported(&mut current, &msg);
        assert_eq!(Value::Object(current), json!({"a": 2, "c": true, "d": [1, 2]}));
    }

    #[test]
    fn patch_merges_nested_objects() {
        let mut current = object(json!({
            "led": {"color": "red", "blink": true, "pattern": {"on": 1, "off": 1}},
            "list": [1, 2, 3]
        }));
        let msg = ReportedMessage::patch(
            1,
            2,
            object(json!({
                "led": {"color": "green", "blink": null, "pattern": {"off": 3}},
                "list": [4],
                "missing": {"deep": null, "x": 1}
            })),
        );
        apply_reported(&mut current, &msg);
        assert_eq!(
            Value::Object(current),
            json!({
                "led": {"color": "green", "pattern": {"on": 1, "off": 3}},
                "list": [4],
                "missing": {"x": 1}
            })
        );
    }

    #[test]
    fn patch_replaces_scalar_with_object_and_back() {
        let mut current = object(json!({"a": 1, "b": {"x": 1}}));
        let msg = ReportedMessage::patch(1, 2, object(json!({"a": {"y": 2}, "b": 3})));
        apply_reported(&mut current, &msg);
        assert_eq!(Value::Object(current), json!({"a": {"y": 2}, "b": 3}));
    }

    #[test]
    fn deleting_a_missing_key_is_a_no_op() {
        let mut current = object(json!({"a": 1}));
        apply_reported(&mut current, &ReportedMessage::patch(1, 2, object(json!({"zzz": null}))));
        assert_eq!(Value::Object(current), json!({"a": 1}));
    }

    #[test]
    fn full_replaces_everything_and_drops_nulls() {
        let mut current = object(json!({"old": 1, "led": {"color": "red", "blink": true}}));
        let msg = ReportedMessage::full(
            8,
            1,
            object(
                json!({"led": {"color": "green", "gone": null}, "firmwareVersion": "1.4.2", "x": null}),
            ),
        );
        apply_reported(&mut current, &msg);
        assert_eq!(
            Value::Object(current),
            json!({"led": {"color": "green"}, "firmwareVersion": "1.4.2"})
        );
    }

    #[test]
    fn example_sequence_builds_expected_state() {
        let mut current = Map::new();
        for example in
            [examples::REPORTED_PATCH, examples::REPORTED_REBOOTING, examples::REPORTED_FULL]
        {
            let msg: ReportedMessage = serde_json::from_str(example).unwrap();
            apply_reported(&mut current, &msg);
        }
        assert_eq!(
            Value::Object(current.clone()),
            json!({
                "firmwareVersion": "1.4.2",
                "lastReboot": "2025-05-01T12:01:10Z",
                "reboot": {"status": "done", "requestId": REQUEST_ID},
                "telemetryIntervalSeconds": 30,
                "led": {"color": "green"}
            })
        );
        assert_eq!(
            RebootState::from_reported(&current),
            Some(RebootState::new(RebootStatus::Done, REQUEST_ID))
        );
    }

    #[test]
    fn merge_patch_on_values() {
        let mut target = json!("scalar");
        merge_patch(&mut target, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(target, json!({"a": {"c": 1}}));
        merge_patch(&mut target, &json!([1]));
        assert_eq!(target, json!([1]));
    }

    #[test]
    fn reboot_state_json() {
        let state = RebootState::new(RebootStatus::Rebooting, REQUEST_ID);
        let expected = json!({"status": "rebooting", "requestId": REQUEST_ID});
        assert_eq!(state.to_value(), expected);
        assert_eq!(serde_json::to_value(&state).unwrap(), expected);
        for status in [RebootStatus::Rebooting, RebootStatus::Done, RebootStatus::Failed] {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(status.as_str()));
        }
        let reported = object(json!({ KEY_REBOOT: {"status": "failed", "requestId": "r1"} }));
        assert_eq!(
            RebootState::from_reported(&reported),
            Some(RebootState::new(RebootStatus::Failed, "r1"))
        );
        assert_eq!(RebootState::from_reported(&object(json!({"reboot": "yes"}))), None);
        assert_eq!(RebootState::from_reported(&Map::new()), None);
        assert_eq!(
            [KEY_FIRMWARE_VERSION, KEY_LAST_REBOOT, KEY_REBOOT],
            ["firmwareVersion", "lastReboot", "reboot"]
        );
    }
}
