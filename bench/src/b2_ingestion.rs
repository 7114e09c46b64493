//! B2 ingestion: a fleet reporting telemetry every second, under the default write budget.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kube::{Api, ResourceExt as _};
use kubetwin_api::{Device, RebootPhase, RebootRequest};
use serde_json::json;

use super::{
    Bench, CONCURRENCY, cluster,
    ops::{self, Check, LARGE_BUDGET, MERGED, Watchdog},
    progress,
    prom::Quantile,
    report::{Goal, Row, ScenarioReport, Unit, thousands},
    stats::{millis, percentile},
};
use kubetwin_e2e::broker::Login;
use kubetwin_e2e::fleet::Simulator;

/// Title of the scenario.
pub const TITLE: &str = "ingestion";
/// What the scenario measures.
pub const WHAT: &str = "D simulated devices, whose Devices already have a status, connect \
    and each publish a telemetry patch (`{\"telemetry\": {\"counter\": n}}`) every second to \
    an operator with the default write budget W (`--status-write-rate=50 \
    --status-write-burst=100`, written out so the bound is known), so D × 1/s > W is \
    sustained overload. The load runs while connecting, then 1.1 × D/W seconds (one full \
    round-robin turn: every Device has been written once under the load), then a window of T \
    seconds in which the promise of the budget is measured: (a) the status writes per second \
    the writer makes (`kubetwin_status_writes_total`, all kinds) as a share of W; (b) the p99 \
    staleness of routine writes (`kubetwin_status_staleness_seconds{priority=\"routine\"}`, \
    time from a change first queued to its write) against the round-robin bound 1.1 × D/W; \
    (c) urgent changes while routine reports saturate the budget: R RebootRequests created \
    evenly over the window, each to another device, timed from the create call to the \
    benchmark's watch seeing it Accepted (or later); and the p99 staleness of urgent writes. \
    (d) After a graceful stop of the simulator (every device saves its last counter) and \
    once the operator's queue drained, every Device's `status.reported.telemetry.counter` \
    must equal its device's last counter and every request must have Succeeded. Also shown: \
    status writes to Devices from the simulator's start to its stop against one patch per \
    message (how many times fewer), and staleness over load and drain.";

/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long final values may still arrive after the operator first became idle.
const RECHECK: Duration = Duration::from_secs(120);
/// Simulator connection rate (also used to estimate how long connecting takes).
const CONNECT_RATE: usize = 2000;
/// The write budget W: the operator's defaults, passed explicitly so the bound is known.
const WRITE_RATE: f64 = 50.0;
/// Operator flags of the write budget (the defaults).
const BUDGET_FLAGS: [&str; 2] = ["--status-write-rate=50", "--status-write-burst=100"];
/// Urgent requests made during the measured window.
const URGENT_REQUESTS: usize = 20;

