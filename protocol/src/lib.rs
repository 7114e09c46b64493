//! The kubetwin MQTT wire contract v1, shared by the operator and the device simulator.
//!
//! - [`topic`]: topic names, subscription filters and parsing ([`Topics`], [`ParsedTopic`]).
//! - [`message`]: the JSON payloads ([`DesiredDocument`], [`ReportedMessage`], [`TwinGet`],
//!   [`MethodRequest`], [`MethodResponse`], [`Presence`]).
//! - [`codec`]: size-limited, validating decoding and encoding ([`Codec`]).
//! - [`error`]: why a message is dropped ([`DecodeError`]).
//! - [`cursor`], [`order`]: message positions and the ordering rules for reported messages,
//!   responses and presence.
//! - [`twin`]: when to apply desired documents and how to merge reported properties.
//! - [`rpc`]: direct methods, expiry and the device's memory of request ids.
//! - [`ids`], [`timestamp`]: ids ([`DeviceId`], [`RequestId`]) and RFC 3339 timestamps.
//! - [`contract`]: the constants (schema version, default root, payload limit, QoS).
//!
//! The contract itself is described in `docs/protocol.md`.
//!
//! ```
//! use kubetwin_protocol::{Codec, Inbound, Topics, admit};
//!
//! let topics = Topics::default();
//! let payload = br#"{"v":1,"boot":3,"seq":1,"full":true,"reported":{"firmwareVersion":"1.0.0"}}"#;
//! let inbound = Codec::default().decode_inbound(&topics, "kubetwin/v1/dev-1/twin/reported", payload);
//! let Ok(Inbound::Reported { device_id, message }) = inbound else { panic!("not reported") };
//! assert_eq!(device_id, "dev-1");
//! assert!(admit(None, message.cursor()).is_accept());
//! ```

pub mod codec;
pub mod contract;
pub mod cursor;
pub mod error;
pub mod firmware;
pub mod ids;
pub mod message;
pub mod order;
pub mod rpc;
pub mod timestamp;
pub mod topic;
pub mod twin;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod properties;

pub use codec::{Codec, Inbound, check_topic};
pub use contract::{
    DEFAULT_MAX_PAYLOAD, DEFAULT_ROOT, MAX_BOOT_AHEAD_SECS, MAX_COUNTER, MAX_REPORTED_BYTES,
    PROTOCOL_VERSION, QOS,
};
pub use cursor::{Cursor, PresenceCursor};
pub use error::{DecodeError, EncodeError};
pub use firmware::{FirmwareOrder, FirmwareState, KEY_FIRMWARE, ReportedFirmware};
pub use ids::{
    DeviceId, RequestId, is_valid_device_id, is_valid_method, is_valid_request_id,
    validate_device_id, validate_method, validate_request_id,
};
pub use message::{
    AppliedVersion, DesiredDocument, Message, MethodRequest, MethodResponse, MqttVersion,
    OperatorSession, Presence, PresenceState, ReportedMessage, ResponseStatus, TwinGet, V1,
};
pub use order::{Admission, admit, admit_presence, admit_response, plausible_boot};
pub use rpc::{FACTORY_RESET_METHOD, REBOOT_METHOD, RebootParams, RecentRequests};
pub use topic::{OPERATOR_LEVEL, ParsedTopic, Topics, response_topic};
pub use twin::{
    KEY_FIRMWARE_VERSION, KEY_LAST_REBOOT, KEY_REBOOT, RebootState, RebootStatus, apply_reported,
    merge_patch, should_apply,
};

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The JSON code blocks of `docs/protocol.md`.
    fn doc_json_blocks() -> Vec<Value> {
        let doc = include_str!("../../docs/protocol.md");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            match current.as_mut() {
                None if line.trim() == "```json" => current = Some(String::new()),
                None => {}
                Some(block) if line.trim() == "```" => {
                    let value = serde_json::from_str(block)
                        .unwrap_or_else(|e| panic!("bad JSON block in protocol.md: {e}\n{block}"));
                    blocks.push(value);
                    current = None;
                }
                Some(block) => {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
        blocks
    }

    #[test]
    fn constants() {
        assert_eq!(PROTOCOL_VERSION, 1);
        assert_eq!(DEFAULT_ROOT, "kubetwin/v1");
        assert_eq!(DEFAULT_MAX_PAYLOAD, 65_536);
        assert_eq!(QOS, 1);
    }

    #[test]
    fn docs_show_every_example() {
        let blocks = doc_json_blocks();
        for (kind, example) in examples::ALL {
            let value: Value = serde_json::from_str(example).unwrap();
            assert!(
                blocks.contains(&value),
                "docs/protocol.md lacks the {kind} example:\n{example}"
            );
        }
    }

    #[test]
    fn every_doc_example_decodes() {
        let codec = Codec::default();
        let blocks = doc_json_blocks();
        assert!(blocks.len() >= examples::ALL.len());
        for block in blocks.iter().filter(|b| b.get("v").is_some()) {
            let bytes = serde_json::to_vec(block).unwrap();
            let decoded = [
                codec.decode_desired(&bytes).map(drop),
                codec.decode_reported(&bytes).map(drop),
                codec.decode_request(&bytes).map(drop),
                codec.decode_response(&bytes).map(drop),
                codec.decode_presence(&bytes).map(drop),
                codec.decode_get(&bytes).map(drop),
                codec.decode_session(&bytes).map(drop),
            ];
            assert!(
                decoded.iter().any(Result::is_ok),
                "a payload in docs/protocol.md decodes as no message: {block}"
            );
        }
    }
}
