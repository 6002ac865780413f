//! The live stock of a product, read from its sale state in Redis on every response
//! (never from the cache). Unknown stock is reported as `null`, never as an error.

use futures::StreamExt;
use uuid::Uuid;

use super::model::{LiveStock, Product, ProductView};
use crate::redis::scripts::StockState;
use crate::sale;
use crate::sale::rebuild::{self, Rebuilt};
use crate::state::App;

/// Live stock reads in flight at once for one list page.
pub const LIST_LIVE_READS_IN_FLIGHT: usize = 16;

/// The view of `product` with its live stock.
pub async fn view(app: &App, product: Product) -> ProductView {
    let live = live_stock(app, &product).await;
    ProductView::new(product, live, app.ids.now_ms())
}

/// Views of a page of products, their live stock read concurrently (bounded).
pub async fn views(app: &App, products: Vec<Product>) -> Vec<ProductView> {
    futures::stream::iter(products)
        .map(|product| view(app, product))
        .buffered(LIST_LIVE_READS_IN_FLIGHT)
        .collect()
        .await
}

/// Reads the sale state; loads it from MongoDB once if Redis has none.
pub async fn live_stock(app: &App, product: &Product) -> LiveStock {
    let Some(id) = product.uuid() else { return LiveStock::default() };
    let state = match sale::stock(app, id).await {
        Ok(Some(state)) => Some(state),
        Ok(None) => load_once(app, id).await,
        Err(err) => {
            tracing::warn!(error = %err, product_id = %id, "live stock unavailable; reporting null");
            None
        }
    };
    match state {
        Some(state) => {
            let remaining = catch_up(app, id, product, &state).await;
            #[cfg(feature = "broken")]
            let remaining = crate::broken::reported_remaining(app, remaining);
            LiveStock { remaining: Some(remaining), paused: state.paused }
        }
        None => LiveStock::default(),
    }
}

async fn load_once(app: &App, id: Uuid) -> Option<StockState> {
    match rebuild::ensure_loaded(app, id).await {
        Ok(Rebuilt::Done) => sale::stock(app, id).await.ok().flatten(),
        Ok(Rebuilt::InProgress | Rebuilt::NoProduct) => None,
        Err(err) => {
            tracing::warn!(error = %err, product_id = %id, "loading the sale state failed");
            None
        }
    }
}

/// The remaining units, after raising the live stock to the recorded total if a
/// restock reached MongoDB but not Redis. Safe from any reader: the total only grows
/// and the restock script never lowers the live one.
async fn catch_up(app: &App, id: Uuid, product: &Product, state: &StockState) -> i64 {
    let remaining = state.remaining().max(0);
    if state.paused || state.stock_total >= product.stock_total {
        return remaining;
    }
    match sale::restock(app, id, product.stock_total).await {
        Ok(Some(raised)) => {
            tracing::info!(product_id = %id, stock_total = product.stock_total, "live stock caught up with a restock");
            raised.max(0)
        }
        Ok(None) => remaining,
        Err(err) => {
            tracing::warn!(error = %err, product_id = %id, "raising the live stock failed");
            remaining
        }
    }
}
