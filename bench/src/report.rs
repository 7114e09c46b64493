//! Results: rows with a floor, a ratio and a goal; the generated Markdown page and raw JSON.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// How a value is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// A count (writes, messages, objects).
    Count,
    /// Kibibytes.
    KiB,
    /// Mebibytes.
    MiB,
    /// A number with two decimals (an average per device).
    Decimal,
}

impl Unit {
    /// `value` with its unit, for people.
    pub fn format(self, value: f64) -> String {
        if value.is_nan() {
            return "n/a".into();
        }
        match self {
            Unit::Seconds if value.abs() < 10.0 => format!("{value:.2} s"),
            Unit::Seconds => format!("{value:.1} s"),
            Unit::Milliseconds => format!("{value:.1} ms"),
            Unit::Count => thousands(value),
            Unit::KiB => format!("{value:.2} KiB"),
            Unit::MiB => format!("{value:.1} MiB"),
            Unit::Decimal => format!("{value:.2}"),
        }
    }
}

/// What a goal bounds: the measured value or the ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalOn {
    /// The measured value.
    Value,
    /// The ratio to the floor (or the reference).
    Ratio,
}

/// Direction of a goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// At most the target.
    AtMost,
    /// At least the target.
    AtLeast,
}

/// A goal from the benchmark issue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// What it bounds.
    pub on: GoalOn,
    /// Which way.
    pub bound: Bound,
    /// The target.
    pub target: f64,
    /// How it reads, for example `≤ 1.25× floor`.
    pub text: String,
}

impl Goal {
    /// Value at most `target`.
    pub fn value_at_most(target: f64, unit: Unit) -> Self {
        Self {
            on: GoalOn::Value,
            bound: Bound::AtMost,
            target,
            text: format!("≤ {}", unit.format(target)),
        }
    }

    /// Ratio to the floor at most `target`.
    pub fn ratio_at_most(target: f64) -> Self {
        Self {
            on: GoalOn::Ratio,
            bound: Bound::AtMost,
            target,
            text: format!("≤ {}× floor", trim_float(target)),
        }
    }

    /// Ratio value / reference at least `target`, read as a share of the reference (the
    /// write budget a writer uses).
    pub fn share_at_least(target: f64) -> Self {
        Self {
            on: GoalOn::Ratio,
            bound: Bound::AtLeast,
            target,
            text: format!("≥ {}% of the budget", trim_float(target * 100.0)),
        }
    }

    /// Ratio reference / value at least `target` ("`target`× fewer").
    pub fn fewer_at_least(target: f64) -> Self {
        Self {
            on: GoalOn::Ratio,
            bound: Bound::AtLeast,
            target,
            text: format!("≥ {}× fewer", trim_float(target)),
        }
    }

    /// Whether `value` / `ratio` meet the goal (`None` when the ratio is missing).
    pub fn met(&self, value: f64, ratio: Option<f64>) -> Option<bool> {
        let x = match self.on {
            GoalOn::Value => value,
            GoalOn::Ratio => ratio?,
        };
        Some(match self.bound {
            Bound::AtMost => x <= self.target,
            Bound::AtLeast => x >= self.target,
        })
    }
}

/// Whether a goal is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Met.
    #[serde(rename = "PASS")]
    Pass,
    /// Not met.
    #[serde(rename = "MISS")]
    Miss,
}

impl Verdict {
    /// `PASS` or `MISS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Miss => "MISS",
        }
    }
}

/// One line of a results table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// The floor measured in the same run (or the reference to compare with).
    pub floor: Option<f64>,
    /// value / floor, or reference / value for "× fewer" rows.
    pub ratio: Option<f64>,
    /// The goal, if the issue sets one.
    pub goal: Option<Goal>,
    /// PASS or MISS against the goal.
    pub result: Option<Verdict>,
    /// A remark shown after the metric.
    pub note: Option<String>,
}

impl Row {
    /// A measured value without floor or goal.
    pub fn new(metric: impl Into<String>, value: f64, unit: Unit) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit,
            floor: None,
            ratio: None,
            goal: None,
            result: None,
            note: None,
        }
    }

    /// A time measured, in seconds.
    pub fn seconds(metric: impl Into<String>, time: std::time::Duration) -> Self {
        Self::new(metric, time.as_secs_f64(), Unit::Seconds)
    }

    /// Sets the floor; the ratio is value / floor.
    pub fn floor(mut self, floor: f64) -> Self {
        self.floor = Some(floor);
        self.ratio = (floor > 0.0).then(|| self.value / floor);
        self.judge()
    }

    /// Sets a reference the value should be far below; the ratio is reference / value.
    pub fn reference(mut self, reference: f64) -> Self {
        self.floor = Some(reference);
        self.ratio = Some(if self.value > 0.0 { reference / self.value } else { f64::INFINITY });
        self.judge()
    }

    /// Sets the goal and judges the row.
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self.judge()
    }

    /// Adds a remark.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn judge(mut self) -> Self {
        self.result = self
            .goal
            .as_ref()
            .and_then(|g| g.met(self.value, self.ratio))
            .map(|ok| if ok { Verdict::Pass } else { Verdict::Miss });
        self
    }
}

