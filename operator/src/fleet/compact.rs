//! Compact JSON objects for what the fleet index keeps per device.
//!
//! A `serde_json` map is a B-tree whose every node has room for eleven entries (~630 bytes for
//! a one-key object), and a boxed slice of entries with a boxed string per key and string value
//! still took ~600 bytes for a device's reported properties (ten keys, one nested object):
//! one allocation per key and string. Here an object is its JSON text (keys in order at every
//! level, no spaces), one allocation, compressed (LZ4's block format) against a dictionary
//! shared by the whole process: B3's reported properties keep 26 of their 196 bytes (77 when
//! every value differs from the dictionary's). Reading one decompresses and parses the text, a
//! few microseconds once per accepted reported message and per status computed.
//!
//! Why a dictionary learnt at run time, where the Device cache has a fixed one: what devices
//! report is the fleet's own vocabulary (its keys and the shapes of its values), which the code
//! cannot know. The devices of a fleet mostly report the same keys, so the first object of some
//! size the process compresses becomes the dictionary of every later one. An unusual first
//! object (or a hostile device's) only makes later texts compress less; it never changes what
//! they read back as.

use std::{fmt, sync::OnceLock};

use lz4_flex::block::{
    compress_prepend_size_with_dict, decompress_size_prepended_with_dict, uncompressed_size,
};
use serde_json::{Map, Value};

use crate::error::ReadBackError;

/// The shortest text that may become the [`DICTIONARY`] (a shorter one would teach little).
const DICTIONARY_MIN: usize = 64;

/// The most of that text the dictionary keeps (its start). Every compression reads the whole
/// dictionary, so a device that reports first with a large object must not make every later
/// report cost more; a fleet's keys show in its first kilobyte.
const DICTIONARY_MAX: usize = 1024;

/// The text of the first object of at least [`DICTIONARY_MIN`] bytes the process compressed
/// (at most [`DICTIONARY_MAX`] bytes of it; whether or not the object was then kept, as a
/// merged report found too large is not): the dictionary every later object is compressed
/// against. Set once and never changed, so one compressed text always decompresses with the
/// dictionary it was compressed with.
static DICTIONARY: OnceLock<Box<[u8]>> = OnceLock::new();

/// The dictionary `text` makes: its first [`DICTIONARY_MAX`] bytes.
fn dictionary_of(text: &str) -> Box<[u8]> {
    text.as_bytes().iter().take(DICTIONARY_MAX).copied().collect()
}

/// Which dictionary a kept object was compressed against (its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Against {
    /// None: compressed before the dictionary was set.
    Nothing = 0,
    /// The [`DICTIONARY`].
    Dictionary = 1,
}

impl Against {
    fn dictionary(self) -> &'static [u8] {
        match self {
            Against::Nothing => &[],
            Against::Dictionary => DICTIONARY.get().map(|d| &d[..]).unwrap_or_default(),
        }
    }
}

/// A JSON object stored compactly: its canonical JSON text, compressed (see the module's doc):
/// one byte naming the dictionary, then the text's length and its LZ4 block.
#[derive(Clone)]
pub struct CompactObject(Box<[u8]>);

impl Default for CompactObject {
    /// The empty object.
    fn default() -> Self {
        Self::compress("{}")
    }
}

impl PartialEq for CompactObject {
    /// Equal when the objects are: compression is deterministic, so texts compressed against
    /// the same dictionary are equal exactly when their bytes are; others are decompressed.
    fn eq(&self, other: &Self) -> bool {
        if self.against() == other.against() {
            return self.0 == other.0;
        }
        matches!((self.text(), other.text()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Eq for CompactObject {}

impl fmt::Debug for CompactObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Ok(text) => {
                f.debug_tuple("CompactObject").field(&String::from_utf8_lossy(&text)).finish()
            }
            Err(error) => f.debug_tuple("CompactObject").field(&error).finish(),
        }
    }
}

impl CompactObject {
    /// `object`, as its canonical text. `serde_json`'s map keeps its keys in order (a test
    /// below fails should a dependency turn on its `preserve_order` feature), so equal
    /// objects give equal texts.
    pub fn new(object: Map<String, Value>) -> Self {
        Self::compress(&Value::Object(object).to_string())
    }

