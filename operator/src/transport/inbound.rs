//! What arrives over MQTT: each message is decoded, applied to the fleet index with one call,
//! and turned into reconciles of the Device and the requests that follow it. Bad input is
//! dropped, counted and logged at most once a minute per device id; it never changes status.

use std::{collections::HashMap, sync::Arc, time::Instant};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use kubetwin_api::Device;
use kubetwin_mqtt::{Event, Received};
use kubetwin_protocol::{Codec, DecodeError, ParsedTopic, Topics};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{
    context::Context,
    fleet::{Admitted, ClearReason, Follower, unknown::LogLimiter},
    k8s::wait_synced,
    twin::cache::{CachedDevice, cached_ref},
};

/// Wakes the reconcile of a request that follows a Device.
pub type RequestTrigger = Box<dyn Fn(&Follower) + Send + Sync>;
/// Wakes the reconcile of every object of one kind.
pub type ResyncAll = Box<dyn Fn() + Send + Sync>;

/// How inbound messages reach the controllers.
pub struct Triggers {
    /// Reconciles a Device.
    pub devices: UnboundedSender<ObjectRef<CachedDevice>>,
    /// Reconciles a request, by the request's kind label.
    pub requests: HashMap<&'static str, RequestTrigger>,
    /// Reconciles every object of a kind (after a new MQTT session).
    pub resync: Vec<ResyncAll>,
}

impl Triggers {
    fn device(&self, device: ObjectRef<Device>) {
        // A closed channel means the controller stopped: the process is shutting down.
        let _ = self.devices.unbounded_send(cached_ref(device));
    }

    fn follower(&self, follower: &Follower) {
        match self.requests.get(follower.kind) {
            Some(trigger) => trigger(follower),
            None => warn!(kind = follower.kind, "no controller for a followed request kind"),
        }
    }
}

/// Decodes messages under one root with one payload limit.
pub struct Decoder {
    /// Topics under the configured root.
    pub topics: Topics,
    /// Payload codec with the size limit.
    pub codec: Codec,
}

/// A publication the broker refused (MQTT 5 PUBACK reason code): when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRefusal {
    /// When the refusal arrived.
    pub at: Instant,
    /// The broker's reason code.
    pub reason: String,
}

/// Processes MQTT events until the connection task ends. Publication refusals go to
/// `refusals` (readiness reports them).
pub async fn run(
    ctx: Arc<Context>,
    decoder: Decoder,
    triggers: Triggers,
    mut events: mpsc::Receiver<Event>,
    refusals: watch::Sender<Option<PublishRefusal>>,
) {
    // Messages wait in the channel until the Device cache is complete, so retained presence
    // delivered at start is matched against every existing Device.
    if !wait_synced(&ctx.devices).await {
        return;
    }
    let mut log = LogLimiter::default();
    while let Some(event) = events.recv().await {
        ctx.metrics.set_inbound_depth(events.len());
        match event {
            Event::Connected { session_present, refused } => {
                for refusal in &refused {
                    ctx.metrics.mqtt_refused("subscribe");
                    warn!(filter = %refusal.filter, reason = %refusal.reason, "the broker refused a subscription the operator needs; not ready");
                }
                if session_present {
                    // The broker kept our session, so it kept the retained desired documents.
                    info!("MQTT session resumed");
                } else {
                    info!("new MQTT session: republishing desired documents");
                    ctx.fleet().forget_published();
                }
                for resync in &triggers.resync {
                    resync();
                }
                // After the subscriptions (the Connected event follows the SUBACK), so every
                // full report the announcement asks for reaches this session.
                let issued_at = kubetwin_protocol::timestamp::format_rfc3339(
                    crate::clock::now().as_millisecond(),
                );
                let devices = ctx.fleet().sizes().0;
                match ctx.publisher.new_session(&issued_at, devices).await {
                    Ok(session) => {
                        info!(%session, "announced a new operator session: devices resync")
                    }
                    Err(error) => {
                        warn!(%error, "cannot announce the operator session; devices will not resync")
                    }
                }
            }
            Event::PublishRefused { reason } => {
                ctx.metrics.mqtt_refused("publish");
                warn!(%reason, "the broker refused a publication of the operator; not ready");
                let _ = refusals.send(Some(PublishRefusal { at: Instant::now(), reason }));
            }
            Event::Down { reason } => debug!(%reason, "MQTT session down"),
            // The operator makes no subscriptions of its own beyond the session's.
            Event::SubAck { .. } => {}
            Event::Closed => debug!("MQTT connection closed"),
            Event::Message(message) => handle(&ctx, &decoder, &triggers, &message, &mut log),
        }
    }
}

