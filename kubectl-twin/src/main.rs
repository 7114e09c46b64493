//! `kubectl twin`: a kubectl plugin for kubetwin. Calls device methods and follows them to the
//! end, follows and steers fleet jobs and configuration rollouts, shows one device's twin side by side, and queries and
//! summarises the fleet.
//!
//! Exit codes: 0 done (the call or job succeeded), 1 the call or job failed (the reason is
//! printed), 2 bad usage, 3 `--timeout` passed before the end.

mod client;
mod config;
mod device;
mod follow;
mod job;
mod output;
mod progress;
mod query;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::output::Format;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-twin",
    bin_name = "kubectl twin",
    version,
    about = "Device twins, direct methods and fleet jobs of kubetwin, from kubectl"
)]
struct Cli {
    #[command(flatten)]
    target: client::Target,
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
enum Command {
    /// Reboots a device (creates a MethodRequest for `reboot`).
    Reboot {
        /// The Device's name.
        device: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Factory-resets a device (creates a MethodRequest for `factoryReset`).
    FactoryReset {
        /// The Device's name.
        device: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Calls any direct method of a device and, with --wait, prints its result payload.
    Call {
        /// The Device's name.
        device: String,
        /// The method's name.
        method: String,
        /// Parameters, a JSON object.
        #[arg(long)]
        params: Option<String>,
        /// The method disrupts the device (disruption budgets apply).
        #[arg(long)]
        disruptive: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Shows one device: connection, firmware, sync, desired next to reported, last requests.
    Get {
        /// The Device's name.
        device: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Devices for which a CEL expression is true (variables: name, labels, spec, status).
    Query {
        /// A CEL expression, for example `status.connection.state == 'Disconnected'`.
        expression: String,
        /// Count the matching devices per value of this CEL expression instead of listing them,
        /// for example `status.reported.firmwareVersion`.
        #[arg(long)]
        group_by: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Counts devices by connection, firmware version and sync, and open requests by phase.
    Summary {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Follows and steers DeviceJobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Follows DeviceConfigurations: counts, custom metrics and the firmware rollout.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Prints a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `kubectl twin job …`.
#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Phase, progress bars (overall and per wave), counts and failed devices.
    Status {
        /// The DeviceJob's name.
        name: String,
        /// Keep showing changes until the job ends.
        #[arg(short, long)]
        watch: bool,
        /// Output format (json and yaml print the status once).
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Lets a paused job go past the wave it paused after (sets spec.continueAfterWave).
    Continue {
        /// The DeviceJob's name.
        name: String,
    },
    /// Stops starting devices (sets spec.suspend); calls already sent finish.
    Suspend {
        /// The DeviceJob's name.
        name: String,
    },
    /// Starts a suspended job (clears spec.suspend).
    Resume {
        /// The DeviceJob's name.
        name: String,
    },
    /// Creates the job in a manifest suspended and prints the plan the operator computes:
    /// nothing is sent until `kubectl twin job resume NAME`.
    Preview {
        /// The DeviceJob manifest (YAML or JSON).
        #[arg(short = 'f', long)]
        filename: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

/// `kubectl twin config …`.
#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Targeted and applied counts, custom metrics, and the firmware rollout: phase, bars
    /// (overall and per wave), counts and failed devices.
    Status {
        /// The DeviceConfiguration's name.
        name: String,
        /// Keep showing changes until the rollout is over (or stopped by its failure
        /// threshold: exit 1).
        #[arg(short, long)]
        watch: bool,
        /// Output format (json and yaml print the object once).
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Lets a rollout paused after a wave go on (sets spec.continueAfterWave).
    Continue {
        /// The DeviceConfiguration's name.
        name: String,
    },
}

/// Waiting for a request's end.
#[derive(Args, Debug, Clone)]
struct WaitArgs {
    /// Follow the request to its end; exit 1 if it does not succeed.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (for example 90s, 5m); exit 3.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    timeout: Duration,
    /// Output format of the final request (with --wait).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `90s`, `5m`, `1h` or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(*shell, &mut command, "kubectl-twin", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(outcome) => outcome.code(),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the call or job succeeded.
    Done,
    /// The call or job did not succeed (the reason was printed).
    Failed,
    /// `--timeout` passed first.
    TimedOut,
}

impl Outcome {
    fn code(self) -> ExitCode {
        match self {
            Self::Done => ExitCode::SUCCESS,
            Self::Failed => ExitCode::from(1),
            Self::TimedOut => ExitCode::from(3),
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let target = cli.target.connect().await?;
    match cli.command {
        Command::Reboot { device, wait } => {
            follow::call(&target, &device, "reboot", None, true, &wait).await
        }
        Command::FactoryReset { device, wait } => {
            follow::call(&target, &device, "factoryReset", None, true, &wait).await
        }
        Command::Call { device, method, params, disruptive, wait } => {
            let params = params.as_deref().map(follow::parse_params).transpose()?;
            follow::call(&target, &device, &method, params, disruptive, &wait).await
        }
        Command::Get { device, output } => device::get(&target, &device, output).await,
        Command::Query { expression, group_by, output } => {
            query::query(&target, &expression, group_by.as_deref(), output).await
        }
        Command::Summary { output } => query::summary(&target, output).await,
        Command::Job { command } => match command {
            JobCommand::Status { name, watch, output } => {
                job::status(&target, &name, watch, output).await
            }
            JobCommand::Continue { name } => job::continue_job(&target, &name).await,
            JobCommand::Suspend { name } => job::set_suspend(&target, &name, true).await,
            JobCommand::Resume { name } => job::set_suspend(&target, &name, false).await,
            JobCommand::Preview { filename, output } => {
                job::preview(&target, &filename, output).await
            }
        },
        Command::Config { command } => match command {
            ConfigCommand::Status { name, watch, output } => {
                config::status(&target, &name, watch, output).await
            }
            ConfigCommand::Continue { name } => config::continue_rollout(&target, &name).await,
        },
        Command::Completions { .. } => Ok(Outcome::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
