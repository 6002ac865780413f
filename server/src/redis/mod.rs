//! Redis access: the connection (single node or Cluster), key names and the typed Lua
//! scripts. Handlers never build key names or send script bodies themselves.

pub mod keys;
#[cfg(feature = "memory")]
pub mod memory;
pub mod scripts;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub use keys::Keys;

/// Reconnection attempts of the single-node connection manager before a command fails.
const RECONNECT_RETRIES: usize = 2;

/// Failed commands (timeouts, I/O errors, dropped connections) after which a cluster
/// connection is made again from scratch.
pub const CLUSTER_RECONNECT_AFTER_FAILURES: u32 = 20;
/// Shortest time between two such reconnections. Short: an attempt made while the
/// fault lasts fails, and the next one is what restores service once it is gone (at
/// 5 s, the simulator's cluster seed 3 lost about 4 s of sale after a 450 ms blackhole).
/// An attempt costs one connection per node.
pub const CLUSTER_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// A Redis connection that is cheap to clone and reconnects by itself.
#[derive(Clone)]
pub enum RedisConn {
    Single(SingleHandle),
    Cluster(ClusterHandle),
    /// The in-process emulation (`memory://NAME`).
    #[cfg(feature = "memory")]
    Memory(memory::MemoryRedis),
}

/// A single-node connection, and the client that subscriptions connect with.
#[derive(Clone)]
pub struct SingleHandle {
    manager: ConnectionManager,
    client: redis::Client,
}

/// The payloads published on a channel, in order. The stream ends when the
/// subscription is lost (connection closed, server restarted).
pub type Payloads = futures::stream::BoxStream<'static, Vec<u8>>;

/// A Redis Cluster connection that is replaced when it keeps failing. The cluster
/// client does not always notice a node connection closed under it (a proxy or load
/// balancer that accepts, then closes while the node is down, leaves it waiting for
/// answers that never come, so every command to that node's slots times out for good).
/// After [`CLUSTER_RECONNECT_AFTER_FAILURES`] failed commands, at most once per
/// [`CLUSTER_RECONNECT_INTERVAL`], every node connection is made again.
#[derive(Clone)]
pub struct ClusterHandle(Arc<ClusterState>);

struct ClusterState {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    failures: AtomicU32,
    reconnecting: AtomicBool,
    last_reconnect: Mutex<Instant>,
    /// The seed URLs, and the one the next subscription connects to.
    seeds: Vec<String>,
    next_seed: AtomicUsize,
}

impl ClusterHandle {
    fn current(&self) -> ClusterConnection {
        self.0.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn observe<T>(&self, result: &RedisResult<T>) {
        let Err(err) = result else { return };
        if !(err.is_timeout() || err.is_io_error() || err.is_connection_dropped()) {
            return;
        }
        let failures = self.0.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < CLUSTER_RECONNECT_AFTER_FAILURES {
            return;
        }
        let due = self.0.last_reconnect.lock().map(|last| last.elapsed() >= CLUSTER_RECONNECT_INTERVAL).unwrap_or(true);
        if !due || self.0.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = self.0.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            state.reconnecting.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            match state.client.get_async_connection().await {
                Ok(fresh) => {
                    *state.conn.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                    tracing::warn!(failures, "Redis Cluster connection made again after repeated failures");
                }
                Err(err) => tracing::warn!(error = %err, "reconnecting to Redis Cluster failed; will retry"),
            }
            state.failures.store(0, Ordering::Relaxed);
            if let Ok(mut last) = state.last_reconnect.lock() {
                *last = Instant::now();
            }
            state.reconnecting.store(false, Ordering::Release);
        });
    }

    /// A command routed explicitly (e.g. to every master).
    pub async fn route_command(&self, cmd: Cmd, routing: RoutingInfo) -> RedisResult<Value> {
        let mut conn = self.current();
        let result = conn.route_command(cmd, routing).await;
        self.observe(&result);
        result
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisConn::Single"),
            Self::Cluster(_) => f.write_str("RedisConn::Cluster"),
            #[cfg(feature = "memory")]
            Self::Memory(_) => f.write_str("RedisConn::Memory"),
        }
    }
}

