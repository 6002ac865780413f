//! MongoDB, the system of record: the database handle, the collections and the unique
//! indexes every uniqueness guarantee rests on. No multi-document transactions are
//! used anywhere (FerretDB has none, and the design does not need them).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::Semaphore;

/// Driver connections allowed per permit of the operation gate: connections being
/// closed or made in the background after their operation was given up still count
/// against the driver's pool for a moment.
const POOL_HEADROOM: u32 = 2;

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;

pub const USERS: &str = "users";
pub const PRODUCTS: &str = "products";
pub const ORDERS: &str = "orders";

#[derive(Debug, Clone)]
pub struct Db {
    pub database: Database,
    /// Bound of one operation ([`Db::bounded`]).
    pub op_timeout: Duration,
    /// One permit per pooled connection: operations wait here, not in the driver's
    /// wait queue ([`Db::bounded`]).
    gate: Arc<Semaphore>,
}

impl Db {
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
        // starts making one, and does not wait in the driver's queue ([`Db::bounded`]).
        options.max_pool_size = Some(pool_size.saturating_mul(POOL_HEADROOM));
        options.app_name = Some("flashsale".into());
        let client = Client::with_options(options).context("creating the MongoDB client")?;
        let permits = usize::try_from(pool_size).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Ok(Self { database: client.database(database), op_timeout, gate: Arc::new(Semaphore::new(permits)) })
    }

    /// Runs one MongoDB operation: it waits at most [`Db::op_timeout`] for a turn (one
    /// operation per permit of the gate, as many as `mongo_pool_size`), then at most
    /// [`Db::op_timeout`] again for its answer.
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
        let timed_out = |waited_for: &str| -> mongodb::error::Error {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("MongoDB did not answer within {:?} ({waited_for})", self.op_timeout),
            )
            .into()
        };
        let Ok(permit) = tokio::time::timeout(self.op_timeout, self.gate.acquire()).await else {
            return Err(timed_out("waiting for a connection"));
        };
        let _permit = permit.map_err(|_| std::io::Error::other("the MongoDB operation gate is closed"))?;
        tokio::time::timeout(self.op_timeout, operation.into_future()).await.map_err(|_| timed_out("the operation"))?
    }

    pub fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.database.collection(name)
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.bounded(self.database.run_command(doc! { "ping": 1 })).await.context("MongoDB ping")?;
        Ok(())
    }

    /// Creates every index the guarantees rely on (idempotent).
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
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
            .create_index(unique(doc! { "email": 1 }, "email_unique"))
            .await
            .context("users.email index")?;
        let orders = self.collection::<Document>(ORDERS);
        // No oversell even if Redis hands out a unit twice.
        orders
            .create_index(unique(doc! { "product_id": 1, "unit": 1 }, "product_unit_unique"))
            .await
            .context("orders (product_id, unit) index")?;
        // One per user: buyer_slot is the user id for one-per-user products, else the order id.
        orders
            .create_index(unique(doc! { "product_id": 1, "buyer_slot": 1 }, "product_buyer_slot_unique"))
            .await
            .context("orders (product_id, buyer_slot) index")?;
        orders
            .create_index(plain(doc! { "user_id": 1, "created_at_ms": -1 }, "user_orders"))
            .await
            .context("orders (user_id, created_at_ms) index")?;
        Ok(())
    }
}

/// Whether a MongoDB error is a duplicate-key violation (code 11000).
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(insert) => {
            insert.write_errors.as_ref().is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY))
        }
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_that_never_answers_fails_at_the_bound() {
        // The client connects lazily: nothing listens on the discard port, and nothing needs to.
        let db =
            Db::connect("mongodb://127.0.0.1:9", "bounded", Duration::from_millis(100), Duration::from_millis(20), 4)
                .await
                .expect("client");
        let never = std::future::pending::<mongodb::error::Result<()>>();
        let err = db.bounded(never).await.expect_err("the bound ends it");
        let timed_out =
            matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
        assert!(timed_out, "{err}");
        assert_eq!(db.bounded(async { Ok(7) }).await.expect("an answer within the bound"), 7);
    }
}
