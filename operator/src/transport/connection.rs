//! The operator's one broker connection: settings from the flags, TLS and credentials.

use std::time::Duration;

use kubetwin_mqtt::{
    BrokerUrl, ClientOptions, Connection, Credentials, Reconnect, Security, Session, tls_config,
};
use kubetwin_protocol::Topics;

use crate::{config::OperatorConfig, error::Error};

/// Seconds the broker keeps the operator's session (its subscriptions and queued messages)
/// while the operator is away.
pub const SESSION_EXPIRY_SECS: u32 = 3600;
/// Most operator publications awaiting their PUBACK.
const INFLIGHT: u16 = 1000;
/// Capacity of the request queue into the client and of the event queue out of it.
const QUEUE: usize = 10_000;

/// TLS and credentials for the broker, from the settings.
pub fn broker_security(config: &OperatorConfig, broker: &BrokerUrl) -> Result<Security, Error> {
    let tls = match (&config.broker_ca_file, broker.tls) {
        (Some(ca), _) => {
            let client = config
                .broker_client_cert_file
                .as_deref()
                .zip(config.broker_client_key_file.as_deref());
            Some(tls_config(ca, client).map_err(|e| Error::Config(e.to_string()))?)
        }
        (None, true) => return Err(Error::Config("mqtts:// needs --broker-ca-file".into())),
        (None, false) => None,
    };
    let credentials = match (&config.broker_username, &config.broker_password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
            Some(Credentials { username: user.clone(), password: password.trim_end().to_string() })
        }
        (Some(user), None) => Some(Credentials { username: user.clone(), password: String::new() }),
        _ => None,
    };
    Ok(Security { tls, credentials })
}

/// Options of the operator's connection: a persistent session under its client id, the
/// operator's subscriptions, reconnects with backoff.
pub fn client_options(config: &OperatorConfig, topics: &Topics) -> Result<ClientOptions, Error> {
    let broker = BrokerUrl::parse(&config.broker_url).map_err(|e| Error::Config(e.to_string()))?;
    let security = broker_security(config, &broker)?;
    let mut options =
        ClientOptions::new(broker, config.mqtt_client_id.clone(), config.mqtt_version);
    options.keep_alive = Duration::from_secs(15);
    options.session = Session::Persistent { expiry_secs: SESSION_EXPIRY_SECS };
    // Above the payload limit, so an oversized payload is dropped by the codec (and counted)
    // rather than ending the connection; with MQTT 3.1.1 the broker must not send larger.
    options.max_packet_bytes =
        config.max_packet_bytes.max(config.max_payload_bytes.saturating_add(64 * 1024));
    options.inflight = INFLIGHT;
    options.queue = QUEUE;
    options.subscriptions = topics.operator_subscriptions();
    options.security = security;
    options.reconnect =
        Reconnect::Backoff { min: Duration::from_millis(100), max: Duration::from_secs(10) };
    Ok(options)
}

/// Starts the connection.
pub fn connect(config: &OperatorConfig, topics: &Topics) -> Result<Connection, Error> {
    Ok(kubetwin_mqtt::connect(client_options(config, topics)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> OperatorConfig {
        let mut argv = vec!["kubetwin-operator"];
        argv.extend_from_slice(args);
        OperatorConfig::parse_from(argv)
    }

    #[test]
    fn the_operator_keeps_a_persistent_session_and_subscribes_to_device_topics() {
        let options =
            client_options(&config(&["--broker-url", "mqtt://[::1]:1884"]), &Topics::default())
                .expect("valid");
        assert_eq!(options.broker.to_string(), "mqtt://[::1]:1884");
        assert_eq!(options.session, Session::Persistent { expiry_secs: SESSION_EXPIRY_SECS });
        assert_eq!(options.subscriptions, Topics::default().operator_subscriptions());
        assert!(matches!(options.reconnect, Reconnect::Backoff { .. }));
    }

    #[test]
    fn mqtts_without_a_ca_is_a_configuration_error() {
        let error =
            client_options(&config(&["--broker-url", "mqtts://broker"]), &Topics::default())
                .err()
                .map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("configuration: mqtts:// needs --broker-ca-file"));
    }
}
