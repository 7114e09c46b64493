//! The DeviceConfiguration watch hook: reconciles the Devices whose effective twin a
//! configuration change affects, and tells when every configuration has been listed.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::channel::mpsc::UnboundedSender;
use kube::{
    ResourceExt,
    core::SelectorExt,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use kubetwin_api::DeviceConfiguration;
use tracing::error;

use super::{admissions::Admissions, effective::rolled_back, selector_of};
use crate::twin::cache::CachedDevice;

/// What the watch reads of a cached Device: the names of the configurations its status lists.
#[derive(Debug, Default, serde::Deserialize)]
struct Listed {
    #[serde(default)]
    status: Option<ListedStatus>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ListedStatus {
    #[serde(default)]
    configurations: Vec<ListedConfiguration>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ListedConfiguration {
    name: String,
}

impl Listed {
    /// Whether the status lists configuration `name`.
    fn lists(&self, name: &str) -> bool {
        self.status.as_ref().is_some_and(|s| s.configurations.iter().any(|c| c.name == name))
    }
}

/// What of a configuration changes the devices' effective twin: its generation, whether it
/// is rolled back, and the previous firmware a rollback installs.
type TwinKey = (Option<i64>, bool, Option<String>);

fn twin_key(configuration: &DeviceConfiguration) -> TwinKey {
    let previous = configuration
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.previous.as_ref())
        .map(|p| p.version.clone());
    (configuration.metadata.generation, rolled_back(configuration), previous)
}

/// The last [`TwinKey`] seen per configuration, so that a status-only change (counts) does
/// not reconcile every Device it selects.
#[derive(Debug, Default)]
pub struct Seen {
    keys: Mutex<HashMap<(String, String), TwinKey>>,
    /// Every configuration has been listed once: Device reconciles wait for it, or a
    /// restarted operator would publish documents without the configurations' content.
    synced: AtomicBool,
}

impl Seen {
    /// Whether every configuration has been listed once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// Watch hook of DeviceConfiguration: reconciles the Devices whose effective twin a change
/// affects (those it selects now, and those whose status lists it, which it may have left).
pub fn observe(
    event: &watcher::Event<DeviceConfiguration>,
    seen: &Seen,
    admissions: &Mutex<Admissions>,
    devices: &Store<CachedDevice>,
    trigger: &UnboundedSender<ObjectRef<CachedDevice>>,
) {
    let (configuration, deleted) = match event {
        watcher::Event::Apply(c) | watcher::Event::InitApply(c) => (c, false),
        watcher::Event::Delete(c) => (c, true),
        watcher::Event::InitDone => {
            seen.synced.store(true, Ordering::Release);
            return;
        }
        watcher::Event::Init => return,
    };
    let namespace = configuration.namespace().unwrap_or_default();
    let name = configuration.name_any();
    let key = (namespace.clone(), name.clone());
    {
        let mut keys = seen.keys.lock().unwrap_or_else(|p| p.into_inner());
        if deleted {
            keys.remove(&key);
            admissions.lock().unwrap_or_else(|p| p.into_inner()).forget(&namespace, &name);
        } else {
            let wanted = twin_key(configuration);
            if keys.get(&key) == Some(&wanted) {
                return;
            }
            keys.insert(key, wanted);
        }
    }
    let selector = if deleted { None } else { selector_of(configuration) };
    for device in devices.state() {
        if device.namespace().as_deref() != Some(&namespace) {
            continue;
        }
        let selects = selector.as_ref().is_some_and(|s| s.matches(device.labels()));
        // Only a Device the configuration does not select is read, and only the names of
        // the configurations its status lists.
        let lists = || match device.read::<Listed>() {
            Ok(listed) => listed.lists(&name),
            Err(failure) => {
                // Its reconcile fails the same way, where it is counted and retried.
                error!(device = %device.name_any(), %failure, "a cached Device does not read back");
                true
            }
        };
        if selects || lists() {
            let _ = trigger.unbounded_send(ObjectRef::new(&device.name_any()).within(&namespace));
        }
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{Device, DeviceSpec, DeviceStatus, device::AppliedConfiguration};

    use super::*;

    #[test]
    fn the_watch_reads_the_configurations_a_status_lists_from_the_cached_text() {
        let cached = |listed: Option<&[&str]>| {
            let mut device = Device::new("d", DeviceSpec::default());
            device.status = listed.map(|names| DeviceStatus {
                configurations: names
                    .iter()
                    .map(|n| AppliedConfiguration {
                        name: n.to_string(),
                        generation: 1,
                        ..AppliedConfiguration::default()
                    })
                    .collect(),
                ..DeviceStatus::default()
            });
            CachedDevice::new(device).expect("cached")
        };
        // (configurations the status lists, none without a status)
        let table: [(Option<&[&str]>, bool); 4] = [
            (None, false),
            (Some(&[]), false),
            (Some(&["north"]), false),
            (Some(&["north", "edge"]), true),
        ];
        for (listed, lists_edge) in table {
            let read = cached(listed).read::<Listed>().expect("reads");
            assert_eq!(read.lists("edge"), lists_edge, "{listed:?}");
        }
    }
}
