//! The firmware update of one Device, as a pure function of its target (`spec.firmware`), the
//! status so far, what the device reports and the time. Success needs evidence: a report from
//! a later boot than the one the update started in, running the target, committed.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kubetwin_api::{
    FirmwarePhase, FirmwareStatus, FirmwareTarget,
    condition::{ConditionStatus, DeviceCondition, DeviceReason},
};
use kubetwin_protocol::{FirmwareState, ReportedFirmware};

use crate::k8s::conditions::ConditionUpdate;

/// What the device says about its firmware, and the boot it says it from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirmwareReport {
    /// The reported `firmware` block, if any.
    pub block: Option<ReportedFirmware>,
    /// The boot of the last report accepted.
    pub boot: Option<u64>,
}

fn phase_of(state: FirmwareState) -> Option<FirmwarePhase> {
    match state {
        FirmwareState::Downloading => Some(FirmwarePhase::Downloading),
        FirmwareState::Verifying => Some(FirmwarePhase::Verifying),
        FirmwareState::Applying => Some(FirmwarePhase::Applying),
        FirmwareState::Rebooting => Some(FirmwarePhase::Rebooting),
        FirmwareState::Error => Some(FirmwarePhase::Failed),
        FirmwareState::Rolledback => Some(FirmwarePhase::RolledBack),
        FirmwareState::Idle => None,
    }
}

fn set(status: &mut FirmwareStatus, phase: FirmwarePhase, reason: DeviceReason, message: String) {
    status.phase = Some(phase);
    status.reason = Some(reason.as_str().to_string());
    status.message = Some(message);
}

fn finish(
    status: &mut FirmwareStatus,
    phase: FirmwarePhase,
    reason: DeviceReason,
    message: String,
    now: Timestamp,
) {
    set(status, phase, reason, message);
    status.finished_at = Some(Time(now));
}

/// When the update of `status` times out (`None`: not under way).
pub fn deadline(status: &FirmwareStatus, target: &FirmwareTarget) -> Option<Timestamp> {
    let phase = status.phase?;
    if phase.is_terminal() || phase == FirmwarePhase::Current {
        return None;
    }
    let started = status.started_at.as_ref()?.0;
    started.checked_add(SignedDuration::from_secs(i64::from(target.timeout_seconds()))).ok()
}

