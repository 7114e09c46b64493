//! B3 memory: operator RSS with many Devices that carry realistic statuses, synced and idle,
//! what each per-Device structure costs, and a restart at that scale (B4 at 100,000).

use std::time::Duration;

use anyhow::Context as _;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use kubetwin_api::Device;
use serde_json::{Value, json};

use super::{
    Bench, cluster,
    ops::{self, Check, LARGE_BUDGET, Watchdog},
    progress,
    report::{Goal, Row, ScenarioReport, Unit, thousands},
    stats::rss_kib,
};

/// Title of the scenario.
pub const TITLE: &str = "memory";
/// What the scenario measures.
pub const WHAT: &str = "One operator starts in an empty namespace; its resident set size \
    (VmRSS from /proc) once it reports ready is the base; it is then stopped. At each size the \
    Devices (server-side apply, 128 at a time, no simulator) get a realistic status before an \
    operator sees them, as a fleet that ran for a while has: connection (Disconnected, with \
    since and lastSeen), a reported map of ten keys (firmware version, settings, readings), the \
    reported position, the applied desired version and firmware. An operator then starts, writes \
    its view of every status (conditions, observed generation) and goes idle (status queue empty, \
    no write for 5 s): its RSS is read. Per Device = (RSS − base) / N. That operator is killed \
    (SIGKILL) and a new one started: the time until its /readyz answers 200 and its status \
    writes in the window after (30 s; a restart should write nothing) are B4's goals at this size. The \
    breakdown counts the bytes each per-Device structure allocates (`kubetwin-memory`, the same \
    structures fed the same kind of Device by the same code, no cluster); what it does not \
    count is allocator overhead, the runtime, and queues.";

/// Concurrency of the creates and status patches (the API server is the limit, not the client).
const CREATE_CONCURRENCY: usize = 128;
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(60 * 60);
/// Field manager of the seeded statuses.
const SEED_MANAGER: &str = "kubetwin-bench-seed";

/// The reported properties of simulated device `i` after it ran for a while: ten keys, one of
/// them an object, as `kubetwin-memory` uses too.
pub fn realistic_reported(i: usize) -> Value {
    json!({
        "firmwareVersion": "1.4.2", "telemetryIntervalSeconds": 30, "mode": "normal",
        "led": {"color": "green"}, "temperature": 21.5 + (i % 10) as f64,
        "humidity": 40 + i % 20, "uptimeSeconds": 3600 + i, "battery": 97,
        "rssi": -61, "location": "hall-3",
    })
}

/// A realistic status for Device `i` as a device that went offline leaves it (written by an
/// earlier operator; no conditions, so the next operator's own write is visible).
fn seeded_status(i: usize, at: &str, boot: i64) -> Value {
    json!({"status": {
        "connection": {"state": "Disconnected", "since": at, "lastSeen": at},
        "reported": realistic_reported(i),
        "reportedAt": at,
        "lastReported": {"boot": boot, "seq": 42},
        "firmware": {"current": "1.4.2"},
    }})
}

