//! Fault injection (`tests/faults.rs`; `make faults` at 1,000 devices): a fleet of simulated
//! devices that report every second, each with a reboot in flight, one or two operator
//! replicas under a supervisor that restarts them as Kubernetes would, and the accounting that
//! tells what a fault lost, printed as one `NOTHING-LOST` line per test.
//!
//! The accounting compares three independent records: the simulator's ledgers (what each
//! device executed and last reported, written by the devices themselves), the API server's
//! objects at the end, and a watch that saw every status change on the way (so a status that
//! moved backwards, or a request deleted by its TTL, is still seen).

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams},
    runtime::{WatchStreamExt as _, watcher},
};
use kubetwin_api::{Device, RebootPhase, RebootRequest};
use kubetwin_device_sim::Ledger;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    broker::Login,
    bulk::{self, progress},
    env::{TestEnv, install_crds},
    error::{Error, Result},
    fleet::{Operator, Scope, Simulator},
};

/// Devices per fault test: `KUBETWIN_FAULT_DEVICES` (`make faults` sets 1,000), else 100.
pub fn fleet_size() -> usize {
    std::env::var("KUBETWIN_FAULT_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// How a rig is set up.
#[derive(Clone, Debug)]
pub struct RigOptions {
    /// Simulated devices, one Device and one reboot request each.
    pub devices: usize,
    /// Operator replicas; more than one runs leader election.
    pub replicas: usize,
    /// Lease duration with leader election.
    pub lease_seconds: u64,
    /// Whether the broker keeps sessions and retained messages on disk.
    pub broker_persistence: bool,
    /// Messages the broker queues per client.
    pub broker_queue: usize,
    /// More operator flags.
    pub operator_flags: Vec<String>,
    /// Run the operator under libfaketime, so [`Rig::step_clock`] can step its wall clock.
    pub faketime: bool,
    /// A control plane of the rig's own (for faults that take the API server down).
    pub private_control_plane: bool,
    /// More simulator flags.
    pub simulator_flags: Vec<String>,
    /// How long [`Rig::finish`] waits for requests to end and Devices to catch up (default:
    /// long enough for any machine; a control experiment that expects losses waits less).
    pub patience: Option<Duration>,
    /// The fleet may lose messages from the start (a control without resync: a presence the
    /// full broker queue dropped at startup is never sent again). The rig then goes on when
    /// not every Device shows connected, and the line counts what was lost.
    pub lossy_startup: bool,
}

impl RigOptions {
    /// One replica, no persistence, the shared control plane.
    pub fn new(devices: usize) -> Self {
        Self {
            devices,
            replicas: 1,
            lease_seconds: 15,
            broker_persistence: false,
            broker_queue: crate::broker::MAX_QUEUED_MESSAGES,
            operator_flags: Vec::new(),
            faketime: false,
            private_control_plane: false,
            simulator_flags: Vec::new(),
            patience: None,
            lossy_startup: false,
        }
    }
}

/// The shared environment, or one of the rig's own.
enum EnvHandle {
    Shared(&'static TestEnv),
    Private(Box<TestEnv>),
}

impl EnvHandle {
    fn get(&self) -> &TestEnv {
        match self {
            Self::Shared(env) => env,
            Self::Private(env) => env,
        }
    }
}

/// What the watch saw of every object, in order.
#[derive(Debug, Default)]
struct Seen {
    /// Phases each request went through (consecutive duplicates folded).
    phases: HashMap<String, Vec<Option<RebootPhase>>>,
    /// Requests the API server deleted, as they were at deletion.
    deleted: HashMap<String, RebootRequest>,
    /// Reported positions each Device showed.
    positions: HashMap<String, Vec<(i64, i64)>>,
}

/// One NOTHING-LOST line: what a fault test lost (the goal: nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct NothingLost {
    /// Test name.
    pub test: String,
    /// Devices whose status equals what they last reported.
    pub devices_final: usize,
    /// Devices compared.
    pub devices: usize,
    /// Requests that ended in a terminal phase with their true outcome.
    pub requests_terminal: usize,
    /// Requests made.
    pub requests: usize,
    /// Request ids a device executed more than once, or that a device other than the target
    /// executed.
    pub double_executions: usize,
    /// Succeeded requests the target device never executed.
    pub false_successes: usize,
    /// Status changes that went backwards: a request's phase, or a Device's reported position.
    pub phase_regressions: usize,
    /// Seconds during which two operator processes acted at once.
    pub leader_overlap_s: f64,
}

impl std::fmt::Display for NothingLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NOTHING-LOST {} devices_final={}/{} requests_terminal={}/{} double_executions={} false_successes={} phase_regressions={} leader_overlap_s={:.1}",
            self.test,
            self.devices_final,
            self.devices,
            self.requests_terminal,
            self.requests,
            self.double_executions,
            self.false_successes,
            self.phase_regressions,
            self.leader_overlap_s
        )
    }
}

