//! Rebuilding a product's sale state from MongoDB after Redis lost it (restart without
//! persistence, failover, FLUSHALL, stale snapshot). The sale is paused (purchases get
//! 503 + Retry-After), pending reservations are persisted where they can be, MongoDB is
//! read, and the state is replaced in one script call, all under the product's lock.
//!
//! A rebuild runs in a task of its own ([`RebuildFlights`]), never inside a request:
//! a client that gives up cancels its request, and a rebuild cancelled midway leaves
//! the sale paused for the next one to start over, which under a steady stream of
//! impatient clients never finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::reconciler;
use crate::db;
use crate::db::records::Product;
use crate::redis::keys::SaleKeys;
use crate::redis::scripts::{self, LoadMode};
use crate::sale;
use crate::sale::product_store;
use crate::state::{App, AppState};

/// Lease of a product's rebuild lock: a holder that dies (its instance killed midway)
/// keeps the sale paused this long. Longer than [`REBUILD_TIMEOUT`], so a live rebuild
/// never outlives its lease; the fenced scripts refuse a holder that did anyway.
pub const REBUILD_LEASE_MS: u64 = 12_000;
/// Added to the order write timeout while a rebuild waits for writes in flight.
pub const REBUILD_SETTLE_MARGIN: Duration = Duration::from_millis(250);
/// How often each instance checks whether Redis restarted.
pub const RESTART_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Bound of one rebuild from taking the lock (well inside [`REBUILD_LEASE_MS`]): a
/// MongoDB call that never answers (a connection blackholed midway) fails it, the lock
/// is released and the next attempt starts over, instead of the sale staying paused.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(REBUILD_TIMEOUT.as_millis() < REBUILD_LEASE_MS as u128);
/// Bound of each MongoDB step of a rebuild ([`db::with_step_bound`]): one operation, or
/// one batch of the orders read. A step that stalls (MongoDB silent on its connection)
/// fails at this bound and the rebuild reads again ([`retrying`]), so half a second of
/// MongoDB silence costs the paused sale about this long, not [`REBUILD_TIMEOUT`]. The
/// whole read is bounded by progress, not by time: 10^5 orders take about 8 s on FerretDB.
pub const REBUILD_STEP_TIMEOUT: Duration = Duration::from_millis(2_000);
const _: () = assert!(REBUILD_STEP_TIMEOUT.as_millis() < REBUILD_TIMEOUT.as_millis());
/// Pause before a rebuild reads MongoDB again after a try failed on it.
pub const REBUILD_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a request waits for the rebuild it started or joined before answering
/// 503 sale-paused; the rebuild goes on without it. A rebuild takes at least the order
/// write timeout plus [`REBUILD_SETTLE_MARGIN`].
pub const REBUILD_WAIT: Duration = Duration::from_millis(2_000);

/// What a rebuild attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    Done,
    /// Another instance holds the lock; it is rebuilding.
    InProgress,
    /// The product does not exist (or is deleted).
    NoProduct,
}

/// Rebuilds one product's sale state from MongoDB.
pub async fn rebuild_product(app: &App, product_id: Uuid) -> anyhow::Result<Rebuilt> {
    let keys = app.keys.sale(product_id);
    let token = app.ids.token_128();
    #[cfg(feature = "broken")]
    let keys = crate::broken::rebuild_keys(app, keys, &token);
    let mut conn = app.redis.clone();
    let Some(fence) = scripts::lock(&mut conn, &keys.rebuild_lock, &token, REBUILD_LEASE_MS).await? else {
        return Ok(Rebuilt::InProgress);
    };
    let mut guard =
        LockGuard { conn, key: keys.rebuild_lock.clone(), token: fence.clone(), armed: true, halt: app.halt.clone() };
    let result = match tokio::time::timeout(REBUILD_TIMEOUT, rebuild_locked(app, product_id, &keys, &fence)).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("the rebuild took longer than {REBUILD_TIMEOUT:?}")),
    };
    guard.armed = false;
    if let Err(err) = scripts::unlock(&mut guard.conn, &guard.key, &guard.token).await {
        tracing::warn!(error = %err, %product_id, "releasing the rebuild lock failed; its lease will");
    }
    result
}

/// Releases a rebuild lock if the rebuild holding it is dropped midway (a request
/// whose client went away cancels its future): otherwise the lock would block every
/// rebuild of the product for its whole lease while the sale stays paused. A halted
/// instance releases nothing, as a killed process cannot.
struct LockGuard {
    conn: crate::redis::RedisConn,
    key: String,
    token: String,
    armed: bool,
    halt: CancellationToken,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed || self.halt.is_cancelled() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (mut conn, key, token) =
            (self.conn.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.token));
        runtime.spawn(async move {
            let _ = scripts::unlock(&mut conn, &key, &token).await;
        });
    }
}

