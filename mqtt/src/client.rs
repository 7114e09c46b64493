//! One MQTT connection and its poll loop. The loop is the only place that polls a rumqttc
//! event loop: it forwards what arrives as [`Event`]s over a bounded channel (so a slow reader
//! slows the broker down instead of growing memory), keeps [`LinkState`] current, subscribes
//! on every new session and says what the broker refused. Publishing happens from other tasks
//! through a [`Client`]; the polling task never publishes (rumqttc can deadlock when it does).

use std::time::Duration;

use bytes::Bytes;
use kubetwin_protocol::MqttVersion;
use rumqttc::v5::mqttbytes::{
    QoS as QoS5,
    v5::{
        Filter, LastWill as LastWill5, Packet as Packet5, PubAckReason, PublishProperties,
        SubscribeReasonCode as SubscribeReasonCode5,
    },
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{security::Security, url::BrokerUrl};

/// Session handling at CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Start clean; the broker forgets the session at disconnect.
    Clean,
    /// Keep the session (subscriptions and queued QoS 1 messages) for `expiry_secs` after a
    /// disconnect (MQTT 5 Session Expiry Interval; 3.1.1 keeps it until the broker drops it).
    Persistent {
        /// Seconds the broker keeps the session.
        expiry_secs: u32,
    },
}

/// What the poll loop does when the connection fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnect {
    /// End the loop: the owner opens a new connection when it wants one.
    Never,
    /// Keep trying, waiting `min` after the first failure, doubling up to `max`.
    Backoff {
        /// First wait.
        min: Duration,
        /// Longest wait.
        max: Duration,
    },
}

impl Reconnect {
    /// Wait before reconnecting after `failures` failed attempts in a row.
    fn delay(self, failures: u32) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::Backoff { min, max } => Some(min.saturating_mul(1 << failures.min(16)).min(max)),
        }
    }
}

/// MQTT 5 request/response properties of a publication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestProperties {
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// Message Expiry Interval, in seconds.
    pub message_expiry_seconds: Option<u32>,
}

/// A message to publish with QoS 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Whether the broker keeps it for later subscribers.
    pub retain: bool,
    /// MQTT 5 properties; ignored on 3.1.1.
    pub properties: Option<RequestProperties>,
}

impl Publication {
    /// A QoS 1 publication without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, retain: bool) -> Self {
        Self { topic: topic.into(), payload: payload.into(), retain, properties: None }
    }
}

/// A message that arrived on a subscribed topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Topic it was published on.
    pub topic: String,
    /// Raw payload.
    pub payload: Bytes,
    /// Delivered from the broker's retained store.
    pub retained: bool,
    /// MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data.
    pub correlation: Option<Bytes>,
}

/// A subscription the broker refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The topic filter.
    pub filter: String,
    /// The broker's reason code, as rumqttc names it.
    pub reason: String,
}

/// Whether a session is up, and what the broker refused in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LinkState {
    /// No session.
    #[default]
    Down,
    /// A session is up and its subscriptions were answered.
    Up {
        /// Subscriptions the broker refused in this session (empty when all were granted).
        refused: Vec<Refusal>,
    },
}

/// What happened on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session started and every subscription was answered (granted or refused); retained
    /// messages follow.
    Connected {
        /// The broker kept the previous session.
        session_present: bool,
        /// Subscriptions the broker refused.
        refused: Vec<Refusal>,
    },
    /// A message arrived.
    Message(Received),
    /// The broker answered a subscription made with [`Client::subscribe`]: for each filter of
    /// it, in order, `None` when granted, else the refusal reason.
    SubAck {
        /// Per filter: the refusal reason, if refused.
        refused: Vec<Option<String>>,
    },
    /// The broker refused a QoS 1 publication (MQTT 5 PUBACK reason code of 0x80 or more).
    PublishRefused {
        /// The reason code, as rumqttc names it.
        reason: String,
    },
    /// The connection failed or was lost.
    Down {
        /// Why.
        reason: String,
    },
    /// The connection ended after a clean DISCONNECT.
    Closed,
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Broker.
    pub broker: BrokerUrl,
    /// Client id.
    pub client_id: String,
    /// Protocol version.
    pub version: MqttVersion,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Clean or persistent session.
    pub session: Session,
    /// Largest packet sent or accepted.
    pub max_packet_bytes: usize,
    /// Most QoS 1 publications awaiting their PUBACK (an MQTT 5 client allocates a slot table
    /// of this size: keep it small for simulated fleets).
    pub inflight: u16,
    /// Capacity of the request channel into rumqttc and of the event channel out of the loop.
    pub queue: usize,
    /// Topic filters subscribed (QoS 1) on every new session, in one SUBSCRIBE.
    pub subscriptions: Vec<String>,
    /// Last Will.
    pub last_will: Option<Publication>,
    /// TLS and credentials.
    pub security: Security,
    /// What to do when the connection fails.
    pub reconnect: Reconnect,
}

