//! Runs simulated devices against a real mosquitto (installed by `hack/tools.sh`; the tests
//! fail, naming what is missing, when it is not).
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kubetwin_device_sim::config::{Config, Faults};
use kubetwin_device_sim::{fleet, read_ledger};
use kubetwin_mqtt::{BrokerUrl, ClientOptions, Connection, Event, Publication, RequestProperties};
use kubetwin_protocol::timestamp::{format_rfc3339, now_unix_millis};
use kubetwin_protocol::{
    Codec, DesiredDocument, MethodRequest, MethodResponse, MqttVersion, Presence, PresenceState,
    ReportedMessage, ResponseStatus, Topics,
};
use serde_json::{Map, json};
use tokio::sync::watch;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto on a free local port, killed on drop.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Self {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} not found: install mosquitto (`hack/tools.sh` does, or `apt-get install mosquitto`)"
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nlog_type all\nlog_dest stderr\n"
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("mosquitto.log")).unwrap())
            .spawn()
            .unwrap();
        let broker = Self { child, port, _dir: dir };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not start on port {port}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path().join("mosquitto.log"));
            eprintln!("mosquitto log:\n{}", log.unwrap_or_default());
        }
    }
}

/// A message seen by the observer.
#[derive(Debug, Clone)]
struct Seen {
    topic: String,
    payload: Bytes,
    retain: bool,
    correlation: Option<Bytes>,
}

/// An operator-like MQTT 5 client that records everything under the root.
struct Observer {
    connection: Connection,
}

impl Observer {
    async fn start(port: u16) -> Self {
        let broker = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap();
        let mut options = ClientOptions::new(broker, "observer", MqttVersion::V5);
        options.subscriptions = vec!["kubetwin/v1/#".into()];
        let mut connection = kubetwin_mqtt::connect(options);
        let connected = tokio::time::timeout(Duration::from_secs(5), connection.next()).await;
        assert!(
            matches!(connected, Ok(Some(Event::Connected { ref refused, .. })) if refused.is_empty()),
            "the observer did not get its session: {connected:?}"
        );
        Self { connection }
    }

    async fn publish(&self, publication: Publication) {
        self.connection.client.publish(publication).await.unwrap();
    }

    /// Waits for the first message matching `pred` (others are skipped).
    async fn expect<T>(&mut self, what: &str, mut pred: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let event = tokio::time::timeout_at(deadline, self.connection.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            let Event::Message(message) = event else {
                continue;
            };
            let seen = Seen {
                topic: message.topic,
                payload: message.payload,
                retain: message.retained,
                correlation: message.correlation,
            };
            if let Some(found) = pred(&seen) {
                return found;
            }
        }
    }
}

fn presence(seen: &Seen, id: &str) -> Option<Presence> {
    (seen.topic == Topics::default().presence(id) && !seen.payload.is_empty())
        .then(|| Codec::default().decode_presence(&seen.payload).unwrap())
}

fn reported(seen: &Seen, id: &str) -> Option<ReportedMessage> {
    (seen.topic == Topics::default().reported(id))
        .then(|| Codec::default().decode_reported(&seen.payload).unwrap())
}

fn response(seen: &Seen, id: &str, request: &str) -> Option<(MethodResponse, Option<Bytes>)> {
    (seen.topic == Topics::default().response(id, request)).then(|| {
        (Codec::default().decode_response(&seen.payload).unwrap(), seen.correlation.clone())
    })
}

fn config(port: u16, id: &str, state_dir: PathBuf, mqtt: MqttVersion) -> Config {
    Config {
        broker: BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        other_brokers: vec![],
        broker_ca_file: None,
        identity: Default::default(),
        topic_root: "kubetwin/v1".into(),
        ids: vec![id.to_owned()],
        state_dir,
        firmware: "1.2.3".into(),
        boot_time: Duration::from_millis(300),
        response_delay: Duration::ZERO,
        connect_rate: 500.0,
        report_interval: None,
        mqtt_version: mqtt,
        faults: Faults::default(),
        offline_after: None,
        offline_for: Duration::from_secs(1),
        create_devices_in: None,
        keep_alive: Duration::from_secs(30),
    }
}

