//! A Device's effective twin: the desired properties and firmware the operator publishes,
//! from the DeviceConfigurations that select it and the Device's own spec. Pure.
//!
//! Order (documented in docs/configurations.md): the selecting configurations from the lowest
//! priority to the highest, equal priorities oldest first, each merged as a JSON merge patch
//! (RFC 7386: null deletes); then the Device's own `spec.desired`, merged the same way, so the
//! more specific object wins. With no configuration the Device's own desired is published as
//! it is. Firmware: the Device's own `spec.firmware`, else that of the last configuration in
//! that order that has one, for the devices its rollout admitted.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kubetwin_api::{
    Device, DeviceConfiguration, FirmwareTarget, RolloutPhase, configuration::merge_desired,
    device::AppliedConfiguration,
};
use serde_json::{Map, Value};

/// Whether a configuration's rollout has admitted one device to its firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not (yet) its turn: the configuration orders no firmware on it.
    NotAdmitted,
    /// Its turn came: it gets the configuration's firmware.
    Admitted,
}

/// What the operator publishes for one Device, and which configurations are in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveTwin {
    /// The desired properties.
    pub desired: Map<String, Value>,
    /// The firmware the device should run (before the disruption-budget gate).
    pub firmware: Option<FirmwareTarget>,
    /// The configurations that apply, in merge order, as Device.status lists them.
    pub configurations: Vec<AppliedConfiguration>,
}

/// The merge order of configurations: priority, then creation time, then name.
fn order_key(configuration: &DeviceConfiguration) -> (i32, Option<Timestamp>, String) {
    (
        configuration.spec.priority,
        configuration.metadata.creation_timestamp.as_ref().map(|t| t.0),
        configuration.name_any(),
    )
}

/// Sorts configurations into merge order (the last one wins).
pub fn merge_order(configurations: &mut [Arc<DeviceConfiguration>]) {
    configurations.sort_by_key(|c| order_key(c));
}

/// The configuration whose firmware applies to a device, among `selecting` in merge order:
/// none when the Device has its own `spec.firmware` (`own_firmware`).
pub fn firmware_source(
    own_firmware: bool,
    selecting: &[Arc<DeviceConfiguration>],
) -> Option<&DeviceConfiguration> {
    if own_firmware {
        return None;
    }
    selecting.iter().rev().find(|c| c.spec.firmware.is_some()).map(|c| &**c)
}

/// Whether `configuration`'s rollout was rolled back for its current firmware.
pub fn rolled_back(configuration: &DeviceConfiguration) -> bool {
    let Some(target) = configuration.spec.firmware.as_ref() else { return false };
    configuration.status.as_ref().and_then(|s| s.rollout.as_ref()).is_some_and(|r| {
        r.phase == RolloutPhase::RolledBack && r.firmware.version == target.version
    })
}

/// What the Device's status recorded for `configuration` (its last persisted order).
pub fn recorded<'a>(device: &'a Device, configuration: &str) -> Option<&'a AppliedConfiguration> {
    device.status.as_ref()?.configurations.iter().find(|c| c.name == configuration)
}

/// The effective twin of `device`, given the configurations that select it in merge order
/// ([`merge_order`]) and whether the firmware source's rollout admitted it.
pub fn effective_twin(
    device: &Device,
    selecting: &[Arc<DeviceConfiguration>],
    admission: Admission,
) -> EffectiveTwin {
    if selecting.is_empty() {
        return EffectiveTwin {
            desired: merge_desired(device.spec.desired.as_ref(), 0, []),
            firmware: device.spec.firmware.clone(),
            configurations: Vec::new(),
        };
    }
    let desired = merge_desired(
        device.spec.desired.as_ref(),
        selecting.len(),
        selecting.iter().filter_map(|c| c.spec.desired.as_ref()),
    );

    let source = firmware_source(device.spec.firmware.is_some(), selecting);
    let mut firmware = device.spec.firmware.clone();
    let mut configurations = Vec::with_capacity(selecting.len());
    for configuration in selecting {
        let name = configuration.name_any();
        let mut entry = AppliedConfiguration {
            generation: configuration.metadata.generation.unwrap_or_default(),
            name,
            firmware: None,
            rollback: false,
        };
        if source.is_some_and(|s| std::ptr::eq(s, &**configuration)) {
            let (order, rollback) = firmware_order(device, configuration, admission);
            entry.firmware = order.as_ref().map(|f| f.version.clone());
            entry.rollback = rollback;
            firmware = order;
        }
        configurations.push(entry);
    }
    EffectiveTwin { desired, firmware, configurations }
}

