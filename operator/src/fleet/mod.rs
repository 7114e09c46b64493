//! The fleet index (linkerd-style): what each device said over MQTT, which Device owns which
//! device id, and which requests follow which Device. It has no I/O and is fed one event at a
//! time — a Device watch event, an MQTT message — each with a single call that returns what
//! the caller must do next (which objects to reconcile).
//!
//! - [`state`]: one device's state and how each message changes it;
//! - [`ownership`]: device-id claims, oldest Device first;
//! - [`unknown`]: bounded, expiring state for ids no Device claims, and a bounded log limiter;
//! - [`followers`]: active requests per Device.

pub mod compact;
pub mod followers;
pub mod ownership;
pub mod state;
pub mod unknown;

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::{reflector::ObjectRef, watcher};
use kubetwin_api::Device;
use kubetwin_protocol::{Admission, DeviceId, Inbound};

use crate::error::ReadBackError;

pub use followers::Follower;
pub use ownership::Claim;
pub use state::{Answer, DeviceState, Published};

use followers::Followers;
use ownership::{Claimant, Ownership};
use unknown::UnknownDevices;

/// The kind of an inbound message, as counted in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A reported message.
    Reported,
    /// A presence message.
    Presence,
    /// A method response.
    Response,
    /// A request to republish the desired document.
    Get,
    /// A message on an operator-to-device topic (desired, request): not for the operator.
    Operator,
}

impl MessageKind {
    /// Metric label of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Presence => "presence",
            Self::Response => "response",
            Self::Get => "get",
            Self::Operator => "operator",
        }
    }

    /// The kind of `inbound`.
    pub fn of(inbound: &Inbound) -> Self {
        match inbound {
            Inbound::Reported { .. } => Self::Reported,
            Inbound::Presence { .. } => Self::Presence,
            Inbound::Response { .. } => Self::Response,
            Inbound::Get { .. } => Self::Get,
            Inbound::Desired { .. } | Inbound::Request { .. } => Self::Operator,
        }
    }
}

/// What the index did with an inbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Applied to the state of the device owned by `owner`; `owner` and `followers` should be
    /// reconciled.
    Accepted {
        /// The message kind.
        kind: MessageKind,
        /// The Device that owns the device id.
        owner: ObjectRef<Device>,
        /// Active requests that follow that Device.
        followers: Vec<Follower>,
    },
    /// Dropped by the ordering rules (`duplicate`, `stale`).
    Dropped {
        /// The message kind.
        kind: MessageKind,
        /// Metric label of the drop reason.
        reason: &'static str,
    },
    /// No Device claims the id; the message was kept (bounded) for a Device created later.
    Unknown {
        /// The message kind.
        kind: MessageKind,
    },
    /// A retained desired document (or its clearing) that the operator did not publish, on
    /// the topic of a device `owner` owns: it must be published again.
    DesiredOverwritten {
        /// The Device that owns the device id.
        owner: ObjectRef<Device>,
    },
    /// A retained desired document for a device id no Device has: it must be cleared.
    DesiredOrphaned,
}

/// Why the operator clears a retained desired document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClearReason {
    /// Its Device was deleted (or now names another device id), and no other Device has the id.
    Deleted,
    /// The broker holds it for an id no Device has (the Device was deleted while the operator
    /// was not running).
    Orphan,
}

impl ClearReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Orphan => "orphan",
        }
    }
}

/// What a Device watch event changed.
#[derive(Debug, Default, PartialEq)]
pub struct FleetChange {
    /// Devices whose claim on their device id changed: reconcile them.
    pub reconcile: Vec<ObjectRef<Device>>,
    /// Device ids no Device has any more: clear their retained desired documents.
    pub freed: Vec<DeviceId>,
}

/// The fleet index.
#[derive(Debug, Default)]
pub struct FleetIndex {
    ownership: Ownership,
    /// Boxed: a DeviceState is ~420 bytes, and the table keeps room for up to twice as many
    /// entries as it holds; boxed, the spare room costs a pointer per slot instead.
    states: HashMap<DeviceId, Box<DeviceState>>,
    unknown: UnknownDevices,
    followers: Followers,
    /// Devices seen since the current (re)list started; `None` outside a list.
    listing: Option<HashSet<ObjectRef<Device>>>,
    synced: bool,
    /// The device ids whose orphaned desired documents this operator may clear: those starting
    /// with this prefix (`<namespace>.` when it watches one namespace), or all.
    orphan_prefix: Option<String>,
}

