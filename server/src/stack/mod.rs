//! Local backends for tests, the simulator, the load generator and `flashsale dev`:
//! fresh `redis-server` and FerretDB processes on free ports, each with its own
//! temporary directory. Processes die with the process that started them.

mod process;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

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
