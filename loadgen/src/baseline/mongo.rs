//! The raw MongoDB measures, on a MongoDB client of the load generator's own (the server
//! reaches MongoDB only through its store seam, which has no raw collection): order-sized
//! documents into a scratch collection, one `insert_one` at a time (`mongo_insert`), or
//! one unordered `insert_many` of the winner path's batch size (`mongo_insert_many`).
//! Both run on the closed-loop driver with the HTTP measures' [`CONCURRENCY`] workers.

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use uuid::Uuid;

use super::{CONCURRENCY, MEASURE, Measure, Sample, Setup, WARMUP, sample_of};
use crate::openloop::closed_loop;

/// Scratch collection of the raw insert measures.
pub const BASELINE_COLLECTION: &str = "loadgen_insert_baseline";

/// The scratch collection, or `None` when no client could be made.
async fn scratch_collection(setup: &Setup) -> Option<Collection<Document>> {
    let config = &setup.admin.config;
    // A URL the server itself connected with: only a parse error can fail here.
    let client = mongodb::Client::with_uri_str(&config.mongo_url).await.ok()?;
    Some(client.database(&config.mongo_database).collection::<Document>(BASELINE_COLLECTION))
}

/// A document shaped and sized as a confirmed order of `product`.
fn order_document(product: &str, unit: u64) -> Document {
    doc! {
        "_id": Uuid::now_v7().to_string(),
        "product_id": product,
        "user_id": Uuid::nil().to_string(),
        "unit": i64::try_from(unit).unwrap_or(i64::MAX),
        "buyer_slot": Uuid::now_v7().to_string(),
        "status": "confirmed",
        "created_at_ms": 0_i64,
    }
}

/// A sample that measured nothing: the collection could not be reached.
fn failed(measure: Measure, repetition: usize, batch: Option<usize>) -> Sample {
    Sample {
        measure,
        repetition,
        rate_per_s: 0.0,
        p50_us: 0,
        p99_us: 0,
        unexpected: 1,
        documents_per_write: batch.map(|b| b as f64),
        group_commits: None,
    }
}

/// The raw single-document insert: the floor under the winner path without group commit.
pub async fn insert_one(setup: &Setup, repetition: usize) -> Sample {
    let Some(collection) = scratch_collection(setup).await else {
        return failed(Measure::MongoInsert, repetition, None);
    };
    let product = setup.winner_product.to_string();
    let result = closed_loop(CONCURRENCY, MEASURE, WARMUP, move |index| {
        let (collection, document) = (collection.clone(), order_document(&product, index));
        async move {
            match collection.insert_one(document).await {
                Ok(_) => "ok".to_owned(),
                Err(_) => "unexpected:error".to_owned(),
            }
        }
    })
    .await;
    let mut sample = sample_of(Measure::MongoInsert, repetition, result);
    sample.documents_per_write = Some(1.0);
    sample
}

/// The raw unordered `insert_many` of `batch` documents per call, as a group commit
/// writes them: its rate is in documents per second (comparable with orders per second),
/// its latencies are those of one `insert_many`, and a failed call counts as one
/// unexpected answer.
pub async fn insert_many(setup: &Setup, repetition: usize, batch: usize) -> Sample {
    let Some(collection) = scratch_collection(setup).await else {
        return failed(Measure::MongoInsertMany, repetition, Some(batch));
    };
    let product = setup.winner_product.to_string();
    let batch_units = u64::try_from(batch).unwrap_or(u64::MAX);
    let result = closed_loop(CONCURRENCY, MEASURE, WARMUP, move |index| {
        let first = index.saturating_mul(batch_units);
        let documents: Vec<Document> =
            (first..first.saturating_add(batch_units)).map(|unit| order_document(&product, unit)).collect();
        let collection = collection.clone();
        async move {
            match collection.insert_many(documents).ordered(false).await {
                Ok(_) => "ok".to_owned(),
                Err(_) => "unexpected:error".to_owned(),
            }
        }
    })
    .await;
    let mut sample = sample_of(Measure::MongoInsertMany, repetition, result);
    sample.rate_per_s *= batch as f64;
    sample.documents_per_write = Some(batch as f64);
    sample
}
