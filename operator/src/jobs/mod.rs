//! Fleet jobs: one method across the Devices a selector picks (`DeviceJob`).
//!
//! - [`status`]: the job spec as a planner strategy, and the decision as the job's status;
//! - [`children`]: the child MethodRequests (deterministic names, owner, labels);
//! - [`controller`]: reads the caches, runs the shared planner (`rollout::planner`), creates
//!   children and offers the status.

pub mod children;
pub mod controller;
pub mod status;
