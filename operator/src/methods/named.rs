//! Any named method, as a method kind, and the `MethodRequest` resource that runs it.
//! `reboot` and `factoryReset` restart the device (success: back with a higher boot); every
//! other method succeeds on the device's final answer.

use std::{borrow::Cow, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubetwin_api::{
    MethodPhase, MethodProgress, MethodRequest, MethodRequestStatus, MethodResult,
    condition::RequestReason, method::MAX_PARAMS_BYTES,
};
use kubetwin_protocol::{FACTORY_RESET_METHOD, REBOOT_METHOD, RebootParams};
use serde_json::{Map, Value};

use super::{
    engine::{Phase, Progress},
    kind::{Confirmation, MethodKind, Refusal, Wording},
    resource::{RequestResource, Timeouts, boot_from_api, boot_to_api, seconds},
};
use crate::error::Error;

/// Metric label of methods other than `reboot` and `factoryReset`: method names are chosen
/// by users, so they never become label values.
pub const OTHER_METHOD_LABEL: &str = "other";

/// A method called by name, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedMethod {
    /// The method name.
    pub method: String,
    /// Its parameters.
    pub params: Map<String, Value>,
    /// How long an accepted call may run (methods that do not restart the device).
    pub execution_timeout: Duration,
    /// The request marks the method disruptive.
    pub disruptive: bool,
}

impl NamedMethod {
    /// Whether the method restarts the device.
    fn restarts(&self) -> bool {
        self.method == REBOOT_METHOD || self.method == FACTORY_RESET_METHOD
    }

    /// Size of the parameters as sent.
    fn params_bytes(&self) -> usize {
        serde_json::to_vec(&self.params).map_or(usize::MAX, |bytes| bytes.len())
    }
}

impl MethodKind for NamedMethod {
    fn method(&self) -> &str {
        &self.method
    }

    fn metric_label(&self) -> &'static str {
        match self.method.as_str() {
            REBOOT_METHOD => REBOOT_METHOD,
            FACTORY_RESET_METHOD => FACTORY_RESET_METHOD,
            _ => OTHER_METHOD_LABEL,
        }
    }

    fn params(&self) -> Map<String, Value> {
        self.params.clone()
    }

    fn confirmation(&self) -> Confirmation {
        if self.restarts() {
            // A reboot's own delay adds to the time the device may stay away; unreadable
            // params add nothing (the device rejects them).
            let delay = if self.method == REBOOT_METHOD {
                RebootParams::from_params(&self.params)
                    .map(|p| Duration::from_secs(u64::from(p.delay_seconds)))
                    .unwrap_or_default()
            } else {
                Duration::ZERO
            };
            Confirmation::Restart { extra_away: delay }
        } else {
            Confirmation::FinalAnswer { execution_timeout: self.execution_timeout }
        }
    }

    fn wording(&self) -> Wording {
        let method = &self.method;
        if self.method == FACTORY_RESET_METHOD {
            return Wording {
                request: Cow::Borrowed("Factory reset request"),
                noun: Cow::Borrowed("the factory reset"),
                verb: Cow::Borrowed("reset"),
                done: Cow::Borrowed("was reset to factory state and is back online"),
                away: Cow::Borrowed("is resetting"),
                event_prefix: Cow::Borrowed("FactoryReset"),
            };
        }
        Wording {
            request: Cow::Owned(format!("Method {method}")),
            noun: Cow::Owned(format!("the method {method}")),
            verb: Cow::Owned(format!("run {method}")),
            done: Cow::Owned(if self.restarts() {
                format!("ran {method} and is back online")
            } else {
                format!("ran {method}")
            }),
            away: Cow::Owned(format!("is restarting for {method}")),
            event_prefix: Cow::Borrowed("Method"),
        }
    }

    fn disruptive(&self) -> bool {
        self.disruptive || self.restarts()
    }

    fn refusal(&self) -> Option<Refusal> {
        let bytes = self.params_bytes();
        (bytes > MAX_PARAMS_BYTES).then(|| Refusal {
            reason: RequestReason::ParamsTooLarge,
            message: format!(
                "params are {bytes} bytes serialized; a request carries at most {MAX_PARAMS_BYTES}: nothing is sent"
            ),
        })
    }
}

fn phase_of(phase: MethodPhase) -> Phase {
    match phase {
        MethodPhase::Pending => Phase::Pending,
        MethodPhase::Sent => Phase::Sent,
        MethodPhase::Accepted => Phase::Accepted,
        MethodPhase::InProgress => Phase::InProgress,
        MethodPhase::Rebooting => Phase::Rebooting,
        MethodPhase::Succeeded => Phase::Succeeded,
        MethodPhase::Failed => Phase::Failed,
        MethodPhase::TimedOut => Phase::TimedOut,
        MethodPhase::Rejected => Phase::Rejected,
    }
}

fn method_phase(phase: Phase) -> MethodPhase {
    match phase {
        Phase::Pending => MethodPhase::Pending,
        Phase::Sent => MethodPhase::Sent,
        Phase::Accepted => MethodPhase::Accepted,
        Phase::InProgress => MethodPhase::InProgress,
        Phase::Rebooting => MethodPhase::Rebooting,
        Phase::Succeeded => MethodPhase::Succeeded,
        Phase::Failed => MethodPhase::Failed,
        Phase::TimedOut => MethodPhase::TimedOut,
        Phase::Rejected => MethodPhase::Rejected,
    }
}