/// Applies one message to the fleet index and wakes what it changed.
fn handle(
    ctx: &Context,
    decoder: &Decoder,
    triggers: &Triggers,
    message: &Received,
    log: &mut LogLimiter,
) {
    let clock = Instant::now();
    let (device, admitted) =
        match decoder.codec.decode_inbound(&decoder.topics, &message.topic, &message.payload) {
            Ok(inbound) => {
                let admitted = ctx.fleet().admit(&inbound, crate::clock::now(), clock);
                (inbound.device_id().clone(), admitted)
            }
            Err(error) => match (&error, decoder.topics.parse(&message.topic)) {
                // A cleared retained desired document: an overwrite, unless nobody owns the id.
                (DecodeError::Empty, Ok(ParsedTopic::Desired { device_id })) => {
                    let admitted = ctx.fleet().desired_cleared(&device_id);
                    (device_id, admitted)
                }
                (_, parsed) => {
                    let device = parsed.map(|t| t.device_id().to_string()).unwrap_or_default();
                    reject(ctx, log, &device, &message.topic, &error, clock);
                    return;
                }
            },
        };
    match admitted {
        Admitted::Accepted { kind, owner, followers } => {
            ctx.metrics.received(kind.as_str());
            if kind == crate::fleet::MessageKind::Presence {
                debug!(%device, retained = message.retained, followers = followers.len(), "presence applied");
            }
            triggers.device(owner);
            for follower in &followers {
                triggers.follower(follower);
            }
        }
        Admitted::Dropped { kind, reason } => {
            ctx.metrics.dropped(reason);
            debug!(%device, kind = kind.as_str(), reason, "message dropped");
        }
        Admitted::Unknown { kind } => {
            debug!(%device, kind = kind.as_str(), retained = message.retained, "message for an unknown device id kept");
            let error = DecodeError::UnknownDevice(device.to_string());
            reject(ctx, log, &device, &message.topic, &error, clock);
        }
        Admitted::DesiredOverwritten { owner } => {
            ctx.metrics.desired_overwritten();
            warn!(%device, topic = %message.topic, "the retained desired document was overwritten by someone else; publishing it again");
            triggers.device(owner);
        }
        Admitted::DesiredOrphaned => {
            let publisher = ctx.publisher.clone();
            let metrics = ctx.metrics.clone();
            // Off the inbound loop: a publish may wait for room in the client's queue.
            tokio::spawn(async move {
                match publisher.clear_desired(&device).await {
                    Ok(()) => {
                        metrics.desired_cleared(ClearReason::Orphan);
                        info!(%device, "cleared a desired document no Device has (left behind by a Device deleted while the operator was away)");
                    }
                    Err(error) => {
                        warn!(%device, %error, "cannot clear an orphaned desired document")
                    }
                }
            });
        }
    }
}

fn reject(
    ctx: &Context,
    log: &mut LogLimiter,
    device: &str,
    topic: &str,
    error: &DecodeError,
    now: Instant,
) {
    ctx.metrics.dropped(error.reason());
    if log.should_log(device, now) {
        warn!(device, topic, reason = error.reason(), %error, "MQTT message dropped (logged once a minute per device)");
    }
}
