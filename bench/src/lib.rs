//! Benchmark scenarios B1–B9 of `kubetwin-bench`.
//!
//! Each scenario runs in its own namespace and topic root on one [`TestEnv`] (real control
//! plane, mosquitto, operator and simulator binaries) and measures its floor in the same run,
//! so results are ratios. Time never fails a run; correctness problems do.
//!
//! - [`b1_fanout`], [`b2_ingestion`], [`b3_memory`], [`b4_restart`], [`b5_latency`],
//!   [`b6_identity`], [`b7_job`], [`b8_quiet`], [`b9_scale`]: the scenarios, one function each.
//! - [`cluster`]: creating objects fast, status patches, a recording watch.
//! - [`ping`]: raw MQTT request/response round trips.
//! - [`hop`]: one pass through kube-runtime's controller scheduler, timed in-process.
//! - [`ops`]: operator processes, metrics and waits.
//! - [`apiserver`]: what kube-apiserver served between two scrapes of its metrics.
//! - [`prom`], [`stats`]: metrics text, histogram quantiles, percentiles, RSS, CPU time.
//! - [`report`]: the generated Markdown page and JSON.

pub mod apiserver;
pub mod b1_fanout;
pub mod b2_ingestion;
pub mod b3_memory;
pub mod b4_restart;
pub mod b5_latency;
pub mod b6_identity;
pub mod b7_job;
pub mod b8_quiet;
pub mod b9_scale;
/// Bulk object operations and the recording watch, shared with the fault tests.
pub use kubetwin_e2e::bulk as cluster;
pub mod hop;
pub mod ops;
pub mod ping;
pub mod prom;
pub mod report;
pub mod stats;

use std::{
    fmt::Display,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use kubetwin_e2e::{TestEnv, fleet::Scope, install_crds};
use report::{Machine, Report, ScenarioReport, Versions};

/// Client concurrency of the creates, patches and round trips of the scenarios.
pub const CONCURRENCY: usize = 64;

pub use kubetwin_e2e::bulk::progress;

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioId {
    /// Fan-out.
    B1,
    /// Ingestion.
    B2,
    /// Memory.
    B3,
    /// Restart.
    B4,
    /// Latency.
    B5,
    /// Identity cost.
    B6,
    /// Fleet job.
    B7,
    /// Quiet at rest.
    B8,
    /// 100,000 devices on one machine.
    B9,
}

impl ScenarioId {
    /// Every scenario, in the order they run: B3 and B9 last, so that their 100,000 objects do
    /// not weigh on the API server during the others.
    pub const RUN_ORDER: [ScenarioId; 9] =
        [Self::B1, Self::B2, Self::B4, Self::B5, Self::B6, Self::B7, Self::B8, Self::B3, Self::B9];

    /// Parses `B1` … `B9` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "B1" => Some(Self::B1),
            "B2" => Some(Self::B2),
            "B3" => Some(Self::B3),
            "B4" => Some(Self::B4),
            "B5" => Some(Self::B5),
            "B6" => Some(Self::B6),
            "B7" => Some(Self::B7),
            "B8" => Some(Self::B8),
            "B9" => Some(Self::B9),
            _ => None,
        }
    }

    /// Short title.
    pub fn title(self) -> &'static str {
        match self {
            Self::B1 => b1_fanout::TITLE,
            Self::B2 => b2_ingestion::TITLE,
            Self::B3 => b3_memory::TITLE,
            Self::B4 => b4_restart::TITLE,
            Self::B5 => b5_latency::TITLE,
            Self::B6 => b6_identity::TITLE,
            Self::B7 => b7_job::TITLE,
            Self::B8 => b8_quiet::TITLE,
            Self::B9 => b9_scale::TITLE,
        }
    }

    /// What it measures.
    pub fn what(self) -> &'static str {
        match self {
            Self::B1 => b1_fanout::WHAT,
            Self::B2 => b2_ingestion::WHAT,
            Self::B3 => b3_memory::WHAT,
            Self::B4 => b4_restart::WHAT,
            Self::B5 => b5_latency::WHAT,
            Self::B6 => b6_identity::WHAT,
            Self::B7 => b7_job::WHAT,
            Self::B8 => b8_quiet::WHAT,
            Self::B9 => b9_scale::WHAT,
        }
    }
}

