//! Prometheus metrics of the operator. Labels never carry object names, so cardinality stays
//! bounded at any fleet size, and every label value comes from a typed value's `as_str()`
//! (a kind's lowercase name, a message kind, a drop reason, a phase), never from free text.

use std::collections::BTreeMap;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Every reason a status write can fail with (the label `reason` of
/// `kubetwin_status_write_errors_total`), pre-registered so each series exists from the start.
pub const WRITE_FAILURE_REASONS: [&str; 6] =
    ["invalid", "conflict", "throttled", "unavailable", "timeout", "other"];

/// Label set with one `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Message kind, resource kind, drop reason or refusal kind.
    pub kind: &'static str,
}

/// Label set of a status write's priority (`routine` or `urgent`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    /// The write budget's priority of the change.
    pub priority: &'static str,
}

/// Buckets of the staleness histogram, in seconds: fine between 2 and 5 minutes too, where
/// routine staleness settles under overload (about D/W, 200 s for 10,000 devices at the
/// default budget), so its p99 can be told from the bound 1.1 × D/W.
fn staleness_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 150.0, 180.0, 210.0, 240.0,
        270.0, 300.0,
    ])
}

/// Labels of a failed status write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteFailureLabels {
    /// Resource kind.
    pub kind: &'static str,
    /// Why: invalid, conflict, throttled, unavailable, timeout, other.
    pub reason: &'static str,
}

/// Labels of a request phase transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Resource kind of the request (`rebootrequest`).
    pub kind: &'static str,
    /// Method kind (`reboot`).
    pub method: &'static str,
    /// Phase entered.
    pub phase: &'static str,
}

/// Labels of a disruption budget check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetCheckLabels {
    /// What asked: a request kind (`rebootrequest`, `methodrequest`) or `firmware`.
    pub kind: &'static str,
    /// `allowed` or `exhausted`.
    pub result: &'static str,
}

/// Labels of a DeviceJob phase transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobPhaseLabel {
    /// Phase entered.
    pub phase: &'static str,
}

/// The counts behind the fleet gauges (counted in `telemetry::fleet`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Devices by connection state (`Connected`, `Disconnected`, `Unknown`).
    pub connection: BTreeMap<&'static str, i64>,
    /// Devices by sync (`true`, `false`, `unknown`).
    pub in_sync: BTreeMap<&'static str, i64>,
    /// Devices by firmware version running (bounded: the most common by name, the rest together).
    pub firmware: BTreeMap<String, i64>,
    /// Unfinished requests by (kind, phase).
    pub open_requests: BTreeMap<(&'static str, &'static str), i64>,
}

/// Labels of the Device count by connection state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabel {
    /// Connected, Disconnected or Unknown.
    pub connection: &'static str,
}

/// Labels of the Device count by sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabel {
    /// true, false or unknown.
    pub in_sync: &'static str,
}

/// Labels of the Device count by firmware version (at most 20 versions and `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FirmwareLabel {
    /// The version the devices run.
    pub version: String,
}

/// Labels of the unfinished request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenRequestLabels {
    /// Resource kind (`rebootrequest`, `methodrequest`).
    pub kind: &'static str,
    /// Phase now.
    pub phase: &'static str,
}

