//! Property tests of the codec: whatever arrives, decoding never panics, and every valid
//! message survives encoding and decoding unchanged.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::{
    Codec, Inbound, Topics,
    message::{MethodResponse, Presence, PresenceState, ReportedMessage, ResponseStatus},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x6b74_7769_6e00_0001),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Topics made of the contract's words, ids good and bad, wildcards, NUL and non-ASCII.
fn topic() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just("kubetwin".to_string()),
        Just("v1".to_string()),
        Just("dev-1".to_string()),
        Just("twin".to_string()),
        Just("reported".to_string()),
        Just("desired".to_string()),
        Just("get".to_string()),
        Just("rpc".to_string()),
        Just("req".to_string()),
        Just("res".to_string()),
        Just("presence".to_string()),
        Just("+".to_string()),
        Just("#".to_string()),
        Just("\\0".to_string()),
        Just("é".repeat(300)),
        "[a-zA-Z0-9._-]{0,12}",
    ];
    prop::collection::vec(level, 0..8).prop_map(|levels| levels.join("/"))
}

/// Payloads: arbitrary bytes, or JSON objects close to the messages.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
    ];
    let field = prop_oneof![
        Just("v"),
        Just("boot"),
        Just("seq"),
        Just("conn"),
        Just("full"),
        Just("reported"),
        Just("state"),
        Just("id"),
        Just("status"),
        Just("code"),
        Just("epoch"),
        Just("version"),
        Just("issuedAt"),
        Just("desired"),
        Just("applied"),
        Just("progress"),
    ];
    let object = prop::collection::vec((field, json_value), 0..10).prop_map(|fields| {
        let map: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..200), object]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoding_never_panics_whatever_arrives(topic in topic(), payload in payload()) {
        let codec = Codec::new(1024);
        let topics = Topics::default();
        // Every outcome is fine except a panic.
        let _ = codec.decode_inbound(&topics, &topic, &payload);
        let _ = topics.parse(&topic);
    }

    #[test]
    fn valid_messages_round_trip(
        boot in 0u64..=crate::MAX_COUNTER,
        seq in 0u64..=crate::MAX_COUNTER,
        full in any::<bool>(),
        key in "[a-z]{1,8}",
        value in any::<i64>(),
        online in any::<bool>(),
    ) {
        let codec = Codec::default();
        let topics = Topics::default();
        let mut reported = Map::new();
        reported.insert(key, json!(value));
        let message = if full { ReportedMessage::full(boot, seq, reported) } else { ReportedMessage::patch(boot, seq, reported) };
        let bytes = codec.encode(&message).expect("encodes");
        let decoded = codec.decode_inbound(&topics, &topics.reported("dev-1"), &bytes);
        let round_tripped = match decoded {
            Ok(Inbound::Reported { message: m, .. }) => Some(m),
            _ => None,
        };
        prop_assert_eq!(round_tripped, Some(message));

        let state = if online { PresenceState::Online } else { PresenceState::Offline };
        let presence = Presence::new(state, boot, seq);
        let bytes = codec.encode(&presence).expect("encodes");
        prop_assert_eq!(codec.decode_presence(&bytes), Ok(presence));

        let response = MethodResponse::new("req-1", ResponseStatus::Accepted, boot, seq);
        let bytes = codec.encode(&response).expect("encodes");
        prop_assert_eq!(codec.decode_response(&bytes), Ok(response));
    }
}
