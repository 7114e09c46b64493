//! Which active requests follow which Device, so that a message from a device wakes exactly
//! the requests waiting for it.

use std::collections::{HashMap, HashSet};

use kube::runtime::reflector::ObjectRef;
use kubetwin_api::Device;

/// An active request that follows a Device: its kind's label and its name (in the Device's
/// namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Follower {
    /// Lowercase kind of the request (`rebootrequest`).
    pub kind: &'static str,
    /// Namespace of the request (and of its Device).
    pub namespace: String,
    /// Name of the request.
    pub name: String,
}

/// Followers per Device.
#[derive(Debug, Default)]
pub struct Followers {
    by_device: HashMap<ObjectRef<Device>, HashSet<Follower>>,
    targets: HashMap<Follower, ObjectRef<Device>>,
}

impl Followers {
    /// `follower` follows `device` from now on.
    pub fn follow(&mut self, device: ObjectRef<Device>, follower: Follower) {
        self.by_device.entry(device.clone()).or_default().insert(follower.clone());
        self.targets.insert(follower, device);
    }

    /// `follower` follows nothing any more (it finished or was deleted).
    pub fn unfollow(&mut self, follower: &Follower) {
        let Some(device) = self.targets.remove(follower) else {
            return;
        };
        if let Some(set) = self.by_device.get_mut(&device) {
            set.remove(follower);
            if set.is_empty() {
                self.by_device.remove(&device);
            }
        }
    }

    /// The requests that follow `device`.
    pub fn of(&self, device: &ObjectRef<Device>) -> Vec<Follower> {
        self.by_device.get(device).map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }

    /// Number of active requests followed.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no request is followed.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(name: &str) -> Follower {
        Follower { kind: "rebootrequest", namespace: "ns".into(), name: name.into() }
    }

    #[test]
    fn followers_come_and_go_without_leaving_entries_behind() {
        let device = ObjectRef::<Device>::new("d1").within("ns");
        let mut followers = Followers::default();
        followers.follow(device.clone(), follower("r1"));
        followers.follow(device.clone(), follower("r2"));
        let mut names: Vec<_> = followers.of(&device).into_iter().map(|f| f.name).collect();
        names.sort();
        assert_eq!(names, ["r1", "r2"]);
        followers.unfollow(&follower("r1"));
        followers.unfollow(&follower("r2"));
        followers.unfollow(&follower("never-followed"));
        assert!(followers.of(&device).is_empty());
        assert!(followers.is_empty());
        assert!(followers.by_device.is_empty());
    }
}
