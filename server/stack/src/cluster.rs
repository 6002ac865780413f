//! A local Redis Cluster: N masters without replicas, each a [`RedisServer`] child
//! process in cluster mode, for the tests and the simulator. The slots are split evenly
//! and never move (no resharding), so a key's node follows from its slot.
//!
//! A node restarted with [`RedisServer::restart`] or [`RedisServer::restart_empty`]
//! keeps its `nodes.conf` and rejoins with its slots; [`RedisCluster::wait_healthy`]
//! waits until the cluster agrees it is back.

use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::Value;

use super::{RedisPersistence, RedisServer, STARTUP_TIMEOUT};

/// Hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16_384;
/// `cluster-node-timeout`: how long a node may be unreachable before it is failing.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2_000;
/// Pause between two looks at the cluster's state while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound of one setup or inspection command (connect, send, read).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start a [`RedisCluster`].
#[derive(Debug, Clone)]
pub struct RedisClusterOptions {
    /// Number of masters (no replicas); the slots are split evenly between them.
    pub masters: usize,
    pub persistence: RedisPersistence,
    /// Port each node announces to clients (e.g. a fault proxy in front of it), one per
    /// master; `None` = its own port.
    pub announce_ports: Option<Vec<u16>>,
}

impl Default for RedisClusterOptions {
    fn default() -> Self {
        Self { masters: 3, persistence: RedisPersistence::None, announce_ports: None }
    }
}

/// A running Redis Cluster of `redis-server` child processes; dropping it stops them.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Cluster bus port of each node.
    bus_ports: Vec<u16>,
    /// Client port each node announces (its own port without a proxy).
    announced: Vec<u16>,
    /// Slots each node was given at the start.
    slots: Vec<RangeInclusive<u16>>,
}

impl RedisCluster {
    /// Starts the nodes, assigns the slots (`CLUSTER ADDSLOTSRANGE`, split evenly),
    /// introduces the nodes to each other (`CLUSTER MEET`) and waits until every node
    /// reports `cluster_state:ok` and all agree on the slot map. Blocking.
    pub fn start(options: RedisClusterOptions) -> anyhow::Result<Self> {
        let RedisClusterOptions { masters, persistence, announce_ports } = options;
        if masters == 0 || masters > usize::from(CLUSTER_SLOTS) {
            bail!("a Redis Cluster needs between 1 and {CLUSTER_SLOTS} masters, not {masters}");
        }
        let announce_count = announce_ports.as_ref().map_or(masters, Vec::len);
        if announce_count != masters {
            bail!("{announce_count} announce ports for {masters} masters");
        }
        let ports = free_ports(2 * masters)?;
        let (client_ports, bus_ports) = ports.split_at(masters);
        let announced = announce_ports.clone().unwrap_or_else(|| client_ports.to_vec());
        let mut nodes = Vec::with_capacity(masters);
        for index in 0..masters {
            let bus_port = bus_ports[index];
            let announce = announce_ports.as_ref().map(|_| announced[index]);
            let node = RedisServer::start_with_args(persistence, client_ports[index], |dir| {
                node_args(dir, bus_port, announce)
            })
            .with_context(|| format!("starting cluster node {index}"))?;
            nodes.push(node);
        }
        let slots = (0..masters).map(|index| slot_range(index, masters)).collect();
        let cluster = Self { nodes, bus_ports: bus_ports.to_vec(), announced, slots };
        cluster.form()?;
        cluster.wait_healthy(STARTUP_TIMEOUT).context("the Redis Cluster did not form")?;
        Ok(cluster)
    }