/// A reference by namespace and name only (no uid or resourceVersion strings): the index
/// holds one or two per object, and at 100,000 objects the extra strings add up.
pub fn bare_ref<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let name = object.meta().name.as_deref().unwrap_or_default();
    match object.meta().namespace.as_deref() {
        Some(namespace) => ObjectRef::new(name).within(namespace),
        None => ObjectRef::new(name),
    }
}

impl FleetIndex {
    /// An index that clears orphaned desired documents only for device ids starting with
    /// `prefix` (an operator watching one namespace owns only that namespace's default ids).
    pub fn with_orphan_prefix(prefix: Option<String>) -> Self {
        Self { orphan_prefix: prefix, ..Self::default() }
    }

    /// Applies one event of the Device watch. Returns the Devices to reconcile and the ids to
    /// clear.
    pub fn device_event(&mut self, event: &watcher::Event<Device>, now: Timestamp) -> FleetChange {
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                FleetChange::default()
            }
            watcher::Event::InitApply(device) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(bare_ref(device));
                }
                self.device_applied(device, now)
            }
            watcher::Event::InitDone => {
                // Devices deleted while the watch was down get no Delete event: forget every
                // Device the new list did not show.
                let listed = self.listing.take().unwrap_or_default();
                let gone: Vec<_> =
                    self.ownership.objects().filter(|o| !listed.contains(o)).collect();
                let mut changed = FleetChange::default();
                for object in gone {
                    let change = self.device_gone(&object);
                    changed.reconcile.extend(change.reconcile);
                    changed.freed.extend(change.freed);
                }
                self.synced = true;
                changed
            }
            watcher::Event::Apply(device) => self.device_applied(device, now),
            watcher::Event::Delete(device) => self.device_gone(&bare_ref(device)),
        }
    }

    /// Whether the first complete list of Devices is in.
    pub fn synced(&self) -> bool {
        self.synced
    }

    fn device_applied(&mut self, device: &Device, now: Timestamp) -> FleetChange {
        let object = bare_ref(device);
        let Ok(id) = DeviceId::new(&device.effective_device_id()) else {
            // No valid device id: the Device claims nothing (its status says why).
            return self.device_gone(&object);
        };
        let claimant = Claimant {
            object: object.clone(),
            created: device.metadata.creation_timestamp.as_ref().map(|t| t.0),
            uid: device.metadata.uid.clone().unwrap_or_default(),
        };
        let (reconcile, freed) = self.ownership.claim(id.clone(), claimant);
        if let Some(freed) = &freed {
            self.states.remove(freed);
        }
        if self.ownership.owns(&id, &object) && !self.states.contains_key(&id) {
            let status = device.status.as_ref();
            let early = self.unknown.take(&id, Instant::now());
            let state = match early {
                // What the device said before its Device existed; status is new and empty then.
                Some(early) if status.is_none_or(|s| s.last_reported.is_none()) => early,
                _ => DeviceState::from_status(status, now),
            };
            self.states.insert(id, Box::new(state));
        }
        FleetChange { reconcile, freed: freed.into_iter().collect() }
    }

    fn device_gone(&mut self, object: &ObjectRef<Device>) -> FleetChange {
        let (freed, successor) = self.ownership.release(object);
        if let Some(id) = &freed {
            self.states.remove(id);
        }
        FleetChange {
            reconcile: successor.into_iter().collect(),
            freed: freed.into_iter().collect(),
        }
    }

    /// Where `device` stands with its device id (`None` when it claims none, for example
    /// before the index saw it).
    pub fn claim_of(&self, device: &ObjectRef<Device>) -> Option<Claim> {
        self.ownership.claim_of(device)
    }

    /// The state of the device with `id`, if a Device owns it.
    pub fn state(&self, id: &str) -> Option<&DeviceState> {
        self.states.get(id).map(|state| &**state)
    }

    /// The state of the device with `id`, if a Device owns it.
    pub fn state_mut(&mut self, id: &str) -> Option<&mut DeviceState> {
        self.states.get_mut(id).map(|state| &mut **state)
    }

    /// A retained desired document was cleared (an empty payload) on the topic of `id`.
    pub fn desired_cleared(&mut self, id: &str) -> Admitted {
        self.desired_seen(id, None)
    }

    /// The broker delivered a desired document (`None`: its clearing) on the topic of `id`:
    /// the operator's own is an echo; anything else overwrote it, so it is republished.
    fn desired_seen(
        &mut self,
        id: &str,
        document: Option<&kubetwin_protocol::DesiredDocument>,
    ) -> Admitted {
        let kind = MessageKind::Operator;
        let Some(owner) = self.ownership.owner(id) else {
            // A document for an id no Device has: left behind by a Device deleted while the
            // operator was not running. Only once every Device is known, and only in scope.
            let in_scope = self.orphan_prefix.as_deref().is_none_or(|p| id.starts_with(p));
            if document.is_some() && self.synced && in_scope {
                return Admitted::DesiredOrphaned;
            }
            return Admitted::Dropped { kind, reason: "operator" };
        };
        let Some(state) = self.states.get_mut(id) else {
            return Admitted::Dropped { kind, reason: "operator" };
        };
        let Some(published) = &state.published else {
            // Nothing published in this session yet: the next reconcile publishes anyway.
            return Admitted::Dropped { kind, reason: "operator" };
        };
        if document.is_some_and(|d| &Published::of(d) == published) {
            return Admitted::Dropped { kind, reason: "operator" };
        }
        state.published = None;
        Admitted::DesiredOverwritten { owner }
    }

    /// Applies one decoded MQTT message.
    pub fn admit(&mut self, inbound: &Inbound, now: Timestamp, clock: Instant) -> Admitted {
        let kind = MessageKind::of(inbound);
        let id = inbound.device_id();
        if let Inbound::Desired { message, .. } = inbound {
            return self.desired_seen(id, Some(message));
        }
        let owner = self.ownership.owner(id);
        let state = match (&owner, self.states.get_mut(id)) {
            (Some(_), Some(state)) => state,
            _ => {
                // No Device has this id (yet). Nothing changes in the API; the latest state is
                // kept (bounded) so that a Device created a moment later starts from it.
                if let Some(state) = self.unknown.state_mut(id, clock)
                    && let Err(error) = apply(state, inbound, now)
                {
                    tracing::error!(%error, device = %id, "a message for an unclaimed id was dropped");
                }
                return Admitted::Unknown { kind };
            }
        };
        let admission = match apply(state, inbound, now) {
            Ok(admission) => admission,
            Err(error) => {
                tracing::error!(%error, device = %id, "a message was dropped");
                return Admitted::Dropped { kind, reason: UNREADABLE_STATE };
            }
        };
        match (admission.drop_reason(), owner) {
            (Some(reason), _) => Admitted::Dropped { kind, reason },
            (None, Some(owner)) => {
                let followers = self.followers.of(&owner);
                Admitted::Accepted { kind, owner, followers }
            }
            (None, None) => Admitted::Unknown { kind },
        }
    }

    /// Forgets what was published in the last MQTT session, so every desired document is
    /// published again.
    pub fn forget_published(&mut self) {
        for state in self.states.values_mut() {
            state.published = None;
        }
    }

    /// `follower` (an active request) follows `device` from now on.
    pub fn follow(&mut self, device: ObjectRef<Device>, follower: Follower) {
        self.followers.follow(device, follower);
    }

    /// `follower` finished or was deleted.
    pub fn unfollow(&mut self, follower: &Follower) {
        self.followers.unfollow(follower);
    }

    /// Sizes of the index, for tests and metrics: (owned device states, claimed ids, ids
    /// without a Device, followed requests).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (self.states.len(), self.ownership.len(), self.unknown.len(), self.followers.len())
    }
}

