//! `kubectl twin config …`: a DeviceConfiguration's counts, custom metrics and firmware
//! rollout (once, or followed with bars), and continuing a rollout paused after a wave (a
//! spec change, as a Git commit would make it).

use anyhow::Context as _;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use kubetwin_api::{DeviceConfiguration, RolloutPhase, condition::ConfigurationReason};
use serde_json::json;

use crate::{
    Outcome,
    client::Connected,
    output::{Format, print_data, table},
    progress::{self, Snapshot, count},
};

fn phase_name(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Progressing => "Progressing",
        RolloutPhase::Paused => "Paused",
        RolloutPhase::Succeeded => "Succeeded",
        RolloutPhase::Failed => "Failed",
        RolloutPhase::RolledBack => "RolledBack",
    }
}

/// How a rollout stands for a script: over (succeeded, failed, rolled back), stopped by its
/// failure threshold (it waits for a person: a failure), or not over (`None`). A
/// configuration without firmware has nothing to follow: done.
fn outcome_of(configuration: &DeviceConfiguration) -> Option<Outcome> {
    let status = configuration.status.as_ref()?;
    let Some(rollout) = status.rollout.as_ref() else {
        return configuration.spec.firmware.is_none().then_some(Outcome::Done);
    };
    match rollout.phase {
        RolloutPhase::Succeeded => Some(Outcome::Done),
        RolloutPhase::Failed | RolloutPhase::RolledBack => Some(Outcome::Failed),
        RolloutPhase::Paused
            if rollout.reason.as_deref()
                == Some(ConfigurationReason::FailureThresholdReached.as_str()) =>
        {
            Some(Outcome::Failed)
        }
        RolloutPhase::Paused | RolloutPhase::Progressing => None,
    }
}

/// The configuration as the plugin shows it: the rollout's bars, and the counts and custom
/// metrics in the counts line.
pub fn snapshot(configuration: &DeviceConfiguration) -> Snapshot {
    let status = configuration.status.clone().unwrap_or_default();
    let name = configuration.metadata.name.as_deref().unwrap_or_default();
    let metrics: Vec<String> = status.metrics.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut counts = format!("targeted {}   applied {}", status.targeted, status.applied);
    if !metrics.is_empty() {
        counts.push_str(&format!("   metrics: {}", metrics.join(", ")));
    }
    let Some(rollout) = status.rollout.as_ref() else {
        return Snapshot {
            header: format!(
                "DeviceConfiguration {name}   priority {}   no firmware",
                configuration.spec.priority
            ),
            phase: "Applied".into(),
            done: count(status.applied),
            total: count(status.targeted),
            counts,
            outcome: outcome_of(configuration),
            ..Snapshot::default()
        };
    };
    let phase = phase_name(rollout.phase);
    let waves = rollout.waves.len();
    let wave = rollout.current_wave.map_or(String::new(), |w| format!("   wave {w}/{waves}"));
    counts.push_str(&format!(
        "\nupdating {}   succeeded {}   failed {}   rolled back {}   members {}",
        rollout.updating, rollout.succeeded, rollout.failed, rollout.rolled_back, rollout.members
    ));
    Snapshot {
        header: format!(
            "DeviceConfiguration {name}   {phase}   firmware {}{}{wave}",
            rollout.firmware.version,
            rollout
                .previous
                .as_ref()
                .map_or(String::new(), |p| format!(" (previous {})", p.version)),
        ),
        phase: phase.into(),
        done: count(rollout.succeeded + rollout.failed),
        total: count(rollout.members),
        waves: rollout.waves.iter().map(|w| (w.wave, count(w.finished), count(w.size))).collect(),
        counts,
        message: rollout.message.clone(),
        failed: rollout.failed_devices.clone(),
        outcome: outcome_of(configuration),
    }
}

/// Shows a configuration once, or follows its rollout until it is over (`watch`).
pub async fn status(
    target: &Connected,
    name: &str,
    watch: bool,
    output: Format,
) -> anyhow::Result<Outcome> {
    let api: Api<DeviceConfiguration> = target.api();
    let read_one = || async {
        api.get(name).await.with_context(|| format!("reading DeviceConfiguration {name}"))
    };
    let configuration = read_one().await?;
    if output != Format::Table {
        print_data(output, &configuration)?;
        return Ok(outcome_of(&configuration).unwrap_or(Outcome::Done));
    }
    if !watch {
        print!("{}", progress::render(&snapshot(&configuration)));
        let conditions: Vec<Vec<String>> = configuration
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .map(|c| vec![c.type_.clone(), c.status.clone(), c.reason.clone()])
            .collect();
        if !conditions.is_empty() {
            println!();
            print!("{}", table(&["condition", "status", "reason"], &conditions));
        }
        return Ok(Outcome::Done);
    }
    let read = || async { Ok(snapshot(&read_one().await?)) };
    progress::follow(read, target.interactive).await
}

