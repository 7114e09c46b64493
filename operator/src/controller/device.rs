//! Device controller: keeps each Device's status (device id, conditions) current.

use std::{sync::Arc, time::Duration};

use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use kubetwin_api::Device;
use serde_json::json;

use super::{Context, error_policy, scoped_api};
use crate::{Error, FIELD_MANAGER, Result, device_status::desired_status};

/// The running Device controller as a stream of reconcile results.
pub fn controller(
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<(ObjectRef<Device>, Action), kube::runtime::controller::Error<Error, watcher::Error>>> {
    let devices: Api<Device> = scoped_api(&ctx.client, &ctx.config);
    let config = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);
    Controller::new(devices, watcher::Config::default())
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
}

/// Writes the status computed by [`desired_status`] when it differs from the current one.
pub async fn reconcile(device: Arc<Device>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = device.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = device.name_any();
    let status = desired_status(&device, Timestamp::now());
    if device.status.as_ref() != Some(&status) {
        let api: Api<Device> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "kubetwin.io/v1alpha1",
            "kind": "Device",
            "status": status,
        });
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        tracing::debug!(device = %name, %namespace, "status written");
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}
