//! Drives one [`Device`] over MQTT: boots, connections, reconnects with backoff, reboots,
//! fault injection and graceful shutdown. All decisions are the device's; this module does the
//! I/O and the waiting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubetwin_mqtt::{BrokerUrl, MqttVersion};
use kubetwin_protocol::timestamp::now_unix_millis;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::device::{Device, Effect, PubKind};
use crate::ledger::ledger_path;
use crate::mqtt::{Link, LinkEvent, LinkSpec};
use crate::pace::Pacer;

/// Largest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Settings and shared resources of the device tasks.
#[derive(Debug)]
pub struct RunContext {
    /// How every device proves who it is.
    pub identity: crate::credentials::SharedIdentity,
    /// The broker's CA bundle (PEM), for mqtts://.
    pub broker_ca: Option<Vec<u8>>,
    /// MQTT version.
    pub version: MqttVersion,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Directory of the ledgers.
    pub state_dir: PathBuf,
    /// Time offline during a reboot.
    pub boot_time: Duration,
    /// Wait before answering a request.
    pub response_delay: Duration,
    /// Telemetry interval (load mode).
    pub report_interval: Option<Duration>,
    /// Drop the connection ungracefully once after this long.
    pub offline_after: Option<Duration>,
    /// Stay offline this long after that drop.
    pub offline_for: Duration,
    /// Never come back from a reboot.
    pub crash_during_reboot: bool,
    /// Fleet-wide connection pacing.
    pub pacer: Pacer,
    /// Longest wait for a clean disconnect.
    pub close_timeout: Duration,
    /// Longest wait for a clean disconnect when the simulator stops.
    pub shutdown_close_timeout: Duration,
}

/// The device's pending timers (instants of this process's monotonic clock).
#[derive(Debug, Default)]
struct Timers {
    /// When an accepted reboot goes down.
    reboot_at: Option<Instant>,
    /// When a resync the operator asked for is due.
    resync_at: Option<Instant>,
    /// When `--offline-after` drops the connection.
    offline_at: Option<Instant>,
    /// When the running method takes its next step.
    method_at: Option<Instant>,
    /// When the firmware update takes its next step.
    firmware_at: Option<Instant>,
    /// A firmware image to download, once connected, before anything else is handled.
    download: Option<String>,
}

/// How one connection ended.
enum Outcome {
    /// The connection failed or was lost.
    Lost { connected: bool },
    /// `--offline-after` fired: drop without DISCONNECT.
    Offline,
    /// The device goes down for a reboot (offline presence already published).
    Reboot,
    /// Shutdown was requested at `requested`.
    Shutdown {
        /// When: the offline presence and the disconnect share one grace period.
        requested: Instant,
        /// The offline presence went out (or there was no session to announce it on). If
        /// not, the connection is dropped without DISCONNECT so the broker publishes the Last
        /// Will, which says the same.
        presence_sent: bool,
    },
}

/// Resolves once shutdown is requested (never, if the sender is gone without asking).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleeps for `duration`; `false` if shutdown was requested first.
async fn sleep_or_stop(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = stopped(shutdown) => false,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Wait before the next attempt after `failures` failed ones, with jitter.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.min(6));
    let base = base.min(MAX_BACKOFF);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % 1000;
    base + base.mul_f64(jitter as f64 / 2000.0)
}

fn persist(ctx: &RunContext, device: &Device) -> bool {
    match device.ledger().save(&ledger_path(&ctx.state_dir, device.id())) {
        Ok(()) => true,
        Err(e) => {
            error!(device = %device.id(), error = %e, "cannot persist ledger");
            false
        }
    }
}

/// Shutdown was requested: publishes the offline presence if connected, within half of
/// `grace` (the disconnect gets the rest).
async fn go_offline(
    device: &mut Device,
    link: &mut Link,
    connected: bool,
    grace: Duration,
) -> Outcome {
    let requested = Instant::now();
    if !connected {
        return Outcome::Shutdown { requested, presence_sent: true };
    }
    let presence_sent = match device.offline("shutdown") {
        Ok(offline) => match tokio::time::timeout(grace / 2, link.publish(&offline)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                warn!(device = %device.id(), %error, "the offline presence could not be sent at shutdown; the broker publishes the Last Will");
                false
            }
            Err(_) => {
                warn!(device = %device.id(), "the offline presence did not go out in time at shutdown; the broker publishes the Last Will");
                false
            }
        },
        Err(error) => {
            error!(device = %device.id(), %error, "cannot encode the offline presence; the broker publishes the Last Will");
            false
        }
    };
    Outcome::Shutdown { requested, presence_sent }
}

