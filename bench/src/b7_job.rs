//! B7 fleet job: one DeviceJob reboots N simulated devices under a generous disruption budget.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::{Api, Resource as _, ResourceExt as _, api::PostParams};
use kubetwin_api::{
    Device, DeviceDisruptionBudget, DeviceJob, JobPhase, MethodRequest, job::JobCounts,
};
use serde_json::{Value, json};

use super::{
    Bench, CONCURRENCY, cluster,
    ops::{self, Check, LARGE_BUDGET, Watchdog},
    ping::Pinger,
    progress,
    report::{Row, ScenarioReport, Unit, thousands},
    stats::rss_kib,
};
use kubetwin_e2e::fleet::Simulator;

/// Title of the scenario.
pub const TITLE: &str = "fleet job";
/// What the scenario measures.
pub const WHAT: &str = "N simulated devices are Connected and the operator is idle; a \
    DeviceDisruptionBudget allows 20 % of them to be unavailable. The benchmark creates one \
    DeviceJob that reboots every device (selector: all Devices of the namespace, maxInFlight \
    10 %) and measures the wall time from the create call to the moment its watch sees the job \
    Succeeded, and devices per minute (AWS IoT Jobs' ceiling is 1,000 per minute). The floor \
    is measured in the same run, after the operator is stopped, by a minimal client at the \
    benchmark's concurrency: (a) the same N creates (a MethodRequest per device, owned by the \
    job and labelled like its children), (b) one terminal status merge patch per request, and \
    (c) one raw MQTT request/response round trip per device (a `ping`, answered at once). \
    Ratio = wall / (a + b + c). Correctness: the job ends Succeeded with N succeeded, exactly \
    one child per device, and every device's ledger shows exactly one executed reboot.";

/// Operator flags of B7 and B9: a write budget that is never the limit.
pub const OPERATOR_FLAGS: [&str; 3] = [LARGE_BUDGET[0], LARGE_BUDGET[1], "--concurrency=64"];
/// Simulator flags of B7 and B9.
pub const SIM_FLAGS: [&str; 2] = ["--boot-seconds=0.5", "--connect-rate=2000"];
/// The job's maxInFlight.
const MAX_IN_FLIGHT: &str = "10%";
/// The budget's maxUnavailable: more than the job ever has in flight.
const MAX_UNAVAILABLE: &str = "20%";
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(90 * 60);
/// Name of the job.
const JOB: &str = "reboot-all";

/// Runs B7.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b7_devices;
    let result =
        fleet_job(bench, &JobRun { label: "B7", n, floor: true, extra_hosts: vec![] }).await?;
    Ok(ScenarioReport {
        id: "B7".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("devices".into(), thousands(n as f64)),
            ("DeviceJob spec".into(), format!("`{}`", job_spec())),
            ("DeviceDisruptionBudget spec".into(), format!("`{}`", budget_spec())),
            ("operator flags".into(), format!("`{}`", OPERATOR_FLAGS.join(" "))),
            ("simulator flags".into(), format!("`{}`", SIM_FLAGS.join(" "))),
            ("client concurrency of the floor".into(), CONCURRENCY.to_string()),
        ],
        rows: result.rows(n),
        raw: result.json(n),
        error: None,
        measured_by: None,
    })
}

/// The job: reboot every Device of the namespace, 10 % at a time, generous timeouts.
pub fn job_spec() -> Value {
    json!({
        "selector": {},
        "method": "reboot",
        "responseTimeoutSeconds": 120,
        "connectTimeoutSeconds": 300,
        "rollout": {"maxInFlight": MAX_IN_FLIGHT},
    })
}

/// The budget: every Device, 20 % may be unavailable.
pub fn budget_spec() -> Value {
    json!({"selector": {}, "maxUnavailable": MAX_UNAVAILABLE})
}

/// How a fleet-job run is set up.
pub struct JobRun {
    /// Scenario id, for progress lines and the namespace.
    pub label: &'static str,
    /// Devices (and Devices objects) the job reboots.
    pub n: usize,
    /// Whether the same-run floor is measured after the job.
    pub floor: bool,
    /// Loopback addresses, besides 127.0.0.1, the devices' connections are spread over.
    pub extra_hosts: Vec<String>,
}

/// Measurements of one run.
pub struct FleetJob {
    /// Job created → job Succeeded, as the watch saw it.
    pub wall: Duration,
    /// The same-run floor, when measured.
    pub floor: Option<Floor>,
    /// Status writes of the operator (every kind) from the job's creation to its end.
    pub writes: f64,
    /// From starting the simulator to every Device shown Connected.
    pub connect_time: Duration,
    /// Resident memory of each process once the fleet was connected and the operator idle.
    pub rss: FleetRss,
}

/// What a minimal client needs for the same work (see [`WHAT`]).
pub struct Floor {
    creates: Duration,
    patches: Duration,
    pings: Duration,
}

/// Resident set sizes in KiB.
pub struct FleetRss {
    /// The operator.
    pub operator: f64,
    /// The simulator (every device in one process).
    pub simulator: f64,
    /// mosquitto.
    pub broker: f64,
}

