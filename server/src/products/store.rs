//! Product records in MongoDB. Every write is one single-document operation; the ones
//! that depend on the current record name it in their filter, so a concurrent write
//! makes them miss instead of overwriting it.

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use uuid::Uuid;

use super::model::{MAX_STOCK, Product};
use crate::db::PRODUCTS;
use crate::state::App;

/// The product with this id, deleted or not.
pub async fn find_product(app: &App, id: Uuid) -> anyhow::Result<Option<Product>> {
    Ok(app.db.bounded(app.db.collection::<Product>(PRODUCTS).find_one(doc! { "_id": id.to_string() })).await?)
}

pub async fn insert_product(app: &App, product: &Product) -> anyhow::Result<()> {
    app.db.bounded(app.db.collection::<Product>(PRODUCTS).insert_one(product)).await.context("inserting a product")?;
    Ok(())
}

/// Up to `limit` products that are not deleted, in id (= creation) order, after `after`.
pub async fn list_products(app: &App, after: Option<Uuid>, limit: u32) -> anyhow::Result<Vec<Product>> {
    let mut filter = doc! { "deleted": { "$ne": true } };
    if let Some(after) = after {
        filter.insert("_id", doc! { "$gt": after.to_string() });
    }
    let products = app.db.collection::<Product>(PRODUCTS);
    let read =
        async { products.find(filter).sort(doc! { "_id": 1 }).limit(i64::from(limit)).await?.try_collect().await };
    app.db.bounded(read).await.context("listing products")
}

/// Writes `updated`'s editable fields if the record is still the version `current`
/// (same `updated_at_ms`) and not deleted. `None` if it changed or vanished meanwhile.
pub async fn replace_fields(app: &App, current: &Product, updated: &Product) -> anyhow::Result<Option<Product>> {
    let filter = doc! {
        "_id": &current.id,
        "updated_at_ms": current.updated_at_ms,
        "deleted": { "$ne": true },
    };
    let set = doc! {
        "name": &updated.name,
        "description": &updated.description,
        "price_cents": updated.price_cents,
        "one_per_user": updated.one_per_user,
        "sale_starts_at_ms": optional(updated.sale_starts_at_ms),
        "sale_ends_at_ms": optional(updated.sale_ends_at_ms),
        "updated_at_ms": updated.updated_at_ms,
    };
    find_and_update(app, filter, doc! { "$set": set }).await.context("updating a product")
}

/// Adds `quantity` to `stock_total` unless the product is deleted or the total would
/// pass [`MAX_STOCK`]. `None` when refused (the caller reads why).
pub async fn add_stock(app: &App, id: Uuid, quantity: i64, now_ms: i64) -> anyhow::Result<Option<Product>> {
    let filter = doc! {
        "_id": id.to_string(),
        "deleted": { "$ne": true },
        "stock_total": { "$lte": MAX_STOCK - quantity },
    };
    let update = doc! {
        "$inc": { "stock_total": quantity },
        "$max": { "updated_at_ms": now_ms },
    };
    find_and_update(app, filter, update).await.context("restocking a product")
}

/// Marks a product deleted (its orders keep referring to it). `None` if unknown.
pub async fn mark_deleted(app: &App, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Product>> {
    let update = doc! { "$set": { "deleted": true }, "$max": { "updated_at_ms": now_ms } };
    find_and_update(app, doc! { "_id": id.to_string() }, update).await.context("deleting a product")
}

async fn find_and_update(app: &App, filter: Document, update: Document) -> anyhow::Result<Option<Product>> {
    let products = app.db.collection::<Product>(PRODUCTS);
    Ok(app.db.bounded(products.find_one_and_update(filter, update).return_document(ReturnDocument::After)).await?)
}

fn optional(value: Option<i64>) -> Bson {
    value.map_or(Bson::Null, Bson::Int64)
}
