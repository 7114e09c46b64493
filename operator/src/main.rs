//! `kubetwin-operator`: runs the kubetwin controllers.

use std::{io::IsTerminal, process::ExitCode, sync::Arc};

use clap::Parser;
use kubetwin_operator::{
    OperatorConfig, app,
    k8s::leader,
    telemetry::{
        http::{self, HttpState, Readiness},
        metrics::Metrics,
    },
};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than the system allocator: the caches hold many small objects that change
/// one at a time, and glibc's per-thread arenas keep the freed holes (measured in B3).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Copies jemalloc's counts of allocated and resident bytes into the metrics every 5 s, so
/// memory per Device can be told apart from the allocator's own overhead.
async fn report_heap(metrics: Arc<Metrics>) {
    use tikv_jemalloc_ctl::{epoch, stats};
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        // jemalloc's statistics are a snapshot taken when the epoch advances.
        let counts = epoch::advance()
            .and_then(|_| Ok((stats::allocated::read()?, stats::resident::read()?)));
        match counts {
            Ok((allocated, resident)) => metrics.set_heap(allocated, resident),
            Err(error) => {
                tracing::warn!(%error, "cannot read the allocator's statistics; heap metrics stop");
                return;
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    kubetwin_operator::clock::start();
    let config = OperatorConfig::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        let ansi = std::io::stderr().is_terminal();
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build a Kubernetes client (set KUBECONFIG or run in a cluster)");
            return ExitCode::FAILURE;
        }
    };

    let metrics = Arc::new(Metrics::new());
    tokio::spawn(report_heap(metrics.clone()));
    let (ready_tx, ready_rx) = watch::channel(Readiness::Starting);
    let http_state = HttpState { metrics: metrics.clone(), ready: ready_rx };
    let http_addr = config.http_addr;
    tokio::spawn(async move {
        if let Err(error) = http::serve(http_addr, http_state).await {
            tracing::error!(%error, %http_addr, "cannot serve /healthz, /readyz and /metrics");
            std::process::exit(1);
        }
    });

    let leadership = if config.leader_election {
        let _ = ready_tx.send(Readiness::Standby);
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        let acquired = tokio::select! {
            acquired = leader::acquire(client.clone(), &config, &identity) => acquired,
            () = app::shutdown_signal() => return ExitCode::SUCCESS,
        };
        match acquired {
            Ok(leadership) => Some(leadership),
            Err(error) => {
                tracing::error!(%error, "cannot take part in leader election");
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::info!("acting without leader election");
        None
    };

    let result = app::run(client, config, metrics, ready_tx).await;
    match leadership {
        Some(leadership) => leadership.release(std::time::Duration::from_secs(3)).await,
        None => tracing::info!("stopped acting"),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "kubetwin-operator".into())
}