impl FleetJob {
    fn floor(&self) -> Duration {
        self.floor.as_ref().map_or(Duration::ZERO, |f| f.creates + f.patches + f.pings)
    }

    /// Devices per minute.
    pub fn per_minute(&self, n: usize) -> f64 {
        n as f64 / (self.wall.as_secs_f64() / 60.0)
    }

    fn rows(&self, n: usize) -> Vec<Row> {
        let size = thousands(n as f64);
        let (creates, patches, pings) =
            self.floor.as_ref().map_or(Default::default(), |f| (f.creates, f.patches, f.pings));
        vec![
            Row::seconds(format!("wall time, job created → job Succeeded, N = {size}"), self.wall)
                .floor(self.floor().as_secs_f64()),
            Row::new("devices per minute", self.per_minute(n), Unit::Count)
                .note("AWS IoT Jobs: at most 1,000 per minute"),
            Row::seconds(format!("floor (a): {size} MethodRequest creates"), creates),
            Row::seconds(format!("floor (b): {size} terminal status patches"), patches),
            Row::seconds(format!("floor (c): {size} MQTT round trips"), pings),
            Row::new("operator status writes per device", self.writes / n as f64, Unit::Decimal)
                .note("every kind: children, the job, Devices going offline and back"),
        ]
    }

    /// The raw numbers.
    pub fn json(&self, n: usize) -> Value {
        let mut raw = json!({
            "n": n,
            "wall_seconds": self.wall.as_secs_f64(),
            "devices_per_minute": self.per_minute(n),
            "status_writes": self.writes,
            "connect_seconds": self.connect_time.as_secs_f64(),
            "rss_kib": {
                "operator": self.rss.operator,
                "simulator": self.rss.simulator,
                "broker": self.rss.broker,
            },
        });
        if let Some(floor) = &self.floor {
            raw["floor_creates_seconds"] = json!(floor.creates.as_secs_f64());
            raw["floor_status_patches_seconds"] = json!(floor.patches.as_secs_f64());
            raw["floor_mqtt_round_trips_seconds"] = json!(floor.pings.as_secs_f64());
            raw["floor_seconds"] = json!(self.floor().as_secs_f64());
            raw["ratio"] = json!(self.wall.as_secs_f64() / self.floor().as_secs_f64());
        }
        raw
    }
}

/// Where a job stands, as its watch sees it.
#[derive(Clone, Debug, PartialEq)]
struct JobState {
    phase: Option<JobPhase>,
    counts: JobCounts,
}

fn job_state(job: &DeviceJob) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    JobState { phase: status.phase, counts: status.counts }
}

