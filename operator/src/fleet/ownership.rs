//! Which Device owns which device id. Several Devices may name the same id; the oldest
//! (creationTimestamp, then uid) owns it, whatever order the API server lists them in, so
//! ownership is the same after every restart. Fed one watch event at a time; no I/O.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{Hash, Hasher},
};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kubetwin_api::Device;
use kubetwin_protocol::DeviceId;

/// A Device as a claimant of its device id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// The Device (namespace and name only).
    pub object: ObjectRef<Device>,
    /// When it was created.
    pub created: Option<Timestamp>,
    /// Its uid (breaks ties between equal creation times).
    pub uid: String,
}

/// Where a Device stands with its device id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This Device owns the id.
    Owner(DeviceId),
    /// An older Device owns the same id.
    Conflict {
        /// The id.
        id: DeviceId,
        /// The Device that owns it.
        owner: ObjectRef<Device>,
    },
}

/// A Device by namespace and name, as the tables keep it: 32 bytes and its two strings, where
/// an `ObjectRef` is 96 bytes inline (room for a uid and a resourceVersion it never has here).
/// The tables hold two per Device, so at 100,000 Devices that is ~12 MiB less.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceKey {
    namespace: Option<Box<str>>,
    name: Box<str>,
}

impl DeviceKey {
    fn of(object: &ObjectRef<Device>) -> Self {
        Self { namespace: object.namespace.as_deref().map(Into::into), name: (*object.name).into() }
    }

    fn to_ref(&self) -> ObjectRef<Device> {
        let object = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(namespace) => object.within(namespace),
            None => object,
        }
    }
}

/// Namespace and name of a Device, however it is held: lets the tables be searched with an
/// `ObjectRef` without building a key (`claim_of` runs for every Device on whole-fleet passes).
trait DeviceName {
    fn parts(&self) -> (Option<&str>, &str);
}

impl DeviceName for DeviceKey {
    fn parts(&self) -> (Option<&str>, &str) {
        (self.namespace.as_deref(), &self.name)
    }
}

impl DeviceName for ObjectRef<Device> {
    fn parts(&self) -> (Option<&str>, &str) {
        (self.namespace.as_deref(), &self.name)
    }
}

impl<'a> Borrow<dyn DeviceName + 'a> for DeviceKey {
    fn borrow(&self) -> &(dyn DeviceName + 'a) {
        self
    }
}

impl Hash for DeviceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl Hash for dyn DeviceName + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn DeviceName + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn DeviceName + '_ {}

/// A claim as the tables keep it.
#[derive(Debug)]
struct Stored {
    key: DeviceKey,
    created: Option<Timestamp>,
    uid: Box<str>,
}

impl Stored {
    fn of(claimant: Claimant) -> Self {
        Self {
            key: DeviceKey::of(&claimant.object),
            created: claimant.created,
            uid: claimant.uid.into_boxed_str(),
        }
    }

    fn order_key(&self) -> (Option<Timestamp>, &str, Option<&str>, &str) {
        (self.created, &self.uid, self.key.namespace.as_deref(), &self.key.name)
    }

    fn is(&self, object: &ObjectRef<Device>) -> bool {
        self.key.parts() == object.parts()
    }
}

/// The claims of every device id.
#[derive(Debug, Default)]
pub struct Ownership {
    claims: HashMap<DeviceId, Vec<Stored>>,
    ids: HashMap<DeviceKey, DeviceId>,
}

impl Ownership {
    /// Records that `claimant` claims `id` (replacing an earlier claim of another id). Returns
    /// the Devices whose claim changed (the claimant itself, and a Device that gained or lost
    /// an id by it), so they can be reconciled, and the earlier id if nobody claims it now.
    pub fn claim(
        &mut self,
        id: DeviceId,
        claimant: Claimant,
    ) -> (Vec<ObjectRef<Device>>, Option<DeviceId>) {
        let object = claimant.object.clone();
        let claimant = Stored::of(claimant);
        let mut changed = vec![object.clone()];
        let mut freed = None;
        if let Some(previous) = self.ids.get(&object as &dyn DeviceName).cloned() {
            if previous == id {
                let list = self.claims.entry(id.clone()).or_default();
                if let Some(existing) = list.iter_mut().find(|c| c.is(&object)) {
                    *existing = claimant;
                }
                list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
                return (changed, None);
            }
            let (released, successor) = self.release(&object);
            freed = released;
            changed.extend(successor);
        }
        let key = claimant.key.clone();
        let list = self.claims.entry(id.clone()).or_default();
        let old_owner = list.first().map(|c| c.key.clone());
        // Almost every id has one claimant: room for exactly one more, not the four a first
        // push reserves (at 100,000 ids, ~0.5 KiB each).
        list.reserve_exact(1);
        list.push(claimant);
        list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        if let Some(old) = old_owner
            && list.first().is_none_or(|c| c.key != old)
        {
            changed.push(old.to_ref());
        }
        self.ids.insert(key, id);
        (changed, freed)
    }

