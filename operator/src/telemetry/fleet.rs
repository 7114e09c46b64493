//! Fleet gauges for dashboards: Devices by connection state, by sync, by firmware version (the
//! most common versions by name, the rest as `other`, so the label set stays bounded), and
//! unfinished requests by kind and phase. Counted from the caches every [`REFRESH`], never per
//! event, so they cost nothing on the paths that handle device messages.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::runtime::reflector::Store;
use kubetwin_api::{ConnectionState, MethodRequest, RebootRequest};
use serde::Deserialize;
use tracing::error;

pub use super::metrics::FleetCounts;
use super::metrics::Metrics;
use crate::{
    k8s::kind_label,
    methods::{engine::Phase, resource::RequestResource},
    twin::cache::CachedDevice,
};

/// How often the gauges are recounted.
pub const REFRESH: Duration = Duration::from_secs(15);
/// Firmware versions shown by name; the others are summed as [`OTHER_VERSIONS`].
pub const MAX_FIRMWARE_VERSIONS: usize = 20;
/// The firmware label of versions beyond the most common [`MAX_FIRMWARE_VERSIONS`].
pub const OTHER_VERSIONS: &str = "other";
/// The firmware label of Devices that have not reported a version.
pub const NO_VERSION: &str = "unknown";

fn connection_label(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connected => "Connected",
        ConnectionState::Disconnected => "Disconnected",
        ConnectionState::Unknown => "Unknown",
    }
}