fn label(kind: &'static str) -> KindLabel {
    KindLabel { kind }
}

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    messages_in: Family<KindLabel, Counter>,
    messages_out: Family<KindLabel, Counter>,
    messages_dropped: Family<KindLabel, Counter>,
    mqtt_refusals: Family<KindLabel, Counter>,
    reconciles: Family<KindLabel, Counter>,
    reconcile_errors: Family<KindLabel, Counter>,
    status_writes: Family<KindLabel, Counter>,
    request_transitions: Family<TransitionLabels, Counter>,
    mqtt_connected: Gauge,
    status_merged: Counter,
    status_queue_depth: Gauge,
    /// By priority: routine changes wait their turn by design, urgent ones should not.
    status_staleness: Family<PriorityLabel, Histogram, fn() -> Histogram>,
    events_published: Counter,
    events_dropped: Counter,
    inbound_queue_depth: Gauge,
    heap_allocated: Gauge,
    heap_resident: Gauge,
    status_in_flight: Gauge,
    desired_overwrites: Counter,
    desired_cleared: Family<KindLabel, Counter>,
    status_write_errors: Family<WriteFailureLabels, Counter>,
    budget_checks: Family<BudgetCheckLabels, Counter>,
    job_children: Counter,
    /// Devices admitted to configuration firmware rollouts.
    configuration_admissions: Counter,
    job_phases: Family<JobPhaseLabel, Counter>,
    devices_by_connection: Family<ConnectionLabel, Gauge>,
    devices_by_sync: Family<SyncLabel, Gauge>,
    devices_by_firmware: Family<FirmwareLabel, Gauge>,
    open_requests: Family<OpenRequestLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            registry: Registry::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            messages_dropped: Family::default(),
            mqtt_refusals: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            status_writes: Family::default(),
            request_transitions: Family::default(),
            mqtt_connected: Gauge::default(),
            status_merged: Counter::default(),
            status_queue_depth: Gauge::default(),
            events_published: Counter::default(),
            events_dropped: Counter::default(),
            inbound_queue_depth: Gauge::default(),
            heap_allocated: Gauge::default(),
            heap_resident: Gauge::default(),
            status_in_flight: Gauge::default(),
            desired_overwrites: Counter::default(),
            desired_cleared: Family::default(),
            status_write_errors: Family::default(),
            budget_checks: Family::default(),
            job_children: Counter::default(),
            configuration_admissions: Counter::default(),
            job_phases: Family::default(),
            devices_by_connection: Family::default(),
            devices_by_sync: Family::default(),
            devices_by_firmware: Family::default(),
            open_requests: Family::default(),
            status_staleness: Family::new_with_constructor(staleness_histogram),
        }
    }
}

