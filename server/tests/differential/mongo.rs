//! The MongoDB differential property: random sequences of `flashsale::db::Db` calls run
//! on FerretDB (a database emptied before each sequence, see [`Real`]) and on a fresh
//! `memory://` model must give the same result at every step (the value, or the error's
//! class: duplicate key naming a compatible index, unavailable, other; never the
//! message) and leave the same documents in every collection after every step.
//!
//! Arguments come from small pools (three users and emails, three products, four order
//! ids, three units, four buyer slots, a few timestamps), so that duplicates, tombstones,
//! ties and version conflicts happen in most sequences.
//!
//! FerretDB 1.24 (SQLite) is the real side here, not MongoDB. Where they are known to
//! differ, nothing here depends on it:
//! - FerretDB's `findAndModify` applies `$inc` in a separate step from its read (FerretDB
//!   issue 3040): concurrent restocks lost increments there. The server no longer relies
//!   on any update being atomic with its read: admin writes claim revisions by inserting
//!   a unique `_id` (`sale::product_store`), which the steps here compare.
//! - FerretDB's duplicate-key message names no secondary index: its side reports
//!   `DuplicateIndex::Unknown`, which agrees with any index the model names.
//! - A unique index refusing an index build or an update is a duplicate key (11000) on
//!   MongoDB and in the model, an `InternalError` on FerretDB ([`Step::agrees`]).
//! - `orders_of_product` is in natural order on FerretDB and the model, in the
//!   `(product_id, unit)` index's order on MongoDB: it is compared as a set.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flashsale::db::memory::MemoryDb;
use flashsale::db::records::{
    MAX_STOCK, OrderDoc, OrderStatus, Product, ProductRevision, Role, UnitField, UserDoc, released_marker,
};
use flashsale::db::{Db, DbError, DuplicateIndex, MEMORY_SCHEME, StoreDump};
use flashsale_stack::FerretDb;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::compare::{self, Mismatch, Persistence};

/// Sequences per property; three properties, so 2,100 sequences per run.
pub const CASES: u32 = 700;

/// Where shrunk counterexamples are kept, and run first on the next run.
#[cfg(not(feature = "memory-broken"))]
pub const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential/mongo.proptest-regressions");

const TIMEOUT: Duration = Duration::from_secs(10);

const USER_IDS: &[&str] = &["u1", "u2", "u3"];
const EMAILS: &[&str] = &["a@x.io", "b@x.io", "c@x.io"];
const PRODUCT_IDS: &[&str] = &["p1", "p2", "p3"];
/// Bounds of `list_live_products` cursors: before, between and after the products.
const CURSORS: &[&str] = &["p0", "p1", "p2", "p3"];
const ORDER_IDS: &[&str] = &["o1", "o2", "o3", "o4"];
/// Orders name fewer products than the catalogue, so that their indexes collide.
const ORDER_PRODUCTS: &[&str] = &["p1", "p2"];
/// A buyer slot is a user id (one per user) or the order's own id.
const BUYER_SLOTS: &[&str] = &["u1", "u2", "o1", "o2"];
const STOCKS: &[i64] = &[0, 1, 5, MAX_STOCK - 1, MAX_STOCK];

/// The one FerretDB of this binary, started on first use (blocking: it waits for the port).
fn ferretdb() -> &'static FerretDb {
    static FERRETDB: OnceLock<FerretDb> = OnceLock::new();
    FERRETDB.get_or_init(|| {
        FerretDb::start().unwrap_or_else(|error| panic!("starting ferretdb for the differential test: {error:#}"))
    })
}

/// One call of the store, with its arguments.
#[derive(Debug, Clone)]
pub enum Step {
    EnsureIndexes,
    Ping,
    InsertUser(UserDoc),
    InsertUsers(Vec<UserDoc>),
    FindUserByEmail(String),
    FindUser(String),
    SetUserRole(String, Role),
    InsertProduct(Product),
    FindProduct(String),
    ListLiveProducts(Option<String>, u32),
    PutProduct(Product),
    InsertProductRevision(ProductRevision),
    LatestProductRevision(String),
    LiveProducts,
    DeletedSince(i64),
    InsertOrder(OrderDoc),
    /// A group commit: one unordered `insert_many`.
    InsertOrders(Vec<OrderDoc>),
    FindOrder(String),
    FindOrderByUnit(String, i64),
    ConfirmedOrdersOfUser(String, u32),
    OrdersOfProduct(String),
    ReleaseOrder(String),
}

