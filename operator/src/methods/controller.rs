//! The generic request controller: one instance per request resource. A reconcile builds the
//! engine's views, runs [`step`], and the executor carries out the effects (publish, offer
//! status, Events, metrics, delete). Per-kind state (statuses not yet in the cache, when each
//! request was last published) lives here, not in the shared [`Context`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use kubetwin_api::Device;
use kubetwin_protocol::{
    DeviceId, MethodRequest, RebootState, RebootStatus, RequestId, timestamp::format_rfc3339,
};
use tracing::{debug, info};

use super::{
    engine::{Call, DeviceView, Effect, Phase, RequestView, Settings, Subject, step},
    kind::MethodKind,
    resource::RequestResource,
};
use crate::{
    budgets::index::{BudgetIndex, HOLDING_KINDS, HolderKey},
    context::Context,
    error::Error,
    error::Result,
    fleet::{Claim, FleetIndex, Follower},
    k8s::{
        Retries, answered, kind_label, reconcile_failed,
        status::{LatestStatuses, StatusKey, StatusKind},
    },
    telemetry::metrics::TransitionLabels,
    twin::cache::{CachedDevice, cached_ref},
};

/// What one request kind keeps between reconciles.
pub struct KindState<R: RequestResource> {
    /// Statuses computed but maybe not yet in the cache.
    pub latest: LatestStatuses<R::Status>,
    /// When this process last published each request (by request id).
    last_sent: Mutex<HashMap<String, Timestamp>>,
    /// When this process first saw each request (by request id): deadlines count from no
    /// earlier than this.
    first_seen: Mutex<HashMap<String, Timestamp>>,
}

impl<R: RequestResource> Default for KindState<R> {
    fn default() -> Self {
        Self {
            latest: LatestStatuses::default(),
            last_sent: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(HashMap::new()),
        }
    }
}

impl<R: RequestResource> KindState<R> {
    fn last_sent(&self) -> MutexGuard<'_, HashMap<String, Timestamp>> {
        self.last_sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of requests published since start and not finished.
    pub fn in_flight(&self) -> usize {
        self.last_sent().len()
    }

    /// When this process first saw request `uid` (now, if this is the first time).
    fn first_seen(&self, uid: &str, now: Timestamp) -> Timestamp {
        let mut seen = self.first_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *seen.entry(uid.to_string()).or_insert(now)
    }

    /// Forgets request `uid` (it was deleted).
    fn forget(&self, uid: &str) {
        self.last_sent().remove(uid);
        self.first_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(uid);
    }
}

/// The controller of request resource `R`.
pub struct MethodController<R: RequestResource> {
    /// Shared services.
    pub ctx: Arc<Context>,
    /// Cache of the requests.
    pub requests: Store<R>,
    /// Engine settings.
    pub settings: Settings,
    /// Per-kind state.
    pub state: Arc<KindState<R>>,
    /// Failed reconciles per request.
    pub retries: Retries,
}

/// The ObjectRef of the Device a request targets.
pub fn target_of<R: RequestResource>(request: &R) -> ObjectRef<Device> {
    ObjectRef::new(request.device_name()).within(&request.namespace().unwrap_or_default())
}

/// The follower entry of a request.
pub fn follower_of<R: RequestResource>(request: &R) -> Follower {
    Follower {
        kind: kind_label::<R>(),
        namespace: request.namespace().unwrap_or_default(),
        name: request.name_any(),
    }
}

/// Keeps the fleet index's followers and the kind's memory in step with the request watch:
/// an active request follows its Device; a finished or deleted one does not, and a deleted
/// one leaves nothing behind.
pub fn observe<R: RequestResource>(
    event: &watcher::Event<R>,
    fleet: &Mutex<FleetIndex>,
    budgets: &Mutex<BudgetIndex>,
    state: &KindState<R>,
    writer: &crate::k8s::status::StatusWriter,
) {
    // Each index is locked on its own, never one inside the other: no lock order to keep.
    let lock_fleet = || fleet.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let lock_budgets = || budgets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event {
        watcher::Event::Apply(request) | watcher::Event::InitApply(request) => {
            let phase = R::progress_of(request.current_status()).ok().and_then(|p| p.phase);
            let terminal = phase.is_some_and(Phase::is_terminal);
            if terminal {
                lock_fleet().unfollow(&follower_of(request));
            } else {
                lock_fleet().follow(target_of(request), follower_of(request));
            }
            // A disruptive request holds its device from sending until its terminal status is
            // persisted (released here, from the watch, not when the status is offered: so
            // the API never shows the next request sent before this one ended). Replayed on a
            // restart, so the holds are rebuilt from the requests themselves.
            let holds = request.method_kind().disruptive()
                && phase.is_some_and(|p| p != Phase::Pending && !p.is_terminal());
            let namespace = request.namespace().unwrap_or_default();
            if holds {
                lock_budgets().hold(&namespace, request.device_name(), holder_of(request));
            } else if terminal {
                lock_budgets().release(&namespace, request.device_name(), &holder_of(request));
            }
        }
        watcher::Event::Delete(request) => {
            lock_budgets().release(
                &request.namespace().unwrap_or_default(),
                request.device_name(),
                &holder_of(request),
            );
            lock_fleet().unfollow(&follower_of(request));
            let key = StatusKey::new(
                StatusKind::of::<R>(),
                &request.namespace().unwrap_or_default(),
                &request.name_any(),
            );
            state.latest.forget(&key);
            writer.forget(&key);
            if let Some(uid) = request.uid() {
                state.forget(&uid);
            }
        }
        watcher::Event::InitDone => lock_budgets().kind_synced(kind_label::<R>()),
        watcher::Event::Init => {}
    }
}