/// The results of one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// `B1` … `B5`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// What is measured, in a paragraph.
    pub what: String,
    /// Settings of the run (sizes, flags), as name → value.
    pub setup: Vec<(String, String)>,
    /// The results table.
    pub rows: Vec<Row>,
    /// Raw numbers.
    pub raw: serde_json::Value,
    /// Set when the scenario failed a correctness check or could not run.
    pub error: Option<String>,
    /// Set when the scenario comes from another run than the report's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_by: Option<MeasuredBy>,
}

impl ScenarioReport {
    /// A scenario that failed with `error`.
    pub fn failed(id: &str, title: &str, what: &str, error: &anyhow::Error) -> Self {
        Self {
            id: id.to_string(),
            title: title.to_string(),
            what: what.to_string(),
            setup: Vec::new(),
            rows: Vec::new(),
            raw: serde_json::Value::Null,
            error: Some(format!("{error:#}")),
            measured_by: None,
        }
    }

    /// The results table in Markdown.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| Metric | Measured | Floor / reference | Ratio | Goal | Result |\n|---|---:|---:|---:|---|---|\n",
        );
        for row in &self.rows {
            let metric = match &row.note {
                Some(note) => format!("{} ({note})", row.metric),
                None => row.metric.clone(),
            };
            let _ = writeln!(
                out,
                "| {metric} | {} | {} | {} | {} | {} |",
                row.unit.format(row.value),
                row.floor.map_or("—".into(), |f| row.unit.format(f)),
                row.ratio.map_or("—".into(), format_ratio),
                row.goal.as_ref().map_or("—", |g| g.text.as_str()),
                row.result.map_or("—", Verdict::as_str),
            );
        }
        out
    }
}

/// The run a scenario merged into a report came from (`kubetwin-bench --merge`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeasuredBy {
    /// The command of that run.
    pub command: String,
    /// Its start, UTC.
    pub date: String,
    /// The operator's version line in that run.
    pub kubetwin: String,
}

/// The machine the run happened on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available to the process.
    pub cores: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu: Option<String>,
    /// MemTotal from /proc/meminfo, in KiB.
    pub memory_kib: Option<u64>,
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        });
        let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        });
        Self { cores: std::thread::available_parallelism().map_or(1, usize::from), cpu, memory_kib }
    }

    /// Cores, CPU model and memory, for people.
    pub fn describe(&self) -> String {
        let memory = self.memory_kib.map_or("unknown memory".into(), |kib| {
            format!("{:.1} GiB memory", kib as f64 / 1024.0 / 1024.0)
        });
        match &self.cpu {
            Some(cpu) => format!("{} cores ({cpu}), {memory}", self.cores),
            None => format!("{} cores, {memory}", self.cores),
        }
    }
}

/// Versions of what ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versions {
    /// `kubetwin-operator --version`.
    pub kubetwin: String,
    /// The pinned Kubernetes version of the control plane.
    pub kubernetes: String,
    /// First line of `mosquitto -h`.
    pub mosquitto: String,
    /// `rustc --version`.
    pub rustc: String,
}

