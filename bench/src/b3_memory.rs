//! B3 memory: operator RSS with many Devices that carry realistic statuses, synced and idle,
//! what each per-Device structure costs, and a restart at that scale (B4 at 100,000).

use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::watcher,
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
    Devices are applied (server-side, 128 at a time, no simulator) with two labels (site and \
    line) and three desired properties, and each gets a realistic status before an operator sees \
    it, as a fleet that ran for a while and went offline has: connection (Disconnected, with \
    since and lastSeen), a reported map of ten keys (firmware version, settings, readings), the \
    reported position, the applied desired version and firmware. An operator then starts, writes \
    its view of every status (conditions, observed generation, document version) and goes idle \
    (status queue empty, no write for 5 s): its RSS is read. Per Device = (RSS − base) / N. \
    That operator is killed (SIGKILL); a minimal client fetches every Device twice, decoded into \
    typed Devices: by a list in pages of 500, and by a streaming list (one watch with \
    sendInitialEvents, until the bookmark that ends the initial events); the faster is the floor \
    of a restart. A new operator is then started (it streams its lists where the API server \
    serves them, as this one does): the \
    time until its /readyz answers 200 and its status writes in the window after (30 s; a \
    restart should write nothing) are B4's goals at this size. Next to RSS, the operator's own \
    heap metrics (jemalloc's counts, read at the same time) split it into live heap (bytes \
    allocated and not freed) and what the allocator holds in physical pages. The breakdown \
    counts the bytes each per-Device structure allocates (`kubetwin-memory`: the same \
    structures, fed by the operator's own code the same Devices with the status an operator \
    writes for them, no cluster; the Device cache keeps no reported map, as the operator's \
    does), and what the parts of one cached Device cost. The live heap holds more than their \
    sum: the spare room of hash tables as they grow, and structures this count does not feed \
    (the controllers' schedulers, what the operator records as it publishes); a sampled heap \
    profile of the operator itself shows what each holds (docs/operations.md, \"Where the live \
    heap goes\").";

/// A little longer than the operator's heap-metric refresh (5 s), so a read after this wait
/// shows counts taken after ready.
const HEAP_REFRESH: Duration = Duration::from_secs(6);

/// What the operator's allocator holds, in bytes.
struct Heap {
    /// Allocated and not freed.
    allocated: f64,
    /// In physical pages.
    resident: f64,
}

/// The operator's heap metrics (`kubetwin_heap_allocated_bytes`, `…_resident_bytes`).
async fn heap(operator: &kubetwin_e2e::fleet::Operator) -> anyhow::Result<Heap> {
    let text = operator.metrics().await?;
    let read = |name: &str| {
        kubetwin_e2e::fleet::metric_value(&text, name)
            .with_context(|| format!("the operator shows no {name}"))
    };
    Ok(Heap {
        allocated: read("kubetwin_heap_allocated_bytes")?,
        resident: read("kubetwin_heap_resident_bytes")?,
    })
}

/// Concurrency of the creates and status patches (the API server is the limit, not the client).
const CREATE_CONCURRENCY: usize = 128;
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(60 * 60);
/// Field manager of the seeded statuses.
const SEED_MANAGER: &str = "kubetwin-bench-seed";

/// The labels of Device `i`: a site and a line, as fleets are labelled (40 distinct sets).
pub fn realistic_labels(i: usize) -> Value {
    json!({"site": format!("plant-{}", i % 4), "line": format!("line-{}", i % 40)})
}

/// The desired properties of every Device: three keys, one of them an object.
pub fn realistic_desired() -> Value {
    json!({"telemetryIntervalSeconds": 30, "mode": "normal", "led": {"color": "green"}})
}

/// The reported properties of device `i` after it ran for a while: ten keys, one of them an
/// object.
pub fn realistic_reported(i: usize) -> Value {
    json!({
        "firmwareVersion": "1.4.2", "telemetryIntervalSeconds": 30, "mode": "normal",
        "led": {"color": "green"}, "temperature": 21.5 + (i % 10) as f64,
        "humidity": 40 + i % 20, "uptimeSeconds": 3600 + i, "battery": 97,
        "rssi": -61, "location": "hall-3",
    })
}

/// Device `i` named `name`, as a user applies it: labels, device id, desired properties.
pub fn realistic_manifest(name: &str, i: usize) -> Value {
    json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": name, "labels": realistic_labels(i)},
        "spec": {"deviceId": name, "desired": realistic_desired()},
    })
}

