//! A job's spec as a planner strategy, and the planner's decision as the job's status (no
//! I/O).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kubetwin_api::{
    DeviceJobSpec, DeviceJobStatus, JobPhase,
    condition::{ConditionStatus, JobCondition, JobReason},
    job::{FailedDevice, FailureType, JobCounts, JobPlan, MAX_LISTED_FAILURES},
};
use kubetwin_protocol::{FACTORY_RESET_METHOD, REBOOT_METHOD};

use crate::{
    k8s::conditions::{ConditionUpdate, merge, with_one_reason},
    rollout::planner::{
        AbortCriterion, Attempt, Decision, Failure, FailureFilter, Member, RetryPolicy, Stage,
        Strategy,
    },
};

fn filter(failure: FailureType) -> FailureFilter {
    match failure {
        FailureType::Failed => FailureFilter::Only(Failure::Failed),
        FailureType::Rejected => FailureFilter::Only(Failure::Rejected),
        FailureType::TimedOut => FailureFilter::Only(Failure::TimedOut),
        FailureType::Any => FailureFilter::Any,
    }
}

pub(crate) fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// Whether the job's method takes devices out of service.
pub fn disruptive(spec: &DeviceJobSpec) -> bool {
    spec.disruptive || spec.method == REBOOT_METHOD || spec.method == FACTORY_RESET_METHOD
}

/// The planner strategy of a job spec (admission validated every size).
pub fn strategy_of(spec: &DeviceJobSpec) -> Strategy {
    Strategy {
        abort: spec
            .abort
            .iter()
            .map(|c| AbortCriterion {
                filter: filter(c.failure_type),
                min_executed: unsigned(c.min_executed),
                threshold_percent: unsigned(c.threshold_percent),
            })
            .collect(),
        retry: RetryPolicy {
            limit: unsigned(spec.retry.limit),
            on: spec.retry.on_failures.iter().copied().map(filter).collect(),
            backoff: Duration::from_secs(u64::from(unsigned(spec.retry.backoff_seconds))),
        },
        disruptive: disruptive(spec),
        suspended: spec.suspend,
        ..crate::rollout::strategy_of(&spec.rollout, spec.continue_after_wave)
    }
}

/// The API phase of a planner stage.
pub fn phase_of(stage: Stage) -> JobPhase {
    match stage {
        Stage::Suspended => JobPhase::Suspended,
        Stage::Running => JobPhase::Running,
        Stage::Paused => JobPhase::Paused,
        Stage::Succeeded => JobPhase::Succeeded,
        Stage::Failed => JobPhase::Failed,
        Stage::Aborted => JobPhase::Aborted,
    }
}

/// What the job status needs besides the decision.
pub struct JobFacts<'a> {
    /// The job's generation.
    pub generation: Option<i64>,
    /// The newest status (ours, or the cache's).
    pub current: Option<&'a DeviceJobStatus>,
    /// When the job started (first left Suspended), if it did.
    pub start_time: Option<Timestamp>,
    /// The members, in order.
    pub members: &'a [Member],
    /// The reason of each member's latest child (for failed devices).
    pub reasons: &'a [Option<String>],
    /// The job is being deleted.
    pub deleting: bool,
    /// Now.
    pub now: Timestamp,
}

use crate::rollout::api_count as count;

