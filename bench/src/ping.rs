//! The MQTT half of the floors: a raw request/response round trip with a device of the
//! simulator. A `ping` request is a valid method request for a method the simulator does not
//! know, so the device answers at once `Rejected` (404), after the same checks and ledger write
//! it does for a reboot.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use kubetwin_e2e::broker::Broker;
use kubetwin_mqtt::{BrokerUrl, Client, ClientOptions, Event, MqttVersion, Publication};
use kubetwin_protocol::{
    Codec, MethodRequest, ResponseStatus, Topics,
    timestamp::{format_rfc3339, now_unix_millis},
};
use tokio::{sync::oneshot, task::JoinHandle};

/// The benchmark client's identity on the broker: it has the operator's rights (publishing
/// requests), under its own name so it never takes the operator's session.
pub const BENCH_CLIENT: &str = "kubetwin-bench";
/// Method name the simulator does not implement.
pub const PING_METHOD: &str = "ping";
/// Longest wait for one answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(120);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<(Instant, Bytes)>>>>;

/// An MQTT 5 client that sends `ping` requests and times the answers.
pub struct Pinger {
    client: Client,
    topics: Topics,
    waiters: Waiters,
    task: JoinHandle<()>,
}

impl Pinger {
    /// Logs in to `broker` as [`BENCH_CLIENT`] and subscribes to every response under `root`
    /// (`{root}/+/rpc/res/+`).
    pub async fn connect(broker: &Broker, root: &str) -> anyhow::Result<Self> {
        let topics = Topics::new(root.to_string());
        let url = BrokerUrl::parse(&broker.url())?;
        let mut options = ClientOptions::new(url, BENCH_CLIENT, MqttVersion::V5);
        options.security = broker.password_security(BENCH_CLIENT);
        options.inflight = 1000;
        options.queue = 1000;
        options.max_packet_bytes = 1024 * 1024;
        options.subscriptions = vec![topics.response_filter()];
        let (client, mut events, _state, poll) = kubetwin_mqtt::connect(options).into_parts();
        let waiters: Waiters = Arc::default();
        let sink = waiters.clone();
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            // The poll loop lives as long as this task reads its events.
            let _poll = poll;
            let mut subscribed = Some(subscribed_tx);
            while let Some(event) = events.recv().await {
                match event {
                    Event::Connected { refused, .. } => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(refused.is_empty());
                        }
                    }
                    Event::Message(message) => {
                        let at = Instant::now();
                        let Some(request_id) = message.topic.rsplit('/').next() else {
                            continue;
                        };
                        let waiter = sink
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .remove(request_id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send((at, message.payload));
                        }
                    }
                    _ => {}
                }
            }
        });
        let granted = tokio::time::timeout(Duration::from_secs(30), subscribed_rx)
            .await
            .context("no SUBACK from the broker within 30 s")?
            .context("the MQTT client stopped")?;
        anyhow::ensure!(granted, "the broker refused the subscription to the responses");
        Ok(Self { client, topics, waiters, task })
    }

    /// One round trip: publishes a `ping` request to `device_id` (QoS 1) and waits for its
    /// answer; returns the time from publishing to receiving the answer.
    pub async fn ping(&self, device_id: &str) -> anyhow::Result<Duration> {
        // Unique over every Pinger of the process, shaped like a UUID.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id());
        let now = now_unix_millis();
        let request = MethodRequest::new(
            request_id.clone(),
            PING_METHOD,
            serde_json::Map::new(),
            format_rfc3339(now),
            format_rfc3339(now + 300_000),
        );
        let payload = Codec::default().encode(&request)?;
        let topic = self.topics.request(device_id, PING_METHOD, &request_id);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(request_id.clone(), tx);
        let sent = Instant::now();
        self.client
            .publish(Publication::new(topic, payload, false))
            .await
            .context("publishing a ping request")?;
        let (received, payload) = tokio::time::timeout(ANSWER_LIMIT, rx)
            .await
            .with_context(|| format!("{device_id} did not answer ping {request_id}"))?
            .context("the MQTT client stopped")?;
        let response = Codec::default()
            .decode_response(&payload)
            .with_context(|| format!("{device_id} answered ping with an invalid response"))?;
        anyhow::ensure!(
            response.status == ResponseStatus::Rejected,
            "{device_id} answered ping with {:?}, expected Rejected",
            response.status
        );
        Ok(received.saturating_duration_since(sent))
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.task.abort();
    }
}
