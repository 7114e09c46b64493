//! The kubetwin operator: keeps `Device` twins and `RebootRequest` direct-method calls in
//! step with devices that speak the kubetwin MQTT contract.
//!
//! Layout: pure decision functions (`conditions`, `device_status`) are separate from the API
//! glue in `controller`, so what the operator writes can be tested without a cluster.

pub mod budget;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod device_status;
pub mod error;
pub mod events;
pub mod http;
pub mod inbound;
pub mod leader;
pub mod metrics;
pub mod mqtt;
pub mod reboot_status;
pub mod twin;
pub mod writer;

pub use config::OperatorConfig;
pub use error::{Error, Result};

/// Field manager of every status write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "kubetwin-operator";
