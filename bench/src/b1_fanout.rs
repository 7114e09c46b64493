//! B1 fan-out: N RebootRequests to N devices at once, all must succeed.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use kube::Api;
use kubetwin_api::{Device, RebootPhase, RebootRequest};
use serde_json::json;

use super::{
    Bench, CONCURRENCY,
    apiserver::{self, Served},
    cluster,
    ops::{self, Check, LARGE_BUDGET, Watchdog},
    ping::Pinger,
    progress,
    prom::Scrape,
    report::{Goal, Row, ScenarioReport, Unit},
    stats,
};

/// Title of the scenario.
pub const TITLE: &str = "fan-out";
/// What the scenario measures.
pub const WHAT: &str = "N simulated devices are Connected and the operator is idle. The \
    benchmark then creates N RebootRequests, one per device, 64 at a time, and measures the \
    wall time from the first create call to the moment its watch sees the last request \
    Succeeded (every device accepts, reboots in 0.5 s, reconnects with a new boot, and the \
    operator writes each phase). The floor is measured in the same run, after the operator is \
    stopped, by a minimal client at the same concurrency: (a) the same N RebootRequest creates, \
    (b) one terminal status patch (phase Succeeded) of each, and (c) N raw MQTT \
    request/response round trips with the same simulated devices (a `ping` request, answered \
    at once with `Rejected` 404). Ratio = wall / (a + b + c). The ratio to the floor of \
    earlier reports, which left the creates out (b + c), is kept for continuity. Also shown: \
    the status writes the operator made per request, from the first create until it was idle \
    again (to the RebootRequest, and to the Device as its device went offline and came \
    back), against the floor's one; and the CPU time each process used during the wall time \
    (from /proc), with kube-apiserver's and etcd's CPU per request against theirs for floor \
    (a) and (b): on a machine with two cores, where the time goes. What kube-apiserver \
    served per request during the wall time (its own `apiserver_request_total`, and watch \
    events sent to every watcher, the operator's and the benchmark's) shows what it spent that \
    time on, next to the floor's count of the same kind and the mean time to serve one (read \
    from `apiserver_request_duration_seconds`; on a saturated API server mostly waiting). Every \
    device's ledger must show exactly one executed reboot.";

/// Operator flags of B1: a write budget that is never the limit.
const OPERATOR_FLAGS: [&str; 3] = [LARGE_BUDGET[0], LARGE_BUDGET[1], "--concurrency=64"];
/// Simulator flags of B1.
const SIM_FLAGS: [&str; 2] = ["--boot-seconds=0.5", "--connect-rate=2000"];
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs B1 at every configured size.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for &n in &bench.sizes.b1_devices {
        let result = fan_out(bench, n).await?;
        rows.extend(result.rows(n));
        raw.push(result.json(n));
    }
    let spec = request_spec();
    Ok(ScenarioReport {
        id: "B1".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            (
                "sizes".into(),
                format!("N = {:?} devices and RebootRequests", bench.sizes.b1_devices),
            ),
            ("operator flags".into(), format!("`{}`", OPERATOR_FLAGS.join(" "))),
            ("simulator flags".into(), format!("`{}`", SIM_FLAGS.join(" "))),
            ("RebootRequest spec".into(), format!("`{spec}` plus `deviceName`")),
            ("client concurrency".into(), CONCURRENCY.to_string()),
        ],
        rows,
        raw: json!(raw),
        error: None,
        measured_by: None,
    })
}

/// Generous timeouts: a mass reboot on a small machine must not fail on a timeout.
fn request_spec() -> serde_json::Value {
    json!({"responseTimeoutSeconds": 120, "connectTimeoutSeconds": 300})
}

/// Measurements of one size.
struct FanOut {
    wall: Duration,
    create: Duration,
    creates: Duration,
    patches: Duration,
    pings: Duration,
    /// The operator's status writes from the first create until it was idle again.
    writes: StatusWrites,
    /// CPU time each process used during the wall time.
    cpu: CpuUse,
    /// CPU time kube-apiserver and etcd used for floor (a) and (b).
    floor_api_cpu: f64,
    /// What kube-apiserver served during the wall time.
    served: Served,
    /// What it served for floor (a) and (b).
    floor_served: Served,
    /// Cores of the machine.
    cores: usize,
}

/// The processes whose CPU time B1 shows.
struct Processes {
    operator: u32,
    apiserver: u32,
    etcd: u32,
    simulator: u32,
    broker: u32,
}

