//! The reconciler: a background task on every instance, one at a time (a Redis lock
//! with a lease), that persists reservations MongoDB has not acknowledged yet (the
//! 202 pending answers, and requests whose instance died). Ambiguity is resolved only
//! by reading MongoDB.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::orders::{self, Conflict, OrderDoc, OrderStatus, Persisted};
use super::rebuild;
use crate::db::records::Product;
use crate::events::{self, EventType, SaleEvent};
use crate::redis::scripts;
use crate::sale;
use crate::sale::product_store::find_product;
use crate::state::{App, AppState};

/// How long after a product's deletion each pass makes sure its sale state is gone: a
/// delete whose live step failed (Redis down, or its instance killed before the retry
/// took) leaves the sale loaded, holding reservations some buyers were answered 202 for.
pub const DELETED_WATCH: Duration = Duration::from_secs(3_600);

/// Runs passes until `shutdown`.
pub async fn run(app: AppState, shutdown: CancellationToken) {
    let interval = Duration::from_millis(app.config.reconcile_interval_ms);
    loop {
        tokio::select! {
            // Shutdown first, and no random branch order: the deterministic simulator replays it.
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match run_pass(&app).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "reconciler persisted reservations"),
            Err(err) => tracing::debug!(error = %err, "reconciler pass failed"),
        }
    }
}

/// One pass over every live product, under the reconciler lock. Returns the
/// reservations it settled (0 if another instance holds the lock).
pub async fn run_pass(app: &App) -> anyhow::Result<usize> {
    let lock = app.keys.reconciler_lock();
    let token = app.ids.token_128();
    let mut conn = app.redis.clone();
    let Some(fence) = scripts::lock(&mut conn, &lock, &token, app.config.reconcile_lease_ms).await? else {
        return Ok(0);
    };
    let result = pass_locked(app).await;
    let _ = scripts::unlock(&mut conn, &lock, &fence).await;
    result
}

async fn pass_locked(app: &App) -> anyhow::Result<usize> {
    let grace = i64::try_from(app.config.reconcile_grace_ms).unwrap_or(i64::MAX);
    let mut settled = 0;
    let mut resumes = Vec::new();
    for (product_id, recorded_stock) in rebuild::live_products(app).await? {
        let mut waiting_for_units = false;
        match sale::stock(app, product_id).await? {
            // A live product whose sale state Redis lost while no instance was there to
            // see it (every instance down during a restart without persistence) is
            // rebuilt here, not only when a buyer next touches it (found by the
            // deterministic simulator: swarm seed 16).
            None => {
                let rebuilt = rebuild::ensure_loaded(app, product_id).await?;
                tracing::info!(%product_id, ?rebuilt, "reconciler found a live product without sale state");
            }
            // A restock MongoDB recorded whose live step failed (Redis down at that
            // moment; the admin was told 200) is brought to the sale here, not only when
            // a read of the product or a rebuild next sees it: until then buyers are
            // told sold out with the units recorded (found by the deterministic
            // simulator once its plans restocked).
            Some(state) if !state.paused => {
                if state.stock_total < recorded_stock {
                    sale::restock(app, product_id, recorded_stock).await?;
                    tracing::info!(%product_id, recorded_stock, "reconciler raised a live stock to its recorded total");
                }
                // Reservations still waiting for a fresh unit, with the sale running: the
                // rebuild that was to reissue them failed, or its instance died. They
                // need one (the state they conflicted with still counts their buyers
                // as served, so a purchase now would be refused as a second one).
                waiting_for_units = state.reissue_waiting > 0;
            }
            // A paused sale is being rebuilt, or its rebuild was abandoned: the instance
            // holding the lock died and its lease ran out. Nothing else resumes such a
            // sale when no purchase comes (found by the deterministic simulator: swarm
            // seed 4942 kept a product paused through the drain, a restock never
            // reaching Redis). Starting a rebuild is a no-op while another holder's
            // lock stands; this instance's own rebuild in flight is joined.
            Some(_) => resumes.push(product_id),
        }
        // A rebuild for this pass's conflicts must read MongoDB after the pass did.
        let since = app.rebuilds.generation();
        let mut conflicts = 0;
        // Most live products have nothing to settle: MongoDB is read only for one that has
        // (a read per live product per pass made the pass grow faster than the products).
        if has_due_reservations(app, product_id, grace).await?
            && let Some(product) = find_product(app, product_id).await?
        {
            let pass = reconcile_product(app, product_id, &product, grace, app.config.reconcile_batch).await?;
            settled += pass.settled;
            conflicts = pass.conflicts;
        }
        if conflicts > 0 || waiting_for_units {
            // The rebuild reissues the reservations waiting for a fresh unit once it has
            // resumed the sale; if it does not end (another instance rebuilds, or it
            // fails), they wait in Redis for it or for a later pass.
            let flight = app.rebuilds.start(app, product_id, since)?;
            let rebuilt = flight.await.map_err(|err| anyhow::anyhow!("{err}"))?;
            tracing::info!(%product_id, ?rebuilt, conflicts, waiting_for_units, "rebuild to settle conflicts with MongoDB");
        }
    }
    resume_paused(app, resumes).await?;
    retire_deleted(app).await?;
    Ok(settled)
}

