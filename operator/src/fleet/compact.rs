//! Compact JSON values for what the fleet index keeps per device.
//!
//! A `serde_json` map is a B-tree whose every node has room for eleven entries, so even a
//! one-key object costs ~630 bytes; a device's reported properties (ten keys, one nested
//! object) took ~1.5 KB that way. Here an object is a boxed slice of exactly its entries, in
//! key order, and strings are boxed: the same properties take about a third. Conversions both
//! ways cannot fail.

use serde_json::{Number, Value};

/// A JSON value stored compactly.
#[derive(Clone, Debug, PartialEq)]
pub enum CompactValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` holds it.
    Number(Number),
    /// A string.
    String(Box<str>),
    /// An array.
    Array(Box<[CompactValue]>),
    /// An object.
    Object(CompactObject),
}

/// A JSON object stored compactly: its entries in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactObject(Box<[(Box<str>, CompactValue)]>);

impl CompactObject {
    /// The object of `entries` (a `Map` or a `BTreeMap`), compacted.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Self {
        let mut entries: Vec<(Box<str>, CompactValue)> =
            entries.into_iter().map(|(k, v)| (k.as_str().into(), CompactValue::new(v))).collect();
        // Key order, whatever order the source iterates in (serde_json's `preserve_order`
        // feature, if a dependency turned it on, would make it insertion order): equal objects
        // then give equal slices, and `get` can search.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        Self(entries.into_boxed_slice())
    }

    /// The object as a map of `serde_json` values (a `serde_json::Map`, or the API's `BTreeMap`, built
    /// directly rather than through one another).
    pub fn to_map<M: FromIterator<(String, Value)>>(&self) -> M {
        self.0.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&CompactValue> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| v)
    }
}

impl CompactValue {
    /// `value`, compacted.
    pub fn new(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::String(s.as_str().into()),
            Value::Array(items) => Self::Array(items.iter().map(Self::new).collect()),
            Value::Object(map) => Self::Object(CompactObject::new(map)),
        }
    }

    /// The value as a `serde_json` value.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.to_string()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(object) => Value::Object(object.to_map()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, json};

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
        let compact = CompactObject::new(&reported);
        assert_eq!(compact.to_map::<Map<_, _>>(), reported);
        assert_eq!(compact.get("rssi").map(CompactValue::to_value), Some(json!(-61)));
        assert_eq!(compact.get("led").map(CompactValue::to_value), Some(json!({"color": "green"})));
        assert_eq!(compact.get("missing"), None);
        assert_eq!(CompactObject::new(&Map::new()), CompactObject::default());
    }

    #[test]
    fn entries_are_kept_in_key_order_whatever_order_they_come_in() {
        let (a, b) = ("a".to_string(), "b".to_string());
        let (one, two) = (json!(1), json!(2));
        let backwards = CompactObject::new([(&b, &two), (&a, &one)]);
        let forwards = CompactObject::new([(&a, &one), (&b, &two)]);
        assert_eq!(backwards, forwards);
        assert_eq!(backwards.get("a").map(CompactValue::to_value), Some(json!(1)));
        assert_eq!(backwards.get("b").map(CompactValue::to_value), Some(json!(2)));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-zé ]{0,8}".prop_map(Value::String),
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
        fn any_value_round_trips_and_equality_is_the_value_s(a in json_value(), b in json_value()) {
            prop_assert_eq!(CompactValue::new(&a).to_value(), a.clone());
            prop_assert_eq!(CompactValue::new(&a) == CompactValue::new(&b), a == b);
        }
    }
}
