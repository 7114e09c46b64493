//! What the Device cache keeps of a Device: a [`CachedDevice`], the metadata typed (selectors
//! and names are read from every cached Device) and the spec and status as compact JSON text,
//! compressed, turned back into a [`Device`] when a reconcile needs one. The status goes
//! without its reported map, which the fleet index holds for every device that owns its id (at
//! 100,000 Devices the copies would be a quarter of the cache). A digest of the map stands in
//! for it, so a reconcile can still tell whether the status it wants differs from the stored
//! one.
//!
//! Why text: a Device as typed values costs ~4 KiB in the cache (1 KiB of inline struct, most
//! of it optional fields never set; a B-tree node of ~600 bytes for a two-key desired map);
//! its JSON is a few hundred bytes. Parsing one back takes microseconds, and only reconciles
//! of that Device and the rarer whole-fleet passes do it.
//!
//! Why compressed: the text of one Device is mostly what every other Device's text also says
//! (field names, the conditions' types, reasons and messages, the shapes of timestamps and
//! ids), so it is compressed (LZ4's block format) against [`TEMPLATE`], the text of a typical
//! Device, used as the dictionary: B3's Device keeps 122 of its 1,278 bytes. Nothing
//! compressed leaves the process, so the template may change with the code.

use std::{borrow::Cow, cell::RefCell, collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, core::NamespaceResourceScope, runtime::reflector::ObjectRef};
use kubetwin_api::{Device, DeviceSpec, DeviceStatus};
use lz4_flex::block::{
    compress_prepend_size_with_dict, decompress_into_with_dict, uncompressed_size,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    error::ReadBackError,
    k8s::{
        labels::{Labels, shared},
        status::budget::fingerprint,
    },
};

/// The cached text of a typical Device (as [`CachedDevice::new`] writes it: spec and status,
/// no reported map): the dictionary every cached text is compressed against. A Device that
/// differs from it still compresses, only less.
pub const TEMPLATE: &str = concat!(
    r#"{"spec":{"deviceId":"plant-0.line-0.device-000000","desired":{"led":{"color":"green"},"#,
    r#""mode":"normal","telemetryIntervalSeconds":30}},"status":{"observedGeneration":1,"#,
    r#""deviceId":"plant-0.line-0.device-000000","connection":{"state":"Connected","#,
    r#""since":"2026-12-01T10:00:00Z","lastSeen":"2026-12-01T10:00:00Z"},"#,
    r#""reportedAt":"2026-12-01T10:00:00Z","lastReported":{"boot":1764583200,"seq":42},"#,
    r#""applied":{"epoch":"6f1c2a9e-0b7d-4c53-9a1e-000000000000","version":1,"revision":0},"#,
    r#""firmware":{"current":"1.4.2","target":"1.5.0","phase":"Succeeded","#,
    r#""startedAt":"2026-12-01T10:00:00Z","finishedAt":"2026-12-01T10:00:00Z"},"#,
    r#""document":{"version":1,"revision":0,"digest":"9b74c9897bac770ffc029102a200c5de"},"#,
    r#""configurations":[{"name":"plant-firmware","generation":1,"firmware":"1.5.0"}],"#,
    r#""inSync":true,"conditions":["#,
    r#"{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"The device is not connected","#,
    r#""observedGeneration":1,"reason":"NotConnected","status":"False","type":"Ready"},"#,
    r#"{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"The device went offline","#,
    r#""observedGeneration":1,"reason":"Offline","status":"False","type":"Connected"},"#,
    r#"{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"The device applied generation 1","#,
    r#""observedGeneration":1,"reason":"Applied","status":"True","type":"InSync"},"#,
    r#"{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"Every report of the device is shown","#,
    r#""observedGeneration":1,"reason":"Complete","status":"True","type":"ReportedComplete"},"#,
    r#"{"lastTransitionTime":"2026-12-01T10:00:00Z","message":"The device runs 1.5.0, committed after a reboot","#,
    r#""observedGeneration":1,"reason":"FirmwareUpToDate","status":"True","type":"FirmwareCurrent"}]}}"#,
);

