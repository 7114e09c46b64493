//! Command line and environment configuration of `kubetwin-sim`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubetwin_mqtt::{BrokerUrl, MqttVersion};
use kubetwin_protocol::{DEFAULT_ROOT, validate_device_id};

/// Errors in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The broker URL is not `mqtt[s]://host[:port]`.
    #[error("{0}")]
    BrokerUrl(#[from] kubetwin_mqtt::UrlError),
    /// TLS or credentials could not be set up.
    #[error("broker security: {0}")]
    Security(String),
    /// A device id is not valid under the contract.
    #[error("invalid device id {id:?}: {reason}")]
    DeviceId {
        /// The id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same device id appears twice.
    #[error("device id {0:?} is listed twice")]
    DuplicateId(String),
    /// No device to simulate.
    #[error("no devices to simulate (--count 0 or empty --ids)")]
    NoDevices,
    /// A numeric option is out of range.
    #[error("{0}")]
    Range(String),
}

/// Command line of `kubetwin-sim`; every flag can also be set with a `KUBETWIN_SIM_*` variable.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "kubetwin-sim",
    version,
    about = "Simulates IoT devices speaking the kubetwin MQTT contract v1"
)]
pub struct Cli {
    /// Broker to connect to: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, needs
    /// --broker-ca-file); IPv6 hosts in brackets.
    #[arg(long, env = "KUBETWIN_SIM_BROKER_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub broker_url: String,

    /// PEM file with the CA certificates that sign the broker's certificate (mqtts://).
    #[arg(long, env = "KUBETWIN_SIM_BROKER_CA_FILE")]
    pub broker_ca_file: Option<PathBuf>,

    /// More hosts of the same broker (same scheme and port) to spread the connections over,
    /// device i using host i mod (1 + count) with the URL's host first. One client address
    /// reaches one broker address on ~28,000 local ports only, so 100,000 devices on one
    /// machine need several (for example 127.0.0.2,127.0.0.3,127.0.0.4). IPv6 hosts in
    /// brackets; with mqtts:// the broker's certificate must name each.
    #[arg(long, env = "KUBETWIN_SIM_BROKER_HOSTS", value_delimiter = ',')]
    pub broker_hosts: Vec<String>,

