//! A configuration's firmware rollout: which devices it admits now, and its status, as a pure
//! function of the configuration, the devices whose firmware it orders and the time. The wave
//! planner is the one DeviceJob uses; each device's progress comes from its
//! `status.firmware`, and its admission is recorded in its `status.configurations`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kubetwin_api::{
    DeviceConfiguration, FirmwarePhase, FirmwareTarget, RolloutPhase,
    condition::ConfigurationReason,
    configuration::{ConfigurationRolloutStatus, FailureAction},
    job::{FailedDevice, MAX_LISTED_FAILURES},
};

use super::targeted::TargetedDevice;
use crate::rollout::planner::{
    AbortCriterion, Attempt, Failure, FailureFilter, Member, Observed, Readiness, Room, Stage, plan,
};

/// A device whose firmware the configuration orders (its firmware source).
pub struct RolloutMember<'a> {
    /// What the rollout reads of the Device.
    pub device: &'a TargetedDevice,
    /// Online now.
    pub online: bool,
    /// Admitted by this process and not yet recorded in its status.
    pub admitted_now: bool,
}

/// What the rollout does now.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutPlan {
    /// The status to show.
    pub status: ConfigurationRolloutStatus,
    /// Devices (names) admitted now: their next desired document carries the firmware.
    pub starts: Vec<String>,
    /// Look again after this long at the latest (a rate limit frees a start).
    pub wake_after: Option<Duration>,
}

use crate::rollout::api_count as count;

/// One rollout per firmware version (admissions, rollbacks and the devices' records all go
/// by version): a new URL or checksum for the same version continues the same rollout.
fn same_version(a: &FirmwareTarget, b: &FirmwareTarget) -> bool {
    a.version == b.version
}

/// Where one member's update of `target` stands.
fn attempt_of(member: &RolloutMember<'_>, configuration: &str, target: &FirmwareTarget) -> Attempt {
    let entry = member.device.recorded(configuration);
    let admitted = member.admitted_now
        || entry.is_some_and(|e| !e.rollback && e.firmware.as_deref() == Some(&target.version));
    if !admitted {
        return Attempt::None;
    }
    let Some(firmware) = member.device.firmware.as_ref() else {
        return Attempt::InFlight;
    };
    if firmware.target.as_deref() != Some(&target.version) {
        return Attempt::InFlight;
    }
    let at = firmware.finished_at.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    match firmware.phase {
        Some(FirmwarePhase::Succeeded | FirmwarePhase::Current) => Attempt::Succeeded,
        Some(FirmwarePhase::Failed | FirmwarePhase::RolledBack) => {
            Attempt::Failed { failure: Failure::Failed, at }
        }
        Some(FirmwarePhase::TimedOut) => Attempt::Failed { failure: Failure::TimedOut, at },
        _ => Attempt::InFlight,
    }
}

