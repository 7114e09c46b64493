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

/// `text` with each run of spaces made one, to read table rows whatever their widths.
fn squeezed(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn job_preview_resume_continue_and_suspend_steer_a_job_through_spec_changes() {
    let s = setup("plugin-steer").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.unwrap();
    let names: Vec<String> = (0..4).map(|i| format!("gw-{i}")).collect();
    let _sim = devices(&s, &names, &["--boot-seconds=0.5"]).await;
    let jobs: Api<DeviceJob> = Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace);
    let manifest = s.scope.dir.join("steer.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: kubetwin.io/v1alpha1\nkind: DeviceJob\nmetadata:\n  name: steer\nspec:\n  \
         selector: {}\n  method: reboot\n  rollout:\n    maxInFlight: 2\n    waves:\n      \
         - {size: 2, pauseAfter: true}\n      - {size: \"100%\"}\n",
    )
    .unwrap();

    // Preview: created suspended, the operator's plan printed, nothing sent.
    let preview = twin(&s, &["job", "preview", "-f", manifest.to_str().unwrap()]);
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    let plan = squeezed(&text(&preview.stdout));
    assert!(plan.contains("\ntargeted 4\n") && plan.contains("\nwaves 2 + 2\n"), "{plan}");
    assert!(plan.contains("\nmax in flight 2\n"), "{plan}");
    assert!(text(&preview.stderr).contains("is suspended; nothing was sent"));
    let job = jobs.get("steer").await.unwrap();
    assert!(job.spec.suspend, "previewed jobs wait");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = jobs.get("steer").await.unwrap().status.unwrap().counts;
    assert_eq!((counts.in_flight, counts.succeeded), (0, 0), "nothing sent while suspended");

    // A job that is not paused has nothing to continue: exit 1 and why.
    let early = twin(&s, &["job", "continue", "steer"]);
    assert_eq!(early.status.code(), Some(1), "{}", text(&early.stdout));
    assert!(text(&early.stderr).contains("is not paused"), "{}", text(&early.stderr));

    // Resume: the first wave runs and the job pauses after it.
    let resumed = twin(&s, &["job", "resume", "steer"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(text(&resumed.stdout), "devicejob.kubetwin.io/steer resumed\n");
    wait_for(&jobs, "steer", "paused after wave 1", |j| {
        j.status.as_ref().is_some_and(|st| st.phase == Some(JobPhase::Paused))
    })
    .await;
    let continued = twin(&s, &["job", "continue", "steer"]);
    assert!(continued.status.success(), "{}", text(&continued.stderr));
    assert_eq!(text(&continued.stdout), "devicejob.kubetwin.io/steer continued after wave 1\n");
    assert_eq!(jobs.get("steer").await.unwrap().spec.continue_after_wave, 1);
    let done = wait_for(&jobs, "steer", "succeeded", |j| {
        j.status.as_ref().is_some_and(|st| st.phase == Some(JobPhase::Succeeded))
    })
    .await;
    assert_eq!(done.status.unwrap().counts.succeeded, 4);

    // Suspend is a spec change too.
    let suspended = twin(&s, &["job", "suspend", "steer"]);
    assert!(suspended.status.success(), "{}", text(&suspended.stderr));
    assert_eq!(text(&suspended.stdout), "devicejob.kubetwin.io/steer suspended\n");
    assert!(jobs.get("steer").await.unwrap().spec.suspend);

    // --context picks the kubeconfig context; an unknown one is an error that names it.
    let named = twin(&s, &["--context", "kubetwin-test", "job", "status", "steer"]);
    assert!(named.status.success(), "{}", text(&named.stderr));
    assert!(
        text(&named.stdout).starts_with("DeviceJob steer   Succeeded"),
        "{}",
        text(&named.stdout)
    );
    let unknown = twin(&s, &["--context", "no-such-context", "summary"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no-such-context"), "{}", text(&unknown.stderr));
}

#[test]
fn completions_are_printed_for_each_shell() {
    let binary = workspace_binary("kubectl-twin").unwrap();
    for (shell, mark) in [("bash", "complete -F"), ("zsh", "#compdef"), ("fish", "complete -c")] {
        let out = Command::new(&binary).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(mark) && script.contains("preview"), "{shell}:\n{script}");
    }
}

/// `template` (krew-release-bot's template of the krew manifest) rendered for `tag` as the bot
/// does, each archive's sha256 given by `sha256_of(url)`.
fn render_krew_template(template: &str, tag: &str, sha256_of: impl Fn(&str) -> String) -> String {
    let template = template.replace("{{ .TagName }}", tag);
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        if let Some(call) = trimmed.strip_prefix("{{addURIAndSha \"") {
            let url = call.split_once('"').map(|(url, _)| url).expect("a quoted URL");
            let indent = &line[..line.len() - trimmed.len()];
            // As the bot writes it: the sha256 line always indented by four spaces.
            out.push_str(&format!("{indent}uri: {url}\n    sha256: {}\n", sha256_of(url)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_krew_manifest_installs_the_plugin() {
    let krew = tools::tool("krew").unwrap();
    let plugin = workspace_binary("kubectl-twin").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The release archive for this machine's platform: the binary and the licence at its root.
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let stage = dir.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::copy(&plugin, stage.join("kubectl-twin")).unwrap();
    std::fs::copy(tools::repo_root().join("LICENSE"), stage.join("LICENSE")).unwrap();
    let archive_name = format!("kubectl-twin-{os}-{arch}.tar.gz");
    let archive = dir.path().join(&archive_name);
    let packed = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .args(["kubectl-twin", "LICENSE"])
        .status()
        .unwrap();
    assert!(packed.success());
    let digest = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&archive).unwrap());
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();

    let template =
        std::fs::read_to_string(tools::repo_root().join("plugins/krew/twin.yaml")).unwrap();
    // Only this platform's archive exists here; the bot hashes the others at release time
    // (any well-formed value lets krew read the manifest).
    let other = "f".repeat(64);
    let rendered = render_krew_template(&template, "v0.1.0", |url| {
        if url.ends_with(&archive_name) { sha256.clone() } else { other.clone() }
    });
    assert!(!rendered.contains("{{"), "everything rendered:\n{rendered}");
    assert_eq!(rendered.matches("\n    uri: https://github.com/kubetwin/kubetwin/releases/download/v0.1.0/kubectl-twin-").count(), 4, "{rendered}");
    assert!(rendered.contains(&format!("\n    sha256: {sha256}\n")), "{rendered}");
    let manifest = dir.path().join("twin.yaml");
    std::fs::write(&manifest, &rendered).unwrap();

    let root = dir.path().join("krew");
    let installed = Command::new(&krew)
        .args(["install", "--manifest"])
        .arg(&manifest)
        .arg("--archive")
        .arg(&archive)
        .env("KREW_ROOT", &root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "krew install: {}{}",
        text(&installed.stdout),
        text(&installed.stderr)
    );
    let version = Command::new(root.join("bin/kubectl-twin")).arg("--version").output().unwrap();
    assert!(version.status.success(), "{}", text(&version.stderr));
    assert_eq!(text(&version.stdout), format!("kubectl-twin {}\n", env!("CARGO_PKG_VERSION")));
}
