//! Runs the kubetwin benchmark suite (B1–B9) on a fresh local environment and writes
//! `docs/benchmarks.md` and `docs/benchmarks.json` (with `--quick`: tiny sizes, written to
//! `target/bench-quick/`).
//!
//!     KUBETWIN_BIN_PROFILE=release target/release/kubetwin-bench
//!     target/debug/kubetwin-bench --quick --only B1,B5
//!
//! Exits non-zero only when a scenario fails a correctness check (or cannot run), never
//! because of a time.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use kubetwin_bench::{self as bench, Options, ScenarioId, progress};
use kubetwin_e2e::tools::repo_root;

/// Command line of `kubetwin-bench`.
#[derive(Parser, Debug)]
#[command(version, about = "Runs the kubetwin benchmarks B1–B9 and writes the report")]
struct Args {
    /// Tiny sizes: a smoke test of correctness, written to target/bench-quick/.
    #[arg(long)]
    quick: bool,
    /// Comma-separated scenarios to run (default: all), e.g. `B1,B5`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Folder for benchmarks.md and benchmarks.json (default: docs/, with --quick
    /// target/bench-quick/, both in the repository).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Runs nothing: takes the scenarios of this report (the `benchmarks.json` of a separate
    /// run, e.g. `--only B9 --out-dir target/bench-b9`) into the report in the output folder,
    /// replacing those with the same id; each is marked with the run it comes from.
    #[arg(long, conflicts_with_all = ["only", "quick", "b1_devices", "b3_devices"])]
    merge: Option<PathBuf>,
    /// B1's sizes instead of the default ones, e.g. `1000` (to look at one size).
    #[arg(long, value_delimiter = ',')]
    b1_devices: Option<Vec<usize>>,
    /// B3's Device counts instead of the default sizes, e.g. `10000` (to look at one size).
    #[arg(long, value_delimiter = ',')]
    b3_devices: Option<Vec<usize>>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(separate) = &args.merge {
        let out_dir = args.out_dir.clone().unwrap_or_else(|| repo_root().join("docs"));
        return match merge(separate, &out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kubetwin-bench: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut only = Vec::new();
    for name in &args.only {
        match ScenarioId::parse(name) {
            Some(id) => only.push(id),
            None => {
                eprintln!("kubetwin-bench: unknown scenario {name:?} (use B1 … B9)");
                return ExitCode::from(2);
            }
        }
    }
    if only.is_empty() {
        only = ScenarioId::RUN_ORDER.to_vec();
    }
    let out_dir = args.out_dir.unwrap_or_else(|| {
        repo_root().join(if args.quick { "target/bench-quick" } else { "docs" })
    });
    match bench::raise_open_files_limit() {
        Ok(limit) => progress(format!("open files limit: {limit}")),
        Err(error) => progress(format!("cannot raise the open files limit: {error}")),
    }
    let options = Options {
        quick: args.quick,
        only,
        command: bench::command_line(),
        b1_devices: args.b1_devices,
        b3_devices: args.b3_devices,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubetwin-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(bench::run(&options)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("kubetwin-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match report.write(&out_dir) {
        Ok((markdown, json)) => {
            progress(format!("wrote {} and {}", markdown.display(), json.display()))
        }
        Err(error) => {
            eprintln!("kubetwin-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let failed: Vec<&str> =
        report.scenarios.iter().filter(|s| s.error.is_some()).map(|s| s.id.as_str()).collect();
    if failed.is_empty() {
        progress("all scenarios passed their correctness checks");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "kubetwin-bench: correctness failure in {} (see above and {})",
            failed.join(", "),
            out_dir.join("benchmarks.md").display()
        );
        ExitCode::FAILURE
    }
}

/// Takes the scenarios of the report at `separate` into the report in `out_dir`.
fn merge(separate: &std::path::Path, out_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut report = bench::report::Report::read(&out_dir.join("benchmarks.json"))?;
    let other = bench::report::Report::read(separate)?;
    // A scenario measured differently would be read as if the page's run had measured it.
    anyhow::ensure!(
        other.quick == report.quick
            && other.binary_profile == report.binary_profile
            && other.machine.describe() == report.machine.describe(),
        "{} and the report in {} differ in --quick, binary profile or machine",
        separate.display(),
        out_dir.display()
    );
    let ids: Vec<String> = other.scenarios.iter().map(|s| s.id.clone()).collect();
    report.merge(other);
    let (markdown, json) = report.write(out_dir)?;
    progress(format!(
        "merged {} into {} and {}",
        ids.join(", "),
        markdown.display(),
        json.display()
    ));
    Ok(())
}
