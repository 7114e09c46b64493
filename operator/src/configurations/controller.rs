//! The DeviceConfiguration controller: counts targeted and applied Devices and custom
//! metrics, runs the firmware rollout (admitting devices, which their Device reconcile then
//! sends the order to), and offers the configuration's status.

use std::{sync::Arc, time::Duration};

use futures::channel::mpsc::UnboundedSender;
use kube::{
    ResourceExt,
    core::SelectorExt,
    runtime::{
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};
use kubetwin_api::{
    DeviceConfiguration, RolloutPhase, condition::ConfigurationReason, expression::DeviceExpression,
};
use tracing::{info, warn};

use super::{
    effective::{firmware_source, merge_order},
    rollout::{RolloutMember, plan_rollout},
    selector_of,
    status::{ConfigurationFacts, MetricCounts, status_of},
    targeted::TargetedDevice,
};
use crate::{
    context::{Context, DeviceOnline},
    error::{Error, Result},
    k8s::{
        Retries, kind_label, reconcile_failed,
        status::{Priority, StatusKey, StatusKind},
    },
    twin::cache::CachedDevice,
};

/// How often a configuration whose rollout is under way looks again.
const ROLLING_RECHECK: Duration = Duration::from_secs(2);
/// How often the counts and custom metrics of a configuration are refreshed otherwise.
const COUNT_RECHECK: Duration = Duration::from_secs(15);
/// Wait before looking again while the fleet index has not seen every Device yet.
const NOT_SYNCED: Duration = Duration::from_secs(1);

/// The configuration controller's own state.
pub struct ConfigurationController {
    /// Shared services.
    pub ctx: Arc<Context>,
    /// Every DeviceConfiguration (to know which one is each device's firmware source).
    pub configurations: Store<DeviceConfiguration>,
    /// Reconciles a Device (its firmware order follows an admission).
    pub devices: UnboundedSender<ObjectRef<CachedDevice>>,
    /// Failed reconciles per configuration.
    pub retries: Retries,
    /// The rollout phase and reason last announced with an Event, per configuration uid (the
    /// cache may still show the old status on the next reconcile: announce once).
    pub announced: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Requeue after an error, later with each failure in a row.
pub fn error_policy(
    configuration: Arc<DeviceConfiguration>,
    error: &Error,
    this: Arc<ConfigurationController>,
) -> Action {
    reconcile_failed(&*configuration, error, &this.ctx.metrics, &this.retries)
}

/// Publishes an Event when the rollout enters a new phase (or stops for another reason).
fn announce(
    this: &ConfigurationController,
    configuration: &DeviceConfiguration,
    rollout: Option<&kubetwin_api::configuration::ConfigurationRolloutStatus>,
) {
    let (Some(rollout), Some(uid)) = (rollout, configuration.metadata.uid.as_ref()) else {
        return;
    };
    let reason = rollout.reason.clone().unwrap_or_default();
    let said = format!("{:?}/{reason}", rollout.phase);
    let persisted = configuration
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map(|r| format!("{:?}/{}", r.phase, r.reason.clone().unwrap_or_default()));
    {
        let mut announced = this.announced.lock().unwrap_or_else(|p| p.into_inner());
        let last = announced.get(uid).cloned().or(persisted);
        if last.as_deref() == Some(said.as_str()) {
            return;
        }
        announced.insert(uid.clone(), said);
    }
    let warning = matches!(rollout.phase, RolloutPhase::Failed | RolloutPhase::RolledBack)
        || reason == ConfigurationReason::FailureThresholdReached.as_str();
    let type_ = if warning { EventType::Warning } else { EventType::Normal };
    let message = rollout.message.clone().unwrap_or_default();
    info!(configuration = %configuration.name_any(), phase = ?rollout.phase, %message, "rollout progressed");
    this.ctx.event(configuration, None::<&DeviceConfiguration>, type_, &reason, message);
}

/// Computes the configuration's status and advances its rollout.
pub async fn reconcile(
    configuration: Arc<DeviceConfiguration>,
    this: Arc<ConfigurationController>,
) -> Result<Action> {
    let ctx = &this.ctx;
    ctx.metrics.reconciled(kind_label::<DeviceConfiguration>());
    let namespace = configuration.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = configuration.name_any();
    if !ctx.fleet().synced() {
        return Ok(Action::requeue(NOT_SYNCED));
    }
    let now = crate::clock::now();
    let key = StatusKey::new(StatusKind::of::<DeviceConfiguration>(), &namespace, &name);

    let mut invalid = None;
    let selector = selector_of(&configuration);
    if selector.is_none() {
        invalid = Some((
            ConfigurationReason::InvalidSelector,
            "spec.selector cannot be used (check its matchExpressions operators and values)"
                .to_string(),
        ));
    }
    let mut metrics = Vec::with_capacity(configuration.spec.metrics.len());
    for metric in &configuration.spec.metrics {
        match DeviceExpression::compile(&metric.expression) {
            Ok(expression) => metrics.push((metric.name.clone(), expression)),
            Err(error) => {
                invalid = Some((
                    ConfigurationReason::InvalidExpression,
                    format!("metric {}: {error}", metric.name),
                ));
            }
        }
    }

    let devices = ctx.devices_online(&namespace);
    // The targeted Devices, each with whether it is online now, and what the status and the
    // rollout read of each (a projection of the cached text: never the whole Devices at once).
    let matched: Vec<&DeviceOnline> = match &selector {
        Some(selector) => devices.iter().filter(|d| selector.matches(d.device.labels())).collect(),
        None => Vec::new(),
    };
    let targeted: Vec<TargetedDevice> = matched
        .iter()
        .map(|d| TargetedDevice::read(&d.device))
        .collect::<Result<_, _>>()
        .map_err(Error::CachedDevice)?;

    // The rollout's members: targeted devices whose firmware comes from this configuration.
    // An unusable selector targets nothing: the rollout stays as it was (a rollback stays
    // rolled back) until it is fixed. A bad custom metric does not stop it.
    let frozen = || configuration.status.as_ref().and_then(|s| s.rollout.clone());
    let rollout = if selector.is_some() && configuration.spec.firmware.is_some() {
        let others: Vec<(Arc<DeviceConfiguration>, kube::core::Selector)> = this
            .configurations
            .state()
            .into_iter()
            .filter(|c| c.namespace().as_deref() == Some(&namespace))
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| selector_of(&c).map(|s| (c, s)))
            .collect();
        let version = configuration.spec.firmware.as_ref().map(|f| f.version.clone());
        let admissions = ctx.admissions();
        let mut members: Vec<RolloutMember<'_>> = matched
            .iter()
            .zip(&targeted)
            .filter(|(cached, device)| {
                let mut selecting: Vec<Arc<DeviceConfiguration>> = others
                    .iter()
                    .filter(|(_, s)| s.matches(cached.device.labels()))
                    .map(|(c, _)| c.clone())
                    .collect();
                merge_order(&mut selecting);
                firmware_source(device.own_firmware, &selecting)
                    .is_some_and(|s| s.name_any() == name)
            })
            .map(|(cached, device)| RolloutMember {
                device,
                online: cached.online,
                admitted_now: version
                    .as_deref()
                    .is_some_and(|v| admissions.admitted(&namespace, &name, v, &device.name)),
            })
            .collect();
        drop(admissions);
        plan_rollout(&configuration, &mut members, now)
    } else {
        None
    };
    let (starts, wake_after) = match &rollout {
        Some(plan) => (plan.starts.clone(), plan.wake_after),
        None => (Vec::new(), None),
    };
    if let (false, Some(target)) = (starts.is_empty(), configuration.spec.firmware.as_ref()) {
        let mut admissions = ctx.admissions();
        for device in &starts {
            admissions.admit(&namespace, &name, &target.version, device);
        }
        drop(admissions);
        for device in &starts {
            let _ = this.devices.unbounded_send(ObjectRef::new(device).within(&namespace));
        }
        ctx.metrics.configuration_admitted(starts.len());
    }

    // Metrics read the whole status; the cache dropped the reported maps.
    let mut counts = MetricCounts::new(&metrics);
    if !metrics.is_empty() {
        for cached in &matched {
            let device = cached.device.device().map_err(Error::CachedDevice)?;
            counts.add(&*ctx.whole_device(&device).await?);
        }
    }
    let (counts, failure) = counts.finish();
    if let Some(failure) = failure {
        warn!(configuration = %name, %namespace, %failure, "a custom metric cannot be evaluated on some device; it counts as false there");
    }
    let rollout_status = match rollout {
        Some(plan) => Some(plan.status),
        None if configuration.spec.firmware.is_some() => frozen(),
        None => None,
    };
    let phase = rollout_status.as_ref().map(|r| r.phase);
    let status = status_of(ConfigurationFacts {
        configuration: &configuration,
        targeted: &targeted,
        metrics: counts,
        rollout: rollout_status,
        invalid,
        now,
    });
    let current_phase =
        configuration.status.as_ref().and_then(|s| s.rollout.as_ref()).map(|r| r.phase);
    // A new phase (a rollback above all: devices act on it) is written first.
    let priority = if configuration.status.is_none() || phase != current_phase {
        Priority::Urgent
    } else {
        Priority::Routine
    };
    ctx.writer.offer(key, &status, configuration.status.as_ref(), priority)?;
    announce(&this, &configuration, status.rollout.as_ref());
    this.retries.succeeded(&*configuration);
    let recheck = match phase {
        Some(RolloutPhase::Progressing) => ROLLING_RECHECK,
        _ => COUNT_RECHECK,
    };
    Ok(Action::requeue(wake_after.map_or(recheck, |w| w.min(recheck))))
}
