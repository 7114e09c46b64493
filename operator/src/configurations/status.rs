//! A configuration's status from the targeted Devices: counts, custom metrics, conditions.
//! Pure.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kubetwin_api::{
    Device, DeviceConfiguration, DeviceConfigurationStatus, RolloutPhase,
    condition::{ConditionStatus, ConfigurationCondition, ConfigurationReason},
    configuration::ConfigurationRolloutStatus,
    expression::DeviceExpression,
};

use super::targeted::TargetedDevice;
use crate::k8s::conditions::{ConditionUpdate, merge};

/// Whether `device` applied a desired document with `configuration`'s current generation:
/// its status lists that generation and the device is in sync.
pub fn applied(device: &TargetedDevice, configuration: &DeviceConfiguration) -> bool {
    let name = configuration.name_any();
    let generation = configuration.metadata.generation.unwrap_or_default();
    device.in_sync
        && device.configurations.iter().any(|c| c.name == name && c.generation == generation)
}

/// Custom metric counts, fed one targeted Device at a time (so only one of them needs to be
/// whole in memory at once); a device on which an expression fails counts as false.
pub struct MetricCounts<'a> {
    metrics: &'a [(String, DeviceExpression)],
    counts: BTreeMap<String, i32>,
    failure: Option<String>,
}

impl<'a> MetricCounts<'a> {
    /// Every metric at zero.
    pub fn new(metrics: &'a [(String, DeviceExpression)]) -> Self {
        let counts = metrics.iter().map(|(name, _)| (name.clone(), 0)).collect();
        Self { metrics, counts, failure: None }
    }

