//! A connection for fleets of simulated devices: driven by the task that owns it (no poll task
//! and no channels), buffers sized to what is on the wire, QoS 1 only, no reconnect.
//!
//! Why not [`connect`](crate::connect): rumqttc's event loop allocates ~26 KiB per connection
//! before a byte is exchanged (two 8 KiB frame buffers, an 8 KiB bit set for QoS 2 packet ids
//! and the in-flight table), and [`connect`](crate::connect) adds a task and two channels:
//! ~42 KiB resident per simulated device in all (5,000 devices; B9 measured 42.78 KiB at
//! 19,000), where the scale goal is ≤ 16 KiB. Packets are still encoded and decoded by
//! rumqttc's codec (`mqttbytes`), so both clients put the same bytes on the wire.
//!
//! The owner calls [`CompactConnection::next`] in a loop (it connects, subscribes, answers
//! QoS 1 deliveries and keeps the connection alive) and [`CompactConnection::publish`] between
//! calls. `next` is cancel-safe: everything it has read or still has to write stays in the
//! connection, so it can be one branch of a `select!`.

use std::{collections::VecDeque, future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::BytesMut;
use rumqttc::tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tracing::warn;

use crate::client::{
    ClientError, ClientOptions, Event, Publication, Received, Session, properties5, refusals,
};
use kubetwin_protocol::MqttVersion;

/// Longest time from starting to connect to the broker's CONNACK (rumqttc's default too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Room reserved for reading: a device's messages are small (a larger one grows the buffer).
const READ_ROOM: usize = 512;

/// A byte stream to the broker: plain TCP or TLS.
trait Wire: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Wire for T {}

/// What the broker said in its CONNACK, with the stream it came on.
struct Handshake {
    wire: Box<dyn Wire>,
    /// Bytes read after the CONNACK (deliveries of a resumed session may follow at once).
    leftover: BytesMut,
    session_present: bool,
    /// MQTT 5 Receive Maximum: most unacknowledged QoS 1 publications the broker accepts.
    receive_max: Option<u16>,
    /// MQTT 5 Server Keep Alive, which replaces the one asked for.
    server_keep_alive: Option<u16>,
    /// MQTT 5 Maximum Packet Size the broker accepts.
    max_packet_size: Option<u32>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Handshake, String>> + Send>>;

/// Where the connection is.
enum Phase {
    /// Not started: the first [`CompactConnection::next`] connects.
    Idle,
    /// TCP, TLS and CONNECT/CONNACK under way.
    Connecting(Connecting),
    /// A session is up.
    Up(Box<dyn Wire>),
    /// Over (failed, lost or closed); only queued events are left.
    Ended,
}

/// A packet from the broker, the same for both protocol versions.
#[derive(Debug, PartialEq)]
enum Inbound {
    ConnAck {
        session_present: bool,
        refused: Option<String>,
        receive_max: Option<u16>,
        server_keep_alive: Option<u16>,
        max_packet_size: Option<u32>,
    },
    SubAck {
        pkid: u16,
        refused: Vec<Option<String>>,
    },
    Publish {
        pkid: u16,
        qos: u8,
        message: Received,
    },
    PubAck {
        refused: Option<String>,
    },
    PingResp,
    Disconnect {
        reason: String,
    },
    /// A packet a QoS 1 client never receives (its kind).
    Unexpected(String),
}

/// What one turn of reading produced.
enum Pumped {
    /// Something for the owner.
    Event(Event),
    /// A publication was acknowledged: there is room for another.
    Acknowledged,
}

/// One MQTT connection driven by its owner's task; dropping it closes the socket without
/// DISCONNECT (the broker publishes the Last Will).
pub struct CompactConnection {
    options: ClientOptions,
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    /// Events met while [`CompactConnection::publish`] waited for room, for `next`.
    pending: VecDeque<Event>,
    session_present: bool,
    /// Packet id of the automatic SUBSCRIBE until its SUBACK is in.
    subscribing: Option<u16>,
    last_pkid: u16,
    /// QoS 1 publications sent and not yet acknowledged.
    inflight: u16,
    inflight_limit: u16,
    /// Largest packet sent: ours, or the broker's smaller MQTT 5 Maximum Packet Size.
    max_outgoing: usize,
    keep_alive: Duration,
    /// When a packet last went out, and when one last came in: a PINGREQ is due a keep-alive
    /// after the earlier of the two (a device that only publishes still finds out that the
    /// broker went silent).
    last_sent: Instant,
    last_received: Instant,
    /// When the PINGREQ awaiting its PINGRESP went out.
    ping_sent: Option<Instant>,
}

impl std::fmt::Debug for CompactConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactConnection")
            .field("client_id", &self.options.client_id)
            .field("inflight", &self.inflight)
            .finish_non_exhaustive()
    }
}

impl CompactConnection {
    /// A connection with `options` (`queue` and `reconnect` do not apply: there is no queue,
    /// and it never reconnects); nothing happens until the first [`Self::next`].
    pub fn new(options: ClientOptions) -> Self {
        let keep_alive = options.keep_alive;
        let inflight_limit = options.inflight.max(1);
        let max_outgoing = options.max_packet_bytes;
        Self {
            options,
            phase: Phase::Idle,
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: VecDeque::new(),
            session_present: false,
            subscribing: None,
            last_pkid: 0,
            inflight: 0,
            inflight_limit,
            max_outgoing,
            keep_alive,
            last_sent: Instant::now(),
            last_received: Instant::now(),
            ping_sent: None,
        }
    }

