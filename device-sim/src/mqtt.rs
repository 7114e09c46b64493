//! One MQTT connection of a simulated device, on the compact client of `kubetwin-mqtt` (driven
//! by the device's own task, a few KiB per connection, so that a whole fleet fits in one
//! process; B9 measures it): a persistent session under the device id, the Last Will, the
//! device's subscriptions (made on every new session; the session is reported once the SUBACK
//! is in), and no automatic reconnect (the runner decides when to connect again).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use kubetwin_mqtt::{
    BrokerUrl, ClientError, ClientOptions, CompactConnection, Event, MqttVersion,
    RequestProperties, Security, Session,
};
use tracing::warn;

use crate::device::{Incoming, Publication};

/// Largest MQTT packet accepted or sent (the contract limits payloads to 64 KiB).
pub const MAX_PACKET_SIZE: usize = 256 * 1024;
/// Session expiry interval of MQTT 5 persistent sessions, in seconds.
pub const SESSION_EXPIRY_SECS: u32 = 3600;
/// Outgoing in-flight limit: a device's largest burst, a resync (presence, a full report and
/// up to `RESYNC_ANSWERS` answers), goes out at once; a publication beyond it waits for an
/// acknowledgement, delayed, not lost. The broker's Receive Maximum lowers it.
const INFLIGHT: u16 = 2 + crate::device::RESYNC_ANSWERS as u16;

/// What the connection reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A session is up and the subscriptions were answered.
    Connected {
        /// Whether the broker resumed a session.
        session_present: bool,
    },
    /// A message arrived.
    Message(Incoming),
    /// The connection ended (error, refused, or closed by the broker).
    Down(String),
    /// A clean DISCONNECT was sent.
    Closed,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Broker.
    pub broker: BrokerUrl,
    /// MQTT client id (the device id).
    pub client_id: String,
    /// MQTT version.
    pub version: MqttVersion,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Topic filters to subscribe to on every new session.
    pub subscriptions: Vec<String>,
    /// TLS and credentials.
    pub security: Security,
}

fn publication(p: &Publication) -> kubetwin_mqtt::Publication {
    let mut message =
        kubetwin_mqtt::Publication::new(p.topic.clone(), Bytes::from(p.payload.clone()), p.retain);
    message.properties = p.correlation.as_ref().map(|data| RequestProperties {
        correlation_data: Some(Bytes::from(data.clone())),
        ..Default::default()
    });
    message
}

/// One MQTT connection attempt.
pub struct Link {
    connection: CompactConnection,
    /// Events that arrived while the device was busy ([`Link::serve_while`]), for `next`.
    deferred: VecDeque<LinkEvent>,
    /// The connection gave its last event.
    ended: bool,
}

impl Link {
    /// Starts connecting with `will` as the Last Will (persistent session).
    pub fn open(spec: &LinkSpec, will: &Publication) -> Self {
        let mut options =
            ClientOptions::new(spec.broker.clone(), spec.client_id.clone(), spec.version);
        options.keep_alive = spec.keep_alive;
        options.session = Session::Persistent { expiry_secs: SESSION_EXPIRY_SECS };
        options.max_packet_bytes = MAX_PACKET_SIZE;
        options.inflight = INFLIGHT;
        options.subscriptions = spec.subscriptions.clone();
        options.last_will = Some(publication(will));
        options.security = spec.security.clone();
        Self {
            connection: CompactConnection::new(options),
            deferred: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event (those deferred first); `None` once the connection ended and every
    /// event was read. Cancel-safe.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        match self.deferred.pop_front() {
            Some(event) => Some(event),
            None => self.receive().await,
        }
    }

    /// Runs `work` while the connection is kept served (keep-alive, acknowledgements): the
    /// device's task drives its connection, so a long wait (a firmware download, a response
    /// delay) would otherwise let the broker time the device out. What arrives meanwhile waits
    /// for [`Link::next`], as the device handles nothing else before `work` ends.
    pub async fn serve_while<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                // `receive` marks the link ended when it gives `None`.
                event = self.receive(), if !self.ended => {
                    if let Some(event) = event {
                        self.deferred.push_back(event);
                    }
                }
            }
        }
    }

    /// The connection's next event for the device.
    async fn receive(&mut self) -> Option<LinkEvent> {
        loop {
            let Some(event) = self.connection.next().await else {
                self.ended = true;
                return None;
            };
            let event = match event {
                Event::Connected { session_present, refused } => {
                    for refusal in refused {
                        warn!(filter = %refusal.filter, reason = %refusal.reason, "the broker refused a subscription of the device");
                    }
                    LinkEvent::Connected { session_present }
                }
                Event::Message(message) => LinkEvent::Message(Incoming {
                    topic: message.topic,
                    payload: message.payload.to_vec(),
                    response_topic: message.response_topic,
                    correlation: message.correlation.map(|c| c.to_vec()),
                    retained: message.retained,
                }),
                Event::SubAck { .. } => continue,
                Event::PublishRefused { reason } => {
                    warn!(%reason, "the broker refused a publication of the device");
                    continue;
                }
                Event::Down { reason } => LinkEvent::Down(reason),
                Event::Closed => LinkEvent::Closed,
            };
            return Some(event);
        }
    }

    /// Publishes with QoS 1 (MQTT 5: with the Correlation Data, if any).
    pub async fn publish(&mut self, p: &Publication) -> Result<(), ClientError> {
        self.connection.publish(publication(p)).await
    }

    /// Disconnects cleanly (DISCONNECT, so the broker discards the Last Will), waiting at most
    /// `timeout` for the broker to hang up. `false`: not within `timeout`, or the connection
    /// had already ended (the broker may publish the Last Will).
    pub async fn close(self, timeout: Duration) -> bool {
        self.connection.close(timeout).await
    }

    /// Drops the TCP connection without DISCONNECT: the broker publishes the Last Will.
    pub fn drop_ungracefully(self) {
        drop(self.connection);
    }
}