/// A Device as the operator's cache keeps it (see the module's doc).
#[derive(Clone, Debug)]
pub struct CachedDevice {
    /// The Device's metadata, as the watch delivered it less what no reconcile reads (its
    /// resourceVersion too), without its labels (read them with [`CachedDevice::labels`]) and
    /// without a uid that [`CachedDevice::uid`] keeps as 16 bytes.
    pub metadata: ObjectMeta,
    /// The Device's uid as 16 bytes, when it is a UUID written as the API server writes them
    /// (lowercase, hyphenated); the metadata then holds none, so neither does kube-runtime's
    /// key of the cached Device (made from the metadata): two 36-character strings less per
    /// Device. Any other uid stays text in the metadata. The field costs no room: the cached
    /// Device, in its `Arc`, stays in the same allocation class.
    uid: Option<Uuid>,
    /// The Device's labels: one copy shared by every Device that carries the same ones (and
    /// by the disruption-budget index); None when the Device has none.
    labels: Option<Arc<Labels>>,
    /// `{"spec": …, "status": …}` of the Device, its status without the reported map,
    /// compressed against [`TEMPLATE`] (its length first).
    body: Box<[u8]>,
    /// Digest of the reported map the status went without ([`keep_for_cache`]).
    reported_digest: Option<u64>,
}

/// The part of a Device a [`CachedDevice`] keeps as text.
#[derive(Serialize)]
struct Body<'a> {
    spec: &'a DeviceSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a DeviceStatus>,
}

/// [`Body`], read back.
#[derive(Deserialize)]
struct OwnedBody {
    spec: DeviceSpec,
    status: Option<DeviceStatus>,
}

impl CachedDevice {
    /// The cached form of `device` (its reported map replaced by a digest).
    pub fn new(mut device: Device) -> Result<Self, serde_json::Error> {
        keep_for_cache(&mut device);
        let text =
            serde_json::to_vec(&Body { spec: &device.spec, status: device.status.as_ref() })?;
        // kube-runtime's controller and reflector compare keys by name and namespace only, and
        // no reconcile reads the resourceVersion of a cached Device (status writes are
        // server-side applies, which need none).
        device.metadata.resource_version = None;
        let uid = device.metadata.uid.as_deref().and_then(canonical_uuid);
        if uid.is_some() {
            device.metadata.uid = None;
        }
        Ok(Self {
            uid,
            reported_digest: device.status.as_ref().and_then(|s| s.reported_digest),
            labels: device.metadata.labels.take().map(|labels| shared(&labels)),
            metadata: device.metadata,
            body: compress_prepend_size_with_dict(&text, TEMPLATE.as_bytes()).into_boxed_slice(),
        })
    }

    /// The Device's labels (its metadata holds none: they are shared, see the field). This,
    /// not `ResourceExt::labels`, which reads the metadata.
    pub fn labels(&self) -> &Labels {
        static NONE: Labels = Labels::new();
        self.labels.as_deref().unwrap_or(&NONE)
    }

    /// The Device's uid (kept as text or as 16 bytes, see the field). This, not
    /// `ResourceExt::uid`, which reads the metadata.
    pub fn uid(&self) -> Option<String> {
        match self.uid {
            Some(uid) => Some(uid.hyphenated().to_string()),
            None => self.metadata.uid.clone(),
        }
    }

    /// Bytes the spec and status take in the cache (compressed).
    pub fn kept_bytes(&self) -> usize {
        self.body.len()
    }

    /// The spec and status as the cache keeps them, as JSON text (without the reported map).
    pub fn text(&self) -> Result<String, ReadBackError> {
        self.with_text(|text| Ok(String::from_utf8(text.to_vec())?))
    }

