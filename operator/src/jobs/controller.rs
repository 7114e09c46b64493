//! The DeviceJob controller: builds the planner's inputs from the caches (members, their
//! children, device readiness, budget room), runs the planner, creates the children it
//! starts, and offers the job's status. Children are found by owner uid and labels, and
//! named deterministically, so a restarted operator continues where the last one stopped.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    core::{Selector, SelectorExt},
    runtime::{controller::Action, events::EventType, reflector::Store},
};
use kubetwin_api::{
    DeviceJob, DeviceJobStatus, JobPhase, MethodRequest,
    job::{JOB_FINALIZER, OfflinePolicy},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    children::{attempt_of, child_name, child_of, child_request},
    status::{JobFacts, status_of, strategy_of},
};
use crate::{
    budgets::index::HOLDING_KINDS,
    context::{Context, DeviceOnline},
    error::{Error, Result},
    k8s::{
        Retries, answered, kind_label, reconcile_failed,
        status::{LatestStatuses, Priority, StatusKey, StatusKind},
    },
    rollout::planner::{Attempt, Member, Observed, Readiness, Room, plan},
};

/// How often a running job looks again (its status is written at most about this often).
pub const RUNNING_RECHECK: Duration = Duration::from_secs(1);
/// How often a suspended or paused job refreshes its plan.
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// Children created at once by one reconcile.
const CREATE_CONCURRENCY: usize = 16;

/// Children this process created that the cache may not show yet, per job uid: name →
/// (device, attempt, when). Without it a reconcile right after a create would not count the
/// new child as in flight and could start more than maxInFlight.
#[derive(Debug, Default)]
pub struct Created {
    inner: Mutex<HashMap<String, CreatedChildren>>,
}

/// Children of one job created by this process: name → (device, attempt, when).
type CreatedChildren = BTreeMap<String, (String, u32, Timestamp)>;

impl Created {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, CreatedChildren>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The job controller.
pub struct JobController {
    /// Shared services.
    pub ctx: Arc<Context>,
    /// Cache of the MethodRequests (the children).
    pub requests: Store<MethodRequest>,
    /// Statuses offered but maybe not in the cache yet.
    pub latest: LatestStatuses<DeviceJobStatus>,
    /// Children created but maybe not in the cache yet.
    pub created: Created,
    /// Failed reconciles per job.
    pub retries: Retries,
    /// When each job's status was last offered as urgent, by uid.
    pub progress_offered: ProgressOffers,
}

/// When each job's progress was last offered as an urgent status write, by job uid. Routine
/// writes can wait behind a steady stream of urgent ones (the children's phases) for as long
/// as a big job runs; offering a job's progress as urgent at most once per
/// [`PROGRESS_INTERVAL`] keeps `kubectl get devicejobs` current at about one write per second.
#[derive(Debug, Default)]
pub struct ProgressOffers {
    inner: Mutex<HashMap<String, std::time::Instant>>,
}

/// How often a job's changing progress is written at most.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

impl ProgressOffers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, std::time::Instant>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a change of `uid`'s progress goes out as urgent now (and records it if so).
    fn take_turn(&self, uid: &str, now: std::time::Instant) -> bool {
        let mut offers = self.lock();
        let due = offers.get(uid).is_none_or(|at| now.duration_since(*at) >= PROGRESS_INTERVAL);
        if due {
            offers.insert(uid.to_string(), now);
        }
        due
    }
}

/// Requeue after an error, later with each failure in a row.
pub fn error_policy(job: Arc<DeviceJob>, error: &Error, this: Arc<JobController>) -> Action {
    reconcile_failed(&*job, error, &this.ctx.metrics, &this.retries)
}

/// One child of the job, as the planner needs it.
struct Child {
    attempt: u32,
    state: Attempt,
    reason: Option<String>,
    created: Option<Timestamp>,
}

