//! `kubetwin-operator`: runs the kubetwin controllers.

use std::process::ExitCode;

use clap::Parser;
use kubetwin_operator::{OperatorConfig, controller};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = OperatorConfig::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build a Kubernetes client (set KUBECONFIG or run in a cluster)");
            return ExitCode::FAILURE;
        }
    };
    match controller::run(client, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