impl ClientOptions {
    /// Options with the usual values: 30 s keep-alive, clean session, 256 KiB packets, 100
    /// in flight, a queue of 100, no subscriptions, no Last Will, no security, no reconnect.
    pub fn new(broker: BrokerUrl, client_id: impl Into<String>, version: MqttVersion) -> Self {
        Self {
            broker,
            client_id: client_id.into(),
            version,
            keep_alive: Duration::from_secs(30),
            session: Session::Clean,
            max_packet_bytes: 256 * 1024,
            inflight: 100,
            queue: 100,
            subscriptions: Vec::new(),
            last_will: None,
            security: Security::default(),
            reconnect: Reconnect::Never,
        }
    }
}

/// Why a request could not be handed to the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The poll loop is gone.
    #[error("the MQTT connection is closed")]
    Closed,
    /// The request queue is full (only from the `try_` calls).
    #[error("the MQTT request queue is full")]
    Full,
    /// rumqttc refused the request (for example an invalid topic).
    #[error("MQTT client: {0}")]
    Refused(String),
}

fn client_error(error: impl std::fmt::Display) -> ClientError {
    let text = error.to_string();
    if text.contains("full") || text.contains("Full") {
        ClientError::Full
    } else if text.contains("closed") || text.contains("Closed") {
        ClientError::Closed
    } else {
        ClientError::Refused(text)
    }
}

/// Publishes and subscribes from any task; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = match self.inner {
            Inner::V5(_) => "5",
            Inner::V311(_) => "3.1.1",
        };
        f.debug_struct("Client").field("version", &version).finish()
    }
}

pub(crate) fn properties5(properties: Option<RequestProperties>) -> Option<PublishProperties> {
    properties.map(|p| PublishProperties {
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        message_expiry_interval: p.message_expiry_seconds.map(|s| s.max(1)),
        content_type: Some("application/json".into()),
        ..Default::default()
    })
}

impl Client {
    /// Queues a QoS 1 publication, waiting for room in the request queue.
    pub async fn publish(&self, message: Publication) -> Result<(), ClientError> {
        let Publication { topic, payload, retain, properties } = message;
        match &self.inner {
            Inner::V5(client) => match properties5(properties) {
                Some(p) => client
                    .publish_with_properties(topic, QoS5::AtLeastOnce, retain, payload, p)
                    .await
                    .map_err(client_error),
                None => client
                    .publish(topic, QoS5::AtLeastOnce, retain, payload)
                    .await
                    .map_err(client_error),
            },
            Inner::V311(client) => client
                .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(client_error),
        }
    }

    /// Queues a QoS 1 publication if the request queue has room, without waiting.
    pub fn try_publish(&self, message: Publication) -> Result<(), ClientError> {
        let Publication { topic, payload, retain, properties } = message;
        match &self.inner {
            Inner::V5(client) => match properties5(properties) {
                Some(p) => client
                    .try_publish_with_properties(topic, QoS5::AtLeastOnce, retain, payload, p)
                    .map_err(client_error),
                None => client
                    .try_publish(topic, QoS5::AtLeastOnce, retain, payload)
                    .map_err(client_error),
            },
            Inner::V311(client) => client
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .map_err(client_error),
        }
    }

    /// Subscribes to `filters` with QoS 1 in one SUBSCRIBE (outside the automatic
    /// subscriptions of [`ClientOptions::subscriptions`]).
    pub async fn subscribe(&self, filters: &[String]) -> Result<(), ClientError> {
        match &self.inner {
            Inner::V5(client) => {
                let filters = filters.iter().map(|f| Filter::new(f.clone(), QoS5::AtLeastOnce));
                client.subscribe_many(filters).await.map_err(client_error)
            }
            Inner::V311(client) => {
                let filters = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce));
                client.subscribe_many(filters).await.map_err(client_error)
            }
        }
    }

    /// Sends DISCONNECT after what is already queued (the broker then discards the Last Will).
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match &self.inner {
            Inner::V5(client) => client.disconnect().await.map_err(client_error),
            Inner::V311(client) => client.disconnect().await.map_err(client_error),
        }
    }
}

