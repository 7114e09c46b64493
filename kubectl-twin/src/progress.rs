//! Following a rollout (a DeviceJob, a DeviceConfiguration's firmware rollout) from a
//! terminal: one snapshot type that both kinds fill, rendered once, followed with live bars,
//! or followed as plain lines when stdout is not a terminal.

use std::{future::Future, time::Duration};

use indicatif::{MultiProgress, ProgressBar};
use kubetwin_api::job::FailedDevice;

use crate::{
    Outcome,
    output::{JOB_BAR, TEXT_LINE, bar, style, table},
};

/// How often a followed rollout is read again.
pub const POLL: Duration = Duration::from_millis(500);

/// Where a rollout stands, as the plugin shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The header line (kind, name, phase, wave, rate).
    pub header: String,
    /// Its phase, for plain lines.
    pub phase: String,
    /// Devices finished.
    pub done: u64,
    /// Devices in the rollout.
    pub total: u64,
    /// Per wave: (number, finished, size).
    pub waves: Vec<(i32, u64, u64)>,
    /// The counts line.
    pub counts: String,
    /// What the operator says about it.
    pub message: Option<String>,
    /// Failed devices, with why.
    pub failed: Vec<FailedDevice>,
    /// How it ended (`None`: not over).
    pub outcome: Option<Outcome>,
}

/// A non-negative count.
pub fn count(value: i32) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn failures_table(failed: &[FailedDevice]) -> String {
    let rows: Vec<Vec<String>> = failed
        .iter()
        .map(|f| vec![f.device.clone(), f.phase.clone(), f.reason.clone(), f.attempts.to_string()])
        .collect();
    table(&["device", "phase", "reason", "attempts"], &rows)
}

/// The whole snapshot as text: header, overall and per-wave bars, counts, message, failed
/// devices.
pub fn render(s: &Snapshot) -> String {
    let mut out = s.header.clone();
    out.push('\n');
    out.push_str(&format!("overall   {}\n", bar(s.done, s.total, 30)));
    for (wave, finished, size) in &s.waves {
        out.push_str(&format!("wave {wave:<4} {}\n", bar(*finished, *size, 30)));
    }
    out.push_str(&s.counts);
    out.push('\n');
    if let Some(message) = s.message.as_deref() {
        out.push_str(message);
        out.push('\n');
    }
    if !s.failed.is_empty() {
        out.push('\n');
        out.push_str(&failures_table(&s.failed));
    }
    out
}

fn print_end(s: &Snapshot) {
    if let Some(message) = s.message.as_deref() {
        println!("{message}");
    }
    if !s.failed.is_empty() {
        print!("{}", failures_table(&s.failed));
    }
}

/// Follows a rollout until it ends: live bars on a terminal (`interactive`), one line per
/// change otherwise. `read` gives the current snapshot.
pub async fn follow<F, Fut>(mut read: F, interactive: bool) -> anyhow::Result<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Snapshot>>,
{
    if !interactive {
        let mut last = String::new();
        loop {
            let s = read().await?;
            let line = format!("{} {}/{} finished; {}", s.phase, s.done, s.total, s.counts);
            if line != last {
                println!("{line}");
                last = line;
            }
            if let Some(outcome) = s.outcome {
                print_end(&s);
                return Ok(outcome);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let bars = MultiProgress::new();
    let bar_style = style(JOB_BAR);
    let text = style(TEXT_LINE);
    let head = bars.add(ProgressBar::new(1).with_style(text.clone()));
    let overall =
        bars.add(ProgressBar::new(0).with_style(bar_style.clone()).with_prefix("overall"));
    let counts = bars.add(ProgressBar::new(1).with_style(text));
    let mut waves: Vec<ProgressBar> = Vec::new();
    loop {
        let s = read().await?;
        head.set_message(s.header.clone());
        overall.set_length(s.total);
        overall.set_position(s.done);
        for (wave, finished, size) in &s.waves {
            let index = usize::try_from(wave.max(&1) - 1).unwrap_or(0);
            while waves.len() <= index {
                let prefix = format!("wave {}", waves.len() + 1);
                let bar = ProgressBar::new(0).with_style(bar_style.clone()).with_prefix(prefix);
                waves.push(bars.insert_before(&counts, bar));
            }
            if let Some(bar) = waves.get(index) {
                bar.set_length(*size);
                bar.set_position(*finished);
            }
        }
        counts.set_message(s.counts.clone());
        if let Some(outcome) = s.outcome {
            for bar in std::iter::once(&overall).chain(&waves) {
                bar.finish();
            }
            head.finish();
            counts.finish();
            print_end(&s);
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}
