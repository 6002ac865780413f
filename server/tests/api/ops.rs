//! Operational behaviour: health, readiness, metrics, OpenAPI, request ids, and the
//! refusal to start on a Redis that may evict keys.

use flashsale::clock::Ids;
use flashsale_stack::{FerretDb, RedisPersistence, RedisServer};

use crate::helpers::{TestApp, test_config};

#[tokio::test]
async fn health_and_readiness_answer_when_both_backends_do() {
    let app = TestApp::spawn().await;
    let health = app.client().get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value =
        app.client().get(app.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready, serde_json::json!({ "redis": true, "mongo": true }));
}

#[tokio::test]
async fn every_answer_is_nosniff_and_personal_or_live_ones_are_never_stored_by_a_cache() {
    let app = TestApp::spawn().await;
    let product = app.create_product(2, true).await;
    let (buyer, _) = app.verified_buyer(flashsale::db::records::Role::Buyer).await;
    let requests = [
        buyer.get(app.url("/api/v1/user/profile")),
        buyer.get(app.url(&format!("/api/v1/products/{product}"))),
        buyer.get(app.url("/api/v1/products")),
        buyer.post(app.url(&format!("/api/v1/user/buy/{product}"))).header("idempotency-key", "h"),
        app.client()
            .post(app.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": "a@b.co", "password": "wrong-password"})),
        app.client().post(app.url("/api/v1/auth/verify-otp")).json(&serde_json::json!({"code": "000000"})),
        app.client().get(app.url("/api/v1/no-such-route")),
        app.client().get(app.url("/healthz")),
    ];
    for request in requests {
        let response = request.send().await.expect("request");
        let (status, url) = (response.status(), response.url().path().to_owned());
        let headers = response.headers();
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{status} {url}"
        );
        assert_eq!(headers.get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]), "{status} {url}");
    }
}

#[tokio::test]
async fn event_streams_past_the_bound_are_refused_with_a_problem_and_the_open_ones_go_on() {
    let app = TestApp::spawn_with(|config| config.max_event_streams = 2).await;
    let first = reqwest::Client::new().get(app.url("/api/v1/events")).send().await.expect("sse");
    let second = reqwest::Client::new().get(app.url("/api/v1/events")).send().await.expect("sse");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));

    let third = reqwest::Client::new().get(app.url("/api/v1/events")).send().await.expect("sse");
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    assert!(third.headers().contains_key("retry-after"));
    let problem: serde_json::Value = third.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/too-many-connections", "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("event streams")), "{problem}");
    assert_eq!(app.client().get(app.url("/healthz")).send().await.expect("healthz").status(), 200);
    drop((first, second));
}

#[tokio::test]
async fn one_client_may_hold_only_its_share_of_the_event_streams() {
    let app = TestApp::spawn_with(|config| {
        config.max_event_streams = 10;
        config.max_event_streams_per_client = 2;
        config.trust_forwarded_for = true;
    })
    .await;
    let open_from = |client: &'static str| {
        let url = app.url("/api/v1/events");
        async move { reqwest::Client::new().get(url).header("x-forwarded-for", client).send().await.expect("sse") }
    };
    let first = open_from("192.0.2.1").await;
    let second = open_from("192.0.2.1").await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));

    let third = open_from("192.0.2.1").await;
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let problem: serde_json::Value = third.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/too-many-connections", "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("client address")), "{problem}");

    // Another client still gets its stream.
    let other = open_from("192.0.2.2").await;
    assert_eq!(other.status(), 200);

    // A stream closed by its client gives its place back (once the server sees the close).
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let again = open_from("192.0.2.1").await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 503);
        assert!(std::time::Instant::now() < deadline, "the closed stream's place never came back");
    }
    drop((second, other));
}