impl Versions {
    /// Asks each program for its version ("unknown" when it cannot tell).
    pub fn detect() -> Self {
        let kubetwin = kubetwin_e2e::fleet::workspace_binary("kubetwin-operator")
            .ok()
            .and_then(|binary| first_line(Command::new(binary).arg("--version")))
            .unwrap_or_else(|| format!("kubetwin {}", env!("CARGO_PKG_VERSION")));
        let mosquitto = kubetwin_e2e::tools::mosquitto()
            .ok()
            .and_then(|binary| first_line(Command::new(binary).arg("-h")))
            .unwrap_or_else(|| "unknown".into());
        Self {
            kubetwin,
            kubernetes: kubetwin_e2e::tools::pinned_kubernetes_version()
                .unwrap_or_else(|_| "unknown".into()),
            mosquitto,
            rustc: first_line(Command::new("rustc").arg("--version"))
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// First non-empty line a command prints (stdout, else stderr), whatever its exit code.
fn first_line(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    [output.stdout, output.stderr].iter().find_map(|bytes| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    })
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The exact command that produced it.
    pub command: String,
    /// Start of the run, UTC, RFC 3339.
    pub date: String,
    /// Whether the tiny `--quick` sizes were used.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// Versions.
    pub versions: Versions,
    /// Cargo profile of the operator and simulator binaries.
    pub binary_profile: String,
    /// Cargo profile of the benchmark program itself.
    pub bench_profile: String,
    /// Per scenario, in id order.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// Whether a scenario failed.
    pub fn failed(&self) -> bool {
        self.scenarios.iter().any(|s| s.error.is_some())
    }

    /// The generated Markdown page.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# kubetwin benchmarks\n");
        let _ = writeln!(
            out,
            "<!-- Generated by kubetwin-bench; do not edit. -->\n\n\
             > **Generated file**, written by `{}` on {} (UTC); do not edit by hand. Raw numbers \
             are in [`benchmarks.json`](benchmarks.json).{}\n",
            self.command,
            self.date,
            if self.quick {
                " **Quick mode: tiny sizes, a smoke test, not a measurement.**"
            } else {
                ""
            }
        );
        out.push_str(
            "Each scenario runs on a real control plane (etcd, kube-apiserver, \
             kube-controller-manager), mosquitto, the operator and the device simulator, all on \
             this one machine. Times are compared with a **floor measured in the same run** \
             (what a minimal client needs for the same API and MQTT work), so the ratios hold up \
             on noisy machines. Goals come from the scale issue; MISS marks a goal not met. The \
             program fails only on correctness problems (a reboot that does not succeed, a lost \
             final value, a crashed operator), never on time.\n\n",
        );
        out.push_str("## Environment\n\n| | |\n|---|---|\n");
        let profile = format!(
            "operator and simulator: `{}`; benchmark program: `{}`",
            self.binary_profile, self.bench_profile
        );
        for (key, value) in [
            ("Date (UTC)", self.date.clone()),
            ("Command", format!("`{}`", self.command)),
            ("Machine", self.machine.describe()),
            ("kubetwin", self.versions.kubetwin.clone()),
            ("Kubernetes (pinned)", self.versions.kubernetes.clone()),
            ("mosquitto", self.versions.mosquitto.clone()),
            ("rustc", self.versions.rustc.clone()),
            ("Binary profile", profile),
        ] {
            let _ = writeln!(out, "| {key} | {value} |");
        }
        out.push_str("\n## Summary\n\n| Scenario | Metric | Measured | Ratio | Goal | Result |\n|---|---|---:|---:|---|---|\n");
        for scenario in &self.scenarios {
            if let Some(error) = &scenario.error {
                let _ = writeln!(
                    out,
                    "| {} {} | — | — | — | — | **FAILED**: {} |",
                    scenario.id,
                    scenario.title,
                    one_line(error)
                );
            }
            for row in scenario.rows.iter().filter(|r| r.goal.is_some()) {
                let _ = writeln!(
                    out,
                    "| {} {} | {} | {} | {} | {} | {} |",
                    scenario.id,
                    scenario.title,
                    row.metric,
                    row.unit.format(row.value),
                    row.ratio.map_or("—".into(), format_ratio),
                    row.goal.as_ref().map_or("—", |g| g.text.as_str()),
                    row.result.map_or("—", Verdict::as_str),
                );
            }
        }
        for scenario in &self.scenarios {
            let _ = writeln!(out, "\n## {} — {}\n", scenario.id, scenario.title);
            if let Some(run) = &scenario.measured_by {
                let _ = writeln!(
                    out,
                    "*Measured in a separate run: `{}` on {} ({}); the rest of this page comes \
                     from the run described above.*\n",
                    run.command, run.date, run.kubetwin
                );
            }
            let _ = writeln!(out, "**What is measured.** {}\n", scenario.what);
            if !scenario.setup.is_empty() {
                out.push_str("**Setup.**\n\n");
                for (key, value) in &scenario.setup {
                    let _ = writeln!(out, "- {key}: {value}");
                }
                out.push('\n');
            }
            if let Some(error) = &scenario.error {
                let _ = writeln!(out, "**FAILED:**\n\n```text\n{error}\n```\n");
            }
            if !scenario.rows.is_empty() {
                out.push_str(&scenario.table());
            }
        }
        out
    }

    /// Reads a report from its `benchmarks.json`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Takes the scenarios of `other` (a separate run) into this report, replacing those with
    /// the same id; each keeps a note of the run it comes from.
    pub fn merge(&mut self, other: Report) {
        let from = MeasuredBy {
            command: other.command.clone(),
            date: other.date.clone(),
            kubetwin: other.versions.kubetwin.clone(),
        };
        for mut scenario in other.scenarios {
            scenario.measured_by.get_or_insert_with(|| from.clone());
            self.scenarios.retain(|s| s.id != scenario.id);
            self.scenarios.push(scenario);
        }
        self.scenarios.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Writes `benchmarks.md` and `benchmarks.json` into `dir` and returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let markdown = dir.join("benchmarks.md");
        let json = dir.join("benchmarks.json");
        std::fs::write(&markdown, self.markdown())
            .with_context(|| format!("writing {}", markdown.display()))?;
        let text = serde_json::to_string_pretty(self).context("encoding the JSON report")?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        Ok((markdown, json))
    }
}

/// `1234567` → `1,234,567` (rounded to an integer).
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Sizes for people: `1,000 and 10,000`.
pub fn sizes(values: &[usize]) -> String {
    let parts: Vec<String> = values.iter().map(|v| thousands(*v as f64)).collect();
    match parts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A ratio for people: `1.12×`, `185×`.
pub fn format_ratio(ratio: f64) -> String {
    if !ratio.is_finite() {
        "∞".into()
    } else if ratio < 10.0 {
        format!("{ratio:.2}×")
    } else {
        format!("{}×", thousands(ratio))
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_string)
}

fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    first.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compute_ratios_and_verdicts() {
        let row = Row::new("wall", 12.0, Unit::Seconds).floor(10.0).goal(Goal::ratio_at_most(1.25));
        assert_eq!(row.ratio, Some(1.2));
        assert_eq!(row.result, Some(Verdict::Pass));
        let row = Row::new("writes", 20_000.0, Unit::Count)
            .reference(600_000.0)
            .goal(Goal::fewer_at_least(50.0));
        assert_eq!(row.ratio, Some(30.0));
        assert_eq!(row.result, Some(Verdict::Miss));
        let row = Row::new("writes", 0.0, Unit::Count).goal(Goal::value_at_most(0.0, Unit::Count));
        assert_eq!(row.result, Some(Verdict::Pass));
        assert_eq!(Row::new("info", 1.0, Unit::Count).result, None);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(600_000.0), "600,000");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(format_ratio(1.234), "1.23×");
        assert_eq!(sizes(&[1000, 10_000]), "1,000 and 10,000");
        assert_eq!(sizes(&[20]), "20");
        assert_eq!(Unit::Seconds.format(f64::NAN), "n/a");
        assert_eq!(format_ratio(185.2), "185×");
        assert_eq!(Unit::Seconds.format(1.234), "1.23 s");
        assert_eq!(Unit::KiB.format(1.5), "1.50 KiB");
        assert_eq!(Goal::ratio_at_most(1.25).text, "≤ 1.25× floor");
        assert_eq!(Goal::fewer_at_least(50.0).text, "≥ 50× fewer");
        assert_eq!(Goal::value_at_most(30.0, Unit::Seconds).text, "≤ 30.0 s");
    }

