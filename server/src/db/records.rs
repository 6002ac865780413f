//! The documents MongoDB stores, shared by every layer above the store seam: the store
//! (`db`) reads and writes them, the live sale (`sale`) and the domains use them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest stock one product may have (bounds the sale state a rebuild loads at once).
pub const MAX_STOCK: i64 = 1_000_000;
/// Longest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest product description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
/// Highest price, in cents (one million of the currency unit).
pub const MAX_PRICE_CENTS: i64 = 100_000_000;
/// Latest accepted sale window bound: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

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
    /// The revision of the product this record shows (0 at creation; see
    /// [`ProductRevision`]). Records written before revisions existed read as 0.
    #[serde(default)]
    pub revision: i64,
}

impl Product {
    pub fn uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.id).ok()
    }

    /// Where the sale stands at `now_ms`, given the live remaining stock (if known).
    pub fn sale_state(&self, now_ms: i64, remaining: Option<i64>) -> SaleState {
        if self.sale_starts_at_ms.is_some_and(|starts| now_ms < starts) {
            return SaleState::NotStarted;
        }
        if self.sale_ends_at_ms.is_some_and(|ends| now_ms >= ends) {
            return SaleState::Ended;
        }
        if remaining.is_some_and(|units| units <= 0) {
            return SaleState::SoldOut;
        }
        SaleState::Open
    }
}

/// One revision of a product in `product_revisions`: the whole record as one admin
/// write (creation, update, restock, delete) left it. The `_id` names the product and
/// the revision number, so exactly one writer can claim revision N of a product: the
/// unique `_id` is the one guarantee every MongoDB-wire store gives atomically, FerretDB
/// included. The product's current state is its highest revision; the `products`
/// document is a copy of it for reads (see `sale::product_store`, and "Admin writes are
/// product revisions" in `system-design/ARCHITECTURE.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRevision {
    #[serde(rename = "_id")]
    pub id: String,
    pub product_id: String,
    pub revision: i64,
    pub product: Product,
}

impl ProductRevision {
    /// The revision `product.revision` of `product`.
    pub fn of(product: &Product) -> Self {
        Self {
            id: revision_id(&product.id, product.revision),
            product_id: product.id.clone(),
            revision: product.revision,
            product: product.clone(),
        }
    }
}

/// `_id` of a product's revision: the product id, `:`, the revision zero-padded to 20
/// digits, so that `_id` order within a product is revision order.
pub fn revision_id(product_id: &str, revision: i64) -> String {
    format!("{product_id}:{revision:020}")
}

/// The `_id` range holding every revision of a product: `[start, end)`.
pub fn revision_range(product_id: &str) -> (String, String) {
    (format!("{product_id}:"), format!("{product_id};"))
}

/// The state of a product's sale as the API reports it. The window rules match
/// `lua/purchase.lua`: not started while `now < starts`, ended once `now >= ends`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    NotStarted,
    Open,
    Ended,
    SoldOut,
}

/// What a user may do; administrators manage the catalogue and orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Buyer,
    Admin,
}

/// One user as stored (`users`); the email is stored normalised and is unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at_ms: i64,
}

impl UserDoc {
    /// The id as a UUID; a record with a malformed id is corrupt, not input.
    pub fn uuid(&self) -> anyhow::Result<Uuid> {
        Uuid::parse_str(&self.id).map_err(|err| anyhow::anyhow!("user {:?} has a malformed id: {err}", self.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    Released,
}

/// The unit an order holds, or the marker of a tombstone (unique per order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnitField {
    Unit(i64),
    Released(String),
}

/// One order as stored (`orders`). Its `_id` is the derived order id; `(product_id,
/// unit)` and `(product_id, buyer_slot)` are unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub product_id: String,
    pub user_id: String,
    pub unit: UnitField,
    pub buyer_slot: String,
    pub status: OrderStatus,
    pub created_at_ms: i64,
}

impl OrderDoc {
    pub fn unit_number(&self) -> Option<i64> {
        match self.unit {
            UnitField::Unit(unit) => Some(unit),
            UnitField::Released(_) => None,
        }
    }
}

/// The marker a released order (a tombstone) holds in place of its unit and its buyer
/// slot: unique per order, so tombstones never collide in the unique indexes.
pub fn released_marker(order_id: &str) -> String {
    format!("released:{order_id}")
}