/// One connection: a [`Client`] for requests, the events of the poll loop and the link state.
/// Dropping it stops the poll loop (without DISCONNECT: the broker publishes the Last Will).
pub struct Connection {
    /// Publishes and subscribes.
    pub client: Client,
    events: mpsc::Receiver<Event>,
    state: watch::Receiver<LinkState>,
    task: PollTask,
}

/// The poll loop of a connection; dropping it stops the loop.
#[derive(Debug)]
pub struct PollTask(JoinHandle<()>);

impl Drop for PollTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Connection {
    /// The next event; `None` once the loop ended and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The current link state, updated by the loop as soon as it changes.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Splits the connection for owners that read events, state and publish from different
    /// tasks.
    pub fn into_parts(
        self,
    ) -> (Client, mpsc::Receiver<Event>, watch::Receiver<LinkState>, PollTask) {
        (self.client, self.events, self.state, self.task)
    }

    /// Disconnects cleanly (the broker discards the Last Will), waiting at most `timeout` for
    /// what was queued before to be written and the broker to close the connection. Returns
    /// whether it was clean (`false`: what was still queued is dropped with the connection).
    pub async fn close(mut self, timeout: Duration) -> bool {
        if self.client.disconnect().await.is_err() {
            return false;
        }
        let drain = async {
            while let Some(event) = self.events.recv().await {
                match event {
                    Event::Closed => return true,
                    Event::Down { .. } => return false,
                    _ => {}
                }
            }
            false
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(clean) => clean,
            Err(_) => {
                debug!("clean disconnect timed out");
                false
            }
        }
    }
}

/// Starts connecting with `options` and returns at once; the session shows up as
/// [`Event::Connected`].
pub fn connect(options: ClientOptions) -> Connection {
    let (events_tx, events) = mpsc::channel(options.queue.max(1));
    let (state_tx, state) = watch::channel(LinkState::Down);
    let (client, task) = match options.version {
        MqttVersion::V5 => {
            let (client, eventloop) = v5_client(&options);
            let adapter = V5(eventloop);
            let client = Client { inner: Inner::V5(client) };
            let task =
                tokio::spawn(poll_loop(adapter, client.clone(), options, events_tx, state_tx));
            (client, task)
        }
        MqttVersion::V311 => {
            let (client, eventloop) = v311_client(&options);
            let adapter = V311(eventloop);
            let client = Client { inner: Inner::V311(client) };
            let task =
                tokio::spawn(poll_loop(adapter, client.clone(), options, events_tx, state_tx));
            (client, task)
        }
    };
    Connection { client, events, state, task: PollTask(task) }
}

fn transport(security: &Security) -> Option<rumqttc::Transport> {
    security.tls.as_ref().map(|tls| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone()))
    })
}

fn v5_client(o: &ClientOptions) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut options = rumqttc::v5::MqttOptions::new(&o.client_id, &o.broker.host, o.broker.port);
    options
        .set_keep_alive(o.keep_alive)
        .set_max_packet_size(u32::try_from(o.max_packet_bytes).ok())
        .set_outgoing_inflight_upper_limit(o.inflight);
    match o.session {
        Session::Clean => options.set_clean_start(true),
        Session::Persistent { expiry_secs } => {
            options.set_clean_start(false).set_session_expiry_interval(Some(expiry_secs))
        }
    };
    if let Some(will) = &o.last_will {
        options.set_last_will(LastWill5::new(
            will.topic.clone(),
            will.payload.clone(),
            QoS5::AtLeastOnce,
            will.retain,
            None,
        ));
    }
    if let Some(transport) = transport(&o.security) {
        options.set_transport(transport);
    }
    if let Some(credentials) = &o.security.credentials {
        options.set_credentials(&credentials.username, &credentials.password);
    }
    // Small request/response messages: Nagle's algorithm would hold them back.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, o.queue.max(1));
    unreserve_events(&mut eventloop.state.events);
    (client, eventloop)
}