/// The status that shows `decision`.
pub fn status_of(decision: &Decision, facts: &JobFacts<'_>) -> DeviceJobStatus {
    let counts = &decision.counts;
    let phase = phase_of(decision.stage);
    let completion_time = if phase.is_terminal() {
        facts.current.and_then(|s| s.completion_time.clone()).or(Some(Time(facts.now)))
    } else {
        None
    };
    let (reason, message) = reason_of(decision, facts);
    let failed_devices: Vec<FailedDevice> = facts
        .members
        .iter()
        .zip(facts.reasons)
        .filter_map(|(member, reason)| match member.latest {
            Attempt::Failed { failure, .. } => Some(FailedDevice {
                device: member.name.clone(),
                phase: match failure {
                    Failure::Failed => "Failed",
                    Failure::Rejected => "Rejected",
                    Failure::TimedOut => "TimedOut",
                }
                .to_string(),
                reason: reason.clone().unwrap_or_default(),
                attempts: count(member.attempts),
            }),
            _ => None,
        })
        .take(MAX_LISTED_FAILURES)
        .collect();
    // The plan shows what the job does; it is refreshed while suspended and kept as it was
    // once the job started (offline counts change with every reboot, and rewriting them
    // each second would cost writes for nothing).
    let plan =
        if phase == JobPhase::Suspended || facts.current.and_then(|s| s.plan.as_ref()).is_none() {
            let preview = &decision.preview;
            Some(JobPlan {
                targeted: count(preview.targeted),
                offline: count(preview.offline),
                not_supporting: count(preview.not_supporting),
                budget_blocked: count(preview.budget_blocked),
                wave_sizes: preview.wave_sizes.iter().copied().map(count).collect(),
                max_in_flight: count(preview.max_in_flight),
                sample: preview
                    .sample
                    .iter()
                    .filter_map(|i| facts.members.get(*i))
                    .map(|m| m.name.clone())
                    .collect(),
            })
        } else {
            facts.current.and_then(|s| s.plan.clone())
        };
    let conditions = merge(
        facts.current.map(|s| s.conditions.as_slice()).unwrap_or_default(),
        conditions_for(phase, reason, &message),
        facts.generation,
        facts.now,
    );
    DeviceJobStatus {
        observed_generation: facts.generation,
        phase: Some(phase),
        progress: Some(format!("{}/{}", counts.finished(), counts.targeted)),
        start_time: facts.start_time.map(Time),
        completion_time,
        counts: JobCounts {
            targeted: count(counts.targeted),
            pending: count(counts.pending),
            in_flight: count(counts.in_flight),
            succeeded: count(counts.succeeded),
            failed: count(counts.failed),
            timed_out: count(counts.timed_out),
            rejected: count(counts.rejected),
            skipped: count(counts.skipped),
            retried: count(counts.retried),
        },
        current_wave: decision.current_wave.map(count),
        waves: crate::rollout::wave_statuses(decision),
        failed_devices,
        plan,
        reason: Some(reason.as_str().to_string()),
        message: Some(message),
        conditions,
    }
}

fn reason_of(decision: &Decision, facts: &JobFacts<'_>) -> (JobReason, String) {
    let c = &decision.counts;
    let failures = c.failed + c.timed_out + c.rejected;
    match decision.stage {
        Stage::Suspended => (
            JobReason::Suspended,
            format!(
                "Suspended: {} device(s) targeted; set spec.suspend to false to start (status.plan shows what runs)",
                c.targeted
            ),
        ),
        Stage::Running if facts.deleting => (
            JobReason::Deleting,
            format!(
                "Being deleted: nothing more starts; waiting for {} request(s) in flight",
                c.in_flight
            ),
        ),
        Stage::Running => {
            let blocked = if decision.budget_blocked > 0 {
                format!("; {} held back by a disruption budget", decision.budget_blocked)
            } else {
                String::new()
            };
            (
                JobReason::Running,
                format!(
                    "Wave {}: {} in flight, {} of {} finished{blocked}",
                    decision.current_wave.unwrap_or(1),
                    c.in_flight,
                    c.finished(),
                    c.targeted
                ),
            )
        }
        Stage::Paused => {
            let wave = decision.current_wave.unwrap_or(1);
            (
                JobReason::WavePaused,
                format!("Wave {wave} finished; set spec.continueAfterWave to {wave} to go on"),
            )
        }
        Stage::Succeeded if c.targeted == 0 => {
            (JobReason::NoDevices, "The selector picked no Device: nothing to do".to_string())
        }
        Stage::Succeeded => (
            JobReason::AllSucceeded,
            format!("{} device(s) succeeded, {} skipped", c.succeeded, c.skipped),
        ),
        Stage::Failed => (
            JobReason::SomeFailed,
            format!(
                "{} device(s) succeeded, {failures} failed, {} skipped",
                c.succeeded, c.skipped
            ),
        ),
        Stage::Aborted => (
            JobReason::AbortCriteriaMet,
            format!(
                "Aborted after {} finished ({failures} failed): nothing more starts; {} in flight finish",
                c.finished(),
                c.in_flight
            ),
        ),
    }
}

