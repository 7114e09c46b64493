//! Encoding and decoding payloads: size limit, JSON, schema version, field validation and
//! topic consistency, in that order. Every failure is a [`DecodeError`], never a panic.

use serde_json::Value;

use crate::contract::{DEFAULT_MAX_PAYLOAD, PROTOCOL_VERSION};
use crate::error::{DecodeError, EncodeError};
use crate::ids::{DeviceId, RequestId};
use crate::message::{
    DesiredDocument, Message, MethodRequest, MethodResponse, OperatorSession, Presence,
    ReportedMessage, TwinGet,
};
use crate::topic::{ParsedTopic, Topics};

/// Encodes and decodes payloads, dropping any larger than `max_payload` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Codec {
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

/// A decoded incoming message with the device id from its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A desired document.
    Desired {
        /// Device id from the topic.
        device_id: DeviceId,
        /// The message.
        message: DesiredDocument,
    },
    /// A reported message.
    Reported {
        /// Device id from the topic.
        device_id: DeviceId,
        /// The message.
        message: ReportedMessage,
    },
    /// A request to republish the desired document.
    Get {
        /// Device id from the topic.
        device_id: DeviceId,
        /// The message.
        message: TwinGet,
    },
    /// A method request.
    Request {
        /// Device id from the topic.
        device_id: DeviceId,
        /// The message.
        message: MethodRequest,
    },
    /// A method response.
    Response {
        /// Device id from the topic.
        device_id: DeviceId,
        /// Request id from the topic (equal to the id in the message).
        request_id: RequestId,
        /// The message.
        message: MethodResponse,
    },
    /// A presence message.
    Presence {
        /// Device id from the topic.
        device_id: DeviceId,
        /// The message.
        message: Presence,
    },
}

impl Inbound {
    /// Device id from the topic.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Self::Desired { device_id, .. }
            | Self::Reported { device_id, .. }
            | Self::Get { device_id, .. }
            | Self::Request { device_id, .. }
            | Self::Response { device_id, .. }
            | Self::Presence { device_id, .. } => device_id,
        }
    }
}

/// Checks that `message` belongs on `topic` (kind, and ids present in both must match).
pub fn check_topic<M: Message>(topic: &ParsedTopic, message: &M) -> Result<(), DecodeError> {
    message.check_topic(topic)
}

impl Codec {
    /// A codec with a payload limit of `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }

    /// Decodes a payload: empty/size check, JSON object, `v == 1`, fields, validation.
    pub fn decode<M: Message>(&self, payload: &[u8]) -> Result<M, DecodeError> {
        if payload.is_empty() {
            return Err(DecodeError::Empty);
        }
        if payload.len() > self.max_payload {
            return Err(DecodeError::Oversized { size: payload.len(), limit: self.max_payload });
        }
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let Value::Object(object) = &value else {
            return Err(DecodeError::Malformed("payload is not a JSON object".into()));
        };
        match object.get("v") {
            None => return Err(DecodeError::MissingVersion),
            Some(v) => match v.as_u64() {
                Some(PROTOCOL_VERSION) => {}
                Some(other) => return Err(DecodeError::UnsupportedVersion(other)),
                None => {
                    return Err(DecodeError::Malformed(format!(
                        "\"v\" is {v}, not an unsigned integer"
                    )));
                }
            },
        }
        let message: M =
            serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        message.validate()?;
        Ok(message)
    }

    /// Decodes a payload that arrived on `topic` and checks that it belongs there.
    pub fn decode_for<M: Message>(
        &self,
        topic: &ParsedTopic,
        payload: &[u8],
    ) -> Result<M, DecodeError> {
        let message = self.decode::<M>(payload)?;
        message.check_topic(topic)?;
        Ok(message)
    }