    /// Per-device passwords: every device logs in as its device id with a password derived
    /// from the secret in this file (see `kubetwin_device_sim::credentials`).
    #[arg(
        long,
        env = "KUBETWIN_SIM_DEVICE_PASSWORD_SECRET_FILE",
        conflicts_with = "device_ca_cert_file"
    )]
    pub device_password_secret_file: Option<PathBuf>,

    /// Per-device client certificates: every device presents a certificate with common name =
    /// its device id, minted at start from this CA certificate (PEM). Needs mqtts://.
    #[arg(long, env = "KUBETWIN_SIM_DEVICE_CA_CERT_FILE", requires = "device_ca_key_file")]
    pub device_ca_cert_file: Option<PathBuf>,

    /// Private key (PEM) of the device CA.
    #[arg(long, env = "KUBETWIN_SIM_DEVICE_CA_KEY_FILE", requires = "device_ca_cert_file")]
    pub device_ca_key_file: Option<PathBuf>,

    /// Topic root of the contract.
    #[arg(long, env = "KUBETWIN_SIM_TOPIC_ROOT", default_value = DEFAULT_ROOT)]
    pub topic_root: String,

    /// Number of devices, named `{id-prefix}-{i}` for i in 0..count.
    #[arg(long, env = "KUBETWIN_SIM_COUNT", default_value_t = 1)]
    pub count: usize,

    /// Prefix of generated device ids.
    #[arg(long, env = "KUBETWIN_SIM_ID_PREFIX", default_value = "sim")]
    pub id_prefix: String,

    /// Explicit comma-separated device ids (overrides --count and --id-prefix).
    #[arg(long, env = "KUBETWIN_SIM_IDS", value_delimiter = ',')]
    pub ids: Option<Vec<String>>,

    /// Directory holding one ledger file per device.
    #[arg(long, env = "KUBETWIN_SIM_STATE_DIR", default_value = ".kubetwin-sim")]
    pub state_dir: PathBuf,

    /// Firmware version the devices report.
    #[arg(long, env = "KUBETWIN_SIM_FIRMWARE", default_value = "1.0.0")]
    pub firmware: String,

    /// Seconds a device stays offline while rebooting.
    #[arg(long, env = "KUBETWIN_SIM_BOOT_SECONDS", default_value_t = 2.0)]
    pub boot_seconds: f64,

    /// Milliseconds a device waits before answering a request.
    #[arg(long, env = "KUBETWIN_SIM_RESPONSE_DELAY_MS", default_value_t = 0)]
    pub response_delay_ms: u64,

    /// Largest number of new MQTT connections per second, for the whole fleet.
    #[arg(long, env = "KUBETWIN_SIM_CONNECT_RATE", default_value_t = 500.0)]
    pub connect_rate: f64,

    /// Load mode: every device publishes a telemetry patch every X ms (0 = off).
    #[arg(long, env = "KUBETWIN_SIM_REPORT_INTERVAL_MS", default_value_t = 0)]
    pub report_interval_ms: u64,

    /// MQTT version: `5` or `3.1.1`.
    #[arg(long, env = "KUBETWIN_SIM_MQTT_VERSION", default_value = "5")]
    pub mqtt_version: MqttVersion,

    /// Fault: answer every request Rejected (409).
    #[arg(long, env = "KUBETWIN_SIM_REJECT_METHODS")]
    pub reject_methods: bool,

    /// Fault: never answer requests.
    #[arg(long, env = "KUBETWIN_SIM_NEVER_ANSWER")]
    pub never_answer: bool,

    /// Fault: behave like a device without resync: ignore the operator's session
    /// announcements and send no full report on a reconnect (what such a device loses shows).
    #[arg(long, env = "KUBETWIN_SIM_NO_RESYNC")]
    pub no_resync: bool,

    /// Fault: accept a reboot, go offline and never come back.
    #[arg(long, env = "KUBETWIN_SIM_CRASH_DURING_REBOOT")]
    pub crash_during_reboot: bool,

    /// Fault: every firmware image downloads corrupted (its checksum does not match).
    #[arg(long, env = "KUBETWIN_SIM_FIRMWARE_CORRUPT")]
    pub firmware_corrupt: bool,

    /// Fault: a new firmware image fails to boot; the device comes back on the old one.
    #[arg(long, env = "KUBETWIN_SIM_FIRMWARE_BAD_IMAGE")]
    pub firmware_bad_image: bool,

    /// Fault: a firmware download starts and never finishes.
    #[arg(long, env = "KUBETWIN_SIM_FIRMWARE_HANG")]
    pub firmware_hang: bool,

    /// Fault: answer the first N new requests of each device Failed (500), then behave.
    #[arg(long, env = "KUBETWIN_SIM_FAIL_FIRST_REQUESTS", default_value_t = 0)]
    pub fail_first_requests: u32,

    /// Fault: drop the connection without DISCONNECT once, this many seconds after start.
    #[arg(long, env = "KUBETWIN_SIM_OFFLINE_AFTER")]
    pub offline_after: Option<f64>,

    /// Seconds to stay offline after --offline-after before reconnecting.
    #[arg(long, env = "KUBETWIN_SIM_OFFLINE_FOR", default_value_t = 5.0)]
    pub offline_for: f64,

    /// Create a `Device` object for every simulated device (server-side apply, KUBECONFIG).
    #[arg(long, env = "KUBETWIN_SIM_CREATE_DEVICES")]
    pub create_devices: bool,

    /// Namespace of the created `Device` objects.
    #[arg(long, env = "KUBETWIN_SIM_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Log as JSON lines.
    #[arg(long, env = "KUBETWIN_SIM_LOG_JSON")]
    pub log_json: bool,
}

/// The device ids: `ids` if given, else `{prefix}-{i}` for i in 0..count; validated and unique.
pub fn device_ids(
    count: usize,
    prefix: &str,
    ids: Option<&[String]>,
) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = match ids {
        Some(ids) => ids.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        None => (0..count).map(|i| format!("{prefix}-{i}")).collect(),
    };
    if list.is_empty() {
        return Err(ConfigError::NoDevices);
    }
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for id in &list {
        validate_device_id(id)
            .map_err(|e| ConfigError::DeviceId { id: id.clone(), reason: e.to_string() })?;
        if !seen.insert(id.as_str()) {
            return Err(ConfigError::DuplicateId(id.clone()));
        }
    }
    Ok(list)
}

/// Fault injection switches shared by all devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer every request Rejected (409).
    pub reject_methods: bool,
    /// Never answer requests.
    pub never_answer: bool,
    /// Accept a reboot, go offline and never come back.
    pub crash_during_reboot: bool,
    /// Never resync (protocol 5.5).
    pub no_resync: bool,
    /// Firmware images download corrupted.
    pub firmware_corrupt: bool,
    /// New firmware images fail to boot (rollback).
    pub firmware_bad_image: bool,
    /// Firmware downloads never finish.
    pub firmware_hang: bool,
    /// Answer the first this many new requests of each device Failed (500).
    pub fail_first_requests: u32,
}

