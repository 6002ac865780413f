//! The catalogue over HTTP: admin writes, cache-aside reads, live stock, sale windows,
//! and the refusal of bad input as problem+json.

use flashsale::auth::extract::Role;
use flashsale::products::model::MAX_STOCK;
use flashsale::sale::product_store::find_product;
use flashsale_stack::RedisPersistence;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

const HOUR_MS: i64 = 3_600_000;

fn product_path(id: Uuid) -> String {
    format!("/api/v1/products/{id}")
}

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.client().get(app.url(path)).send().await.expect("GET");
    let status = response.status();
    let body = response.bytes().await.expect("body");
    (status, json_body(&body))
}

/// Sends `body` as JSON with the admin client; status, content type and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = response.bytes().await.expect("body");
    (status, content_type, json_body(&body))
}

async fn create_with(app: &TestApp, admin: &reqwest::Client, body: Value) -> Uuid {
    let (status, _, created) = send(admin.post(app.url("/api/v1/products")).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).expect("product id")
}

fn item_ids(page: &Value) -> Vec<String> {
    page["items"].as_array().expect("items").iter().filter_map(|item| item["id"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_created_product_shows_its_whole_stock_as_remaining() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;

    let response = admin
        .post(app.url("/api/v1/products"))
        .json(&json!({ "name": "  Gold watch ", "description": "Shiny", "price_cents": 99_900, "stock": 7 }))
        .send()
        .await
        .expect("create");

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let created: Value = response.json().await.expect("json");
    let id = Uuid::parse_str(created["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(location.as_deref(), Some(product_path(id).as_str()));
    assert_eq!(created["remaining"], 7);
    assert_eq!(created["one_per_user"], true, "one per user is the default");
    let (status, detail) = get_json(&app, &product_path(id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["name"], "Gold watch");
    assert_eq!(detail["remaining"], 7);
    assert_eq!(detail["stock_total"], 7);
    assert_eq!(detail["sale_state"], "open");
    assert!(detail.get("paused").is_none());
    let stored = find_product(app.app(), id).await.expect("mongo").expect("stored");
    assert_eq!(stored.stock_total, 7);
}

#[tokio::test]
async fn the_list_and_its_seed_aliases_leave_out_deleted_products() {
    let app = TestApp::spawn().await;
    let kept = app.create_product(3, true).await;
    let deleted = app.create_product(3, true).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;

    let (status, _, _) = send(admin.delete(app.url(&product_path(deleted)))).await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in ["/api/v1/products", "/api/v1/product", "/api/v1/user/products"] {
        let (status, page) = get_json(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(item_ids(&page), vec![kept.to_string()], "{path}");
        assert_eq!(page["items"][0]["remaining"], 3);
    }
}

#[tokio::test]
async fn the_list_is_bounded_and_pages_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create_product(1, true).await.to_string());
    }

    let (_, first) = get_json(&app, "/api/v1/products?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, second) = get_json(&app, &format!("/api/v1/products?limit=2&after={cursor}")).await;

    assert_eq!(item_ids(&first), ids[..2].to_vec());
    assert_eq!(item_ids(&second), ids[2..].to_vec());
    assert!(second["next_cursor"].is_null());
    // A page that holds all that is left names no next page, even when it is full.
    let (_, whole) = get_json(&app, "/api/v1/products?limit=3").await;
    assert_eq!(item_ids(&whole), ids);
    assert!(whole["next_cursor"].is_null(), "{whole}");
    for query in ["limit=0", "limit=201", "limit=abc", "after=not-a-uuid"] {
        let response = app.client().get(app.url(&format!("/api/v1/products?{query}"))).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn writes_refuse_anonymous_clients_with_401_and_buyers_with_403() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let anonymous = app.client();
    let body = json!({ "name": "x", "price_cents": 1, "stock": 1 });

    for (client, expected) in [(&anonymous, StatusCode::UNAUTHORIZED), (&buyer, StatusCode::FORBIDDEN)] {
        let requests = [
            client.post(app.url("/api/v1/products")).json(&body),
            client.post(app.url("/api/v1/product/create-product")).json(&body),
            client.put(app.url(&product_path(product))).json(&json!({ "name": "y" })),
            client.post(app.url(&format!("{}/restock", product_path(product)))).json(&json!({ "quantity": 1 })),
            client.delete(app.url(&product_path(product))),
        ];
        for request in requests {
            let (status, content_type, problem) = send(request).await;
            assert_eq!(status, expected, "{problem}");
            assert_eq!(content_type, "application/problem+json");
            assert_eq!(problem["status"], expected.as_u16());
        }
    }
    let (_, detail) = get_json(&app, &product_path(product)).await;
    assert_eq!(detail["name"], "Limited sneaker", "refused writes changed nothing");
}

#[tokio::test]
async fn a_detail_read_after_the_cache_is_emptied_is_a_miss_then_a_hit() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let mut redis = app.app().redis.clone();
    let _: i64 =
        redis::cmd("DEL").arg(app.app().keys.product_cache(product)).query_async(&mut redis).await.expect("DEL");
    let metrics = &app.app().metrics;
    let (hits, misses) = (metrics.product_cache_hits.get(), metrics.product_cache_misses.get());

    assert_eq!(get_json(&app, &product_path(product)).await.0, StatusCode::OK);
    assert_eq!((metrics.product_cache_hits.get(), metrics.product_cache_misses.get()), (hits, misses + 1));
    assert_eq!(get_json(&app, &product_path(product)).await.0, StatusCode::OK);
    assert_eq!((metrics.product_cache_hits.get(), metrics.product_cache_misses.get()), (hits + 1, misses + 1));

    let exposition = app.client().get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(exposition.contains("flashsale_product_cache_hits_total"), "{exposition}");
    assert!(exposition.contains("flashsale_product_cache_misses_total"), "{exposition}");
}

#[tokio::test]
async fn the_first_list_page_is_cached_after_one_miss() {
    let app = TestApp::spawn().await;
    app.create_product(3, true).await;
    let metrics = &app.app().metrics;
    let misses = metrics.product_cache_misses.get();

    get_json(&app, "/api/v1/products").await;
    let hits = metrics.product_cache_hits.get();
    let (_, page) = get_json(&app, "/api/v1/products").await;

    assert_eq!(metrics.product_cache_misses.get(), misses + 1);
    assert_eq!(metrics.product_cache_hits.get(), hits + 1);
    assert_eq!(item_ids(&page).len(), 1);
}

#[tokio::test]
async fn an_update_shows_at_once_although_the_product_and_the_list_were_cached() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    get_json(&app, &product_path(product)).await;
    get_json(&app, "/api/v1/products").await;

    let (status, _, updated) =
        send(admin.put(app.url(&product_path(product))).json(&json!({ "name": "Renamed", "price_cents": 500 }))).await;

    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    let (_, detail) = get_json(&app, &product_path(product)).await;
    assert_eq!(detail["name"], "Renamed");
    assert_eq!(detail["price_cents"], 500);
    assert_eq!(detail["remaining"], 3, "an update leaves the stock alone");
    let (_, page) = get_json(&app, "/api/v1/products").await;
    assert_eq!(page["items"][0]["name"], "Renamed");
    let seed_path = format!("/api/v1/products/update-product/{product}");
    let (status, _, _) = send(admin.put(app.url(&seed_path)).json(&json!({ "description": "via alias" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_json(&app, &product_path(product)).await.1["description"], "via alias");
}

#[tokio::test]
async fn a_restock_raises_the_live_stock_and_the_recorded_total() {
    let app = TestApp::spawn().await;
    let product = app.create_product(2, true).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(app.buy(&buyer, product, "key-1").await.0, 201);

    let restock_url = app.url(&format!("{}/restock", product_path(product)));
    let (status, _, restocked) = send(admin.post(&restock_url).json(&json!({ "quantity": 3 }))).await;

    assert_eq!(status, StatusCode::OK, "{restocked}");
    assert_eq!(restocked["remaining"], 4);
    assert_eq!(restocked["stock_total"], 5);
    assert_eq!(get_json(&app, &product_path(product)).await.1["remaining"], 4);
    let stored = find_product(app.app(), product).await.expect("mongo").expect("stored");
    assert_eq!(stored.stock_total, 5);
    // A valid quantity the stored total refuses is a conflict with the product's state
    // (409), not an invalid body: the description allows it.
    let (status, _, problem) = send(admin.post(&restock_url).json(&json!({ "quantity": MAX_STOCK }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["type"], "/problems/state-conflict", "{problem}");
    assert_eq!(find_product(app.app(), product).await.expect("mongo").expect("stored").stock_total, 5);
}

#[tokio::test]
async fn a_restock_that_missed_redis_is_applied_by_the_next_read() {
    let app = TestApp::spawn().await;
    let product = app.create_product(2, true).await;
    // MongoDB and the cache took a restock whose sale-state step failed.
    let mut restocked =
        flashsale::sale::product_store::head(app.app(), product).await.expect("mongo").expect("the product");
    restocked.stock_total += 3;
    restocked.revision += 1;
    let revision = flashsale::db::records::ProductRevision::of(&restocked);
    app.app().db.insert_product_revision(&revision).await.expect("mongo");
    app.app().db.put_product(&restocked).await.expect("mongo");
    flashsale::sale::product_cache::after_write(app.app(), &restocked).await;

    let (_, detail) = get_json(&app, &product_path(product)).await;

    assert_eq!(detail["remaining"], 5);
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.stock_total, 5);
}

#[tokio::test]
async fn a_deleted_product_is_not_found_and_cannot_be_bought() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let other = app.create_product(3, true).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    get_json(&app, &product_path(product)).await;

    let (status, _, _) = send(admin.delete(app.url(&product_path(product)))).await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = get_json(&app, &product_path(product)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["type"], "/problems/not-found");
    let (status, _, body) = app.buy(&buyer, product, "key-1").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let deleted = find_product(app.app(), product).await.expect("mongo").expect("kept");
    assert!(deleted.deleted, "soft delete");
    let (status, _, _) = send(admin.delete(app.url(&product_path(product)))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "deleting again is harmless");
    let again = find_product(app.app(), product).await.expect("mongo").expect("kept");
    assert_eq!(again.revision, deleted.revision, "and writes nothing: the delete was the last revision");
    let (status, _, _) = send(admin.delete(app.url(&format!("/api/v1/product/delete-product/{other}")))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(get_json(&app, &product_path(other)).await.0, StatusCode::NOT_FOUND);
    let (status, _, _) = send(admin.delete(app.url(&product_path(Uuid::new_v4())))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sale_that_has_not_started_says_so_and_refuses_purchases_until_opened() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let now = app.app().ids.now_ms();
    let body = json!({ "name": "Later", "price_cents": 100, "stock": 2, "sale_starts_at_ms": now + HOUR_MS });
    let product = create_with(&app, &admin, body).await;

    let (_, detail) = get_json(&app, &product_path(product)).await;
    let (status, _, refused) = app.buy(&buyer, product, "key-1").await;

    assert_eq!(detail["sale_state"], "not_started");
    assert_eq!(detail["remaining"], 2);
    assert_eq!(status, 409);
    assert_eq!(json_body(&refused)["type"], "/problems/sale-not-started");
    // An end the body allows but the stored start refuses: a conflict, nothing changed.
    let (status, _, conflict) =
        send(admin.put(app.url(&product_path(product))).json(&json!({ "sale_ends_at_ms": now }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["type"], "/problems/state-conflict", "{conflict}");
    assert_eq!(get_json(&app, &product_path(product)).await.1["sale_ends_at_ms"], Value::Null);
    let (status, _, _) =
        send(admin.put(app.url(&product_path(product))).json(&json!({ "sale_starts_at_ms": null }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_json(&app, &product_path(product)).await.1["sale_state"], "open");
    assert_eq!(app.buy(&buyer, product, "key-2").await.0, 201);
}

#[tokio::test]
async fn a_sale_past_its_end_or_out_of_stock_reports_it() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let now = app.app().ids.now_ms();
    let window = json!({ "name": "Gone", "price_cents": 1, "stock": 1,
        "sale_starts_at_ms": now - 2 * HOUR_MS, "sale_ends_at_ms": now - HOUR_MS });
    let ended = create_with(&app, &admin, window).await;
    let sold = app.create_product(1, true).await;

    assert_eq!(app.buy(&buyer, sold, "key-1").await.0, 201);

    assert_eq!(get_json(&app, &product_path(ended)).await.1["sale_state"], "ended");
    let (_, detail) = get_json(&app, &product_path(sold)).await;
    assert_eq!(detail["sale_state"], "sold_out");
    assert_eq!(detail["remaining"], 0);
}

#[tokio::test]
async fn invalid_product_bodies_get_a_4xx_problem_and_never_a_500() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let create = app.url("/api/v1/products");
    let update = app.url(&product_path(product));
    let restock = app.url(&format!("{}/restock", product_path(product)));
    let valid = json!({ "name": "ok", "price_cents": 1, "stock": 1 });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let cases: Vec<(&str, String, u16)> = vec![
        (&create, "{\"name\": \"x\",".to_owned(), 400),
        (&create, "[]".to_owned(), 422),
        (&create, with("price_cents", json!("100")), 422),
        (&create, with("stock", json!(1.5)), 422),
        (&create, with("stock", json!(0)), 422),
        (&create, with("stock", json!(MAX_STOCK + 1)), 422),
        (&create, with("stock", json!(1e30)), 422),
        (&create, with("price_cents", json!(-1)), 422),
        (&create, with("price_cents", json!(100_000_001)), 422),
        (&create, with("name", json!("")), 422),
        (&create, with("name", json!("n".repeat(201))), 422),
        (&create, with("description", json!("d".repeat(5001))), 422),
        (&create, with("admin", json!(true)), 422),
        (&create, with("stock_total", json!(5)), 422),
        (&create, with("sale_ends_at_ms", json!(0)), 422),
        (&create, with("sale_starts_at_ms", json!(-5)), 422),
        (
            &create,
            json!({ "name": "w", "price_cents": 1, "stock": 1, "sale_starts_at_ms": 10, "sale_ends_at_ms": 10 })
                .to_string(),
            422,
        ),
        (&create, json!({ "price_cents": 1, "stock": 1 }).to_string(), 422),
        (&update, "{}".to_owned(), 422),
        (&update, json!({ "stock": 9 }).to_string(), 422),
        (&update, json!({ "name": null }).to_string(), 422),
        (&update, json!({ "name": "n".repeat(201) }).to_string(), 422),
        (&update, json!({ "description": "d".repeat(5001) }).to_string(), 422),
        (&update, json!({ "price_cents": -1 }).to_string(), 422),
        (&update, json!({ "sale_ends_at_ms": "soon" }).to_string(), 422),
        (&update, "not json".to_owned(), 400),
        (&update, json!({ "sale_starts_at_ms": 20, "sale_ends_at_ms": 10 }).to_string(), 422),
        (&restock, json!({ "quantity": 0 }).to_string(), 422),
        (&restock, json!({ "quantity": -3 }).to_string(), 422),
        (&restock, json!({ "quantity": 1, "extra": 1 }).to_string(), 422),
        (&restock, json!({}).to_string(), 422),
    ];
    for (url, body, expected) in cases {
        let request = if url == update { admin.put(url) } else { admin.post(url) };
        let request = request.header("content-type", "application/json").body(body.clone());
        let (status, content_type, problem) = send(request).await;
        assert_eq!(status.as_u16(), expected, "{url} {body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{body}");
    }
    let (status, _, _) = send(admin.put(app.url("/api/v1/products/not-a-uuid")).json(&json!({ "name": "x" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(get_json(&app, "/api/v1/products/not-a-uuid").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get_json(&app, &product_path(Uuid::new_v4())).await.0, StatusCode::NOT_FOUND);
    let (_, detail) = get_json(&app, &product_path(product)).await;
    assert_eq!((detail["name"].clone(), detail["stock_total"].clone()), (json!("Limited sneaker"), json!(3)));
}

#[tokio::test]
async fn live_stock_in_the_detail_is_never_served_from_the_cache() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(get_json(&app, &product_path(product)).await.1["remaining"], 5);
    assert_eq!(app.buy(&buyer, product, "key-1").await.0, 201);
    let hits = app.app().metrics.product_cache_hits.get();

    let (_, detail) = get_json(&app, &product_path(product)).await;

    assert_eq!(app.app().metrics.product_cache_hits.get(), hits + 1, "the document came from the cache");
    assert_eq!(detail["remaining"], 4);
}

#[tokio::test]
async fn reads_still_serve_from_mongodb_when_redis_is_down() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    let product = app.create_product(3, true).await;
    app.own.as_mut().expect("own backends").redis.kill();

    let (status, detail) = get_json(&app, &product_path(product)).await;
    let (list_status, page) = get_json(&app, "/api/v1/products").await;

    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["name"], "Limited sneaker");
    assert!(detail["remaining"].is_null(), "unknown live stock is null: {detail}");
    assert_eq!(list_status, StatusCode::OK, "{page}");
    assert_eq!(item_ids(&page), vec![product.to_string()]);
}
