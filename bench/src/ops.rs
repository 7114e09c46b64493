//! The processes of a scenario: starting the operator, reading its metrics, and waiting with a
//! watchdog that fails at once when the operator or the simulator dies.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use kube::Api;
use kubetwin_api::Device;

use super::{
    CONCURRENCY, cluster, progress,
    prom::{Histogram, Scrape},
};
use kubetwin_e2e::{
    TestEnv,
    broker::Login,
    fleet::{Operator, Scope, Simulator},
};

/// Operator flags that make the write budget large enough never to be the limit.
pub const LARGE_BUDGET: [&str; 2] = ["--status-write-rate=5000", "--status-write-burst=5000"];
/// `RUST_LOG` of the operators the scenarios start (the production default level), unless
/// [`OPERATOR_LOG_VAR`] names another (to look into a scenario; it slows the operator).
pub const OPERATOR_LOG: &str = "info";
/// Environment variable that overrides [`OPERATOR_LOG`].
pub const OPERATOR_LOG_VAR: &str = "KUBETWIN_BENCH_OPERATOR_LOG";

/// The `RUST_LOG` of the operators this run starts; a value that is not Unicode is an error.
pub fn operator_log() -> anyhow::Result<String> {
    match std::env::var(OPERATOR_LOG_VAR) {
        Ok(log) => Ok(log),
        Err(std::env::VarError::NotPresent) => Ok(OPERATOR_LOG.to_string()),
        Err(error) => Err(anyhow::anyhow!("{OPERATOR_LOG_VAR}: {error}")),
    }
}
/// Upper bound for an operator to become ready (a hang guard).
pub const READY_LIMIT: Duration = Duration::from_secs(300);

/// Status writes by kind (counter).
pub const WRITES: &str = "kubetwin_status_writes_total";
/// Status changes merged into a pending write (counter).
pub const MERGED: &str = "kubetwin_status_updates_merged_total";
/// Objects waiting for a status write (gauge).
pub const QUEUE_DEPTH: &str = "kubetwin_status_queue_depth";
/// Time from a change being queued to its write (histogram).
pub const STALENESS: &str = "kubetwin_status_staleness_seconds";

/// Starts an operator for `scope` with `flags` and waits until it is ready.
pub async fn start_operator(
    env: &TestEnv,
    scope: &Scope,
    flags: &[&str],
) -> anyhow::Result<Operator> {
    let operator = Operator::spawn_with_log(env, scope, flags, &operator_log()?)?;
    operator.wait_ready(READY_LIMIT).await.context("the operator did not become ready")?;
    Ok(operator)
}

/// One scrape of the operator's `/metrics`.
pub async fn scrape(operator: &Operator) -> anyhow::Result<Scrape> {
    let text = operator.metrics().await.context("reading the operator's /metrics")?;
    Ok(Scrape::parse(&text))
}

/// Status writes to Devices.
pub fn device_writes(scrape: &Scrape) -> f64 {
    scrape.value(WRITES, &[("kind", "device")]).unwrap_or(0.0)
}

/// Status writes of every kind.
pub fn all_writes(scrape: &Scrape) -> f64 {
    scrape.sum(WRITES)
}

/// Objects waiting for a status write.
pub fn queue_depth(scrape: &Scrape) -> f64 {
    scrape.sum(QUEUE_DEPTH)
}

/// The staleness histogram over every priority (empty when the operator has none).
pub fn staleness(scrape: &Scrape) -> Histogram {
    staleness_of(scrape, &[])
}

/// The staleness histogram of the writes of one priority (`routine` or `urgent`).
pub fn staleness_at(scrape: &Scrape, priority: &str) -> Histogram {
    staleness_of(scrape, &[("priority", priority)])
}

fn staleness_of(scrape: &Scrape, labels: &[(&str, &str)]) -> Histogram {
    scrape.histogram_with(STALENESS, labels).unwrap_or(Histogram {
        buckets: Vec::new(),
        sum: 0.0,
        count: 0.0,
    })
}

