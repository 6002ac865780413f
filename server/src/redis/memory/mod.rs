//! An in-process emulation of Redis 7.0.15 behind [`RedisConn`](super::RedisConn), for
//! the deterministic simulator and tests (`memory://NAME` URLs, cargo feature `memory`).
//!
//! It keeps an ordered keyspace (strings, hashes, sets, sorted sets, streams) with
//! expiry on an injected clock, runs the project's Lua scripts unchanged on Lua 5.1.5
//! with Redis 7.0's conversions, errors and sandbox, delivers pub/sub in process, and
//! injects faults ([`Faults`]). Each command, script and transaction runs under one
//! lock, so scripts are atomic. Run ids follow from a seed: nothing here reads the OS's
//! randomness.
//!
//! Not emulated: eviction and `maxmemory`, persistence, replication, cluster, blocking
//! commands, lists, keyspace notifications, pattern subscriptions, RESP3, script
//! timeouts and `SCRIPT KILL`, read-only enforcement of `EVAL_RO`, the `struct` and
//! `cmsgpack` Lua libraries, BYLEX ranges, `MAXLEN ~` node closing by bytes, and
//! protection of the library tables (`string.x = 1` is not refused). Hashes and sets
//! answer in byte order where Redis answers in hash order. An error raised by a library
//! function written in Rust (`cjson`, `bit`, `math.random`, `loadstring`, the globals'
//! guard) carries Redis's text and position, and `pcall` hands it over as that string,
//! but an `xpcall` handler or `coroutine.resume` sees an opaque value instead, and
//! `coroutine.wrap` does not prefix a second position to it.
//!
//! With the cargo feature `memory-broken` it is deliberately wrong in one way, so a
//! differential test against a real redis-server can show it catches it: a Lua number
//! returned by a script is rounded to the nearest integer instead of truncated toward
//! zero (`return 3.99` answers 4, Redis answers 3).

mod admin;
mod cjson;
mod cjson_decode;
mod collections;
mod commands;
mod core;
mod error;
mod faults;
mod keyspace;
mod link;
mod lua;
mod lua_api;
mod lua_convert;
mod lua_errors;
mod lua_libs;
mod server;
mod stream;
mod strings;
mod strtod;
mod text;
mod zsets;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lua;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::{Arg, Cmd, Pipeline, RedisResult, Value};
use tokio::sync::mpsc;

pub use error::CommandError;
pub use faults::Faults;

use crate::clock::{Clock, SystemClock};
use faults::FaultSwitch;
use server::Server;

/// Keyspaces by name, for `memory://NAME` URLs: the same name is the same Redis.
static REGISTRY: LazyLock<Mutex<BTreeMap<String, MemoryRedis>>> = LazyLock::new(Mutex::default);

/// A handle on one emulated Redis. Clones share it, like connections to one server.
#[derive(Clone)]
pub struct MemoryRedis {
    shared: Arc<Shared>,
    /// How long a command may wait (on a fault) before the caller gets a timeout.
    response_timeout: Option<Duration>,
    /// This handle's own network path, if it has one ([`MemoryRedis::with_link`]).
    link: Option<Arc<link::Link>>,
}

struct Shared {
    server: Mutex<Server>,
    faults: FaultSwitch,
}

impl std::fmt::Debug for MemoryRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRedis").field("faults", &self.faults()).finish_non_exhaustive()
    }
}