impl Metrics {
    /// Creates and registers every metric, with the label sets known in advance at zero.
    pub fn new() -> Self {
        let mut m = Self::default();
        m.create_known_series();
        let r = &mut m.registry;
        r.register(
            "kubetwin_mqtt_messages_received",
            "MQTT messages accepted, by kind",
            m.messages_in.clone(),
        );
        r.register(
            "kubetwin_mqtt_messages_published",
            "MQTT messages published, by kind",
            m.messages_out.clone(),
        );
        r.register(
            "kubetwin_mqtt_messages_dropped",
            "MQTT messages dropped, by reason (malformed, oversized, version, topic, invalid, device, duplicate, stale)",
            m.messages_dropped.clone(),
        );
        r.register(
            "kubetwin_mqtt_refusals",
            "What the broker refused the operator: subscribe (a SUBACK failure code) or publish (an MQTT 5 PUBACK reason code)",
            m.mqtt_refusals.clone(),
        );
        r.register("kubetwin_reconciles", "Reconciles, by kind", m.reconciles.clone());
        r.register(
            "kubetwin_reconcile_errors",
            "Failed reconciles and status writes, by kind",
            m.reconcile_errors.clone(),
        );
        r.register(
            "kubetwin_status_writes",
            "Status patches sent to the API server, by kind",
            m.status_writes.clone(),
        );
        r.register(
            "kubetwin_request_transitions",
            "Request phase transitions, by resource kind, method and the phase entered",
            m.request_transitions.clone(),
        );
        r.register(
            "kubetwin_budget_checks",
            "Disruption budget checks before a disruptive send, by what asked and the result",
            m.budget_checks.clone(),
        );
        r.register(
            "kubetwin_configuration_devices_admitted",
            "Devices a DeviceConfiguration's firmware rollout admitted (their order goes out)",
            m.configuration_admissions.clone(),
        );
        r.register(
            "kubetwin_job_children_created",
            "MethodRequests created as DeviceJob children",
            m.job_children.clone(),
        );
        r.register(
            "kubetwin_job_transitions",
            "DeviceJob phase transitions, by the phase entered",
            m.job_phases.clone(),
        );
        r.register(
            "kubetwin_devices",
            "Devices by connection state (recounted every 15 s)",
            m.devices_by_connection.clone(),
        );
        r.register(
            "kubetwin_devices_in_sync",
            "Devices by whether they applied the current spec (recounted every 15 s)",
            m.devices_by_sync.clone(),
        );
        r.register(
            "kubetwin_devices_firmware",
            "Devices by firmware version running: the 20 most common, the rest as other",
            m.devices_by_firmware.clone(),
        );
        r.register(
            "kubetwin_open_requests",
            "Unfinished requests by kind and phase (recounted every 15 s)",
            m.open_requests.clone(),
        );
        r.register(
            "kubetwin_mqtt_connected",
            "1 while the MQTT connection is up",
            m.mqtt_connected.clone(),
        );
        r.register(
            "kubetwin_status_updates_merged",
            "Status changes merged into a change already waiting for its write",
            m.status_merged.clone(),
        );
        r.register(
            "kubetwin_status_queue_depth",
            "Objects waiting for a status write",
            m.status_queue_depth.clone(),
        );
        r.register(
            "kubetwin_status_staleness_seconds",
            "Time from the first queued change of an object to its status write",
            m.status_staleness.clone(),
        );
        r.register(
            "kubetwin_events_published",
            "Kubernetes Events published",
            m.events_published.clone(),
        );
        r.register(
            "kubetwin_events_dropped",
            "Kubernetes Events dropped because their queue was full",
            m.events_dropped.clone(),
        );
        r.register(
            "kubetwin_status_write_errors",
            "Status writes the API server failed or refused, by kind and reason (invalid, conflict, throttled, unavailable, timeout, other); each is retried with backoff",
            m.status_write_errors.clone(),
        );
        r.register(
            "kubetwin_desired_overwrites",
            "Retained desired documents that something other than the operator overwrote or cleared (each is published again)",
            m.desired_overwrites.clone(),
        );
        r.register(
            "kubetwin_desired_cleared",
            "Retained desired documents the operator cleared, by why (deleted: its Device was deleted; orphan: found with no Device)",
            m.desired_cleared.clone(),
        );
        r.register(
            "kubetwin_status_writes_in_flight",
            "Status patches sent and not yet answered",
            m.status_in_flight.clone(),
        );
        r.register(
            "kubetwin_mqtt_inbound_queue_depth",
            "MQTT events received but not yet applied to the fleet index",
            m.inbound_queue_depth.clone(),
        );
        r.register(
            "kubetwin_heap_allocated_bytes",
            "Bytes the operator has allocated and not freed (the allocator's count, refreshed every 5 s)",
            m.heap_allocated.clone(),
        );
        r.register(
            "kubetwin_heap_resident_bytes",
            "Bytes of memory the allocator holds in physical pages (refreshed every 5 s)",
            m.heap_resident.clone(),
        );
        m
    }