/// Validated configuration of a fleet run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Broker.
    pub broker: BrokerUrl,
    /// The same broker on the other hosts the connections are spread over (--broker-hosts).
    pub other_brokers: Vec<BrokerUrl>,
    /// CA bundle (PEM) that signs the broker's certificate, for mqtts://.
    pub broker_ca_file: Option<PathBuf>,
    /// How every device proves who it is.
    pub identity: IdentityFiles,
    /// Topic root.
    pub topic_root: String,
    /// Device ids to simulate.
    pub ids: Vec<String>,
    /// Directory of the ledgers.
    pub state_dir: PathBuf,
    /// Firmware version reported.
    pub firmware: String,
    /// Time offline during a reboot.
    pub boot_time: Duration,
    /// Wait before answering a request.
    pub response_delay: Duration,
    /// Largest number of new connections per second.
    pub connect_rate: f64,
    /// Telemetry interval, if load mode is on.
    pub report_interval: Option<Duration>,
    /// MQTT version.
    pub mqtt_version: MqttVersion,
    /// Fault switches.
    pub faults: Faults,
    /// Drop the connection ungracefully once after this long.
    pub offline_after: Option<Duration>,
    /// Stay offline this long after the drop.
    pub offline_for: Duration,
    /// Namespace to create `Device` objects in, if requested.
    pub create_devices_in: Option<String>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
}

/// Where the devices' credentials come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IdentityFiles {
    /// None: the broker allows anonymous clients.
    #[default]
    Anonymous,
    /// Passwords derived from the fleet secret in this file.
    Password(PathBuf),
    /// Certificates minted from this CA certificate and key.
    Certificate {
        /// CA certificate (PEM).
        cert: PathBuf,
        /// CA key (PEM).
        key: PathBuf,
    },
}

impl IdentityFiles {
    /// Loads the identity these files describe.
    pub fn load(&self) -> Result<crate::credentials::DeviceIdentity, ConfigError> {
        use crate::credentials::DeviceIdentity;
        let loaded = match self {
            Self::Anonymous => Ok(DeviceIdentity::Anonymous),
            Self::Password(secret) => DeviceIdentity::password_from(secret),
            Self::Certificate { cert, key } => DeviceIdentity::certificates_from(cert, key),
        };
        loaded.map_err(|e| ConfigError::Security(e.to_string()))
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| ConfigError::Range(format!("{name} must be a number of seconds >= 0")))
}

