//! The same backends as [`super::LocalStack`], from Docker containers: `redis:7` and
//! `mongo:7` (a real `mongod`, standalone), started with `testcontainers` on mapped host
//! ports. Compiled only with the `containers` feature; needs a reachable Docker engine.
//!
//! Untested on the development and CI machines, which have no Docker engine: CI only
//! compiles and lints this module (`cargo clippy --features containers`). Containers
//! cannot be killed, paused or restarted through this type: fault-injection tests use
//! local processes.

use anyhow::Context;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::redis::{REDIS_PORT, Redis};

use super::RedisPersistence;

/// Image tag of both `redis` and `mongo`.
pub const IMAGE_TAG: &str = "7";

/// The port `mongod` listens on inside its container.
const MONGO_PORT: u16 = 27017;

/// One Redis and one MongoDB container. Dropping it removes both containers (the
/// `ContainerAsync` handles do that on drop).
#[derive(Debug)]
pub struct ContainerStack {
    // Options only so that `Drop` can drop them inside a tokio runtime context.
    redis: Option<ContainerAsync<Redis>>,
    mongo: Option<ContainerAsync<Mongo>>,
    redis_url: String,
    mongo_url: String,
}

impl ContainerStack {
    /// Starts both containers (pulling the images if needed) and waits until they log
    /// that they accept connections.
    pub async fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        let redis = Redis::default()
            .with_tag(IMAGE_TAG)
            .with_cmd(redis_command(persistence))
            .start()
            .await
            .context("starting a redis:7 container (is a Docker engine running and reachable?)")?;
        let redis_url = format!(
            "redis://{}:{}",
            redis.get_host().await.context("redis container host")?,
            redis.get_host_port_ipv4(REDIS_PORT).await.context("redis container port")?
        );
        let mongo = Mongo::default()
            .with_tag(IMAGE_TAG)
            .start()
            .await
            .context("starting a mongo:7 container (is a Docker engine running and reachable?)")?;
        let mongo_url = format!(
            "mongodb://{}:{}/",
            mongo.get_host().await.context("mongo container host")?,
            mongo.get_host_port_ipv4(MONGO_PORT).await.context("mongo container port")?
        );
        Ok(Self { redis: Some(redis), mongo: Some(mongo), redis_url, mongo_url })
    }

    pub fn redis_url(&self) -> String {
        self.redis_url.clone()
    }

    pub fn mongo_url(&self) -> String {
        self.mongo_url.clone()
    }
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