    fn report(command: &str, ids: &[&str]) -> Report {
        Report {
            command: command.into(),
            date: "2026-12-01T00:00:00Z".into(),
            quick: false,
            machine: Machine { cores: 2, cpu: None, memory_kib: None },
            versions: Versions {
                kubetwin: format!("kubetwin ({command})"),
                kubernetes: "v1".into(),
                mosquitto: "m".into(),
                rustc: "r".into(),
            },
            binary_profile: "release".into(),
            bench_profile: "release".into(),
            scenarios: ids
                .iter()
                .map(|id| ScenarioReport {
                    id: (*id).into(),
                    title: command.into(),
                    what: String::new(),
                    setup: vec![],
                    rows: vec![
                        Row::new("x", 1.0, Unit::Count).goal(Goal::value_at_most(2.0, Unit::Count)),
                    ],
                    raw: serde_json::Value::Null,
                    error: None,
                    measured_by: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_merged_scenario_replaces_its_namesake_and_says_which_run_it_comes_from() {
        let mut page = report("full", &["B1", "B9"]);
        let text = serde_json::to_string(&report("separate", &["B9"])).expect("encodes");
        let separate: Report = serde_json::from_str(&text).expect("the JSON report reads back");
        page.merge(separate);
        let titles: Vec<(&str, &str)> =
            page.scenarios.iter().map(|s| (s.id.as_str(), s.title.as_str())).collect();
        assert_eq!(titles, [("B1", "full"), ("B9", "separate")]);
        assert_eq!(page.scenarios[1].rows[0].result, Some(Verdict::Pass));
        let markdown = page.markdown();
        assert!(markdown.contains("*Measured in a separate run: `separate`"), "{markdown}");
        assert!(page.scenarios[0].measured_by.is_none());
    }
}
