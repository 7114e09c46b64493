//! Which Device owns which device id. Several Devices may name the same id; the oldest
//! (creationTimestamp, then uid) owns it, whatever order the API server lists them in, so
//! ownership is the same after every restart. Fed one watch event at a time; no I/O.

use std::collections::HashMap;

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

impl Claimant {
    fn order_key(&self) -> (Option<Timestamp>, &str, Option<&str>, &str) {
        (self.created, &self.uid, self.object.namespace.as_deref(), &self.object.name)
    }
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

/// The claims of every device id.
#[derive(Debug, Default)]
pub struct Ownership {
    claims: HashMap<DeviceId, Vec<Claimant>>,
    ids: HashMap<ObjectRef<Device>, DeviceId>,
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
        let mut changed = vec![object.clone()];
        let mut freed = None;
        if let Some(previous) = self.ids.get(&object).cloned() {
            if previous == id {
                let list = self.claims.entry(id.clone()).or_default();
                if let Some(existing) = list.iter_mut().find(|c| c.object == object) {
                    *existing = claimant;
                }
                list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
                return (changed, None);
            }
            let (released, successor) = self.release(&object);
            freed = released;
            changed.extend(successor);
        }
        let list = self.claims.entry(id.clone()).or_default();
        let old_owner = list.first().map(|c| c.object.clone());
        // Almost every id has one claimant: room for exactly one more, not the four a first
        // push reserves (at 100,000 ids, ~0.5 KiB each).
        list.reserve_exact(1);
        list.push(claimant);
        list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let new_owner = list.first().map(|c| c.object.clone());
        if let Some(old) = old_owner
            && new_owner.as_ref() != Some(&old)
        {
            changed.push(old);
        }
        self.ids.insert(object, id);
        (changed, freed)
    }

    /// Removes the claim of `object`. Returns the id it claimed when no Device claims that id
    /// any more, and the Device that became its owner, if any.
    pub fn release(
        &mut self,
        object: &ObjectRef<Device>,
    ) -> (Option<DeviceId>, Option<ObjectRef<Device>>) {
        let Some(id) = self.ids.remove(object) else {
            return (None, None);
        };
        let Some(list) = self.claims.get_mut(&id) else {
            return (Some(id), None);
        };
        let was_owner = list.first().is_some_and(|c| &c.object == object);
        list.retain(|c| &c.object != object);
        if list.is_empty() {
            self.claims.remove(&id);
            return (Some(id), None);
        }
        let successor = if was_owner { list.first().map(|c| c.object.clone()) } else { None };
        (None, successor)
    }

    /// The Device that owns `id`, if any.
    pub fn owner(&self, id: &str) -> Option<&ObjectRef<Device>> {
        self.claims.get(id).and_then(|list| list.first()).map(|c| &c.object)
    }

    /// Where `object` stands, if it claims an id.
    pub fn claim_of(&self, object: &ObjectRef<Device>) -> Option<Claim> {
        let id = self.ids.get(object)?;
        let owner = self.owner(id)?;
        Some(if owner == object {
            Claim::Owner(id.clone())
        } else {
            Claim::Conflict { id: id.clone(), owner: owner.clone() }
        })
    }

    /// Every Device with a claim.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectRef<Device>> {
        self.ids.keys()
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
            assert_eq!(ownership.owner("shared.id"), Some(&old.object));
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
        assert_eq!(ownership.owner("second"), Some(&device.object));
        assert_eq!(ownership.len(), 1);
    }
}
