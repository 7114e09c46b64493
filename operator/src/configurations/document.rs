//! Which version and revision the desired document a device receives carries. Pure.
//!
//! A device applies a document only when its (version, revision) is higher than the one it
//! applied. The version is the Device's generation, which the API server keeps; the revision
//! grows when the document changes within a generation (a configuration changed, a firmware
//! order was released by a disruption budget). The revision is recorded in
//! `Device.status.document` before the document is published, so that a restarted operator
//! continues from it and never reuses a revision for other content.

use kubetwin_api::DocumentVersion;
use kubetwin_protocol::FirmwareOrder;
use serde_json::{Map, Value, json};

/// SHA-256 of the document's content (desired properties and firmware order), first 16 hex
/// digits.
pub fn digest(desired: &Map<String, Value>, firmware: Option<&FirmwareOrder>) -> String {
    // serde_json's map keeps keys sorted, so equal content gives equal bytes.
    let content = json!({ "desired": desired, "firmware": firmware }).to_string();
    let hash = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
    hash.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The version of the document with content `digest` for generation `generation`, given what
/// status recorded. `plain` is a document of the Device's own desired properties alone (no
/// configuration, no firmware order), which needs no record: its revision is 0.
pub fn document_version(
    generation: i64,
    digest: String,
    plain: bool,
    recorded: Option<&DocumentVersion>,
) -> DocumentVersion {
    let revision = match recorded.filter(|r| r.version == generation) {
        Some(r) if r.digest == digest => r.revision,
        Some(r) => r.revision + 1,
        None if plain => 0,
        None => 1,
    };
    DocumentVersion { version: generation, revision, digest }
}

/// Whether the document may be published now: its revision is recorded in the persisted
/// status (or it is revision 0, which any operator computes the same way).
pub fn publishable(wanted: &DocumentVersion, recorded: Option<&DocumentVersion>) -> bool {
    wanted.revision == 0 || recorded == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(version: i64, revision: i64, digest: &str) -> DocumentVersion {
        DocumentVersion { version, revision, digest: digest.into() }
    }

    #[test]
    fn the_revision_grows_only_with_new_content_within_a_generation() {
        let cases = [
            ("plain, nothing recorded", 3, "a", true, None, version(3, 0, "a")),
            ("a configuration applies, nothing recorded", 3, "b", false, None, version(3, 1, "b")),
            (
                "same content as recorded",
                3,
                "b",
                false,
                Some(version(3, 1, "b")),
                version(3, 1, "b"),
            ),
            (
                "a configuration changed",
                3,
                "c",
                false,
                Some(version(3, 1, "b")),
                version(3, 2, "c"),
            ),
            (
                "back to plain within the generation: still a higher revision",
                3,
                "a",
                true,
                Some(version(3, 2, "c")),
                version(3, 3, "a"),
            ),
            (
                "a new generation starts over",
                4,
                "c",
                false,
                Some(version(3, 2, "c")),
                version(4, 1, "c"),
            ),
            ("a new plain generation", 4, "a", true, Some(version(3, 2, "c")), version(4, 0, "a")),
        ];
        for (why, generation, content, plain, recorded, expected) in cases {
            let got = document_version(generation, content.into(), plain, recorded.as_ref());
            assert_eq!(got, expected, "{why}");
        }
    }

    #[test]
    fn a_new_revision_is_published_only_once_recorded() {
        let wanted = version(3, 2, "c");
        assert!(!publishable(&wanted, Some(&version(3, 1, "b"))), "record it first");
        assert!(!publishable(&wanted, None));
        assert!(publishable(&wanted, Some(&wanted)));
        assert!(publishable(&version(3, 0, "a"), None), "revision 0 needs no record");
    }

    #[test]
    fn the_digest_covers_properties_and_firmware_and_ignores_key_order() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"x":1,"y":2}"#).expect("json");
        let b: Map<String, Value> = serde_json::from_str(r#"{"y":2,"x":1}"#).expect("json");
        assert_eq!(digest(&a, None), digest(&b, None));
        assert_eq!(digest(&a, None).len(), 16);
        let order = FirmwareOrder {
            version: "2.0.0".into(),
            url: "http://fw/2.bin".into(),
            sha256: "a".repeat(64),
            size_bytes: None,
        };
        assert_ne!(digest(&a, None), digest(&a, Some(&order)));
    }
}
