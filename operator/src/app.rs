//! The composition root: builds the shared services, wires every controller, the MQTT
//! inbound loop, the status writer and readiness, and runs them until a shutdown signal.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, channel::mpsc::UnboundedSender};
use kube::{
    Client, ResourceExt,
    runtime::{
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use kubetwin_api::{
    Device, DeviceConfiguration, DeviceDisruptionBudget, DeviceJob, MethodRequest, RebootRequest,
    job::JOB_LABEL,
};
use kubetwin_mqtt::LinkState;
use kubetwin_protocol::{Codec, DeviceId, Topics};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    budgets::{
        controller::{self as budget_controller, BudgetController},
        index::BudgetIndex,
    },
    config::OperatorConfig,
    configurations::{
        admissions::Admissions,
        controller::{self as configuration_controller, ConfigurationController},
        watch::{self as configuration_watch, Seen},
    },
    context::Context,
    error::Result,
    fleet::{ClearReason, FleetIndex},
    jobs::controller::{self as job_controller, JobController},
    k8s::{
        Retries, check_crds,
        events::EventSink,
        lean_controller, lean_controller_caching, resolve_initial_list,
        status::{StatusWriter, WriteBudget},
        wait_synced,
    },
    methods::{
        controller::{self as method_controller, KindState, MethodController},
        engine::Settings,
        resource::RequestResource,
    },
    telemetry::{http::Readiness, metrics::Metrics},
    transport::{
        self,
        inbound::{Decoder, PublishRefusal, RequestTrigger, ResyncAll, Triggers},
        outbound::Publisher,
    },
    twin::{
        cache::{CachedDevice, cached_ref},
        controller::{self as device_controller, DeviceController},
    },
};

/// Connects to MQTT and runs every controller until a shutdown signal. Readiness is
/// reported through `ready`.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    ready: watch::Sender<Readiness>,
) -> Result<()> {
    check_crds(&client, &config).await?;
    let config =
        OperatorConfig { initial_list: resolve_initial_list(&client, &config).await?, ..config };
    let topics = Topics::new(config.topic_root.clone());
    let codec = Codec::new(config.max_payload_bytes);
    let connection = transport::connection::connect(&config, &topics)?;
    let (mqtt, mqtt_events, link, _poll_task) = connection.into_parts();

    let orphan_prefix = config.watch_namespace.as_ref().map(|ns| format!("{ns}."));
    let fleet = Arc::new(Mutex::new(FleetIndex::with_orphan_prefix(orphan_prefix)));
    let (device_trigger, device_triggers) = futures::channel::mpsc::unbounded();
    let (clear_sender, clear_requests) = tokio::sync::mpsc::unbounded_channel::<DeviceId>();
    let budget_index = Arc::new(Mutex::new(BudgetIndex::default()));
    let devices = {
        let fleet = fleet.clone();
        let trigger = device_trigger.clone();
        let budget_index = budget_index.clone();
        lean_controller_caching::<Device, _>(&client, &config, CachedDevice::new, move |event| {
            budget_controller::observe_device(event, &budget_index);
            let change = fleet
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .device_event(event, crate::clock::now());
            for device in change.reconcile {
                let _ = trigger.unbounded_send(cached_ref(device));
            }
            for id in change.freed {
                let _ = clear_sender.send(id);
            }
        })
    };

    // Configurations: a change reconciles the Devices whose effective twin it affects.
    let admissions = Arc::new(Mutex::new(Admissions::default()));
    let configuration_watch = Arc::new(Seen::default());
    let configurations = {
        let seen = configuration_watch.clone();
        let admissions = admissions.clone();
        let device_store = devices.store();
        let trigger = device_trigger.clone();
        lean_controller::<DeviceConfiguration>(&client, &config, move |event| {
            configuration_watch::observe(event, &seen, &admissions, &device_store, &trigger)
        })
    };

    let writer = StatusWriter::new(
        client.clone(),
        metrics.clone(),
        WriteBudget {
            rate: config.status_write_rate,
            burst: config.status_write_burst,
            min_interval: Duration::from_millis(config.status_min_interval_ms),
        },
    );
    tokio::spawn(writer.clone().run());
    let reporter = Reporter {
        controller: "kubetwin-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let events = EventSink::start(
        Recorder::new(client.clone(), reporter),
        metrics.clone(),
        config.event_rate,
        config.event_burst,
    );

    // Disruption budgets: fed by the budget watch (the budgets) and the request watches
    // (which devices requests disrupt now).
    let budgets = {
        let index = budget_index.clone();
        lean_controller::<DeviceDisruptionBudget>(&client, &config, move |event| {
            budget_controller::observe(event, &index)
        })
    };

    // The reboot request kind: its state exists before its watch, which keeps it current.
    let reboot_state = Arc::new(KindState::<RebootRequest>::default());
    let reboots = {
        let fleet = fleet.clone();
        let budget_index = budget_index.clone();
        let state = reboot_state.clone();
        let writer = writer.clone();
        lean_controller::<RebootRequest>(&client, &config, move |event| {
            method_controller::observe(event, &fleet, &budget_index, &state, &writer)
        })
    };
    let (reboot_trigger, reboot_triggers) = futures::channel::mpsc::unbounded();
    // The named-method kind (MethodRequest), wired the same way; a change of a job's child
    // also wakes its job.
    let (job_trigger, job_triggers) = futures::channel::mpsc::unbounded();
    let method_state = Arc::new(KindState::<MethodRequest>::default());
    let method_requests = {
        let fleet = fleet.clone();
        let budget_index = budget_index.clone();
        let state = method_state.clone();
        let writer = writer.clone();
        lean_controller::<MethodRequest>(&client, &config, move |event| {
            method_controller::observe(event, &fleet, &budget_index, &state, &writer);
            if let kube::runtime::watcher::Event::Apply(request)
            | kube::runtime::watcher::Event::Delete(request) = event
                && let Some(job) = request.labels().get(JOB_LABEL)
            {
                let job = ObjectRef::<DeviceJob>::new(job)
                    .within(&request.namespace().unwrap_or_default());
                let _ = job_trigger.unbounded_send(job);
            }
        })
    };
    let jobs = lean_controller::<DeviceJob>(&client, &config, |_| {});
    let (method_trigger, method_triggers) = futures::channel::mpsc::unbounded();

    let ctx = Arc::new(Context {
        client: client.clone(),
        fleet: fleet.clone(),
        devices: devices.store(),
        publisher: Publisher::new(mqtt, topics.clone(), codec, metrics.clone()),
        link: link.clone(),
        writer,
        events,
        metrics: metrics.clone(),
        budgets: budget_index,
        configurations: configurations.store(),
        admissions,
        configuration_watch,
    });

    tokio::spawn(clear_freed_desired(ctx.clone(), clear_requests));
    tokio::spawn(crate::twin::resync::walk(devices.store(), device_trigger.clone()));
    let device_store = devices.store();
    let reboot_store = reboots.store();
    let method_store = method_requests.store();
    let triggers = Triggers {
        devices: device_trigger.clone(),
        requests: HashMap::from([
            request_trigger::<RebootRequest>(reboot_trigger.clone()),
            request_trigger::<MethodRequest>(method_trigger.clone()),
        ]),
        resync: vec![
            resync_all(device_store.clone(), device_trigger.clone()),
            resync_all(reboot_store.clone(), reboot_trigger),
            resync_all(method_store.clone(), method_trigger),
        ],
    };

    let _ = ready.send(Readiness::NotReady("caches syncing".into()));
    let (refusals, refused) = watch::channel(None);
    let (stopping, stopping_seen) = watch::channel(false);
    let caches = RequiredCaches {
        devices: device_store,
        reboots: reboot_store.clone(),
        methods: method_store.clone(),
        jobs: jobs.store(),
        budgets: budgets.store(),
        configurations: configurations.store(),
    };
    tokio::spawn(readiness(caches, link, refused, stopping_seen, metrics.clone(), ready));
    tokio::spawn(crate::telemetry::fleet::run(
        devices.store(),
        reboot_store.clone(),
        method_store.clone(),
        metrics.clone(),
    ));
    let decoder = Decoder { topics, codec };
    tokio::spawn(transport::inbound::run(ctx.clone(), decoder, triggers, mqtt_events, refusals));

    info!(broker = %config.broker_url, root = %config.topic_root, "controllers starting");
    let device_controller =
        Arc::new(DeviceController { ctx: ctx.clone(), retries: Retries::default() });
    let settings = Settings {
        return_timeout: Duration::from_secs(config.reboot_return_timeout_seconds),
        budget_wait: Duration::from_secs(config.budget_wait_seconds),
    };
    let reboot_controller = Arc::new(MethodController {
        ctx: ctx.clone(),
        requests: reboot_store,
        settings,
        state: reboot_state,
        retries: Retries::default(),
    });
    let named_controller = Arc::new(MethodController {
        ctx: ctx.clone(),
        requests: method_store.clone(),
        settings,
        state: method_state,
        retries: Retries::default(),
    });
    let job_controller = Arc::new(JobController {
        ctx: ctx.clone(),
        requests: method_store,
        latest: Default::default(),
        created: Default::default(),
        retries: Retries::default(),
        progress_offered: Default::default(),
    });
    let budget_controller =
        Arc::new(BudgetController { ctx: ctx.clone(), retries: Retries::default() });
    let configuration_controller = Arc::new(ConfigurationController {
        ctx: ctx.clone(),
        configurations: configurations.store(),
        devices: device_trigger.clone(),
        retries: Retries::default(),
        announced: Default::default(),
    });
    let running = RunningControllers::default();
    let configurations = running.track(
        "DeviceConfiguration",
        configurations.run(
            configuration_controller::reconcile,
            configuration_controller::error_policy,
            configuration_controller,
        ),
    );
    let devices = running.track(
        "Device",
        devices.reconcile_on(device_triggers).run(
            device_controller::reconcile,
            device_controller::error_policy,
            device_controller,
        ),
    );
    let reboots = running.track(
        "RebootRequest",
        reboots.reconcile_on(reboot_triggers).run(
            method_controller::reconcile::<RebootRequest>,
            method_controller::error_policy::<RebootRequest>,
            reboot_controller,
        ),
    );
    let methods = running.track(
        "MethodRequest",
        method_requests.reconcile_on(method_triggers).run(
            method_controller::reconcile::<MethodRequest>,
            method_controller::error_policy::<MethodRequest>,
            named_controller,
        ),
    );
    let jobs = running.track(
        "DeviceJob",
        jobs.reconcile_on(job_triggers).run(
            job_controller::reconcile,
            job_controller::error_policy,
            job_controller,
        ),
    );
    let budgets = running.track(
        "DeviceDisruptionBudget",
        budgets.run(
            budget_controller::reconcile,
            budget_controller::error_policy,
            budget_controller,
        ),
    );
    let controllers = futures::future::join(
        futures::future::join3(devices, reboots, methods),
        futures::future::join3(jobs, budgets, configurations),
    );
    // Each controller stops on SIGTERM once its reconciles in flight finish. One that cannot
    // (a reconcile stuck on I/O, or a controller signalled before its cache was complete:
    // kube-runtime then waits for a readiness its stopped watch never brings) must not keep
    // a terminating leader holding the Lease while it no longer acts, where the standby could
    // never take over: after a grace the operator leaves anyway.
    let on_signal = || {
        let _ = stopping.send(true);
    };
    let stop = stop_within(controllers, shutdown_signal(), on_signal, RECONCILES_STOP_GRACE).await;
    if stop.outcome == StopOutcome::GraceEnded {
        warn!(still_running = ?running.names(), grace = ?RECONCILES_STOP_GRACE, "controllers did not stop within the grace after the shutdown signal; leaving anyway");
    }
    let _ = stopping.send(true);
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    shut_down(&ctx, grace.saturating_sub(stop.since_signal)).await;
    Ok(())
}