/// What the gauges read of a Device: its connection state, sync and firmware version (read
/// from the cached text without building the whole Device).
#[derive(Debug, Default, Deserialize)]
pub struct Gauged {
    #[serde(default)]
    status: Option<GaugedStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GaugedStatus {
    #[serde(default)]
    connection: Option<GaugedConnection>,
    #[serde(default)]
    in_sync: Option<bool>,
    #[serde(default)]
    firmware: Option<GaugedFirmware>,
}

#[derive(Debug, Default, Deserialize)]
struct GaugedConnection {
    #[serde(default)]
    state: ConnectionState,
}

#[derive(Debug, Default, Deserialize)]
struct GaugedFirmware {
    #[serde(default)]
    current: Option<String>,
}

/// Counts `devices`.
pub fn count_devices(devices: impl Iterator<Item = Gauged>) -> FleetCounts {
    // Every connection state and sync value, and the unknown version, exist at zero: a gauge
    // that drops to no series would read as "no data", not as 0.
    let mut counts = FleetCounts {
        connection: ["Connected", "Disconnected", "Unknown"].map(|c| (c, 0)).into(),
        in_sync: ["true", "false", "unknown"].map(|s| (s, 0)).into(),
        ..FleetCounts::default()
    };
    let mut versions: BTreeMap<String, i64> = BTreeMap::from([(NO_VERSION.to_string(), 0)]);
    for device in devices {
        let status = device.status.as_ref();
        let state = status.and_then(|s| s.connection.as_ref()).map(|c| c.state).unwrap_or_default();
        *counts.connection.entry(connection_label(state)).or_default() += 1;
        let sync = match status.and_then(|s| s.in_sync) {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        };
        *counts.in_sync.entry(sync).or_default() += 1;
        let version = status.and_then(|s| s.firmware.as_ref()?.current.clone());
        *versions.entry(version.unwrap_or_else(|| NO_VERSION.to_string())).or_default() += 1;
    }
    // The most common versions by name (ties: by name), the rest together.
    let mut ranked: Vec<(String, i64)> = versions.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (rank, (version, n)) in ranked.into_iter().enumerate() {
        let label = if rank < MAX_FIRMWARE_VERSIONS { version } else { OTHER_VERSIONS.into() };
        *counts.firmware.entry(label).or_default() += n;
    }
    counts
}

/// Adds the unfinished requests of kind `R` to `counts` (every unfinished phase, at zero if
/// none).
pub fn count_requests<'a, R: RequestResource + 'a>(
    counts: &mut FleetCounts,
    requests: impl Iterator<Item = &'a R>,
) {
    use Phase::{Accepted, InProgress, Pending, Rebooting, Sent};
    for phase in [Pending, Sent, Accepted, InProgress, Rebooting] {
        counts.open_requests.entry((kind_label::<R>(), phase.as_str())).or_insert(0);
    }
    for request in requests {
        let phase = R::progress_of(request.current_status()).ok().and_then(|p| p.phase);
        let phase = phase.unwrap_or(Pending);
        if !phase.is_terminal() {
            *counts.open_requests.entry((kind_label::<R>(), phase.as_str())).or_default() += 1;
        }
    }
}

/// Recounts the gauges from the caches every [`REFRESH`], forever.
pub async fn run(
    devices: Store<CachedDevice>,
    reboots: Store<RebootRequest>,
    methods: Store<MethodRequest>,
    metrics: Arc<Metrics>,
) {
    loop {
        let device_list = devices.state();
        let mut counts = count_devices(device_list.iter().filter_map(|device| {
            device
                .read::<Gauged>()
                .inspect_err(|failure| {
                    // Left out of the gauges; its reconcile fails the same way, counted.
                    error!(device = %kube::ResourceExt::name_any(&**device), %failure, "a cached Device does not read back");
                })
                .ok()
        }));
        drop(device_list);
        count_requests(&mut counts, reboots.state().iter().map(|r| &**r));
        count_requests(&mut counts, methods.state().iter().map(|r| &**r));
        metrics.set_fleet(&counts);
        tokio::time::sleep(REFRESH).await;
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{ConnectionStatus, Device, DeviceSpec, DeviceStatus, FirmwareStatus};

    use super::*;

    fn device(state: ConnectionState, in_sync: Option<bool>, version: Option<&str>) -> Device {
        let mut device = Device::new("d", DeviceSpec::default());
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus { state, ..ConnectionStatus::default() }),
            in_sync,
            firmware: version
                .map(|v| FirmwareStatus { current: Some(v.into()), ..FirmwareStatus::default() }),
            ..DeviceStatus::default()
        });
        device
    }

    /// What the gauges read of `device`, read as the operator reads it: from its cached form.
    fn gauged(device: Device) -> Gauged {
        CachedDevice::new(device).expect("cacheable").read().expect("a cached Device reads back")
    }

    #[test]
    fn devices_are_counted_by_connection_sync_and_version() {
        use ConnectionState::{Connected, Disconnected};
        let fleet = [
            device(Connected, Some(true), Some("1.0")),
            device(Connected, Some(false), Some("1.1")),
            device(Disconnected, None, Some("1.0")),
            Device::new("new", DeviceSpec::default()),
        ];
        let counts = count_devices(fleet.into_iter().map(gauged));
        assert_eq!(
            counts.connection,
            BTreeMap::from([("Connected", 2), ("Disconnected", 1), ("Unknown", 1)])
        );
        assert_eq!(counts.in_sync, BTreeMap::from([("true", 1), ("false", 1), ("unknown", 2)]));
        let empty = count_devices(std::iter::empty());
        assert_eq!(empty.connection.values().sum::<i64>(), 0);
        assert_eq!((empty.connection.len(), empty.in_sync.len()), (3, 3), "all at zero");
        assert_eq!(empty.firmware, BTreeMap::from([(NO_VERSION.into(), 0)]));
        assert_eq!(
            counts.firmware,
            BTreeMap::from([("1.0".into(), 2), ("1.1".into(), 1), (NO_VERSION.into(), 1)])
        );
    }

    #[test]
    fn rare_firmware_versions_share_one_label() {
        // 25 versions: v00 on 30 devices, the others on one each.
        let mut fleet: Vec<Device> =
            (0..30).map(|_| device(ConnectionState::Connected, None, Some("v00"))).collect();
        fleet.extend(
            (1..25).map(|i| device(ConnectionState::Connected, None, Some(&format!("v{i:02}")))),
        );
        let counts = count_devices(fleet.into_iter().map(gauged));
        assert_eq!(counts.firmware.len(), MAX_FIRMWARE_VERSIONS + 1);
        assert_eq!(counts.firmware["v00"], 30);
        assert_eq!(counts.firmware[OTHER_VERSIONS], 5, "v20 … v24");
        assert_eq!(counts.firmware.values().sum::<i64>(), 54);
    }
}
