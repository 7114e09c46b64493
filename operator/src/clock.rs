//! The operator's clock: wall time that never steps while the process runs. It is the wall
//! time at start plus the monotonic time since, so a clock step of the machine (NTP, a wrong
//! manual change) cannot end a request early or fire a TTL early. Persisted times from another
//! process are anchored to this process's first sight of an object instead (see
//! `methods::engine`), so a step between processes only ever delays a deadline.

use std::{sync::OnceLock, time::Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The wall time and monotonic instant at the first call.
fn anchor() -> &'static (Timestamp, Instant) {
    static ANCHOR: OnceLock<(Timestamp, Instant)> = OnceLock::new();
    ANCHOR.get_or_init(|| (Timestamp::now(), Instant::now()))
}

/// Now, as the process clock says: steps of the machine's clock after start do not show.
pub fn now() -> Timestamp {
    let (wall, mono) = anchor();
    let elapsed = SignedDuration::try_from(mono.elapsed()).unwrap_or(SignedDuration::MAX);
    wall.checked_add(elapsed).unwrap_or(*wall)
}

/// Fixes the anchor now (call once at start, before any other use).
pub fn start() {
    anchor();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_clock_moves_forward_with_the_monotonic_clock() {
        start();
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now();
        assert!(b > a);
        assert!(b.duration_since(a) >= SignedDuration::from_millis(20));
    }
}
