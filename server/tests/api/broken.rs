//! The deliberately broken variants (`--features broken`): each one misbehaves as its doc
//! comment says, and the same scenario with `broken: None` behaves normally.

#![cfg(feature = "broken")]

use std::collections::HashSet;
use std::time::Duration;

use flashsale::auth::extract::Role;
use flashsale::broken::Broken;
use flashsale::clock::derive_order_id;
use flashsale::db::records::Product;
use flashsale::redis::scripts::Configured;
use flashsale::sale::rebuild::{self, Rebuilt};
use flashsale::sale::{orders, product_store, reconciler};
use flashsale_stack::RedisPersistence;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

/// Bound of every wait for the backends to come back.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

async fn spawn(broken: Option<Broken>) -> TestApp {
    TestApp::spawn_with(|config| config.broken = broken).await
}

/// One purchase by a new buyer: (status, body).
async fn buy_as_new_buyer(app: &TestApp, product: Uuid, key: &str) -> (u16, Value) {
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let (status, _, body) = app.buy(&buyer, product, key).await;
    (status, json_body(&body))
}

async fn stored_orders(app: &TestApp, product: Uuid) -> Vec<orders::OrderDoc> {
    orders::orders_of_product(app.app(), product).await.expect("orders")
}

async fn remaining(app: &TestApp, product: Uuid) -> i64 {
    flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded").remaining()
}

#[test]
fn no_variant_is_selected_by_default() {
    let config = flashsale::config::Config::for_local("redis://r", "mongodb://m", "db", "p");
    assert_eq!(config.broken, None);
}

#[tokio::test]
async fn oversell_sells_one_unit_beyond_the_stock() {
    for (broken, sold) in [(Some(Broken::Oversell), 4), (None, 3)] {
        let app = spawn(broken).await;
        let product = app.create_product(3, true).await;
        let mut statuses = Vec::new();
        for index in 0..5 {
            let (status, body) = buy_as_new_buyer(&app, product, &format!("k{index}")).await;
            assert!([201, 409].contains(&status), "{broken:?}: {status} {body}");
            statuses.push(status);
        }
        let confirmed = statuses.iter().filter(|status| **status == 201).count();
        assert_eq!(confirmed, sold, "{broken:?}: {statuses:?}");
        let stored = stored_orders(&app, product).await;
        assert_eq!(stored.len(), sold, "{broken:?}");
        let units: HashSet<i64> = stored.iter().filter_map(orders::OrderDoc::unit_number).collect();
        assert_eq!(units, (1..=i64::try_from(sold).expect("small")).collect(), "{broken:?}: units 1..=sold");
    }
}

#[tokio::test]
async fn double_buy_gives_a_buyer_a_second_unit_of_a_one_per_user_product() {
    for (broken, second) in [(Some(Broken::DoubleBuy), 201), (None, 409)] {
        let app = spawn(broken).await;
        let product = app.create_product(5, true).await;
        let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;

        let (first_status, _, _) = app.buy(&buyer, product, "k1").await;
        let (second_status, _, body) = app.buy(&buyer, product, "k2").await;

        assert_eq!(first_status, 201, "{broken:?}");
        assert_eq!(second_status, second, "{broken:?}: {}", String::from_utf8_lossy(&body));
        let stored = stored_orders(&app, product).await;
        assert_eq!(stored.len(), if broken.is_some() { 2 } else { 1 }, "{broken:?}");
        assert!(stored.iter().all(|order| order.user_id == user_id.to_string()));
    }
}

