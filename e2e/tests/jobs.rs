//! Fleet jobs and disruption budgets, end to end: DeviceJobs and DeviceDisruptionBudgets on a
//! real kube-apiserver, mosquitto, the operator binary and the simulator. What the jobs'
//! children do is recorded by a watch, as `kubectl get methodrequests -w -l kubetwin.io/job`
//! would show it; what devices executed comes from the simulator's ledgers.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{
    DeviceDisruptionBudget, DeviceJob, DeviceJobStatus, JobPhase, MethodPhase, MethodRequest,
    RebootPhase,
    job::{ATTEMPT_LABEL, DEVICE_LABEL, JOB_LABEL},
};
use kubetwin_e2e::{
    fleet::{Operator, Simulator},
    scenario::{Setup, create_reboot, is_connected, phase, reason, setup},
    wait::wait_for,
};
use serde_json::{Value, json};

fn jobs(s: &Setup) -> Api<DeviceJob> {
    Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace)
}

fn methods(s: &Setup) -> Api<MethodRequest> {
    Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace)
}

fn budgets(s: &Setup) -> Api<DeviceDisruptionBudget> {
    Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace)
}

/// Creates Devices `names`, each with the labels `labels_of` gives it.
async fn create_devices(s: &Setup, names: &[String], labels_of: impl Fn(usize) -> Value) {
    for (i, name) in names.iter().enumerate() {
        let device = serde_json::from_value(json!({
            "apiVersion": "kubetwin.io/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "labels": labels_of(i)}, "spec": {},
        }))
        .unwrap();
        s.devices.create(&PostParams::default(), &device).await.expect("device created");
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn ids(s: &Setup, names: &[String]) -> Vec<String> {
    names.iter().map(|n| s.scope.device_id(n)).collect()
}

/// Waits until every Device in `names` is connected.
async fn all_connected(s: &Setup, names: &[String]) {
    for name in names {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }
}

/// The DeviceJob manifest `name` with `spec`.
fn job_manifest(name: &str, spec: Value) -> DeviceJob {
    serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceJob",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Applies the DeviceJob manifest (server-side apply, as `kubectl apply --server-side` or a
/// GitOps tool would).
async fn apply_job(s: &Setup, name: &str, spec: Value) -> DeviceJob {
    jobs(s)
        .patch(
            name,
            &PatchParams::apply("e2e-gitops").force(),
            &Patch::Apply(job_manifest(name, spec)),
        )
        .await
        .expect("job applied")
}

fn job_phase(job: &DeviceJob) -> Option<JobPhase> {
    job.status.as_ref().and_then(|s| s.phase)
}

/// Waits for job `name` to reach a terminal phase with nothing in flight, and returns its
/// status.
async fn job_finished(s: &Setup, name: &str) -> DeviceJobStatus {
    let job = wait_for(&jobs(s), name, "a terminal phase with nothing in flight", |j| {
        j.status.as_ref().is_some_and(|st| {
            st.phase.is_some_and(JobPhase::is_terminal) && st.counts.in_flight == 0
        })
    })
    .await;
    job.status.unwrap()
}

/// What a watch on a job's children saw.
#[derive(Debug, Default)]
struct ChildLog {
    /// Child name → (device, latest phase).
    children: BTreeMap<String, (String, Option<MethodPhase>)>,
    /// Most children not finished at once.
    max_in_flight: usize,
    /// Per group (from `group_of` the device), most children disrupting at once (sent and
    /// not finished).
    max_disrupting: BTreeMap<String, usize>,
}

fn disrupting(phase: Option<MethodPhase>) -> bool {
    matches!(
        phase,
        Some(
            MethodPhase::Sent
                | MethodPhase::Accepted
                | MethodPhase::InProgress
                | MethodPhase::Rebooting
        )
    )
}

/// Records every change of the children of job `job`; `group_of` maps a device to its group.
fn record_children(
    s: &Setup,
    job: &str,
    group_of: impl Fn(&str) -> String + Send + 'static,
) -> Arc<Mutex<ChildLog>> {
    let log = Arc::new(Mutex::new(ChildLog::default()));
    let sink = log.clone();
    let config = watcher::Config::default().labels(&format!("{JOB_LABEL}={job}"));
    let stream = watcher(methods(s), config).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(child)) = stream.next().await {
            let mut log = sink.lock().unwrap();
            let device = child.spec.device_name.clone();
            let phase = child.status.as_ref().and_then(|st| st.phase);
            log.children.insert(child.metadata.name.clone().unwrap_or_default(), (device, phase));
            let in_flight = log
                .children
                .values()
                .filter(|(_, p)| !p.is_some_and(MethodPhase::is_terminal))
                .count();
            log.max_in_flight = log.max_in_flight.max(in_flight);
            let mut per_group: HashMap<String, usize> = HashMap::new();
            for (device, phase) in log.children.values() {
                if disrupting(*phase) {
                    *per_group.entry(group_of(device)).or_default() += 1;
                }
            }
            for (group, n) in per_group {
                let max = log.max_disrupting.entry(group).or_default();
                *max = (*max).max(n);
            }
        }
    });
    log
}

