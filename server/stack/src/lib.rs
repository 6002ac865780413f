//! Local backends for tests, the simulator, the load generator and `flashsale dev`:
//! fresh `redis-server` and FerretDB processes on free ports, each with its own
//! temporary directory. Processes die with the process that started them.
//! [`RedisCluster`] runs several `redis-server` processes as one Redis Cluster.
//!
//! With the `containers` feature and `FLASHSALE_BACKEND=containers`, [`start_backends`]
//! gives the same backends from containers instead ([`ContainerStack`]: the images of
//! `FLASHSALE_REDIS_IMAGE` and `FLASHSALE_MONGO_IMAGE`, `redis:7` and `mongo:7` by
//! default), through a Docker API; `scripts/test-containers` runs the tests that way on
//! the project's local Podman engine.

mod cluster;
#[cfg(feature = "containers")]
mod containers;
mod process;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

pub use cluster::{CLUSTER_NODE_TIMEOUT_MS, CLUSTER_SLOTS, RedisCluster, RedisClusterOptions};
#[cfg(feature = "containers")]
pub use containers::{
    CONTAINER_HOST_ENV, ContainerRole, ContainerStack, DEFAULT_MONGO_IMAGE, DEFAULT_REDIS_IMAGE, MONGO_IMAGE_ENV,
    REDIS_IMAGE_ENV,
};
pub use process::{FerretDb, RedisPersistence, RedisServer};

/// How long a backend may take to accept connections after it was started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Finds an executable: the environment variable `env_var`, then the project's tool
/// directory (where `scripts/install-deps` puts what it builds), then `PATH`.
pub fn find_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    // The project's own build comes before PATH: a `go install` of FerretDB without its
    // version file is on many PATHs and panics at start.
    let mut candidates = vec![tools_dir().join(name)];
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|dir| dir.join(name)));
    }
    candidates.push(PathBuf::from("/usr/bin").join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{name} not found (set {env_var}, or run scripts/install-deps)")
}

/// Where `scripts/install-deps` installs tools that Debian does not package.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLASHSALE_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/flashsale/bin")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One Redis and one FerretDB, started together.
#[derive(Debug)]
pub struct LocalStack {
    pub redis: RedisServer,
    pub mongo: FerretDb,
}

impl LocalStack {
    pub fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        let redis = RedisServer::start(persistence)?;
        let mongo = FerretDb::start()?;
        Ok(Self { redis, mongo })
    }
}

/// Where the backends come from: the environment variable [`BackendKind::ENV`]
/// (`local`, the default, or `containers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// `redis-server` and FerretDB child processes ([`LocalStack`]).
    #[default]
    Local,
    /// Redis and MongoDB containers (`ContainerStack`); needs the `containers` feature
    /// and a Docker API (`DOCKER_HOST`).
    Containers,
}

impl BackendKind {
    pub const ENV: &str = "FLASHSALE_BACKEND";

    /// Reads [`Self::ENV`]; unset or empty means [`BackendKind::Local`].
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(value) => value.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::Local),
            Err(std::env::VarError::NotUnicode(value)) => bail!("{}={value:?} is not UTF-8", Self::ENV),
        }
    }
}

impl FromStr for BackendKind {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Self> {
        match value.trim() {
            "" | "local" => Ok(Self::Local),
            "containers" => Ok(Self::Containers),
            other => bail!("{}={other}: expected `local` or `containers`", Self::ENV),
        }
    }
}

/// Running backends of either kind; dropping it stops the processes or removes the
/// containers.
#[derive(Debug)]
pub enum Backends {
    Local(LocalStack),
    #[cfg(feature = "containers")]
    Containers(Box<ContainerStack>),
}

impl Backends {
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Local(_) => BackendKind::Local,
            #[cfg(feature = "containers")]
            Self::Containers(_) => BackendKind::Containers,
        }
    }

    pub fn redis_url(&self) -> String {
        match self {
            Self::Local(stack) => stack.redis.url(),
            #[cfg(feature = "containers")]
            Self::Containers(stack) => stack.redis_url(),
        }
    }

    pub fn mongo_url(&self) -> String {
        match self {
            Self::Local(stack) => stack.mongo.url(),
            #[cfg(feature = "containers")]
            Self::Containers(stack) => stack.mongo_url(),
        }
    }
}

/// Starts one Redis and one MongoDB-compatible backend of the given kind. The local
/// processes are started on a blocking thread; containers need the `containers` feature
/// and a Docker API.
pub async fn start_backends(kind: BackendKind, persistence: RedisPersistence) -> anyhow::Result<Backends> {
    match kind {
        BackendKind::Local => {
            let stack = tokio::task::spawn_blocking(move || LocalStack::start(persistence))
                .await
                .context("the thread starting the local backends failed")??;
            Ok(Backends::Local(stack))
        }
        BackendKind::Containers => start_containers(persistence).await,
    }
}

#[cfg(feature = "containers")]
async fn start_containers(persistence: RedisPersistence) -> anyhow::Result<Backends> {
    Ok(Backends::Containers(Box::new(ContainerStack::start(persistence).await?)))
}

#[cfg(not(feature = "containers"))]
async fn start_containers(_persistence: RedisPersistence) -> anyhow::Result<Backends> {
    bail!(
        "{}=containers, but flashsale was built without the `containers` feature: \
         cargo test --features containers",
        BackendKind::ENV
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_parses() {
        assert_eq!("local".parse::<BackendKind>().expect("local"), BackendKind::Local);
        assert_eq!("".parse::<BackendKind>().expect("empty"), BackendKind::Local);
        assert_eq!("containers".parse::<BackendKind>().expect("containers"), BackendKind::Containers);
        assert!("docker".parse::<BackendKind>().is_err());
    }

    #[cfg(not(feature = "containers"))]
    #[tokio::test]
    async fn containers_without_the_feature_is_a_clear_error() {
        let error = start_backends(BackendKind::Containers, RedisPersistence::None).await.expect_err("an error");
        assert!(error.to_string().contains("cargo test --features containers"), "{error}");
    }
}