#[tokio::test]
async fn metrics_count_requests_per_route_template() {
    let app = TestApp::spawn().await;
    app.client().get(app.url("/healthz")).send().await.expect("healthz");
    let text = app.client().get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("flashsale_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
}

#[tokio::test]
async fn metrics_label_api_routes_by_template_and_odd_methods_as_other() {
    let app = TestApp::spawn().await;
    let product = uuid::Uuid::now_v7();
    let odd = reqwest::Method::from_bytes(b"BREW").expect("a method token");
    let brewed = app.client().request(odd, app.url("/healthz")).send().await.expect("brew");
    assert_eq!(brewed.status(), 405);
    assert_eq!(brewed.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    let detail = app.client().get(app.url(&format!("/api/v1/products/{product}"))).send().await.expect("detail");
    assert_eq!(detail.status(), 404);
    let text = app.client().get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let series = |method: &str, route: &str, status: u16| {
        text.lines().any(|line| {
            line.starts_with("flashsale_http_requests_total{")
                && line.contains(&format!("method=\"{method}\""))
                && line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    // A method any client may invent is one series, not one per token.
    assert!(series("other", "/healthz", 405), "{text}");
    assert!(!text.contains("BREW"), "{text}");
    // The template of the API route, with its prefix, never the product's id.
    assert!(series("GET", "/api/v1/products/{id}", 404), "{text}");
    assert!(!text.contains(&product.to_string()), "{text}");
}

#[tokio::test]
async fn the_openapi_description_is_served_and_names_the_purchase_route() {
    let app = TestApp::spawn().await;
    let spec: serde_json::Value =
        app.client().get(app.url("/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert!(spec["paths"]["/api/v1/user/buy/{product_id}"]["post"].is_object(), "{spec}");
}

#[tokio::test]
async fn the_openapi_bounds_are_the_ones_the_server_enforces() {
    use flashsale::auth::users::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
    let app = TestApp::spawn().await;
    let spec: serde_json::Value =
        app.client().get(app.url("/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    let schemas = &spec["components"]["schemas"];
    let register = &spec["paths"]["/api/v1/auth/register"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(register["schema"]["$ref"], "#/components/schemas/Registration");
    let password = &schemas["Registration"]["properties"]["password"];
    assert_eq!(password["minLength"], MIN_PASSWORD_CHARS);
    assert_eq!(password["maxLength"], MAX_PASSWORD_CHARS);
    for schema in ["CreateProduct", "UpdateProduct"] {
        let name = &schemas[schema]["properties"]["name"];
        assert_eq!(name["maxLength"], flashsale::db::records::MAX_NAME_CHARS, "{schema}");
        assert!(name["pattern"].as_str().is_some_and(|p| p.contains("\\u0000-\\u001F")), "{schema}: {name}");
    }

    // At the bounds the schema names, the server answers as it says.
    let status_of = |body: serde_json::Value| {
        let request = reqwest::Client::new().post(app.url("/api/v1/auth/register")).json(&body);
        async move { request.send().await.expect("register").status().as_u16() }
    };
    let email = || format!("{}@example.test", uuid::Uuid::new_v4().simple());
    for (chars, expected) in [
        (MIN_PASSWORD_CHARS - 1, 422),
        (MIN_PASSWORD_CHARS, 202),
        (MAX_PASSWORD_CHARS, 202),
        (MAX_PASSWORD_CHARS + 1, 422),
    ] {
        let body = serde_json::json!({ "email": email(), "password": "p".repeat(chars) });
        assert_eq!(status_of(body).await, expected, "a password of {chars} characters");
    }
    let (admin, _) = app.verified_buyer(flashsale::db::records::Role::Admin).await;
    let create = |price: serde_json::Value| {
        let request = admin
            .post(app.url("/api/v1/products"))
            .json(&serde_json::json!({"name": "n", "price_cents": price, "stock": 1.0}));
        async move { request.send().await.expect("create").status().as_u16() }
    };
    assert_eq!(create(serde_json::json!(100.0)).await, 201, "a whole number written with a fraction");
    assert_eq!(create(serde_json::json!(2.5)).await, 422, "not a whole number");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let response = app.client().get(app.url("/healthz")).send().await.expect("healthz");
    assert!(response.headers().get("x-request-id").is_some());
}

/// `CONFIG SET maxmemory-policy <policy>` on a test's own Redis.
async fn set_eviction_policy(conn: &mut impl redis::aio::ConnectionLike, policy: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query_async(conn)
        .await
        .expect("config set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_as_a_problem_once_redis_is_switched_to_an_evicting_policy_at_runtime() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    set_eviction_policy(&mut app.redis(), "allkeys-lru").await;
    let response = app.client().get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(response.headers().contains_key("retry-after"));
    let problem: serde_json::Value = response.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/not-ready");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("allkeys-lru")), "{problem}");

    set_eviction_policy(&mut app.redis(), "noeviction").await;
    let ready = app.client().get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_probe_passes_on_a_ready_server_and_fails_once_it_is_not_ready() {
    use flashsale::http::healthcheck::{ProbeError, check, readiness_url};
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    let url = readiness_url(app.server.addr);
    let timeout = std::time::Duration::from_secs(5);
    assert_eq!(check(&url, timeout).await.expect("a ready server is healthy"), 200);

    set_eviction_policy(&mut app.redis(), "allkeys-lru").await;
    let error = check(&url, timeout).await.expect_err("a server that is not ready is unhealthy");
    assert!(matches!(error, ProbeError::Unhealthy { status: 503, .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_on_a_redis_that_may_evict_keys() {
    let (redis, mongo) = tokio::task::spawn_blocking(|| {
        (RedisServer::start(RedisPersistence::None).expect("redis"), FerretDb::start().expect("ferretdb"))
    })
    .await
    .expect("backends");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");
    set_eviction_policy(&mut conn, "allkeys-lru").await;

    let refused = flashsale::startup::build_state(test_config(&redis.url(), &mongo.url()), Ids::system()).await;
    let message = format!("{:?}", refused.expect_err("must refuse to start"));
    assert!(message.contains("noeviction"), "{message}");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut conn)
        .await
        .expect("config set");
    assert!(flashsale::startup::build_state(test_config(&redis.url(), &mongo.url()), Ids::system()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_without_mongodb() {
    let redis = tokio::task::spawn_blocking(|| RedisServer::start(RedisPersistence::None).expect("redis"))
        .await
        .expect("backend");
    let closed_port = flashsale_stack::free_port().expect("port");
    let mut config = test_config(&redis.url(), &format!("mongodb://127.0.0.1:{closed_port}/"));
    config.mongo_select_timeout_ms = 300;

    let refused = flashsale::startup::build_state(config, Ids::system()).await;

    assert!(refused.is_err(), "no indexes, no service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_completes_while_an_event_stream_is_open() {
    let app = TestApp::spawn().await;
    let mut events = reqwest::Client::new().get(app.url("/api/v1/events")).send().await.expect("sse");
    assert_eq!(events.status(), 200);

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), app.server.stop()).await;

    assert!(matches!(stopped, Ok(Ok(()))), "shutdown must not wait forever on a stream: {stopped:?}");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ends at shutdown");
}