/// The job's children from the API: device → phases of its attempts, in attempt order.
async fn children_by_device(s: &Setup, job: &str) -> BTreeMap<String, Vec<MethodPhase>> {
    let list = methods(s)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job}")))
        .await
        .unwrap();
    let mut attempts: BTreeMap<String, Vec<(u32, MethodPhase)>> = BTreeMap::new();
    for child in list.items {
        let labels = child.metadata.labels.clone().unwrap_or_default();
        let attempt: u32 = labels.get(ATTEMPT_LABEL).and_then(|a| a.parse().ok()).unwrap();
        let phase = child.status.as_ref().and_then(|st| st.phase).unwrap_or_default();
        attempts.entry(labels[DEVICE_LABEL].clone()).or_default().push((attempt, phase));
    }
    attempts
        .into_iter()
        .map(|(device, mut list)| {
            list.sort_by_key(|(attempt, _)| *attempt);
            let numbers: Vec<u32> = list.iter().map(|(a, _)| *a).collect();
            let expected: Vec<u32> = (0..u32::try_from(list.len()).unwrap()).collect();
            assert_eq!(numbers, expected, "{device}: one child per attempt, none twice");
            (device, list.into_iter().map(|(_, p)| p).collect())
        })
        .collect()
}

#[tokio::test]
async fn a_reboot_job_stays_within_max_in_flight_and_reboots_every_device_once() {
    let s = setup("job-inflight").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let devices = names("node", 100);
    create_devices(&s, &devices, |_| json!({"site": "a"})).await;
    let sim = Simulator::start(s.env, &s.scope, &ids(&s, &devices), &["--boot-seconds=0.5"])
        .expect("sim");
    all_connected(&s, &devices).await;

    let log = record_children(&s, "reboot-site-a", |_| String::new());
    apply_job(
        &s,
        "reboot-site-a",
        json!({"selector": {"matchLabels": {"site": "a"}}, "method": "reboot",
            "rollout": {"maxInFlight": 10}}),
    )
    .await;
    let status = job_finished(&s, "reboot-site-a").await;
    assert_eq!(status.phase, Some(JobPhase::Succeeded), "{status:#?}");
    let c = &status.counts;
    assert_eq!(
        (
            c.targeted,
            c.succeeded,
            c.failed,
            c.timed_out,
            c.rejected,
            c.skipped,
            c.pending,
            c.retried
        ),
        (100, 100, 0, 0, 0, 0, 0, 0)
    );
    assert_eq!(status.progress.as_deref(), Some("100/100"));
    let max_in_flight = log.lock().unwrap().max_in_flight;
    assert!(max_in_flight <= 10, "at most 10 in flight; the watch saw {max_in_flight}");
    assert!(max_in_flight >= 2, "the job ran devices in parallel (saw {max_in_flight})");
    let children = children_by_device(&s, "reboot-site-a").await;
    assert_eq!(children.len(), 100);
    assert!(children.values().all(|p| p == &[MethodPhase::Succeeded]), "{children:?}");
    for id in ids(&s, &devices) {
        assert_eq!(sim.executed(&id).unwrap().len(), 1, "{id} rebooted exactly once");
    }
    let complete = status.conditions.iter().find(|c| c.type_ == "Complete").unwrap();
    assert_eq!((complete.status.as_str(), complete.reason.as_str()), ("True", "AllSucceeded"));
}