/// Gives back the room rumqttc reserves for 100 pending events per connection (an MQTT 5
/// event is 392 bytes: 39 KB reserved per connection, of which a simulated fleet kept ~10 KiB
/// resident per device). The loop takes events out as soon as a poll made them; one poll
/// reads up to 10 packets, so the queue grows to a few dozen slots at most, where needed.
fn unreserve_events<T>(events: &mut std::collections::VecDeque<T>) {
    *events = std::collections::VecDeque::new();
}

fn v311_client(o: &ClientOptions) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut options = rumqttc::MqttOptions::new(&o.client_id, &o.broker.host, o.broker.port);
    options
        .set_keep_alive(o.keep_alive)
        .set_max_packet_size(o.max_packet_bytes, o.max_packet_bytes)
        .set_inflight(o.inflight)
        .set_clean_session(o.session == Session::Clean);
    if let Some(will) = &o.last_will {
        options.set_last_will(rumqttc::LastWill::new(
            will.topic.clone(),
            will.payload.clone(),
            rumqttc::QoS::AtLeastOnce,
            will.retain,
        ));
    }
    if let Some(transport) = transport(&o.security) {
        options.set_transport(transport);
    }
    if let Some(credentials) = &o.security.credentials {
        options.set_credentials(&credentials.username, &credentials.password);
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, o.queue.max(1));
    eventloop.network_options.set_tcp_nodelay(true);
    unreserve_events(&mut eventloop.state.events);
    (client, eventloop)
}

/// What one poll of either protocol's event loop produced, in the loop's own terms.
enum Polled {
    /// CONNACK: a session started.
    ConnAck { session_present: bool },
    /// SUBACK: for each filter of the SUBSCRIBE, `None` when granted, else the refusal.
    SubAck(Vec<Option<String>>),
    /// A PUBACK with a failure reason code (MQTT 5).
    PubAckRefused(String),
    /// An inbound message.
    Message(Received),
    /// We sent DISCONNECT.
    Disconnecting,
    /// Anything else.
    Other,
    /// The connection failed.
    Lost(String),
}

/// One protocol version's event loop behind the face the poll loop needs.
trait Protocol: Send + 'static {
    fn poll(&mut self) -> impl Future<Output = Polled> + Send;
}

struct V5(rumqttc::v5::EventLoop);

impl Protocol for V5 {
    async fn poll(&mut self) -> Polled {
        use rumqttc::v5::Event as E;
        match self.0.poll().await {
            Ok(E::Incoming(Packet5::ConnAck(ack))) => {
                Polled::ConnAck { session_present: ack.session_present }
            }
            Ok(E::Incoming(Packet5::SubAck(ack))) => Polled::SubAck(
                ack.return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReasonCode5::Success(_) => None,
                        refused => Some(format!("{refused:?}")),
                    })
                    .collect(),
            ),
            Ok(E::Incoming(Packet5::PubAck(ack)))
                if !matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ) =>
            {
                Polled::PubAckRefused(format!("{:?}", ack.reason))
            }
            Ok(E::Incoming(Packet5::Publish(publish))) => {
                let (response_topic, correlation) = publish
                    .properties
                    .map(|p| (p.response_topic, p.correlation_data))
                    .unwrap_or_default();
                Polled::Message(Received {
                    topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                    payload: publish.payload,
                    retained: publish.retain,
                    response_topic,
                    correlation,
                })
            }
            Ok(E::Outgoing(rumqttc::Outgoing::Disconnect)) => Polled::Disconnecting,
            Ok(_) => Polled::Other,
            Err(error) => Polled::Lost(error.to_string()),
        }
    }
}

struct V311(rumqttc::EventLoop);

impl Protocol for V311 {
    async fn poll(&mut self) -> Polled {
        use rumqttc::{Event as E, Packet};
        match self.0.poll().await {
            Ok(E::Incoming(Packet::ConnAck(ack))) => {
                Polled::ConnAck { session_present: ack.session_present }
            }
            Ok(E::Incoming(Packet::SubAck(ack))) => Polled::SubAck(
                ack.return_codes
                    .iter()
                    .map(|code| match code {
                        rumqttc::SubscribeReasonCode::Success(_) => None,
                        refused => Some(format!("{refused:?}")),
                    })
                    .collect(),
            ),
            Ok(E::Incoming(Packet::Publish(publish))) => Polled::Message(Received {
                topic: publish.topic,
                payload: publish.payload,
                retained: publish.retain,
                response_topic: None,
                correlation: None,
            }),
            Ok(E::Outgoing(rumqttc::Outgoing::Disconnect)) => Polled::Disconnecting,
            Ok(_) => Polled::Other,
            Err(error) => Polled::Lost(error.to_string()),
        }
    }
}

