//! `kubectl twin query` and `kubectl twin summary`: questions about the fleet. A query is a CEL
//! expression (the language of Kubernetes validation rules) evaluated on each Device, with the
//! variables `name`, `namespace`, `labels`, `spec` and `status`; `--group-by` counts the
//! matching devices per value of a second expression, like IoT Hub's
//! `SELECT COUNT() … GROUP BY`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::Api;
use kubetwin_api::{Device, MethodRequest, RebootRequest, expression::DeviceExpression};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Outcome,
    client::{Connected, list_all},
    output::{Format, or_dash, print_data, table},
};

/// The group of devices for which the group-by expression has no value.
pub const NO_VALUE: &str = "<none>";

/// A compiled CEL expression over one Device (the operator's custom metrics use the same).
pub struct Expression(DeviceExpression);

impl Expression {
    /// Compiles `source`; the error says where it does not parse.
    pub fn compile(source: &str) -> anyhow::Result<Self> {
        Ok(Self(DeviceExpression::compile(source)?))
    }

    /// Whether the expression is true for `device` (an error if it is not a boolean).
    pub fn matches(&self, device: &Device) -> anyhow::Result<bool> {
        Ok(self.0.matches(device)?)
    }

    /// The expression's value on `device` as a group name ([`NO_VALUE`] when it has none).
    pub fn group(&self, device: &Device) -> String {
        match self.0.evaluate(device) {
            Ok(cel::Value::String(text)) => text.to_string(),
            Ok(cel::Value::Int(n)) => n.to_string(),
            Ok(cel::Value::UInt(n)) => n.to_string(),
            Ok(cel::Value::Float(n)) => n.to_string(),
            Ok(cel::Value::Bool(b)) => b.to_string(),
            Ok(cel::Value::Null) | Err(_) => NO_VALUE.to_string(),
            Ok(other) => format!("{other:?}"),
        }
    }
}

/// One matching device, as listed.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    namespace: String,
    name: String,
    connection: Option<String>,
    firmware: Option<String>,
    in_sync: Option<bool>,
}

fn match_of(device: &Device) -> Match {
    let status = device.status.as_ref();
    Match {
        namespace: device.metadata.namespace.clone().unwrap_or_default(),
        name: device.metadata.name.clone().unwrap_or_default(),
        connection: status.and_then(|s| s.connection.as_ref()).map(|c| format!("{:?}", c.state)),
        firmware: status.and_then(|s| s.firmware.as_ref()?.current.clone()),
        in_sync: status.and_then(|s| s.in_sync),
    }
}

/// What a query found: the matching devices, the groups, and the devices it could not
/// evaluate (a missing field without `has()`, a non-boolean result).
#[derive(Debug, Default)]
pub struct Found {
    /// Matching devices.
    pub matches: Vec<Device>,
    /// Errors, one per device that could not be evaluated.
    pub errors: Vec<String>,
}

/// Evaluates `filter` on each device.
pub fn run(filter: &Expression, devices: Vec<Device>) -> Found {
    let mut found = Found::default();
    for device in devices {
        match filter.matches(&device) {
            Ok(true) => found.matches.push(device),
            Ok(false) => {}
            Err(error) => found.errors.push(format!("{error:#}")),
        }
    }
    found
}

/// Counts `devices` per value of `group_by`.
pub fn count_groups(group_by: &Expression, devices: &[Device]) -> BTreeMap<String, usize> {
    let mut groups = BTreeMap::new();
    for device in devices {
        *groups.entry(group_by.group(device)).or_default() += 1;
    }
    groups
}

