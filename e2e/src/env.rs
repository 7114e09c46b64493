//! [`TestEnv`]: a control plane plus a broker, and the helpers tests use on them.

use std::{
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

use crate::{
    broker::{Broker, BrokerSetup},
    control_plane::ControlPlane,
    error::{Error, Result, io_context},
    kubectl, tools,
};

/// Field manager the harness applies objects with.
pub const FIELD_MANAGER: &str = "kubetwin-e2e";

/// A control plane and an MQTT broker with their state in one temporary folder.
///
/// Dropping it stops every process and removes the folder (kept when `KUBETWIN_E2E_KEEP=1`,
/// for reading the component logs after a failure).
#[derive(Debug)]
pub struct TestEnv {
    // Field order is drop order: processes first, then the folder.
    /// etcd, kube-apiserver and kube-controller-manager.
    pub control_plane: ControlPlane,
    /// mosquitto.
    pub broker: Broker,
    dir: EnvDir,
}

impl TestEnv {
    /// Starts a new environment in a fresh temporary folder.
    pub async fn start() -> Result<Self> {
        let dir = EnvDir::create()?;
        Self::start_in(dir).await
    }

    /// Starts a new environment whose state lives in `dir` (created if missing, never removed).
    pub async fn start_at(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_context(format!("creating {}", dir.display())))?;
        Self::start_in(EnvDir { path: dir.to_path_buf(), remove: false }).await
    }

    async fn start_in(dir: EnvDir) -> Result<Self> {
        let broker = Broker::start(
            &dir.path.join("broker"),
            BrokerSetup::new(kubetwin_protocol::DEFAULT_ROOT),
        )
        .await?;
        let control_plane = ControlPlane::start(&dir.path).await?;
        Ok(Self { control_plane, broker, dir })
    }

    /// The environment shared by all tests of one test binary, started on first use.
    ///
    /// Its processes belong to a thread that lives as long as the test binary, so they end
    /// with it, and its folder is removed when the binary exits. Each test should work in its
    /// own namespace ([`TestEnv::namespace`]).
    pub fn shared() -> &'static TestEnv {
        match SHARED.get_or_init(start_shared) {
            Ok(env) => env,
            Err(message) => panic!("the shared test environment did not start: {message}"),
        }
    }

    /// Folder holding the logs, certificates and kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.control_plane.kubeconfig
    }

    /// Writes a kubeconfig that authenticates with a bearer `token` (for example a
    /// ServiceAccount token from the TokenRequest API) and returns its path.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir().join(format!("{name}.kubeconfig"));
        let ca = self.dir().join("pki/ca.crt");
        crate::control_plane::write_kubeconfig_file(
            &path,
            &self.control_plane.server_url,
            &ca.display().to_string(),
            name,
            &format!("token: {token}"),
        )?;
        Ok(path)
    }

    /// A new admin client. Create one per test: a client is bound to the async runtime that
    /// created it.
    pub async fn client(&self) -> Result<Client> {
        self.control_plane.client().await
    }

    /// `mqtt://127.0.0.1:PORT` of the broker.
    pub fn broker_url(&self) -> String {
        self.broker.url()
    }

    /// Runs the pinned kubectl against this environment and returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        kubectl::run(self.kubeconfig(), args)
    }

    /// Creates a namespace with a unique name that starts with `prefix`.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<TestNamespace> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        namespaces.create(&PostParams::default(), &namespace).await?;
        Ok(TestNamespace { name })
    }
}

/// A namespace made for one test.
#[derive(Clone, Debug)]
pub struct TestNamespace {
    /// Its name.
    pub name: String,
}