/// The class of an error, all that is compared of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    DuplicateKey(DuplicateIndex),
    Unavailable,
    Other,
}

impl From<&DbError> for ErrorClass {
    fn from(error: &DbError) -> Self {
        match error {
            DbError::DuplicateKey { index } => Self::DuplicateKey(*index),
            DbError::Unavailable(_) => Self::Unavailable,
            DbError::Other(_) => Self::Other,
        }
    }
}

/// What one step answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Matched(bool),
    User(Option<UserDoc>),
    Product(Option<Product>),
    Products(Vec<Product>),
    Revision(Option<ProductRevision>),
    Stocks(Vec<(String, i64)>),
    Ids(Vec<String>),
    Order(Option<OrderDoc>),
    Orders(Vec<OrderDoc>),
    /// One outcome per document of a multi-document write.
    Each(Vec<Outcome>),
    Failed(ErrorClass),
}

impl Outcome {
    fn of<T>(result: Result<T, DbError>, wrap: impl FnOnce(T) -> Self) -> Self {
        match result {
            Ok(value) => wrap(value),
            Err(error) => {
                if std::env::var_os("DIFF_TRACE").is_some() {
                    eprintln!("TRACE error: {error:?}");
                }
                Self::Failed(ErrorClass::from(&error))
            }
        }
    }

    /// Equal, except that a duplicate's index is compared only where both sides name one.
    pub fn agrees_with(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Failed(ErrorClass::DuplicateKey(a)), Self::Failed(ErrorClass::DuplicateKey(b))) => a.compatible(*b),
            (Self::Each(a), Self::Each(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.agrees_with(b)),
            _ => self == other,
        }
    }
}

impl Step {
    /// Whether FerretDB's and the model's results of this step agree.
    ///
    /// A known difference: where a unique index refuses something other than an insert
    /// (an index that existing documents violate, an update whose new keys are taken),
    /// MongoDB answers a duplicate key (11000), which the model reproduces, and FerretDB
    /// 1.24 an `InternalError` (code 1, "UNIQUE constraint failed: index ..."). Both
    /// refuse it and change nothing, which the collections compared next show. (The
    /// server never meets it: a tombstone's marker is unique to its order.)
    pub fn agrees(&self, real: &Outcome, model: &Outcome) -> bool {
        let refused_after_the_fact = matches!(self, Self::EnsureIndexes | Self::ReleaseOrder(_));
        let ferretdb_internal_error =
            matches!((real, model), (Outcome::Failed(ErrorClass::Other), Outcome::Failed(ErrorClass::DuplicateKey(_))));
        (refused_after_the_fact && ferretdb_internal_error) || real.agrees_with(model)
    }

    /// Runs this step on `db`.
    pub async fn run(&self, db: &Db) -> Outcome {
        use Outcome as O;
        match self {
            Self::EnsureIndexes => O::of(db.ensure_indexes().await, |()| O::Done),
            Self::Ping => O::of(db.ping().await, |()| O::Done),
            Self::InsertUser(user) => O::of(db.insert_user(user).await, |()| O::Done),
            Self::InsertUsers(users) => O::of(db.insert_users(users).await, |()| O::Done),
            Self::FindUserByEmail(email) => O::of(db.find_user_by_email(email).await, O::User),
            Self::FindUser(id) => O::of(db.find_user(id).await, O::User),
            Self::SetUserRole(email, role) => O::of(db.set_user_role(email, *role).await, O::Matched),
            Self::InsertProduct(product) => O::of(db.insert_product(product).await, |()| O::Done),
            Self::FindProduct(id) => O::of(db.find_product(id).await, O::Product),
            Self::ListLiveProducts(after, limit) => {
                O::of(db.list_live_products(after.as_deref(), *limit).await, O::Products)
            }
            Self::PutProduct(product) => O::of(db.put_product(product).await, |()| O::Done),
            Self::InsertProductRevision(revision) => O::of(db.insert_product_revision(revision).await, |()| O::Done),
            Self::LatestProductRevision(id) => O::of(db.latest_product_revision(id).await, O::Revision),
            Self::LiveProducts => O::of(db.live_products().await, O::Stocks),
            Self::DeletedSince(since_ms) => O::of(db.deleted_since(*since_ms).await, O::Ids),
            Self::InsertOrder(order) => O::of(db.insert_order(order).await, |()| O::Done),
            Self::InsertOrders(orders) => O::of(db.insert_orders(orders).await, |outcomes| {
                O::Each(outcomes.into_iter().map(|outcome| O::of(outcome, |()| O::Done)).collect())
            }),
            Self::FindOrder(id) => O::of(db.find_order(id).await, O::Order),
            Self::FindOrderByUnit(product_id, unit) => O::of(db.find_order_by_unit(product_id, *unit).await, O::Order),
            Self::ConfirmedOrdersOfUser(user_id, limit) => {
                O::of(db.confirmed_orders_of_user(user_id, *limit).await, O::Orders)
            }
            // In no particular order (see the module's notes): compared in `_id` order.
            Self::OrdersOfProduct(product_id) => O::of(db.orders_of_product(product_id).await, |mut orders| {
                orders.sort_by(|a, b| a.id.cmp(&b.id));
                O::Orders(orders)
            }),
            Self::ReleaseOrder(id) => O::of(db.release_order(id).await, O::Matched),
        }
    }
}

