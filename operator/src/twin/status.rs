//! What the operator writes into a Device's status: a pure function of the object, what is
//! known about the device, and the time.

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{
    ConnectionState, ConnectionStatus, Device, DeviceStatus, DocumentVersion, FirmwareTarget,
    condition::{ConditionStatus, DeviceCondition, DeviceReason},
    device::AppliedConfiguration,
};

use crate::{
    fleet::DeviceState,
    k8s::conditions::{ConditionUpdate, merge},
};

/// Why a Device cannot be served, independent of what the device says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An older Device (`namespace/name`) already uses the same device id.
    DuplicateDeviceId(String),
    /// The effective device id cannot be used on MQTT topics (the text says why).
    InvalidDeviceId(String),
    /// `spec.desired` serializes to more than the allowed bytes.
    DesiredTooLarge(usize),
}

fn condition(
    type_: DeviceCondition,
    status: ConditionStatus,
    reason: DeviceReason,
    message: String,
) -> ConditionUpdate {
    ConditionUpdate { type_: type_.as_str(), status, reason: reason.as_str(), message }
}

/// What the operator wants the device to have besides the Device object itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted<'a> {
    /// The firmware the device should run: its own spec.firmware or a configuration's.
    pub firmware: Option<&'a FirmwareTarget>,
    /// Why a pending firmware order is not sent yet (a disruption budget without room).
    pub firmware_held_back: Option<&'a str>,
    /// The version of the desired document (`None`: not decided yet; the status keeps the
    /// recorded one).
    pub document: Option<&'a DocumentVersion>,
    /// The DeviceConfigurations that apply, in merge order.
    pub configurations: &'a [AppliedConfiguration],
}

impl<'a> Wanted<'a> {
    /// The Device's own spec alone: no configuration, nothing held back.
    pub fn own(device: &'a Device) -> Self {
        Self { firmware: device.spec.firmware.as_ref(), ..Self::default() }
    }
}

