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

/// The name and applied manifest of the `Device` for `device_id` in `namespace`. An id of the
/// form `<namespace>.<name>` is the default id of Device `<name>` (no `spec.deviceId`); any
/// other id names its Device and is set as `spec.deviceId` (which the tenancy policy accepts
/// only with a prefix granted to the namespace).
pub fn device_manifest(namespace: &str, device_id: &str) -> (String, Value) {
    let header = json!({
        "apiVersion": Device::api_version(&()),
        "kind": Device::kind(&()),
    });
    let (name, spec) = match device_id.strip_prefix(&format!("{namespace}.")) {
        Some(name) => (name.to_string(), json!({})),
        None => (device_id.to_string(), json!({ "deviceId": device_id })),
    };
    let mut manifest = header;
    manifest["metadata"] = json!({ "name": name });
    manifest["spec"] = spec;
    (name, manifest)
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
                let (name, manifest) = device_manifest(&namespace, &id);
                api.patch(&name, &params, &Patch::Apply(manifest))
                    .await
                    .map(drop)
                    .with_context(|| format!("cannot apply Device {namespace}/{name} for {id}"))
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
    fn an_id_under_the_namespace_is_the_default_id_of_its_device() {
        let (name, manifest) = device_manifest("plant", "plant.sensor-3");
        assert_eq!(name, "sensor-3");
        assert_eq!(manifest["apiVersion"], json!("kubetwin.io/v1alpha1"));
        assert_eq!(manifest["kind"], json!("Device"));
        assert_eq!(manifest["metadata"]["name"], json!("sensor-3"));
        assert_eq!(manifest["spec"], json!({}));
        let mut device: Device = serde_json::from_value(manifest).unwrap();
        device.metadata.namespace = Some("plant".into());
        assert_eq!(device.effective_device_id(), "plant.sensor-3");
    }

    #[test]
    fn another_id_is_set_as_the_device_id() {
        let (name, manifest) = device_manifest("plant", "sim-3");
        assert_eq!(name, "sim-3");
        assert_eq!(manifest["spec"], json!({"deviceId": "sim-3"}));
    }
}