#[tokio::test]
async fn a_job_aborts_when_too_many_devices_reject_and_lets_in_flight_calls_finish() {
    let s = setup("job-abort").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let devices = names("lamp", 40);
    create_devices(&s, &devices, |_| json!({"kind": "lamp"})).await;
    // Every third device rejects (about 30 %), spread through the name order.
    let rejecting: Vec<String> = devices.iter().skip(1).step_by(3).cloned().collect();
    let willing: Vec<String> = devices.iter().filter(|d| !rejecting.contains(d)).cloned().collect();
    let _rejecting = Simulator::start(s.env, &s.scope, &ids(&s, &rejecting), &["--reject-methods"])
        .expect("sim");
    let _willing = Simulator::start(s.env, &s.scope, &ids(&s, &willing), &[]).expect("sim");
    all_connected(&s, &devices).await;

    apply_job(
        &s,
        "leds",
        json!({"selector": {"matchLabels": {"kind": "lamp"}}, "method": "setLed",
            "params": {"on": true}, "rollout": {"maxInFlight": 4},
            "abort": [{"failureType": "Rejected", "minExecuted": 10, "thresholdPercent": 25}]}),
    )
    .await;
    let status = job_finished(&s, "leds").await;
    assert_eq!(status.phase, Some(JobPhase::Aborted), "{status:#?}");
    let c = &status.counts;
    let executed = c.succeeded + c.rejected + c.failed + c.timed_out;
    assert!(executed >= 10, "judged only after 10 finished: {c:?}");
    assert!(c.rejected * 100 >= 25 * executed, "aborted at or above 25 % rejected: {c:?}");
    assert!(c.pending > 0, "nothing more started once aborted: {c:?}");
    // Counts are the children's phases: every child finished, and none was started after.
    let children = children_by_device(&s, "leds").await;
    let phases: Vec<MethodPhase> = children.values().flatten().copied().collect();
    assert!(phases.iter().all(|p| p.is_terminal()), "in-flight calls finished: {phases:?}");
    let count = |phase| i32::try_from(phases.iter().filter(|p| **p == phase).count()).unwrap();
    assert_eq!(
        (count(MethodPhase::Succeeded), count(MethodPhase::Rejected)),
        (c.succeeded, c.rejected)
    );
    assert_eq!(c.pending, 40 - i32::try_from(children.len()).unwrap());
    // The rejections say who and why.
    assert!(
        status.failed_devices.iter().all(|f| f.phase == "Rejected" && f.reason == "DeviceRejected"),
        "{:?}",
        status.failed_devices
    );
    let aborted_children = children.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        children_by_device(&s, "leds").await.len(),
        aborted_children,
        "no child after the abort"
    );
}

#[tokio::test]
async fn failed_devices_are_retried_up_to_the_limit() {
    let s = setup("job-retry").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let flaky = names("flaky", 4); // fail once, then work
    let broken = names("broken", 2); // fail five times: more than the retry limit
    let all: Vec<String> = flaky.iter().chain(&broken).cloned().collect();
    create_devices(&s, &all, |_| json!({"group": "retry"})).await;
    let _flaky = Simulator::start(s.env, &s.scope, &ids(&s, &flaky), &["--fail-first-requests=1"])
        .expect("sim");
    let _broken =
        Simulator::start(s.env, &s.scope, &ids(&s, &broken), &["--fail-first-requests=5"])
            .expect("sim");
    all_connected(&s, &all).await;

    apply_job(
        &s,
        "retrying",
        json!({"selector": {"matchLabels": {"group": "retry"}}, "method": "setLed",
            "params": {"on": true}, "retry": {"limit": 2, "onFailures": ["Failed"], "backoffSeconds": 1}}),
    )
    .await;
    let status = job_finished(&s, "retrying").await;
    assert_eq!(status.phase, Some(JobPhase::Failed), "{status:#?}");
    let c = &status.counts;
    assert_eq!((c.succeeded, c.failed, c.retried), (4, 2, 4 + 2 * 2), "{c:?}");
    let children = children_by_device(&s, "retrying").await;
    for device in &flaky {
        assert_eq!(children[device], [MethodPhase::Failed, MethodPhase::Succeeded], "{device}");
    }
    for device in &broken {
        assert_eq!(
            children[device],
            [MethodPhase::Failed; 3],
            "{device}: 1 try + 2 retries, no more"
        );
    }
    let failed: Vec<(&str, i32)> =
        status.failed_devices.iter().map(|f| (f.device.as_str(), f.attempts)).collect();
    assert_eq!(failed, [("broken-000", 3), ("broken-001", 3)]);
}

