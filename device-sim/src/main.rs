//! `kubetwin-sim`: simulates devices that speak the kubetwin MQTT contract.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use kubetwin_device_sim::{Cli, Config, fleet};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Longest wait for the fleet to stop after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file stays plain text that tools can search.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let (stop, stopped) = watch::channel(false);
    let mut fleet = tokio::spawn(fleet::run(config, stopped));
    let result = tokio::select! {
        result = &mut fleet => result,
        () = shutdown_signal() => {
            info!("shutting down");
            let _ = stop.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut fleet).await {
                Ok(result) => result,
                Err(_) => {
                    warn!("devices did not stop in time");
                    fleet.abort();
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            error!(error = format!("{e:#}"), "simulator failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            error!(error = %e, "simulator task failed");
            ExitCode::FAILURE
        }
    }
}
