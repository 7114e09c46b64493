//! In-memory state of the fleet (linkerd-style index): what each device last said over MQTT,
//! which Device object owns which device id, and which RebootRequests follow which Device.
//! No I/O here; the MQTT handler and the controllers read and update it.

use std::collections::{HashMap, HashSet, VecDeque};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use kubetwin_api::{
    AppliedVersion, ConnectionState, ConnectionStatus, Device, DeviceStatus, RebootRequest,
    ReportCursor,
};
use kubetwin_protocol::{
    Admission, Cursor, MethodResponse, Presence, PresenceCursor, PresenceState, ReportedMessage,
    ResponseStatus, admit, admit_presence, admit_response, apply_reported,
};
use serde_json::{Map, Value};

/// How many method responses are remembered per device.
const REMEMBERED_RESPONSES: usize = 16;
/// How many device ids without a Device object the index keeps state for.
pub const MAX_UNCLAIMED: usize = 10_000;

/// The latest answer of a device to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseRecord {
    /// Request id.
    pub request_id: String,
    /// Position of the answer.
    pub cursor: Cursor,
    /// What the device said.
    pub status: ResponseStatus,
    /// HTTP-like code.
    pub code: u16,
    /// Device's message.
    pub message: String,
}

/// What the operator knows about one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceTwin {
    /// Last accepted reported position.
    pub cursor: Option<Cursor>,
    /// Reported properties, merged.
    pub reported: Map<String, Value>,
    /// When the last reported message was accepted.
    pub reported_at: Option<Timestamp>,
    /// Desired version the device applied.
    pub applied: Option<AppliedVersion>,
    /// Position of the last accepted presence message (`None` since the operator started).
    pub presence: Option<PresenceCursor>,
    /// Connection as shown in status.
    pub connection: ConnectionStatus,
    /// Latest answers to method requests, newest last.
    pub responses: VecDeque<ResponseRecord>,
    /// Desired version published in this MQTT session (`None`: publish again).
    pub published: Option<(String, i64)>,
}

impl DeviceTwin {
    /// A twin seeded from what the Device's status already records, so that nothing older
    /// than what status shows is accepted after an operator restart.
    pub fn from_status(status: Option<&DeviceStatus>) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        Self {
            cursor: status
                .last_reported
                .map(|c| Cursor { boot: c.boot.max(0) as u64, seq: c.seq.max(0) as u64 }),
            reported: status.reported.clone().map(|r| r.into_iter().collect()).unwrap_or_default(),
            reported_at: status.reported_at.as_ref().map(|t| t.0),
            applied: status.applied.clone(),
            presence: None,
            connection: status.connection.clone().unwrap_or_default(),
            responses: VecDeque::new(),
            published: None,
        }
    }

    /// Applies a reported message if it is newer than the last accepted one.
    pub fn apply_reported(&mut self, message: &ReportedMessage, now: Timestamp) -> Admission {
        let admission = admit(self.cursor, message.cursor());
        if admission.is_accept() {
            apply_reported(&mut self.reported, message);
            self.cursor = Some(message.cursor());
            self.reported_at = Some(now);
            if let Some(applied) = &message.applied {
                self.applied =
                    Some(AppliedVersion { epoch: applied.epoch.clone(), version: applied.version });
            }
            self.connection.last_seen = Some(Time(now));
        }
        admission
    }

    /// Applies a presence message unless it belongs to an older connection. A `retained`
    /// replay (delivered again after the operator (re)subscribed) that matches the state the
    /// status already shows only restores the connection position, so a restart writes nothing.
    pub fn apply_presence(
        &mut self,
        message: &Presence,
        now: Timestamp,
        retained: bool,
    ) -> Admission {
        let admission = admit_presence(self.presence, message.cursor());
        if admission.is_accept() {
            let state = match message.state {
                PresenceState::Online => ConnectionState::Connected,
                PresenceState::Offline => ConnectionState::Disconnected,
            };
            let replay = retained && self.presence.is_none() && self.connection.state == state;
            self.presence = Some(message.cursor());
            if replay {
                return admission;
            }
            if self.connection.state != state || self.connection.since.is_none() {
                self.connection.since = Some(Time(now));
            }
            self.connection.state = state;
            self.connection.reason = message.reason.clone();
            self.connection.last_seen = Some(Time(now));
        }
        admission
    }

    /// Records a method response if it is newer than the last one for its request.
    pub fn apply_response(&mut self, message: &MethodResponse) -> Admission {
        let last = self.response(&message.id).map(|r| (r.cursor, r.status));
        let admission = admit_response(last, message);
        if admission.is_accept() {
            self.responses.retain(|r| r.request_id != message.id);
            self.responses.push_back(ResponseRecord {
                request_id: message.id.clone(),
                cursor: message.cursor(),
                status: message.status,
                code: message.code,
                message: message.message.clone().unwrap_or_default(),
            });
            while self.responses.len() > REMEMBERED_RESPONSES {
                self.responses.pop_front();
            }
        }
        admission
    }

    /// The latest answer to `request_id`.
    pub fn response(&self, request_id: &str) -> Option<&ResponseRecord> {
        self.responses.iter().find(|r| r.request_id == request_id)
    }

    /// Whether the device is online, as far as presence tells (`None`: no presence seen).
    pub fn online(&self) -> Option<bool> {
        self.presence.map(|_| self.connection.state == ConnectionState::Connected)
    }

    /// The device's current boot counter from its presence.
    pub fn boot(&self) -> Option<i64> {
        self.presence.map(|p| p.boot as i64)
    }

    /// Status fields that come from the device.
    pub fn write_into(&self, status: &mut DeviceStatus) {
        status.connection = Some(self.connection.clone());
        status.reported = Some(self.reported.clone().into_iter().collect());
        status.reported_at = self.reported_at.map(Time);
        status.last_reported =
            self.cursor.map(|c| ReportCursor { boot: c.boot as i64, seq: c.seq as i64 });
        status.applied = self.applied.clone();
    }
}

