//! Dashboards and alerts shipped with the Helm chart: the PrometheusRule passes
//! `promtool check rules`, the Grafana dashboard is valid JSON in its ConfigMap, both are off
//! by default, and every metric the rules and the dashboard use is a family the operator
//! exports on `/metrics`.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, io::ErrorKind, process::Command};

use kubetwin_e2e::{fleet::Operator, helm, scenario::setup, tools::repo_root};
use serde_json::Value;

/// The chart's dashboard file, as shipped in the ConfigMap.
const DASHBOARD: &str = "charts/kubetwin/files/dashboards/kubetwin.json";

/// The alerts the PrometheusRule must carry.
const ALERTS: [&str; 6] = [
    "KubetwinOperatorDown",
    "KubetwinBrokerDisconnected",
    "KubetwinStatusStalenessHigh",
    "KubetwinRequestsFailing",
    "KubetwinJobAborted",
    "KubetwinStatusWriteErrors",
];

/// The documents of `helm template` output with `kind`.
fn rendered(text: &str, kind: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).expect("rendered YAML parses");
    documents.into_iter().filter(|d| d["kind"] == kind).collect()
}

/// `helm template` of the chart against an external broker, with `extra` values.
fn template(extra: &[&str]) -> String {
    let mut args =
        vec!["template", "kubetwin", "charts/kubetwin", "--set", "broker.url=mqtt://b:1883"];
    args.extend_from_slice(extra);
    helm::ok(None, &args).unwrap_or_else(|e| panic!("helm template {extra:?}: {e}"))
}

/// The chart rendered with the PrometheusRule and the dashboard ConfigMap switched on.
fn template_with_monitoring() -> String {
    template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ])
}

/// The single PrometheusRule of `text`.
fn prometheus_rule(text: &str) -> Value {
    let mut rules = rendered(text, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule rendered");
    rules.remove(0)
}

/// Every rule of a PrometheusRule's `spec.groups`.
fn rules_of(rule: &Value) -> Vec<&Value> {
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups is a list");
    groups.iter().flat_map(|g| g["rules"].as_array().expect("a group's rules is a list")).collect()
}

/// The dashboard as shipped in the chart.
fn dashboard() -> Value {
    let path = repo_root().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel of `panels`, rows' nested panels included.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        found.push(panel);
        found.extend(all_panels(&panel["panels"]));
    }
    found
}

/// Every PromQL expression of the dashboard: its panels' targets and its query variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in all_panels(&dashboard["panels"]) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.to_string());
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = &variable["query"];
        if let Some(text) = query.as_str().or_else(|| query["query"].as_str()) {
            queries.push(text.to_string());
        }
    }
    queries
}

/// The metric names (`kubetwin_[a-z_]+`) in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("kubetwin_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

/// Whether `/metrics` text has a `# TYPE` line for `family` (of `kind`, when given). Families
/// with labels show samples only after their first use, but their TYPE line always.
fn has_type(text: &str, family: &str, kind: Option<&str>) -> bool {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).any(|rest| {
        let mut parts = rest.split(' ');
        parts.next() == Some(family) && kind.is_none_or(|k| parts.next() == Some(k))
    })
}

/// Whether the sample name `name` belongs to a family on `/metrics`: the family itself, a
/// counter's `_total`, or a histogram's `_bucket`, `_sum` or `_count`.
fn exported(text: &str, name: &str) -> bool {
    if has_type(text, name, None) {
        return true;
    }
    if name.strip_suffix("_total").is_some_and(|base| has_type(text, base, Some("counter"))) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| has_type(text, base, Some("histogram")))
    })
}