/// The rollout of `configuration`'s firmware over `members` (any order) at `now`; `None`
/// without spec.firmware.
pub fn plan_rollout(
    configuration: &DeviceConfiguration,
    members: &mut [RolloutMember<'_>],
    now: Timestamp,
) -> Option<RolloutPlan> {
    let target = configuration.spec.firmware.as_ref()?;
    let name = configuration.name_any();
    let current = configuration.status.as_ref().and_then(|s| s.rollout.as_ref());
    let same_target = current.is_some_and(|c| same_version(&c.firmware, target));
    // A new target starts a new rollout; what the configuration had before is what a rollback
    // installs. After a rollback, the devices run what that rollback installed: it stays the
    // way back (never the firmware that was just rolled back).
    let previous = match current {
        Some(c) if same_target => c.previous.clone(),
        Some(c) if c.phase == RolloutPhase::RolledBack => c.previous.clone(),
        Some(c) => Some(c.firmware.clone()),
        None => None,
    };
    let rolled_back = same_target && current.is_some_and(|c| c.phase == RolloutPhase::RolledBack);
    members.sort_by(|a, b| a.device.name.cmp(&b.device.name));

    let mut strategy = crate::rollout::strategy_of(
        &configuration.spec.rollout,
        configuration.spec.continue_after_wave,
    );
    let threshold = configuration.spec.failure_threshold.as_ref();
    strategy.abort = threshold
        .map(|t| AbortCriterion {
            filter: FailureFilter::Any,
            min_executed: u32::try_from(t.min_finished).unwrap_or(1),
            threshold_percent: u32::try_from(t.percent).unwrap_or(100),
        })
        .into_iter()
        .collect();
    let mut started_last_minute = 0u32;
    let planned: Vec<Member> = members
        .iter()
        .map(|m| {
            let latest = attempt_of(m, &name, target);
            let started = m
                .device
                .firmware
                .as_ref()
                .filter(|f| f.target.as_deref() == Some(&target.version))
                .and_then(|f| f.started_at.as_ref());
            if latest != Attempt::None
                && started.is_none_or(|t| now.duration_since(t.0).as_secs() < 60)
            {
                started_last_minute += 1;
            }
            Member {
                name: m.device.name.clone(),
                attempts: u32::from(latest != Attempt::None),
                latest,
                readiness: if m.online { Readiness::Ready } else { Readiness::Offline },
                groups: Vec::new(),
            }
        })
        .collect();
    // Disruption budgets are honoured by each device's firmware gate (an admitted update
    // waits there, counted as in flight), so the planner itself needs no budget room.
    let observed = Observed { started_last_minute, aborted: rolled_back, deleting: false };
    let decision = plan(&planned, &strategy, &Room::default(), observed, now);

    let rolled_back_devices =
        members.iter().filter(|m| m.device.recorded(&name).is_some_and(|e| e.rollback)).count();
    let action = threshold.map(|t| t.action);
    let (phase, reason) = match decision.stage {
        Stage::Aborted if action == Some(FailureAction::Rollback) => {
            (RolloutPhase::RolledBack, ConfigurationReason::RolledBack)
        }
        Stage::Aborted => (RolloutPhase::Paused, ConfigurationReason::FailureThresholdReached),
        Stage::Paused | Stage::Suspended => (RolloutPhase::Paused, ConfigurationReason::WavePaused),
        Stage::Running => (RolloutPhase::Progressing, ConfigurationReason::Updating),
        Stage::Succeeded if planned.is_empty() => {
            (RolloutPhase::Succeeded, ConfigurationReason::NoDevices)
        }
        Stage::Succeeded => (RolloutPhase::Succeeded, ConfigurationReason::AllUpdated),
        Stage::Failed => (RolloutPhase::Failed, ConfigurationReason::SomeFailed),
    };
    let c = &decision.counts;
    let failed = c.failed + c.timed_out + c.rejected;
    let message = match reason {
        ConfigurationReason::RolledBack => format!(
            "{failed} of {} finished updates to {} failed (threshold {}%): the devices this rollout updated get {} back",
            c.finished(),
            target.version,
            threshold.map_or(100, |t| t.percent),
            previous
                .as_ref()
                .map_or("their earlier firmware (none recorded)", |p| p.version.as_str()),
        ),
        ConfigurationReason::FailureThresholdReached => format!(
            "{failed} of {} finished updates to {} failed (threshold {}%): nothing more starts until the threshold is raised or the firmware changes",
            c.finished(),
            target.version,
            threshold.map_or(100, |t| t.percent),
        ),
        ConfigurationReason::WavePaused => format!(
            "Wave {} finished; set spec.continueAfterWave to {} to go on",
            decision.current_wave.unwrap_or_default(),
            decision.current_wave.unwrap_or_default()
        ),
        ConfigurationReason::AllUpdated => {
            format!("All {} devices run {}", c.targeted, target.version)
        }
        ConfigurationReason::SomeFailed => format!(
            "{} of {} devices run {}; {failed} did not update",
            c.succeeded, c.targeted, target.version
        ),
        ConfigurationReason::NoDevices => {
            "No targeted Device takes its firmware from this configuration".to_string()
        }
        _ => format!(
            "Updating to {}: {} of {} done, {} updating",
            target.version,
            c.finished(),
            c.targeted,
            c.in_flight
        ),
    };

    // Once rolled back, the counts stay as they were when it happened (the devices'
    // firmware status now follows the rollback order).
    if rolled_back && let Some(current) = current {
        let mut status = current.clone();
        status.rolled_back = count(u32::try_from(rolled_back_devices).unwrap_or(u32::MAX));
        return Some(RolloutPlan { status, starts: Vec::new(), wake_after: None });
    }
    let failed_devices = members
        .iter()
        .zip(&planned)
        .filter_map(|(m, p)| match p.latest {
            Attempt::Failed { failure, .. } => {
                let firmware = m.device.firmware.as_ref();
                Some(FailedDevice {
                    device: p.name.clone(),
                    phase: match (failure, firmware.and_then(|f| f.phase)) {
                        (Failure::TimedOut, _) => "TimedOut".to_string(),
                        (_, Some(phase)) => format!("{phase:?}"),
                        _ => "Failed".to_string(),
                    },
                    reason: firmware.and_then(|f| f.message.clone()).unwrap_or_default(),
                    attempts: 1,
                })
            }
            _ => None,
        })
        .take(MAX_LISTED_FAILURES)
        .collect();
    let status = ConfigurationRolloutStatus {
        phase,
        firmware: target.clone(),
        previous,
        current_wave: decision.current_wave.map(count),
        waves: crate::rollout::wave_statuses(&decision),
        members: count(c.targeted),
        updating: count(c.in_flight),
        succeeded: count(c.succeeded),
        failed: count(failed),
        rolled_back: count(u32::try_from(rolled_back_devices).unwrap_or(u32::MAX)),
        failed_devices,
        reason: Some(reason.as_str().to_string()),
        message: Some(message),
    };
    let starts = decision.starts.iter().map(|s| planned[s.member].name.clone()).collect();
    Some(RolloutPlan { status, starts, wake_after: decision.wake_after })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
        jiff::Timestamp,
    };
    use kubetwin_api::{
        Device, DeviceConfigurationSpec, DeviceConfigurationStatus, DeviceSpec, DeviceStatus,
        FirmwareStatus,
        configuration::FailureThreshold,
        device::AppliedConfiguration,
        job::{RolloutStrategy, Wave},
    };

    use super::*;
    use crate::configurations::fixtures::{firmware, rollout};

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn configuration(action: FailureAction) -> DeviceConfiguration {
        let mut c = DeviceConfiguration::new(
            "fw",
            DeviceConfigurationSpec {
                firmware: Some(firmware("2.0")),
                rollout: RolloutStrategy {
                    max_in_flight: Some(IntOrString::Int(2)),
                    waves: vec![
                        Wave { size: IntOrString::Int(1), pause_after: true },
                        Wave { size: IntOrString::Int(3), pause_after: false },
                    ],
                    ..Default::default()
                },
                failure_threshold: Some(FailureThreshold { percent: 30, min_finished: 2, action }),
                ..Default::default()
            },
        );
        c.metadata.generation = Some(2);
        c
    }

    /// A device: its recorded order from "fw" (version, rollback) and its firmware phase.
    fn device(name: &str, order: Option<(&str, bool)>, phase: Option<FirmwarePhase>) -> Device {
        let mut d = Device::new(name, DeviceSpec::default());
        d.status = Some(DeviceStatus {
            configurations: vec![AppliedConfiguration {
                name: "fw".into(),
                generation: 2,
                firmware: order.map(|(v, _)| v.to_string()),
                rollback: order.is_some_and(|(_, r)| r),
            }],
            firmware: phase.map(|phase| FirmwareStatus {
                target: Some("2.0".into()),
                phase: Some(phase),
                started_at: Some(Time(now())),
                ..Default::default()
            }),
            ..Default::default()
        });
        d
    }

    fn run(c: &DeviceConfiguration, devices: &[Device]) -> RolloutPlan {
        let targeted: Vec<TargetedDevice> = devices.iter().map(TargetedDevice::of).collect();
        let mut members: Vec<RolloutMember<'_>> = targeted
            .iter()
            .map(|device| RolloutMember { device, online: true, admitted_now: false })
            .collect();
        plan_rollout(c, &mut members, now()).expect("a firmware rollout")
    }

    #[test]
    fn a_rollout_goes_canary_first_pauses_between_waves_and_stops_at_the_threshold() {
        use FirmwarePhase::{Downloading, RolledBack, Succeeded};
        let c = configuration(FailureAction::Pause);
        let fresh: Vec<Device> = (1..=6).map(|i| device(&format!("d{i}"), None, None)).collect();
        let first = run(&c, &fresh);
        assert_eq!(first.starts, ["d1"], "the canary wave is one device");
        assert_eq!(first.status.phase, RolloutPhase::Progressing);
        assert_eq!(first.status.current_wave, Some(1));

        let mut after_canary = fresh.clone();
        after_canary[0] = device("d1", Some(("2.0", false)), Some(Succeeded));
        let paused = run(&c, &after_canary);
        assert_eq!(paused.status.phase, RolloutPhase::Paused);
        assert_eq!(paused.status.reason.as_deref(), Some("WavePaused"));
        assert!(paused.starts.is_empty());

        let mut go_on = c.clone();
        go_on.spec.continue_after_wave = 1;
        let second = run(&go_on, &after_canary);
        assert_eq!(second.starts, ["d2", "d3"], "maxInFlight 2 of the second wave");

        let mut failing = after_canary.clone();
        failing[1] = device("d2", Some(("2.0", false)), Some(RolledBack));
        failing[2] = device("d3", Some(("2.0", false)), Some(Downloading));
        let stopped = run(&go_on, &failing);
        assert_eq!(stopped.status.phase, RolloutPhase::Paused, "1 of 2 finished failed >= 30%");
        assert_eq!(stopped.status.reason.as_deref(), Some("FailureThresholdReached"));
        assert!(stopped.starts.is_empty(), "nothing more starts");
        assert_eq!(
            (stopped.status.succeeded, stopped.status.failed, stopped.status.updating),
            (1, 1, 1)
        );
        assert_eq!(stopped.status.failed_devices[0].device, "d2");
        assert_eq!(stopped.status.failed_devices[0].phase, "RolledBack");
    }

    #[test]
    fn with_rollback_the_threshold_rolls_back_and_the_counts_then_stay() {
        use FirmwarePhase::{Failed, Succeeded};
        let mut c = configuration(FailureAction::Rollback);
        c.spec.continue_after_wave = 1;
        c.status = Some(DeviceConfigurationStatus {
            rollout: Some(ConfigurationRolloutStatus {
                current_wave: Some(2),
                members: 3,
                ..rollout(RolloutPhase::Progressing, "2.0", Some("1.0"))
            }),
            ..Default::default()
        });
        let devices = [
            device("d1", Some(("2.0", false)), Some(Succeeded)),
            device("d2", Some(("2.0", false)), Some(Failed)),
            device("d3", None, None),
        ];
        let decided = run(&c, &devices);
        assert_eq!(decided.status.phase, RolloutPhase::RolledBack);
        assert_eq!(decided.status.previous.as_ref().map(|p| p.version.as_str()), Some("1.0"));
        assert!(decided.starts.is_empty());

        let mut persisted = c.clone();
        if let Some(status) = persisted.status.as_mut() {
            status.rollout = Some(decided.status.clone());
        }
        let back = [
            device("d1", Some(("1.0", true)), None),
            device("d2", Some(("1.0", true)), None),
            device("d3", None, None),
        ];
        let later = run(&persisted, &back);
        assert_eq!(later.status.phase, RolloutPhase::RolledBack, "stays rolled back");
        assert!(later.starts.is_empty(), "d3 is never started");
        assert_eq!((later.status.succeeded, later.status.failed), (1, 1), "counts kept");
        assert_eq!(later.status.rolled_back, 2);
    }

    #[test]
    fn a_new_firmware_starts_a_new_rollout_whose_rollback_is_the_old_firmware() {
        let mut c = configuration(FailureAction::Rollback);
        c.status = Some(DeviceConfigurationStatus {
            rollout: Some(ConfigurationRolloutStatus {
                members: 1,
                succeeded: 1,
                ..rollout(RolloutPhase::Succeeded, "1.0", None)
            }),
            ..Default::default()
        });
        let plan = run(&c, &[device("d1", Some(("1.0", false)), None)]);
        assert_eq!(plan.status.firmware.version, "2.0");
        assert_eq!(plan.status.previous.map(|p| p.version), Some("1.0".into()));
        assert_eq!(plan.starts, ["d1"], "admitted to 1.0 is not admitted to 2.0");

        // After 2.0 was rolled back to 1.0, a new 2.1 rolls back to 1.0 too, never to 2.0.
        let mut after_rollback = c.clone();
        after_rollback.spec.firmware = Some(firmware("2.1"));
        if let Some(rollout) = after_rollback.status.as_mut().and_then(|s| s.rollout.as_mut()) {
            rollout.phase = RolloutPhase::RolledBack;
            rollout.firmware = firmware("2.0");
            rollout.previous = Some(firmware("1.0"));
        }
        let plan = run(&after_rollback, &[device("d1", Some(("1.0", true)), None)]);
        assert_eq!(plan.status.previous.map(|p| p.version), Some("1.0".into()));
        assert_eq!(plan.status.phase, RolloutPhase::Progressing, "a new rollout");
    }
}
