//! mosquitto on free loopback ports with a generated configuration: per-device identity and
//! topic ACLs on by default, exactly as the Helm chart configures its bundled broker.
//!
//! Two listeners: plain MQTT authenticated by a password file, and TLS where a client
//! certificate's common name is the identity. On both the client id is forced to the identity.
//! The ACL lets every device act only as itself and only the operator write desired documents
//! and requests.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use kubetwin_device_sim::credentials::{DeviceIdentity, derive_password, device_password_lines};
use kubetwin_mqtt::{Credentials, Security};

use crate::{
    certs::{BrokerTls, write_broker_tls},
    error::{Error, Result, io_context},
    process::{ManagedProcess, Signal},
    tools,
};

/// Largest MQTT packet the test broker accepts or forwards: the chart's default
/// (`mosquitto.maxPacketBytes`), equal to the operator's `--max-packet-bytes`.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// The operator's identity on the broker.
pub const OPERATOR: &str = "kubetwin-operator";
/// Messages the broker queues per client: the chart's default (`mosquitto.maxQueuedMessages`),
/// so tests see the drops users see.
pub const MAX_QUEUED_MESSAGES: usize = 100_000;

/// The topic ACL of the contract under `root` for the operator identity `operator`: the same
/// text the Helm chart renders (a test compares them).
pub fn acl_text(root: &str, operator: &str) -> String {
    format!(
        "# kubetwin topic ACL (generated): every device acts only as itself; %u is its identity,
# which is its deviceId (the user name, or the certificate's common name).
pattern write {root}/%u/twin/reported
pattern write {root}/%u/twin/get
pattern write {root}/%u/rpc/res/+
pattern write {root}/%u/presence
pattern read {root}/%u/twin/desired
pattern read {root}/%u/rpc/req/#
# Every device reads the operator's session announcement (a new one asks for a resync).
pattern read {root}/_operator/session
# The operator reads what devices send, and alone writes desired documents and requests.
{}",
        operator_acl(root, operator)
    )
}

/// The ACL section of one identity with the operator's rights.
fn operator_acl(root: &str, user: &str) -> String {
    format!(
        "user {user}
topic read {root}/+/twin/reported
topic read {root}/+/twin/get
topic read {root}/+/rpc/res/+
topic read {root}/+/presence
topic readwrite {root}/+/twin/desired
topic write {root}/+/rpc/req/#
topic write {root}/_operator/session
"
    )
}

/// Whether clients must prove who they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// Per-client identity, client id forced to it, topic ACLs (the default).
    #[default]
    Enforced,
    /// Anyone may connect as anything (`allow_anonymous true`, no ACL): insecure.
    AnonymousInsecure,
    /// mosquitto's dynamic-security plugin instead of the password file and ACL file: the
    /// operator (password login) may subscribe only to `operator_may_subscribe`; unlike the
    /// ACL file, the plugin refuses other subscriptions in the SUBACK.
    DynamicSecurity {
        /// Topic filters the operator may subscribe to.
        operator_may_subscribe: Vec<String>,
    },
}

/// The path of mosquitto's dynamic-security plugin from Debian's package.
pub const DYNAMIC_SECURITY_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

