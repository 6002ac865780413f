//! Sale state kept in step with MongoDB as the sale grows: the time to rebuild a product's
//! sale state from its orders (`sale::rebuild::rebuild_product`, what `flashsale admin
//! rebuild` runs), split into its parts, and the time of one reconciler pass
//! (`sale::reconciler::run_pass`) over many live products. Each sweep has a database and
//! key prefix of its own, so the only documents it reads are its own.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale::db::records::{OrderDoc, Product};
use flashsale::redis::scripts::{self, LoadMode};
use flashsale::sale::rebuild::{REBUILD_SETTLE_MARGIN, REBUILD_TIMEOUT, Rebuilt, rebuild_product};
use flashsale::sale::{reconciler, snapshot_from_mongo};
use flashsale::state::App;
use serde::Serialize;
use uuid::Uuid;

use super::drive;
use crate::target::Target;

/// Reconciler passes timed at each product count.
pub const RECONCILER_PASSES: usize = 5;
/// Stock of each product of the reconciler sweep.
const RECONCILER_PRODUCT_STOCK: usize = 100;

/// One rebuild, timed whole and by part.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildCost {
    /// Orders of the product rebuilt, and orders of every product in the collection.
    pub orders: usize,
    pub orders_in_collection: usize,
    /// The smallest product rebuilt again once every product's orders are in the collection.
    pub repeat: bool,
    /// Seconds to write the product's orders into MongoDB (`insert_many` of
    /// [`drive::ORDER_BATCH`]).
    pub seed_s: f64,
    /// The whole `rebuild_product` call.
    pub total_s: f64,
    /// Its fixed wait for order writes in flight (order write timeout + settle margin).
    pub settle_s: f64,
    /// Reading the product's orders from MongoDB and making the snapshot.
    pub mongo_read_s: f64,
    /// `load_sale.lua` writing that snapshot (one script call: Redis serves nothing else meanwhile).
    pub redis_load_s: f64,
    /// `used_memory` delta of the rebuild (an empty sale state replaced by the full one), per order.
    pub used_memory_per_order_b: f64,
    /// Whether the rebuild finished inside `REBUILD_TIMEOUT`, past which it fails (and every
    /// retry of it fails the same way, the sale paused meanwhile).
    pub within_timeout: bool,
    /// Why the rebuild failed, if it did.
    pub failure: Option<String>,
    /// Why the MongoDB read on its own failed, if it did (the store's operation timeout).
    pub mongo_read_failure: Option<String>,
}

/// Reconciler passes at one count of live products.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcilerCost {
    pub live_products: usize,
    pub pass_median_ms: f64,
    pub pass_max_ms: f64,
    pub per_product_us: f64,
    /// The pass's interval and its lock's lease, as configured.
    pub interval_ms: u64,
    pub lease_ms: u64,
}

/// Rebuild times at each order count, then the smallest product's again with every
/// product's orders in the collection.
pub async fn rebuild_sweep(
    target: &Target,
    order_counts: &[usize],
    run: &str,
    say: impl Fn(&str),
) -> anyhow::Result<Vec<RebuildCost>> {
    let app = drive::scratch_app(target, "rb").await?;
    let patient = drive::patient_scratch_app(target, "rb").await?;
    let mut costs = Vec::with_capacity(order_counts.len() + 1);
    let mut in_collection = 0;
    let mut first = None;
    for &orders in order_counts {
        say(&format!("rebuild of a product of {orders} orders"));
        let record = drive::new_product_record(&app, orders, true, &format!("Rebuild {orders} {run}")).await?;
        let product = record.uuid().context("a product id")?;
        flashsale::sale::load_initial(&app, product, &record).await?;
        let seeding = Instant::now();
        let seeded = drive::seed_orders(&app, product, 1, orders).await?;
        let seed_s = seeding.elapsed().as_secs_f64();
        in_collection += orders;
        costs.push(time_rebuild((&app, &patient), &record, &seeded, in_collection, Some(seed_s)).await?);
        first.get_or_insert((record, seeded));
    }
    if let (Some((record, seeded)), true) = (first, order_counts.len() > 1) {
        say(&format!("rebuild of the product of {} orders again, {in_collection} in the collection", seeded.len()));
        costs.push(time_rebuild((&app, &patient), &record, &seeded, in_collection, None).await?);
    }
    Ok(costs)
}

