//! Device identity and tenant isolation on the broker the chart ships: every device logs in
//! as itself, the client id is forced to that identity, and the topic ACL confines a device
//! to its own topics. A device that turns hostile can act only as itself.
// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kubetwin_api::{ConnectionState, Device, RebootPhase};
use kubetwin_e2e::{
    broker::{Broker, BrokerSetup, Identity, Login},
    fleet::{Operator, Simulator},
    mqtt::TestClient,
    scenario::{create_device, create_reboot, is_connected, phase, reported, setup_with_broker},
    wait::wait_for,
};
use kubetwin_mqtt::{Credentials, Security};
use kubetwin_protocol::Topics;
use serde_json::{Value, json};

/// What the operator shows of a device and could be moved by a forged message.
fn shown(device: &Device) -> Value {
    let status = device.status.clone().unwrap_or_default();
    json!({
        "connection": status.connection.map(|c| (format!("{:?}", c.state), c.since)),
        "reported": status.reported,
        "lastReported": status.last_reported,
        "applied": status.applied,
    })
}

/// One attempt of the hostile device, and whether anything of it got through.
struct Attempt {
    what: &'static str,
    got_through: bool,
}

#[tokio::test]
async fn a_device_can_act_only_as_itself_and_nothing_else_reaches_another_device() {
    let s = setup_with_broker("identity", |b: &mut BrokerSetup, ns: &str| {
        b.password_devices = vec![format!("{ns}.a"), format!("{ns}.b")];
    })
    .await;
    let broker: &Broker = &s.scope.broker;
    let root = s.scope.topic_root.clone();
    let a = s.scope.device_id("a");
    let b = s.scope.device_id("b");
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "a", json!({})).await;
    create_device(&s.devices, "b", json!({"desired": {"mode": "eco"}})).await;
    // B is a real (simulated) device with its own password; A is a raw client with A's.
    let sim = Simulator::start_as(s.env, &s.scope, std::slice::from_ref(&b), Login::Passwords, &[])
        .expect("simulator");
    wait_for(&s.devices, "b", "B connected and in sync", |d| {
        is_connected(d)
            && d.status.as_ref().and_then(|st| st.applied.as_ref()).map(|a| a.version) == Some(1)
    })
    .await;
    // A request for B that B accepts and then waits an hour to carry out.
    create_reboot(&s.requests, "reboot-b", json!({"deviceName": "b", "delaySeconds": 3600})).await;
    let accepted =
        wait_for(&s.requests, "reboot-b", "Accepted", |r| phase(r) == Some(RebootPhase::Accepted))
            .await;
    let request_id = accepted.metadata.uid.clone().unwrap_or_default();
    let b_before = shown(&s.devices.get("b").await.expect("b"));

    let attacker = TestClient::with_password(broker, &a).await.expect("A logs in as itself");
    let mut attempts = Vec::new();

    // Positive control: A may speak for itself.
    attacker
        .publish_json(
            &format!("{root}/{a}/presence"),
            &json!({"v": 1, "state": "online", "boot": 1, "conn": 1}),
            true,
        )
        .await
        .expect("A's own presence");
    wait_for(&s.devices, "a", "A's own presence reaches its Device", is_connected).await;

    // Subscriptions to what is not A's: granted or not, nothing of B may arrive.
    for filter in
        ["#".to_string(), format!("{root}/{b}/rpc/req/#"), format!("{root}/{b}/twin/desired")]
    {
        attacker.subscribe(&filter).await.expect("SUBACK");
    }

    // Forgeries on B's topics.
    let forgeries = [
        (
            "A publishes B's presence",
            format!("{root}/{b}/presence"),
            json!({"v": 1, "state": "offline", "boot": 99, "conn": 1, "reason": "forged"}),
            true,
        ),
        (
            "A publishes B's reported properties",
            format!("{root}/{b}/twin/reported"),
            json!({"v": 1, "boot": 99, "seq": 1, "full": true, "reported": {"pwned": true}}),
            false,
        ),
        (
            "A answers B's request",
            format!("{root}/{b}/rpc/res/{request_id}"),
            json!({"v": 1, "id": request_id, "seq": 99, "boot": 99, "status": "Succeeded", "code": 200}),
            false,
        ),
        (
            "A publishes a request to B",
            format!("{root}/{b}/rpc/req/reboot/forged-0001"),
            json!({"v": 1, "id": "forged-0001", "method": "reboot", "params": {}, "issuedAt": "2030-01-01T00:00:00Z", "expiresAt": "2030-01-01T01:00:00Z"}),
            false,
        ),
        (
            "A publishes B's desired document",
            format!("{root}/{b}/twin/desired"),
            json!({"v": 1, "epoch": "forged", "version": 999, "issuedAt": "2030-01-01T00:00:00Z", "desired": {"mode": "pwned"}}),
            true,
        ),
        (
            "A publishes its own desired document",
            format!("{root}/{a}/twin/desired"),
            json!({"v": 1, "epoch": "forged", "version": 999, "issuedAt": "2030-01-01T00:00:00Z", "desired": {"mode": "pwned"}}),
            true,
        ),
    ];
    for (what, topic, body, retain) in &forgeries {
        attacker.publish_json(topic, body, *retain).await.expect("handed to the client");
        let _ = what;
    }
    // Barrier: A's own report after the forgeries reaches its Device, so the broker has decided
    // on every earlier publication of A; then the operator is idle.
    attacker
        .publish_json(
            &format!("{root}/{a}/twin/reported"),
            &json!({"v": 1, "boot": 1, "seq": 1, "full": true, "reported": {"marker": 1}}),
            false,
        )
        .await
        .expect("A's own report");
    wait_for(&s.devices, "a", "A's marker", |d| reported(d, "marker") == Some(json!(1))).await;
    operator.wait_idle(Duration::from_secs(30)).await.expect("idle");
    let refused = attacker.refused_publications();
    let b_after = shown(&s.devices.get("b").await.expect("b"));
    let request = s.requests.get("reboot-b").await.expect("request");
    attempts
        .push(Attempt { what: "forged presence/reported of B", got_through: b_after != b_before });
    attempts.push(Attempt {
        what: "forged Succeeded answer to B's request",
        got_through: phase(&request) != Some(RebootPhase::Accepted),
    });

    // The operator's own desired document for B is republished if anything overwrote it; B
    // applies only documents the operator published (checked after a legitimate change).
    let change = json!({"spec": {"desired": {"mode": "boost"}}});
    s.devices.patch("b", &PatchParams::default(), &Patch::Merge(&change)).await.expect("patched");
    let b_synced = wait_for(&s.devices, "b", "B applied generation 2", |d| {
        d.status.as_ref().and_then(|st| st.applied.as_ref()).map(|a| a.version) == Some(2)
    })
    .await;
    let ledger = sim.ledger(&b).expect("ledger").expect("B ran");
    attempts.push(Attempt {
        what: "forged request to B",
        got_through: ledger.executed.contains(&"forged-0001".to_string()),
    });
    attempts.push(Attempt {
        what: "forged desired document for B",
        got_through: reported(&b_synced, "mode") != Some(json!("boost"))
            || ledger.applied.as_ref().is_some_and(|a| a.epoch == "forged"),
    });
    let metrics = operator.metrics().await.expect("metrics");
    attempts.push(Attempt {
        what: "retained desired documents overwritten",
        got_through: kubetwin_e2e::fleet::metric_value(
            &metrics,
            "kubetwin_desired_overwrites_total",
        ) != Some(0.0),
    });
    let leaked: Vec<String> = attacker
        .received()
        .into_iter()
        .map(|(topic, _)| topic)
        .filter(|topic| !topic.starts_with(&format!("{root}/{a}/")))
        // The operator's session announcement is for every device.
        .filter(|topic| *topic != Topics::new(root.clone()).operator_session())
        .collect();
    attempts.push(Attempt { what: "A reading others' topics", got_through: !leaked.is_empty() });

    // Taking over sessions: with A's credentials and B's (or the operator's) client id, the
    // broker forces the client id to A.
    for (seq, what, client_id) in [
        (2, "A connecting with B's client id", b.as_str()),
        (3, "A connecting with the operator's client id", "kubetwin-operator"),
    ] {
        let hijack = TestClient::connect(&broker.url(), client_id, broker.password_security(&a))
            .await
            .expect("A logs in");
        // Barrier: the hijacker's own report reaches A's Device.
        hijack
            .publish_json(&format!("{root}/{a}/twin/reported"), &json!({"v": 1, "boot": 1, "seq": seq, "full": false, "reported": {"hijack": client_id}}), false)
            .await
            .expect("published");
        wait_for(&s.devices, "a", "the hijacker's report", |d| {
            reported(d, "hijack") == Some(json!(client_id))
        })
        .await;
        operator.wait_idle(Duration::from_secs(30)).await.expect("idle");
        let b_now = s.devices.get("b").await.expect("b");
        let b_connected = b_now
            .status
            .as_ref()
            .and_then(|st| st.connection.as_ref())
            .is_some_and(|c| c.state == ConnectionState::Connected);
        let operator_ready =
            operator.readyz().await.is_ok_and(|(code, body)| code == 200 && body == "ok");
        attempts.push(Attempt { what, got_through: !b_connected || !operator_ready });
    }

    // Logging in without credentials, or with another device's name and a wrong password.
    let anonymous = TestClient::connect(&broker.url(), "nobody", Security::default()).await;
    attempts.push(Attempt { what: "a client without credentials", got_through: anonymous.is_ok() });
    let wrong = Security {
        tls: None,
        credentials: Some(Credentials { username: b.clone(), password: "guess".into() }),
    };
    let guessed = TestClient::connect(&broker.url(), &b, wrong).await;
    attempts
        .push(Attempt { what: "B's name with a guessed password", got_through: guessed.is_ok() });

    let through: Vec<&str> = attempts.iter().filter(|a| a.got_through).map(|a| a.what).collect();
    let tried: Vec<&str> =
        forgeries.iter().map(|f| f.0).chain(attempts.iter().map(|a| a.what)).collect();
    println!(
        "IDENTITY tried=[{}] refused_publications={} got_through=[{}]",
        tried.join("; "),
        refused.len(),
        through.join("; ")
    );
    assert!(through.is_empty(), "got through: {through:?}; leaked topics: {leaked:?}");
    assert_eq!(
        refused.len(),
        forgeries.len(),
        "MQTT 5: the broker refused each forged publication with a reason code: {refused:?}"
    );
    assert!(
        refused.iter().all(|r| r == "NotAuthorized"),
        "every refusal says NotAuthorized: {refused:?}"
    );
    assert!(anonymous.err().is_some_and(|e| e.to_string().contains("refused the connection")));
}

