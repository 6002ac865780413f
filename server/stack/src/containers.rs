//! The same backends as [`super::LocalStack`], from containers: a Redis and a
//! MongoDB-compatible server, started with `testcontainers` on one user-defined network
//! and published on fixed free host ports. Compiled only with the `containers` feature;
//! needs a Docker API (`DOCKER_HOST`): Docker, or the local Podman engine that
//! `scripts/containers` sets up.
//!
//! The images come from `FLASHSALE_REDIS_IMAGE` and `FLASHSALE_MONGO_IMAGE`, by default
//! `redis:7` and `mongo:7` (a real `mongod`, standalone) for machines with a registry;
//! `scripts/containers env` names the local `localhost/flashsale-redis` and
//! `localhost/flashsale-ferretdb` images instead. Both Redis images take options only
//! as their command (the official entrypoint and ours both start `redis-server`).
//!
//! A container keeps its host port when it is stopped and started again, so the
//! simulator can pause, kill, restart and partition it (`pause`, `resume`, `kill`,
//! `start_again`, `partition`, `heal_partition`) behind its fault proxies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};
use tokio::sync::Mutex;

use super::RedisPersistence;

/// Which Redis image to run, `name:tag`.
pub const REDIS_IMAGE_ENV: &str = "FLASHSALE_REDIS_IMAGE";
/// Which MongoDB-compatible image to run, `name:tag`: `mongo:...` or a FerretDB image
/// (any name containing `ferretdb`).
pub const MONGO_IMAGE_ENV: &str = "FLASHSALE_MONGO_IMAGE";
/// The host on which the containers' published ports are reached, when it is not the
/// one testcontainers infers (`scripts/containers env` sets it to `127.0.0.1`: its
/// Podman engine runs on this machine, even when this machine is itself a container).
pub const CONTAINER_HOST_ENV: &str = "FLASHSALE_CONTAINER_HOST";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7";
pub const DEFAULT_MONGO_IMAGE: &str = "mongo:7";

const REDIS_PORT: u16 = 6379;
/// The port `mongod` (and our FerretDB image) listens on inside its container.
const MONGO_PORT: u16 = 27017;
/// How often a restarted container's log is read while waiting for its ready line.
const READY_POLL: Duration = Duration::from_millis(50);

/// Which of the two containers a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRole {
    Redis,
    Mongo,
}