impl Display for ScenarioId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Sizes of the scenarios.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    /// B1: fleet sizes N.
    pub b1_devices: Vec<usize>,
    /// B2: devices reporting.
    pub b2_devices: usize,
    /// B2: seconds of load.
    pub b2_seconds: u64,
    /// B2: report interval of every device.
    pub b2_interval_ms: u64,
    /// B3: Device counts, measured in increasing order.
    pub b3_devices: Vec<usize>,
    /// B4: devices.
    pub b4_devices: usize,
    /// B4: how long writes are watched after the restarted operator is ready.
    pub b4_window: Duration,
    /// B5: measured runs.
    pub b5_runs: usize,
    /// B6: devices with their own credentials.
    pub b6_devices: usize,
    /// B7: devices the fleet job reboots.
    pub b7_devices: usize,
    /// B8: idle connected devices.
    pub b8_devices: usize,
    /// B8: how long they stay idle (the broker restarts halfway).
    pub b8_idle: Duration,
    /// B9: simulated devices in one simulator process, all rebooted by one DeviceJob.
    pub b9_devices: usize,
    /// B9: loopback addresses the connections are spread over (one reaches ~28,000 ports).
    pub b9_hosts: usize,
}

impl Sizes {
    /// The sizes of the scale issue.
    pub fn full() -> Self {
        Self {
            b1_devices: vec![1_000, 10_000],
            b2_devices: 10_000,
            b2_seconds: 60,
            b2_interval_ms: 1000,
            b3_devices: vec![10_000, 100_000],
            b4_devices: 10_000,
            b4_window: Duration::from_secs(30),
            b5_runs: 100,
            b6_devices: 10_000,
            b7_devices: 10_000,
            b8_devices: 10_000,
            b8_idle: Duration::from_secs(600),
            b9_devices: 100_000,
            b9_hosts: 4,
        }
    }

    /// Tiny sizes for a smoke test of correctness.
    pub fn quick() -> Self {
        Self {
            b1_devices: vec![20],
            b2_devices: 50,
            b2_seconds: 5,
            b2_interval_ms: 1000,
            b3_devices: vec![200],
            b4_devices: 200,
            b4_window: Duration::from_secs(10),
            b5_runs: 5,
            b6_devices: 20,
            b7_devices: 30,
            b8_devices: 50,
            b8_idle: Duration::from_secs(20),
            b9_devices: 40,
            b9_hosts: 2,
        }
    }
}

/// What the scenarios share.
pub struct Bench<'a> {
    /// The environment.
    pub env: &'a TestEnv,
    /// An admin client.
    pub client: kube::Client,
    /// Sizes.
    pub sizes: Sizes,
}

impl Bench<'_> {
    /// A fresh namespace (name starting with `prefix`) and its scope (own topic root and
    /// broker). Its broker knows `devices` password devices `{namespace}.d-{i}` (the ids
    /// [`cluster::device_ids`] gives for the prefix `{namespace}.d`) and the benchmark's own
    /// client ([`ping::BENCH_CLIENT`]).
    pub async fn scope(&self, prefix: &str, devices: usize) -> anyhow::Result<Scope> {
        self.scope_spread(prefix, devices, &[]).await
    }

    /// Like [`Bench::scope`], with the broker also listening on `extra_hosts` (loopback
    /// addresses the simulator spreads its connections over).
    pub async fn scope_spread(
        &self,
        prefix: &str,
        devices: usize,
        extra_hosts: &[String],
    ) -> anyhow::Result<Scope> {
        let namespace =
            self.env.namespace(&self.client, prefix).await.context("creating a namespace")?;
        let ids = cluster::device_ids(&format!("{}.d", namespace.name), 0..devices);
        let scope = Scope::with_broker(self.env, &namespace.name, |setup, _| {
            setup.password_devices = ids;
            setup.extra_operators = vec![ping::BENCH_CLIENT.to_string()];
            setup.extra_loopback_hosts = extra_hosts.to_vec();
        })
        .await?;
        Ok(scope)
    }
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tiny sizes.
    pub quick: bool,
    /// Scenarios to run.
    pub only: Vec<ScenarioId>,
    /// The command line, as it is recorded in the report.
    pub command: String,
    /// B1's sizes instead of the default ones (to look at one size alone).
    pub b1_devices: Option<Vec<usize>>,
    /// B3's Device counts instead of the default sizes (to look at one size alone).
    pub b3_devices: Option<Vec<usize>>,
}