#[tokio::test]
async fn an_operator_whose_subscription_the_broker_refuses_is_not_ready_and_says_why() {
    // mosquitto's dynamic-security plugin refuses a subscription in the SUBACK (its ACL file
    // accepts every subscription and filters delivery instead).
    let s = setup_with_broker("refused", |b: &mut BrokerSetup, ns: &str| {
        let root = format!("kt/{ns}");
        b.identity = Identity::DynamicSecurity {
            operator_may_subscribe: ["twin/reported", "twin/get", "rpc/res/+", "twin/desired"]
                .iter()
                .map(|t| format!("{root}/+/{t}"))
                .collect(),
        };
    })
    .await;
    let presence = format!("{}/+/presence", s.scope.topic_root);
    let operator = Operator::spawn(&s.scope, s.env.kubeconfig(), &[]).expect("operator");
    let (code, body) = operator
        .wait_readyz(Duration::from_secs(60), |_, body| body.contains("refused"))
        .await
        .expect("/readyz answers");
    assert_eq!(
        (code, body),
        (
            503,
            format!(
                "not ready: the broker refused the subscriptions the operator needs: {presence} (NotAuthorized)"
            )
        )
    );
    let refusals = operator
        .wait_metric(
            "kubetwin_mqtt_refusals_total{kind=\"subscribe\"}",
            Duration::from_secs(30),
            |v| v >= 1.0,
        )
        .await
        .expect("counted");
    assert_eq!(refusals, 1.0, "one filter refused, once");
    let log = operator.log_text().expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("the broker refused a subscription the operator needs; not ready")
                && l.contains(&presence)
                && l.contains("NotAuthorized")),
        "logged with the filter and the reason:\n{log}"
    );
}

