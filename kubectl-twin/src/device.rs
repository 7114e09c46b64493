//! `kubectl twin get DEVICE`: one device's twin for people — connection, sync, firmware,
//! conditions, which configurations apply, desired (as configured) next to reported with what
//! differs, and its last requests.

use std::collections::BTreeSet;

use anyhow::Context as _;
use kube::{Api, api::ListParams};
use kubetwin_api::{
    Device, DeviceConfiguration, MethodRequest, RebootRequest, configuration::merge_desired,
};
use serde_json::{Map, Value, json};

use crate::{
    Outcome,
    client::Connected,
    output::{Format, or_dash, print_data, table},
};

/// Requests shown.
const LAST_REQUESTS: usize = 5;

/// One property: desired and reported values, and whether they differ.
#[derive(Debug, PartialEq, Eq)]
pub struct PropertyRow {
    /// The top-level key.
    pub key: String,
    /// Its desired value (JSON), if desired.
    pub desired: Option<String>,
    /// Its reported value (JSON), if reported.
    pub reported: Option<String>,
    /// Desired and reported differ (only for desired keys: the device owns the rest).
    pub differs: bool,
}

/// Desired next to reported, key by key (every key of either side, sorted).
pub fn side_by_side(
    desired: &Map<String, Value>,
    reported: &Map<String, Value>,
) -> Vec<PropertyRow> {
    let keys: BTreeSet<&String> = desired.keys().chain(reported.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let want = desired.get(key);
            let have = reported.get(key);
            PropertyRow {
                key: key.clone(),
                desired: want.map(Value::to_string),
                reported: have.map(Value::to_string),
                differs: want.is_some() && want != have,
            }
        })
        .collect()
}

/// One request of the device, newest first.
struct RequestRow {
    name: String,
    kind: &'static str,
    method: String,
    phase: String,
    created: Option<k8s_openapi::jiff::Timestamp>,
}

impl RequestRow {
    fn new(
        request: &impl kube::Resource,
        kind: &'static str,
        method: String,
        phase: Option<String>,
    ) -> Self {
        Self {
            name: request.meta().name.clone().unwrap_or_default(),
            kind,
            method,
            phase: phase.unwrap_or_else(|| "Pending".into()),
            created: request.meta().creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

async fn last_requests(target: &Connected, device: &str) -> anyhow::Result<Vec<RequestRow>> {
    let fields = ListParams::default().fields(&format!("spec.deviceName={device}"));
    let methods: Api<MethodRequest> = target.api();
    let reboots: Api<RebootRequest> = target.api();
    let mut rows: Vec<RequestRow> = Vec::new();
    for request in methods.list(&fields).await.context("listing MethodRequests")?.items {
        let phase = request.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"));
        rows.push(RequestRow::new(&request, "MethodRequest", request.spec.method.clone(), phase));
    }
    for request in reboots.list(&fields).await.context("listing RebootRequests")?.items {
        let phase = request.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"));
        rows.push(RequestRow::new(&request, "RebootRequest", "reboot".into(), phase));
    }
    rows.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(LAST_REQUESTS);
    Ok(rows)
}

/// Shows one device.
pub async fn get(target: &Connected, name: &str, output: Format) -> anyhow::Result<Outcome> {
    let api: Api<Device> = target.api();
    let device = api.get(name).await.with_context(|| format!("reading Device {name}"))?;
    let requests = last_requests(target, name).await?;
    let status = device.status.clone().unwrap_or_default();
    // What the device is asked to have: the configurations its status lists, in that (merge)
    // order, under its own desired properties, as the operator computes it.
    let names: Vec<String> = status.configurations.iter().map(|c| c.name.clone()).collect();
    let configurations: Api<DeviceConfiguration> = target.api();
    let mut patches = Vec::with_capacity(names.len());
    for configuration in &names {
        let found = configurations
            .get_opt(configuration)
            .await
            .with_context(|| format!("reading DeviceConfiguration {configuration}"))?;
        if let Some(patch) = found.and_then(|c| c.spec.desired) {
            patches.push(patch);
        }
    }
    let desired = merge_desired(device.spec.desired.as_ref(), names.len(), &patches);
    let reported = Map::from_iter(status.reported.clone().unwrap_or_default());
    let rows = side_by_side(&desired, &reported);
    if output != Format::Table {
        let requests: Vec<Value> = requests
            .iter()
            .map(|r| json!({"name": r.name, "kind": r.kind, "method": r.method, "phase": r.phase}))
            .collect();
        let differing: Vec<&str> =
            rows.iter().filter(|r| r.differs).map(|r| r.key.as_str()).collect();
        print_data(
            output,
            &json!({
                "device": device,
                "effectiveDesired": desired,
                "configurations": names,
                "differingProperties": differing,
                "lastRequests": requests,
            }),
        )?;
        return Ok(Outcome::Done);
    }

    let connection = status.connection.clone().unwrap_or_default();
    let firmware = status.firmware.clone().unwrap_or_default();
    let mut out = format!("Device {name}   id {}\n", or_dash(status.device_id.as_ref()));
    out.push_str(&format!(
        "connection   {:?}{}{}\n",
        connection.state,
        connection.since.as_ref().map_or(String::new(), |t| format!(" since {}", t.0)),
        connection.reason.as_deref().map_or(String::new(), |r| format!(" ({r})")),
    ));
    out.push_str(&format!(
        "in sync      {}{}\n",
        status.in_sync.map_or("unknown".to_string(), |s| s.to_string()),
        status.applied.as_ref().map_or(String::new(), |a| format!(
            " (applied generation {} of {})",
            a.version,
            device.metadata.generation.unwrap_or_default()
        )),
    ));
    if !names.is_empty() {
        out.push_str(&format!(
            "configured   by {} (the last wins; own desired on top)\n",
            names.join(", ")
        ));
    }
    out.push_str(&format!(
        "firmware     {}{}{}\n",
        or_dash(firmware.current.as_ref()),
        firmware.phase.map_or(String::new(), |p| format!("   {p:?}")),
        firmware.target.as_deref().map_or(String::new(), |t| format!("   target {t}")),
    ));
    let conditions: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| vec![c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()])
        .collect();
    if !conditions.is_empty() {
        out.push('\n');
        out.push_str(&table(&["condition", "status", "reason", "message"], &conditions));
    }
    let properties: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                or_dash(r.desired.as_ref()),
                or_dash(r.reported.as_ref()),
                if r.differs { "differs".into() } else { String::new() },
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["property", "desired", "reported", ""], &properties));
    if !requests.is_empty() {
        let rows: Vec<Vec<String>> = requests
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.kind.to_string(),
                    r.method.clone(),
                    r.phase.clone(),
                    or_dash(r.created.as_ref()),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["request", "kind", "method", "phase", "created"], &rows));
    }
    print!("{out}");
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_and_reported_line_up_and_differences_show() {
        let desired = json!({"interval": 30, "led": "green"});
        let reported = json!({"interval": 30, "led": "red", "firmwareVersion": "1.0.0"});
        let rows =
            side_by_side(desired.as_object().expect("map"), reported.as_object().expect("map"));
        let keys: Vec<(&str, bool)> = rows.iter().map(|r| (r.key.as_str(), r.differs)).collect();
        assert_eq!(keys, [("firmwareVersion", false), ("interval", false), ("led", true)]);
        assert_eq!(rows[2].desired.as_deref(), Some("\"green\""));
        assert_eq!(rows[0].desired, None);
    }
}
