//! `reboot`, `factory-reset` and `call`: creates a MethodRequest (with a generated name, so
//! running the same command again calls again) and, with `--wait`, follows it to its end.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use kube::{Api, api::PostParams};
use kubetwin_api::{MethodPhase, MethodRequest};
use serde_json::{Map, Value, json};

use crate::{
    Outcome, WaitArgs,
    client::Connected,
    output::{Format, REQUEST_BAR, print_data, style},
};

/// How often a followed request is read again.
const POLL: Duration = Duration::from_millis(250);

/// Reads `--params`: a JSON object.
pub fn parse_params(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => anyhow::bail!("--params must be a JSON object, not {other}"),
        Err(error) => Err(error).context("--params is not valid JSON"),
    }
}

/// The MethodRequest that calls `method` on `device`, named `<device>-<method>-<random>`.
pub fn request_for(
    device: &str,
    method: &str,
    params: Option<Map<String, Value>>,
    disruptive: bool,
) -> anyhow::Result<MethodRequest> {
    let mut spec = json!({"deviceName": device, "method": method});
    if let Some(params) = params {
        spec["params"] = Value::Object(params);
    }
    if disruptive {
        spec["disruptive"] = Value::Bool(true);
    }
    serde_json::from_value(json!({
        "apiVersion": "kubetwin.io/v1alpha1",
        "kind": "MethodRequest",
        "metadata": {"generateName": format!("{device}-{}-", method.to_lowercase())},
        "spec": spec,
    }))
    .context("building the MethodRequest")
}

/// Creates the request and, with `--wait`, follows it.
pub async fn call(
    target: &Connected,
    device: &str,
    method: &str,
    params: Option<Map<String, Value>>,
    disruptive: bool,
    wait: &WaitArgs,
) -> anyhow::Result<Outcome> {
    let api: Api<MethodRequest> = target.api();
    let request = request_for(device, method, params, disruptive)?;
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .with_context(|| format!("creating a MethodRequest for {method} on {device}"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if !wait.wait {
        println!("methodrequest.kubetwin.io/{name} created");
        return Ok(Outcome::Done);
    }
    eprintln!("methodrequest.kubetwin.io/{name} created");
    let (outcome, last) = follow(target, &api, &name, wait.timeout).await?;
    match wait.output {
        Format::Table => {
            let payload = last.status.as_ref().and_then(|s| s.result.as_ref()?.payload.clone());
            if outcome == Outcome::Done
                && let Some(payload) = payload
            {
                println!("{}", serde_json::to_string_pretty(&payload)?);
            }
        }
        format => print_data(format, &last)?,
    }
    Ok(outcome)
}

/// What a person reads about where a request stands.
pub fn describe(request: &MethodRequest, elapsed: Duration) -> String {
    let status = request.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
    let mut parts = vec![phase];
    if let Some(percent) = status.progress.as_ref().and_then(|p| p.percent) {
        parts.push(format!("{percent}%"));
    }
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        parts.push(message.to_string());
    }
    parts.push(format!("{:.1}s", elapsed.as_secs_f64()));
    parts.join(" · ")
}

/// Reads the request until it is terminal or `timeout` passed; shows progress on stderr.
async fn follow(
    target: &Connected,
    api: &Api<MethodRequest>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<(Outcome, MethodRequest)> {
    let started = Instant::now();
    let bar = target.interactive.then(|| {
        let bar = ProgressBar::new(100);
        bar.set_style(style(REQUEST_BAR));
        bar
    });
    let mut last_line = String::new();
    loop {
        let request = api.get(name).await.with_context(|| format!("reading {name}"))?;
        let status = request.status.clone().unwrap_or_default();
        let line = describe(&request, started.elapsed());
        match &bar {
            Some(bar) => {
                let percent = status.progress.as_ref().and_then(|p| p.percent).unwrap_or(0);
                let done = status.phase == Some(MethodPhase::Succeeded);
                bar.set_position(if done { 100 } else { u64::try_from(percent).unwrap_or(0) });
                bar.set_message(line.clone());
            }
            None => {
                // One line per change, without the clock (which changes every time).
                let without_clock = line.rsplit_once(" · ").map_or(line.as_str(), |(l, _)| l);
                if without_clock != last_line {
                    eprintln!("{name}: {line}");
                    last_line = without_clock.to_string();
                }
            }
        }
        if let Some(phase) = status.phase.filter(|p| p.is_terminal()) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            let reason = status.reason.clone().unwrap_or_default();
            let message = status.message.clone().unwrap_or_default();
            if phase == MethodPhase::Succeeded {
                eprintln!("{name}: Succeeded after {:.1}s", started.elapsed().as_secs_f64());
                return Ok((Outcome::Done, request));
            }
            let code = status.result.as_ref().map(|r| format!(" (code {})", r.code));
            eprintln!("{name}: {phase:?}: {reason}{}: {message}", code.unwrap_or_default());
            return Ok((Outcome::Failed, request));
        }
        if started.elapsed() >= timeout {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            eprintln!("{name}: still {line}; gave up waiting after {timeout:?} (it goes on)");
            return Ok((Outcome::TimedOut, request));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_must_be_a_json_object() {
        assert_eq!(parse_params(r#"{"level": 2}"#).ok(), json!({"level": 2}).as_object().cloned());
        assert!(parse_params("[1]").is_err());
        assert!(parse_params("{level").is_err());
    }

    #[test]
    fn a_request_gets_a_generated_name_from_device_and_method() {
        let request = request_for("gw-1", "factoryReset", None, true).expect("request");
        assert_eq!(request.metadata.generate_name.as_deref(), Some("gw-1-factoryreset-"));
        assert_eq!(request.spec.device_name, "gw-1");
        assert_eq!(request.spec.method, "factoryReset");
        assert!(request.spec.disruptive);
    }
}
