//! What differs between method kinds: the method name and parameters, how success is
//! confirmed, and how people read about it. Everything else (deadlines, resends, phases,
//! conditions, TTL) is the engine's, the same for every kind.

use std::{borrow::Cow, time::Duration};

use serde_json::{Map, Value};

/// How the engine knows that a method succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The device's final `Succeeded` answer. An accepted call may run for `execution_timeout`
    /// before it times out.
    FinalAnswer {
        /// Longest run after acceptance.
        execution_timeout: Duration,
    },
    /// The device restarts: success is the device back online with a higher boot (or its
    /// final `Succeeded` answer, which it sends from the new boot). It may stay away for the
    /// operator's return timeout plus `extra_away` (for example a requested delay).
    Restart {
        /// Time added to the return timeout.
        extra_away: Duration,
    },
}

/// How status messages and Events talk about a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wording {
    /// What is sent, capitalised: "Reboot request" ("Reboot request sent to sensor-1").
    pub request: Cow<'static, str>,
    /// The action as a noun: "the reboot" ("sensor-1 accepted the reboot").
    pub noun: Cow<'static, str>,
    /// The action as a verb: "reboot" ("sensor-1 failed to reboot").
    pub verb: Cow<'static, str>,
    /// What the device did on success: "rebooted and is back online".
    pub done: Cow<'static, str>,
    /// What the device is doing while away: "is rebooting".
    pub away: Cow<'static, str>,
    /// Prefix of the Event reasons on the Device: "Reboot" ("RebootSucceeded").
    pub event_prefix: Cow<'static, str>,
}

/// Why a request is refused before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The typed reason.
    pub reason: kubetwin_api::condition::RequestReason,
    /// For people.
    pub message: String,
}

/// One kind of device method.
pub trait MethodKind {
    /// The method name on the wire (`reboot`).
    fn method(&self) -> &str;
    /// The metric label of the kind: a fixed word, never a user-chosen method name.
    fn metric_label(&self) -> &'static str;
    /// Parameters sent with the request.
    fn params(&self) -> Map<String, Value>;
    /// How success is confirmed.
    fn confirmation(&self) -> Confirmation;
    /// How people read about it.
    fn wording(&self) -> Wording;
    /// Why the request must not be sent at all (for example parameters too large to carry).
    fn refusal(&self) -> Option<Refusal> {
        None
    }
    /// Whether the method takes the device out of service (disruption budgets apply).
    fn disruptive(&self) -> bool {
        false
    }
}
