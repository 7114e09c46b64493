//! Firmware updates as disruptions: which Device watch events take or give back a Device's
//! slot in its disruption budgets. Pure: the watch callback applies the decision to the index.

use kubetwin_api::{Device, FirmwarePhase, condition::DeviceReason};

use super::index::{DocumentPosition, FIRMWARE_HOLDER, HolderKey};

/// What a persisted Device says about the slot its firmware update holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareHold {
    /// The update is under way (downloading to rebooting): it holds a slot.
    Hold,
    /// No target, or the update of the current target ended: it holds nothing.
    Release,
    /// Not decided by the persisted status: the order is held back (the Device controller
    /// takes the slot when it releases the order) or the status does not describe the current
    /// target yet (it was written before the target changed).
    Keep,
}

/// The firmware status reason of an order held back by a budget.
const HELD_BACK: &str = DeviceReason::DisruptionBudgetExhausted.as_str();

/// The key under which a Device's firmware update holds a disruption.
pub fn firmware_holder(namespace: &str, name: &str) -> HolderKey {
    (FIRMWARE_HOLDER, namespace.to_string(), name.to_string())
}

/// Decides [`FirmwareHold`] from a Device as persisted (spec and status of one version) and
/// `order_sent`, the position of the document that carried the order whose slot this process
/// took (if any). A status computed from an older document was written before that order
/// went out (a configuration's order reaches status only after its slot is taken, and a
/// rollback's after the previous update ended): it cannot end the update, so it never gives
/// the slot back, or two devices of one group would update at once.
pub fn firmware_hold(device: &Device, order_sent: Option<DocumentPosition>) -> FirmwareHold {
    let decided = persisted_hold(device);
    match (decided, order_sent) {
        (FirmwareHold::Release, Some(sent))
            if DocumentPosition::recorded(device).is_none_or(|at| at < sent) =>
        {
            FirmwareHold::Keep
        }
        _ => decided,
    }
}

