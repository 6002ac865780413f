//! Product records in MongoDB, and the one way admin writes change them.
//!
//! A product's history is a sequence of revisions in `product_revisions`, one document
//! per revision whose `_id` names the product and the revision number: an admin write
//! (update, restock, delete) reads the highest revision, computes the next from it and
//! inserts it. Two writers that read the same revision both try to insert the same
//! `_id`, and the store's unique `_id` lets exactly one of them in; the other reads
//! again and applies its change on top. A unique `_id` is the one atomic guarantee every
//! MongoDB-wire store gives (FerretDB applies `$inc` and conditional updates in a step
//! apart from their read, so two concurrent ones can both apply to the same old value).
//! Writes are therefore applied one revision at a time, and none is lost.
//!
//! The `products` document and the live sale state are copies of the highest revision,
//! written by [`publish`]: the document, the cache, the sale state, then the highest
//! revision is read again and, if a later write claimed one meanwhile, its state is
//! published too. A copy written late by a slower writer is thus always followed by a
//! copy of a later revision: the last writer's check sees no newer revision only after
//! its own copies, and any stale copy written after them is followed by its writer's
//! check, which sees the last revision. Stock only grows from revision to revision, so
//! a copy one revision behind never lets a purchase hold a unit the stored stock does
//! not have; decisions that need the current product (rebuilds) read [`head`].
//!
//! Within one instance a product's writes also take a lock (one of
//! [`PRODUCT_WRITE_STRIPES`]), so that concurrent admin requests on one instance queue
//! instead of spending their attempts on each other; instances contend only through the
//! revisions. A store failure is a `db::DbError` inside the `anyhow::Error` (an outage
//! answers 503, see `error`).

use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::product_cache as cache;
use super::reconciler;
use crate::db::DbError;
use crate::db::records::{Product, ProductRevision};
use crate::error::{ApiError, ApiResult};
use crate::sale;
use crate::state::App;

/// Attempts at claiming a product's next revision before answering 503: each failed
/// attempt means a write on another instance claimed the revision first.
pub const MAX_REVISION_ATTEMPTS: usize = 16;
/// Locks that serialise one instance's admin writes by product (a product's writes
/// always take the same one; unrelated products rarely share one).
pub const PRODUCT_WRITE_STRIPES: usize = 64;

/// How long an instance retries a write's live step that failed (Redis down when the
/// write was published). The revision and the document hold the write meanwhile, and
/// the reconciler brings it to the sale if this instance gives up or dies first.
pub const LIVE_STEP_RETRY_FOR: Duration = Duration::from_secs(60);
/// First pause between those retries, doubled up to [`LIVE_STEP_MAX_PAUSE`].
const LIVE_STEP_FIRST_PAUSE: Duration = Duration::from_millis(100);
const LIVE_STEP_MAX_PAUSE: Duration = Duration::from_secs(2);