/// Every collection, or the class of the error that prevented reading them.
async fn dump(db: &Db) -> Result<StoreDump, ErrorClass> {
    db.dump().await.map_err(|error| ErrorClass::from(&error))
}

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(pool).prop_map(str::to_owned)
}

fn user() -> impl Strategy<Value = UserDoc> {
    (pick(USER_IDS), pick(EMAILS), pick(&["h1", "h2"]), role(), 1..=3i64).prop_map(
        |(id, email, password_hash, role, created_at_ms)| UserDoc { id, email, password_hash, role, created_at_ms },
    )
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Buyer), Just(Role::Admin)]
}

fn product() -> impl Strategy<Value = Product> {
    let text = (pick(PRODUCT_IDS), pick(&["n", "é ✓"]), pick(&["", "d"]), 0..=2i64, select(STOCKS), any::<bool>());
    let window = (proptest::option::of(1..=2i64), proptest::option::of(2..=3i64));
    let versions = (prop::bool::weighted(0.2), 1..=2i64, 1..=3i64, 0..=2i64);
    (text, window, versions).prop_map(
        |(
            (id, name, description, price_cents, stock_total, one_per_user),
            (sale_starts_at_ms, sale_ends_at_ms),
            (deleted, created_at_ms, updated_at_ms, revision),
        )| Product {
            id,
            name,
            description,
            price_cents,
            stock_total,
            one_per_user,
            sale_starts_at_ms,
            sale_ends_at_ms,
            deleted,
            created_at_ms,
            updated_at_ms,
            revision,
        },
    )
}

fn order() -> impl Strategy<Value = OrderDoc> {
    let unit = prop_oneof![
        6 => (1..=3i64).prop_map(UnitField::Unit),
        // A tombstone's marker, to collide with the ones `release_order` writes.
        1 => pick(ORDER_IDS).prop_map(|id| UnitField::Released(released_marker(&id))),
    ];
    let status = prop_oneof![6 => Just(OrderStatus::Confirmed), 1 => Just(OrderStatus::Released)];
    (pick(ORDER_IDS), pick(ORDER_PRODUCTS), pick(USER_IDS), unit, pick(BUYER_SLOTS), status, 1..=3i64).prop_map(
        |(id, product_id, user_id, unit, buyer_slot, status, created_at_ms)| OrderDoc {
            id,
            product_id,
            user_id,
            unit,
            buyer_slot,
            status,
            created_at_ms,
        },
    )
}

fn limit() -> impl Strategy<Value = u32> {
    0..=3u32
}

fn user_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::EnsureIndexes),
        1 => Just(Step::Ping),
        5 => user().prop_map(Step::InsertUser),
        2 => vec(user(), 0..=4).prop_map(Step::InsertUsers),
        3 => pick(EMAILS).prop_map(Step::FindUserByEmail),
        2 => pick(USER_IDS).prop_map(Step::FindUser),
        2 => (pick(EMAILS), role()).prop_map(|(email, role)| Step::SetUserRole(email, role)),
    ]
}