/// Starts (or joins) a rebuild of every paused sale at once and waits for them: each
/// waits out the order write timeout, paid once in parallel.
async fn resume_paused(app: &App, products: Vec<Uuid>) -> anyhow::Result<()> {
    let mut flights = Vec::with_capacity(products.len());
    for &product_id in &products {
        flights.push(app.rebuilds.start(app, product_id, 0)?);
    }
    for (product_id, result) in products.into_iter().zip(futures::future::join_all(flights).await) {
        match result {
            Ok(rebuild::Rebuilt::Done) => tracing::info!(%product_id, "reconciler rebuilt a paused sale"),
            Ok(rebuild::Rebuilt::InProgress | rebuild::Rebuilt::NoProduct) => {}
            Err(err) => tracing::warn!(error = %err, %product_id, "rebuilding a paused sale failed; a later pass will"),
        }
    }
    Ok(())
}

/// Whether a product has reservations pending for longer than `grace_ms`.
async fn has_due_reservations(app: &App, product_id: Uuid, grace_ms: i64) -> anyhow::Result<bool> {
    let cutoff = app.ids.now_ms().saturating_sub(grace_ms);
    let mut conn = app.redis.clone();
    let due: i64 = redis::cmd("ZCOUNT")
        .arg(app.keys.sale(product_id).pending)
        .arg("-inf")
        .arg(cutoff)
        .query_async(&mut conn)
        .await?;
    Ok(due > 0)
}

/// What one product's reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPass {
    /// Reservations persisted, confirmed or released.
    pub settled: usize,
    /// Reservations MongoDB refused over a unit or a buyer slot (the product needs a rebuild).
    pub conflicts: usize,
}

/// Retires the sale of every product deleted within [`DELETED_WATCH`] whose sale state
/// is still loaded (found by the deterministic simulator: a delete answered 503 while
/// Redis restarted, its instance killed before the retry of its live step took).
async fn retire_deleted(app: &App) -> anyhow::Result<()> {
    let watch_ms = i64::try_from(DELETED_WATCH.as_millis()).unwrap_or(i64::MAX);
    for id in app.db.deleted_since(app.ids.now_ms().saturating_sub(watch_ms)).await? {
        let Ok(product_id) = Uuid::parse_str(&id) else { continue };
        if sale::stock(app, product_id).await?.is_none() {
            continue;
        }
        let Some(product) = super::product_store::head(app, product_id).await?.filter(|p| p.deleted) else {
            continue;
        };
        super::product_store::retire(app, product_id, &product).await?;
        tracing::info!(%product_id, "reconciler retired the sale of a deleted product");
    }
    Ok(())
}

