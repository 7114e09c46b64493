//! What the Device cache keeps of a Device: all but the reported map, which the fleet index
//! holds for every device that owns its id (at 100,000 Devices the copies would be a quarter
//! of the cache). A digest of the map stands in for it, so a reconcile can still tell
//! whether the status it wants differs from the stored one.

use std::{borrow::Cow, collections::BTreeMap};

use kubetwin_api::{Device, DeviceStatus};
use serde_json::Value;

use crate::k8s::status::budget::fingerprint;

/// Replaces `status.reported` of a Device bound for the cache with its digest (hashing the
/// map as it is: no copy, no JSON, as this runs for every object the watch delivers).
pub fn keep_for_cache(device: &mut Device) {
    if let Some(status) = device.status.as_mut()
        && let Some(reported) = status.reported.take()
    {
        status.reported_digest = Some(reported_digest(&reported));
    }
}

/// Digest of a reported map (equal maps give equal digests within one process).
pub fn reported_digest(reported: &BTreeMap<String, Value>) -> u64 {
    fingerprint(reported)
}

/// Whether a cached status lacks the reported map the stored one has.
pub fn trimmed(cached: Option<&DeviceStatus>) -> bool {
    cached.is_some_and(|status| status.reported_digest.is_some())
}

/// The stored status, rebuilt from the cached one to compare with `wanted`: when the digests
/// match, the stored reported map is `wanted`'s. None when the stored status is not known
/// (no status, or a reported map other than `wanted`'s), which the writer takes as differing.
pub fn stored_status<'a>(
    cached: Option<&'a DeviceStatus>,
    wanted: &DeviceStatus,
) -> Option<Cow<'a, DeviceStatus>> {
    let cached = cached?;
    let Some(digest) = cached.reported_digest else {
        return Some(Cow::Borrowed(cached));
    };
    let reported = wanted.reported.as_ref().filter(|r| reported_digest(r) == digest)?;
    Some(Cow::Owned(DeviceStatus {
        reported: Some(reported.clone()),
        reported_digest: None,
        ..cached.clone()
    }))
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
        status.reported_digest = None;
    }
    Some(Cow::Owned(device))
}

#[cfg(test)]
mod tests {
    use kubetwin_api::DeviceSpec;
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).expect("an object")
    }

    fn status(reported: Option<Value>) -> DeviceStatus {
        DeviceStatus {
            observed_generation: Some(2),
            reported: reported.map(map),
            ..DeviceStatus::default()
        }
    }

    fn device(reported: Option<Value>) -> Device {
        let mut device = Device::new("d", DeviceSpec::default());
        device.status = Some(status(reported));
        device
    }

    fn cached(reported: Option<Value>) -> DeviceStatus {
        let mut device = device(reported);
        keep_for_cache(&mut device);
        device.status.expect("a status")
    }

    #[test]
    fn the_cache_keeps_a_digest_in_place_of_the_reported_map() {
        let kept = cached(Some(json!({"fw": "1.0", "rssi": -61})));
        assert_eq!(kept.reported, None);
        let same = map(json!({"rssi": -61, "fw": "1.0"}));
        assert_eq!(kept.reported_digest, Some(reported_digest(&same)));
        assert_ne!(kept.reported_digest, Some(reported_digest(&map(json!({"fw": "1.1"})))));
        assert_eq!(kept.observed_generation, Some(2), "the rest is kept");
        assert!(trimmed(Some(&kept)));
        let none = cached(None);
        assert_eq!((&none.reported, none.reported_digest), (&None, None));
        assert!(!trimmed(Some(&none)));
        assert!(!trimmed(None));
        let mut bare = Device::new("d", DeviceSpec::default());
        keep_for_cache(&mut bare);
        assert_eq!(bare.status, None);
    }

    #[test]
    fn the_stored_status_is_rebuilt_only_when_the_digests_match() {
        let stored = json!({"fw": "1.0", "rssi": -61});
        // (stored reported map, wanted reported map, the stored status as rebuilt)
        let table = [
            // Same map: rebuilt whole, so it compares equal with the wanted one.
            (Some(stored.clone()), Some(stored.clone()), Some(status(Some(stored.clone())))),
            // Another map: not known, so it differs.
            (Some(stored.clone()), Some(json!({"fw": "1.1", "rssi": -61})), None),
            // The wanted status has no map while the stored one has: differs.
            (Some(stored.clone()), None, None),
            // Nothing was dropped: the cached status is the stored one.
            (None, Some(stored.clone()), Some(status(None))),
            (None, None, Some(status(None))),
        ];
        for (in_store, wanted, rebuilt) in table {
            let cached = cached(in_store.clone());
            let wanted = status(wanted.clone());
            assert_eq!(
                stored_status(Some(&cached), &wanted).map(Cow::into_owned),
                rebuilt,
                "stored {in_store:?}, wanted {:?}",
                wanted.reported
            );
        }
        assert_eq!(stored_status(None, &status(None)), None, "no status stored");
    }

    #[test]
    fn a_cached_device_is_made_whole_with_the_reports_the_index_holds() {
        let stored = json!({"firmwareVersion": "1.0"});
        let newer = map(json!({"firmwareVersion": "1.1"}));
        let whole_status = |d: Option<Cow<'_, Device>>| d.map(|d| d.status.clone());
        // Not cut down: it is whole already, whatever the index holds.
        let uncut = device(Some(stored.clone()));
        assert_eq!(whole_status(whole(&uncut, None)), Some(Some(status(Some(stored.clone())))));
        let mut cut = uncut.clone();
        keep_for_cache(&mut cut);
        // Cut down: the index's reports (the stored ones, or newer) take the map's place.
        assert_eq!(
            whole_status(whole(&cut, Some(map(stored.clone())))),
            Some(Some(status(Some(stored))))
        );
        assert_eq!(
            whole_status(whole(&cut, Some(newer.clone()))),
            Some(Some(DeviceStatus { reported: Some(newer), ..status(None) }))
        );
        // Cut down, and the index holds no state: only the API has the map.
        assert!(whole(&cut, None).is_none());
        // No status at all: nothing was dropped.
        let bare = Device::new("d", DeviceSpec::default());
        assert_eq!(whole_status(whole(&bare, None)), Some(None));
    }
}