/// The processes a wait depends on; a wait fails as soon as one of them has exited.
#[derive(Clone, Copy, Default)]
pub struct Watchdog<'a> {
    operator: Option<&'a Operator>,
    simulator: Option<&'a Simulator>,
}

impl<'a> Watchdog<'a> {
    /// Watches an operator.
    pub fn operator(operator: &'a Operator) -> Self {
        Self { operator: Some(operator), simulator: None }
    }

    /// Watches an operator and a simulator.
    pub fn both(operator: &'a Operator, simulator: &'a Simulator) -> Self {
        Self { operator: Some(operator), simulator: Some(simulator) }
    }

    /// Fails when a watched process has exited.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(operator) = self.operator {
            operator.check_running().context("the operator crashed or exited")?;
        }
        if let Some(simulator) = self.simulator {
            simulator.check_running().context("the device simulator crashed or exited")?;
        }
        Ok(())
    }
}

/// What a probe of [`wait_until`] found.
pub enum Check {
    /// The awaited state is reached.
    Done,
    /// Not yet; the text says where things stand.
    Waiting(String),
}

/// Calls `probe` every `interval` until it reports [`Check::Done`]. Prints where things stand
/// every 10 s; fails when a watched process dies, or after `limit`, which only guards against
/// hanging (it is generous, never a time goal).
pub async fn wait_until(
    what: &str,
    limit: Duration,
    interval: Duration,
    dog: Watchdog<'_>,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Check>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_print = started;
    loop {
        dog.check()?;
        match probe().await? {
            Check::Done => return Ok(()),
            Check::Waiting(state) => {
                anyhow::ensure!(
                    started.elapsed() < limit,
                    "gave up waiting for {what} after {limit:?} (a guard against hanging): {state}"
                );
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    progress(format!("  waiting for {what}: {state}"));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until the operator is idle: its status queue is empty and it made no status write for
/// `quiet`. Returns the last scrape.
pub async fn wait_idle(
    operator: &Operator,
    dog: Watchdog<'_>,
    quiet: Duration,
    limit: Duration,
) -> anyhow::Result<Scrape> {
    let mut last = Scrape::default();
    let mut last_writes = None;
    let mut stable_since = Instant::now();
    wait_until("the operator to be idle", limit, Duration::from_millis(250), dog, async || {
        let now = scrape(operator).await?;
        let writes = all_writes(&now);
        let depth = queue_depth(&now);
        if last_writes != Some(writes) || depth > 0.0 {
            last_writes = Some(writes);
            stable_since = Instant::now();
        }
        last = now;
        Ok(if stable_since.elapsed() >= quiet {
            Check::Done
        } else {
            Check::Waiting(format!("queue depth {depth}, {writes} status writes so far"))
        })
    })
    .await?;
    Ok(last)
}

/// Sleeps for `duration`, failing early when a watched process dies.
pub async fn sleep_watching(duration: Duration, dog: Watchdog<'_>) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        dog.check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// A fleet whose Devices are all Connected, with the operator idle.
pub struct ConnectedFleet {
    /// The operator.
    pub operator: Operator,
    /// The simulator of every device.
    pub simulator: Simulator,
    /// From starting the simulator to every Device shown Connected.
    pub connect_time: Duration,
}

/// Applies the Devices `ids` (named `{prefix}-{i}`), starts an operator with `operator_flags`
/// and a simulator of those devices (password logins) with `sim_flags`, and waits until every
/// Device is Connected and the operator is idle.
pub async fn connected_fleet(
    env: &TestEnv,
    scope: &Scope,
    devices: &Api<Device>,
    ids: &[String],
    prefix: &str,
    (operator_flags, sim_flags): (&[&str], &[&str]),
    limit: Duration,
) -> anyhow::Result<ConnectedFleet> {
    let n = ids.len();
    cluster::apply_devices(devices, ids.to_vec(), CONCURRENCY).await?;
    let connected = cluster::Tracker::start(devices.clone(), cluster::is_connected);
    let operator = start_operator(env, scope, operator_flags).await?;
    let started = Instant::now();
    let simulator = Simulator::start_fleet(env, scope, n, prefix, Login::Passwords, sim_flags)?;
    let connect_time = {
        let dog = Watchdog::both(&operator, &simulator);
        wait_until("every Device Connected", limit, Duration::from_millis(500), dog, async || {
            let count = connected.count(|c| *c);
            Ok(if count == n {
                Check::Done
            } else {
                Check::Waiting(format!("{count}/{n} Connected"))
            })
        })
        .await?;
        // The watch saw the last one first; the probe above only polls it.
        let all_connected = connected
            .last_arrival(|c| *c)
            .context("the watch saw every Device Connected but recorded no time")?;
        wait_idle(&operator, dog, Duration::from_secs(3), limit).await?;
        all_connected.saturating_duration_since(started)
    };
    Ok(ConnectedFleet { operator, simulator, connect_time })
}

/// Every device executed exactly one request (its ledger lists one request id).
pub fn each_executed_once(simulator: &Simulator, ids: &[String]) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for id in ids {
        let executed = simulator.executed(id)?;
        if executed.len() != 1 {
            wrong.push(format!("{id} executed {} requests", executed.len()));
        }
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "{} devices did not execute exactly one request, for example: {}",
        wrong.len(),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
    );
    Ok(())
}

/// Floor step shared by the scenarios: a minimal client writes a terminal status (phase
/// Succeeded) to each of `names` of `api`, `CONCURRENCY` at a time; returns how long it took.
pub async fn mark_all_succeeded<K>(api: &Api<K>, names: Vec<String>) -> anyhow::Result<Duration>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    cluster::run_all("status patches", names, CONCURRENCY, |name| {
        let api = api.clone();
        let kind = kind.clone();
        async move {
            let patch =
                serde_json::json!({"status": {"phase": "Succeeded", "message": "kubetwin-bench floor"}});
            api.patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("patching the status of {kind} {name}"))?;
            Ok(())
        }
    })
    .await
}

/// What a measured restart found (B3 and B4).
pub struct Restart {
    /// The new operator, running.
    pub operator: Operator,
    /// Time from starting the process to `/readyz` answering 200.
    pub ready: Duration,
    /// Status writes (all kinds) before ready.
    pub writes_before_ready: f64,
    /// Status writes (all kinds) in the window after ready.
    pub writes_after_ready: f64,
    /// Desired documents the new process published by the end of the window.
    pub desired_published: f64,
}

/// Starts a new operator for `scope` with `flags` (the old one must be gone), measures the time
/// until its `/readyz` answers 200 (polled every 50 ms), then watches its status writes for
/// `window`. `simulator`, when given, must stay up throughout.
pub async fn restart_measured(
    env: &TestEnv,
    scope: &Scope,
    flags: &[&str],
    window: Duration,
    simulator: Option<&Simulator>,
) -> anyhow::Result<Restart> {
    let started = Instant::now();
    let operator = Operator::spawn_with_log(env, scope, flags, &operator_log()?)?;
    let dog = Watchdog { operator: Some(&operator), simulator };
    wait_until(
        "the new operator to be ready",
        READY_LIMIT,
        Duration::from_millis(50),
        dog,
        async || {
            Ok(match operator.readyz().await {
                Ok((200, _)) => Check::Done,
                Ok((code, body)) => Check::Waiting(format!("/readyz {code}: {}", body.trim())),
                Err(error) => Check::Waiting(format!("/readyz: {error}")),
            })
        },
    )
    .await?;
    let ready = started.elapsed();
    let at_ready = scrape(&operator).await?;
    progress(format!(
        "{}: the restarted operator is ready after {ready:.2?}; watching writes for {window:?}",
        scope.namespace
    ));
    sleep_watching(window, dog).await?;
    let at_end = scrape(&operator).await?;
    let writes_before_ready = all_writes(&at_ready);
    let writes_after_ready = all_writes(&at_end) - writes_before_ready;
    let desired_published = at_end
        .value("kubetwin_mqtt_messages_published_total", &[("kind", "desired")])
        .unwrap_or(0.0);
    Ok(Restart { operator, ready, writes_before_ready, writes_after_ready, desired_published })
}
