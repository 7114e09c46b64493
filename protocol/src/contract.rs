//! Constants of the wire contract.

/// Schema version carried in every payload as `"v"`.
pub const PROTOCOL_VERSION: u64 = 1;
/// Default topic root.
pub const DEFAULT_ROOT: &str = "kubetwin/v1";
/// Default largest payload accepted, in bytes (64 KiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// MQTT QoS of every publish and subscription.
pub const QOS: u8 = 1;
/// Largest `boot`, `seq` and `conn` a receiver accepts: 2^53 − 1, the largest integer every
/// JSON implementation reads exactly (and that the Kubernetes API, with signed 64-bit integers,
/// can hold). Larger values are dropped as `invalid`.
pub const MAX_COUNTER: u64 = (1 << 53) - 1;
/// How far a device's `boot` may be ahead of the receiver's Unix time in seconds. A boot
/// counter counts boots (small) or is the Unix time at boot (never ahead of now, give or take
/// a wrong clock), so a boot beyond now + one day is a fault that would make every later
/// message of the device look stale: it is dropped as `invalid`.
pub const MAX_BOOT_AHEAD_SECS: u64 = 86_400;
/// Largest reported properties, serialized as JSON, that a receiver keeps (like Azure IoT Hub
/// twins): a reported message that would make them larger is dropped.
pub const MAX_REPORTED_BYTES: usize = 32 * 1024;
/// Longest `reason` of a presence message, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest `message` of a method response, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
