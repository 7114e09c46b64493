//! Nothing is lost under faults. Each test runs a fleet (100 devices; `make faults`: 1,000)
//! that reports every second with a reboot in flight for every device, injects one kind of
//! fault, lets the fleet finish, and prints what was lost as a `NOTHING-LOST` line: every
//! Device's status equals what its device last reported, every request ends in a terminal
//! phase with its true outcome, no device executes a request twice, no request succeeds that
//! its device never executed, no status moves backwards, and no two operators act at once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kubetwin_api::RebootPhase;
use kubetwin_e2e::{
    faults::{NothingLost, Rig, RigOptions, fleet_size},
    process::Signal,
};
use serde_json::json;

/// The request device `i` gets: reboot after 1-15 s (so reboots go on for a while, whatever
/// the fault's timing); generous timeouts, so only a real loss (not a slow machine) can end
/// one without its outcome.
fn reboot_spec(i: usize) -> serde_json::Value {
    json!({
        "delaySeconds": 1 + i % 15, "responseTimeoutSeconds": 120, "connectTimeoutSeconds": 600,
    })
}

/// [`reboot_spec`] with `ttlSecondsAfterFinished`.
fn reboot_spec_with_ttl(i: usize, ttl: u32) -> serde_json::Value {
    let mut spec = reboot_spec(i);
    spec["ttlSecondsAfterFinished"] = json!(ttl);
    spec
}

fn accepted_or_later(phase: Option<RebootPhase>) -> bool {
    matches!(phase, Some(RebootPhase::Accepted | RebootPhase::Rebooting))
        || phase.is_some_and(RebootPhase::is_terminal)
}

fn assert_nothing_lost(line: &NothingLost) {
    assert!(line.is_clean(), "something was lost: {line}");
}

async fn broker_killed_and_restarted(name: &str, persistence: bool) {
    let n = fleet_size();
    let rig =
        Rig::start(name, RigOptions { broker_persistence: persistence, ..RigOptions::new(n) })
            .await
            .unwrap();
    rig.create_requests(reboot_spec).await.unwrap();
    rig.wait_requests(Duration::from_secs(120), "accepted or later", accepted_or_later, n / 4)
        .await
        .unwrap();
    rig.scope.broker.signal(Signal::Kill).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.scope.broker.restart().await.unwrap();
    let line = rig.finish(name).await.unwrap();
    assert_nothing_lost(&line);
}

#[tokio::test]
async fn the_broker_is_killed_and_restarted_without_persistence() {
    broker_killed_and_restarted("broker-kill", false).await;
}

#[tokio::test]
async fn the_broker_is_killed_and_restarted_with_persistence() {
    broker_killed_and_restarted("broker-kill-persistent", true).await;
}

#[tokio::test]
async fn the_api_server_stops_longer_than_the_lease_and_freezes_with_two_replicas() {
    let n = fleet_size();
    let options = RigOptions {
        replicas: 2,
        lease_seconds: 8,
        private_control_plane: true,
        ..RigOptions::new(n)
    };
    let rig = Rig::start("apiserver", options).await.unwrap();
    rig.create_requests(reboot_spec).await.unwrap();
    rig.wait_requests(Duration::from_secs(120), "accepted or later", accepted_or_later, n / 4)
        .await
        .unwrap();
    // Down for longer than the Lease: the leader must stop acting before a standby can start.
    rig.env().control_plane.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(12)).await;
    rig.env().control_plane.start_apiserver().await.unwrap();
    rig.wait_leader(Duration::from_secs(120)).await.unwrap();
    // Frozen: connections stay open and nothing answers.
    rig.env().control_plane.freeze_apiserver(true).unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    rig.env().control_plane.freeze_apiserver(false).unwrap();
    let line = rig.finish("apiserver-down-and-frozen").await.unwrap();
    assert_nothing_lost(&line);
}