/// A grace that takes every reservation, whatever clock stamped it (an instance's clock
/// may run ahead of this one's): for a sale about to go.
pub const ANY_AGE: i64 = i64::MIN;

/// Persists up to `batch` reservations of one product older than `grace_ms`.
pub async fn reconcile_product(
    app: &App,
    product_id: Uuid,
    product: &Product,
    grace_ms: i64,
    batch: usize,
) -> anyhow::Result<ProductPass> {
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    let cutoff = app.ids.now_ms().saturating_sub(grace_ms);
    let limit = isize::try_from(batch).unwrap_or(isize::MAX);
    let pending: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.pending)
        .arg("-inf")
        .arg(cutoff)
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut conn)
        .await?;
    let mut pass = ProductPass::default();
    for order in pending {
        let Ok(order_id) = Uuid::parse_str(&order) else { continue };
        let record: Option<String> = redis::cmd("HGET").arg(&keys.orders).arg(&order).query_async(&mut conn).await?;
        let Some((reservation, confirmed)) = record.and_then(|r| sale::parse_reservation(order_id, product_id, &r))
        else {
            // Pending without a reservation record: nothing holds a unit; drop the entry.
            let _: i64 = redis::cmd("ZREM").arg(&keys.pending).arg(&order).query_async(&mut conn).await?;
            continue;
        };
        if confirmed {
            scripts::confirm(&mut conn, &keys, order_id).await?;
            continue;
        }
        #[cfg(feature = "broken")]
        if crate::broken::is(app, crate::broken::Broken::DropPending) {
            // Broken: dropped from Redis unpersisted, its unit and buyer slot still taken.
            drop_reservation(app, product_id, order_id, None).await?;
            pass.settled += 1;
            continue;
        }
        let document = OrderDoc::confirmed(&reservation, product.one_per_user);
        #[cfg(feature = "broken")]
        let document = crate::broken::phantom_id(app, crate::broken::buyer_slot(app, document));
        // Bounded: a write that never answers must not hold the pass (and its lock) forever.
        let write_timeout = Duration::from_millis(app.config.order_write_timeout_ms);
        let persisted = tokio::time::timeout(write_timeout, orders::persist(app, &document))
            .await
            .with_context(|| format!("order write for {order_id} timed out"))??;
        match persisted {
            Persisted::Inserted { confirmed } => {
                // The reservation this pass settles is confirmed here whatever the group
                // commit did for the document (idempotent; a rare path). Its completion was
                // published by the group commit, unless Redis failed then.
                scripts::confirm(&mut conn, &keys, order_id).await?;
                if !confirmed {
                    publish_completed(app, product_id, order_id).await;
                }
                app.metrics.reconciled_orders.inc();
                pass.settled += 1;
            }
            Persisted::AlreadyThere => {
                scripts::confirm(&mut conn, &keys, order_id).await?;
                pass.settled += 1;
            }
            Persisted::Conflict(Conflict::OrderIdTaken(existing)) => {
                // The order id belongs to another request (key reused on another product)
                // or was released: this reservation can never be persisted.
                let same_product_released =
                    existing.product_id == product_id.to_string() && existing.status == OrderStatus::Released;
                #[cfg(feature = "broken")]
                if same_product_released && crate::broken::is(app, crate::broken::Broken::ReconcilerConfirmsReleased) {
                    // Broken: the cancelled order is written back and confirmed.
                    app.db.restore_order(&document).await?;
                    scripts::confirm(&mut conn, &keys, order_id).await?;
                    pass.settled += 1;
                    continue;
                }
                tracing::info!(%order_id, same_product_released, "releasing a reservation whose order id is taken");
                scripts::release(&mut conn, &keys, order_id, &app.keys.events_channel(), product_id).await?;
                pass.settled += 1;
            }
            Persisted::Conflict(conflict) => {
                // Redis disagrees with MongoDB about units or buyers: a rebuild (which
                // reads MongoDB) settles it; this reservation is not persisted as it is.
                // A reservation whose unit MongoDB holds for another order (Redis handed
                // it out twice after losing data) waits for a fresh unit after the
                // rebuild, so the request keeps its place (see [`reissue`]).
                tracing::warn!(%order_id, ?conflict, "reservation conflicts with MongoDB; dropping it from Redis");
                let waits = (conflict == Conflict::UnitTaken).then_some(reservation.user_id);
                drop_reservation(app, product_id, order_id, waits).await?;
                pass.conflicts += 1;
            }
        }
    }
    Ok(pass)
}

