//! Test support: one redis-server and one FerretDB per test binary (started on first
//! use, on free ports), and per test a server on port 0 with its own key prefix and
//! database, so tests run in parallel without sharing state. Tests that break a
//! backend start their own with [`TestApp::spawn_with_own_backends`].

use std::sync::{Arc, OnceLock};

use flashsale::auth::extract::Role;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::stack::{FerretDb, RedisPersistence, RedisServer};
use flashsale::startup::RunningServer;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

static SHARED: OnceLock<(RedisServer, FerretDb)> = OnceLock::new();

pub fn shared_backends() -> &'static (RedisServer, FerretDb) {
    SHARED.get_or_init(|| {
        let redis = RedisServer::start(RedisPersistence::None).expect("starting redis-server");
        let mongo = FerretDb::start().expect("starting ferretdb");
        (redis, mongo)
    })
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
        let (redis, mongo) = tokio::task::spawn_blocking(shared_backends).await.expect("backends");
        let mut config = test_config(&redis.url(), &mongo.url());
        adjust(&mut config);
        Self::start(config, None).await
    }

    /// Spawns with a redis-server and a FerretDB of its own.
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

    pub fn app(&self) -> &flashsale::state::App {
        &self.server.app
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