fn product_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::EnsureIndexes),
        4 => product().prop_map(Step::InsertProduct),
        2 => pick(PRODUCT_IDS).prop_map(Step::FindProduct),
        2 => (proptest::option::of(pick(CURSORS)), limit()).prop_map(|(after, limit)| Step::ListLiveProducts(after, limit)),
        3 => product().prop_map(Step::PutProduct),
        // Revisions collide often (three products, three revision numbers).
        4 => product().prop_map(|product| Step::InsertProductRevision(ProductRevision::of(&product))),
        3 => pick(CURSORS).prop_map(Step::LatestProductRevision),
        1 => Just(Step::LiveProducts),
        1 => (0..=3i64).prop_map(Step::DeletedSince),
    ]
}

fn order_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::EnsureIndexes),
        8 => order().prop_map(Step::InsertOrder),
        // Batches that collide with each other and with stored orders.
        3 => vec(order(), 0..=4).prop_map(Step::InsertOrders),
        2 => pick(ORDER_IDS).prop_map(Step::FindOrder),
        2 => (pick(ORDER_PRODUCTS), 1..=3i64).prop_map(|(product_id, unit)| Step::FindOrderByUnit(product_id, unit)),
        2 => (pick(USER_IDS), limit()).prop_map(|(user_id, limit)| Step::ConfirmedOrdersOfUser(user_id, limit)),
        2 => pick(ORDER_PRODUCTS).prop_map(Step::OrdersOfProduct),
        3 => pick(ORDER_IDS).prop_map(Step::ReleaseOrder),
    ]
}

/// Most sequences create the indexes first, as the server does at startup; the others
/// show the store without them (and `EnsureIndexes` later, over duplicates).
fn sequences(step: impl Strategy<Value = Step>) -> impl Strategy<Value = Vec<Step>> {
    (prop::bool::weighted(0.85), vec(step, 1..=14)).prop_map(|(indexes_first, mut steps)| {
        if indexes_first {
            steps.insert(0, Step::EnsureIndexes);
        }
        steps
    })
}

/// A unique suffix per database or model in this process.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn connect(url: &str, database: &str) -> Db {
    Db::connect(url, database, TIMEOUT, TIMEOUT, 4).await.unwrap_or_else(|error| panic!("connecting {url}: {error:#}"))
}

/// The real side of a property run: two FerretDB databases, reused by every sequence
/// and emptied before each, so each starts as on a new database. Not a new database
/// per sequence: FerretDB takes about 45 ms to make one (its SQLite file and tables),
/// ten times a whole sequence, and making a collection or an index takes a lock every
/// other client waits on. So sequences that start by creating the indexes (as the
/// server does) run on `indexed`, whose indexes exist from the start and whose
/// documents are deleted before each; the others on `bare`, whose collections are
/// dropped again only after a sequence that may have created indexes.
pub struct Real {
    indexed: Db,
    bare: Db,
    bare_has_indexes: AtomicBool,
}

impl Real {
    pub async fn open() -> Self {
        let url = tokio::task::spawn_blocking(|| ferretdb().url()).await.expect("starting ferretdb");
        let indexed = connect(&url, &unique("differential")).await;
        indexed.ensure_indexes().await.unwrap_or_else(|error| panic!("creating the indexes: {error:?}"));
        let bare = connect(&url, &unique("differential")).await;
        Self { indexed, bare, bare_has_indexes: AtomicBool::new(false) }
    }

    /// The database for `steps`, emptied.
    async fn database_for(&self, steps: &[Step]) -> Db {
        let creates_indexes = |step: &Step| matches!(step, Step::EnsureIndexes);
        let (db, drop) = if steps.first().is_some_and(creates_indexes) {
            (&self.indexed, false)
        } else {
            (&self.bare, self.bare_has_indexes.swap(steps.iter().any(creates_indexes), Ordering::Relaxed))
        };
        if let Db::Mongo(mongo) = db {
            let emptied = if drop { mongo.drop_collections().await } else { mongo.delete_all_documents().await };
            emptied.unwrap_or_else(|error| panic!("emptying a differential database: {error:?}"));
        }
        db.clone()
    }

    pub async fn close(self) {
        for db in [&self.indexed, &self.bare] {
            if let Db::Mongo(mongo) = db {
                mongo
                    .drop_database()
                    .await
                    .unwrap_or_else(|error| panic!("dropping a differential database: {error:?}"));
            }
        }
    }
}

