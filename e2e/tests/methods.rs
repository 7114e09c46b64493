//! Any device method, end to end: MethodRequests on a real kube-apiserver, mosquitto, the
//! operator binary and the simulator. Phases are recorded by a watch, as a user would see them
//! with `kubectl get methodrequests -w`.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use kubetwin_api::{MethodPhase, MethodRequest, MethodRequestStatus};
use kubetwin_e2e::{
    fleet::{Operator, Simulator},
    scenario::{Setup, condition, create_device, is_connected, reported, setup},
    wait::wait_for,
};
use serde_json::{Value, json};

/// Creates MethodRequest `name` with `spec`.
async fn create_method(s: &Setup, name: &str, spec: Value) -> MethodRequest {
    let request: MethodRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "MethodRequest",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("request");
    methods(s).create(&PostParams::default(), &request).await.expect("created")
}

fn methods(s: &Setup) -> Api<MethodRequest> {
    Api::namespaced(s.devices.clone().into_client(), &s.scope.namespace)
}

fn method_phase(request: &MethodRequest) -> Option<MethodPhase> {
    request.status.as_ref().and_then(|s| s.phase)
}

/// The distinct phases (with their progress percent) a watch saw, in order.
type Seen = Arc<Mutex<Vec<(MethodPhase, Option<i32>)>>>;

/// Records every distinct phase (with its progress percent) a MethodRequest passes through.
fn record(api: &Api<MethodRequest>, name: &str) -> Seen {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(request)) = stream.next().await {
            let percent =
                request.status.as_ref().and_then(|s| s.progress.as_ref()).and_then(|p| p.percent);
            if let (Some(phase), Ok(mut seen)) = (method_phase(&request), sink.lock())
                && seen.last() != Some(&(phase, percent))
            {
                seen.push((phase, percent));
            }
        }
    });
    seen
}