/// The log line a server writes once it accepts connections, and where.
#[derive(Debug, Clone, Copy)]
enum ReadyLine {
    Stdout(&'static str),
    Stderr(&'static str),
}

impl ReadyLine {
    fn for_redis() -> Self {
        Self::Stdout("Ready to accept connections")
    }

    /// `mongod` logs JSON lines on stdout; FerretDB logs on stderr.
    fn for_mongo(image: &str) -> Self {
        if image.contains("ferretdb") {
            Self::Stderr("Listening on TCP")
        } else {
            Self::Stdout("Waiting for connections")
        }
    }

    fn wait_for(self) -> WaitFor {
        match self {
            Self::Stdout(line) => WaitFor::message_on_stdout(line),
            Self::Stderr(line) => WaitFor::message_on_stderr(line),
        }
    }

    /// How many times the container's log (all its runs) holds the line.
    async fn count_in(self, container: &ContainerAsync<GenericImage>) -> anyhow::Result<usize> {
        let (log, line) = match self {
            Self::Stdout(line) => (container.stdout_to_vec().await?, line),
            Self::Stderr(line) => (container.stderr_to_vec().await?, line),
        };
        Ok(log.windows(line.len()).filter(|window| *window == line.as_bytes()).count())
    }
}

/// What it takes to create one of the two containers, again if need be.
#[derive(Debug, Clone)]
struct Recipe {
    image: String,
    ready: ReadyLine,
    command: Vec<String>,
    container_port: u16,
    host_port: u16,
}

impl Recipe {
    fn request(&self, network: &str) -> ContainerRequest<GenericImage> {
        let (name, tag) = split_image(&self.image);
        GenericImage::new(name, tag)
            .with_wait_for(self.ready.wait_for())
            .with_exposed_port(self.container_port.tcp())
            .with_cmd(self.command.clone())
            .with_mapped_port(self.host_port, ContainerPort::Tcp(self.container_port))
            .with_network(network)
    }

    async fn start(&self, network: &str) -> anyhow::Result<ContainerAsync<GenericImage>> {
        self.request(network).start().await.with_context(|| {
            format!(
                "starting a {} container on network {network} (is DOCKER_HOST a running engine? \
                 on this project's Podman: eval \"$(scripts/containers env)\")",
                self.image
            )
        })
    }
}

/// One of the two containers: `None` between a kill that loses the data (the container
/// is removed) and the start that recreates it.
#[derive(Debug)]
struct Slot {
    recipe: Recipe,
    container: Mutex<Option<ContainerAsync<GenericImage>>>,
    /// The address it had on the network before a partition, to come back with it.
    partitioned_ip: std::sync::Mutex<Option<String>>,
}

/// One Redis and one MongoDB container on a network of their own. Dropping it removes
/// both containers (the `ContainerAsync` handles do that on drop).
#[derive(Debug)]
pub struct ContainerStack {
    redis: Slot,
    mongo: Slot,
    persistence: RedisPersistence,
    network: String,
    docker: Docker,
    redis_url: String,
    mongo_url: String,
    redis_addr: SocketAddr,
    mongo_addr: SocketAddr,
}

impl ContainerStack {
    /// Starts both containers (pulling the images if the engine can and needs to) and
    /// waits until each logs that it accepts connections.
    pub async fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_defaults().context("connecting to the Docker API (DOCKER_HOST)")?;
        let network = unique_network_name();
        let redis_image = image_from_env(REDIS_IMAGE_ENV, DEFAULT_REDIS_IMAGE)?;
        let mongo_image = image_from_env(MONGO_IMAGE_ENV, DEFAULT_MONGO_IMAGE)?;
        let redis_recipe = Recipe {
            ready: ReadyLine::for_redis(),
            command: redis_command(persistence),
            container_port: REDIS_PORT,
            host_port: super::free_port()?,
            image: redis_image,
        };
        let mongo_recipe = Recipe {
            ready: ReadyLine::for_mongo(&mongo_image),
            command: Vec::new(),
            container_port: MONGO_PORT,
            host_port: super::free_port()?,
            image: mongo_image,
        };
        let redis = redis_recipe.start(&network).await?;
        let mongo = mongo_recipe.start(&network).await?;
        let redis_addr = published_addr(&redis, redis_recipe.host_port).await?;
        let mongo_addr = published_addr(&mongo, mongo_recipe.host_port).await?;
        Ok(Self {
            redis: Slot::new(redis_recipe, redis),
            mongo: Slot::new(mongo_recipe, mongo),
            persistence,
            network,
            docker,
            redis_url: format!("redis://{redis_addr}"),
            mongo_url: format!("mongodb://{mongo_addr}/"),
            redis_addr,
            mongo_addr,
        })
    }

    pub fn redis_url(&self) -> String {
        self.redis_url.clone()
    }

    pub fn mongo_url(&self) -> String {
        self.mongo_url.clone()
    }

    /// The address a client (or a fault proxy) connects to.
    pub fn addr(&self, role: ContainerRole) -> SocketAddr {
        match role {
            ContainerRole::Redis => self.redis_addr,
            ContainerRole::Mongo => self.mongo_addr,
        }
    }

    /// The images in use, `(redis, mongo)`.
    pub fn images(&self) -> (&str, &str) {
        (&self.redis.recipe.image, &self.mongo.recipe.image)
    }

    /// Freezes the container's processes (`docker pause`): connections stay open, nothing
    /// answers.
    pub async fn pause(&self, role: ContainerRole) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let guard = slot.container.lock().await;
        guard.as_ref().context("the container is gone")?.pause().await?;
        Ok(())
    }

