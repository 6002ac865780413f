//! The product record (MongoDB `products`) and its API shapes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest stock one product may have (bounds the sale state a rebuild loads at once).
pub const MAX_STOCK: i64 = 1_000_000;

/// A product as MongoDB stores it. `stock_total` is the number of units ever made
/// available (creation plus restocks); live stock is read from the sale state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock_total: i64,
    pub one_per_user: bool,
    /// Sale opens at this instant (ms since the epoch); `None` = open now.
    pub sale_starts_at_ms: Option<i64>,
    /// Sale closes at this instant; `None` = never.
    pub sale_ends_at_ms: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Product {
    pub fn uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.id).ok()
    }
}
