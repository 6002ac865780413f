//! The two sides of the Redis differential test: one `redis-server` 7.0 shared by the
//! whole binary (started on first use) and a fresh in-process keyspace
//! (`memory://<unique name>`) per sequence. Tests take the real server in turn: each
//! sequence starts from `FLUSHALL` and `SCRIPT FLUSH`, which would wipe a neighbour's.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flashsale::redis::RedisConn;
use flashsale::redis::memory::MemoryRedis;
use flashsale_stack::{RedisPersistence, RedisServer};
use redis::Value;
use tokio::sync::{Mutex, MutexGuard};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static REAL_SERVER: OnceLock<RedisServer> = OnceLock::new();

/// Held by the test using the real server; the others wait their turn.
static REAL_SERVER_TURN: Mutex<()> = Mutex::const_new(());

/// The real server, started on first use. Blocking (it waits for the port).
fn real_server() -> &'static RedisServer {
    REAL_SERVER.get_or_init(|| {
        RedisServer::start(RedisPersistence::None)
            .unwrap_or_else(|error| panic!("starting redis-server for the differential test: {error:#}"))
    })
}

/// A unique `memory://` name: a keyspace nobody else has written.
fn fresh_memory_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("differential-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One side: its connection and its `run_id` (replies that contain it are compared
/// with it replaced, since the two sides' ids differ by design).
#[derive(Debug)]
pub struct Side {
    pub conn: RedisConn,
    pub run_id: String,
}

impl Side {
    async fn connect(url: &str) -> Self {
        let mut conn = RedisConn::connect(url, CONNECT_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("connecting {url}: {error:#}"));
        let run_id = flashsale::redis::run_id(&mut conn).await.unwrap_or_else(|error| panic!("{url}: {error:#}"));
        Self { conn, run_id }
    }
}

/// The real server (emptied) and a fresh emulated keyspace.
#[derive(Debug)]
pub struct Pair {
    pub real: Side,
    pub emulated: Side,
    /// The emulated keyspace's name, forgotten when the next one is made.
    emulated_name: String,
    _turn: MutexGuard<'static, ()>,
}

impl Pair {
    /// Waits for the real server's turn, then opens both sides, both empty.
    pub async fn open() -> Self {
        let turn = REAL_SERVER_TURN.lock().await;
        let server = tokio::task::spawn_blocking(real_server).await.expect("starting redis-server");
        let emulated_name = fresh_memory_name();
        let mut pair = Self {
            real: Side::connect(&server.url()).await,
            emulated: Side::connect(&format!("memory://{emulated_name}")).await,
            emulated_name,
            _turn: turn,
        };
        pair.empty_real_side().await;
        pair
    }

    /// Both sides empty again: the real server flushed, a new emulated keyspace.
    pub async fn reset(&mut self) {
        self.empty_real_side().await;
        let name = fresh_memory_name();
        self.emulated = Side::connect(&format!("memory://{name}")).await;
        MemoryRedis::unregister(&std::mem::replace(&mut self.emulated_name, name));
    }

    async fn empty_real_side(&mut self) {
        let conn = &mut self.real.conn;
        let _: Value = redis::cmd("FLUSHALL").query_async(conn).await.expect("FLUSHALL");
        let _: Value = redis::cmd("SCRIPT").arg("FLUSH").query_async(conn).await.expect("SCRIPT FLUSH");
    }
}