    /// The reference the fleet index knows this Device by.
    pub fn device_ref(&self) -> ObjectRef<Device> {
        crate::fleet::bare_ref(self).into_kind_unchecked(())
    }

    /// A projection of the Device's spec and status (read as `{"spec": …, "status": …}`),
    /// without building the whole Device: what the projection does not name is skipped.
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, ReadBackError> {
        self.with_text(|text| Ok(serde_json::from_slice(text)?))
    }

    /// Hands the decompressed text to `read`, in a buffer this thread keeps: whole-fleet passes
    /// read every cached Device, and a new zeroed buffer for each cost more than decompressing.
    fn with_text<T>(
        &self,
        read: impl FnOnce(&[u8]) -> Result<T, ReadBackError>,
    ) -> Result<T, ReadBackError> {
        /// A buffer that grew past this for a large Device is given back after use.
        const KEPT: usize = 64 * 1024;
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let (size, compressed) = uncompressed_size(&self.body)?;
        let decompress_then_read = |buffer: &mut Vec<u8>| {
            buffer.resize(size, 0);
            let written = decompress_into_with_dict(compressed, buffer, TEMPLATE.as_bytes())?;
            read(buffer.get(..written).unwrap_or_default())
        };
        BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffer) => {
                let result = decompress_then_read(&mut buffer);
                if buffer.capacity() > KEPT {
                    *buffer = Vec::new();
                }
                result
            }
            // Only if a read ever reads another cached Device while it parses: a buffer of
            // its own, rather than a panic.
            Err(_) => decompress_then_read(&mut Vec::new()),
        })
    }

    /// The Device this was made from, as [`keep_for_cache`] left it, without its
    /// resourceVersion. An error only if the text does not read back, which would be a bug of
    /// this module (it wrote the text).
    pub fn device(&self) -> Result<Device, ReadBackError> {
        let OwnedBody { spec, mut status } = self.read()?;
        if let Some(status) = status.as_mut() {
            status.reported_digest = self.reported_digest;
        }
        let mut metadata = self.metadata.clone();
        metadata.labels = self.labels.as_deref().cloned();
        metadata.uid = self.uid();
        Ok(Device { metadata, spec, status })
    }
}

/// Read from the API as a Device, kept in its cached form (kube-runtime's controller asks
/// that its kind can be read; the operator's watch reads whole Devices, which the fleet index
/// sees before the cache converts them).
impl<'de> Deserialize<'de> for CachedDevice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let device = Device::deserialize(deserializer)?;
        Self::new(device).map_err(serde::de::Error::custom)
    }
}

/// The Device kind's identity: a cached Device is a Device to kube-runtime (its object
/// references, metric labels and Events).
impl Resource for CachedDevice {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Device::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Device::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Device::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Device::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    /// With the uid, which the metadata may not hold (see [`CachedDevice::uid`]): an Event
    /// about a Device names it, so `kubectl describe` finds the Event.
    fn object_ref(&self, _: &()) -> ObjectReference {
        ObjectReference {
            api_version: Some(Self::api_version(&()).into_owned()),
            kind: Some(Self::kind(&()).into_owned()),
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            uid: self.uid(),
            ..ObjectReference::default()
        }
    }

    /// With the uid, which the metadata may not hold (see [`CachedDevice::uid`]).
    fn owner_ref(&self, _: &()) -> Option<OwnerReference> {
        Some(OwnerReference {
            api_version: Self::api_version(&()).into_owned(),
            kind: Self::kind(&()).into_owned(),
            name: self.metadata.name.clone()?,
            uid: self.uid()?,
            ..OwnerReference::default()
        })
    }
}

/// `uid` as 16 bytes, when it is a UUID written as the API server writes them (lowercase,
/// hyphenated), so that it reads back as the same text.
fn canonical_uuid(uid: &str) -> Option<Uuid> {
    Uuid::try_parse(uid).ok().filter(|parsed| parsed.hyphenated().to_string() == uid)
}

