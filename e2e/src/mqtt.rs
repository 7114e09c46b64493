//! A plain MQTT 5 client for tests, on the shared `kubetwin-mqtt` client: publishes raw
//! payloads (good or bad) as a device would, and records what it receives.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use kubetwin_mqtt::{BrokerUrl, Client, ClientOptions, Event, LinkState, MqttVersion, Publication};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A test MQTT client; its connection ends when it is dropped.
pub struct TestClient {
    client: Client,
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
    task: JoinHandle<()>,
}

impl TestClient {
    /// Connects to the broker on 127.0.0.1:`port` and waits for the session.
    pub async fn connect(port: u16, client_id: &str) -> Result<Self> {
        let broker = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}"))
            .map_err(|e| mqtt_error(&e.to_string()))?;
        let mut options = ClientOptions::new(broker, client_id, MqttVersion::V5);
        options.max_packet_bytes = 1024 * 1024;
        let (client, mut events, mut state, poll) = kubetwin_mqtt::connect(options).into_parts();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            // The poll loop lives as long as this task reads its events.
            let _poll = poll;
            while let Some(event) = events.recv().await {
                if let Event::Message(message) = event
                    && let Ok(mut list) = sink.lock()
                {
                    list.push((message.topic, message.payload));
                }
            }
        });
        let up = state.wait_for(|s| matches!(s, LinkState::Up { .. }));
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .map_err(|_| mqtt_error("no CONNACK from the broker within 10s"))?
            .map_err(|_| mqtt_error("the MQTT test client stopped"))?;
        Ok(Self { client, received, task })
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

    /// Subscribes to `filter` with QoS 1.
    pub async fn subscribe(&self, filter: &str) -> Result<()> {
        self.client.subscribe(&[filter.to_string()]).await.map_err(|e| mqtt_error(&e.to_string()))
    }

    /// Messages received so far, as (topic, payload).
    pub fn received(&self) -> Vec<(String, Bytes)> {
        self.received.lock().map(|l| l.clone()).unwrap_or_default()
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