/// Lets a rollout paused after a wave go on (sets spec.continueAfterWave).
pub async fn continue_rollout(target: &Connected, name: &str) -> anyhow::Result<Outcome> {
    let api: Api<DeviceConfiguration> = target.api();
    let configuration =
        api.get(name).await.with_context(|| format!("reading DeviceConfiguration {name}"))?;
    let rollout = configuration.status.as_ref().and_then(|s| s.rollout.as_ref());
    let paused_after = rollout.filter(|r| {
        r.phase == RolloutPhase::Paused
            && r.reason.as_deref() == Some(ConfigurationReason::WavePaused.as_str())
    });
    let Some(wave) = paused_after.and_then(|r| r.current_wave) else {
        eprintln!(
            "DeviceConfiguration {name} is not paused after a wave (rollout {}): nothing to continue",
            rollout.map_or("none", |r| phase_name(r.phase))
        );
        return Ok(Outcome::Failed);
    };
    let next = wave.max(configuration.spec.continue_after_wave);
    let patch = json!({"spec": {"continueAfterWave": next}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("continuing DeviceConfiguration {name}"))?;
    println!("deviceconfiguration.kubetwin.io/{name} continued after wave {wave}");
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use kubetwin_api::{
        DeviceConfigurationSpec, DeviceConfigurationStatus, FirmwareTarget,
        configuration::ConfigurationRolloutStatus,
        job::{FailedDevice, WaveStatus},
    };

    use super::*;

    fn firmware(version: &str) -> FirmwareTarget {
        FirmwareTarget {
            version: version.into(),
            url: "http://fw/image.bin".into(),
            sha256: "a".repeat(64),
            ..FirmwareTarget::default()
        }
    }

    fn configuration(phase: RolloutPhase, reason: ConfigurationReason) -> DeviceConfiguration {
        let mut c = DeviceConfiguration::new(
            "fleet-fw",
            DeviceConfigurationSpec { firmware: Some(firmware("2.0.0")), ..Default::default() },
        );
        c.status = Some(DeviceConfigurationStatus {
            targeted: 20,
            applied: 18,
            metrics: [("onTwo".to_string(), 6)].into(),
            rollout: Some(ConfigurationRolloutStatus {
                phase,
                firmware: firmware("2.0.0"),
                previous: Some(firmware("1.0.0")),
                current_wave: Some(2),
                waves: vec![
                    WaveStatus { wave: 1, size: 2, started: 2, finished: 2, succeeded: 2 },
                    WaveStatus { wave: 2, size: 8, started: 5, finished: 5, succeeded: 4 },
                ],
                members: 20,
                updating: 0,
                succeeded: 6,
                failed: 1,
                rolled_back: 0,
                failed_devices: vec![FailedDevice {
                    device: "gw-05".into(),
                    phase: "RolledBack".into(),
                    reason: "did not boot".into(),
                    attempts: 1,
                }],
                reason: Some(reason.as_str().into()),
                message: Some("1 of 7 finished updates to 2.0.0 failed".into()),
            }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_rollout_renders_its_firmware_waves_counts_and_failures() {
        let c = configuration(RolloutPhase::Paused, ConfigurationReason::FailureThresholdReached);
        let text = progress::render(&snapshot(&c));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "DeviceConfiguration fleet-fw   Paused   firmware 2.0.0 (previous 1.0.0)   wave 2/2"
        );
        assert!(lines[1].starts_with("overall   [") && lines[1].ends_with("7/20  35%"), "{text}");
        assert!(lines[2].ends_with("2/2  100%") && lines[3].ends_with("5/8  62%"), "{text}");
        assert_eq!(lines[4], "targeted 20   applied 18   metrics: onTwo 6");
        assert!(lines[5].starts_with("updating 0   succeeded 6   failed 1"), "{text}");
        assert!(text.contains("gw-05") && text.contains("did not boot"), "{text}");
    }

    #[test]
    fn a_rollout_is_over_for_a_script_when_it_ended_or_stopped_for_failures() {
        use ConfigurationReason::{
            AllUpdated, FailureThresholdReached, RolledBack, Updating, WavePaused,
        };
        let cases = [
            (RolloutPhase::Progressing, Updating, None),
            (RolloutPhase::Paused, WavePaused, None),
            (RolloutPhase::Paused, FailureThresholdReached, Some(Outcome::Failed)),
            (RolloutPhase::RolledBack, RolledBack, Some(Outcome::Failed)),
            (RolloutPhase::Succeeded, AllUpdated, Some(Outcome::Done)),
        ];
        for (phase, reason, outcome) in cases {
            assert_eq!(outcome_of(&configuration(phase, reason)), outcome, "{phase:?} {reason}");
        }
    }
}
