//! B8 quiet at rest: a connected, idle fleet, one broker restart, and the API writes it costs.

use std::time::{Duration, Instant};

use kube::Api;
use kubetwin_api::Device;
use serde_json::json;

use super::{
    Bench, CONCURRENCY, cluster,
    ops::{self, Check, LARGE_BUDGET, Watchdog},
    progress,
    report::{Goal, Row, ScenarioReport, Unit, thousands},
};
use kubetwin_e2e::{broker::Login, fleet::Simulator, process::Signal};

/// Title of the scenario.
pub const TITLE: &str = "quiet at rest";
/// What the scenario measures.
pub const WHAT: &str = "D simulated devices connect (no telemetry: an idle fleet) and every \
    Device is Connected and InSync; the operator's queue has drained. Then for T seconds \
    nothing happens but one broker restart halfway (SIGKILL, 3 s down, started again without \
    persistence, so retained presences are gone and every device and the operator reconnect). \
    Measured: the status writes the operator makes in those T seconds \
    (`kubetwin_status_writes_total`, all kinds) against the connection changes the restart \
    really caused, counted by the benchmark's own watch of the Devices (each change of a \
    Device between Connected and not). Goal: no more writes than those changes; reconnects \
    and presence replays alone write nothing. The large write budget makes any redundant \
    write visible rather than spread out. At the end every Device must be Connected again.";

/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long the broker stays down.
const BROKER_DOWN: Duration = Duration::from_secs(3);

/// Runs B8.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b8_devices;
    let idle = bench.sizes.b8_idle;
    let scope = bench.scope("b8", n).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let sim_flags = ["--connect-rate=2000"];

    progress(format!("B8: {n} Devices, simulator, operator"));
    cluster::apply_devices(&devices, cluster::device_ids(&prefix, 0..n), CONCURRENCY).await?;
    let in_sync = cluster::Tracker::start(devices.clone(), |d: &Device| {
        cluster::condition_true(d, "InSync") && cluster::is_connected(d)
    });
    let connected = cluster::Tracker::start(devices.clone(), cluster::is_connected);
    let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
    let simulator =
        Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Passwords, &sim_flags)?;
    let dog = Watchdog::both(&operator, &simulator);
    wait_all(&in_sync, n, "Connected and InSync", dog).await?;
    drop(in_sync);
    ops::wait_idle(&operator, dog, Duration::from_secs(5), LIMIT).await?;

    progress(format!("B8: idle for {idle:?}, with one broker restart halfway"));
    let start = ops::scrape(&operator).await?;
    let started = Instant::now();
    ops::sleep_watching(idle / 2, dog).await?;
    scope.broker.signal(Signal::Kill)?;
    ops::sleep_watching(BROKER_DOWN, dog).await?;
    scope.broker.restart().await?;
    let rest = idle.saturating_sub(started.elapsed());
    ops::sleep_watching(rest, dog).await?;
    let end = ops::scrape(&operator).await?;
    let changes = connected.changes_after(started);
    let writes = ops::all_writes(&end) - ops::all_writes(&start);
    wait_all(&connected, n, "Connected again", dog).await?;
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;

    let idle_s = idle.as_secs();
    Ok(ScenarioReport {
        id: "B8".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("devices".into(), format!("{} (simulated, connected, idle)", thousands(n as f64))),
            (
                "idle time".into(),
                format!("{idle_s} s, the broker restarted after {} s", idle_s / 2),
            ),
            ("operator flags".into(), format!("`{}`", LARGE_BUDGET.join(" "))),
            ("simulator flags".into(), format!("`{}`", sim_flags.join(" "))),
        ],
        rows: vec![
            Row::new(format!("status writes in {idle_s} s at rest"), writes, Unit::Count)
                .goal(Goal::value_at_most(changes as f64, Unit::Count))
                .note("goal: the connection changes below"),
            Row::new("connection changes the restart caused", changes as f64, Unit::Count)
                .note("seen by the benchmark's watch of the Devices"),
            Row::new("status writes per device", writes / n as f64, Unit::Decimal),
        ],
        raw: json!({
            "devices": n,
            "idle_seconds": idle_s,
            "writes": writes,
            "connection_changes": changes,
        }),
        error: None,
        measured_by: None,
    })
}

/// Waits until all `n` Devices are in the state `tracker` calls true.
async fn wait_all(
    tracker: &cluster::Tracker<bool>,
    n: usize,
    what: &str,
    dog: Watchdog<'_>,
) -> anyhow::Result<()> {
    ops::wait_until(
        &format!("every Device {what}"),
        LIMIT,
        Duration::from_millis(500),
        dog,
        async || {
            let count = tracker.count(|s| *s);
            Ok(if count == n { Check::Done } else { Check::Waiting(format!("{count}/{n} {what}")) })
        },
    )
    .await
}