    /// Counts an accepted inbound message of `kind`.
    pub fn received(&self, kind: &'static str) {
        self.messages_in.get_or_create(&label(kind)).inc();
    }
    /// Counts a published message of `kind`.
    pub fn published(&self, kind: &'static str) {
        self.messages_out.get_or_create(&label(kind)).inc();
    }
    /// Counts a dropped inbound message.
    pub fn dropped(&self, reason: &'static str) {
        self.messages_dropped.get_or_create(&label(reason)).inc();
    }
    /// Counts a refusal by the broker (`subscribe` or `publish`).
    pub fn mqtt_refused(&self, kind: &'static str) {
        self.mqtt_refusals.get_or_create(&label(kind)).inc();
    }
    /// Counts a reconcile of `kind`.
    pub fn reconciled(&self, kind: &'static str) {
        self.reconciles.get_or_create(&label(kind)).inc();
    }
    /// Counts a failed reconcile of `kind`.
    pub fn reconcile_failed(&self, kind: &'static str) {
        self.reconcile_errors.get_or_create(&label(kind)).inc();
    }
    /// Counts a status write of `kind`.
    pub fn status_written(&self, kind: &'static str) {
        self.status_writes.get_or_create(&label(kind)).inc();
    }
    /// Counts a request entering a phase.
    pub fn request_entered(&self, labels: TransitionLabels) {
        self.request_transitions.get_or_create(&labels).inc();
    }
    /// Creates the series whose labels are known in advance at zero: a counter that exists
    /// before its first event lets `rate()` and `increase()` see that event (alerts on the
    /// first abort, the first write error), and dashboards show every family from the start.
    fn create_known_series(&self) {
        const RESOURCES: [&str; 5] =
            ["device", "rebootrequest", "methodrequest", "devicejob", "devicedisruptionbudget"];
        const REQUESTS: [&str; 2] = ["rebootrequest", "methodrequest"];
        const REQUEST_PHASES: [&str; 9] = [
            "Pending",
            "Sent",
            "Accepted",
            "InProgress",
            "Rebooting",
            "Succeeded",
            "Failed",
            "TimedOut",
            "Rejected",
        ];
        for priority in ["routine", "urgent"] {
            let _ = self.status_staleness.get_or_create(&PriorityLabel { priority });
        }
        for kind in ["reported", "presence", "response", "get"] {
            let _ = self.messages_in.get_or_create(&label(kind));
        }
        for reason in [
            "empty",
            "oversized",
            "malformed",
            "version",
            "topic",
            "invalid",
            "device",
            "duplicate",
            "stale",
            "reported-too-large",
            crate::fleet::UNREADABLE_STATE,
        ] {
            let _ = self.messages_dropped.get_or_create(&label(reason));
        }
        for kind in RESOURCES {
            let _ = self.status_writes.get_or_create(&label(kind));
            let _ = self.reconciles.get_or_create(&label(kind));
            let _ = self.reconcile_errors.get_or_create(&label(kind));
            for reason in WRITE_FAILURE_REASONS {
                let _ =
                    self.status_write_errors.get_or_create(&WriteFailureLabels { kind, reason });
            }
        }
        for phase in REQUEST_PHASES {
            let _ = self.request_transitions.get_or_create(&TransitionLabels {
                kind: "rebootrequest",
                method: "reboot",
                phase,
            });
        }
        for kind in REQUESTS.into_iter().chain(["firmware"]) {
            for result in ["allowed", "exhausted"] {
                let _ = self.budget_checks.get_or_create(&BudgetCheckLabels { kind, result });
            }
        }
        for phase in ["Suspended", "Running", "Paused", "Succeeded", "Failed", "Aborted"] {
            let _ = self.job_phases.get_or_create(&JobPhaseLabel { phase });
        }
    }

