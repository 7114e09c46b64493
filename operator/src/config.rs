//! Command-line flags and environment variables of the operator.

use clap::Parser;

/// Settings of one operator process.
#[derive(Parser, Debug, Clone)]
#[command(name = "kubetwin-operator", version, about = "Manages IoT device twins as Kubernetes resources")]
pub struct OperatorConfig {
    /// MQTT broker URL (mqtt://host:port or mqtts://host:port).
    #[arg(long, env = "KUBETWIN_BROKER_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub broker_url: String,

    /// Topic root of the MQTT contract.
    #[arg(long, env = "KUBETWIN_TOPIC_ROOT", default_value = "kubetwin/v1")]
    pub topic_root: String,

    /// MQTT client id of the operator.
    #[arg(long, env = "KUBETWIN_MQTT_CLIENT_ID", default_value = "kubetwin-operator")]
    pub mqtt_client_id: String,

    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "KUBETWIN_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// How many objects of one kind are reconciled at once.
    #[arg(long, env = "KUBETWIN_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "KUBETWIN_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}
