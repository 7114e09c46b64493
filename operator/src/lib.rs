//! The kubetwin operator: keeps `Device` twins and request objects (`RebootRequest`) in step
//! with devices that speak the kubetwin MQTT contract.
//!
//! A folder per responsibility (see `docs/architecture.md`):
//!
//! - [`app`]: the composition root that wires everything;
//! - [`clock`]: wall time that does not step while the process runs;
//! - [`context`]: the services every controller shares;
//! - [`k8s`]: controller plumbing, conditions, Events, leader election, the status writer;
//! - [`transport`]: the MQTT connection, what arrives and what is published;
//! - [`fleet`]: the fleet index (device states, id ownership, followers);
//! - [`twin`]: the Device controller and its pure status computation;
//! - [`methods`]: the method engine, its kinds and the generic request controller;
//! - [`rollout`]: the pure wave planner shared by rollouts over many devices;
//! - [`jobs`]: the DeviceJob controller (one method across a selector);
//! - [`configurations`]: DeviceConfiguration (fleet configuration by selector and priority,
//!   the effective twin of each Device, firmware rollouts);
//! - [`budgets`]: disruption budgets, the check every disruptive request passes, and their
//!   status;
//! - [`telemetry`]: metrics and health endpoints.

pub mod app;
pub mod budgets;
pub mod clock;
pub mod config;
pub mod configurations;
pub mod context;
pub mod error;
pub mod fleet;
pub mod jobs;
pub mod k8s;
pub mod methods;
pub mod rollout;
pub mod telemetry;
pub mod transport;
pub mod twin;

pub use config::OperatorConfig;
pub use error::{Error, Result};
pub use k8s::status::writer::FIELD_MANAGER;
