//! `flashsale-loadgen`: the load generator. It will drive the purchase path (winner,
//! sold-out and replay), `/healthz` and raw EVALSHA side by side, closed loop for
//! capacity and open loop for latency, and write reports into `reports/`.
//! Not built yet: this binary only names its commands and exits with status 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status of a command that is not built yet.
const NOT_BUILT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "flashsale-loadgen", version, about = "Flash-sale load generator (not built yet)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a load scenario against a local stack and write a report.
    Run {
        /// Scenario name.
        #[arg(long, default_value = "sale")]
        scenario: String,
    },
    /// Compare a report with a baseline.
    Compare {
        /// The baseline report (goose JSON).
        #[arg(long)]
        baseline: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let command = match Cli::parse().command {
        Command::Run { .. } => "run",
        Command::Compare { .. } => "compare",
    };
    eprintln!(
        "flashsale-loadgen {command}: not built yet: see the load generator issue in the project's issue tracker \
         (reports will land in reports/)"
    );
    ExitCode::from(NOT_BUILT)
}
