//! The operator's single MQTT connection (I/O edge): MQTT 5 or 3.1.1, reconnect with backoff,
//! re-subscribe on every new session, inbound messages forwarded as [`MqttEvent`]s.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use rumqttc::{QoS, v5};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// MQTT protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttVersion {
    /// MQTT 5.
    #[value(name = "5")]
    V5,
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V311,
}

/// Host and port of a broker, parsed from `mqtt://host:port` or `mqtts://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to use TLS (`mqtts://`).
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (8883).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, true)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (rest, false)
        } else {
            return Err(format!("broker URL {url:?} must start with mqtt:// or mqtts://"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port =
                    port.parse().map_err(|_| format!("broker URL {url:?} has a bad port"))?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("broker URL {url:?} has no host"));
        }
        Ok(Self { host: host.to_string(), port, tls })
    }
}

/// TLS and credentials for the broker connection.
#[derive(Clone, Default)]
pub struct BrokerSecurity {
    /// TLS client configuration (`mqtts://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSecurity")
            .field("tls", &self.tls.is_some())
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// Builds a rustls client configuration from PEM files: the CA bundle (required) and an
/// optional client certificate and key for mutual TLS.
pub fn tls_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("cannot read the broker CA file {}: {e}", ca_file.display()))?;
    for ca in cas {
        let ca = ca.map_err(|e| format!("bad certificate in {}: {e}", ca_file.display()))?;
        roots
            .add(ca)
            .map_err(|e| format!("unusable CA certificate in {}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert_file, key_file)) => {
            let certs = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!("cannot read the client certificate {}: {e}", cert_file.display())
                })?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("cannot read the client key {}: {e}", key_file.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Something that happened on the connection.
#[derive(Debug)]
pub enum MqttEvent {
    /// A session started and its subscriptions are in place; retained messages follow.
    Connected {
        /// The broker kept the previous session (and so, its retained messages).
        session_present: bool,
    },
    /// The connection dropped; the client keeps trying to reconnect.
    Disconnected(String),
    /// A message arrived on a subscribed topic.
    Message {
        /// Topic it was published on.
        topic: String,
        /// Raw payload.
        payload: Bytes,
        /// Delivered from the broker's retained store (a replay of an older message).
        retained: bool,
    },
}

/// A message to publish.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Whether the broker keeps it for later subscribers.
    pub retain: bool,
    /// MQTT 5 request properties (ignored on 3.1.1).
    pub request: Option<RequestProperties>,
}

/// MQTT 5 properties of a method request.
#[derive(Clone, Debug)]
pub struct RequestProperties {
    /// Where the device answers.
    pub response_topic: String,
    /// Correlation data (the request id).
    pub correlation_data: Vec<u8>,
    /// Seconds until the broker discards the request.
    pub message_expiry_seconds: u32,
}

/// Settings of the connection.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker address.
    pub broker: BrokerAddress,
    /// Client id.
    pub client_id: String,
    /// Protocol version.
    pub version: MqttVersion,
    /// Topic filters subscribed on every new session.
    pub subscriptions: Vec<String>,
    /// Largest packet accepted from the broker.
    pub max_packet_bytes: usize,
    /// TLS and credentials.
    pub security: BrokerSecurity,
}

/// Handle for publishing; cheap to clone.
#[derive(Clone)]
pub enum Publisher {
    /// An MQTT 5 client.
    V5(v5::AsyncClient),
    /// An MQTT 3.1.1 client.
    V311(rumqttc::AsyncClient),
}

