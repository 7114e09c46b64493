//! Creating the `Device` objects of the simulated devices (`--create-devices`), by server-side
//! apply so that running the simulator again is harmless.

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource as _};
use kubetwin_api::Device;
use serde_json::{Value, json};
use tracing::info;

/// Field manager of the server-side apply.
pub const FIELD_MANAGER: &str = "kubetwin-sim";
/// How many apply calls run at once.
const CONCURRENCY: usize = 16;

/// The applied manifest of the `Device` for `device_id`: named after it, `spec.deviceId` = it.
pub fn device_manifest(device_id: &str) -> Value {
    json!({
        "apiVersion": Device::api_version(&()),
        "kind": Device::kind(&()),
        "metadata": { "name": device_id },
        "spec": { "deviceId": device_id },
    })
}

/// Applies a `Device` in `namespace` for every id, using the default kube client (KUBECONFIG).
pub async fn create_devices(namespace: &str, ids: &[String]) -> anyhow::Result<()> {
    let client =
        Client::try_default().await.context("cannot create a Kubernetes client (KUBECONFIG)")?;
    let api: Api<Device> = Api::namespaced(client, namespace);
    let params = PatchParams::apply(FIELD_MANAGER);
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let api = api.clone();
            let params = params.clone();
            let namespace = namespace.to_owned();
            async move {
                api.patch(&id, &params, &Patch::Apply(device_manifest(&id)))
                    .await
                    .map(drop)
                    .with_context(|| format!("cannot apply Device {namespace}/{id}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    info!(namespace, count = ids.len(), "applied Device objects");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_the_device_after_its_id() {
        let manifest = device_manifest("sim-3");
        assert_eq!(manifest["apiVersion"], json!("kubetwin.io/v1alpha1"));
        assert_eq!(manifest["kind"], json!("Device"));
        assert_eq!(manifest["metadata"]["name"], json!("sim-3"));
        assert_eq!(manifest["spec"], json!({"deviceId": "sim-3"}));
        let device: Device = serde_json::from_value(manifest).unwrap();
        assert_eq!(device.spec.device_id.as_deref(), Some("sim-3"));
    }
}