#[test]
fn the_rules_pass_promtool_and_the_dashboard_is_shipped_in_a_configmap() {
    // Off by default.
    let default = template(&[]);
    assert!(rendered(&default, "PrometheusRule").is_empty(), "no PrometheusRule by default");
    assert!(
        rendered(&default, "ConfigMap").iter().all(|c| c["data"].get("kubetwin.json").is_none()),
        "no dashboard ConfigMap by default"
    );

    let text = template_with_monitoring();
    let rule = prometheus_rule(&text);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["app.kubernetes.io/instance"], "kubetwin");
    let rules = rules_of(&rule);
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(ALERTS), "the alerts");
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or("?");
        assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: expr");
        assert!(rule["for"].as_str().is_some(), "{name}: for");
        assert!(rule["labels"]["severity"].as_str().is_some(), "{name}: severity label");
        for annotation in ["summary", "description"] {
            assert!(rule["annotations"][annotation].as_str().is_some(), "{name}: {annotation}");
        }
    }
    // The staleness threshold comes from the values.
    let staleness = template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.stalenessSecondsWarning=90",
    ]);
    let staleness = prometheus_rule(&staleness);
    let stale_expr = rules_of(&staleness)
        .into_iter()
        .find(|r| r["alert"] == "KubetwinStatusStalenessHigh")
        .and_then(|r| r["expr"].as_str().map(str::to_string))
        .expect("KubetwinStatusStalenessHigh");
    assert!(stale_expr.trim_end().ends_with("> 90"), "{stale_expr}");

    // promtool reads a rules file: the PrometheusRule's spec, {"groups": [...]} (JSON is YAML).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubetwin-rules.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&rule["spec"]).unwrap()).unwrap();
    let checked = match Command::new("promtool").arg("check").arg("rules").arg(&file).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool not found on PATH: run `make tools` (hack/tools.sh installs Debian's \
             prometheus package, or run `sudo apt-get install prometheus`)"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success() && stdout.contains("SUCCESS"),
        "promtool check rules failed:\n{stdout}\n{stderr}\nrules:\n{}",
        std::fs::read_to_string(&file).unwrap_or_default()
    );

    // The dashboard: valid JSON, its uid, its data source variable, and the same document in
    // the ConfigMap, which carries the Grafana sidecar's label.
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kubetwin-fleet");
    assert_eq!(dashboard["title"], "kubetwin fleet");
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    for panel in all_panels(&dashboard["panels"]) {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().map(Vec::len).unwrap_or_default();
        assert!(targets > 0, "panel {} has queries", panel["title"]);
    }
    let config_maps = rendered(&text, "ConfigMap");
    let shipped = config_maps
        .iter()
        .find(|c| c["data"].get("kubetwin.json").is_some())
        .expect("the dashboard ConfigMap");
    assert_eq!(shipped["metadata"]["labels"]["grafana_dashboard"], "1");
    let in_config_map: Value =
        serde_json::from_str(shipped["data"]["kubetwin.json"].as_str().expect("a string"))
            .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(in_config_map, dashboard, "the ConfigMap holds the dashboard file");
}

#[tokio::test]
async fn every_metric_of_the_rules_and_the_dashboard_is_on_the_operators_metrics() {
    let rule = prometheus_rule(&template_with_monitoring());
    let mut names = BTreeSet::new();
    for rule in rules_of(&rule) {
        metric_names(rule["expr"].as_str().expect("expr"), &mut names);
    }
    let from_rules = names.len();
    for query in dashboard_queries(&dashboard()) {
        metric_names(&query, &mut names);
    }
    // The extraction found what it should (guards against a check that checks nothing).
    assert!(from_rules >= 5, "metrics of the rules: {names:?}");
    for expected in [
        "kubetwin_mqtt_connected",
        "kubetwin_status_staleness_seconds_bucket",
        "kubetwin_request_transitions_total",
        "kubetwin_devices",
        "kubetwin_status_writes_total",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }

    let s = setup("observability").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let text = operator.metrics().await.expect("metrics");
    let missing: Vec<&String> = names.iter().filter(|name| !exported(&text, name)).collect();
    assert!(
        missing.is_empty(),
        "used by the chart's rules or dashboard but not on /metrics: {missing:?}\n{text}"
    );
}