    /// Counts a disruption budget check by `kind` (a request kind or `firmware`).
    pub fn budget_checked(&self, kind: &'static str, allowed: bool) {
        let result = if allowed { "allowed" } else { "exhausted" };
        self.budget_checks.get_or_create(&BudgetCheckLabels { kind, result }).inc();
    }
    /// Counts DeviceJob children created.
    pub fn job_children_created(&self, count: usize) {
        self.job_children.inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
    /// Counts devices admitted to configuration firmware rollouts.
    pub fn configuration_admitted(&self, count: usize) {
        self.configuration_admissions.inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
    /// Counts a DeviceJob entering `phase`.
    pub fn job_entered(&self, phase: &'static str) {
        self.job_phases.get_or_create(&JobPhaseLabel { phase }).inc();
    }
    /// Sets the fleet gauges to `counts` (label sets absent from `counts` disappear).
    pub fn set_fleet(&self, counts: &FleetCounts) {
        self.devices_by_connection.clear();
        for (connection, n) in &counts.connection {
            self.devices_by_connection.get_or_create(&ConnectionLabel { connection }).set(*n);
        }
        self.devices_by_sync.clear();
        for (in_sync, n) in &counts.in_sync {
            self.devices_by_sync.get_or_create(&SyncLabel { in_sync }).set(*n);
        }
        self.devices_by_firmware.clear();
        for (version, n) in &counts.firmware {
            self.devices_by_firmware
                .get_or_create(&FirmwareLabel { version: version.clone() })
                .set(*n);
        }
        self.open_requests.clear();
        for ((kind, phase), n) in &counts.open_requests {
            self.open_requests.get_or_create(&OpenRequestLabels { kind, phase }).set(*n);
        }
    }
    /// Sets the MQTT connection gauge.
    pub fn set_mqtt_connected(&self, up: bool) {
        self.mqtt_connected.set(i64::from(up));
    }
    /// Counts a status change merged into a pending one.
    pub fn status_merged(&self) {
        self.status_merged.inc();
    }
    /// Sets the status queue depth.
    pub fn set_queue_depth(&self, depth: usize) {
        self.status_queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Sets what the allocator reports: bytes allocated and not freed, and bytes it holds in
    /// physical pages (their difference is its overhead: size-class rounding, free pages).
    pub fn set_heap(&self, allocated: usize, resident: usize) {
        self.heap_allocated.set(i64::try_from(allocated).unwrap_or(i64::MAX));
        self.heap_resident.set(i64::try_from(resident).unwrap_or(i64::MAX));
    }

    /// Counts a failed status write.
    pub fn status_write_failed(&self, kind: &'static str, reason: &'static str) {
        self.status_write_errors.get_or_create(&WriteFailureLabels { kind, reason }).inc();
    }
    /// Counts a desired document someone else overwrote.
    pub fn desired_overwritten(&self) {
        self.desired_overwrites.inc();
    }
    /// Counts a retained desired document cleared, by why.
    pub fn desired_cleared(&self, why: crate::fleet::ClearReason) {
        self.desired_cleared.get_or_create(&label(why.as_str())).inc();
    }
    /// Sets how many status patches are in flight.
    pub fn set_writes_in_flight(&self, count: usize) {
        self.status_in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    /// Sets how many MQTT events wait for the fleet index.
    pub fn set_inbound_depth(&self, depth: usize) {
        self.inbound_queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    /// Records how stale a written status was.
    /// `priority` is a write priority's `as_str()` (`routine`, `urgent`).
    pub fn observe_staleness(&self, priority: &'static str, staleness: std::time::Duration) {
        let labels = PriorityLabel { priority };
        self.status_staleness.get_or_create(&labels).observe(staleness.as_secs_f64());
    }
    /// Counts a published Event.
    pub fn event_published(&self) {
        self.events_published.inc();
    }
    /// Counts a dropped Event.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }
    /// Number of messages dropped for `reason` so far.
    pub fn dropped_count(&self, reason: &'static str) -> u64 {
        self.messages_dropped.get_or_create(&label(reason)).get()
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed() {
        let metrics = Metrics::new();
        metrics.dropped("malformed");
        metrics.status_written("device");
        metrics.reconciled("device");
        metrics.reconcile_failed("device");
        metrics.status_merged();
        metrics.set_queue_depth(3);
        metrics.mqtt_refused("subscribe");
        metrics.request_entered(TransitionLabels {
            kind: "rebootrequest",
            method: "reboot",
            phase: "Sent",
        });
        metrics.observe_staleness("urgent", std::time::Duration::from_millis(300));
        let text = metrics.render().expect("renders");
        for name in [
            "kubetwin_mqtt_messages_dropped_total{kind=\"malformed\"} 1",
            "kubetwin_status_writes_total{kind=\"device\"} 1",
            "kubetwin_reconciles_total{kind=\"device\"} 1",
            "kubetwin_reconcile_errors_total{kind=\"device\"} 1",
            "kubetwin_status_updates_merged_total 1",
            "kubetwin_status_queue_depth 3",
            "kubetwin_mqtt_refusals_total{kind=\"subscribe\"} 1",
            "kubetwin_request_transitions_total{kind=\"rebootrequest\",method=\"reboot\",phase=\"Sent\"} 1",
            "kubetwin_status_staleness_seconds_count{priority=\"urgent\"} 1",
            "kubetwin_status_staleness_seconds_count{priority=\"routine\"} 0",
            "kubetwin_mqtt_connected 0",
        ] {
            assert!(text.lines().any(|l| l == name), "{name} missing in:\n{text}");
        }
    }
}
