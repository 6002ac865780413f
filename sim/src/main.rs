//! `flashsale-sim`: the flash-sale simulator's command line. `plan` prints what a seed
//! expands into; `run` plays it against real backends and server instances and prints
//! the verdict of every invariant; `sweep` runs a range of seeds. Exit status: 0 every
//! invariant held, 1 a violation or a vacuous run, 2 bad arguments, 3 the run itself
//! failed (a backend would not start...).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use flashsale_sim::cli::{Cli, Command, Mode, PlanArgs, RunArgs, RunOptions, ShrinkArgs, SweepArgs};
use flashsale_sim::plan::{FaultMix, Plan};
use flashsale_sim::runner::RunOutcome;
use flashsale_sim::{det, report, runner};

/// mimalloc for the simulator and the server instances it hosts: under load, glibc's
/// malloc and free took about a tenth of the server's CPU (many small, short-lived
/// allocations per request, on several threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FAILED_RUN: u8 = 3;

fn main() -> ExitCode {
    // The server instances log through `tracing`: silent unless RUST_LOG asks.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .try_init();
    match Cli::parse().command {
        Command::Plan(args) => match plan(&args) {
            Ok(plan) => {
                // A closed pipe (`| head`) ends the output early; that is not an error.
                let _ = print_plan(&mut std::io::stdout().lock(), &plan);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Shrink(args) => shrink(&args),
        Command::Run(args) => {
            let plan = match run_plan(&args) {
                Ok(plan) => plan,
                Err(code) => return code,
            };
            let _ = print_plan(&mut std::io::stdout().lock(), &plan);
            match play(plan, &args.run) {
                Ok(outcome) if outcome.report.passed() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(err) => {
                    eprintln!("flashsale-sim run: {err:#}");
                    ExitCode::from(FAILED_RUN)
                }
            }
        }
        Command::Sweep(args) if args.run.mode == Mode::Det => det_sweep(&args),
        Command::Sweep(args) => {
            let mut failing = Vec::new();
            for seed in args.seeds.seeds() {
                let plan = match Plan::generate(args.shape.options(seed)) {
                    Ok(plan) => plan,
                    Err(problem) => {
                        eprintln!("flashsale-sim sweep: {problem}");
                        return ExitCode::from(2);
                    }
                };
                println!("== seed {seed}: plan hash {}", plan.hash());
                // One folder per seed under the given root.
                let mut options = args.run.clone();
                options.report_dir =
                    args.run.report_dir.as_ref().map(|root| root.join(format!("seed-{seed}-{}", plan.hash())));
                match play(plan, &options) {
                    Ok(outcome) if outcome.report.passed() => println!("== seed {seed}: every invariant held"),
                    Ok(outcome) => failing.push((seed, outcome.replay_command.clone())),
                    Err(err) => failing.push((seed, format!("run failed: {err:#}"))),
                }
            }
            if failing.is_empty() {
                println!("sweep {}..={}: every seed passed", args.seeds.first, args.seeds.last);
                ExitCode::SUCCESS
            } else {
                println!("sweep: {} seed(s) failed:", failing.len());
                for (seed, replay) in &failing {
                    println!("  seed {seed}: {replay}");
                }
                ExitCode::FAILURE
            }
        }
    }
}

/// One seed of a deterministic sweep: its coverage counted, its verdict printed (in
/// full, with its report, if it failed). `Err` names the failing seed and its replay.
fn det_seed(args: &SweepArgs, plan: Plan, coverage: &mut det::Coverage) -> Result<(), (u64, String)> {
    let seed = plan.options.seed;
    let settings = args.run.settings(plan);
    let result = det::run(&settings).and_then(|outcome| {
        if args.run.check_determinism {
            let again = det::run(&settings)?;
            if let Some(divergence) = det::first_divergence(&outcome.history, &again.history) {
                anyhow::bail!("not deterministic: the second run diverged at {divergence}");
            }
        }
        Ok(outcome)
    });
    let outcome = result.map_err(|err| (seed, format!("run failed: {err:#}")))?;
    coverage.add(&outcome.history);
    let hash = det::history_hash(&outcome.history);
    if outcome.report.all_held() {
        if !args.run.quiet {
            println!("== seed {seed}: held (history {hash})");
        }
        return Ok(());
    }
    println!("== seed {seed}: VIOLATED (history {hash})");
    let mut options = args.run.clone();
    options.report_dir =
        args.run.report_dir.as_ref().map(|root| root.join(format!("seed-{seed}-{}", outcome.plan_hash)));
    report_on(&outcome, &options);
    Err((seed, outcome.replay_command.clone()))
}

/// A deterministic sweep: every seed's verdict in one line, a failing seed's details and
/// report in full, then the coverage across the sweep and the speed. Fails on a
/// violated invariant, a seed that is not deterministic (`--check-determinism`), or an
/// item of the coverage no seed reached (a single seed may be vacuous; the sweep may not).
fn det_sweep(args: &SweepArgs) -> ExitCode {
    let started = std::time::Instant::now();
    let mut plans = Vec::new();
    for seed in args.seeds.seeds() {
        match Plan::generate(args.shape.options(seed)) {
            Ok(plan) => plans.push(plan),
            Err(problem) => {
                eprintln!("flashsale-sim sweep: {problem}");
                return ExitCode::from(2);
            }
        }
    }
    let seeds = plans.len() as u64;
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    // Each seed runs on a runtime of its own, so seeds run on `jobs` threads at once;
    // each thread keeps its own coverage, merged at the end.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failing = std::sync::Mutex::new(Vec::new());
    let coverage = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut coverage = det::Coverage::default();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(plan) = plans.get(index) else { return coverage };
                        if let Err(failure) = det_seed(args, plan.clone(), &mut coverage) {
                            failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(failure);
                        }
                    }
                })
            })
            .collect();
        let mut all = det::Coverage::default();
        for worker in workers {
            if let Ok(part) = worker.join() {
                all.merge(part);
            }
        }
        all
    });
    let mut failing = failing.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    failing.sort();
    let elapsed = started.elapsed().as_secs_f64();
    print!("{}", coverage.table());
    let runs = if args.run.check_determinism { 2 * seeds } else { seeds };
    println!(
        "speed: {seeds} seeds ({runs} runs) in {elapsed:.1} s on {jobs} thread(s): {:.1} runs per second",
        runs as f64 / elapsed.max(f64::EPSILON)
    );
    // A determinism check is a sample, each seed compared run against run: it reports its
    // coverage, and reaching every item is the full sweep's job.
    let missing = if args.run.check_determinism { Vec::new() } else { coverage.missing() };
    if failing.is_empty() && missing.is_empty() {
        let what = if args.run.check_determinism {
            "every seed gave the same history twice"
        } else {
            "every item was reached"
        };
        println!(
            "sweep {}..={} (det): every invariant held on every seed, and {what}",
            args.seeds.first, args.seeds.last
        );
        return ExitCode::SUCCESS;
    }
    if !missing.is_empty() {
        println!("sweep: coverage incomplete, never reached: {}", missing.join("; "));
    }
    if !failing.is_empty() {
        println!("sweep: {} seed(s) failed:", failing.len());
        for (seed, replay) in &failing {
            println!("  seed {seed}: {replay}");
        }
    }
    ExitCode::FAILURE
}