/// The firmware status the operator wants, at `now`.
pub fn firmware_status(
    target: Option<&FirmwareTarget>,
    previous: Option<&FirmwareStatus>,
    report: &FirmwareReport,
    now: Timestamp,
) -> Option<FirmwareStatus> {
    let block = report.block.as_ref();
    let current =
        block.map(|b| b.current.clone()).or_else(|| previous.and_then(|p| p.current.clone()));
    let Some(target) = target else {
        return current.map(|current| FirmwareStatus {
            phase: Some(FirmwarePhase::Current),
            reason: Some(DeviceReason::FirmwareUpToDate.as_str().to_string()),
            message: Some(format!("The device runs {current}; no spec.firmware is set")),
            current: Some(current),
            ..Default::default()
        });
    };
    let wanted = &target.version;
    let boot = report.boot.and_then(|b| i64::try_from(b).ok());
    let mut status = match previous.filter(|p| p.target.as_ref() == Some(wanted)) {
        Some(previous) => previous.clone(),
        None => {
            // A new target: a new attempt. One still under way for another target ends here.
            let superseded = previous
                .filter(|p| {
                    p.phase.is_some_and(|ph| !ph.is_terminal() && ph != FirmwarePhase::Current)
                })
                .and_then(|p| p.target.clone());
            let mut fresh = FirmwareStatus {
                target: Some(wanted.clone()),
                started_at: Some(Time(now)),
                started_boot: boot,
                ..Default::default()
            };
            let message = match superseded {
                Some(old) => format!(
                    "The update to {old} was superseded; waiting for the device to start on {wanted}"
                ),
                None => format!("Waiting for the device to start the update to {wanted}"),
            };
            set(&mut fresh, FirmwarePhase::Pending, DeviceReason::FirmwareUpdating, message);
            // Running the target, committed, and not in the middle of another update: a device
            // whose last update failed or rolled back (state error or rolledback) runs its
            // committed image all the same, and gets nothing to do from an order for it.
            let settled = |state: FirmwareState| {
                matches!(
                    state,
                    FirmwareState::Idle | FirmwareState::Error | FirmwareState::Rolledback
                )
            };
            if block.is_some_and(|b| &b.current == wanted && b.committed && settled(b.state)) {
                set(
                    &mut fresh,
                    FirmwarePhase::Current,
                    DeviceReason::FirmwareUpToDate,
                    format!("The device already runs {wanted}"),
                );
            }
            fresh
        }
    };
    status.current.clone_from(&current);
    let phase = status.phase.unwrap_or(FirmwarePhase::Pending);

    // Over for this target: never restarted; only drift away from (and back to) it shows.
    if phase.is_terminal() || phase == FirmwarePhase::Current {
        let succeeded = phase == FirmwarePhase::Succeeded
            || status.reason.as_deref() == Some(DeviceReason::FirmwareDrift.as_str());
        if succeeded && let Some(block) = block {
            if &block.current != wanted {
                set(
                    &mut status,
                    FirmwarePhase::Failed,
                    DeviceReason::FirmwareDrift,
                    format!(
                        "The device runs {} although the update to {wanted} succeeded",
                        block.current
                    ),
                );
            } else {
                set(
                    &mut status,
                    FirmwarePhase::Succeeded,
                    DeviceReason::FirmwareUpToDate,
                    format!("The device runs {wanted}, committed after a reboot"),
                );
            }
        }
        return Some(status);
    }
    if deadline(&status, target).is_some_and(|d| now >= d) {
        let message =
            format!("The update to {wanted} did not finish within {}s", target.timeout_seconds());
        finish(&mut status, FirmwarePhase::TimedOut, DeviceReason::FirmwareTimedOut, message, now);
        return Some(status);
    }
    let Some(block) = block else {
        return Some(status);
    };
    let later_boot =
        matches!((boot, status.started_boot), (Some(now_boot), Some(start)) if now_boot > start);
    if &block.current == wanted && block.committed && later_boot {
        status.progress = Some(100);
        let message = format!("The device runs {wanted}, committed after a reboot");
        finish(&mut status, FirmwarePhase::Succeeded, DeviceReason::FirmwareUpToDate, message, now);
        return Some(status);
    }
    if block.target.as_ref() != Some(wanted) {
        // The device has not started on this target yet.
        return Some(status);
    }
    let detail = || {
        let code = block.code.map(|c| format!(" (code {c})")).unwrap_or_default();
        format!("{}{code}", block.message.clone().unwrap_or_default())
    };
    match phase_of(block.state) {
        Some(FirmwarePhase::Failed) => {
            let message = format!("The device failed to update to {wanted}: {}", detail());
            finish(&mut status, FirmwarePhase::Failed, DeviceReason::FirmwareFailed, message, now);
        }
        Some(FirmwarePhase::RolledBack) => {
            let message = format!(
                "The device came back running {} instead of {wanted}: {}",
                block.current,
                detail()
            );
            finish(
                &mut status,
                FirmwarePhase::RolledBack,
                DeviceReason::FirmwareRolledBack,
                message,
                now,
            );
        }
        Some(step) => {
            status.progress = block.progress.map(i32::from);
            let percent = block.progress.map(|p| format!(" ({p}%)")).unwrap_or_default();
            let what = match step {
                FirmwarePhase::Downloading => "downloading",
                FirmwarePhase::Verifying => "verifying",
                FirmwarePhase::Applying => "applying",
                _ => "rebooting into",
            };
            set(
                &mut status,
                step,
                DeviceReason::FirmwareUpdating,
                format!("The device is {what} {wanted}{percent}"),
            );
        }
        None if later_boot && &block.current != wanted => {
            let message =
                format!("The device came back running {} instead of {wanted}", block.current);
            finish(
                &mut status,
                FirmwarePhase::RolledBack,
                DeviceReason::FirmwareRolledBack,
                message,
                now,
            );
        }
        None => {}
    }
    Some(status)
}