/// `kubectl twin query EXPR [--group-by EXPR]`.
pub async fn query(
    target: &Connected,
    expression: &str,
    group_by: Option<&str>,
    output: Format,
) -> anyhow::Result<Outcome> {
    let filter = Expression::compile(expression)?;
    let group_by = group_by.map(Expression::compile).transpose()?;
    let api: Api<Device> = target.api_for_listing();
    let devices = list_all(&api).await.context("listing Devices")?;
    let found = run(&filter, devices);
    if let Some(first) = found.errors.first() {
        eprintln!(
            "warning: {} devices could not be evaluated and do not match (use has() for optional fields), for example: {first}",
            found.errors.len()
        );
    }
    match group_by {
        Some(group_by) => {
            let groups = count_groups(&group_by, &found.matches);
            if output == Format::Table {
                let rows: Vec<Vec<String>> =
                    groups.iter().map(|(value, n)| vec![value.clone(), n.to_string()]).collect();
                print!("{}", table(&["value", "count"], &rows));
            } else {
                let groups: Vec<Value> =
                    groups.iter().map(|(value, n)| json!({"value": value, "count": n})).collect();
                print_data(output, &json!({"groups": groups, "total": found.matches.len()}))?;
            }
        }
        None => {
            let items: Vec<Match> = found.matches.iter().map(match_of).collect();
            if output == Format::Table {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|m| {
                        let mut row = Vec::new();
                        if target.all_namespaces {
                            row.push(m.namespace.clone());
                        }
                        row.extend([
                            m.name.clone(),
                            or_dash(m.connection.as_ref()),
                            or_dash(m.firmware.as_ref()),
                            or_dash(m.in_sync),
                        ]);
                        row
                    })
                    .collect();
                let mut headers = Vec::new();
                if target.all_namespaces {
                    headers.push("namespace");
                }
                headers.extend(["name", "connection", "firmware", "in-sync"]);
                print!("{}", table(&headers, &rows));
            } else {
                print_data(output, &json!({"items": items, "total": items.len()}))?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// Fleet counts for `summary`.
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Devices.
    pub devices: usize,
    /// Devices by connection state.
    pub connection: BTreeMap<String, usize>,
    /// Devices by firmware version running.
    pub firmware: BTreeMap<String, usize>,
    /// Devices by in sync (true, false, unknown).
    pub in_sync: BTreeMap<String, usize>,
    /// Requests not finished, by kind and phase.
    pub open_requests: BTreeMap<String, usize>,
}

/// Counts `devices` and the open requests (`(kind, phase)` of each unfinished request).
pub fn summarise(devices: &[Device], open_requests: &[(&str, String)]) -> Summary {
    let mut summary = Summary { devices: devices.len(), ..Summary::default() };
    for device in devices {
        let found = match_of(device);
        *summary
            .connection
            .entry(found.connection.unwrap_or_else(|| "Unknown".into()))
            .or_default() += 1;
        *summary.firmware.entry(found.firmware.unwrap_or_else(|| NO_VALUE.into())).or_default() +=
            1;
        let sync = found.in_sync.map_or("unknown".to_string(), |s| s.to_string());
        *summary.in_sync.entry(sync).or_default() += 1;
    }
    for (kind, phase) in open_requests {
        *summary.open_requests.entry(format!("{kind} {phase}")).or_default() += 1;
    }
    summary
}

/// `kubectl twin summary`.
pub async fn summary(target: &Connected, output: Format) -> anyhow::Result<Outcome> {
    let devices = list_all(&target.api_for_listing::<Device>()).await.context("listing Devices")?;
    let mut open = Vec::new();
    for request in list_all(&target.api_for_listing::<MethodRequest>()).await? {
        let phase = request.status.as_ref().and_then(|s| s.phase);
        if !phase.is_some_and(|p| p.is_terminal()) {
            open.push(("MethodRequest", phase.map_or("Pending".into(), |p| format!("{p:?}"))));
        }
    }
    for request in list_all(&target.api_for_listing::<RebootRequest>()).await? {
        let phase = request.status.as_ref().and_then(|s| s.phase);
        if !phase.is_some_and(|p| p.is_terminal()) {
            open.push(("RebootRequest", phase.map_or("Pending".into(), |p| format!("{p:?}"))));
        }
    }
    let summary = summarise(&devices, &open);
    if output != Format::Table {
        print_data(output, &summary)?;
        return Ok(Outcome::Done);
    }
    let mut rows = vec![vec!["devices".to_string(), String::new(), summary.devices.to_string()]];
    for (what, counts) in [
        ("connection", &summary.connection),
        ("firmware", &summary.firmware),
        ("in sync", &summary.in_sync),
        ("open requests", &summary.open_requests),
    ] {
        for (value, n) in counts {
            rows.push(vec![what.to_string(), value.clone(), n.to_string()]);
        }
    }
    print!("{}", table(&["", "value", "count"], &rows));
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{
        ConnectionState, ConnectionStatus, DeviceSpec, DeviceStatus, FirmwareStatus,
    };

    use super::*;

    fn device(name: &str, state: ConnectionState, firmware: Option<&str>, line: &str) -> Device {
        let mut device = Device::new(name, DeviceSpec::default());
        device.metadata.namespace = Some("plant".into());
        device.metadata.labels = Some([("line".to_string(), line.to_string())].into());
        device.status = Some(DeviceStatus {
            connection: Some(ConnectionStatus { state, ..ConnectionStatus::default() }),
            firmware: firmware
                .map(|v| FirmwareStatus { current: Some(v.into()), ..FirmwareStatus::default() }),
            in_sync: Some(state == ConnectionState::Connected),
            ..DeviceStatus::default()
        });
        device
    }

    fn fleet() -> Vec<Device> {
        use ConnectionState::{Connected, Disconnected};
        vec![
            device("a", Connected, Some("1.0.0"), "l1"),
            device("b", Disconnected, Some("1.0.0"), "l1"),
            device("c", Connected, Some("1.1.0"), "l2"),
            device("d", Connected, None, "l2"),
        ]
    }

    #[test]
    fn a_query_selects_and_groups_like_select_count_group_by() {
        let filter = Expression::compile("status.connection.state == 'Connected'").expect("cel");
        let found = run(&filter, fleet());
        let names: Vec<_> = found.matches.iter().map(|d| d.metadata.name.clone()).collect();
        assert_eq!(names, [Some("a".into()), Some("c".into()), Some("d".into())]);
        assert!(found.errors.is_empty());
        let by = Expression::compile("status.firmware.current").expect("cel");
        let groups = count_groups(&by, &found.matches);
        assert_eq!(
            groups,
            BTreeMap::from([
                ("1.0.0".to_string(), 1),
                ("1.1.0".to_string(), 1),
                (NO_VALUE.to_string(), 1),
            ])
        );
        let by_label = Expression::compile("labels.line").expect("cel");
        assert_eq!(count_groups(&by_label, &fleet())["l2"], 2);
    }

    #[test]
    fn a_missing_field_is_an_error_unless_has_guards_it() {
        let filter = Expression::compile("status.firmware.current == '1.0.0'").expect("cel");
        let found = run(&filter, fleet());
        assert_eq!(found.matches.len(), 2);
        assert_eq!(found.errors.len(), 1, "d has no firmware: {:?}", found.errors);
        let guarded =
            Expression::compile("has(status.firmware) && status.firmware.current == '1.0.0'")
                .expect("cel");
        let found = run(&guarded, fleet());
        assert_eq!((found.matches.len(), found.errors.len()), (2, 0));
    }

    #[test]
    fn a_query_must_be_true_or_false_and_must_parse() {
        let filter = Expression::compile("name").expect("cel");
        let found = run(&filter, fleet());
        assert_eq!(found.errors.len(), 4);
        assert!(found.errors[0].contains("must be true or false"), "{}", found.errors[0]);
        assert!(Expression::compile("status.connection.state ==").is_err());
    }

    #[test]
    fn the_summary_counts_each_dimension() {
        let summary = summarise(&fleet(), &[("MethodRequest", "Sent".into())]);
        assert_eq!(summary.devices, 4);
        assert_eq!(summary.connection["Connected"], 3);
        assert_eq!(summary.firmware["1.0.0"], 2);
        assert_eq!(summary.in_sync["false"], 1);
        assert_eq!(summary.open_requests["MethodRequest Sent"], 1);
    }
}