impl RequestResource for MethodRequest {
    type Status = MethodRequestStatus;
    type Kind = NamedMethod;

    fn device_name(&self) -> &str {
        &self.spec.device_name
    }

    fn method_kind(&self) -> NamedMethod {
        NamedMethod {
            method: self.spec.method.clone(),
            params: self.spec.params.clone().unwrap_or_default(),
            execution_timeout: seconds(self.spec.execution_timeout_seconds),
            disruptive: self.spec.disruptive,
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            response: seconds(self.spec.response_timeout_seconds),
            connect: seconds(self.spec.connect_timeout_seconds),
            ttl_after_finished: self.spec.ttl_seconds_after_finished.map(seconds),
        }
    }

    fn current_status(&self) -> Option<&MethodRequestStatus> {
        self.status.as_ref()
    }

    fn progress_of(status: Option<&MethodRequestStatus>) -> Result<Progress, Error> {
        let Some(status) = status else {
            return Ok(Progress::default());
        };
        let result = status.result.as_ref();
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
            response: result.map(|r| kubetwin_api::RecordedResponse {
                code: r.code,
                message: r.message.clone(),
            }),
            percent: status
                .progress
                .as_ref()
                .and_then(|p| p.percent)
                .and_then(|p| u8::try_from(p).ok()),
            progress_message: status
                .progress
                .as_ref()
                .map(|p| p.message.clone())
                .filter(|m| !m.is_empty()),
            payload: result.and_then(|r| r.payload.clone()),
            payload_truncated: result.is_some_and(|r| r.truncated),
            reason: status.reason.clone(),
            message: status.message.clone(),
            conditions: status.conditions.clone(),
        })
    }

    fn status_of(progress: &Progress) -> Result<MethodRequestStatus, Error> {
        let progress_shown = (progress.percent.is_some() || progress.progress_message.is_some())
            .then(|| MethodProgress {
                percent: progress.percent.map(i32::from),
                message: progress.progress_message.clone().unwrap_or_default(),
            });
        Ok(MethodRequestStatus {
            observed_generation: progress.observed_generation,
            phase: progress.phase.map(method_phase),
            request_id: progress.request_id.clone(),
            sent_at: progress.sent_at.map(Time),
            accepted_at: progress.accepted_at.map(Time),
            completed_at: progress.completed_at.map(Time),
            duration: progress.duration.clone(),
            boot_before: boot_to_api(progress.boot_before)?,
            boot_after: boot_to_api(progress.boot_after)?,
            progress: progress_shown,
            result: progress.response.as_ref().map(|r| MethodResult {
                code: r.code,
                message: r.message.clone(),
                payload: progress.payload.clone(),
                truncated: progress.payload_truncated,
            }),
            reason: progress.reason.clone(),
            message: progress.message.clone(),
            conditions: progress.conditions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn named(method: &str, params: Value) -> NamedMethod {
        let Value::Object(params) = params else { panic!("params must be an object") };
        NamedMethod {
            method: method.into(),
            params,
            execution_timeout: Duration::from_secs(60),
            disruptive: false,
        }
    }

    #[test]
    fn restarting_methods_are_confirmed_by_a_higher_boot_and_others_by_the_final_answer() {
        let table = [
            (
                "reboot",
                json!({"delaySeconds": 7}),
                Confirmation::Restart { extra_away: Duration::from_secs(7) },
            ),
            ("factoryReset", json!({}), Confirmation::Restart { extra_away: Duration::ZERO }),
            (
                "setLed",
                json!({"on": true}),
                Confirmation::FinalAnswer { execution_timeout: Duration::from_secs(60) },
            ),
        ];
        for (method, params, confirmation) in table {
            assert_eq!(named(method, params).confirmation(), confirmation, "{method}");
        }
    }

    #[test]
    fn metric_labels_never_carry_a_user_chosen_method_name() {
        let labels: Vec<_> = ["reboot", "factoryReset", "setLed", "anything-else"]
            .into_iter()
            .map(|m| named(m, json!({})).metric_label())
            .collect();
        assert_eq!(labels, ["reboot", "factoryReset", "other", "other"]);
    }

    #[test]
    fn params_above_the_bound_are_refused_before_sending() {
        assert_eq!(named("setLed", json!({"blob": "x".repeat(100)})).refusal(), None);
        let large = named("setLed", json!({"blob": "x".repeat(MAX_PARAMS_BYTES)}));
        let refusal = large.refusal().expect("refused");
        assert_eq!(refusal.reason, RequestReason::ParamsTooLarge);
        assert!(refusal.message.contains("at most 16384"), "{}", refusal.message);
    }

    #[test]
    fn a_status_converts_to_progress_and_back_unchanged() {
        let status = MethodRequestStatus {
            phase: Some(MethodPhase::Succeeded),
            request_id: Some("r1".into()),
            boot_before: Some(3),
            boot_after: Some(4),
            progress: Some(MethodProgress { percent: Some(100), message: "done".into() }),
            result: Some(MethodResult {
                code: 200,
                message: "ok".into(),
                payload: Some(json!({"files": 3})),
                truncated: false,
            }),
            reason: Some("Completed".into()),
            ..Default::default()
        };
        let progress = MethodRequest::progress_of(Some(&status)).expect("progress");
        assert_eq!(MethodRequest::status_of(&progress).expect("status"), status);
    }
}