/// Who owns a device id: the oldest Device claiming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This Device owns the id.
    Owner,
    /// Another, older Device owns the id (`namespace/name`).
    Conflict(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Claimant {
    object: ObjectRef<Device>,
    created: Option<Timestamp>,
}

/// The fleet index.
#[derive(Debug, Default)]
pub struct TwinIndex {
    twins: HashMap<String, DeviceTwin>,
    claims: HashMap<String, Vec<Claimant>>,
    ids: HashMap<ObjectRef<Device>, String>,
    requests: HashMap<ObjectRef<Device>, HashSet<ObjectRef<RebootRequest>>>,
    unclaimed: HashMap<String, DeviceTwin>,
}

impl TwinIndex {
    /// Registers `device` as a claimant of its device id and says whether it owns it. Claims
    /// of objects for which `exists` is false are forgotten first.
    pub fn claim(&mut self, device: &Device, exists: impl Fn(&ObjectRef<Device>) -> bool) -> Claim {
        let object = bare_ref(device);
        let id = device.effective_device_id();
        if let Some(previous) = self.ids.insert(object.clone(), id.clone())
            && previous != id
        {
            self.release_claim(&previous, &object);
        }
        let claimants = self.claims.entry(id).or_default();
        claimants.retain(|c| c.object == object || exists(&c.object));
        if !claimants.iter().any(|c| c.object == object) {
            claimants.push(Claimant {
                object: object.clone(),
                created: device.metadata.creation_timestamp.as_ref().map(|t| t.0),
            });
        }
        claimants.sort_by(|a, b| {
            (a.created, &a.object.namespace, &a.object.name).cmp(&(
                b.created,
                &b.object.namespace,
                &b.object.name,
            ))
        });
        match claimants.first() {
            Some(first) if first.object != object => Claim::Conflict(format!(
                "{}/{}",
                first.object.namespace.as_deref().unwrap_or_default(),
                first.object.name
            )),
            _ => Claim::Owner,
        }
    }

    /// Forgets a Device that no longer exists.
    pub fn forget(&mut self, object: &ObjectRef<Device>) {
        if let Some(id) = self.ids.remove(object) {
            self.release_claim(&id, object);
        }
        self.requests.remove(object);
    }

    fn release_claim(&mut self, id: &str, object: &ObjectRef<Device>) {
        if let Some(claimants) = self.claims.get_mut(id) {
            claimants.retain(|c| &c.object != object);
            if claimants.is_empty() {
                self.claims.remove(id);
                self.twins.remove(id);
            }
        }
    }

    /// The Device that owns `device_id`, if any.
    pub fn owner(&self, device_id: &str) -> Option<&ObjectRef<Device>> {
        self.claims.get(device_id).and_then(|c| c.first()).map(|c| &c.object)
    }

    /// The twin of `device_id`, created from `status` when not known yet.
    pub fn twin_mut(&mut self, device_id: &str, status: Option<&DeviceStatus>) -> &mut DeviceTwin {
        let unclaimed = &mut self.unclaimed;
        self.twins.entry(device_id.to_string()).or_insert_with(|| {
            match unclaimed.remove(device_id) {
                // What the device said before its Device existed; status is new and empty then.
                Some(early) if status.is_none_or(|s| s.last_reported.is_none()) => early,
                _ => DeviceTwin::from_status(status),
            }
        })
    }

    /// State for a device id that no Device claims (yet), so that a Device created right after
    /// its device connected starts from what the device already said. `None` once
    /// [`MAX_UNCLAIMED`] such ids are held.
    pub fn unclaimed_twin_mut(&mut self, device_id: &str) -> Option<&mut DeviceTwin> {
        if !self.unclaimed.contains_key(device_id) && self.unclaimed.len() >= MAX_UNCLAIMED {
            return None;
        }
        Some(self.unclaimed.entry(device_id.to_string()).or_default())
    }

    /// The twin of `device_id`, if known.
    pub fn twin(&self, device_id: &str) -> Option<&DeviceTwin> {
        self.twins.get(device_id)
    }

    /// Forgets what was published in the last MQTT session, so every desired document is
    /// published again.
    pub fn forget_published(&mut self) {
        for twin in self.twins.values_mut() {
            twin.published = None;
        }
    }

    /// Follows (or stops following) a RebootRequest that targets `device`.
    pub fn track_request(
        &mut self,
        device: ObjectRef<Device>,
        request: &RebootRequest,
        active: bool,
    ) {
        let request_ref = bare_ref(request);
        let set = self.requests.entry(device.clone()).or_default();
        if active {
            set.insert(request_ref);
        } else {
            set.remove(&request_ref);
            if set.is_empty() {
                self.requests.remove(&device);
            }
        }
    }

    /// The active RebootRequests that target `device`.
    pub fn requests_for(&self, device: &ObjectRef<Device>) -> Vec<ObjectRef<RebootRequest>> {
        self.requests.get(device).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Number of device twins held.
    pub fn len(&self) -> usize {
        self.twins.len()
    }

    /// Whether no twin is held.
    pub fn is_empty(&self) -> bool {
        self.twins.is_empty()
    }
}

/// A reference by namespace and name only (no uid or resourceVersion strings): the index
/// holds one or two per object, and at 100,000 objects the extra strings add up.
fn bare_ref<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let name = object.meta().name.as_deref().unwrap_or_default();
    match object.meta().namespace.as_deref() {
        Some(namespace) => ObjectRef::new(name).within(namespace),
        None => ObjectRef::new(name),
    }
}

/// The ObjectRef of the Device a RebootRequest targets.
pub fn target_of(request: &RebootRequest) -> ObjectRef<Device> {
    ObjectRef::new(&request.spec.device_name).within(&request.namespace().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetwin_api::DeviceSpec;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn reported(boot: u64, seq: u64, full: bool, body: Value) -> ReportedMessage {
        let map = body.as_object().cloned().unwrap_or_default();
        if full {
            ReportedMessage::full(boot, seq, map)
        } else {
            ReportedMessage::patch(boot, seq, map)
        }
    }

    fn device(ns: &str, name: &str, id: Option<&str>, created: i64) -> Device {
        let mut d = Device::new(name, DeviceSpec { device_id: id.map(Into::into), desired: None });
        d.metadata.namespace = Some(ns.into());
        d.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("valid")));
        d
    }

    #[test]
    fn duplicates_reordering_and_stale_reports_never_move_state_back() {
        let mut twin = DeviceTwin::default();
        assert!(
            twin.apply_reported(&reported(1, 1, true, json!({"a": 1, "b": 1})), now()).is_accept()
        );
        assert!(twin.apply_reported(&reported(1, 3, false, json!({"a": 3})), now()).is_accept());
        assert_eq!(
            twin.apply_reported(&reported(1, 2, false, json!({"a": 2})), now()),
            Admission::Stale
        );
        assert_eq!(
            twin.apply_reported(&reported(1, 3, false, json!({"a": 3})), now()),
            Admission::Duplicate
        );
        assert_eq!(twin.reported.get("a"), Some(&json!(3)));
        assert!(twin.apply_reported(&reported(1, 4, false, json!({"b": null})), now()).is_accept());
        assert_eq!(twin.reported.get("b"), None, "null deletes a key");
        assert!(twin.apply_reported(&reported(2, 1, true, json!({"c": 1})), now()).is_accept());
        assert_eq!(twin.reported, json!({"c": 1}).as_object().cloned().unwrap_or_default());
        assert_eq!(
            twin.apply_reported(&reported(1, 99, false, json!({"a": 9})), now()),
            Admission::Stale
        );
    }

    #[test]
    fn a_twin_seeded_from_status_rejects_what_status_already_shows() {
        let status = DeviceStatus {
            last_reported: Some(ReportCursor { boot: 3, seq: 7 }),
            reported: Some([("x".to_string(), json!(1))].into_iter().collect()),
            ..Default::default()
        };
        let mut twin = DeviceTwin::from_status(Some(&status));
        assert_eq!(
            twin.apply_reported(&reported(3, 7, false, json!({"x": 0})), now()),
            Admission::Duplicate
        );
        assert_eq!(
            twin.apply_reported(&reported(2, 9, false, json!({"x": 0})), now()),
            Admission::Stale
        );
        assert_eq!(twin.reported.get("x"), Some(&json!(1)));
    }

    #[test]
    fn a_late_last_will_of_an_old_connection_is_ignored() {
        let mut twin = DeviceTwin::default();
        assert!(
            twin.apply_presence(&Presence::new(PresenceState::Online, 2, 1), now(), false)
                .is_accept()
        );
        assert!(
            twin.apply_presence(&Presence::new(PresenceState::Online, 2, 2), now(), false)
                .is_accept()
        );
        let late_will = Presence::new(PresenceState::Offline, 2, 1);
        assert_eq!(twin.apply_presence(&late_will, now(), false), Admission::Stale);
        assert_eq!(twin.online(), Some(true));
        assert!(
            twin.apply_presence(&Presence::new(PresenceState::Offline, 2, 2), now(), false)
                .is_accept()
        );
        assert_eq!(twin.online(), Some(false));
        assert_eq!(twin.boot(), Some(2));
    }

    #[test]
    fn a_retained_presence_replay_after_a_restart_changes_nothing_shown() {
        let since = Time(Timestamp::from_second(1_600_000_000).expect("valid"));
        let status = DeviceStatus {
            connection: Some(ConnectionStatus {
                state: ConnectionState::Connected,
                since: Some(since.clone()),
                last_seen: Some(since.clone()),
                reason: None,
            }),
            ..Default::default()
        };
        let mut twin = DeviceTwin::from_status(Some(&status));
        let replay = Presence::new(PresenceState::Online, 4, 1);
        assert!(twin.apply_presence(&replay, now(), true).is_accept());
        assert_eq!(twin.connection.since, Some(since.clone()));
        assert_eq!(twin.connection.last_seen, Some(since));
        assert_eq!(twin.boot(), Some(4), "the position is known again");
    }

    #[test]
    fn responses_are_ordered_and_bounded() {
        let mut twin = DeviceTwin::default();
        let accepted = MethodResponse::new("r1", ResponseStatus::Accepted, 1, 5);
        let done = MethodResponse::new("r1", ResponseStatus::Succeeded, 2, 1);
        assert!(twin.apply_response(&accepted).is_accept());
        assert!(twin.apply_response(&done).is_accept());
        assert!(!twin.apply_response(&accepted).is_accept(), "nothing follows a terminal answer");
        assert_eq!(twin.response("r1").map(|r| r.status), Some(ResponseStatus::Succeeded));
        for i in 0..40 {
            twin.apply_response(&MethodResponse::new(
                format!("x{i}"),
                ResponseStatus::Accepted,
                1,
                i,
            ));
        }
        assert_eq!(twin.responses.len(), REMEMBERED_RESPONSES);
    }

    #[test]
    fn what_a_device_said_before_its_device_existed_is_kept() {
        let mut index = TwinIndex::default();
        let early = index.unclaimed_twin_mut("plant.sensor-1").expect("room");
        assert!(
            early
                .apply_presence(&Presence::new(PresenceState::Online, 1, 1), now(), false)
                .is_accept()
        );
        let twin = index.twin_mut("plant.sensor-1", None);
        assert_eq!(twin.online(), Some(true));
        assert!(index.unclaimed_twin_mut("plant.sensor-1").is_some_and(|t| t.presence.is_none()));
    }

    #[test]
    fn the_oldest_device_owns_a_device_id() {
        let mut index = TwinIndex::default();
        let old = device("a", "one", Some("shared.id"), 100);
        let new = device("b", "two", Some("shared.id"), 200);
        assert_eq!(index.claim(&new, |_| true), Claim::Owner);
        assert_eq!(index.claim(&old, |_| true), Claim::Owner);
        assert_eq!(index.claim(&new, |_| true), Claim::Conflict("a/one".into()));
        assert_eq!(index.owner("shared.id"), Some(&ObjectRef::from_obj(&old)));
        let old_ref = ObjectRef::from_obj(&old);
        assert_eq!(
            index.claim(&new, |o| o != &old_ref),
            Claim::Owner,
            "a deleted owner frees the id"
        );
    }
}
