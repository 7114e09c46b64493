//! DeviceConfiguration: desired properties and firmware for every Device a selector picks.
//!
//! - [`effective`]: a Device's effective twin (configurations by priority, its own spec on
//!   top) — pure;
//! - [`document`]: the version and revision of the desired document a device receives, and
//!   when a new revision may be published — pure;
//! - [`rollout`]: the firmware rollout (waves, in-flight limit, failure threshold, rollback)
//!   on the shared wave planner — pure;
//! - [`status`]: counts, custom metrics and conditions of a configuration — pure;
//! - [`targeted`]: what the status and the rollout read of each targeted Device (a projection
//!   of the cached Device, not the whole of it);
//! - [`admissions`]: devices admitted by a rollout in this process, until their status
//!   records it;
//! - [`controller`]: the configuration controller (counts, metrics, rollout admissions);
//! - [`watch`]: the watch hook that reconciles the Devices a configuration change affects.

pub mod admissions;
pub mod controller;
pub mod document;
pub mod effective;
pub mod rollout;
pub mod status;
pub mod targeted;
pub mod watch;

use std::sync::Arc;

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
    runtime::reflector::Store,
};
use kubetwin_api::{Device, DeviceConfiguration};

/// The configuration's selector; `None` when it cannot be used (it then selects nothing, and
/// its status says why).
pub fn selector_of(configuration: &DeviceConfiguration) -> Option<Selector> {
    Selector::try_from(configuration.spec.selector.clone()).ok()
}

/// The configurations of `device`'s namespace that select it, in merge order.
pub fn selecting(
    store: &Store<DeviceConfiguration>,
    device: &Device,
) -> Vec<Arc<DeviceConfiguration>> {
    let namespace = device.namespace();
    let mut found: Vec<Arc<DeviceConfiguration>> = store
        .state()
        .into_iter()
        .filter(|c| c.namespace() == namespace && c.metadata.deletion_timestamp.is_none())
        .filter(|c| selector_of(c).is_some_and(|s| s.matches(device.labels())))
        .collect();
    effective::merge_order(&mut found);
    found
}

/// What the tests of this folder share.
#[cfg(test)]
pub(crate) mod fixtures {
    use kubetwin_api::{FirmwareTarget, RolloutPhase, configuration::ConfigurationRolloutStatus};

    /// An image of `version` (its URL and checksum made up).
    pub fn firmware(version: &str) -> FirmwareTarget {
        FirmwareTarget {
            version: version.into(),
            url: format!("http://fw/{version}.bin"),
            sha256: "a".repeat(64),
            ..Default::default()
        }
    }

    /// A rollout of `target` in `phase` whose rollback installs `previous`.
    pub fn rollout(
        phase: RolloutPhase,
        target: &str,
        previous: Option<&str>,
    ) -> ConfigurationRolloutStatus {
        ConfigurationRolloutStatus {
            phase,
            firmware: firmware(target),
            previous: previous.map(firmware),
            ..Default::default()
        }
    }
}