/// The status a device that ran for a while and then went offline leaves (what an earlier
/// operator wrote from its messages), for Device `i` with uid `epoch` at `generation`. No
/// conditions: the next operator writes its own, so its write shows.
pub fn realistic_status(i: usize, at: &str, boot: i64, epoch: &str, generation: i64) -> Value {
    json!({
        "connection": {"state": "Disconnected", "since": at, "lastSeen": at},
        "reported": realistic_reported(i),
        "reportedAt": at,
        "lastReported": {"boot": boot, "seq": 42},
        "applied": {"epoch": epoch, "version": generation},
        "firmware": {"current": "1.4.2"},
    })
}

/// Runs B3.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let scope = bench.scope("b3", 0).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let (base, base_heap) = {
        let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
        let base = rss_kib(operator.pid())? as f64;
        tokio::time::sleep(HEAP_REFRESH).await;
        let base_heap = heap(&operator).await?;
        operator.kill();
        (base, base_heap)
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
        seed_devices(&devices, ids, created).await?;
        created = created.max(n);

        let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
        let dog = Watchdog::operator(&operator);
        wait_synced(&devices, &operator, dog, n).await?;
        let rss = rss_kib(operator.pid())? as f64;
        let heap = heap(&operator).await?;
        let per_device = (rss - base) / n as f64;
        progress(format!(
            "B3: {size} Devices: RSS {:.1} MiB, {per_device:.2} KiB per Device",
            rss / 1024.0
        ));
        operator.kill();
        drop(operator);

        // The floor of a restart: what any client needs to hold every Device, measured now,
        // with no operator running, against the same API server and the same objects.
        let paged = list_floor(&devices, n).await?;
        progress(format!("B3: a minimal client lists the {size} Devices in {paged:.2?} (paged)"));
        let streamed = streaming_floor(&devices, n).await?;
        progress(format!("B3: and in {streamed:.2?} by a streaming list"));
        let list_floor = paged.min(streamed);

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
                format!("of which live heap (allocated, not freed) per Device, N = {size}"),
                (heap.allocated - base_heap.allocated) / 1024.0 / n as f64,
                Unit::KiB,
            ),
            Row::new(
                format!("of which the allocator holds per Device (resident heap), N = {size}"),
                (heap.resident - base_heap.resident) / 1024.0 / n as f64,
                Unit::KiB,
            ),
            Row::new(
                format!("restart at {size} Devices: time from start to ready"),
                restart.ready.as_secs_f64(),
                Unit::Seconds,
            )
            .floor(list_floor.as_secs_f64())
            .goal(Goal::value_at_most(30.0, Unit::Seconds))
            .note("floor: the faster of a paged and a streaming list of every Device by a minimal client"),
            Row::new(
                format!("restart at {size} Devices: a minimal client's paged list"),
                paged.as_secs_f64(),
                Unit::Seconds,
            ),
            Row::new(
                format!("restart at {size} Devices: a minimal client's streaming list"),
                streamed.as_secs_f64(),
                Unit::Seconds,
            ),
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
            "heap_allocated_bytes": heap.allocated,
            "heap_resident_bytes": heap.resident,
            "base_heap_allocated_bytes": base_heap.allocated,
            "base_heap_resident_bytes": base_heap.resident,
            "restart": {
                "list_floor_seconds": list_floor.as_secs_f64(),
                "paged_list_seconds": paged.as_secs_f64(),
                "streaming_list_seconds": streamed.as_secs_f64(),
                "ready_seconds": restart.ready.as_secs_f64(),
                "writes_before_ready": restart.writes_before_ready,
                "writes_after_ready": restart.writes_after_ready,
                "rss_kib": restarted_rss,
            },
        }));
    }
    let largest = bench.sizes.b3_devices.iter().copied().max().unwrap_or(0);
    let breakdown = structure_breakdown(largest)?;
    let at_largest = format!("breakdown at N = {}: ", thousands(largest as f64));
    for (section, prefix) in [
        ("bytes_per_device", at_largest.as_str()),
        ("one_cached_device_bytes", "one cached Device: "),
        ("reported_bytes", "one device's reported properties in the fleet index: "),
    ] {
        let figures = breakdown[section]
            .as_object()
            .with_context(|| format!("kubetwin-memory printed no {section}"))?;
        for (what, bytes) in figures {
            let bytes = bytes.as_f64().with_context(|| format!("{what}: {bytes} is no number"))?;
            rows.push(Row::new(format!("{prefix}{what}"), bytes / 1024.0, Unit::KiB));
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
            ("Device (first one)".into(), format!("`{}`", realistic_manifest("NAME", 0))),
            (
                "seeded status (first one)".into(),
                format!("`{}`", realistic_status(0, "AT", 0, "UID", 1)),
            ),
        ],
        rows,
        raw: json!({"base_rss_kib": base, "steps": raw, "breakdown": breakdown}),
        error: None,
        measured_by: None,
    })
}

