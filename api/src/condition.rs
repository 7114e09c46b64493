//! Condition types and reasons (kstatus style) shared by all kubetwin resources.

/// `status: "True"` of a condition.
pub const TRUE: &str = "True";
/// `status: "False"` of a condition.
pub const FALSE: &str = "False";
/// `status: "Unknown"` of a condition.
pub const UNKNOWN: &str = "Unknown";

/// Condition types of a `Device`.
pub mod device {
    /// The device twin is healthy: connected, in sync and without conflicts.
    pub const READY: &str = "Ready";
    /// The device holds an MQTT connection to the broker.
    pub const CONNECTED: &str = "Connected";
    /// The device applied the current desired properties (uid + generation).
    pub const IN_SYNC: &str = "InSync";
}

/// Condition types of a `RebootRequest`.
pub mod reboot {
    /// The request reached a terminal phase.
    pub const COMPLETE: &str = "Complete";
    /// The device rebooted and came back.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The request ended without a successful reboot.
    pub const FAILED: &str = "Failed";
}
