//! B2 ingestion: a fleet reporting telemetry every second, under the default write budget.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kube::{Api, ResourceExt as _};
use kubetwin_api::Device;
use serde_json::json;

use super::{
    Bench, CONCURRENCY, cluster,
    ops::{self, Check, LARGE_BUDGET, MERGED, Watchdog},
    progress,
    prom::Quantile,
    report::{Goal, Row, ScenarioReport, Unit, thousands},
};
use kubetwin_e2e::broker::Login;
use kubetwin_e2e::fleet::Simulator;

/// Title of the scenario.
pub const TITLE: &str = "ingestion";
/// What the scenario measures.
pub const WHAT: &str = "D simulated devices, whose Devices already have a status, connect \
    and each publish a telemetry patch (`{\"telemetry\": {\"counter\": n}}`) every second for T \
    seconds to an operator with the DEFAULT write budget. Measured: the status writes to \
    Devices the operator made from the simulator's start until it was stopped (delta of \
    `kubetwin_status_writes_total{kind=\"device\"}`), against the D × T writes a \
    patch-per-message design would make (ratio = how many times fewer), and against the \
    messages the devices actually sent (from their ledgers). Staleness p50/p99 are \
    interpolated from the operator's `kubetwin_status_staleness_seconds` histogram (time from \
    a change being queued to its write), over the load and the drain after it. After a \
    graceful stop of the simulator (every device saves its last counter) and once the \
    operator's queue drained, every Device's `status.reported.telemetry.counter` must equal \
    its device's last counter.";

/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long final values may still arrive after the operator first became idle.
const RECHECK: Duration = Duration::from_secs(120);
/// Simulator connection rate (also used to estimate how long connecting takes).
const CONNECT_RATE: usize = 2000;

/// Runs B2.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b2_devices;
    let seconds = bench.sizes.b2_seconds;
    let interval_ms = bench.sizes.b2_interval_ms;
    let scope = bench.scope("b2", n).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let ids = cluster::device_ids(&prefix, 0..n);

    progress(format!("B2: {n} Devices; their first status with a large budget"));
    cluster::apply_devices(&devices, ids.clone(), CONCURRENCY).await?;
    {
        let synced = cluster::Tracker::start(devices.clone(), cluster::is_synced);
        let first = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
        let dog = Watchdog::operator(&first);
        ops::wait_until(
            "a status on every Device",
            LIMIT,
            Duration::from_millis(500),
            dog,
            async || {
                let count = synced.count(|s| *s);
                Ok(if count == n {
                    Check::Done
                } else {
                    Check::Waiting(format!("{count}/{n} with a status"))
                })
            },
        )
        .await?;
        ops::wait_idle(&first, dog, Duration::from_secs(3), LIMIT).await?;
    }

    progress("B2: operator with the default budget".to_string());
    let operator = ops::start_operator(bench.env, &scope, &[]).await?;
    let before =
        ops::wait_idle(&operator, Watchdog::operator(&operator), Duration::from_secs(3), LIMIT)
            .await?;
    let interval_flag = format!("--report-interval-ms={interval_ms}");
    let rate_flag = format!("--connect-rate={CONNECT_RATE}");
    let sim_flags = [interval_flag.as_str(), rate_flag.as_str()];
    let connecting = Duration::from_secs_f64(n as f64 / CONNECT_RATE as f64);
    let load = connecting + Duration::from_secs(seconds);
    progress(format!(
        "B2: {n} devices reporting every {interval_ms} ms for {load:.0?} ({connecting:.0?} to connect)"
    ));
    let simulator =
        Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Passwords, &sim_flags)?;
    let dog = Watchdog::both(&operator, &simulator);
    ops::sleep_watching(load, dog).await?;
    let at_stop = ops::scrape(&operator).await?;
    progress("B2: stopping the simulator; waiting for the queue to drain".to_string());
    simulator.terminate(Duration::from_secs(120)).await.map_err(|e| {
        anyhow::anyhow!(
            "the simulator did not stop cleanly, so the final values cannot be checked: {e}"
        )
    })?;
    let stopped = Instant::now();
    let after =
        ops::wait_idle(&operator, Watchdog::operator(&operator), Duration::from_secs(3), LIMIT)
            .await?;
    let drain = stopped.elapsed();

    let expected = last_counters(&simulator, &ids)?;
    let sent: u64 = expected.values().sum();
    // A final value may still be on its way after a quiet moment: look again for a while
    // before calling it lost.
    let recheck_until = Instant::now() + RECHECK;
    let present = loop {
        let (present, wrong) = final_values(&devices, &expected).await?;
        if wrong.is_empty() {
            break present;
        }
        anyhow::ensure!(
            Instant::now() < recheck_until,
            "{} of {} Devices do not show their final telemetry counter {RECHECK:?} after the \
             operator became idle, for example:\n  {}",
            expected.len() - present,
            expected.len(),
            wrong.join("\n  ")
        );
        progress(format!(
            "B2: {} Devices lack their final value yet; looking again",
            expected.len() - present
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        ops::wait_idle(&operator, Watchdog::operator(&operator), Duration::from_secs(3), LIMIT)
            .await?;
    };
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;

    let nominal = n as f64 * seconds as f64 * 1000.0 / interval_ms as f64;
    let load_writes = ops::device_writes(&at_stop) - ops::device_writes(&before);
    let drain_writes = ops::device_writes(&after) - ops::device_writes(&at_stop);
    let merged = after.sum(MERGED) - before.sum(MERGED);
    let staleness = ops::staleness(&after).since(&ops::staleness(&before));
    let load_staleness = ops::staleness(&at_stop).since(&ops::staleness(&before));
    let p50 = staleness.quantile(0.5);
    let p99 = staleness.quantile(0.99);
    let load_p99 = load_staleness.quantile(0.99);

    let mut rows = vec![
        Row::new("status writes to Devices during the load", load_writes, Unit::Count)
            .reference(nominal)
            .goal(Goal::fewer_at_least(50.0))
            .note(format!(
                "reference: {} devices × {seconds} s ÷ {interval_ms} ms, one patch per message",
                thousands(n as f64)
            )),
        Row::new("status writes vs. messages the devices actually sent", load_writes, Unit::Count)
            .reference(sent as f64),
        Row::new("status writes after the stop until drained", drain_writes, Unit::Count)
            .note("final values and offline presence"),
        Row::new("status changes merged into pending writes", merged, Unit::Count),
    ];
    rows.push(quantile_row("staleness p50 (load and drain)", p50, None));
    rows.push(quantile_row(
        "staleness p99 (load and drain)",
        p99,
        Some(Goal::value_at_most(2.0, Unit::Seconds)),
    ));
    rows.push(quantile_row("staleness p99 (load only)", load_p99, None));
    rows.push(Row::new("time to drain after the stop", drain.as_secs_f64(), Unit::Seconds));
    rows.push(
        Row::new("Devices showing their final counter", present as f64, Unit::Count)
            .note(format!("of {}", thousands(n as f64))),
    );

    Ok(ScenarioReport {
        id: "B2".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            (
                "devices".into(),
                format!(
                    "{}, reporting every {interval_ms} ms for {seconds} s (plus {:.1} s while connecting)",
                    thousands(n as f64),
                    connecting.as_secs_f64()
                ),
            ),
            (
                "operator flags".into(),
                "none: the default write budget (`--status-write-rate`, `--status-write-burst`, `--status-min-interval-ms`)".into(),
            ),
            ("simulator flags".into(), format!("`{}`", sim_flags.join(" "))),
            (
                "before the load".into(),
                format!("every Device got its first status from an operator with `{}`, which was then replaced", LARGE_BUDGET.join(" ")),
            ),
        ],
        rows,
        raw: json!({
            "devices": n,
            "seconds": seconds,
            "interval_ms": interval_ms,
            "load_seconds": load.as_secs_f64(),
            "messages_nominal": nominal,
            "messages_sent": sent,
            "device_writes_load": load_writes,
            "device_writes_drain": drain_writes,
            "merged_updates": merged,
            "drain_seconds": drain.as_secs_f64(),
            "staleness_p50_seconds": p50.map(|q| q.value),
            "staleness_p99_seconds": p99.map(|q| q.value),
            "staleness_p99_beyond_last_bucket": p99.map(|q| q.beyond_last_bound),
            "staleness_p99_load_only_seconds": load_p99.map(|q| q.value),
            "staleness_histogram": staleness.buckets.iter().map(|(le, c)| json!([le.to_string(), c])).collect::<Vec<_>>(),
            "final_values_present": present,
        }),
        error: None,
    })
}