/// The two sides of one sequence: a real database emptied, a new model with the same
/// indexes.
pub struct Pair {
    pub real: Db,
    pub model: Db,
    model_name: String,
}

impl Pair {
    pub async fn open(real: &Real, steps: &[Step]) -> Self {
        let real = real.database_for(steps).await;
        let model_name = unique("differential-mongo");
        let model = connect(&format!("{MEMORY_SCHEME}{model_name}"), "differential").await;
        if steps.first().is_some_and(|step| matches!(step, Step::EnsureIndexes)) {
            model.ensure_indexes().await.unwrap_or_else(|error| panic!("the model's indexes: {error:?}"));
        }
        Self { real, model, model_name }
    }

    /// Forgets the model.
    pub fn close(self) {
        MemoryDb::forget(&self.model_name);
    }

    /// Runs `steps` on both sides, comparing each result and every collection after it.
    pub async fn run_steps(&self, steps: &[Step]) -> Result<(), Mismatch> {
        for (index, step) in steps.iter().enumerate() {
            let real = step.run(&self.real).await;
            let model = step.run(&self.model).await;
            compare::agree(index, step, "result", &real, &model, |real, model| step.agrees(real, model))?;
            let (real, model) = (dump(&self.real).await, dump(&self.model).await);
            compare::agree(index, step, "collections", &real, &model, |a, b| a == b)?;
        }
        Ok(())
    }

    /// Runs `steps` on a pair opened on `real`.
    pub async fn check(real: &Real, steps: &[Step]) -> Result<(), Mismatch> {
        let pair = Self::open(real, steps).await;
        let outcome = pair.run_steps(steps).await;
        pair.close();
        outcome
    }
}

/// The property over `cases` sequences of `step`: the shrunk counterexample if one
/// disagrees. Blocking: it runs its own current-thread runtime.
pub fn check<S: Strategy<Value = Step>>(cases: u32, persistence: Persistence, step: S) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let real = runtime.block_on(Real::open());
    let outcome = compare::run_property(cases, persistence, &sequences(step), |steps| {
        runtime.block_on(Pair::check(&real, &steps))
    });
    runtime.block_on(real.close());
    outcome
}