async fn publish_request(
    observer: &Observer,
    id: &str,
    request_id: &str,
    delay_seconds: u32,
) -> RequestProperties {
    let mut params = Map::new();
    params.insert("delaySeconds".into(), json!(delay_seconds));
    let now = now_unix_millis();
    let request = MethodRequest::new(
        request_id,
        "reboot",
        params,
        format_rfc3339(now),
        format_rfc3339(now + 60_000),
    );
    let topics = Topics::default();
    let properties = RequestProperties {
        response_topic: Some(topics.response(id, request_id)),
        correlation_data: Some(Bytes::copy_from_slice(request_id.as_bytes())),
        message_expiry_seconds: Some(60),
    };
    let mut publication = Publication::new(
        topics.request(id, "reboot", request_id),
        Codec::default().encode(&request).unwrap(),
        false,
    );
    publication.properties = Some(properties.clone());
    observer.publish(publication).await;
    properties
}

#[tokio::test]
async fn mqtt5_device_applies_desired_and_reboots_exactly_once() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let id = "it-v5";
    let mut observer = Observer::start(broker.port).await;
    let (stop, stopped) = watch::channel(false);
    let fleet = tokio::spawn(fleet::run(
        config(broker.port, id, state.path().to_owned(), MqttVersion::V5),
        stopped,
    ));

    let online = observer
        .expect("online presence", |s| presence(s, id).filter(|p| p.state == PresenceState::Online))
        .await;
    assert_eq!((online.boot, online.conn), (1, 1));
    assert_eq!(online.mqtt, Some(MqttVersion::V5));
    assert_eq!(online.firmware.as_deref(), Some("1.2.3"));
    let full = observer.expect("full report", |s| reported(s, id)).await;
    assert!(full.full);
    assert_eq!((full.boot, full.seq), (1, 1));
    assert_eq!(full.reported["firmwareVersion"], json!("1.2.3"));

    // Desired document: applied and reported.
    let mut desired = Map::new();
    desired.insert("led".into(), json!({"color": "green"}));
    let doc = DesiredDocument::new("epoch-1", 2, format_rfc3339(now_unix_millis()), desired);
    observer
        .publish(Publication::new(
            Topics::default().desired(id),
            Codec::default().encode(&doc).unwrap(),
            true,
        ))
        .await;
    let patch = observer.expect("applied patch", |s| reported(s, id)).await;
    assert_eq!(patch.applied.as_ref().map(|a| a.version), Some(2));
    assert_eq!(patch.reported["led"], json!({"color": "green"}));

    // Reboot.
    let request_id = "req-0001";
    publish_request(&observer, id, request_id, 0).await;
    let (accepted, correlation) =
        observer.expect("Accepted", |s| response(s, id, request_id)).await;
    assert_eq!((accepted.status, accepted.code), (ResponseStatus::Accepted, 202));
    assert_eq!(correlation.as_deref(), Some(request_id.as_bytes()));
    let rebooting = observer.expect("rebooting report", |s| reported(s, id)).await;
    assert_eq!(
        rebooting.reported["reboot"],
        json!({"status": "rebooting", "requestId": request_id})
    );
    let offline = observer.expect("offline presence", |s| presence(s, id)).await;
    assert_eq!(offline.state, PresenceState::Offline);
    assert_eq!(offline.reason.as_deref(), Some("reboot"));
    assert_eq!((offline.boot, offline.conn), (1, 1));
    let online = observer.expect("online after reboot", |s| presence(s, id)).await;
    assert_eq!(online.state, PresenceState::Online);
    assert_eq!((online.boot, online.conn), (2, 1));
    let full = observer.expect("full report after reboot", |s| reported(s, id)).await;
    assert!(full.full);
    assert_eq!((full.boot, full.seq), (2, 1));
    assert_eq!(full.reported["reboot"], json!({"status": "done", "requestId": request_id}));
    assert_eq!(full.reported["led"], json!({"color": "green"}));
    assert_eq!(full.applied.as_ref().map(|a| a.version), Some(2));
    let (succeeded, correlation) =
        observer.expect("Succeeded", |s| response(s, id, request_id)).await;
    assert_eq!((succeeded.status, succeeded.code), (ResponseStatus::Succeeded, 200));
    assert_eq!((succeeded.boot, succeeded.seq), (2, 2));
    assert_eq!(correlation.as_deref(), Some(request_id.as_bytes()));

    // The same request again: the stored answer, no second reboot.
    publish_request(&observer, id, request_id, 0).await;
    let (again, _) = observer.expect("repeated answer", |s| response(s, id, request_id)).await;
    assert_eq!(again, succeeded);
    let ledger = read_ledger(state.path(), id).unwrap().unwrap();
    assert_eq!(ledger.executed, vec![request_id.to_owned()]);
    assert_eq!(ledger.boot, 2);

    // Graceful shutdown: offline presence with reason shutdown.
    stop.send(true).unwrap();
    let offline = observer.expect("shutdown presence", |s| presence(s, id)).await;
    assert_eq!(offline.state, PresenceState::Offline);
    assert_eq!(offline.reason.as_deref(), Some("shutdown"));
    tokio::time::timeout(Duration::from_secs(10), fleet).await.unwrap().unwrap().unwrap();

    // A new process is a new boot.
    let (_stop, stopped) = watch::channel(false);
    let fleet = tokio::spawn(fleet::run(
        config(broker.port, id, state.path().to_owned(), MqttVersion::V5),
        stopped,
    ));
    let online = observer
        .expect("online after restart", |s| {
            presence(s, id).filter(|p| p.state == PresenceState::Online)
        })
        .await;
    assert_eq!((online.boot, online.conn), (3, 1));
    fleet.abort();
}

