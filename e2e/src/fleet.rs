//! kubetwin's own processes in a test: the operator and the device simulator, each scoped to
//! one test namespace and topic root.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::{
    broker::{Broker, BrokerSetup, Login},
    env::TestEnv,
    error::{Error, Result, io_context},
    process::ManagedProcess,
    tools,
};

/// Path of a binary of this workspace (built by `cargo build --workspace --bins`; with
/// `KUBETWIN_BIN_PROFILE=release`, by `cargo build --release`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools::repo_root().join("target"));
    let profile = std::env::var("KUBETWIN_BIN_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(profile).join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool(format!(
            "{} not found: build it with `cargo build --workspace --bins` (make build)",
            path.display()
        )))
    }
}

/// Settings shared by the operator and the simulator of one test, and the test's own broker.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Namespace the operator watches and the Devices live in.
    pub namespace: String,
    /// MQTT topic root, unique per test.
    pub topic_root: String,
    /// Folder for logs and simulator state.
    pub dir: PathBuf,
    /// The test's mosquitto: per-device identity and topic ACLs, as the chart configures it.
    pub broker: Arc<Broker>,
}

impl Scope {
    /// A scope for `namespace` with its folder under the environment's folder and its own
    /// broker with the default setup.
    pub async fn new(env: &TestEnv, namespace: &str) -> Result<Self> {
        Self::with_broker(env, namespace, |_, _| {}).await
    }

    /// Like [`Scope::new`], with the broker setup changed by `adjust` (given the setup and the
    /// namespace) first.
    pub async fn with_broker(
        env: &TestEnv,
        namespace: &str,
        adjust: impl FnOnce(&mut BrokerSetup, &str),
    ) -> Result<Self> {
        let dir = env.dir().join("scopes").join(namespace);
        std::fs::create_dir_all(&dir).map_err(io_context(format!("creating {}", dir.display())))?;
        let topic_root = format!("kt/{namespace}");
        let mut setup = BrokerSetup::new(&topic_root);
        adjust(&mut setup, namespace);
        let broker = Broker::start(&dir.join("broker"), setup).await?;
        Ok(Self { namespace: namespace.to_string(), topic_root, dir, broker: Arc::new(broker) })
    }

    /// The default device id of Device `name` in this namespace.
    pub fn device_id(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }
}

/// A running operator process.
#[derive(Debug)]
pub struct Operator {
    process: ManagedProcess,
    /// Address of its health and metrics endpoints.
    pub http_addr: String,
}

impl Operator {
    /// Starts `kubetwin-operator` for `scope` against `env`, with `extra` flags, and waits
    /// until it reports ready (caches synced, MQTT connected).
    pub async fn start(env: &TestEnv, scope: &Scope, extra: &[&str]) -> Result<Self> {
        Self::start_as(scope, env.kubeconfig(), extra).await
    }

    /// Like [`Operator::start`], authenticated through `kubeconfig` (for example as the Helm
    /// chart's ServiceAccount).
    pub async fn start_as(scope: &Scope, kubeconfig: &Path, extra: &[&str]) -> Result<Self> {
        let operator = Self::spawn(scope, kubeconfig, extra)?;
        operator.wait_ready(Duration::from_secs(60)).await?;
        Ok(operator)
    }

    /// Starts the operator without waiting for it to become ready (a standby replica under
    /// leader election reports ready at once; see `/readyz`).
    pub fn spawn(scope: &Scope, kubeconfig: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn_as(scope, kubeconfig, extra, "info,kubetwin_operator=debug")
    }

    /// Starts the operator against another broker (`broker_url`, with `extra` flags such as
    /// TLS files) and waits up to `ready_within` until it is ready.
    pub async fn start_with_broker(
        env: &TestEnv,
        scope: &Scope,
        broker_url: &str,
        extra: &[&str],
        ready_within: Duration,
    ) -> Result<Self> {
        let operator = Self::spawn_full(scope, env.kubeconfig(), Some(broker_url), extra, "info")?;
        operator.wait_ready(ready_within).await?;
        Ok(operator)
    }

