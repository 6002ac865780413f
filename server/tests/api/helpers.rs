//! Test support: one Redis and one MongoDB-compatible backend per test binary (started
//! on first use), and per test a server on port 0 with its own key prefix and database,
//! so tests run in parallel without sharing state. The shared backends are local
//! `redis-server` and FerretDB processes on free ports; with `FLASHSALE_BACKEND=memory`
//! the server's own emulated stores in this process (`memory://` URLs: nothing is
//! started); with `FLASHSALE_BACKEND=containers` (and `--features containers`)
//! containers (`FLASHSALE_REDIS_IMAGE`, `FLASHSALE_MONGO_IMAGE`; `redis:7` and `mongo:7`
//! by default; `scripts/test-containers` runs them on a local Podman engine). Tests that
//! break a backend start their own local processes with
//! [`TestApp::spawn_with_own_backends`], whatever the setting: the memory lane of
//! `scripts/test` skips them by name (`MEMORY_SKIPS` there says which and why).

use std::sync::{Arc, Mutex, OnceLock};

use flashsale::auth::extract::Role;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::startup::RunningServer;
use flashsale_stack::{BackendKind, Backends, FerretDb, LocalStack, RedisPersistence, RedisServer};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

/// The backends shared by every test of this binary that does not own its own.
#[derive(Debug)]
pub struct SharedBackends {
    redis_url: String,
    mongo_url: String,
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    /// The server's emulated stores, in this process (`FLASHSALE_BACKEND=memory`).
    Memory,
    /// Child processes: they die with the test binary.
    Processes { _backends: Backends },
    /// Containers, with a runtime of their own: they outlive the per-test runtimes (a
    /// container's handle needs a live runtime). A static is never dropped, so they are
    /// removed by an exit hook, which takes them out of the mutex.
    Containers { runtime: tokio::runtime::Runtime, backends: Mutex<Option<Backends>> },
}

impl SharedBackends {
    pub fn redis_url(&self) -> String {
        self.redis_url.clone()
    }

    pub fn mongo_url(&self) -> String {
        self.mongo_url.clone()
    }

    fn start() -> anyhow::Result<Self> {
        if std::env::var(BackendKind::ENV).is_ok_and(|kind| kind.trim() == MEMORY_BACKEND) {
            // One keyspace and one model for the binary, as one shared redis-server and
            // one FerretDB are: each test still has its own key prefix and database name.
            return Ok(Self {
                redis_url: "memory://shared-redis".to_owned(),
                mongo_url: "memory://shared-mongo".to_owned(),
                owner: Owner::Memory,
            });
        }
        match BackendKind::from_env()? {
            BackendKind::Local => {
                let backends = Backends::Local(LocalStack::start(RedisPersistence::None)?);
                Ok(Self {
                    redis_url: backends.redis_url(),
                    mongo_url: backends.mongo_url(),
                    owner: Owner::Processes { _backends: backends },
                })
            }
            BackendKind::Containers => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("flashsale-containers")
                    .enable_all()
                    .build()?;
                let backends = runtime
                    .block_on(flashsale_stack::start_backends(BackendKind::Containers, RedisPersistence::None))?;
                Ok(Self {
                    redis_url: backends.redis_url(),
                    mongo_url: backends.mongo_url(),
                    owner: Owner::Containers { runtime, backends: Mutex::new(Some(backends)) },
                })
            }
        }
    }
}

static SHARED: OnceLock<SharedBackends> = OnceLock::new();

/// `FLASHSALE_BACKEND` value that selects the emulated stores.
pub const MEMORY_BACKEND: &str = "memory";

/// The shared backends, started on first use. Blocking: call it from a blocking thread
/// (`spawn_blocking`) or outside async code. Kind from `FLASHSALE_BACKEND` (`local` by
/// default); fault-injection tests (`faults.rs`, `ops.rs`, anything using
/// [`TestApp::spawn_with_own_backends`]) kill, pause and restart processes and always use
/// local processes of their own.
pub fn shared_backends() -> &'static SharedBackends {
    SHARED.get_or_init(|| {
        let shared = SharedBackends::start().unwrap_or_else(|error| panic!("starting the shared backends: {error:#}"));
        if matches!(shared.owner, Owner::Containers { .. }) {
            remove_containers_at_exit();
        }
        shared
    })
}

/// Registers [`remove_shared_containers`] to run when the test binary exits.
fn remove_containers_at_exit() {
    #[allow(unsafe_code)]
    // SAFETY: registers a plain `extern "C" fn` with libc; it takes no arguments.
    let status = unsafe { libc::atexit(remove_shared_containers) };
    if status != 0 {
        eprintln!("could not register the exit hook: the shared backend containers stay running");
    }
}

extern "C" fn remove_shared_containers() {
    if let Some(SharedBackends { owner: Owner::Containers { runtime, backends }, .. }) = SHARED.get() {
        let taken =
            backends.lock().map(|mut guard| guard.take()).unwrap_or_else(|poisoned| poisoned.into_inner().take());
        let _guard = runtime.enter();
        drop(taken);
    }
}

/// Backends owned by one test (it may kill, pause or restart them).
#[derive(Debug)]
pub struct OwnBackends {
    pub redis: RedisServer,
    pub mongo: FerretDb,
}

#[derive(Debug)]
pub struct TestApp {
    pub server: RunningServer,
    pub base: String,
    pub config: Config,
    pub own: Option<OwnBackends>,
}

/// A unique name for this test's key prefix and database.
fn unique_name() -> String {
    format!("t{}", Uuid::new_v4().simple())
}