/// Applies the CRD YAML files in `crds/` of the repository and the admission policies the
/// chart ships (`charts/kubetwin/files/policies/`), by server-side apply, and waits until the
/// API server serves the CRDs.
pub async fn install_crds(client: &Client) -> Result<Vec<String>> {
    install_policies(client).await?;
    let crds_dir = tools::repo_root().join("crds");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&crds_dir)
        .map_err(io_context(format!("reading {}", crds_dir.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path)
            .map_err(io_context(format!("reading {}", path.display())))?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).map_err(|error| Error::Io {
                context: format!("parsing {}", path.display()),
                source: std::io::Error::other(error.to_string()),
            })?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .map_err(|_| Error::Io {
                context: format!("waiting for CRD {name}"),
                source: std::io::Error::other("not Established after 60s"),
            })?
            .map_err(|error| Error::Io {
                context: format!("waiting for CRD {name}"),
                source: std::io::Error::other(error.to_string()),
            })?;
    }
    Ok(names)
}

/// Applies every ValidatingAdmissionPolicy and binding in `charts/kubetwin/files/policies/`.
pub async fn install_policies(client: &Client) -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let dir = tools::repo_root().join("charts/kubetwin/files/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io_context(format!("reading {}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(io_context(format!("reading {}", path.display())))?;
        let parse_error = |error: String| Error::Io {
            context: format!("parsing {}", path.display()),
            source: std::io::Error::other(error),
        };
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| parse_error(e.to_string()))?;
        for document in documents {
            let name = document["metadata"]["name"].as_str().unwrap_or_default().to_string();
            match document["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => {
                    let policy: ValidatingAdmissionPolicy =
                        serde_json::from_value(document).map_err(|e| parse_error(e.to_string()))?;
                    let api: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
                    api.patch(&name, &params, &Patch::Apply(&policy)).await?;
                }
                Some("ValidatingAdmissionPolicyBinding") => {
                    let binding: ValidatingAdmissionPolicyBinding =
                        serde_json::from_value(document).map_err(|e| parse_error(e.to_string()))?;
                    let api: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
                    api.patch(&name, &params, &Patch::Apply(&binding)).await?;
                }
                other => return Err(parse_error(format!("unexpected kind {other:?}"))),
            }
        }
    }
    Ok(())
}

/// The temporary folder of an environment.
#[derive(Debug)]
struct EnvDir {
    path: PathBuf,
    remove: bool,
}

impl EnvDir {
    fn create() -> Result<Self> {
        let keep = std::env::var("KUBETWIN_E2E_KEEP").is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("kubetwin-e2e-")
            .tempdir()
            .map_err(io_context("creating a temporary folder"))?;
        Ok(Self { path: dir.keep(), remove: !keep })
    }
}

impl Drop for EnvDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("kubetwin-e2e: kept the environment folder {}", self.path.display());
        }
    }
}

static SHARED: OnceLock<std::result::Result<TestEnv, String>> = OnceLock::new();

fn start_shared() -> std::result::Result<TestEnv, String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("kubetwin-test-env".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = sender.send(Err(format!("cannot build a runtime: {error}")));
                return;
            }
        };
        let started = runtime.block_on(TestEnv::start()).map_err(|e| e.to_string());
        let _ = sender.send(started);
        // The child processes die with this thread (PR_SET_PDEATHSIG): keep it alive.
        loop {
            std::thread::park();
        }
    });
    if let Err(error) = spawned {
        return Err(format!("cannot spawn the environment thread: {error}"));
    }
    let env = receiver.recv().map_err(|_| "the environment thread died".to_string())??;
    register_teardown();
    Ok(env)
}

/// Stops the shared environment's processes when the test binary exits.
#[allow(unsafe_code)]
fn register_teardown() {
    // SAFETY: registering a plain extern "C" function without captured state.
    unsafe {
        libc::atexit(teardown_shared);
    }
}

extern "C" fn teardown_shared() {
    if let Some(Ok(env)) = SHARED.get() {
        for pid in env.control_plane.pids().into_iter().chain([env.broker.pid()]) {
            let _ = crate::process::signal(pid, crate::process::Signal::Kill);
        }
        if env.dir.remove {
            let _ = std::fs::remove_dir_all(&env.dir.path);
        }
    }
}
