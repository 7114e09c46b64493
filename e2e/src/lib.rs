//! Test harness of kubetwin, in the spirit of controller-runtime's envtest.
//!
//! [`TestEnv`] starts a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! built from pinned Go modules by `hack/tools.sh`) and a real MQTT broker (mosquitto) on free
//! loopback ports, writes an admin kubeconfig and hands out [`kube::Client`]s. Everything is
//! torn down when the environment is dropped, and child processes die with the test process
//! even when it is killed.

pub mod broker;
pub mod bulk;
pub mod certs;
pub mod control_plane;
pub mod env;
pub mod error;
pub mod faults;
pub mod firmware;
pub mod fleet;
pub mod helm;
pub mod kubectl;
pub mod mqtt;
pub mod process;
pub mod scenario;
pub mod tools;
pub mod wait;

pub use env::{TestEnv, TestNamespace, install_crds};

pub use error::{Error, Result};
