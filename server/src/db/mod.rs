//! The system of record behind one seam: every MongoDB query the server makes is a
//! domain-level method of [`Db`], an enum over the real handle ([`mongo::MongoDb`]) and,
//! with the `memory` feature, an in-process model ([`memory::MemoryDb`]) for the
//! deterministic simulator and the differential test. Nothing outside this module names
//! the driver: callers see the [`records`] and typed errors ([`DbError`]).
//!
//! MongoDB, the system of record: the collections and the unique indexes every
//! uniqueness guarantee rests on. No multi-document transactions are used anywhere
//! (FerretDB has none, and the design does not need them).

#[cfg(feature = "memory")]
pub mod memory;
pub mod mongo;
pub mod records;

use std::time::Duration;

use records::{OrderDoc, Product, ProductRevision, Role, UserDoc};

pub use mongo::MongoDb;

pub const USERS: &str = "users";
pub const PRODUCTS: &str = "products";
pub const ORDERS: &str = "orders";
pub const PRODUCT_REVISIONS: &str = "product_revisions";

/// Names of the unique indexes ([`Db::ensure_indexes`]).
pub const EMAIL_INDEX: &str = "email_unique";
pub const PRODUCT_UNIT_INDEX: &str = "product_unit_unique";
pub const PRODUCT_BUYER_SLOT_INDEX: &str = "product_buyer_slot_unique";
/// MongoDB's name of every collection's `_id` index.
pub const ID_INDEX: &str = "_id_";

/// The URL scheme of the in-process model: `memory://NAME`.
pub const MEMORY_SCHEME: &str = "memory://";

/// The unique index a duplicate key violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DuplicateIndex {
    /// `_id`, in any collection.
    Id,
    /// `users.email`.
    UserEmail,
    /// `orders (product_id, unit)`.
    ProductUnit,
    /// `orders (product_id, buyer_slot)`.
    ProductBuyerSlot,
    /// The store did not say which (FerretDB's message names no index): callers that
    /// need to know resolve it by reading, as `sale::orders::persist` does.
    Unknown,
}

impl DuplicateIndex {
    /// The index of this name, as [`Db::ensure_indexes`] names them.
    pub fn from_name(name: &str) -> Self {
        match name {
            ID_INDEX => Self::Id,
            EMAIL_INDEX => Self::UserEmail,
            PRODUCT_UNIT_INDEX => Self::ProductUnit,
            PRODUCT_BUYER_SLOT_INDEX => Self::ProductBuyerSlot,
            _ => Self::Unknown,
        }
    }

    /// Whether two reports of a duplicate can be the same: equal, or one side cannot tell.
    pub fn compatible(self, other: Self) -> bool {
        self == other || self == Self::Unknown || other == Self::Unknown
    }
}

impl std::fmt::Display for DuplicateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Id => ID_INDEX,
            Self::UserEmail => EMAIL_INDEX,
            Self::ProductUnit => PRODUCT_UNIT_INDEX,
            Self::ProductBuyerSlot => PRODUCT_BUYER_SLOT_INDEX,
            Self::Unknown => "an unnamed unique index",
        })
    }
}

/// The cause of an [`DbError::Unavailable`] or [`DbError::Other`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A write would break a unique index; nothing was written by it.
    #[error("duplicate key in {index}")]
    DuplicateKey { index: DuplicateIndex },
    /// The store did not answer: server selection failed, I/O failed or timed out
    /// (including the operation gate's bound), the pool was cleared, the server is
    /// shutting down. The operation may or may not have been applied.
    #[error("MongoDB unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else (a malformed document, a refused command).
    #[error("MongoDB operation failed")]
    Other(#[source] Cause),
}

