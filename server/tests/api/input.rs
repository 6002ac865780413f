//! Bad input gets a clear 4xx problem+json and never reaches a 500.

use flashsale::auth::extract::Role;
use reqwest::StatusCode;

use crate::helpers::{TestApp, json_body};

async fn assert_problem(response: reqwest::Response, expected: u16) -> serde_json::Value {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned());
    let body = json_body(&response.bytes().await.expect("body"));
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{body}");
    assert_eq!(body["status"], expected);
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("/problems/")));
    body
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let response = app
        .client()
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("request");
    assert_problem(response, 400).await;
}

#[tokio::test]
async fn a_wrong_type_is_a_422_problem() {
    let app = TestApp::spawn().await;
    let response = app
        .client()
        .post(app.url("/api/v1/auth/register"))
        .json(&serde_json::json!({ "email": 42, "password": ["x"] }))
        .send()
        .await
        .expect("request");
    assert_problem(response, 422).await;
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let app = TestApp::spawn().await;
    let huge = format!("{{\"email\":\"{}\",\"password\":\"x\"}}", "a".repeat(app.config.max_body_bytes + 1));
    let response = app
        .client()
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .expect("request");
    assert_problem(response, 413).await;

    // The same body chunked, with no Content-Length to refuse it by: read up to the limit.
    let chunks: Vec<Result<String, std::io::Error>> =
        huge.as_bytes().chunks(1024).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
    let response = app
        .client()
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    assert_problem(response, 413).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused() {
    let app = TestApp::spawn().await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let send = |body: String| {
        app.client().post(app.url("/api/v1/auth/register")).header("content-type", "application/json").body(body).send()
    };
    assert_problem(send(nested(64)).await.expect("request"), 400).await;
    // The bound is exact: MAX_JSON_DEPTH levels are parsed (and then refused for their
    // shape, 422), one more is refused as malformed before any parse into a type.
    let deepest = flashsale::http::extract::MAX_JSON_DEPTH;
    assert_problem(send(nested(deepest)).await.expect("request"), 422).await;
    assert_problem(send(nested(deepest + 1)).await.expect("request"), 400).await;
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415_problem() {
    let app = TestApp::spawn().await;
    let response = app.client().post(app.url("/api/v1/auth/login")).body("{}").send().await.expect("request");
    assert_problem(response, 415).await;
}

#[tokio::test]
async fn an_invalid_product_id_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let response = buyer
        .post(app.url("/api/v1/user/buy/not-a-uuid"))
        .header("idempotency-key", "k")
        .send()
        .await
        .expect("request");
    assert_problem(response, 400).await;
    let response = app.client().get(app.url("/api/v1/products/not-a-uuid")).send().await.expect("request");
    assert_problem(response, 400).await;
}

#[tokio::test]
async fn a_purchase_without_an_idempotency_key_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let response = buyer.post(app.url(&format!("/api/v1/user/buy/{product}"))).send().await.expect("request");
    let body = assert_problem(response, 400).await;
    assert_eq!(body["type"], "/problems/idempotency-key-missing");
}

#[tokio::test]
async fn an_over_long_or_malformed_idempotency_key_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    for key in ["k".repeat(256), "has space".to_owned(), String::new()] {
        let response = buyer
            .post(app.url(&format!("/api/v1/user/buy/{product}")))
            .header("idempotency-key", key)
            .send()
            .await
            .expect("request");
        let body = assert_problem(response, 400).await;
        assert_eq!(body["type"], "/problems/idempotency-key-invalid");
    }
    // Two keys on one request: which one names the attempt is ambiguous, so neither does.
    let response = buyer
        .post(app.url(&format!("/api/v1/user/buy/{product}")))
        .header("idempotency-key", "first")
        .header("idempotency-key", "second")
        .send()
        .await
        .expect("request");
    let body = assert_problem(response, 400).await;
    assert_eq!(body["type"], "/problems/idempotency-key-invalid");
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 1, "refused requests take nothing");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    let response = app.client().get(app.url("/api/v1/nope")).send().await.expect("request");
    assert_problem(response, 404).await;
    let response = app.client().delete(app.url("/api/v1/auth/login")).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_problem(response, 405).await;
}
