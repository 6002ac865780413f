//! The command line: `plan`, `run` and `sweep`, shared by the binary and by the tests
//! (which parse a printed replay command back into the run it names).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::{FaultMix, PlanOptions, Topology};
use crate::runner::{ConfigHook, RunSettings};
use crate::world::BackendChoice;

#[derive(Debug, Parser)]
#[command(
    name = "flashsale-sim",
    version,
    about = "Flash-sale simulator: can this sale oversell, lose an order or charge twice?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the plan one seed expands into, and its hash.
    Plan(PlanArgs),
    /// Run one seed's plan against real backends and check every invariant.
    Run(RunArgs),
    /// Run many seeds, e.g. `--seeds 1..6`; failing seeds are listed with their replay commands.
    Sweep(SweepArgs),
    /// Shrink a failing plan (deterministic mode): remove buyers and faults while the
    /// same invariant stays violated, simplify the rest, write the minimal plan as JSON.
    Shrink(ShrinkArgs),
}

/// Everything a plan depends on besides its seed.
#[derive(Debug, Clone, Args)]
pub struct Shape {
    /// Virtual buyers.
    #[arg(long, default_value_t = 5_000)]
    pub buyers: usize,
    /// Products on sale (their openings are staggered over the fault window).
    #[arg(long, default_value_t = 3)]
    pub products: usize,
    /// Units of each product.
    #[arg(long, default_value_t = 100)]
    pub stock: i64,
    /// Server instances.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Redis topology.
    #[arg(long, value_enum, default_value_t = Topology::Single)]
    pub topology: Topology,
    /// Faults to schedule.
    #[arg(long, value_enum, default_value_t = FaultMix::Default)]
    pub faults: FaultMix,
    /// Length of the sale in milliseconds (faults in its first 60%).
    #[arg(long, default_value_t = 40_000)]
    pub duration_ms: u64,
    /// Add a network partition of Redis or MongoDB to the default faults: a container
    /// disconnected from its network on `--backend containers`, a proxy blackhole on
    /// local processes, hanging commands in det mode.
    #[arg(long)]
    pub partition: bool,
}

impl Shape {
    pub fn options(&self, seed: u64) -> PlanOptions {
        PlanOptions {
            seed,
            buyers: self.buyers,
            products: self.products,
            stock_per_product: self.stock,
            instances: self.instances,
            topology: self.topology,
            fault_mix: self.faults,
            duration_ms: self.duration_ms,
            partition: self.partition,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Seed the plan is expanded from.
    #[arg(long)]
    pub seed: u64,
    #[command(flatten)]
    pub shape: Shape,
}

/// Options of a run besides the plan.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// Report folder (default `target/flashsale-sim/seed-<seed>-<plan hash>`); for a
    /// sweep, the folder that holds one `seed-<seed>-<plan hash>` folder per seed.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Where the backends run: local processes, or containers (needs the `containers`
    /// feature and a Docker API: `eval "$(scripts/containers env)"`; single Redis only;
    /// `--partition` adds a network partition of a container to the plan).
    #[arg(long, value_enum, default_value_t = BackendChoice::Local)]
    pub backend: BackendChoice,
    /// `real`: real processes, interleavings differ per run. `det`: the emulated stores
    /// and in-process instances on a virtual clock, replayed exactly from the seed.
    #[arg(long, value_enum, default_value_t = Mode::Real)]
    pub mode: Mode,
    /// Run the plan in this JSON file (a shrunk plan, or a scenario written by hand)
    /// instead of the one the seed expands into.
    #[arg(long = "plan", value_name = "FILE")]
    pub plan_file: Option<PathBuf>,
    /// Deterministic mode only: run each seed twice and fail on any difference between
    /// the two histories, naming the first operation where they diverge.
    #[arg(long)]
    pub check_determinism: bool,
    /// Run the server as a deliberately broken variant, to see the checker catch it.
    #[cfg(feature = "broken")]
    #[arg(long, value_enum)]
    pub broken: Option<flashsale::broken::Broken>,
}

impl RunOptions {
    /// The broken variant's name and the hook selecting it, if any.
    pub fn broken(&self) -> (Option<String>, Option<ConfigHook>) {
        #[cfg(feature = "broken")]
        if let Some(variant) = self.broken {
            let name = serde_json::to_value(variant).ok().and_then(|v| v.as_str().map(str::to_owned));
            let hook: ConfigHook = std::sync::Arc::new(move |config| config.broken = Some(variant));
            return (name, Some(hook));
        }
        (None, None)
    }

