//! Building and running one server instance. The caller hands in the listener and the
//! shutdown signal (so tests and the simulator run the server in process), and may
//! inject the clock and the entropy source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::clock::Ids;
use crate::config::Config;
use crate::db::Db;
use crate::events::EventHub;
use crate::http::connections::{self, ServeSettings};
use crate::http::{ApiRoutes, middleware, ops};
use crate::metrics::Metrics;
use crate::redis::{Keys, RedisConn};
use crate::sale::rebuild::RebuildFlights;
use crate::sale::sold_out::SoldOutCache;
use crate::state::{App, AppState};
use crate::{auth, events, products, purchase, sale};

/// Eviction policies under which Redis never drops a key to make room.
pub const SAFE_EVICTION_POLICIES: &[&str] = &["noeviction"];

/// Connects to the backends, checks them, creates indexes: a ready-to-serve state.
pub async fn build_state(config: Config, ids: Ids) -> anyhow::Result<AppState> {
    install_crypto_provider();
    config.validate()?;
    let redis_timeout = Duration::from_millis(config.redis_timeout_ms);
    let mut redis = RedisConn::connect(&config.redis_url, redis_timeout).await?;
    let policies = crate::redis::eviction_policies(&mut redis).await?;
    let evicting: Vec<&String> = policies.iter().filter(|p| !SAFE_EVICTION_POLICIES.contains(&p.as_str())).collect();
    if !evicting.is_empty() && !config.allow_evicting_redis {
        bail!(
            "Redis maxmemory-policy is {evicting:?}: eviction would silently drop sale state. \
             Set `maxmemory-policy noeviction` (or pass --allow-evicting-redis outside production)"
        );
    }
    if policies.is_empty() && !config.allow_evicting_redis {
        bail!("could not read Redis maxmemory-policy; refusing to start without knowing it is noeviction");
    }
    let db = Db::connect(
        &config.mongo_url,
        &config.mongo_database,
        Duration::from_millis(config.mongo_select_timeout_ms),
        Duration::from_millis(config.mongo_op_timeout_ms),
        config.mongo_pool_size,
    )
    .await?;
    db.ensure_indexes().await.context("creating MongoDB indexes")?;
    let dummy_password_hash = auth::password::dummy_hash(&config)?;
    let otp_sender = auth::otp::OtpSender::from_config(&config)?;
    let hashing = tokio::sync::Semaphore::new(config.max_concurrent_hashes.max(1));
    let password_admission =
        Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_hashes.max(1) + config.max_queued_hashes));
    let event_streams = Arc::new(crate::http::slots::Slots::new(
        config.max_event_streams.max(1),
        Some(config.max_event_streams_per_client.max(1)),
    ));
    let order_writes = crate::sale::order_writes::OrderWrites::new(&config);
    Ok(Arc::new_cyclic(|this| App {
        keys: Keys::new(config.key_prefix.clone()),
        config,
        redis,
        db,
        ids,
        metrics: Metrics::new(),
        events: EventHub::new(),
        sold_out: SoldOutCache::default(),
        rebuilds: RebuildFlights::default(),
        product_writes: Default::default(),
        order_writes,
        known_sessions: crate::auth::session::KnownSessions::default(),
        replays: crate::purchase::replays::Replays::default(),
        hashing,
        password_admission,
        event_streams,
        dummy_password_hash,
        otp_sender,
        this: this.clone(),
        halt: tokio_util::sync::CancellationToken::new(),
    }))
}

/// Chooses rustls's crypto provider for the process (MongoDB and SMTP over TLS). Built in
/// one workspace with the load generator, whose HTTP client brings a second provider,
/// rustls would otherwise refuse to pick one and panic at the first TLS connection.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The whole HTTP application.
pub fn router(app: AppState) -> Router {
    let api = purchase::routes(products::routes(auth::routes(ApiRoutes::default())))
        .route("/events", get(events::events_stream));
    api.into_router()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(middleware::route_not_found)
        // One stack applied once: each `Router::layer` call wraps every route in one more
        // boxed service, cloned per request. Outermost first.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(middleware::REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
                .layer(CatchPanicLayer::custom(middleware::panic_to_problem))
                .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
                .layer(middleware::EdgeLayer::new(app.clone())),
        )
        .with_state(app)
}

/// Serves until `shutdown` fires, then ends the event streams, drains in-flight requests
/// (at most `http_shutdown_drain_timeout_ms`) and stops the background tasks. Connections
/// are bounded by `Config::http` (see `http::connections`).
pub async fn serve(listener: TcpListener, app: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let background = spawn_background(&app, &shutdown);
    let settings = ServeSettings::from_config(&app.config);
    connections::serve(listener, router(app.clone()), settings, shutdown.clone(), || app.events.close()).await;
    shutdown.cancel();
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

fn spawn_background(app: &AppState, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(events::run_subscriber(app.clone(), shutdown.clone()))];
    if app.config.background_tasks {
        tasks.push(tokio::spawn(sale::reconciler::run(app.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(sale::rebuild::watch_redis_restarts(app.clone(), shutdown.clone())));
    }
    tasks
}

/// A server running in this process on a free port (tests, simulator, load generator).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub app: AppState,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    pub async fn start(config: Config, ids: Ids) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen_addr).await.context("binding the listener")?;
        let addr = listener.local_addr()?;
        let app = build_state(config, ids).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
        Ok(Self { addr, app, shutdown, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task")?
    }
}
