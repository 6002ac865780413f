//! Cache-aside for catalogue reads: product documents and the first page of the list,
//! as JSON in Redis with a TTL. Live stock is never cached (see `handlers`).
//!
//! The cache fails open: a Redis error is a miss on read and a logged warning on write,
//! never an error for the client.
//!
//! Races: readers fill with `SET NX`, writers overwrite the product key with the record
//! MongoDB returned (write-through) and delete the list key. So a reader holding a
//! document read before a write cannot replace the fresher one. The list key keeps a
//! small window (a reader that read MongoDB before a write and fills after its `DEL`)
//! whose staleness is bounded by the TTL; it only ever affects catalogue fields, since
//! every response reads the live stock afresh.

use redis::AsyncCommands;
use redis::SetOptions;
use redis::{ExistenceCheck, SetExpiry};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::records::Product;
use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// The cached first page of the catalogue (records only, no live stock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

/// The cached product, counted as a hit or a miss.
pub async fn get_product(app: &App, id: Uuid) -> Option<Product> {
    get_json(app, &app.keys.product_cache(id)).await
}

/// The cached first page, counted as a hit or a miss.
pub async fn get_page(app: &App) -> Option<CachedPage> {
    get_json(app, &app.keys.product_list_cache()).await
}

/// Fills the product key after a miss, unless a writer put a fresher document there.
pub async fn fill_product(app: &App, product: &Product) {
    let Some(id) = product.uuid() else { return };
    set_json(app, &app.keys.product_cache(id), product, true).await;
}

/// Fills the list key after a miss.
pub async fn fill_page(app: &App, page: &CachedPage) {
    set_json(app, &app.keys.product_list_cache(), page, true).await;
}

/// After a write: the product key holds the record MongoDB returned, the list is
/// dropped. If the product key cannot be written it is deleted instead.
pub async fn after_write(app: &App, product: &Product) {
    let Some(id) = product.uuid() else { return };
    let key = app.keys.product_cache(id);
    if !set_json(app, &key, product, false).await {
        delete(app, &key).await;
    }
    delete(app, &app.keys.product_list_cache()).await;
}

async fn get_json<T: for<'de> Deserialize<'de>>(app: &App, key: &str) -> Option<T> {
    let mut conn = app.redis.clone();
    let cached: Option<String> = match conn.get(key).await {
        Ok(cached) => cached,
        Err(err) => {
            tracing::warn!(error = %err, key, "product cache unavailable; reading MongoDB");
            None
        }
    };
    let parsed = cached.and_then(|json| match serde_json::from_str(&json) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(error = %err, key, "unreadable cache entry; treating as a miss");
            None
        }
    });
    if parsed.is_some() {
        app.metrics.product_cache_hits.inc();
    } else {
        app.metrics.product_cache_misses.inc();
    }
    parsed
}

/// Stores `value` with the configured TTL (`only_if_absent` for reader fills). Whether
/// Redis answered; a TTL of 0 disables the cache.
async fn set_json<T: Serialize>(app: &App, key: &str, value: &T, only_if_absent: bool) -> bool {
    let ttl_s = app.config.product_cache_ttl_s;
    if ttl_s == 0 {
        return true;
    }
    let Ok(json) = serde_json::to_string(value) else { return false };
    let mut options = SetOptions::default().with_expiration(SetExpiry::EX(ttl_s));
    if only_if_absent {
        options = options.conditional_set(ExistenceCheck::NX);
    }
    let mut conn = app.redis.clone();
    let result: redis::RedisResult<Option<String>> = conn.set_options(key, json, options).await;
    match result {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(error = %err, key, "writing the product cache failed");
            false
        }
    }
}

async fn delete(app: &App, key: &str) {
    let mut conn = app.redis.clone();
    let result: redis::RedisResult<i64> = conn.del(key).await;
    if let Err(err) = result {
        // The TTL bounds how long the stale entry can be served.
        tracing::warn!(error = %err, key, "invalidating the product cache failed");
    }
}

/// The live product, from the cache or else MongoDB (then cached). The purchase path
/// reads it through here too, so a winning purchase costs no extra MongoDB round trip.
pub async fn load_product(app: &App, id: Uuid) -> ApiResult<Product> {
    if let Some(product) = get_product(app, id).await {
        return live_or_not_found(Some(product));
    }
    let product = live_or_not_found(super::product_store::find_product(app, id).await?)?;
    fill_product(app, &product).await;
    Ok(product)
}

pub fn live_or_not_found(product: Option<Product>) -> ApiResult<Product> {
    product.filter(|product| !product.deleted).ok_or(ApiError::NotFound("product"))
}