    /// Gives each node its config epoch and slots, then has the first node meet the others.
    fn form(&self) -> anyhow::Result<()> {
        for (index, (node, slots)) in self.nodes.iter().zip(&self.slots).enumerate() {
            let mut conn = connect(node.port())?;
            let epoch = index + 1;
            let () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(epoch)
                .query(&mut conn)
                .with_context(|| format!("CLUSTER SET-CONFIG-EPOCH on node {index}"))?;
            let () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(*slots.start())
                .arg(*slots.end())
                .query(&mut conn)
                .with_context(|| format!("CLUSTER ADDSLOTSRANGE on node {index}"))?;
        }
        let Some(first) = self.nodes.first() else { return Ok(()) };
        let mut conn = connect(first.port())?;
        for (index, (node, bus_port)) in self.nodes.iter().zip(&self.bus_ports).enumerate().skip(1) {
            let () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .arg(*bus_port)
                .query(&mut conn)
                .with_context(|| format!("CLUSTER MEET node {index}"))?;
        }
        Ok(())
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, to kill, pause or restart it. Panics if `index` is out of range, like
    /// slice indexing.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The nodes' real client ports.
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The client port each node announces (its real port unless announce ports were given).
    pub fn announced_ports(&self) -> &[u16] {
        &self.announced
    }

    /// The cluster bus port of each node.
    pub fn bus_ports(&self) -> &[u16] {
        &self.bus_ports
    }

    /// Comma-separated `redis://127.0.0.1:<announced port>` seeds: what the server's
    /// `RedisConn::connect` takes as a cluster (with one master it is a single URL, which
    /// works as a plain connection since that node holds every slot).
    pub fn seed_urls(&self) -> String {
        urls(&self.announced)
    }

    /// The seeds at the real ports, bypassing any proxy.
    pub fn direct_seed_urls(&self) -> String {
        urls(&self.node_ports())
    }

    /// The slots node `index` was given at the start (they never move).
    pub fn slots_of(&self, index: usize) -> Option<RangeInclusive<u16>> {
        self.slots.get(index).cloned()
    }

    /// The index of the node that serves `slot`.
    pub fn node_of_slot(&self, slot: u16) -> Option<usize> {
        self.slots.iter().position(|range| range.contains(&slot))
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of the first node that answers).
    pub fn key_slot(&self, key: &str) -> anyhow::Result<u16> {
        let mut last_error = None;
        for node in &self.nodes {
            let asked = connect(node.port())
                .and_then(|mut conn| Ok(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query::<u16>(&mut conn)?));
            match asked {
                Ok(slot) => return Ok(slot),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the cluster has no nodes"))).context("CLUSTER KEYSLOT")
    }

    /// The index of the node that holds `key`.
    pub fn node_of_key(&self, key: &str) -> anyhow::Result<usize> {
        let slot = self.key_slot(key)?;
        self.node_of_slot(slot).with_context(|| format!("no node serves slot {slot}"))
    }

    /// Waits until every node reports `cluster_state:ok`, knows every other node, sees
    /// every slot served by a node it does not consider failing, and all nodes agree on
    /// the slot map. After a node restart this is when the cluster is whole again.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.health_problem() {
                Ok(None) => return Ok(()),
                Ok(Some(problem)) => problem,
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!("the Redis Cluster is not healthy after {timeout:?}: {problem}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `None` when healthy, otherwise what is still wrong.
    fn health_problem(&self) -> anyhow::Result<Option<String>> {
        let mut first_map: Option<Vec<SlotRange>> = None;
        for (index, node) in self.nodes.iter().enumerate() {
            let mut conn = connect(node.port()).with_context(|| format!("node {index}"))?;
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).context("CLUSTER INFO")?;
            let field = |name: &str| {
                info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim).unwrap_or("")
            };
            let slots = CLUSTER_SLOTS.to_string();
            let known = self.nodes.len().to_string();
            let expected = [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", slots.as_str()),
                ("cluster_slots_ok", slots.as_str()),
                ("cluster_known_nodes", known.as_str()),
            ];
            for (name, want) in expected {
                let got = field(name);
                if got != want {
                    return Ok(Some(format!("node {index}: {name} is {got:?}, not {want}")));
                }
            }
            let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).context("CLUSTER SLOTS")?;
            let map = slot_map(&reply).with_context(|| format!("node {index}: CLUSTER SLOTS"))?;
            match &first_map {
                None => first_map = Some(map),
                Some(first) if *first == map => {}
                Some(first) => {
                    return Ok(Some(format!("node {index} sees the slot map {map:?}, node 0 sees {first:?}")));
                }
            }
        }
        Ok(None)
    }
}

/// One line of `CLUSTER SLOTS`: first slot, last slot, id of the master.
type SlotRange = (i64, i64, String);

/// `CLUSTER SLOTS` as sorted (first, last, master id) ranges; ids, not addresses, so
/// the comparison does not depend on announced ports.
fn slot_map(reply: &Value) -> anyhow::Result<Vec<SlotRange>> {
    let Value::Array(ranges) = reply else { bail!("not an array: {reply:?}") };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let (first, last, master) = match range {
            Value::Array(items) => match items.as_slice() {
                [Value::Int(first), Value::Int(last), Value::Array(master), ..] => (*first, *last, master),
                _ => bail!("unexpected slot range {range:?}"),
            },
            _ => bail!("unexpected slot range {range:?}"),
        };
        let id = match master.get(2) {
            Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
            Some(Value::SimpleString(id)) => id.clone(),
            _ => bail!("slot range without a node id: {range:?}"),
        };
        map.push((first, last, id));
    }
    map.sort();
    Ok(map)
}