impl DbError {
    pub fn is_duplicate_key(&self) -> bool {
        matches!(self, Self::DuplicateKey { .. })
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Every document of every collection, each collection in `_id` order: what the
/// differential test compares and a checker can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreDump {
    pub users: Vec<UserDoc>,
    pub products: Vec<Product>,
    pub orders: Vec<OrderDoc>,
    pub product_revisions: Vec<ProductRevision>,
}

tokio::task_local! {
    /// The step bound of [`with_step_bound`], for the task running inside it.
    static STEP_BOUND: Duration;
}

/// Runs `future` with each MongoDB step it makes bounded by `bound` (at most the handle's
/// operation bound): a single operation is one step, a streamed read one step per batch
/// (`Db::orders_of_product`), whose whole stays bounded by the operation bound.
///
/// For callers that would rather fail fast and try again than wait: a step that stalls
/// (a connection that stopped answering) costs them `bound`, not the operation bound, and
/// the next try runs on another connection. The scope is this task's: tasks it spawns
/// (the group commit of `sale::order_writes`) keep their own bounds.
pub async fn with_step_bound<F: std::future::Future>(bound: Duration, future: F) -> F::Output {
    STEP_BOUND.scope(bound, future).await
}

/// The bound of one step of an operation whose whole is bounded by `op_timeout`.
fn step_bound(op_timeout: Duration) -> Duration {
    STEP_BOUND.try_with(|bound| (*bound).min(op_timeout)).unwrap_or(op_timeout)
}

/// The store: MongoDB, or with the `memory` feature the in-process model.
#[derive(Debug, Clone)]
pub enum Db {
    Mongo(MongoDb),
    #[cfg(feature = "memory")]
    Memory(memory::MemoryDb),
}

/// One match per method: the real path pays nothing else for the seam.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Db::Mongo(db) => db.$method($($arg),*).await,
            #[cfg(feature = "memory")]
            Db::Memory(db) => db.$method($($arg),*).await,
        }
    };
}

impl Db {
    /// A handle on `database`; `pool_size` bounds both the driver's connection pool and
    /// the operations in flight. `memory://NAME` (feature `memory`) is the in-process
    /// model registered under NAME, shared by every caller naming it.
    pub async fn connect(
        url: &str,
        database: &str,
        select_timeout: Duration,
        op_timeout: Duration,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        if let Some(name) = url.strip_prefix(MEMORY_SCHEME) {
            #[cfg(feature = "memory")]
            return Ok(Self::Memory(memory::MemoryDb::named(name, database, op_timeout)));
            #[cfg(not(feature = "memory"))]
            anyhow::bail!("{MEMORY_SCHEME}{name}: the in-process store needs the `memory` feature");
        }
        Ok(Self::Mongo(MongoDb::connect(url, database, select_timeout, op_timeout, pool_size).await?))
    }

    /// Bound of one operation.
    pub fn op_timeout(&self) -> Duration {
        match self {
            Self::Mongo(db) => db.op_timeout,
            #[cfg(feature = "memory")]
            Self::Memory(db) => db.op_timeout(),
        }
    }

    pub async fn ping(&self) -> DbResult<()> {
        dispatch!(self.ping())
    }

    /// Creates every index the guarantees rely on (idempotent).
    pub async fn ensure_indexes(&self) -> DbResult<()> {
        dispatch!(self.ensure_indexes())
    }

    /// Inserts a user; `DuplicateKey` if the id or the email is taken.
    pub async fn insert_user(&self, user: &UserDoc) -> DbResult<()> {
        dispatch!(self.insert_user(user))
    }

    /// Inserts users in order (MongoDB's default ordered insert): the first duplicate
    /// stops it, the users before it stay inserted.
    pub async fn insert_users(&self, users: &[UserDoc]) -> DbResult<()> {
        dispatch!(self.insert_users(users))
    }

    /// The user with this (normalised) email.
    pub async fn find_user_by_email(&self, email: &str) -> DbResult<Option<UserDoc>> {
        dispatch!(self.find_user_by_email(email))
    }

    pub async fn find_user(&self, id: &str) -> DbResult<Option<UserDoc>> {
        dispatch!(self.find_user(id))
    }

    /// Sets the role of the user with this (normalised) email; whether one matched.
    pub async fn set_user_role(&self, email: &str, role: Role) -> DbResult<bool> {
        dispatch!(self.set_user_role(email, role))
    }

    /// The product with this id, deleted or not.
    pub async fn find_product(&self, id: &str) -> DbResult<Option<Product>> {
        dispatch!(self.find_product(id))
    }

    pub async fn insert_product(&self, product: &Product) -> DbResult<()> {
        dispatch!(self.insert_product(product))
    }

