//! The world one run plays in: fresh backends (one `redis-server` or a local 3-master
//! Redis Cluster, and FerretDB; or, with the `containers` feature, `redis:7` and
//! `mongo:7` Docker containers), a fault proxy in front of each of them, and N server
//! instances of the `flashsale` crate, each on its own tokio runtime so that killing an
//! instance drops every task it had in flight (a crash mid-purchase), exactly as a
//! process kill would, while the simulator keeps its own clock and history.
//!
//! The simulator's own handle on the backends (the "admin" app) connects directly,
//! bypassing the proxies: it creates users and sessions through the server crate's
//! code before the sale, and reads the final state after it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use flashsale::clock::{Ids, SeededEntropy, SystemClock};
use flashsale::config::Config;
use flashsale::startup::{RunningServer, build_state};
use flashsale::state::AppState;
use flashsale_stack::{FerretDb, RedisCluster, RedisClusterOptions, RedisPersistence, RedisServer, free_port};
use tokio::runtime::Runtime;

use crate::plan::{Backend, Topology};
use crate::proxy::FaultProxy;

/// How long a graceful instance stop may take before its runtime is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Worker threads of each server instance's runtime.
const INSTANCE_WORKERS: usize = 2;
/// Masters of the local Redis Cluster.
const CLUSTER_MASTERS: usize = 3;
/// How long a cluster may take to agree again after a node restart.
const CLUSTER_HEAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Redis as the run sees it.
pub enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    /// The node faults act on (the only one, or the cluster's first master).
    pub fn target_node(&mut self) -> &mut RedisServer {
        match self {
            Self::Single(server) => server,
            Self::Cluster(cluster) => cluster.node_mut(0),
        }
    }

    /// URLs of every node, direct (no proxy).
    pub fn direct_urls(&self) -> Vec<String> {
        match self {
            Self::Single(server) => vec![server.url()],
            Self::Cluster(cluster) => cluster.direct_seed_urls().split(',').map(str::to_owned).collect(),
        }
    }

    /// Waits until Redis serves again after a restart.
    pub fn wait_healthy(&self) -> anyhow::Result<()> {
        match self {
            Self::Single(_) => Ok(()),
            Self::Cluster(cluster) => cluster.wait_healthy(CLUSTER_HEAL_TIMEOUT),
        }
    }
}

/// Where the backends run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// `redis-server` and FerretDB child processes on free ports (the default).
    #[default]
    Local,
    /// Redis and MongoDB containers (`ContainerStack`: `FLASHSALE_REDIS_IMAGE` and
    /// `FLASHSALE_MONGO_IMAGE`, by default `redis:7` and `mongo:7`; needs the
    /// `containers` feature and a Docker API, e.g. `scripts/containers`'s Podman; single
    /// Redis only).
    Containers,
}

/// Local backend processes.
pub struct LocalBackends {
    pub redis: Redis,
    pub mongo: FerretDb,
}

/// The backends and their proxies.
pub struct Backends {
    /// Local processes (None when the backends are containers).
    pub local: Option<LocalBackends>,
    #[cfg(feature = "containers")]
    pub containers: Option<Arc<flashsale_stack::ContainerStack>>,
    /// One proxy per Redis node, in node order.
    pub redis_proxies: Vec<FaultProxy>,
    /// With [`Backends::add_links`]: one proxy per instance in front of the Redis proxy,
    /// each instance's own path to Redis (for slow-link faults), by instance.
    pub link_proxies: Vec<FaultProxy>,
    pub mongo_proxy: FaultProxy,
    direct_redis: Vec<String>,
    direct_mongo: String,
}

impl Backends {
    pub async fn start(topology: Topology, choice: BackendChoice) -> anyhow::Result<Self> {
        match choice {
            BackendChoice::Local => Self::start_local(topology).await,
            BackendChoice::Containers => Self::start_containers(topology).await,
        }
    }

    #[cfg(feature = "containers")]
    async fn start_containers(topology: Topology) -> anyhow::Result<Self> {
        use flashsale_stack::{ContainerRole, ContainerStack};
        anyhow::ensure!(topology == Topology::Single, "the Redis Cluster topology runs on local processes only");
        let stack = ContainerStack::start(RedisPersistence::AppendOnly).await?;
        let redis_proxy = FaultProxy::start(stack.addr(ContainerRole::Redis), None).await.context("a Redis proxy")?;
        let mongo_proxy =
            FaultProxy::start(stack.addr(ContainerRole::Mongo), None).await.context("the MongoDB proxy")?;
        Ok(Self {
            local: None,
            direct_redis: vec![stack.redis_url()],
            direct_mongo: stack.mongo_url(),
            containers: Some(Arc::new(stack)),
            redis_proxies: vec![redis_proxy],
            link_proxies: Vec::new(),
            mongo_proxy,
        })
    }

