//! The `flashsale` binary: parses the command line and calls the library.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flashsale::clock::Ids;
use flashsale::config::{Config, OtpDelivery};
use flashsale::http::healthcheck::HealthcheckArgs;
use flashsale_stack::{BackendKind, RedisPersistence, start_backends};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// mimalloc for the server: under load, glibc's malloc and free took about a
/// tenth of the server's CPU (many small, short-lived allocations per request, on
/// several threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "flashsale", version, about = "Flash-sale server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API against the configured Redis and MongoDB.
    Serve(Config),
    /// Start a local redis-server and FerretDB on free ports and serve against them
    /// (plain http, codes in the OTP outbox and the log).
    Dev(Config),
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// GET this instance's /readyz (or `--url`) once: exit 0 on a 2xx answer, 1 otherwise.
    /// The health check of the container images, which have no curl.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Give a registered user the admin role.
    Promote {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        config: Config,
    },
    /// Rebuild sale state in Redis from MongoDB (one product, or all).
    Rebuild {
        #[arg(long)]
        product: Option<Uuid>,
        #[command(flatten)]
        config: Config,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Serve(config) => serve(config).await,
        Command::Dev(config) => dev(config).await,
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::Admin(AdminCommand::Promote { email, config }) => {
            let app = flashsale::startup::build_state(config, Ids::system()).await?;
            flashsale::auth::users::set_role(&app, &email, flashsale::auth::extract::Role::Admin).await?;
            println!("{email} is now an administrator");
            Ok(())
        }
        Command::Admin(AdminCommand::Rebuild { product, config }) => {
            let app = flashsale::startup::build_state(config, Ids::system()).await?;
            match product {
                Some(id) => println!("{id}: {:?}", flashsale::sale::rebuild::rebuild_product(&app, id).await?),
                None => {
                    let (rebuilt, in_progress) = flashsale::sale::rebuild::rebuild_all(&app).await?;
                    println!("rebuilt {rebuilt} products ({} being rebuilt by another holder)", in_progress.len());
                }
            }
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("FLASHSALE_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour codes only on a terminal: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    if json { builder.json().init() } else { builder.init() }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await.context("binding the listener")?;
    // "serving" only once every startup check passed (configuration, eviction policy,
    // indexes): a server that refuses to start never said it served.
    let app = flashsale::startup::build_state(config, Ids::system()).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    flashsale::startup::serve(listener, app, shutdown).await
}

/// Exit status of `flashsale healthcheck` when the target is not healthy.
const UNHEALTHY: i32 = 1;

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = args.target_url();
    match flashsale::http::healthcheck::check(&url, Duration::from_millis(args.timeout_ms)).await {
        Ok(status) => {
            println!("{url}: answered {status}");
            Ok(())
        }
        Err(error) => {
            // One line for the engine's health log, not an error report with a backtrace.
            eprintln!("unhealthy: {error}");
            std::process::exit(UNHEALTHY)
        }
    }
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    // Local processes by default; FLASHSALE_BACKEND=containers (with the `containers`
    // feature and a Docker API, e.g. `eval "$(scripts/containers env)"`) starts the
    // FLASHSALE_REDIS_IMAGE and FLASHSALE_MONGO_IMAGE containers (redis:7, mongo:7).
    let kind = BackendKind::from_env()?;
    let stack = start_backends(kind, RedisPersistence::AppendOnly)
        .await
        .context("starting the backends (for local processes, run scripts/install-deps first)")?;
    config.redis_url = stack.redis_url();
    config.mongo_url = stack.mongo_url();
    config.cookie_secure = false;
    config.otp_delivery = OtpDelivery::Log;
    println!("redis:   {}", stack.redis_url());
    println!("mongodb: {}", stack.mongo_url());
    println!("api:     http://{}/api/v1  (OpenAPI at /openapi.json)", config.listen_addr);
    let result = serve(config).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(stack);
    result
}

async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining requests");
    shutdown.cancel();
}
