//! Runs the pinned helm against a test environment.

use std::{path::Path, process::Command};

use crate::{
    error::{Error, Result, io_context},
    tools,
};

/// Output of a helm run.
#[derive(Debug)]
pub struct HelmOutput {
    /// Whether helm exited with 0.
    pub success: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `helm ARGS` from the repository root with `KUBECONFIG=kubeconfig` (when given).
pub fn run(kubeconfig: Option<&Path>, args: &[&str]) -> Result<HelmOutput> {
    let mut command = Command::new(tools::tool("helm")?);
    command.args(args).current_dir(tools::repo_root());
    // Keep helm's caches and config out of the user's home.
    let home = std::env::temp_dir().join("kubetwin-e2e-helm");
    command.env("HELM_CACHE_HOME", home.join("cache"));
    command.env("HELM_CONFIG_HOME", home.join("config"));
    command.env("HELM_DATA_HOME", home.join("data"));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let output = command.output().map_err(io_context("running helm"))?;
    Ok(HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Like [`run`], failing unless helm exits with 0.
pub fn ok(kubeconfig: Option<&Path>, args: &[&str]) -> Result<String> {
    let output = run(kubeconfig, args)?;
    if output.success {
        Ok(output.stdout)
    } else {
        Err(Error::Kubectl { args: format!("(helm) {}", args.join(" ")), stderr: output.stderr })
    }
}