impl Config {
    /// Validates the command line into a configuration.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let connect_rate = cli.connect_rate;
        if !(connect_rate.is_finite() && connect_rate > 0.0) {
            return Err(ConfigError::Range("--connect-rate must be > 0".into()));
        }
        if cli.topic_root.is_empty() || cli.topic_root.contains(['+', '#']) {
            return Err(ConfigError::Range(
                "--topic-root must be non-empty and without wildcards".into(),
            ));
        }
        let broker = BrokerUrl::parse(&cli.broker_url)?;
        if broker.tls && cli.broker_ca_file.is_none() {
            return Err(ConfigError::Security("mqtts:// needs --broker-ca-file".into()));
        }
        let identity = match (
            &cli.device_password_secret_file,
            &cli.device_ca_cert_file,
            &cli.device_ca_key_file,
        ) {
            (Some(secret), _, _) => IdentityFiles::Password(secret.clone()),
            (None, Some(cert), Some(key)) if broker.tls => {
                IdentityFiles::Certificate { cert: cert.clone(), key: key.clone() }
            }
            (None, Some(_), _) => {
                return Err(ConfigError::Security(
                    "--device-ca-cert-file (certificate identity) needs an mqtts:// broker URL"
                        .into(),
                ));
            }
            _ => IdentityFiles::Anonymous,
        };
        let scheme = if broker.tls { "mqtts" } else { "mqtt" };
        let other_brokers = cli
            .broker_hosts
            .iter()
            .map(|host| BrokerUrl::parse(&format!("{scheme}://{host}:{}", broker.port)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            broker,
            other_brokers,
            broker_ca_file: cli.broker_ca_file.clone(),
            identity,
            topic_root: cli.topic_root.clone(),
            ids: device_ids(cli.count, &cli.id_prefix, cli.ids.as_deref())?,
            state_dir: cli.state_dir.clone(),
            firmware: cli.firmware.clone(),
            boot_time: seconds("--boot-seconds", cli.boot_seconds)?,
            response_delay: Duration::from_millis(cli.response_delay_ms),
            connect_rate,
            report_interval: (cli.report_interval_ms > 0)
                .then(|| Duration::from_millis(cli.report_interval_ms)),
            mqtt_version: cli.mqtt_version,
            faults: Faults {
                reject_methods: cli.reject_methods,
                never_answer: cli.never_answer,
                crash_during_reboot: cli.crash_during_reboot,
                no_resync: cli.no_resync,
                firmware_corrupt: cli.firmware_corrupt,
                firmware_bad_image: cli.firmware_bad_image,
                firmware_hang: cli.firmware_hang,
                fail_first_requests: cli.fail_first_requests,
            },
            offline_after: cli.offline_after.map(|s| seconds("--offline-after", s)).transpose()?,
            offline_for: seconds("--offline-for", cli.offline_for)?,
            create_devices_in: cli.create_devices.then(|| cli.namespace.clone()),
            keep_alive: Duration::from_secs(30),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["kubetwin-sim"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]);
        assert_eq!(cli.topic_root, "kubetwin/v1");
        assert_eq!(cli.count, 1);
        assert_eq!(cli.id_prefix, "sim");
        assert_eq!(cli.state_dir, PathBuf::from(".kubetwin-sim"));
        assert_eq!(cli.firmware, "1.0.0");
        assert_eq!(cli.mqtt_version, MqttVersion::V5);
        let config = Config::from_cli(&cli).unwrap();
        assert_eq!(config.ids, vec!["sim-0".to_owned()]);
        assert_eq!(config.boot_time, Duration::from_secs(2));
        assert_eq!(config.response_delay, Duration::ZERO);
        assert_eq!(config.connect_rate, 500.0);
        assert_eq!(config.report_interval, None);
        assert_eq!(config.faults, Faults::default());
        assert_eq!(config.offline_after, None);
        assert_eq!(config.create_devices_in, None);
        assert_eq!(config.broker, BrokerUrl::parse("mqtt://127.0.0.1:1883").unwrap());
        assert_eq!(config.broker_ca_file, None);
        assert_eq!(config.identity, IdentityFiles::Anonymous);
    }