    pub async fn resume(&self, role: ContainerRole) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let guard = slot.container.lock().await;
        guard.as_ref().context("the container is gone")?.unpause().await?;
        Ok(())
    }

    /// Stops the container without a grace period (SIGKILL). Without `keep_data`, Redis
    /// comes back empty from [`Self::start_again`]: with no persistence that is what a
    /// restarted `redis-server` does anyway (`save ""`, no AOF); with its AOF on, the
    /// container is removed and [`Self::start_again`] creates a new one on the same
    /// host port. MongoDB keeps its data either way.
    pub async fn kill(&self, role: ContainerRole, keep_data: bool) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let mut guard = slot.container.lock().await;
        let container = guard.as_ref().context("the container is gone")?;
        let remove = role == ContainerRole::Redis && !keep_data && self.persistence == RedisPersistence::AppendOnly;
        container.stop_with_timeout(Some(0)).await?;
        if remove {
            let container = guard.take().context("the container is gone")?;
            container.rm().await.context("removing the killed redis container")?;
        }
        Ok(())
    }

    /// Starts a killed container again on the same host port (or, after a kill that
    /// lost the data, a new one) and waits until it logs that it accepts connections.
    pub async fn start_again(&self, role: ContainerRole) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let mut guard = slot.container.lock().await;
        let Some(container) = guard.as_ref() else {
            *guard = Some(slot.recipe.start(&self.network).await?);
            return Ok(());
        };
        let ready_before = slot.recipe.ready.count_in(container).await?;
        container.start().await?;
        let deadline = Instant::now() + super::STARTUP_TIMEOUT;
        while slot.recipe.ready.count_in(container).await? <= ready_before {
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {:?} within {:?} of its restart",
                    slot.recipe.image,
                    slot.recipe.ready,
                    super::STARTUP_TIMEOUT
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
        Ok(())
    }

    /// Cuts the container off its network (`docker network disconnect`): it sees only
    /// its loopback; its published port still accepts TCP connections, which never get
    /// an answer; connections open before the partition stay dead after it heals.
    pub async fn partition(&self, role: ContainerRole) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let id = slot.id().await?;
        let inspect = self.docker.inspect_container(&id, None).await.context("inspecting the container")?;
        let ip = inspect
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|networks| networks.get(&self.network).cloned())
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("the container has no address on {}: partitioned already?", self.network))?;
        let request = NetworkDisconnectRequest { container: id, force: Some(true) };
        self.docker.disconnect_network(&self.network, request).await.context("disconnecting the container")?;
        *slot.partitioned_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ip);
        Ok(())
    }

    /// Connects the container to its network again, with the address it had: the
    /// engine's port forwarding points at that address.
    pub async fn heal_partition(&self, role: ContainerRole) -> anyhow::Result<()> {
        let slot = self.slot(role);
        let id = slot.id().await?;
        let ip = slot.partitioned_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let ip = ip.context("the container is not partitioned")?;
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip), ..Default::default() }),
            ..Default::default()
        };
        let request = NetworkConnectRequest { container: id, endpoint_config: Some(endpoint) };
        self.docker.connect_network(&self.network, request).await.context("connecting the container again")?;
        Ok(())
    }

    fn slot(&self, role: ContainerRole) -> &Slot {
        match role {
            ContainerRole::Redis => &self.redis,
            ContainerRole::Mongo => &self.mongo,
        }
    }
}

impl Slot {
    fn new(recipe: Recipe, container: ContainerAsync<GenericImage>) -> Self {
        Self { recipe, container: Mutex::new(Some(container)), partitioned_ip: std::sync::Mutex::new(None) }
    }

    async fn id(&self) -> anyhow::Result<String> {
        let guard = self.container.lock().await;
        Ok(guard.as_ref().context("the container is gone")?.id().to_owned())
    }
}

/// `name:tag` from the environment variable, or the default.
fn image_from_env(var: &str, default: &str) -> anyhow::Result<String> {
    match std::env::var(var) {
        Ok(image) if !image.trim().is_empty() => Ok(image.trim().to_owned()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(value)) => bail!("{var}={value:?} is not UTF-8"),
    }
}