/// Starts an environment, runs the selected scenarios and returns the report. A scenario that
/// fails is recorded with its error and the others still run.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let date = kubetwin_protocol::timestamp::now_rfc3339();
    progress("starting etcd, kube-apiserver, kube-controller-manager and mosquitto");
    let env = TestEnv::start().await.context("starting the test environment")?;
    let client = env.client().await?;
    install_crds(&client).await?;
    let bench = Bench {
        env: &env,
        client,
        sizes: {
            let mut sizes = if options.quick { Sizes::quick() } else { Sizes::full() };
            if let Some(b1_devices) = &options.b1_devices {
                sizes.b1_devices.clone_from(b1_devices);
            }
            if let Some(b3_devices) = &options.b3_devices {
                sizes.b3_devices.clone_from(b3_devices);
            }
            sizes
        },
    };
    let mut scenarios = Vec::new();
    for id in ScenarioId::RUN_ORDER.into_iter().filter(|id| options.only.contains(id)) {
        progress(format!("=== {id} {}", id.title()));
        let started = Instant::now();
        let result = match id {
            ScenarioId::B1 => b1_fanout::run(&bench).await,
            ScenarioId::B2 => b2_ingestion::run(&bench).await,
            ScenarioId::B3 => b3_memory::run(&bench).await,
            ScenarioId::B4 => b4_restart::run(&bench).await,
            ScenarioId::B5 => b5_latency::run(&bench).await,
            ScenarioId::B6 => b6_identity::run(&bench).await,
            ScenarioId::B7 => b7_job::run(&bench).await,
            ScenarioId::B8 => b8_quiet::run(&bench).await,
            ScenarioId::B9 => b9_scale::run(&bench).await,
        };
        let report = result.unwrap_or_else(|error| {
            ScenarioReport::failed(&id.to_string(), id.title(), id.what(), &error)
        });
        match &report.error {
            Some(error) => progress(format!("=== {id} FAILED: {error}")),
            None => {
                progress(format!("=== {id} done in {:.0?}\n{}", started.elapsed(), report.table()))
            }
        }
        scenarios.push(report);
    }
    scenarios.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Report {
        command: options.command.clone(),
        date,
        quick: options.quick,
        machine: Machine::detect(),
        versions: Versions::detect(),
        binary_profile: std::env::var("KUBETWIN_BIN_PROFILE").unwrap_or_else(|_| "debug".into()),
        bench_profile: if cfg!(debug_assertions) { "debug".into() } else { "release".into() },
        scenarios,
    })
}

/// The command line of this process as a person would type it: `KUBETWIN_BIN_PROFILE` and
/// `KUBETWIN_BENCH_OPERATOR_LOG` when set, the program relative to the repository, then the
/// arguments.
pub fn command_line() -> String {
    let mut parts = Vec::new();
    if let Ok(profile) = std::env::var("KUBETWIN_BIN_PROFILE") {
        parts.push(format!("KUBETWIN_BIN_PROFILE={profile}"));
    }
    // A run with more operator logging is slower: the report must say so.
    if let Some(log) = std::env::var_os(ops::OPERATOR_LOG_VAR) {
        parts.push(format!("{}={}", ops::OPERATOR_LOG_VAR, log.to_string_lossy()));
    }
    let mut args = std::env::args();
    if let Some(program) = args.next() {
        let path = PathBuf::from(&program);
        let root = kubetwin_e2e::tools::repo_root();
        parts.push(path.strip_prefix(&root).map(|p| p.display().to_string()).unwrap_or(program));
    }
    parts.extend(args);
    parts.join(" ")
}

/// Open files B9 needs: 100,000 connections in the simulator and as many in mosquitto, which
/// inherit the limit from this process.
const OPEN_FILES_WANTED: u64 = 262_144;

/// Raises the limit of open files (mosquitto and the simulator, started from this process,
/// inherit it: every simulated device is a connection in both). The hard limit is raised to
/// [`OPEN_FILES_WANTED`] where the process may (as root); otherwise the soft limit goes up to
/// the hard one. Returns the limit.
#[allow(unsafe_code)]
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_max < OPEN_FILES_WANTED {
            let raised = libc::rlimit { rlim_cur: OPEN_FILES_WANTED, rlim_max: OPEN_FILES_WANTED };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(OPEN_FILES_WANTED);
            }
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// The limit of open files of this process (and of what it starts), and its hard limit.
#[allow(unsafe_code)]
pub fn open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_ids_parse_and_the_100k_scenarios_run_last() {
        assert_eq!(ScenarioId::parse("b2"), Some(ScenarioId::B2));
        assert_eq!(ScenarioId::parse(" B5 "), Some(ScenarioId::B5));
        assert_eq!(ScenarioId::parse("b6"), Some(ScenarioId::B6));
        assert_eq!(ScenarioId::parse("B7"), Some(ScenarioId::B7));
        assert_eq!(ScenarioId::parse("B8"), Some(ScenarioId::B8));
        assert_eq!(ScenarioId::parse("B9"), Some(ScenarioId::B9));
        assert_eq!(ScenarioId::parse("B10"), None);
        assert_eq!(ScenarioId::RUN_ORDER[7..], [ScenarioId::B3, ScenarioId::B9]);
        let mut all = ScenarioId::RUN_ORDER.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 9, "every scenario runs once");
    }
}
