//! Device disruption budgets: how many selected devices may be out of service at once.
//!
//! - [`index`]: the budgets and the devices requests disrupt now (no I/O), and the check
//!   every disruptive request passes before it is sent;
//! - [`firmware`]: when a Device's firmware update takes and gives back its slot (no I/O);
//! - [`controller`]: writes each budget's status (expected, available, allowed per group).

pub mod controller;
pub mod firmware;
pub mod index;