    pub fn settings(&self, plan: crate::plan::Plan) -> RunSettings {
        let (broken, configure) = self.broken();
        RunSettings {
            plan,
            progress: !self.quiet,
            backend: self.backend,
            broken,
            configure,
            plan_file: self.plan_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ShrinkArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Where to write the minimal plan (default
    /// `target/flashsale-sim/shrunk-seed-<seed>-<plan hash>.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The invariant to keep violated (default: the first one the plan violates), when
    /// a plan violates several and the one wanted is not the first.
    #[arg(long)]
    pub invariant: Option<crate::checker::Invariant>,
    /// Then run the minimal plan this many times in real mode and say how often the
    /// violation reproduced there.
    #[arg(long, default_value_t = 0)]
    pub confirm_real: u32,
}

/// How a plan is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Real,
    Det,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Seeds: `A..B` (B excluded) or `A..=B`.
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: SeedRange,
    /// Deterministic mode: seeds run at once, each on a thread of its own (default: one
    /// per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub shape: Shape,
    #[command(flatten)]
    pub run: RunOptions,
}

/// Largest number of seeds one sweep may run.
pub const MAX_SWEEP_SEEDS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    /// Included.
    pub last: u64,
}

impl SeedRange {
    pub fn seeds(self) -> impl Iterator<Item = u64> {
        self.first..=self.last
    }
}

/// Parses `A..B` (B excluded) or `A..=B`.
pub fn parse_seeds(text: &str) -> Result<SeedRange, String> {
    let (first, last) = if let Some((a, b)) = text.split_once("..=") {
        (a, b.trim().parse::<u64>().map_err(|e| format!("end of {text:?}: {e}"))?)
    } else if let Some((a, b)) = text.split_once("..") {
        let end = b.trim().parse::<u64>().map_err(|e| format!("end of {text:?}: {e}"))?;
        (a, end.checked_sub(1).ok_or_else(|| format!("{text:?} is empty"))?)
    } else {
        return Err(format!("{text:?} is not a range: write A..B or A..=B"));
    };
    let first = first.trim().parse::<u64>().map_err(|e| format!("start of {text:?}: {e}"))?;
    if last < first {
        return Err(format!("{text:?} is empty"));
    }
    if last - first >= MAX_SWEEP_SEEDS {
        return Err(format!("a sweep runs at most {MAX_SWEEP_SEEDS} seeds"));
    }
    Ok(SeedRange { first, last })
}

/// Parses a printed replay command (`cargo run ... -- run --seed ...`) back into its
/// arguments.
pub fn parse_replay(command: &str) -> Result<RunArgs, String> {
    let args = command.split_once(" -- ").map(|(_, rest)| rest).ok_or("no `--` in the replay command")?;
    let mut words = vec!["flashsale-sim"];
    words.extend(args.split_whitespace());
    match Cli::try_parse_from(words).map_err(|e| e.to_string())?.command {
        Command::Run(run) => Ok(run),
        other => Err(format!("not a run command: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_with_and_without_the_end() {
        assert_eq!(parse_seeds("1..6"), Ok(SeedRange { first: 1, last: 5 }));
        assert_eq!(parse_seeds("3..=3"), Ok(SeedRange { first: 3, last: 3 }));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("7").is_err());
        assert!(parse_seeds("0..=20000").is_err());
    }

    #[test]
    fn a_replay_command_parses_back_into_the_same_plan() {
        let shape = Shape {
            buyers: 300,
            products: 2,
            stock: 20,
            instances: 2,
            topology: Topology::Cluster,
            faults: FaultMix::MongoOutage,
            duration_ms: 12_000,
            partition: false,
        };
        let with_partition =
            Shape { topology: Topology::Single, faults: FaultMix::Default, partition: true, ..shape.clone() };
        for shape in [shape, with_partition] {
            let plan = crate::plan::Plan::generate(shape.options(42)).expect("plan");
            let command = crate::runner::replay_command(&plan, BackendChoice::Containers, None);
            let parsed = parse_replay(&command).expect("parses");
            assert_eq!(parsed.run.backend, BackendChoice::Containers);
            let again = crate::plan::Plan::generate(parsed.plan.shape.options(parsed.plan.seed)).expect("plan");
            assert_eq!(again.hash(), plan.hash(), "{command}");
        }
    }
}
