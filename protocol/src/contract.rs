//! Constants of the wire contract.

/// Schema version carried in every payload as `"v"`.
pub const PROTOCOL_VERSION: u64 = 1;
/// Default topic root.
pub const DEFAULT_ROOT: &str = "kubetwin/v1";
/// Default largest payload accepted, in bytes (64 KiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// MQTT QoS of every publish and subscription.
pub const QOS: u8 = 1;
