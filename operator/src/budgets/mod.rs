//! Device disruption budgets: how many selected devices may be out of service at once.
//!
//! - [`index`]: the budgets and the devices requests disrupt now (no I/O), and the check
//!   every disruptive request passes before it is sent;
//! - [`controller`]: writes each budget's status (expected, available, allowed per group).

pub mod controller;
pub mod index;
