//! Table tests of the method engine, without a cluster: the reboot kind through every phase
//! ([`reboot`]), and a method kind defined only here that runs through the same engine
//! ([`custom_kind`]).

mod custom_kind;
mod faults;
mod named;
mod reboot;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kubetwin_api::{RebootRequest, RebootRequestStatus};

pub(super) use super::engine::{DeviceView, RESEND_INTERVAL, SENT_STATUS_HOLD, human_duration};
pub(super) use crate::fleet::Answer;
pub(super) use kubetwin_protocol::{Cursor, RequestId, ResponseStatus};

use super::{
    engine::{Effect, RequestView, Settings, Subject},
    resource::RequestResource,
};

/// The engine settings, as the reboot tests name them.
pub(super) type RebootSettings = Settings;

/// What one engine step did to a RebootRequest, in the terms the reboot tests assert on.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RebootStep {
    /// The status after the step (the current one when the step offered none).
    pub status: RebootRequestStatus,
    /// The request was published.
    pub send: bool,
    /// The step asked to look again after this long.
    pub requeue_after: Option<Duration>,
    /// The step deleted the request.
    pub delete: bool,
    /// The phase changed (an Event was recorded on the request).
    pub transition: bool,
    /// How long the offered status waits before it is written (`None`: no wait).
    pub hold: Option<Duration>,
}

/// Runs the engine on a RebootRequest, converting status in and out exactly as the
/// controller does, and summarises the effects.
pub(super) fn step(
    request: &RebootRequest,
    device: &DeviceView,
    now: Timestamp,
    settings: Settings,
) -> RebootStep {
    let persisted = RebootRequest::progress_of(request.status.as_ref()).expect("status converts");
    step_with(request, device, now, settings, persisted.phase, None)
}

/// Like [`step`], with the phase the API server holds and when this process first saw the
/// request given explicitly.
pub(super) fn step_with(
    request: &RebootRequest,
    device: &DeviceView,
    now: Timestamp,
    settings: Settings,
    persisted_phase: Option<super::engine::Phase>,
    first_seen: Option<Timestamp>,
) -> RebootStep {
    let progress = RebootRequest::progress_of(request.status.as_ref()).expect("status converts");
    let kind = request.method_kind();
    let timeouts = request.timeouts();
    let view = RequestView {
        device_name: request.device_name(),
        uid: request.metadata.uid.as_deref().expect("uid"),
        generation: request.metadata.generation,
        created: request.metadata.creation_timestamp.as_ref().map(|t| t.0),
        response_timeout: timeouts.response,
        connect_timeout: timeouts.connect,
        ttl_after_finished: timeouts.ttl_after_finished,
        kind: &kind,
        progress,
        persisted_phase,
        first_seen,
    };
    let mut result = RebootStep {
        status: request.status.clone().unwrap_or_default(),
        send: false,
        requeue_after: None,
        delete: false,
        transition: false,
        hold: None,
    };
    for effect in super::engine::step(&view, device, now, &settings) {
        match effect {
            Effect::Publish(_) => result.send = true,
            Effect::OfferStatus { progress, hold, .. } => {
                result.status = RebootRequest::status_of(&progress).expect("status converts");
                result.hold = hold;
            }
            Effect::Event { subject: Subject::Request, .. } => result.transition = true,
            Effect::Event { subject: Subject::Device, .. } => {}
            Effect::Delete => result.delete = true,
            Effect::Requeue(after) => result.requeue_after = Some(after),
        }
    }
    result
}
