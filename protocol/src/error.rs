//! Why an incoming message was dropped.

use thiserror::Error;

use crate::contract::PROTOCOL_VERSION;

/// Reason an incoming MQTT message is dropped; receivers log it and count it by [`reason`](Self::reason).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The payload is empty: a retained message was cleared.
    #[error("empty payload (a cleared retained message)")]
    Empty,
    /// The payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Size of the payload in bytes.
        size: usize,
        /// Largest payload accepted, in bytes.
        limit: usize,
    },
    /// The payload is not JSON, not an object, or lacks fields or has fields of the wrong type.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The payload has no schema version field `v`.
    #[error("payload has no schema version field \"v\"")]
    MissingVersion,
    /// The payload's schema version `v` is not the one this crate speaks.
    #[error("unsupported schema version {0}, expected {PROTOCOL_VERSION}")]
    UnsupportedVersion(u64),
    /// The topic is not one of the contract's topics under the configured root.
    #[error("topic is not part of the kubetwin contract")]
    UnknownTopic,
    /// A field (or an id in the topic) is invalid, or does not match the topic.
    #[error("invalid field: {0}")]
    InvalidField(String),
    /// The topic names a device that the receiver does not know.
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
}

/// Why a message could not be encoded. Never papered over: an empty payload on a retained
/// topic would delete what the broker holds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// serde_json refused the message.
    #[error("cannot serialize the message: {0}")]
    Serialize(String),
    /// The encoded message is larger than receivers accept.
    #[error("encoded message of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Size in bytes.
        size: usize,
        /// Largest payload receivers accept.
        limit: usize,
    },
}

impl DecodeError {
    /// Short, stable label of the drop reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Oversized { .. } => "oversized",
            Self::Malformed(_) => "malformed",
            Self::MissingVersion | Self::UnsupportedVersion(_) => "version",
            Self::UnknownTopic => "topic",
            Self::InvalidField(_) => "invalid",
            Self::UnknownDevice(_) => "device",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable() {
        let cases = [
            (DecodeError::Empty, "empty"),
            (DecodeError::Oversized { size: 2, limit: 1 }, "oversized"),
            (DecodeError::Malformed("x".into()), "malformed"),
            (DecodeError::MissingVersion, "version"),
            (DecodeError::UnsupportedVersion(2), "version"),
            (DecodeError::UnknownTopic, "topic"),
            (DecodeError::InvalidField("x".into()), "invalid"),
            (DecodeError::UnknownDevice("d".into()), "device"),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error:?}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            DecodeError::Oversized { size: 70000, limit: 65536 }.to_string(),
            "payload of 70000 bytes exceeds the limit of 65536 bytes"
        );
        assert_eq!(
            DecodeError::UnsupportedVersion(2).to_string(),
            "unsupported schema version 2, expected 1"
        );
    }
}
