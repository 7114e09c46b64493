//! B5 latency: one RebootRequest, create → Accepted, sequentially.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{Device, RebootPhase, RebootRequest};
use serde_json::json;

use super::{
    Bench, cluster,
    ops::{self, Check, Watchdog},
    ping::Pinger,
    progress,
    report::{Goal, Row, ScenarioReport, Unit},
    stats::{millis, percentile},
};
use crate::hop;
use kubetwin_e2e::broker::Login;
use kubetwin_e2e::fleet::Simulator;

/// Title of the scenario.
pub const TITLE: &str = "latency";
/// What the scenario measures.
pub const WHAT: &str = "One simulated device (reboot takes 0.2 s) and an operator with \
    default flags. Sequentially, R times (after one unmeasured warm-up): create a RebootRequest \
    and measure the time from the create call to the moment the benchmark's watch sees the \
    request Accepted (phase Accepted or later, whichever the operator wrote first), then wait \
    for Succeeded before the next one. The floor, measured in the same run after the operator \
    is stopped, is the same path taken by a minimal client, R times (after one warm-up): \
    create a RebootRequest, see it on the client's own watch, make one raw MQTT \
    request/response round trip with the same device (a `ping` request, answered at once with \
    `Rejected` 404), write one status merge patch (phase Accepted), and stop the clock when \
    the benchmark's watch sees it — so the floor holds the two watch deliveries and the create \
    that the operator's path holds too. p50 and p99 are compared with the floor's p50 and \
    p99. The floor of earlier reports (p50(ping) + p50(patch), without the create and the \
    watches) is kept for continuity. Two costs of the operator's path that the floor does not \
    have are measured on their own, to show what bounds the ratio: a status written by \
    server-side apply (as the operator writes every status) rather than the floor's merge \
    patch, once to each of the floor's requests after all its paths, and one pass through kube-runtime's controller scheduler (trigger → reconcile, in \
    this process, no API server), which the operator's path takes twice: for the create's \
    watch event and for the device's answer.";

/// Field manager of the floor's server-side applies.
const FLOOR_MANAGER: &str = "kubetwin-bench-floor";

/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(10 * 60);