async fn rebuild_locked(app: &App, product_id: Uuid, keys: &SaleKeys, fence: &str) -> anyhow::Result<Rebuilt> {
    // The product's highest revision, not its document: a copy a slower admin write
    // left one revision behind must not decide whether the sale exists.
    let Some(product) = retrying(app, product_id, || product_store::head(app, product_id)).await? else {
        return Ok(Rebuilt::NoProduct);
    };
    if product.deleted {
        product_store::retire(app, product_id, &product).await?;
        return Ok(Rebuilt::NoProduct);
    }
    let mut conn = app.redis.clone();
    scripts::pause(&mut conn, keys, fence).await?;
    // Requests that reserved a unit in the lost state may still be writing their order:
    // let every such write finish or time out, so that MongoDB, read next, holds every
    // unit they took (otherwise the rebuilt state would hand those units out again).
    tokio::time::sleep(Duration::from_millis(app.config.order_write_timeout_ms) + REBUILD_SETTLE_MARGIN).await;
    let loaded = retrying(app, product_id, || load_from_mongo(app, product_id, keys, fence, &product)).await?;
    let Some(orders) = loaded else {
        // The product was deleted meanwhile: its tombstone stands.
        return Ok(Rebuilt::NoProduct);
    };
    scripts::resume(&mut conn, keys, fence).await?;
    if let Err(err) = reconciler::reissue(app, product_id).await {
        tracing::warn!(error = %err, %product_id, "reissuing reservations after the rebuild failed; a later pass will");
    }
    // Units the rebuild found free (a cancellation whose release it loaded, a reservation
    // lost with Redis's data) reach every instance: the restock script, at the total the
    // rebuild loaded (it never lowers one), publishes the live stock as a stock event,
    // and an instance that remembered the product sold out forgets it, as on a release.
    // Before, only this instance forgot: another kept answering sold out with a unit
    // free (found by the deterministic simulator once buyers asked again after healing:
    // default seed 837).
    if let Err(err) = sale::restock(app, product_id, product.stock_total).await {
        tracing::warn!(error = %err, %product_id, "publishing the rebuilt stock failed");
    }
    app.sold_out.forget(product_id);
    app.metrics.sale_rebuilds.inc();
    tracing::info!(%product_id, orders, "sale state rebuilt from MongoDB");
    Ok(Rebuilt::Done)
}

/// The paused sale's state, read from MongoDB and loaded into Redis (still paused): the
/// orders loaded, or `None` if the product was deleted meanwhile. Safe to run again after
/// a failure: the pass and the load replace what an earlier try did, and the
/// reservations the pass moved to wait for a fresh unit wait in Redis
/// (`SaleKeys::reissue`, which the load leaves alone).
async fn load_from_mongo(
    app: &App,
    product_id: Uuid,
    keys: &SaleKeys,
    fence: &str,
    product: &Product,
) -> anyhow::Result<Option<usize>> {
    // Reservations Redis still holds are real requests: persist them before MongoDB is
    // read, so the rebuilt state keeps them.
    reconciler::reconcile_product(app, product_id, product, 0, usize::MAX).await?;
    let snapshot = sale::snapshot_from_mongo(app, product_id, product).await?;
    let mut conn = app.redis.clone();
    if !scripts::load_sale(&mut conn, keys, LoadMode::Rebuild { fence }, &snapshot).await? {
        return Ok(None);
    }
    // Admin writes published while this rebuild read MongoDB were overwritten by it: the
    // sale stays paused until they are applied again (a sale closed, or made one per
    // user, and answered so, must not sell a moment on the older settings).
    product_store::catch_up_after_load(app, product_id, product).await?;
    Ok(Some(snapshot.orders.len()))
}

/// Runs `attempt` with each MongoDB step bounded by [`REBUILD_STEP_TIMEOUT`], and again,
/// [`REBUILD_RETRY_PAUSE`] later, while it fails because MongoDB did not answer (a step
/// that stalled, an unreachable server, an order write that timed out); the caller's
/// [`REBUILD_TIMEOUT`] bounds the tries. Any other failure is the rebuild's.
async fn retrying<T, F, Fut>(app: &App, product_id: Uuid, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    loop {
        match db::with_step_bound(REBUILD_STEP_TIMEOUT, attempt()).await {
            Err(err) if mongo_did_not_answer(&err) => {
                tracing::info!(error = %format!("{err:#}"), %product_id, "the rebuild's MongoDB read failed; reading again");
                app.metrics.rebuild_read_retries.inc();
                tokio::time::sleep(REBUILD_RETRY_PAUSE).await;
            }
            result => return result,
        }
    }
}

