//! The DeviceDisruptionBudget controller: keeps each budget's status (expected, available,
//! allowed per group, devices disrupted now) current. The budget's effect on requests is
//! the index's check, not this controller: status is for people and tools.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::{controller::Action, watcher},
};
use kubetwin_api::{
    DeviceDisruptionBudget, DeviceDisruptionBudgetStatus,
    budget::{GroupBudget, MAX_LISTED_DISRUPTED},
    condition::{BudgetCondition, BudgetReason, ConditionStatus},
};

use super::{
    firmware::{FirmwareHold, firmware_hold, firmware_holder},
    index::{BudgetIndex, GroupState},
};
use crate::{
    context::Context,
    error::{Error, Result},
    k8s::{
        Retries,
        conditions::{ConditionUpdate, merge},
        reconcile_failed,
        status::{Priority, StatusKey, StatusKind},
    },
};

/// How often a budget's status is recomputed (devices come and go without touching it).
pub const REFRESH: Duration = Duration::from_secs(2);

/// The budget controller.
pub struct BudgetController {
    /// Shared services.
    pub ctx: Arc<Context>,
    /// Failed reconciles per budget.
    pub retries: Retries,
}

/// Keeps the budget index in step with the budget watch.
pub fn observe(
    event: &watcher::Event<DeviceDisruptionBudget>,
    index: &std::sync::Mutex<BudgetIndex>,
) {
    let mut index = index.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event {
        watcher::Event::Apply(budget) | watcher::Event::InitApply(budget) => index.apply(budget),
        watcher::Event::Delete(budget) => {
            index.remove(&budget.namespace().unwrap_or_default(), &budget.name_any());
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Keeps the index in step with the Device watch: each Device's labels, and the firmware
/// holds (see [`firmware_hold`]): the only place a firmware slot is given back, so it is given
/// back once the end is persisted.
/// Replayed on a restart, so the holds of updates in progress are rebuilt from the Devices.
pub fn observe_device(
    event: &watcher::Event<kubetwin_api::Device>,
    index: &std::sync::Mutex<BudgetIndex>,
) {
    let mut index = index.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event {
        watcher::Event::Apply(device) | watcher::Event::InitApply(device) => {
            let namespace = device.namespace().unwrap_or_default();
            let name = device.name_any();
            index.set_labels(&namespace, &name, device.labels());
            let holder = firmware_holder(&namespace, &name);
            match firmware_hold(device, index.firmware_order(&namespace, &name)) {
                FirmwareHold::Hold => index.hold(&namespace, &name, holder),
                FirmwareHold::Release => index.release_firmware(&namespace, &name, &holder),
                FirmwareHold::Keep => {}
            }
        }
        watcher::Event::Delete(device) => {
            let namespace = device.namespace().unwrap_or_default();
            let name = device.name_any();
            index.release_firmware(&namespace, &name, &firmware_holder(&namespace, &name));
            index.remove_device(&namespace, &name);
        }
        watcher::Event::InitDone => index.kind_synced("device"),
        watcher::Event::Init => {}
    }
}

/// Requeue after an error, later with each failure in a row.
pub fn error_policy(
    budget: Arc<DeviceDisruptionBudget>,
    error: &Error,
    this: Arc<BudgetController>,
) -> Action {
    reconcile_failed(&*budget, error, &this.ctx.metrics, &this.retries)
}

/// Recomputes one budget's status and offers it to the status writer.
pub async fn reconcile(
    budget: Arc<DeviceDisruptionBudget>,
    this: Arc<BudgetController>,
) -> Result<Action> {
    let ctx = &this.ctx;
    ctx.metrics.reconciled(crate::k8s::kind_label::<DeviceDisruptionBudget>());
    let namespace = budget.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = budget.name_any();
    let groups = {
        let index = ctx.budgets();
        if index.budget(&namespace, &name).is_none() {
            // Not compiled: the watch has not shown it yet, or it cannot be read.
            return Ok(Action::requeue(REFRESH));
        }
        index.evaluate(&namespace, &name)
    };
    let status = status_of(
        &groups,
        budget.spec.group_by.is_some(),
        budget.metadata.generation,
        budget.status.as_ref(),
        crate::clock::now(),
    );
    let key = StatusKey::new(StatusKind::of::<DeviceDisruptionBudget>(), &namespace, &name);
    ctx.writer.offer(key, &status, budget.status.as_ref(), Priority::Routine)?;
    this.retries.succeeded(&*budget);
    Ok(Action::requeue(REFRESH))
}

/// The status that shows `groups`.
pub fn status_of(
    groups: &BTreeMap<String, GroupState>,
    grouped: bool,
    generation: Option<i64>,
    current: Option<&DeviceDisruptionBudgetStatus>,
    now: Timestamp,
) -> DeviceDisruptionBudgetStatus {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let expected: u32 = groups.values().map(|g| g.expected).sum();
    let available: u32 = groups.values().map(|g| g.available).sum();
    let allowed = groups.values().map(|g| g.allowed).min().unwrap_or(0);
    let mut disrupted: Vec<String> =
        groups.values().flat_map(|g| g.disrupted.iter().cloned()).collect();
    disrupted.sort();
    disrupted.truncate(MAX_LISTED_DISRUPTED);
    let full: Vec<&str> =
        groups.iter().filter(|(_, g)| g.allowed == 0).map(|(k, _)| k.as_str()).collect();
    let (status, reason, message) = if groups.is_empty() {
        (
            ConditionStatus::False,
            BudgetReason::InsufficientDevices,
            "The selector picks no Device".to_string(),
        )
    } else if full.is_empty() {
        (
            ConditionStatus::True,
            BudgetReason::SufficientDevices,
            format!("{allowed} more device(s) may be disrupted"),
        )
    } else if grouped {
        (
            ConditionStatus::False,
            BudgetReason::InsufficientDevices,
            format!("No room in group(s) {}: disruptive actions there wait", full.join(", ")),
        )
    } else {
        (
            ConditionStatus::False,
            BudgetReason::InsufficientDevices,
            "No room: disruptive actions wait".to_string(),
        )
    };
    let conditions = merge(
        current.map(|c| c.conditions.as_slice()).unwrap_or_default(),
        vec![ConditionUpdate {
            type_: BudgetCondition::DisruptionAllowed.as_str(),
            status,
            reason: reason.as_str(),
            message,
        }],
        generation,
        now,
    );
    DeviceDisruptionBudgetStatus {
        observed_generation: generation,
        expected_devices: count(expected),
        current_available: count(available),
        disruptions_allowed: count(allowed),
        groups: if grouped {
            groups
                .iter()
                .map(|(group, g)| GroupBudget {
                    group: group.clone(),
                    expected: count(g.expected),
                    available: count(g.available),
                    disruptions_allowed: count(g.allowed),
                })
                .collect()
        } else {
            Vec::new()
        },
        disrupted_devices: disrupted,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(expected: u32, available: u32, allowed: u32, disrupted: &[&str]) -> GroupState {
        GroupState {
            expected,
            available,
            allowed,
            disrupted: disrupted.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn status_shows_the_tightest_group_and_which_devices_are_disrupted() {
        let groups = BTreeMap::from([
            ("a".to_string(), group(5, 4, 0, &["d04"])),
            ("b".to_string(), group(5, 5, 1, &[])),
        ]);
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let status = status_of(&groups, true, Some(2), None, now);
        assert_eq!(
            (status.expected_devices, status.current_available, status.disruptions_allowed),
            (10, 9, 0)
        );
        assert_eq!(status.disrupted_devices, ["d04"]);
        assert_eq!(status.groups.len(), 2);
        let condition = &status.conditions[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "InsufficientDevices")
        );
        assert_eq!(condition.message, "No room in group(s) a: disruptive actions there wait");

        let ungrouped = BTreeMap::from([(String::new(), group(10, 10, 3, &[]))]);
        let status = status_of(&ungrouped, false, Some(1), None, now);
        assert_eq!((status.disruptions_allowed, status.groups.len()), (3, 0));
        assert_eq!(status.conditions[0].status, "True");
        let empty = status_of(&BTreeMap::new(), false, None, None, now);
        assert_eq!((empty.expected_devices, empty.disruptions_allowed), (0, 0));
    }
}
