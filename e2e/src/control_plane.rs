//! etcd + kube-apiserver + kube-controller-manager on free loopback ports.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    certs::Pki,
    error::{Result, io_context},
    process::ManagedProcess,
    tools,
};

/// How long each component may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Set (to anything) to serve kube-apiserver's `/debug/pprof` (CPU profiles of the API server).
pub const PROFILING_ENV: &str = "KUBETWIN_APISERVER_PROFILING";

/// A running control plane. Dropping it stops every process (in reverse start order).
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: controller-manager, then apiserver, then etcd.
    controller_manager: ManagedProcess,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    /// https://127.0.0.1:PORT of kube-apiserver.
    pub server_url: String,
    /// Admin kubeconfig (user in group `system:masters`).
    pub kubeconfig: PathBuf,
    /// The PKI it runs with.
    pub pki: Pki,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver (RBAC on) and kube-controller-manager with state in `dir`,
    /// and waits until the API server is ready and the controller manager is working.
    pub async fn start(dir: &Path) -> Result<Self> {
        let etcd_bin = tools::tool("etcd")?;
        let apiserver_bin = tools::tool("kube-apiserver")?;
        let kcm_bin = tools::tool("kube-controller-manager")?;

        let pki = Pki::generate()?;
        let pki_dir = dir.join("pki");
        fs::create_dir_all(&pki_dir).map_err(io_context("creating the pki folder"))?;
        pki.write_to(&pki_dir)?;

        let etcd_port = crate::process::free_port()?;
        let etcd_peer_port = crate::process::free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = ManagedProcess::spawn(
            "etcd",
            &etcd_bin,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        )?;
        etcd.wait_for_port(SocketAddr::from(([127, 0, 0, 1], etcd_port)), STARTUP_TIMEOUT).await?;

        let api_port = crate::process::free_port()?;
        let p = |name: &str| pki_dir.join(name).display().to_string();
        let apiserver = ManagedProcess::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                // `/debug/pprof` only when asked for: a profile of the API server shows where
                // a benchmark bound by its CPU spends it (docs/operations.md).
                format!("--profiling={}", std::env::var_os(PROFILING_ENV).is_some()),
                "--v=1".into(),
            ],
            &dir.join("kube-apiserver.log"),
        )?;
        apiserver
            .wait_for_port(SocketAddr::from(([127, 0, 0, 1], api_port)), STARTUP_TIMEOUT)
            .await?;

        let server_url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, &p("ca.crt"), &pki.admin, &pki_dir, "admin")?;
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kcm_kubeconfig,
            &server_url,
            &p("ca.crt"),
            &pki.controller_manager,
            &pki_dir,
            "controller-manager",
        )?;

        let client = client_for(&kubeconfig).await?;
        wait_until_ready(&client, &apiserver).await?;

        let kcm = ManagedProcess::spawn(
            "kube-controller-manager",
            &kcm_bin,
            &[
                format!("--kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", crate::process::free_port()?),
                format!("--cert-dir={}", dir.join("kcm-certs").display()),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                "--use-service-account-credentials=true".into(),
                "--leader-elect=false".into(),
                "--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle,-ttl".into(),
                "--v=1".into(),
            ],
            &dir.join("kube-controller-manager.log"),
        )?;
        wait_for_default_service_account(&client, &kcm).await?;

        Ok(Self { controller_manager: kcm, apiserver, etcd, server_url, kubeconfig, pki })
    }

    /// A new client authenticated as the admin user.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager.
    pub fn pids(&self) -> [u32; 3] {
        [self.etcd.pid(), self.apiserver.pid(), self.controller_manager.pid()]
    }

    /// Stops kube-apiserver (SIGKILL): an API-server outage, a fault the tests inject.
    pub fn stop_apiserver(&self) {
        self.apiserver.kill();
    }

    /// Starts kube-apiserver again (same port, certificates and etcd) and waits until it is
    /// ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        self.apiserver.restart()?;
        let client = self.client().await?;
        wait_until_ready(&client, &self.apiserver).await
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) kube-apiserver: it keeps its connections open and
    /// answers nothing meanwhile, a fault the tests inject.
    pub fn freeze_apiserver(&self, frozen: bool) -> Result<()> {
        let signal =
            if frozen { crate::process::Signal::Stop } else { crate::process::Signal::Cont };
        self.apiserver.signal(signal)
    }
}

/// A client for the cluster and user of a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_file: &str,
    user: &crate::certs::CertPair,
    pki_dir: &Path,
    user_name: &str,
) -> Result<()> {
    let cert = pki_dir.join(format!("{user_name}.crt"));
    let key = pki_dir.join(format!("{user_name}.key"));
    fs::write(&cert, &user.cert_pem).map_err(io_context(format!("writing {}", cert.display())))?;
    fs::write(&key, &user.key_pem).map_err(io_context(format!("writing {}", key.display())))?;
    let credentials =
        format!("client-certificate: {}\n    client-key: {}", cert.display(), key.display());
    write_kubeconfig_file(path, server, ca_file, user_name, &credentials)
}

/// Writes a kubeconfig for `server` (trusting `ca_file`) whose user `user_name` logs in with
/// `credentials` (the YAML lines of a kubeconfig `user:` block, indented by four spaces).
pub fn write_kubeconfig_file(
    path: &Path,
    server: &str,
    ca_file: &str,
    user_name: &str,
    credentials: &str,
) -> Result<()> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kubetwin-test
  cluster:
    server: {server}
    certificate-authority: {ca_file}
users:
- name: {user_name}
  user:
    {credentials}
contexts:
- name: kubetwin-test
  context:
    cluster: kubetwin-test
    user: {user_name}
    namespace: default
current-context: kubetwin-test
"
    );
    fs::write(path, yaml).map_err(io_context(format!("writing {}", path.display())))
}

async fn wait_until_ready(client: &Client, apiserver: &ManagedProcess) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        apiserver.check_running()?;
        let last_error = match http::Request::get("/readyz").body(Vec::new()) {
            Ok(request) => match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            return Err(apiserver.startup_error(format!("/readyz not ok: {last_error}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_default_service_account(client: &Client, kcm: &ManagedProcess) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        kcm.check_running()?;
        if accounts.get_opt("default").await?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(kcm.startup_error(
                "the default ServiceAccount was not created: the controllers do not run".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
