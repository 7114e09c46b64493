//! B3 memory: operator RSS with many Device objects, synced and idle.

use std::time::Duration;

use kube::Api;
use kubetwin_api::Device;
use serde_json::json;

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
    (VmRSS from /proc) right after it reports ready is the base. Device objects are then \
    created by parallel server-side apply (no simulator, so the devices stay offline) up to \
    each size in turn. At each size the benchmark waits until every Device has a status for its \
    generation and the operator is idle (status queue empty, no write for 5 s), then reads the \
    RSS again. Per device = (RSS − base) / N. The operator runs with a large write budget so \
    that the first statuses are written quickly.";

/// Concurrency of the creates (the API server is the limit, not the client).
const CREATE_CONCURRENCY: usize = 128;
/// Upper bound of each wait (a hang guard).
const LIMIT: Duration = Duration::from_secs(60 * 60);

/// Runs B3.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let scope = bench.scope("b3", 0).await?;
    let devices: Api<Device> = Api::namespaced(bench.client.clone(), &scope.namespace);
    let prefix = format!("{}.d", scope.namespace);
    let operator = ops::start_operator(bench.env, &scope, &LARGE_BUDGET).await?;
    let dog = Watchdog::operator(&operator);
    let base = rss_kib(operator.pid())? as f64;
    progress(format!("B3: base RSS {:.1} MiB", base / 1024.0));
    let mut rows = vec![
        Row::new("base RSS (ready, empty namespace)", base / 1024.0, Unit::MiB)
            .goal(Goal::value_at_most(40.0, Unit::MiB)),
    ];
    let mut raw = vec![];
    let mut created = 0;
    for &n in &bench.sizes.b3_devices {
        progress(format!("B3: {} Devices", thousands(n as f64)));
        cluster::apply_devices(
            &devices,
            cluster::device_ids(&prefix, created..n.max(created)),
            CREATE_CONCURRENCY,
        )
        .await?;
        created = created.max(n);
        wait_synced(&devices, &operator, dog, n).await?;
        let rss = rss_kib(operator.pid())? as f64;
        let per_device = (rss - base) / n as f64;
        progress(format!(
            "B3: {} Devices: RSS {:.1} MiB, {per_device:.2} KiB per Device",
            thousands(n as f64),
            rss / 1024.0
        ));
        rows.push(Row::new(
            format!("RSS with {} Devices", thousands(n as f64)),
            rss / 1024.0,
            Unit::MiB,
        ));
        rows.push(
            Row::new(
                format!("per Device above base, N = {}", thousands(n as f64)),
                per_device,
                Unit::KiB,
            )
            .goal(Goal::value_at_most(1.5, Unit::KiB)),
        );
        raw.push(json!({"devices": n, "rss_kib": rss, "per_device_kib": per_device}));
    }
    operator.check_running().map_err(|e| anyhow::anyhow!("the operator crashed: {e}"))?;
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
        ],
        rows,
        raw: json!({"base_rss_kib": base, "steps": raw}),
        error: None,
    })
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