    #[cfg(not(feature = "containers"))]
    async fn start_containers(_topology: Topology) -> anyhow::Result<Self> {
        anyhow::bail!(
            "--backend containers needs the `containers` feature: cargo run -p flashsale-sim --features containers"
        )
    }

    async fn start_local(topology: Topology) -> anyhow::Result<Self> {
        let (redis, mongo, proxy_ports) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mongo = FerretDb::start().context("starting FerretDB")?;
            let (redis, proxy_ports) = match topology {
                Topology::Single => {
                    let server = RedisServer::start(RedisPersistence::AppendOnly).context("starting redis-server")?;
                    (Redis::Single(server), vec![None])
                }
                Topology::Cluster => {
                    // Every node announces its proxy's port, so cluster clients (and their
                    // MOVED redirections) go through the proxies too.
                    let ports = (0..CLUSTER_MASTERS).map(|_| free_port()).collect::<anyhow::Result<Vec<u16>>>()?;
                    let cluster = RedisCluster::start(RedisClusterOptions {
                        masters: CLUSTER_MASTERS,
                        persistence: RedisPersistence::AppendOnly,
                        announce_ports: Some(ports.clone()),
                    })
                    .context("starting the Redis Cluster")?;
                    (Redis::Cluster(cluster), ports.into_iter().map(Some).collect())
                }
            };
            Ok((redis, mongo, proxy_ports))
        })
        .await??;
        let node_ports: Vec<u16> = match &redis {
            Redis::Single(server) => vec![server.port()],
            Redis::Cluster(cluster) => cluster.node_ports(),
        };
        let mut redis_proxies = Vec::new();
        for (port, listen) in node_ports.iter().zip(proxy_ports) {
            redis_proxies.push(FaultProxy::start(loopback(*port), listen).await.context("starting a Redis proxy")?);
        }
        let mongo_proxy =
            FaultProxy::start(loopback(mongo.port()), None).await.context("starting the MongoDB proxy")?;
        Ok(Self {
            direct_redis: redis.direct_urls(),
            direct_mongo: mongo.url(),
            local: Some(LocalBackends { redis, mongo }),
            #[cfg(feature = "containers")]
            containers: None,
            redis_proxies,
            link_proxies: Vec::new(),
            mongo_proxy,
        })
    }

    /// The Redis URL the server instances use: through the proxies.
    pub fn proxied_redis_url(&self) -> String {
        self.redis_proxies.iter().map(|p| format!("redis://127.0.0.1:{}", p.port())).collect::<Vec<_>>().join(",")
    }

    /// Gives each of `instances` a path of its own to Redis: a proxy in front of the
    /// Redis proxy, whose faults reach that instance alone. Single Redis only: a cluster
    /// client learns the nodes' announced addresses (the shared proxies) and would go
    /// around it.
    pub async fn add_links(&mut self, instances: usize) -> anyhow::Result<()> {
        let [redis_proxy] = self.redis_proxies.as_slice() else {
            anyhow::bail!("slow-link faults need the single Redis topology");
        };
        let upstream = loopback(redis_proxy.port());
        for _ in 0..instances {
            self.link_proxies.push(FaultProxy::start(upstream, None).await.context("starting a link proxy")?);
        }
        Ok(())
    }

    /// The Redis URL instance `instance` uses: its link, if [`Backends::add_links`] made
    /// one, else [`Backends::proxied_redis_url`].
    pub fn instance_redis_url(&self, instance: usize) -> String {
        match self.link_proxies.get(instance) {
            Some(link) => format!("redis://127.0.0.1:{}", link.port()),
            None => self.proxied_redis_url(),
        }
    }

    pub fn proxied_mongo_url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.mongo_proxy.port())
    }

    /// URLs of every Redis node, direct (no proxy).
    pub fn direct_redis_urls(&self) -> Vec<String> {
        self.direct_redis.clone()
    }

    pub fn direct_redis_url(&self) -> String {
        self.direct_redis.join(",")
    }

    pub fn direct_mongo_url(&self) -> String {
        self.direct_mongo.clone()
    }

    pub fn proxies(&self, target: Backend) -> Vec<&FaultProxy> {
        match target {
            Backend::Redis => self.redis_proxies.iter().collect(),
            Backend::Mongo => vec![&self.mongo_proxy],
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One server instance on its own runtime.
struct Instance {
    runtime: Runtime,
    server: RunningServer,
}

/// The server instances, and the base URL of each one that is up.
pub struct Instances {
    configs: Vec<Config>,
    /// The plan's seed: instance `i` draws its ids from `SeededEntropy` of a seed derived
    /// from it and `i` (a fresh stream each time the instance starts again).
    seed: u64,
    starts: std::sync::atomic::AtomicU64,
    running: Mutex<Vec<Option<Instance>>>,
    urls: RwLock<Vec<Option<String>>>,
}

impl Instances {
    pub async fn start(configs: Vec<Config>, seed: u64) -> anyhow::Result<Arc<Self>> {
        let count = configs.len();
        let instances = Arc::new(Self {
            configs,
            seed,
            starts: std::sync::atomic::AtomicU64::new(0),
            running: Mutex::new((0..count).map(|_| None).collect()),
            urls: RwLock::new(vec![None; count]),
        });
        for index in 0..count {
            instances.start_one(index).await?;
        }
        Ok(instances)
    }

    pub fn count(&self) -> usize {
        self.configs.len()
    }

    /// Base URL of the instance, if it is up.
    pub fn url(&self, index: usize) -> Option<String> {
        self.urls.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(index).cloned().flatten()
    }

    /// Starts (or starts again) one instance on a fresh port.
    pub async fn start_one(self: &Arc<Self>, index: usize) -> anyhow::Result<()> {
        let mut config = self.configs.get(index).cloned().context("no such instance")?;
        config.listen_addr = loopback(0);
        let start = self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids = seeded_ids(self.seed, start);
        let instance = tokio::task::spawn_blocking(move || -> anyhow::Result<Instance> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(INSTANCE_WORKERS)
                .thread_name(format!("instance-{index}"))
                .enable_all()
                .build()
                .context("building an instance runtime")?;
            let server = runtime.block_on(RunningServer::start(config, ids))?;
            Ok(Instance { runtime, server })
        })
        .await??;
        let url = instance.server.base_url();
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(instance);
        self.urls.write().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(url);
        Ok(())
    }

    /// Kills one instance: its runtime is shut down without waiting, so every request it
    /// was serving stops wherever it was (between the Redis script and the MongoDB
    /// insert, for some).
    pub fn kill(&self, index: usize) -> bool {
        self.urls.write().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = None;
        let instance = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index].take();
        match instance {
            Some(instance) => {
                instance.runtime.shutdown_background();
                true
            }
            None => false,
        }
    }

    /// The app state of a running instance (for metrics in the report).
    pub fn app(&self, index: usize) -> Option<AppState> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index]
            .as_ref()
            .map(|i| i.server.app.clone())
    }

    /// Stops every instance gracefully.
    pub async fn stop_all(&self) {
        let all: Vec<Instance> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for url in self.urls.write().unwrap_or_else(std::sync::PoisonError::into_inner).iter_mut() {
            *url = None;
        }
        for instance in all {
            let _ = tokio::task::spawn_blocking(move || {
                let Instance { runtime, server } = instance;
                let _ = runtime.block_on(async { tokio::time::timeout(STOP_TIMEOUT, server.stop()).await });
                runtime.shutdown_timeout(STOP_TIMEOUT);
            })
            .await;
        }
    }
}

/// The simulator's own handle on the backends, direct (no proxy), with no background
/// tasks: it makes users and sessions with the server's code and reads the final state.
/// Its ids (user ids, session ids) are drawn from the plan's seed.
pub async fn admin_app(config: Config, seed: u64) -> anyhow::Result<AppState> {
    build_state(config, seeded_ids(seed, u64::MAX)).await.context("connecting the simulator to the backends")
}

/// Ids for one start of one server instance (or the simulator's own handle, `u64::MAX`):
/// the system clock, and a ChaCha stream seeded from the plan's seed and the start.
fn seeded_ids(seed: u64, start: u64) -> Ids {
    let stream = seed ^ start.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Ids::new(Arc::new(SystemClock), Arc::new(SeededEntropy::new(stream)))
}
