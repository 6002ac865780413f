//! `flashsale-sim`: the flash-sale simulator. It expands a seed into a plan (products,
//! buyers and their behaviours, faults) and prints it with its hash. Running a plan
//! against real redis-server, FerretDB and server instances, recording the history and
//! checking the invariants is being built (the simulator issue): `run` and `sweep`
//! say so and exit with status 2.

mod plan;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use plan::{FaultMix, Plan, PlanOptions, Topology};

/// Exit status of a command that is not built yet.
const NOT_BUILT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "flashsale-sim", version, about = "Flash-sale simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the plan one seed expands into, and its hash.
    Plan(PlanArgs),
    /// Run one seed's plan and check the invariants (not built yet).
    Run(PlanArgs),
    /// Run many seeds, e.g. `--seeds 1..100` (not built yet).
    Sweep {
        /// Range of seeds, `A..B`.
        #[arg(long)]
        seeds: String,
    },
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Seed the plan is expanded from.
    #[arg(long)]
    seed: u64,
    /// Virtual buyers.
    #[arg(long, default_value_t = 5_000)]
    buyers: usize,
    /// Products on sale.
    #[arg(long, default_value_t = 3)]
    products: usize,
    /// Units of each product.
    #[arg(long, default_value_t = 100)]
    stock: i64,
    /// Server instances.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Redis topology.
    #[arg(long, value_enum, default_value_t = Topology::Single)]
    topology: Topology,
    /// Faults to schedule.
    #[arg(long, value_enum, default_value_t = FaultMix::Default)]
    faults: FaultMix,
    /// Length of the run in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    duration_ms: u64,
}

impl PlanArgs {
    fn options(&self) -> PlanOptions {
        PlanOptions {
            seed: self.seed,
            buyers: self.buyers,
            products: self.products,
            stock_per_product: self.stock,
            instances: self.instances,
            topology: self.topology,
            fault_mix: self.faults,
            duration_ms: self.duration_ms,
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan(args) => match Plan::generate(args.options()) {
            Ok(plan) => {
                // A closed pipe (`| head`) ends the output early; that is not an error.
                let _ = print_plan(&mut std::io::stdout().lock(), &plan);
                ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("flashsale-sim plan: {problem}");
                ExitCode::FAILURE
            }
        },
        Command::Run(_) | Command::Sweep { .. } => {
            eprintln!("flashsale-sim: running plans is not built yet: see the simulator issue");
            ExitCode::from(NOT_BUILT)
        }
    }
}

fn print_plan(out: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    let options = &plan.options;
    writeln!(out, "seed {}  plan hash {}", options.seed, plan.hash())?;
    writeln!(
        out,
        "{} buyers, {} products x {} units, {} instances, {:?} Redis, {:?} faults, {} ms",
        options.buyers,
        options.products,
        options.stock_per_product,
        options.instances,
        options.topology,
        options.fault_mix,
        options.duration_ms
    )?;
    for (behaviour, count) in plan.behaviour_counts() {
        writeln!(out, "  {behaviour:?}: {count}")?;
    }
    for fault in &plan.faults {
        writeln!(out, "  at {:>6} ms for {:>5} ms: {:?}", fault.at_ms, fault.duration_ms, fault.fault)?;
    }
    Ok(())
}
