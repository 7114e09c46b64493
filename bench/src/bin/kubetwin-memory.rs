//! `kubetwin-memory`: what each of the operator's per-Device structures costs, measured by
//! counting the bytes the allocator hands out while N realistic Devices go into each one.
//!
//!     target/release/kubetwin-memory --devices 100000
//!
//! No cluster: the Devices are B3's (labels, desired properties, a realistic status: four
//! conditions, connection, a reported map of ten keys, firmware, document and applied
//! versions), built as the watch would deliver them and fed, one watch event each, to the very
//! structures the operator feeds (the reflector cache, the fleet index, the disruption-budget
//! index). B3 prints the result next to the operator's measured RSS; the difference is what
//! this count cannot see (allocator overhead, the runtime, the watch machinery, queues).
//! It also counts what a configuration's look at the Devices it targets holds while it looks
//! (not kept between looks, so not in B3's RSS): whole Devices, as it read them before, and
//! what it reads of each now.

use std::{alloc::System, sync::Mutex};

use anyhow::Context as _;
use cap::Cap;
use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{reflector, watcher};
use kubetwin_api::{Device, FirmwarePhase, FirmwareStatus, device::AppliedConfiguration};
use kubetwin_bench::b3_memory;
use kubetwin_operator::{
    budgets,
    configurations::targeted::TargetedDevice,
    fleet::{DeviceState, FleetIndex, compact::CompactObject},
    k8s::strip_metadata,
    twin::cache::CachedDevice,
};
use serde_json::json;

/// Counts the bytes currently allocated (requested sizes, not the allocator's rounding).
#[global_allocator]
static COUNTING: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes allocated now (as a float: only differences of them are used).
fn allocated() -> f64 {
    COUNTING.allocated() as f64
}

/// Command line of `kubetwin-memory`.
#[derive(Parser, Debug)]
#[command(version, about = "Bytes per Device in each of the operator's per-Device structures")]
struct Args {
    /// Devices to build.
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Namespace of the Devices.
    #[arg(long, default_value = "fleet")]
    namespace: String,
}

/// Device `i` as the watch delivers it in B3: the same manifest and seeded status, plus what
/// the API server adds (uid, resourceVersion, managedFields, which the cache strips) and what
/// the operator writes (observed generation, device id, document version, conditions).
fn realistic_device(namespace: &str, i: usize) -> serde_json::Value {
    let name = format!("{namespace}.d-{i}");
    let at = "2026-12-01T10:00:00Z";
    let uid = format!("6f1c2a9e-0b7d-4c53-9a1e-{i:012}");
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": at, "observedGeneration": 1})
    };
    let mut device = b3_memory::realistic_manifest(&name, i);
    device["metadata"]["namespace"] = json!(namespace);
    device["metadata"]["uid"] = json!(uid);
    device["metadata"]["resourceVersion"] = json!(format!("{}", 1_000_000 + i));
    device["metadata"]["generation"] = json!(1);
    device["metadata"]["creationTimestamp"] = json!(at);
    device["metadata"]["managedFields"] = json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "kubetwin.io/v1alpha1",
        "time": at, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:desired": {}}},
    }]);
    let mut status = b3_memory::realistic_status(i, at, 1_764_583_200, &uid, 1);
    status["observedGeneration"] = json!(1);
    status["deviceId"] = json!(name);
    status["document"] =
        json!({"version": 1, "revision": 0, "digest": "9b74c9897bac770ffc029102a200c5de"});
    status["inSync"] = json!(true);
    status["conditions"] = json!([
        condition("Ready", "False", "Disconnected", "The device is not connected"),
        condition(
            "Connected",
            "False",
            "Disconnected",
            "The device went offline at 2026-12-01T10:00:00Z"
        ),
        condition("InSync", "True", "Applied", "The device applied desired version 1"),
        condition("ReportedComplete", "True", "Complete", "Every report of the device is shown"),
    ]);
    device["status"] = status;
    device
}