/// The plan of a run: from `--plan FILE` if given, else expanded from the seed.
fn run_plan(args: &RunArgs) -> Result<Plan, ExitCode> {
    match &args.run.plan_file {
        Some(path) => Plan::load(path).map_err(|err| {
            eprintln!("flashsale-sim: {err:#}");
            ExitCode::from(2)
        }),
        None => plan(&args.plan),
    }
}

/// `shrink`: the minimal failing plan, written as JSON with its replay command.
fn shrink(args: &ShrinkArgs) -> ExitCode {
    let plan = match run_plan(&args.run) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let seed = plan.options.seed;
    let original = plan.hash();
    let mut options = args.run.run.clone();
    options.mode = Mode::Det;
    let settings = options.settings(plan);
    let started = std::time::Instant::now();
    let shrunk = match det::shrink::shrink(&settings, args.invariant, |line| eprintln!("[shrink] {line}")) {
        Ok(shrunk) => shrunk,
        Err(err) => {
            eprintln!("flashsale-sim shrink: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let hash = shrunk.plan.hash();
    let path = args.out.clone().unwrap_or_else(|| {
        std::path::PathBuf::from(format!("target/flashsale-sim/shrunk-seed-{seed}-{original}.json"))
    });
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&shrunk.plan).unwrap_or_default()));
    if let Err(err) = written {
        eprintln!("flashsale-sim shrink: writing {}: {err}", path.display());
        return ExitCode::from(FAILED_RUN);
    }
    let features = if settings.broken.is_some() { " --features broken" } else { "" };
    let broken = settings.broken.as_deref().map(|v| format!(" --broken {v}")).unwrap_or_default();
    println!(
        "shrunk: {:?} still violated with {} buyers and {} faults (plan hash {hash}), {} runs in {:.1} s",
        shrunk.invariant,
        shrunk.plan.buyers.len(),
        shrunk.plan.faults.len(),
        shrunk.runs,
        started.elapsed().as_secs_f64()
    );
    println!("minimal plan: {}", path.display());
    println!(
        "replay: cargo run --release -p flashsale-sim{features} -- run --seed {seed} --plan {} --mode det{broken}",
        path.display()
    );
    if args.confirm_real > 0 {
        let mut real = options.clone();
        real.mode = Mode::Real;
        real.quiet = true;
        let mut reproduced = 0;
        for attempt in 1..=args.confirm_real {
            let outcome = block_on(runner::run(real.settings(shrunk.plan.clone())));
            let violated = outcome.as_ref().is_ok_and(|o| o.report.verdict(shrunk.invariant).is_some_and(|v| !v.held));
            reproduced += u32::from(violated);
            println!("real mode run {attempt}: {}", if violated { "violated" } else { "held" });
        }
        println!("real mode: the violation reproduced in {reproduced} of {} runs", args.confirm_real);
    }
    ExitCode::SUCCESS
}