    /// The object of `entries` (the API's `BTreeMap`, or any other), compacted.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Self {
        Self::new(entries.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// `text` compressed against the dictionary, which it becomes if none is set yet and it is
    /// long enough.
    fn compress(text: &str) -> Self {
        if text.len() >= DICTIONARY_MIN {
            DICTIONARY.get_or_init(|| dictionary_of(text));
        }
        let against =
            if DICTIONARY.get().is_some() { Against::Dictionary } else { Against::Nothing };
        Self::compress_against(text, against)
    }

    /// `text` compressed against the dictionary `against` names.
    fn compress_against(text: &str, against: Against) -> Self {
        let mut kept = vec![against as u8];
        kept.extend(compress_prepend_size_with_dict(text.as_bytes(), against.dictionary()));
        Self(kept.into_boxed_slice())
    }

    /// The dictionary this object was compressed against.
    fn against(&self) -> Against {
        match self.0.first() {
            Some(1) => Against::Dictionary,
            _ => Against::Nothing,
        }
    }

    /// The object's JSON text.
    fn text(&self) -> Result<Vec<u8>, ReadBackError> {
        let compressed = self.0.get(1..).unwrap_or_default();
        Ok(decompress_size_prepended_with_dict(compressed, self.against().dictionary())?)
    }

    /// The object as a map of `serde_json` values (a `serde_json::Map`, or the API's
    /// `BTreeMap`).
    pub fn to_map<M: FromIterator<(String, Value)>>(&self) -> Result<M, ReadBackError> {
        let map: Map<String, Value> = serde_json::from_slice(&self.text()?)?;
        Ok(map.into_iter().collect())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Value>, ReadBackError> {
        let mut map: Map<String, Value> = self.to_map()?;
        Ok(map.remove(key))
    }

    /// Length of the object's JSON text in bytes (what the reported bound counts), read from
    /// the kept length without decompressing. 0 only for a kept object that is not ours.
    pub fn text_len(&self) -> usize {
        uncompressed_size(self.0.get(1..).unwrap_or_default()).map_or(0, |(size, _)| size)
    }

    /// Bytes the object takes as kept (for the memory breakdown).
    pub fn kept_bytes(&self) -> usize {
        self.0.len()
    }

    /// A kept object whose text does not read back, as a bug would leave it (for tests of
    /// what its readers do then).
    #[cfg(test)]
    pub(crate) fn unreadable() -> Self {
        Self::compress("{\"cut\":")
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
        assert_eq!(compact.text().unwrap(), br#"{"b":[{"c":2,"d":1}],"y":{"a":2,"z":1}}"#);
        let (a, b) = ("a".to_string(), "b".to_string());
        let (one, two) = (json!(1), json!(2));
        assert_eq!(
            CompactObject::of([(&b, &two), (&a, &one)]),
            CompactObject::of([(&a, &one), (&b, &two)])
        );
    }

    #[test]
    fn objects_kept_before_and_after_the_dictionary_was_set_compare_by_content() {
        let reported = |temperature: f64| {
            object(json!({
                "firmwareVersion": "1.4.2", "led": {"color": "green"}, "mode": "normal",
                "temperature": temperature, "uptimeSeconds": 3600, "rssi": -61,
            }))
        };
        // Long enough to be the dictionary, should no other test have set it first.
        let kept = CompactObject::new(reported(21.5));
        assert!(DICTIONARY.get().is_some());
        assert_eq!(kept.against(), Against::Dictionary);
        let text = Value::Object(reported(21.5)).to_string();
        let before = CompactObject::compress_against(&text, Against::Nothing);
        assert_eq!(before.against(), Against::Nothing);
        assert_eq!(before.to_map::<Map<_, _>>().unwrap(), reported(21.5));
        assert_eq!(before, kept);
        assert_eq!(kept, before);
        assert_ne!(before, CompactObject::new(reported(22.0)));
        assert_eq!(before.text_len(), text.len());
        assert_eq!(kept.text_len(), text.len());
        assert!(format!("{kept:?}").contains("firmwareVersion"), "{kept:?}");
        // However large the object that sets it, the dictionary is its first kilobyte.
        let large = Value::Object(object(json!({"log": "x".repeat(5000)}))).to_string();
        assert_eq!(&*dictionary_of(&large), &large.as_bytes()[..DICTIONARY_MAX]);
        assert_eq!(&*dictionary_of("{}"), b"{}");
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
