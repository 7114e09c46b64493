//! Positions of messages in a device's stream: `(boot, seq)` for reported messages and
//! responses, `(boot, conn)` for presence.

use serde::{Deserialize, Serialize};

/// Position of a reported message or method response: boot counter, then sequence in the boot.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Cursor {
    /// Boot counter of the device.
    pub boot: u64,
    /// Sequence number within the boot.
    pub seq: u64,
}

/// Position of a presence message: boot counter, then connection counter in the boot.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct PresenceCursor {
    /// Boot counter of the device.
    pub boot: u64,
    /// Connection counter within the boot.
    pub conn: u64,
}