#[tokio::test]
async fn a_job_pauses_after_its_canary_wave_until_the_spec_continues_it() {
    let s = setup("job-waves").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let devices = names("pump", 10);
    create_devices(&s, &devices, |_| json!({"kind": "pump"})).await;
    let _sim = Simulator::start(s.env, &s.scope, &ids(&s, &devices), &[]).expect("sim");
    all_connected(&s, &devices).await;

    let spec = |continued: u32| {
        json!({"selector": {"matchLabels": {"kind": "pump"}}, "method": "setLed",
            "params": {"on": false},
            "rollout": {"waves": [{"size": "20%", "pauseAfter": true}, {"size": "100%"}]},
            "continueAfterWave": continued})
    };
    apply_job(&s, "canary", spec(0)).await;
    let paused =
        wait_for(&jobs(&s), "canary", "Paused", |j| job_phase(j) == Some(JobPhase::Paused)).await;
    let status = paused.status.unwrap();
    assert_eq!(
        (status.current_wave, status.counts.succeeded, status.counts.pending),
        (Some(1), 2, 8)
    );
    assert_eq!(
        status.message.as_deref(),
        Some("Wave 1 finished; set spec.continueAfterWave to 1 to go on")
    );
    assert_eq!(children_by_device(&s, "canary").await.len(), 2, "only the canary ran");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(children_by_device(&s, "canary").await.len(), 2, "a paused job starts nothing");

    // Continuing is a spec change, as a Git commit would make it.
    apply_job(&s, "canary", spec(1)).await;
    let status = job_finished(&s, "canary").await;
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    let waves: Vec<(i32, i32)> = status.waves.iter().map(|w| (w.size, w.succeeded)).collect();
    assert_eq!(waves, [(2, 2), (8, 8)]);
}