fn conditions_for(phase: JobPhase, reason: JobReason, message: &str) -> Vec<ConditionUpdate> {
    use ConditionStatus::{False, True};
    let complete = if phase.is_terminal() { True } else { False };
    let failed = if matches!(phase, JobPhase::Failed | JobPhase::Aborted) { True } else { False };
    let suspended = if phase == JobPhase::Suspended { True } else { False };
    let progressing =
        if matches!(phase, JobPhase::Running | JobPhase::Paused) { True } else { False };
    with_one_reason(
        [
            (JobCondition::Complete.as_str(), complete),
            (JobCondition::Failed.as_str(), failed),
            (JobCondition::Suspended.as_str(), suspended),
            (JobCondition::Progressing.as_str(), progressing),
        ],
        reason.as_str(),
        message,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rollout::planner::{Observed, Readiness, Room, Size, WaveSpec, plan};

    fn spec(extra: serde_json::Value) -> DeviceJobSpec {
        let mut base = json!({"selector": {}, "method": "reboot"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn a_spec_becomes_the_strategy_the_planner_runs() {
        let s = strategy_of(&spec(json!({
            "rollout": {"maxInFlight": "10%", "maxPerMinute": 120,
                "waves": [{"size": "1%", "pauseAfter": true}, {"size": 50}]},
            "abort": [{"failureType": "Rejected", "minExecuted": 10, "thresholdPercent": 30}],
            "retry": {"limit": 2},
            "continueAfterWave": 1,
        })));
        assert_eq!(s.max_in_flight, Size::Percent(10));
        assert_eq!(s.max_per_minute, Some(120));
        assert_eq!(s.waves[0], WaveSpec { size: Size::Percent(1), pause_after: true });
        assert_eq!(s.waves[1].size, Size::Count(50));
        assert_eq!(s.abort[0].filter, FailureFilter::Only(Failure::Rejected));
        assert_eq!(
            (s.retry.limit, s.retry.on.clone(), s.retry.backoff),
            (
                2,
                vec![FailureFilter::Only(Failure::Failed), FailureFilter::Only(Failure::TimedOut)],
                Duration::from_secs(10)
            )
        );
        assert!(s.disruptive, "reboot is disruptive");
        assert_eq!(s.continue_after_wave, 1);
        let gentle = strategy_of(&spec(json!({"method": "setLed"})));
        assert!(!gentle.disruptive);
        assert_eq!(gentle.max_in_flight, Size::Count(crate::rollout::DEFAULT_MAX_IN_FLIGHT));
    }

    #[test]
    fn status_counts_progress_and_conditions_follow_the_decision() {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let members: Vec<Member> = ["a", "b", "c", "d"]
            .iter()
            .zip([
                Attempt::Succeeded,
                Attempt::Failed { failure: Failure::Rejected, at: now },
                Attempt::InFlight,
                Attempt::None,
            ])
            .map(|(name, latest)| Member {
                name: (*name).into(),
                attempts: u32::from(latest != Attempt::None),
                latest,
                readiness: Readiness::Ready,
                groups: Vec::new(),
            })
            .collect();
        let strategy = strategy_of(&spec(json!({"rollout": {"maxInFlight": 1}})));
        let observed = Observed { started_last_minute: 0, aborted: false, deleting: false };
        let decision = plan(&members, &strategy, &Room::default(), observed, now);
        let reasons = vec![None, Some("DeviceRejected".to_string()), None, None];
        let facts = JobFacts {
            generation: Some(1),
            current: None,
            start_time: Some(now),
            members: &members,
            reasons: &reasons,
            deleting: false,
            now,
        };
        let status = status_of(&decision, &facts);
        assert_eq!(status.phase, Some(JobPhase::Running));
        assert_eq!(status.progress.as_deref(), Some("2/4"));
        assert_eq!(
            (
                status.counts.succeeded,
                status.counts.rejected,
                status.counts.in_flight,
                status.counts.pending
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            status.failed_devices,
            vec![FailedDevice {
                device: "b".into(),
                phase: "Rejected".into(),
                reason: "DeviceRejected".into(),
                attempts: 1
            }]
        );
        assert_eq!(status.message.as_deref(), Some("Wave 1: 1 in flight, 2 of 4 finished"));
        let progressing =
            status.conditions.iter().find(|c| c.type_ == "Progressing").expect("Progressing");
        assert_eq!(progressing.status, "True");
        let plan = status.plan.expect("plan");
        assert_eq!((plan.targeted, plan.wave_sizes, plan.sample.len()), (4, vec![4], 4));
    }
}
