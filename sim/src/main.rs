//! `flashsale-sim`: the flash-sale simulator. It will expand a seed into a plan (products,
//! buyers, faults), run it against real redis-server, FerretDB and server instances,
//! record the history and check the invariants of `system-design/ARCHITECTURE.md`.
//! Not built yet: this binary only names its commands and exits with status 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status of a command that is not built yet.
const NOT_BUILT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "flashsale-sim", version, about = "Flash-sale simulator (not built yet)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one seed's plan and check the invariants.
    Run {
        /// Seed the plan is expanded from.
        #[arg(long)]
        seed: u64,
    },
    /// Run many seeds, e.g. `--seeds 1..100`.
    Sweep {
        /// Range of seeds, `A..B`.
        #[arg(long)]
        seeds: String,
    },
}

fn main() -> ExitCode {
    let command = match Cli::parse().command {
        Command::Run { .. } => "run",
        Command::Sweep { .. } => "sweep",
    };
    eprintln!("flashsale-sim {command}: not built yet: see the simulator issue in the project's issue tracker");
    ExitCode::from(NOT_BUILT)
}
