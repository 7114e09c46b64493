//! Compact JSON objects for what the fleet index keeps per device.
//!
//! A `serde_json` map is a B-tree whose every node has room for eleven entries (~630 bytes for
//! a one-key object), and a boxed slice of entries with a boxed string per key and string value
//! still took ~600 bytes for a device's reported properties (ten keys, one nested object):
//! one allocation per key and string. Here an object is its JSON text (keys in order at every
//! level, no spaces), one allocation: ~190 bytes for the same properties. Reading it parses
//! the text, a few microseconds once per accepted reported message and per status computed.

use serde_json::{Map, Value};

use crate::error::ReadBackError;

/// A JSON object stored compactly: its canonical JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactObject(Box<str>);

impl Default for CompactObject {
    /// The empty object.
    fn default() -> Self {
        Self("{}".into())
    }
}

impl CompactObject {
    /// `object`, as its canonical text. `serde_json`'s map keeps its keys in order (a test
    /// below fails should a dependency turn on its `preserve_order` feature), so equal
    /// objects give equal texts.
    pub fn new(object: Map<String, Value>) -> Self {
        Self(Value::Object(object).to_string().into_boxed_str())
    }

    /// The object of `entries` (the API's `BTreeMap`, or any other), compacted.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Self {
        Self::new(entries.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The object as a map of `serde_json` values (a `serde_json::Map`, or the API's
    /// `BTreeMap`).
    pub fn to_map<M: FromIterator<(String, Value)>>(&self) -> Result<M, ReadBackError> {
        let map: Map<String, Value> = serde_json::from_str(&self.0)?;
        Ok(map.into_iter().collect())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Value>, ReadBackError> {
        let mut map: Map<String, Value> = self.to_map()?;
        Ok(map.remove(key))
    }

    /// Length of the object's JSON text in bytes (what the reported bound counts).
    pub fn text_len(&self) -> usize {
        self.0.len()
    }

    /// A kept object whose text does not read back, as a bug would leave it (for tests of
    /// what its readers do then).
    #[cfg(test)]
    pub(crate) fn unreadable() -> Self {
        Self("{\"cut\":".into())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_reported_map_goes_through_unchanged_and_keys_are_found() {
        let reported = object(json!({
            "firmwareVersion": "1.4.2", "led": {"color": "green"}, "temperature": 21.5,
            "uptimeSeconds": 3600, "rssi": -61, "flags": [true, null, "x"], "empty": {},
        }));
        let compact = CompactObject::new(reported.clone());
        assert_eq!(compact.to_map::<Map<_, _>>().unwrap(), reported);
        assert_eq!(compact.get("rssi").unwrap(), Some(json!(-61)));
        assert_eq!(compact.get("led").unwrap(), Some(json!({"color": "green"})));
        assert_eq!(compact.get("missing").unwrap(), None);
        assert_eq!(CompactObject::new(Map::new()), CompactObject::default());
        assert_eq!(CompactObject::default().to_map::<Map<_, _>>().unwrap(), Map::new());
    }

    #[test]
    fn keys_are_in_order_at_every_level_whatever_order_they_come_in() {
        let mut inner = Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!(2));
        let mut outer = Map::new();
        outer.insert("y".into(), Value::Object(inner));
        outer.insert("b".into(), json!([{"d": 1, "c": 2}]));
        let compact = CompactObject::new(outer);
        assert_eq!(&*compact.0, r#"{"b":[{"c":2,"d":1}],"y":{"a":2,"z":1}}"#);
        let (a, b) = ("a".to_string(), "b".to_string());
        let (one, two) = (json!(1), json!(2));
        assert_eq!(
            CompactObject::of([(&b, &two), (&a, &one)]),
            CompactObject::of([(&a, &one), (&b, &two)])
        );
    }

    #[test]
    fn text_that_does_not_read_back_is_an_error_not_an_empty_object() {
        let unreadable = CompactObject::unreadable();
        assert!(unreadable.to_map::<Map<_, _>>().is_err());
        assert!(unreadable.get("cut").is_err());
    }

    #[test]
    fn the_text_is_what_the_reported_bound_counts() {
        let reported = object(json!({"a": "é", "b": [1, 2.5]}));
        let compact = CompactObject::new(reported.clone());
        assert_eq!(compact.text_len(), Value::Object(reported).to_string().len());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-zé \"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_object_round_trips_and_equality_is_the_object_s(
            a in prop::collection::btree_map("[a-z\"]{1,4}", json_value(), 0..5),
            b in prop::collection::btree_map("[a-z\"]{1,4}", json_value(), 0..5),
        ) {
            let (a, b): (Map<String, Value>, Map<String, Value>) =
                (a.into_iter().collect(), b.into_iter().collect());
            let compact = CompactObject::new(a.clone());
            prop_assert_eq!(compact.to_map::<Map<_, _>>().unwrap(), a.clone());
            prop_assert_eq!(compact == CompactObject::new(b.clone()), a == b);
        }
    }
}