/// The firmware `configuration` (the device's firmware source) orders on `device`, and
/// whether it is a rollback.
fn firmware_order(
    device: &Device,
    configuration: &DeviceConfiguration,
    admission: Admission,
) -> (Option<FirmwareTarget>, bool) {
    let Some(target) = configuration.spec.firmware.as_ref() else { return (None, false) };
    let previous = recorded(device, &configuration.name_any());
    let was_admitted = previous.is_some_and(|p| p.firmware.as_deref() == Some(&target.version));
    if rolled_back(configuration) {
        // Devices this rollout updated (or already rolled back) get the previous firmware;
        // the others keep what they run.
        if was_admitted || previous.is_some_and(|p| p.rollback) {
            let back = configuration
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .and_then(|r| r.previous.clone());
            return (back, true);
        }
        return (None, false);
    }
    if was_admitted || admission == Admission::Admitted {
        return (Some(target.clone()), false);
    }
    (None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kubetwin_api::{
        DeviceConfigurationSpec, DeviceConfigurationStatus, DeviceSpec, DeviceStatus,
    };
    use serde_json::json;

    use crate::configurations::fixtures::{firmware, rollout};

    fn object(value: Value) -> Option<std::collections::BTreeMap<String, Value>> {
        serde_json::from_value(value).expect("an object")
    }

    fn configuration(
        name: &str,
        priority: i32,
        created: i64,
        desired: Value,
    ) -> Arc<DeviceConfiguration> {
        let mut c = DeviceConfiguration::new(
            name,
            DeviceConfigurationSpec { priority, desired: object(desired), ..Default::default() },
        );
        c.metadata.generation = Some(1);
        c.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(1_700_000_000 + created).expect("valid")));
        Arc::new(c)
    }

    fn device(desired: Value) -> Device {
        Device::new("d1", DeviceSpec { desired: object(desired), ..Default::default() })
    }

    #[test]
    fn configurations_merge_by_priority_then_age_and_the_device_wins_over_all() {
        let cases = [
            (
                "no configuration: the device's own document as it is, nulls kept",
                vec![],
                json!({"a": 1, "gone": null}),
                json!({"a": 1, "gone": null}),
            ),
            (
                "higher priority wins a shared key; disjoint keys both kept",
                vec![
                    configuration("high", 10, 0, json!({"rate": 5, "led": {"color": "red"}})),
                    configuration("low", 1, 1, json!({"rate": 60, "mode": "eco"})),
                ],
                json!({}),
                json!({"rate": 5, "mode": "eco", "led": {"color": "red"}}),
            ),
            (
                "equal priorities: the newest wins",
                vec![
                    configuration("new", 0, 5, json!({"rate": 2})),
                    configuration("old", 0, 1, json!({"rate": 1})),
                ],
                json!({}),
                json!({"rate": 2}),
            ),
            (
                "nested objects merge; null deletes what a lower one set",
                vec![
                    configuration(
                        "low",
                        0,
                        0,
                        json!({"led": {"color": "red", "blink": true}, "debug": true}),
                    ),
                    configuration("high", 1, 0, json!({"led": {"blink": null}, "debug": null})),
                ],
                json!({}),
                json!({"led": {"color": "red"}}),
            ),
            (
                "the device's own desired goes on top, and its null deletes a configuration's key",
                vec![configuration("c", 100, 0, json!({"rate": 5, "mode": "eco"}))],
                json!({"rate": 1, "mode": null, "own": true}),
                json!({"rate": 1, "own": true}),
            ),
        ];
        for (why, mut selecting, own, expected) in cases {
            merge_order(&mut selecting);
            let twin = effective_twin(&device(own), &selecting, Admission::NotAdmitted);
            assert_eq!(Value::Object(twin.desired), expected, "{why}");
            let names: Vec<_> = twin.configurations.iter().map(|c| c.name.clone()).collect();
            let order: Vec<_> = selecting.iter().map(|c| c.name_any()).collect();
            assert_eq!(names, order, "{why}: status lists them in merge order");
        }
    }

    fn with_firmware(name: &str, priority: i32, version: &str) -> Arc<DeviceConfiguration> {
        let mut c = (*configuration(name, priority, 0, json!({}))).clone();
        c.spec.firmware = Some(firmware(version));
        Arc::new(c)
    }

    fn recorded_on(mut device: Device, name: &str, version: &str, rollback: bool) -> Device {
        device.status = Some(DeviceStatus {
            configurations: vec![AppliedConfiguration {
                name: name.into(),
                generation: 1,
                firmware: Some(version.into()),
                rollback,
            }],
            ..Default::default()
        });
        device
    }

    fn rolled_back_to(
        configuration: &DeviceConfiguration,
        previous: &str,
    ) -> Arc<DeviceConfiguration> {
        let mut c = configuration.clone();
        c.status = Some(DeviceConfigurationStatus {
            rollout: Some(rollout(
                RolloutPhase::RolledBack,
                &c.spec.firmware.as_ref().expect("firmware").version,
                Some(previous),
            )),
            ..Default::default()
        });
        Arc::new(c)
    }

    #[test]
    fn firmware_comes_from_the_device_or_the_last_configuration_once_its_rollout_admits_it() {
        let fw = with_firmware("fw", 0, "2.0.0");
        let higher = with_firmware("fw-hi", 5, "3.0.0");
        let version = |twin: &EffectiveTwin| twin.firmware.as_ref().map(|f| f.version.clone());
        let plain = device(json!({}));

        let waiting = effective_twin(&plain, std::slice::from_ref(&fw), Admission::NotAdmitted);
        assert_eq!(version(&waiting), None, "not its turn yet: no order");
        assert_eq!(waiting.configurations[0].firmware, None);

        let admitted = effective_twin(&plain, std::slice::from_ref(&fw), Admission::Admitted);
        assert_eq!(version(&admitted), Some("2.0.0".into()));
        assert_eq!(admitted.configurations[0].firmware.as_deref(), Some("2.0.0"));

        let persisted = recorded_on(plain.clone(), "fw", "2.0.0", false);
        let again = effective_twin(&persisted, std::slice::from_ref(&fw), Admission::NotAdmitted);
        assert_eq!(version(&again), Some("2.0.0".into()), "an admission recorded in status holds");

        let both = effective_twin(&plain, &[fw.clone(), higher.clone()], Admission::Admitted);
        assert_eq!(version(&both), Some("3.0.0".into()), "the higher priority's firmware");
        assert_eq!(both.configurations[0].firmware, None, "the lower one orders nothing");

        let mut own = plain.clone();
        own.spec.firmware = Some(firmware("9.9.9"));
        let mine = effective_twin(&own, std::slice::from_ref(&fw), Admission::Admitted);
        assert_eq!(version(&mine), Some("9.9.9".into()), "the Device's own spec.firmware wins");
        assert_eq!(mine.configurations[0].firmware, None);
    }

    #[test]
    fn a_rollback_returns_the_devices_the_rollout_updated_to_the_previous_firmware_only() {
        let fw = rolled_back_to(&with_firmware("fw", 0, "2.0.0"), "1.0.0");
        let updated = recorded_on(device(json!({})), "fw", "2.0.0", false);
        let twin = effective_twin(&updated, std::slice::from_ref(&fw), Admission::Admitted);
        assert_eq!(twin.firmware.map(|f| f.version), Some("1.0.0".into()));
        assert_eq!(twin.configurations[0].firmware.as_deref(), Some("1.0.0"));
        assert!(twin.configurations[0].rollback);

        let back = recorded_on(device(json!({})), "fw", "1.0.0", true);
        let twin = effective_twin(&back, std::slice::from_ref(&fw), Admission::NotAdmitted);
        assert_eq!(twin.firmware.map(|f| f.version), Some("1.0.0".into()), "stays rolled back");

        let untouched = device(json!({}));
        let twin = effective_twin(&untouched, &[fw], Admission::Admitted);
        assert_eq!(twin.firmware, None, "never updated: nothing to roll back, nothing new");
    }
}
