//! The real store: MongoDB (or FerretDB) through the driver, every operation bounded by
//! [`MongoDb::bounded`], every driver error classified into a [`DbError`].

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, InsertManyError, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::Semaphore;

use super::records::{OrderDoc, OrderStatus, Product, ProductRevision, Role, UserDoc, released_marker, revision_range};
use super::{
    DbError, DbResult, DuplicateIndex, EMAIL_INDEX, ORDERS, PRODUCT_BUYER_SLOT_INDEX, PRODUCT_REVISIONS,
    PRODUCT_UNIT_INDEX, PRODUCTS, StoreDump, USERS,
};

/// Driver connections allowed per permit of the operation gate: connections being
/// closed or made in the background after their operation was given up still count
/// against the driver's pool for a moment.
const POOL_HEADROOM: u32 = 2;

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;

/// Server error codes that mean "not now" rather than "never": the node is stepping
/// down, shutting down or not primary, or the operation ran out of time on the server.
const UNAVAILABLE_CODES: &[i32] = &[
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    6,     // HostUnreachable
    7,     // HostNotFound
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Orders per batch of a streamed read of a product's orders: small enough that one
/// batch answers well inside a step bound (FerretDB reads about 12,000 orders a second
/// here), large enough that the round trips do not dominate.
const ORDERS_READ_BATCH: u32 = 1_000;

/// An I/O error saying MongoDB did not answer `waited_for` within `bound`; the driver's
/// callers see it as any dropped connection.
fn timed_out(bound: Duration, waited_for: &str) -> mongodb::error::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("MongoDB did not answer within {bound:?} ({waited_for})"))
        .into()
}