/// The key under which a request holds a disruption.
pub fn holder_of<R: RequestResource>(request: &R) -> HolderKey {
    (kind_label::<R>(), request.namespace().unwrap_or_default(), request.name_any())
}

/// Requeue after an error, later with each failure in a row.
pub fn error_policy<R: RequestResource>(
    request: Arc<R>,
    error: &Error,
    this: Arc<MethodController<R>>,
) -> Action {
    reconcile_failed(&*request, error, &this.ctx.metrics, &this.retries)
}

/// Runs one engine step for `request` and carries out its effects.
pub async fn reconcile<R: RequestResource>(
    request: Arc<R>,
    this: Arc<MethodController<R>>,
) -> Result<Action> {
    let ctx = &this.ctx;
    ctx.metrics.reconciled(kind_label::<R>());
    let namespace = request.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = request.name_any();
    let uid = request.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let request_id =
        RequestId::new(&uid).map_err(|_| Error::MissingField("a valid metadata.uid"))?;
    if !ctx.fleet().synced() {
        // Until every Device is known, a missing one may only be unlisted yet: decide nothing.
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let target = target_of(&*request);
    let device = ctx.devices.get(&cached_ref(target.clone()));
    let now = crate::clock::now();

    // Decide from the newest status: ours may not be in the cache yet.
    let key = StatusKey::new(StatusKind::of::<R>(), &namespace, &name);
    let newest = this.state.latest.newest(&key, request.current_status());
    let progress = R::progress_of(newest.as_ref())?;
    let current_phase = progress.phase;
    let persisted_phase = R::progress_of(request.current_status())?.phase;
    let first_seen = this.state.first_seen(&uid, now);
    let kind = request.method_kind();
    let method_label = kind.metric_label();
    let timeouts = request.timeouts();
    let disruptive = kind.disruptive();
    if disruptive && !ctx.budgets().synced(&HOLDING_KINDS) {
        // Until every request is replayed, the devices disrupted now are not all known.
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let (mut view, device_id) = device_view(ctx, &this.state, device.as_deref(), &target, &uid)?;
    let waiting = current_phase.is_none_or(|p| p == Phase::Pending);
    if disruptive && waiting && view.online == Some(true) {
        view.budget_exhausted = budget_check(ctx, &namespace, request.device_name()).err();
    }
    tracing::trace!(request = %name, online = ?view.online, exists = view.exists, mqtt = view.mqtt_connected, answer = ?view.answer.as_ref().map(|a| a.status), "device view");
    let effects = {
        let request_view = RequestView {
            device_name: request.device_name(),
            uid: &uid,
            generation: request.meta().generation,
            created: request.meta().creation_timestamp.as_ref().map(|t| t.0),
            response_timeout: timeouts.response,
            connect_timeout: timeouts.connect,
            ttl_after_finished: timeouts.ttl_after_finished,
            kind: &kind,
            progress,
            persisted_phase,
            first_seen: Some(first_seen),
        };
        step(&request_view, &view, now, &this.settings)
    };

    let mut action = Action::await_change();
    for effect in effects {
        match effect {
            Effect::Publish(call) => {
                let Some(device_id) = &device_id else {
                    // The engine only sends to a device it saw online, which has an id.
                    return Err(Error::MissingField("the target's device id"));
                };
                if disruptive && !hold(ctx, &namespace, &*request) {
                    // Another request took the last room since the check: look again soon.
                    return Ok(Action::requeue(crate::methods::engine::BUDGET_RECHECK));
                }
                publish(ctx, &this.state, device_id, &request_id, call, now).await?;
            }
            Effect::OfferStatus { progress, priority, hold } => {
                let status = R::status_of(&progress)?;
                if newest.as_ref() != Some(&status) {
                    let current = request.current_status();
                    ctx.writer.offer_held(key.clone(), &status, current, priority, hold)?;
                    this.state.latest.record(key.clone(), status);
                }
                if let Some(phase) = progress.phase.filter(|p| Some(*p) != current_phase) {
                    ctx.metrics.request_entered(TransitionLabels {
                        kind: kind_label::<R>(),
                        method: method_label,
                        phase: phase.as_str(),
                    });
                    info!(request = %name, %namespace, phase = phase.as_str(), reason = progress.reason.as_deref().unwrap_or_default(), "request progressed");
                    if phase.is_terminal() {
                        this.state.last_sent().remove(&uid);
                    }
                }
            }
            Effect::Event { subject: Subject::Request, type_, reason, note } => {
                ctx.event(&*request, None::<&Device>, type_, &reason, note);
            }
            Effect::Event { subject: Subject::Device, type_, reason, note } => {
                if let Some(device) = &device {
                    ctx.event(
                        &**device,
                        Some(&*request),
                        type_,
                        &reason,
                        format!("{name}: {note}"),
                    );
                }
            }
            Effect::Delete => {
                delete(ctx, &this.state, &key, &namespace, &name, &uid).await?;
                return Ok(Action::await_change());
            }
            Effect::Requeue(after) => action = Action::requeue(after),
        }
    }
    this.retries.succeeded(&*request);
    Ok(action)
}

/// Whether every disruption budget that selects `device` has room for it now (`Err`: why
/// not, for people).
fn budget_check(ctx: &Context, namespace: &str, device: &str) -> std::result::Result<(), String> {
    ctx.budgets().check(namespace, device).map_err(|exhausted| exhausted.message())
}

/// Takes a disruption slot for `request` if the budgets still have room (checked and taken
/// under one lock, so two requests never take the last slot both).
fn hold<R: RequestResource>(ctx: &Context, namespace: &str, request: &R) -> bool {
    let device = request.device_name();
    let allowed = {
        let mut budgets = ctx.budgets();
        let allowed = budgets.check(namespace, device).is_ok();
        if allowed {
            budgets.hold(namespace, device, holder_of(request));
        }
        allowed
    };
    ctx.metrics.budget_checked(kind_label::<R>(), allowed);
    allowed
}

/// What the engine needs to know about the target device, and its device id when this
/// Device owns one. Fails only when the device's reported properties do not read back.
fn device_view<R: RequestResource>(
    ctx: &Context,
    state: &KindState<R>,
    device: Option<&CachedDevice>,
    target: &ObjectRef<Device>,
    request_id: &str,
) -> Result<(DeviceView, Option<DeviceId>)> {
    let mqtt_connected = ctx.mqtt_up();
    let last_sent = state.last_sent().get(request_id).copied();
    if device.is_none() {
        return Ok((
            DeviceView { exists: false, mqtt_connected, last_sent, ..Default::default() },
            None,
        ));
    }
    let fleet = ctx.fleet();
    let id = match fleet.claim_of(target) {
        Some(Claim::Owner(id)) => id,
        Some(Claim::Conflict { .. }) => {
            let view = DeviceView {
                exists: true,
                id_conflict: true,
                mqtt_connected,
                last_sent,
                ..Default::default()
            };
            return Ok((view, None));
        }
        // Not indexed yet (or no valid id): the device is not known to be online.
        None => {
            return Ok((
                DeviceView { exists: true, mqtt_connected, last_sent, ..Default::default() },
                None,
            ));
        }
    };
    let device_state = fleet.state(&id);
    let answer = device_state.and_then(|s| s.answer(request_id)).cloned();
    let reboot = match device_state {
        Some(state) => {
            state.reported.get(kubetwin_protocol::KEY_REBOOT).map_err(Error::Reported)?
        }
        None => None,
    };
    let reported_rebooting = reboot
        .and_then(|value| RebootState::from_value(&value))
        .is_some_and(|s| s.request_id == request_id && s.status == RebootStatus::Rebooting);
    let view = DeviceView {
        exists: true,
        id_conflict: false,
        online: device_state.and_then(|s| s.online()),
        boot: device_state.and_then(|s| s.boot()),
        answer,
        reported_rebooting,
        last_sent,
        mqtt_connected,
        methods: device_state.map(|s| s.methods.to_vec()).unwrap_or_default(),
        budget_exhausted: None,
    };
    Ok((view, Some(id)))
}

/// Publishes the request (MQTT 5: with response topic, correlation data and expiry).
async fn publish<R: RequestResource>(
    ctx: &Context,
    state: &KindState<R>,
    device_id: &DeviceId,
    request_id: &RequestId,
    call: Call,
    now: Timestamp,
) -> Result<()> {
    let message = MethodRequest::new(
        request_id.as_str(),
        call.method,
        call.params,
        format_rfc3339(now.as_millisecond()),
        format_rfc3339(call.expires_at.as_millisecond()),
    );
    let expiry = message.expiry_interval_secs(now.as_millisecond()).unwrap_or(1);
    ctx.publisher.request(device_id, request_id, &message, expiry).await?;
    state.last_sent().insert(request_id.to_string(), now);
    debug!(device = %device_id, request = %request_id, method = %message.method, "request published");
    Ok(())
}

/// Deletes a finished request whose TTL ran out (only this very object: uid precondition).
async fn delete<R: RequestResource>(
    ctx: &Context,
    state: &KindState<R>,
    key: &StatusKey,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    ctx.writer.forget(key);
    state.latest.forget(key);
    let api: Api<R> = Api::namespaced(ctx.client.clone(), namespace);
    match answered(api.delete(name, &params)).await? {
        Ok(_) => info!(request = %name, %namespace, "deleted after ttlSecondsAfterFinished"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// The request a follower entry names.
pub fn trigger_ref<R: RequestResource>(follower: &Follower) -> ObjectRef<R> {
    ObjectRef::new(&follower.name).within(&follower.namespace)
}
