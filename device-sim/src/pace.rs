//! Fleet-wide pacing of new MQTT connections (`--connect-rate`), so that thousands of devices
//! connect in a steady stream instead of all at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Hands out connection slots at most `rate` per second, first come first served.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `rate_per_sec` connections per second (clamped to at least 0.001).
    pub fn new(rate_per_sec: f64) -> Self {
        let rate = if rate_per_sec.is_finite() { rate_per_sec.max(0.001) } else { 1e9 };
        Self { interval: Duration::from_secs_f64(1.0 / rate), next: Mutex::new(None) }
    }

    /// Reserves the next free slot at or after `now` and returns it.
    pub fn reserve_at(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }

    /// Waits for the next free slot.
    pub async fn wait(&self) {
        let slot = self.reserve_at(Instant::now());
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_rate() {
        let pacer = Pacer::new(10.0);
        let now = Instant::now();
        let slots: Vec<_> = (0..3).map(|_| pacer.reserve_at(now)).collect();
        assert_eq!(slots[0], now);
        assert_eq!(slots[1] - slots[0], Duration::from_millis(100));
        assert_eq!(slots[2] - slots[1], Duration::from_millis(100));
        // After an idle period, the next slot is immediate again.
        let later = now + Duration::from_secs(5);
        assert_eq!(pacer.reserve_at(later), later);
    }

    #[tokio::test]
    async fn wait_paces_connections() {
        let pacer = Pacer::new(100.0);
        let start = Instant::now();
        for _ in 0..6 {
            pacer.wait().await;
        }
        let elapsed = Instant::now() - start;
        assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}
