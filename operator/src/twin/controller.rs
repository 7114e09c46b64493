//! Device controller: publishes the retained desired document when it changes and keeps each
//! Device's status (reported state, connection, conditions) current.

use std::{borrow::Cow, sync::Arc, time::Duration};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use kubetwin_api::{
    Device, DeviceConfiguration, DeviceStatus, FirmwarePhase, FirmwareTarget,
    condition::DeviceReason,
};
use kubetwin_protocol::{DesiredDocument, DeviceId, FirmwareOrder, timestamp::format_rfc3339};

use super::{
    cache::{self, CachedDevice},
    status::{Problem, Wanted, desired_status},
};
use crate::{
    budgets::{
        firmware::firmware_holder,
        index::{DocumentPosition, FIRMWARE_HOLDER, HOLDING_KINDS},
    },
    configurations::{
        self,
        document::{digest, document_version, newest_record, publishable},
        effective::{Admission, effective_twin, firmware_source, recorded},
    },
    context::Context,
    error::Error,
    error::Result,
    fleet::{Claim, Published, bare_ref},
    k8s::{
        Retries,
        conditions::find,
        kind_label, reconcile_failed,
        status::{Offer, Priority, StatusKey, StatusKind},
    },
};

/// Wait before looking again while the fleet index has not seen every Device yet.
const NOT_SYNCED: Duration = Duration::from_secs(1);

/// The Device controller's own state.
pub struct DeviceController {
    /// Shared services.
    pub ctx: Arc<Context>,
    /// Failed reconciles per Device.
    pub retries: Retries,
}

/// Requeue after an error, later with each failure in a row.
pub fn error_policy(
    device: Arc<CachedDevice>,
    error: &Error,
    this: Arc<DeviceController>,
) -> Action {
    reconcile_failed(&*device, error, &this.ctx.metrics, &this.retries)
}