#[tokio::test]
async fn budgets_keep_one_device_per_line_unavailable_and_hold_single_requests_back() {
    let s = setup("job-budget").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let devices = names("press", 20);
    let line = |i: usize| format!("l{}", i % 4);
    create_devices(&s, &devices, |i| json!({"plant": "p1", "line": line(i)})).await;
    let sim =
        Simulator::start(s.env, &s.scope, &ids(&s, &devices), &["--boot-seconds=1"]).expect("sim");
    all_connected(&s, &devices).await;
    let budget: DeviceDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceDisruptionBudget",
        "metadata": {"name": "one-per-line"},
        "spec": {"selector": {"matchLabels": {"plant": "p1"}}, "maxUnavailable": 1, "groupBy": "line"},
    }))
    .unwrap();
    budgets(&s).create(&PostParams::default(), &budget).await.unwrap();
    let shown = wait_for(&budgets(&s), "one-per-line", "status for 4 lines", |b| {
        b.status.as_ref().is_some_and(|st| st.groups.len() == 4 && st.current_available == 20)
    })
    .await;
    let st = shown.status.unwrap();
    assert_eq!((st.expected_devices, st.disruptions_allowed), (20, 1));

    let line_of: HashMap<String, String> =
        devices.iter().enumerate().map(|(i, d)| (d.clone(), line(i))).collect();
    let log =
        record_children(&s, "reboot-plant", move |d| line_of.get(d).cloned().unwrap_or_default());
    apply_job(
        &s,
        "reboot-plant",
        json!({"selector": {"matchLabels": {"plant": "p1"}}, "method": "reboot",
            "rollout": {"maxInFlight": 20}}),
    )
    .await;
    let status = job_finished(&s, "reboot-plant").await;
    assert_eq!(
        (status.phase, status.counts.succeeded),
        (Some(JobPhase::Succeeded), 20),
        "{status:#?}"
    );
    let (max_disrupting, max_in_flight) = {
        let log = log.lock().unwrap();
        (log.max_disrupting.clone(), log.max_in_flight)
    };
    assert_eq!(max_disrupting.len(), 4, "every line rebooted: {max_disrupting:?}");
    assert!(
        max_disrupting.values().all(|n| *n == 1),
        "never more than one device per line unavailable: {max_disrupting:?}"
    );
    assert!(max_in_flight > 4, "more children than lines existed at once: {max_in_flight}");
    for id in ids(&s, &devices) {
        assert_eq!(sim.executed(&id).unwrap().len(), 1, "{id} rebooted once");
    }

    // A single request on a line whose budget is taken waits, says why, then runs.
    create_reboot(&s.requests, "first", json!({"deviceName": "press-000", "delaySeconds": 4}))
        .await;
    wait_for(&s.requests, "first", "Accepted or later", |r| {
        matches!(phase(r), Some(RebootPhase::Accepted | RebootPhase::Rebooting))
    })
    .await;
    create_reboot(&s.requests, "second", json!({"deviceName": "press-004"})).await;
    let held = wait_for(&s.requests, "second", "DisruptionBudgetExhausted", |r| {
        reason(r).as_deref() == Some("DisruptionBudgetExhausted")
    })
    .await;
    let held_status = held.status.unwrap();
    assert_eq!(held_status.phase, Some(RebootPhase::Pending));
    assert!(
        held_status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("one-per-line (group l0) has no room: 1 of 5")),
        "{held_status:#?}"
    );
    wait_for(&s.requests, "second", "Succeeded", |r| phase(r) == Some(RebootPhase::Succeeded))
        .await;
    let first = s.requests.get("first").await.unwrap();
    let second = s.requests.get("second").await.unwrap();
    let first_done = first.status.and_then(|st| st.completed_at).unwrap();
    let second_sent = second.status.and_then(|st| st.sent_at).unwrap();
    assert!(second_sent.0 >= first_done.0, "sent only once the first was back");
}