impl RedisConn {
    /// Connects to `url`; a comma-separated list of URLs means Redis Cluster seeds, and
    /// `memory://NAME` (with the `memory` feature) the in-process Redis of that name.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        #[cfg(feature = "memory")]
        if let Some(name) = memory::MemoryRedis::name_in_url(url) {
            anyhow::ensure!(!name.is_empty(), "a memory:// Redis URL needs a name");
            let redis = memory::MemoryRedis::named(name);
            anyhow::ensure!(
                !redis.refuses(),
                "connecting to Redis: connection refused (in-process Redis {name} is down)"
            );
            return Ok(Self::Memory(redis.with_response_timeout(Some(timeout))));
        }
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        if urls.len() > 1 {
            let seeds = urls.iter().map(|url| (*url).to_owned()).collect();
            let client = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .context("building the Redis Cluster client")?;
            let conn = client.get_async_connection().await.context("connecting to Redis Cluster")?;
            return Ok(Self::Cluster(ClusterHandle(Arc::new(ClusterState {
                client,
                conn: RwLock::new(conn),
                failures: AtomicU32::new(0),
                reconnecting: AtomicBool::new(false),
                last_reconnect: Mutex::new(Instant::now()),
                seeds,
                next_seed: AtomicUsize::new(0),
            }))));
        }
        let client = redis::Client::open(url).context("parsing the Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(200));
        let manager =
            ConnectionManager::new_with_config(client.clone(), config).await.context("connecting to Redis")?;
        Ok(Self::Single(SingleHandle { manager, client }))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Subscribes to `channel` on a connection of its own. On a cluster, each call
    /// tries the next seed (a PUBLISH reaches every node, so any will do).
    pub async fn subscribe(&self, channel: &str) -> RedisResult<Payloads> {
        match self {
            Self::Single(single) => subscribe_with(&single.client, channel).await,
            Self::Cluster(handle) => {
                let seeds = &handle.0.seeds;
                let index = handle.0.next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len().max(1);
                let client = redis::Client::open(seeds.get(index).map(String::as_str).unwrap_or_default())?;
                subscribe_with(&client, channel).await
            }
            #[cfg(feature = "memory")]
            Self::Memory(memory) => Ok(memory.subscribe(channel.as_bytes()).await?.boxed()),
        }
    }
}

async fn subscribe_with(client: &redis::Client, channel: &str) -> RedisResult<Payloads> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message().map(|message| message.get_payload_bytes().to_vec()).boxed())
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(single) => single.manager.req_packed_command(cmd),
            Self::Cluster(handle) => Box::pin(async move {
                let mut conn = handle.current();
                let result = conn.req_packed_command(cmd).await;
                handle.observe(&result);
                result
            }),
            #[cfg(feature = "memory")]
            Self::Memory(memory) => Box::pin(memory.query(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(single) => single.manager.req_packed_commands(cmd, offset, count),
            Self::Cluster(handle) => Box::pin(async move {
                let mut conn = handle.current();
                let result = conn.req_packed_commands(cmd, offset, count).await;
                handle.observe(&result);
                result
            }),
            #[cfg(feature = "memory")]
            Self::Memory(memory) => Box::pin(memory.query_pipeline(cmd, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(single) => single.manager.get_db(),
            Self::Cluster(handle) => handle.current().get_db(),
            #[cfg(feature = "memory")]
            Self::Memory(_) => 0,
        }
    }
}

/// Every master of the cluster: the cluster client sends `CONFIG GET` to one random node
/// by default, and answers per node (a map of address to reply) when routed here.
fn all_masters() -> RoutingInfo {
    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None))
}

/// The `maxmemory-policy` of the server (or of every master in a cluster).
pub async fn eviction_policies(conn: &mut RedisConn) -> anyhow::Result<Vec<String>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    let mut policies = Vec::new();
    match conn {
        RedisConn::Cluster(cluster) => {
            let reply = cluster.route_command(cmd, all_masters()).await.context("CONFIG GET maxmemory-policy")?;
            let Value::Map(per_node) = reply else { anyhow::bail!("CONFIG GET on every master: {reply:?}") };
            for (node, reply) in &per_node {
                let before = policies.len();
                collect_policy_values(reply, &mut policies);
                if policies.len() == before {
                    anyhow::bail!("no maxmemory-policy from cluster node {node:?}: {reply:?}");
                }
            }
        }
        _ => {
            let reply: Value = cmd.query_async(conn).await.context("CONFIG GET maxmemory-policy")?;
            collect_policy_values(&reply, &mut policies);
        }
    }
    Ok(policies)
}

fn collect_policy_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            // A flat ["maxmemory-policy", "<policy>"] reply, or one per cluster node.
            let mut iter = items.iter().peekable();
            while let Some(item) = iter.next() {
                match item {
                    Value::BulkString(name) if name.as_slice() == b"maxmemory-policy" => {
                        if let Some(Value::BulkString(policy)) = iter.next() {
                            out.push(String::from_utf8_lossy(policy).into_owned());
                        }
                    }
                    nested => collect_policy_values(nested, out),
                }
            }
        }
        Value::Map(pairs) => {
            for (name, policy) in pairs {
                match (name, policy) {
                    (Value::BulkString(n), Value::BulkString(p)) if n.as_slice() == b"maxmemory-policy" => {
                        out.push(String::from_utf8_lossy(p).into_owned());
                    }
                    (_, nested) => collect_policy_values(nested, out),
                }
            }
        }
        _ => {}
    }
}

/// The `run_id` of the Redis server: it changes when the server restarts, which is how
/// a restart that may have lost sale state is detected.
///
/// On a cluster, `INFO` goes to every master and the reply is a map of address to
/// text: the `run_id`s of all masters, sorted and joined, so a restart of any master
/// changes the result.
pub async fn run_id(conn: &mut RedisConn) -> anyhow::Result<String> {
    let reply: Value = redis::cmd("INFO").arg("server").query_async(conn).await.context("INFO server")?;
    let mut infos = Vec::new();
    collect_texts(&reply, &mut infos)?;
    let mut ids = Vec::with_capacity(infos.len());
    for info in &infos {
        let id = info.lines().find_map(|line| line.strip_prefix("run_id:")).map(str::trim);
        ids.push(id.context("INFO server has no run_id")?);
    }
    ids.sort_unstable();
    if ids.is_empty() {
        anyhow::bail!("INFO server has no run_id");
    }
    Ok(ids.join(","))
}

/// The text of an `INFO` reply: one string, or one per node (a cluster's map).
fn collect_texts(value: &Value, out: &mut Vec<String>) -> anyhow::Result<()> {
    match value {
        Value::BulkString(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => out.push(text.clone()),
        Value::Map(per_node) => {
            for (_, reply) in per_node {
                collect_texts(reply, out)?;
            }
        }
        other => anyhow::bail!("unexpected INFO reply: {other:?}"),
    }
    Ok(())
}
