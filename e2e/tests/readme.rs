//! The README's "A fleet in five commands", run as a reader types it: every command of that
//! section runs in a shell (real kubectl, the built `kubectl-twin` on `PATH`) against a real
//! control plane, the operator and the demo's fleet of 20 simulated sensors, and must print
//! what the README shows. Only what differs between runs is masked: generated names, ages and
//! rates, and how many progress lines a `--watch` prints.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use kubetwin_e2e::{
    fleet::{Operator, Simulator, workspace_binary},
    scenario::{create_device, is_connected, setup},
    tools::{repo_root, tools_dir},
    wait::wait_for,
};
use serde_json::json;

/// One `$ command` of a console block and the lines the README shows after it.
#[derive(Debug)]
struct Step {
    command: String,
    shown: Vec<String>,
}

/// The steps of the first `console` block after the heading `heading`.
fn steps(readme: &str, heading: &str) -> Vec<Step> {
    let section = readme.split_once(heading).map(|(_, rest)| rest).expect("the README section");
    let block = section.split_once("```console\n").map(|(_, rest)| rest).expect("a console block");
    let block = block.split_once("```").map(|(block, _)| block).expect("the block ends");
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            // A comment after two spaces explains the command; it is not part of it.
            let command = command.split_once("  #").map_or(command, |(c, _)| c);
            steps.push(Step { command: command.trim().to_string(), shown: Vec::new() });
        } else if !line.trim().is_empty() {
            steps.last_mut().expect("output follows a command").shown.push(line.to_string());
        }
    }
    steps
}

/// `line` as compared: columns split by any run of spaces (their width follows the values),
/// the AGE column of a `kubectl get` left out and a job's rate masked.
fn normalised(line: &str, kubectl_get: bool) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if kubectl_get {
        words.pop();
    }
    for i in 1..words.len() {
        if words[i] == "devices/min" {
            words[i - 1] = "<rate>";
        }
    }
    words.join(" ")
}

