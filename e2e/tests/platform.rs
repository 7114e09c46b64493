//! How platform teams install and run kubetwin: the Helm chart against the real API server,
//! least-privilege RBAC, leader election, GitOps re-applies and the container image.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::ResourceExt;
use kubetwin_api::RebootPhase;
use kubetwin_e2e::{
    fleet::{Operator, Simulator},
    helm,
    mqtt::TestClient,
    scenario::{Setup, create_device, is_connected, phase, setup},
    tools::repo_root,
    wait::wait_for,
};
use serde_json::json;

/// Applies `yaml` with kubectl in the scope's namespace.
fn kubectl_apply(s: &Setup, yaml: &str, extra: &[&str]) -> String {
    let file = s.scope.dir.join(format!("manifest-{}.yaml", yaml.len()));
    std::fs::write(&file, yaml).expect("manifest written");
    let path = file.display().to_string();
    let mut args = vec!["apply", "-n", &s.scope.namespace, "-f", &path];
    args.extend_from_slice(extra);
    s.env.kubectl(&args).expect("kubectl apply")
}

/// Values of the bundled broker with per-device identity (password file and operator user).
const SECURE_MOSQUITTO: [&str; 8] = [
    "--set",
    "mosquitto.enabled=true",
    "--set",
    "mosquitto.auth.passwordFileSecret=pw",
    "--set",
    "broker.auth.username=kubetwin-operator",
    "--set",
    "broker.auth.passwordSecret=op",
];

/// The documents of `helm template` output with `kind`.
fn rendered(text: &str, kind: &str) -> Vec<serde_json::Value> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).expect("rendered YAML parses");
    documents.into_iter().filter(|d| d["kind"] == kind).collect()
}

#[tokio::test]
async fn the_bundled_broker_gets_the_harness_acl_and_the_chart_ships_the_policies_verbatim() {
    let mut args =
        vec!["template", "kubetwin", "charts/kubetwin", "--set", "broker.topicRoot=kt/x"];
    args.extend(SECURE_MOSQUITTO);
    let text = helm::ok(None, &args).expect("helm template");
    let config_maps = rendered(&text, "ConfigMap");
    let acl = config_maps
        .iter()
        .find_map(|c| c["data"]["acl"].as_str())
        .expect("the mosquitto ConfigMap has the ACL");
    assert_eq!(acl, kubetwin_e2e::broker::acl_text("kt/x", "kubetwin-operator"));
    let conf = config_maps
        .iter()
        .find_map(|c| c["data"]["mosquitto.conf"].as_str())
        .expect("mosquitto.conf");
    for line in [
        "allow_anonymous false",
        "use_username_as_clientid true",
        "max_queued_messages 100000",
        "max_packet_size 1048576",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line} in:\n{conf}");
    }

    let policies_dir = repo_root().join("charts/kubetwin/files/policies");
    let mut shipped = Vec::new();
    for entry in std::fs::read_dir(&policies_dir).expect("policies") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("policy file");
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
        shipped.extend(documents);
    }
    let default = helm::ok(
        None,
        &["template", "kubetwin", "charts/kubetwin", "--set", "broker.url=mqtt://b:1883"],
    )
    .expect("helm template");
    let mut in_chart = rendered(&default, "ValidatingAdmissionPolicy");
    in_chart.extend(rendered(&default, "ValidatingAdmissionPolicyBinding"));
    assert_eq!(in_chart.len(), shipped.len(), "every policy file is rendered");
    for document in &shipped {
        assert!(in_chart.contains(document), "rendered verbatim: {}", document["metadata"]["name"]);
    }
}

