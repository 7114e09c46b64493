//! Runs a local kubetwin environment (etcd, kube-apiserver, kube-controller-manager and
//! mosquitto with per-device identity and topic ACLs) in the foreground until interrupted.
//! Used by `make demo`. Writes `operator.flags` and `simulator.flags` (the broker URL and
//! credentials flags, one per line) next to its `ready.json`.
//!
//!     kubetwin-env --dir .demo/env

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use kubetwin_e2e::{TestEnv, install_crds};

/// Command line of `kubetwin-env`.
#[derive(Parser, Debug)]
#[command(version, about = "Runs a local control plane and MQTT broker for kubetwin")]
struct Args {
    /// Folder for state, logs and the kubeconfig (kept after exit).
    #[arg(long, default_value = ".demo/env")]
    dir: PathBuf,
    /// Install the kubetwin CRDs from crds/ once the API server is up.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    install_crds: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let dir = match std::path::absolute(&args.dir) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("kubetwin-env: bad --dir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::remove_file(dir.join("ready.json"));
    let env = match TestEnv::start_at(&dir).await {
        Ok(env) => env,
        Err(error) => {
            eprintln!("kubetwin-env: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.install_crds {
        let installed = match env.client().await {
            Ok(client) => install_crds(&client).await,
            Err(error) => Err(error),
        };
        if let Err(error) = installed {
            eprintln!("kubetwin-env: installing CRDs failed: {error}");
            return ExitCode::FAILURE;
        }
    }
    // The broker's flags for the operator and the simulator, one per line, for scripts.
    let flags = [
        ("operator.flags", env.broker.operator_flags()),
        ("simulator.flags", env.broker.simulator_certificate_flags()),
    ];
    for (file, lines) in flags {
        if let Err(error) = std::fs::write(dir.join(file), lines.join("\n") + "\n") {
            eprintln!("kubetwin-env: cannot write {file}: {error}");
            return ExitCode::FAILURE;
        }
    }
    let ready = serde_json::json!({
        "kubeconfig": env.kubeconfig(),
        "server": env.control_plane.server_url,
        "broker": env.broker_url(),
        "pid": std::process::id(),
    });
    if let Err(error) = std::fs::write(dir.join("ready.json"), ready.to_string()) {
        eprintln!("kubetwin-env: cannot write ready.json: {error}");
        return ExitCode::FAILURE;
    }
    println!("kubetwin-env: control plane at {}", env.control_plane.server_url);
    println!("kubetwin-env: broker at {}", env.broker_url());
    println!("kubetwin-env: export KUBECONFIG={}", env.kubeconfig().display());
    wait_for_signal().await;
    println!("kubetwin-env: stopping");
    drop(env);
    let _ = std::fs::remove_file(dir.join("ready.json"));
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
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
