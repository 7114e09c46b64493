//! A job's children (no I/O): their deterministic names, the MethodRequest each attempt
//! creates, and what a child's status means to the planner.

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use kube::Resource;
use kubetwin_api::{
    DeviceJob, MethodPhase, MethodRequest, MethodRequestSpec,
    condition::RequestReason,
    job::{ATTEMPT_LABEL, DEVICE_LABEL, JOB_LABEL, OfflinePolicy},
};

use crate::rollout::planner::{Attempt, Failure};

/// Longest object name the API accepts.
const MAX_NAME: usize = 253;

/// The name of the child for `device`'s attempt `attempt` (0 first): `<job>-<device>`, then
/// `<job>-<device>-retry<N>`. Deterministic, so a restarted operator finds the child it
/// created instead of creating a second one. Too long a name is cut and ends in a hash of
/// the whole.
pub fn child_name(job: &str, device: &str, attempt: u32) -> String {
    let name = if attempt == 0 {
        format!("{job}-{device}")
    } else {
        format!("{job}-{device}-retry{attempt}")
    };
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = name[..MAX_NAME - hash.len() - 1].to_string();
    // A name must end in an alphanumeric character.
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{cut}-{hash}")
}

/// The MethodRequest for `device`'s attempt `attempt` of `job`, owned by the job.
pub fn child_request(job: &DeviceJob, device: &str, attempt: u32) -> Option<MethodRequest> {
    let job_name = job.metadata.name.as_deref()?;
    let owner = OwnerReference {
        api_version: DeviceJob::api_version(&()).into_owned(),
        kind: DeviceJob::kind(&()).into_owned(),
        name: job_name.to_string(),
        uid: job.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let spec = &job.spec;
    let connect_timeout_seconds = match spec.offline_devices {
        OfflinePolicy::Wait => spec.connect_timeout_seconds,
        OfflinePolicy::Skip => 0,
    };
    Some(MethodRequest {
        metadata: ObjectMeta {
            name: Some(child_name(job_name, device, attempt)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (JOB_LABEL.to_string(), job_name.to_string()),
                (DEVICE_LABEL.to_string(), device.to_string()),
                (ATTEMPT_LABEL.to_string(), attempt.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: MethodRequestSpec {
            device_name: device.to_string(),
            method: spec.method.clone(),
            params: spec.params.clone(),
            disruptive: spec.disruptive,
            response_timeout_seconds: spec.response_timeout_seconds,
            connect_timeout_seconds,
            execution_timeout_seconds: spec.execution_timeout_seconds,
            ttl_seconds_after_finished: None,
        },
        status: None,
    })
}

/// The device and attempt a child of `job` (by uid) is for; `None` for any other object.
pub fn child_of(request: &MethodRequest, job_uid: &str) -> Option<(String, u32)> {
    let owned = request
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == job_uid && o.controller == Some(true));
    if !owned {
        return None;
    }
    let labels = request.metadata.labels.as_ref()?;
    let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
    Some((labels.get(DEVICE_LABEL)?.clone(), attempt))
}

/// What a child's status means to the planner. With `skip_offline`, a child that failed
/// because its device was offline was a skip: nothing was sent.
pub fn attempt_of(request: &MethodRequest, skip_offline: bool, now: Timestamp) -> Attempt {
    let Some(status) = &request.status else { return Attempt::InFlight };
    let at = status.completed_at.as_ref().map_or(now, |t| t.0);
    let failure = |failure| Attempt::Failed { failure, at };
    match status.phase {
        None
        | Some(
            MethodPhase::Pending
            | MethodPhase::Sent
            | MethodPhase::Accepted
            | MethodPhase::InProgress
            | MethodPhase::Rebooting,
        ) => Attempt::InFlight,
        Some(MethodPhase::Succeeded) => Attempt::Succeeded,
        Some(MethodPhase::Failed)
            if skip_offline
                && status.reason.as_deref() == Some(RequestReason::DeviceNotOnline.as_str()) =>
        {
            Attempt::Skipped
        }
        Some(MethodPhase::Failed) => failure(Failure::Failed),
        Some(MethodPhase::TimedOut) => failure(Failure::TimedOut),
        Some(MethodPhase::Rejected) => failure(Failure::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::MethodRequestStatus;
    use serde_json::json;

    use super::*;

    fn job(offline: &str) -> DeviceJob {
        serde_json::from_value(json!({
            "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceJob",
            "metadata": {"name": "reboot-line-a", "namespace": "ns", "uid": "job-uid"},
            "spec": {"selector": {"matchLabels": {"line": "a"}}, "method": "reboot",
                "params": {"delaySeconds": 1}, "offlineDevices": offline},
        }))
        .expect("job")
    }

    #[test]
    fn names_are_deterministic_and_valid_even_when_long() {
        assert_eq!(child_name("job", "sensor-1", 0), "job-sensor-1");
        assert_eq!(child_name("job", "sensor-1", 2), "job-sensor-1-retry2");
        let long = child_name(&"j".repeat(200), &"d".repeat(200), 0);
        assert_eq!(long.len(), MAX_NAME);
        assert_eq!(long, child_name(&"j".repeat(200), &"d".repeat(200), 0));
        assert_ne!(long, child_name(&"j".repeat(200), &"d".repeat(200), 1));
    }

    #[test]
    fn a_child_carries_the_job_action_labels_and_owner() {
        let child = child_request(&job("Wait"), "sensor-1", 1).expect("child");
        assert_eq!(child.metadata.name.as_deref(), Some("reboot-line-a-sensor-1-retry1"));
        assert_eq!(child.spec.method, "reboot");
        assert_eq!(
            child.spec.params,
            Some(serde_json::from_value(json!({"delaySeconds": 1})).expect("map"))
        );
        assert_eq!(child.spec.connect_timeout_seconds, 300);
        assert_eq!(child_of(&child, "job-uid"), Some(("sensor-1".into(), 1)));
        assert_eq!(child_of(&child, "another-job"), None, "owned by uid, not by name");
        let skipping = child_request(&job("Skip"), "sensor-1", 0).expect("child");
        assert_eq!(
            skipping.spec.connect_timeout_seconds, 0,
            "Skip: an offline device fails at once"
        );
    }

    #[test]
    fn child_phases_map_to_attempts() {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let with = |phase, reason: &str| {
            let mut child = child_request(&job("Skip"), "d", 0).expect("child");
            child.status = Some(MethodRequestStatus {
                phase: Some(phase),
                reason: Some(reason.into()),
                ..Default::default()
            });
            child
        };
        let table = [
            (MethodPhase::Pending, "DisruptionBudgetExhausted", true, Attempt::InFlight),
            (MethodPhase::Rebooting, "Rebooting", true, Attempt::InFlight),
            (MethodPhase::Succeeded, "Rebooted", true, Attempt::Succeeded),
            (MethodPhase::Failed, "DeviceNotOnline", true, Attempt::Skipped),
            (
                MethodPhase::Failed,
                "DeviceNotOnline",
                false,
                Attempt::Failed { failure: Failure::Failed, at: now },
            ),
            (
                MethodPhase::Rejected,
                "DeviceRejected",
                true,
                Attempt::Failed { failure: Failure::Rejected, at: now },
            ),
            (
                MethodPhase::TimedOut,
                "NoResponse",
                true,
                Attempt::Failed { failure: Failure::TimedOut, at: now },
            ),
        ];
        for (phase, reason, skip, attempt) in table {
            assert_eq!(attempt_of(&with(phase, reason), skip, now), attempt, "{phase:?} {reason}");
        }
        assert_eq!(
            attempt_of(&child_request(&job("Wait"), "d", 0).expect("child"), false, now),
            Attempt::InFlight
        );
    }
}
