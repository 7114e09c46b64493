//! Condition types, statuses and reasons (kstatus style) shared by all kubetwin resources.
//! Every value the operator writes into a condition or a `reason` field is one of these
//! enums, so a reason cannot be misspelled and a metric label cannot drift from a condition.

/// Defines a string-valued enum: `as_str()`, `Display` and the list of all values.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as written in the API (CamelCase).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant)),+
                }
            }

            /// The value written as `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `status` of a condition.
    ConditionStatus {
        /// The condition holds.
        True,
        /// The condition does not hold.
        False,
        /// Not known (yet).
        Unknown,
    }
);

/// `status: "True"` of a condition.
pub const TRUE: &str = ConditionStatus::True.as_str();
/// `status: "False"` of a condition.
pub const FALSE: &str = ConditionStatus::False.as_str();
/// `status: "Unknown"` of a condition.
pub const UNKNOWN: &str = ConditionStatus::Unknown.as_str();

string_enum!(
    /// Condition types of a `Device`.
    DeviceCondition {
        /// The device twin is healthy: connected, in sync and without conflicts.
        Ready,
        /// The device holds an MQTT connection to the broker.
        Connected,
        /// The device applied the current desired properties (uid + generation).
        InSync,
        /// Every report the device sent is in status (none was dropped for its size).
        ReportedComplete,
        /// The device runs spec.firmware (True also when no target is set).
        FirmwareCurrent,
    }
);

string_enum!(
    /// Reasons of the `Device` conditions.
    DeviceReason {
        /// Connected: the device announced that it is online.
        Online,
        /// Connected=False: the device went offline.
        Offline,
        /// Connected=Unknown: no presence message yet.
        NoPresence,
        /// InSync: the device applied the current generation.
        Applied,
        /// InSync=False: the device applied an older generation.
        Pending,
        /// InSync=Unknown: the device has not said what it applied.
        NotReported,
        /// InSync=False: spec.desired is too large to send.
        DesiredTooLarge,
        /// Ready=False: an older Device owns the same device id.
        DuplicateDeviceId,
        /// Ready=False: the effective device id is not valid on MQTT topics.
        InvalidDeviceId,
        /// Ready: connected and in sync.
        Ready,
        /// Ready=False: not connected.
        NotConnected,
        /// Ready=False: connected, not in sync.
        NotInSync,
        /// ReportedComplete: every accepted report is shown.
        Complete,
        /// ReportedComplete=False: a report would have made the reported properties too large.
        ReportedTooLarge,
        /// FirmwareCurrent: the device runs the target, or no target is set.
        FirmwareUpToDate,
        /// FirmwareCurrent=False: the update is under way (or waits for the device).
        FirmwareUpdating,
        /// FirmwareCurrent=False: the device reported an error for the target.
        FirmwareFailed,
        /// FirmwareCurrent=False: the device came back on its old image.
        FirmwareRolledBack,
        /// FirmwareCurrent=False: the update did not finish in time.
        FirmwareTimedOut,
        /// FirmwareCurrent=False: after a successful update the device reports another version.
        FirmwareDrift,
        /// FirmwareCurrent=False: a DeviceDisruptionBudget has no room; the firmware order is
        /// held back from the device until it has.
        DisruptionBudgetExhausted,
    }
);

string_enum!(
    /// Condition types of a request (`RebootRequest`).
    RequestCondition {
        /// The request reached a terminal phase.
        Complete,
        /// The request succeeded.
        Succeeded,
        /// The request ended without success.
        Failed,
    }
);

string_enum!(
    /// Reasons of a request's phase (`status.reason` and its conditions).
    RequestReason {
        /// Published to the device.
        Sent,
        /// Waiting for the operator's own broker connection.
        BrokerUnavailable,
        /// Waiting for the device to come online.
        WaitingForDevice,
        /// The Device object does not exist.
        DeviceNotFound,
        /// The device was not online in time.
        DeviceNotOnline,
        /// The device accepted the request.
        Accepted,
        /// The device is rebooting.
        Rebooting,
        /// The device rebooted and came back with a new boot.
        Rebooted,
        /// The device refused the request.
        DeviceRejected,
        /// The device reported a failure.
        DeviceFailed,
        /// The request reached the device after it expired.
        Expired,
        /// The device did not answer in time.
        NoResponse,
        /// The device accepted but did not come back in time.
        NoReturn,
        /// The device answered with its final success.
        Completed,
        /// The device is executing the request.
        InProgress,
        /// The device accepted but gave no final answer in time.
        ExecutionTimeout,
        /// The Device does not own its device id (an older Device does): nothing is sent.
        DeviceIdConflict,
        /// The device lists the methods it supports, and this one is not among them: nothing
        /// is sent.
        MethodNotSupported,
        /// The parameters are larger than a request may carry: nothing is sent.
        ParamsTooLarge,
        /// A DeviceDisruptionBudget that selects the device has no room: the request waits.
        DisruptionBudgetExhausted,
    }
);