    /// Removes the claim of `object`. Returns the id it claimed when no Device claims that id
    /// any more, and the Device that became its owner, if any.
    pub fn release(
        &mut self,
        object: &ObjectRef<Device>,
    ) -> (Option<DeviceId>, Option<ObjectRef<Device>>) {
        let Some(id) = self.ids.remove(object as &dyn DeviceName) else {
            return (None, None);
        };
        let Some(list) = self.claims.get_mut(&id) else {
            return (Some(id), None);
        };
        let was_owner = list.first().is_some_and(|c| c.is(object));
        list.retain(|c| !c.is(object));
        if list.is_empty() {
            self.claims.remove(&id);
            return (Some(id), None);
        }
        let successor = if was_owner { list.first().map(|c| c.key.to_ref()) } else { None };
        (None, successor)
    }

    /// The Device that owns `id`, if any.
    pub fn owner(&self, id: &str) -> Option<ObjectRef<Device>> {
        self.owner_key(id).map(DeviceKey::to_ref)
    }

    /// Whether `object` owns `id`.
    pub fn owns(&self, id: &str, object: &ObjectRef<Device>) -> bool {
        self.owner_key(id).is_some_and(|key| key.parts() == object.parts())
    }

    fn owner_key(&self, id: &str) -> Option<&DeviceKey> {
        self.claims.get(id).and_then(|list| list.first()).map(|c| &c.key)
    }

    /// Where `object` stands, if it claims an id.
    pub fn claim_of(&self, object: &ObjectRef<Device>) -> Option<Claim> {
        let id = self.ids.get(object as &dyn DeviceName)?;
        let owner = self.owner_key(id)?;
        Some(if owner.parts() == object.parts() {
            Claim::Owner(id.clone())
        } else {
            Claim::Conflict { id: id.clone(), owner: owner.to_ref() }
        })
    }

    /// Every Device with a claim.
    pub fn objects(&self) -> impl Iterator<Item = ObjectRef<Device>> + '_ {
        self.ids.keys().map(DeviceKey::to_ref)
    }

    /// Number of device ids claimed.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Whether no id is claimed.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(ns: &str, name: &str, created: i64, uid: &str) -> Claimant {
        Claimant {
            object: ObjectRef::new(name).within(ns),
            created: Some(Timestamp::from_second(created).expect("valid")),
            uid: uid.into(),
        }
    }

    fn id(text: &str) -> DeviceId {
        DeviceId::new(text).expect("valid")
    }

    #[test]
    fn the_oldest_device_owns_a_device_id_whatever_the_listing_order() {
        let old = claimant("a", "one", 100, "uid-b");
        let new = claimant("b", "two", 200, "uid-a");
        let same_time = claimant("c", "three", 100, "uid-c");
        let orders = [
            vec![old.clone(), new.clone(), same_time.clone()],
            vec![new.clone(), same_time.clone(), old.clone()],
            vec![same_time.clone(), new.clone(), old.clone()],
        ];
        for order in orders {
            let mut ownership = Ownership::default();
            for c in order {
                ownership.claim(id("shared.id"), c);
            }
            assert_eq!(ownership.owner("shared.id"), Some(old.object.clone()));
            assert_eq!(ownership.claim_of(&old.object), Some(Claim::Owner(id("shared.id"))));
            assert_eq!(
                ownership.claim_of(&same_time.object),
                Some(Claim::Conflict { id: id("shared.id"), owner: old.object.clone() }),
                "equal creation times: the smaller uid wins"
            );
        }
    }

    #[test]
    fn a_deleted_owner_hands_the_id_to_the_next_claimant() {
        let mut ownership = Ownership::default();
        let old = claimant("a", "one", 100, "u1");
        let new = claimant("b", "two", 200, "u2");
        ownership.claim(id("x"), new.clone());
        let (changed, freed) = ownership.claim(id("x"), old.clone());
        assert_eq!(changed, [old.object.clone(), new.object.clone()], "the newer one lost the id");
        assert_eq!(freed, None);
        assert_eq!(ownership.release(&old.object), (None, Some(new.object.clone())));
        assert_eq!(ownership.claim_of(&new.object), Some(Claim::Owner(id("x"))));
        assert_eq!(ownership.release(&new.object), (Some(id("x")), None));
        assert!(ownership.is_empty());
    }

    #[test]
    fn a_new_claim_by_the_same_device_replaces_its_old_one() {
        let mut ownership = Ownership::default();
        let device = claimant("a", "one", 100, "u1");
        assert_eq!(ownership.claim(id("first"), device.clone()).1, None);
        assert_eq!(
            ownership.claim(id("second"), device.clone()).1,
            Some(id("first")),
            "nobody claims the first id any more"
        );
        assert_eq!(ownership.owner("first"), None);
        assert_eq!(ownership.owner("second"), Some(device.object.clone()));
        assert_eq!(ownership.len(), 1);
    }
}
