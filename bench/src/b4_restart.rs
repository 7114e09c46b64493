//! B4 restart: a new operator process taking over an in-sync fleet.

use std::time::Duration;

use kube::Api;
use kubetwin_api::Device;
use serde_json::json;

use super::{
    Bench, CONCURRENCY, cluster,
    ops::{self, Check, LARGE_BUDGET, Watchdog},
    progress,
    report::{Goal, Row, ScenarioReport, Unit, thousands},
};
use kubetwin_e2e::broker::Login;
use kubetwin_e2e::fleet::Simulator;

/// Title of the scenario.
pub const TITLE: &str = "restart";
/// What the scenario measures.
pub const WHAT: &str = "D simulated devices are connected and every Device is InSync; the \
    operator's status queue has drained. The operator is killed (SIGKILL) and a new process \
    with the same flags is started. Measured: the time from starting the new process to its \
    `/readyz` answering 200 (caches synced, MQTT connected), polled every 50 ms, and the status \
    writes the new process makes (`kubetwin_status_writes_total`, all kinds) before it is ready \
    and in the window after. A restart should find every status already right and write \
    nothing. The large write budget makes any redundant write visible rather than spread out.";

/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs B4.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b4_devices;
    let window = bench.sizes.b4_window;
    let scope = bench.scope("b4", n).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let sim_flags = ["--connect-rate=2000"];

    progress(format!("B4: {n} Devices, simulator, first operator"));
    cluster::apply_devices(&devices, cluster::device_ids(&prefix, 0..n), CONCURRENCY).await?;
    let in_sync = cluster::Tracker::start(devices.clone(), |d: &Device| {
        cluster::condition_true(d, "InSync") && cluster::is_connected(d)
    });
    let first = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
    let simulator =
        Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Passwords, &sim_flags)?;
    let dog = Watchdog::both(&first, &simulator);
    ops::wait_until(
        "every Device Connected and InSync",
        LIMIT,
        Duration::from_millis(500),
        dog,
        async || {
            let count = in_sync.count(|s| *s);
            Ok(if count == n {
                Check::Done
            } else {
                Check::Waiting(format!("{count}/{n} Connected and InSync"))
            })
        },
    )
    .await?;
    drop(in_sync);
    ops::wait_idle(&first, dog, Duration::from_secs(5), LIMIT).await?;
    first.kill();
    drop(first);

    progress("B4: restarting the operator".to_string());
    let restart =
        ops::restart_measured(bench.env, &scope, &LARGE_BUDGET, window, Some(&simulator)).await?;
    // The new operator stays up until the figures are taken (dropping it stops it).
    let ops::Restart {
        operator: _second,
        ready,
        writes_before_ready: before_ready,
        writes_after_ready: after_ready,
        desired_published: desired,
    } = restart;

    let window_s = window.as_secs();
    Ok(ScenarioReport {
        id: "B4".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("devices".into(), format!("{} (simulated, connected, InSync)", thousands(n as f64))),
            ("operator flags (both processes)".into(), format!("`{}`", LARGE_BUDGET.join(" "))),
            ("simulator flags".into(), format!("`{}`", sim_flags.join(" "))),
            ("window after ready".into(), format!("{window_s} s")),
        ],
        rows: vec![
            Row::new(
                format!("status writes in the {window_s} s after ready"),
                after_ready,
                Unit::Count,
            )
            .goal(Goal::value_at_most(0.0, Unit::Count)),
            Row::new("status writes before ready", before_ready, Unit::Count),
            Row::new("time from start to ready", ready.as_secs_f64(), Unit::Seconds)
                .goal(Goal::value_at_most(30.0, Unit::Seconds)),
            Row::new("desired documents published by the new process", desired, Unit::Count),
        ],
        raw: json!({
            "devices": n,
            "window_seconds": window_s,
            "ready_seconds": ready.as_secs_f64(),
            "writes_before_ready": before_ready,
            "writes_after_ready": after_ready,
            "desired_published": desired,
        }),
        error: None,
        measured_by: None,
    })
}