/// Runs one device until shutdown: boots it, keeps it connected and executes its effects.
pub async fn run_device(
    mut device: Device,
    broker: BrokerUrl,
    ctx: Arc<RunContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let security = match ctx.identity.security(device.id(), ctx.broker_ca.as_deref()) {
        Ok(security) => security,
        Err(error) => {
            error!(device = %device.id(), %error, "cannot set up the device's credentials; the device stops");
            return;
        }
    };
    let spec = LinkSpec {
        broker,
        client_id: device.id().to_owned(),
        version: ctx.version,
        keep_alive: ctx.keep_alive,
        subscriptions: device.subscriptions(),
        security,
    };
    let mut timers = Timers {
        offline_at: ctx.offline_after.map(|after| Instant::now() + after),
        ..Timers::default()
    };
    let mut failures = 0u32;
    device.start_boot(now_unix_millis());
    persist(&ctx, &device);
    debug!(device = %device.id(), boot = device.boot(), "booted");
    loop {
        tokio::select! {
            () = ctx.pacer.wait() => {}
            () = stopped(&mut shutdown) => return,
        }
        let will = match device.will() {
            Ok(will) => will,
            Err(error) => {
                error!(device = %device.id(), %error, "cannot encode the Last Will; the device stops");
                return;
            }
        };
        let mut link = Link::open(&spec, &will);
        let outcome = serve(&mut device, &mut link, &ctx, &mut shutdown, &mut timers).await;
        match outcome {
            Outcome::Shutdown { presence_sent: false, .. } => {
                link.drop_ungracefully();
                persist(&ctx, &device);
                debug!(device = %device.id(), "stopped without DISCONNECT (the Last Will says offline)");
                return;
            }
            Outcome::Shutdown { requested, presence_sent: true } => {
                // A whole fleet stops at once: give the disconnect what is left of the grace
                // period, and say so when the last messages may have been lost.
                let left = ctx.shutdown_close_timeout.saturating_sub(requested.elapsed());
                if !link.close(left).await {
                    warn!(device = %device.id(), "no clean disconnect at shutdown: the last messages may be lost (the broker publishes the Last Will)");
                }
                persist(&ctx, &device);
                debug!(device = %device.id(), "stopped");
                return;
            }
            Outcome::Lost { connected } => {
                drop(link);
                if connected {
                    device.next_connection();
                    failures = 0;
                } else {
                    failures = failures.saturating_add(1);
                }
                if !sleep_or_stop(backoff(failures), &mut shutdown).await {
                    return;
                }
            }
            Outcome::Offline => {
                link.drop_ungracefully();
                info!(device = %device.id(), boot = device.boot(), conn = device.conn(), offline_for = ?ctx.offline_for, "dropped connection without DISCONNECT");
                device.next_connection();
                if !sleep_or_stop(ctx.offline_for, &mut shutdown).await {
                    return;
                }
            }
            Outcome::Reboot => {
                link.close(ctx.close_timeout).await;
                timers.reboot_at = None;
                info!(device = %device.id(), boot = device.boot(), "disconnected for reboot");
                if ctx.crash_during_reboot {
                    warn!(device = %device.id(), "crashed during reboot (--crash-during-reboot): staying down");
                    stopped(&mut shutdown).await;
                    return;
                }
                if !sleep_or_stop(ctx.boot_time, &mut shutdown).await {
                    return;
                }
                timers.method_at = None;
                timers.firmware_at = None;
                device.start_boot(now_unix_millis());
                persist(&ctx, &device);
                info!(device = %device.id(), boot = device.boot(), "booted after reboot");
            }
        }
    }
}

