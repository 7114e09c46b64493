//! Runs the pinned kubectl against a test environment.

use std::{path::Path, process::Command};

use crate::{
    error::{Error, Result, io_context},
    tools,
};

/// Runs `kubectl ARGS` with `KUBECONFIG=kubeconfig` and returns stdout, or an error with stderr.
pub fn run(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(tools::tool("kubectl")?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .map_err(io_context("running kubectl"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Kubectl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
