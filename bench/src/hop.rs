//! What one pass through kube-runtime's controller scheduler costs, measured in this process
//! with no API server: a `Controller` over a cache that already holds one object, triggered
//! through `reconcile_on` (as the operator's MQTT answers trigger requests), timed from the
//! trigger to the start of the reconcile. The scheduler queues every trigger in a timer queue
//! with millisecond resolution, so even a trigger due at once waits for the next tick; B5's
//! path takes this hop twice (the create's watch event and the device's answer).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::ObjectMeta,
    runtime::{
        Controller,
        controller::Action,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio::sync::mpsc;

/// Longest wait for one reconcile (a hang guard).
const LIMIT: Duration = Duration::from_secs(10);
/// Pause between triggers, so that each one meets the timer at a different point of its tick
/// (an odd number of microseconds).
const SPACING: Duration = Duration::from_micros(2_317);

/// `runs` trigger → reconcile times, after one unmeasured warm-up.
pub async fn scheduler_hops(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some("hop".into()),
            namespace: Some("bench".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let (cache, mut writer) = reflector::store::<ConfigMap>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(object.clone()));
    writer.apply_watcher_event(&watcher::Event::InitDone);

    let (trigger, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<ConfigMap>>();
    let (started, mut starts) = mpsc::unbounded_channel::<Instant>();
    // No watch events: only the triggers make reconciles.
    let watch = futures::stream::pending::<Result<ConfigMap, watcher::Error>>();
    let controller = Controller::for_stream(watch, cache)
        .reconcile_on(triggers)
        .run(
            |_, started: Arc<mpsc::UnboundedSender<Instant>>| async move {
                // Fails only once the measurement stopped listening: nothing is left to time.
                let _ = started.send(Instant::now());
                Ok::<_, std::convert::Infallible>(Action::await_change())
            },
            |_, _, _| Action::await_change(),
            Arc::new(started),
        )
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let target = ObjectRef::from_obj(&object);
    let mut hops = Vec::with_capacity(runs);
    for i in 0..=runs {
        tokio::time::sleep(SPACING).await;
        let sent = Instant::now();
        trigger.unbounded_send(target.clone()).context("the controller stopped taking triggers")?;
        let reconciled = tokio::time::timeout(LIMIT, starts.recv())
            .await
            .context("no reconcile within 10 s of a trigger")?
            .context("the controller stopped")?;
        if i > 0 {
            hops.push(reconciled.saturating_duration_since(sent));
        }
    }
    running.abort();
    drop(writer);
    Ok(hops)
}