    /// Parses `topic` under `topics` and decodes the payload as the message that topic carries.
    pub fn decode_inbound(
        &self,
        topics: &Topics,
        topic: &str,
        payload: &[u8],
    ) -> Result<Inbound, DecodeError> {
        let parsed = topics.parse(topic)?;
        Ok(match &parsed {
            ParsedTopic::Desired { device_id } => Inbound::Desired {
                device_id: device_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
            ParsedTopic::Reported { device_id } => Inbound::Reported {
                device_id: device_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
            ParsedTopic::Get { device_id } => Inbound::Get {
                device_id: device_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
            ParsedTopic::Request { device_id, .. } => Inbound::Request {
                device_id: device_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
            ParsedTopic::Response { device_id, request_id } => Inbound::Response {
                device_id: device_id.clone(),
                request_id: request_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
            ParsedTopic::Presence { device_id } => Inbound::Presence {
                device_id: device_id.clone(),
                message: self.decode_for(&parsed, payload)?,
            },
        })
    }

    /// Decodes a `twin/desired` payload.
    pub fn decode_desired(&self, payload: &[u8]) -> Result<DesiredDocument, DecodeError> {
        self.decode(payload)
    }

    /// Decodes a `twin/reported` payload.
    pub fn decode_reported(&self, payload: &[u8]) -> Result<ReportedMessage, DecodeError> {
        self.decode(payload)
    }

    /// Decodes a `twin/get` payload.
    pub fn decode_get(&self, payload: &[u8]) -> Result<TwinGet, DecodeError> {
        self.decode(payload)
    }

    /// Decodes an `rpc/req/...` payload.
    pub fn decode_request(&self, payload: &[u8]) -> Result<MethodRequest, DecodeError> {
        self.decode(payload)
    }

    /// Decodes an `rpc/res/...` payload.
    pub fn decode_response(&self, payload: &[u8]) -> Result<MethodResponse, DecodeError> {
        self.decode(payload)
    }

    /// Decodes an `_operator/session` payload.
    pub fn decode_session(&self, payload: &[u8]) -> Result<OperatorSession, DecodeError> {
        self.decode(payload)
    }

    /// Decodes a `presence` payload.
    pub fn decode_presence(&self, payload: &[u8]) -> Result<Presence, DecodeError> {
        self.decode(payload)
    }

    /// Encodes a message as compact JSON, failing with [`EncodeError::Oversized`] when
    /// receivers with this codec's limit would drop it.
    pub fn encode<M: Message>(&self, message: &M) -> Result<Vec<u8>, EncodeError> {
        let payload =
            serde_json::to_vec(message).map_err(|e| EncodeError::Serialize(e.to_string()))?;
        if payload.len() > self.max_payload {
            return Err(EncodeError::Oversized { size: payload.len(), limit: self.max_payload });
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::examples::{self, DEVICE_ID, REQUEST_ID};
    use crate::message::{PresenceState, ResponseStatus};

    fn codec() -> Codec {
        Codec::default()
    }

    #[test]
    fn default_limit_is_64_kib() {
        assert_eq!(codec().max_payload, 65_536);
        assert_eq!(Codec::new(10).max_payload, 10);
    }

    #[test]
    fn decodes_every_example() {
        let c = codec();
        for (kind, example) in examples::ALL {
            let bytes = example.as_bytes();
            let ok = match kind {
                "desired" => c.decode_desired(bytes).map(|m| c.encode(&m)),
                "reported" => c.decode_reported(bytes).map(|m| c.encode(&m)),
                "get" => c.decode_get(bytes).map(|m| c.encode(&m)),
                "request" => c.decode_request(bytes).map(|m| c.encode(&m)),
                "response" => c.decode_response(bytes).map(|m| c.encode(&m)),
                "presence" => c.decode_presence(bytes).map(|m| c.encode(&m)),
                "session" => c.decode_session(bytes).map(|m| c.encode(&m)),
                other => panic!("unknown kind {other}"),
            };
            let encoded = ok
                .unwrap_or_else(|e| panic!("{kind}: {e}"))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let again: Value = serde_json::from_slice(&encoded).unwrap();
            let original: Value = serde_json::from_str(example).unwrap();
            assert_eq!(again, original, "{kind} does not round-trip");
        }
    }

    #[test]
    fn encode_is_compact_json_with_version() {
        let c = codec();
        assert_eq!(c.encode(&TwinGet::default()), Ok(br#"{"v":1}"#.to_vec()));
        let presence = Presence::new(PresenceState::Offline, 7, 2);
        assert_eq!(
            String::from_utf8(c.encode(&presence).unwrap()).unwrap(),
            r#"{"v":1,"state":"offline","boot":7,"conn":2}"#
        );
    }

    #[test]
    fn oversized_is_checked_first() {
        let c = Codec::new(16);
        let garbage = vec![b'x'; 17];
        assert_eq!(
            c.decode_reported(&garbage),
            Err(DecodeError::Oversized { size: 17, limit: 16 })
        );
        assert_eq!(c.decode_get(br#"{"v":1}"#), Ok(TwinGet::default()));
        let big =
            format!(r#"{{"v":1,"boot":1,"seq":1,"reported":{{"k":"{}"}}}}"#, "x".repeat(70_000));
        let result = codec().decode_reported(big.as_bytes());
        assert_eq!(result.as_ref().map_err(DecodeError::reason).err(), Some("oversized"));
        assert!(matches!(result, Err(DecodeError::Oversized { limit: 65_536, .. })));
    }

    #[test]
    fn encode_refuses_what_receivers_would_drop() {
        let mut reported = Map::new();
        reported.insert("k".into(), json!("x".repeat(100)));
        let msg = ReportedMessage::patch(1, 1, reported);
        assert!(matches!(
            Codec::new(64).encode(&msg),
            Err(EncodeError::Oversized { limit: 64, .. })
        ));
        let payload = codec().encode(&msg).unwrap();
        assert_eq!(codec().decode_reported(&payload), Ok(msg));
    }

    #[test]
    fn empty_payload_is_a_cleared_retained_message() {
        assert_eq!(codec().decode_desired(b""), Err(DecodeError::Empty));
        assert_eq!(codec().decode_presence(b""), Err(DecodeError::Empty));
    }

    #[test]
    fn malformed_payloads() {
        let c = codec();
        for payload in [
            &b"not json"[..],
            b"{",
            b"\xff\xfe",
            b"[1,2]",
            b"\"v\"",
            b"null",
            br#"{"v":"1"}"#,
            br#"{"v":1.0}"#,
            br#"{"v":-1}"#,
        ] {
            let result = c.decode_get(payload);
            assert!(
                matches!(result, Err(DecodeError::Malformed(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(payload)
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(c.decode_get(deep.as_bytes()), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn wrong_or_missing_version() {
        let c = codec();
        assert_eq!(c.decode_get(br#"{"v":2}"#), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(c.decode_get(br#"{"v":0}"#), Err(DecodeError::UnsupportedVersion(0)));
        assert_eq!(c.decode_get(br#"{}"#), Err(DecodeError::MissingVersion));
        // The version is checked before the fields of a newer schema are looked at.
        assert_eq!(
            c.decode_reported(br#"{"v":2,"cursor":"7:12"}"#),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(c.decode_reported(br#"{"boot":1,"seq":1}"#), Err(DecodeError::MissingVersion));
    }

    #[test]
    fn missing_and_mistyped_fields() {
        let c = codec();
        let malformed = |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::Malformed(_)));
        assert!(malformed(c.decode_reported(br#"{"v":1,"seq":1}"#).map(drop)));
        assert!(malformed(c.decode_reported(br#"{"v":1,"boot":-1,"seq":1}"#).map(drop)));
        assert!(malformed(
            c.decode_reported(br#"{"v":1,"boot":1,"seq":1,"reported":[]}"#).map(drop)
        ));
        assert!(malformed(
            c.decode_desired(
                br#"{"v":1,"epoch":"e","version":1,"issuedAt":"2025-05-01T12:00:00Z"}"#
            )
            .map(drop)
        ));
        assert!(malformed(c.decode_desired(br#"{"v":1,"epoch":"e","version":1,"issued_at":"2025-05-01T12:00:00Z","desired":{}}"#).map(drop)));
        assert!(malformed(
            c.decode_request(
                br#"{"v":1,"id":"r1","method":"reboot","issuedAt":"2025-05-01T12:00:00Z"}"#
            )
            .map(drop)
        ));
        assert!(malformed(
            c.decode_response(br#"{"v":1,"id":"r1","seq":1,"status":"Done","code":200,"boot":1}"#)
                .map(drop)
        ));
        assert!(malformed(c.decode_response(br#"{"v":1,"id":"r1","seq":1,"status":"Succeeded","code":200,"progress":300,"boot":1}"#).map(drop)));
        assert!(malformed(
            c.decode_presence(br#"{"v":1,"state":"away","boot":1,"conn":1}"#).map(drop)
        ));
        assert!(malformed(c.decode_presence(br#"{"v":1,"state":"online","boot":1}"#).map(drop)));
        assert!(malformed(
            c.decode_presence(br#"{"v":1,"state":"online","boot":1,"conn":1,"mqtt":"4"}"#)
                .map(drop)
        ));
    }

    #[test]
    fn invalid_fields() {
        let c = codec();
        let invalid = |r: Result<(), DecodeError>| r.map_err(|e| e.reason()) == Err("invalid");
        assert!(invalid(c.decode_request(br#"{"v":1,"id":"r_1","method":"reboot","issuedAt":"2025-05-01T12:00:00Z","expiresAt":"2025-05-01T12:00:30Z"}"#).map(drop)));
        assert!(invalid(c.decode_request(br#"{"v":1,"id":"r1","method":"reboot","issuedAt":"2025-05-01T12:00:00Z","expiresAt":"tomorrow"}"#).map(drop)));
        assert!(invalid(c.decode_response(br#"{"v":1,"id":"r1","seq":1,"status":"InProgress","code":202,"progress":101,"boot":1}"#).map(drop)));
        assert!(invalid(
            c.decode_reported(br#"{"v":1,"boot":1,"seq":1,"ts":"1746100800"}"#).map(drop)
        ));
        assert!(invalid(
            c.decode_desired(
                br#"{"v":1,"epoch":"","version":1,"issuedAt":"2025-05-01T12:00:00Z","desired":{}}"#
            )
            .map(drop)
        ));
    }

    #[test]
    fn inbound_dispatches_on_topic() {
        let c = codec();
        let topics = Topics::default();
        let cases = [
            (topics.desired(DEVICE_ID), examples::DESIRED, "desired"),
            (topics.reported(DEVICE_ID), examples::REPORTED_FULL, "reported"),
            (topics.get(DEVICE_ID), examples::GET, "get"),
            (topics.request(DEVICE_ID, "reboot", REQUEST_ID), examples::REQUEST, "request"),
            (topics.response(DEVICE_ID, REQUEST_ID), examples::RESPONSE_ACCEPTED, "response"),
            (topics.presence(DEVICE_ID), examples::PRESENCE_ONLINE, "presence"),
        ];
        for (topic, payload, kind) in cases {
            let inbound = c.decode_inbound(&topics, &topic, payload.as_bytes());
            let inbound = inbound.unwrap_or_else(|e| panic!("{topic}: {e}"));
            assert_eq!(inbound.device_id(), DEVICE_ID);
            let got = match &inbound {
                Inbound::Desired { .. } => "desired",
                Inbound::Reported { .. } => "reported",
                Inbound::Get { .. } => "get",
                Inbound::Request { .. } => "request",
                Inbound::Response { .. } => "response",
                Inbound::Presence { .. } => "presence",
            };
            assert_eq!(got, kind);
        }
        let Ok(Inbound::Response { message, .. }) = c.decode_inbound(
            &topics,
            &topics.response(DEVICE_ID, REQUEST_ID),
            examples::RESPONSE_SUCCEEDED.as_bytes(),
        ) else {
            panic!("not a response")
        };
        assert_eq!(message.status, ResponseStatus::Succeeded);
    }

    #[test]
    fn inbound_rejects_ids_that_do_not_match_the_topic() {
        let c = codec();
        let topics = Topics::default();
        let other_response = topics.response(DEVICE_ID, "0000-other");
        let result =
            c.decode_inbound(&topics, &other_response, examples::RESPONSE_ACCEPTED.as_bytes());
        assert!(matches!(result, Err(DecodeError::InvalidField(_))), "{result:?}");

        let other_method = topics.request(DEVICE_ID, "identify", REQUEST_ID);
        let result = c.decode_inbound(&topics, &other_method, examples::REQUEST.as_bytes());
        assert!(matches!(result, Err(DecodeError::InvalidField(_))), "{result:?}");

        let parsed = topics.parse(&topics.response(DEVICE_ID, REQUEST_ID)).unwrap();
        let response = c.decode_response(examples::RESPONSE_ACCEPTED.as_bytes()).unwrap();
        assert_eq!(check_topic(&parsed, &response), Ok(()));
        let presence = c.decode_presence(examples::PRESENCE_ONLINE.as_bytes()).unwrap();
        assert!(matches!(check_topic(&parsed, &presence), Err(DecodeError::InvalidField(_))));
    }

    #[test]
    fn inbound_drops_unknown_topics_and_bad_payloads() {
        let c = codec();
        let topics = Topics::default();
        assert_eq!(
            c.decode_inbound(&topics, "other/d1/presence", examples::PRESENCE_ONLINE.as_bytes()),
            Err(DecodeError::UnknownTopic)
        );
        assert_eq!(
            c.decode_inbound(&topics, "kubetwin/v1/d1/twin/patch", b"{}"),
            Err(DecodeError::UnknownTopic)
        );
        assert!(matches!(
            c.decode_inbound(
                &topics,
                "kubetwin/v1/D1/presence",
                examples::PRESENCE_ONLINE.as_bytes()
            ),
            Err(DecodeError::InvalidField(_))
        ));
        // A payload of the wrong kind for the topic fails on its missing fields.
        assert!(matches!(
            c.decode_inbound(&topics, &topics.presence(DEVICE_ID), examples::GET.as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            c.decode_inbound(&topics, &topics.reported(DEVICE_ID), br#"{"v":3}"#),
            Err(DecodeError::UnsupportedVersion(3))
        );
    }
}