#[tokio::test]
async fn new_order_on_replay_makes_a_new_order_for_a_retry_with_the_same_key() {
    for broken in [Some(Broken::NewOrderOnReplay), None] {
        let app = spawn(broken).await;
        let unlimited = app.create_product(5, false).await;
        let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;

        let (first_status, _, first) = app.buy(&buyer, unlimited, "same-key").await;
        let (second_status, headers, second) = app.buy(&buyer, unlimited, "same-key").await;

        assert_eq!((first_status, second_status), (201, 201), "{broken:?}");
        let first_id = json_body(&first)["order_id"].as_str().map(str::to_owned).expect("order id");
        let second_id = json_body(&second)["order_id"].as_str().map(str::to_owned).expect("order id");
        let derived = derive_order_id(user_id, "same-key").to_string();
        let stored = stored_orders(&app, unlimited).await;
        if broken.is_some() {
            assert_ne!(first_id, second_id, "a retry made a second order");
            assert!(first_id != derived && second_id != derived, "the ids are not derived from the key");
            assert!(headers.get("idempotent-replayed").is_none());
            assert_eq!(stored.len(), 2);
        } else {
            assert_eq!((first_id.as_str(), second_id.as_str()), (derived.as_str(), derived.as_str()));
            assert_eq!(first, second, "replayed byte for byte");
            assert_eq!(stored.len(), 1);
        }

        // On a one-per-user product the retry is refused instead of getting its order back.
        let one_per_user = app.create_product(5, true).await;
        assert_eq!(app.buy(&buyer, one_per_user, "other-key").await.0, 201, "{broken:?}");
        let (status, _, body) = app.buy(&buyer, one_per_user, "other-key").await;
        if broken.is_some() {
            assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
            assert_eq!(json_body(&body)["type"], "/problems/already-purchased");
        } else {
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        }
    }
}