/// Runs B5.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let runs = bench.sizes.b5_runs;
    let scope = bench.scope("b5", 1).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let requests: Api<RebootRequest> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let ids = cluster::device_ids(&prefix, 0..1);
    let device = ids[0].clone();
    let sim_flags = ["--boot-seconds=0.2"];

    cluster::apply_devices(&devices, ids, 1).await?;
    let operator = ops::start_operator(bench.env, &scope, &[]).await?;
    let simulator =
        Simulator::start_fleet(bench.env, &scope, 1, &prefix, Login::Passwords, &sim_flags)?;
    let dog = Watchdog::both(&operator, &simulator);
    ops::wait_until("the Device Connected", LIMIT, Duration::from_millis(100), dog, async || {
        Ok(match devices.get(&device).await {
            Ok(d) if cluster::is_connected(&d) => Check::Done,
            _ => Check::Waiting("not Connected yet".into()),
        })
    })
    .await?;
    ops::wait_idle(&operator, dog, Duration::from_secs(2), LIMIT).await?;

    progress(format!("B5: {runs} reboots, one at a time"));
    let phases = cluster::Tracker::start(requests.clone(), cluster::phase);
    phases.wait_synced(Duration::from_secs(60)).await?;
    let names: Vec<String> = (0..=runs).map(|i| format!("reboot-{i}")).collect();
    let mut accepted = Vec::with_capacity(runs);
    let mut succeeded = Vec::with_capacity(runs);
    for (i, name) in names.iter().enumerate() {
        let started = Instant::now();
        cluster::create_reboot(&requests, name, &device, &json!({})).await?;
        wait_terminal(&phases, &requests, name, dog).await?;
        let at = |matches: fn(&Option<RebootPhase>) -> bool| {
            phases.first_time(name, matches).map(|t| t.saturating_duration_since(started))
        };
        let to_accepted = at(|p| {
            matches!(
                p,
                Some(RebootPhase::Accepted | RebootPhase::Rebooting | RebootPhase::Succeeded)
            )
        });
        let to_succeeded = at(|p| *p == Some(RebootPhase::Succeeded));
        if i > 0 {
            accepted.extend(to_accepted);
            succeeded.extend(to_succeeded);
        }
    }
    drop(phases);
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;
    // The floor is what a minimal client needs alone: stop the operator first.
    operator.kill();

    progress(format!(
        "B5: floor: {runs} creates seen by a watch, MQTT round trips and status patches"
    ));
    let pinger = Pinger::connect(&scope.broker, &scope.topic_root).await?;
    let floor = minimal_client_path(&requests, &pinger, &device, runs).await?;
    let (pings, patches) = (floor.pings, floor.patches);
    simulator.check_running().map_err(|e| anyhow::anyhow!("the simulator crashed: {e}"))?;
    progress(format!("B5: {runs} passes through kube-runtime's controller scheduler"));
    let hops = hop::scheduler_hops(runs).await?;

    let accepted_ms = millis(&accepted);
    let succeeded_ms = millis(&succeeded);
    let pings_ms = millis(&pings);
    let patches_ms = millis(&patches);
    let applies_ms = millis(&floor.applies);
    let hops_ms = millis(&hops);
    let floor_ms = millis(&floor.paths);
    let p = |samples: &[f64], q: f64| percentile(samples, q).unwrap_or(0.0);
    let mut rows = Vec::new();
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(
            Row::new(format!("create → Accepted, {label}"), p(&accepted_ms, q), Unit::Milliseconds)
                .floor(p(&floor_ms, q))
                .goal(Goal::ratio_at_most(1.5)),
        );
    }
    rows.push(
        Row::new(
            "create → Accepted, p50, against the floor plus two scheduler passes",
            p(&accepted_ms, 0.5),
            Unit::Milliseconds,
        )
        .floor(p(&floor_ms, 0.5) + 2.0 * p(&hops_ms, 0.5))
        .note("the two passes the operator's path takes, at their median"),
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let old_floor = p(&pings_ms, q) + p(&patches_ms, q);
        rows.push(
            Row::new(
                format!("create → Accepted, {label}, against the old floor"),
                p(&accepted_ms, q),
                Unit::Milliseconds,
            )
            .floor(old_floor)
            .note("round trip + patch only, as reported before"),
        );
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(Row::new(
            format!("floor: MQTT round trip, {label}"),
            p(&pings_ms, q),
            Unit::Milliseconds,
        ));
        rows.push(Row::new(
            format!("floor: status patch, {label}"),
            p(&patches_ms, q),
            Unit::Milliseconds,
        ));
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(
            Row::new(
                format!("status written by server-side apply, {label}"),
                p(&applies_ms, q),
                Unit::Milliseconds,
            )
            .note("as the operator writes every status; compare the floor's merge patch"),
        );
        rows.push(
            Row::new(
                format!("kube-runtime scheduler: trigger → reconcile, {label}"),
                p(&hops_ms, q),
                Unit::Milliseconds,
            )
            .note("in-process, no API server; the operator's path passes it twice"),
        );
    }
    rows.push(
        Row::new("create → Succeeded, p50", p(&succeeded_ms, 0.5), Unit::Milliseconds)
            .note("includes the 0.2 s reboot and reconnect"),
    );

    Ok(ScenarioReport {
        id: "B5".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("runs".into(), format!("{runs} measured (plus 1 warm-up) for each series")),
            ("operator flags".into(), "none (defaults)".into()),
            ("simulator flags".into(), format!("`{}`", sim_flags.join(" "))),
        ],
        rows,
        raw: json!({
            "runs": runs,
            "create_to_accepted_ms": accepted_ms,
            "create_to_succeeded_ms": succeeded_ms,
            "floor_create_to_accepted_ms": floor_ms,
            "floor_mqtt_round_trip_ms": pings_ms,
            "floor_status_patch_ms": patches_ms,
            "status_apply_ms": applies_ms,
            "scheduler_hop_ms": hops_ms,
        }),
        error: None,
        measured_by: None,
    })
}