/// CPU seconds each process used between two samples.
#[derive(Clone, Copy)]
struct CpuUse {
    operator: f64,
    apiserver: f64,
    etcd: f64,
    simulator: f64,
    broker: f64,
    benchmark: f64,
}

/// The CPU seconds process `pid` has used so far.
fn cpu_of(pid: u32) -> anyhow::Result<f64> {
    stats::cpu_seconds(pid).with_context(|| format!("reading the CPU time of pid {pid}"))
}

impl Processes {
    /// The CPU seconds each process has used so far.
    fn sample(&self) -> anyhow::Result<CpuUse> {
        Ok(CpuUse {
            operator: cpu_of(self.operator)?,
            apiserver: cpu_of(self.apiserver)?,
            etcd: cpu_of(self.etcd)?,
            simulator: cpu_of(self.simulator)?,
            broker: cpu_of(self.broker)?,
            benchmark: cpu_of(std::process::id())?,
        })
    }

    /// The CPU seconds kube-apiserver and etcd have used so far.
    fn api_server_sample(&self) -> anyhow::Result<f64> {
        Ok(cpu_of(self.apiserver)? + cpu_of(self.etcd)?)
    }
}

impl CpuUse {
    /// What was used from `self` to `later`.
    fn until(self, later: CpuUse) -> CpuUse {
        CpuUse {
            operator: later.operator - self.operator,
            apiserver: later.apiserver - self.apiserver,
            etcd: later.etcd - self.etcd,
            simulator: later.simulator - self.simulator,
            broker: later.broker - self.broker,
            benchmark: later.benchmark - self.benchmark,
        }
    }
}

/// Status writes the operator made, by kind of object.
struct StatusWrites {
    /// To the RebootRequests.
    requests: f64,
    /// To the Devices (going offline for the reboot and back).
    devices: f64,
}

impl StatusWrites {
    /// The writes counted in `after` and not yet in `before` (where a kind not written yet
    /// has no sample). Every request and Device was written by then: a kind missing from
    /// `after` means the metric changed, an error.
    fn between(before: &Scrape, after: &Scrape) -> anyhow::Result<Self> {
        let of = |scrape: &Scrape, kind: &str| scrape.value(ops::WRITES, &[("kind", kind)]);
        let written = |kind: &str| -> anyhow::Result<f64> {
            let after = of(after, kind).with_context(|| {
                format!("the operator's /metrics has no {}{{kind=\"{kind}\"}}", ops::WRITES)
            })?;
            Ok(after - of(before, kind).unwrap_or(0.0))
        };
        Ok(Self { requests: written("rebootrequest")?, devices: written("device")? })
    }
}

impl FanOut {
    fn floor(&self) -> Duration {
        self.creates + self.patches + self.pings
    }

    /// The floor of earlier reports: without the creates.
    fn old_floor(&self) -> Duration {
        self.patches + self.pings
    }

    fn rows(&self, n: usize) -> Vec<Row> {
        let size = super::report::thousands(n as f64);
        let mut rows = vec![
            Row::seconds(
                format!("wall time, first create → last Succeeded, N = {size}"),
                self.wall,
            )
            .floor(self.floor().as_secs_f64())
            .goal(Goal::ratio_at_most(1.25)),
            Row::seconds(format!("floor (a): {size} RebootRequest creates"), self.creates),
            Row::seconds(format!("floor (b): {size} terminal status patches"), self.patches),
            Row::seconds(format!("floor (c): {size} MQTT round trips"), self.pings),
            Row::seconds(
                format!("same wall time against the old floor (b + c, no creates), N = {size}"),
                self.wall,
            )
            .floor(self.old_floor().as_secs_f64()),
            Row::seconds(
                format!("creating the {size} RebootRequests (part of the wall time)"),
                self.create,
            ),
            Row::new(
                format!("operator status writes per request, N = {size}: to the RebootRequest"),
                self.writes.requests / n as f64,
                Unit::Decimal,
            )
            .note("the floor writes 1"),
            Row::new(
                format!("operator status writes per request, N = {size}: to the Device"),
                self.writes.devices / n as f64,
                Unit::Decimal,
            )
            .note("the device going offline for its reboot and back; the floor writes none"),
            Row::seconds(
                format!("CPU time during the wall time, N = {size}: operator"),
                Duration::from_secs_f64(self.cpu.operator),
            )
            .note(format!(
                "the machine had {} cores × the wall time = {:.1} s",
                self.cores,
                self.cores as f64 * self.wall.as_secs_f64()
            )),
            Row::seconds(
                format!("CPU time during the wall time, N = {size}: kube-apiserver and etcd"),
                Duration::from_secs_f64(self.cpu.apiserver + self.cpu.etcd),
            ),
            Row::seconds(
                format!("CPU time during the wall time, N = {size}: simulator and mosquitto"),
                Duration::from_secs_f64(self.cpu.simulator + self.cpu.broker),
            ),
            Row::seconds(
                format!("CPU time during the wall time, N = {size}: this benchmark"),
                Duration::from_secs_f64(self.cpu.benchmark),
            )
            .note("its creates and its watch"),
            Row::new(
                format!("kube-apiserver and etcd CPU per request, N = {size}"),
                (self.cpu.apiserver + self.cpu.etcd) * 1000.0 / n as f64,
                Unit::Milliseconds,
            )
            .floor(self.floor_api_cpu * 1000.0 / n as f64)
            .note("floor: the same for floor (a) and (b)"),
        ];
        rows.extend(self.served_rows(n, &size));
        rows
    }

