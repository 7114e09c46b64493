//! The Device resync: every Device is reconciled again once per [`RESYNC`], whether or not
//! anything changed, as a safety net for a trigger that never came.
//!
//! Why a walk over the fleet rather than a requeue per reconcile: kube-runtime's scheduler
//! keeps an entry (two copies of the object reference, a delay-queue slot) for every object
//! waiting for its requeue, ~0.65 KiB per Device held all the time (heap profile, B3 at
//! 10,000 Devices). The walk holds nothing between its steps: each Device has a turn in the
//! period, from a hash of its name, so the fleet is spread evenly over it, and a Device that
//! exists for a whole pass gets exactly one turn in it, however the fleet changes meanwhile.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};

use super::cache::CachedDevice;

/// How often every Device is reconciled when nothing else triggers it.
pub const RESYNC: Duration = Duration::from_secs(600);

/// How often the walk takes its next step. Each step looks at every cached Device (a hash of
/// its name), so steps are few: 120 per pass, ~830 Devices each at 100,000.
const STEP: Duration = Duration::from_secs(5);

/// The step of each pass (of `steps`) at which the Device `namespace`/`name` is reconciled.
/// The same in every pass (a hash with fixed keys).
pub fn turn_of(namespace: &str, name: &str, steps: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    (namespace, name).hash(&mut hasher);
    hasher.finish() % steps.max(1)
}

/// Walks the cached Devices forever, triggering each once per [`RESYNC`] through `trigger`
/// (the Device controller's own trigger stream). Starts once `devices` has its first list.
pub async fn walk(devices: Store<CachedDevice>, trigger: UnboundedSender<ObjectRef<CachedDevice>>) {
    if !crate::k8s::wait_synced(&devices).await {
        return;
    }
    let steps = (RESYNC.as_secs() / STEP.as_secs()).max(1);
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for step in (0..steps).cycle() {
        tick.tick().await;
        // The cache's Devices now, held only for this step (a snapshot kept for a whole pass
        // would keep every replaced Device alive until it ends).
        for device in devices.state() {
            let namespace = device.metadata.namespace.as_deref().unwrap_or_default();
            let name = device.metadata.name.as_deref().unwrap_or_default();
            if turn_of(namespace, name, steps) == step
                && trigger.unbounded_send(crate::fleet::bare_ref(&*device)).is_err()
            {
                // The controller is gone: so is the need for a resync.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_has_one_turn_and_the_fleet_is_spread_over_the_pass() {
        let steps = 600;
        let mut per_step = vec![0u32; steps as usize];
        for i in 0..60_000 {
            let turn = turn_of("fleet", &format!("plant-3.device-{i:06}"), steps);
            assert!(turn < steps);
            per_step[turn as usize] += 1;
        }
        // 100 per step on average: no step gets a burst, none is left empty.
        let (fewest, most) = (per_step.iter().min(), per_step.iter().max());
        assert!(
            fewest.is_some_and(|n| *n >= 50) && most.is_some_and(|n| *n <= 150),
            "{fewest:?}..{most:?}"
        );
        // The same turn every time, and per namespace.
        assert_eq!(turn_of("fleet", "d-1", steps), turn_of("fleet", "d-1", steps));
        assert_eq!(turn_of("fleet", "d-1", 0), 0, "no steps: one turn");
    }
}
