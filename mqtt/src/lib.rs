//! The MQTT client of kubetwin, shared by the operator, the simulator, the test harness and
//! the benchmarks (one URL, security and event vocabulary; two ways to drive a connection):
//!
//! - [`BrokerUrl`]: `mqtt://` and `mqtts://` URLs with IPv4, IPv6 and default ports;
//! - [`MqttVersion`]: MQTT 5 or 3.1.1 (the same type the wire contract carries in presence);
//! - [`Security`]: TLS (with a client certificate for mutual TLS) and credentials;
//! - [`connect`]: one connection with one poll loop serving both protocol versions (the
//!   operator, the harness, the benchmarks). It
//!   subscribes on every new session, reports the session only once the SUBACK is in, and
//!   surfaces what the broker refused (SUBACK failure codes, MQTT 5 PUBACK reason codes);
//! - [`CompactConnection`]: a connection without a task of its own, for the simulator's
//!   fleets (a few KiB per connection instead of rumqttc's ~26 KiB allocated up front): the
//!   same events, subscriptions made on connecting, QoS 1 only, no reconnect.

mod client;
mod compact;
mod security;
mod url;

pub use client::{
    Client, ClientError, ClientOptions, Connection, Event, LinkState, PollTask, Publication,
    Received, Reconnect, Refusal, RequestProperties, Session, connect,
};
pub use compact::CompactConnection;
pub use kubetwin_protocol::MqttVersion;
pub use security::{Credentials, Security, SecurityError, tls_config, tls_config_from_pem};
pub use url::{BrokerUrl, UrlError};