/// Plans the job and carries out the plan.
pub async fn reconcile(job: Arc<DeviceJob>, this: Arc<JobController>) -> Result<Action> {
    let ctx = &this.ctx;
    ctx.metrics.reconciled(kind_label::<DeviceJob>());
    let namespace = job.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = job.name_any();
    let uid = job.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let fleet_synced = ctx.fleet().synced();
    if !fleet_synced || !ctx.budgets().synced(&HOLDING_KINDS) {
        // Until Devices and requests are all listed, members and children are not all known.
        return Ok(Action::requeue(RUNNING_RECHECK));
    }
    let now = crate::clock::now();
    let key = StatusKey::new(StatusKind::of::<DeviceJob>(), &namespace, &name);
    let current = this.latest.newest(&key, job.status.as_ref());
    let deleting = job.metadata.deletion_timestamp.is_some();
    let strategy = strategy_of(&job.spec);
    let selector = Selector::try_from(job.spec.selector.clone())
        .map_err(|e| Error::Invalid(format!("spec.selector: {e}")))?;

    // Children, by device: from the cache, plus those created since that it does not show.
    let mut children: BTreeMap<String, Vec<Child>> = BTreeMap::new();
    let skip_offline = job.spec.offline_devices == OfflinePolicy::Skip;
    let mut seen_names = Vec::new();
    for request in
        this.requests.state().iter().filter(|r| r.namespace().as_deref() == Some(&namespace))
    {
        if let Some((device, attempt)) = child_of(request, &uid) {
            seen_names.push(request.name_any());
            children.entry(device).or_default().push(Child {
                attempt,
                state: attempt_of(request, skip_offline, now),
                reason: request.status.as_ref().and_then(|s| s.reason.clone()),
                created: request.metadata.creation_timestamp.as_ref().map(|t| t.0),
            });
        }
    }
    {
        let mut created = this.created.lock();
        let mine = created.entry(uid.clone()).or_default();
        for seen in &seen_names {
            mine.remove(seen);
        }
        for (device, attempt, at) in mine.values() {
            let list = children.entry(device.clone()).or_default();
            if !list.iter().any(|c| c.attempt == *attempt) {
                list.push(Child {
                    attempt: *attempt,
                    state: Attempt::InFlight,
                    reason: None,
                    created: Some(*at),
                });
            }
        }
    }

    // Members: the Devices the selector picks that existed when the job started (all of
    // them while it has not), and every device that has a child.
    let start_time = current.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let devices = ctx.devices_online(&namespace);
    let by_name: HashMap<String, &DeviceOnline> =
        devices.iter().map(|d| (d.device.name_any(), d)).collect();
    let mut names: Vec<String> = devices
        .iter()
        .filter(|d| selector.matches(d.device.labels()))
        .filter(|d| match (start_time, d.device.metadata.creation_timestamp.as_ref()) {
            (Some(start), Some(created)) => created.0 <= start,
            _ => true,
        })
        .map(|d| d.device.name_any())
        .collect();
    names.extend(children.keys().cloned());
    names.sort();
    names.dedup();

    // Budget room per (budget, group), and each member's groups.
    let (room, groups_of) = budget_room(ctx, &namespace, &devices);
    let methods_of = {
        let fleet = ctx.fleet();
        let mut methods = HashMap::new();
        for d in &devices {
            if let Some(crate::fleet::Claim::Owner(id)) = fleet.claim_of(&d.device.device_ref())
                && let Some(state) = fleet.state(&id)
            {
                methods.insert(d.device.name_any(), state.methods.to_vec());
            }
        }
        methods
    };
    let mut reasons = Vec::with_capacity(names.len());
    let mut started_last_minute = 0u32;
    let members: Vec<Member> = names
        .iter()
        .map(|device| {
            let list = children.get(device);
            let latest = list.and_then(|l| l.iter().max_by_key(|c| c.attempt));
            started_last_minute += list.map_or(0, |l| {
                l.iter()
                    .filter(|c| c.created.is_some_and(|t| now.duration_since(t).as_secs() < 60))
                    .count() as u32
            });
            reasons.push(latest.and_then(|c| c.reason.clone()));
            let readiness = match by_name.get(device) {
                Some(d) if !d.online => Readiness::Offline,
                Some(_) => match methods_of.get(device) {
                    Some(m) if !m.is_empty() && !m.iter().any(|m| *m == job.spec.method) => {
                        Readiness::NotSupporting
                    }
                    _ => Readiness::Ready,
                },
                None => Readiness::Offline,
            };
            Member {
                name: device.clone(),
                attempts: list.map_or(0, |l| u32::try_from(l.len()).unwrap_or(u32::MAX)),
                latest: latest.map_or(Attempt::None, |c| c.state),
                readiness,
                groups: groups_of.get(device).cloned().unwrap_or_default(),
            }
        })
        .collect();

    let aborted = current.as_ref().and_then(|s| s.phase) == Some(JobPhase::Aborted);
    let observed = Observed { started_last_minute, aborted, deleting };
    let decision = plan(&members, &strategy, &room, observed, now);

    // Deleting: once nothing is in flight, let the object (and its children) go.
    if deleting {
        if decision.counts.in_flight == 0 {
            remove_finalizer(ctx, &job).await?;
            this.created.lock().remove(&uid);
            this.progress_offered.lock().remove(&uid);
            this.latest.forget(&key);
            ctx.writer.forget(&key);
            return Ok(Action::await_change());
        }
    } else if !decision.starts.is_empty() && !has_finalizer(&job) {
        add_finalizer(ctx, &job).await?;
    }

    let start_time = start_time.or_else(|| (!decision.starts.is_empty()).then_some(now));
    let facts = JobFacts {
        generation: job.metadata.generation,
        current: current.as_ref(),
        start_time,
        members: &members,
        reasons: &reasons,
        deleting,
        now,
    };
    let status = status_of(&decision, &facts);

    // Create the children the planner starts, several at a time (a wave of thousands would
    // otherwise wait on one round trip after another). Each created child is remembered even
    // when another create fails, so maxInFlight holds until the cache shows them.
    let api: Api<MethodRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut children = Vec::with_capacity(decision.starts.len());
    for start in &decision.starts {
        let device = &members[start.member].name;
        let Some(child) = child_request(&job, device, start.attempt) else {
            return Err(Error::MissingField("metadata.name and metadata.uid of the job"));
        };
        children.push((child, device.clone(), start.attempt));
    }
    let results: Vec<_> =
        futures::stream::iter(children.into_iter().map(|(child, device, attempt)| {
            let api = api.clone();
            async move {
                match answered(api.create(&PostParams::default(), &child)).await? {
                    Ok(_) => Ok((device, attempt)),
                    // Created before (by this process or an earlier one): the cache shows it soon.
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok((device, attempt)),
                    Err(error) => Err(Error::from(error)),
                }
            }
        }))
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    ctx.metrics.job_children_created(created);
    let mut failure = None;
    for result in results {
        match result {
            Ok((device, attempt)) => {
                let child = child_name(&name, &device, attempt);
                this.created
                    .lock()
                    .entry(uid.clone())
                    .or_default()
                    .insert(child, (device, attempt, now));
            }
            Err(error) => failure = Some(error),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }

    // Status: a phase change is urgent; progress is urgent at most once a second, routine
    // otherwise (merged into the pending write).
    let phase_changed = current.as_ref().and_then(|s| s.phase) != status.phase;
    if current.as_ref() != Some(&status) {
        let urgent =
            phase_changed || this.progress_offered.take_turn(&uid, std::time::Instant::now());
        let priority = if urgent { Priority::Urgent } else { Priority::Routine };
        ctx.writer.offer(key.clone(), &status, job.status.as_ref(), priority)?;
        this.latest.record(key.clone(), status.clone());
    }
    if phase_changed && let Some(phase) = status.phase {
        let type_ = if matches!(phase, JobPhase::Failed | JobPhase::Aborted) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let reason = status.reason.clone().unwrap_or_default();
        let message = status.message.clone().unwrap_or_default();
        info!(job = %name, %namespace, phase = ?phase, %message, "job progressed");
        ctx.metrics.job_entered(phase.as_str());
        ctx.event(&*job, None::<&DeviceJob>, type_, &reason, message);
    }

    // Terminal with nothing in flight: the finalizer has done its work.
    let phase = status.phase.unwrap_or_default();
    if phase.is_terminal() && decision.counts.in_flight == 0 && has_finalizer(&job) {
        remove_finalizer(ctx, &job).await?;
    }
    this.retries.succeeded(&*job);
    if phase.is_terminal() && decision.counts.in_flight == 0 {
        return ttl_action(ctx, &job, &status, now).await;
    }
    let recheck = match phase {
        JobPhase::Suspended | JobPhase::Paused => IDLE_RECHECK,
        _ => RUNNING_RECHECK,
    };
    Ok(Action::requeue(
        decision.wake_after.map_or(recheck, |w| w.clamp(Duration::from_millis(200), recheck)),
    ))
}

/// Room each (budget, group) of the namespace has now, and the group indexes of each device.
fn budget_room(
    ctx: &Context,
    namespace: &str,
    devices: &[DeviceOnline],
) -> (Room, HashMap<String, Vec<usize>>) {
    let budgets = ctx.budgets();
    let mut room = Room::default();
    let mut groups_of: HashMap<String, Vec<usize>> = HashMap::new();
    for budget in budgets.budgets(namespace) {
        let groups = budgets.evaluate(namespace, &budget.name);
        let mut index_of = HashMap::new();
        for (group, state) in &groups {
            index_of.insert(group.clone(), room.allowed.len());
            room.allowed.push(state.allowed);
        }
        for d in devices.iter().filter(|d| budget.selector.matches(d.device.labels())) {
            if let Some(index) = index_of.get(budget.group_of(d.device.labels())) {
                groups_of.entry(d.device.name_any()).or_default().push(*index);
            }
        }
    }
    (room, groups_of)
}

fn has_finalizer(job: &DeviceJob) -> bool {
    job.finalizers().iter().any(|f| f == JOB_FINALIZER)
}

/// Adds the finalizer that lets in-flight children finish when the job is deleted.
async fn add_finalizer(ctx: &Context, job: &DeviceJob) -> Result<()> {
    let mut finalizers = job.finalizers().to_vec();
    finalizers.push(JOB_FINALIZER.to_string());
    patch_finalizers(ctx, job, finalizers).await
}

/// Removes the finalizer: nothing of the job is in flight any more.
async fn remove_finalizer(ctx: &Context, job: &DeviceJob) -> Result<()> {
    if !has_finalizer(job) {
        return Ok(());
    }
    let finalizers: Vec<String> =
        job.finalizers().iter().filter(|f| *f != JOB_FINALIZER).cloned().collect();
    patch_finalizers(ctx, job, finalizers).await
}

async fn patch_finalizers(ctx: &Context, job: &DeviceJob, finalizers: Vec<String>) -> Result<()> {
    let namespace = job.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<DeviceJob> = Api::namespaced(ctx.client.clone(), &namespace);
    // The resourceVersion makes this a compare-and-swap: a list changed meanwhile is retried.
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": job.resource_version(),
    }});
    match answered(api.patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch)))
        .await?
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// A finished job: delete it once its TTL ran out and its terminal status is persisted.
async fn ttl_action(
    ctx: &Context,
    job: &DeviceJob,
    status: &DeviceJobStatus,
    now: Timestamp,
) -> Result<Action> {
    let (Some(ttl), Some(completed)) =
        (job.spec.ttl_seconds_after_finished, status.completion_time.as_ref())
    else {
        return Ok(Action::await_change());
    };
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    let due = completed.0.checked_add(ttl).unwrap_or(completed.0);
    if now < due {
        let wait = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
        return Ok(Action::requeue(wait));
    }
    let persisted = job.status.as_ref().and_then(|s| s.phase).is_some_and(JobPhase::is_terminal);
    if !persisted {
        return Ok(Action::requeue(RUNNING_RECHECK));
    }
    let namespace = job.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<DeviceJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: job.uid(), resource_version: None }),
        ..DeleteParams::background()
    };
    match answered(api.delete(&job.name_any(), &params)).await? {
        Ok(_) => info!(job = %job.name_any(), "deleted after ttlSecondsAfterFinished"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => {
            warn!(%error, "cannot delete a finished job");
            return Err(error.into());
        }
    }
    Ok(Action::await_change())
}