string_enum!(
    /// Condition types of a `DeviceJob` (kstatus).
    JobCondition {
        /// The job reached a terminal phase.
        Complete,
        /// The job ended without success (Failed or Aborted).
        Failed,
        /// The job is suspended: nothing starts.
        Suspended,
        /// The job is starting devices or waiting for them.
        Progressing,
    }
);

string_enum!(
    /// Reasons of a `DeviceJob`'s phase.
    JobReason {
        /// spec.suspend is true.
        Suspended,
        /// Devices are being started.
        Running,
        /// A wave with pauseAfter finished; spec.continueAfterWave lets it go on.
        WavePaused,
        /// Every targeted device succeeded.
        AllSucceeded,
        /// Every targeted device finished; some failed.
        SomeFailed,
        /// An abort criterion held.
        AbortCriteriaMet,
        /// The selector picks no Device.
        NoDevices,
        /// The job is being deleted: nothing more starts.
        Deleting,
    }
);

string_enum!(
    /// Condition types of a `DeviceConfiguration`.
    ConfigurationCondition {
        /// The configuration is valid and its status is computed.
        Ready,
        /// The firmware rollout is over (or there is none).
        RolloutComplete,
    }
);

string_enum!(
    /// Reasons of a `DeviceConfiguration`'s conditions and rollout.
    ConfigurationReason {
        /// The selector and every custom metric are valid.
        Valid,
        /// spec.selector cannot be used.
        InvalidSelector,
        /// A custom metric's expression is not CEL.
        InvalidExpression,
        /// No spec.firmware: nothing rolls out.
        NoFirmware,
        /// Devices are being updated.
        Updating,
        /// A wave with pauseAfter finished; spec.continueAfterWave lets it go on.
        WavePaused,
        /// Failed updates reached the failure threshold; nothing more starts.
        FailureThresholdReached,
        /// Failed updates reached the failure threshold; the updated devices get the previous
        /// firmware back.
        RolledBack,
        /// Every device in the rollout runs the firmware.
        AllUpdated,
        /// Every device had its turn; some did not update.
        SomeFailed,
        /// No targeted Device takes its firmware from this configuration.
        NoDevices,
    }
);

string_enum!(
    /// Condition types of a `DeviceDisruptionBudget`.
    BudgetCondition {
        /// At least one more device may be disrupted now (in every group).
        DisruptionAllowed,
    }
);

string_enum!(
    /// Reasons of a `DeviceDisruptionBudget`'s condition.
    BudgetReason {
        /// Every group has room.
        SufficientDevices,
        /// Some group has no room: disruptive actions in it wait.
        InsufficientDevices,
    }
);

/// Condition types of a `Device`, as strings (for reading conditions by type).
pub mod device {
    use super::DeviceCondition;

    /// The device twin is healthy: connected, in sync and without conflicts.
    pub const READY: &str = DeviceCondition::Ready.as_str();
    /// The device holds an MQTT connection to the broker.
    pub const CONNECTED: &str = DeviceCondition::Connected.as_str();
    /// The device applied the current desired properties (uid + generation).
    pub const IN_SYNC: &str = DeviceCondition::InSync.as_str();
    /// Every report the device sent is in status.
    pub const REPORTED_COMPLETE: &str = DeviceCondition::ReportedComplete.as_str();
}

/// Condition types of a request, as strings (for reading conditions by type).
pub mod reboot {
    use super::RequestCondition;

    /// The request reached a terminal phase.
    pub const COMPLETE: &str = RequestCondition::Complete.as_str();
    /// The request succeeded.
    pub const SUCCEEDED: &str = RequestCondition::Succeeded.as_str();
    /// The request ended without success.
    pub const FAILED: &str = RequestCondition::Failed.as_str();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_their_names_and_parse_back() {
        assert_eq!(ConditionStatus::True.to_string(), "True");
        assert_eq!(DeviceReason::DuplicateDeviceId.as_str(), "DuplicateDeviceId");
        for reason in RequestReason::ALL {
            assert_eq!(RequestReason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(RequestReason::parse("NoSuchReason"), None);
        assert_eq!((device::IN_SYNC, reboot::COMPLETE), ("InSync", "Complete"));
    }
}
