//! Many buyers at once: 2,000 concurrent attempts from 1,000 users, half of them
//! double-clicking with the same key, on 100 units.

use std::collections::{HashMap, HashSet};

use flashsale::sale::orders;
use futures::StreamExt;
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

const USERS: usize = 1_000;
const STOCK: i64 = 100;

#[derive(Debug)]
struct Attempt {
    user_id: Uuid,
    key: String,
    status: u16,
    body: serde_json::Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_attempts_sell_exactly_the_stock_once_each() {
    let app = TestApp::spawn().await;
    let product = app.create_product(STOCK, true).await;
    let buyers: Vec<(Uuid, String)> =
        futures::stream::iter(0..USERS).map(|_| app.buyer_cookie()).buffer_unordered(32).collect().await;
    let remaining_seen = watch_remaining(&app).await;

    // Half the users double-click (two requests, one key); the other half retry
    // carelessly with a second key. Every user sends exactly two requests.
    let client = reqwest::Client::builder().pool_max_idle_per_host(2_000).build().expect("client");
    let mut requests = Vec::with_capacity(USERS * 2);
    for (index, (user_id, cookie)) in buyers.iter().enumerate() {
        let keys = if index % 2 == 0 {
            [format!("{user_id}-click"), format!("{user_id}-click")]
        } else {
            [format!("{user_id}-a"), format!("{user_id}-b")]
        };
        for key in keys {
            let client = client.clone();
            let url = app.url(&format!("/api/v1/user/buy/{product}"));
            let cookie = cookie.clone();
            let user_id = *user_id;
            requests.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("cookie", cookie)
                    .header("idempotency-key", &key)
                    .send()
                    .await
                    .expect("request");
                let status = response.status().as_u16();
                let body = json_body(&response.bytes().await.expect("body"));
                Attempt { user_id, key, status, body }
            }));
        }
    }
    let mut attempts = Vec::with_capacity(requests.len());
    for request in requests {
        attempts.push(request.await.expect("task"));
    }

    let confirmed: Vec<&Attempt> = attempts.iter().filter(|a| a.status == 201).collect();
    for attempt in &attempts {
        assert!([201, 409].contains(&attempt.status), "unexpected answer {} {:?}", attempt.status, attempt.body);
    }
    // Every success names the order its (user, key) derives, so replays name the first.
    let mut order_of_key: HashMap<(Uuid, &str), &str> = HashMap::new();
    for attempt in &confirmed {
        let order = attempt.body["order_id"].as_str().expect("order id");
        assert_eq!(order, flashsale::clock::derive_order_id(attempt.user_id, &attempt.key).to_string());
        if let Some(first) = order_of_key.insert((attempt.user_id, attempt.key.as_str()), order) {
            assert_eq!(first, order, "a replay named another order");
        }
    }
    for attempt in attempts.iter().filter(|a| a.body["type"] == "/problems/idempotency-in-flight") {
        let derived = flashsale::clock::derive_order_id(attempt.user_id, &attempt.key).to_string();
        assert_eq!(attempt.body["order_id"], derived.as_str(), "an in-flight answer names the first order");
    }

    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), STOCK as usize, "exactly the stock is sold");
    let units: HashSet<i64> = stored.iter().filter_map(|o| o.unit_number()).collect();
    assert_eq!(units, (1..=STOCK).collect::<HashSet<_>>(), "100 distinct units");
    let users: HashSet<&str> = stored.iter().map(|o| o.user_id.as_str()).collect();
    assert_eq!(users.len(), STOCK as usize, "no user twice");
    let confirmed_orders: HashSet<&str> = confirmed.iter().filter_map(|a| a.body["order_id"].as_str()).collect();
    let stored_ids: HashSet<&str> = stored.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(confirmed_orders, stored_ids, "every 201 is in MongoDB, and nothing else is");

    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 0);
    let seen = remaining_seen.await.expect("watcher");
    assert!(seen.iter().all(|left| *left >= 0), "stock went below zero: {seen:?}");
    assert_eq!(seen.iter().min(), Some(&0));
}

/// Collects every `remaining` published for the test's key prefix until the product
/// sells out (bounded by a timeout).
async fn watch_remaining(app: &TestApp) -> tokio::task::JoinHandle<Vec<i64>> {
    let mut messages = app.redis().subscribe(&app.app().keys.events_channel()).await.expect("subscribe");
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        while let Ok(Some(payload)) = tokio::time::timeout_at(deadline, messages.next()).await {
            let event: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
            if let Some(left) = event["remaining"].as_i64() {
                seen.push(left);
                if left == 0 {
                    break;
                }
            }
        }
        seen
    })
}
