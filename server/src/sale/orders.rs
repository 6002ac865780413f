//! Orders in MongoDB, the system of record. An order's `_id` is its derived order id;
//! unique indexes on `(product_id, unit)` and `(product_id, buyer_slot)` make oversell
//! and a second order per buyer impossible there, whatever Redis says. A released order
//! stays as a tombstone that holds neither a unit nor a buyer slot, so that a late
//! insert of the same order fails instead of taking a unit that was handed on.

use uuid::Uuid;

use crate::db::DbError;
pub use crate::db::records::{OrderDoc, OrderStatus, UnitField};
use crate::state::App;

/// Orders returned by one listing.
pub const MAX_ORDERS_LISTED: u32 = 100;

impl OrderDoc {
    /// The document of a confirmed order. Built the same way by the purchase path and
    /// the reconciler, so either may write it first. Its buyer slot follows the
    /// one-per-user rule the reservation was taken under (an administrator may have
    /// turned the rule over since); the product's current rule only for a reservation
    /// that does not record it.
    pub fn confirmed(reservation: &Reservation, product_rule: bool) -> Self {
        let one_per_user = reservation.one_per_user.unwrap_or(product_rule);
        let buyer_slot = if one_per_user { reservation.user_id.to_string() } else { reservation.order_id.to_string() };
        Self {
            id: reservation.order_id.to_string(),
            product_id: reservation.product_id.to_string(),
            user_id: reservation.user_id.to_string(),
            unit: UnitField::Unit(reservation.unit),
            buyer_slot,
            status: OrderStatus::Confirmed,
            created_at_ms: reservation.reserved_at_ms,
        }
    }
}

/// A unit held in Redis for an order, not necessarily persisted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub unit: i64,
    pub reserved_at_ms: i64,
    /// Whether the one-per-user rule held when it was taken, as Redis recorded it.
    pub one_per_user: Option<bool>,
}

/// Why an order could not be inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another document already has this `_id` (another product or user, or a tombstone).
    OrderIdTaken(Box<OrderDoc>),
    /// Another order holds this unit: Redis handed out a unit MongoDB knows is taken.
    UnitTaken,
    /// The buyer already holds an order for this one-per-user product.
    BuyerHasOrder,
}

/// What inserting an order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisted {
    /// Inserted now; `confirmed` when its group commit also ran its confirmation in Redis
    /// and published its completion (else the caller or the reconciler confirms it).
    Inserted {
        confirmed: bool,
    },
    /// The same order was already persisted (an earlier attempt or the reconciler).
    AlreadyThere,
    Conflict(Conflict),
}

/// Inserts a confirmed order (in a group commit with others that arrive together,
/// `order_writes`, which also confirms it in Redis); a duplicate key is resolved by reading MongoDB, never by
/// trusting which index the error names (FerretDB names none). A store failure is a
/// [`DbError`] inside the `anyhow::Error`.
pub async fn persist(app: &App, order: &OrderDoc) -> anyhow::Result<Persisted> {
    match app.order_writes.insert(app, order).await {
        Ok(stored) => return Ok(Persisted::Inserted { confirmed: stored.confirmed }),
        Err(DbError::DuplicateKey { index: _ }) => {}
        Err(err) => return Err(err.into()),
    }
    if let Some(existing) = app.db.find_order(&order.id).await? {
        let same = existing.product_id == order.product_id
            && existing.user_id == order.user_id
            && existing.status == OrderStatus::Confirmed;
        return Ok(if same {
            Persisted::AlreadyThere
        } else {
            Persisted::Conflict(Conflict::OrderIdTaken(Box::new(existing)))
        });
    }
    if let UnitField::Unit(unit) = order.unit {
        if app.db.find_order_by_unit(&order.product_id, unit).await?.is_some() {
            return Ok(Persisted::Conflict(Conflict::UnitTaken));
        }
    }
    Ok(Persisted::Conflict(Conflict::BuyerHasOrder))
}

pub async fn find_order(app: &App, order_id: Uuid) -> Result<Option<OrderDoc>, DbError> {
    app.db.find_order(&order_id.to_string()).await
}

/// A user's confirmed orders, newest first.
pub async fn orders_of_user(app: &App, user_id: Uuid) -> Result<Vec<OrderDoc>, DbError> {
    app.db.confirmed_orders_of_user(&user_id.to_string(), MAX_ORDERS_LISTED).await
}

/// Every order document of a product (confirmed and tombstones), for a rebuild.
pub async fn orders_of_product(app: &App, product_id: Uuid) -> Result<Vec<OrderDoc>, DbError> {
    app.db.orders_of_product(&product_id.to_string()).await
}