/// Publishes desired properties when needed and writes the status computed by
/// [`desired_status`] when it differs from the current one.
pub async fn reconcile(cached: Arc<CachedDevice>, this: Arc<DeviceController>) -> Result<Action> {
    let device = Arc::new(cached.device().map_err(Error::CachedDevice)?);
    let ctx = &this.ctx;
    ctx.metrics.reconciled(kind_label::<Device>());
    let namespace = device.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = device.name_any();
    let uid = device.metadata.uid.clone().ok_or(Error::MissingField("metadata.uid"))?;
    let generation =
        device.metadata.generation.ok_or(Error::MissingField("metadata.generation"))?;
    let object = bare_ref(&*device);
    let now = crate::clock::now();

    // `online` under the same lock: disruption budgets count a device that is not online as
    // unavailable, and every change of connection reconciles its Device, so the budget index
    // learns it here.
    let (claim, synced, online) = {
        let fleet = ctx.fleet();
        let claim = fleet.claim_of(&object);
        let online = match &claim {
            Some(Claim::Owner(id)) => fleet.state(id).and_then(|s| s.online()) == Some(true),
            _ => false,
        };
        (claim, fleet.synced(), online)
    };
    if !synced || !ctx.configuration_watch.synced() {
        // Until every Device is listed, an older claimant of the same id may still be missing;
        // until every configuration is, the document would miss their content.
        return Ok(Action::requeue(NOT_SYNCED));
    }
    ctx.budgets().set_online(&namespace, &name, online);

    // The effective twin: the configurations that select the Device, its own spec on top.
    let selecting = configurations::selecting(&ctx.configurations, &device);
    let admission = admission_of(ctx, &namespace, &name, &device, &selecting);
    let twin = effective_twin(&device, &selecting, admission);
    let desired = twin.desired.clone();
    let desired_size = serde_json::to_vec(&desired)?.len();
    let (owned_id, problem) = match claim {
        Some(Claim::Owner(id)) if desired_size > kubetwin_api::device::MAX_DESIRED_BYTES => {
            (Some(id), Some(Problem::DesiredTooLarge(desired_size)))
        }
        Some(Claim::Owner(id)) => (Some(id), None),
        Some(Claim::Conflict { owner, .. }) => {
            let owner =
                format!("{}/{}", owner.namespace.as_deref().unwrap_or_default(), owner.name);
            (None, Some(Problem::DuplicateDeviceId(owner)))
        }
        None => {
            let why = match DeviceId::new(&device.effective_device_id()) {
                Err(error) => {
                    format!("the effective device id cannot be used on MQTT topics: {error}")
                }
                // Valid but unclaimed: the index has not seen this Device yet.
                Ok(_) => return Ok(Action::requeue(NOT_SYNCED)),
            };
            (None, Some(Problem::InvalidDeviceId(why)))
        }
    };
    // What a device reported is in the fleet index only while its Device owns the id and
    // the index holds a state for it; the cache keeps none. Otherwise the stored status is
    // read back whole, as the status is then computed from it (a write would delete them).
    let indexed = owned_id.as_ref().is_some_and(|id| ctx.fleet().state(id).is_some());
    let device = if indexed {
        device
    } else {
        match ctx.whole_device(&device).await? {
            Cow::Borrowed(_) => device,
            Cow::Owned(whole) => Arc::new(whole),
        }
    };

    let mut wanted = Wanted {
        firmware: twin.firmware.as_ref(),
        firmware_held_back: None,
        document: None,
        configurations: &twin.configurations,
    };
    let status = {
        let fleet = ctx.fleet();
        let state = owned_id.as_ref().and_then(|id| fleet.state(id));
        desired_status(&device, state, problem.as_ref(), &wanted, now)?
    };
    // A firmware order goes to the device only with room in its disruption budgets.
    let firmware_phase = status.firmware.as_ref().and_then(|f| f.phase);
    let gate = firmware_gate(ctx, &namespace, &name, twin.firmware.as_ref(), firmware_phase);
    if gate == FirmwareGate::NotYet {
        // Neither send the order nor write a status that says it was sent: look again soon.
        return Ok(Action::requeue(NOT_SYNCED));
    }
    let send_firmware = gate == FirmwareGate::Send;
    let order = twin.firmware.as_ref().filter(|_| send_firmware).map(|f| FirmwareOrder {
        version: f.version.clone(),
        url: f.url.clone(),
        sha256: f.sha256.clone(),
        size_bytes: f.size_bytes.and_then(|b| u64::try_from(b).ok()),
    });
    // The document's revision grows when its content changes within a generation, and is
    // recorded in status before the document goes out (so it survives a restart).
    let recorded = device.status.as_ref().and_then(|s| s.document.as_ref());
    let offered = owned_id.as_ref().and_then(|id| {
        let fleet = ctx.fleet();
        let (of, version) = fleet.state(id)?.recorded_document.as_deref()?;
        (*of == uid).then(|| version.clone())
    });
    let plain = twin.configurations.is_empty() && order.is_none();
    let document_version = document_version(
        generation,
        digest(&desired, order.as_ref()),
        plain,
        newest_record(recorded, offered.as_ref()),
    );
    if let FirmwareGate::HeldBack(why) = &gate {
        wanted.firmware_held_back = Some(why);
    }
    if order.is_some() {
        // Only a status computed from this document (or a later one) may end the update.
        ctx.budgets().firmware_order_at(
            &namespace,
            &name,
            DocumentPosition {
                generation: document_version.version,
                revision: document_version.revision,
            },
        );
    }
    wanted.document = Some(&document_version);
    let status = {
        let fleet = ctx.fleet();
        let state = owned_id.as_ref().and_then(|id| fleet.state(id));
        desired_status(&device, state, problem.as_ref(), &wanted, now)?
    };
    let revision = u32::try_from(document_version.revision).unwrap_or(u32::MAX);
    let publish = {
        let fleet = ctx.fleet();
        let state = owned_id.as_ref().and_then(|id| fleet.state(id));
        owned_id.is_some()
            && problem.is_none()
            && publishable(&document_version, recorded)
            && state.is_some_and(|s| {
                !s.published
                    .as_ref()
                    .is_some_and(|p| p.is(&uid, generation) && p.revision == revision)
            })
    };

    if let (true, Some(id)) = (publish && ctx.mqtt_up(), &owned_id) {
        let mut document = DesiredDocument::new(
            uid.clone(),
            generation,
            format_rfc3339(now.as_millisecond()),
            desired,
        );
        document.revision = revision;
        document.firmware = order;
        ctx.publisher.desired(id, &document).await?;
        if let Some(state) = ctx.fleet().state_mut(id) {
            state.published = Some(Published::of(&document));
        }
        tracing::debug!(device = %name, %namespace, generation, revision, "desired document published");
    }

    if cache::trimmed(device.status.as_ref()) && status.reported.is_none() {
        // The index dropped this device's state after it was looked at above, so the status
        // was computed without its reports: compute it again (from the stored status).
        return Ok(Action::requeue(NOT_SYNCED));
    }
    let key = StatusKey::new(StatusKind::of::<Device>(), &namespace, &name);
    let priority = priority_of(device.status.as_ref(), &status);
    let stored = cache::stored_status(device.status.as_ref(), &status);
    let offer = ctx.writer.offer(key, &status, stored.as_deref(), priority)?;
    // Revision 0 (the Device's own desired properties alone) is never counted from: nothing
    // to remember, which keeps plain Devices' memory as it was.
    if let Some(id) = &owned_id
        && document_version.revision > 0
        && newest_record(offered.as_ref(), Some(&document_version)) == Some(&document_version)
        && let Some(state) = ctx.fleet().state_mut(id)
    {
        state.recorded_document = Some(Box::new((uid.clone(), document_version.clone())));
    }
    if offer != Offer::Unchanged
        && let Some(Problem::DuplicateDeviceId(owner)) = &problem
        && !is_duplicate(device.status.as_ref())
    {
        let note =
            format!("deviceId {} is already used by Device {owner}", device.effective_device_id());
        ctx.event(
            &*device,
            None::<&Device>,
            EventType::Warning,
            DeviceReason::DuplicateDeviceId.as_str(),
            note,
        );
    }
    this.retries.succeeded(&*device);
    // A firmware update under way is looked at again when it would time out.
    let firmware_deadline = status
        .firmware
        .as_ref()
        .zip(twin.firmware.as_ref())
        .and_then(|(firmware, target)| super::firmware::deadline(firmware, target))
        .map(|deadline| {
            Duration::try_from(deadline.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1)
        });
    // Room frees up without any change to this Device: look again soon.
    let recheck = matches!(gate, FirmwareGate::HeldBack(_)).then_some(BUDGET_RECHECK);
    // Otherwise the resync walk (`super::resync`) looks again within its period: no timer
    // per Device.
    Ok([firmware_deadline, recheck]
        .into_iter()
        .flatten()
        .min()
        .map_or_else(Action::await_change, Action::requeue))
}

