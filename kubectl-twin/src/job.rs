//! `kubectl twin job …`: a DeviceJob's progress (once, or followed with bars), continuing a
//! paused job, suspending and resuming, and previewing a manifest's plan. Every change is a
//! spec change, as `kubectl edit` or a Git commit would make it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use kubetwin_api::{DeviceJob, DeviceJobStatus, JobPhase};
use serde_json::json;

use crate::{
    Outcome,
    client::Connected,
    output::{Format, or_dash, print_data, table},
    progress::{self, POLL, Snapshot, count},
};
/// Longest wait for the operator to fill a preview's plan.
const PLAN_WAIT: Duration = Duration::from_secs(60);

/// Devices finished (succeeded, failed, timed out, rejected, skipped).
fn finished(status: &DeviceJobStatus) -> i32 {
    let c = &status.counts;
    c.succeeded + c.failed + c.timed_out + c.rejected + c.skipped
}

/// Devices finished per minute since the job started.
fn rate(status: &DeviceJobStatus, now: Timestamp) -> Option<f64> {
    let started = status.start_time.as_ref()?.0;
    let end = status.completion_time.as_ref().map_or(now, |t| t.0);
    let minutes = end.duration_since(started).as_secs_f64() / 60.0;
    (minutes > 0.0).then(|| f64::from(finished(status)) / minutes)
}

/// The job as the plugin shows it.
pub fn snapshot(job: &DeviceJob, now: Timestamp) -> Snapshot {
    let status = job.status.clone().unwrap_or_default();
    Snapshot {
        header: header(job, now),
        phase: status.phase.map_or("Pending", JobPhase::as_str).to_string(),
        done: count(finished(&status)),
        total: count(status.counts.targeted),
        waves: status.waves.iter().map(|w| (w.wave, count(w.finished), count(w.size))).collect(),
        counts: counts_line(&status),
        message: status.message.clone(),
        failed: status.failed_devices.clone(),
        outcome: outcome_of(job),
    }
}

/// The header line: name, phase, method, wave, rate.
pub fn header(job: &DeviceJob, now: Timestamp) -> String {
    let status = job.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("Pending", JobPhase::as_str);
    let waves = status.waves.len();
    let wave = status.current_wave.map_or(String::new(), |w| format!("   wave {w}/{waves}"));
    let rate = rate(&status, now).map_or(String::new(), |r| format!("   {r:.0} devices/min"));
    let name = job.metadata.name.as_deref().unwrap_or_default();
    format!("DeviceJob {name}   {phase}   method {}{wave}{rate}", job.spec.method)
}

/// The counts line.
pub fn counts_line(status: &DeviceJobStatus) -> String {
    let c = &status.counts;
    format!(
        "succeeded {}   failed {}   timed out {}   rejected {}   skipped {}   in flight {}   pending {}   retried {}",
        c.succeeded,
        c.failed,
        c.timed_out,
        c.rejected,
        c.skipped,
        c.in_flight,
        c.pending,
        c.retried
    )
}

/// The whole status as text: header, overall and per-wave bars, counts, failed devices.
pub fn render(job: &DeviceJob, now: Timestamp) -> String {
    progress::render(&snapshot(job, now))
}

/// Shows a job's status once, or follows it until it ends (`watch`).
pub async fn status(
    target: &Connected,
    name: &str,
    watch: bool,
    output: Format,
) -> anyhow::Result<Outcome> {
    let api: Api<DeviceJob> = target.api();
    let job = api.get(name).await.with_context(|| format!("reading DeviceJob {name}"))?;
    if output != Format::Table {
        print_data(output, &job)?;
        return Ok(outcome_of(&job).unwrap_or(Outcome::Done));
    }
    if !watch {
        print!("{}", render(&job, Timestamp::now()));
        return Ok(Outcome::Done);
    }
    let read = || async {
        let job = api.get(name).await.with_context(|| format!("reading DeviceJob {name}"))?;
        Ok(snapshot(&job, Timestamp::now()))
    };
    progress::follow(read, target.interactive).await
}

/// How a job that ended went (`None`: not ended).
fn outcome_of(job: &DeviceJob) -> Option<Outcome> {
    match job.status.as_ref()?.phase? {
        JobPhase::Succeeded => Some(Outcome::Done),
        JobPhase::Failed | JobPhase::Aborted => Some(Outcome::Failed),
        _ => None,
    }
}

