//! B6 identity: what per-device credentials cost, against connecting without any.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kubetwin_e2e::{
    broker::{BrokerSetup, Identity, Login},
    fleet::{Scope, Simulator},
    mqtt::TestClient,
};
use kubetwin_mqtt::Security;
use serde_json::json;

use super::{
    Bench, cluster, progress,
    report::{Row, ScenarioReport, Unit, thousands},
};

/// Title of the scenario.
pub const TITLE: &str = "identity";
/// What the scenario measures.
pub const WHAT: &str = "The cost of per-device identity. D simulated devices connect to a \
    broker configured like the chart's (password file or client certificates, client id forced \
    to the identity, topic ACL). Measured: (1) generating the broker's password file for D \
    devices in this process (mosquitto's PBKDF2-SHA512 hash, as `mosquitto_passwd` writes it); \
    (2) the time from starting the simulator until the broker counts every device connected \
    (its `$SYS/broker/clients/connected`, published every second), with passwords, and with client certificates the simulator mints \
    from the broker's CA at start (TLS handshakes included). The floor is the same D devices \
    connecting without credentials to an anonymous broker, in the same run (before and after \
    the others; the lower of the two). No operator runs; \
    the simulator's connection pacing is lifted so the broker and the credentials are the \
    limit.";

/// Identity of the subscriber that counts connected clients.
const OBSERVER: &str = "kubetwin-bench-observer";
/// The broker's statistic of connected clients.
const CONNECTED: &str = "$SYS/broker/clients/connected";
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// How the devices of one run log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Anonymous,
    Password,
    Certificate,
}

/// Runs B6.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let n = bench.sizes.b6_devices;
    let ids = cluster::device_ids("b6.d", 0..n);
    progress(format!("B6: password file for {n} devices"));
    let started = Instant::now();
    let lines =
        kubetwin_device_sim::credentials::device_password_lines(b"kubetwin-bench-b6-secret", &ids)
            .context("hashing passwords")?;
    let generate = started.elapsed();
    anyhow::ensure!(lines.lines().count() == n, "one password line per device");

    // The floor runs first and last: the first run of a fresh environment pays one-time costs
    // (page cache, allocator), and the lower of the two is the floor.
    let floor_first = connect_all(bench, n, Access::Anonymous).await?;
    let password = connect_all(bench, n, Access::Password).await?;
    let certificate = connect_all(bench, n, Access::Certificate).await?;
    let floor = floor_first.min(connect_all(bench, n, Access::Anonymous).await?);
    let secs = |d: Duration| d.as_secs_f64();
    let rows = vec![
        Row::new(
            format!("password file for {} devices", thousands(n as f64)),
            secs(generate),
            Unit::Seconds,
        ),
        Row::new(
            format!("{} devices connected, passwords", thousands(n as f64)),
            secs(password),
            Unit::Seconds,
        )
        .floor(secs(floor)),
        Row::new(
            format!("{} devices connected, client certificates", thousands(n as f64)),
            secs(certificate),
            Unit::Seconds,
        )
        .floor(secs(floor)),
    ];
    Ok(ScenarioReport {
        id: "B6".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("Devices".into(), thousands(n as f64)),
            ("Simulator flags".into(), "`--connect-rate=100000`".into()),
            ("Floor".into(), "the same devices without credentials, anonymous broker".into()),
        ],
        rows,
        raw: json!({
            "devices": n,
            "password_file_seconds": secs(generate),
            "connect_anonymous_seconds": secs(floor),
            "connect_password_seconds": secs(password),
            "connect_certificate_seconds": secs(certificate),
        }),
        error: None,
        measured_by: None,
    })
}

/// Starts `n` simulated devices logging in as `login` on a broker of their own and returns the
/// time until a subscriber saw every device online.
async fn connect_all(bench: &Bench<'_>, n: usize, access: Access) -> anyhow::Result<Duration> {
    let name = format!("b6-{}", format!("{access:?}").to_lowercase());
    let namespace = bench.env.namespace(&bench.client, &name).await.context("namespace")?;
    let prefix = format!("{}.d", namespace.name);
    let ids = cluster::device_ids(&prefix, 0..n);
    let scope = Scope::with_broker(bench.env, &namespace.name, |setup: &mut BrokerSetup, _| {
        setup.superusers = vec![OBSERVER.into()];
        match access {
            Access::Anonymous => setup.identity = Identity::AnonymousInsecure,
            Access::Password => setup.password_devices = ids.clone(),
            Access::Certificate => {}
        }
    })
    .await?;
    let observer = match access {
        Access::Anonymous => {
            TestClient::connect(&scope.broker.url(), OBSERVER, Security::default()).await?
        }
        Access::Password | Access::Certificate => {
            TestClient::with_password(&scope.broker, OBSERVER).await?
        }
    };
    // The broker's own count of connected clients (published every second): a subscriber of
    // 10,000 presences would lose most of them to its own queue limit.
    observer.subscribe(CONNECTED).await?;
    progress(format!("B6: {n} devices connecting, login {access:?}"));
    let flags = ["--connect-rate=100000"];
    let started = Instant::now();
    let simulator = match access {
        Access::Password => {
            Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Passwords, &flags)?
        }
        Access::Anonymous | Access::Certificate => {
            Simulator::start_fleet(bench.env, &scope, n, &prefix, Login::Certificates, &flags)?
        }
    };
    let deadline = Instant::now() + LIMIT;
    loop {
        simulator.check_running().map_err(|e| anyhow::anyhow!("the simulator stopped: {e}"))?;
        let connected = observer
            .received()
            .into_iter()
            .rev()
            .find(|(topic, _)| topic == CONNECTED)
            .and_then(|(_, payload)| String::from_utf8_lossy(&payload).trim().parse::<usize>().ok())
            .unwrap_or(0);
        // The observer is one of the connected clients.
        if connected > n {
            let took = started.elapsed();
            progress(format!("B6: {n} devices connected after {took:.2?} (login {access:?})"));
            simulator.terminate(Duration::from_secs(300)).await?;
            return Ok(took);
        }
        anyhow::ensure!(Instant::now() < deadline, "only {connected}/{n} devices connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
