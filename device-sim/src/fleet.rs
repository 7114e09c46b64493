//! Runs a fleet: loads every ledger, optionally creates the `Device` objects, then spawns one
//! task per device and waits for them to stop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kubetwin_protocol::{Codec, Topics};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::config::Config;
use crate::device::{Device, Shared};
use crate::ledger::read_ledger;
use crate::pace::Pacer;
use crate::runner::{RunContext, run_device};

/// Longest wait for one device's clean disconnect at a reboot.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one device's clean disconnect when the simulator stops (within the 15 s
/// the process gives the fleet).
pub const SHUTDOWN_CLOSE_TIMEOUT: Duration = Duration::from_secs(12);

/// Runs every configured device until `shutdown` turns `true`, then waits for them to publish
/// their offline presence and disconnect.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state dir {}", config.state_dir.display()))?;
    let mut devices = Vec::with_capacity(config.ids.len());
    let shared = Arc::new(Shared {
        topics: Topics::new(config.topic_root.clone()),
        codec: Codec::default(),
        firmware: config.firmware.clone(),
        mqtt: config.mqtt_version,
        faults: config.faults,
    });
    for id in &config.ids {
        let ledger = read_ledger(&config.state_dir, id)?.unwrap_or_default();
        devices.push(Device::new(id.clone(), Arc::clone(&shared), ledger));
    }
    if let Some(namespace) = &config.create_devices_in {
        crate::k8s::create_devices(namespace, &config.ids).await?;
    }
    let identity = Arc::new(config.identity.load()?);
    let broker_ca = match &config.broker_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the broker CA file {}", path.display()))?,
        ),
        None => None,
    };
    let ctx = Arc::new(RunContext {
        identity,
        broker_ca,
        version: config.mqtt_version,
        keep_alive: config.keep_alive,
        state_dir: config.state_dir.clone(),
        boot_time: config.boot_time,
        response_delay: config.response_delay,
        report_interval: config.report_interval,
        offline_after: config.offline_after,
        offline_for: config.offline_for,
        crash_during_reboot: config.faults.crash_during_reboot,
        pacer: Pacer::new(config.connect_rate),
        close_timeout: CLOSE_TIMEOUT,
        shutdown_close_timeout: SHUTDOWN_CLOSE_TIMEOUT,
    });
    let count = devices.len();
    let mut tasks = JoinSet::new();
    // Round-robin over the broker's hosts (one host alone gives ~28,000 local ports).
    let brokers = std::iter::once(&config.broker).chain(&config.other_brokers).cycle();
    for (device, broker) in devices.into_iter().zip(brokers) {
        tasks.spawn(run_device(device, broker.clone(), Arc::clone(&ctx), shutdown.clone()));
    }
    info!(
        count,
        broker = %config.broker,
        other_hosts = config.other_brokers.len(),
        mqtt = ?config.mqtt_version,
        "fleet started"
    );
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            error!(error = %e, "device task failed");
        }
    }
    info!(count, "fleet stopped");
    Ok(())
}