/// The cache's reference to the Device `device` refers to (the same name and namespace).
pub fn cached_ref(device: ObjectRef<Device>) -> ObjectRef<CachedDevice> {
    device.into_kind_unchecked(())
}

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
    use kube::ResourceExt;
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

    /// A Device with every part a stored one has, as the API serves it.
    fn stored_device() -> Device {
        let at = "2026-12-01T10:00:00Z";
        serde_json::from_value(json!({
            "apiVersion": "kubetwin.io/v1alpha1",
            "kind": "Device",
            "metadata": {
                "name": "d-1", "namespace": "fleet", "uid": "6f1c2a9e-0b7d-4c53-9a1e-000000000001",
                "resourceVersion": "1000001", "generation": 3, "creationTimestamp": at,
                "labels": {"site": "north", "tier": "edge"},
            },
            "spec": {
                "deviceId": "dev-1",
                "desired": {"rate": 5, "mode": {"eco": true, "levels": [1, 2.5, null]},
                    "tiny": 1.0000000000000001e-60, "huge": 6.39e47, "exact": 0.30000000000000004},
                "firmware": {"version": "1.5.0", "url": "http://fw/1.5.0.bin", "sha256": "ab".repeat(32)},
            },
            "status": {
                "observedGeneration": 3, "deviceId": "dev-1",
                "connection": {"state": "Connected", "since": at, "lastSeen": at},
                "reported": {"rate": 5, "fw": "1.4.2"}, "reportedAt": at,
                "lastReported": {"boot": 1_764_583_200, "seq": 42},
                "firmware": {"current": "1.4.2", "target": "1.5.0"},
                "configurations": [{"name": "edge", "generation": 2}],
                "inSync": false,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Connected",
                    "message": "The device is connected", "lastTransitionTime": at,
                    "observedGeneration": 3}],
            },
        }))
        .expect("a Device")
    }

    /// A Device's parts, to compare (the Device type itself has no equality).
    fn parts(device: Device) -> (ObjectMeta, DeviceSpec, Option<DeviceStatus>) {
        (device.metadata, device.spec, device.status)
    }

    #[test]
    fn a_cached_device_reads_back_as_the_device_less_its_reported_map() {
        let mut bare = Device::new("bare", DeviceSpec::default());
        bare.metadata.namespace = Some("fleet".into());
        for device in [stored_device(), bare] {
            let cached = CachedDevice::new(device.clone()).expect("cached");
            let mut kept = device.clone();
            keep_for_cache(&mut kept);
            kept.metadata.resource_version = None;
            assert_eq!(
                parts(cached.device().expect("reads back")),
                parts(kept),
                "{}",
                device.name_any()
            );
            // Its labels are read from the shared set, not the metadata.
            assert_eq!(cached.labels(), device.labels());
            assert_eq!(cached.metadata.labels, None);
            // The fleet index knows it by the same reference; Events name a Device.
            assert_eq!(cached.device_ref(), crate::fleet::bare_ref(&device));
            assert_eq!(cached.object_ref(&()), device.object_ref(&()));
        }
        // Devices with the same labels share one copy of them.
        let mut twin = stored_device();
        twin.metadata.name = Some("d-2".into());
        let (one, two) = (CachedDevice::new(stored_device()), CachedDevice::new(twin));
        let (one, two) = (one.expect("cached"), two.expect("cached"));
        assert!(std::ptr::eq(one.labels(), two.labels()));
        // Read from the API, it is the same as cached from a Device.
        let from_api: CachedDevice =
            serde_json::from_value(serde_json::to_value(stored_device()).expect("json"))
                .expect("reads as a cached Device");
        let mut kept = stored_device();
        keep_for_cache(&mut kept);
        kept.metadata.resource_version = None;
        assert_eq!(parts(from_api.device().expect("reads back")), parts(kept));
        // A projection reads what it names and nothing else.
        #[derive(serde::Deserialize)]
        struct Firmware {
            spec: DeviceSpec,
        }
        let spec = from_api.read::<Firmware>().expect("a projection").spec;
        assert_eq!(spec.firmware.map(|f| f.version).as_deref(), Some("1.5.0"));
    }

    #[test]
    fn a_uuid_uid_is_kept_as_bytes_and_any_other_uid_as_text_and_both_read_back() {
        for (uid, as_bytes) in [
            ("6f1c2a9e-0b7d-4c53-9a1e-000000000001", true),
            // Not as the API server writes a UUID: kept as it is, so it reads back the same.
            ("6F1C2A9E-0B7D-4C53-9A1E-000000000001", false),
            ("6f1c2a9e0b7d4c539a1e000000000001", false),
            ("uid-1", false),
        ] {
            let mut device = stored_device();
            device.metadata.uid = Some(uid.into());
            let cached = CachedDevice::new(device).expect("cached");
            assert_eq!(cached.uid().as_deref(), Some(uid));
            assert_eq!(cached.metadata.uid.is_none(), as_bytes, "{uid}");
            assert_eq!(cached.device().expect("reads back").metadata.uid.as_deref(), Some(uid));
            // kube-runtime's key of the cached Device holds no copy of a uid kept as bytes.
            let key = ObjectRef::<CachedDevice>::from_obj(&cached);
            assert_eq!(key.extra.uid.is_none(), as_bytes, "{uid}");
            assert_eq!(key.extra.resource_version, None);
            // What names it elsewhere (Events, owner references) has the uid.
            assert_eq!(cached.object_ref(&()).uid.as_deref(), Some(uid));
            assert_eq!(cached.controller_owner_ref(&()).map(|o| o.uid).as_deref(), Some(uid));
        }
        let mut without = stored_device();
        without.metadata.uid = None;
        assert_eq!(CachedDevice::new(without).expect("cached").uid(), None);
        // In its `Arc` (16 bytes of counts), a cached Device stays in jemalloc's 448-byte class.
        assert!(size_of::<CachedDevice>() + 16 <= 448, "{}", size_of::<CachedDevice>());
    }

    #[test]
    fn the_template_is_a_cached_text_and_a_typical_device_keeps_a_fraction_of_its_text() {
        // The template is what the cache writes for the Device it describes (the same field
        // names and order), so a typical Device's text finds most of itself in it.
        let body: OwnedBody = serde_json::from_str(TEMPLATE).expect("the template reads");
        let written =
            serde_json::to_string(&Body { spec: &body.spec, status: body.status.as_ref() })
                .expect("writes");
        assert_eq!(written, TEMPLATE);
        let cached = CachedDevice::new(stored_device()).expect("cached");
        let text = cached.text().expect("decompresses");
        assert!(
            cached.kept_bytes() * 3 < text.len(),
            "{} bytes kept of {} of text",
            cached.kept_bytes(),
            text.len()
        );
        // A Device unlike the template keeps all it says.
        let mut unusual = stored_device();
        unusual.spec.desired = Some(map(json!({"x": "ü".repeat(500), "y": [1, 2, 3]})));
        let cached = CachedDevice::new(unusual.clone()).expect("cached");
        assert_eq!(cached.device().expect("reads back").spec.desired, unusual.spec.desired);
        // One larger than the buffer a thread keeps, then a small one again: each reads whole.
        let mut large = stored_device();
        large.spec.desired = Some(map(json!({"blob": "x".repeat(100 * 1024)})));
        let cached_large = CachedDevice::new(large.clone()).expect("cached");
        assert_eq!(cached_large.device().expect("reads back").spec.desired, large.spec.desired);
        assert_eq!(cached.device().expect("reads back").spec.desired, unusual.spec.desired);
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