    /// Starts the operator against another broker without waiting for it to become ready.
    pub fn spawn_with_broker(
        env: &TestEnv,
        scope: &Scope,
        broker_url: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn_full(scope, env.kubeconfig(), Some(broker_url), extra, "info")
    }

    /// Starts the operator (not waiting) with `kubeconfig`, `extra` flags and `RUST_LOG`.
    fn spawn_as(scope: &Scope, kubeconfig: &Path, extra: &[&str], rust_log: &str) -> Result<Self> {
        Self::spawn_full(scope, kubeconfig, None, extra, rust_log)
    }

    /// Starts the operator (not waiting) with `kubeconfig`, `extra` flags and extra
    /// environment variables (for example libfaketime's, to step its clock).
    pub fn spawn_with_env(
        scope: &Scope,
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        Self::spawn_inner(
            scope,
            kubeconfig,
            None,
            extra,
            "info,kubetwin_operator=debug,kubetwin_operator::methods::controller=trace",
            env,
        )
    }

    fn spawn_full(
        scope: &Scope,
        kubeconfig: &Path,
        broker_url: Option<&str>,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<Self> {
        Self::spawn_inner(scope, kubeconfig, broker_url, extra, rust_log, &[])
    }

    fn spawn_inner(
        scope: &Scope,
        kubeconfig: &Path,
        broker_url: Option<&str>,
        extra: &[&str],
        rust_log: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let binary = workspace_binary("kubetwin-operator")?;
        let port = crate::process::free_port()?;
        let http_addr = format!("127.0.0.1:{port}");
        let mut args = match broker_url {
            Some(url) => vec![format!("--broker-url={url}")],
            None => scope.broker.operator_flags(),
        };
        args.extend([
            format!("--topic-root={}", scope.topic_root),
            format!("--watch-namespace={}", scope.namespace),
            format!("--mqtt-client-id=kubetwin-operator-{}", scope.namespace),
            format!("--http-addr={http_addr}"),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = unique_log(&scope.dir, "operator");
        let mut vars =
            vec![("KUBECONFIG", kubeconfig.as_os_str()), ("RUST_LOG", rust_log.as_ref())];
        vars.extend_from_slice(env);
        let process =
            ManagedProcess::spawn_with_env("kubetwin-operator", &binary, &args, &log, &vars)?;
        Ok(Self { process, http_addr })
    }

    /// Starts the operator again with the same flags (as Kubernetes restarts a container),
    /// appending to the same log.
    pub fn restart(&self) -> Result<()> {
        self.note("restarted");
        self.process.restart()
    }

    /// The operator's exit status, if it has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.process.exit_status()
    }

    /// Sends SIGTERM (a graceful stop, as in a rolling update) without waiting.
    pub fn terminate(&self) -> Result<()> {
        self.note("sent SIGTERM");
        self.process.signal(crate::process::Signal::Term)
    }

    /// Appends `HARNESS <what>` with the time to the operator's log, so the log tells what the
    /// harness did to the process and when (for example a SIGKILL, which the process cannot
    /// log itself).
    pub fn note(&self, what: &str) {
        use std::io::Write as _;
        let now = k8s_openapi::jiff::Timestamp::now();
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(self.log()) {
            let _ = writeln!(log, "{now}  HARNESS {what}");
        }
    }

    /// Waits until this operator leads and is ready (`/readyz` says `ok`, not standby).
    pub async fn wait_leading(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if self.readyz().await.is_ok_and(|(code, body)| code == 200 && body == "ok") {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(self.process.startup_error(format!("not leading after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz` body, or an error when the endpoint does not answer.
    pub async fn readyz(&self) -> Result<(u16, String)> {
        http_get(&self.http_addr, "/readyz").await
    }

    /// Path of the operator's log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if http_get(&self.http_addr, "/readyz").await.is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(self
                    .process
                    .startup_error(format!("/readyz not ok after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `/readyz` answers with a status and body that `wanted` accepts, and
    /// returns them.
    pub async fn wait_readyz(
        &self,
        timeout: Duration,
        wanted: impl Fn(u16, &str) -> bool,
    ) -> Result<(u16, String)> {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            self.process.check_running()?;
            if let Ok((code, body)) = self.readyz().await {
                if wanted(code, &body) {
                    return Ok((code, body));
                }
                last = Some((code, body));
            }
            if std::time::Instant::now() > deadline {
                return Err(self.process.startup_error(format!(
                    "/readyz did not answer as expected within {timeout:?}; last: {last:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> Result<String> {
        std::fs::read_to_string(self.log())
            .map_err(io_context(format!("reading {}", self.log().display())))
    }

    /// Waits until `/metrics` shows a sample of `name` that `wanted` accepts, and returns it.
    pub async fn wait_metric(
        &self,
        name: &str,
        timeout: Duration,
        wanted: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if let Some(value) = self.metrics().await.ok().and_then(|m| metric_value(&m, name))
                && wanted(value)
            {
                return Ok(value);
            }
            if std::time::Instant::now() > deadline {
                let last = self.metrics().await.ok().and_then(|m| metric_value(&m, name));
                return Err(self.process.startup_error(format!(
                    "{name} did not reach the expected value within {timeout:?}; last: {last:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the operator is idle: every MQTT message it received is applied, no status
    /// waits for its write and none is in flight. A positive barrier for "nothing more will
    /// happen" checks.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let gauges = [
            "kubetwin_mqtt_inbound_queue_depth",
            "kubetwin_status_queue_depth",
            "kubetwin_status_writes_in_flight",
        ];
        loop {
            self.process.check_running()?;
            let text = self.metrics().await.unwrap_or_default();
            if gauges.iter().all(|g| metric_value(&text, g) == Some(0.0)) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                // Which gauge kept it busy says where to look.
                let busy: Vec<String> =
                    gauges.iter().map(|g| format!("{g}={:?}", metric_value(&text, g))).collect();
                return Err(self
                    .process
                    .startup_error(format!("not idle after {timeout:?} ({})", busy.join(", "))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        http_get(&self.http_addr, "/metrics").await.map(|(_, body)| body)
    }

    /// Process id of the operator.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.process.check_running().is_ok()
    }

    /// Kills the operator with SIGKILL, as a crash would.
    pub fn kill(&self) {
        self.process.kill();
        self.note("killed (SIGKILL)");
    }

    /// Like [`Operator::spawn`] with the admin kubeconfig, logging with the `RUST_LOG` filter
    /// `rust_log` (benchmarks use `info`: debug lines at thousands of devices cost CPU).
    pub fn spawn_with_log(
        env: &TestEnv,
        scope: &Scope,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<Self> {
        Self::spawn_as(scope, env.kubeconfig(), extra, rust_log)
    }

    /// The operator's exit, if it has exited (with the end of its log), else `Ok`.
    pub fn check_running(&self) -> Result<()> {
        self.process.check_running()
    }
}

/// A running device simulator.
#[derive(Debug)]
pub struct Simulator {
    process: ManagedProcess,
    /// Folder with the devices' ledgers.
    pub state_dir: PathBuf,
}

impl Simulator {
    /// Starts `kubetwin-sim` with the devices `ids` (and `extra` flags) for `scope`.
    pub fn start(env: &TestEnv, scope: &Scope, ids: &[String], extra: &[&str]) -> Result<Self> {
        Self::start_as(env, scope, ids, Login::Certificates, extra)
    }

    /// Starts `kubetwin-sim` for `ids` logging in as `login` says.
    pub fn start_as(
        env: &TestEnv,
        scope: &Scope,
        ids: &[String],
        login: Login,
        extra: &[&str],
    ) -> Result<Self> {
        let mut devices = vec![format!("--ids={}", ids.join(","))];
        devices.extend(scope.broker.simulator_flags(login));
        Self::spawn(env, scope, devices, extra, "info")
    }

    fn spawn(
        env: &TestEnv,
        scope: &Scope,
        devices: Vec<String>,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<Self> {
        let binary = workspace_binary("kubetwin-sim")?;
        let state_dir = scope.dir.join("sim-state");
        let mut args = vec![
            format!("--topic-root={}", scope.topic_root),
            format!("--state-dir={}", state_dir.display()),
        ];
        args.extend(devices);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = unique_log(&scope.dir, "sim");
        let process = ManagedProcess::spawn_with_env(
            "kubetwin-sim",
            &binary,
            &args,
            &log,
            &[("KUBECONFIG", env.kubeconfig().as_os_str()), ("RUST_LOG", rust_log.as_ref())],
        )?;
        Ok(Self { process, state_dir })
    }

    /// The request ids `device_id` executed, from its ledger.
    pub fn executed(&self, device_id: &str) -> Result<Vec<String>> {
        let ledger = kubetwin_device_sim::ledger::read_ledger(&self.state_dir, device_id).map_err(
            |error| Error::Io {
                context: format!("reading the ledger of {device_id}"),
                source: std::io::Error::other(error.to_string()),
            },
        )?;
        Ok(ledger.map(|l| l.executed).unwrap_or_default())
    }

    /// The last `max` lines of the simulator's log about `device_id` (its `device=` field):
    /// what a test prints when that device's outcome is wrong.
    pub fn log_lines_about(&self, device_id: &str, max: usize) -> Result<Vec<String>> {
        let path = self.process.log();
        let text = std::fs::read_to_string(path)
            .map_err(io_context(format!("reading {}", path.display())))?;
        let field = format!("device={device_id}");
        let lines: Vec<String> = text
            .lines()
            .filter(|line| line.split_whitespace().any(|word| word == field))
            .map(str::to_owned)
            .collect();
        Ok(lines[lines.len().saturating_sub(max)..].to_vec())
    }

    /// Process id of the simulator.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the simulator with SIGKILL.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts `kubetwin-sim` with `count` devices named `{id_prefix}-{i}` (`--count`,
    /// `--id-prefix`: no long id list on the command line) logging in as `login` says, and
    /// `extra` flags for `scope`, logging at `warn`.
    pub fn start_fleet(
        env: &TestEnv,
        scope: &Scope,
        count: usize,
        id_prefix: &str,
        login: Login,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_fleet_logging(env, scope, count, id_prefix, login, extra, "warn")
    }

    /// Like [`Simulator::start_fleet`], logging with the `RUST_LOG` filter `rust_log` (`info`
    /// names every request a device accepts and every reboot: what a fault test prints for a
    /// device whose request ended wrong).
    pub fn start_fleet_logging(
        env: &TestEnv,
        scope: &Scope,
        count: usize,
        id_prefix: &str,
        login: Login,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<Self> {
        let mut devices = vec![format!("--count={count}"), format!("--id-prefix={id_prefix}")];
        devices.extend(scope.broker.simulator_flags(login));
        Self::spawn(env, scope, devices, extra, rust_log)
    }

    /// The simulator's exit, if it has exited (with the end of its log), else `Ok`.
    pub fn check_running(&self) -> Result<()> {
        self.process.check_running()
    }

    /// The ledger of `device_id` (`None` if the device never ran).
    pub fn ledger(&self, device_id: &str) -> Result<Option<kubetwin_device_sim::Ledger>> {
        kubetwin_device_sim::ledger::read_ledger(&self.state_dir, device_id).map_err(|error| {
            Error::Io {
                context: format!("reading the ledger of {device_id}"),
                source: std::io::Error::other(error.to_string()),
            }
        })
    }

    /// Stops the simulator gracefully (SIGTERM: every device publishes its offline presence,
    /// disconnects and saves its ledger) and waits up to `timeout` for it to exit. Fails when
    /// it does not exit in time (it is then killed) or exits with an error.
    pub async fn terminate(&self, timeout: Duration) -> Result<()> {
        // Our own child, not reaped before we wait: the pid is still its own.
        let _ = crate::process::signal(self.pid(), crate::process::Signal::Term);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.process.check_running() {
                Ok(()) if std::time::Instant::now() > deadline => {
                    self.process.kill();
                    return Err(self
                        .process
                        .startup_error(format!("did not stop within {timeout:?} of SIGTERM")));
                }
                Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(Error::Startup { reason, .. }) if reason.ends_with("exit status: 0") => {
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn unique_log(dir: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|i| dir.join(format!("{name}-{i}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{name}.log")))
}

/// The value of one sample (`name` with its labels, as written) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A plain HTTP/1.1 GET on a loopback address; returns status code and body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(io_context(format!("connecting to {addr}")))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io_context("sending an HTTP request"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io_context("reading an HTTP response"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}