    /// Up to `limit` products that are not deleted, in `_id` order, after `after`. A
    /// `limit` of 0 is MongoDB's: no limit.
    pub async fn list_live_products(&self, after: Option<&str>, limit: u32) -> DbResult<Vec<Product>> {
        dispatch!(self.list_live_products(after, limit))
    }

    /// Writes the product document `product.id` as `product` (the copy of a revision),
    /// replacing the one there or inserting it.
    pub async fn put_product(&self, product: &Product) -> DbResult<()> {
        dispatch!(self.put_product(product))
    }

    /// Claims a product's revision: `DuplicateKey` (index `_id`) if that revision of
    /// that product exists already, written by another writer.
    pub async fn insert_product_revision(&self, revision: &ProductRevision) -> DbResult<()> {
        dispatch!(self.insert_product_revision(revision))
    }

    /// The highest revision of a product, if it has any.
    pub async fn latest_product_revision(&self, product_id: &str) -> DbResult<Option<ProductRevision>> {
        dispatch!(self.latest_product_revision(product_id))
    }

    /// Every product that is not deleted, in `_id` order: its id and the stock total its
    /// document records.
    pub async fn live_products(&self) -> DbResult<Vec<(String, i64)>> {
        dispatch!(self.live_products())
    }

    /// Ids of the products deleted (their document updated) at `since_ms` or later, in
    /// `_id` order.
    pub async fn deleted_since(&self, since_ms: i64) -> DbResult<Vec<String>> {
        dispatch!(self.deleted_since(since_ms))
    }

    /// Inserts an order; `DuplicateKey` if its id, its unit or its buyer slot is taken.
    pub async fn insert_order(&self, order: &OrderDoc) -> DbResult<()> {
        dispatch!(self.insert_order(order))
    }

    /// Inserts orders in one unordered `insert_many` (a group commit). `Err` when the
    /// operation as a whole failed: nothing is known of any order, each may or may not be
    /// stored. Otherwise one outcome per order, in order: stored, or that document's own
    /// failure (`DuplicateKey` as [`Db::insert_order`] reports it); the others are stored.
    pub async fn insert_orders(&self, orders: &[OrderDoc]) -> DbResult<Vec<DbResult<()>>> {
        dispatch!(self.insert_orders(orders))
    }

    pub async fn find_order(&self, id: &str) -> DbResult<Option<OrderDoc>> {
        dispatch!(self.find_order(id))
    }

    /// The order holding this unit of this product (tombstones hold none).
    pub async fn find_order_by_unit(&self, product_id: &str, unit: i64) -> DbResult<Option<OrderDoc>> {
        dispatch!(self.find_order_by_unit(product_id, unit))
    }

    /// A user's confirmed orders, newest first (ties by `_id`, descending), at most
    /// `limit` (0: no limit).
    pub async fn confirmed_orders_of_user(&self, user_id: &str, limit: u32) -> DbResult<Vec<OrderDoc>> {
        dispatch!(self.confirmed_orders_of_user(user_id, limit))
    }

    /// Every order document of a product, confirmed and tombstones, in no particular
    /// order (MongoDB's natural order; the model's is `_id` order). Streamed: each batch
    /// is a step of [`with_step_bound`].
    pub async fn orders_of_product(&self, product_id: &str) -> DbResult<Vec<OrderDoc>> {
        dispatch!(self.orders_of_product(product_id))
    }

    /// Turns a confirmed order into a tombstone: status released, unit and buyer slot
    /// replaced by [`records::released_marker`]. Whether it was still confirmed.
    pub async fn release_order(&self, id: &str) -> DbResult<bool> {
        dispatch!(self.release_order(id))
    }

    /// Writes `order` over its tombstone (only if that document is released): the
    /// [`Broken::ReconcilerConfirmsReleased`](crate::broken::Broken) variant's write, which
    /// the correct server never makes. Whether a tombstone was replaced.
    #[cfg(feature = "broken")]
    pub async fn restore_order(&self, order: &OrderDoc) -> DbResult<bool> {
        dispatch!(self.restore_order(order))
    }

    /// Every document of every collection (tests, checkers; not for the request path).
    pub async fn dump(&self) -> DbResult<StoreDump> {
        dispatch!(self.dump())
    }
}