/// Whether the configuration that orders `device`'s firmware admitted it to its rollout (and
/// forgets the admission once the Device's status records it).
fn admission_of(
    ctx: &Context,
    namespace: &str,
    name: &str,
    device: &Device,
    selecting: &[Arc<DeviceConfiguration>],
) -> Admission {
    let Some(source) = firmware_source(device.spec.firmware.is_some(), selecting) else {
        return Admission::NotAdmitted;
    };
    let Some(version) = source.spec.firmware.as_ref().map(|f| f.version.as_str()) else {
        return Admission::NotAdmitted;
    };
    let configuration = source.name_any();
    let mut admissions = ctx.admissions();
    if recorded(device, &configuration).is_some_and(|r| r.firmware.as_deref() == Some(version)) {
        admissions.recorded(namespace, &configuration, name);
        return Admission::Admitted;
    }
    if admissions.admitted(namespace, &configuration, version, name) {
        Admission::Admitted
    } else {
        Admission::NotAdmitted
    }
}

/// How often a firmware order held back by a disruption budget looks for room again.
const BUDGET_RECHECK: Duration = Duration::from_secs(2);

/// Whether the Device's firmware order goes into its desired document now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FirmwareGate {
    /// No spec.firmware.
    NoTarget,
    /// Send the order (the update holds its slot, or needs none).
    Send,
    /// A disruption budget has no room (why, for people).
    HeldBack(String),
    /// The holds are not all replayed yet (just started): decide in a moment.
    NotYet,
}

