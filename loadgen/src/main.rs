//! `flashsale-loadgen`: the load generator. `sale` puts thousands of verified buyers on
//! one product at once (goose), checks the outcome against MongoDB and Redis, and
//! writes a report folder under `reports/`; `browse` has shoppers read the catalogue;
//! `auth` is a sign-up rush at production password-hashing cost; `mixed` all three at once;
//! `costs` measures what a sale's costs become as it grows.
//! Exit status: 0 when the correctness check passed, 1 when it failed (latency figures
//! never fail a run), 2 on a usage or setup error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flashsale_loadgen::costs::{CostsOptions, Sizes, costs};
use flashsale_loadgen::run::{
    AuthOptions, BrowseOptions, MixedOptions, Place, RunOutcome, SaleOptions, auth, browse, mixed, sale,
};
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
    /// Shoppers list products and open product pages for a while; latency, the product
    /// cache's hit ratio, and a check of every page.
    Browse(BrowseArgs),
    /// A sign-up rush at the server's Argon2id cost (production's by default): register,
    /// log in, verify the one-time code; latency and a check of every session.
    Auth(AuthArgs),
    /// Shoppers, buyers on a product on sale, and newcomers signing up, at once for a
    /// while; latency per route, the cache's hit ratio, and every scenario's check.
    Mixed(MixedArgs),
    /// What a request, a sold unit, a rebuild, a reconciler pass and a login cost as a sale
    /// grows: each measured at a few sizes on a local stack, written as a report folder.
    Costs(CostsArgs),
}

#[derive(Debug, clap::Args)]
struct CostsArgs {
    /// A tenth of the largest sizes, about a minute (a smoke test of the command).
    #[arg(long)]
    quick: bool,
    /// Stocks of the products whose purchase paths are measured (comma-separated, ascending).
    #[arg(long, value_delimiter = ',')]
    stocks: Option<Vec<usize>>,
    /// Orders of the products whose rebuild is timed.
    #[arg(long, value_delimiter = ',')]
    rebuild_orders: Option<Vec<usize>>,
    /// Live products of the reconciler passes.
    #[arg(long, value_delimiter = ',')]
    live_products: Option<Vec<usize>>,
    /// Server instances answering the sold-out path.
    #[arg(long, value_delimiter = ',')]
    instances: Option<Vec<usize>>,
    /// Users in the collection when logins are timed.
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<usize>>,
    /// Folder of all reports; this run writes `<date>-costs/` in it.
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    /// Name of this run's folder (default `<date>-costs`).
    #[arg(long)]
    name: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct MixedArgs {
    /// Goose users (1 to 20000), all started within one second: 6 in 10 shoppers, 3
    /// buyers, 1 newcomer.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Units of the product on sale.
    #[arg(long, default_value_t = 100)]
    stock: i64,
    /// Products in the catalogue, the one on sale among them (1 to 1000).
    #[arg(long, default_value_t = 50)]
    products: usize,
    /// Seconds the run lasts (1 to 3600).
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct AuthArgs {
    /// People signing up (goose users), all started within one second (1 to 10000).
    #[arg(long, default_value_t = 100)]
    people: usize,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct BrowseArgs {
    /// Shoppers (goose users), all started within one second.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Products in the catalogue (1 to 1000).
    #[arg(long, default_value_t = 50)]
    products: usize,
    /// Seconds the shoppers browse (1 to 3600).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// What every scenario takes: where its report goes, where the server is, how talkative.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Folder of all reports; this run writes `<date>-<scenario>/` in it.
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    /// Name of this run's folder (default `<date>-<scenario>`).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    /// Where the run goes; incomplete target options are said on stderr, and the exit
    /// status given.
    fn place(self) -> Result<Place, ExitCode> {
        Ok(Place {
            target: self.target.options()?,
            reports_root: self.report_dir,
            name: self.name,
            progress: !self.quiet,
        })
    }
}

/// Where the server under load is (default: a local stack started here; with `--url`,
/// the load generator makes users in its Redis and checks its MongoDB).
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// Load a server already running here instead of starting a local stack.
    #[arg(long, requires_all = ["redis_url", "mongo_url"])]
    url: Option<String>,
    /// The Redis of the server at `--url`.
    #[arg(long)]
    redis_url: Option<String>,
    /// The MongoDB of the server at `--url`.
    #[arg(long)]
    mongo_url: Option<String>,
    /// MongoDB database and Redis key prefix of the server at `--url`.
    #[arg(long, default_value = "")]
    database: String,
    #[arg(long, default_value = "")]
    key_prefix: String,
}

impl TargetArgs {
    /// The target options; incomplete ones are said on stderr, and the exit status given.
    fn options(self) -> Result<TargetOptions, ExitCode> {
        if self.url.is_some() && (self.database.is_empty() || self.key_prefix.is_empty()) {
            eprintln!("flashsale-loadgen: --url needs the server's --database and --key-prefix too");
            return Err(ExitCode::from(SETUP_FAILED));
        }
        Ok(TargetOptions {
            url: self.url,
            redis_url: self.redis_url,
            mongo_url: self.mongo_url,
            database: self.database,
            key_prefix: self.key_prefix,
        })
    }
}

#[derive(Debug, clap::Args)]
struct SaleArgs {
    /// Buyers (goose users), all started within one second.
    #[arg(long, default_value_t = 2_000)]
    buyers: usize,
    /// Units of the product on sale.
    #[arg(long, default_value_t = 100)]
    stock: i64,
    #[command(flatten)]
    run: RunArgs,
    /// Run the local server as a deliberately broken variant: the check should fail.
    #[cfg(feature = "broken")]
    #[arg(long, value_enum)]
    broken: Option<flashsale::broken::Broken>,
    /// Repetitions of the baselines (raw EVALSHA, /healthz, MongoDB insert and the
    /// purchase paths, alternating) and open-loop runs after the sale; 0 skips them.
    #[arg(long, default_value_t = 3)]
    baselines: usize,
    /// Threads of each baseline driver: `redis-benchmark`'s client and the HTTP driver's
    /// runtime get the same number (one is `redis-benchmark`'s default).
    #[arg(long, default_value_t = flashsale_loadgen::baseline::DEFAULT_DRIVER_THREADS as u16,
          value_parser = clap::value_parser!(u16).range(1..=flashsale_loadgen::baseline::MAX_DRIVER_THREADS as i64))]
    driver_threads: u16,
    /// A fault (local target only): pause Redis (SIGSTOP) at the sale's first answer for
    /// this many milliseconds; buyers retry their keys through it.
    #[arg(long)]
    redis_pause_ms: Option<u64>,
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
        Command::Browse(args) => runtime.block_on(run_browse(args)),
        Command::Auth(args) => runtime.block_on(run_auth(args)),
        Command::Mixed(args) => runtime.block_on(run_mixed(args)),
        Command::Costs(args) => runtime.block_on(run_costs(args)),
    }
}

