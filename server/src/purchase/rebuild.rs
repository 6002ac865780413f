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
    let result = rebuild_locked(app, product_id).await;
    if let Err(err) = scripts::unlock(&mut conn, &keys.rebuild_lock, &token).await {
        tracing::warn!(error = %err, %product_id, "releasing the rebuild lock failed; its lease will");
    }
    result
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
    // Reservations Redis still holds are real requests: persist them before MongoDB is
    // read, so the rebuilt state keeps them.
    reconciler::reconcile_product(app, product_id, &product, 0, usize::MAX).await?;
    let snapshot = sale::snapshot_from_mongo(app, product_id, &product).await?;
    scripts::load_sale(&mut conn, &keys, LoadMode::Rebuild, &snapshot).await?;
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
pub async fn rebuild_all(app: &App) -> anyhow::Result<usize> {
    let mut rebuilt = 0;
    for product_id in live_product_ids(app).await? {
        if rebuild_product(app, product_id).await? == Rebuilt::Done {
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

/// Watches Redis's `run_id`; when it changes, Redis restarted and every product's sale
/// state is rebuilt from MongoDB.
pub async fn watch_redis_restarts(app: AppState, shutdown: CancellationToken) {
    let mut known: Option<String> = None;
    let mut rebuild_owed = false;
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
                Ok(count) => {
                    tracing::info!(count, "products rebuilt after Redis restart");
                    rebuild_owed = false;
                    app.sold_out.clear();
                }
                Err(err) => tracing::warn!(error = %err, "rebuild after Redis restart failed; will retry"),
            }
        }
    }
}