/// The slots of node `index` of `masters`: an even split of the 16384 slots.
fn slot_range(index: usize, masters: usize) -> RangeInclusive<u16> {
    let total = usize::from(CLUSTER_SLOTS);
    let start = index * total / masters;
    let end = (index + 1) * total / masters - 1;
    // Both are below CLUSTER_SLOTS, so they fit.
    let start = u16::try_from(start).unwrap_or(CLUSTER_SLOTS - 1);
    let end = u16::try_from(end).unwrap_or(CLUSTER_SLOTS - 1);
    start..=end
}

/// The cluster arguments of one node, its `nodes.conf` in its own directory.
fn node_args(dir: &std::path::Path, bus_port: u16, announce_port: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        dir.join("nodes.conf").display().to_string(),
        "--cluster-node-timeout".into(),
        CLUSTER_NODE_TIMEOUT_MS.to_string(),
        "--cluster-require-full-coverage".into(),
        "no".into(),
        "--cluster-allow-reads-when-down".into(),
        "yes".into(),
        "--cluster-port".into(),
        bus_port.to_string(),
    ];
    if let Some(announced) = announce_port {
        args.extend([
            "--cluster-announce-ip".into(),
            "127.0.0.1".into(),
            "--cluster-announce-port".into(),
            announced.to_string(),
            "--cluster-announce-bus-port".into(),
            bus_port.to_string(),
        ]);
    }
    args
}

/// `count` distinct free ports: every listener is held until all are chosen.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners.iter().map(|listener| Ok(listener.local_addr()?.port())).collect()
}

fn urls(ports: &[u16]) -> String {
    ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
}

/// A blocking connection to one node, bounded in time.
fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let conn = client.get_connection_with_timeout(COMMAND_TIMEOUT).with_context(|| format!("connecting to {port}"))?;
    conn.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_split_evenly_without_gaps() {
        for masters in [1, 2, 3, 5, 7] {
            let ranges: Vec<_> = (0..masters).map(|index| slot_range(index, masters)).collect();
            assert_eq!(*ranges[0].start(), 0);
            assert_eq!(*ranges[masters - 1].end(), CLUSTER_SLOTS - 1);
            for pair in ranges.windows(2) {
                assert_eq!(*pair[0].end() + 1, *pair[1].start(), "{ranges:?}");
            }
            let sizes: Vec<usize> = ranges.iter().map(|range| range.clone().count()).collect();
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{sizes:?}");
        }
    }

    #[test]
    fn announce_arguments_only_with_announce_ports() {
        let dir = std::path::Path::new("/tmp/x");
        let plain = node_args(dir, 17_000, None);
        assert!(plain.contains(&"--cluster-port".to_owned()));
        assert!(!plain.iter().any(|arg| arg.starts_with("--cluster-announce")));
        let proxied = node_args(dir, 17_000, Some(7_001));
        let at = proxied.iter().position(|arg| arg == "--cluster-announce-port").expect("announce port");
        assert_eq!(proxied[at + 1], "7001");
    }

    #[test]
    fn a_three_master_cluster_forms_and_a_node_rejoins_after_losing_its_data() {
        let mut cluster = RedisCluster::start(RedisClusterOptions::default()).expect("cluster");
        assert_eq!(cluster.nodes().len(), 3);
        assert_eq!(cluster.seed_urls().split(',').count(), 3);
        assert_eq!(cluster.seed_urls(), cluster.direct_seed_urls());
        let key = "{p:unit-test}:sale";
        let index = cluster.node_of_key(key).expect("slot");
        let mut conn = connect(cluster.nodes()[index].port()).expect("connect");
        let () = redis::cmd("SET").arg(key).arg("1").query(&mut conn).expect("SET on its own node");
        cluster.node_mut(index).restart_empty().expect("restart");
        cluster.wait_healthy(STARTUP_TIMEOUT).expect("healthy again");
        let mut conn = connect(cluster.nodes()[index].port()).expect("connect");
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut conn).expect("GET on its own node");
        assert_eq!(value, None, "the data is gone, the slots are still served");
        assert!(cluster.nodes()[index].dir().join("nodes.conf").is_file());
    }
}