    /// What kube-apiserver served per request during the wall time, by verb and resource (kinds
    /// of at least 0.05 per request), with the floor's count and time where it has that kind.
    fn served_rows(&self, n: usize, size: &str) -> Vec<Row> {
        let per = n as f64;
        self.served
            .frequent(per, 0.05)
            .into_iter()
            .map(|(kind, work)| {
                // The floor's count where it did that kind of work too (a handful of watch
                // events, from watchers starting during the floor, is not a floor).
                let floor =
                    self.floor_served.by_kind.get(kind).filter(|floor| floor.count / per >= 0.05);
                let mut row = Row::new(
                    format!("kube-apiserver served per request, N = {size}: {kind}"),
                    work.count / per,
                    Unit::Decimal,
                );
                if let Some(floor) = floor {
                    row = row.floor(floor.count / per);
                }
                if work.seconds > 0.0 {
                    row = row.note(format!(
                        "{:.1} ms each to serve{}",
                        work.seconds * 1000.0 / work.count,
                        floor.filter(|f| f.seconds > 0.0).map_or(String::new(), |f| format!(
                            "; the floor's: {:.1} ms",
                            f.seconds * 1000.0 / f.count
                        ))
                    ));
                }
                row
            })
            .collect()
    }

    fn json(&self, n: usize) -> serde_json::Value {
        json!({
            "n": n,
            "wall_seconds": self.wall.as_secs_f64(),
            "create_seconds": self.create.as_secs_f64(),
            "floor_creates_seconds": self.creates.as_secs_f64(),
            "floor_status_patches_seconds": self.patches.as_secs_f64(),
            "floor_mqtt_round_trips_seconds": self.pings.as_secs_f64(),
            "floor_seconds": self.floor().as_secs_f64(),
            "ratio": self.wall.as_secs_f64() / self.floor().as_secs_f64(),
            "old_floor_seconds": self.old_floor().as_secs_f64(),
            "ratio_to_old_floor": self.wall.as_secs_f64() / self.old_floor().as_secs_f64(),
            "operator_request_status_writes": self.writes.requests,
            "operator_device_status_writes": self.writes.devices,
            "cpu_seconds": {
                "operator": self.cpu.operator,
                "kube_apiserver": self.cpu.apiserver,
                "etcd": self.cpu.etcd,
                "simulator": self.cpu.simulator,
                "mosquitto": self.cpu.broker,
                "benchmark": self.cpu.benchmark,
            },
            "floor_api_cpu_seconds": self.floor_api_cpu,
            "api_served": self.served.json(),
            "floor_api_served": self.floor_served.json(),
            "cores": self.cores,
        })
    }
}

/// Creates a RebootRequest named `names[i]` for device `ids[i]`, `CONCURRENCY` at a time;
/// returns how long it took.
async fn create_all(
    what: &str,
    requests: &Api<RebootRequest>,
    names: &[String],
    ids: &[String],
    spec: &serde_json::Value,
) -> anyhow::Result<Duration> {
    cluster::run_all(what, names.iter().zip(ids).collect(), CONCURRENCY, |(name, id)| {
        let requests = requests.clone();
        let spec = spec.clone();
        async move { cluster::create_reboot(&requests, name, id, &spec).await }
    })
    .await
}

