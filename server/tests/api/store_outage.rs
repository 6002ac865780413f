//! A MongoDB outage is answered the same way on every path that reads it: 503
//! problem+json with Retry-After (`db::DbError::Unavailable` through `ApiError`), never
//! a 500, whether the read is the catalogue's, an order's or a login's.

use flashsale::auth::extract::Role;
use flashsale_stack::RedisPersistence;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PRECOMPUTED_HASH, PRECOMPUTED_PASSWORD, TestApp, json_body};

/// Asserts a 503 problem+json with Retry-After, saying what was asked.
async fn assert_unavailable(what: &str, response: reqwest::Response) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = json_body(&response.bytes().await.expect("body"));
    assert_eq!(status, 503, "{what}: {body}");
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "{what}");
    assert_eq!(body["type"], "/problems/unavailable", "{what}: {body}");
    let retry_after = headers.get(RETRY_AFTER).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|seconds| seconds >= 1), "{what}: Retry-After missing: {headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mongodb_down_catalogue_order_and_login_reads_answer_503_with_retry_after() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.mongo_select_timeout_ms = 400;
        config.mongo_op_timeout_ms = 1_000;
        // Every catalogue read goes to MongoDB, not to the Redis cache in front of it.
        config.product_cache_ttl_s = 0;
    })
    .await;
    let product = app.create_product(5, false).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let (status, _, body) = app.buy(&buyer, product, "before-the-outage").await;
    assert_eq!(status, 201, "{}", json_body(&body));
    let order_id = json_body(&body)["order_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).expect("order id");
    let email = format!("{}@example.test", Uuid::new_v4().simple());
    flashsale::auth::users::create_user_with_hash(app.app(), &email, PRECOMPUTED_HASH, Role::Buyer)
        .await
        .expect("creating a user");
    let orders = buyer.get(app.url("/api/v1/user/orders")).send().await.expect("orders");
    assert_eq!(orders.status(), 200, "MongoDB up: the order list answers");

    tokio::task::block_in_place(|| app.own.as_mut().expect("own backends").mongo.kill());

    let client = app.client();
    let catalogue = client.get(app.url("/api/v1/products")).send().await.expect("catalogue");
    assert_unavailable("the catalogue", catalogue).await;
    let detail = client.get(app.url(&format!("/api/v1/products/{product}"))).send().await.expect("detail");
    assert_unavailable("a product", detail).await;
    let orders = buyer.get(app.url("/api/v1/user/orders")).send().await.expect("orders");
    assert_unavailable("the order list", orders).await;
    let order = buyer.get(app.url(&format!("/api/v1/user/orders/{order_id}"))).send().await.expect("order");
    assert_unavailable("an order", order).await;
    let credentials: Value = json!({ "email": email, "password": PRECOMPUTED_PASSWORD });
    let login = client.post(app.url("/api/v1/auth/login")).json(&credentials).send().await.expect("login");
    assert_unavailable("a login", login).await;
    let ready = client.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()[CONTENT_TYPE], "application/problem+json");
    let problem = json_body(&ready.bytes().await.expect("body"));
    assert_eq!(problem["type"], "/problems/not-ready", "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("MongoDB")), "{problem}");
}