/// `("localhost/flashsale-redis", "7.0")` from `localhost/flashsale-redis:7.0`; a name
/// without a tag (a colon after its last slash) is `latest`.
fn split_image(image: &str) -> (&str, &str) {
    let after_slash = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[after_slash..].rfind(':') {
        Some(colon) => (&image[..after_slash + colon], &image[after_slash + colon + 1..]),
        None => (image, "latest"),
    }
}

/// A network name no other stack (of this process or another) uses.
fn unique_network_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let count = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.subsec_nanos());
    format!("flashsale-{}-{count}-{nanos:08x}", std::process::id())
}

/// The published port's address: on [`CONTAINER_HOST_ENV`] if set, else where
/// testcontainers says (inside a container, with a Unix socket, that is the gateway of
/// the engine's `bridge` network, right for a socket mounted from the host, wrong for an
/// engine running beside the tests). IPv4 for `localhost`: Podman publishes on IPv4 and
/// `localhost` may resolve to `::1` first.
async fn published_addr(container: &ContainerAsync<GenericImage>, port: u16) -> anyhow::Result<SocketAddr> {
    let host = match std::env::var(CONTAINER_HOST_ENV) {
        Ok(host) if !host.trim().is_empty() => host.trim().to_owned(),
        _ => container.get_host().await.context("the container's host")?.to_string(),
    };
    if host == "localhost" {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// The container's command: options only (both images' entrypoints start
/// `redis-server`), the same settings as the local `redis-server`.
/// `maxmemory-policy noeviction` is Redis's default; it is set anyway because the server
/// refuses to start against a Redis that may evict keys, and an image's defaults can
/// change.
fn redis_command(persistence: RedisPersistence) -> Vec<String> {
    let mut args = vec!["--save", "", "--maxmemory-policy", "noeviction"];
    match persistence {
        RedisPersistence::None => args.extend(["--appendonly", "no"]),
        RedisPersistence::AppendOnly => args.extend(["--appendonly", "yes", "--appendfsync", "always"]),
    }
    args.into_iter().map(String::from).collect()
}

impl Drop for ContainerStack {
    fn drop(&mut self) {
        let redis = self.redis.container.get_mut().take();
        let mongo = self.mongo.container.get_mut().take();
        // A `ContainerAsync` removes its container on drop through the current tokio
        // runtime and panics without one: outside a runtime, lend it a small one.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop((redis, mongo));
            return;
        }
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => {
                let _guard = runtime.enter();
                drop((redis, mongo));
            }
            Err(error) => {
                tracing::warn!(%error, "no tokio runtime to remove the backend containers; leaving them running");
                std::mem::forget((redis, mongo));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_never_evicts_and_persists_as_asked() {
        let none = redis_command(RedisPersistence::None).join(" ");
        assert!(none.starts_with("--"), "options only: {none}");
        assert!(none.contains("--maxmemory-policy noeviction"), "{none}");
        assert!(none.contains("--appendonly no"), "{none}");
        let aof = redis_command(RedisPersistence::AppendOnly).join(" ");
        assert!(aof.contains("--appendonly yes --appendfsync always"), "{aof}");
    }

    #[test]
    fn image_names_split_at_the_tag_colon() {
        assert_eq!(split_image("redis:7"), ("redis", "7"));
        assert_eq!(split_image("localhost/flashsale-redis:7.0"), ("localhost/flashsale-redis", "7.0"));
        assert_eq!(split_image("registry:5000/mongo"), ("registry:5000/mongo", "latest"));
        assert_eq!(split_image("mongo"), ("mongo", "latest"));
    }

    #[test]
    fn ferretdb_and_mongod_announce_readiness_differently() {
        assert!(matches!(ReadyLine::for_mongo("localhost/flashsale-ferretdb:1.24.2"), ReadyLine::Stderr(_)));
        assert!(matches!(ReadyLine::for_mongo("mongo:7"), ReadyLine::Stdout(_)));
    }
}