#[tokio::test]
async fn the_chart_lints_renders_and_rejects_bad_values() {
    let lint = helm::ok(
        None,
        &["lint", "--strict", "charts/kubetwin", "--set", "broker.url=mqtt://broker:1883"],
    );
    let lint = lint.expect("helm lint");
    assert!(lint.contains("1 chart(s) linted, 0 chart(s) failed"), "{lint}");
    for extra in [
        vec!["--set", "broker.url=mqtt://broker:1883"],
        vec!["--set", "broker.url=mqtt://broker:1883", "--set", "replicaCount=2"],
        vec!["--set", "broker.url=mqtt://broker:1883", "--set", "watchNamespaces={team-a}"],
        SECURE_MOSQUITTO.to_vec(),
        vec![
            "--set",
            "mosquitto.enabled=true",
            "--set",
            "mosquitto.auth.allowAnonymousInsecure=true",
        ],
        vec![
            "--set",
            "broker.url=mqtt://broker:1883",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
    ] {
        let mut args = vec!["template", "kubetwin", "charts/kubetwin"];
        args.extend(extra.iter().copied());
        let rendered =
            helm::ok(None, &args).unwrap_or_else(|e| panic!("helm template {extra:?}: {e}"));
        assert!(rendered.contains("kind: Deployment"), "{extra:?} renders the operator");
    }

    let bad = helm::run(
        None,
        &[
            "template",
            "kubetwin",
            "charts/kubetwin",
            "--set",
            "broker.url=mqtt://b:1883",
            "--set",
            "replicaCount=two",
        ],
    )
    .expect("helm ran");
    assert!(!bad.success, "replicaCount=two is rejected");
    assert!(
        bad.stderr.contains("replicaCount") && bad.stderr.contains("integer"),
        "readable: {}",
        bad.stderr
    );

    let no_broker =
        helm::run(None, &["template", "kubetwin", "charts/kubetwin"]).expect("helm ran");
    assert!(!no_broker.success);
    assert!(no_broker.stderr.contains("set broker.url"), "{}", no_broker.stderr);

    // The bundled broker never runs without per-device credentials unless that is asked for
    // by name.
    let anonymous = helm::run(
        None,
        &["template", "kubetwin", "charts/kubetwin", "--set", "mosquitto.enabled=true"],
    )
    .expect("helm ran");
    assert!(!anonymous.success, "a bundled broker without credentials is refused");
    assert!(
        anonymous.stderr.contains(
            "mosquitto.enabled=true needs per-device credentials: set mosquitto.auth.passwordFileSecret"
        ),
        "readable: {}",
        anonymous.stderr
    );

    for name in [
        "devices.kubetwin.io.yaml",
        "rebootrequests.kubetwin.io.yaml",
        "methodrequests.kubetwin.io.yaml",
        "devicejobs.kubetwin.io.yaml",
        "devicedisruptionbudgets.kubetwin.io.yaml",
        "deviceconfigurations.kubetwin.io.yaml",
    ] {
        let top = std::fs::read(repo_root().join("crds").join(name)).expect("crd");
        let chart =
            std::fs::read(repo_root().join("charts/kubetwin/crds").join(name)).expect("chart crd");
        assert!(
            top == chart,
            "charts/kubetwin/crds/{name} differs from crds/{name}: copy it (make crds)"
        );
    }
}

#[tokio::test]
async fn the_chart_installs_and_its_service_account_is_enough_and_no_more() {
    let s = setup("helm").await;
    let ns = s.scope.namespace.clone();
    let release = "kubetwin";
    let watch = format!("watchNamespaces={{{ns}}}");
    let broker = format!("broker.url={}", s.scope.broker.url());
    let install = helm::ok(
        Some(s.env.kubeconfig()),
        &[
            "install",
            release,
            "charts/kubetwin",
            "-n",
            &ns,
            "--set",
            &broker,
            "--set",
            &watch,
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "replicaCount=2",
            // The test environment installed the cluster-wide policies already.
            "--set",
            "admissionPolicies.enabled=false",
        ],
    );
    let install = install.expect("helm install");
    assert!(install.contains("STATUS: deployed"), "helm install: {install}");
    // Every object of the release was accepted by the API server.
    let manifest = helm::ok(Some(s.env.kubeconfig()), &["get", "manifest", release, "-n", &ns])
        .expect("manifest");
    for kind in
        ["Deployment", "ServiceAccount", "Role", "RoleBinding", "Service", "PodDisruptionBudget"]
    {
        assert!(manifest.contains(&format!("kind: {kind}")), "{kind} rendered");
    }
    let sa = "kubetwin";
    s.env
        .kubectl(&[
            "get",
            "deployment/kubetwin",
            "serviceaccount/kubetwin",
            "pdb/kubetwin",
            "-n",
            &ns,
        ])
        .expect("objects exist");

    // Least privilege, checked with impersonation.
    let as_sa = format!("--as=system:serviceaccount:{ns}:{sa}");
    let can = |verb: &str, resource: &str, namespace: &str, sub: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace, as_sa.as_str()];
        if let Some(sub) = sub {
            args.extend(["--subresource", sub]);
        }
        match s.env.kubectl(&args) {
            Ok(out) => out.trim() == "yes",
            Err(_) => false, // kubectl exits 1 on "no"
        }
    };
    assert!(can("watch", "devices.kubetwin.io", &ns, None));
    assert!(can("patch", "devices.kubetwin.io", &ns, Some("status")));
    assert!(can("patch", "rebootrequests.kubetwin.io", &ns, Some("status")));
    assert!(can("delete", "rebootrequests.kubetwin.io", &ns, None));
    assert!(can("watch", "methodrequests.kubetwin.io", &ns, None));
    assert!(can("patch", "methodrequests.kubetwin.io", &ns, Some("status")));
    assert!(can("delete", "methodrequests.kubetwin.io", &ns, None));
    // MethodRequests are created only as the children of a DeviceJob (whose creator passed the
    // invoke check for its method when creating the job).
    assert!(can("create", "methodrequests.kubetwin.io", &ns, None));
    assert!(can("watch", "devicejobs.kubetwin.io", &ns, None));
    assert!(can("patch", "devicejobs.kubetwin.io", &ns, Some("status")));
    assert!(can("patch", "devicedisruptionbudgets.kubetwin.io", &ns, Some("status")));
    assert!(can("watch", "deviceconfigurations.kubetwin.io", &ns, None));
    assert!(can("patch", "deviceconfigurations.kubetwin.io", &ns, Some("status")));
    assert!(
        !can("patch", "deviceconfigurations.kubetwin.io", &ns, None),
        "never edits a configuration"
    );
    assert!(!can("create", "devicejobs.kubetwin.io", &ns, None), "never starts a job itself");
    assert!(!can("create", "rebootrequests.kubetwin.io", &ns, None));
    assert!(can("create", "events.events.k8s.io", &ns, None));
    assert!(can("update", "leases.coordination.k8s.io", &ns, None));
    assert!(!can("update", "devices.kubetwin.io", &ns, None), "cannot change a Device's spec");
    assert!(!can("patch", "devices.kubetwin.io", &ns, None), "cannot change a Device's spec");
    assert!(!can("create", "devices.kubetwin.io", &ns, None));
    assert!(!can("get", "secrets", &ns, None), "cannot read Secrets");
    assert!(!can("list", "devices.kubetwin.io", "default", None), "cannot reach other namespaces");
    assert!(!can("list", "devices.kubetwin.io", "kube-system", None));

    // The operator, logged in with a token of the chart's ServiceAccount, completes a reboot.
    let token = s.env.kubectl(&["create", "token", sa, "-n", &ns, "--duration=1h"]).expect("token");
    let kubeconfig =
        s.env.kubeconfig_for_token(&format!("sa-{ns}"), token.trim()).expect("kubeconfig");
    let leader_ns = format!("--leader-election-namespace={ns}");
    let _operator = Operator::start_as(&s.scope, &kubeconfig, &["--leader-election", &leader_ns])
        .await
        .expect("operator as the ServiceAccount");
    let device_yaml = "apiVersion: kubetwin.io/v1alpha1\nkind: Device\nmetadata:\n  name: sensor-1\nspec:\n  desired:\n    mode: eco\n";
    kubectl_apply(&s, device_yaml, &[]);
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &["--boot-seconds=1"])
        .expect("simulator");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;
    let reboot_yaml = "apiVersion: kubetwin.io/v1alpha1\nkind: RebootRequest\nmetadata:\n  name: reboot-1\nspec:\n  deviceName: sensor-1\n";
    kubectl_apply(&s, reboot_yaml, &[]);
    let waited = s.env.kubectl(&[
        "wait",
        "--for=condition=Succeeded",
        "rebootrequest/reboot-1",
        "-n",
        &ns,
        "--timeout=180s",
    ]);
    assert_eq!(
        waited.expect("kubectl wait --for=condition=Succeeded").trim(),
        "rebootrequest.kubetwin.io/reboot-1 condition met"
    );
    let done = s.requests.get("reboot-1").await.expect("request");
    assert_eq!(phase(&done), Some(RebootPhase::Succeeded));
    assert_eq!(sim.executed(&id).expect("ledger").len(), 1);
}