/// Waits for `name` to end, and for the recording watch to have seen the end too.
async fn finished(s: &Setup, name: &str, seen: &Seen) -> (MethodRequestStatus, Vec<MethodPhase>) {
    let done = wait_for(&methods(s), name, "a terminal phase", |r| {
        method_phase(r).is_some_and(MethodPhase::is_terminal)
    })
    .await;
    let status = done.status.expect("status");
    let end = status.phase;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let phases: Vec<MethodPhase> =
            seen.lock().map(|s| s.iter().map(|(p, _)| *p).collect()).unwrap_or_default();
        if phases.last().copied() == end {
            return (status, phases);
        }
        assert!(tokio::time::Instant::now() < deadline, "the watch never showed {end:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_order(seen: &[MethodPhase], order: &[MethodPhase]) -> bool {
    let positions: Vec<Option<usize>> =
        order.iter().map(|p| seen.iter().position(|s| s == p)).collect();
    positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn a_plain_method_shows_its_progress_then_returns_its_result() {
    let s = setup("method").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "lamp-1", json!({})).await;
    let id = s.scope.device_id("lamp-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &[]).expect("sim");
    wait_for(&s.devices, "lamp-1", "connected", is_connected).await;

    let seen = record(&methods(&s), "diagnostics");
    let created = create_method(
        &s,
        "diagnostics",
        json!({"deviceName": "lamp-1", "method": "collectDiagnostics", "params": {"level": "full"}}),
    )
    .await;
    let (status, phases) = finished(&s, "diagnostics", &seen).await;
    assert_eq!(status.phase, Some(MethodPhase::Succeeded), "{status:#?}");
    assert!(
        in_order(
            &phases,
            &[MethodPhase::Accepted, MethodPhase::InProgress, MethodPhase::Succeeded]
        ),
        "phases in order: {phases:?}"
    );
    let progress_seen = seen.lock().unwrap().clone();
    assert!(
        progress_seen.contains(&(MethodPhase::InProgress, Some(50))),
        "the device's 50 % showed in status.progress: {progress_seen:?}"
    );
    let result = status.result.expect("result");
    assert_eq!((result.code, result.message.as_str()), (200, "diagnostics collected"));
    assert_eq!(result.payload, Some(json!({"files": 3, "boot": 1})));
    assert_eq!(status.reason.as_deref(), Some("Completed"));
    assert_eq!(status.request_id.as_deref(), created.metadata.uid.as_deref());

    // A method that answers at once, with a result that says what it did.
    create_method(
        &s,
        "led",
        json!({"deviceName": "lamp-1", "method": "setLed", "params": {"on": true}}),
    )
    .await;
    let done = wait_for(&methods(&s), "led", "Succeeded", |r| {
        method_phase(r) == Some(MethodPhase::Succeeded)
    })
    .await;
    let result = done.status.and_then(|s| s.result).expect("result");
    assert_eq!(result.payload, Some(json!({"led": "on"})));
    let executed = sim.executed(&id).expect("ledger");
    assert_eq!(executed.len(), 2, "each request executed once: {executed:?}");
}

#[tokio::test]
async fn unsupported_methods_and_oversized_params_are_rejected_before_sending() {
    let s = setup("method-refused").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "lamp-1", json!({})).await;
    let id = s.scope.device_id("lamp-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &[]).expect("sim");
    wait_for(&s.devices, "lamp-1", "connected", is_connected).await;

    create_method(&s, "unknown", json!({"deviceName": "lamp-1", "method": "selfDestruct"})).await;
    let big = json!({"blob": "x".repeat(20 * 1024)});
    create_method(&s, "big", json!({"deviceName": "lamp-1", "method": "setLed", "params": big}))
        .await;
    for (name, reason, says) in [
        ("unknown", "MethodNotSupported", "lamp-1 does not support the method selfDestruct"),
        ("big", "ParamsTooLarge", "a request carries at most 16384"),
    ] {
        let done = wait_for(&methods(&s), name, "Rejected", |r| {
            method_phase(r) == Some(MethodPhase::Rejected)
        })
        .await;
        let status = done.status.expect("status");
        assert_eq!(status.reason.as_deref(), Some(reason));
        let message = status.message.unwrap_or_default();
        assert!(message.contains(says), "{name}: {message}");
        assert_eq!(status.sent_at, None, "{name}: nothing was sent");
    }
    assert!(sim.executed(&id).expect("ledger").is_empty());

    // A method name that cannot be one is refused at admission, with a readable message.
    let invalid: MethodRequest = serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1", "kind": "MethodRequest",
        "metadata": {"name": "invalid"}, "spec": {"deviceName": "lamp-1", "method": "Self Destruct"},
    }))
    .expect("request");
    let refused = methods(&s).create(&PostParams::default(), &invalid).await.expect_err("refused");
    let text = refused.to_string();
    assert!(
        text.contains(
            "method must start with a lowercase letter followed by letters, digits, '_' or '-'"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_factory_reset_wipes_the_device_which_comes_back_and_applies_desired_again() {
    let s = setup("reset").await;
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "lamp-1", json!({"desired": {"mode": "eco"}})).await;
    let id = s.scope.device_id("lamp-1");
    let sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &["--boot-seconds=2"])
        .expect("sim");
    let before = wait_for(&s.devices, "lamp-1", "InSync with mode eco", |d| {
        condition(d, "InSync").is_some_and(|c| c.status == "True")
            && reported(d, "mode") == Some(json!("eco"))
    })
    .await;
    let boot_before = before.status.as_ref().and_then(|st| st.last_reported).map(|c| c.boot);

    let seen = record(&methods(&s), "reset");
    let created =
        create_method(&s, "reset", json!({"deviceName": "lamp-1", "method": "factoryReset"})).await;
    let (status, phases) = finished(&s, "reset", &seen).await;
    assert_eq!(status.phase, Some(MethodPhase::Succeeded), "{status:#?}");
    assert!(
        in_order(&phases, &[MethodPhase::Accepted, MethodPhase::Rebooting, MethodPhase::Succeeded]),
        "phases in order: {phases:?}"
    );
    assert_eq!(status.boot_after, status.boot_before.map(|b| b + 1), "back with a higher boot");
    assert_eq!(status.boot_before, boot_before);

    // The reset is visible in reported properties, and the device applies desired again.
    let after = wait_for(&s.devices, "lamp-1", "reset marked, InSync again", |d| {
        reported(d, "factoryReset").is_some()
            && condition(d, "InSync").is_some_and(|c| c.status == "True")
            && reported(d, "mode") == Some(json!("eco"))
    })
    .await;
    let cursor = after.status.as_ref().and_then(|st| st.last_reported).expect("cursor");
    assert_eq!(Some(cursor.boot), status.boot_after);
    assert_eq!(sim.executed(&id).expect("ledger"), vec![created.metadata.uid.unwrap_or_default()]);
    let ledger = sim.ledger(&id).expect("ledger").expect("ledger exists");
    assert!(ledger.last_factory_reset.is_some(), "the simulator recorded the reset");
}

/// Writes `yaml` to a file in the scope's folder and runs `kubectl create -f` on it in the
/// scope's namespace with `extra` flags.
fn kubectl_create(s: &Setup, name: &str, yaml: &str, extra: &[&str]) -> Result<String, String> {
    let file = s.scope.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("manifest written");
    let path = file.display().to_string();
    let mut args = vec!["create", "-n", &s.scope.namespace, "-f", &path];
    args.extend_from_slice(extra);
    s.env.kubectl(&args).map_err(|e| e.to_string())
}

