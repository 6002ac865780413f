//! An in-process model of the store (feature `memory`), for the deterministic simulator
//! and the differential test (`tests/differential/mongo.rs` runs it side by side with
//! FerretDB). It implements every [`crate::db::Db`] method with MongoDB's semantics as
//! the server uses them ([`store`]), and injectable faults.
//!
//! - `memory://NAME` ([`MemoryDb::named`]): one model server per NAME in a process-global
//!   registry, so several server instances of one process share it; each database name
//!   is a database of it. [`MemoryDb::new`] is a private one.
//! - Faults ([`Faults`]) belong to the server (every database and handle of a NAME):
//!   unavailable, slow, apply-then-time-out; [`MemoryDb::heal`] clears them. Waits run
//!   on tokio's clock, so a paused clock makes them free and deterministic.
//! - Deterministic: `BTreeMap`s only, nothing random, ids come from the callers.
//!
//! Not modelled: queries other than the ones the server makes, write concerns, the
//! driver's connection pool and the operation gate of [`crate::db::MongoDb::bounded`]
//! (an operation here holds no connection), partial effects of one multi-document
//! operation other than `insert_many`'s (ordered for users, unordered for orders), and
//! FerretDB's non-atomic `findAndModify`.

mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use store::Database;

use super::records::{OrderDoc, Product, ProductRevision, Role, UserDoc};
use super::{DbError, DbResult, StoreDump};

