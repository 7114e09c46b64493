//! What the Device cache keeps of a Device: all but the reported map, which the fleet index
//! holds for every device that owns its id (at 100,000 Devices the copies would be a quarter
//! of the cache). A fingerprint of the whole stored status stands in for it when a reconcile
//! compares the status it wants with the stored one.

use std::{borrow::Cow, collections::BTreeMap};

use kubetwin_api::{Device, DeviceStatus};
use serde_json::Value;

use crate::k8s::status::writer;

/// Drops the reported map of a Device bound for the cache, recording the fingerprint of its
/// whole status first. A status that cannot be fingerprinted is kept whole (then compared
/// from itself), and the reason is logged.
pub fn keep_for_cache(device: &mut Device) {
    let Some(status) = device.status.as_mut() else {
        return;
    };
    match writer::stored_fingerprint(&*status) {
        Ok(fingerprint) => {
            status.stored_fingerprint = Some(fingerprint);
            status.reported = None;
        }
        Err(error) => tracing::warn!(%error, "a Device status is cached whole: no fingerprint"),
    }
}

/// Whether a cached status is not the whole stored one ([`keep_for_cache`] dropped its
/// reported map).
pub fn trimmed(cached: Option<&DeviceStatus>) -> bool {
    cached.is_some_and(|status| status.stored_fingerprint.is_some())
}

/// The fingerprint of the stored status a cached one stands for (None: no status stored).
pub fn stored_fingerprint(cached: Option<&DeviceStatus>) -> Result<Option<u64>, serde_json::Error> {
    cached
        .map(|status| match status.stored_fingerprint {
            Some(fingerprint) => Ok(fingerprint),
            None => writer::stored_fingerprint(status),
        })
        .transpose()
}

/// A cached Device made whole again with `reports`, what the fleet index holds of its device's
/// reports (the stored map or a newer one; None when the index holds no state for it). None
/// when that cannot be done: the cache dropped a map the index does not hold, so the Device
/// must be read from the API.
pub fn whole(cached: &Device, reports: Option<BTreeMap<String, Value>>) -> Option<Cow<'_, Device>> {
    if !trimmed(cached.status.as_ref()) {
        return Some(Cow::Borrowed(cached));
    }
    let reports = reports?;
    let mut device = cached.clone();
    if let Some(status) = device.status.as_mut() {
        status.reported = Some(reports);
        status.stored_fingerprint = None;
    }
    Some(Cow::Owned(device))
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kubetwin_api::DeviceSpec;
    use serde_json::json;

    use super::*;
    use crate::k8s::status::writer::PROBLEM_CONDITION;

    /// A stored status as the API server returns it (reported map, messages).
    fn stored() -> DeviceStatus {
        serde_json::from_value(json!({
            "observedGeneration": 2,
            "reported": {"firmwareVersion": "1.0", "rssi": -61},
            "document": {"version": 2, "revision": 1, "digest": "d"},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready",
                 "message": "The device is connected and in sync",
                 "lastTransitionTime": "2026-12-01T10:00:00Z", "observedGeneration": 2},
            ],
        }))
        .expect("a status")
    }

    fn cached(status: Option<DeviceStatus>) -> Option<DeviceStatus> {
        let mut device = Device::new("d", DeviceSpec::default());
        device.metadata = ObjectMeta { name: Some("d".into()), ..ObjectMeta::default() };
        device.status = status;
        keep_for_cache(&mut device);
        device.status
    }

    #[test]
    fn the_cache_keeps_what_reconciles_read_and_a_fingerprint_of_the_rest() {
        let kept = cached(Some(stored())).expect("a status");
        assert_eq!(kept.reported, None);
        assert_eq!(kept.conditions, stored().conditions);
        assert_eq!((kept.observed_generation, &kept.document), (Some(2), &stored().document));
        assert!(trimmed(Some(&kept)));
        assert_eq!(cached(None), None, "no status, nothing to keep");
        assert!(!trimmed(None));
        assert!(!trimmed(Some(&stored())));
    }

    #[test]
    fn a_trimmed_status_compares_as_the_whole_stored_one() {
        let whole = writer::stored_fingerprint(&stored()).expect("serializable");
        let kept = cached(Some(stored()));
        // (what the cache holds, the fingerprint compared with a wanted status)
        let table = [(kept.clone(), Some(whole)), (Some(stored()), Some(whole)), (None, None)];
        for (cached, fingerprint) in table {
            assert_eq!(stored_fingerprint(cached.as_ref()).expect("serializable"), fingerprint);
        }
        // The fingerprint is of the status: another reported map gives another one.
        let mut other = stored();
        other.reported.as_mut().expect("a map").insert("rssi".into(), json!(-70));
        assert_ne!(stored_fingerprint(cached(Some(other)).as_ref()).expect("ok"), Some(whole));
        // The writer's own problem condition is not part of what the operator compares.
        let mut flagged = stored();
        flagged.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: PROBLEM_CONDITION.into(),
            ..flagged.conditions[0].clone()
        });
        assert_eq!(stored_fingerprint(cached(Some(flagged)).as_ref()).expect("ok"), Some(whole));
    }

    #[test]
    fn a_cached_device_is_made_whole_with_the_reports_the_index_holds() {
        let mut device = Device::new("d", DeviceSpec::default());
        device.status = Some(stored());
        let newer = map(json!({"firmwareVersion": "1.1"}));
        // Not cut down: it is whole already, whatever the index holds.
        let status = |d: Option<Cow<'_, Device>>| d.map(|d| d.status.clone());
        assert_eq!(status(whole(&device, None)), Some(Some(stored())));
        let mut cut = device.clone();
        keep_for_cache(&mut cut);
        // Cut down: the index's reports (the stored ones, or newer) take the map's place.
        let restored = whole(&cut, stored().reported).expect("restored");
        assert_eq!(restored.status, Some(stored()));
        let restored = whole(&cut, Some(newer.clone())).expect("restored");
        assert_eq!(restored.status.as_ref().and_then(|s| s.reported.clone()), Some(newer));
        // Cut down, and the index holds no state: only the API has the map.
        assert!(whole(&cut, None).is_none());
        // No status at all: nothing was dropped.
        let bare = Device::new("d", DeviceSpec::default());
        assert_eq!(status(whole(&bare, None)), Some(None));
    }

    fn map(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).expect("an object")
    }
}
