//! Product records in MongoDB. Every write is one single-document operation; the ones
//! that depend on the current record name it in their filter, so a concurrent write
//! makes them miss instead of overwriting it. A store failure is a `db::DbError` inside
//! the `anyhow::Error` (an outage answers 503, see `error`).

use anyhow::Context;
use uuid::Uuid;

use crate::db::records::Product;
use crate::state::App;

/// The product with this id, deleted or not.
pub async fn find_product(app: &App, id: Uuid) -> anyhow::Result<Option<Product>> {
    Ok(app.db.find_product(&id.to_string()).await?)
}

pub async fn insert_product(app: &App, product: &Product) -> anyhow::Result<()> {
    app.db.insert_product(product).await.context("inserting a product")
}

/// Up to `limit` products that are not deleted, in id (= creation) order, after `after`.
pub async fn list_products(app: &App, after: Option<Uuid>, limit: u32) -> anyhow::Result<Vec<Product>> {
    let after = after.map(|after| after.to_string());
    app.db.list_live_products(after.as_deref(), limit).await.context("listing products")
}

/// Writes `updated`'s editable fields if the record is still the version `current`
/// (same `updated_at_ms`) and not deleted. `None` if it changed or vanished meanwhile.
pub async fn replace_fields(app: &App, current: &Product, updated: &Product) -> anyhow::Result<Option<Product>> {
    app.db.replace_product_fields(&current.id, current.updated_at_ms, updated).await.context("updating a product")
}

/// Adds `quantity` to `stock_total` unless the product is deleted or the total would
/// pass [`crate::db::records::MAX_STOCK`]. `None` when refused (the caller reads why).
pub async fn add_stock(app: &App, id: Uuid, quantity: i64, now_ms: i64) -> anyhow::Result<Option<Product>> {
    app.db.add_stock(&id.to_string(), quantity, now_ms).await.context("restocking a product")
}

/// Marks a product deleted (its orders keep referring to it). `None` if unknown.
pub async fn mark_deleted(app: &App, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Product>> {
    app.db.mark_product_deleted(&id.to_string(), now_ms).await.context("deleting a product")
}