fn plan(args: &PlanArgs) -> Result<Plan, ExitCode> {
    Plan::generate(args.shape.options(args.seed)).map_err(|problem| {
        eprintln!("flashsale-sim: {problem}");
        ExitCode::from(2)
    })
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => {
            eprintln!("flashsale-sim: cannot start a runtime: {err}");
            std::process::exit(i32::from(FAILED_RUN));
        }
    }
}

/// Plays one plan in the chosen mode, prints its verdict and writes its report.
fn play(plan: Plan, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    if plan.options.fault_mix == FaultMix::Swarm && options.mode == Mode::Real && plan.faults_overlap() {
        anyhow::bail!("this swarm plan overlaps faults, which only deterministic mode applies exactly: add --mode det");
    }
    match options.mode {
        Mode::Real => block_on(run_one(plan, options)),
        Mode::Det => run_det(plan, options),
    }
}

/// Deterministic mode: the run (twice with `--check-determinism`), its history's hash.
fn run_det(plan: Plan, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let settings = options.settings(plan);
    let outcome = det::run(&settings)?;
    let hash = det::history_hash(&outcome.history);
    println!(
        "history hash {hash} ({} operations, {} fault events, {} ms of virtual sale, {} ms wall)",
        outcome.history.ops.len(),
        outcome.history.faults.len(),
        outcome.timings.sale_ms,
        outcome.timings.total_ms
    );
    if options.check_determinism {
        let again = det::run(&settings)?;
        if let Some(divergence) = det::first_divergence(&outcome.history, &again.history) {
            anyhow::bail!(
                "not deterministic: the second run of seed {} diverged at {divergence}",
                settings.plan.options.seed
            );
        }
        println!("determinism: a second run gave the same history, byte for byte");
    }
    report_on(&outcome, options);
    Ok(outcome)
}

async fn run_one(plan: Plan, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let outcome = runner::run(options.settings(plan)).await?;
    report_on(&outcome, options);
    Ok(outcome)
}

/// Prints the verdict (and the violations), writes the report folder.
fn report_on(outcome: &RunOutcome, options: &RunOptions) {
    print!("{}", report::verdict_table(outcome));
    if !outcome.report.passed() {
        print!("{}", report::violation_details(outcome));
    }
    // A deterministic run that held is replayed from its seed at will: its folder is
    // written only when asked for.
    if options.mode == Mode::Det && outcome.report.passed() && options.report_dir.is_none() {
        return;
    }
    let dir = options.report_dir.clone().unwrap_or_else(|| report::default_dir(outcome));
    match report::write(&dir, outcome) {
        Ok(_) => println!("report: {}", dir.display()),
        Err(err) => eprintln!("flashsale-sim: writing the report to {}: {err:#}", dir.display()),
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
    for product in &plan.products {
        writeln!(
            out,
            "  product {}: {} units, {}, opens at {} ms",
            product.index,
            product.stock,
            if product.one_per_user { "one per user" } else { "unlimited" },
            product.opens_at_ms
        )?;
        for restock in &product.restocks {
            writeln!(out, "    restocked +{} at {} ms", restock.quantity, restock.at_ms)?;
        }
        for change in &product.changes {
            writeln!(out, "    {} at {} ms", report::change_text(change.change), change.at_ms)?;
        }
    }
    for fault in &plan.faults {
        writeln!(out, "  at {:>6} ms for {:>5} ms: {:?}", fault.at_ms, fault.duration_ms, fault.fault)?;
    }
    Ok(())
}
