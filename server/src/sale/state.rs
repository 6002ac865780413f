//! A product's live sale state in Redis: first load, restock, window changes, and the
//! snapshot of it that MongoDB implies (used by rebuilds). Product writes call these;
//! only `purchase` touches sale keys, and only through `lua/`.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::orders::{self, OrderStatus, Reservation};
use crate::db::records::Product;
use crate::redis::scripts::{self, Configured, LoadMode, SaleSettings, SaleSnapshot, StockState};
use crate::state::App;

/// The sale state of a product with no orders yet.
pub fn fresh_snapshot(product: &Product) -> SaleSnapshot {
    SaleSnapshot {
        stock_total: product.stock_total,
        next_unit: 1,
        one_per_user: product.one_per_user,
        starts_at_ms: product.sale_starts_at_ms.unwrap_or(0),
        ends_at_ms: product.sale_ends_at_ms.unwrap_or(0),
        revision: product.revision,
        ..SaleSnapshot::default()
    }
}

/// Loads a new product's sale state (no-op if one exists already).
pub async fn load_initial(app: &App, product_id: Uuid, product: &Product) -> anyhow::Result<bool> {
    let mut conn = app.redis.clone();
    scripts::load_sale(&mut conn, &app.keys.sale(product_id), LoadMode::Init, &fresh_snapshot(product)).await
}

/// The sale state MongoDB implies: confirmed orders hold their units and buyer slots,
/// tombstones stay burnt, every unit below the highest one used and not held is free.
pub async fn snapshot_from_mongo(app: &App, product_id: Uuid, product: &Product) -> anyhow::Result<SaleSnapshot> {
    let mut snapshot = fresh_snapshot(product);
    let mut used = BTreeSet::new();
    let mut buyers: BTreeMap<String, i64> = BTreeMap::new();
    for order in orders::orders_of_product(app, product_id).await? {
        match (order.status, order.unit_number()) {
            (OrderStatus::Confirmed, Some(unit)) => {
                used.insert(unit);
                *buyers.entry(order.user_id.clone()).or_default() += 1;
                let record = format!("{}|{}|{}|C", order.user_id, unit, order.created_at_ms);
                snapshot.orders.push((order.id, record));
            }
            #[cfg(feature = "broken")]
            _ if !crate::broken::rebuild_keeps_tombstones(app) => {}
            _ => snapshot.tombstones.push(order.id),
        }
    }
    let highest = used.last().copied().unwrap_or(0);
    snapshot.next_unit = highest + 1;
    snapshot.free_units = (1..=highest).filter(|unit| !used.contains(unit)).collect();
    snapshot.buyers = buyers.into_iter().collect();
    Ok(snapshot)
}

/// Raises the live stock to the product's recorded total (never lowers it).
pub async fn restock(app: &App, product_id: Uuid, stock_total: i64) -> anyhow::Result<Option<i64>> {
    let mut conn = app.redis.clone();
    let channel = app.keys.events_channel();
    let remaining = scripts::restock(&mut conn, &app.keys.sale(product_id), stock_total, &channel, product_id).await?;
    // This instance forgets the sell-out at once; the others when the event reaches them.
    app.sold_out.forget(product_id);
    Ok(remaining)
}

/// Applies a product's window and one-per-user rule to its loaded sale, unless the sale
/// already holds those of a later revision.
pub async fn configure(app: &App, product_id: Uuid, product: &Product) -> anyhow::Result<Configured> {
    let mut conn = app.redis.clone();
    let settings = SaleSettings {
        one_per_user: product.one_per_user,
        starts_at_ms: product.sale_starts_at_ms.unwrap_or(0),
        ends_at_ms: product.sale_ends_at_ms.unwrap_or(0),
        revision: product.revision,
    };
    #[cfg(feature = "broken")]
    let settings = SaleSettings { revision: crate::broken::settings_revision(app, settings.revision), ..settings };
    scripts::configure(&mut conn, &app.keys.sale(product_id), settings).await
}

/// The live stock of a product, if its sale is loaded.
pub async fn stock(app: &App, product_id: Uuid) -> anyhow::Result<Option<StockState>> {
    let mut conn = app.redis.clone();
    scripts::stock(&mut conn, &app.keys.sale(product_id)).await
}

/// Removes a deleted product's sale state for good: a tombstone stays that no load or
/// rebuild writes over. False, and nothing removed, while one of its reservations is not
/// yet persisted.
pub async fn unload(app: &App, product_id: Uuid) -> anyhow::Result<bool> {
    let mut conn = app.redis.clone();
    let unloaded =
        scripts::unload(&mut conn, &app.keys.sale(product_id), &app.keys.events_channel(), product_id).await?;
    if unloaded {
        app.sold_out.forget(product_id);
    }
    Ok(unloaded)
}

/// Stops a deleted product's sale taking reservations (purchases then find it deleted).
pub async fn stop(app: &App, product_id: Uuid) -> anyhow::Result<()> {
    let mut conn = app.redis.clone();
    scripts::stop(&mut conn, &app.keys.sale(product_id), &app.keys.events_channel(), product_id).await?;
    Ok(())
}

/// Parses a reservation record "user|unit|reserved_at_ms|state".
pub fn parse_reservation(order_id: Uuid, product_id: Uuid, record: &str) -> Option<(Reservation, bool)> {
    let mut parts = record.split('|');
    let user_id = Uuid::parse_str(parts.next()?).ok()?;
    let unit = parts.next()?.parse().ok()?;
    let reserved_at_ms = parts.next()?.parse().ok()?;
    let confirmed = parts.next()? == "C";
    let one_per_user = parts.next().and_then(scripts::rule_flag);
    Some((Reservation { order_id, product_id, user_id, unit, reserved_at_ms, one_per_user }, confirmed))
}