/// `device` with what a firmware rollout adds to its status: the configuration's record in
/// `status.configurations` and an update under way in `status.firmware`.
fn in_rollout(mut device: Device) -> Device {
    let at = Time(kubetwin_operator::clock::now());
    if let Some(status) = device.status.as_mut() {
        status.configurations = vec![AppliedConfiguration {
            name: "plant-firmware".into(),
            generation: 2,
            firmware: Some("1.5.0".into()),
            rollback: false,
        }];
        status.firmware = Some(FirmwareStatus {
            current: Some("1.4.2".into()),
            target: Some("1.5.0".into()),
            phase: Some(FirmwarePhase::Downloading),
            started_at: Some(at),
            progress: Some(40),
            ..Default::default()
        });
    }
    device
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.devices;
    let per_device = |bytes: f64| bytes / n as f64;

    // The Devices as deserialized watch objects (counted separately: they are the events,
    // which the operator drops once every structure has taken what it keeps).
    let before = allocated();
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let mut device: Device = serde_json::from_value(realistic_device(&args.namespace, i))?;
        strip_metadata(&mut device);
        devices.push(device);
    }
    let one_device = per_device(allocated() - before);

    // The cache keeps each Device as the operator's cache does (its cached form: metadata,
    // spec and status as JSON text, no reported map). The events' copies are freed at once.
    let before = allocated();
    let (cache, mut writer) = reflector::store::<CachedDevice>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for device in &devices {
        let kept = CachedDevice::new(device.clone())?;
        writer.apply_watcher_event(&watcher::Event::InitApply(kept));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let cache_bytes = allocated() - before;

    let before = allocated();
    let mut fleet = FleetIndex::default();
    let now = kubetwin_operator::clock::now();
    fleet.device_event(&watcher::Event::Init, now);
    for device in &devices {
        fleet.device_event(&watcher::Event::InitApply(device.clone()), now);
    }
    fleet.device_event(&watcher::Event::InitDone, now);
    let fleet_bytes = allocated() - before;

    // The part of the fleet index that is the device state (what the device reported, merged).
    let before = allocated();
    let states: Vec<DeviceState> =
        devices.iter().map(|d| DeviceState::from_status(d.status.as_ref(), now)).collect();
    let state_bytes = allocated() - before;
    // What the device states keep of the reported properties: compressed against the first
    // object the process compressed (here Device 0's), so it depends on how much devices' values
    // differ. B3's differ in three of ten values; the other figure has every value differ.
    let (texts, kept): (usize, usize) = states
        .iter()
        .map(|state| (state.reported.text_len(), state.reported.kept_bytes()))
        .fold((0, 0), |(t, k), (text, kept)| (t + text, k + kept));
    let unlike: serde_json::Map<String, serde_json::Value> = serde_json::from_value(json!({
        "firmwareVersion": "2.0.9", "telemetryIntervalSeconds": 45, "mode": "eco",
        "led": {"color": "red"}, "temperature": 17.25, "humidity": 63,
        "uptimeSeconds": 987_654, "battery": 12, "rssi": -88, "location": "dock-7",
    }))?;
    let unlike_text = serde_json::Value::Object(unlike.clone()).to_string().len();
    let unlike_kept = CompactObject::new(unlike).kept_bytes();
    drop(states);

    let before = allocated();
    let budget_index = Mutex::new(budgets::index::BudgetIndex::default());
    for device in &devices {
        budgets::controller::observe_device(
            &watcher::Event::InitApply(device.clone()),
            &budget_index,
        );
    }
    let budget_bytes = allocated() - before;

    // What one cached Device's parts cost (the first one; every Device has the same shape).
    let cached = cache.state().first().cloned().context("the cache is empty")?;
    let cost = |clone: &dyn Fn() -> Box<dyn std::any::Any>| {
        let before = allocated();
        let copy = clone();
        let bytes = allocated() - before;
        drop(copy);
        bytes
    };
    let parts = json!({
        "inline (the cached Device struct itself)": size_of::<CachedDevice>(),
        "metadata (name, namespace, generation, ...; the labels are shared and a UUID uid is \
         kept as 16 bytes, not in it)":
            cost(&|| Box::new(cached.metadata.clone())),
        "spec and status as JSON text (desired properties, conditions, connection, versions; \
         no reported map; not kept, for scale)": cached.text()?.len(),
        "spec and status as kept (that text, compressed against the cache's template)":
            cached.kept_bytes(),
    });

    // A configuration's look at the Devices it targets (every 2 s while its rollout runs,
    // every 15 s otherwise) holds what it reads of each of them for the whole look. The
    // Devices are B3's with what a rollout adds to a status: the configuration's record and a
    // firmware update under way. Read back whole (as the look did before) and as it reads them.
    let rolling: Vec<CachedDevice> = devices
        .iter()
        .map(|device| CachedDevice::new(in_rollout(device.clone())))
        .collect::<Result<_, _>>()?;
    let before = allocated();
    let whole: Vec<Device> = rolling.iter().map(CachedDevice::device).collect::<Result<_, _>>()?;
    let look_whole_bytes = allocated() - before;
    drop(whole);
    let before = allocated();
    let projected: Vec<TargetedDevice> =
        rolling.iter().map(TargetedDevice::read).collect::<Result<_, _>>()?;
    let look_bytes = allocated() - before;
    drop((projected, rolling));

    anyhow::ensure!(cache.state().len() == n, "the cache holds {} of {n}", cache.state().len());
    let result = json!({
        "devices": n,
        "inline_bytes": {
            "Device": size_of::<Device>(),
            "CachedDevice": size_of::<CachedDevice>(),
            "DeviceState": size_of::<DeviceState>(),
        },
        "bytes_per_device": {
            "one Device as the watch delivers it (not held; for scale)": one_device,
            "reflector cache (Arc<CachedDevice> by object reference)": per_device(cache_bytes),
            "fleet index (claims, device state, reported copy)": per_device(fleet_bytes),
            "of which the device state (its reported copy included)": per_device(state_bytes),
            "disruption-budget index (labels)": per_device(budget_bytes),
            "a configuration's look at the Devices it targets, each read back whole (as \
             before; held for the look)": per_device(look_whole_bytes),
            "a configuration's look at the Devices it targets, what it reads of each \
             (held for the look)": per_device(look_bytes),
        },
        "one_cached_device_bytes": parts,
        "reported_bytes": {
            "B3's, as JSON text (mean)": per_device(texts as f64),
            "B3's, as kept (mean; three of ten values differ per device)": per_device(kept as f64),
            "every value unlike the dictionary's, as JSON text": unlike_text,
            "every value unlike the dictionary's, as kept": unlike_kept,
        },
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    drop((fleet, budget_index, cache, writer, devices));
    Ok(())
}