async fn fan_out(bench: &Bench<'_>, n: usize) -> anyhow::Result<FanOut> {
    let scope = bench.scope("b1", n).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let requests: Api<RebootRequest> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let ids = cluster::device_ids(&prefix, 0..n);

    progress(format!("B1 N={n}: {n} Devices, operator, simulator"));
    let ops::ConnectedFleet { operator, simulator, .. } = ops::connected_fleet(
        bench.env,
        &scope,
        &devices,
        &ids,
        &prefix,
        (&OPERATOR_FLAGS, &SIM_FLAGS),
        LIMIT,
    )
    .await?;
    let dog = Watchdog::both(&operator, &simulator);

    progress(format!("B1 N={n}: creating {n} RebootRequests"));
    let phases = cluster::Tracker::start(requests.clone(), cluster::phase);
    phases.wait_synced(Duration::from_secs(60)).await?;
    let names: Vec<String> = (0..n).map(|i| format!("reboot-{i}")).collect();
    let spec = request_spec();
    let [etcd, apiserver, _] = bench.env.control_plane.pids();
    let processes = Processes {
        operator: operator.pid(),
        apiserver,
        etcd,
        simulator: simulator.pid(),
        broker: scope.broker.pid(),
    };
    let before = ops::scrape(&operator).await?;
    let api_before = apiserver::scrape(&bench.client).await?;
    let cpu_before = processes.sample()?;
    let started = Instant::now();
    let create = create_all("creating RebootRequests", &requests, &names, &ids, &spec).await?;
    let succeeded = |p: &Option<RebootPhase>| *p == Some(RebootPhase::Succeeded);
    let failed =
        |p: &Option<RebootPhase>| p.is_some_and(|p| p.is_terminal() && p != RebootPhase::Succeeded);
    ops::wait_until(
        "every RebootRequest Succeeded",
        LIMIT,
        Duration::from_millis(200),
        dog,
        async || {
            let bad = phases.names(failed, 5);
            if !bad.is_empty() {
                let mut described = Vec::new();
                for name in &bad {
                    if let Ok(request) = requests.get(name).await {
                        described.push(cluster::describe_request(&request));
                    }
                }
                anyhow::bail!(
                    "{} RebootRequests did not succeed, for example:\n  {}",
                    phases.count(failed),
                    described.join("\n  ")
                );
            }
            let done = phases.count(succeeded);
            Ok(if done == n {
                Check::Done
            } else {
                Check::Waiting(format!("{done}/{n} Succeeded"))
            })
        },
    )
    .await?;
    let last = phases.last_arrival(succeeded).unwrap_or_else(Instant::now);
    let wall = last.saturating_duration_since(started);
    // Sampled when the wait saw the last request Succeeded (within its 200 ms poll).
    let cpu = cpu_before.until(processes.sample()?);
    let served = Served::between(&api_before, &apiserver::scrape(&bench.client).await?);
    drop(phases);
    progress(format!("B1 N={n}: all Succeeded after {wall:.2?}"));
    let after = ops::wait_idle(&operator, dog, Duration::from_secs(2), LIMIT).await?;
    let writes = StatusWrites::between(&before, &after)?;

    ops::each_executed_once(&simulator, &ids)?;
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;
    // The floor is what a minimal client needs alone: stop the operator first.
    operator.kill();

    let floor_names: Vec<String> = (0..n).map(|i| format!("floor-{i}")).collect();
    progress(format!("B1 N={n}: floor (a): {n} RebootRequest creates"));
    // The operator is gone: only the API server's processes are sampled now.
    let floor_api_before = processes.api_server_sample()?;
    let floor_served_before = apiserver::scrape(&bench.client).await?;
    let creates = create_all("floor creates", &requests, &floor_names, &ids, &spec).await?;
    progress(format!("B1 N={n}: floor (b): {n} terminal status patches"));
    let patches = ops::mark_all_succeeded(&requests, floor_names).await?;
    let floor_api_cpu = processes.api_server_sample()? - floor_api_before;
    let floor_served =
        Served::between(&floor_served_before, &apiserver::scrape(&bench.client).await?);
    progress(format!("B1 N={n}: floor (c): {n} MQTT round trips"));
    let pinger = Pinger::connect(&scope.broker, &scope.topic_root).await?;
    let pings = cluster::run_all("MQTT round trips", ids, CONCURRENCY, |id| {
        let pinger = &pinger;
        async move { pinger.ping(&id).await.map(drop) }
    })
    .await?;
    simulator.check_running().map_err(|e| anyhow::anyhow!("the simulator crashed: {e}"))?;
    let cores = std::thread::available_parallelism().context("counting the cores")?.get();
    Ok(FanOut {
        wall,
        create,
        creates,
        patches,
        pings,
        writes,
        cpu,
        floor_api_cpu,
        served,
        floor_served,
        cores,
    })
}