/// Pairs a SUBACK's codes with the filters of the SUBSCRIBE it answers.
pub(crate) fn refusals(filters: &[String], codes: Vec<Option<String>>) -> Vec<Refusal> {
    filters
        .iter()
        .zip(codes)
        .filter_map(|(filter, code)| code.map(|reason| Refusal { filter: filter.clone(), reason }))
        .collect()
}

/// Polls `protocol` until the connection ends for good (or nobody reads the events).
async fn poll_loop<P: Protocol>(
    mut protocol: P,
    client: Client,
    options: ClientOptions,
    events: mpsc::Sender<Event>,
    state: watch::Sender<LinkState>,
) {
    let mut failures = 0u32;
    let mut session_present = false;
    let mut awaiting_suback = false;
    let mut disconnecting = false;
    loop {
        let event = match protocol.poll().await {
            Polled::ConnAck { session_present: present } => {
                failures = 0;
                session_present = present;
                if options.subscriptions.is_empty() {
                    let _ = state.send(LinkState::Up { refused: Vec::new() });
                    Event::Connected { session_present, refused: Vec::new() }
                } else {
                    // From another task: the polling task must keep polling for the SUBACK.
                    awaiting_suback = true;
                    let client = client.clone();
                    let filters = options.subscriptions.clone();
                    tokio::spawn(async move {
                        if let Err(error) = client.subscribe(&filters).await {
                            warn!(%error, "cannot queue the SUBSCRIBE");
                        }
                    });
                    continue;
                }
            }
            Polled::SubAck(codes) if awaiting_suback => {
                awaiting_suback = false;
                let refused = refusals(&options.subscriptions, codes);
                for refusal in &refused {
                    warn!(client = %options.client_id, filter = %refusal.filter, reason = %refusal.reason, "the broker refused a subscription");
                }
                let _ = state.send(LinkState::Up { refused: refused.clone() });
                Event::Connected { session_present, refused }
            }
            Polled::SubAck(codes) => Event::SubAck { refused: codes },
            Polled::Other => continue,
            Polled::PubAckRefused(reason) => Event::PublishRefused { reason },
            Polled::Message(message) => Event::Message(message),
            Polled::Disconnecting => {
                // Keep reading until the broker closes the connection: closing the socket at
                // once can make the broker miss the DISCONNECT and publish the Last Will.
                disconnecting = true;
                continue;
            }
            Polled::Lost(reason) => {
                let _ = state.send(LinkState::Down);
                awaiting_suback = false;
                if disconnecting {
                    let _ = events.send(Event::Closed).await;
                    return;
                }
                if events.send(Event::Down { reason: reason.clone() }).await.is_err() {
                    return;
                }
                let Some(delay) = options.reconnect.delay(failures) else {
                    return;
                };
                info!(client = %options.client_id, %reason, ?delay, "MQTT connection lost; reconnecting");
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_reserves_no_room_for_events() {
        let broker = BrokerUrl::parse("mqtt://127.0.0.1:1883").expect("a valid URL");
        let options = ClientOptions::new(broker, "d-1", MqttVersion::V5);
        let (_client, v5) = v5_client(&options);
        assert_eq!(v5.state.events.capacity(), 0);
        let (_client, v311) = v311_client(&options);
        assert_eq!(v311.state.events.capacity(), 0);
    }

    #[test]
    fn reconnect_delays_double_up_to_the_cap() {
        let backoff =
            Reconnect::Backoff { min: Duration::from_millis(100), max: Duration::from_secs(10) };
        let delays: Vec<_> = [0, 1, 2, 7, 30].iter().map(|f| backoff.delay(*f)).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(10)),
            ]
        );
        assert_eq!(Reconnect::Never.delay(0), None);
    }

    #[test]
    fn suback_codes_pair_with_their_filters() {
        let filters = vec!["a/#".to_string(), "b/+".to_string(), "c".to_string()];
        let refused = refusals(&filters, vec![None, Some("NotAuthorized".into()), None]);
        assert_eq!(refused, [Refusal { filter: "b/+".into(), reason: "NotAuthorized".into() }]);
    }
}