pub fn test_config(redis_url: &str, mongo_url: &str) -> Config {
    let name = unique_name();
    let mut config = Config::for_local(redis_url, mongo_url, &name, &name);
    config.listen_addr = "127.0.0.1:0".parse().expect("address");
    // Cheaper hashing keeps the suite fast; the production parameters are checked by
    // their own test against the configured defaults.
    config.argon2_m_kib = 19_456;
    config.reconcile_interval_ms = 100;
    config.reconcile_grace_ms = 300;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with the shared backends and a config adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let shared = tokio::task::spawn_blocking(shared_backends).await.expect("backends");
        let mut config = test_config(&shared.redis_url(), &shared.mongo_url());
        adjust(&mut config);
        Self::start(config, None).await
    }

    /// Spawns with a redis-server and a FerretDB of its own: always local processes, whatever
    /// `FLASHSALE_BACKEND` says, because the tests that use this kill, pause and restart them.
    pub async fn spawn_with_own_backends(persistence: RedisPersistence, adjust: impl FnOnce(&mut Config)) -> Self {
        let own = tokio::task::spawn_blocking(move || OwnBackends {
            redis: RedisServer::start(persistence).expect("starting redis-server"),
            mongo: FerretDb::start().expect("starting ferretdb"),
        })
        .await
        .expect("backends");
        let mut config = test_config(&own.redis.url(), &own.mongo.url());
        adjust(&mut config);
        Self::start(config, Some(own)).await
    }

    async fn start(config: Config, own: Option<OwnBackends>) -> Self {
        let server = RunningServer::start(config.clone(), Ids::system()).await.expect("starting the server");
        let base = server.base_url();
        Self { server, base, config, own }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Another instance on this test's Redis, MongoDB, key prefix and database, started
    /// once it is subscribed to the sale's events (so it hears every event sent after).
    pub async fn second_instance(&self) -> RunningServer {
        let second = self.instance_with(Ids::system(), |_| {}).await;
        tokio::time::timeout(std::time::Duration::from_secs(10), second.app.events.wait_subscribed())
            .await
            .expect("the second instance subscribes");
        second
    }

    /// Another instance on this test's stores, with its own clock and entropy (`ids`) and
    /// its configuration `adjust`ed, started without waiting for its subscription.
    pub async fn instance_with(&self, ids: Ids, adjust: impl FnOnce(&mut Config)) -> RunningServer {
        let mut config = self.config.clone();
        config.listen_addr = "127.0.0.1:0".parse().expect("address");
        adjust(&mut config);
        RunningServer::start(config, ids).await.expect("another instance")
    }

    pub fn app(&self) -> &flashsale::state::App {
        &self.server.app
    }

    /// A connection to this test's Redis, through the server's own handle (so it works
    /// on every backend, the emulated one included).
    pub fn redis(&self) -> flashsale::redis::RedisConn {
        self.server.app.redis.clone()
    }

    /// A client with its own cookie jar.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder().cookie_store(true).build().expect("client")
    }

    /// A user created directly in MongoDB with a known password hash, and a verified
    /// session created through the server's own session code. Returns a logged-in
    /// client (cookie set) and the user id.
    pub async fn verified_buyer(&self, role: Role) -> (reqwest::Client, Uuid) {
        let email = format!("{}@example.test", Uuid::new_v4().simple());
        let user_id = flashsale::auth::users::create_user_with_hash(self.app(), &email, PRECOMPUTED_HASH, role)
            .await
            .expect("creating a user");
        let session =
            flashsale::auth::session::create_verified_session(self.app(), user_id).await.expect("creating a session");
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let url = self.base.parse::<reqwest::Url>().expect("url");
        jar.add_cookie_str(&format!("{}={}; Path=/", flashsale::auth::session::COOKIE_NAME, session), &url);
        let client = reqwest::Client::builder().cookie_provider(jar).build().expect("client");
        (client, user_id)
    }

    /// A buyer with a verified session, as a `Cookie` header value (for clients that
    /// act for many users at once).
    pub async fn buyer_cookie(&self) -> (Uuid, String) {
        let email = format!("{}@example.test", Uuid::new_v4().simple());
        let user_id = flashsale::auth::users::create_user_with_hash(self.app(), &email, PRECOMPUTED_HASH, Role::Buyer)
            .await
            .expect("creating a user");
        let session =
            flashsale::auth::session::create_verified_session(self.app(), user_id).await.expect("creating a session");
        (user_id, format!("{}={}", flashsale::auth::session::COOKIE_NAME, session))
    }

    /// Creates a product through the admin API and returns its id.
    pub async fn create_product(&self, stock: i64, one_per_user: bool) -> Uuid {
        let (admin, _) = self.verified_buyer(Role::Admin).await;
        let response = admin
            .post(self.url("/api/v1/products"))
            .json(&json!({
                "name": "Limited sneaker",
                "description": "A test product",
                "price_cents": 12_900,
                "stock": stock,
                "one_per_user": one_per_user,
            }))
            .send()
            .await
            .expect("create product");
        assert_eq!(response.status(), 201, "create product: {:?}", response.text().await);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).expect("product id")
    }

    pub async fn buy(&self, client: &reqwest::Client, product: Uuid, key: &str) -> (u16, HeaderMap, Vec<u8>) {
        let response = client
            .post(self.url(&format!("/api/v1/user/buy/{product}")))
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("buy request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        (status, headers, body)
    }
}

/// `argon2id` hash of [`PRECOMPUTED_PASSWORD`] at the production parameters.
pub const PRECOMPUTED_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Zmxhc2hzYWxlLXRlc3RzIQ$n6G8OUJIzlw55413TwwqIk52A+GKvY1WGPxkqXIqSOg";
pub const PRECOMPUTED_PASSWORD: &str = "correct horse battery staple";

pub fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}