fn quantile_row(metric: &str, quantile: Option<Quantile>, goal: Option<Goal>) -> Row {
    let Some(quantile) = quantile else {
        // Nothing to judge: the operator's histogram is missing or saw no write.
        return Row::new(metric, f64::NAN, Unit::Seconds)
            .note("no observation in the operator's staleness histogram");
    };
    let mut row = Row::new(metric, quantile.value, Unit::Seconds);
    if let Some(goal) = goal {
        row = row.goal(goal);
    }
    if quantile.beyond_last_bound {
        row = row.note("at least: beyond the histogram's largest bucket");
    }
    row
}

/// Each device's last telemetry counter, from the ledgers the simulator saved when it stopped.
fn last_counters(simulator: &Simulator, ids: &[String]) -> anyhow::Result<HashMap<String, u64>> {
    let mut counters = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match simulator.ledger(id)?.and_then(|l| l.telemetry) {
            Some(counter) => {
                counters.insert(id.clone(), counter);
            }
            None => missing.push(id.clone()),
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "{} devices saved no telemetry counter (did they connect?), for example {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(counters)
}

/// How many Devices show their device's last counter, and up to five that do not.
async fn final_values(
    devices: &Api<Device>,
    expected: &HashMap<String, u64>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let mut present = 0;
    let mut wrong = Vec::new();
    cluster::for_each(devices, |device| {
        let name = device.name_any();
        let Some(want) = expected.get(&name) else {
            return;
        };
        let got = device
            .status
            .as_ref()
            .and_then(|s| s.reported.as_ref())
            .and_then(|r| r.get("telemetry"))
            .and_then(|t| t.get("counter"))
            .and_then(serde_json::Value::as_u64);
        if got == Some(*want) {
            present += 1;
        } else if wrong.len() < 5 {
            wrong.push(format!("{name}: status shows {got:?}, the device sent {want} last"));
        }
    })
    .await?;
    if present < expected.len() && wrong.is_empty() {
        wrong.push("some Devices are missing".to_string());
    }
    Ok((present, wrong))
}
