//! What the operator writes into a Device's status: a pure function of the object and what
//! is known about the device.

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{
    ConnectionState, ConnectionStatus, Device, DeviceStatus,
    condition::{FALSE, TRUE, UNKNOWN, device as types},
};

use crate::conditions::{ConditionUpdate, merge};

/// Computes the status the operator wants for `device` at time `now`.
///
/// The result keeps everything the device reported, sets the effective device id and
/// observed generation, and derives the `Connected`, `InSync` and `Ready` conditions.
pub fn desired_status(device: &Device, now: Timestamp) -> DeviceStatus {
    let existing = device.status.clone().unwrap_or_default();
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
    let ready = if connected.status == TRUE && in_sync.status == TRUE {
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
        let status = desired_status(&device(), now());
        assert_eq!(status.device_id.as_deref(), Some("plant.sensor-1"));
        assert_eq!(status.observed_generation, Some(3));
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotConnected"));
        let connected = crate::conditions::find(&status.conditions, "Connected").expect("Connected");
        assert_eq!(connected.status, "Unknown");
    }

    #[test]
    fn a_connected_device_that_applied_the_generation_is_ready() {
        let mut device = device();
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus { state: ConnectionState::Connected, ..Default::default() }),
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 3 }),
            ..Default::default()
        });
        let status = desired_status(&device, now());
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
        let in_sync = crate::conditions::find(&status.conditions, "InSync").expect("InSync");
        assert_eq!(in_sync.reason, "Applied");
    }

    #[test]
    fn an_older_applied_generation_is_not_in_sync() {
        let mut device = device();
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus { state: ConnectionState::Connected, ..Default::default() }),
            applied: Some(AppliedVersion { epoch: "uid-1".into(), version: 2 }),
            ..Default::default()
        });
        let status = desired_status(&device, now());
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotInSync"));
    }

    #[test]
    fn recomputing_an_unchanged_status_is_a_no_op() {
        let mut device = device();
        let first = desired_status(&device, now());
        device.status = Some(first.clone());
        let later = Timestamp::from_second(1_700_000_100).expect("valid");
        assert_eq!(desired_status(&device, later), first);
    }
}
