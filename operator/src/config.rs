//! Command-line flags and environment variables of the operator.

use std::net::SocketAddr;

use clap::Parser;

use kubetwin_protocol::MqttVersion;

/// Settings of one operator process.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kubetwin-operator",
    version,
    about = "Manages IoT device twins as Kubernetes resources"
)]
pub struct OperatorConfig {
    /// MQTT broker URL: mqtt://host[:port] or mqtts://host[:port] (IPv6 hosts in brackets).
    #[arg(long, env = "KUBETWIN_BROKER_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub broker_url: String,

    /// PEM file with the CA certificates that sign the broker's certificate (mqtts://).
    #[arg(long, env = "KUBETWIN_BROKER_CA_FILE")]
    pub broker_ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate for mutual TLS with the broker.
    #[arg(long, env = "KUBETWIN_BROKER_CLIENT_CERT_FILE", requires = "broker_client_key_file")]
    pub broker_client_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, env = "KUBETWIN_BROKER_CLIENT_KEY_FILE", requires = "broker_client_cert_file")]
    pub broker_client_key_file: Option<std::path::PathBuf>,

    /// MQTT user name.
    #[arg(long, env = "KUBETWIN_BROKER_USERNAME")]
    pub broker_username: Option<String>,

    /// File holding the MQTT password (read once at start).
    #[arg(long, env = "KUBETWIN_BROKER_PASSWORD_FILE", requires = "broker_username")]
    pub broker_password_file: Option<std::path::PathBuf>,

    /// MQTT protocol version: 5 or 3.1.1.
    #[arg(long, env = "KUBETWIN_MQTT_VERSION", default_value = "5")]
    pub mqtt_version: MqttVersion,

    /// Topic root of the MQTT contract.
    #[arg(long, env = "KUBETWIN_TOPIC_ROOT", default_value = kubetwin_protocol::DEFAULT_ROOT)]
    pub topic_root: String,

    /// MQTT client id of the operator.
    #[arg(long, env = "KUBETWIN_MQTT_CLIENT_ID", default_value = "kubetwin-operator")]
    pub mqtt_client_id: String,

    /// Largest MQTT payload accepted from devices, in bytes; larger ones are dropped.
    #[arg(long, env = "KUBETWIN_MAX_PAYLOAD_BYTES", default_value_t = kubetwin_protocol::DEFAULT_MAX_PAYLOAD)]
    pub max_payload_bytes: usize,

    /// Largest MQTT packet the operator reads, in bytes. Larger payloads than
    /// --max-payload-bytes are still dropped, but a packet beyond this limit breaks the
    /// connection: set the broker's own limit (mosquitto max_packet_size) no higher. MQTT 5
    /// brokers learn it at CONNECT and drop larger messages for the operator themselves.
    #[arg(long, env = "KUBETWIN_MAX_PACKET_BYTES", default_value_t = 1024 * 1024)]
    pub max_packet_bytes: usize,

    /// Seconds a device that accepted a reboot may stay away (after the request's delay)
    /// before the request times out with reason NoReturn.
    #[arg(long, env = "KUBETWIN_REBOOT_RETURN_TIMEOUT_SECONDS", default_value_t = 300)]
    pub reboot_return_timeout_seconds: u64,

    /// Status writes per second, at most, over all objects (the write budget).
    #[arg(long, env = "KUBETWIN_STATUS_WRITE_RATE", default_value_t = 50.0)]
    pub status_write_rate: f64,

    /// Status writes that may go at once after a quiet time.
    #[arg(long, env = "KUBETWIN_STATUS_WRITE_BURST", default_value_t = 100.0)]
    pub status_write_burst: f64,

    /// Seconds a disruptive request waits for room in a DeviceDisruptionBudget before it times
    /// out with reason DisruptionBudgetExhausted (counted from its creation).
    #[arg(long, env = "KUBETWIN_BUDGET_WAIT_SECONDS", default_value_t = 1800)]
    pub budget_wait_seconds: u64,

    /// Least milliseconds between two routine status writes of one object (urgent changes:
    /// connection changes and reboot phases, are not held back).
    #[arg(long, env = "KUBETWIN_STATUS_MIN_INTERVAL_MS", default_value_t = 1000)]
    pub status_min_interval_ms: u64,

    /// Kubernetes Events per second, at most; more are queued (up to 1,000) or dropped.
    #[arg(long, env = "KUBETWIN_EVENT_RATE", default_value_t = 20.0)]
    pub event_rate: f64,

    /// Events that may go at once after a quiet time.
    #[arg(long, env = "KUBETWIN_EVENT_BURST", default_value_t = 50.0)]
    pub event_burst: f64,

    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "KUBETWIN_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// How many objects of one kind are reconciled at once.
    #[arg(long, env = "KUBETWIN_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// How each watch fetches what exists when it starts (and after its watch expired):
    /// `auto` streams it when the API server serves streaming lists (the WatchList feature,
    /// on by default in recent Kubernetes) and lists it in pages otherwise; `streaming` and
    /// `paged` choose without asking.
    #[arg(long, env = "KUBETWIN_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "KUBETWIN_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Run only while holding a Lease, so that of several replicas exactly one acts.
    #[arg(long, env = "KUBETWIN_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "KUBETWIN_LEASE_NAME", default_value = "kubetwin-operator")]
    pub lease_name: String,

    /// Seconds a leader's Lease stays valid without renewal; a standby takes over after it.
    #[arg(long, env = "KUBETWIN_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Seconds a graceful shutdown (SIGTERM) may take before it releases the Lease: the
    /// reconciles in flight finish (at most 5 s of it), then the statuses still queued are
    /// written; keep it below the pod's termination grace period.
    #[arg(long, env = "KUBETWIN_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "KUBETWIN_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

/// How a watch fetches the objects that exist when it starts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialList {
    /// Streaming when the API server serves it, paged otherwise (decided once, at start).
    Auto,
    /// One watch that sends every object, then a bookmark (`sendInitialEvents`): the API
    /// server streams from its watch cache while the operator takes in what arrived, where
    /// paged lists wait for each other (measured in B3: the restart at 30,000 Devices).
    Streaming,
    /// Lists in pages of 500, then a watch: every API server serves it.
    Paged,
}