/// How the controllers ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopOutcome {
    /// Every controller stopped (after the signal, or on its own).
    Stopped,
    /// The grace after the signal ended first.
    GraceEnded,
}

/// What [`stop_within`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    outcome: StopOutcome,
    /// Time from the signal to the end (zero without a signal).
    since_signal: Duration,
}

/// Runs `controllers` until they end, or until `grace` after `signal` (which calls
/// `on_signal` once it resolves).
async fn stop_within(
    controllers: impl Future,
    signal: impl Future<Output = ()>,
    on_signal: impl FnOnce(),
    grace: Duration,
) -> Stop {
    let signalled = std::sync::OnceLock::new();
    let grace_after_signal = async {
        signal.await;
        let _ = signalled.set(tokio::time::Instant::now());
        on_signal();
        tokio::time::sleep(grace).await;
    };
    let outcome = tokio::select! {
        _ = controllers => StopOutcome::Stopped,
        () = grace_after_signal => StopOutcome::GraceEnded,
    };
    let since_signal = signalled.get().map_or(Duration::ZERO, |at| at.elapsed());
    Stop { outcome, since_signal }
}

/// Longest wait, after a shutdown signal, for the controllers to stop. A reconcile takes
/// milliseconds; this bounds the ones that cannot stop.
const RECONCILES_STOP_GRACE: Duration = Duration::from_secs(5);

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends a pod it stops).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The controllers still running, by kind: what a shutdown that hangs names.
#[derive(Clone, Default)]
struct RunningControllers(Arc<Mutex<Vec<&'static str>>>);

impl RunningControllers {
    /// Runs a controller's stream to its end and then drops `kind` from the running ones.
    fn track<S: futures::Stream>(
        &self,
        kind: &'static str,
        controller: S,
    ) -> impl Future<Output = ()> + use<S> {
        self.lock().push(kind);
        let running = self.clone();
        async move {
            controller.for_each(|_| async {}).await;
            running.lock().retain(|k| *k != kind);
            info!(%kind, "controller stopped");
        }
    }

    /// The kinds whose controller has not stopped.
    fn names(&self) -> Vec<&'static str> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<&'static str>> {
        // A panic while holding it leaves a plain list: still usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// After a shutdown signal stopped the controllers: leave the broker, so that it queues what
/// devices send for the next leader (the session is persistent), then write the statuses still
/// queued within `grace`.
async fn shut_down(ctx: &Context, grace: Duration) {
    info!("controllers stopped; leaving the broker and writing the statuses still queued");
    if let Err(error) = ctx.publisher.disconnect().await {
        warn!(%error, "cannot disconnect from the broker cleanly");
    }
    let started = Instant::now();
    let queued = ctx.writer.depth();
    let left = ctx.writer.drain(grace).await;
    if left == 0 {
        info!(written = queued, took = ?started.elapsed(), "every queued status written");
    } else {
        warn!(
            left,
            ?grace,
            "statuses still queued when the shutdown grace ended; the next leader recovers them when devices resync"
        );
    }
}

/// Clears the retained desired document of every device id no Device has any more, so a
/// device whose Device was deleted is not configured by a document nobody manages.
async fn clear_freed_desired(
    ctx: Arc<Context>,
    mut freed: tokio::sync::mpsc::UnboundedReceiver<DeviceId>,
) {
    while let Some(id) = freed.recv().await {
        match ctx.publisher.clear_desired(&id).await {
            Ok(()) => {
                ctx.metrics.desired_cleared(ClearReason::Deleted);
                info!(device = %id, "no Device has this device id any more: cleared its desired document");
            }
            Err(error) => {
                warn!(device = %id, %error, "cannot clear the desired document of a deleted Device; it is cleared when the operator next connects");
            }
        }
    }
}

/// The trigger of request kind `R`, keyed by its kind label.
fn request_trigger<R: RequestResource>(
    sender: UnboundedSender<ObjectRef<R>>,
) -> (&'static str, RequestTrigger) {
    let trigger: RequestTrigger = Box::new(move |follower| {
        let _ = sender.unbounded_send(method_controller::trigger_ref::<R>(follower));
    });
    (crate::k8s::kind_label::<R>(), trigger)
}

/// Reconciles every cached object of a kind.
fn resync_all<K>(store: Store<K>, sender: UnboundedSender<ObjectRef<K>>) -> ResyncAll
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    Box::new(move || {
        for object in store.state() {
            let _ = sender.unbounded_send(
                ObjectRef::new(&object.name_any()).within(&object.namespace().unwrap_or_default()),
            );
        }
    })
}

/// How long a publication the broker refused keeps the operator not ready.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(60);

/// What `/readyz` says once the caches are synced, for a broker link in `state` and the last
/// publication the broker refused, at `now`.
pub fn readiness_of(
    state: &LinkState,
    refusal: Option<&PublishRefusal>,
    now: Instant,
) -> Readiness {
    if let Some(refusal) = refusal.filter(|r| now.saturating_duration_since(r.at) < REFUSAL_HOLD)
        && matches!(state, LinkState::Up { refused } if refused.is_empty())
    {
        return Readiness::NotReady(format!(
            "the broker refused a publication of the operator ({}): check the broker's ACL for the operator's identity",
            refusal.reason
        ));
    }
    match state {
        LinkState::Up { refused } if refused.is_empty() => Readiness::Ready,
        LinkState::Up { refused } => {
            let list: Vec<String> =
                refused.iter().map(|r| format!("{} ({})", r.filter, r.reason)).collect();
            Readiness::NotReady(format!(
                "the broker refused the subscriptions the operator needs: {}",
                list.join(", ")
            ))
        }
        LinkState::Down => Readiness::NotReady("MQTT disconnected".into()),
    }
}

/// The caches readiness waits for: every controller's. A controller whose cache is not
/// complete yet cannot stop gracefully (kube-runtime holds its runner until the cache is
/// ready, and a shutdown stops the watch that would make it ready), so an operator is ready
/// — and may be sent SIGTERM as a rolling update goes on — only once all of them are.
struct RequiredCaches {
    devices: Store<CachedDevice>,
    reboots: Store<RebootRequest>,
    methods: Store<MethodRequest>,
    jobs: Store<DeviceJob>,
    budgets: Store<DeviceDisruptionBudget>,
    configurations: Store<DeviceConfiguration>,
}

impl RequiredCaches {
    /// Waits until every cache holds its first complete list; false when a writer is gone.
    async fn synced(&self) -> bool {
        wait_synced(&self.devices).await
            && wait_synced(&self.reboots).await
            && wait_synced(&self.methods).await
            && wait_synced(&self.jobs).await
            && wait_synced(&self.budgets).await
            && wait_synced(&self.configurations).await
    }
}

/// Ready once every cache is synced and while MQTT is connected with every subscription the
/// operator needs granted, until a shutdown starts (`stopping`); otherwise `/readyz` says why.
async fn readiness(
    caches: RequiredCaches,
    mut link: watch::Receiver<LinkState>,
    mut refused: watch::Receiver<Option<PublishRefusal>>,
    mut stopping: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    ready: watch::Sender<Readiness>,
) {
    if !caches.synced().await {
        return;
    }
    tracing::debug!("caches synced");
    loop {
        if *stopping.borrow_and_update() {
            // A terminating operator no longer acts: it is not the one to send traffic to.
            let _ = ready.send(Readiness::NotReady("shutting down".into()));
            return;
        }
        let state = link.borrow_and_update().clone();
        let refusal = refused.borrow_and_update().clone();
        metrics.set_mqtt_connected(matches!(state, LinkState::Up { .. }));
        let now = Instant::now();
        let _ = ready.send(readiness_of(&state, refusal.as_ref(), now));
        // Look again when a refusal stops counting.
        let expiry = refusal
            .map(|r| (r.at + REFUSAL_HOLD).saturating_duration_since(now))
            .filter(|left| !left.is_zero())
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            changed = link.changed() => if changed.is_err() { return },
            changed = refused.changed() => if changed.is_err() { return },
            changed = stopping.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(expiry) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetwin_mqtt::Refusal;

    #[tokio::test(start_paused = true)]
    async fn controllers_stuck_after_the_signal_are_left_after_the_grace() {
        let mut told = false;
        let stop = stop_within(
            std::future::pending::<()>(),
            tokio::time::sleep(Duration::from_secs(2)),
            || told = true,
            RECONCILES_STOP_GRACE,
        )
        .await;
        assert_eq!(
            stop,
            Stop { outcome: StopOutcome::GraceEnded, since_signal: RECONCILES_STOP_GRACE }
        );
        assert!(told, "readiness learns of the shutdown at the signal");
    }

    /// Why the grace exists: kube-runtime holds a controller's runner until its cache is
    /// ready, and a graceful shutdown stops the watch that would make it ready, so a
    /// controller signalled before its first list completes never ends by itself.
    #[tokio::test(start_paused = true)]
    async fn a_controller_signalled_before_its_cache_is_complete_is_left_after_the_grace() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::{Controller, controller::Action, reflector, watcher};

        // A controller told to stop at once, over a watch that has listed or not. The cache's
        // writer stays alive, as it does inside the operator's watch stream.
        let stopped_at_once = |listed: bool| {
            let (cache, mut writer) = reflector::store::<ConfigMap>();
            if listed {
                writer.apply_watcher_event(&watcher::Event::Init);
                writer.apply_watcher_event(&watcher::Event::InitDone);
            }
            let watch = futures::stream::pending::<Result<ConfigMap, watcher::Error>>();
            let controller = Controller::for_stream(watch, cache)
                .graceful_shutdown_on(async {})
                .run(
                    |_, _| async { Ok::<_, crate::error::Error>(Action::await_change()) },
                    |_, _, _| Action::await_change(),
                    Arc::new(()),
                )
                .for_each(|_| async {});
            (controller, writer)
        };
        let (controller, _writer) = stopped_at_once(false);
        let not_listed = stop_within(controller, async {}, || {}, RECONCILES_STOP_GRACE).await;
        assert_eq!(
            not_listed,
            Stop { outcome: StopOutcome::GraceEnded, since_signal: RECONCILES_STOP_GRACE }
        );
        // The control: the same controller with its cache complete stops by itself.
        let (controller, _writer) = stopped_at_once(true);
        let listed = stop_within(controller, async {}, || {}, RECONCILES_STOP_GRACE).await;
        assert_eq!(listed, Stop { outcome: StopOutcome::Stopped, since_signal: Duration::ZERO });
    }

    #[tokio::test(start_paused = true)]
    async fn controllers_that_stop_after_the_signal_end_it_at_once() {
        let stop = stop_within(
            tokio::time::sleep(Duration::from_secs(3)),
            tokio::time::sleep(Duration::from_secs(2)),
            || {},
            RECONCILES_STOP_GRACE,
        )
        .await;
        assert_eq!(
            stop,
            Stop { outcome: StopOutcome::Stopped, since_signal: Duration::from_secs(1) }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_signal_the_controllers_run_until_they_end() {
        let stop = stop_within(
            tokio::time::sleep(Duration::from_secs(3600)),
            std::future::pending(),
            || panic!("no signal came"),
            RECONCILES_STOP_GRACE,
        )
        .await;
        assert_eq!(stop, Stop { outcome: StopOutcome::Stopped, since_signal: Duration::ZERO });
    }

    #[test]
    fn a_refused_subscription_makes_the_operator_not_ready_and_says_which() {
        let refused = LinkState::Up {
            refused: vec![Refusal {
                filter: "kt/+/presence".into(),
                reason: "NotAuthorized".into(),
            }],
        };
        let now = Instant::now();
        assert_eq!(
            readiness_of(&refused, None, now),
            Readiness::NotReady(
                "the broker refused the subscriptions the operator needs: kt/+/presence (NotAuthorized)"
                    .into()
            )
        );
        let up = LinkState::Up { refused: Vec::new() };
        assert_eq!(readiness_of(&up, None, now), Readiness::Ready);
        assert_eq!(
            readiness_of(&LinkState::Down, None, now),
            Readiness::NotReady("MQTT disconnected".into())
        );
    }

    #[test]
    fn a_refused_publication_makes_the_operator_not_ready_for_a_while() {
        let at = Instant::now();
        let refusal = PublishRefusal { at, reason: "NotAuthorized".into() };
        let up = LinkState::Up { refused: Vec::new() };
        assert_eq!(
            readiness_of(&up, Some(&refusal), at + Duration::from_secs(59)),
            Readiness::NotReady(
                "the broker refused a publication of the operator (NotAuthorized): check the broker's ACL for the operator's identity"
                    .into()
            )
        );
        assert_eq!(readiness_of(&up, Some(&refusal), at + REFUSAL_HOLD), Readiness::Ready);
    }
}