/// `line` with every number replaced, to compare the shape of progress lines.
fn shape(line: &str) -> String {
    let mut out = String::new();
    for c in normalised(line, false).chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// The name in a `kind.group/NAME created` line.
fn created_name(line: &str) -> Option<&str> {
    line.strip_suffix(" created")?.split_once('/').map(|(_, name)| name)
}

/// Runs `command` in bash from the repository root with `path` and `kubeconfig`; stdout lines.
fn run(command: &str, path: &str, kubeconfig: &Path) -> Vec<String> {
    let out = Command::new("bash")
        .args(["-c", &format!("timeout 300 {command}")])
        .current_dir(repo_root())
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{command}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn a_fleet_in_five_commands_prints_what_the_readme_shows() {
    let s = setup("readme").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    // The demo's fleet: sensor-1 … sensor-20 on the simulator, then examples/devices.yaml.
    let names: Vec<String> = (1..=20).map(|i| format!("sensor-{i}")).collect();
    for name in &names {
        create_device(&s.devices, name, json!({})).await;
    }
    let ids: Vec<String> = names.iter().map(|n| s.scope.device_id(n)).collect();
    let _sim = Simulator::start(s.env, &s.scope, &ids, &["--boot-seconds=1"]).expect("sim");
    for name in &names {
        wait_for(&s.devices, name, "connected", is_connected).await;
    }
    // The reader's shell: kubectl and the plugin on PATH, a kubeconfig whose context is the
    // test's namespace (the demo's commands name none).
    let kubeconfig = s.scope.dir.join("reader.kubeconfig");
    std::fs::copy(s.env.kubeconfig(), &kubeconfig).unwrap();
    let plugin = workspace_binary("kubectl-twin").unwrap();
    let path = format!(
        "{}:{}:{}",
        tools_dir().display(),
        plugin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let namespace = format!("--namespace={}", s.scope.namespace);
    run(&format!("kubectl config set-context --current {namespace}"), &path, &kubeconfig);
    run("kubectl apply -f examples/devices.yaml", &path, &kubeconfig);

    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let fleet_steps = steps(&readme, "## A fleet in five commands");
    assert!(fleet_steps.len() >= 5, "{fleet_steps:?}");
    // README name → the name this run generated.
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let rename = |text: &str, renamed: &BTreeMap<String, String>| {
        renamed.iter().fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    };
    for step in &fleet_steps {
        let command = rename(&step.command, &renamed);
        let shown: Vec<String> = step.shown.iter().map(|l| rename(l, &renamed)).collect();
        let kubectl_get = command.starts_with("kubectl get ");
        let expected: Vec<String> = shown.iter().map(|l| normalised(l, kubectl_get)).collect();
        if command.starts_with("kubectl create ") || command.starts_with("kubectl apply ") {
            // Runs once: it changes the cluster.
            let printed = run(&command, &path, &kubeconfig);
            assert_eq!(printed.len(), shown.len(), "`{command}` printed {printed:?}");
            for (printed, shown) in printed.iter().zip(&shown) {
                // A generated name (generateName plus five characters) differs each time.
                if let (Some(new), Some(old)) = (created_name(printed), created_name(shown))
                    && new != old
                {
                    let generated =
                        |n: &str| n.rsplit_once('-').map(|(p, s)| (p.to_string(), s.len()));
                    assert_eq!(generated(new), generated(old), "{new} is generated like {old}");
                    renamed.insert(old.to_string(), new.to_string());
                }
            }
            let expected: Vec<String> = shown.iter().map(|l| rename(l, &renamed)).collect();
            assert_eq!(printed, expected, "`{command}`");
        } else if command.contains("--watch") {
            // Follows to the end once. Lines that repeat the one before are left out of the
            // README, and a job just created may not have a status yet (Pending): compare the
            // shape of every line and the last lines exactly.
            let printed = run(&command, &path, &kubeconfig);
            let shapes: BTreeSet<String> = shown.iter().map(|l| shape(l)).collect();
            for line in &printed {
                assert!(
                    shapes.contains(&shape(line)) || line.starts_with("Pending 0/"),
                    "`{command}` printed a line the README does not show: {line}\n{printed:?}"
                );
            }
            let last: Vec<String> = printed.iter().map(|l| normalised(l, false)).collect();
            assert!(
                last.ends_with(&expected[expected.len().saturating_sub(2)..]),
                "`{command}` ended with {printed:?}, the README with {shown:?}"
            );
        } else {
            // Shows state: the README shows it once the fleet has settled.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let printed = run(&command, &path, &kubeconfig);
                let got: Vec<String> = printed.iter().map(|l| normalised(l, kubectl_get)).collect();
                if got == expected {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "`{command}` printed\n{}\nthe README shows\n{}",
                    printed.join("\n"),
                    shown.join("\n")
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert!(
        renamed.keys().any(|name| name.starts_with("reboot-fleet-")),
        "the README's job was created: {renamed:?}"
    );

    // The README's methods example calls its three methods again each time it is created.
    let methods = steps(&readme, "Three methods on the demo's simulated devices");
    let create = &methods.first().expect("the methods example's first step").command;
    assert_eq!(create, "kubectl create -f examples/methods.yaml");
    let mut names = BTreeSet::new();
    for round in 1..=2 {
        let printed = run(create, &path, &kubeconfig);
        assert_eq!(printed.len(), 3, "{printed:?}");
        names.extend(printed.iter().filter_map(|l| created_name(l)).map(str::to_string));
        assert_eq!(names.len(), 3 * round, "three new requests each time: {names:?}");
        let listed = names.iter().cloned().collect::<Vec<_>>().join(" ");
        let wait =
            format!("kubectl wait --for=condition=Complete --timeout=120s methodrequests {listed}");
        run(&wait, &path, &kubeconfig);
    }
    let listed = names.iter().cloned().collect::<Vec<_>>().join(" ");
    let phases = run(
        &format!(
            "kubectl get methodrequests {listed} -o jsonpath='{{range .items[*]}}{{.status.phase}}{{\"\\n\"}}{{end}}'"
        ),
        &path,
        &kubeconfig,
    );
    assert_eq!(phases, vec!["Succeeded"; 6], "every call ran");
}