/// The per-instance locks of admin writes, striped by product id.
#[derive(Debug)]
pub struct ProductWriteLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for ProductWriteLocks {
    fn default() -> Self {
        Self { stripes: (0..PRODUCT_WRITE_STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl ProductWriteLocks {
    async fn lock(&self, product_id: Uuid) -> MutexGuard<'_, ()> {
        let stripe = (product_id.as_u128() % PRODUCT_WRITE_STRIPES as u128) as usize;
        self.stripes[stripe].lock().await
    }
}

/// The product with this id, deleted or not, as its document shows it.
pub async fn find_product(app: &App, id: Uuid) -> anyhow::Result<Option<Product>> {
    Ok(app.db.find_product(&id.to_string()).await?)
}

/// The product as its highest revision has it; a product with no revision (written
/// before revisions existed) as its document has it. `None` if unknown.
pub async fn head(app: &App, id: Uuid) -> anyhow::Result<Option<Product>> {
    match app.db.latest_product_revision(&id.to_string()).await? {
        Some(revision) => Ok(Some(revision.product)),
        None => find_product(app, id).await,
    }
}

/// Creates a product: its revision 0, then its document.
pub async fn insert_product(app: &App, product: &Product) -> anyhow::Result<()> {
    app.db.insert_product_revision(&ProductRevision::of(product)).await.context("recording a new product")?;
    app.db.insert_product(product).await.context("inserting a product")
}

/// Up to `limit` products that are not deleted, in id (= creation) order, after `after`.
pub async fn list_products(app: &App, after: Option<Uuid>, limit: u32) -> anyhow::Result<Vec<Product>> {
    let after = after.map(|after| after.to_string());
    app.db.list_live_products(after.as_deref(), limit).await.context("listing products")
}

/// What an admin write makes of the product's current state.
pub enum Change {
    /// The next revision: this product (its `revision` is set by [`revise`]).
    To(Product),
    /// Nothing to record (deleting a deleted product): the current state stands.
    Keep,
}

/// Applies `change` to the product's current state as its next revision, again on top
/// of whatever revision another writer claimed first; then publishes it. The product as
/// this write left it (later writes may already have followed), and whether its live
/// sale state took it (`Err` when Redis failed: the revision and the document hold it;
/// a rebuild, a read of the product or the next write brings it to the sale).
pub async fn revise(
    app: &App,
    id: Uuid,
    mut change: impl FnMut(&Product) -> ApiResult<Change>,
) -> ApiResult<(Product, anyhow::Result<()>)> {
    let _serial = app.product_writes.lock(id).await;
    for _ in 0..MAX_REVISION_ATTEMPTS {
        let current = head(app, id).await?.ok_or(ApiError::NotFound("product"))?;
        let mut next = match change(&current)? {
            Change::To(next) => next,
            Change::Keep => return Ok(publish(app, id, current).await?),
        };
        next.id.clone_from(&current.id);
        next.revision = current.revision + 1;
        match claim(app, id, &next).await? {
            true => {
                let (written, live) = publish(app, id, next).await?;
                if live.is_err() {
                    retry_live_step(app, id);
                }
                return Ok((written, live));
            }
            false => continue,
        }
    }
    Err(ApiError::Unavailable { retry_after_s: 1 })
}

/// Applies the product's highest revision to its cache and live sale state again, in a
/// task of its own, until it takes (or [`LIVE_STEP_RETRY_FOR`] has passed): a restock
/// answered 200 whose live step failed would otherwise leave buyers told sold out with
/// the units recorded until a read of the product, a rebuild or the reconciler saw it.
fn retry_live_step(app: &App, id: Uuid) {
    let Some(shared) = app.shared() else { return };
    app.spawn(async move {
        let app = shared;
        let deadline = tokio::time::Instant::now() + LIVE_STEP_RETRY_FOR;
        let mut pause = LIVE_STEP_FIRST_PAUSE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LIVE_STEP_MAX_PAUSE);
            let Ok(Some(product)) = head(&app, id).await else { continue };
            cache::after_write(&app, &product).await;
            if apply_to_sale(&app, id, &product).await.is_ok() {
                tracing::info!(product_id = %id, revision = product.revision, "a write's live step applied on retry");
                return;
            }
        }
        tracing::warn!(product_id = %id, "gave up retrying a write's live step; the reconciler brings it");
    });
}

/// Inserts `next` as its revision: `false` if another writer claimed that revision.
/// When the store fails to answer, the revision may have been written all the same: it
/// is read back once, and counts as claimed if it is there with this content.
async fn claim(app: &App, id: Uuid, next: &Product) -> anyhow::Result<bool> {
    let revision = ProductRevision::of(next);
    match app.db.insert_product_revision(&revision).await {
        Ok(()) => Ok(true),
        Err(DbError::DuplicateKey { .. }) => Ok(false),
        Err(err) => match app.db.latest_product_revision(&id.to_string()).await {
            Ok(Some(stored)) if stored.revision == next.revision => Ok(stored == revision),
            _ => Err(err).context("recording a product revision"),
        },
    }
}

/// Writes the copies of `written` (the document, the cache, the live sale state), then
/// again with the highest revision until no later one was claimed meanwhile.
async fn publish(app: &App, id: Uuid, written: Product) -> anyhow::Result<(Product, anyhow::Result<()>)> {
    let mut product = written.clone();
    loop {
        app.db.put_product(&product).await.context("writing a product")?;
        cache::after_write(app, &product).await;
        let live = apply_to_sale(app, id, &product).await;
        match head(app, id).await? {
            Some(latest) if latest.revision > product.revision => product = latest,
            _ => return Ok((written, live)),
        }
    }
}

/// Brings a product's live sale state to `product`: its window, its one-per-user rule
/// and its stock (raised, never lowered); or, deleted, its reservations persisted and
/// its sale state replaced by a tombstone. A sale that is not loaded is left so: the
/// next load reads the product.
pub async fn apply_to_sale(app: &App, id: Uuid, product: &Product) -> anyhow::Result<()> {
    if product.deleted {
        return retire(app, id, product).await;
    }
    sale::configure(app, id, product).await?;
    sale::restock(app, id, product.stock_total).await?;
    Ok(())
}

/// Passes of persisting a deleted product's reservations before its sale state goes.
const RETIRE_PASSES: usize = 3;

/// Ends a deleted product's sale for good. Reservations not yet in MongoDB are real
/// purchases (some answered 202): the sale stops taking new ones first, then every one
/// it holds is persisted (whatever clock stamped it), and only then is the sale state
/// replaced by the tombstone. A reservation still pending after the passes (MongoDB
/// failing) keeps the sale state, and the error makes the caller try again.
pub async fn retire(app: &App, id: Uuid, product: &Product) -> anyhow::Result<()> {
    sale::stop(app, id).await?;
    for _ in 0..RETIRE_PASSES {
        reconciler::reconcile_product(app, id, product, reconciler::ANY_AGE, usize::MAX).await?;
        if sale::unload(app, id).await? {
            return Ok(());
        }
    }
    anyhow::bail!("reservations of deleted product {id} are still pending")
}

/// After a rebuild wrote the sale state of `loaded`: applies every revision claimed
/// since, until none was (a write that published while the rebuild read MongoDB has
/// been overwritten by the rebuild).
pub async fn catch_up_after_load(app: &App, id: Uuid, loaded: &Product) -> anyhow::Result<()> {
    let mut applied = loaded.revision;
    loop {
        match head(app, id).await? {
            Some(latest) if latest.revision > applied => {
                apply_to_sale(app, id, &latest).await?;
                applied = latest.revision;
            }
            _ => return Ok(()),
        }
    }
}