/// Metric label of a message dropped because the device's kept state did not read back (a bug
/// of the index, logged as an error).
pub const UNREADABLE_STATE: &str = "unreadable-state";

/// Applies a decoded message to a device's state. Fails only when the state's kept reported
/// properties do not read back (a bug), changing nothing.
fn apply(
    state: &mut DeviceState,
    inbound: &Inbound,
    now: Timestamp,
) -> Result<Admission, ReadBackError> {
    Ok(match inbound {
        Inbound::Reported { message, .. } => state.apply_reported(message, now)?,
        Inbound::Presence { message, .. } => state.apply_presence(message, now),
        Inbound::Response { request_id, message, .. } => {
            state.apply_response(request_id, message, now)
        }
        Inbound::Get { .. } => {
            state.published = None;
            Admission::Accept
        }
        // Desired documents are handled before this; requests are not for the operator.
        Inbound::Desired { .. } | Inbound::Request { .. } => Admission::Stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kubetwin_api::DeviceSpec;
    use kubetwin_protocol::{Codec, Presence, PresenceState, Topics};

    fn device(ns: &str, name: &str, id: Option<&str>, created: i64) -> Device {
        let mut d = Device::new(
            name,
            DeviceSpec { device_id: id.map(Into::into), desired: None, firmware: None },
        );
        d.metadata.namespace = Some(ns.into());
        d.metadata.uid = Some(format!("uid-{ns}-{name}"));
        d.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("valid")));
        d
    }

    fn presence(id: &str, boot: u64) -> Inbound {
        let topics = Topics::default();
        let payload = Codec::default()
            .encode(&Presence::new(PresenceState::Online, boot, 1))
            .expect("encodes");
        Codec::default().decode_inbound(&topics, &topics.presence(id), &payload).expect("decodes")
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    #[test]
    fn what_a_device_said_before_its_device_existed_is_kept() {
        let mut index = FleetIndex::default();
        let admitted = index.admit(&presence("plant.sensor-1", 1), now(), Instant::now());
        assert_eq!(admitted, Admitted::Unknown { kind: MessageKind::Presence });
        index.device_event(&watcher::Event::Apply(device("plant", "sensor-1", None, 100)), now());
        let state = index.state("plant.sensor-1").expect("owned");
        assert_eq!(state.online(), Some(true));
        assert_eq!(index.sizes().2, 0, "the early state moved to the owner");
    }

    #[test]
    fn a_state_that_does_not_read_back_drops_the_message_and_changes_nothing() {
        let mut index = FleetIndex::default();
        index.device_event(&watcher::Event::Apply(device("plant", "sensor-1", None, 100)), now());
        index.state_mut("plant.sensor-1").expect("owned").reported =
            compact::CompactObject::unreadable();
        let topics = Topics::default();
        let message = kubetwin_protocol::ReportedMessage::full(1, 1, serde_json::Map::new());
        let payload = Codec::default().encode(&message).expect("encodes");
        let inbound = Codec::default()
            .decode_inbound(&topics, &topics.reported("plant.sensor-1"), &payload)
            .expect("decodes");
        assert_eq!(
            index.admit(&inbound, now(), Instant::now()),
            Admitted::Dropped { kind: MessageKind::Reported, reason: UNREADABLE_STATE }
        );
        let state = index.state("plant.sensor-1").expect("owned");
        assert_eq!(state.position(), None, "the message changed nothing");
        assert!(state.reported().is_err());
    }

    #[test]
    fn a_message_for_an_owned_id_wakes_the_owner_and_its_followers() {
        let mut index = FleetIndex::default();
        let d = device("plant", "sensor-1", None, 100);
        index.device_event(&watcher::Event::Apply(d.clone()), now());
        let follower =
            Follower { kind: "rebootrequest", namespace: "plant".into(), name: "r1".into() };
        index.follow(bare_ref(&d), follower.clone());
        let admitted = index.admit(&presence("plant.sensor-1", 1), now(), Instant::now());
        assert_eq!(
            admitted,
            Admitted::Accepted {
                kind: MessageKind::Presence,
                owner: bare_ref(&d),
                followers: vec![follower],
            }
        );
        let stale = index.admit(&presence("plant.sensor-1", 0), now(), Instant::now());
        assert_eq!(stale, Admitted::Dropped { kind: MessageKind::Presence, reason: "stale" });
    }

    #[test]
    fn a_relist_forgets_devices_deleted_while_the_watch_was_down() {
        let mut index = FleetIndex::default();
        let kept = device("a", "kept", Some("shared"), 200);
        let gone = device("a", "gone", Some("shared"), 100);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(gone.clone()),
            watcher::Event::InitApply(kept.clone()),
            watcher::Event::InitDone,
        ] {
            index.device_event(&event, now());
        }
        assert!(index.synced());
        assert_eq!(
            index.claim_of(&bare_ref(&kept)),
            Some(Claim::Conflict {
                id: DeviceId::new("shared").expect("valid"),
                owner: bare_ref(&gone),
            })
        );
        let changed: Vec<_> = [
            watcher::Event::Init,
            watcher::Event::InitApply(kept.clone()),
            watcher::Event::InitDone,
        ]
        .iter()
        .flat_map(|e| index.device_event(e, now()).reconcile)
        .collect();
        assert!(changed.contains(&bare_ref(&kept)), "the new owner is reconciled");
        assert_eq!(
            index.claim_of(&bare_ref(&kept)),
            Some(Claim::Owner(DeviceId::new("shared").expect("valid")))
        );
    }

    #[test]
    fn a_desired_document_someone_else_wrote_is_republished_and_our_own_echo_is_not() {
        use kubetwin_protocol::DesiredDocument;
        let mut index = FleetIndex::default();
        let d = device("plant", "sensor-1", None, 100);
        index.device_event(&watcher::Event::Apply(d.clone()), now());
        let mut desired = serde_json::Map::new();
        desired.insert("led".into(), serde_json::json!("green"));
        let ours = DesiredDocument::new("uid-plant-sensor-1", 3, "2025-05-01T12:00:00Z", desired);
        let topics = Topics::default();
        let inbound = |doc: &DesiredDocument| {
            let payload = Codec::default().encode(doc).expect("encodes");
            Codec::default()
                .decode_inbound(&topics, &topics.desired("plant.sensor-1"), &payload)
                .expect("decodes")
        };
        let clock = Instant::now();
        assert!(
            matches!(index.admit(&inbound(&ours), now(), clock), Admitted::Dropped { .. }),
            "before anything was published in this session, the next reconcile publishes anyway"
        );
        index.state_mut("plant.sensor-1").expect("owned").published = Some(Published::of(&ours));
        assert!(
            matches!(index.admit(&inbound(&ours), now(), clock), Admitted::Dropped { .. }),
            "our own retained document is an echo"
        );
        let mut forged = ours.clone();
        forged.desired.insert("led".into(), serde_json::json!("red"));
        assert_eq!(
            index.admit(&inbound(&forged), now(), clock),
            Admitted::DesiredOverwritten { owner: bare_ref(&d) }
        );
        assert_eq!(index.state("plant.sensor-1").and_then(|s| s.published.clone()), None);
        index.state_mut("plant.sensor-1").expect("owned").published = Some(Published::of(&ours));
        assert_eq!(
            index.desired_cleared("plant.sensor-1"),
            Admitted::DesiredOverwritten { owner: bare_ref(&d) },
            "a cleared document is an overwrite too"
        );
    }

    #[test]
    fn deleting_the_last_claimant_drops_the_device_state_and_frees_the_id() {
        let mut index = FleetIndex::default();
        let d = device("plant", "sensor-1", None, 100);
        let twin = device("other", "sensor-1", Some("plant.sensor-1"), 200);
        index.device_event(&watcher::Event::Apply(d.clone()), now());
        index.device_event(&watcher::Event::Apply(twin.clone()), now());
        assert_eq!(index.sizes().0, 1);
        // Another Device still names the id: it takes over, nothing is cleared.
        let change = index.device_event(&watcher::Event::Delete(d), now());
        assert_eq!(change, FleetChange { reconcile: vec![bare_ref(&twin)], freed: vec![] });
        let change = index.device_event(&watcher::Event::Delete(twin), now());
        assert_eq!(change.freed, [DeviceId::new("plant.sensor-1").expect("valid")]);
        assert_eq!(index.sizes(), (0, 0, 0, 0));
    }

    #[test]
    fn a_device_that_names_another_id_frees_its_old_one_and_its_state() {
        let mut index = FleetIndex::default();
        let before = device("plant", "sensor-1", Some("plant.old"), 100);
        index.device_event(&watcher::Event::Apply(before), now());
        let after = device("plant", "sensor-1", Some("plant.new"), 100);
        let change = index.device_event(&watcher::Event::Apply(after), now());
        assert_eq!(change.freed, [DeviceId::new("plant.old").expect("valid")]);
        assert!(index.state("plant.old").is_none());
        assert!(index.state("plant.new").is_some());
        assert_eq!(index.sizes().0, 1, "no state is left behind for the old id");
    }

    #[test]
    fn a_retained_desired_document_no_device_has_is_an_orphan_in_scope_once_synced() {
        use kubetwin_protocol::DesiredDocument;
        let topics = Topics::default();
        let doc = DesiredDocument::new("uid", 1, "2025-05-01T12:00:00Z", serde_json::Map::new());
        let payload = Codec::default().encode(&doc).expect("encodes");
        let inbound = |id: &str| {
            Codec::default()
                .decode_inbound(&topics, &topics.desired(id), &payload)
                .expect("decodes")
        };
        let clock = Instant::now();
        let mut index = FleetIndex::with_orphan_prefix(Some("plant.".into()));
        let operator = Admitted::Dropped { kind: MessageKind::Operator, reason: "operator" };
        assert_eq!(
            index.admit(&inbound("plant.gone"), now(), clock),
            operator,
            "not before every Device is known"
        );
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            index.device_event(&event, now());
        }
        // (device id, what happens)
        let table = [
            ("plant.gone", Admitted::DesiredOrphaned),
            ("other.gone", operator.clone()), // another namespace's id: not ours to clear
        ];
        for (id, wanted) in table {
            assert_eq!(index.admit(&inbound(id), now(), clock), wanted, "{id}");
        }
        assert_eq!(index.desired_cleared("plant.gone"), operator, "its clearing echoes back");
        let mut all = FleetIndex::default();
        all.device_event(&watcher::Event::InitDone, now());
        assert_eq!(all.admit(&inbound("other.gone"), now(), clock), Admitted::DesiredOrphaned);
    }
}
