//! What the operator keeps about device ids no Device claims: the latest state of each (so a
//! Device created a moment after its device connected starts from what the device said), and
//! when a drop for it was last logged. Both are bounded in size and expire, so a flood of
//! messages from made-up ids cannot grow memory.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kubetwin_protocol::DeviceId;

use super::state::DeviceState;

/// Most device ids without a Device whose state is kept.
pub const MAX_EARLY: usize = 10_000;
/// How long the state of an id without a Device is kept after its last message.
pub const EARLY_TTL: Duration = Duration::from_secs(600);
/// How often a dropped message is logged per device id.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most device ids remembered for log rate limiting.
pub const LOG_MEMORY: usize = 10_000;
/// Least time between two sweeps of a full map: a flood of new ids would otherwise make every
/// message scan every entry.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a full map may be swept at `now`, recording the sweep when it may.
fn sweep_due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL);
    if due {
        *last = Some(now);
    }
    due
}

/// Early state of unclaimed device ids, bounded and expiring.
#[derive(Debug, Default)]
pub struct UnknownDevices {
    early: HashMap<DeviceId, (DeviceState, Instant)>,
    swept: Option<Instant>,
}

impl UnknownDevices {
    /// The state of unclaimed `id`, created when there is room. `None` once [`MAX_EARLY`] ids
    /// are held even after dropping the expired ones.
    pub fn state_mut(&mut self, id: &DeviceId, now: Instant) -> Option<&mut DeviceState> {
        if !self.early.contains_key(id) && self.early.len() >= MAX_EARLY {
            if sweep_due(&mut self.swept, now) {
                self.early
                    .retain(|_, (_, touched)| now.saturating_duration_since(*touched) < EARLY_TTL);
            }
            if self.early.len() >= MAX_EARLY {
                return None;
            }
        }
        let (state, touched) =
            self.early.entry(id.clone()).or_insert_with(|| (DeviceState::default(), now));
        *touched = now;
        Some(state)
    }

    /// Takes the state kept for `id` (its Device appeared), unless it expired.
    pub fn take(&mut self, id: &str, now: Instant) -> Option<DeviceState> {
        let (state, touched) = self.early.remove(id)?;
        (now.saturating_duration_since(touched) < EARLY_TTL).then_some(state)
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.early.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.early.is_empty()
    }
}

/// Logs a device's dropped messages at most once per [`LOG_INTERVAL`], remembering at most
/// [`LOG_MEMORY`] ids (beyond that, drops of new ids are counted but not logged).
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: HashMap<String, Instant>,
    swept: Option<Instant>,
}

impl LogLimiter {
    /// Whether to log a drop for `device` at `now`.
    pub fn should_log(&mut self, device: &str, now: Instant) -> bool {
        if let Some(last) = self.last.get(device) {
            if now.saturating_duration_since(*last) < LOG_INTERVAL {
                return false;
            }
        } else if self.last.len() >= LOG_MEMORY {
            if sweep_due(&mut self.swept, now) {
                self.last.retain(|_, t| now.saturating_duration_since(*t) < LOG_INTERVAL);
            }
            if self.last.len() >= LOG_MEMORY {
                return false;
            }
        }
        self.last.insert(device.to_string(), now);
        true
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> DeviceId {
        DeviceId::new(&format!("ghost-{n}")).expect("valid")
    }

    #[test]
    fn early_state_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut unknown = UnknownDevices::default();
        for n in 0..MAX_EARLY {
            assert!(unknown.state_mut(&id(n), t0).is_some());
        }
        assert!(unknown.state_mut(&id(MAX_EARLY), t0).is_none(), "full");
        assert!(unknown.state_mut(&id(0), t0).is_some(), "a known id still updates");
        let later = t0 + EARLY_TTL + Duration::from_secs(1);
        assert!(unknown.state_mut(&id(MAX_EARLY), later).is_some(), "expired ids made room");
        assert_eq!(unknown.len(), 1);
        assert!(unknown.take("ghost-0", later).is_none(), "expired");
    }

    #[test]
    fn a_full_map_is_swept_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut unknown = UnknownDevices::default();
        for n in 0..MAX_EARLY {
            assert!(unknown.state_mut(&id(n), t0).is_some());
        }
        let almost = t0 + EARLY_TTL - Duration::from_millis(100);
        assert!(unknown.state_mut(&id(MAX_EARLY), almost).is_none(), "swept, nothing expired");
        let expired = almost + Duration::from_millis(200);
        assert!(
            unknown.state_mut(&id(MAX_EARLY), expired).is_none(),
            "entries expired, but the last sweep was less than a second ago"
        );
        let next = almost + SWEEP_INTERVAL;
        assert!(unknown.state_mut(&id(MAX_EARLY), next).is_some(), "swept again");
        assert_eq!(unknown.len(), 1);
    }

    #[test]
    fn drops_are_logged_once_a_minute_per_id_and_the_memory_is_bounded() {
        let t0 = Instant::now();
        let mut log = LogLimiter::default();
        assert!(log.should_log("a", t0));
        assert!(!log.should_log("a", t0 + Duration::from_secs(30)));
        assert!(log.should_log("a", t0 + LOG_INTERVAL));
        for n in 0..LOG_MEMORY * 2 {
            log.should_log(&format!("flood-{n}"), t0);
        }
        assert!(log.len() <= LOG_MEMORY);
    }
}
