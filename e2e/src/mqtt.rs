//! A plain MQTT 5 client for tests: publishes raw payloads (good or bad) as a device would,
//! and records what it receives.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use rumqttc::v5::{AsyncClient, Event, MqttOptions, mqttbytes::QoS, mqttbytes::v5::Packet};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{Error, Result};

/// A test MQTT client; its connection ends when it is dropped.
pub struct TestClient {
    client: AsyncClient,
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
    task: JoinHandle<()>,
}

impl TestClient {
    /// Connects to the broker on 127.0.0.1:`port` and waits for the session.
    pub async fn connect(port: u16, client_id: &str) -> Result<Self> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_outgoing_inflight_upper_limit(100);
        options.set_max_packet_size(Some(1024 * 1024));
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if let Ok(mut list) = sink.lock() {
                            list.push((topic, p.payload));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
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
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
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
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| mqtt_error(&e.to_string()))
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