impl MemoryRedis {
    /// A private emulated Redis on `clock`, run ids from seed 0.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_seed(clock, 0)
    }

    /// A private emulated Redis on `clock` whose run ids (first and after each restart)
    /// follow from `seed`.
    pub fn with_seed(clock: Arc<dyn Clock>, seed: u64) -> Self {
        let shared = Shared { server: Mutex::new(Server::new(clock, seed)), faults: FaultSwitch::default() };
        Self { shared: Arc::new(shared), response_timeout: None, link: None }
    }

    /// The emulated Redis registered under `name`, made on first use (system clock, run
    /// ids seeded from the name).
    pub fn named(name: &str) -> Self {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry
            .entry(name.to_owned())
            .or_insert_with(|| Self::with_seed(Arc::new(SystemClock), name_seed(name)))
            .clone()
    }

    /// Registers `redis` under `name` (replacing any other), so that `memory://NAME`
    /// reaches it: how a caller injects its own clock or seed.
    pub fn register(name: &str, redis: &Self) {
        let handle = Self { shared: redis.shared.clone(), response_timeout: None, link: redis.link.clone() };
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned(), handle);
    }

    /// Forgets the Redis registered under `name`; handles already made keep working.
    pub fn unregister(name: &str) -> Option<Self> {
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).remove(name)
    }

    /// The name in a `memory://NAME` URL, if `url` is one.
    pub fn name_in_url(url: &str) -> Option<&str> {
        url.strip_prefix("memory://").map(|name| name.trim_end_matches('/'))
    }

    /// This handle, with commands held by a fault failing with a timeout after `limit`.
    pub fn with_response_timeout(&self, limit: Option<Duration>) -> Self {
        Self { shared: self.shared.clone(), response_timeout: limit, link: self.link.clone() }
    }

    /// The current run id (it changes on [`restart`](Self::restart)).
    pub fn run_id(&self) -> String {
        self.server().core().run_id.clone()
    }

    /// Whether two handles reach the same emulated Redis.
    pub fn same_server(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn server(&self) -> MutexGuard<'_, Server> {
        self.shared.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one command. Error replies are `Value::ServerError`, as from a connection.
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let linked = self.link_holds();
        if !linked && !self.shared.faults.any() {
            let args: Vec<&[u8]> = cmd.args_iter().map(arg_bytes).collect();
            return Ok(self.server().execute(&args));
        }
        let owned: Vec<Vec<u8>> = cmd.args_iter().map(|arg| arg_bytes(arg).to_vec()).collect();
        let op = move |server: &mut Server| {
            let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            server.execute(&args)
        };
        if linked { self.through_link(op).await } else { self.faulted(op).await }
    }

    /// Runs a pipeline and answers the replies from `offset`, `count` of them, as
    /// redis-rs's `req_packed_commands` expects (an atomic pipeline is sent as
    /// MULTI, the commands, EXEC: redis-rs asks for the last reply only).
    pub async fn query_pipeline(&self, pipeline: &Pipeline, offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        let atomic = pipeline.is_transaction();
        let owned: Vec<Vec<Vec<u8>>> =
            pipeline.cmd_iter().map(|cmd| cmd.args_iter().map(|arg| arg_bytes(arg).to_vec()).collect()).collect();
        let run = move |server: &mut Server| {
            let commands: Vec<Vec<&[u8]>> = owned.iter().map(|args| args.iter().map(Vec::as_slice).collect()).collect();
            server.pipeline(&commands, atomic)
        };
        let replies = if self.link_holds() {
            self.through_link(run).await?
        } else if self.shared.faults.any() {
            self.faulted(run).await?
        } else {
            run(&mut self.server())
        };
        match replies {
            Ok(replies) => Ok(replies.into_iter().skip(offset).take(count).collect()),
            Err(abort) => match abort.to_value() {
                Value::ServerError(error) => Err(error.into()),
                _ => Err(error::reply_lost()),
            },
        }
    }

    /// Subscribes to `channel`: the payloads published from now on, until the emulated
    /// Redis restarts or refuses connections (then the stream ends).
    pub async fn subscribe(&self, channel: &[u8]) -> RedisResult<Subscription> {
        let channel = channel.to_vec();
        let receiver = if self.shared.faults.any() {
            self.faulted(move |server| server.core().subscribe(&channel)).await?
        } else {
            self.server().core().subscribe(&channel)
        };
        Ok(Subscription { receiver })
    }

    /// Whether a new connection would be refused now.
    pub(crate) fn refuses(&self) -> bool {
        self.shared.faults.any() && self.faults().refuse
    }
}

fn arg_bytes(arg: Arg<&[u8]>) -> &[u8] {
    match arg {
        Arg::Simple(bytes) => bytes,
        // A cursor argument (SCAN-style) starts at 0.
        _ => b"0",
    }
}

/// FNV-1a of a registry name: the seed of its run ids.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Messages published on one channel, in order. Ends when the subscription is dropped
/// by the emulated Redis (restart, refused connections).
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl futures::Stream for Subscription {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.receiver.poll_recv(cx)
    }
}