/// How long a reservation waits in `SaleKeys::reissue` for a fresh unit at most: a
/// product deleted meanwhile is no longer visited by the passes that would reissue it.
pub const REISSUE_KEEP: Duration = Duration::from_secs(24 * 3_600);

/// Once the sale state is rebuilt, reserves a fresh unit for each request waiting in
/// `SaleKeys::reissue` (the same order id and buyer, through the purchase script, so
/// every rule still applies; a request reissued twice is answered as a replay the
/// second time). The next pass persists them. A request stays waiting while the sale is
/// paused or not loaded, or Redis fails; any other outcome ends its wait. One that finds
/// the product sold out cannot be honoured: Redis sold that unit twice while it was
/// losing data.
pub async fn reissue(app: &App, product_id: Uuid) -> anyhow::Result<()> {
    let keys = app.keys.sale(product_id);
    let channel = app.keys.events_channel();
    let mut conn = app.redis.clone();
    // In order id order: the same answer on every run of the deterministic simulator.
    let waiting: std::collections::BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(&keys.reissue).query_async(&mut conn).await?;
    for (order, user) in waiting {
        let (Ok(order_id), Ok(user_id)) = (Uuid::parse_str(&order), Uuid::parse_str(&user)) else {
            let _: i64 = redis::cmd("HDEL").arg(&keys.reissue).arg(&order).query_async(&mut conn).await?;
            continue;
        };
        let args = scripts::PurchaseArgs { order_id, user_id, product_id, now_ms: app.ids.now_ms(), channel: &channel };
        let outcome = scripts::purchase(&mut conn, &keys, &args).await?;
        if matches!(outcome, scripts::PurchaseOutcome::Paused | scripts::PurchaseOutcome::NotLoaded) {
            tracing::info!(%order_id, ?outcome, "reservation still waiting for a fresh unit");
            continue;
        }
        let _: i64 = redis::cmd("HDEL").arg(&keys.reissue).arg(&order).query_async(&mut conn).await?;
        app.metrics.reissued_reservations.inc();
        tracing::info!(%order_id, ?outcome, "reservation reissued");
    }
    Ok(())
}

/// Removes a reservation that MongoDB refuses, without returning its unit (the unit
/// may belong to a persisted order Redis forgot); the next rebuild recomputes free units.
/// With `waits_for_unit` (its buyer), the request waits in `SaleKeys::reissue` for a
/// fresh unit, in the same transaction: no moment when it is in neither place.
async fn drop_reservation(
    app: &App,
    product_id: Uuid,
    order_id: Uuid,
    waits_for_unit: Option<Uuid>,
) -> anyhow::Result<()> {
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HDEL").arg(&keys.orders).arg(order_id.to_string()).ignore();
    pipe.cmd("ZREM").arg(&keys.pending).arg(order_id.to_string()).ignore();
    if let Some(user_id) = waits_for_unit {
        let keep_ms = u64::try_from(REISSUE_KEEP.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("HSET").arg(&keys.reissue).arg(order_id.to_string()).arg(user_id.to_string()).ignore();
        pipe.cmd("PEXPIRE").arg(&keys.reissue).arg(keep_ms).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await?;
    Ok(())
}

pub async fn publish_completed(app: &App, product_id: Uuid, order_id: Uuid) {
    let event =
        SaleEvent { event_type: EventType::PurchaseCompleted, product_id, remaining: None, order_id: Some(order_id) };
    events::publish(app, &event).await;
}