/// Times a rebuild of `product` (whose `seeded` orders are all it has) whole, then its
/// MongoDB read and its script call on their own. A rebuild or a read that fails (past its
/// bound) is a figure too, not the end of the sweep. The script call on its own goes
/// through `patient`, whose Redis timeout does not cut it short.
async fn time_rebuild(
    (app, patient): (&App, &App),
    product: &Product,
    seeded: &[OrderDoc],
    orders_in_collection: usize,
    seed_s: Option<f64>,
) -> anyhow::Result<RebuildCost> {
    let (product_id, orders) = (product.uuid().context("a product id")?, seeded.len());
    let memory_before = drive::used_memory(app).await?;
    let started = Instant::now();
    let rebuilt = rebuild_product(app, product_id).await;
    let total = started.elapsed();
    let failure = match rebuilt {
        Ok(Rebuilt::Done) => None,
        Ok(other) => Some(format!("{other:?}")),
        Err(err) => Some(format!("{err:#}")),
    };
    let memory_after = drive::used_memory(app).await?;
    let settle = Duration::from_millis(app.config.order_write_timeout_ms) + REBUILD_SETTLE_MARGIN;

    // The two parts that grow, again on their own: the MongoDB read and the script call
    // (the latter writing a copy under a scratch product id, removed afterwards).
    let reading = Instant::now();
    let read = snapshot_from_mongo(app, product_id, product).await;
    let mongo_read = reading.elapsed();
    let mongo_read_failure = match read {
        Ok(snapshot) if snapshot.orders.len() == orders => None,
        Ok(snapshot) => Some(format!("the snapshot holds {} orders of {orders}", snapshot.orders.len())),
        Err(err) => Some(format!("{err:#}")),
    };
    let snapshot = drive::seeded_snapshot(product, seeded);
    let scratch = app.keys.sale(Uuid::new_v4());
    let mut conn = patient.redis.clone();
    let loading = Instant::now();
    scripts::load_sale(&mut conn, &scratch, LoadMode::Init, &snapshot).await?;
    let redis_load = loading.elapsed();
    let _: i64 = redis::cmd("DEL").arg(&scratch.script_keys()[..]).query_async(&mut conn).await?;

    Ok(RebuildCost {
        orders,
        orders_in_collection,
        repeat: seed_s.is_none(),
        seed_s: seed_s.unwrap_or(0.0),
        total_s: total.as_secs_f64(),
        settle_s: settle.as_secs_f64(),
        mongo_read_s: mongo_read.as_secs_f64(),
        redis_load_s: redis_load.as_secs_f64(),
        used_memory_per_order_b: memory_after.saturating_sub(memory_before) as f64 / orders as f64,
        within_timeout: failure.is_none() && total < REBUILD_TIMEOUT,
        failure,
        mongo_read_failure,
    })
}

/// Reconciler pass times at each count of live products (products added between counts).
pub async fn reconciler_sweep(
    target: &Target,
    product_counts: &[usize],
    run: &str,
    say: impl Fn(&str),
) -> anyhow::Result<Vec<ReconcilerCost>> {
    let app = drive::scratch_app(target, "rc").await?;
    let mut made = 0;
    let mut costs = Vec::with_capacity(product_counts.len());
    for &count in product_counts {
        say(&format!("reconciler passes over {count} live products"));
        while made < count {
            drive::new_product(&app, RECONCILER_PRODUCT_STOCK, true, &format!("Live {made} {run}")).await?;
            made += 1;
        }
        let mut passes_ms = Vec::with_capacity(RECONCILER_PASSES);
        for _ in 0..RECONCILER_PASSES {
            let started = Instant::now();
            reconciler::run_pass(&app).await?;
            passes_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
        let median = crate::baseline::Spread::of(&passes_ms).context("no pass timed")?;
        costs.push(ReconcilerCost {
            live_products: count,
            pass_median_ms: median.median,
            pass_max_ms: median.max,
            per_product_us: median.median * 1_000.0 / count as f64,
            interval_ms: app.config.reconcile_interval_ms,
            lease_ms: app.config.reconcile_lease_ms,
        });
    }
    Ok(costs)
}
