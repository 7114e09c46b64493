//! What a configuration's status and rollout read of each Device it targets: a
//! [`TargetedDevice`], read from the cache's text of the Device's spec and status.
//!
//! Why a projection: a configuration looks at every Device it targets on each pass (every 2 s
//! while its rollout runs, every 15 s otherwise). Read back whole, 100,000 targeted Devices
//! would be 100,000 typed Devices (conditions, connection, desired map) alive at once, several
//! hundred MiB for a moment; the status and the rollout need only a few fields of each.

use kube::ResourceExt;
use kubetwin_api::{Device, FirmwareStatus, device::AppliedConfiguration};
use serde::{Deserialize, de::IgnoredAny};

use crate::{error::ReadBackError, twin::cache::CachedDevice};

/// The fields of a targeted Device that a configuration's status and rollout read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetedDevice {
    /// The Device's name.
    pub name: String,
    /// The Device names its own `spec.firmware` (which wins over any configuration's).
    pub own_firmware: bool,
    /// `status.inSync`: the device applied the latest desired document.
    pub in_sync: bool,
    /// `status.configurations`: the configurations the last desired document carried.
    pub configurations: Vec<AppliedConfiguration>,
    /// `status.firmware`: where its firmware update stands.
    pub firmware: Option<FirmwareStatus>,
}

/// The part of the cache's `{"spec": …, "status": …}` text a [`TargetedDevice`] reads; every
/// other field is skipped as it is parsed.
#[derive(Deserialize)]
struct Text {
    spec: SpecText,
    #[serde(default)]
    status: Option<StatusText>,
}

#[derive(Deserialize)]
struct SpecText {
    #[serde(default)]
    firmware: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusText {
    #[serde(default)]
    in_sync: Option<bool>,
    #[serde(default)]
    configurations: Vec<AppliedConfiguration>,
    #[serde(default)]
    firmware: Option<FirmwareStatus>,
}

impl TargetedDevice {
    /// What `cached` says, read from its text without building the whole Device.
    pub fn read(cached: &CachedDevice) -> Result<Self, ReadBackError> {
        let Text { spec, status } = cached.read()?;
        let (in_sync, configurations, firmware) = match status {
            Some(s) => (s.in_sync == Some(true), s.configurations, s.firmware),
            None => (false, Vec::new(), None),
        };
        Ok(Self {
            name: cached.name_any(),
            own_firmware: spec.firmware.is_some(),
            in_sync,
            configurations,
            firmware,
        })
    }

    /// What a whole `device` says.
    pub fn of(device: &Device) -> Self {
        let status = device.status.as_ref();
        Self {
            name: device.name_any(),
            own_firmware: device.spec.firmware.is_some(),
            in_sync: status.and_then(|s| s.in_sync) == Some(true),
            configurations: status.map(|s| s.configurations.clone()).unwrap_or_default(),
            firmware: status.and_then(|s| s.firmware.clone()),
        }
    }

    /// What the status recorded for `configuration` (its last persisted order).
    pub fn recorded(&self, configuration: &str) -> Option<&AppliedConfiguration> {
        self.configurations.iter().find(|c| c.name == configuration)
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{ConnectionStatus, DeviceSpec, DeviceStatus, FirmwarePhase, FirmwareTarget};

    use super::*;

    fn cached(device: &Device) -> CachedDevice {
        CachedDevice::new(device.clone()).expect("cacheable")
    }

    fn rolling_device() -> Device {
        let mut device = Device::new("d1", DeviceSpec::default());
        device.metadata.namespace = Some("fleet".into());
        device.status = Some(DeviceStatus {
            in_sync: Some(true),
            configurations: vec![AppliedConfiguration {
                name: "fw".into(),
                generation: 3,
                firmware: Some("2.0.0".into()),
                rollback: false,
            }],
            firmware: Some(FirmwareStatus {
                current: Some("1.0.0".into()),
                target: Some("2.0.0".into()),
                phase: Some(FirmwarePhase::Applying),
                message: Some("writing the image".into()),
                ..Default::default()
            }),
            connection: Some(ConnectionStatus::default()),
            reported: Some([("mode".to_string(), serde_json::json!("normal"))].into()),
            ..Default::default()
        });
        device
    }

    #[test]
    fn reads_from_the_cache_what_the_whole_device_says() {
        let cases = [
            ("a device in a rollout", rolling_device()),
            ("a device with no status yet", Device::new("d2", DeviceSpec::default())),
            ("a device with its own firmware", {
                let mut d = rolling_device();
                d.spec.firmware = Some(FirmwareTarget {
                    version: "9.9.9".into(),
                    url: "http://firmware/9.9.9.bin".into(),
                    sha256: "0".repeat(64),
                    ..Default::default()
                });
                d
            }),
            ("a device out of sync", {
                let mut d = rolling_device();
                if let Some(s) = d.status.as_mut() {
                    s.in_sync = Some(false);
                }
                d
            }),
        ];
        for (case, device) in cases {
            let read = TargetedDevice::read(&cached(&device)).expect("reads");
            assert_eq!(read, TargetedDevice::of(&device), "{case}");
        }
    }

    #[test]
    fn finds_the_record_of_a_configuration_by_name() {
        let device = TargetedDevice::of(&rolling_device());
        assert_eq!(device.recorded("fw").map(|r| r.generation), Some(3));
        assert_eq!(device.recorded("other"), None);
        assert!(device.in_sync);
        assert!(!device.own_firmware);
        assert_eq!(device.firmware.and_then(|f| f.phase), Some(FirmwarePhase::Applying));
    }
}