#[tokio::test]
async fn mqtt311_device_loses_connection_and_its_will_fires() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let id = "it-v311";
    let mut observer = Observer::start(broker.port).await;
    let mut cfg = config(broker.port, id, state.path().to_owned(), MqttVersion::V311);
    cfg.offline_after = Some(Duration::from_millis(500));
    cfg.offline_for = Duration::from_millis(500);
    let (stop, stopped) = watch::channel(false);
    let fleet = tokio::spawn(fleet::run(cfg, stopped));

    let online = observer
        .expect("online presence", |s| presence(s, id).filter(|p| p.state == PresenceState::Online))
        .await;
    assert_eq!((online.boot, online.conn, online.mqtt), (1, 1, Some(MqttVersion::V311)));
    let will = observer
        .expect("last will", |s| {
            presence(s, id).filter(|p| p.state == PresenceState::Offline).map(|p| (p, s.retain))
        })
        .await;
    assert_eq!(will.0.reason.as_deref(), Some("lost"));
    assert_eq!((will.0.boot, will.0.conn), (1, 1));
    assert_eq!(will.0.ts, None);
    let online = observer.expect("online again", |s| presence(s, id)).await;
    assert_eq!(online.state, PresenceState::Online);
    assert_eq!((online.boot, online.conn), (1, 2));

    // A 3.1.1 device answers on the standard topic without correlation data.
    let request_id = "req-311";
    publish_request(&observer, id, request_id, 0).await;
    let (accepted, correlation) =
        observer.expect("Accepted", |s| response(s, id, request_id)).await;
    assert_eq!(accepted.status, ResponseStatus::Accepted);
    assert_eq!(correlation, None);
    let (succeeded, _) = observer.expect("Succeeded", |s| response(s, id, request_id)).await;
    assert_eq!(succeeded.status, ResponseStatus::Succeeded);
    assert_eq!(succeeded.boot, 2);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), fleet).await.unwrap().unwrap().unwrap();
}