/// A dynamic-security configuration with one client, the operator, whose role allows
/// subscribing to `filters` and publishing anywhere.
fn dynamic_security_config(operator_password: &str, filters: &[String]) -> Result<String> {
    use base64::Engine as _;
    let random = ring::rand::SystemRandom::new();
    let salt = kubetwin_device_sim::credentials::salt(&random).map_err(|e| Error::Io {
        context: "salting".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let hash = kubetwin_device_sim::credentials::password_hash(operator_password, &salt);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut acls: Vec<serde_json::Value> = filters
        .iter()
        .map(|f| serde_json::json!({"acltype": "subscribeLiteral", "topic": f, "priority": 0, "allow": true}))
        .collect();
    acls.push(serde_json::json!({"acltype": "publishClientSend", "topic": "#", "priority": 0, "allow": true}));
    acls.push(serde_json::json!({"acltype": "publishClientReceive", "topic": "#", "priority": 0, "allow": true}));
    let config = serde_json::json!({
        "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
        "clients": [{
            "username": OPERATOR,
            "password": b64.encode(hash),
            "salt": b64.encode(salt),
            "iterations": kubetwin_device_sim::credentials::MOSQUITTO_ITERATIONS,
            "roles": [{"rolename": "operator"}],
        }],
        "groups": [],
        "roles": [{"rolename": "operator", "acls": acls}],
    });
    Ok(config.to_string())
}

/// How simulated devices prove who they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Login {
    /// A client certificate minted from the broker's CA (no broker change per device).
    #[default]
    Certificates,
    /// A password derived from the broker's secret (the ids must be in
    /// [`BrokerSetup::password_devices`]).
    Passwords,
}

/// How to set up a broker.
#[derive(Clone, Debug)]
pub struct BrokerSetup {
    /// Topic root of the ACL.
    pub topic_root: String,
    /// Identity enforcement.
    pub identity: Identity,
    /// Device ids that log in with a password (derived from the broker's secret).
    pub password_devices: Vec<String>,
    /// More identities with the operator's rights (for example a benchmark's own client).
    pub extra_operators: Vec<String>,
    /// Identities that may publish and subscribe anything: to inject input no real device
    /// could send through the ACL (what a broken broker configuration would let through).
    pub superusers: Vec<String>,
    /// Whether the broker keeps sessions and retained messages on disk across restarts.
    pub persistence: bool,
    /// Messages queued per client (the chart's default unless a test wants drops).
    pub max_queued_messages: usize,
    /// More loopback addresses (127.0.0.2, …) the plain listener also listens on: one client
    /// address reaches one broker address on ~28,000 local ports, so 100,000 simulated
    /// devices need several (the simulator's `--broker-hosts` spreads them).
    pub extra_loopback_hosts: Vec<String>,
}

impl BrokerSetup {
    /// Enforced identity under `topic_root`, with nothing else.
    pub fn new(topic_root: &str) -> Self {
        Self {
            topic_root: topic_root.to_string(),
            identity: Identity::Enforced,
            password_devices: Vec::new(),
            extra_operators: Vec::new(),
            superusers: Vec::new(),
            persistence: false,
            max_queued_messages: MAX_QUEUED_MESSAGES,
            extra_loopback_hosts: Vec::new(),
        }
    }
}

/// A running mosquitto broker. Dropping it stops the broker.
#[derive(Debug)]
pub struct Broker {
    process: ManagedProcess,
    /// Loopback port of its plain MQTT listener (password identity).
    pub port: u16,
    /// Loopback port of its TLS listener (certificate identity).
    pub tls_port: u16,
    /// Its certificates: the CA also issues device and operator client certificates.
    pub tls: BrokerTls,
    /// The setup it runs with.
    pub setup: BrokerSetup,
    secret: Vec<u8>,
    dir: PathBuf,
}

impl Broker {
    /// Starts mosquitto with its configuration, credentials and log in `dir`.
    pub async fn start(dir: &Path, setup: BrokerSetup) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_context(format!("creating {}", dir.display())))?;
        let tls = write_broker_tls(dir)?;
        let secret = format!("kubetwin-e2e-{}-{}", std::process::id(), dir.display()).into_bytes();
        let secret_file = dir.join("device-password-secret");
        write(&secret_file, &secret)?;
        let mut users: Vec<String> = vec![OPERATOR.to_string()];
        users.extend(setup.extra_operators.iter().cloned());
        users.extend(setup.superusers.iter().cloned());
        users.extend(setup.password_devices.iter().cloned());
        let passwords = device_password_lines(&secret, &users).map_err(|e| Error::Io {
            context: "hashing passwords".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write(&dir.join("passwords"), passwords.as_bytes())?;
        write(&dir.join("operator-password"), derive_password(&secret, OPERATOR).as_bytes())?;
        let mut acl = acl_text(&setup.topic_root, OPERATOR);
        for extra in &setup.extra_operators {
            acl.push_str(&operator_acl(&setup.topic_root, extra));
        }
        for superuser in &setup.superusers {
            // `#` does not match `$SYS/...`: the broker's own statistics are named apart.
            acl.push_str(&format!("user {superuser}\ntopic readwrite #\ntopic read $SYS/#\n"));
        }
        write(&dir.join("acl"), acl.as_bytes())?;

        let binary = tools::mosquitto()?;
        let identity = match &setup.identity {
            Identity::Enforced => format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                dir.join("passwords").display(),
                dir.join("acl").display()
            ),
            Identity::AnonymousInsecure => "allow_anonymous true\n".to_string(),
            Identity::DynamicSecurity { operator_may_subscribe } => {
                let file = dir.join("dynamic-security.json");
                let password = derive_password(&secret, OPERATOR);
                write(
                    &file,
                    dynamic_security_config(&password, operator_may_subscribe)?.as_bytes(),
                )?;
                format!(
                    "allow_anonymous false\nplugin {DYNAMIC_SECURITY_PLUGIN}\nplugin_opt_config_file {}\n",
                    file.display()
                )
            }
        };
        let bind_id = match setup.identity {
            Identity::Enforced | Identity::DynamicSecurity { .. } => {
                "use_username_as_clientid true\n"
            }
            Identity::AnonymousInsecure => "",
        };
        let persistence = if setup.persistence {
            format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.display()
            )
        } else {
            "persistence false\n".to_string()
        };
        let config = dir.join("mosquitto.conf");
        let config_for = |port: u16, tls_port: u16| {
            let extra_listeners: String = setup
                .extra_loopback_hosts
                .iter()
                // mosquitto applies use_username_as_clientid to the listener declared just before
                // it, so every listener of the plain port gets its own.
                .map(|host| format!("listener {port} {host}\nprotocol mqtt\n{bind_id}"))
                .collect();
            format!(
                "# Generated by the kubetwin test harness.
per_listener_settings false
{identity}listener {port} 127.0.0.1
protocol mqtt
{bind_id}{extra_listeners}listener {tls_port} 127.0.0.1
cafile {ca}
certfile {cert}
keyfile {key}
require_certificate true
use_identity_as_username true
{bind_id}{persistence}max_packet_size {MAX_PACKET_BYTES}
max_queued_messages {max_queued}
sys_interval 1
set_tcp_nodelay true
log_dest stdout
log_type error
log_type warning
log_type notice
connection_messages true
",
                max_queued = setup.max_queued_messages,
                ca = tls.ca.display(),
                cert = tls.server_cert.display(),
                key = tls.server_key.display(),
            )
        };
        // A port found free can be taken by another process (say a client's ephemeral port)
        // before mosquitto binds it: start again on other ports then.
        let mut attempt = 1;
        let (process, port, tls_port) = loop {
            let (port, tls_port) = crate::process::two_free_ports()?;
            write(&config, config_for(port, tls_port).as_bytes())?;
            let process = ManagedProcess::spawn(
                "mosquitto",
                &binary,
                &["-c".to_string(), config.display().to_string()],
                &dir.join("mosquitto.log"),
            )?;
            let mut started = Ok(());
            for listener in [port, tls_port] {
                if started.is_ok() {
                    started = process
                        .wait_for_port(
                            SocketAddr::from(([127, 0, 0, 1], listener)),
                            Duration::from_secs(30),
                        )
                        .await;
                }
            }
            if started.is_ok() {
                // mosquitto exits when a listener cannot bind, possibly after another answered
                // (and another process may be the one answering on the port it could not
                // take): make sure it is still up.
                tokio::time::sleep(Duration::from_millis(100)).await;
                started = process.check_running();
            }
            match started {
                Ok(()) => break (process, port, tls_port),
                Err(Error::Startup { tail, .. })
                    if attempt < 3 && tail.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(Self { process, port, tls_port, tls, setup, secret, dir: dir.to_path_buf() })
    }

    /// `mqtt://127.0.0.1:PORT` of the plain listener.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:PORT` of the TLS listener.
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port)
    }

    /// The password of `identity` (one of the broker's password users).
    pub fn password(&self, identity: &str) -> String {
        derive_password(&self.secret, identity)
    }

    /// Operator flags: its URL and credentials (none when anonymous).
    pub fn operator_flags(&self) -> Vec<String> {
        let mut flags = vec![format!("--broker-url={}", self.url())];
        if self.setup.identity != Identity::AnonymousInsecure {
            flags.push(format!("--broker-username={OPERATOR}"));
            flags.push(format!(
                "--broker-password-file={}",
                self.dir.join("operator-password").display()
            ));
        }
        flags
    }

    /// Simulator flags for devices that log in as `login` says.
    pub fn simulator_flags(&self, login: Login) -> Vec<String> {
        match login {
            Login::Certificates => self.simulator_certificate_flags(),
            Login::Passwords => self.simulator_password_flags(),
        }
    }

    /// Simulator flags with certificate identity: every device presents a certificate for its
    /// device id, minted from the broker's CA (no broker change needed per device).
    pub fn simulator_certificate_flags(&self) -> Vec<String> {
        match self.setup.identity {
            Identity::Enforced | Identity::DynamicSecurity { .. } => vec![
                format!("--broker-url={}", self.tls_url()),
                format!("--broker-ca-file={}", self.tls.ca.display()),
                format!("--device-ca-cert-file={}", self.tls.ca.display()),
                format!("--device-ca-key-file={}", self.tls.ca_key.display()),
            ],
            Identity::AnonymousInsecure => vec![format!("--broker-url={}", self.url())],
        }
    }

    /// Simulator flags with password identity (the ids must be in
    /// [`BrokerSetup::password_devices`]).
    pub fn simulator_password_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--broker-url={}", self.url()),
            format!(
                "--device-password-secret-file={}",
                self.dir.join("device-password-secret").display()
            ),
        ];
        if !self.setup.extra_loopback_hosts.is_empty() {
            flags.push(format!("--broker-hosts={}", self.setup.extra_loopback_hosts.join(",")));
        }
        flags
    }

    /// TLS and credentials for a test client logging in as `identity` with its password on
    /// the plain listener.
    pub fn password_security(&self, identity: &str) -> Security {
        Security {
            tls: None,
            credentials: Some(Credentials {
                username: identity.to_string(),
                password: self.password(identity),
            }),
        }
    }

    /// TLS and credentials for a test client presenting a certificate for `identity` on the
    /// TLS listener.
    pub fn certificate_security(&self, identity: &str) -> Result<Security> {
        let failed = |e: String| Error::Io {
            context: format!("credentials of {identity}"),
            source: std::io::Error::other(e),
        };
        let ca = fs::read(&self.tls.ca).map_err(io_context("reading the broker CA"))?;
        let issuer = DeviceIdentity::certificates_from(&self.tls.ca, &self.tls.ca_key)
            .map_err(|e| failed(e.to_string()))?;
        // The same CA verifies the broker.
        issuer.security(identity, Some(&ca)).map_err(|e| failed(e.to_string()))
    }

    /// Stops the broker with `signal` (SIGKILL or SIGTERM) — a fault the tests inject.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.process.signal(signal)
    }

    /// Starts the broker again with the same configuration (same ports; with persistence, its
    /// sessions and retained messages come back from disk) and waits for its listeners.
    pub async fn restart(&self) -> Result<()> {
        self.process.restart()?;
        for listener in [self.port, self.tls_port] {
            self.process
                .wait_for_port(
                    SocketAddr::from(([127, 0, 0, 1], listener)),
                    Duration::from_secs(30),
                )
                .await?;
        }
        Ok(())
    }

    /// Process id of mosquitto.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Folder of its configuration, credentials and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write(path: &Path, content: &[u8]) -> Result<()> {
    fs::write(path, content).map_err(io_context(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_confines_devices_to_their_own_topics() {
        let acl = acl_text("kubetwin/v1", "op");
        assert!(acl.contains("pattern write kubetwin/v1/%u/presence\n"));
        assert!(acl.contains("user op\ntopic read kubetwin/v1/+/twin/reported\n"));
        assert!(
            !acl.contains("pattern write kubetwin/v1/%u/twin/desired"),
            "devices never write desired"
        );
    }
}