/// Applies Devices `ids` (the `first`-th onwards) with labels and desired properties and gives
/// each a realistic status, as a fleet that ran for a while has.
async fn seed_devices(devices: &Api<Device>, ids: Vec<String>, first: usize) -> anyhow::Result<()> {
    let at = kubetwin_protocol::timestamp::now_rfc3339();
    // A boot a few minutes ago: the operator only trusts positions of plausible boots.
    let boot = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
    )? - 300;
    let numbered: Vec<(usize, String)> = (first..).zip(ids).collect();
    cluster::run_all("applying Devices with statuses", numbered, CREATE_CONCURRENCY, |(i, id)| {
        let devices = devices.clone();
        let at = at.clone();
        async move {
            let params = PatchParams::apply(SEED_MANAGER).force();
            let applied = devices
                .patch(&id, &params, &Patch::Apply(&realistic_manifest(&id, i)))
                .await
                .with_context(|| format!("applying Device {id}"))?;
            let epoch = applied.metadata.uid.context("an applied Device has a uid")?;
            let generation = applied.metadata.generation.unwrap_or(1);
            let status = json!({"status": realistic_status(i, &at, boot, &epoch, generation)});
            devices
                .patch_status(&id, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .with_context(|| format!("seeding the status of {id}"))?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// How long a minimal client takes to hold all `n` Devices: a list in pages of 500 (the
/// page size of the operator's watches) of the most recent state, each page decoded into
/// typed Devices and dropped. A restarting operator does at least this before it can be
/// ready.
async fn list_floor(devices: &Api<Device>, n: usize) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let listed = cluster::for_each(devices, |_| {}).await?;
    let took = started.elapsed();
    anyhow::ensure!(listed == n, "the floor's list returned {listed} Devices, not {n}");
    Ok(took)
}

/// How long a minimal client takes to hold all `n` Devices by a streaming list: one watch with
/// `sendInitialEvents`, each Device decoded and dropped, until the bookmark that ends the
/// initial events (what a restarting operator does where the API server streams lists).
async fn streaming_floor(devices: &Api<Device>, n: usize) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let config = watcher::Config::default().streaming_lists();
    let mut events = std::pin::pin!(watcher(devices.clone(), config));
    let mut listed = 0;
    while let Some(event) = events.try_next().await.context("streaming the Devices")? {
        match event {
            watcher::Event::InitApply(_) => listed += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    let took = started.elapsed();
    anyhow::ensure!(listed == n, "the floor's streaming list returned {listed} Devices, not {n}");
    Ok(took)
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
