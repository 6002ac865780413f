//! The same backends as [`super::LocalStack`], from Docker containers: `redis:7` and
//! `mongo:7` (a real `mongod`, standalone), started with `testcontainers` on mapped host
//! ports. Compiled only with the `containers` feature; needs a reachable Docker engine.
//!
//! Untested on the development and CI machines, which have no Docker engine: CI only
//! compiles and lints this module (`cargo clippy --features containers`). Each container
//! is published on a fixed free host port, so that it keeps its address when it is
//! stopped and started again: the simulator pauses, kills and restarts containers
//! (`pause`, `resume`, `kill`, `start_again`); the integration tests' fault injection
//! uses local processes.

use std::net::SocketAddr;

use anyhow::Context;
use testcontainers::core::{CmdWaitFor, ExecCommand, IntoContainerPort};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::redis::{REDIS_PORT, Redis};

use super::RedisPersistence;

/// Image tag of both `redis` and `mongo`.
pub const IMAGE_TAG: &str = "7";

/// The port `mongod` listens on inside its container.
const MONGO_PORT: u16 = 27017;

/// Which of the two containers a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRole {
    Redis,
    Mongo,
}

/// One Redis and one MongoDB container. Dropping it removes both containers (the
/// `ContainerAsync` handles do that on drop).
#[derive(Debug)]
pub struct ContainerStack {
    // Options only so that `Drop` can drop them inside a tokio runtime context.
    redis: Option<ContainerAsync<Redis>>,
    mongo: Option<ContainerAsync<Mongo>>,
    redis_url: String,
    mongo_url: String,
    redis_addr: SocketAddr,
    mongo_addr: SocketAddr,
}

impl ContainerStack {
    /// Starts both containers (pulling the images if needed) and waits until they log
    /// that they accept connections.
    pub async fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        let redis_port = super::free_port()?;
        let mongo_port = super::free_port()?;
        let redis = Redis::default()
            .with_tag(IMAGE_TAG)
            .with_cmd(redis_command(persistence))
            .with_mapped_port(redis_port, REDIS_PORT.tcp())
            .start()
            .await
            .context("starting a redis:7 container (is a Docker engine running and reachable?)")?;
        let redis_host = redis.get_host().await.context("redis container host")?.to_string();
        let mongo = Mongo::default()
            .with_tag(IMAGE_TAG)
            .with_mapped_port(mongo_port, MONGO_PORT.tcp())
            .start()
            .await
            .context("starting a mongo:7 container (is a Docker engine running and reachable?)")?;
        let mongo_host = mongo.get_host().await.context("mongo container host")?.to_string();
        Ok(Self {
            redis: Some(redis),
            mongo: Some(mongo),
            redis_url: format!("redis://{redis_host}:{redis_port}"),
            mongo_url: format!("mongodb://{mongo_host}:{mongo_port}/"),
            redis_addr: resolve(&redis_host, redis_port).await?,
            mongo_addr: resolve(&mongo_host, mongo_port).await?,
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

    /// Freezes the container's processes (`docker pause`): connections stay open, nothing
    /// answers.
    pub async fn pause(&self, role: ContainerRole) -> anyhow::Result<()> {
        match role {
            ContainerRole::Redis => self.redis()?.pause().await?,
            ContainerRole::Mongo => self.mongo()?.pause().await?,
        }
        Ok(())
    }

    pub async fn resume(&self, role: ContainerRole) -> anyhow::Result<()> {
        match role {
            ContainerRole::Redis => self.redis()?.unpause().await?,
            ContainerRole::Mongo => self.mongo()?.unpause().await?,
        }
        Ok(())
    }

    /// Stops the container without a grace period (SIGKILL). For Redis without
    /// `keep_data`, its data files are deleted first, so it comes back empty.
    pub async fn kill(&self, role: ContainerRole, keep_data: bool) -> anyhow::Result<()> {
        match role {
            ContainerRole::Redis => {
                let redis = self.redis()?;
                if !keep_data {
                    let wipe = ExecCommand::new([
                        "sh",
                        "-c",
                        "rm -rf /data/appendonlydir /data/appendonly.aof /data/dump.rdb",
                    ])
                    .with_cmd_ready_condition(CmdWaitFor::exit_code(0));
                    redis.exec(wipe).await.context("deleting redis data files")?;
                }
                redis.stop_with_timeout(Some(0)).await?;
            }
            ContainerRole::Mongo => self.mongo()?.stop_with_timeout(Some(0)).await?,
        }
        Ok(())
    }

    /// Starts a stopped container again on the same host port and waits until it
    /// accepts connections.
    pub async fn start_again(&self, role: ContainerRole) -> anyhow::Result<()> {
        match role {
            ContainerRole::Redis => self.redis()?.start().await?,
            ContainerRole::Mongo => self.mongo()?.start().await?,
        }
        let addr = self.addr(role);
        tokio::task::spawn_blocking(move || super::wait_for_port(addr, super::STARTUP_TIMEOUT))
            .await
            .context("waiting for the container")?
    }

    fn redis(&self) -> anyhow::Result<&ContainerAsync<Redis>> {
        self.redis.as_ref().context("the redis container is gone")
    }

    fn mongo(&self) -> anyhow::Result<&ContainerAsync<Mongo>> {
        self.mongo.as_ref().context("the mongo container is gone")
    }
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// The container's command line, the same settings as the local `redis-server`.
/// `maxmemory-policy noeviction` is Redis's default; it is set anyway because the server
/// refuses to start against a Redis that may evict keys, and an image's defaults can
/// change.
fn redis_command(persistence: RedisPersistence) -> Vec<String> {
    let mut args = vec!["redis-server", "--save", "", "--maxmemory-policy", "noeviction"];
    match persistence {
        RedisPersistence::None => args.extend(["--appendonly", "no"]),
        RedisPersistence::AppendOnly => args.extend(["--appendonly", "yes", "--appendfsync", "always"]),
    }
    args.into_iter().map(String::from).collect()
}

impl Drop for ContainerStack {
    fn drop(&mut self) {
        // A `ContainerAsync` removes its container on drop through the current tokio
        // runtime and panics without one: outside a runtime, lend it a small one.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.redis.take();
            self.mongo.take();
            return;
        }
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => {
                let _guard = runtime.enter();
                self.redis.take();
                self.mongo.take();
            }
            Err(error) => {
                tracing::warn!(%error, "no tokio runtime to remove the backend containers; leaving them running");
                std::mem::forget(self.redis.take());
                std::mem::forget(self.mongo.take());
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
        assert!(none.contains("--maxmemory-policy noeviction"), "{none}");
        assert!(none.contains("--appendonly no"), "{none}");
        let aof = redis_command(RedisPersistence::AppendOnly).join(" ");
        assert!(aof.contains("--appendonly yes --appendfsync always"), "{aof}");
    }
}