    #[test]
    fn all_flags() {
        let cli = parse(&[
            "--broker-url",
            "mqtt://broker.local:11883",
            "--topic-root",
            "t/x",
            "--ids",
            "a,b.c,d-1",
            "--count",
            "7",
            "--state-dir",
            "/tmp/s",
            "--firmware",
            "2.0",
            "--boot-seconds",
            "0.5",
            "--response-delay-ms",
            "250",
            "--connect-rate",
            "10",
            "--report-interval-ms",
            "1000",
            "--mqtt-version",
            "3.1.1",
            "--reject-methods",
            "--never-answer",
            "--crash-during-reboot",
            "--offline-after",
            "3",
            "--offline-for",
            "1.5",
            "--create-devices",
            "--namespace",
            "ns1",
            "--log-json",
        ]);
        assert!(cli.log_json);
        let c = Config::from_cli(&cli).unwrap();
        assert_eq!(c.broker.host, "broker.local");
        assert_eq!(c.broker.port, 11883);
        assert_eq!(c.topic_root, "t/x");
        assert_eq!(c.ids, vec!["a", "b.c", "d-1"]);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.firmware, "2.0");
        assert_eq!(c.boot_time, Duration::from_millis(500));
        assert_eq!(c.response_delay, Duration::from_millis(250));
        assert_eq!(c.connect_rate, 10.0);
        assert_eq!(c.report_interval, Some(Duration::from_secs(1)));
        assert_eq!(c.mqtt_version, MqttVersion::V311);
        assert_eq!(
            c.faults,
            Faults {
                reject_methods: true,
                never_answer: true,
                crash_during_reboot: true,
                ..Faults::default()
            }
        );
        assert_eq!(c.offline_after, Some(Duration::from_secs(3)));
        assert_eq!(c.offline_for, Duration::from_millis(1500));
        assert_eq!(c.create_devices_in.as_deref(), Some("ns1"));
    }

    #[test]
    fn bad_values_are_refused() {
        let argv = ["kubetwin-sim", "--mqtt-version", "4.0"];
        assert!(Cli::try_parse_from(argv).is_err());
        let cli = parse(&["--count", "0"]);
        assert_eq!(Config::from_cli(&cli), Err(ConfigError::NoDevices));
        let cli = parse(&["--boot-seconds=-1"]);
        assert!(matches!(Config::from_cli(&cli), Err(ConfigError::Range(_))));
        let cli = parse(&["--connect-rate", "0"]);
        assert!(matches!(Config::from_cli(&cli), Err(ConfigError::Range(_))));
        let cli = parse(&["--broker-url", "tcp://x:1"]);
        assert!(matches!(Config::from_cli(&cli), Err(ConfigError::BrokerUrl(_))));
        let cli = parse(&["--broker-url", "mqtts://broker:8883"]);
        assert_eq!(
            Config::from_cli(&cli).map_err(|e| e.to_string()),
            Err("broker security: mqtts:// needs --broker-ca-file".into())
        );
    }

    #[test]
    fn extra_broker_hosts_keep_the_scheme_and_port_and_must_be_hosts() {
        let config = Config::from_cli(&parse(&[
            "--broker-url",
            "mqtt://127.0.0.1:11883",
            "--broker-hosts",
            "127.0.0.2,127.0.0.3",
        ]))
        .unwrap();
        let urls: Vec<String> = config.other_brokers.iter().map(ToString::to_string).collect();
        assert_eq!(urls, ["mqtt://127.0.0.2:11883", "mqtt://127.0.0.3:11883"]);
        let bad = Config::from_cli(&parse(&["--broker-hosts", "a/b"]));
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn broker_urls_are_the_shared_client_s_and_tls_needs_a_ca() {
        let config = |url: &str| Config::from_cli(&parse(&["--broker-url", url]));
        assert_eq!(
            config("mqtt://[::1]:1884").map(|c| c.broker.to_string()),
            Ok("mqtt://[::1]:1884".into())
        );
        let with_ca =
            Config::from_cli(&parse(&["--broker-url", "mqtts://b", "--broker-ca-file", "/ca.pem"]))
                .unwrap();
        assert_eq!(with_ca.broker.port, 8883);
        assert_eq!(with_ca.broker_ca_file, Some("/ca.pem".into()));
        let certs = Config::from_cli(&parse(&[
            "--broker-url",
            "mqtts://b",
            "--broker-ca-file",
            "/ca.pem",
            "--device-ca-cert-file",
            "/dca.pem",
            "--device-ca-key-file",
            "/dca.key",
        ]))
        .unwrap();
        assert_eq!(
            certs.identity,
            IdentityFiles::Certificate { cert: "/dca.pem".into(), key: "/dca.key".into() }
        );
        let plain_certs = Config::from_cli(&parse(&[
            "--device-ca-cert-file",
            "/dca.pem",
            "--device-ca-key-file",
            "/dca.key",
        ]));
        assert!(matches!(plain_certs, Err(ConfigError::Security(_))), "certificates need TLS");
        let passwords = Config::from_cli(&parse(&["--device-password-secret-file", "/s"])).unwrap();
        assert_eq!(passwords.identity, IdentityFiles::Password("/s".into()));
        for bad in [
            "h:1",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:x",
            "mqtt://h:1/path",
            "mqtt://u@h:1",
            "mqtt://[::1",
        ] {
            assert!(matches!(config(bad), Err(ConfigError::BrokerUrl(_))), "{bad}");
        }
    }

    #[test]
    fn generated_ids() {
        assert_eq!(device_ids(3, "sim", None).unwrap(), vec!["sim-0", "sim-1", "sim-2"]);
        assert_eq!(device_ids(10_000, "p", None).unwrap()[9_999], "p-9999");
        let explicit = vec!["x".to_owned(), " y ".to_owned(), String::new()];
        assert_eq!(device_ids(5, "sim", Some(&explicit)).unwrap(), vec!["x", "y"]);
        assert_eq!(device_ids(0, "sim", None), Err(ConfigError::NoDevices));
        assert!(matches!(device_ids(1, "Sim", None), Err(ConfigError::DeviceId { .. })));
        let dup = vec!["a".to_owned(), "a".to_owned()];
        assert_eq!(device_ids(1, "sim", Some(&dup)), Err(ConfigError::DuplicateId("a".into())));
    }

    #[test]
    fn env_vars_are_read() {
        // clap reads `env` at parse time; check the attribute names through the command.
        let cmd = <Cli as clap::CommandFactory>::command();
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert!(envs.contains(&"KUBETWIN_SIM_BROKER_URL".to_owned()));
        assert!(envs.contains(&"KUBETWIN_SIM_OFFLINE_FOR".to_owned()));
        let flags = cmd.get_arguments().filter(|a| a.get_long().is_some()).count();
        assert_eq!(envs.len(), flags);
        assert!(envs.iter().all(|e| e.starts_with("KUBETWIN_SIM_")));
    }
}