#[tokio::test]
async fn the_leader_is_killed_at_several_points_and_terminated() {
    let n = fleet_size();
    let options = RigOptions { replicas: 2, lease_seconds: 8, ..RigOptions::new(n) };
    let rig = Rig::start("leader-kill", options).await.unwrap();
    rig.create_requests(reboot_spec).await.unwrap();
    // 1. At once: requests pending or just sent.
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().kill();
    // 2. While devices accept.
    rig.wait_requests(Duration::from_secs(180), "accepted or later", accepted_or_later, n / 3)
        .await
        .unwrap();
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().kill();
    // 3. While they reboot and come back.
    let terminal = |p: Option<RebootPhase>| p.is_some_and(RebootPhase::is_terminal);
    rig.wait_requests(Duration::from_secs(180), "terminal", terminal, n / 3).await.unwrap();
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().kill();
    // 4. A rolling update: SIGTERM, the leader drains its writes and releases the Lease.
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().terminate().unwrap();
    let line = rig.finish("leader-kill-and-term").await.unwrap();
    assert_nothing_lost(&line);
}

#[tokio::test]
async fn what_a_full_broker_queue_drops_during_a_failover_comes_back_by_resync() {
    let n = fleet_size();
    // A queue large enough for the fleet at work and for the spread resync, but far smaller
    // than what the fleet sends while no operator is connected (mosquitto's default of 1,000
    // is like this for a few hundred devices): reports, presences and answers are dropped,
    // and only the devices' resync on the new operator session brings them back.
    let options =
        RigOptions { replicas: 2, lease_seconds: 8, broker_queue: 4 * n, ..RigOptions::new(n) };
    let rig = Rig::start("queue-overflow", options).await.unwrap();
    rig.create_requests(reboot_spec).await.unwrap();
    rig.wait_requests(Duration::from_secs(120), "accepted or later", accepted_or_later, n / 4)
        .await
        .unwrap();
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().kill();
    let line = rig.finish("queue-overflow-failover").await.unwrap();
    assert_nothing_lost(&line);
}

/// The control of the test above: the same fault with devices that do not resync loses what
/// the queue dropped, so the test above does test the resync.
#[tokio::test]
async fn without_resync_what_a_full_broker_queue_drops_stays_lost() {
    let n = fleet_size();
    let options = RigOptions {
        replicas: 2,
        lease_seconds: 8,
        broker_queue: 4 * n,
        simulator_flags: vec!["--no-resync".into()],
        patience: Some(Duration::from_secs(60)),
        ..RigOptions::new(n)
    };
    let rig = Rig::start("queue-control", options).await.unwrap();
    rig.create_requests(reboot_spec).await.unwrap();
    rig.wait_requests(Duration::from_secs(120), "accepted or later", accepted_or_later, n / 4)
        .await
        .unwrap();
    rig.wait_leader(Duration::from_secs(60)).await.unwrap().kill();
    let line = rig.finish("queue-overflow-failover-without-resync").await.unwrap();
    assert!(!line.is_clean(), "without resync something must be lost: {line}");
}

#[tokio::test]
async fn the_operator_clock_steps_ten_minutes_each_way() {
    let n = fleet_size();
    let rig =
        Rig::start("clock", RigOptions { faketime: true, ..RigOptions::new(n) }).await.unwrap();
    // A TTL the step forward would fire at once if deadlines read the wall clock.
    rig.create_requests(|i| reboot_spec_with_ttl(i, 900)).await.unwrap();
    rig.wait_requests(Duration::from_secs(120), "accepted or later", accepted_or_later, n / 4)
        .await
        .unwrap();
    rig.step_clock(600).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.step_clock(-600).unwrap();
    let requests = rig.requests.clone();
    let line = rig.finish("clock-step").await.unwrap();
    let left = requests.list(&Default::default()).await.unwrap().items.len();
    assert_eq!(left, n, "no TTL fired early: every request still exists");
    assert_nothing_lost(&line);
}

#[tokio::test]
async fn a_device_deleted_mid_request_and_ttl_zero_under_a_write_backlog() {
    let n = fleet_size();
    // A small write budget: reports of every device every second keep a backlog.
    let options = RigOptions {
        operator_flags: vec!["--status-write-rate=20".into(), "--status-write-burst=10".into()],
        ..RigOptions::new(n)
    };
    let rig = Rig::start("delete-ttl", options).await.unwrap();
    rig.create_requests(|i| reboot_spec_with_ttl(i, 0)).await.unwrap();
    let doomed: Vec<String> = rig.ids.iter().step_by(10).cloned().collect();
    rig.delete_devices(&doomed).await.unwrap();
    let line = rig.finish("device-delete-and-ttl0").await.unwrap();
    assert_nothing_lost(&line);
}
