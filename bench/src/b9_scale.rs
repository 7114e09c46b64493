//! B9 scale: 100,000 simulated devices in one simulator process on this machine, connected,
//! then all rebooted by one DeviceJob.

use serde_json::json;

use super::{
    Bench,
    b7_job::{self, JobRun, OPERATOR_FLAGS, SIM_FLAGS},
    report::{Goal, Row, ScenarioReport, Unit, thousands},
};

/// Title of the scenario.
pub const TITLE: &str = "100,000 devices";
/// What the scenario measures.
pub const WHAT: &str = "N Devices are applied and N simulated devices (100,000, or the largest \
    number the machine's open-files limit allows, which then bounds the run), all in one simulator \
    process, connect to one mosquitto (spread over several loopback addresses of the same \
    listener port: one client address reaches one broker address on ~28,000 local ports only). \
    Measured once every Device is shown Connected and the operator is idle: the time from \
    starting the simulator to the last Device Connected (the simulator paces its connections at \
    `--connect-rate`), and the resident memory of the operator, the simulator (per simulated \
    device) and mosquitto. Then one DeviceJob reboots every device under a DeviceDisruptionBudget \
    (the same job and budget as B7): wall time from the create call to the job Succeeded, \
    devices per minute and operator status writes per device. Correctness as in B7: the job \
    ends Succeeded with N succeeded, exactly one child per device, every ledger one executed \
    reboot. No floor is measured at this size (B7 has one at 10,000).";

/// Goal of the simulator's memory per simulated device.
const SIM_KIB_PER_DEVICE_GOAL: f64 = 16.0;
/// Open files kept free for everything but the devices' connections (listeners, logs, the
/// operator's and the benchmark's own clients).
const RESERVED_FILES: u64 = 1_000;

/// The largest fleet this process can run: mosquitto and the simulator hold one descriptor per
/// connection and inherit this process's limit. Returns (N, why it is below `wanted`).
fn largest_fleet(wanted: usize) -> anyhow::Result<(usize, Option<String>)> {
    let (soft, hard) = super::open_files_limit()?;
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if fits >= wanted {
        return Ok((wanted, None));
    }
    Ok((
        fits,
        Some(format!(
            "{} of the {} asked: this machine allows {} open files per process (hard limit {}; \
             raising it needs CAP_SYS_RESOURCE), and mosquitto and the simulator hold one per \
             connection ({} kept for the rest)",
            thousands(fits as f64),
            thousands(wanted as f64),
            thousands(soft as f64),
            thousands(hard as f64),
            thousands(RESERVED_FILES as f64),
        )),
    ))
}

/// Runs B9.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<ScenarioReport> {
    let (n, bounded) = largest_fleet(bench.sizes.b9_devices)?;
    if let Some(why) = &bounded {
        super::progress(format!("B9: {why}"));
    }
    let extra_hosts: Vec<String> =
        (2..=bench.sizes.b9_hosts).map(|i| format!("127.0.0.{i}")).collect();
    let run = JobRun { label: "B9", n, floor: false, extra_hosts: extra_hosts.clone() };
    let result = b7_job::fleet_job(bench, &run).await?;
    let size = thousands(n as f64);
    let per_device = |kib: f64| kib / n as f64;
    let rows = vec![
        Row::seconds(
            format!("simulator start → every Device Connected, N = {size}"),
            result.connect_time,
        ),
        Row::new("operator RSS, connected and idle", result.rss.operator / 1024.0, Unit::MiB),
        Row::new("simulator RSS", result.rss.simulator / 1024.0, Unit::MiB),
        Row::new("simulator RSS per simulated device", per_device(result.rss.simulator), Unit::KiB)
            .goal(Goal::value_at_most(SIM_KIB_PER_DEVICE_GOAL, Unit::KiB)),
        Row::new("mosquitto RSS", result.rss.broker / 1024.0, Unit::MiB),
        Row::seconds(format!("reboot DeviceJob, created → Succeeded, N = {size}"), result.wall),
        Row::new("devices per minute", result.per_minute(n), Unit::Count)
            .note("AWS IoT Jobs: at most 1,000 per minute"),
        Row::new("operator status writes per device", result.writes / n as f64, Unit::Decimal)
            .note("every kind: children, the job, Devices going offline and back"),
    ];
    let addresses = std::iter::once("127.0.0.1".to_string()).chain(extra_hosts).collect::<Vec<_>>();
    Ok(ScenarioReport {
        id: "B9".into(),
        title: TITLE.into(),
        what: WHAT.into(),
        setup: vec![
            ("devices".into(), bounded.clone().unwrap_or_else(|| thousands(n as f64))),
            ("broker addresses".into(), addresses.join(", ")),
            ("DeviceJob spec".into(), format!("`{}`", b7_job::job_spec())),
            ("DeviceDisruptionBudget spec".into(), format!("`{}`", b7_job::budget_spec())),
            ("operator flags".into(), format!("`{}`", OPERATOR_FLAGS.join(" "))),
            ("simulator flags".into(), format!("`{}`", SIM_FLAGS.join(" "))),
        ],
        rows,
        raw: json!({
            "job": result.json(n),
            "broker_addresses": addresses,
            "devices_asked": bench.sizes.b9_devices,
            "bounded_by": bounded,
        }),
        error: None,
        measured_by: None,
    })
}
