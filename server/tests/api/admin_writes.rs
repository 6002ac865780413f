//! Concurrent admin writes to one product, on two instances sharing Redis and MongoDB
//! (FerretDB in the default lane, whose updates are not atomic with their reads):
//! restocks, updates and a delete racing each other and buyers. No acknowledged write is
//! lost, stock in Redis and MongoDB agrees afterwards, a deleted product stays deleted,
//! and no purchase holds a unit the stored stock does not have.

use std::collections::BTreeSet;

use flashsale::db::records::Role;
use flashsale::sale::orders::{self, OrderStatus};
use flashsale::startup::RunningServer;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// Concurrent restocks of one unit each, as the hostile-client probe sent them.
const RESTOCKS: i64 = 20;

/// The test's server, and a second instance on its Redis, MongoDB and key prefix.
struct TwoInstances {
    app: TestApp,
    second: RunningServer,
    admin: reqwest::Client,
}

impl TwoInstances {
    async fn start() -> Self {
        let app = TestApp::spawn().await;
        let second = app.second_instance().await;
        // One session, valid on both instances (they share Redis).
        let (admin, _) = app.verified_buyer(Role::Admin).await;
        Self { app, second, admin }
    }

    /// The base URL of instance `n` (0 or 1).
    fn base(&self, n: usize) -> String {
        match n % 2 {
            0 => self.app.base.clone(),
            _ => self.second.base_url(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn restock(&self, n: usize, product: Uuid, quantity: i64) -> (StatusCode, Value) {
        let url = format!("{}/api/v1/products/{product}/restock", self.base(n));
        self.send(self.admin.post(url).json(&json!({ "quantity": quantity }))).await
    }

    async fn update(&self, n: usize, product: Uuid, body: Value) -> (StatusCode, Value) {
        self.send(self.admin.put(format!("{}/api/v1/products/{product}", self.base(n))).json(&body)).await
    }

    async fn delete(&self, n: usize, product: Uuid) -> StatusCode {
        self.send(self.admin.delete(format!("{}/api/v1/products/{product}", self.base(n)))).await.0
    }

    /// Buyers racing the admin writes: each buys once on alternating instances.
    async fn buy_all(&self, product: Uuid, buyers: &[reqwest::Client]) -> Vec<u16> {
        join_all(buyers.iter().enumerate().map(|(n, buyer)| async move {
            let url = format!("{}/api/v1/user/buy/{product}", self.base(n));
            let response = buyer.post(url).header("idempotency-key", format!("k{n}")).send().await.expect("buy");
            response.status().as_u16()
        }))
        .await
    }

    /// Stock totals MongoDB's document, the API and the live sale state report.
    async fn stock_totals(&self, product: Uuid) -> (i64, i64, Option<i64>) {
        let app = self.app.app();
        let stored = app.db.find_product(&product.to_string()).await.expect("mongo").expect("the product");
        let (_, detail) = self.send(self.admin.get(format!("{}/api/v1/products/{product}", self.base(1)))).await;
        let live = flashsale::sale::stock(app, product).await.expect("redis").map(|state| state.stock_total);
        (stored.stock_total, detail["stock_total"].as_i64().expect("stock_total"), live)
    }

    /// Units held by the product's confirmed orders, in MongoDB.
    async fn held_units(&self, product: Uuid) -> Vec<i64> {
        let orders = orders::orders_of_product(self.app.app(), product).await.expect("mongo");
        orders.iter().filter(|order| order.status == OrderStatus::Confirmed).filter_map(|o| o.unit_number()).collect()
    }
}

async fn new_buyers(app: &TestApp, n: usize) -> Vec<reqwest::Client> {
    join_all((0..n).map(|_| async { app.verified_buyer(Role::Buyer).await.0 })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_restocks_on_two_instances_add_twenty_in_mongodb_and_in_redis() {
    let stack = TwoInstances::start().await;
    let product = stack.app.create_product(1, true).await;
    let buyers = new_buyers(&stack.app, 30).await;

    let restocks = join_all((0..RESTOCKS as usize).map(|n| stack.restock(n, product, 1)));
    let (answers, bought) = tokio::join!(restocks, stack.buy_all(product, &buyers));

    // Every restock answered 200, each with a total of its own: none applied on a stale one.
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    let totals: BTreeSet<i64> = answers.iter().filter_map(|(_, view)| view["stock_total"].as_i64()).collect();
    assert_eq!(totals, (2..=1 + RESTOCKS).collect(), "each restock added its unit to the one before");
    assert_eq!(stack.stock_totals(product).await, (1 + RESTOCKS, 1 + RESTOCKS, Some(1 + RESTOCKS)));

    // Buyers raced the restocks: no more units held than stored, none twice, none past the total.
    let held = stack.held_units(product).await;
    let distinct: BTreeSet<i64> = held.iter().copied().collect();
    assert_eq!(distinct.len(), held.len(), "a unit held twice: {held:?}");
    assert!(held.iter().all(|unit| (1..=1 + RESTOCKS).contains(unit)), "a unit past the stock: {held:?}");
    let created = bought.iter().filter(|status| **status == 201 || **status == 202).count();
    assert!(created <= (1 + RESTOCKS) as usize, "{bought:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_fields_on_two_instances_keep_every_field() {
    let stack = TwoInstances::start().await;
    for round in 0..8i64 {
        let product = stack.app.create_product(3, true).await;
        let name = format!("Renamed {round}");
        let description = format!("Described {round}");
        let price = 1_000 + round;
        let (renamed, described, priced) = tokio::join!(
            stack.update(0, product, json!({ "name": name })),
            stack.update(1, product, json!({ "description": description })),
            stack.update(round as usize, product, json!({ "price_cents": price })),
        );
        for (status, body) in [&renamed, &described, &priced] {
            assert_eq!(*status, StatusCode::OK, "{body}");
        }
        let stored = stack.app.app().db.find_product(&product.to_string()).await.expect("mongo").expect("product");
        assert_eq!((stored.name.as_str(), stored.description.as_str()), (name.as_str(), description.as_str()));
        assert_eq!(stored.price_cents, price, "round {round}");
        assert_eq!(stored.stock_total, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_restocks_updates_and_buyers_stays_deleted() {
    let stack = TwoInstances::start().await;
    for round in 0..4usize {
        let product = stack.app.create_product(2, false).await;
        let buyers = new_buyers(&stack.app, 6).await;
        let restocks = join_all((0..6).map(|n| stack.restock(n, product, 1)));
        let updates = join_all((0..6).map(|n| stack.update(n + 1, product, json!({ "price_cents": 500 + n }))));
        let (deleted, restocked, updated, _) =
            tokio::join!(stack.delete(round, product), restocks, updates, stack.buy_all(product, &buyers));
        assert_eq!(deleted, StatusCode::NO_CONTENT);
        for (status, body) in restocked.iter().chain(&updated) {
            assert!([StatusCode::OK, StatusCode::NOT_FOUND].contains(status), "{status} {body}");
        }

        // Deleted in MongoDB, in the API, on both instances, and in the sale state.
        let stored = stack.app.app().db.find_product(&product.to_string()).await.expect("mongo").expect("product");
        assert!(stored.deleted, "round {round}: the document was written back undeleted");
        for n in 0..2 {
            let detail = stack.admin.get(format!("{}/api/v1/products/{product}", stack.base(n))).send().await;
            assert_eq!(detail.expect("GET").status(), StatusCode::NOT_FOUND, "round {round}, instance {n}");
            let (_, page) = stack.send(stack.admin.get(format!("{}/api/v1/products?limit=200", stack.base(n)))).await;
            let listed = page["items"].as_array().expect("items").iter().any(|item| item["id"] == product.to_string());
            assert!(!listed, "round {round}: listed after its delete");
        }
        assert_eq!(flashsale::sale::stock(stack.app.app(), product).await.expect("redis"), None);
        // Nothing sells it, and no later write brings it back.
        let late = stack.buy_all(product, &new_buyers(&stack.app, 2).await).await;
        assert_eq!(late, vec![404, 404], "round {round}");
        assert_eq!(stack.restock(round, product, 1).await.0, StatusCode::NOT_FOUND);
        assert_eq!(stack.update(round + 1, product, json!({ "name": "back" })).await.0, StatusCode::NOT_FOUND);
        assert_eq!(flashsale::sale::stock(stack.app.app(), product).await.expect("redis"), None);

        let held = stack.held_units(product).await;
        assert!(held.len() as i64 <= stored.stock_total, "{held:?} of {}", stored.stock_total);
    }
}

/// Two reservations of one buyer taken while a product had no one-per-user rule, both
/// still pending (MongoDB was away) when an administrator turns the rule on: each order
/// is written with the buyer slot of the rule it was taken under, so both are persisted
/// (under the product's new rule the second would collide with the first in MongoDB's
/// `(product_id, buyer_slot)` index and be dropped, a 202 lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_keep_the_one_per_user_rule_they_were_taken_under() {
    use flashsale::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
    use flashsale::sale::{product_store, reconciler};

    let app = TestApp::spawn_with(|config| config.background_tasks = false).await;
    let product = app.create_product(5, false).await;
    let (_, user_id) = app.verified_buyer(Role::Buyer).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let keys = app.app().keys.sale(product);
    let channel = app.app().keys.events_channel();
    let mut conn = app.app().redis.clone();
    let mut order_ids = Vec::new();
    for key in ["first", "second"] {
        let order_id = flashsale::clock::derive_order_id(user_id, key);
        let args = PurchaseArgs { order_id, user_id, product_id: product, now_ms: 1_000, channel: &channel };
        let outcome = scripts::purchase(&mut conn, &keys, &args).await.expect("purchase script");
        assert!(matches!(outcome, PurchaseOutcome::Reserved { one_per_user: Some(false), .. }), "{outcome:?}");
        order_ids.push(order_id);
    }

    let response = admin
        .put(app.url(&format!("/api/v1/products/{product}")))
        .json(&json!({ "one_per_user": true }))
        .send()
        .await
        .expect("update");
    assert_eq!(response.status(), 200);

    let current = product_store::head(app.app(), product).await.expect("mongo").expect("product");
    assert!(current.one_per_user);
    let pass = reconciler::reconcile_product(app.app(), product, &current, reconciler::ANY_AGE, usize::MAX)
        .await
        .expect("reconciler pass");
    assert_eq!(pass.conflicts, 0, "{pass:?}");
    for order_id in order_ids {
        let stored = orders::find_order(app.app(), order_id).await.expect("mongo").expect("order persisted");
        assert_eq!(stored.status, OrderStatus::Confirmed);
    }
    // Under the rule now on, the buyer holds units: a third is refused.
    let third = flashsale::clock::derive_order_id(user_id, "third");
    let args = PurchaseArgs { order_id: third, user_id, product_id: product, now_ms: 2_000, channel: &channel };
    assert_eq!(scripts::purchase(&mut conn, &keys, &args).await.expect("purchase"), PurchaseOutcome::AlreadyPurchased);
}

/// A delete recorded in MongoDB whose live step never ran (Redis down when it was
/// answered 503, the instance gone before its retry took): the next reconciler pass
/// persists the reservations the sale still holds (a buyer may hold a 202 for one) and
/// retires the sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_retires_the_sale_of_a_product_deleted_without_its_live_step() {
    use flashsale::db::records::ProductRevision;
    use flashsale::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
    use flashsale::sale::{product_store, reconciler};

    let app = TestApp::spawn_with(|config| config.background_tasks = false).await;
    let product = app.create_product(5, true).await;
    let (_, user_id) = app.verified_buyer(Role::Buyer).await;
    let keys = app.app().keys.sale(product);
    let channel = app.app().keys.events_channel();
    let mut conn = app.app().redis.clone();
    let order_id = flashsale::clock::derive_order_id(user_id, "pending");
    let args =
        PurchaseArgs { order_id, user_id, product_id: product, now_ms: app.app().ids.now_ms(), channel: &channel };
    let outcome = scripts::purchase(&mut conn, &keys, &args).await.expect("purchase script");
    assert!(matches!(outcome, PurchaseOutcome::Reserved { .. }), "{outcome:?}");

    // The delete's MongoDB steps only: its revision and its document.
    let mut deleted = product_store::head(app.app(), product).await.expect("mongo").expect("product");
    deleted.deleted = true;
    deleted.revision += 1;
    deleted.updated_at_ms = app.app().ids.now_ms();
    app.app().db.insert_product_revision(&ProductRevision::of(&deleted)).await.expect("revision");
    app.app().db.put_product(&deleted).await.expect("document");
    assert!(flashsale::sale::stock(app.app(), product).await.expect("redis").is_some(), "still loaded");

    reconciler::run_pass(app.app()).await.expect("reconciler pass");

    assert!(flashsale::sale::stock(app.app(), product).await.expect("redis").is_none(), "the sale is retired");
    let stored = orders::find_order(app.app(), order_id).await.expect("mongo").expect("the reservation persisted");
    assert_eq!(stored.status, OrderStatus::Confirmed);
}
