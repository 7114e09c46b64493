//! `kubetwin-device-sim`: simulated IoT devices speaking the kubetwin MQTT contract v1, and
//! [`read_ledger`] for tests that check what the devices did.
//!
//! - [`config`]: command line and validated configuration.
//! - [`device`]: the pure per-device state machine.
//! - [`ledger`]: the persisted per-device state (`{state-dir}/{id}.json`).
//! - [`mqtt`]: one MQTT connection (3.1.1 or 5).
//! - [`runner`]: drives one device over its connections.
//! - [`pace`]: fleet-wide connection pacing.
//! - [`fleet`]: runs all devices.
//! - [`k8s`]: creates the `Device` objects.

pub mod config;
pub mod credentials;
pub mod device;
pub mod download;
pub mod fleet;
pub mod k8s;
pub mod ledger;
pub mod mqtt;
pub mod pace;
pub mod runner;

pub use config::{Cli, Config};
pub use ledger::{Ledger, LedgerError, PendingReboot, ledger_path, read_ledger};
