//! `flashsale-loadgen`: the load generator. `sale` puts thousands of verified buyers on
//! one product at once (goose), checks the outcome against MongoDB and Redis, and
//! writes a report folder under `reports/`. Exit status: 0 when the correctness check
//! passed, 1 when it failed (latency figures never fail a run), 2 on a usage or setup
//! error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flashsale_loadgen::run::{SaleOptions, sale};
use flashsale_loadgen::target::TargetOptions;

/// mimalloc for the load generator and the server it hosts: under load, glibc's malloc
/// and free took about a tenth of the server's CPU (many small, short-lived allocations
/// per request, on several threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when the correctness check failed.
const CHECK_FAILED: u8 = 1;
/// Exit status on a setup or usage error.
const SETUP_FAILED: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "flashsale-loadgen", version, about = "Flash-sale load generator and latency reports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Thousands of verified buyers hit one product at the same moment; report and check.
    Sale(SaleArgs),
}

#[derive(Debug, clap::Args)]
struct SaleArgs {
    /// Buyers (goose users), all started within one second.
    #[arg(long, default_value_t = 2_000)]
    buyers: usize,
    /// Units of the product on sale.
    #[arg(long, default_value_t = 100)]
    stock: i64,
    /// Folder of all reports; this run writes `<date>-sale/` in it.
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    /// Name of this run's folder (default `<date>-sale`).
    #[arg(long)]
    name: Option<String>,
    /// Load a server already running here instead of starting a local stack.
    #[arg(long, requires_all = ["redis_url", "mongo_url"])]
    url: Option<String>,
    /// The Redis of the server at `--url` (buyers' sessions are made there).
    #[arg(long)]
    redis_url: Option<String>,
    /// The MongoDB of the server at `--url` (the check reads it).
    #[arg(long)]
    mongo_url: Option<String>,
    /// MongoDB database and Redis key prefix of the server at `--url`.
    #[arg(long, default_value = "")]
    database: String,
    #[arg(long, default_value = "")]
    key_prefix: String,
    /// Run the local server as a deliberately broken variant: the check should fail.
    #[cfg(feature = "broken")]
    #[arg(long, value_enum)]
    broken: Option<flashsale::broken::Broken>,
    /// Repetitions of the baselines (raw EVALSHA, /healthz, MongoDB insert and the
    /// purchase paths, alternating) and open-loop runs after the sale; 0 skips them.
    #[arg(long, default_value_t = 3)]
    baselines: usize,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("flashsale-loadgen: starting the runtime: {err}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    match cli.command {
        Command::Sale(args) => runtime.block_on(run_sale(args)),
    }
}

async fn run_sale(args: SaleArgs) -> ExitCode {
    if args.url.is_some() && (args.database.is_empty() || args.key_prefix.is_empty()) {
        eprintln!("flashsale-loadgen: --url needs the server's --database and --key-prefix too");
        return ExitCode::from(SETUP_FAILED);
    }
    let options = SaleOptions {
        buyers: args.buyers,
        stock: args.stock,
        reports_root: args.report_dir,
        name: args.name,
        target: TargetOptions {
            url: args.url,
            redis_url: args.redis_url,
            mongo_url: args.mongo_url,
            database: args.database,
            key_prefix: args.key_prefix,
        },
        #[cfg(feature = "broken")]
        broken: args.broken,
        baselines: args.baselines,
        progress: !args.quiet,
    };
    match sale(&options).await {
        Ok(outcome) => {
            for check in &outcome.check.checks {
                println!("{:<42} {:<7} {}", check.name, if check.passed { "passed" } else { "FAILED" }, check.detail);
            }
            println!("report: {}", outcome.dir.join("README.md").display());
            if outcome.check.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("flashsale-loadgen: the correctness check failed");
                ExitCode::from(CHECK_FAILED)
            }
        }
        Err(err) => {
            eprintln!("flashsale-loadgen: {err:#}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}