/// `operation`, failed with [`timed_out`] past `bound` (dropping it drops its connection).
async fn within<T>(
    bound: Duration,
    waited_for: &str,
    operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> mongodb::error::Result<T> {
    tokio::time::timeout(bound, operation.into_future()).await.map_err(|_| timed_out(bound, waited_for))?
}

#[derive(Debug, Clone)]
pub struct MongoDb {
    pub database: Database,
    /// Bound of one operation ([`MongoDb::bounded`]).
    pub op_timeout: Duration,
    /// One permit per pooled connection: operations wait here, not in the driver's
    /// wait queue ([`MongoDb::bounded`]).
    gate: Arc<Semaphore>,
}

impl MongoDb {
    /// A handle on `database`; `pool_size` bounds both the driver's connection pool and
    /// the operations in flight.
    pub async fn connect(
        url: &str,
        database: &str,
        select_timeout: Duration,
        op_timeout: Duration,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let pool_size = pool_size.max(1);
        let mut options = ClientOptions::parse(url).await.context("parsing the MongoDB URL")?;
        options.server_selection_timeout = Some(select_timeout);
        options.connect_timeout = Some(select_timeout);
        // The gate, not the driver's pool, is what bounds the operations in flight: with
        // room to spare in the pool, an operation holding a permit finds a connection or
        // starts making one, and does not wait in the driver's queue ([`MongoDb::bounded`]).
        options.max_pool_size = Some(pool_size.saturating_mul(POOL_HEADROOM));
        options.app_name = Some("flashsale".into());
        let client = Client::with_options(options).context("creating the MongoDB client")?;
        let permits = usize::try_from(pool_size).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Ok(Self { database: client.database(database), op_timeout, gate: Arc::new(Semaphore::new(permits)) })
    }

    /// Runs one MongoDB operation: it waits at most [`MongoDb::op_timeout`] for a turn (one
    /// operation per permit of the gate, as many as `mongo_pool_size`), then at most
    /// [`MongoDb::op_timeout`] again for its answer (less inside
    /// [`super::with_step_bound`]).
    ///
    /// The bound: the driver has no socket timeout, so an operation on a connection that
    /// stopped answering (a peer gone without a reset) would wait forever and keep its
    /// pooled connection; once every pooled connection is held so, every later operation
    /// waits too. Dropped at the bound, the operation's connection is discarded and the
    /// caller gets a timed-out I/O error.
    ///
    /// The gate: an operation given up while queued in the driver for a connection
    /// stays in the driver's wait queue, and the driver's pool worker serves that queue
    /// one request per event (a check-in, a new request, or its 500 ms maintenance tick);
    /// with abandoned requests at its head, a connection handed to one is put back and
    /// the live request behind waits for the next event. Thousands of operations given
    /// up in a storm starved the live ones for minutes, which timed out in turn (seed 1
    /// of the simulator). Given up on the semaphore instead, an operation leaves nothing
    /// behind; with a permit it has a full bound of its own (a permit handed over near a
    /// caller's deadline would otherwise start an operation only to abandon it in the
    /// driver's queue), and the driver's pool has room for every permit, so it finds a
    /// connection or starts making one instead of queueing.
    pub async fn bounded<T>(
        &self,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> mongodb::error::Result<T> {
        self.gated(super::step_bound(self.op_timeout), operation).await
    }

    /// [`MongoDb::bounded`] with `bound` on the operation once it holds a permit.
    async fn gated<T>(
        &self,
        bound: Duration,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> mongodb::error::Result<T> {
        let Ok(permit) = tokio::time::timeout(self.op_timeout, self.gate.acquire()).await else {
            return Err(timed_out(self.op_timeout, "waiting for a connection"));
        };
        let _permit = permit.map_err(|_| std::io::Error::other("the MongoDB operation gate is closed"))?;
        within(bound, "the operation", operation).await
    }

    /// A read of many documents, in batches of `batch_size`, its whole bounded as one
    /// operation and each batch as a step of [`super::with_step_bound`]: a read that makes
    /// progress may take the whole operation bound, one that stalls fails at the step bound.
    async fn streamed<T>(&self, find: mongodb::action::Find<'_, T>, batch_size: u32) -> DbResult<Vec<T>>
    where
        T: serde::de::DeserializeOwned + Send + Sync,
    {
        let step = super::step_bound(self.op_timeout);
        let read = async {
            let mut cursor = within(step, "the query", find.batch_size(batch_size)).await?;
            let mut found = Vec::new();
            while let Some(document) = within(step, "the next batch", cursor.try_next()).await? {
                found.push(document);
            }
            Ok(found)
        };
        self.gated(self.op_timeout, read).await.map_err(classify)
    }

    /// [`MongoDb::bounded`], its error classified.
    async fn run<T>(&self, operation: impl IntoFuture<Output = mongodb::error::Result<T>>) -> DbResult<T> {
        self.bounded(operation).await.map_err(classify)
    }

    pub fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.database.collection(name)
    }

    pub async fn ping(&self) -> DbResult<()> {
        self.run(self.database.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }

    /// Creates every index the guarantees rely on (idempotent).
    pub async fn ensure_indexes(&self) -> DbResult<()> {
        let unique = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).name(name.to_owned()).build())
                .build()
        };
        let plain = |keys: Document, name: &str| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_owned()).build()).build()
        };
        self.collection::<Document>(USERS)
            .create_index(unique(doc! { "email": 1 }, EMAIL_INDEX))
            .await
            .map_err(classify)?;
        let orders = self.collection::<Document>(ORDERS);
        // No oversell even if Redis hands out a unit twice.
        orders.create_index(unique(doc! { "product_id": 1, "unit": 1 }, PRODUCT_UNIT_INDEX)).await.map_err(classify)?;
        // One per user: buyer_slot is the user id for one-per-user products, else the order id.
        orders
            .create_index(unique(doc! { "product_id": 1, "buyer_slot": 1 }, PRODUCT_BUYER_SLOT_INDEX))
            .await
            .map_err(classify)?;
        orders
            .create_index(plain(doc! { "user_id": 1, "created_at_ms": -1 }, "user_orders"))
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn users(&self) -> Collection<UserDoc> {
        self.collection(USERS)
    }

    fn products(&self) -> Collection<Product> {
        self.collection(PRODUCTS)
    }

    fn orders(&self) -> Collection<OrderDoc> {
        self.collection(ORDERS)
    }

    fn product_revisions(&self) -> Collection<ProductRevision> {
        self.collection(PRODUCT_REVISIONS)
    }

    pub async fn insert_user(&self, user: &UserDoc) -> DbResult<()> {
        self.run(self.users().insert_one(user)).await?;
        Ok(())
    }

    pub async fn insert_users(&self, users: &[UserDoc]) -> DbResult<()> {
        if users.is_empty() {
            // The driver refuses an empty insert_many; MongoDB's answer to none is none.
            return Ok(());
        }
        self.run(self.users().insert_many(users)).await?;
        Ok(())
    }

    pub async fn find_user_by_email(&self, email: &str) -> DbResult<Option<UserDoc>> {
        self.run(self.users().find_one(doc! { "email": email })).await
    }

    pub async fn find_user(&self, id: &str) -> DbResult<Option<UserDoc>> {
        self.run(self.users().find_one(doc! { "_id": id })).await
    }

    pub async fn set_user_role(&self, email: &str, role: Role) -> DbResult<bool> {
        let role = mongodb::bson::to_bson(&role).map_err(|err| DbError::Other(err.into()))?;
        let result =
            self.run(self.users().update_one(doc! { "email": email }, doc! { "$set": { "role": role } })).await?;
        Ok(result.matched_count > 0)
    }

    pub async fn find_product(&self, id: &str) -> DbResult<Option<Product>> {
        self.run(self.products().find_one(doc! { "_id": id })).await
    }

    pub async fn insert_product(&self, product: &Product) -> DbResult<()> {
        self.run(self.products().insert_one(product)).await?;
        Ok(())
    }

    pub async fn list_live_products(&self, after: Option<&str>, limit: u32) -> DbResult<Vec<Product>> {
        let mut filter = doc! { "deleted": { "$ne": true } };
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        let products = self.products();
        let read =
            async { products.find(filter).sort(doc! { "_id": 1 }).limit(i64::from(limit)).await?.try_collect().await };
        self.run(read).await
    }

    pub async fn put_product(&self, product: &Product) -> DbResult<()> {
        self.run(self.products().replace_one(doc! { "_id": &product.id }, product).upsert(true)).await?;
        Ok(())
    }

    pub async fn insert_product_revision(&self, revision: &ProductRevision) -> DbResult<()> {
        self.run(self.product_revisions().insert_one(revision)).await?;
        Ok(())
    }

    /// The `_id` index's range of the product's revisions, read backwards: one document.
    pub async fn latest_product_revision(&self, product_id: &str) -> DbResult<Option<ProductRevision>> {
        let (start, end) = revision_range(product_id);
        let filter = doc! { "_id": { "$gte": start, "$lt": end } };
        let revisions = self.product_revisions();
        let read =
            async { revisions.find(filter).sort(doc! { "_id": -1 }).limit(1).await?.try_collect::<Vec<_>>().await };
        Ok(self.run(read).await?.pop())
    }

    pub async fn live_products(&self) -> DbResult<Vec<(String, i64)>> {
        let products = self.collection::<Document>(PRODUCTS);
        let docs: Vec<Document> = self
            .run(async {
                products
                    .find(doc! { "deleted": { "$ne": true } })
                    .projection(doc! { "_id": 1, "stock_total": 1 })
                    .sort(doc! { "_id": 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let stock = d.get_i64("stock_total").ok().or_else(|| d.get_i32("stock_total").ok().map(i64::from))?;
                Some((d.get_str("_id").ok()?.to_owned(), stock))
            })
            .collect())
    }

    pub async fn deleted_since(&self, since_ms: i64) -> DbResult<Vec<String>> {
        let products = self.collection::<Document>(PRODUCTS);
        let docs: Vec<Document> = self
            .run(async {
                products
                    .find(doc! { "deleted": true, "updated_at_ms": { "$gte": since_ms } })
                    .projection(doc! { "_id": 1 })
                    .sort(doc! { "_id": 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(docs.iter().filter_map(|d| Some(d.get_str("_id").ok()?.to_owned())).collect())
    }

    pub async fn insert_order(&self, order: &OrderDoc) -> DbResult<()> {
        self.run(self.orders().insert_one(order)).await?;
        Ok(())
    }

    pub async fn insert_orders(&self, orders: &[OrderDoc]) -> DbResult<Vec<DbResult<()>>> {
        if orders.is_empty() {
            // The driver refuses an empty insert_many; MongoDB's answer to none is none.
            return Ok(Vec::new());
        }
        match self.bounded(self.orders().insert_many(orders).ordered(false)).await {
            Ok(_) => Ok(orders.iter().map(|_| Ok(())).collect()),
            Err(err) => outcomes_of_insert_many(err, orders.len()),
        }
    }

    pub async fn find_order(&self, id: &str) -> DbResult<Option<OrderDoc>> {
        self.run(self.orders().find_one(doc! { "_id": id })).await
    }

    pub async fn find_order_by_unit(&self, product_id: &str, unit: i64) -> DbResult<Option<OrderDoc>> {
        self.run(self.orders().find_one(doc! { "product_id": product_id, "unit": unit })).await
    }

    pub async fn confirmed_orders_of_user(&self, user_id: &str, limit: u32) -> DbResult<Vec<OrderDoc>> {
        let orders = self.orders();
        let read = async {
            orders
                .find(doc! { "user_id": user_id, "status": status_name(OrderStatus::Confirmed) })
                // `_id` breaks ties, so that equal timestamps list the same way everywhere.
                .sort(doc! { "created_at_ms": -1, "_id": -1 })
                .limit(i64::from(limit))
                .await?
                .try_collect()
                .await
        };
        self.run(read).await
    }

    pub async fn orders_of_product(&self, product_id: &str) -> DbResult<Vec<OrderDoc>> {
        self.streamed(self.orders().find(doc! { "product_id": product_id }), ORDERS_READ_BATCH).await
    }

    pub async fn release_order(&self, id: &str) -> DbResult<bool> {
        let marker = released_marker(id);
        let result = self
            .run(self.orders().update_one(
                doc! { "_id": id, "status": status_name(OrderStatus::Confirmed) },
                doc! { "$set": {
                    "status": status_name(OrderStatus::Released),
                    "unit": &marker,
                    "buyer_slot": &marker,
                } },
            ))
            .await?;
        Ok(result.matched_count > 0)
    }

    #[cfg(feature = "broken")]
    pub async fn restore_order(&self, order: &OrderDoc) -> DbResult<bool> {
        let filter = doc! { "_id": &order.id, "status": status_name(OrderStatus::Released) };
        let result = self.run(self.orders().replace_one(filter, order)).await?;
        Ok(result.matched_count > 0)
    }

    /// Drops this handle's whole database (tests).
    pub async fn drop_database(&self) -> DbResult<()> {
        self.run(self.database.drop()).await
    }

    /// Drops each collection the server uses, its documents and indexes with it (tests).
    pub async fn drop_collections(&self) -> DbResult<()> {
        for name in [USERS, PRODUCTS, ORDERS, PRODUCT_REVISIONS] {
            self.run(self.collection::<Document>(name).drop()).await?;
        }
        Ok(())
    }

    /// Deletes every document of each collection the server uses, keeping the
    /// collections and their indexes (tests that run many cases on one database: on
    /// FerretDB, making a database, a collection or an index takes milliseconds and a
    /// lock every other client waits on).
    pub async fn delete_all_documents(&self) -> DbResult<()> {
        for name in [USERS, PRODUCTS, ORDERS, PRODUCT_REVISIONS] {
            self.run(self.collection::<Document>(name).delete_many(doc! {})).await?;
        }
        Ok(())
    }

    pub async fn dump(&self) -> DbResult<StoreDump> {
        let (users, products, orders) = (self.users(), self.products(), self.orders());
        let revisions = self.product_revisions();
        let by_id = || doc! { "_id": 1 };
        Ok(StoreDump {
            users: self.run(async { users.find(doc! {}).sort(by_id()).await?.try_collect().await }).await?,
            products: self.run(async { products.find(doc! {}).sort(by_id()).await?.try_collect().await }).await?,
            orders: self.run(async { orders.find(doc! {}).sort(by_id()).await?.try_collect().await }).await?,
            product_revisions: self
                .run(async { revisions.find(doc! {}).sort(by_id()).await?.try_collect().await })
                .await?,
        })
    }
}

/// How an order status is stored (its serde name).
fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Released => "released",
    }
}

/// The message of a duplicate-key violation (code 11000), if this is one.
fn duplicate_key_message(err: &mongodb::error::Error) -> Option<&str> {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == DUPLICATE_KEY => Some(&write.message),
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .and_then(|errors| errors.iter().find(|e| e.code == DUPLICATE_KEY))
            .map(|e| e.message.as_str()),
        ErrorKind::Command(command) if command.code == DUPLICATE_KEY => Some(&command.message),
        _ => None,
    }
}

/// The index a duplicate-key message names, read as a hint only: MongoDB writes
/// `E11000 duplicate key error collection: db.orders index: product_unit_unique dup key:
/// { ... }`; FerretDB 1.24 (SQLite) writes no index name for a unique secondary index,
/// so those duplicates are [`DuplicateIndex::Unknown`], and some FerretDB versions
/// write `index: _id_` whatever index it was (FerretDB issue 2045). Callers that act on
/// which index it was confirm it by reading.
pub fn index_in_message(message: &str) -> DuplicateIndex {
    message
        .split_once(" index: ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map_or(DuplicateIndex::Unknown, DuplicateIndex::from_name)
}

/// Each document's outcome of an unordered `insert_many` that failed: when the server
/// answered with per-document write errors and nothing else went wrong, the documents
/// without one are stored and each error belongs to its document; any other failure
/// (a write concern error, I/O, a timeout) leaves every document unknown: `Err`.
fn outcomes_of_insert_many(err: mongodb::error::Error, count: usize) -> DbResult<Vec<DbResult<()>>> {
    let ErrorKind::InsertMany(InsertManyError { write_errors: Some(errors), write_concern_error: None, .. }) =
        err.kind.as_ref()
    else {
        return Err(classify(err));
    };
    let mut outcomes: Vec<DbResult<()>> = (0..count).map(|_| Ok(())).collect();
    for error in errors {
        let Some(outcome) = outcomes.get_mut(error.index) else {
            // An index past the batch: the answer is not about these documents.
            return Err(DbError::Other(Box::new(err.clone())));
        };
        *outcome = Err(if error.code == DUPLICATE_KEY {
            DbError::DuplicateKey { index: index_in_message(&error.message) }
        } else {
            DbError::Other(Box::new(err.clone()))
        });
    }
    Ok(outcomes)
}

/// The class of a driver error: duplicate key, unavailable, or other.
pub fn classify(err: mongodb::error::Error) -> DbError {
    if let Some(message) = duplicate_key_message(&err) {
        return DbError::DuplicateKey { index: index_in_message(message) };
    }
    let unavailable = match err.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(command) => UNAVAILABLE_CODES.contains(&command.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => UNAVAILABLE_CODES.contains(&concern.code),
        _ => false,
    };
    if unavailable { DbError::Unavailable(Box::new(err)) } else { DbError::Other(Box::new(err)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_that_never_answers_fails_at_the_bound() {
        // The client connects lazily: nothing listens on the discard port, and nothing needs to.
        let db = MongoDb::connect(
            "mongodb://127.0.0.1:9",
            "bounded",
            Duration::from_millis(100),
            Duration::from_millis(20),
            4,
        )
        .await
        .expect("client");
        let never = std::future::pending::<mongodb::error::Result<()>>();
        let err = db.bounded(never).await.expect_err("the bound ends it");
        let timed_out =
            matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
        assert!(timed_out, "{err}");
        assert!(classify(err).is_unavailable(), "a timed-out operation is an outage");
        assert_eq!(db.bounded(async { Ok(7) }).await.expect("an answer within the bound"), 7);
    }

    #[test]
    fn the_index_is_read_from_mongodbs_message_and_unknown_from_ferretdbs() {
        let mongo = "E11000 duplicate key error collection: t.orders index: product_buyer_slot_unique dup key: { }";
        assert_eq!(index_in_message(mongo), DuplicateIndex::ProductBuyerSlot);
        let id = "E11000 duplicate key error collection: t.users index: _id_ dup key: { _id: \"a\" }";
        assert_eq!(index_in_message(id), DuplicateIndex::Id);
        assert_eq!(index_in_message("E11000 duplicate key error collection: t.orders"), DuplicateIndex::Unknown);
    }
}