impl NothingLost {
    /// Whether nothing was lost: every device and request accounted for, and zeros.
    pub fn is_clean(&self) -> bool {
        self.devices_final == self.devices
            && self.requests_terminal == self.requests
            && self.double_executions == 0
            && self.false_successes == 0
            && self.phase_regressions == 0
            && self.leader_overlap_s == 0.0
    }
}

/// A request the rig made.
#[derive(Clone, Debug)]
struct Made {
    uid: String,
    device: String,
}

/// A running fault-injection fleet.
pub struct Rig {
    env: EnvHandle,
    /// Namespace, topic root and broker.
    pub scope: Scope,
    /// Devices of the namespace.
    pub devices: Api<Device>,
    /// RebootRequests of the namespace.
    pub requests: Api<RebootRequest>,
    /// Device ids (= Device names).
    pub ids: Vec<String>,
    /// Operator replicas.
    pub replicas: Vec<Arc<Operator>>,
    options: RigOptions,
    simulator: Simulator,
    seen: Arc<Mutex<Seen>>,
    watches: Vec<JoinHandle<()>>,
    supervising: Arc<AtomicBool>,
    supervisor: JoinHandle<()>,
    made: Mutex<HashMap<String, Made>>,
    deleted_devices: Mutex<HashSet<String>>,
    clock_file: Option<PathBuf>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.supervising.store(false, Ordering::SeqCst);
        self.supervisor.abort();
        for watch in &self.watches {
            watch.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn other(context: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Io { context: context.into(), source: std::io::Error::other(message.to_string()) }
}

impl Rig {
    /// Sets up the fleet: namespace, broker, Devices, operator replicas (one leading), the
    /// simulator (every device connected), and the watch.
    pub async fn start(name: &str, options: RigOptions) -> Result<Self> {
        let env = if options.private_control_plane {
            EnvHandle::Private(Box::new(TestEnv::start().await?))
        } else {
            EnvHandle::Shared(TestEnv::shared())
        };
        let client = env.get().client().await?;
        install_crds(&client).await?;
        let namespace = env.get().namespace(&client, name).await?.name;
        let (persistence, queue) = (options.broker_persistence, options.broker_queue);
        let scope = Scope::with_broker(env.get(), &namespace, |setup, _| {
            setup.persistence = persistence;
            setup.max_queued_messages = queue;
        })
        .await?;
        let devices: Api<Device> = Api::namespaced(client.clone(), &namespace);
        let requests: Api<RebootRequest> = Api::namespaced(client.clone(), &namespace);
        let prefix = format!("{namespace}.d");
        let ids = bulk::device_ids(&prefix, 0..options.devices);
        bulk::apply_devices(&devices, ids.clone(), 32)
            .await
            .map_err(|e| other("applying the Devices", format!("{e:#}")))?;

        let clock_file = options.faketime.then(|| scope.dir.join("operator-clock-offset"));
        if let Some(file) = &clock_file {
            std::fs::write(file, "+0\n")
                .map_err(crate::error::io_context("writing the clock file"))?;
        }
        let mut replicas = Vec::new();
        for _ in 0..options.replicas.max(1) {
            replicas.push(Arc::new(spawn_operator(
                env.get(),
                &scope,
                &options,
                clock_file.as_ref(),
            )?));
        }
        let rig_start = Instant::now();
        wait_until(Duration::from_secs(120), "an operator leads", || async {
            for replica in &replicas {
                if replica.readyz().await.is_ok_and(|(code, body)| code == 200 && body == "ok") {
                    return true;
                }
            }
            false
        })
        .await?;
        progress(format!("{name}: operator leading after {:?}", rig_start.elapsed()));

        let mut simulator_flags =
            vec!["--report-interval-ms=1000", "--boot-seconds=2", "--connect-rate=1000"];
        simulator_flags.extend(options.simulator_flags.iter().map(String::as_str));
        let simulator = Simulator::start_fleet_logging(
            env.get(),
            &scope,
            options.devices,
            &prefix,
            Login::Certificates,
            &simulator_flags,
            "info",
        )?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watches = vec![
            tokio::spawn(watch_requests(requests.clone(), seen.clone())),
            tokio::spawn(watch_devices(devices.clone(), seen.clone())),
        ];
        let supervising = Arc::new(AtomicBool::new(true));
        let supervisor = tokio::spawn(supervise(replicas.clone(), supervising.clone()));
        let rig = Self {
            env,
            scope,
            devices,
            requests,
            ids,
            replicas,
            options,
            simulator,
            seen,
            watches,
            supervising,
            supervisor,
            made: Mutex::new(HashMap::new()),
            deleted_devices: Mutex::new(HashSet::new()),
            clock_file,
        };
        let total = rig.options.devices;
        // A lossy start never heals (nothing is sent again), so waiting long gains nothing.
        let limit = if rig.options.lossy_startup {
            Duration::from_secs(20 + total as u64 / 50)
        } else {
            Duration::from_secs(120 + total as u64 / 10)
        };
        let connected = rig.wait_devices(limit, "connected", bulk::is_connected, total).await;
        match connected {
            Err(error) if rig.options.lossy_startup => {
                progress(format!("{name}: going on with a lossy start ({error})"));
            }
            other => other?,
        }
        progress(format!("{name}: {total} devices connected after {:?}", rig_start.elapsed()));
        Ok(rig)
    }

    /// The environment the rig runs on.
    pub fn env(&self) -> &TestEnv {
        self.env.get()
    }

    /// Creates one RebootRequest per device (`r-<i>` for device i) with `spec(i)` added.
    pub async fn create_requests(&self, spec: impl Fn(usize) -> Value) -> Result<()> {
        let items: Vec<(usize, String)> = self.ids.iter().cloned().enumerate().collect();
        let spec = &spec;
        bulk::run_all("creating RebootRequests", items, 32, |(i, device)| async move {
            let name = format!("r-{i}");
            let request = bulk::reboot_request(&name, &device, &spec(i))?;
            let created = self.requests.create(&kube::api::PostParams::default(), &request).await?;
            let uid = created.uid().unwrap_or_default();
            lock(&self.made).insert(name, Made { uid, device });
            Ok(())
        })
        .await
        .map_err(|e| other("creating RebootRequests", format!("{e:#}")))?;
        Ok(())
    }

    /// Waits until at least `count` requests are in a phase `wanted` accepts (a hang guard of
    /// `limit`; an error when it is reached).
    pub async fn wait_requests(
        &self,
        limit: Duration,
        what: &str,
        wanted: impl Fn(Option<RebootPhase>) -> bool,
        count: usize,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut matching = 0;
            if let Ok(list) = self.requests.list(&ListParams::default()).await {
                matching = list.items.iter().filter(|r| wanted(bulk::phase(r))).count();
                if matching >= count {
                    progress(format!("  {matching} requests {what} after {:?}", started.elapsed()));
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                return Err(other(
                    "waiting for requests",
                    format!("only {matching}/{count} {what} after {limit:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_devices(
        &self,
        limit: Duration,
        what: &str,
        wanted: impl Fn(&Device) -> bool,
        count: usize,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut matching = 0;
            if let Ok(list) = self.devices.list(&ListParams::default()).await {
                matching = list.items.iter().filter(|d| wanted(d)).count();
                if matching >= count {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                return Err(other(
                    "waiting for Devices",
                    format!("only {matching}/{count} {what} after {limit:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The replica that leads now (its `/readyz` says `ok`), if any.
    pub async fn leader(&self) -> Option<Arc<Operator>> {
        for replica in &self.replicas {
            if replica.readyz().await.is_ok_and(|(code, body)| code == 200 && body == "ok") {
                return Some(replica.clone());
            }
        }
        None
    }

    /// Waits until some replica leads, and returns it.
    pub async fn wait_leader(&self, limit: Duration) -> Result<Arc<Operator>> {
        let started = Instant::now();
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if started.elapsed() > limit {
                return Err(other(
                    "waiting for a leader",
                    format!("no replica leads after {limit:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the operator's clock offset (seconds; libfaketime reads the file on every call).
    pub fn step_clock(&self, offset_seconds: i64) -> Result<()> {
        let file = self
            .clock_file
            .as_ref()
            .ok_or_else(|| other("stepping the clock", "the rig runs without faketime"))?;
        let text = if offset_seconds >= 0 {
            format!("+{offset_seconds}\n")
        } else {
            format!("{offset_seconds}\n")
        };
        std::fs::write(file, text).map_err(crate::error::io_context("writing the clock file"))?;
        progress(format!("  operator clock offset now {offset_seconds:+} s"));
        Ok(())
    }

    /// Deletes the Devices `names` (their requests stay).
    pub async fn delete_devices(&self, names: &[String]) -> Result<()> {
        for name in names {
            self.devices.delete(name, &DeleteParams::default()).await?;
            lock(&self.deleted_devices).insert(name.clone());
        }
        Ok(())
    }

    /// Lets the fleet finish and accounts for it: waits (up to a hang guard) until every
    /// request is terminal, stops the devices gracefully, waits until the leader is idle and
    /// the Devices caught up with the ledgers, then prints and returns the NOTHING-LOST line.
    pub async fn finish(self, test: &str) -> Result<NothingLost> {
        let total = lock(&self.made).len();
        let limit = self.options.patience.unwrap_or(Duration::from_secs(300 + total as u64 / 5));
        // Requests deleted by their TTL are counted from what the watch saw.
        let started = Instant::now();
        loop {
            let (done, _) = self.terminal_count().await;
            if done >= total || started.elapsed() > limit {
                progress(format!(
                    "  {done}/{total} requests terminal after {:?}",
                    started.elapsed()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // What devices sent while no operator was connected comes back by their resync to the
        // newest operator session: let the leader connect, announce its session and take in
        // the resync (spread over the window it asks for) before the fleet stops.
        let leader = self.wait_leader(Duration::from_secs(120)).await?;
        leader
            .wait_metric("kubetwin_mqtt_connected", Duration::from_secs(120), |v| v >= 1.0)
            .await?;
        // The operator asks for 2,000 resyncs a second, over at least a second
        // (`resync_spread_ms` in the operator's transport).
        let window = Duration::from_millis((self.ids.len() as u64 / 2).max(1000));
        tokio::time::sleep(window + Duration::from_secs(3)).await;
        self.simulator.terminate(Duration::from_secs(120)).await?;
        let leader = self.wait_leader(Duration::from_secs(120)).await?;
        leader.wait_idle(Duration::from_secs(300)).await?;
        // The Devices catch up with what the devices last reported (within the write budget).
        let deleted = lock(&self.deleted_devices).clone();
        let compared: Vec<String> =
            self.ids.iter().filter(|id| !deleted.contains(*id)).cloned().collect();
        let mut ledgers = HashMap::new();
        for id in &self.ids {
            if let Some(ledger) = self.simulator.ledger(id)? {
                ledgers.insert(id.clone(), ledger);
            }
        }
        let converge_limit =
            self.options.patience.unwrap_or(Duration::from_secs(120 + compared.len() as u64 / 10));
        let converged = Instant::now();
        let mut mismatched;
        loop {
            mismatched = self.mismatched_devices(&compared, &ledgers).await?;
            if mismatched.is_empty() || converged.elapsed() > converge_limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (id, why) in mismatched.iter().take(5) {
            progress(format!("  device {id} differs from its ledger: {why}"));
        }
        self.supervising.store(false, Ordering::SeqCst);
        let line = self.account(test, &compared, mismatched.len(), &ledgers).await?;
        if !line.is_clean() {
            // What each replica did last is what tells a lost leader from a slow one.
            for (i, replica) in self.replicas.iter().enumerate() {
                let log = replica.log_text().unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                progress(format!("  replica {i} log, last lines:\n{}", tail.join("\n")));
            }
        }
        println!("{line}");
        Ok(line)
    }

    /// (requests now terminal or deleted after a terminal status, requests in total).
    async fn terminal_count(&self) -> (usize, usize) {
        let made = lock(&self.made).clone();
        let current: HashMap<String, Option<RebootPhase>> =
            match self.requests.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().map(|r| (r.name_any(), bulk::phase(r))).collect(),
                Err(_) => return (0, made.len()),
            };
        let seen = lock(&self.seen);
        let done = made
            .keys()
            .filter(|name| match current.get(*name) {
                Some(phase) => phase.is_some_and(RebootPhase::is_terminal),
                None => seen
                    .deleted
                    .get(*name)
                    .and_then(bulk::phase)
                    .is_some_and(RebootPhase::is_terminal),
            })
            .count();
        (done, made.len())
    }

    /// Devices whose status differs from their ledger, with what differs.
    async fn mismatched_devices(
        &self,
        ids: &[String],
        ledgers: &HashMap<String, Ledger>,
    ) -> Result<Vec<(String, String)>> {
        let mut current = HashMap::new();
        bulk::for_each(&self.devices, |d: &Device| {
            current.insert(d.name_any(), d.clone());
        })
        .await
        .map_err(|e| other("listing Devices", format!("{e:#}")))?;
        let mut mismatched = Vec::new();
        for id in ids {
            let why = match (current.get(id), ledgers.get(id)) {
                (Some(device), Some(ledger)) => differs(device, ledger),
                (None, _) => Some("the Device is gone".to_string()),
                (_, None) => Some("the device has no ledger".to_string()),
            };
            if let Some(why) = why {
                mismatched.push((id.clone(), why));
            }
        }
        Ok(mismatched)
    }

    async fn account(
        &self,
        test: &str,
        compared: &[String],
        mismatched: usize,
        ledgers: &HashMap<String, Ledger>,
    ) -> Result<NothingLost> {
        let made = lock(&self.made).clone();
        let deleted_devices = lock(&self.deleted_devices).clone();
        let mut current = HashMap::new();
        bulk::for_each(&self.requests, |r: &RebootRequest| {
            current.insert(r.name_any(), r.clone());
        })
        .await
        .map_err(|e| other("listing RebootRequests", format!("{e:#}")))?;
        let seen = lock(&self.seen);

        // Executions, from the devices' own ledgers.
        let mut executed_by: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut double_executions = 0;
        for (device, ledger) in ledgers {
            let mut once = HashSet::new();
            for id in &ledger.executed {
                if !once.insert(id.as_str()) {
                    double_executions += 1;
                }
                executed_by.entry(id.as_str()).or_default().push(device.as_str());
            }
        }
        let mut requests_terminal = 0;
        let mut false_successes = 0;
        for (name, request) in &made {
            let executors = executed_by.get(request.uid.as_str()).cloned().unwrap_or_default();
            if executors.iter().any(|d| *d != request.device) {
                double_executions += 1;
            }
            let executed = executors.contains(&request.device.as_str());
            let phase = match current.get(name) {
                Some(object) => bulk::phase(object),
                None => seen.deleted.get(name).and_then(bulk::phase),
            };
            let succeeded = phase == Some(RebootPhase::Succeeded);
            if succeeded && !executed {
                false_successes += 1;
            }
            let terminal = phase.is_some_and(RebootPhase::is_terminal);
            // The true outcome: Succeeded exactly when the device executed the reboot; for a
            // Device deleted meanwhile the operator cannot see the device any more, so any
            // terminal phase but a false success is true.
            let true_outcome = if deleted_devices.contains(&request.device) {
                terminal && (executed || !succeeded)
            } else {
                terminal && succeeded == executed
            };
            if true_outcome {
                requests_terminal += 1;
            } else {
                let object = current.get(name).or_else(|| seen.deleted.get(name));
                progress(format!(
                    "  request {name} (device {}, executed {executed}): {}; phases seen {:?}",
                    request.device,
                    object.map(bulk::describe_request).unwrap_or_default(),
                    seen.phases.get(name),
                ));
                match self.simulator.log_lines_about(&request.device, 30) {
                    Ok(lines) => progress(format!(
                        "  simulator log about {}:\n{}",
                        request.device,
                        lines.join("\n")
                    )),
                    Err(error) => progress(format!("  no simulator log: {error}")),
                }
            }
        }
        let phase_regressions = seen.phases.values().map(|p| phase_regressions(p)).sum::<usize>()
            + seen.positions.values().map(|p| position_regressions(p)).sum::<usize>();
        drop(seen);
        let mut intervals = Vec::new();
        let now = Timestamp::now();
        for replica in &self.replicas {
            intervals.extend(acting_intervals(&replica.log_text()?, now));
        }
        Ok(NothingLost {
            test: test.to_string(),
            devices_final: compared.len() - mismatched,
            devices: compared.len(),
            requests_terminal,
            requests: made.len(),
            double_executions,
            false_successes,
            phase_regressions,
            leader_overlap_s: overlap(&intervals).as_secs_f64(),
        })
    }
}

/// Starts one operator replica for the rig.
fn spawn_operator(
    env: &TestEnv,
    scope: &Scope,
    options: &RigOptions,
    clock_file: Option<&PathBuf>,
) -> Result<Operator> {
    let mut flags = options.operator_flags.clone();
    if options.replicas > 1 {
        flags.extend([
            "--leader-election".to_string(),
            format!("--leader-election-namespace={}", scope.namespace),
            format!("--lease-duration-seconds={}", options.lease_seconds),
        ]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut vars: Vec<(&str, OsString)> = Vec::new();
    if let Some(file) = clock_file {
        vars.push(("LD_PRELOAD", crate::tools::libfaketime()?.into_os_string()));
        vars.push(("FAKETIME_TIMESTAMP_FILE", file.clone().into_os_string()));
        // Read the offset on every call, so a step shows at once; keep the monotonic clock.
        vars.push(("FAKETIME_NO_CACHE", "1".into()));
        vars.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()));
    }
    let vars: Vec<(&str, &std::ffi::OsStr)> =
        vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    Operator::spawn_with_env(scope, env.kubeconfig(), &flags, &vars)
}

/// Restarts replicas that exited, a second later, as the kubelet would.
async fn supervise(replicas: Vec<Arc<Operator>>, running: Arc<AtomicBool>) {
    while running.load(Ordering::SeqCst) {
        for replica in &replicas {
            if let Some(status) = replica.exit_status() {
                replica.note(&format!("exited ({status})"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !running.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(error) = replica.restart() {
                    progress(format!("  cannot restart an operator replica: {error}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records every request's phases, and requests as they were when deleted.
async fn watch_requests(api: Api<RebootRequest>, seen: Arc<Mutex<Seen>>) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => {
                let phase = bulk::phase(&r);
                let mut seen = lock(&seen);
                let phases = seen.phases.entry(r.name_any()).or_default();
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
            }
            Ok(watcher::Event::Delete(r)) => {
                let mut seen = lock(&seen);
                let phase = bulk::phase(&r);
                let phases = seen.phases.entry(r.name_any()).or_default();
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
                seen.deleted.insert(r.name_any(), r);
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// Records every Device's reported positions.
async fn watch_devices(api: Api<Device>, seen: Arc<Mutex<Seen>>) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event
            && let Some(position) = d.status.as_ref().and_then(|s| s.last_reported.as_ref())
        {
            let position = (position.boot, position.seq);
            let mut seen = lock(&seen);
            let positions = seen.positions.entry(d.name_any()).or_default();
            if positions.last() != Some(&position) {
                positions.push(position);
            }
        }
    }
}

/// What differs between a Device's status and its device's ledger, if anything.
pub fn differs(device: &Device, ledger: &Ledger) -> Option<String> {
    let status = device.status.as_ref();
    let reported = status.and_then(|s| s.reported.as_ref()).map(|r| json!(r)).unwrap_or(json!({}));
    let position = status.and_then(|s| s.last_reported.as_ref()).map(|c| (c.boot, c.seq));
    let wanted_position = ledger
        .last_reported
        .map(|(b, s)| (i64::try_from(b).unwrap_or(i64::MAX), i64::try_from(s).unwrap_or(i64::MAX)));
    let wanted = Value::Object(ledger.reported.clone());
    if reported != wanted {
        return Some(format!("reported {reported} but the device last reported {wanted}"));
    }
    // A full report repeating the state (a resync) does not move the shown position, so the
    // position may lag the ledger's only within the same boot.
    match (position, wanted_position) {
        (Some(shown), Some(sent)) if shown == sent => None,
        (Some(shown), Some(sent)) if shown.0 == sent.0 && shown.1 < sent.1 => None,
        (shown, sent) => {
            Some(format!("position {shown:?} but the device's last report was {sent:?}"))
        }
    }
}

/// Backward steps in a request's phases.
pub fn phase_regressions(phases: &[Option<RebootPhase>]) -> usize {
    phases
        .windows(2)
        .filter(|w| {
            RebootPhase::rank(w[1]) < RebootPhase::rank(w[0])
                || (w[0].is_some_and(RebootPhase::is_terminal) && w[1] != w[0])
        })
        .count()
}

/// Backward steps in a Device's reported positions.
pub fn position_regressions(positions: &[(i64, i64)]) -> usize {
    positions.windows(2).filter(|w| w[1] < w[0]).count()
}

/// The times an operator acted, from its log: from `acting …` to `stopped acting`, or to what
/// the harness noted (`HARNESS killed`, `HARNESS exited`), or to `now` if it still acts.
pub fn acting_intervals(log: &str, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
    let mut intervals = Vec::new();
    let mut open: Option<Timestamp> = None;
    for line in log.lines() {
        let Some(at) = line.split_whitespace().next().and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        let starts = line.contains("acting as the leader")
            || line.contains("acting without leader election");
        let stops = line.contains("stopped acting")
            || line.contains("HARNESS killed")
            || line.contains("HARNESS exited")
            || line.contains("HARNESS restarted");
        if starts && !line.contains("stopped acting") {
            if let Some(from) = open.take() {
                intervals.push((from, at));
            }
            open = Some(at);
        } else if stops && let Some(from) = open.take() {
            intervals.push((from, at));
        }
    }
    if let Some(from) = open {
        intervals.push((from, now));
    }
    intervals
}

/// Total time during which two of `intervals` overlap.
pub fn overlap(intervals: &[(Timestamp, Timestamp)]) -> Duration {
    let mut total = Duration::ZERO;
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            let start = a.0.max(b.0);
            let end = a.1.min(b.1);
            if end > start {
                total += end.duration_since(start).unsigned_abs();
            }
        }
    }
    total
}

/// Polls `check` every 100 ms until it holds, failing after `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            return Err(other("waiting", format!("{what}: not within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn acting_intervals_come_from_the_log_and_the_harness_notes() {
        let log = "\
2026-01-01T00:00:01Z  INFO kubetwin_operator::k8s::leader: acting as the leader identity=a
2026-01-01T00:00:05Z  HARNESS killed (SIGKILL)
2026-01-01T00:00:06Z  HARNESS restarted
2026-01-01T00:00:09Z  INFO kubetwin_operator::k8s::leader: acting as the leader identity=a
2026-01-01T00:00:12Z ERROR kubetwin_operator::k8s::leader: stopped acting: lost the leader Lease reason=x
2026-01-01T00:00:20Z  INFO kubetwin_operator: acting without leader election
";
        let now = at("2026-01-01T00:00:30Z");
        assert_eq!(
            acting_intervals(log, now),
            [
                (at("2026-01-01T00:00:01Z"), at("2026-01-01T00:00:05Z")),
                (at("2026-01-01T00:00:09Z"), at("2026-01-01T00:00:12Z")),
                (at("2026-01-01T00:00:20Z"), now),
            ]
        );
    }

    #[test]
    fn overlap_adds_up_every_pairwise_intersection() {
        let i = |a: &str, b: &str| (at(a), at(b));
        let intervals = [
            i("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"),
            i("2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"),
            i("2026-01-01T00:00:18Z", "2026-01-01T00:00:30Z"),
        ];
        assert_eq!(overlap(&intervals), Duration::from_secs(2));
        assert_eq!(overlap(&intervals[..2]), Duration::ZERO, "touching is not overlapping");
    }

    #[test]
    fn backward_steps_are_counted() {
        use RebootPhase::*;
        let table: [(&[Option<RebootPhase>], usize); 4] = [
            (&[None, Some(Sent), Some(Accepted), Some(Rebooting), Some(Succeeded)], 0),
            (&[Some(Accepted), Some(Sent)], 1),
            (&[Some(Succeeded), Some(TimedOut)], 1),
            (&[Some(Sent), Some(Pending), Some(Sent), Some(Failed), Some(Succeeded)], 2),
        ];
        for (phases, wanted) in table {
            assert_eq!(phase_regressions(phases), wanted, "{phases:?}");
        }
        assert_eq!(position_regressions(&[(1, 1), (1, 5), (2, 1), (1, 9)]), 1);
    }
}