/// Two operators with leader election and a Lease of `lease_seconds`: the first leads, the
/// second is a healthy standby.
async fn leader_and_standby(s: &Setup, lease_seconds: u32) -> (Operator, Operator) {
    let lease = [
        "--leader-election".to_string(),
        format!("--leader-election-namespace={}", s.scope.namespace),
        format!("--lease-duration-seconds={lease_seconds}"),
    ];
    let lease: Vec<&str> = lease.iter().map(String::as_str).collect();
    let first =
        Operator::start_as(&s.scope, s.env.kubeconfig(), &lease).await.expect("first operator");
    first.wait_leading(Duration::from_secs(60)).await.expect("the first operator takes the Lease");
    let second = Operator::spawn(&s.scope, s.env.kubeconfig(), &lease).expect("second operator");
    second.wait_ready(Duration::from_secs(60)).await.expect("standby is healthy");
    (first, second)
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_finishes_when_it_dies() {
    let s = setup("leader").await;
    let (first, second) = leader_and_standby(&s, 6).await;
    let (_, body) = second.readyz().await.expect("readyz");
    assert!(body.contains("standby"), "the second operator waits: {body}");

    let device_yaml =
        "apiVersion: kubetwin.io/v1alpha1\nkind: Device\nmetadata:\n  name: sensor-1\nspec: {}\n";
    kubectl_apply(&s, device_yaml, &[]);
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(
        s.env,
        &s.scope,
        std::slice::from_ref(&id),
        &["--response-delay-ms=3000", "--boot-seconds=4"],
    )
    .expect("simulator");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;
    let reboot_yaml = "apiVersion: kubetwin.io/v1alpha1\nkind: RebootRequest\nmetadata:\n  name: reboot-1\nspec:\n  deviceName: sensor-1\n";
    kubectl_apply(&s, reboot_yaml, &[]);
    wait_for(&s.requests, "reboot-1", "Sent", |r| phase(r) == Some(RebootPhase::Sent)).await;
    let standby_metrics = second.metrics().await.expect("metrics");
    assert!(
        !standby_metrics
            .lines()
            .any(|l| l.starts_with("kubetwin_reconciles_total") && !l.ends_with(" 0")),
        "the standby reconciled nothing:\n{standby_metrics}"
    );
    first.kill();

    let done = wait_for(&s.requests, "reboot-1", "a terminal phase", |r| {
        phase(r).is_some_and(RebootPhase::is_terminal)
    })
    .await;
    assert_eq!(phase(&done), Some(RebootPhase::Succeeded), "{:#?}", done.status);
    second.wait_leading(Duration::from_secs(60)).await.expect("the standby took over the Lease");
    assert_eq!(
        sim.executed(&id).expect("ledger"),
        vec![done.uid().unwrap_or_default()],
        "exactly one execution"
    );
}

#[tokio::test]
async fn a_terminated_leader_stops_every_controller_and_hands_over_the_lease() {
    let s = setup("leader-term").await;
    // A Lease far longer than the test waits: the standby can only lead this soon because
    // the terminated leader released it, not because it expired.
    let (first, second) = leader_and_standby(&s, 600).await;
    create_device(&s.devices, "sensor-1", json!({})).await;

    first.terminate().expect("SIGTERM");
    second.wait_leading(Duration::from_secs(120)).await.expect("the standby took over the Lease");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while first.exit_status().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = first.exit_status().expect("the terminated leader exited");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let log = first.log_text().expect("log");
    for kind in [
        "Device",
        "RebootRequest",
        "MethodRequest",
        "DeviceJob",
        "DeviceDisruptionBudget",
        "DeviceConfiguration",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("controller stopped") && l.contains(&format!("kind={kind}"))),
            "the {kind} controller said it stopped:\n{log}"
        );
    }
    assert!(!log.contains("did not stop"), "every controller stopped within its grace:\n{log}");
}

