//! The system under load. By default a local stack started here, with the same code as
//! the tests (`redis-server` and FerretDB processes on free ports, or `redis:7` and
//! `mongo:7` containers with `FLASHSALE_BACKEND=containers`), and one server instance
//! in this process on a runtime of its own, so that the load generator's tasks and the
//! server's are scheduled apart (they still share the machine's cores, as in the
//! report's method). Or a server already running at `--url`, given its Redis and
//! MongoDB too: buyers are made and the correctness check reads through the server
//! crate's own code, as an operator's tool would.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::startup::{RunningServer, build_state};
use flashsale::state::AppState;
use flashsale_stack::{BackendKind, Backends, RedisPersistence, RedisServer, start_backends};
use tokio_util::sync::CancellationToken;

/// Worker threads of the in-process server's runtime.
pub const SERVER_WORKERS: usize = 2;
/// How the in-process server's threads are named (as `/proc` shows them: 15 bytes), so
/// the load generator's own CPU time can be told apart.
pub const SERVER_THREAD_PREFIX: &str = "flashsale-serve";
/// How long the in-process server may take to drain when the run ends.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server under load is.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// A running server; `None` starts a local stack and a server here.
    pub url: Option<String>,
    /// Its Redis and MongoDB (required with `url`).
    pub redis_url: Option<String>,
    pub mongo_url: Option<String>,
    /// MongoDB database and Redis key prefix of the sale (a fresh one per run by default).
    pub database: String,
    pub key_prefix: String,
}

/// The running target: the URL to load, and an "admin" state on the same backends that
/// makes buyers and products and reads the outcome (no background tasks of its own).
pub struct Target {
    pub base_url: String,
    pub admin: AppState,
    /// Configuration of the server under load (the local one; the admin's for `--url`).
    pub server_config: Config,
    pub backend: String,
    server: Option<ServerThread>,
    backends: Option<Backends>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("base_url", &self.base_url).field("backend", &self.backend).finish()
    }
}

/// A server instance on a runtime of its own thread.
struct ServerThread {
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Target {
    /// Starts (or connects to) the target. `configure` adjusts the local server's
    /// configuration (limits, a broken variant).
    pub async fn start(options: &TargetOptions, configure: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        flashsale::startup::install_crypto_provider();
        match &options.url {
            Some(url) => {
                let redis = options.redis_url.as_deref().context("--url needs --redis-url (to make buyers)")?;
                let mongo = options.mongo_url.as_deref().context("--url needs --mongo-url (to check the outcome)")?;
                let mut config = Config::for_local(redis, mongo, &options.database, &options.key_prefix);
                config.background_tasks = false;
                let admin = build_state(config.clone(), Ids::system()).await.context("connecting to the backends")?;
                Ok(Self {
                    base_url: url.trim_end_matches('/').to_owned(),
                    admin,
                    server_config: config,
                    backend: format!("remote server at {url}"),
                    server: None,
                    backends: None,
                })
            }
            None => {
                let kind = BackendKind::from_env()?;
                let backends = start_backends(kind, RedisPersistence::None)
                    .await
                    .context("starting the backends (for local processes, run scripts/install-deps first)")?;
                let mut config = Config::for_local(
                    &backends.redis_url(),
                    &backends.mongo_url(),
                    &options.database,
                    &options.key_prefix,
                );
                config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
                // Every buyer has its own address, as behind a proxy that sets X-Forwarded-For.
                config.trust_forwarded_for = true;
                configure(&mut config);
                let (server, addr) = start_server_thread(config.clone())?;
                let mut admin_config = config.clone();
                admin_config.background_tasks = false;
                let admin = build_state(admin_config, Ids::system()).await?;
                Ok(Self {
                    base_url: format!("http://{addr}"),
                    admin,
                    server_config: config,
                    backend: format!("{kind:?} backends started by the load generator, server in process"),
                    server: Some(server),
                    backends: Some(backends),
                })
            }
        }
    }

    /// Stops the in-process server (if any); the backends stop when the target drops.
    pub fn stop_server(&mut self) {
        self.server = None;
    }

    /// The `redis-server` process of a local stack, to pause and resume it (a fault run).
    pub fn local_redis(&self) -> anyhow::Result<&RedisServer> {
        match &self.backends {
            Some(Backends::Local(stack)) => Ok(&stack.redis),
            #[cfg(feature = "containers")]
            Some(Backends::Containers(_)) => anyhow::bail!("pausing Redis needs local backends, not containers"),
            None => anyhow::bail!("pausing Redis needs the local target, not --url"),
        }
    }
}

fn start_server_thread(config: Config) -> anyhow::Result<(ServerThread, SocketAddr)> {
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<SocketAddr>>();
    let stop = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("flashsale-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(SERVER_WORKERS)
                .thread_name("flashsale-server-worker")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready_tx.send(Err(err.into()));
                    return;
                }
            };
            runtime.block_on(async move {
                let server = match RunningServer::start(config, Ids::system()).await {
                    Ok(server) => server,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(server.addr));
                stop.cancelled().await;
                let _ = tokio::time::timeout(STOP_TIMEOUT, server.stop()).await;
            });
            runtime.shutdown_timeout(STOP_TIMEOUT);
        })
        .context("spawning the server thread")?;
    let mut server = ServerThread { shutdown, thread: Some(thread) };
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok((server, addr)),
        Ok(Err(err)) => Err(err.context("starting the server")),
        Err(_) => {
            server.thread.take();
            anyhow::bail!("the server thread ended before it started")
        }
    }
}
