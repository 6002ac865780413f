//! Redis access: the connection (single node or Cluster), key names and the typed Lua
//! scripts. Handlers never build key names or send script bodies themselves.

pub mod keys;
pub mod scripts;

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

pub use keys::Keys;

/// Reconnection attempts of the single-node connection manager before a command fails.
const RECONNECT_RETRIES: usize = 2;

/// A Redis connection that is cheap to clone and reconnects by itself.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisConn::Single"),
            Self::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

impl RedisConn {
    /// Connects to `url`; a comma-separated list of URLs means Redis Cluster seeds.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        if urls.len() > 1 {
            let client = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .context("building the Redis Cluster client")?;
            let conn = client.get_async_connection().await.context("connecting to Redis Cluster")?;
            return Ok(Self::Cluster(conn));
        }
        let client = redis::Client::open(url).context("parsing the Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_with_config(client, config).await.context("connecting to Redis")?;
        Ok(Self::Single(manager))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
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
        RedisConn::Single(_) => {
            let reply: Value = cmd.query_async(conn).await.context("CONFIG GET maxmemory-policy")?;
            collect_policy_values(&reply, &mut policies);
        }
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