#[tokio::test]
async fn a_suspended_job_previews_its_plan_and_unsuspended_runs_exactly_that() {
    let s = setup("job-preview").await;
    let _operator =
        Operator::start(s.env, &s.scope, &["--budget-wait-seconds=8"]).await.expect("operator");
    let devices = names("cam", 12);
    // cam-000..cam-001 have no simulator (offline); cam-009..cam-011 are frozen by a budget
    // that allows no disruption.
    create_devices(&s, &devices, |i| {
        if i >= 9 { json!({"fleet": "cams", "frozen": "yes"}) } else { json!({"fleet": "cams"}) }
    })
    .await;
    let online = &devices[2..];
    let sim =
        Simulator::start(s.env, &s.scope, &ids(&s, online), &["--boot-seconds=0.5"]).expect("sim");
    all_connected(&s, online).await;
    let freeze: DeviceDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceDisruptionBudget",
        "metadata": {"name": "frozen"},
        "spec": {"selector": {"matchLabels": {"frozen": "yes"}}, "maxUnavailable": 0},
    }))
    .unwrap();
    budgets(&s).create(&PostParams::default(), &freeze).await.unwrap();
    wait_for(&budgets(&s), "frozen", "status", |b| b.status.is_some()).await;

    let spec = |suspend: bool| {
        json!({"selector": {"matchLabels": {"fleet": "cams"}}, "method": "reboot",
            "offlineDevices": "Skip", "suspend": suspend,
            "rollout": {"maxInFlight": "25%", "waves": [{"size": 4}, {"size": "100%"}]}})
    };
    apply_job(&s, "cams", spec(true)).await;
    let previewed = wait_for(&jobs(&s), "cams", "a plan", |j| {
        j.status.as_ref().and_then(|st| st.plan.as_ref()).is_some()
    })
    .await;
    let status = previewed.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Suspended));
    let plan = status.plan.unwrap();
    // The hand count: 12 targeted, 2 offline, 3 frozen, waves of 4 and 8, 25 % of 12 = 3.
    assert_eq!(
        (plan.targeted, plan.offline, plan.budget_blocked, plan.not_supporting, plan.max_in_flight),
        (12, 2, 3, 0, 3)
    );
    assert_eq!(plan.wave_sizes, [4, 8]);
    assert_eq!(plan.sample, ["cam-000", "cam-001", "cam-002", "cam-003", "cam-004"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(children_by_device(&s, "cams").await.is_empty(), "a suspended job creates nothing");
    for id in ids(&s, online) {
        assert!(sim.executed(&id).unwrap().is_empty(), "{id}: nothing was sent");
    }

    apply_job(&s, "cams", spec(false)).await;
    let status = job_finished(&s, "cams").await;
    let c = &status.counts;
    // Exactly the plan: the offline ones skipped, the frozen ones never sent (their
    // requests timed out waiting for room), the others rebooted once.
    assert_eq!((c.targeted, c.skipped, c.timed_out, c.succeeded), (12, 2, 3, 7), "{status:#?}");
    assert_eq!(status.phase, Some(JobPhase::Failed));
    for (i, id) in ids(&s, online).iter().enumerate() {
        let expected = usize::from(i + 2 < 9);
        assert_eq!(sim.executed(id).unwrap().len(), expected, "{id}");
    }
    let frozen =
        status.failed_devices.iter().filter(|f| f.reason == "DisruptionBudgetExhausted").count();
    assert_eq!(frozen, 3, "{:?}", status.failed_devices);
}

#[tokio::test]
async fn a_job_survives_an_operator_kill_and_reapplying_it_never_runs_it_again() {
    let s = setup("job-kill").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let devices = names("meter", 200);
    create_devices(&s, &devices, |_| json!({"kind": "meter"})).await;
    let sim = Simulator::start(s.env, &s.scope, &ids(&s, &devices), &["--boot-seconds=0.5"])
        .expect("sim");
    all_connected(&s, &devices).await;
    let spec = json!({"selector": {"matchLabels": {"kind": "meter"}}, "method": "reboot",
        "rollout": {"maxInFlight": 20}});
    apply_job(&s, "meters", spec.clone()).await;
    wait_for(&jobs(&s), "meters", "40 finished", |j| {
        j.status.as_ref().is_some_and(|st| st.counts.succeeded >= 40)
    })
    .await;
    operator.kill();
    let _restarted = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    let status = job_finished(&s, "meters").await;
    assert_eq!(status.phase, Some(JobPhase::Succeeded), "{status:#?}");
    assert_eq!((status.counts.succeeded, status.counts.targeted), (200, 200));
    let children = children_by_device(&s, "meters").await;
    assert_eq!(children.len(), 200);
    assert!(children.values().all(|p| p == &[MethodPhase::Succeeded]), "one child per device");
    for id in ids(&s, &devices) {
        assert_eq!(sim.executed(&id).unwrap().len(), 1, "{id} executed once");
    }

    // The same Git content applied again: nothing runs again.
    apply_job(&s, "meters", spec).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = jobs(&s).get("meters").await.unwrap().status.unwrap();
    assert_eq!((again.phase, again.counts.succeeded), (Some(JobPhase::Succeeded), 200));
    assert_eq!(children_by_device(&s, "meters").await.len(), 200);
    for id in ids(&s, &devices) {
        assert_eq!(sim.executed(&id).unwrap().len(), 1, "{id} still executed once");
    }
}

#[tokio::test]
async fn the_jobs_example_is_accepted_by_the_api_server_as_written() {
    let s = setup("job-example").await;
    let file = kubetwin_e2e::tools::repo_root().join("examples/jobs.yaml");
    let out = s
        .env
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &s.scope.namespace,
            "-f",
            file.to_str().unwrap(),
        ])
        .expect("examples/jobs.yaml applies");
    assert!(
        out.contains("devicedisruptionbudget.kubetwin.io/one-per-line created (server dry run)"),
        "{out}"
    );
    assert!(
        out.contains("devicejob.kubetwin.io/reboot-plant-p1 created (server dry run)"),
        "{out}"
    );
}
