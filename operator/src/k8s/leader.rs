//! Leader election with a coordination.k8s.io Lease: only the holder runs the controllers and
//! talks to devices. Losing the Lease ends the process at once (fencing), so two replicas
//! never act together; Kubernetes restarts it as a standby.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info};

use crate::{
    config::OperatorConfig,
    error::{Error, Result},
};

/// The held Lease. While it is held, losing the Lease ends the process.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    fence: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Releases the Lease (on a graceful shutdown), so a standby takes over at once instead of
    /// after the Lease expires. Waits at most `timeout`.
    pub async fn release(self, timeout: std::time::Duration) {
        self.fence.abort();
        let _ = self.fence.await;
        drop(self.state);
        if tokio::time::timeout(timeout, self.task).await.is_ok() {
            info!("released the leader Lease");
        }
    }
}

/// Waits until this process holds the Lease.
pub async fn acquire(
    client: Client,
    config: &OperatorConfig,
    identity: &str,
) -> Result<Leadership> {
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
    let task = tokio::spawn(async move {
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
    let fence = tokio::spawn(exit_when_lost(leader.clone()));
    Ok(Leadership { state: leader, task, fence })
}

/// Ends the process as soon as the Lease is lost.
async fn exit_when_lost(mut leader: watch::Receiver<bool>) {
    loop {
        if leader.changed().await.is_err() || !*leader.borrow_and_update() {
            error!("lost the leader Lease: exiting so that the new leader acts alone");
            std::process::exit(3);
        }
    }
}