/// Lets a paused job go past the wave it paused after.
pub async fn continue_job(target: &Connected, name: &str) -> anyhow::Result<Outcome> {
    let api: Api<DeviceJob> = target.api();
    let job = api.get(name).await.with_context(|| format!("reading DeviceJob {name}"))?;
    let status = job.status.clone().unwrap_or_default();
    let (Some(JobPhase::Paused), Some(wave)) = (status.phase, status.current_wave) else {
        eprintln!(
            "DeviceJob {name} is not paused (phase {}): nothing to continue",
            status.phase.map_or("Pending", JobPhase::as_str)
        );
        return Ok(Outcome::Failed);
    };
    let patch = json!({"spec": {"continueAfterWave": wave.max(job.spec.continue_after_wave)}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("continuing DeviceJob {name}"))?;
    println!("devicejob.kubetwin.io/{name} continued after wave {wave}");
    Ok(Outcome::Done)
}

/// Sets or clears spec.suspend.
pub async fn set_suspend(target: &Connected, name: &str, suspend: bool) -> anyhow::Result<Outcome> {
    let api: Api<DeviceJob> = target.api();
    let patch = json!({"spec": {"suspend": suspend}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("updating DeviceJob {name}"))?;
    println!("devicejob.kubetwin.io/{name} {}", if suspend { "suspended" } else { "resumed" });
    Ok(Outcome::Done)
}

/// Creates the manifest's job suspended, waits for the operator's plan and prints it.
pub async fn preview(
    target: &Connected,
    file: &std::path::Path,
    output: Format,
) -> anyhow::Result<Outcome> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut job: DeviceJob = serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is not a DeviceJob manifest", file.display()))?;
    job.spec.suspend = true;
    let namespace = job.metadata.namespace.clone().unwrap_or_else(|| target.namespace.clone());
    let api: Api<DeviceJob> = Api::namespaced(target.client.clone(), &namespace);
    let name = job.metadata.name.clone().context("the manifest has no metadata.name")?;
    api.create(&PostParams::default(), &job).await.with_context(|| {
        format!(
            "creating DeviceJob {name} suspended (if it exists: kubectl twin job status {name})"
        )
    })?;
    let started = Instant::now();
    let created = loop {
        let current = api.get(&name).await.with_context(|| format!("reading DeviceJob {name}"))?;
        if current.status.as_ref().is_some_and(|s| s.plan.is_some()) {
            break current;
        }
        anyhow::ensure!(
            started.elapsed() < PLAN_WAIT,
            "the operator did not fill status.plan of DeviceJob {name} within {PLAN_WAIT:?}: is it running?"
        );
        tokio::time::sleep(POLL).await;
    };
    let plan = created.status.as_ref().and_then(|s| s.plan.clone()).unwrap_or_default();
    if output != Format::Table {
        print_data(output, &plan)?;
    } else {
        let waves: Vec<String> = plan.wave_sizes.iter().map(i32::to_string).collect();
        let rows = vec![
            vec!["targeted".into(), plan.targeted.to_string()],
            vec!["offline now".into(), plan.offline.to_string()],
            vec!["not supporting the method".into(), plan.not_supporting.to_string()],
            vec!["blocked by a budget now".into(), plan.budget_blocked.to_string()],
            vec!["waves".into(), or_dash((!waves.is_empty()).then(|| waves.join(" + ")))],
            vec!["max in flight".into(), plan.max_in_flight.to_string()],
            vec!["sample".into(), plan.sample.join(", ")],
        ];
        print!("{}", table(&["plan", "value"], &rows));
    }
    eprintln!(
        "DeviceJob {name} is suspended; nothing was sent. Run it: kubectl twin job resume {name}"
    );
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{
        DeviceJobSpec,
        job::{FailedDevice, JobCounts, WaveStatus},
    };

    use super::*;

    fn job() -> DeviceJob {
        let spec: DeviceJobSpec =
            serde_json::from_value(json!({"selector": {}, "method": "reboot"})).expect("spec");
        let mut job = DeviceJob::new("site-a", spec);
        let start = Timestamp::from_second(1_700_000_000).expect("time");
        job.status = Some(DeviceJobStatus {
            phase: Some(JobPhase::Running),
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(start)),
            current_wave: Some(2),
            counts: JobCounts {
                targeted: 20,
                succeeded: 9,
                failed: 1,
                in_flight: 3,
                pending: 7,
                ..JobCounts::default()
            },
            waves: vec![
                WaveStatus { wave: 1, size: 2, started: 2, finished: 2, succeeded: 2 },
                WaveStatus { wave: 2, size: 18, started: 11, finished: 8, succeeded: 7 },
            ],
            failed_devices: vec![FailedDevice {
                device: "gw-7".into(),
                phase: "Failed".into(),
                reason: "DeviceFailed".into(),
                attempts: 1,
            }],
            ..DeviceJobStatus::default()
        });
        job
    }

    #[test]
    fn a_job_renders_its_header_bars_counts_and_failures() {
        let now = Timestamp::from_second(1_700_000_120).expect("time");
        let text = render(&job(), now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "DeviceJob site-a   Running   method reboot   wave 2/2   5 devices/min"
        );
        assert!(lines[1].starts_with("overall   [") && lines[1].ends_with("10/20  50%"), "{text}");
        assert!(lines[2].ends_with("2/2  100%") && lines[3].ends_with("8/18  44%"), "{text}");
        assert!(lines[4].starts_with("succeeded 9   failed 1"), "{text}");
        assert!(text.contains("gw-7") && text.contains("DeviceFailed"), "{text}");
    }

    #[test]
    fn only_an_ended_job_has_an_outcome() {
        let mut job = job();
        assert_eq!(outcome_of(&job), None);
        for (phase, outcome) in [
            (JobPhase::Succeeded, Outcome::Done),
            (JobPhase::Failed, Outcome::Failed),
            (JobPhase::Aborted, Outcome::Failed),
        ] {
            if let Some(status) = job.status.as_mut() {
                status.phase = Some(phase);
            }
            assert_eq!(outcome_of(&job), Some(outcome));
        }
    }
}