/// Runs B2.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b2_devices;
    let seconds = bench.sizes.b2_seconds;
    let interval_ms = bench.sizes.b2_interval_ms;
    let scope = bench.scope("b2", n).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let requests: Api<RebootRequest> = Api::namespaced(bench.client.clone(), &scope.namespace);
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
    let operator = ops::start_operator(bench.env, &scope, &BUDGET_FLAGS).await?;
    let before =
        ops::wait_idle(&operator, Watchdog::operator(&operator), Duration::from_secs(3), LIMIT)
            .await?;
    let interval_flag = format!("--report-interval-ms={interval_ms}");
    let rate_flag = format!("--connect-rate={CONNECT_RATE}");
    let sim_flags = [interval_flag.as_str(), rate_flag.as_str(), "--boot-seconds=0.5"];
    let connecting = Duration::from_secs_f64(n as f64 / CONNECT_RATE as f64);
    let turn = Duration::from_secs_f64(1.1 * n as f64 / WRITE_RATE);
    let window = Duration::from_secs(seconds);
    let load = connecting + turn + window;
    progress(format!(
        "B2: {n} devices reporting every {interval_ms} ms for {load:.0?} ({connecting:.0?} to \
         connect, {turn:.0?} for one round-robin turn, then the {window:.0?} window)"
    ));
    let phases = cluster::Tracker::start(requests.clone(), cluster::phase);
    phases.wait_synced(Duration::from_secs(60)).await?;
    let simulator =
        Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Passwords, &sim_flags)?;
    let dog = Watchdog::both(&operator, &simulator);
    ops::sleep_watching(connecting + turn, dog).await?;

    // The window: urgent requests evenly spread while routine reports saturate the budget.
    let window_start = ops::scrape(&operator).await?;
    let window_started = Instant::now();
    let urgent = URGENT_REQUESTS.min(n);
    let mut made = Vec::with_capacity(urgent);
    for i in 0..urgent {
        let due = window_started + window.mul_f64(i as f64 / urgent as f64);
        ops::sleep_watching(due.saturating_duration_since(Instant::now()), dog).await?;
        let name = format!("urgent-{i}");
        let target = &ids[i * n / urgent];
        let created = Instant::now();
        cluster::create_reboot(&requests, &name, target, &json!({})).await?;
        made.push((name, created));
    }
    ops::sleep_watching((window_started + window).saturating_duration_since(Instant::now()), dog)
        .await?;
    let at_stop = ops::scrape(&operator).await?;
    let window_secs = window_started.elapsed().as_secs_f64();

    // The urgent requests end (their devices reboot and come back) before the fleet stops.
    ops::wait_until(
        "the urgent requests to finish",
        LIMIT,
        Duration::from_millis(200),
        dog,
        async || {
            let done = made
                .iter()
                .filter(|(name, _)| {
                    phases.first_time(name, |p| p.is_some_and(RebootPhase::is_terminal)).is_some()
                })
                .count();
            Ok(if done == made.len() {
                Check::Done
            } else {
                Check::Waiting(format!("{done}/{} urgent requests finished", made.len()))
            })
        },
    )
    .await?;
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
    let mut to_accepted = Vec::with_capacity(made.len());
    for (name, created) in &made {
        let request = requests.get(name).await?;
        anyhow::ensure!(
            cluster::phase(&request) == Some(RebootPhase::Succeeded),
            "the urgent request {name} did not succeed: {}",
            cluster::describe_request(&request)
        );
        let seen = phases
            .first_time(name, |p| {
                matches!(
                    p,
                    Some(RebootPhase::Accepted | RebootPhase::Rebooting | RebootPhase::Succeeded)
                )
            })
            .ok_or_else(|| anyhow::anyhow!("the watch never saw {name} Accepted"))?;
        to_accepted.push(seen.saturating_duration_since(*created));
    }
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;

    let nominal = n as f64 * load.as_secs_f64() * 1000.0 / interval_ms as f64;
    let load_writes = ops::device_writes(&at_stop) - ops::device_writes(&before);
    let drain_writes = ops::device_writes(&after) - ops::device_writes(&at_stop);
    let window_writes = ops::all_writes(&at_stop) - ops::all_writes(&window_start);
    let merged = after.sum(MERGED) - before.sum(MERGED);
    let staleness = ops::staleness(&after).since(&ops::staleness(&before));
    let routine = ops::staleness_at(&at_stop, "routine")
        .since(&ops::staleness_at(&window_start, "routine"))
        .quantile(0.99);
    let urgent_staleness = ops::staleness_at(&at_stop, "urgent")
        .since(&ops::staleness_at(&window_start, "urgent"))
        .quantile(0.99);
    // The per-object minimum interval (1 s by default) is the bound of a fleet the budget
    // can follow.
    let bound = 1.1 * (n as f64 / WRITE_RATE).max(1.0);
    let accepted_ms = millis(&to_accepted);
    let accepted_p99 = percentile(&accepted_ms, 0.99).unwrap_or(f64::NAN);
    let p50 = staleness.quantile(0.5);
    let p99 = staleness.quantile(0.99);

    let rows = vec![
        Row::new(
            "(a) status writes per second in the window",
            window_writes / window_secs,
            Unit::Decimal,
        )
        .floor(WRITE_RATE)
        .goal(Goal::share_at_least(0.95))
        .note("reference: the budget W, writes per second"),
        quantile_row(
            "(b) routine staleness p99 in the window",
            routine,
            Some(Goal::value_at_most(bound, Unit::Seconds)),
        )
        .note(format!(
            "bound 1.1 × max(1 s, D/W), D/W = {} / {WRITE_RATE} per second",
            thousands(n as f64)
        )),
        Row::new("(c) urgent: create → Accepted seen, p99", accepted_p99 / 1000.0, Unit::Seconds)
            .goal(Goal::value_at_most(2.0, Unit::Seconds))
            .note(format!("{} RebootRequests during the window", made.len())),
        quantile_row("(c) urgent staleness p99 in the window", urgent_staleness, None).note(
            "counted from an object's oldest pending change, also when a later urgent change \
             made it urgent: not the latency of the urgent change itself",
        ),
        Row::new("(d) Devices showing their final counter", present as f64, Unit::Count)
            .note(format!("of {}; every urgent request Succeeded", thousands(n as f64))),
        Row::new("status writes to Devices during the load", load_writes, Unit::Count)
            .reference(nominal)
            .goal(Goal::fewer_at_least(50.0))
            .note(format!(
                "reference: {} devices × {:.0} s ÷ {interval_ms} ms, one patch per message",
                thousands(n as f64),
                load.as_secs_f64()
            )),
        Row::new("status writes vs. messages the devices actually sent", load_writes, Unit::Count)
            .reference(sent as f64),
        Row::new("status writes after the stop until drained", drain_writes, Unit::Count)
            .note("final values and offline presence"),
        Row::new("status changes merged into pending writes", merged, Unit::Count),
        quantile_row("staleness p50 (load and drain, every priority)", p50, None),
        quantile_row("staleness p99 (load and drain, every priority)", p99, None)
            .note("the old goal of ≤ 2 s, restated as (b) and (c)"),
        Row::new("time to drain after the stop", drain.as_secs_f64(), Unit::Seconds),
    ];

    Ok(ScenarioReport {
        id: "B2".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            (
                "devices".into(),
                format!(
                    "{}, reporting every {interval_ms} ms for {:.0} s: {:.1} s connecting, {:.0} s one round-robin turn, {seconds} s measured",
                    thousands(n as f64),
                    load.as_secs_f64(),
                    connecting.as_secs_f64(),
                    turn.as_secs_f64(),
                ),
            ),
            ("operator flags".into(), format!("`{}` (the defaults)", BUDGET_FLAGS.join(" "))),
            ("simulator flags".into(), format!("`{}`", sim_flags.join(" "))),
            (
                "before the load".into(),
                format!(
                    "every Device got its first status from an operator with `{}`, which was then replaced",
                    LARGE_BUDGET.join(" ")
                ),
            ),
        ],
        rows,
        raw: json!({
            "devices": n,
            "window_seconds": window_secs,
            "interval_ms": interval_ms,
            "load_seconds": load.as_secs_f64(),
            "write_rate": WRITE_RATE,
            "window_writes": window_writes,
            "routine_staleness_p99_window_seconds": routine.map(|q| q.value),
            "urgent_staleness_p99_window_seconds": urgent_staleness.map(|q| q.value),
            "urgent_create_to_accepted_ms": accepted_ms,
            "messages_nominal": nominal,
            "messages_sent": sent,
            "device_writes_load": load_writes,
            "device_writes_drain": drain_writes,
            "merged_updates": merged,
            "drain_seconds": drain.as_secs_f64(),
            "staleness_p50_seconds": p50.map(|q| q.value),
            "staleness_p99_seconds": p99.map(|q| q.value),
            "staleness_p99_beyond_last_bucket": p99.map(|q| q.beyond_last_bound),
            "staleness_histogram": staleness.buckets.iter().map(|(le, c)| json!([le.to_string(), c])).collect::<Vec<_>>(),
            "final_values_present": present,
        }),
        error: None,
        measured_by: None,
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