/// What the minimal client's path took, each series without its warm-up.
struct FloorSeries {
    /// From the create call to the benchmark's watch seeing phase Accepted.
    paths: Vec<Duration>,
    /// The MQTT round trips within them.
    pings: Vec<Duration>,
    /// The status patches within them.
    patches: Vec<Duration>,
    /// Server-side applies of the next phase, one per request, after every path.
    applies: Vec<Duration>,
}

/// The floor: `runs` + 1 times (the first is a warm-up), the operator's path by a minimal
/// client — create, see it on its own watch, one MQTT round trip with `device`, one status
/// patch to Accepted — timed from the create call to the benchmark's watch seeing Accepted.
async fn minimal_client_path(
    requests: &Api<RebootRequest>,
    pinger: &Pinger,
    device: &str,
    runs: usize,
) -> anyhow::Result<FloorSeries> {
    let phases = cluster::Tracker::start(requests.clone(), cluster::phase);
    phases.wait_synced(Duration::from_secs(60)).await?;
    let mut own_watch = std::pin::pin!(
        watcher(requests.clone(), watcher::Config::default()).default_backoff().applied_objects()
    );
    let mut series = FloorSeries { paths: vec![], pings: vec![], patches: vec![], applies: vec![] };
    for i in 0..=runs {
        let name = format!("floor-{i}");
        let started = Instant::now();
        cluster::create_reboot(requests, &name, device, &json!({})).await?;
        loop {
            let seen = tokio::time::timeout(LIMIT, own_watch.next())
                .await
                .map_err(|_| anyhow::anyhow!("the floor's watch never showed {name}"))?
                .ok_or_else(|| anyhow::anyhow!("the floor's watch ended"))??;
            if seen.name_any() == name {
                break;
            }
        }
        let ping = pinger.ping(device).await?;
        let patch_started = Instant::now();
        let accepted = json!({"status": {"phase": "Accepted", "message": "kubetwin-bench floor"}});
        requests
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&accepted))
            .await
            .with_context(|| format!("patching the status of RebootRequest {name}"))?;
        let patch = patch_started.elapsed();
        let deadline = Instant::now() + LIMIT;
        let seen = loop {
            if let Some(at) = phases.first_time(&name, |p| *p == Some(RebootPhase::Accepted)) {
                break at;
            }
            anyhow::ensure!(Instant::now() < deadline, "the watch never saw {name} Accepted");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if i > 0 {
            series.paths.push(seen.saturating_duration_since(started));
            series.pings.push(ping);
            series.patches.push(patch);
        }
    }
    // Apart from the paths (their watch events would delay the next path): the same kind of
    // status change written the way the operator writes, by server-side apply.
    for i in 1..=runs {
        let name = format!("floor-{i}");
        let rebooting = json!({
            "apiVersion": "kubetwin.io/v1alpha1",
            "kind": "RebootRequest",
            "status": {"phase": "Rebooting", "message": "kubetwin-bench floor"},
        });
        let apply_started = Instant::now();
        requests
            .patch_status(
                &name,
                &PatchParams::apply(FLOOR_MANAGER).force(),
                &Patch::Apply(&rebooting),
            )
            .await
            .with_context(|| format!("applying the status of RebootRequest {name}"))?;
        series.applies.push(apply_started.elapsed());
    }
    Ok(series)
}

/// Waits until request `name` is terminal; fails unless it Succeeded.
async fn wait_terminal(
    phases: &cluster::Tracker<Option<RebootPhase>>,
    requests: &Api<RebootRequest>,
    name: &str,
    dog: Watchdog<'_>,
) -> anyhow::Result<()> {
    ops::wait_until(
        &format!("RebootRequest {name} to finish"),
        LIMIT,
        Duration::from_millis(10),
        dog,
        async || {
            let now = phases.first_time(name, |p| p.is_some_and(RebootPhase::is_terminal));
            if now.is_none() {
                return Ok(Check::Waiting("not finished".into()));
            }
            let request = requests.get(name).await?;
            anyhow::ensure!(
                cluster::phase(&request) == Some(RebootPhase::Succeeded),
                "the reboot did not succeed: {}",
                cluster::describe_request(&request)
            );
            Ok(Check::Done)
        },
    )
    .await
}