/// [`firmware_hold`] from the persisted Device alone.
fn persisted_hold(device: &Device) -> FirmwareHold {
    use FirmwarePhase::{
        Applying, Current, Downloading, Failed, Pending, Rebooting, RolledBack, Succeeded,
        TimedOut, Verifying,
    };
    // The target: the Device's own, else the one a DeviceConfiguration orders on it (as the
    // status records it).
    let target = device.spec.firmware.as_ref().map(|f| f.version.as_str()).or_else(|| {
        device.status.as_ref()?.configurations.iter().find_map(|c| c.firmware.as_deref())
    });
    let Some(target) = target else {
        return FirmwareHold::Release;
    };
    let Some(status) = device.status.as_ref().and_then(|s| s.firmware.as_ref()) else {
        return FirmwareHold::Keep;
    };
    if status.target.as_deref() != Some(target) {
        return FirmwareHold::Keep;
    }
    match status.phase {
        Some(Pending) if status.reason.as_deref() == Some(HELD_BACK) => FirmwareHold::Keep,
        // Pending and not held back: the order was sent (the Device controller writes that
        // status only after taking the slot), so a restarted operator holds it again.
        Some(Pending | Downloading | Verifying | Applying | Rebooting) => FirmwareHold::Hold,
        Some(Succeeded | Failed | RolledBack | TimedOut | Current) => FirmwareHold::Release,
        None => FirmwareHold::Keep,
    }
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{DeviceSpec, DeviceStatus, FirmwareStatus, FirmwareTarget};

    use super::*;

    fn device(target: Option<&str>, status: Option<(&str, FirmwarePhase, &str)>) -> Device {
        let mut device = Device::new("gw", DeviceSpec::default());
        device.spec.firmware = target.map(|version| FirmwareTarget {
            version: version.into(),
            url: "http://firmware.example/image.bin".into(),
            ..FirmwareTarget::default()
        });
        device.status = status.map(|(target, phase, reason)| DeviceStatus {
            firmware: Some(FirmwareStatus {
                target: Some(target.into()),
                phase: Some(phase),
                reason: Some(reason.into()),
                ..FirmwareStatus::default()
            }),
            ..DeviceStatus::default()
        });
        device
    }

    const UPDATING: &str = "FirmwareUpdating";

    #[test]
    fn an_update_holds_its_slot_from_download_until_it_ends() {
        use FirmwareHold::{Hold, Keep, Release};
        use FirmwarePhase::*;
        let table = [
            // (spec target, persisted status (target, phase, reason), decision)
            (None, None, Release),
            (None, Some(("1.1", Rebooting, UPDATING)), Release),
            (Some("1.1"), None, Keep),
            (Some("1.1"), Some(("1.1", Pending, HELD_BACK)), Keep),
            (Some("1.1"), Some(("1.1", Pending, UPDATING)), Hold),
            (Some("1.1"), Some(("1.1", Downloading, UPDATING)), Hold),
            (Some("1.1"), Some(("1.1", Verifying, UPDATING)), Hold),
            (Some("1.1"), Some(("1.1", Applying, UPDATING)), Hold),
            (Some("1.1"), Some(("1.1", Rebooting, UPDATING)), Hold),
            (Some("1.1"), Some(("1.1", Succeeded, "FirmwareUpToDate")), Release),
            (Some("1.1"), Some(("1.1", Failed, "FirmwareFailed")), Release),
            (Some("1.1"), Some(("1.1", RolledBack, "FirmwareRolledBack")), Release),
            (Some("1.1"), Some(("1.1", TimedOut, "FirmwareTimedOut")), Release),
            (Some("1.1"), Some(("1.1", Current, "FirmwareUpToDate")), Release),
            // Written before the target moved to 1.2: says nothing about 1.2's update.
            (Some("1.2"), Some(("1.1", Succeeded, "FirmwareUpToDate")), Keep),
            (Some("1.2"), Some(("1.1", Downloading, UPDATING)), Keep),
        ];
        for (target, status, expected) in table {
            assert_eq!(
                firmware_hold(&device(target, status), None),
                expected,
                "{target:?} {status:?}"
            );
        }
    }

    #[test]
    fn a_status_older_than_the_order_sent_never_gives_its_slot_back() {
        use FirmwareHold::{Hold, Keep, Release};
        use FirmwarePhase::*;
        let at = |generation, revision| DocumentPosition { generation, revision };
        let sent = Some(at(1, 3));
        let table = [
            // (spec target, persisted status, its document position, order sent, decision)
            // Written before a configuration's order reached status: no target in it.
            (None, None, Some(at(1, 2)), sent, Keep),
            // Written when the previous update ended, before the rollback's order went out.
            (Some("1.0"), Some(("1.0", Succeeded, "FirmwareUpToDate")), Some(at(1, 2)), sent, Keep),
            (Some("1.0"), Some(("1.0", Succeeded, "FirmwareUpToDate")), None, sent, Keep),
            // A slot taken whose document is not computed yet.
            (None, None, Some(at(1, 9)), Some(DocumentPosition::PENDING), Keep),
            // Computed from the order's document or a later one: it describes the update.
            (
                Some("1.0"),
                Some(("1.0", Succeeded, "FirmwareUpToDate")),
                Some(at(1, 3)),
                sent,
                Release,
            ),
            (Some("1.0"), Some(("1.0", Failed, "FirmwareFailed")), Some(at(2, 0)), sent, Release),
            (None, None, Some(at(1, 4)), sent, Release),
            // Holding is never held back.
            (Some("1.0"), Some(("1.0", Downloading, UPDATING)), Some(at(1, 1)), sent, Hold),
            // After a restart nothing was sent by this process: the persisted status decides.
            (
                Some("1.0"),
                Some(("1.0", Succeeded, "FirmwareUpToDate")),
                Some(at(1, 2)),
                None,
                Release,
            ),
        ];
        for (target, status, position, sent, expected) in table {
            let mut device = device(target, status);
            if let Some(position) = position {
                let status = device.status.get_or_insert_with(DeviceStatus::default);
                status.document = Some(kubetwin_api::device::DocumentVersion {
                    version: position.generation,
                    revision: position.revision,
                    digest: String::new(),
                });
            }
            assert_eq!(
                firmware_hold(&device, sent),
                expected,
                "{target:?} {status:?} at {position:?}, sent {sent:?}"
            );
        }
    }

    #[test]
    fn a_configuration_s_order_recorded_in_status_holds_like_the_device_s_own() {
        let mut device = device(None, Some(("2.0", FirmwarePhase::Downloading, UPDATING)));
        assert_eq!(firmware_hold(&device, None), FirmwareHold::Release, "no order anywhere");
        if let Some(status) = device.status.as_mut() {
            status.configurations = vec![kubetwin_api::device::AppliedConfiguration {
                name: "fleet-fw".into(),
                generation: 1,
                firmware: Some("2.0".into()),
                rollback: false,
            }];
        }
        assert_eq!(firmware_hold(&device, None), FirmwareHold::Hold);
    }
}
