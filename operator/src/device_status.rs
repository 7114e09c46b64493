//! What the operator writes into a Device's status: a pure function of the object and what
//! is known about the device.

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{
    ConnectionState, ConnectionStatus, Device, DeviceStatus,
    condition::{FALSE, TRUE, UNKNOWN, device as types},
};

use crate::{
    conditions::{ConditionUpdate, merge},
    twin::DeviceTwin,
};

/// Why a Device cannot be served, independent of what the device says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An older Device (`namespace/name`) already uses the same device id.
    DuplicateDeviceId(String),
    /// `spec.desired` serializes to more than the allowed bytes.
    DesiredTooLarge(usize),
}

/// Computes the status the operator wants for `device` at time `now`.
///
/// Device-side fields come from `twin` when the operator holds one (otherwise the current
/// status is kept); the effective device id, observed generation and the `Connected`,
/// `InSync` and `Ready` conditions are derived.
pub fn desired_status(
    device: &Device,
    twin: Option<&DeviceTwin>,
    problem: Option<&Problem>,
    now: Timestamp,
) -> DeviceStatus {
    let mut existing = device.status.clone().unwrap_or_default();
    if let Some(twin) = twin {
        twin.write_into(&mut existing);
    }
    let generation = device.metadata.generation;
    let connection = existing
        .connection
        .clone()
        .unwrap_or(ConnectionStatus { state: ConnectionState::Unknown, ..Default::default() });

    let connected = match connection.state {
        ConnectionState::Connected => ConditionUpdate {
            type_: types::CONNECTED,
            status: TRUE,
            reason: "Online".into(),
            message: "The device is connected to the broker".into(),
        },
        ConnectionState::Disconnected => ConditionUpdate {
            type_: types::CONNECTED,
            status: FALSE,
            reason: "Offline".into(),
            message: connection.reason.clone().unwrap_or_else(|| "The device went offline".into()),
        },
        ConnectionState::Unknown => ConditionUpdate {
            type_: types::CONNECTED,
            status: UNKNOWN,
            reason: "NoPresence".into(),
            message: "The device has not announced its presence yet".into(),
        },
    };
    let in_sync = match (&existing.applied, &device.metadata.uid, generation) {
        (Some(applied), Some(uid), Some(generation))
            if &applied.epoch == uid && applied.version == generation =>
        {
            ConditionUpdate {
                type_: types::IN_SYNC,
                status: TRUE,
                reason: "Applied".into(),
                message: format!("The device applied generation {generation}"),
            }
        }
        (Some(applied), _, _) => ConditionUpdate {
            type_: types::IN_SYNC,
            status: FALSE,
            reason: "Pending".into(),
            message: format!(
                "The device applied generation {}; waiting for generation {}",
                applied.version,
                generation.unwrap_or_default()
            ),
        },
        (None, _, _) => ConditionUpdate {
            type_: types::IN_SYNC,
            status: UNKNOWN,
            reason: "NotReported".into(),
            message: "The device has not reported which desired version it applied".into(),
        },
    };
    let in_sync = match problem {
        Some(Problem::DesiredTooLarge(size)) => ConditionUpdate {
            type_: types::IN_SYNC,
            status: FALSE,
            reason: "DesiredTooLarge".into(),
            message: format!(
                "spec.desired is {size} bytes as JSON; at most {} bytes are sent to a device",
                kubetwin_api::device::MAX_DESIRED_BYTES
            ),
        },
        _ => in_sync,
    };
    let ready = if let Some(Problem::DuplicateDeviceId(owner)) = problem {
        ConditionUpdate {
            type_: types::READY,
            status: FALSE,
            reason: "DuplicateDeviceId".into(),
            message: format!(
                "deviceId {} is already used by the older Device {owner}; this Device is ignored until it gets another deviceId",
                device.effective_device_id()
            ),
        }
    } else if connected.status == TRUE && in_sync.status == TRUE {
        ConditionUpdate {
            type_: types::READY,
            status: TRUE,
            reason: "Ready".into(),
            message: "The device is connected and in sync".into(),
        }
    } else {
        let (reason, message) = if connected.status != TRUE {
            ("NotConnected", connected.message.clone())
        } else {
            ("NotInSync", in_sync.message.clone())
        };
        ConditionUpdate { type_: types::READY, status: FALSE, reason: reason.into(), message }
    };

    DeviceStatus {
        observed_generation: generation,
        device_id: Some(device.effective_device_id()),
        connection: Some(connection),
        conditions: merge(&existing.conditions, vec![ready, connected, in_sync], generation, now),
        ..existing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn a_new_device_is_not_ready_and_has_its_default_id() {
        let status = desired_status(&device(), None, None, now());
        assert_eq!(status.device_id.as_deref(), Some("plant.sensor-1"));
        assert_eq!(status.observed_generation, Some(3));
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotConnected"));
        let connected =
            crate::conditions::find(&status.conditions, "Connected").expect("Connected");
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
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 3 }),
            ..Default::default()
        });
        let status = desired_status(&device, None, None, now());
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
        let in_sync = crate::conditions::find(&status.conditions, "InSync").expect("InSync");
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
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 2 }),
            ..Default::default()
        });
        let status = desired_status(&device, None, None, now());
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotInSync"));
    }

    #[test]
    fn a_duplicate_device_id_makes_the_newer_device_not_ready() {
        let problem = Problem::DuplicateDeviceId("plant/older".into());
        let status = desired_status(&device(), None, Some(&problem), now());
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DuplicateDeviceId"));
        assert!(ready.message.contains("plant/older"), "{}", ready.message);
    }

    #[test]
    fn twin_fields_replace_the_stored_ones() {
        let mut twin = DeviceTwin::default();
        twin.connection.state = ConnectionState::Connected;
        twin.applied = Some(AppliedVersion { epoch: "uid-1".into(), version: 3 });
        let status = desired_status(&device(), Some(&twin), None, now());
        assert_eq!(status.connection.map(|c| c.state), Some(ConnectionState::Connected));
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn recomputing_an_unchanged_status_is_a_no_op() {
        let mut device = device();
        let first = desired_status(&device, None, None, now());
        device.status = Some(first.clone());
        let later = Timestamp::from_second(1_700_000_100).expect("valid");
        assert_eq!(desired_status(&device, None, None, later), first);
    }
}
