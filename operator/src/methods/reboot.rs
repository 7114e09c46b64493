//! `reboot`, as a method kind, and the `RebootRequest` resource that runs it.

use std::{borrow::Cow, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubetwin_api::{RebootPhase, RebootRequest, RebootRequestStatus};
use kubetwin_protocol::{REBOOT_METHOD, RebootParams};
use serde_json::{Map, Value};

use super::{
    engine::{Phase, Progress},
    kind::{Confirmation, MethodKind, Wording},
    resource::{RequestResource, Timeouts, boot_from_api, boot_to_api, seconds},
};
use crate::error::Error;

/// The `reboot` method: the device restarts; success is its return with a higher boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reboot {
    /// Wait on the device between accepting and going down.
    pub delay: Duration,
}

impl MethodKind for Reboot {
    fn method(&self) -> &str {
        REBOOT_METHOD
    }

    fn disruptive(&self) -> bool {
        true
    }

    fn metric_label(&self) -> &'static str {
        REBOOT_METHOD
    }

    fn params(&self) -> Map<String, Value> {
        let delay_seconds = u32::try_from(self.delay.as_secs()).unwrap_or(u32::MAX);
        RebootParams { delay_seconds }.to_params()
    }

    fn confirmation(&self) -> Confirmation {
        Confirmation::Restart { extra_away: self.delay }
    }

    fn wording(&self) -> Wording {
        Wording {
            request: Cow::Borrowed("Reboot request"),
            noun: Cow::Borrowed("the reboot"),
            verb: Cow::Borrowed("reboot"),
            done: Cow::Borrowed("rebooted and is back online"),
            away: Cow::Borrowed("is rebooting"),
            event_prefix: Cow::Borrowed("Reboot"),
        }
    }
}

fn phase_of(phase: RebootPhase) -> Phase {
    match phase {
        RebootPhase::Pending => Phase::Pending,
        RebootPhase::Sent => Phase::Sent,
        RebootPhase::Accepted => Phase::Accepted,
        RebootPhase::Rebooting => Phase::Rebooting,
        RebootPhase::Succeeded => Phase::Succeeded,
        RebootPhase::Failed => Phase::Failed,
        RebootPhase::TimedOut => Phase::TimedOut,
        RebootPhase::Rejected => Phase::Rejected,
    }
}

fn reboot_phase(phase: Phase) -> RebootPhase {
    match phase {
        Phase::Pending => RebootPhase::Pending,
        Phase::Sent => RebootPhase::Sent,
        // A reboot has no InProgress phase of its own: the device is executing what it
        // accepted.
        Phase::Accepted | Phase::InProgress => RebootPhase::Accepted,
        Phase::Rebooting => RebootPhase::Rebooting,
        Phase::Succeeded => RebootPhase::Succeeded,
        Phase::Failed => RebootPhase::Failed,
        Phase::TimedOut => RebootPhase::TimedOut,
        Phase::Rejected => RebootPhase::Rejected,
    }
}

impl RequestResource for RebootRequest {
    type Status = RebootRequestStatus;
    type Kind = Reboot;

    fn device_name(&self) -> &str {
        &self.spec.device_name
    }

    fn method_kind(&self) -> Reboot {
        Reboot { delay: seconds(self.spec.delay_seconds) }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            response: seconds(self.spec.response_timeout_seconds),
            connect: seconds(self.spec.connect_timeout_seconds),
            ttl_after_finished: self.spec.ttl_seconds_after_finished.map(seconds),
        }
    }

    fn current_status(&self) -> Option<&RebootRequestStatus> {
        self.status.as_ref()
    }

    fn progress_of(status: Option<&RebootRequestStatus>) -> Result<Progress, Error> {
        let Some(status) = status else {
            return Ok(Progress::default());
        };
        Ok(Progress {
            observed_generation: status.observed_generation,
            phase: status.phase.map(phase_of),
            request_id: status.request_id.clone(),
            sent_at: status.sent_at.as_ref().map(|t| t.0),
            accepted_at: status.accepted_at.as_ref().map(|t| t.0),
            completed_at: status.completed_at.as_ref().map(|t| t.0),
            duration: status.duration.clone(),
            boot_before: boot_from_api(status.boot_before)?,
            boot_after: boot_from_api(status.boot_after)?,
            response: status.response.clone(),
            percent: None,
            progress_message: None,
            payload: None,
            payload_truncated: false,
            reason: status.reason.clone(),
            message: status.message.clone(),
            conditions: status.conditions.clone(),
        })
    }

    fn status_of(progress: &Progress) -> Result<RebootRequestStatus, Error> {
        Ok(RebootRequestStatus {
            observed_generation: progress.observed_generation,
            phase: progress.phase.map(reboot_phase),
            request_id: progress.request_id.clone(),
            sent_at: progress.sent_at.map(Time),
            accepted_at: progress.accepted_at.map(Time),
            completed_at: progress.completed_at.map(Time),
            duration: progress.duration.clone(),
            boot_before: boot_to_api(progress.boot_before)?,
            boot_after: boot_to_api(progress.boot_after)?,
            response: progress.response.clone(),
            reason: progress.reason.clone(),
            message: progress.message.clone(),
            conditions: progress.conditions.clone(),
        })
    }
}
