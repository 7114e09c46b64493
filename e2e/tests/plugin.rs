//! The `kubectl twin` plugin against a real control plane, operator and simulator: what a
//! person types, what a script reads (exit codes, `-o json`), and the live job view in a real
//! terminal (tmux).
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use kube::{Api, api::PostParams};
use kubetwin_api::{DeviceJob, JobPhase};
use kubetwin_e2e::{
    fleet::{Operator, Simulator, workspace_binary},
    scenario::{Setup, create_device, is_connected, setup, twin},
    tools,
    wait::wait_for,
};
use serde_json::{Value, json};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Creates `names` and starts a simulator for them with `flags`; waits until all are connected.
async fn devices(s: &Setup, names: &[String], flags: &[&str]) -> Simulator {
    for name in names {
        create_device(&s.devices, name, json!({})).await;
    }
    let ids: Vec<String> = names.iter().map(|n| s.scope.device_id(n)).collect();
    let sim = Simulator::start(s.env, &s.scope, &ids, flags).unwrap();
    for name in names {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }
    sim
}

#[tokio::test]
async fn reboot_and_call_wait_for_the_end_and_exit_with_its_outcome() {
    let s = setup("plugin-calls").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.unwrap();
    let _good = devices(&s, &["gw-good".into()], &["--boot-seconds=0.5"]).await;
    let _bad = devices(&s, &["gw-rejecting".into()], &["--reject-methods"]).await;

    let ok = twin(&s, &["reboot", "gw-good", "--wait", "--timeout", "2m"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stderr).contains("Succeeded after"), "{}", text(&ok.stderr));

    let refused = twin(&s, &["reboot", "gw-rejecting", "--wait", "--timeout", "2m"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let why = text(&refused.stderr);
    assert!(why.contains("Rejected") && why.contains("DeviceRejected"), "{why}");

    let call = twin(&s, &["call", "gw-good", "setLed", "--params", r#"{"on": true}"#, "--wait"]);
    assert!(call.status.success(), "{}", text(&call.stderr));
    let payload: Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(payload, json!({"led": "on"}));

    let full = twin(
        &s,
        &["call", "gw-good", "setLed", "--params", r#"{"on": false}"#, "--wait", "-o", "json"],
    );
    assert!(full.status.success(), "{}", text(&full.stderr));
    let request: Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(request["status"]["phase"], "Succeeded");
    assert_eq!(request["status"]["result"]["payload"], json!({"led": "off"}));

    // Without --wait it only creates, under a generated name: running it again calls again.
    let first = twin(&s, &["reboot", "gw-good"]);
    let second = twin(&s, &["reboot", "gw-good"]);
    assert!(first.status.success() && second.status.success());
    assert_ne!(text(&first.stdout), text(&second.stdout));
    assert!(text(&first.stdout).starts_with("methodrequest.kubetwin.io/gw-good-reboot-"));

    let shown = twin(&s, &["get", "gw-good"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    // (The device may be rebooting from the two calls above: its state is whatever it is.)
    assert!(shown.starts_with("Device gw-good   id "), "{shown}");
    assert!(shown.contains("\nconnection   ") && shown.contains("\nin sync      true"), "{shown}");
    assert!(shown.contains("PROPERTY") && shown.contains("firmwareVersion"), "{shown}");
    assert!(shown.contains("REQUEST") && shown.contains("setLed"), "{shown}");
}

#[tokio::test]
async fn query_groups_and_summary_count_a_fifty_device_fleet() {
    let s = setup("plugin-query").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.unwrap();
    let old: Vec<String> = (0..30).map(|i| format!("old-{i:02}")).collect();
    let new: Vec<String> = (0..20).map(|i| format!("new-{i:02}")).collect();
    let _old = devices(&s, &old, &["--firmware=1.0.0"]).await;
    let _new = devices(&s, &new, &["--firmware=2.0.0"]).await;
    for name in old.iter().chain(&new) {
        wait_for(&s.devices, name, "firmware known", |d| {
            d.status.as_ref().and_then(|st| st.firmware.as_ref()?.current.as_ref()).is_some()
        })
        .await;
    }

    let grouped = twin(
        &s,
        &[
            "query",
            "status.connection.state == 'Connected'",
            "--group-by",
            "status.firmware.current",
            "-o",
            "json",
        ],
    );
    assert!(grouped.status.success(), "{}", text(&grouped.stderr));
    let grouped: Value = serde_json::from_slice(&grouped.stdout).unwrap();
    assert_eq!(grouped["total"], 50);
    assert_eq!(
        grouped["groups"],
        json!([
            {"value": "1.0.0", "count": 30},
            {"value": "2.0.0", "count": 20},
        ])
    );

    let listed = twin(&s, &["query", "status.firmware.current == '2.0.0' && name.endsWith('9')"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let lines: Vec<String> = text(&listed.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "header + new-09 and new-19: {lines:?}");
    assert!(lines[1].starts_with("new-09") && lines[2].starts_with("new-19"), "{lines:?}");

    let bad = twin(&s, &["query", "status.connection.state =="]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("is not a CEL expression"), "{}", text(&bad.stderr));

    let summary = twin(&s, &["summary", "-o", "json"]);
    assert!(summary.status.success(), "{}", text(&summary.stderr));
    let summary: Value = serde_json::from_slice(&summary.stdout).unwrap();
    assert_eq!(summary["devices"], 50);
    assert_eq!(summary["connection"], json!({"Connected": 50}));
    assert_eq!(summary["firmware"], json!({"1.0.0": 30, "2.0.0": 20}));

    // kubectl finds the plugin on PATH: `kubectl twin …`.
    let plugin_dir: PathBuf = workspace_binary("kubectl-twin").unwrap().parent().unwrap().into();
    let path = format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let through_kubectl = Command::new(tools::tool("kubectl").unwrap())
        .args(["twin", "summary", "-n", &s.scope.namespace])
        .env("KUBECONFIG", s.env.kubeconfig())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(through_kubectl.status.success(), "{}", text(&through_kubectl.stderr));
    assert!(
        text(&through_kubectl.stdout).contains("connection   Connected   50"),
        "{}",
        text(&through_kubectl.stdout)
    );
}

/// Captures the tmux pane of `session`.
fn capture(session: &str) -> String {
    let out = Command::new("tmux").args(["capture-pane", "-p", "-t", session]).output().unwrap();
    text(&out.stdout)
}

#[tokio::test]
async fn job_status_watch_shows_live_bars_in_a_terminal() {
    let s = setup("plugin-job").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("gw-{i}")).collect();
    let _sim = devices(&s, &names, &["--boot-seconds=1"]).await;
    let jobs: Api<DeviceJob> = Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    let job: DeviceJob = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "DeviceJob",
        "metadata": {"name": "roll"},
        "spec": {"selector": {}, "method": "reboot", "rollout": {"maxInFlight": 1, "waves": [{"size": 2}, {"size": "100%"}]}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let session = format!("twin-{}", s.scope.namespace);
    let command = format!(
        "KUBECONFIG={} {} -n {} job status roll --watch; echo EXIT=$?; sleep 60",
        s.env.kubeconfig().display(),
        workspace_binary("kubectl-twin").unwrap().display(),
        s.scope.namespace
    );
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "30", &command])
        .status()
        .unwrap();
    assert!(started.success(), "tmux new-session");
    // While it runs: a header, an overall bar and a bar per wave, redrawn in place.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_running = false;
    let pane = loop {
        let pane = capture(&session);
        seen_running |= pane.contains("DeviceJob roll   Running") && pane.contains("overall");
        if pane.contains("EXIT=") {
            break pane;
        }
        assert!(Instant::now() < deadline, "the job view did not end:\n{pane}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = Command::new("tmux").args(["kill-session", "-t", &session]).status();
    assert!(seen_running, "never saw the running view");
    assert!(pane.contains("EXIT=0"), "{pane}");
    assert!(pane.contains("DeviceJob roll   Succeeded"), "{pane}");
    assert!(pane.contains("overall") && pane.contains("6/6"), "{pane}");
    assert!(pane.contains("wave 1") && pane.contains("2/2") && pane.contains("wave 2"), "{pane}");
    assert!(pane.contains("succeeded 6"), "{pane}");
    // Redrawn in place, not scrolled: the header shows once.
    assert_eq!(pane.matches("DeviceJob roll").count(), 1, "{pane}");

    let json = twin(&s, &["job", "status", "roll", "-o", "json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let job: DeviceJob = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(job.status.unwrap().phase, Some(JobPhase::Succeeded));
}