/// Decides [`FirmwareGate`] for a device with firmware `target` whose firmware status is computed to be in `phase`,
/// taking its slot in the disruption budgets before the order is sent. The slot is given back
/// by the Device watch once the update's end is persisted (`budgets::firmware`).
fn firmware_gate(
    ctx: &Context,
    namespace: &str,
    name: &str,
    target: Option<&FirmwareTarget>,
    phase: Option<FirmwarePhase>,
) -> FirmwareGate {
    use FirmwarePhase::{Applying, Current, Downloading, Rebooting, Verifying};
    if target.is_none() {
        return FirmwareGate::NoTarget;
    }
    let holder = firmware_holder(namespace, name);
    match phase {
        // Under way: the device has the order; it holds its slot.
        Some(Downloading | Verifying | Applying | Rebooting) => {
            ctx.budgets().hold(namespace, name, holder);
            return FirmwareGate::Send;
        }
        // Over, or nothing to install: the order stays in the document as the record of the
        // target and disrupts nothing more.
        Some(p) if p.is_terminal() || p == Current => return FirmwareGate::Send,
        _ => {}
    }
    if ctx.budgets().holds(namespace, name, &holder) {
        return FirmwareGate::Send;
    }
    if !ctx.budgets().synced(&HOLDING_KINDS) {
        return FirmwareGate::NotYet;
    }
    // Check and hold under one lock: two Devices never take the last slot together.
    let gate = {
        let mut budgets = ctx.budgets();
        match budgets.check(namespace, name) {
            Ok(()) => {
                budgets.hold_firmware(namespace, name, holder);
                FirmwareGate::Send
            }
            Err(exhausted) => FirmwareGate::HeldBack(exhausted.message()),
        }
    };
    ctx.metrics.budget_checked(FIRMWARE_HOLDER, gate == FirmwareGate::Send);
    gate
}

/// Connection, readiness and firmware-phase changes are written first; reported properties
/// can wait.
fn priority_of(current: Option<&DeviceStatus>, wanted: &DeviceStatus) -> Priority {
    let state = |s: Option<&DeviceStatus>| s.and_then(|s| s.connection.as_ref()).map(|c| c.state);
    let ready = |s: Option<&DeviceStatus>| {
        s.and_then(|s| find(&s.conditions, kubetwin_api::condition::device::READY))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let firmware =
        |s: Option<&DeviceStatus>| s.and_then(|s| s.firmware.as_ref()).and_then(|f| f.phase);
    let document = |s: Option<&DeviceStatus>| s.and_then(|s| s.document.clone());
    // A new document revision is published only once recorded: a routine write would delay it.
    if current.is_none()
        || document(current) != document(Some(wanted))
        || state(current) != state(Some(wanted))
        || ready(current) != ready(Some(wanted))
        || firmware(current) != firmware(Some(wanted))
    {
        Priority::Urgent
    } else {
        Priority::Routine
    }
}

fn is_duplicate(status: Option<&DeviceStatus>) -> bool {
    status
        .and_then(|s| find(&s.conditions, kubetwin_api::condition::device::READY))
        .is_some_and(|c| c.reason == DeviceReason::DuplicateDeviceId.as_str())
}

/// ObjectRef of a Device by namespace and name.
pub fn device_ref(namespace: &str, name: &str) -> ObjectRef<Device> {
    ObjectRef::new(name).within(namespace)
}