/// Executes effects in order; `Err` if the link is gone.
///
/// A publication that fails means the connection is gone: the publications after it are
/// skipped (what they carried comes back by the resync of the next connection, as answers
/// and reports are in the ledger), but every other effect still runs. A reboot accepted just
/// before the broker went away must still be scheduled, or the device would hold an accepted
/// reboot it never carries out.
async fn apply(
    effects: Vec<Effect>,
    device: &Device,
    link: &mut Link,
    ctx: &RunContext,
    timers: &mut Timers,
    mut response_delay: Duration,
) -> Result<(), ()> {
    let mut link_lost = false;
    for effect in effects {
        match effect {
            Effect::Persist => {
                if !persist(ctx, device) {
                    // Never publish what could not be recorded (e.g. an Accepted).
                    return Ok(());
                }
            }
            Effect::Publish(publication) => {
                if link_lost {
                    continue;
                }
                if publication.kind == PubKind::Response && !response_delay.is_zero() {
                    link.serve_while(tokio::time::sleep(response_delay)).await;
                    response_delay = Duration::ZERO;
                }
                debug!(device = %device.id(), topic = %publication.topic, kind = ?publication.kind, "publish");
                if let Err(e) = link.publish(&publication).await {
                    warn!(device = %device.id(), error = %e, kind = ?publication.kind, "publish failed: the connection is gone");
                    link_lost = true;
                }
            }
            Effect::Unpublishable(error) => {
                error!(device = %device.id(), %error, "a message could not be encoded and was not published");
            }
            Effect::ScheduleReboot { delay } => timers.reboot_at = Some(Instant::now() + delay),
            Effect::ScheduleResync { delay } => timers.resync_at = Some(Instant::now() + delay),
            Effect::ScheduleMethodStep { delay } => {
                timers.method_at = Some(Instant::now() + delay);
            }
            Effect::ScheduleFirmwareStep { delay } => {
                timers.firmware_at = Some(Instant::now() + delay);
            }
            Effect::Download { url } => timers.download = Some(url),
        }
    }
    if link_lost { Err(()) } else { Ok(()) }
}