impl Publisher {
    /// Publishes one message with QoS 1 (waits only for room in the request queue).
    pub async fn publish(&self, message: Outbound) -> Result<(), String> {
        match self {
            Self::V5(client) => {
                let properties = message.request.map(|r| v5::mqttbytes::v5::PublishProperties {
                    response_topic: Some(r.response_topic),
                    correlation_data: Some(Bytes::from(r.correlation_data)),
                    message_expiry_interval: Some(r.message_expiry_seconds.max(1)),
                    content_type: Some("application/json".into()),
                    ..Default::default()
                });
                let qos = v5::mqttbytes::QoS::AtLeastOnce;
                match properties {
                    Some(p) => client
                        .publish_with_properties(
                            message.topic,
                            qos,
                            message.retain,
                            message.payload,
                            p,
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    None => client
                        .publish(message.topic, qos, message.retain, message.payload)
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
            Self::V311(client) => client
                .publish(message.topic, QoS::AtLeastOnce, message.retain, message.payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Starts the connection. Events go to `events`; `connected` tells whether a session is up.
/// The returned [`Publisher`] publishes from any task (never from the polling task).
pub fn connect(
    settings: MqttSettings,
    events: mpsc::Sender<MqttEvent>,
    connected: watch::Sender<bool>,
) -> Publisher {
    const QUEUE: usize = 10_000;
    match settings.version {
        MqttVersion::V5 => {
            let mut options = v5::MqttOptions::new(
                &settings.client_id,
                &settings.broker.host,
                settings.broker.port,
            );
            options.set_keep_alive(Duration::from_secs(15));
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(3600));
            options.set_max_packet_size(Some(settings.max_packet_bytes as u32));
            options.set_outgoing_inflight_upper_limit(1000);
            if let Some(tls) = &settings.security.tls {
                options.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            if let Some((user, password)) = &settings.security.credentials {
                options.set_credentials(user, password);
            }
            let mut network = rumqttc::NetworkOptions::new();
            network.set_tcp_nodelay(true);
            options.set_network_options(network);
            let (client, eventloop) = v5::AsyncClient::new(options, QUEUE);
            let connection = V5Connection(eventloop, client.clone());
            tokio::spawn(poll_loop(connection, settings.subscriptions, events, connected));
            Publisher::V5(client)
        }
        MqttVersion::V311 => {
            let mut options = rumqttc::MqttOptions::new(
                &settings.client_id,
                &settings.broker.host,
                settings.broker.port,
            );
            options.set_keep_alive(Duration::from_secs(15));
            options.set_clean_session(false);
            options.set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes);
            options.set_inflight(1000);
            if let Some(tls) = &settings.security.tls {
                options.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            if let Some((user, password)) = &settings.security.credentials {
                options.set_credentials(user, password);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, QUEUE);
            eventloop.network_options.set_tcp_nodelay(true);
            let connection = V311Connection(eventloop, client.clone());
            tokio::spawn(poll_loop(connection, settings.subscriptions, events, connected));
            Publisher::V311(client)
        }
    }
}

/// Delay before the next reconnect attempt: doubles from 100 ms up to 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(10))
}

/// What one poll of either protocol's event loop produced.
enum Polled {
    /// CONNACK: a session started.
    ConnAck { session_present: bool },
    /// SUBACK: the subscriptions are in place.
    SubAck,
    /// An inbound message.
    Message(MqttEvent),
    /// Anything else.
    Other,
    /// The connection failed.
    Lost(String),
}

/// One protocol's event loop and client, behind the same face.
trait Connection: Send + 'static {
    /// Polls the event loop once.
    fn poll(&mut self) -> impl Future<Output = Polled> + Send;
    /// Subscribes to `filters` (from another task: the polling task must keep polling).
    fn subscribe(&self, filters: &[String]);
}

struct V5Connection(v5::EventLoop, v5::AsyncClient);

impl Connection for V5Connection {
    async fn poll(&mut self) -> Polled {
        use v5::{Event, mqttbytes::v5::Packet};
        match self.0.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                Polled::ConnAck { session_present: ack.session_present }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => Polled::SubAck,
            Ok(Event::Incoming(Packet::Publish(publish))) => Polled::Message(MqttEvent::Message {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                payload: publish.payload,
                retained: publish.retain,
            }),
            Ok(_) => Polled::Other,
            Err(error) => Polled::Lost(error.to_string()),
        }
    }

    fn subscribe(&self, filters: &[String]) {
        let client = self.1.clone();
        let filters: Vec<_> = filters
            .iter()
            .map(|f| v5::mqttbytes::v5::Filter::new(f, v5::mqttbytes::QoS::AtLeastOnce))
            .collect();
        tokio::spawn(async move {
            if let Err(error) = client.subscribe_many(filters).await {
                warn!(%error, "MQTT subscribe failed");
            }
        });
    }
}

struct V311Connection(rumqttc::EventLoop, rumqttc::AsyncClient);

impl Connection for V311Connection {
    async fn poll(&mut self) -> Polled {
        use rumqttc::{Event, Packet};
        match self.0.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                Polled::ConnAck { session_present: ack.session_present }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => Polled::SubAck,
            Ok(Event::Incoming(Packet::Publish(publish))) => Polled::Message(MqttEvent::Message {
                topic: publish.topic,
                payload: publish.payload,
                retained: publish.retain,
            }),
            Ok(_) => Polled::Other,
            Err(error) => Polled::Lost(error.to_string()),
        }
    }

    fn subscribe(&self, filters: &[String]) {
        let client = self.1.clone();
        let filters: Vec<_> = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        tokio::spawn(async move {
            if let Err(error) = client.subscribe_many(filters).await {
                warn!(%error, "MQTT subscribe failed");
            }
        });
    }
}

/// Polls `connection` forever: subscribes on every CONNACK, reports the session once the
/// SUBACK arrives, forwards messages, and backs off after failures. Ends when nobody listens.
async fn poll_loop<C: Connection>(
    mut connection: C,
    subscriptions: Vec<String>,
    events: mpsc::Sender<MqttEvent>,
    connected: watch::Sender<bool>,
) {
    let mut failures = 0;
    let mut session_present = false;
    loop {
        let event = match connection.poll().await {
            Polled::ConnAck { session_present: present } => {
                failures = 0;
                session_present = present;
                info!(session_present, "MQTT connected; subscribing");
                connection.subscribe(&subscriptions);
                continue;
            }
            Polled::SubAck => {
                let _ = connected.send(true);
                MqttEvent::Connected { session_present }
            }
            Polled::Message(message) => message,
            Polled::Other => continue,
            Polled::Lost(error) => {
                let _ = connected.send(false);
                warn!(%error, "MQTT connection lost; reconnecting");
                if events.send(MqttEvent::Disconnected(error)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
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
    fn broker_urls_parse() {
        assert_eq!(
            BrokerAddress::parse("mqtt://127.0.0.1:1884"),
            Ok(BrokerAddress { host: "127.0.0.1".into(), port: 1884, tls: false })
        );
        assert_eq!(
            BrokerAddress::parse("mqtts://broker.example"),
            Ok(BrokerAddress { host: "broker.example".into(), port: 8883, tls: true })
        );
        assert_eq!(BrokerAddress::parse("mqtt://broker").map(|b| b.port), Ok(1883));
        assert!(BrokerAddress::parse("http://broker").is_err());
        assert!(BrokerAddress::parse("mqtt://:1883").is_err());
        assert!(BrokerAddress::parse("mqtt://b:port").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
