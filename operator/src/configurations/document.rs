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

/// The newer of the document version the persisted status records (as the watch cache shows
/// it) and the one this process last offered to status (the cache may not show that write
/// yet): new revisions are counted from it, so that no revision is given to two contents.
pub fn newest_record<'a>(
    cached: Option<&'a DocumentVersion>,
    offered: Option<&'a DocumentVersion>,
) -> Option<&'a DocumentVersion> {
    match (cached, offered) {
        (Some(c), Some(o)) if (o.version, o.revision) > (c.version, c.revision) => Some(o),
        (None, offered) => offered,
        (cached, _) => cached,
    }
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
    fn revisions_count_from_the_newest_record_so_none_is_given_twice() {
        let written = version(3, 3, "b");
        let stale = version(3, 2, "a");
        let cases = [
            (
                "the cache is behind this process's write",
                Some(&stale),
                Some(&written),
                Some(&written),
            ),
            ("the cache caught up", Some(&written), Some(&written), Some(&written)),
            (
                "a newer generation in the cache",
                Some(&version(4, 0, "c")),
                Some(&written),
                Some(&version(4, 0, "c")),
            ),
            ("nothing offered since the start", Some(&stale), None, Some(&stale)),
            ("offered, not yet in the cache", None, Some(&written), Some(&written)),
            ("nothing anywhere", None, None, None),
        ];
        for (why, cached, offered, expected) in cases {
            assert_eq!(newest_record(cached, offered), expected, "{why}");
        }
        // The stale cache's content again: a new revision, never revision 2 once more.
        let again =
            document_version(3, "a".into(), false, newest_record(Some(&stale), Some(&written)));
        assert_eq!(again, version(3, 4, "a"));
        assert!(!publishable(&again, Some(&stale)), "published once the cache shows it");
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
