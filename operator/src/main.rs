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

/// jemalloc's settings: a background thread hands pages that stayed free for about a second
/// back to the system. By default jemalloc purges only while the program allocates, over 10 s:
/// an operator that goes idle after a burst (the first list of every Device, a fleet
/// reconnecting, a round of status writes) kept the burst's freed pages resident (B3 measured
/// ~2 KiB per Device of resident heap above the live heap).
// SAFETY: jemalloc reads this symbol once, as it initialises, as a NUL-terminated C string
// (a thin pointer, as `&[u8; N]` is); the static is immutable, NUL-terminated and lives for
// the whole program.
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

/// Warns when jemalloc did not take [`malloc_conf`] (a misspelt option is only printed by
/// jemalloc itself, on stderr).
fn check_allocator_settings() {
    match tikv_jemalloc_ctl::opt::background_thread::read() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the allocator's purging thread is off; freed pages stay resident until the next allocations"
        ),
        Err(error) => tracing::warn!(%error, "cannot read the allocator's settings"),
    }
}

/// The Kubernetes client, from the kubeconfig or the in-cluster account, without kube's
/// built-in retries: kube 5 retries 429, 503 and 504 inside the request, up to 15 times with a
/// backoff that grows to minutes, unseen by its caller. Every caller here retries on its own
/// terms (the status writer within its write budget and with metrics, controllers through
/// their error policy, watchers with backoff, the Lease on its renew period), so a failure
/// has to reach it rather than hold a request open.
async fn api_client() -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.default_retry = false;
    kube::Client::try_from(config)
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
    check_allocator_settings();
    let client = match api_client().await {
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