/// Connects `run.n` simulated devices, reboots them all with one DeviceJob, checks the
/// outcome, and (with `run.floor`) measures the same-run floor.
pub async fn fleet_job(bench: &Bench<'_>, run: &JobRun) -> anyhow::Result<FleetJob> {
    let (label, n) = (run.label, run.n);
    let scope = bench.scope_spread(&label.to_ascii_lowercase(), n, &run.extra_hosts).await?;
    let client = bench.client.clone();
    let devices: Api<Device> = Api::namespaced(client.clone(), &scope.namespace);
    let jobs: Api<DeviceJob> = Api::namespaced(client.clone(), &scope.namespace);
    let requests: Api<MethodRequest> = Api::namespaced(client.clone(), &scope.namespace);
    let budgets: Api<DeviceDisruptionBudget> = Api::namespaced(client, &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let ids = cluster::device_ids(&prefix, 0..n);

    progress(format!("{label} N={n}: a budget, {n} Devices, operator, simulator"));
    let budget: DeviceDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": DeviceDisruptionBudget::api_version(&()),
        "kind": DeviceDisruptionBudget::kind(&()),
        "metadata": {"name": "generous"},
        "spec": budget_spec(),
    }))?;
    budgets.create(&PostParams::default(), &budget).await.context("creating the budget")?;
    let ops::ConnectedFleet { operator, simulator, connect_time } = ops::connected_fleet(
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
    let rss = FleetRss {
        operator: rss_kib(operator.pid())? as f64,
        simulator: rss_kib(simulator.pid())? as f64,
        broker: rss_kib(scope.broker.pid())? as f64,
    };
    progress(format!(
        "{label} N={n}: every Device Connected {connect_time:.1?} after the simulator started; \
         RSS operator {:.0} MiB, simulator {:.0} MiB, mosquitto {:.0} MiB",
        rss.operator / 1024.0,
        rss.simulator / 1024.0,
        rss.broker / 1024.0
    ));

    progress(format!("{label} N={n}: one DeviceJob rebooting every device"));
    let states = cluster::Tracker::start(jobs.clone(), job_state);
    states.wait_synced(Duration::from_secs(60)).await?;
    let job: DeviceJob = serde_json::from_value(json!({
        "apiVersion": DeviceJob::api_version(&()),
        "kind": DeviceJob::kind(&()),
        "metadata": {"name": JOB},
        "spec": job_spec(),
    }))?;
    let writes_before = ops::all_writes(&ops::scrape(&operator).await?);
    let started = Instant::now();
    let job = jobs.create(&PostParams::default(), &job).await.context("creating the DeviceJob")?;
    let is_over = |s: &JobState| s.phase.is_some_and(JobPhase::is_terminal);
    // The watch times the end; this probe only reports progress (a GET each second).
    ops::wait_until("the DeviceJob to finish", LIMIT, Duration::from_secs(1), dog, async || {
        if !states.names(is_over, 1).is_empty() {
            return Ok(Check::Done);
        }
        let now = jobs.get_status(JOB).await.ok().map(|j| job_state(&j));
        Ok(Check::Waiting(match now {
            Some(s) => format!(
                "{:?}: {} succeeded, {} in flight, {} failed",
                s.phase, s.counts.succeeded, s.counts.in_flight, s.counts.failed
            ),
            None => "no status yet".into(),
        }))
    })
    .await?;
    let finished = states.first_time(JOB, is_over).unwrap_or_else(Instant::now);
    let wall = finished.saturating_duration_since(started);
    drop(states);
    let writes = ops::all_writes(&ops::scrape(&operator).await?) - writes_before;
    progress(format!("{label} N={n}: the job ended after {wall:.2?}"));

    check_outcome(&jobs, &requests, &simulator, &ids, n).await?;
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;
    // The floor is what a minimal client needs alone: stop the operator first.
    operator.kill();
    if !run.floor {
        return Ok(FleetJob { wall, floor: None, writes, connect_time, rss });
    }

    let names: Vec<String> = (0..n).map(|i| format!("floor-{i}")).collect();
    progress(format!("{label} N={n}: floor (a): {n} MethodRequest creates"));
    let owner = job.controller_owner_ref(&()).context("the job has no uid")?;
    let creates =
        cluster::run_all("MethodRequest creates", names.iter().zip(&ids).collect(), CONCURRENCY, {
            |(name, id)| {
                let requests = requests.clone();
                let owner = owner.clone();
                async move {
                    let request: MethodRequest = serde_json::from_value(json!({
                        "apiVersion": MethodRequest::api_version(&()),
                        "kind": MethodRequest::kind(&()),
                        "metadata": {
                            "name": name,
                            "ownerReferences": [owner],
                            "labels": {
                                "kubetwin.io/job": JOB,
                                "kubetwin.io/device": id,
                                "kubetwin.io/attempt": "0",
                            },
                        },
                        "spec": {
                            "deviceName": id, "method": "reboot",
                            "responseTimeoutSeconds": 120, "connectTimeoutSeconds": 300,
                        },
                    }))?;
                    requests
                        .create(&PostParams::default(), &request)
                        .await
                        .with_context(|| format!("creating MethodRequest {name}"))?;
                    Ok(())
                }
            }
        })
        .await?;
    progress(format!("{label} N={n}: floor (b): {n} terminal status patches"));
    let patches = ops::mark_all_succeeded(&requests, names).await?;
    progress(format!("{label} N={n}: floor (c): {n} MQTT round trips"));
    let pinger = Pinger::connect(&scope.broker, &scope.topic_root).await?;
    let pings = cluster::run_all("MQTT round trips", ids, CONCURRENCY, |id| {
        let pinger = &pinger;
        async move { pinger.ping(&id).await.map(drop) }
    })
    .await?;
    simulator.check_running().map_err(|e| anyhow::anyhow!("the simulator crashed: {e}"))?;
    let floor = Some(Floor { creates, patches, pings });
    Ok(FleetJob { wall, floor, writes, connect_time, rss })
}

/// The job Succeeded with every device counted, one child per device, and every device
/// executed exactly one reboot.
async fn check_outcome(
    jobs: &Api<DeviceJob>,
    requests: &Api<MethodRequest>,
    simulator: &Simulator,
    ids: &[String],
    n: usize,
) -> anyhow::Result<()> {
    let job = jobs.get_status(JOB).await.context("reading the job")?;
    let state = job_state(&job);
    anyhow::ensure!(
        state.phase == Some(JobPhase::Succeeded)
            && usize::try_from(state.counts.succeeded).ok() == Some(n),
        "the job ended {:?} with counts {:?}, expected Succeeded with {n} succeeded",
        state.phase,
        state.counts
    );
    let mut children = std::collections::BTreeMap::<String, usize>::new();
    cluster::for_each(requests, |request: &MethodRequest| {
        if request.labels().get("kubetwin.io/job").map(String::as_str) == Some(JOB) {
            *children.entry(request.spec.device_name.clone()).or_default() += 1;
        }
    })
    .await?;
    let extra: Vec<String> =
        children.iter().filter(|(_, c)| **c != 1).map(|(d, c)| format!("{d}: {c}")).collect();
    anyhow::ensure!(
        children.len() == n && extra.is_empty(),
        "expected one child per device for {n} devices, found {} devices with children; \
         not exactly one: {}",
        children.len(),
        extra.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    );
    ops::each_executed_once(simulator, ids)
}
