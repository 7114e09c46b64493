//! What the generic request controller needs of a request resource: where it points, its
//! timeouts, its method kind, and how its status converts to and from the engine's
//! [`Progress`]. A new request CRD implements this once and runs on the same engine,
//! controller and status budget.

use std::time::Duration;

use kubetwin_api::CursorOutOfRange;
use serde::Serialize;

use super::{engine::Progress, kind::MethodKind};
use crate::{error::Error, k8s::Watched};

/// The timeouts of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for the device's first answer.
    pub response: Duration,
    /// How long to wait for an offline device before sending.
    pub connect: Duration,
    /// How long after finishing the object is deleted (`None`: never).
    pub ttl_after_finished: Option<Duration>,
}

/// A custom resource that asks one device to run one method.
pub trait RequestResource: Watched + Serialize {
    /// The status type of the resource.
    type Status: Serialize + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static;
    /// The method kind the request runs.
    type Kind: MethodKind;

    /// Name of the target Device, in the request's namespace.
    fn device_name(&self) -> &str;
    /// The method this request runs.
    fn method_kind(&self) -> Self::Kind;
    /// The request's timeouts.
    fn timeouts(&self) -> Timeouts;
    /// The status the object carries.
    fn current_status(&self) -> Option<&Self::Status>;
    /// The engine's view of a status.
    fn progress_of(status: Option<&Self::Status>) -> Result<Progress, Error>;
    /// The status that shows `progress`.
    fn status_of(progress: &Progress) -> Result<Self::Status, Error>;
}

/// A boot counter as the API stores it (`i64`), failing above `i64::MAX`.
pub fn boot_to_api(boot: Option<u64>) -> Result<Option<i64>, CursorOutOfRange> {
    boot.map(|b| i64::try_from(b).map_err(|_| CursorOutOfRange)).transpose()
}

/// A boot counter from the API (`i64`), failing when negative.
pub fn boot_from_api(boot: Option<i64>) -> Result<Option<u64>, CursorOutOfRange> {
    boot.map(|b| u64::try_from(b).map_err(|_| CursorOutOfRange)).transpose()
}

/// Seconds from a spec field (never negative: admission enforces the bounds).
pub fn seconds(value: i32) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}