async fn run_sale(args: SaleArgs) -> ExitCode {
    let place = match args.run.place() {
        Ok(place) => place,
        Err(exit) => return exit,
    };
    let options = SaleOptions {
        buyers: args.buyers,
        stock: args.stock,
        place,
        #[cfg(feature = "broken")]
        broken: args.broken,
        baselines: args.baselines,
        driver_threads: usize::from(args.driver_threads),
        redis_pause: args.redis_pause_ms.map(Duration::from_millis),
    };
    finish(sale(&options).await)
}

async fn run_browse(args: BrowseArgs) -> ExitCode {
    let place = match args.run.place() {
        Ok(place) => place,
        Err(exit) => return exit,
    };
    let options = BrowseOptions {
        users: args.users,
        products: args.products,
        duration: Duration::from_secs(args.duration_s),
        place,
    };
    finish(browse(&options).await)
}

async fn run_auth(args: AuthArgs) -> ExitCode {
    let place = match args.run.place() {
        Ok(place) => place,
        Err(exit) => return exit,
    };
    let options = AuthOptions { people: args.people, place };
    finish(auth(&options).await)
}

async fn run_mixed(args: MixedArgs) -> ExitCode {
    let place = match args.run.place() {
        Ok(place) => place,
        Err(exit) => return exit,
    };
    let options = MixedOptions {
        users: args.users,
        stock: args.stock,
        products: args.products,
        duration: Duration::from_secs(args.duration_s),
        place,
    };
    finish(mixed(&options).await)
}

async fn run_costs(args: CostsArgs) -> ExitCode {
    let base = if args.quick { Sizes::quick() } else { Sizes::full() };
    let sizes = Sizes {
        stocks: args.stocks.unwrap_or(base.stocks),
        rebuild_orders: args.rebuild_orders.unwrap_or(base.rebuild_orders),
        live_products: args.live_products.unwrap_or(base.live_products),
        instances: args.instances.unwrap_or(base.instances),
        users: args.users.unwrap_or(base.users),
    };
    let place = Place {
        target: TargetOptions::default(),
        reports_root: args.report_dir,
        name: args.name,
        progress: !args.quiet,
    };
    match costs(&CostsOptions { sizes, place }).await {
        Ok(dir) => {
            println!("report: {}", dir.join(flashsale_loadgen::costs::render::README).display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("flashsale-loadgen: {err:#}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

/// Prints the check and where the report is; the exit status says whether the check passed.
fn finish(outcome: anyhow::Result<RunOutcome>) -> ExitCode {
    match outcome {
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