#[tokio::test]
async fn premature_sold_out_answers_sold_out_with_a_unit_left() {
    for (broken, expected) in [(Some(Broken::PrematureSoldOut), [201, 409, 409]), (None, [201, 201, 409])] {
        let app = spawn(broken).await;
        let product = app.create_product(2, true).await;
        let mut statuses = Vec::new();
        for index in 0..3 {
            let (status, body) = buy_as_new_buyer(&app, product, &format!("k{index}")).await;
            if status == 409 {
                assert_eq!(body["type"], "/problems/sold-out", "{broken:?}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses, expected, "{broken:?}");
        let sold = expected.iter().filter(|status| **status == 201).count();
        assert_eq!(stored_orders(&app, product).await.len(), sold, "{broken:?}");
        assert_eq!(remaining(&app, product).await, 2 - i64::try_from(sold).expect("small"), "{broken:?}");
    }
}

#[tokio::test]
async fn stock_event_off_by_one_publishes_one_unit_fewer_than_are_left() {
    use futures::StreamExt;
    for (broken, expected) in [(Some(Broken::StockEventOffByOne), [1, 0, -1]), (None, [2, 1, 0])] {
        let app = spawn(broken).await;
        let product = app.create_product(3, true).await;
        let mut messages = app.redis().subscribe(&app.app().keys.events_channel()).await.expect("subscribe");
        for index in 0..3 {
            let (status, body) = buy_as_new_buyer(&app, product, &format!("k{index}")).await;
            assert_eq!(status, 201, "{broken:?}: {body}");
        }
        let mut published = Vec::new();
        while published.len() < expected.len() {
            let payload = tokio::time::timeout(SETTLE_TIMEOUT, messages.next())
                .await
                .expect("the purchase's events arrive")
                .expect("subscribed");
            let event: Value = serde_json::from_slice(&payload).expect("json");
            if event["type"] == "stock_updated" && event["product_id"] == product.to_string() {
                published.push(event["remaining"].as_i64().expect("remaining"));
            }
        }
        assert_eq!(published, expected, "{broken:?}");
        assert_eq!(remaining(&app, product).await, 0, "{broken:?}: the sale itself is right");
    }
}

/// A server with backends of its own and no background tasks (the test runs the
/// reconciler by hand), a product of stock 3 and a purchase answered 202 while FerretDB
/// was down; FerretDB is back when this returns. Returns the app, the product, the
/// buyer's client and the pending order id.
async fn pending_purchase(broken: Broken) -> (TestApp, Uuid, reqwest::Client, String) {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.broken = Some(broken);
        config.background_tasks = false;
        config.order_write_timeout_ms = 500;
        config.mongo_select_timeout_ms = 400;
    })
    .await;
    let product = app.create_product(3, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;

    tokio::task::block_in_place(|| app.own.as_mut().expect("own").mongo.kill());
    let (status, _, body) = app.buy(&buyer, product, "pending").await;
    let body = json_body(&body);
    assert_eq!(status, 202, "{body}");
    let order_id = body["order_id"].as_str().expect("order id").to_owned();
    tokio::task::block_in_place(|| app.own.as_mut().expect("own").mongo.restart()).expect("ferretdb restarts");
    (app, product, buyer, order_id)
}

/// Runs reconciler passes until one settles something (FerretDB may still be starting).
async fn reconcile(app: &TestApp) -> usize {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match reconciler::run_pass(app.app()).await {
            Ok(settled) if settled > 0 => return settled,
            result if tokio::time::Instant::now() >= deadline => panic!("the reconciler settled nothing: {result:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_pending_never_persists_a_pending_order_and_keeps_its_unit() {
    let (app, product, buyer, order_id) = pending_purchase(Broken::DropPending).await;

    assert_eq!(reconcile(&app).await, 1);

    assert!(stored_orders(&app, product).await.is_empty(), "the 202's order never reaches MongoDB");
    assert_eq!(remaining(&app, product).await, 2, "its unit stays taken in Redis");
    let mut conn = app.app().redis.clone();
    let pending: i64 =
        redis::cmd("ZCARD").arg(app.app().keys.sale(product).pending).query_async(&mut conn).await.expect("redis");
    assert_eq!(pending, 0, "dropped from the pending set");
    // The retry finds no reservation, and the buyer slot it still holds refuses it.
    let (status, _, body) = app.buy(&buyer, product, "pending").await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["type"], "/problems/already-purchased");
    assert!(orders::find_order(app.app(), order_id.parse().expect("uuid")).await.expect("mongo").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phantom_stores_a_pending_order_under_another_id() {
    let (app, product, buyer, order_id) = pending_purchase(Broken::Phantom).await;

    assert_eq!(reconcile(&app).await, 1);

    let stored = stored_orders(&app, product).await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].id, order_id, "stored under an id nobody requested");
    assert!(orders::find_order(app.app(), order_id.parse().expect("uuid")).await.expect("mongo").is_none());
    assert_eq!(remaining(&app, product).await, 2);
    // Redis confirmed the reservation: a retry gets 201 for an order MongoDB does not hold.
    let (status, _, body) = app.buy(&buyer, product, "pending").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["order_id"], order_id.as_str());
    let response = buyer.get(app.url(&format!("/api/v1/user/orders/{order_id}"))).send().await.expect("request");
    assert_eq!(response.status(), 404, "the acknowledged order is lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_at_once_lets_two_rebuilds_of_one_product_run_together() {
    for (broken, expected) in
        [(Some(Broken::RebuildsAtOnce), [Rebuilt::Done, Rebuilt::Done]), (None, [Rebuilt::Done, Rebuilt::InProgress])]
    {
        let app = spawn(broken).await;
        let product = app.create_product(3, true).await;
        let state = app.app();
        // Each rebuild holds its lock for the order write timeout at least: the two overlap.
        let (first, second) =
            tokio::join!(rebuild::rebuild_product(state, product), rebuild::rebuild_product(state, product));
        let mut outcomes = [first.expect("rebuild"), second.expect("rebuild")];
        outcomes.sort_by_key(|outcome| *outcome != Rebuilt::Done);
        assert_eq!(outcomes, expected, "{broken:?}");
        assert!(rebuild::settled(state, product).await.expect("redis"), "{broken:?}: loaded and not paused");
    }
}

/// A change's settings that reach Redis after a newer change's are refused by the
/// correct server; the variant writes them back over the newer ones.
#[tokio::test]
async fn settings_go_back_lets_an_older_changes_settings_land_over_a_newer_ones() {
    for broken in [Some(Broken::SettingsGoBack), None] {
        let app = spawn(broken).await;
        let id = app.create_product(3, false).await;
        let state = app.app();
        assert_eq!(rebuild::ensure_loaded(state, id).await.expect("load"), Rebuilt::Done);
        let older = product_store::head(state, id).await.expect("mongo").expect("the product");
        let newer = Product { revision: older.revision + 1, one_per_user: true, ..older.clone() };
        let applied = flashsale::sale::configure(state, id, &newer).await.expect("redis");
        assert_eq!(applied, Configured::Applied, "{broken:?}");
        let late = flashsale::sale::configure(state, id, &older).await.expect("redis");
        let rule = flashsale::sale::stock(state, id).await.expect("redis").expect("loaded").one_per_user;
        match broken {
            Some(_) => assert_eq!((late, rule), (Configured::Applied, false), "the older rule is back"),
            None => assert_eq!((late, rule), (Configured::LaterRevisionHeld, true), "the newer rule stays"),
        }
    }
}
