//! Leader election with a coordination.k8s.io Lease: only the holder runs the controllers and
//! talks to devices. Losing the Lease ends the process at once (fencing), so two replicas
//! never act together; Kubernetes restarts it as a standby.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info};

use crate::{Error, OperatorConfig, Result};

/// Waits until this process holds the Lease. Returns a receiver that turns `false` when the
/// Lease is lost; dropping it releases the Lease.
pub async fn acquire(
    client: Client,
    config: &OperatorConfig,
    identity: &str,
) -> Result<watch::Receiver<bool>> {
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.leader_election_namespace)
        .with_identity(identity)
        .with_duration(config.lease_duration_seconds.max(5))
        .with_grace((config.lease_duration_seconds / 3).max(2))
        .with_field_manager(format!("kubetwin-operator-lease-{identity}"))
        .build()
        .await
        .map_err(|e| Error::LeaderElection(e.to_string()))?;
    let (mut leader, task) = manager.watch().await;
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "leader election stopped"),
            Err(e) => error!(error = %e, "leader election task failed"),
        }
    });
    info!(lease = %config.lease_name, namespace = %config.leader_election_namespace, %identity, "waiting to become the leader");
    while !*leader.borrow_and_update() {
        leader
            .changed()
            .await
            .map_err(|_| Error::LeaderElection("the lease manager stopped".into()))?;
    }
    info!(%identity, "became the leader");
    Ok(leader)
}

/// Ends the process as soon as the Lease is lost.
pub async fn exit_when_lost(mut leader: watch::Receiver<bool>) {
    loop {
        if leader.changed().await.is_err() || !*leader.borrow_and_update() {
            error!("lost the leader Lease: exiting so that the new leader acts alone");
            std::process::exit(3);
        }
    }
}