    /// Counts `device` (whole: its status as stored, reported map included).
    pub fn add(&mut self, device: &Device) {
        for (name, expression) in self.metrics {
            match expression.matches(device) {
                Ok(true) => {
                    if let Some(n) = self.counts.get_mut(name) {
                        *n = n.saturating_add(1);
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    self.failure.get_or_insert_with(|| format!("metric {name}: {error}"));
                }
            }
        }
    }

    /// The counts, and the first failure (for the log).
    pub fn finish(self) -> (BTreeMap<String, i32>, Option<String>) {
        (self.counts, self.failure)
    }
}

/// What the status shows besides the counts.
pub struct ConfigurationFacts<'a> {
    /// The configuration.
    pub configuration: &'a DeviceConfiguration,
    /// Devices the selector picks.
    pub targeted: &'a [TargetedDevice],
    /// Custom metric counts.
    pub metrics: BTreeMap<String, i32>,
    /// The firmware rollout, if any.
    pub rollout: Option<ConfigurationRolloutStatus>,
    /// Why the configuration cannot be used, if it cannot.
    pub invalid: Option<(ConfigurationReason, String)>,
    /// Now.
    pub now: Timestamp,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status that shows `facts`.
pub fn status_of(facts: ConfigurationFacts<'_>) -> DeviceConfigurationStatus {
    use ConditionStatus::{False, True};
    let configuration = facts.configuration;
    let generation = configuration.metadata.generation;
    let applied = facts.targeted.iter().filter(|d| applied(d, configuration)).count();
    let ready = match &facts.invalid {
        Some((reason, message)) => ConditionUpdate {
            type_: ConfigurationCondition::Ready.as_str(),
            status: False,
            reason: reason.as_str(),
            message: message.clone(),
        },
        None => ConditionUpdate {
            type_: ConfigurationCondition::Ready.as_str(),
            status: True,
            reason: ConfigurationReason::Valid.as_str(),
            message: format!(
                "Applies to {} Devices; {} applied generation {}",
                facts.targeted.len(),
                applied,
                generation.unwrap_or_default()
            ),
        },
    };
    let complete = match &facts.rollout {
        // Firmware, but no rollout computed yet (an unusable selector): not complete.
        None if configuration.spec.firmware.is_some() => ConditionUpdate {
            type_: ConfigurationCondition::RolloutComplete.as_str(),
            status: False,
            reason: facts
                .invalid
                .as_ref()
                .map_or(ConfigurationReason::Updating, |(reason, _)| *reason)
                .as_str(),
            message: facts
                .invalid
                .as_ref()
                .map_or_else(|| "The rollout has not started".to_string(), |(_, m)| m.clone()),
        },
        None => ConditionUpdate {
            type_: ConfigurationCondition::RolloutComplete.as_str(),
            status: True,
            reason: ConfigurationReason::NoFirmware.as_str(),
            message: "No spec.firmware: nothing rolls out".into(),
        },
        Some(rollout) => {
            let over = matches!(
                rollout.phase,
                RolloutPhase::Succeeded | RolloutPhase::Failed | RolloutPhase::RolledBack
            );
            let reason = rollout
                .reason
                .as_deref()
                .and_then(ConfigurationReason::parse)
                .unwrap_or(ConfigurationReason::Updating);
            ConditionUpdate {
                type_: ConfigurationCondition::RolloutComplete.as_str(),
                status: if over { True } else { False },
                reason: reason.as_str(),
                message: rollout.message.clone().unwrap_or_default(),
            }
        }
    };
    let existing =
        configuration.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    DeviceConfigurationStatus {
        observed_generation: generation,
        targeted: count(facts.targeted.len()),
        applied: count(applied),
        metrics: facts.metrics,
        rollout: facts.rollout,
        conditions: merge(existing, vec![ready, complete], generation, facts.now),
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{
        DeviceConfigurationSpec, DeviceSpec, DeviceStatus, FirmwareTarget,
        device::AppliedConfiguration,
    };

    use super::*;

    fn configuration(firmware: bool) -> DeviceConfiguration {
        let mut c = DeviceConfiguration::new(
            "edge",
            DeviceConfigurationSpec {
                firmware: firmware.then(|| FirmwareTarget {
                    version: "2.0".into(),
                    url: "http://fw/2.bin".into(),
                    sha256: "a".repeat(64),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.metadata.generation = Some(3);
        c
    }

    fn device(name: &str, generation: i64, in_sync: bool) -> Device {
        let mut d = Device::new(name, DeviceSpec::default());
        d.status = Some(DeviceStatus {
            in_sync: Some(in_sync),
            configurations: vec![AppliedConfiguration {
                name: "edge".into(),
                generation,
                ..Default::default()
            }],
            ..Default::default()
        });
        d
    }

    fn condition<'a>(status: &'a DeviceConfigurationStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).expect("condition");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn applied_counts_in_sync_devices_listing_the_current_generation() {
        let devices = [device("a", 3, true), device("b", 2, true), device("c", 3, false)];
        let targeted: Vec<TargetedDevice> = devices.iter().map(TargetedDevice::of).collect();
        let c = configuration(false);
        let status = status_of(ConfigurationFacts {
            configuration: &c,
            targeted: &targeted,
            metrics: BTreeMap::new(),
            rollout: None,
            invalid: None,
            now: Timestamp::UNIX_EPOCH,
        });
        assert_eq!(
            (status.targeted, status.applied),
            (3, 1),
            "b has an older generation, c is not in sync"
        );
        assert_eq!(condition(&status, "Ready"), ("True", "Valid"));
        assert_eq!(condition(&status, "RolloutComplete"), ("True", "NoFirmware"));
    }

    #[test]
    fn firmware_without_a_rollout_yet_is_not_complete_and_says_why() {
        let c = configuration(true);
        let status = status_of(ConfigurationFacts {
            configuration: &c,
            targeted: &[],
            metrics: BTreeMap::new(),
            rollout: None,
            invalid: Some((
                ConfigurationReason::InvalidSelector,
                "spec.selector cannot be used".into(),
            )),
            now: Timestamp::UNIX_EPOCH,
        });
        assert_eq!(condition(&status, "Ready"), ("False", "InvalidSelector"));
        assert_eq!(condition(&status, "RolloutComplete"), ("False", "InvalidSelector"));
    }

    #[test]
    fn custom_metrics_count_the_devices_they_are_true_on_and_a_failure_as_false() {
        let compile = |name: &str, source: &str| {
            (name.to_string(), DeviceExpression::compile(source).expect("compiles"))
        };
        let metrics = [
            compile("old", "status.reported.firmwareVersion == '1.0'"),
            compile("named", "name.startsWith('a')"),
            // Not a boolean: counts as false everywhere, and the failure is reported.
            compile("broken", "name"),
        ];
        let reporting = |name: &str, version: &str| {
            let mut d = device(name, 3, true);
            if let Some(status) = d.status.as_mut() {
                status.reported =
                    Some(BTreeMap::from([("firmwareVersion".into(), version.into())]));
            }
            d
        };
        let mut counts = MetricCounts::new(&metrics);
        for d in [reporting("a-1", "1.0"), reporting("b-1", "1.0"), reporting("a-2", "1.1")] {
            counts.add(&d);
        }
        let (counts, failure) = counts.finish();
        assert_eq!(
            counts,
            BTreeMap::from([("old".into(), 2), ("named".into(), 2), ("broken".into(), 0)])
        );
        assert!(failure.is_some_and(|f| f.starts_with("metric broken:")));
        let (none, failure) = MetricCounts::new(&metrics).finish();
        assert_eq!(none.values().sum::<i32>(), 0, "every metric is listed at zero");
        assert_eq!((none.len(), failure), (3, None));
    }
}
