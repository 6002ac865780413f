//! Rebuilding a product's sale state from MongoDB after Redis lost it (restart without
//! persistence, failover, FLUSHALL, stale snapshot). The sale is paused (purchases get
//! 503 + Retry-After), pending reservations are persisted where they can be, MongoDB is
//! read, and the state is replaced in one script call, all under the product's lock.

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{reconciler, sale};
use crate::db::PRODUCTS;
use crate::products::store::find_product;
use crate::redis::scripts::{self, LoadMode};
use crate::state::{App, AppState};

/// Lease of a product's rebuild lock (a rebuild that dies frees it after this).
pub const REBUILD_LEASE_MS: u64 = 30_000;
/// Added to the order write timeout while a rebuild waits for writes in flight.
pub const REBUILD_SETTLE_MARGIN: Duration = Duration::from_millis(250);
/// How often each instance checks whether Redis restarted.
pub const RESTART_CHECK_INTERVAL: Duration = Duration::from_millis(500);

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
    let mut conn = app.redis.clone();
    if !scripts::lock(&mut conn, &keys.rebuild_lock, &token, REBUILD_LEASE_MS).await? {
        return Ok(Rebuilt::InProgress);
    }
    let mut guard = LockGuard { conn, key: keys.rebuild_lock.clone(), token, armed: true };
    let result = rebuild_locked(app, product_id).await;
    guard.armed = false;
    if let Err(err) = scripts::unlock(&mut guard.conn, &guard.key, &guard.token).await {
        tracing::warn!(error = %err, %product_id, "releasing the rebuild lock failed; its lease will");
    }
    result
}

/// Releases a rebuild lock if the rebuild holding it is dropped midway (a request
/// whose client went away cancels its future): otherwise the lock would block every
/// rebuild of the product for its whole lease while the sale stays paused.
struct LockGuard {
    conn: crate::redis::RedisConn,
    key: String,
    token: String,
    armed: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
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

async fn rebuild_locked(app: &App, product_id: Uuid) -> anyhow::Result<Rebuilt> {
    let Some(product) = find_product(app, product_id).await? else { return Ok(Rebuilt::NoProduct) };
    if product.deleted {
        sale::unload(app, product_id).await?;
        return Ok(Rebuilt::NoProduct);
    }
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    scripts::pause(&mut conn, &keys).await?;
    // Requests that reserved a unit in the lost state may still be writing their order:
    // let every such write finish or time out, so that MongoDB, read next, holds every
    // unit they took (otherwise the rebuilt state would hand those units out again).
    tokio::time::sleep(Duration::from_millis(app.config.order_write_timeout_ms) + REBUILD_SETTLE_MARGIN).await;
    // Reservations Redis still holds are real requests: persist them before MongoDB is
    // read, so the rebuilt state keeps them.
    let pass = reconciler::reconcile_product(app, product_id, &product, 0, usize::MAX).await?;
    let snapshot = sale::snapshot_from_mongo(app, product_id, &product).await?;
    scripts::load_sale(&mut conn, &keys, LoadMode::Rebuild, &snapshot).await?;
    reconciler::reissue(app, product_id, &pass.reissue).await;
    app.sold_out.forget(product_id);
    app.metrics.sale_rebuilds.inc();
    tracing::info!(%product_id, orders = snapshot.orders.len(), "sale state rebuilt from MongoDB");
    Ok(Rebuilt::Done)
}

/// Loads a product's sale state when Redis has none (first use, or lost).
pub async fn ensure_loaded(app: &App, product_id: Uuid) -> anyhow::Result<Rebuilt> {
    if sale::stock(app, product_id).await?.is_some() {
        return Ok(Rebuilt::Done);
    }
    rebuild_product(app, product_id).await.context("loading the sale state")
}

/// Ids of every product that is not deleted.
pub async fn live_product_ids(app: &App) -> anyhow::Result<Vec<Uuid>> {
    let cursor = app
        .db
        .collection::<Document>(PRODUCTS)
        .find(doc! { "deleted": { "$ne": true } })
        .projection(doc! { "_id": 1 })
        .await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    Ok(docs.iter().filter_map(|d| d.get_str("_id").ok()).filter_map(|id| Uuid::parse_str(id).ok()).collect())
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

/// Rebuilds the products in `waiting` that are still unloaded or paused and whose lock
/// is free (their rebuild was abandoned midway); keeps those still being rebuilt.
async fn finish_waiting(app: &App, waiting: &mut Vec<Uuid>) -> anyhow::Result<()> {
    let mut still = Vec::new();
    for product_id in waiting.drain(..) {
        if settled(app, product_id).await? {
            continue;
        }
        if rebuild_product(app, product_id).await? == Rebuilt::InProgress {
            still.push(product_id);
        }
    }
    *waiting = still;
    Ok(())
}

/// Watches Redis's `run_id`; when it changes, Redis restarted and every product's sale
/// state is rebuilt from MongoDB.
pub async fn watch_redis_restarts(app: AppState, shutdown: CancellationToken) {
    let mut known: Option<String> = None;
    let mut rebuild_owed = false;
    // Products another instance (or request) was rebuilding when this one tried.
    let mut waiting: Vec<Uuid> = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_CHECK_INTERVAL) => {}
        }
        let mut conn = app.redis.clone();
        let Ok(current) = crate::redis::run_id(&mut conn).await else { continue };
        if known.as_ref().is_some_and(|id| *id != current) {
            tracing::warn!("Redis restarted (run_id changed); rebuilding sale state from MongoDB");
            rebuild_owed = true;
        }
        known = Some(current);
        if rebuild_owed {
            match rebuild_all(&app).await {
                Ok((count, in_progress)) => {
                    tracing::info!(count, elsewhere = in_progress.len(), "products rebuilt after Redis restart");
                    rebuild_owed = false;
                    waiting = in_progress;
                    app.sold_out.clear();
                }
                Err(err) => tracing::warn!(error = %err, "rebuild after Redis restart failed; will retry"),
            }
        } else if !waiting.is_empty() {
            if let Err(err) = finish_waiting(&app, &mut waiting).await {
                tracing::warn!(error = %err, "checking rebuilds in progress failed; will retry");
            }
        }
    }
}
