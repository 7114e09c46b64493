//! Pure helpers for kstatus-style conditions.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kubetwin_api::condition::ConditionStatus;

/// The wanted state of one condition, before timestamps are settled. Types and reasons come
/// from the typed enums of [`kubetwin_api::condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type (for example `Ready`).
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message for people.
    pub message: String,
}

/// Builds the condition list from `updates`, keeping `lastTransitionTime` of a condition whose
/// status did not change and stamping `now` on those that did.
pub fn merge(
    existing: &[Condition],
    updates: Vec<ConditionUpdate>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    updates
        .into_iter()
        .map(|update| {
            let previous = existing.iter().find(|c| c.type_ == update.type_);
            let last_transition_time = match previous {
                Some(previous) if previous.status == update.status.as_str() => {
                    previous.last_transition_time.clone()
                }
                _ => Time(now),
            };
            Condition {
                type_: update.type_.to_string(),
                status: update.status.as_str().to_string(),
                reason: update.reason.to_string(),
                message: update.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// One update per (type, status), all with the same reason and message: how a resource whose
/// conditions all describe one phase states them.
pub fn with_one_reason(
    statuses: impl IntoIterator<Item = (&'static str, ConditionStatus)>,
    reason: &'static str,
    message: &str,
) -> Vec<ConditionUpdate> {
    statuses
        .into_iter()
        .map(|(type_, status)| ConditionUpdate {
            type_,
            status,
            reason,
            message: message.to_string(),
        })
        .collect()
}

/// The condition of `type_` in `conditions`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(status: ConditionStatus) -> ConditionUpdate {
        ConditionUpdate { type_: "Ready", status, reason: "Because", message: "m".into() }
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let t0 = Timestamp::from_second(1_000).expect("valid");
        let t1 = Timestamp::from_second(2_000).expect("valid");
        let first = merge(&[], vec![update(ConditionStatus::False)], Some(1), t0);
        assert_eq!(first[0].last_transition_time, Time(t0));
        let same = merge(&first, vec![update(ConditionStatus::False)], Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, vec![update(ConditionStatus::True)], Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(find(&flipped, "Ready").map(|c| c.status.as_str()), Some("True"));
    }
}
