//! Locates the binaries that `hack/tools.sh` builds.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Root of the kubetwin repository (where the workspace `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Folder holding the built tools: `$KUBETWIN_TOOLS_DIR` or `<repo>/.cache/tools/bin`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("KUBETWIN_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/tools/bin"))
}

/// Path of a tool built by `hack/tools.sh` (etcd, kube-apiserver, kubectl, ...), or an error
/// that names the command which builds it.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = tools_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool(format!(
            "{name} not found at {}: build the test control plane with `make tools` (hack/tools.sh)",
            path.display()
        )))
    }
}

/// Path of the mosquitto broker (Debian package), or an error that names how to install it.
pub fn mosquitto() -> Result<PathBuf> {
    let candidates = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"];
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(Error::MissingTool(
        "mosquitto not found: install it with `apt-get install mosquitto` (or run `make tools` as root)"
            .to_string(),
    ))
}

/// Debian's libfaketime (package `faketime`), which the fault tests preload into the operator
/// to step its wall clock.
pub fn libfaketime() -> Result<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(Error::MissingTool(
        "libfaketime not found: install it with `apt-get install faketime` (or run `make tools` as root)"
            .to_string(),
    ))
}

/// The Kubernetes version the control plane is built at (from `e2e/tools/kube/VERSION`).
pub fn pinned_kubernetes_version() -> Result<String> {
    let path = repo_root().join("e2e/tools/kube/VERSION");
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_string())
        .map_err(crate::error::io_context(format!("reading {}", path.display())))
}