/// Computes the status the operator wants for `device` at time `now`.
///
/// Device-side fields come from `state` when the operator holds one (otherwise the current
/// status is kept); the effective device id, observed generation and the `Connected`,
/// `InSync` and `Ready` conditions are derived. The device is in sync once it applied the
/// Device's generation at the document's revision or later.
pub fn desired_status(
    device: &Device,
    state: Option<&DeviceState>,
    problem: Option<&Problem>,
    wanted: &Wanted<'_>,
    now: Timestamp,
) -> Result<DeviceStatus, crate::error::Error> {
    use ConditionStatus::{False, True, Unknown};
    use DeviceCondition::{Connected, InSync, Ready, ReportedComplete};
    let mut existing = device.status.clone().unwrap_or_default();
    if let Some(state) = state {
        state.write_into(&mut existing)?;
    }
    let generation = device.metadata.generation;
    let connection = existing
        .connection
        .clone()
        .unwrap_or(ConnectionStatus { state: ConnectionState::Unknown, ..Default::default() });

    let connected = match connection.state {
        ConnectionState::Connected => condition(
            Connected,
            True,
            DeviceReason::Online,
            "The device is connected to the broker".into(),
        ),
        ConnectionState::Disconnected => condition(
            Connected,
            False,
            DeviceReason::Offline,
            connection.reason.clone().unwrap_or_else(|| "The device went offline".into()),
        ),
        ConnectionState::Unknown => condition(
            Connected,
            Unknown,
            DeviceReason::NoPresence,
            "The device has not announced its presence yet".into(),
        ),
    };
    let document = wanted.document.or(existing.document.as_ref());
    // The revision within this generation the device must have applied (0: any).
    let revision = document.filter(|d| Some(d.version) == generation).map_or(0, |d| d.revision);
    let in_sync = match (&existing.applied, &device.metadata.uid, generation) {
        (Some(applied), Some(uid), Some(generation))
            if &applied.epoch == uid
                && applied.version == generation
                && applied.revision() >= revision =>
        {
            condition(
                InSync,
                True,
                DeviceReason::Applied,
                if revision == 0 {
                    format!("The device applied generation {generation}")
                } else {
                    format!("The device applied generation {generation}, revision {revision}")
                },
            )
        }
        (Some(applied), Some(uid), Some(generation))
            if &applied.epoch == uid && applied.version == generation =>
        {
            condition(
                InSync,
                False,
                DeviceReason::Pending,
                format!(
                    "The device applied generation {generation}, revision {}; waiting for revision {revision} (a configuration or firmware order changed)",
                    applied.revision()
                ),
            )
        }
        (Some(applied), _, _) => condition(
            InSync,
            False,
            DeviceReason::Pending,
            format!(
                "The device applied generation {}; waiting for generation {}",
                applied.version,
                generation.unwrap_or_default()
            ),
        ),
        (None, _, _) => condition(
            InSync,
            Unknown,
            DeviceReason::NotReported,
            "The device has not reported which desired version it applied".into(),
        ),
    };
    let in_sync = match problem {
        Some(Problem::DesiredTooLarge(size)) => condition(
            InSync,
            False,
            DeviceReason::DesiredTooLarge,
            format!(
                "the desired document (spec.desired with the DeviceConfigurations that apply) is {size} bytes as JSON; at most {} bytes are sent to a device",
                kubetwin_api::device::MAX_DESIRED_BYTES
            ),
        ),
        _ => in_sync,
    };
    let ready = match problem {
        Some(Problem::DuplicateDeviceId(owner)) => condition(
            Ready,
            False,
            DeviceReason::DuplicateDeviceId,
            format!(
                "deviceId {} is already used by the older Device {owner}; this Device is ignored until it gets another deviceId",
                device.effective_device_id()
            ),
        ),
        Some(Problem::InvalidDeviceId(why)) => {
            condition(Ready, False, DeviceReason::InvalidDeviceId, why.clone())
        }
        _ if connected.status == True && in_sync.status == True => condition(
            Ready,
            True,
            DeviceReason::Ready,
            "The device is connected and in sync".into(),
        ),
        _ if connected.status != True => {
            condition(Ready, False, DeviceReason::NotConnected, connected.message.clone())
        }
        _ => condition(Ready, False, DeviceReason::NotInSync, in_sync.message.clone()),
    };

    let complete = match state.and_then(|s| s.reported_too_large) {
        Some(size) => condition(
            ReportedComplete,
            False,
            DeviceReason::ReportedTooLarge,
            format!(
                "A reported message was dropped: it would have made the reported properties {size} bytes, above the {} bytes kept",
                kubetwin_protocol::MAX_REPORTED_BYTES
            ),
        ),
        None => condition(
            ReportedComplete,
            True,
            DeviceReason::Complete,
            "Every report of the device is shown".into(),
        ),
    };

    let report = super::firmware::FirmwareReport {
        block: existing
            .reported
            .as_ref()
            .and_then(|r| r.get(kubetwin_protocol::KEY_FIRMWARE))
            .and_then(kubetwin_protocol::ReportedFirmware::from_value),
        boot: existing.last_reported.and_then(|c| u64::try_from(c.boot).ok()),
    };
    let mut firmware =
        super::firmware::firmware_status(wanted.firmware, existing.firmware.as_ref(), &report, now);
    if let Some(status) = firmware.as_mut() {
        match wanted.firmware_held_back {
            Some(why) if status.phase == Some(kubetwin_api::FirmwarePhase::Pending) => {
                super::firmware::held_back(status, why);
            }
            Some(_) => {}
            None => super::firmware::released(status),
        }
    }
    let firmware_current = super::firmware::firmware_condition(firmware.as_ref());

    let in_sync_now = match in_sync.status {
        True => Some(true),
        False => Some(false),
        Unknown => None,
    };
    Ok(DeviceStatus {
        in_sync: in_sync_now,
        observed_generation: generation,
        device_id: Some(device.effective_device_id()),
        connection: Some(connection),
        conditions: merge(
            &existing.conditions,
            vec![ready, connected, in_sync, complete, firmware_current],
            generation,
            now,
        ),
        firmware,
        document: document.cloned(),
        configurations: wanted.configurations.to_vec(),
        // The wanted status is whole, whatever the cache kept of the stored one.
        reported_digest: None,
        ..existing
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::conditions::find;
    use kubetwin_api::{AppliedVersion, DeviceSpec};

    fn device() -> Device {
        let mut device = Device::new("sensor-1", DeviceSpec::default());
        device.metadata.namespace = Some("plant".into());
        device.metadata.uid = Some("uid-1".into());
        device.metadata.generation = Some(3);
        device
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn status(
        device: &Device,
        state: Option<&DeviceState>,
        problem: Option<&Problem>,
    ) -> DeviceStatus {
        desired_status(device, state, problem, &Wanted::own(device), now())
            .expect("counters in range")
    }

    #[test]
    fn a_new_device_is_not_ready_and_has_its_default_id() {
        let status = status(&device(), None, None);
        assert_eq!(status.device_id.as_deref(), Some("plant.sensor-1"));
        assert_eq!(status.observed_generation, Some(3));
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotConnected"));
        let connected = find(&status.conditions, "Connected").expect("Connected");
        assert_eq!(connected.status, "Unknown");
    }

    #[test]
    fn a_connected_device_that_applied_the_generation_is_ready() {
        let mut device = device();
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus {
                state: ConnectionState::Connected,
                ..Default::default()
            }),
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 3, revision: None }),
            ..Default::default()
        });
        let status = status(&device, None, None);
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
        let in_sync = find(&status.conditions, "InSync").expect("InSync");
        assert_eq!(in_sync.reason, "Applied");
    }

    #[test]
    fn an_older_applied_generation_is_not_in_sync() {
        let mut device = device();
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus {
                state: ConnectionState::Connected,
                ..Default::default()
            }),
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 2, revision: None }),
            ..Default::default()
        });
        let status = status(&device, None, None);
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotInSync"));
    }

    #[test]
    fn a_duplicate_device_id_makes_the_newer_device_not_ready() {
        let problem = Problem::DuplicateDeviceId("plant/older".into());
        let status = status(&device(), None, Some(&problem));
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DuplicateDeviceId"));
        assert!(ready.message.contains("plant/older"), "{}", ready.message);
    }

    #[test]
    fn an_unusable_device_id_is_shown_with_the_reason() {
        let problem = Problem::InvalidDeviceId("the id is 260 characters; at most 253".into());
        let status = status(&device(), None, Some(&problem));
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            ("False", "InvalidDeviceId", "the id is 260 characters; at most 253")
        );
    }

    #[test]
    fn state_fields_replace_the_stored_ones() {
        let mut state = DeviceState::default();
        state.connection.state = ConnectionState::Connected;
        state.applied = Some(AppliedVersion { epoch: "uid-1".into(), version: 3, revision: None });
        let status = status(&device(), Some(&state), None);
        assert_eq!(status.connection.map(|c| c.state), Some(ConnectionState::Connected));
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn a_dropped_oversized_report_shows_until_a_report_fits_again() {
        let mut state = DeviceState::default();
        state.reported_too_large = Some(40_000);
        let shown = status(&device(), Some(&state), None);
        let complete = find(&shown.conditions, "ReportedComplete").expect("ReportedComplete");
        assert_eq!(
            (complete.status.as_str(), complete.reason.as_str(), complete.message.as_str()),
            (
                "False",
                "ReportedTooLarge",
                "A reported message was dropped: it would have made the reported properties 40000 bytes, above the 32768 bytes kept"
            )
        );
        state.reported_too_large = None;
        let shown = status(&device(), Some(&state), None);
        let complete = find(&shown.conditions, "ReportedComplete").expect("ReportedComplete");
        assert_eq!(complete.status, "True");
    }

    #[test]
    fn recomputing_an_unchanged_status_is_a_no_op() {
        let mut device = device();
        let first = status(&device, None, None);
        device.status = Some(first.clone());
        let later = Timestamp::from_second(1_700_000_100).expect("valid");
        assert_eq!(
            desired_status(&device, None, None, &Wanted::own(&device), later).unwrap(),
            first
        );
    }
}