#[tokio::test]
async fn factory_reset_needs_its_own_permission_and_a_role_binding_grants_it() {
    let s = setup("method-rbac").await;
    let ns = s.scope.namespace.clone();
    // alice may create requests and invoke reboot, nothing else.
    let role = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: requester, namespace: {ns}}}
rules:
  - apiGroups: ["kubetwin.io"]
    resources: ["methodrequests", "rebootrequests"]
    verbs: ["create", "get", "delete"]
  - apiGroups: ["kubetwin.io"]
    resources: ["methods"]
    resourceNames: ["reboot"]
    verbs: ["invoke"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: requester, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: requester}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]
"#
    );
    kubectl_create(&s, "role", &role, &[]).expect("role created");
    let reset = r#"apiVersion: kubetwin.io/v1alpha1
kind: MethodRequest
metadata: {name: reset-1}
spec: {deviceName: lamp-1, method: factoryReset}
"#;
    let as_alice = ["--as=alice"];
    // The policy takes effect a moment after it is installed: until then a create may pass,
    // and is undone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let denial = loop {
        match kubectl_create(&s, "reset", reset, &as_alice) {
            Err(error) if error.contains("method-permissions.kubetwin.io") => break error,
            Err(error) => panic!("refused for another reason: {error}"),
            Ok(_) => {
                s.env.kubectl(&["delete", "methodrequest", "reset-1", "-n", &ns]).expect("undo");
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected = format!(
        "user alice may not invoke factoryReset on devices in namespace {ns}; grant the verb invoke on methods.kubetwin.io with resourceNames [factoryReset]"
    );
    assert!(denial.contains(&expected), "a readable denial: {denial}");

    // reboot is granted: a RebootRequest and a MethodRequest for reboot both go in.
    let reboots = r#"apiVersion: kubetwin.io/v1alpha1
kind: RebootRequest
metadata: {name: reboot-1}
spec: {deviceName: lamp-1}
---
apiVersion: kubetwin.io/v1alpha1
kind: MethodRequest
metadata: {name: reboot-2}
spec: {deviceName: lamp-1, method: reboot}
"#;
    kubectl_create(&s, "reboots", reboots, &as_alice).expect("reboot is granted");

    // A RoleBinding granting factoryReset lets the same request in.
    let grant = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: factory-reset, namespace: {ns}}}
rules:
  - apiGroups: ["kubetwin.io"]
    resources: ["methods"]
    resourceNames: ["factoryReset"]
    verbs: ["invoke"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: factory-reset, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: factory-reset}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]
"#
    );
    kubectl_create(&s, "grant", &grant, &[]).expect("grant created");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match kubectl_create(&s, "reset", reset, &as_alice) {
            Ok(_) => break,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "still denied: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let created = methods(&s).get("reset-1").await.expect("created");
    assert_eq!(created.spec.method, "factoryReset");
}

#[tokio::test]
async fn a_factory_reset_survives_operator_kills_and_runs_once() {
    let s = setup("reset-kill").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "lamp-1", json!({"desired": {"mode": "eco"}})).await;
    let id = s.scope.device_id("lamp-1");
    let sim = Simulator::start(
        s.env,
        &s.scope,
        std::slice::from_ref(&id),
        &["--response-delay-ms=3000", "--boot-seconds=5"],
    )
    .expect("sim");
    wait_for(&s.devices, "lamp-1", "connected", is_connected).await;

    let created =
        create_method(&s, "reset", json!({"deviceName": "lamp-1", "method": "factoryReset"})).await;
    let phase_is = |wanted: MethodPhase| move |r: &MethodRequest| method_phase(r) == Some(wanted);
    wait_for(&methods(&s), "reset", "Sent", phase_is(MethodPhase::Sent)).await;
    operator.kill();
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator restarted");
    wait_for(&methods(&s), "reset", "Rebooting", phase_is(MethodPhase::Rebooting)).await;
    operator.kill();
    let _operator = Operator::start(s.env, &s.scope, &[]).await.expect("restarted again");
    let done = wait_for(&methods(&s), "reset", "a terminal phase", |r| {
        method_phase(r).is_some_and(MethodPhase::is_terminal)
    })
    .await;
    assert_eq!(method_phase(&done), Some(MethodPhase::Succeeded), "{:#?}", done.status);
    assert_eq!(
        sim.executed(&id).expect("ledger"),
        vec![created.metadata.uid.unwrap_or_default()],
        "exactly one execution"
    );
    wait_for(&s.devices, "lamp-1", "InSync again after the reset", |d| {
        reported(d, "factoryReset").is_some()
            && condition(d, "InSync").is_some_and(|c| c.status == "True")
    })
    .await;
}