/// Serves one connection until it ends.
async fn serve(
    device: &mut Device,
    link: &mut Link,
    ctx: &RunContext,
    shutdown: &mut watch::Receiver<bool>,
    timers: &mut Timers,
) -> Outcome {
    let mut connected = false;
    let mut telemetry = ctx.report_interval.map(|every| {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    loop {
        let reboot_deadline = timers.reboot_at.filter(|_| connected);
        let resync_deadline = timers.resync_at.filter(|_| connected);
        let offline_deadline = timers.offline_at.filter(|_| connected);
        let method_deadline = timers.method_at.filter(|_| connected);
        let firmware_deadline = timers.firmware_at.filter(|_| connected);
        // Shutdown first: a task that wakes late (10,000 devices stop at once) finds its timers
        // due too, and a report sent after the stop may never get out before the disconnect.
        if *shutdown.borrow() {
            return go_offline(device, link, connected, ctx.shutdown_close_timeout).await;
        }
        if let Some(url) = timers.download.take_if(|_| connected) {
            debug!(device = %device.id(), %url, "downloading firmware");
            // Boxed: only a device that downloads carries the HTTP client's state.
            let download = Box::pin(crate::download::fetch(&url));
            let finished = link
                .serve_while(async {
                    tokio::select! {
                        result = download => Some(result),
                        () = stopped(shutdown) => None,
                    }
                })
                .await;
            let Some(result) = finished else {
                return go_offline(device, link, connected, ctx.shutdown_close_timeout).await;
            };
            let effects = device.download_finished(result);
            if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                return Outcome::Lost { connected };
            }
            continue;
        }
        tokio::select! {
            // Biased: shutdown, then what the device was sent (deferred events first), then
            // its timers; an event that waited behind a timer could be dropped with the link.
            biased;
            () = stopped(shutdown) => {
                return go_offline(device, link, connected, ctx.shutdown_close_timeout).await;
            }
            event = link.next() => match event {
                Some(LinkEvent::Connected { session_present }) => {
                    debug!(device = %device.id(), boot = device.boot(), conn = device.conn(), session_present, "connected");
                    connected = true;
                    let effects = device.on_connected();
                    if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                        return Outcome::Lost { connected };
                    }
                }
                Some(LinkEvent::Message(msg)) => {
                    debug!(device = %device.id(), topic = %msg.topic, bytes = msg.payload.len(), "message");
                    let effects = device.handle(&msg, now_unix_millis());
                    if apply(effects, device, link, ctx, timers, ctx.response_delay).await.is_err() {
                        return Outcome::Lost { connected };
                    }
                }
                Some(LinkEvent::Down(reason)) => {
                    if connected {
                        warn!(device = %device.id(), boot = device.boot(), conn = device.conn(), %reason, "connection lost");
                    } else {
                        debug!(device = %device.id(), %reason, "connection failed");
                    }
                    return Outcome::Lost { connected };
                }
                Some(LinkEvent::Closed) | None => return Outcome::Lost { connected },
            },
            () = sleep_until_opt(reboot_deadline), if reboot_deadline.is_some() => {
                let effects = device.begin_reboot();
                if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                    return Outcome::Lost { connected };
                }
                return Outcome::Reboot;
            }
            () = sleep_until_opt(resync_deadline), if resync_deadline.is_some() => {
                timers.resync_at = None;
                let effects = device.resync_due();
                if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                    return Outcome::Lost { connected };
                }
            }
            () = sleep_until_opt(method_deadline), if method_deadline.is_some() => {
                timers.method_at = None;
                let effects = device.method_step_due();
                if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                    return Outcome::Lost { connected };
                }
            }
            () = sleep_until_opt(firmware_deadline), if firmware_deadline.is_some() => {
                timers.firmware_at = None;
                let effects = device.firmware_step_due();
                if apply(effects, device, link, ctx, timers, Duration::ZERO).await.is_err() {
                    return Outcome::Lost { connected };
                }
            }
            () = sleep_until_opt(offline_deadline), if offline_deadline.is_some() => {
                timers.offline_at = None;
                return Outcome::Offline;
            }
            () = tick(&mut telemetry), if connected && telemetry.is_some() => {
                match device.telemetry() {
                    Ok(publication) => {
                        if link.publish(&publication).await.is_err() {
                            return Outcome::Lost { connected };
                        }
                    }
                    Err(error) => error!(device = %device.id(), %error, "cannot encode a telemetry patch"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context for one device on `broker` with its ledger in `state_dir`.
    fn context(state_dir: PathBuf) -> RunContext {
        RunContext {
            identity: Arc::new(crate::credentials::DeviceIdentity::Anonymous),
            broker_ca: None,
            version: MqttVersion::V5,
            keep_alive: Duration::from_secs(30),
            state_dir,
            boot_time: Duration::from_secs(1),
            response_delay: Duration::ZERO,
            report_interval: None,
            offline_after: None,
            offline_for: Duration::ZERO,
            crash_during_reboot: false,
            pacer: Pacer::new(1000.0),
            close_timeout: Duration::from_secs(1),
            shutdown_close_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_reboot_accepted_as_the_connection_dies_is_still_scheduled() {
        // A port nothing listens on: the connection fails, as when the broker is killed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ctx = context(dir.path().to_path_buf());
        let shared = Arc::new(crate::device::Shared {
            topics: kubetwin_protocol::Topics::default(),
            codec: kubetwin_protocol::Codec::default(),
            firmware: "1.0.0".into(),
            mqtt: MqttVersion::V5,
            faults: crate::config::Faults::default(),
        });
        let mut device = Device::new("dev-1", shared, crate::ledger::Ledger::default());
        device.start_boot(now_unix_millis());
        let spec = LinkSpec {
            broker: BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).expect("a broker URL"),
            client_id: device.id().to_owned(),
            version: MqttVersion::V5,
            keep_alive: Duration::from_secs(30),
            subscriptions: device.subscriptions(),
            security: ctx.identity.security(device.id(), None).expect("anonymous security"),
        };
        let mut link = Link::open(&spec, &device.will().expect("a will"));
        while !matches!(link.next().await, Some(LinkEvent::Down(_) | LinkEvent::Closed) | None) {}

        // What accepting a reboot asks for: a publication (the answer; any other fails the
        // same way on a dead link), then the reboot's timer.
        let publication = device.offline("reboot").expect("a publication");
        let effects = vec![
            Effect::Publish(publication),
            Effect::ScheduleReboot { delay: Duration::from_secs(5) },
        ];
        let mut timers = Timers::default();
        let result = apply(effects, &device, &mut link, &ctx, &mut timers, Duration::ZERO).await;

        assert_eq!(result, Err(()), "the lost connection is reported");
        assert!(timers.reboot_at.is_some(), "the reboot is scheduled although the answer was lost");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(500));
        assert!(backoff(0) < Duration::from_millis(750));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(50) >= MAX_BACKOFF);
        assert!(backoff(50) <= MAX_BACKOFF.mul_f64(1.5));
    }
}