/// Shows that the order for the target waits for room in a disruption budget (`why`): the
/// phase stays Pending; the order is not sent to the device yet.
pub fn held_back(status: &mut FirmwareStatus, why: &str) {
    let wanted = status.target.clone().unwrap_or_default();
    set(
        status,
        FirmwarePhase::Pending,
        DeviceReason::DisruptionBudgetExhausted,
        format!("{why}; the update to {wanted} is held back until it has room"),
    );
}

/// Shows that an order held back until now goes to the device: Pending, waiting for the device
/// to start (the time held back counts towards the update's timeout).
pub fn released(status: &mut FirmwareStatus) {
    if status.phase == Some(FirmwarePhase::Pending)
        && status.reason.as_deref() == Some(DeviceReason::DisruptionBudgetExhausted.as_str())
    {
        let wanted = status.target.clone().unwrap_or_default();
        let message = format!("Waiting for the device to start the update to {wanted}");
        set(status, FirmwarePhase::Pending, DeviceReason::FirmwareUpdating, message);
    }
}

/// The `FirmwareCurrent` condition for `status`.
pub fn firmware_condition(status: Option<&FirmwareStatus>) -> ConditionUpdate {
    use ConditionStatus::{False, True};
    let (state, reason, message) = match status {
        None => (True, DeviceReason::FirmwareUpToDate, "No spec.firmware is set".to_string()),
        Some(status) => {
            let message = status.message.clone().unwrap_or_default();
            match (status.phase, status.reason.as_deref()) {
                (_, Some(r)) if r == DeviceReason::FirmwareDrift.as_str() => {
                    (False, DeviceReason::FirmwareDrift, message)
                }
                (Some(FirmwarePhase::Pending), Some(r))
                    if r == DeviceReason::DisruptionBudgetExhausted.as_str() =>
                {
                    (False, DeviceReason::DisruptionBudgetExhausted, message)
                }
                (Some(FirmwarePhase::Current | FirmwarePhase::Succeeded), _) => {
                    (True, DeviceReason::FirmwareUpToDate, message)
                }
                (Some(FirmwarePhase::Failed), _) => (False, DeviceReason::FirmwareFailed, message),
                (Some(FirmwarePhase::RolledBack), _) => {
                    (False, DeviceReason::FirmwareRolledBack, message)
                }
                (Some(FirmwarePhase::TimedOut), _) => {
                    (False, DeviceReason::FirmwareTimedOut, message)
                }
                _ => (False, DeviceReason::FirmwareUpdating, message),
            }
        }
    };
    ConditionUpdate {
        type_: DeviceCondition::FirmwareCurrent.as_str(),
        status: state,
        reason: reason.as_str(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + offset).expect("valid")
    }

    fn target(version: &str) -> FirmwareTarget {
        FirmwareTarget {
            version: version.into(),
            url: "http://files/fw.bin".into(),
            sha256: "a".repeat(64),
            size_bytes: None,
            timeout_seconds: Some(600),
        }
    }

    fn report(
        current: &str,
        target: Option<&str>,
        state: FirmwareState,
        committed: bool,
        boot: u64,
    ) -> FirmwareReport {
        FirmwareReport {
            block: Some(ReportedFirmware {
                current: current.into(),
                target: target.map(Into::into),
                state,
                progress: (state == FirmwareState::Downloading).then_some(40),
                code: (state == FirmwareState::Error).then_some(400),
                message: (state == FirmwareState::Error).then(|| "checksum mismatch".into()),
                committed,
            }),
            boot: Some(boot),
        }
    }

    fn phase(status: &Option<FirmwareStatus>) -> Option<FirmwarePhase> {
        status.as_ref().and_then(|s| s.phase)
    }

    #[test]
    fn a_held_back_order_says_so_until_it_is_released_and_keeps_its_deadline() {
        let t = target("1.1.0");
        let idle = report("1.0.0", None, FirmwareState::Idle, true, 3);
        let mut status = firmware_status(Some(&t), None, &idle, at(0)).expect("a status");
        held_back(
            &mut status,
            "DeviceDisruptionBudget roof has no room: 1 of 2 devices unavailable",
        );
        assert_eq!(status.phase, Some(FirmwarePhase::Pending));
        assert_eq!(status.reason.as_deref(), Some("DisruptionBudgetExhausted"));
        let condition = firmware_condition(Some(&status));
        assert_eq!(condition.reason, DeviceReason::DisruptionBudgetExhausted.as_str());
        // Still held back later: the previous status is kept as it is.
        let later = firmware_status(Some(&t), Some(&status), &idle, at(30)).expect("a status");
        assert_eq!(later.reason.as_deref(), Some("DisruptionBudgetExhausted"));
        let mut sent = later.clone();
        released(&mut sent);
        assert_eq!(sent.phase, Some(FirmwarePhase::Pending));
        assert_eq!(sent.reason.as_deref(), Some("FirmwareUpdating"));
        assert_eq!(sent.started_at, status.started_at, "the wait counts towards the timeout");
        // Releasing touches nothing but a held-back order.
        let mut downloading = firmware_status(
            Some(&t),
            Some(&sent),
            &report("1.0.0", Some("1.1.0"), FirmwareState::Downloading, true, 3),
            at(40),
        )
        .expect("a status");
        let before = downloading.clone();
        released(&mut downloading);
        assert_eq!(downloading, before);
    }

    #[test]
    fn an_update_goes_through_every_phase_and_succeeds_only_after_a_committed_later_boot() {
        let t = target("1.1.0");
        let idle = report("1.0.0", None, FirmwareState::Idle, true, 3);
        let pending = firmware_status(Some(&t), None, &idle, at(0));
        assert_eq!(phase(&pending), Some(FirmwarePhase::Pending));
        assert_eq!(pending.as_ref().and_then(|s| s.started_boot), Some(3));
        let mut status = pending;
        let table = [
            (
                report("1.0.0", Some("1.1.0"), FirmwareState::Downloading, true, 3),
                FirmwarePhase::Downloading,
            ),
            (
                report("1.0.0", Some("1.1.0"), FirmwareState::Verifying, true, 3),
                FirmwarePhase::Verifying,
            ),
            (
                report("1.0.0", Some("1.1.0"), FirmwareState::Applying, true, 3),
                FirmwarePhase::Applying,
            ),
            (
                report("1.0.0", Some("1.1.0"), FirmwareState::Rebooting, true, 3),
                FirmwarePhase::Rebooting,
            ),
            // Running the target on the same boot is no evidence, nor is an uncommitted image.
            (
                report("1.1.0", Some("1.1.0"), FirmwareState::Idle, true, 3),
                FirmwarePhase::Rebooting,
            ),
            (
                report("1.1.0", Some("1.1.0"), FirmwareState::Idle, false, 4),
                FirmwarePhase::Rebooting,
            ),
            (
                report("1.1.0", Some("1.1.0"), FirmwareState::Idle, true, 4),
                FirmwarePhase::Succeeded,
            ),
        ];
        for (i, (r, expected)) in table.into_iter().enumerate() {
            status = firmware_status(Some(&t), status.as_ref(), &r, at(10 + i as i64));
            assert_eq!(phase(&status), Some(expected), "step {i}");
        }
        let done = status.clone().expect("status");
        assert_eq!(done.current.as_deref(), Some("1.1.0"));
        assert_eq!(done.finished_at, Some(Time(at(16))));
        assert_eq!(firmware_condition(Some(&done)).status, ConditionStatus::True);
        // Re-applying the same target never restarts it.
        let again = firmware_status(
            Some(&t),
            Some(&done),
            &report("1.1.0", None, FirmwareState::Idle, true, 4),
            at(100),
        );
        let again = again.expect("status");
        assert_eq!(
            (again.phase, &again.started_at, &again.finished_at),
            (done.phase, &done.started_at, &done.finished_at),
            "nothing restarted"
        );
    }

    #[test]
    fn a_target_the_device_runs_after_a_failed_or_rolled_back_update_is_current_at_once() {
        for state in [FirmwareState::Idle, FirmwareState::Error, FirmwareState::Rolledback] {
            let status = firmware_status(
                Some(&target("1.0.0")),
                None,
                &report("1.0.0", Some("2.0.0"), state, true, 4),
                at(0),
            );
            assert_eq!(phase(&status), Some(FirmwarePhase::Current), "{state:?}");
        }
        let busy = firmware_status(
            Some(&target("1.0.0")),
            None,
            &report("1.0.0", Some("2.0.0"), FirmwareState::Downloading, true, 4),
            at(0),
        );
        assert_eq!(phase(&busy), Some(FirmwarePhase::Pending), "another update is under way");
    }

    #[test]
    fn failures_rollbacks_timeouts_drift_and_supersession_are_told_apart() {
        let t = target("1.1.0");
        let start = firmware_status(
            Some(&t),
            None,
            &report("1.0.0", None, FirmwareState::Idle, true, 3),
            at(0),
        );
        let failed = firmware_status(
            Some(&t),
            start.as_ref(),
            &report("1.0.0", Some("1.1.0"), FirmwareState::Error, true, 3),
            at(5),
        );
        assert_eq!(phase(&failed), Some(FirmwarePhase::Failed));
        assert_eq!(
            failed.as_ref().and_then(|s| s.message.clone()).as_deref(),
            Some("The device failed to update to 1.1.0: checksum mismatch (code 400)")
        );
        let rolled = firmware_status(
            Some(&t),
            start.as_ref(),
            &report("1.0.0", Some("1.1.0"), FirmwareState::Rolledback, true, 4),
            at(5),
        );
        assert_eq!(phase(&rolled), Some(FirmwarePhase::RolledBack));
        let back_on_old = firmware_status(
            Some(&t),
            start.as_ref(),
            &report("1.0.0", Some("1.1.0"), FirmwareState::Idle, true, 4),
            at(5),
        );
        assert_eq!(
            phase(&back_on_old),
            Some(FirmwarePhase::RolledBack),
            "came back on the old image"
        );
        let stuck = report("1.0.0", Some("1.1.0"), FirmwareState::Downloading, true, 3);
        let before = firmware_status(Some(&t), start.as_ref(), &stuck, at(599));
        assert_eq!(phase(&before), Some(FirmwarePhase::Downloading));
        assert_eq!(before.as_ref().and_then(|s| deadline(s, &t)), Some(at(600)));
        let late = firmware_status(Some(&t), before.as_ref(), &stuck, at(600));
        assert_eq!(phase(&late), Some(FirmwarePhase::TimedOut));
        assert_eq!(firmware_condition(late.as_ref()).reason, "FirmwareTimedOut");

        // A new target mid-update: a new attempt, which says what it replaced.
        let newer = firmware_status(Some(&target("1.2.0")), before.as_ref(), &stuck, at(50));
        let newer = newer.expect("status");
        assert_eq!(
            (newer.phase, newer.target.as_deref()),
            (Some(FirmwarePhase::Pending), Some("1.2.0"))
        );
        assert_eq!(newer.started_at, Some(Time(at(50))));
        assert!(
            newer
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("The update to 1.1.0 was superseded"))
        );

        // After success, a device that reports another version shows drift, and back again.
        let done = firmware_status(
            Some(&t),
            start.as_ref(),
            &report("1.1.0", Some("1.1.0"), FirmwareState::Idle, true, 4),
            at(9),
        );
        let drift = firmware_status(
            Some(&t),
            done.as_ref(),
            &report("1.0.0", None, FirmwareState::Idle, true, 5),
            at(20),
        );
        assert_eq!(phase(&drift), Some(FirmwarePhase::Failed));
        assert_eq!(firmware_condition(drift.as_ref()).reason, "FirmwareDrift");
        let healed = firmware_status(
            Some(&t),
            drift.as_ref(),
            &report("1.1.0", None, FirmwareState::Idle, true, 6),
            at(30),
        );
        assert_eq!(phase(&healed), Some(FirmwarePhase::Succeeded));
    }

    #[test]
    fn without_a_target_the_reported_version_is_current_and_a_target_already_running_needs_nothing()
    {
        let none = firmware_status(
            None,
            None,
            &report("1.0.0", None, FirmwareState::Idle, true, 2),
            at(0),
        );
        assert_eq!(phase(&none), Some(FirmwarePhase::Current));
        assert_eq!(firmware_condition(none.as_ref()).status, ConditionStatus::True);
        assert_eq!(firmware_status(None, None, &FirmwareReport::default(), at(0)), None);
        let same = firmware_status(
            Some(&target("1.0.0")),
            None,
            &report("1.0.0", None, FirmwareState::Idle, true, 2),
            at(0),
        );
        assert_eq!(phase(&same), Some(FirmwarePhase::Current));
    }
}