/// Whether `err` is MongoDB not answering: unavailable, or a bound that ran out.
fn mongo_did_not_answer(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<db::DbError>().is_some_and(db::DbError::is_unavailable)
            || cause.is::<tokio::time::error::Elapsed>()
    })
}

/// A rebuild running in its own task; awaiting it gives its outcome (the error as text,
/// since every waiter gets a copy).
pub type Flight = Shared<BoxFuture<'static, Result<Rebuilt, Arc<str>>>>;

/// The rebuilds running in this instance, one per product: requests and the restart
/// watcher join the one running instead of queueing on the product's lock.
#[derive(Default)]
pub struct RebuildFlights {
    running: Mutex<HashMap<Uuid, Running>>,
    generation: AtomicU64,
}

struct Running {
    generation: u64,
    flight: Flight,
}

impl std::fmt::Debug for RebuildFlights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("RebuildFlights").field("running", &running).finish()
    }
}

impl RebuildFlights {
    /// The generation of the last rebuild started: a rebuild joined with
    /// `started_after` set to it began after this call.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a rebuild of the product in a task of its own, or joins the one running if
    /// it began after `started_after` (see [`Self::generation`]; 0 joins any). A running
    /// rebuild that began earlier (it may have read a state Redis has since lost) is
    /// followed by a new one.
    pub fn start(&self, app: &App, product_id: Uuid, started_after: u64) -> anyhow::Result<Flight> {
        let app = app.shared().context("the server is shutting down")?;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = match running.get(&product_id) {
            Some(current) if current.flight.peek().is_none() && current.generation > started_after => {
                return Ok(current.flight.clone());
            }
            Some(current) if current.flight.peek().is_none() => Some(current.flight.clone()),
            _ => None,
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let owner = app.clone();
        let task = owner.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = rebuild_product(&app, product_id).await.map_err(|err| Arc::<str>::from(format!("{err:#}")));
            if let Err(err) = &result {
                tracing::warn!(error = %err, %product_id, "rebuilding the sale state failed");
            }
            app.rebuilds.finished(product_id, generation);
            result
        });
        let flight = async move {
            match task.await {
                Ok(Some(result)) => result,
                Ok(None) => Err(Arc::from("the instance stopped")),
                Err(err) => Err(Arc::from(format!("rebuild task: {err}"))),
            }
        }
        .boxed()
        .shared();
        running.insert(product_id, Running { generation, flight: flight.clone() });
        Ok(flight)
    }

    fn finished(&self, product_id: Uuid, generation: u64) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(&product_id).is_some_and(|current| current.generation == generation) {
            running.remove(&product_id);
        }
    }
}

/// Starts (or joins) the product's rebuild and waits for it at most [`REBUILD_WAIT`];
/// past that the rebuild goes on and the answer is [`Rebuilt::InProgress`].
pub async fn rebuild_and_wait(app: &App, product_id: Uuid) -> anyhow::Result<Rebuilt> {
    let flight = app.rebuilds.start(app, product_id, 0)?;
    match tokio::time::timeout(REBUILD_WAIT, flight).await {
        Ok(result) => result.map_err(|err| anyhow::anyhow!("{err}")),
        Err(_) => Ok(Rebuilt::InProgress),
    }
}

/// Loads a product's sale state when Redis has none (first use, or lost), waiting for
/// it at most [`REBUILD_WAIT`].
pub async fn ensure_loaded(app: &App, product_id: Uuid) -> anyhow::Result<Rebuilt> {
    if sale::stock(app, product_id).await?.is_some() {
        return Ok(Rebuilt::Done);
    }
    rebuild_and_wait(app, product_id).await.context("loading the sale state")
}

/// Ids of every product that is not deleted, in id order.
pub async fn live_product_ids(app: &App) -> anyhow::Result<Vec<Uuid>> {
    Ok(live_products(app).await?.into_iter().map(|(id, _)| id).collect())
}

/// Every live product with the stock total its document records.
pub async fn live_products(app: &App) -> anyhow::Result<Vec<(Uuid, i64)>> {
    let products = app.db.live_products().await?;
    Ok(products.into_iter().filter_map(|(id, stock)| Some((Uuid::parse_str(&id).ok()?, stock))).collect())
}

/// Rebuilds every product (after Redis restarted and may hold a stale or empty state).
/// Returns how many it rebuilt, and the products another holder of the lock was
/// rebuilding (not known to be done: see [`settled`]).
pub async fn rebuild_all(app: &App) -> anyhow::Result<(usize, Vec<Uuid>)> {
    let (mut rebuilt, mut in_progress) = (0, Vec::new());
    for product_id in live_product_ids(app).await? {
        match rebuild_product(app, product_id).await? {
            Rebuilt::Done => rebuilt += 1,
            Rebuilt::InProgress => in_progress.push(product_id),
            Rebuilt::NoProduct => {}
        }
    }
    Ok((rebuilt, in_progress))
}