#[tokio::test]
async fn reapplying_the_same_manifests_never_reboots_twice() {
    let s = setup("gitops").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let device_yaml = "apiVersion: kubetwin.io/v1alpha1\nkind: Device\nmetadata:\n  name: sensor-1\nspec:\n  desired:\n    mode: eco\n";
    let reboot_yaml = "apiVersion: kubetwin.io/v1alpha1\nkind: RebootRequest\nmetadata:\n  name: reboot-1\nspec:\n  deviceName: sensor-1\n  responseTimeoutSeconds: 20\n";
    kubectl_apply(&s, device_yaml, &[]);
    let id = s.scope.device_id("sensor-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &["--boot-seconds=1"])
        .expect("simulator");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;
    kubectl_apply(&s, reboot_yaml, &[]);
    let done = wait_for(&s.requests, "reboot-1", "Succeeded", |r| {
        phase(r) == Some(RebootPhase::Succeeded)
    })
    .await;
    let completed = done.status.as_ref().and_then(|s| s.completed_at.clone());

    // Git syncs again: client-side apply, then server-side apply under another manager.
    for extra in [
        vec![],
        vec!["--server-side", "--field-manager=argocd-controller"],
        vec!["--server-side", "--field-manager=flux"],
    ] {
        kubectl_apply(&s, device_yaml, &extra);
        kubectl_apply(&s, reboot_yaml, &extra);
    }
    // Barrier: a marker request created after the re-applies reaches its end, so the
    // operator processed every earlier event of the request watch; then it is idle.
    let marker = "apiVersion: kubetwin.io/v1alpha1\nkind: RebootRequest\nmetadata:\n  name: marker\nspec:\n  deviceName: no-such-device\n";
    kubectl_apply(&s, marker, &[]);
    wait_for(&s.requests, "marker", "a terminal phase", |r| {
        phase(r).is_some_and(RebootPhase::is_terminal)
    })
    .await;
    operator.wait_idle(Duration::from_secs(30)).await.expect("idle");
    let again = s.requests.get("reboot-1").await.expect("request");
    assert_eq!(phase(&again), Some(RebootPhase::Succeeded));
    assert_eq!(
        again.status.as_ref().and_then(|s| s.completed_at.clone()),
        completed,
        "status untouched"
    );
    assert_eq!(
        sim.executed(&id).expect("ledger"),
        vec![done.uid().unwrap_or_default()],
        "no second reboot"
    );

    // The operator owns status only, never a field under spec.
    let device = s.devices.get("sensor-1").await.expect("device");
    let request = s.requests.get("reboot-1").await.expect("request");
    let entries = device.managed_fields().iter().chain(request.managed_fields());
    let mut seen_operator = false;
    for entry in entries {
        if entry.manager.as_deref() != Some("kubetwin-operator") {
            continue;
        }
        seen_operator = true;
        assert_eq!(entry.subresource.as_deref(), Some("status"), "{entry:?}");
        let fields = serde_json::to_string(&entry.fields_v1).expect("json");
        assert!(!fields.contains("f:spec"), "the operator owns a spec field: {fields}");
    }
    assert!(seen_operator, "the operator's status writes are recorded in managedFields");
}

#[tokio::test]
async fn the_image_builds_and_runs_its_binary() {
    let script = repo_root().join("hack/image.sh");
    let build = std::process::Command::new(&script)
        .arg("kubetwin/operator:e2e")
        .env("KUBETWIN_IMAGE_PROFILE", "dev")
        .output()
        .expect("hack/image.sh ran");
    assert!(
        build.status.success(),
        "image build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let check = std::process::Command::new(&script)
        .args(["--check", "kubetwin/operator:e2e"])
        .output()
        .expect("hack/image.sh --check ran");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "--version in the image failed:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(stdout.trim(), format!("kubetwin-operator {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn the_operator_talks_to_a_broker_over_mutual_tls() {
    let s = setup("tls").await;
    let broker = &s.scope.broker;
    let tls = &broker.tls;
    let url = broker.tls_url();
    let files = [
        format!("--broker-ca-file={}", tls.ca.display()),
        format!("--broker-client-cert-file={}", tls.client_cert.display()),
        format!("--broker-client-key-file={}", tls.client_key.display()),
    ];
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let operator =
        Operator::start_with_broker(s.env, &s.scope, &url, &files, Duration::from_secs(60))
            .await
            .expect("the operator connects over mutual TLS and becomes ready");

    // A device with its own certificate is seen by the operator, whose identity on the TLS
    // listener is its certificate's common name.
    create_device(&s.devices, "sensor-1", json!({})).await;
    let id = s.scope.device_id("sensor-1");
    let device = TestClient::with_certificate(broker, &id).await.expect("mqtt");
    let presence = format!("{}/{id}/presence", s.scope.topic_root);
    let online = json!({"v": 1, "state": "online", "boot": 1, "conn": 1});
    device.publish_json(&presence, &online, true).await.expect("presence");
    wait_for(&s.devices, "sensor-1", "connected", is_connected).await;
    assert!(operator.is_running());

    // Without the client certificate the broker refuses the operator: it never becomes ready.
    let ca_only = [format!("--broker-ca-file={}", tls.ca.display())];
    let ca_only: Vec<&str> = ca_only.iter().map(String::as_str).collect();
    let scope = kubetwin_e2e::fleet::Scope::new(s.env, &format!("{}-nocert", s.scope.namespace))
        .await
        .expect("scope");
    let refused = Operator::spawn_with_broker(s.env, &scope, &url, &ca_only).expect("spawned");
    let (code, body) = refused
        .wait_readyz(Duration::from_secs(60), |_, body| {
            body != "not ready: starting" && !body.contains("caches")
        })
        .await
        .expect("the operator answers /readyz");
    assert_eq!((code, body.as_str()), (503, "not ready: MQTT disconnected"));
    // The cause: the broker ended the TLS handshake because no client certificate came.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = refused.log_text().expect("log");
        let lost: Vec<&str> =
            log.lines().filter(|l| l.contains("MQTT connection lost; reconnecting")).collect();
        if let Some(line) = lost.first() {
            assert!(
                line.contains("received fatal alert: CertificateRequired"),
                "the connection failed for want of a client certificate: {line}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection failure logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