#[tokio::test]
async fn a_device_that_lost_its_id_gets_nothing_delivered_and_keeps_losing_after_a_restart() {
    use kubetwin_e2e::scenario::{condition, setup};
    let s = setup("conflict").await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    let shared = format!("{}.shared", s.scope.namespace);
    let first = create_device(&s.devices, "first", json!({"deviceId": shared})).await;
    // The older Device owns the id; API times have whole seconds, so the second Device is
    // created in a later second.
    let created = first.metadata.creation_timestamp.clone().expect("created").0.as_second();
    while k8s_openapi::jiff::Timestamp::now().as_second() <= created {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create_device(
        &s.devices,
        "second",
        json!({"deviceId": shared, "desired": {"mode": "hijacked"}}),
    )
    .await;
    let sim =
        Simulator::start(s.env, &s.scope, std::slice::from_ref(&shared), &[]).expect("simulator");
    wait_for(&s.devices, "first", "the owner connected", is_connected).await;
    let is_loser = |d: &Device| {
        condition(d, "Ready")
            .is_some_and(|c| c.status == "False" && c.reason == "DuplicateDeviceId")
    };
    wait_for(&s.devices, "second", "Ready=False DuplicateDeviceId", is_loser).await;

    let request =
        create_reboot(&s.requests, "reboot-second", json!({"deviceName": "second"})).await;
    let done = wait_for(&s.requests, "reboot-second", "Rejected", |r| {
        phase(r) == Some(RebootPhase::Rejected)
    })
    .await;
    let status = done.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeviceIdConflict"));
    assert_eq!(
        status.message.as_deref(),
        Some("Device second does not own its device id (an older Device does): nothing is sent")
    );
    assert_eq!(status.sent_at, None, "never sent");
    // The owner's device received nothing: no request, and not the loser's desired document.
    operator.wait_idle(Duration::from_secs(30)).await.expect("idle");
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let ledger = sim.ledger(&shared).expect("ledger").expect("the device ran");
    assert!(ledger.executed.is_empty(), "executed nothing: {:?}", ledger.executed);
    assert_eq!(ledger.recent.last_response(&uid), None, "never saw the request");
    let owner = s.devices.get("first").await.expect("first");
    assert_eq!(reported(&owner, "mode"), None, "the loser's desired document never reached it");

    // After a restart the same Device owns the id, whatever order the Devices are listed in.
    operator.kill();
    let restarted = Operator::start(s.env, &s.scope, &[]).await.expect("restarted");
    restarted
        .wait_metric("kubetwin_reconciles_total{kind=\"device\"}", Duration::from_secs(60), |v| {
            v >= 2.0
        })
        .await
        .expect("both Devices reconciled");
    restarted.wait_idle(Duration::from_secs(30)).await.expect("idle");
    assert!(is_loser(&s.devices.get("second").await.expect("second")), "still the loser");
    let owner = s.devices.get("first").await.expect("first");
    assert_ne!(
        condition(&owner, "Ready").map(|c| c.reason.as_str()),
        Some("DuplicateDeviceId"),
        "still the owner"
    );
    // And a request for the owner reaches the device.
    create_reboot(&s.requests, "reboot-first", json!({"deviceName": "first"})).await;
    wait_for(&s.requests, "reboot-first", "Succeeded", |r| {
        phase(r) == Some(RebootPhase::Succeeded)
    })
    .await;
    assert_eq!(sim.ledger(&shared).expect("ledger").expect("ran").executed.len(), 1);
}

#[tokio::test]
async fn a_desired_document_overwritten_on_an_open_broker_is_published_again() {
    // Defence in depth: on a broker without identity (insecure), anyone can overwrite a
    // retained desired document; the operator notices and publishes its own again.
    let s = setup_with_broker("overwrite", |b: &mut BrokerSetup, _: &str| {
        b.identity = Identity::AnonymousInsecure;
    })
    .await;
    let operator = Operator::start(s.env, &s.scope, &[]).await.expect("operator");
    create_device(&s.devices, "sensor-1", json!({"desired": {"mode": "eco"}})).await;
    let id = s.scope.device_id("sensor-1");
    let _sim = Simulator::start(s.env, &s.scope, std::slice::from_ref(&id), &[]).expect("sim");
    wait_for(&s.devices, "sensor-1", "in sync", |d| reported(d, "mode") == Some(json!("eco")))
        .await;

    let vandal = TestClient::connect(&s.scope.broker.url(), "vandal", Security::default())
        .await
        .expect("anonymous login on an open broker");
    let forged = json!({"v": 1, "epoch": "forged", "version": 999, "issuedAt": "2030-01-01T00:00:00Z", "desired": {"mode": "vandalised"}});
    let topic = format!("{}/{id}/twin/desired", s.scope.topic_root);
    vandal.publish_json(&topic, &forged, true).await.expect("published");
    let overwrites = operator
        .wait_metric("kubetwin_desired_overwrites_total", Duration::from_secs(60), |v| v >= 1.0)
        .await
        .expect("the overwrite is noticed and counted");
    assert_eq!(overwrites, 1.0);
    // The device ends on the operator's document again (it may briefly apply the forged one).
    let device = wait_for(&s.devices, "sensor-1", "back to the operator's document", |d| {
        reported(d, "mode") == Some(json!("eco"))
            && d.status
                .as_ref()
                .and_then(|st| st.applied.as_ref())
                .is_some_and(|a| a.epoch != "forged")
    })
    .await;
    assert_eq!(device.status.and_then(|st| st.applied).map(|a| a.version), Some(1));
    let log = operator.log_text().expect("log");
    assert!(log.contains(
        "the retained desired document was overwritten by someone else; publishing it again"
    ));
}