/// Bound of one operation of a handle made by [`MemoryDb::new`].
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a model operation failed, as the cause of a [`DbError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("the in-process store is unavailable (injected fault)")]
    Unavailable,
    #[error("the in-process store did not answer within {0:?} (injected fault)")]
    TimedOut(Duration),
}

/// Faults of a model server; the default is healthy. They compose: an operation first
/// waits `delay`, then fails if `unavailable`, else applies, then fails if
/// `apply_then_time_out`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every operation fails [`DbError::Unavailable`] without applying.
    pub unavailable: bool,
    /// Every operation waits this long first (tokio's clock). At or past the handle's
    /// operation bound, the caller gives up at the bound and the operation does not apply.
    pub delay: Duration,
    /// Every operation applies, then the caller waits out its bound and gets
    /// [`DbError::Unavailable`] (an answer lost on the way back).
    pub apply_then_time_out: bool,
}

/// One model server: its databases and its faults.
#[derive(Debug, Default)]
struct Server {
    databases: Mutex<BTreeMap<String, Database>>,
    faults: Mutex<Faults>,
}

impl Server {
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn databases(&self) -> MutexGuard<'_, BTreeMap<String, Database>> {
        self.databases.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every `memory://NAME` server of the process, by NAME.
static REGISTRY: LazyLock<Mutex<BTreeMap<String, Arc<Server>>>> = LazyLock::new(Mutex::default);

/// A handle on one database of a model server; clones share it.
#[derive(Debug, Clone)]
pub struct MemoryDb {
    server: Arc<Server>,
    database: String,
    op_timeout: Duration,
}

impl Default for MemoryDb {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDb {
    /// A private, empty model nobody else can name.
    pub fn new() -> Self {
        Self { server: Arc::default(), database: "memory".to_owned(), op_timeout: DEFAULT_OP_TIMEOUT }
    }

    /// Database `database` of the model server registered as `name` (created on first
    /// use): every caller naming `name` shares it.
    pub fn named(name: &str, database: &str, op_timeout: Duration) -> Self {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let server = Arc::clone(registry.entry(name.to_owned()).or_default());
        Self { server, database: database.to_owned(), op_timeout }
    }

    /// Drops the server registered as `name`: later callers naming it get an empty one
    /// (handles already made keep the old one). For runs of many seeds in one process.
    pub fn forget(name: &str) {
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// This handle with another operation bound.
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    pub fn faults(&self) -> Faults {
        self.server.faults()
    }

    /// Replaces the server's faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.server.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Every operation fails `Unavailable` before applying, until [`MemoryDb::heal`].
    pub fn make_unavailable(&self) {
        self.update_faults(|faults| faults.unavailable = true);
    }

    /// Every operation waits `delay` first.
    pub fn make_slow(&self, delay: Duration) {
        self.update_faults(|faults| faults.delay = delay);
    }

    /// Every operation applies, and its caller times out.
    pub fn make_apply_then_time_out(&self) {
        self.update_faults(|faults| faults.apply_then_time_out = true);
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.set_faults(Faults::default());
    }

    fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.server.faults.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Runs one operation on this handle's database under the server's faults. The
    /// database is locked only while `apply` runs, never across a wait.
    /// Every operation is one step of [`super::with_step_bound`].
    async fn run<T>(&self, apply: impl FnOnce(&mut Database) -> DbResult<T>) -> DbResult<T> {
        let bound = super::step_bound(self.op_timeout);
        let delay = self.faults().delay;
        if delay >= bound {
            tokio::time::sleep(bound).await;
            return Err(DbError::Unavailable(Box::new(ModelError::TimedOut(bound))));
        }
        if delay.is_zero() {
            // A real operation is an I/O round trip: other tasks run meanwhile.
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(delay).await;
        }
        // Read again after the wait: a fault injected meanwhile applies to this operation.
        let faults = self.faults();
        if faults.unavailable {
            return Err(DbError::Unavailable(Box::new(ModelError::Unavailable)));
        }
        let result = {
            let mut databases = self.server.databases();
            apply(databases.entry(self.database.clone()).or_default())
        };
        if faults.apply_then_time_out {
            tokio::time::sleep(bound.saturating_sub(delay)).await;
            return Err(DbError::Unavailable(Box::new(ModelError::TimedOut(bound))));
        }
        result
    }

    pub async fn ping(&self) -> DbResult<()> {
        self.run(|_| Ok(())).await
    }

    pub async fn ensure_indexes(&self) -> DbResult<()> {
        self.run(Database::ensure_indexes).await
    }

    pub async fn insert_user(&self, user: &UserDoc) -> DbResult<()> {
        self.run(|db| db.insert_user(user)).await
    }

    pub async fn insert_users(&self, users: &[UserDoc]) -> DbResult<()> {
        self.run(|db| db.insert_users(users)).await
    }

    pub async fn find_user_by_email(&self, email: &str) -> DbResult<Option<UserDoc>> {
        self.run(|db| Ok(db.find_user_by_email(email))).await
    }

    pub async fn find_user(&self, id: &str) -> DbResult<Option<UserDoc>> {
        self.run(|db| Ok(db.find_user(id))).await
    }

    pub async fn set_user_role(&self, email: &str, role: Role) -> DbResult<bool> {
        self.run(|db| Ok(db.set_user_role(email, role))).await
    }

    pub async fn find_product(&self, id: &str) -> DbResult<Option<Product>> {
        self.run(|db| Ok(db.find_product(id))).await
    }

    pub async fn insert_product(&self, product: &Product) -> DbResult<()> {
        self.run(|db| db.insert_product(product)).await
    }

    pub async fn list_live_products(&self, after: Option<&str>, limit: u32) -> DbResult<Vec<Product>> {
        self.run(|db| Ok(db.list_live_products(after, limit))).await
    }

    pub async fn put_product(&self, product: &Product) -> DbResult<()> {
        self.run(|db| {
            db.put_product(product);
            Ok(())
        })
        .await
    }

    pub async fn insert_product_revision(&self, revision: &ProductRevision) -> DbResult<()> {
        self.run(|db| db.insert_product_revision(revision)).await
    }

    pub async fn latest_product_revision(&self, product_id: &str) -> DbResult<Option<ProductRevision>> {
        self.run(|db| Ok(db.latest_product_revision(product_id))).await
    }

    pub async fn live_products(&self) -> DbResult<Vec<(String, i64)>> {
        self.run(|db| Ok(db.live_products())).await
    }

    pub async fn deleted_since(&self, since_ms: i64) -> DbResult<Vec<String>> {
        self.run(|db| Ok(db.deleted_since(since_ms))).await
    }

    pub async fn insert_order(&self, order: &OrderDoc) -> DbResult<()> {
        self.run(|db| db.insert_order(order)).await
    }

    /// Each order inserted in turn, as an unordered `insert_many` applies them: a
    /// duplicate fails that document only. Faults act on the operation as a whole.
    pub async fn insert_orders(&self, orders: &[OrderDoc]) -> DbResult<Vec<DbResult<()>>> {
        self.run(|db| Ok(orders.iter().map(|order| db.insert_order(order)).collect())).await
    }

    pub async fn find_order(&self, id: &str) -> DbResult<Option<OrderDoc>> {
        self.run(|db| Ok(db.find_order(id))).await
    }

    pub async fn find_order_by_unit(&self, product_id: &str, unit: i64) -> DbResult<Option<OrderDoc>> {
        self.run(|db| Ok(db.find_order_by_unit(product_id, unit))).await
    }

    pub async fn confirmed_orders_of_user(&self, user_id: &str, limit: u32) -> DbResult<Vec<OrderDoc>> {
        self.run(|db| Ok(db.confirmed_orders_of_user(user_id, limit))).await
    }

    pub async fn orders_of_product(&self, product_id: &str) -> DbResult<Vec<OrderDoc>> {
        self.run(|db| Ok(db.orders_of_product(product_id))).await
    }

    pub async fn release_order(&self, id: &str) -> DbResult<bool> {
        self.run(|db| db.release_order(id)).await
    }

    #[cfg(feature = "broken")]
    pub async fn restore_order(&self, order: &OrderDoc) -> DbResult<bool> {
        let order = order.clone();
        self.run(move |db| db.restore_order(order)).await
    }

    pub async fn dump(&self) -> DbResult<StoreDump> {
        self.run(|db| Ok(db.dump())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DuplicateIndex;
    use crate::db::records::{OrderStatus, UnitField};

    fn user(id: &str, email: &str) -> UserDoc {
        UserDoc {
            id: id.to_owned(),
            email: email.to_owned(),
            password_hash: "h".to_owned(),
            role: Role::Buyer,
            created_at_ms: 1,
        }
    }

    fn order(id: &str, unit: i64, slot: &str) -> OrderDoc {
        OrderDoc {
            id: id.to_owned(),
            product_id: "p".to_owned(),
            user_id: "u".to_owned(),
            unit: UnitField::Unit(unit),
            buyer_slot: slot.to_owned(),
            status: OrderStatus::Confirmed,
            created_at_ms: 1,
        }
    }

    fn duplicate_index<T: std::fmt::Debug>(result: DbResult<T>) -> DuplicateIndex {
        match result {
            Err(DbError::DuplicateKey { index }) => index,
            other => panic!("expected a duplicate key, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_ordered_insert_many_stops_at_the_first_duplicate_and_keeps_the_users_before_it() {
        let db = MemoryDb::new();
        db.ensure_indexes().await.expect("indexes");
        let batch = [user("1", "a@x.io"), user("2", "a@x.io"), user("3", "c@x.io")];
        assert_eq!(duplicate_index(db.insert_users(&batch).await), DuplicateIndex::UserEmail);
        let ids: Vec<String> = db.dump().await.expect("dump").users.into_iter().map(|u| u.id).collect();
        assert_eq!(ids, ["1"]);
    }

    #[tokio::test]
    async fn each_unique_index_of_orders_is_named_in_its_duplicate() {
        let db = MemoryDb::new();
        db.ensure_indexes().await.expect("indexes");
        db.insert_order(&order("o1", 1, "s1")).await.expect("first");
        assert_eq!(duplicate_index(db.insert_order(&order("o1", 2, "s2")).await), DuplicateIndex::Id);
        assert_eq!(duplicate_index(db.insert_order(&order("o2", 1, "s2")).await), DuplicateIndex::ProductUnit);
        let slot = db.insert_order(&order("o3", 3, "s1")).await;
        if store::ENFORCES_BUYER_SLOT {
            assert_eq!(duplicate_index(slot), DuplicateIndex::ProductBuyerSlot);
        }
        assert!(db.release_order("o1").await.expect("release"), "still confirmed");
        assert!(!db.release_order("o1").await.expect("release"), "a tombstone is released once");
        db.insert_order(&order("o4", 1, "s1")).await.expect("a tombstone holds neither unit nor slot");
    }

    #[tokio::test]
    async fn unique_indexes_apply_only_once_created_and_refuse_creation_over_duplicates() {
        let db = MemoryDb::new();
        db.insert_user(&user("1", "a@x.io")).await.expect("first");
        db.insert_user(&user("2", "a@x.io")).await.expect("no index yet");
        assert_eq!(duplicate_index(db.ensure_indexes().await), DuplicateIndex::UserEmail);
        assert_eq!(db.find_user_by_email("a@x.io").await.expect("find").map(|u| u.id).as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn handles_naming_the_same_server_share_its_data_and_its_faults() {
        let name = "db-memory-unit-test-shared";
        let first = MemoryDb::named(name, "d", Duration::from_millis(20));
        let second = MemoryDb::named(name, "d", Duration::from_millis(20));
        first.insert_user(&user("1", "a@x.io")).await.expect("insert");
        assert!(second.find_user("1").await.expect("find").is_some());
        second.make_unavailable();
        assert!(first.find_user("1").await.expect_err("down").is_unavailable());
        first.heal();
        assert!(second.ping().await.is_ok());
        MemoryDb::forget(name);
        assert!(MemoryDb::named(name, "d", DEFAULT_OP_TIMEOUT).find_user("1").await.expect("find").is_none());
    }

    #[tokio::test]
    async fn apply_then_time_out_applies_the_write_and_fails_the_caller() {
        let db = MemoryDb::new().with_op_timeout(Duration::from_millis(10));
        db.make_apply_then_time_out();
        assert!(db.insert_user(&user("1", "a@x.io")).await.expect_err("timed out").is_unavailable());
        db.heal();
        assert!(db.find_user("1").await.expect("find").is_some(), "the write applied");
        db.make_slow(Duration::from_millis(10));
        assert!(db.insert_user(&user("2", "b@x.io")).await.expect_err("slower than the bound").is_unavailable());
        db.heal();
        assert!(db.find_user("2").await.expect("find").is_none(), "given up before applying");
    }
}
