//! MongoDB, the system of record: the database handle, the collections and the unique
//! indexes every uniqueness guarantee rests on. No multi-document transactions are
//! used anywhere (FerretDB has none, and the design does not need them).

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

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
}

impl Db {
    pub async fn connect(
        url: &str,
        database: &str,
        select_timeout: Duration,
        op_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(url).await.context("parsing the MongoDB URL")?;
        options.server_selection_timeout = Some(select_timeout);
        options.connect_timeout = Some(select_timeout);
        options.app_name = Some("flashsale".into());
        let client = Client::with_options(options).context("creating the MongoDB client")?;
        Ok(Self { database: client.database(database), op_timeout })
    }

    /// Runs one MongoDB operation within [`Db::op_timeout`]. The driver has no socket
    /// timeout: an operation on a connection that stopped answering (a peer gone without
    /// a reset) would wait forever and keep its pooled connection, and once every pooled
    /// connection is held so, every later operation waits too. Dropped at the bound, the
    /// operation's connection is discarded; the caller gets a timed-out I/O error.
    pub async fn bounded<T>(
        &self,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> mongodb::error::Result<T> {
        match tokio::time::timeout(self.op_timeout, operation.into_future()).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("MongoDB did not answer within {:?}", self.op_timeout),
            )
            .into()),
        }
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
        let db = Db::connect("mongodb://127.0.0.1:9", "bounded", Duration::from_millis(100), Duration::from_millis(20))
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
