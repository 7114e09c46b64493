//! Rollouts over many devices: the pure wave planner shared by fleet jobs (and, next,
//! configuration rollouts).
//!
//! - [`planner`]: which members start now, from the snapshot, the strategy, budget room and
//!   the time; it also computes the preview a suspended rollout shows.

pub mod planner;
