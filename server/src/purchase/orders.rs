//! Orders in MongoDB, the system of record. An order's `_id` is its derived order id;
//! unique indexes on `(product_id, unit)` and `(product_id, buyer_slot)` make oversell
//! and a second order per buyer impossible there, whatever Redis says. A released order
//! stays as a tombstone that holds neither a unit nor a buyer slot, so that a late
//! insert of the same order fails instead of taking a unit that was handed on.

use futures::TryStreamExt;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::{ORDERS, is_duplicate_key};
use crate::state::App;

/// Orders returned by one listing.
pub const MAX_ORDERS_LISTED: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    Released,
}

/// The unit an order holds, or the marker of a tombstone (unique per order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnitField {
    Unit(i64),
    Released(String),
}

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
    /// The document of a confirmed order. Built the same way by the purchase path and
    /// the reconciler, so either may write it first.
    pub fn confirmed(reservation: &Reservation, one_per_user: bool) -> Self {
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

    pub fn unit_number(&self) -> Option<i64> {
        match self.unit {
            UnitField::Unit(unit) => Some(unit),
            UnitField::Released(_) => None,
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
    Inserted,
    /// The same order was already persisted (an earlier attempt or the reconciler).
    AlreadyThere,
    Conflict(Conflict),
}

/// Inserts a confirmed order; a duplicate key is resolved by reading MongoDB, never by
/// guessing which index fired.
pub async fn persist(app: &App, order: &OrderDoc) -> anyhow::Result<Persisted> {
    let orders = app.db.collection::<OrderDoc>(ORDERS);
    match app.db.bounded(orders.insert_one(order)).await {
        Ok(_) => return Ok(Persisted::Inserted),
        Err(err) if is_duplicate_key(&err) => {}
        Err(err) => return Err(err.into()),
    }
    if let Some(existing) = app.db.bounded(orders.find_one(doc! { "_id": &order.id })).await? {
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
        let holder = app.db.bounded(orders.find_one(doc! { "product_id": &order.product_id, "unit": unit })).await?;
        if holder.is_some() {
            return Ok(Persisted::Conflict(Conflict::UnitTaken));
        }
    }
    Ok(Persisted::Conflict(Conflict::BuyerHasOrder))
}

pub async fn find_order(app: &App, order_id: Uuid) -> anyhow::Result<Option<OrderDoc>> {
    Ok(app.db.bounded(app.db.collection::<OrderDoc>(ORDERS).find_one(doc! { "_id": order_id.to_string() })).await?)
}

/// A user's confirmed orders, newest first.
pub async fn orders_of_user(app: &App, user_id: Uuid) -> anyhow::Result<Vec<OrderDoc>> {
    let orders = app.db.collection::<OrderDoc>(ORDERS);
    let read = async {
        orders
            .find(doc! { "user_id": user_id.to_string(), "status": "confirmed" })
            .sort(doc! { "created_at_ms": -1 })
            .limit(MAX_ORDERS_LISTED)
            .await?
            .try_collect()
            .await
    };
    Ok(app.db.bounded(read).await?)
}

/// Every order document of a product (confirmed and tombstones), for a rebuild.
pub async fn orders_of_product(app: &App, product_id: Uuid) -> anyhow::Result<Vec<OrderDoc>> {
    let orders = app.db.collection::<OrderDoc>(ORDERS);
    let read = async { orders.find(doc! { "product_id": product_id.to_string() }).await?.try_collect().await };
    Ok(app.db.bounded(read).await?)
}