    /// The next event: [`Event::Connected`] once the session is up and its subscriptions were
    /// answered, then messages, until [`Event::Down`]; `None` after that. Cancel-safe.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        loop {
            match &mut self.phase {
                Phase::Idle => match connect_packet(&self.options) {
                    Ok(packet) => {
                        self.phase =
                            Phase::Connecting(Box::pin(handshake(self.options.clone(), packet)));
                    }
                    Err(reason) => return Some(self.end(reason)),
                },
                Phase::Connecting(connecting) => match connecting.await {
                    Ok(handshake) => {
                        if let Some(event) = self.start_session(handshake, true) {
                            return Some(event);
                        }
                    }
                    Err(reason) => return Some(self.end(reason)),
                },
                Phase::Up(_) => match self.pump().await {
                    Pumped::Event(event) => return Some(event),
                    Pumped::Acknowledged => {}
                },
                Phase::Ended => return None,
            }
        }
    }

    /// Sends `message` with QoS 1, first waiting for the broker to acknowledge earlier ones if
    /// as many as it accepts are unacknowledged (what arrives meanwhile waits for
    /// [`Self::next`]). `Err(Closed)` when there is no session. Once encoded, a publication
    /// goes out even if this call is cancelled while it is being written.
    pub async fn publish(&mut self, message: Publication) -> Result<(), ClientError> {
        while self.inflight >= self.inflight_limit {
            if !matches!(self.phase, Phase::Up(_)) {
                return Err(ClientError::Closed);
            }
            match self.pump().await {
                Pumped::Acknowledged => {}
                Pumped::Event(event) => {
                    let down = matches!(event, Event::Down { .. });
                    self.pending.push_back(event);
                    if down {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
        if !matches!(self.phase, Phase::Up(_)) {
            return Err(ClientError::Closed);
        }
        let pkid = self.next_pkid();
        encode_publish(self.options.version, pkid, message, self.max_outgoing, &mut self.output)
            .map_err(ClientError::Refused)?;
        self.inflight += 1;
        if let Err(reason) = self.write_out().await {
            let event = self.end(reason);
            self.pending.push_back(event);
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// Disconnects cleanly (the broker discards the Last Will) after what was published,
    /// waiting at most `timeout` for the broker to close the connection. `false`: a session
    /// may have been left without DISCONNECT (the broker then publishes the Last Will).
    pub async fn close(mut self, timeout: Duration) -> bool {
        let closing = async {
            if let Phase::Connecting(connecting) = &mut self.phase {
                match connecting.await {
                    Ok(handshake) => {
                        self.start_session(handshake, false);
                    }
                    // No session was made: nothing to close.
                    Err(_) => return true,
                }
            }
            if !matches!(self.phase, Phase::Up(_)) {
                return matches!(self.phase, Phase::Idle);
            }
            if encode(self.options.version, Outbound::Disconnect, &mut self.output).is_err()
                || self.write_out().await.is_err()
            {
                return false;
            }
            // Read until the broker closes: closing the socket at once can make the broker miss
            // the DISCONNECT and publish the Last Will.
            let Phase::Up(wire) = &mut self.phase else { return false };
            loop {
                self.input.clear();
                self.input.reserve(READ_ROOM);
                match wire.read_buf(&mut self.input).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(timeout, closing).await.unwrap_or(false)
    }

    /// Takes the session the handshake made; subscribes when `subscribe`. Returns the
    /// Connected event when there is nothing to subscribe to.
    fn start_session(&mut self, handshake: Handshake, subscribe: bool) -> Option<Event> {
        let Handshake {
            wire,
            leftover,
            session_present,
            receive_max,
            server_keep_alive,
            max_packet_size,
        } = handshake;
        self.phase = Phase::Up(wire);
        self.input = leftover;
        self.session_present = session_present;
        if let Some(max) = receive_max {
            self.inflight_limit = self.inflight_limit.min(max).max(1);
        }
        if let Some(seconds) = server_keep_alive {
            self.keep_alive = Duration::from_secs(u64::from(seconds));
        }
        if let Some(max) = max_packet_size.and_then(|max| usize::try_from(max).ok()) {
            self.max_outgoing = self.max_outgoing.min(max);
        }
        self.last_sent = Instant::now();
        self.last_received = self.last_sent;
        if !subscribe {
            return None;
        }
        if self.options.subscriptions.is_empty() {
            return Some(Event::Connected { session_present, refused: Vec::new() });
        }
        let pkid = self.next_pkid();
        let subscribe = Outbound::Subscribe { pkid, filters: &self.options.subscriptions };
        if let Err(reason) = encode(self.options.version, subscribe, &mut self.output) {
            return Some(self.end(reason));
        }
        self.subscribing = Some(pkid);
        None
    }

    /// Reads and writes until there is something for the owner or room for a publication.
    async fn pump(&mut self) -> Pumped {
        loop {
            match decode(self.options.version, &mut self.input, self.options.max_packet_bytes) {
                Ok(Some(inbound)) => match self.on_inbound(inbound) {
                    Ok(Some(pumped)) => return pumped,
                    Ok(None) => continue,
                    Err(reason) => return Pumped::Event(self.end(reason)),
                },
                Ok(None) => {}
                Err(reason) => return Pumped::Event(self.end(reason)),
            }
            if !self.output.is_empty() {
                if let Err(reason) = self.write_out().await {
                    return Pumped::Event(self.end(reason));
                }
                continue;
            }
            let keep_alive = !self.keep_alive.is_zero();
            let ping_due = self.last_sent.min(self.last_received) + self.keep_alive;
            if keep_alive && self.ping_sent.is_none() && Instant::now() >= ping_due {
                if let Err(reason) =
                    encode(self.options.version, Outbound::PingReq, &mut self.output)
                {
                    return Pumped::Event(self.end(reason));
                }
                self.ping_sent = Some(Instant::now());
                continue;
            }
            // The PINGRESP is given up on only while this waits for it: an owner that came back
            // late finds it among what was read first.
            let wake = match self.ping_sent {
                Some(sent) => sent + self.keep_alive,
                None => ping_due,
            };
            if self.input.is_empty() {
                // A fresh buffer each time: the one before may share its allocation with a
                // large message that was handed out.
                self.input = BytesMut::with_capacity(READ_ROOM);
            } else {
                self.input.reserve(READ_ROOM);
            }
            let Phase::Up(wire) = &mut self.phase else {
                return Pumped::Event(self.end("no session".into()));
            };
            tokio::select! {
                biased;
                read = wire.read_buf(&mut self.input) => match read {
                    Ok(0) => return Pumped::Event(self.end("the broker closed the connection".into())),
                    Ok(_) => self.last_received = Instant::now(),
                    Err(error) => return Pumped::Event(self.end(format!("reading from the broker: {error}"))),
                },
                () = tokio::time::sleep_until(wake), if keep_alive => {
                    if self.ping_sent.is_some_and(|sent| Instant::now() >= sent + self.keep_alive) {
                        return Pumped::Event(self.end("no PINGRESP within the keep-alive".into()));
                    }
                }
            }
        }
    }

    /// Handles one packet: acknowledgements and pings here, the rest for the owner.
    fn on_inbound(&mut self, inbound: Inbound) -> Result<Option<Pumped>, String> {
        Ok(match inbound {
            Inbound::SubAck { pkid, refused } if self.subscribing == Some(pkid) => {
                self.subscribing = None;
                let refused = refusals(&self.options.subscriptions, refused);
                for refusal in &refused {
                    warn!(client = %self.options.client_id, filter = %refusal.filter, reason = %refusal.reason, "the broker refused a subscription");
                }
                Some(Pumped::Event(Event::Connected {
                    session_present: self.session_present,
                    refused,
                }))
            }
            Inbound::SubAck { refused, .. } => Some(Pumped::Event(Event::SubAck { refused })),
            Inbound::Publish { pkid, qos, message } => {
                match qos {
                    0 => {}
                    1 => encode(self.options.version, Outbound::PubAck { pkid }, &mut self.output)?,
                    _ => {
                        return Err(format!(
                            "the broker delivered with QoS {qos}; subscriptions ask for 1"
                        ));
                    }
                }
                Some(Pumped::Event(Event::Message(message)))
            }
            Inbound::PubAck { refused } => {
                self.inflight = self.inflight.saturating_sub(1);
                Some(match refused {
                    Some(reason) => Pumped::Event(Event::PublishRefused { reason }),
                    None => Pumped::Acknowledged,
                })
            }
            Inbound::PingResp => {
                self.ping_sent = None;
                None
            }
            Inbound::ConnAck { .. } => return Err("a second CONNACK from the broker".into()),
            Inbound::Disconnect { reason } => {
                return Err(format!("the broker disconnected: {reason}"));
            }
            Inbound::Unexpected(what) => return Err(format!("unexpected {what} from the broker")),
        })
    }

    /// Writes everything encoded so far. Cancel-safe: what is not written yet stays queued.
    async fn write_out(&mut self) -> Result<(), String> {
        let Phase::Up(wire) = &mut self.phase else {
            return Err("no session".into());
        };
        while !self.output.is_empty() {
            match wire.write_buf(&mut self.output).await {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(_) => {}
                Err(error) => return Err(format!("writing to the broker: {error}")),
            }
        }
        wire.flush().await.map_err(|error| format!("writing to the broker: {error}"))?;
        self.last_sent = Instant::now();
        // Nothing is kept between writes: a device writes seldom, and a buffer kept would hold
        // the room of the largest message it ever sent.
        self.output = BytesMut::new();
        Ok(())
    }

    /// Ends the connection for `reason`: the event that says so.
    fn end(&mut self, reason: String) -> Event {
        self.phase = Phase::Ended;
        self.input = BytesMut::new();
        self.output = BytesMut::new();
        Event::Down { reason }
    }

    fn next_pkid(&mut self) -> u16 {
        self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
        self.last_pkid
    }
}

/// TCP (and TLS), CONNECT and CONNACK, within [`CONNECT_TIMEOUT`].
async fn handshake(options: ClientOptions, connect: BytesMut) -> Result<Handshake, String> {
    let broker = format!("{}:{}", options.broker.host, options.broker.port);
    let attempt = async {
        let tcp = TcpStream::connect((options.broker.host.as_str(), options.broker.port))
            .await
            .map_err(|error| format!("cannot connect to {broker}: {error}"))?;
        // Small request/response messages: Nagle's algorithm would hold them back.
        tcp.set_nodelay(true).map_err(|error| format!("TCP_NODELAY on {broker}: {error}"))?;
        let mut wire: Box<dyn Wire> = match &options.security.tls {
            Some(config) => {
                let name = ServerName::try_from(options.broker.host.clone())
                    .map_err(|error| format!("TLS server name {}: {error}", options.broker.host))?;
                let tls = TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|error| format!("TLS handshake with {broker}: {error}"))?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        wire.write_all(&connect).await.map_err(|error| format!("sending CONNECT: {error}"))?;
        wire.flush().await.map_err(|error| format!("sending CONNECT: {error}"))?;
        let mut input = BytesMut::new();
        loop {
            match decode(options.version, &mut input, options.max_packet_bytes)? {
                Some(Inbound::ConnAck { refused: Some(code), .. }) => {
                    return Err(format!("the broker refused the connection: {code}"));
                }
                Some(Inbound::ConnAck {
                    session_present,
                    receive_max,
                    server_keep_alive,
                    max_packet_size,
                    ..
                }) => {
                    return Ok(Handshake {
                        wire,
                        leftover: input,
                        session_present,
                        receive_max,
                        server_keep_alive,
                        max_packet_size,
                    });
                }
                Some(other) => return Err(format!("expected CONNACK, the broker sent {other:?}")),
                None => {}
            }
            input.reserve(READ_ROOM);
            match wire.read_buf(&mut input).await {
                Ok(0) => return Err("the broker closed the connection before CONNACK".into()),
                Ok(_) => {}
                Err(error) => return Err(format!("reading CONNACK: {error}")),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no CONNACK from {broker} within {CONNECT_TIMEOUT:?}")))
}

/// A packet to the broker.
enum Outbound<'a> {
    Subscribe { pkid: u16, filters: &'a [String] },
    PubAck { pkid: u16 },
    PingReq,
    Disconnect,
}

/// The CONNECT packet of `options`: session, Last Will (QoS 1), credentials, packet size.
fn connect_packet(options: &ClientOptions) -> Result<BytesMut, String> {
    let keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
    let login = options.security.credentials.as_ref();
    let mut packet = BytesMut::new();
    match options.version {
        MqttVersion::V5 => {
            use rumqttc::v5::mqttbytes::{QoS, v5};
            let mut properties = v5::ConnectProperties::new();
            properties.max_packet_size = u32::try_from(options.max_packet_bytes).ok();
            let clean_start = match options.session {
                Session::Clean => true,
                Session::Persistent { expiry_secs } => {
                    properties.session_expiry_interval = Some(expiry_secs);
                    false
                }
            };
            let connect = v5::Connect {
                keep_alive,
                client_id: options.client_id.clone(),
                clean_start,
                properties: Some(properties),
            };
            let will = options.last_will.as_ref().map(|will| {
                v5::LastWill::new(
                    will.topic.clone(),
                    will.payload.clone(),
                    QoS::AtLeastOnce,
                    will.retain,
                    None,
                )
            });
            let login = login.map(|c| v5::Login::new(&c.username, &c.password));
            v5::Packet::Connect(connect, will, login)
                .write(&mut packet, None)
                .map_err(|error| format!("encoding CONNECT: {error}"))?;
        }
        MqttVersion::V311 => {
            use rumqttc::mqttbytes::{QoS, v4};
            let mut connect = v4::Connect::new(options.client_id.clone());
            connect.keep_alive = keep_alive;
            connect.clean_session = options.session == Session::Clean;
            connect.last_will = options.last_will.as_ref().map(|will| {
                v4::LastWill::new(
                    will.topic.clone(),
                    will.payload.to_vec(),
                    QoS::AtLeastOnce,
                    will.retain,
                )
            });
            if let Some(c) = login {
                connect.set_login(&c.username, &c.password);
            }
            v4::Packet::Connect(connect)
                .write(&mut packet, usize::MAX)
                .map_err(|error| format!("encoding CONNECT: {error}"))?;
        }
    }
    Ok(packet)
}

/// Appends `message` as a QoS 1 PUBLISH with packet id `pkid`, if it is at most `max` bytes.
fn encode_publish(
    version: MqttVersion,
    pkid: u16,
    message: Publication,
    max: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    let Publication { topic, payload, retain, properties } = message;
    let written = match version {
        MqttVersion::V5 => {
            use rumqttc::v5::mqttbytes::{QoS, v5};
            let mut publish =
                v5::Publish::new(topic, QoS::AtLeastOnce, payload, properties5(properties));
            publish.pkid = pkid;
            publish.retain = retain;
            let max = u32::try_from(max).ok();
            v5::Packet::Publish(publish).write(out, max).map(drop).map_err(|e| e.to_string())
        }
        MqttVersion::V311 => {
            use rumqttc::mqttbytes::{QoS, v4};
            let publish =
                v4::Publish { dup: false, qos: QoS::AtLeastOnce, retain, topic, pkid, payload };
            v4::Packet::Publish(publish).write(out, max).map(drop).map_err(|e| e.to_string())
        }
    };
    written.map_err(|error| format!("encoding PUBLISH: {error}"))
}

/// Appends `packet`.
fn encode(version: MqttVersion, packet: Outbound<'_>, out: &mut BytesMut) -> Result<(), String> {
    let written = match version {
        MqttVersion::V5 => {
            use rumqttc::v5::mqttbytes::{QoS, v5};
            let packet = match packet {
                Outbound::Subscribe { pkid, filters } => {
                    let filters =
                        filters.iter().map(|f| v5::Filter::new(f.clone(), QoS::AtLeastOnce));
                    let mut subscribe = v5::Subscribe::new_many(filters, None);
                    subscribe.pkid = pkid;
                    v5::Packet::Subscribe(subscribe)
                }
                Outbound::PubAck { pkid } => v5::Packet::PubAck(v5::PubAck::new(pkid, None)),
                Outbound::PingReq => v5::Packet::PingReq(v5::PingReq),
                Outbound::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(
                    v5::DisconnectReasonCode::NormalDisconnection,
                )),
            };
            packet.write(out, None).map(drop).map_err(|e| e.to_string())
        }
        MqttVersion::V311 => {
            use rumqttc::mqttbytes::{QoS, v4};
            let packet = match packet {
                Outbound::Subscribe { pkid, filters } => {
                    let filters = filters
                        .iter()
                        .map(|f| v4::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    let mut subscribe = v4::Subscribe::new_many(filters);
                    subscribe.pkid = pkid;
                    v4::Packet::Subscribe(subscribe)
                }
                Outbound::PubAck { pkid } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
                Outbound::PingReq => v4::Packet::PingReq,
                Outbound::Disconnect => v4::Packet::Disconnect,
            };
            packet.write(out, usize::MAX).map(drop).map_err(|e| e.to_string())
        }
    };
    written.map_err(|error| format!("encoding a packet: {error}"))
}

/// Takes the next whole packet out of `input`; `None` until one is complete.
fn decode(
    version: MqttVersion,
    input: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, String> {
    let before = input.len();
    let inbound = match version {
        MqttVersion::V5 => {
            use rumqttc::v5::mqttbytes::{Error, v5};
            // A DISCONNECT without properties (remaining length 0: reason 0; 1: the reason
            // code alone), as MQTT 5 allows and mosquitto sends; rumqttc's reader wants both.
            if let [0xE0, remaining @ (0 | 1), rest @ ..] = &input[..] {
                let reason = match (remaining, rest) {
                    (0, _) => Some(0),
                    (_, [code, ..]) => Some(*code),
                    _ => None,
                };
                if let Some(code) = reason {
                    let _ = input.split_to(2 + usize::from(*remaining));
                    let reason = match v5::DisconnectReasonCode::try_from(code) {
                        Ok(known) => format!("{known:?}"),
                        Err(_) => format!("reason code {code:#04x}"),
                    };
                    return Ok(Some(Inbound::Disconnect { reason }));
                }
                return Ok(None);
            }
            let packet = match v5::Packet::read(input, u32::try_from(max).ok()) {
                Ok(packet) => packet,
                // Only a frame not yet whole; one cut short inside is malformed.
                Err(Error::InsufficientBytes(_)) if input.len() == before => return Ok(None),
                Err(error @ Error::PayloadSizeLimitExceeded { .. }) => {
                    return Err(format!("a packet larger than allowed from the broker: {error}"));
                }
                Err(error) => return Err(format!("a malformed packet from the broker: {error}")),
            };
            match packet {
                v5::Packet::ConnAck(ack) => {
                    let properties = ack.properties.as_ref();
                    Inbound::ConnAck {
                        session_present: ack.session_present,
                        refused: (ack.code != v5::ConnectReturnCode::Success)
                            .then(|| format!("{:?}", ack.code)),
                        receive_max: properties.and_then(|p| p.receive_max),
                        server_keep_alive: properties.and_then(|p| p.server_keep_alive),
                        max_packet_size: properties.and_then(|p| p.max_packet_size),
                    }
                }
                v5::Packet::SubAck(ack) => Inbound::SubAck {
                    pkid: ack.pkid,
                    refused: refused_codes(&ack.return_codes, |code| {
                        matches!(code, v5::SubscribeReasonCode::Success(_))
                    }),
                },
                v5::Packet::Publish(publish) => {
                    let (response_topic, correlation) = publish
                        .properties
                        .map(|p| (p.response_topic, p.correlation_data))
                        .unwrap_or_default();
                    Inbound::Publish {
                        pkid: publish.pkid,
                        qos: publish.qos as u8,
                        message: Received {
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            payload: publish.payload,
                            retained: publish.retain,
                            response_topic,
                            correlation,
                        },
                    }
                }
                v5::Packet::PubAck(ack) => Inbound::PubAck {
                    refused: (!matches!(
                        ack.reason,
                        v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers
                    ))
                    .then(|| format!("{:?}", ack.reason)),
                },
                v5::Packet::PingResp(_) => Inbound::PingResp,
                v5::Packet::Disconnect(disconnect) => {
                    Inbound::Disconnect { reason: format!("{:?}", disconnect.reason_code) }
                }
                other => Inbound::Unexpected(packet_kind(&other)),
            }
        }
        MqttVersion::V311 => {
            use rumqttc::mqttbytes::{Error, v4};
            let packet = match v4::Packet::read(input, max) {
                Ok(packet) => packet,
                // Only a frame not yet whole; one cut short inside is malformed.
                Err(Error::InsufficientBytes(_)) if input.len() == before => return Ok(None),
                Err(error @ Error::PayloadSizeLimitExceeded(_)) => {
                    return Err(format!("a packet larger than allowed from the broker: {error}"));
                }
                Err(error) => return Err(format!("a malformed packet from the broker: {error}")),
            };
            match packet {
                v4::Packet::ConnAck(ack) => Inbound::ConnAck {
                    session_present: ack.session_present,
                    refused: (ack.code != v4::ConnectReturnCode::Success)
                        .then(|| format!("{:?}", ack.code)),
                    receive_max: None,
                    server_keep_alive: None,
                    max_packet_size: None,
                },
                v4::Packet::SubAck(ack) => Inbound::SubAck {
                    pkid: ack.pkid,
                    refused: refused_codes(&ack.return_codes, |code| {
                        matches!(code, v4::SubscribeReasonCode::Success(_))
                    }),
                },
                v4::Packet::Publish(publish) => Inbound::Publish {
                    pkid: publish.pkid,
                    qos: publish.qos as u8,
                    message: Received {
                        topic: publish.topic,
                        payload: publish.payload,
                        retained: publish.retain,
                        response_topic: None,
                        correlation: None,
                    },
                },
                v4::Packet::PubAck(_) => Inbound::PubAck { refused: None },
                v4::Packet::PingResp => Inbound::PingResp,
                v4::Packet::Disconnect => Inbound::Disconnect { reason: "DISCONNECT".into() },
                other => Inbound::Unexpected(packet_kind(&other)),
            }
        }
    };
    Ok(Some(inbound))
}

/// Per SUBACK code: `None` when `granted`, else the code's name.
fn refused_codes<C: std::fmt::Debug>(
    codes: &[C],
    granted: impl Fn(&C) -> bool,
) -> Vec<Option<String>> {
    codes.iter().map(|code| (!granted(code)).then(|| format!("{code:?}"))).collect()
}

/// The kind of `packet` ("PubRec", "Subscribe", ...), for an error message.
fn packet_kind(packet: &impl std::fmt::Debug) -> String {
    let text = format!("{packet:?}");
    text.split(['(', ' ', '{']).next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    //! The client against a scripted peer on a loopback socket, which reads and writes packets
    //! with rumqttc's codec: the exchanges a broker makes, one at a time. (The simulator runs
    //! on this client in every e2e test, against mosquitto.)

    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::{QoS, v5};
    use tokio::net::TcpListener;

    use super::*;
    use crate::{BrokerUrl, RequestProperties};

    const FILTERS: [&str; 2] = ["devices/d-1/methods/+", "devices/d-1/twin/desired"];

    /// The broker's side of one connection.
    struct Peer {
        stream: TcpStream,
        input: BytesMut,
    }

    impl Peer {
        async fn read5(&mut self) -> v5::Packet {
            loop {
                match v5::Packet::read(&mut self.input, None) {
                    Ok(packet) => return packet,
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the client sent a malformed packet: {error}"),
                }
                assert!(self.stream.read_buf(&mut self.input).await.expect("a read") > 0, "closed");
            }
        }

        async fn read4(&mut self) -> rumqttc::mqttbytes::v4::Packet {
            loop {
                match rumqttc::mqttbytes::v4::Packet::read(&mut self.input, usize::MAX) {
                    Ok(packet) => return packet,
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the client sent a malformed packet: {error}"),
                }
                assert!(self.stream.read_buf(&mut self.input).await.expect("a read") > 0, "closed");
            }
        }

        async fn send5(&mut self, packet: v5::Packet) {
            let mut out = BytesMut::new();
            packet.write(&mut out, None).expect("an encodable packet");
            self.stream.write_all(&out).await.expect("a write");
        }

        async fn send4(&mut self, packet: rumqttc::mqttbytes::v4::Packet) {
            let mut out = BytesMut::new();
            packet.write(&mut out, usize::MAX).expect("an encodable packet");
            self.stream.write_all(&out).await.expect("a write");
        }

        /// Answers the CONNECT with `code` and `receive_max`; returns the CONNECT.
        async fn accept5(
            &mut self,
            code: v5::ConnectReturnCode,
            receive_max: Option<u16>,
        ) -> v5::Packet {
            let connect = self.read5().await;
            let properties = v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max,
                max_qos: None,
                retain_available: None,
                max_packet_size: None,
                assigned_client_identifier: None,
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            };
            let ack = v5::ConnAck { session_present: true, code, properties: Some(properties) };
            self.send5(v5::Packet::ConnAck(ack)).await;
            connect
        }
    }

    /// A listener and options to reach it.
    async fn broker(version: MqttVersion, subscriptions: &[&str]) -> (TcpListener, ClientOptions) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let url = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).expect("a broker URL");
        let mut options = ClientOptions::new(url, "d-1", version);
        options.session = Session::Persistent { expiry_secs: 3600 };
        options.subscriptions = subscriptions.iter().map(|f| (*f).to_owned()).collect();
        options.last_will = Some(Publication::new("devices/d-1/presence", "offline", true));
        options.inflight = 10;
        (listener, options)
    }

    async fn peer(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().await.expect("a connection");
        Peer { stream, input: BytesMut::new() }
    }

    fn delivery5(pkid: u16, correlation: &'static [u8]) -> v5::Packet {
        let properties = v5::PublishProperties {
            response_topic: Some("operator/responses".into()),
            correlation_data: Some(Bytes::from_static(correlation)),
            ..Default::default()
        };
        let mut publish = v5::Publish::new(
            FILTERS[0].replace('+', "reboot"),
            QoS::AtLeastOnce,
            "{}",
            Some(properties),
        );
        publish.pkid = pkid;
        v5::Packet::Publish(publish)
    }

    #[tokio::test]
    async fn mqtt5_connects_subscribes_and_reports_the_session_once_the_suback_is_in() {
        let (listener, options) = broker(MqttVersion::V5, &FILTERS).await;
        let mut client = CompactConnection::new(options);
        let broker = async {
            let mut peer = peer(&listener).await;
            let v5::Packet::Connect(connect, will, _) =
                peer.accept5(v5::ConnectReturnCode::Success, None).await
            else {
                panic!("CONNECT first");
            };
            assert_eq!(connect.client_id, "d-1");
            assert!(!connect.clean_start, "a persistent session");
            let expiry = connect.properties.and_then(|p| p.session_expiry_interval);
            assert_eq!(expiry, Some(3600));
            let will = will.expect("a Last Will");
            assert_eq!(
                (will.topic.as_ref(), will.retain),
                (b"devices/d-1/presence".as_ref(), true)
            );
            let v5::Packet::Subscribe(subscribe) = peer.read5().await else {
                panic!("SUBSCRIBE after CONNACK");
            };
            let filters: Vec<_> = subscribe.filters.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(filters, FILTERS);
            // A delivery of the resumed session can come before the SUBACK.
            peer.send5(delivery5(7, b"r-1")).await;
            let codes = vec![
                v5::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                v5::SubscribeReasonCode::NotAuthorized,
            ];
            let ack = v5::SubAck { pkid: subscribe.pkid, return_codes: codes, properties: None };
            peer.send5(v5::Packet::SubAck(ack)).await;
            peer
        };
        let client_side = async {
            let first = client.next().await;
            let second = client.next().await;
            (first, second)
        };
        let (mut peer, (first, second)) = tokio::join!(broker, client_side);

        let Some(Event::Message(message)) = first else { panic!("the delivery: {first:?}") };
        assert_eq!(message.topic, "devices/d-1/methods/reboot");
        assert_eq!(message.correlation.as_deref(), Some(b"r-1".as_ref()));
        assert_eq!(message.response_topic.as_deref(), Some("operator/responses"));
        assert_eq!(
            second,
            Some(Event::Connected {
                session_present: true,
                refused: vec![crate::Refusal {
                    filter: FILTERS[1].into(),
                    reason: "NotAuthorized".into()
                }],
            })
        );
        // The delivery's PUBACK went out while the client waited for the SUBACK.
        let acked = tokio::time::timeout(Duration::from_secs(5), peer.read5()).await;
        assert_eq!(acked.ok(), Some(v5::Packet::PubAck(v5::PubAck::new(7, None))));
    }

    #[tokio::test]
    async fn mqtt311_connects_subscribes_delivers_and_acknowledges() {
        use rumqttc::mqttbytes::v4;
        let (listener, options) = broker(MqttVersion::V311, &FILTERS).await;
        let mut client = CompactConnection::new(options);
        let broker = async {
            let mut peer = peer(&listener).await;
            let v4::Packet::Connect(connect) = peer.read4().await else { panic!("CONNECT first") };
            assert!(!connect.clean_session, "a persistent session");
            assert!(connect.last_will.is_some(), "a Last Will");
            peer.send4(v4::Packet::ConnAck(v4::ConnAck::new(
                v4::ConnectReturnCode::Success,
                false,
            )))
            .await;
            let v4::Packet::Subscribe(subscribe) = peer.read4().await else { panic!("SUBSCRIBE") };
            let codes = vec![v4::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce); 2];
            peer.send4(v4::Packet::SubAck(v4::SubAck::new(subscribe.pkid, codes))).await;
            let mut publish =
                v4::Publish::new("devices/d-1/twin/desired", rumqttc::QoS::AtLeastOnce, "{}");
            publish.pkid = 3;
            peer.send4(v4::Packet::Publish(publish)).await;
            peer
        };
        let client_side = async { (client.next().await, client.next().await) };
        let (mut peer, (first, second)) = tokio::join!(broker, client_side);

        assert_eq!(first, Some(Event::Connected { session_present: false, refused: Vec::new() }));
        let Some(Event::Message(message)) = second else { panic!("the delivery: {second:?}") };
        assert_eq!(message.topic, "devices/d-1/twin/desired");
        client
            .publish(Publication::new("devices/d-1/twin/reported", "{}", false))
            .await
            .expect("sent");
        assert_eq!(peer.read4().await, v4::Packet::PubAck(v4::PubAck::new(3)));
        let v4::Packet::Publish(publish) = peer.read4().await else { panic!("the publication") };
        assert_eq!(
            (publish.topic.as_str(), publish.qos),
            ("devices/d-1/twin/reported", rumqttc::QoS::AtLeastOnce)
        );
    }

    #[tokio::test]
    async fn publications_beyond_the_receive_maximum_wait_for_an_acknowledgement() {
        let (mut peer, mut client) = connected5(Some(2), Duration::from_secs(30)).await;
        let message = |n: u8| {
            let mut m = Publication::new("devices/d-1/twin/reported", vec![n], false);
            m.properties = Some(RequestProperties {
                correlation_data: Some(Bytes::from(vec![n])),
                ..Default::default()
            });
            m
        };
        client.publish(message(1)).await.expect("first sent");
        client.publish(message(2)).await.expect("second sent");
        let mut third = Box::pin(client.publish(message(3)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut third).await.is_err(),
            "a third publication waits while two are unacknowledged"
        );
        let mut pkids = Vec::new();
        for _ in 0..2 {
            let v5::Packet::Publish(publish) = peer.read5().await else { panic!("a PUBLISH") };
            assert_eq!(publish.qos, QoS::AtLeastOnce);
            pkids.push(publish.pkid);
        }
        assert!(pkids[0] != 0 && pkids[1] != 0 && pkids[0] != pkids[1], "{pkids:?}");
        peer.send5(v5::Packet::PubAck(v5::PubAck::new(pkids[0], None))).await;
        third.await.expect("sent once the first was acknowledged");
        let v5::Packet::Publish(publish) = peer.read5().await else { panic!("the third PUBLISH") };
        assert_eq!(publish.payload.as_ref(), [3]);
        assert_eq!(
            publish.properties.and_then(|p| p.correlation_data).as_deref(),
            Some([3].as_ref())
        );
    }

    #[tokio::test]
    async fn a_silent_broker_is_pinged_and_then_given_up() {
        let (mut peer, mut client) = connected5(None, Duration::from_secs(1)).await;
        let (ping, down) = tokio::join!(peer.read5(), client.next());
        assert_eq!(ping, v5::Packet::PingReq(v5::PingReq));
        let Some(Event::Down { reason }) = down else { panic!("given up: {down:?}") };
        assert!(reason.contains("PINGRESP"), "{reason}");
        assert_eq!(client.next().await, None, "nothing after Down");
    }

    #[tokio::test]
    async fn a_refused_connection_is_down_with_the_brokers_reason() {
        let (_peer, mut client, down) =
            started5(v5::ConnectReturnCode::NotAuthorized, None, Duration::from_secs(30)).await;
        let Some(Event::Down { reason }) = down else { panic!("refused: {down:?}") };
        assert!(reason.contains("refused the connection: NotAuthorized"), "{reason}");
        let publish = client.publish(Publication::new("t", "x", false)).await;
        assert_eq!(publish, Err(ClientError::Closed));
    }

    /// A client (no subscriptions) with `keep_alive`, whose CONNECT the peer answered with
    /// `code` and `receive_max`: the peer, the client and the client's first event.
    async fn started5(
        code: v5::ConnectReturnCode,
        receive_max: Option<u16>,
        keep_alive: Duration,
    ) -> (Peer, CompactConnection, Option<Event>) {
        let (listener, mut options) = broker(MqttVersion::V5, &[]).await;
        options.keep_alive = keep_alive;
        let mut client = CompactConnection::new(options);
        let (peer, first) = tokio::join!(
            async {
                let mut peer = peer(&listener).await;
                peer.accept5(code, receive_max).await;
                peer
            },
            client.next()
        );
        (peer, client, first)
    }

    /// A connected client (no subscriptions) with `receive_max` and `keep_alive`, and the peer.
    async fn connected5(
        receive_max: Option<u16>,
        keep_alive: Duration,
    ) -> (Peer, CompactConnection) {
        let (peer, client, connected) =
            started5(v5::ConnectReturnCode::Success, receive_max, keep_alive).await;
        assert!(matches!(connected, Some(Event::Connected { .. })), "{connected:?}");
        (peer, client)
    }

    #[tokio::test]
    async fn close_sends_disconnect_and_is_clean_only_once_the_broker_hangs_up() {
        for hangs_up in [true, false] {
            let (mut peer, mut client) = connected5(None, Duration::from_secs(30)).await;
            client
                .publish(Publication::new("devices/d-1/presence", "offline", true))
                .await
                .expect("sent");
            let broker = async {
                let v5::Packet::Publish(_) = peer.read5().await else {
                    panic!("the publication first")
                };
                // DISCONNECT with reason 0 (normal) and no properties is two bytes, which
                // rumqttc's own reader does not take (mosquitto does, as MQTT 5 allows).
                while peer.input.len() < 2 {
                    assert!(peer.stream.read_buf(&mut peer.input).await.expect("a read") > 0);
                }
                assert_eq!(peer.input.as_ref(), [0xE0, 0x00], "DISCONNECT, normal");
                peer
            };
            let close = async {
                let (peer, clean) = tokio::join!(
                    async {
                        let peer = broker.await;
                        if hangs_up {
                            drop(peer);
                            None
                        } else {
                            Some(peer)
                        }
                    },
                    client.close(Duration::from_millis(500))
                );
                (peer, clean)
            };
            let (_peer, clean) = close.await;
            assert_eq!(clean, hangs_up, "clean when the broker hung up: {hangs_up}");
        }
    }

    #[tokio::test]
    async fn next_can_be_cancelled_halfway_through_a_packet() {
        let (mut peer, mut client) = connected5(None, Duration::from_secs(30)).await;
        let mut whole = BytesMut::new();
        delivery5(5, b"half").write(&mut whole, None).expect("encodable");
        let half = whole.len() / 2;
        peer.stream.write_all(&whole[..half]).await.expect("a write");
        let cancelled = tokio::time::timeout(Duration::from_millis(200), client.next()).await;
        assert!(cancelled.is_err(), "half a packet is no event: {cancelled:?}");
        peer.stream.write_all(&whole[half..]).await.expect("a write");
        let Some(Event::Message(message)) = client.next().await else { panic!("the delivery") };
        assert_eq!(message.correlation.as_deref(), Some(b"half".as_ref()));
    }

    #[tokio::test]
    async fn a_broker_answering_pings_keeps_the_connection() {
        let (mut peer, mut client) = connected5(None, Duration::from_secs(1)).await;
        let broker = async {
            for _ in 0..2 {
                assert_eq!(peer.read5().await, v5::Packet::PingReq(v5::PingReq));
                peer.send5(v5::Packet::PingResp(v5::PingResp)).await;
            }
            peer.send5(delivery5(1, b"after-pings")).await;
            peer
        };
        let (_peer, event) = tokio::join!(broker, client.next());
        let Some(Event::Message(message)) = event else { panic!("still up: {event:?}") };
        assert_eq!(message.correlation.as_deref(), Some(b"after-pings".as_ref()));
    }

    #[tokio::test]
    async fn a_broker_disconnect_or_hang_up_ends_the_connection_with_its_reason() {
        let cases: [(Option<&[u8]>, &str); 3] = [
            (Some(&[0xE0, 0x00]), "the broker disconnected: NormalDisconnection"),
            // mosquitto's DISCONNECT with a reason code and no properties.
            (Some(&[0xE0, 0x01, 0x8E]), "the broker disconnected: SessionTakenOver"),
            (None, "closed the connection"),
        ];
        for (disconnect, expected) in cases {
            let (mut peer, mut client) = connected5(None, Duration::from_secs(30)).await;
            if let Some(bytes) = disconnect {
                peer.stream.write_all(bytes).await.expect("a write");
            }
            drop(peer);
            let Some(Event::Down { reason }) = client.next().await else { panic!("down") };
            assert!(reason.contains(expected), "{reason}");
            assert_eq!(client.next().await, None);
        }
    }

    #[tokio::test]
    async fn what_arrives_while_publish_waits_for_room_comes_out_of_next_in_order() {
        let (mut peer, mut client) = connected5(Some(1), Duration::from_secs(30)).await;
        client
            .publish(Publication::new("devices/d-1/twin/reported", "1", false))
            .await
            .expect("sent");
        let broker = async {
            let v5::Packet::Publish(first) = peer.read5().await else { panic!("a PUBLISH") };
            peer.send5(delivery5(11, b"one")).await;
            peer.send5(delivery5(12, b"two")).await;
            peer.send5(v5::Packet::PubAck(v5::PubAck::new(first.pkid, None))).await;
            let v5::Packet::PubAck(ack) = peer.read5().await else { panic!("PUBACK 11") };
            assert_eq!(ack.pkid, 11);
            peer
        };
        let second = client.publish(Publication::new("devices/d-1/twin/reported", "2", false));
        let (_peer, sent) = tokio::join!(broker, second);
        sent.expect("sent once the first was acknowledged");
        for expected in [b"one".as_ref(), b"two".as_ref()] {
            let Some(Event::Message(message)) = client.next().await else { panic!("a delivery") };
            assert_eq!(message.correlation.as_deref(), Some(expected));
        }
    }

    #[test]
    fn a_packet_split_across_reads_is_taken_only_once_whole() {
        let mut whole = BytesMut::new();
        delivery5(9, b"c").write(&mut whole, None).expect("encodable");
        let mut input = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(decode(MqttVersion::V5, &mut input, 1024), Ok(None));
        input.extend_from_slice(&whole[whole.len() - 1..]);
        let Ok(Some(Inbound::Publish { pkid, qos, .. })) =
            decode(MqttVersion::V5, &mut input, 1024)
        else {
            panic!("the whole packet");
        };
        assert_eq!((pkid, qos, input.len()), (9, 1, 0));
        let mut empty = BytesMut::new();
        assert_eq!(decode(MqttVersion::V311, &mut empty, 1024), Ok(None));
    }

    #[test]
    fn a_packet_larger_than_allowed_ends_the_connection() {
        let mut input = BytesMut::new();
        delivery5(9, b"c").write(&mut input, None).expect("encodable");
        let error = decode(MqttVersion::V5, &mut input, 8).expect_err("too large");
        assert!(error.contains("larger than allowed"), "{error}");
        let mut input = BytesMut::from(&[0x30, 0x03, 0x00, 0x09, 0x00][..]);
        let error = decode(MqttVersion::V311, &mut input, 1024).expect_err("malformed");
        assert!(error.contains("malformed packet"), "{error}");
    }

    #[test]
    fn a_packet_a_client_never_receives_is_named_by_its_kind() {
        let mut input = BytesMut::new();
        let pubrec = v5::Packet::PubRec(v5::PubRec::new(4, None));
        pubrec.write(&mut input, None).expect("encodable");
        let inbound = decode(MqttVersion::V5, &mut input, 1024);
        assert_eq!(inbound, Ok(Some(Inbound::Unexpected("PubRec".into()))));
        assert_eq!(packet_kind(&rumqttc::mqttbytes::v4::Packet::PingReq), "PingReq");
    }
}