/// Whether a product's sale state is loaded and not paused: a rebuild of it, here or
/// elsewhere, has finished.
pub async fn settled(app: &App, product_id: Uuid) -> anyhow::Result<bool> {
    Ok(sale::stock(app, product_id).await?.is_some_and(|state| !state.paused))
}

/// Consecutive failed reads of `run_id` after which the watcher says it is blind.
const RUN_ID_FAILURES_LOGGED: u32 = 4;

/// What the restart watcher still owes after a restart.
#[derive(Debug, Default)]
struct Owed {
    /// Generation of rebuilds when the restart was seen: only rebuilds begun after it count.
    since: u64,
    /// The product list is still to be read.
    all: bool,
    /// Products still to be rebuilt here (never rebuilt since the restart, or failed).
    products: Vec<Uuid>,
    /// Products another instance holds the lock of: rebuilt here if that rebuild is
    /// abandoned (still paused or unloaded with the lock free).
    waiting: Vec<Uuid>,
}

impl Owed {
    fn is_empty(&self) -> bool {
        !self.all && self.products.is_empty() && self.waiting.is_empty()
    }
}

/// Rebuilds the owed products at once (each rebuild waits out the order write timeout:
/// in parallel that wait is paid once). Failures stay owed for the next tick.
async fn pay(app: &App, owed: &mut Owed) -> anyhow::Result<()> {
    if owed.all {
        owed.products = live_product_ids(app).await?;
        owed.all = false;
    }
    let mut checks = Vec::new();
    for product_id in std::mem::take(&mut owed.waiting) {
        // Unreadable counts as not settled: the rebuild then says what is wrong.
        if !settled(app, product_id).await.unwrap_or(false) {
            checks.push(product_id);
        }
    }
    let products: Vec<(Uuid, bool)> = std::mem::take(&mut owed.products)
        .into_iter()
        .map(|id| (id, true))
        .chain(checks.into_iter().map(|id| (id, false)))
        .collect();
    let flights = products.iter().map(|&(product_id, _)| {
        let flight = app.rebuilds.start(app, product_id, owed.since);
        async move {
            match flight {
                Ok(flight) => flight.await,
                Err(err) => Err(Arc::from(format!("{err:#}"))),
            }
        }
    });
    let results = futures::future::join_all(flights).await;
    for ((product_id, was_owed), result) in products.into_iter().zip(results) {
        match result {
            Ok(Rebuilt::Done | Rebuilt::NoProduct) => {}
            Ok(Rebuilt::InProgress) => owed.waiting.push(product_id),
            Err(err) => {
                tracing::warn!(error = %err, %product_id, "rebuild after Redis restart failed; will retry");
                if was_owed { owed.products.push(product_id) } else { owed.waiting.push(product_id) }
            }
        }
    }
    Ok(())
}

/// Watches Redis's `run_id`; when it changes, Redis restarted and every product's sale
/// state is rebuilt from MongoDB.
pub async fn watch_redis_restarts(app: AppState, shutdown: CancellationToken) {
    let mut known: Option<String> = None;
    let mut failures = 0u32;
    let mut owed = Owed::default();
    loop {
        tokio::select! {
            // Shutdown first, and no random branch order: the deterministic simulator replays it.
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_CHECK_INTERVAL) => {}
        }
        let mut conn = app.redis.clone();
        match crate::redis::run_id(&mut conn).await {
            Ok(current) => {
                if failures >= RUN_ID_FAILURES_LOGGED {
                    tracing::info!(failures, "reading Redis's run_id again");
                }
                failures = 0;
                if known.as_ref().is_some_and(|id| *id != current) {
                    tracing::warn!("Redis restarted (run_id changed); rebuilding sale state from MongoDB");
                    owed = Owed { since: app.rebuilds.generation(), all: true, ..Owed::default() };
                }
                known = Some(current);
            }
            Err(err) => {
                failures += 1;
                if failures == RUN_ID_FAILURES_LOGGED {
                    // A restart meanwhile is still seen: run_id differs once it reads again.
                    tracing::warn!(error = %err, failures, "cannot read Redis's run_id; restarts go unseen until it can");
                }
                continue;
            }
        }
        if owed.is_empty() {
            continue;
        }
        let was_owed = owed.all || !owed.products.is_empty();
        match pay(&app, &mut owed).await {
            Ok(()) if was_owed && owed.products.is_empty() => {
                tracing::info!(elsewhere = owed.waiting.len(), "products rebuilt after Redis restart");
                app.sold_out.clear();
            }
            Ok(()) => {}
            Err(err) => tracing::warn!(error = %err, "rebuild after Redis restart failed; will retry"),
        }
    }
}