/// The three properties at once, each on its own thread, runtime and database: the
/// time is FerretDB's round trips, which overlap.
#[cfg(not(feature = "memory-broken"))]
#[test]
fn random_sequences_of_user_product_and_order_calls_agree_with_ferretdb() {
    let started = std::time::Instant::now();
    let file = Persistence::File(REGRESSIONS);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs = [
            ("user calls", scope.spawn(move || check(CASES, file, user_step()))),
            ("product calls", scope.spawn(move || check(CASES, file, product_step()))),
            ("order calls", scope.spawn(move || check(CASES, file, order_step()))),
        ];
        runs.into_iter()
            .filter_map(|(what, run)| match run.join() {
                Ok(Ok(())) => None,
                Ok(Err(failure)) => Some(format!("the model and FerretDB disagree on {what}:\n{failure}")),
                Err(_) => Some(format!("the property on {what} panicked")),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{} sequences agreed in {:.1} s", 3 * CASES, started.elapsed().as_secs_f64());
}

/// Two confirmed orders of one buyer for one product: the second breaks the
/// `(product_id, buyer_slot)` unique index.
fn second_order_of_one_buyer() -> Vec<Step> {
    let order = |id: &str, unit: i64| OrderDoc {
        id: id.to_owned(),
        product_id: "p1".to_owned(),
        user_id: "u1".to_owned(),
        unit: UnitField::Unit(unit),
        buyer_slot: "u1".to_owned(),
        status: OrderStatus::Confirmed,
        created_at_ms: 1,
    };
    vec![Step::EnsureIndexes, Step::InsertOrder(order("o1", 1)), Step::InsertOrder(order("o2", 2))]
}

#[cfg(not(feature = "memory-broken"))]
#[tokio::test]
async fn a_second_order_of_one_buyer_is_refused_by_both_sides() {
    let real = Real::open().await;
    let steps = second_order_of_one_buyer();
    let pair = Pair::open(&real, &steps).await;
    let outcome = pair.run_steps(&steps).await;
    let kept = pair.model.dump().await.map(|dump| dump.orders.len());
    pair.close();
    real.close().await;
    outcome.unwrap_or_else(|mismatch| panic!("{mismatch}"));
    assert_eq!(kept.expect("the model's collections"), 1, "the buyer's second order is refused");
}

/// A group commit (one unordered `insert_many`) that meets a stored order's unit and, inside
/// itself, a buyer's second order: those two documents fail alone, each with its own
/// duplicate key, and every other member is stored.
#[cfg(not(feature = "memory-broken"))]
#[tokio::test]
async fn a_group_commit_fails_only_its_duplicate_members_on_both_sides() {
    let order = |id: &str, unit: i64, user: &str| OrderDoc {
        id: id.to_owned(),
        product_id: "p1".to_owned(),
        user_id: user.to_owned(),
        unit: UnitField::Unit(unit),
        buyer_slot: user.to_owned(),
        status: OrderStatus::Confirmed,
        created_at_ms: 1,
    };
    let batch = vec![order("o2", 1, "u2"), order("o3", 2, "u3"), order("o4", 3, "u3"), order("o5", 4, "u5")];
    let steps = vec![Step::EnsureIndexes, Step::InsertOrder(order("o1", 1, "u1")), Step::InsertOrders(batch.clone())];
    let real = Real::open().await;
    let pair = Pair::open(&real, &steps).await;
    let outcome = pair.run_steps(&steps).await;
    let each = Step::InsertOrders(batch).run(&pair.model).await;
    let kept = pair.model.dump().await.map(|dump| dump.orders.into_iter().map(|o| o.id).collect::<Vec<_>>());
    pair.close();
    real.close().await;
    outcome.unwrap_or_else(|mismatch| panic!("{mismatch}"));
    assert_eq!(kept.expect("the model's collections"), ["o1", "o3", "o5"]);
    // Run again, every member is now a duplicate of its own stored document or of o1/o3.
    let Outcome::Each(again) = each else { panic!("a group commit answers per document: {each:?}") };
    assert!(again.iter().all(|o| matches!(o, Outcome::Failed(ErrorClass::DuplicateKey(_)))), "{again:?}");
}

/// A product's orders read back in full on both sides when they span several batches of
/// the streamed read (and another product's orders are left out).
#[cfg(not(feature = "memory-broken"))]
#[tokio::test]
async fn a_read_of_a_products_orders_spanning_several_batches_returns_every_order_on_both_sides() {
    let order = |index: usize, product: &str| OrderDoc {
        id: format!("{product}-o{index:05}"),
        product_id: product.to_owned(),
        user_id: format!("u{index}"),
        unit: UnitField::Unit(i64::try_from(index).expect("small") + 1),
        buyer_slot: format!("u{index}"),
        status: OrderStatus::Confirmed,
        created_at_ms: 1,
    };
    let mut steps = vec![Step::EnsureIndexes];
    for chunk in (0..2_500).collect::<Vec<_>>().chunks(500) {
        steps.push(Step::InsertOrders(chunk.iter().map(|&index| order(index, "p1")).collect()));
    }
    steps.push(Step::InsertOrders((0..10).map(|index| order(index, "p2")).collect()));
    steps.push(Step::OrdersOfProduct("p1".to_owned()));
    let real = Real::open().await;
    let pair = Pair::open(&real, &steps).await;
    let outcome = pair.run_steps(&steps).await;
    let read = Step::OrdersOfProduct("p1".to_owned()).run(&pair.model).await;
    pair.close();
    real.close().await;
    outcome.unwrap_or_else(|mismatch| panic!("{mismatch}"));
    let Outcome::Orders(orders) = read else { panic!("a read of orders: {read:?}") };
    assert_eq!(orders.len(), 2_500);
}

#[cfg(feature = "memory-broken")]
#[tokio::test]
async fn the_fixed_sequence_catches_the_model_without_the_buyer_slot_index() {
    let real = Real::open().await;
    let outcome = Pair::check(&real, &second_order_of_one_buyer()).await;
    real.close().await;
    let mismatch = outcome.expect_err("the broken model let a buyer hold two orders and nobody noticed");
    assert_eq!((mismatch.step, mismatch.what), (2, "result"), "{mismatch}");
}

#[cfg(feature = "memory-broken")]
#[test]
fn random_order_sequences_catch_the_model_without_the_buyer_slot_index() {
    let failure = check(CASES, Persistence::Off, order_step()).expect_err("700 sequences did not notice");
    eprintln!("the property caught it:\n{failure}");
}
