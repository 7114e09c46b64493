//! Firmware updates: the order in the desired document, and the block the device reports
//! while it downloads, verifies, applies and reboots into a new image.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DecodeError;

/// Reported key of the firmware block.
pub const KEY_FIRMWARE: &str = "firmware";

/// The image a device should run, in the desired document (`firmware`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareOrder {
    /// Version the image contains.
    pub version: String,
    /// Where to download it (http or https).
    pub url: String,
    /// SHA-256 of the image, lowercase hex.
    pub sha256: String,
    /// Size in bytes, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

impl FirmwareOrder {
    /// Checks the fields, failing with [`DecodeError::InvalidField`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |what: &str| Err(DecodeError::InvalidField(format!("firmware {what}")));
        if self.version.is_empty() || self.version.len() > 64 {
            return invalid("version must be 1-64 characters");
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return invalid("url must be http:// or https://");
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid("sha256 must be 64 hex digits");
        }
        Ok(())
    }
}

/// What the device is doing about its firmware.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum FirmwareState {
    /// Nothing under way.
    #[default]
    Idle,
    /// Downloading the image.
    Downloading,
    /// Checking the checksum.
    Verifying,
    /// Writing the image.
    Applying,
    /// Restarting into the new image.
    Rebooting,
    /// The update failed (`code` and `message` say why); the old image runs.
    Error,
    /// The new image did not boot; the device went back to the old one.
    Rolledback,
}

/// The `firmware` block of the reported properties.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedFirmware {
    /// Version running now.
    pub current: String,
    /// Version being installed (or last tried), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the device is doing.
    #[serde(default)]
    pub state: FirmwareState,
    /// Percent done of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// HTTP-like result code of the last attempt (200 done, 4xx/5xx failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the running image is committed (marked good after it booted and passed its
    /// checks, as A/B systems such as RAUC or SWUpdate do).
    #[serde(default)]
    pub committed: bool,
}

impl ReportedFirmware {
    /// The block in reported properties, if present and well formed.
    pub fn from_reported(reported: &Map<String, Value>) -> Option<Self> {
        reported.get(KEY_FIRMWARE).and_then(Self::from_value)
    }

    /// The block from its JSON value, if well formed.
    pub fn from_value(value: &Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }

    /// The block as a JSON value, for a reported message.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_reported_block_reads_back_and_bad_orders_are_refused() {
        let block = ReportedFirmware {
            current: "1.0.0".into(),
            target: Some("1.1.0".into()),
            state: FirmwareState::Downloading,
            progress: Some(40),
            ..Default::default()
        };
        let mut reported = Map::new();
        reported.insert(KEY_FIRMWARE.into(), block.to_value());
        assert_eq!(ReportedFirmware::from_reported(&reported), Some(block));
        assert_eq!(
            reported[KEY_FIRMWARE],
            json!({"current": "1.0.0", "target": "1.1.0", "state": "downloading", "progress": 40, "committed": false})
        );
        let good = FirmwareOrder {
            version: "1.1.0".into(),
            url: "http://files/fw.bin".into(),
            sha256: "a".repeat(64),
            size_bytes: None,
        };
        assert_eq!(good.validate(), Ok(()));
        let ftp = FirmwareOrder { url: "ftp://files/fw.bin".into(), ..good.clone() };
        assert!(ftp.validate().is_err());
        let short = FirmwareOrder { sha256: "abc".into(), ..good };
        assert!(short.validate().is_err());
    }
}
