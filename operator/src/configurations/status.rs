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

use crate::k8s::conditions::{ConditionUpdate, merge};

/// Whether `device` applied a desired document with `configuration`'s current generation:
/// its status lists that generation and the device is in sync.
pub fn applied(device: &Device, configuration: &DeviceConfiguration) -> bool {
    let name = configuration.name_any();
    let generation = configuration.metadata.generation.unwrap_or_default();
    device.status.as_ref().is_some_and(|s| {
        s.in_sync == Some(true)
            && s.configurations.iter().any(|c| c.name == name && c.generation == generation)
    })
}

/// Custom metric counts over `targeted`; a device on which an expression fails counts as
/// false (the first such failure is returned, for the log).
pub fn metric_counts(
    metrics: &[(String, DeviceExpression)],
    targeted: &[&Device],
) -> (BTreeMap<String, i32>, Option<String>) {
    let mut counts = BTreeMap::new();
    let mut failure = None;
    for (name, expression) in metrics {
        let mut n = 0i32;
        for device in targeted {
            match expression.matches(device) {
                Ok(true) => n = n.saturating_add(1),
                Ok(false) => {}
                Err(error) => {
                    failure.get_or_insert_with(|| format!("metric {name}: {error}"));
                }
            }
        }
        counts.insert(name.clone(), n);
    }
    (counts, failure)
}

/// What the status shows besides the counts.
pub struct ConfigurationFacts<'a> {
    /// The configuration.
    pub configuration: &'a DeviceConfiguration,
    /// Devices the selector picks.
    pub targeted: &'a [&'a Device],
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
