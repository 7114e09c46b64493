//! A plain MQTT 5 client for tests, on the shared `kubetwin-mqtt` client: publishes raw
//! payloads (good or bad) as a device would, subscribes, and records what it receives and
//! what the broker refused.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use kubetwin_mqtt::{
    BrokerUrl, Client, ClientOptions, Event, LinkState, MqttVersion, Publication, Security,
};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    broker::Broker,
    error::{Error, Result},
};

#[derive(Default)]
struct Seen {
    messages: Vec<(String, Bytes)>,
    refused_publications: Vec<String>,
}

/// A test MQTT client; its connection ends when it is dropped.
pub struct TestClient {
    client: Client,
    seen: Arc<Mutex<Seen>>,
    subacks: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TestClient {
    /// Logs in to `broker` as `identity` with its password (the plain listener).
    pub async fn with_password(broker: &Broker, identity: &str) -> Result<Self> {
        Self::connect(&broker.url(), identity, broker.password_security(identity)).await
    }

    /// Logs in to `broker` as `identity` with a client certificate for it (the TLS listener).
    pub async fn with_certificate(broker: &Broker, identity: &str) -> Result<Self> {
        Self::connect(&broker.tls_url(), identity, broker.certificate_security(identity)?).await
    }

    /// Connects to `url` with client id `client_id` and `security`, and waits for the session;
    /// fails with the broker's reason when it refuses the connection.
    pub async fn connect(url: &str, client_id: &str, security: Security) -> Result<Self> {
        let broker = BrokerUrl::parse(url).map_err(|e| mqtt_error(&e.to_string()))?;
        let mut options = ClientOptions::new(broker, client_id, MqttVersion::V5);
        options.max_packet_bytes = 1024 * 1024;
        options.security = security;
        let (client, mut events, mut state, poll) = kubetwin_mqtt::connect(options).into_parts();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let (subacks_tx, subacks) = mpsc::unbounded_channel();
        let (down_tx, mut down) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // The poll loop lives as long as this task reads its events.
            let _poll = poll;
            while let Some(event) = events.recv().await {
                let Ok(mut seen) = sink.lock() else {
                    return;
                };
                match event {
                    Event::Message(message) => seen.messages.push((message.topic, message.payload)),
                    Event::PublishRefused { reason } => seen.refused_publications.push(reason),
                    Event::SubAck { refused } => {
                        let _ = subacks_tx.send(refused);
                    }
                    Event::Down { reason } => {
                        let _ = down_tx.send(reason);
                    }
                    Event::Connected { .. } | Event::Closed => {}
                }
            }
        });
        let up = state.wait_for(|s| matches!(s, LinkState::Up { .. }));
        let session = tokio::time::timeout(Duration::from_secs(10), up).await;
        match session {
            Ok(Ok(_)) => {}
            // The loop ended (its state sender is gone): it said why before it ended.
            Ok(Err(_)) => {
                let reason = down.recv().await.unwrap_or_else(|| "no reason given".into());
                task.abort();
                return Err(mqtt_error(&format!("the broker refused the connection: {reason}")));
            }
            Err(_) => {
                task.abort();
                return Err(mqtt_error("no CONNACK from the broker within 10s"));
            }
        }
        Ok(Self { client, seen, subacks: tokio::sync::Mutex::new(subacks), task })
    }

    /// Publishes `payload` on `topic` with QoS 1.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<()> {
        self.client
            .publish(Publication::new(topic, payload.into(), retain))
            .await
            .map_err(|e| mqtt_error(&e.to_string()))
    }

    /// Publishes a JSON value on `topic` with QoS 1.
    pub async fn publish_json(
        &self,
        topic: &str,
        value: &serde_json::Value,
        retain: bool,
    ) -> Result<()> {
        self.publish(topic, value.to_string(), retain).await
    }

    /// Subscribes to `filter` with QoS 1 and returns the broker's answer: `None` when granted,
    /// else the refusal reason.
    pub async fn subscribe(&self, filter: &str) -> Result<Option<String>> {
        let mut subacks = self.subacks.lock().await;
        self.client
            .subscribe(&[filter.to_string()])
            .await
            .map_err(|e| mqtt_error(&e.to_string()))?;
        let answer = tokio::time::timeout(Duration::from_secs(10), subacks.recv())
            .await
            .map_err(|_| mqtt_error("no SUBACK within 10s"))?
            .ok_or_else(|| mqtt_error("the MQTT test client stopped"))?;
        Ok(answer.into_iter().next().flatten())
    }

    /// Messages received so far, as (topic, payload).
    pub fn received(&self) -> Vec<(String, Bytes)> {
        self.seen.lock().map(|s| s.messages.clone()).unwrap_or_default()
    }

    /// The reasons of the publications the broker refused so far (MQTT 5 PUBACK codes).
    pub fn refused_publications(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.refused_publications.clone()).unwrap_or_default()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mqtt_error(message: &str) -> Error {
    Error::Io {
        context: "MQTT test client".into(),
        source: std::io::Error::other(message.to_string()),
    }
}
