//! The persisted state of one simulated device: `{state-dir}/{id}.json`, written with
//! write-then-rename so that a reader never sees a partial file.

use std::io;
use std::path::{Path, PathBuf};

use kubetwin_protocol::{AppliedVersion, RebootState, RecentRequests};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Errors reading or writing a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read or written.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid ledger.
    #[error("ledger {path} is corrupt: {source}")]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// A reboot that was accepted (and recorded as executed) but not yet answered `Succeeded`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingReboot {
    /// Id of the reboot request.
    pub request_id: String,
    /// MQTT 5 Response Topic of the request, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data of the request, if it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<Vec<u8>>,
    /// The restart is a factory reset: the next boot starts from factory state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub factory_reset: bool,
}

/// Persisted state of one device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Boot counter of the current (or last) boot; 0 before the first boot.
    #[serde(default)]
    pub boot: u64,
    /// RFC 3339 start of the boot that followed the last reboot, if any reboot happened.
    #[serde(default)]
    pub last_reboot: Option<String>,
    /// Desired version last applied.
    #[serde(default)]
    pub applied: Option<AppliedVersion>,
    /// Desired properties last applied (copied into the reported properties).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// The `reboot` reported block of the last reboot, if any.
    #[serde(default)]
    pub reboot: Option<RebootState>,
    /// A reboot accepted but not answered `Succeeded` yet.
    #[serde(default)]
    pub pending_reboot: Option<PendingReboot>,
    /// Requests answered Failed on purpose (--fail-first-requests).
    #[serde(default)]
    pub injected_failures: u32,
    /// Every request id ever executed, in order (a request is executed at most once).
    #[serde(default)]
    pub executed: Vec<String>,
    /// Last response sent for each recent request id.
    #[serde(default)]
    pub recent: RecentRequests,
    /// Last load-mode telemetry counter published by this run (saved with the ledger, so a
    /// benchmark can check that the final value reached the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<u64>,
    /// What the device has reported so far: every reported message it sent, applied in order
    /// (so a test can compare it with the Device's `status.reported`).
    #[serde(default)]
    pub reported: Map<String, Value>,
    /// `(boot, seq)` of the last reported message sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<(u64, u64)>,
    /// RFC 3339 start of the boot that followed the last factory reset, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_factory_reset: Option<String>,
    /// Firmware version running, once an update changed it (before: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_current: Option<String>,
    /// The last firmware update started, and where it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_update: Option<FirmwareUpdate>,
}

/// A firmware update the device started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareUpdate {
    /// What to install.
    pub order: kubetwin_protocol::FirmwareOrder,
    /// Where the update is.
    pub state: kubetwin_protocol::FirmwareState,
    /// Percent of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Result code of the attempt, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// SHA-256 of the downloaded image (lowercase hex), once downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The ledger file of `device_id` under `state_dir`: `{state_dir}/{device_id}.json`.
pub fn ledger_path(state_dir: &Path, device_id: &str) -> PathBuf {
    state_dir.join(format!("{device_id}.json"))
}

/// Reads the ledger of `device_id` under `state_dir`; `Ok(None)` if the device never ran.
pub fn read_ledger(state_dir: &Path, device_id: &str) -> Result<Option<Ledger>, LedgerError> {
    Ledger::load(&ledger_path(state_dir, device_id))
}

impl Ledger {
    /// Reads a ledger file; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, LedgerError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LedgerError::Io { path: path.to_owned(), source });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LedgerError::Corrupt { path: path.to_owned(), source })
    }

    /// Writes the ledger to `path` through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<(), LedgerError> {
        let io_err = |source| LedgerError::Io { path: path.to_owned(), source };
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|source| LedgerError::Corrupt { path: path.to_owned(), source })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, bytes).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    }

    /// Whether the request id was ever executed.
    pub fn was_executed(&self, request_id: &str) -> bool {
        self.executed.iter().any(|id| id == request_id)
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_protocol::{MethodResponse, RebootStatus, ResponseStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_ledger_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_ledger(dir.path(), "dev-1").unwrap().is_none());
        assert_eq!(ledger_path(dir.path(), "dev-1"), dir.path().join("dev-1.json"));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut recent = RecentRequests::default();
        recent.record(MethodResponse::new("r1", ResponseStatus::Succeeded, 3, 2));
        let mut properties = Map::new();
        properties.insert("led".into(), json!({"color": "green"}));
        let ledger = Ledger {
            boot: 3,
            last_reboot: Some("2025-05-01T12:00:00Z".into()),
            applied: Some(AppliedVersion { epoch: "e".into(), version: 4, revision: 0 }),
            properties,
            reboot: Some(RebootState::new(RebootStatus::Done, "r1")),
            pending_reboot: Some(PendingReboot {
                request_id: "r2".into(),
                response_topic: Some("t/r2".into()),
                correlation_data: Some(b"r2".to_vec()),
                factory_reset: true,
            }),
            injected_failures: 1,
            executed: vec!["r1".into(), "r2".into()],
            recent,
            telemetry: Some(12),
            reported: Map::from_iter([("led".to_owned(), json!({"color": "green"}))]),
            last_reported: Some((3, 7)),
            last_factory_reset: Some("2025-05-01T11:00:00Z".into()),
            firmware_current: Some("1.1.0".into()),
            firmware_update: None,
        };
        let path = ledger_path(dir.path(), "dev-1");
        ledger.save(&path).unwrap();
        let back = read_ledger(dir.path(), "dev-1").unwrap().unwrap();
        assert_eq!(back, ledger);
        assert!(back.was_executed("r2"));
        assert!(!back.was_executed("r3"));
        // No temporary file is left behind.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);

        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["boot"], json!(3));
        assert_eq!(raw["lastReboot"], json!("2025-05-01T12:00:00Z"));
        assert_eq!(raw["applied"], json!({"epoch": "e", "version": 4}));
        assert_eq!(raw["executed"], json!(["r1", "r2"]));
        assert_eq!(raw["recent"]["responses"][0]["id"], json!("r1"));
        assert_eq!(raw["telemetry"], json!(12));
        assert_eq!(raw["reported"], json!({"led": {"color": "green"}}));
        assert_eq!(raw["lastReported"], json!([3, 7]));
    }

    #[test]
    fn tolerant_of_missing_fields_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger_path(dir.path(), "d");
        std::fs::write(&path, br#"{"boot": 9}"#).unwrap();
        let ledger = Ledger::load(&path).unwrap().unwrap();
        assert_eq!(ledger.boot, 9);
        assert!(ledger.executed.is_empty() && ledger.recent.is_empty());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(Ledger::load(&path), Err(LedgerError::Corrupt { .. })));
    }
}