/// Runs B3.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let scope = bench.scope("b3", 0).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let base = {
        let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
        let base = rss_kib(operator.pid())? as f64;
        operator.kill();
        base
    };
    progress(format!("B3: base RSS {:.1} MiB", base / 1024.0));
    let mut rows = vec![
        Row::new("base RSS (ready, empty namespace)", base / 1024.0, Unit::MiB)
            .goal(Goal::value_at_most(40.0, Unit::MiB)),
    ];
    let mut raw = vec![];
    let mut created = 0;
    for &n in &bench.sizes.b3_devices {
        let size = thousands(n as f64);
        progress(format!("B3: {size} Devices with realistic statuses"));
        let ids = cluster::device_ids(&prefix, created..n.max(created));
        cluster::apply_devices(&devices, ids.clone(), CREATE_CONCURRENCY).await?;
        seed_statuses(&devices, ids, created).await?;
        created = created.max(n);

        let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
        let dog = Watchdog::operator(&operator);
        wait_synced(&devices, &operator, dog, n).await?;
        let rss = rss_kib(operator.pid())? as f64;
        let per_device = (rss - base) / n as f64;
        progress(format!(
            "B3: {size} Devices: RSS {:.1} MiB, {per_device:.2} KiB per Device",
            rss / 1024.0
        ));
        operator.kill();
        drop(operator);

        progress(format!("B3: restarting the operator at {size} Devices"));
        let window = bench.sizes.b4_window;
        let restart = ops::restart_measured(bench.env, &scope, &LARGE_BUDGET, window, None).await?;
        let restarted_rss = rss_kib(restart.operator.pid())? as f64;
        restart.operator.kill();
        let window = window.as_secs();
        rows.extend([
            Row::new(format!("RSS with {size} Devices"), rss / 1024.0, Unit::MiB),
            Row::new(format!("per Device above base, N = {size}"), per_device, Unit::KiB)
                .goal(Goal::value_at_most(1.5, Unit::KiB)),
            Row::new(
                format!("restart at {size} Devices: time from start to ready"),
                restart.ready.as_secs_f64(),
                Unit::Seconds,
            )
            .goal(Goal::value_at_most(30.0, Unit::Seconds)),
            Row::new(
                format!("restart at {size} Devices: status writes in the {window} s after ready"),
                restart.writes_after_ready,
                Unit::Count,
            )
            .goal(Goal::value_at_most(0.0, Unit::Count)),
            Row::new(
                format!("restart at {size} Devices: RSS {window} s after ready"),
                restarted_rss / 1024.0,
                Unit::MiB,
            ),
        ]);
        raw.push(json!({
            "devices": n,
            "rss_kib": rss,
            "per_device_kib": per_device,
            "restart": {
                "ready_seconds": restart.ready.as_secs_f64(),
                "writes_before_ready": restart.writes_before_ready,
                "writes_after_ready": restart.writes_after_ready,
                "rss_kib": restarted_rss,
            },
        }));
    }
    let largest = bench.sizes.b3_devices.iter().copied().max().unwrap_or(0);
    let breakdown = structure_breakdown(largest)?;
    if let Some(structures) = breakdown["bytes_per_device"].as_object() {
        for (structure, bytes) in structures {
            rows.push(Row::new(
                format!("breakdown at N = {}: {structure}", thousands(largest as f64)),
                bytes.as_f64().unwrap_or_default() / 1024.0,
                Unit::KiB,
            ));
        }
    }
    Ok(ScenarioReport {
        id: "B3".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            (
                "sizes".into(),
                format!(
                    "{:?} Device objects (one namespace, created in steps)",
                    bench.sizes.b3_devices
                ),
            ),
            ("operator flags".into(), format!("`{}`", LARGE_BUDGET.join(" "))),
            ("create concurrency".into(), CREATE_CONCURRENCY.to_string()),
            ("reported properties per Device".into(), realistic_reported(0).to_string()),
        ],
        rows,
        raw: json!({"base_rss_kib": base, "steps": raw, "breakdown": breakdown}),
        error: None,
        measured_by: None,
    })
}

/// Gives Devices `ids` (the `first`-th onwards) a realistic status, as an earlier operator
/// would have left it.
async fn seed_statuses(
    devices: &Api<Device>,
    ids: Vec<String>,
    first: usize,
) -> anyhow::Result<()> {
    let at = kubetwin_protocol::timestamp::now_rfc3339();
    // A boot a few minutes ago: the operator only trusts positions of plausible boots.
    let boot = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
    )? - 300;
    let params = PatchParams::apply(SEED_MANAGER);
    let numbered: Vec<(usize, String)> = (first..).zip(ids).collect();
    cluster::run_all("seeding statuses", numbered, CREATE_CONCURRENCY, |(i, id)| {
        let devices = devices.clone();
        let params = params.clone();
        let patch = seeded_status(i, &at, boot);
        async move {
            devices
                .patch_status(&id, &params, &Patch::Merge(&patch))
                .await
                .with_context(|| format!("seeding the status of {id}"))?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Waits until the operator is idle and all `n` Devices have a status for their generation.
async fn wait_synced(
    devices: &Api<Device>,
    operator: &kubetwin_e2e::fleet::Operator,
    dog: Watchdog<'_>,
    n: usize,
) -> anyhow::Result<()> {
    ops::wait_until("a status on every Device", LIMIT, Duration::from_secs(5), dog, async || {
        ops::wait_idle(operator, dog, Duration::from_secs(5), LIMIT).await?;
        let mut synced = 0;
        let total = cluster::for_each(devices, |d| {
            if cluster::is_synced(d) {
                synced += 1;
            }
        })
        .await?;
        Ok(if synced == n && total == n {
            Check::Done
        } else {
            Check::Waiting(format!("{synced}/{n} Devices with a status"))
        })
    })
    .await
}

/// Bytes per Device in each per-Device structure at `n` Devices (runs `kubetwin-memory`, built
/// next to the other binaries).
fn structure_breakdown(n: usize) -> anyhow::Result<Value> {
    let binary = kubetwin_e2e::fleet::workspace_binary("kubetwin-memory")?;
    let output = std::process::Command::new(&binary)
        .arg(format!("--devices={n}"))
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "kubetwin-memory failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("reading kubetwin-memory's output")
}
