//! API glue: one controller per resource, sharing one [`Context`].

pub mod device;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{Api, Client, runtime::controller::Action};
use kubetwin_api::Device;
use tracing::info;

use crate::{Error, OperatorConfig, Result};

/// What every reconcile gets: the client and the settings.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings.
    pub config: OperatorConfig,
}

/// `Api` for a namespaced kind, limited to the watched namespace when one is set.
pub fn scoped_api<K>(client: &Client, config: &OperatorConfig) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &config.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Requeue after an error, backing off per object.
pub fn error_policy<K>(_object: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Checks that the CRDs are installed, then runs every controller until a shutdown signal.
pub async fn run(client: Client, config: OperatorConfig) -> Result<()> {
    let devices: Api<Device> = scoped_api(&client, &config);
    if let Err(error) = devices.list(&kube::api::ListParams::default().limit(1)).await {
        return Err(Error::CrdsMissing(error.to_string()));
    }
    let ctx = Arc::new(Context { client, config });
    info!("controllers starting");
    device::controller(ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "device reconcile error");
            }
        })
        .await;
    info!("controllers stopped");
    Ok(())
}
