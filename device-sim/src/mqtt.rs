//! MQTT connection I/O: one [`Link`] is one MQTT connection (3.1.1 or 5) with its Last Will.
//! A task polls the rumqttc event loop and forwards what the device needs over a bounded
//! channel; the device publishes from its own task (never from the polling one).

use std::time::Duration;

use bytes::Bytes;
use kubetwin_protocol::MqttVersion;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{LastWill as LastWill5, Packet as Packet5, PublishProperties};
use rumqttc::{Event, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::config::BrokerAddr;
use crate::device::{Incoming, Publication};

/// Largest MQTT packet accepted or sent (the contract limits payloads to 64 KiB).
pub const MAX_PACKET_SIZE: usize = 256 * 1024;
/// Session expiry interval of MQTT 5 persistent sessions, in seconds.
pub const SESSION_EXPIRY_SECS: u32 = 3600;
/// Capacity of the request channel into rumqttc and of the event channel out of it.
const CHANNEL_CAPACITY: usize = 64;
/// Outgoing in-flight limit (an MQTT 5 client otherwise allocates ~14 MB).
const INFLIGHT: u16 = 100;

/// Errors of a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// rumqttc refused the request (its event loop is gone or the topic is invalid).
    #[error("MQTT client: {0}")]
    Client(String),
}

/// What the polling task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// ConnAck received.
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
    /// Broker address.
    pub broker: BrokerAddr,
    /// MQTT client id (the device id).
    pub client_id: String,
    /// MQTT version.
    pub version: MqttVersion,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One MQTT connection attempt: a client handle, the polling task and its events.
pub struct Link {
    client: Client,
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts connecting with `will` as the Last Will (persistent session).
    pub fn open(spec: &LinkSpec, will: &Publication) -> Self {
        let (tx, events) = mpsc::channel(CHANNEL_CAPACITY);
        let host = spec.broker.host.clone();
        let port = spec.broker.port;
        match spec.version {
            MqttVersion::V311 => {
                let mut options = rumqttc::MqttOptions::new(&spec.client_id, host, port);
                options
                    .set_keep_alive(spec.keep_alive)
                    .set_clean_session(false)
                    .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
                    .set_inflight(INFLIGHT)
                    .set_last_will(rumqttc::LastWill::new(
                        will.topic.clone(),
                        will.payload.clone(),
                        QoS::AtLeastOnce,
                        will.retain,
                    ));
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, CHANNEL_CAPACITY);
                // Small request/response messages: do not let Nagle's algorithm delay them.
                eventloop.network_options.set_tcp_nodelay(true);
                let task = tokio::spawn(poll_v4(eventloop, tx));
                Self { client: Client::V4(client), events, task }
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(&spec.client_id, host, port);
                options
                    .set_keep_alive(spec.keep_alive)
                    .set_clean_start(false)
                    .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
                    .set_max_packet_size(u32::try_from(MAX_PACKET_SIZE).ok())
                    .set_outgoing_inflight_upper_limit(INFLIGHT)
                    .set_last_will(LastWill5::new(
                        will.topic.clone(),
                        will.payload.clone(),
                        QoS5::AtLeastOnce,
                        will.retain,
                        None,
                    ));
                let mut network = rumqttc::NetworkOptions::new();
                network.set_tcp_nodelay(true);
                options.set_network_options(network);
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, CHANNEL_CAPACITY);
                let task = tokio::spawn(poll_v5(eventloop, tx));
                Self { client: Client::V5(client), events, task }
            }
        }
    }

    /// The next event; `None` once the polling task ended and every event was read.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// Subscribes to `filters` with QoS 1.
    pub async fn subscribe(&self, filters: &[String]) -> Result<(), LinkError> {
        for filter in filters {
            let result = match &self.client {
                Client::V4(c) => {
                    c.subscribe(filter.as_str(), QoS::AtLeastOnce).await.map_err(|e| e.to_string())
                }
                Client::V5(c) => {
                    c.subscribe(filter.as_str(), QoS5::AtLeastOnce).await.map_err(|e| e.to_string())
                }
            };
            result.map_err(LinkError::Client)?;
        }
        Ok(())
    }

    /// Publishes with QoS 1 (MQTT 5: with the Correlation Data, if any).
    pub async fn publish(&self, p: &Publication) -> Result<(), LinkError> {
        let payload = Bytes::from(p.payload.clone());
        match &self.client {
            Client::V4(c) => c
                .publish(p.topic.as_str(), QoS::AtLeastOnce, p.retain, payload)
                .await
                .map_err(|e| LinkError::Client(e.to_string())),
            Client::V5(c) => {
                let result = match &p.correlation {
                    Some(data) => {
                        let properties = PublishProperties {
                            correlation_data: Some(Bytes::from(data.clone())),
                            ..PublishProperties::default()
                        };
                        c.publish_with_properties(
                            p.topic.as_str(),
                            QoS5::AtLeastOnce,
                            p.retain,
                            payload,
                            properties,
                        )
                        .await
                    }
                    None => c.publish(p.topic.as_str(), QoS5::AtLeastOnce, p.retain, payload).await,
                };
                result.map_err(|e| LinkError::Client(e.to_string()))
            }
        }
    }

    /// Disconnects cleanly (DISCONNECT, so the broker discards the Last Will), waiting at most
    /// `timeout` for the requests queued before it to be written.
    pub async fn close(mut self, timeout: Duration) {
        let sent = match &self.client {
            Client::V4(c) => c.disconnect().await.is_ok(),
            Client::V5(c) => c.disconnect().await.is_ok(),
        };
        if sent {
            let drain = async { while self.events.recv().await.is_some() {} };
            if tokio::time::timeout(timeout, drain).await.is_err() {
                debug!("clean disconnect timed out");
            }
        }
        self.task.abort();
    }

    /// Drops the TCP connection without DISCONNECT: the broker publishes the Last Will.
    pub fn drop_ungracefully(self) {
        self.task.abort();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn poll_v4(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    let mut disconnecting = false;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                LinkEvent::Connected { session_present: ack.session_present }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message(Incoming {
                topic: p.topic,
                payload: p.payload.to_vec(),
                response_topic: None,
                correlation: None,
            }),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing the socket
                // ourselves right away can make the broker fail writing its PUBACKs and
                // treat the DISCONNECT as never received (it then publishes the Last Will).
                disconnecting = true;
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                let event =
                    if disconnecting { LinkEvent::Closed } else { LinkEvent::Down(e.to_string()) };
                let _ = tx.send(event).await;
                return;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

async fn poll_v5(mut eventloop: rumqttc::v5::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    let mut disconnecting = false;
    loop {
        let event = match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(Packet5::ConnAck(ack))) => {
                LinkEvent::Connected { session_present: ack.session_present }
            }
            Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) => {
                let (response_topic, correlation) = p
                    .properties
                    .map(|props| (props.response_topic, props.correlation_data.map(|d| d.to_vec())))
                    .unwrap_or_default();
                LinkEvent::Message(Incoming {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    response_topic,
                    correlation,
                })
            }
            Ok(rumqttc::v5::Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing the socket
                // ourselves right away can make the broker fail writing its PUBACKs and
                // treat the DISCONNECT as never received (it then publishes the Last Will).
                disconnecting = true;
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                let event =
                    if disconnecting { LinkEvent::Closed } else { LinkEvent::Down(e.to_string()) };
                let _ = tx.send(event).await;
                return;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
