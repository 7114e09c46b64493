//! Rollouts over many devices: the pure wave planner shared by fleet jobs and configuration
//! rollouts.
//!
//! - [`planner`]: which members start now, from the snapshot, the strategy, budget room and
//!   the time; it also computes the preview a suspended rollout shows.

pub mod planner;

use kubetwin_api::job::{RolloutStrategy, WaveStatus};

use planner::{Decision, Ramp, RetryPolicy, Size, Strategy, WaveSpec};

/// Default of `spec.rollout.maxInFlight`.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10;

fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// The planner strategy of a rollout spec (waves, in-flight limit, rate) with the waves a
/// person let it go past; no abort criteria or retries, not disruptive, not suspended.
/// Admission validated every size.
pub fn strategy_of(rollout: &RolloutStrategy, continue_after_wave: i32) -> Strategy {
    Strategy {
        waves: rollout
            .waves
            .iter()
            .map(|w| WaveSpec {
                size: Size::parse(&w.size).unwrap_or(Size::Percent(100)),
                pause_after: w.pause_after,
            })
            .collect(),
        max_in_flight: rollout
            .max_in_flight
            .as_ref()
            .and_then(Size::parse)
            .unwrap_or(Size::Count(DEFAULT_MAX_IN_FLIGHT)),
        max_per_minute: rollout.max_per_minute.map(unsigned),
        ramp: rollout.exponential_rate.as_ref().map(|r| Ramp {
            base_per_minute: unsigned(r.base_rate_per_minute),
            factor: r.increment_factor,
            succeeded_per_increase: unsigned(r.succeeded_per_increase),
        }),
        continue_after_wave: unsigned(continue_after_wave),
        abort: Vec::new(),
        retry: RetryPolicy::default(),
        disruptive: false,
        suspended: false,
    }
}

/// A count as the API holds it.
pub fn api_count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Each wave's progress in a decision, as a rollout's status shows it (waves count from 1).
pub fn wave_statuses(decision: &Decision) -> Vec<WaveStatus> {
    decision
        .waves
        .iter()
        .enumerate()
        .map(|(index, w)| WaveStatus {
            wave: api_count(u32::try_from(index + 1).unwrap_or(u32::MAX)),
            size: api_count(w.size),
            started: api_count(w.started),
            finished: api_count(w.finished),
            succeeded: api_count(w.succeeded),
        })
        .collect()
}
