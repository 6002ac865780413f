//! The purchase path over HTTP: orders, replays, one per user, keys, sell-out.

use flashsale::auth::extract::Role;
use flashsale::clock::Clock;
use flashsale::sale::orders;
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

#[tokio::test]
async fn a_verified_buyer_gets_a_confirmed_order_for_one_unit() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;

    let (status, headers, body) = app.buy(&buyer, product, "first-click").await;

    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let body = json_body(&body);
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["unit"], 1);
    let order_id = Uuid::parse_str(body["order_id"].as_str().expect("order id")).expect("uuid");
    assert_eq!(order_id, flashsale::clock::derive_order_id(user_id, "first-click"));
    assert!(headers.get("location").is_some());
    let stored = orders::find_order(app.app(), order_id).await.expect("mongo").expect("order persisted");
    assert_eq!(stored.user_id, user_id.to_string());
    assert_eq!(stored.unit_number(), Some(1));
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_answer_byte_for_byte() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;

    let (first_status, _, first_body) = app.buy(&buyer, product, "same-key").await;
    let (second_status, headers, second_body) = app.buy(&buyer, product, "same-key").await;

    assert_eq!(first_status, 201);
    assert_eq!(second_status, 201);
    assert_eq!(first_body, second_body);
    assert_eq!(headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 4, "a replay must not take a second unit");
}

#[tokio::test]
async fn an_answer_this_instance_stored_is_replayed_from_memory_past_the_rate_limit() {
    let app = TestApp::spawn_with(|config| config.limits.purchase_per_user_per_min = 1).await;
    let product = app.create_product(5, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    let (status, _, first_body) = app.buy(&buyer, product, "once").await;
    assert_eq!(status, 201);
    // Only this instance's memory holds the answer now; the limit of one purchase a
    // minute is spent.
    let mut conn = app.app().redis.clone();
    let _: i64 =
        redis::cmd("DEL").arg(app.app().keys.idempotency(user_id, "once")).query_async(&mut conn).await.expect("del");
    let from_memory = app.app().metrics.replays_from_memory.get();

    for _ in 0..3 {
        let (status, headers, body) = app.buy(&buyer, product, "once").await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, first_body);
        assert_eq!(headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    }

    assert_eq!(app.app().metrics.replays_from_memory.get(), from_memory + 3);
    assert_eq!(app.buy(&buyer, product, "another").await.0, 429, "a new attempt is still limited");
}

#[tokio::test]
async fn an_answer_read_from_redis_is_remembered_no_longer_than_its_record_lives() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(app.buy(&buyer, product, "k").await.0, 201);
    let record = app.app().keys.idempotency(user_id, "k");
    let mut conn = app.app().redis.clone();
    let _: i64 = redis::cmd("PEXPIRE").arg(&record).arg(60_000).query_async(&mut conn).await.expect("pexpire");
    app.app().replays.clear();

    let (status, headers, _) = app.buy(&buyer, product, "k").await;

    assert_eq!(status, 201);
    assert_eq!(headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let replays = &app.app().replays;
    let now_ms = app.app().ids.now_ms();
    assert!(replays.get(user_id, "k", product, now_ms + 50_000).is_some(), "remembered from the Redis read");
    assert!(replays.get(user_id, "k", product, now_ms + 60_001).is_none(), "not past the record's expiry");
    assert!(replays.get(user_id, "k", Uuid::new_v4(), now_ms).is_none(), "for its own product only");
}

#[tokio::test]
async fn a_second_purchase_by_the_same_user_with_a_new_key_is_refused() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;

    assert_eq!(app.buy(&buyer, product, "k1").await.0, 201);
    let (status, headers, body) = app.buy(&buyer, product, "k2").await;

    assert_eq!(status, 409);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(json_body(&body)["type"], "/problems/already-purchased");
}

#[tokio::test]
async fn a_key_reused_for_another_product_never_buys() {
    let app = TestApp::spawn().await;
    let first = app.create_product(5, true).await;
    let second = app.create_product(5, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;

    assert_eq!(app.buy(&buyer, first, "reused").await.0, 201);
    let (status, _, body) = app.buy(&buyer, second, "reused").await;

    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["type"], "/problems/idempotency-key-reused");
    let stock = flashsale::sale::stock(app.app(), second).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 5);
}

#[tokio::test]
async fn a_key_reused_after_its_idempotency_record_is_lost_is_still_refused_by_mongodb() {
    let app = TestApp::spawn().await;
    let first = app.create_product(5, true).await;
    let second = app.create_product(5, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(app.buy(&buyer, first, "reused").await.0, 201);
    // The record lives in another hash slot than the sale state: lose it.
    let mut conn = app.app().redis.clone();
    let _: i64 =
        redis::cmd("DEL").arg(app.app().keys.idempotency(user_id, "reused")).query_async(&mut conn).await.expect("del");

    let (status, _, body) = app.buy(&buyer, second, "reused").await;

    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let stock = flashsale::sale::stock(app.app(), second).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 5, "the unit taken for the refused order is given back");
}

/// Redis's one-per-user check comes first; MongoDB's `(product_id, buyer_slot)` index is
/// the last word. When Redis lets a second order through for a buyer MongoDB already
/// holds an order of (here Redis forgot the buyer; in a sale, a reservation in flight
/// while a rebuild read MongoDB), the answer is `already-purchased`, never a 201, and
/// no second document is stored.
#[tokio::test]
async fn a_second_order_redis_lets_through_is_refused_by_mongodb_and_answered_already_purchased() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    let (status, _, body) = app.buy(&buyer, product, "first").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    let keys = app.app().keys.sale(product);
    let mut conn = app.app().redis.clone();
    let forgot: i64 =
        redis::cmd("HDEL").arg(&keys.buyers).arg(user_id.to_string()).query_async(&mut conn).await.expect("redis");
    assert_eq!(forgot, 1, "Redis held the buyer");
    let (status, _, body) = app.buy(&buyer, product, "second").await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["type"], "/problems/already-purchased");
    let stored = orders::orders_of_product(app.app(), product).await.expect("mongo");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].id, flashsale::clock::derive_order_id(user_id, "first").to_string());
}

#[tokio::test]
async fn the_last_unit_goes_to_one_buyer_and_the_next_is_told_sold_out() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (winner, _) = app.verified_buyer(Role::Buyer).await;
    let (late, _) = app.verified_buyer(Role::Buyer).await;

    assert_eq!(app.buy(&winner, product, "w").await.0, 201);
    let (status, _, body) = app.buy(&late, product, "l").await;
    assert_eq!(status, 409);
    assert_eq!(json_body(&body)["type"], "/problems/sold-out");

    let shortcuts_before = app.app().metrics.sold_out_shortcuts.get();
    let (status, _, _) = app.buy(&late, product, "l2").await;
    assert_eq!(status, 409);
    assert_eq!(app.app().metrics.sold_out_shortcuts.get(), shortcuts_before + 1, "answered in process");
}

#[tokio::test]
async fn the_sold_out_shortcut_never_hides_a_replay_of_a_purchase_that_bought() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (winner, user_id) = app.verified_buyer(Role::Buyer).await;
    let (late, _) = app.verified_buyer(Role::Buyer).await;
    let (_, _, first_body) = app.buy(&winner, product, "w").await;
    assert_eq!(app.buy(&late, product, "l").await.0, 409);
    // Lose the stored answer, in Redis and in this instance's memory, so the replay must
    // come from the sale state.
    let mut conn = app.app().redis.clone();
    let _: i64 =
        redis::cmd("DEL").arg(app.app().keys.idempotency(user_id, "w")).query_async(&mut conn).await.expect("del");
    app.app().replays.clear();

    let (status, _, body) = app.buy(&winner, product, "w").await;

    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, first_body);
}

#[tokio::test]
async fn a_product_without_the_one_per_user_rule_sells_a_user_several_units() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, false).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;

    for key in ["a", "b", "c"] {
        assert_eq!(app.buy(&buyer, product, key).await.0, 201);
    }
    assert_eq!(app.buy(&buyer, product, "d").await.0, 409);

    let mine = orders::orders_of_user(app.app(), user_id).await.expect("orders");
    let mut units: Vec<i64> = mine.iter().filter_map(|o| o.unit_number()).collect();
    units.sort_unstable();
    assert_eq!(units, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_buyer_lists_their_orders_and_cannot_read_someone_elses() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let (other, _) = app.verified_buyer(Role::Buyer).await;
    let (_, _, body) = app.buy(&buyer, product, "mine").await;
    let order_id = json_body(&body)["order_id"].as_str().expect("id").to_owned();

    let listed: serde_json::Value =
        buyer.get(app.url("/api/v1/user/orders")).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["order_id"], order_id.as_str());

    let own = buyer.get(app.url(&format!("/api/v1/user/orders/{order_id}"))).send().await.expect("get");
    assert_eq!(own.status(), 200);
    let foreign = other.get(app.url(&format!("/api/v1/user/orders/{order_id}"))).send().await.expect("get");
    assert_eq!(foreign.status(), 404);
}

#[tokio::test]
async fn buying_an_unknown_product_is_a_not_found_problem() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;

    let (status, headers, _) = app.buy(&buyer, Uuid::new_v4(), "k").await;

    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_purchase_publishes_stock_events_to_server_sent_event_clients() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let other = app.create_product(1, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let mut events =
        reqwest::Client::new().get(app.url(&format!("/api/v1/events?product_id={product}"))).send().await.expect("sse");
    assert_eq!(events.status(), 200);
    tokio::time::timeout(std::time::Duration::from_secs(10), app.app().events.wait_subscribed())
        .await
        .expect("the event subscriber connects");
    // The other product's events come first on the instance's stream; the filter drops them.
    assert_eq!(app.buy(&buyer, other, "o").await.0, 201);
    assert_eq!(app.buy(&buyer, product, "k").await.0, 201);

    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("sold_out") && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, events.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    assert!(seen.contains("event: stock_updated"), "{seen}");
    assert!(seen.contains("event: sold_out"), "{seen}");
    assert!(!seen.contains(&other.to_string()), "only the product asked for: {seen}");
}

#[tokio::test]
async fn a_cancelled_order_gives_its_unit_and_buyer_slot_back_and_stays_burnt() {
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (_, _, body) = app.buy(&buyer, product, "first").await;
    let order_id = json_body(&body)["order_id"].as_str().expect("order id").to_owned();

    let cancel = admin.post(app.url(&format!("/api/v1/admin/orders/{order_id}/cancel"))).send().await.expect("cancel");
    assert_eq!(cancel.status(), 200);
    let again = admin.post(app.url(&format!("/api/v1/admin/orders/{order_id}/cancel"))).send().await.expect("cancel");
    assert_eq!(again.status(), 200, "cancelling twice is harmless");

    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 1, "the unit is back");
    let stored = orders::find_order(app.app(), Uuid::parse_str(&order_id).expect("uuid")).await.expect("mongo");
    assert_eq!(stored.map(|o| o.status), Some(orders::OrderStatus::Released));
    // The buyer's own views show confirmed orders only: the cancelled one is gone from both.
    let own = buyer.get(app.url(&format!("/api/v1/user/orders/{order_id}"))).send().await.expect("get");
    assert_eq!(own.status(), 404, "a cancelled order is not one of the buyer's orders");
    let listed: Vec<serde_json::Value> =
        buyer.get(app.url("/api/v1/user/orders")).send().await.expect("list").json().await.expect("json");
    assert!(listed.is_empty(), "a cancelled order is not listed: {listed:?}");
    // The burnt order id can never take a unit again; the buyer may buy anew.
    let late_insert = orders::OrderDoc::confirmed(
        &orders::Reservation {
            order_id: Uuid::parse_str(&order_id).expect("uuid"),
            product_id: product,
            user_id,
            unit: 1,
            reserved_at_ms: 0,
            one_per_user: Some(true),
        },
        true,
    );
    assert!(matches!(
        orders::persist(app.app(), &late_insert).await.expect("mongo"),
        orders::Persisted::Conflict(orders::Conflict::OrderIdTaken(_))
    ));
    let (status, _, body) = app.buy(&buyer, product, "second").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["unit"], 1);

    let (buyer_client, _) = app.verified_buyer(Role::Buyer).await;
    let forbidden =
        buyer_client.post(app.url(&format!("/api/v1/admin/orders/{order_id}/cancel"))).send().await.expect("x");
    assert_eq!(forbidden.status(), 403);
}

/// A rebuild elsewhere (the lock held, the sale paused) may have read MongoDB before the
/// cancel's tombstone and would load the order back as held: the cancel must not answer
/// 200 on that state. It answers 503 while the rebuild runs, and once the rebuild is
/// gone (here abandoned: the lock free, the sale still paused) it rebuilds and releases
/// on the state it loaded.
#[tokio::test]
async fn a_cancel_during_a_rebuild_answers_only_once_the_release_is_final() {
    use flashsale::redis::scripts;
    let app = TestApp::spawn().await;
    let product = app.create_product(1, true).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (_, _, body) = app.buy(&buyer, product, "first").await;
    let order_id = json_body(&body)["order_id"].as_str().expect("order id").to_owned();

    let keys = app.app().keys.sale(product);
    let mut conn = app.app().redis.clone();
    let fence = scripts::lock(&mut conn, &keys.rebuild_lock, "another-instance", 60_000)
        .await
        .expect("redis")
        .expect("the lock is free");
    assert!(scripts::pause(&mut conn, &keys, &fence).await.expect("redis"));
    let cancel_url = app.url(&format!("/api/v1/admin/orders/{order_id}/cancel"));
    let paused = admin.post(cancel_url.clone()).send().await.expect("cancel");
    assert_eq!(paused.status(), 503, "a release on a sale being rebuilt is not final");
    assert_eq!(
        json_body(&paused.bytes().await.expect("body"))["type"].as_str().map(|t| t.ends_with("sale-paused")),
        Some(true)
    );
    let stored = orders::find_order(app.app(), Uuid::parse_str(&order_id).expect("uuid")).await.expect("mongo");
    assert_eq!(stored.map(|o| o.status), Some(orders::OrderStatus::Released), "MongoDB's step is done");

    assert!(scripts::unlock(&mut conn, &keys.rebuild_lock, &fence).await.expect("redis"));
    let done = admin.post(cancel_url).send().await.expect("cancel");
    assert_eq!(done.status(), 200);
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert!(!stock.paused, "the cancel's rebuild finished");
    assert_eq!(stock.remaining(), 1, "the unit is back");
}

/// Another instance's sold-out shortcut answers from the sessions it has seen, before
/// any Redis round trip, so a session logged out elsewhere still gets the sold-out
/// answer there (it authorises nothing). Once that instance reads the session and finds
/// it gone, it forgets it: from then on the session gets 401 there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_an_instance_finds_gone_is_no_longer_answered_by_its_sold_out_shortcut() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let product = app.create_product(1, true).await;
    let (winner, _) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(app.buy(&winner, product, "w").await.0, 201);
    // A plain client and the cookie as a header: logout's clearing cookie must not take it away.
    let (_, cookie) = app.buyer_cookie().await;
    let client = reqwest::Client::new();
    let on_second = |method: reqwest::Method, path: String, key: &'static str| {
        client
            .request(method, format!("{}{path}", second.base_url()))
            .header(reqwest::header::COOKIE, &cookie)
            .header("idempotency-key", key)
            .send()
    };
    let buy = format!("/api/v1/user/buy/{product}");
    assert_eq!(on_second(reqwest::Method::POST, buy.clone(), "a").await.expect("buy").status(), 409);
    assert_eq!(second.app.known_sessions.len(), 1, "the second instance has seen the session");

    let logout = client.post(app.url("/api/v1/auth/logout")).header(reqwest::header::COOKIE, &cookie).send();
    assert_eq!(logout.await.expect("logout").status(), 204);
    assert_eq!(on_second(reqwest::Method::POST, buy.clone(), "b").await.expect("buy").status(), 409, "the shortcut");
    let profile = on_second(reqwest::Method::GET, "/api/v1/user/profile".into(), "c").await.expect("profile");
    assert_eq!(profile.status(), 401, "the second instance reads the session and finds it gone");
    assert_eq!(on_second(reqwest::Method::POST, buy, "d").await.expect("buy").status(), 401, "and forgets it");
    second.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_after_sell_out_reopens_the_sale_on_every_instance() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let product = app.create_product(1, true).await;
    let (winner, _) = app.verified_buyer(Role::Buyer).await;
    let (late, _) = app.verified_buyer(Role::Buyer).await;
    let (other, _) = app.verified_buyer(Role::Buyer).await;
    assert_eq!(app.buy(&winner, product, "w").await.0, 201);
    assert_eq!(app.buy(&late, product, "l").await.0, 409);
    let second_buy = |client: reqwest::Client, key: &'static str| {
        let url = format!("{}/api/v1/user/buy/{product}", second.base_url());
        async move { client.post(url).header("idempotency-key", key).send().await.expect("buy").status().as_u16() }
    };
    assert_eq!(second_buy(other.clone(), "o").await, 409);
    assert!(app.app().sold_out.check(product, Uuid::new_v4()) == flashsale::sale::sold_out::Shortcut::SoldOut);

    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let mut second_events = second.app.events.subscribe();
    let restock = admin
        .post(app.url(&format!("/api/v1/products/{product}/restock")))
        .json(&serde_json::json!({ "quantity": 2 }))
        .send()
        .await
        .expect("restock");
    assert_eq!(restock.status(), 200);

    // The instance that restocked forgets the sell-out at once.
    assert_eq!(app.buy(&late, product, "l2").await.0, 201);
    // The other instance forgets it when the stock event reaches it: the subscriber
    // applies an event to the shortcut before handing it on, so seeing it is enough.
    let reopened = units_back(&mut second_events, product).await;
    assert!(reopened.is_ok(), "the second instance never saw the restock");
    assert_eq!(second_buy(other, "o2").await, 201);
    second.stop().await.expect("stop");
}

/// A rebuild that frees a unit (here a cancellation whose MongoDB step ran and whose
/// Redis step never did) tells every instance: one that remembered the product sold
/// out sells the unit again. Before, only the rebuilding instance forgot the sell-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_a_rebuild_frees_reopens_the_sale_on_every_instance() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let product = app.create_product(1, true).await;
    let (winner, _) = app.verified_buyer(Role::Buyer).await;
    let (other, _) = app.verified_buyer(Role::Buyer).await;
    let (_, _, body) = app.buy(&winner, product, "w").await;
    let order_id = json_body(&body)["order_id"].as_str().expect("order id").to_owned();
    let second_buy = |client: reqwest::Client, key: &'static str| {
        let url = format!("{}/api/v1/user/buy/{product}", second.base_url());
        async move { client.post(url).header("idempotency-key", key).send().await.expect("buy").status().as_u16() }
    };
    assert_eq!(second_buy(other.clone(), "o").await, 409);
    assert!(second.app.sold_out.check(product, Uuid::new_v4()) == flashsale::sale::sold_out::Shortcut::SoldOut);

    let mut second_events = second.app.events.subscribe();
    assert!(app.app().db.release_order(&order_id).await.expect("mongo"), "the order becomes a tombstone");
    let rebuilt = flashsale::sale::rebuild::rebuild_and_wait(app.app(), product).await.expect("rebuild");
    assert_eq!(rebuilt, flashsale::sale::rebuild::Rebuilt::Done);
    let reopened = units_back(&mut second_events, product).await;
    assert!(reopened.is_ok(), "the second instance never heard of the unit the rebuild freed");
    assert_eq!(second_buy(other, "o2").await, 201, "the freed unit is sold on the other instance");
    second.stop().await.expect("stop");
}

#[tokio::test]
async fn a_request_whose_key_is_still_in_flight_gets_409_naming_its_order() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    let order_id = flashsale::clock::derive_order_id(user_id, "busy");
    // Another request holds the key (its lease is live).
    let held = flashsale::purchase::idempotency::begin(app.app(), user_id, "busy", product, order_id).await;
    assert!(matches!(held, Ok(flashsale::purchase::idempotency::Begin::Proceed(_))));

    let (status, _, body) = app.buy(&buyer, product, "busy").await;

    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let body = json_body(&body);
    assert_eq!(body["type"], "/problems/idempotency-in-flight");
    assert_eq!(body["order_id"], order_id.to_string().as_str());
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 5);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_user() {
    let app = TestApp::spawn().await;
    let product = app.create_product(5, true).await;
    let (first, _) = app.verified_buyer(Role::Buyer).await;
    let (second, _) = app.verified_buyer(Role::Buyer).await;

    let (status_a, _, body_a) = app.buy(&first, product, "shared-key").await;
    let (status_b, _, body_b) = app.buy(&second, product, "shared-key").await;

    assert_eq!((status_a, status_b), (201, 201));
    assert_ne!(json_body(&body_a)["order_id"], json_body(&body_b)["order_id"]);
}

#[tokio::test]
async fn a_buyer_past_the_purchase_limit_gets_429_with_retry_after_and_ratelimit_fields() {
    let app = TestApp::spawn_with(|config| config.limits.purchase_per_user_per_min = 2).await;
    let product = app.create_product(5, true).await;
    let (bot, _) = app.verified_buyer(Role::Buyer).await;

    let mut statuses = Vec::new();
    let mut limited = None;
    for attempt in 0..4 {
        let (status, headers, body) = app.buy(&bot, product, &format!("bot-{attempt}")).await;
        statuses.push(status);
        if status == 429 {
            limited = Some((headers, json_body(&body)));
        }
    }

    assert_eq!(&statuses[..2], &[201, 409], "{statuses:?}");
    let (headers, body) = limited.expect("the limit answers 429");
    assert_eq!(body["type"], "/problems/rate-limited");
    assert!(headers.get("retry-after").is_some());
    assert!(headers.get("ratelimit-policy").is_some_and(|v| v.to_str().unwrap_or("").contains("q=2")));
    assert!(headers.get("ratelimit").is_some());
    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), 1, "never an extra unit");
}

/// A clock that moves one millisecond on every reading, so that two readings taken in
/// one request always differ.
struct TickingClock(std::sync::atomic::AtomicI64);

impl Clock for TickingClock {
    fn now_ms(&self) -> i64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn an_order_is_stored_with_its_reservation_time_whoever_writes_it() {
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.listen_addr = "127.0.0.1:0".parse().expect("address");
    let start_ms = flashsale::clock::SystemClock.now_ms();
    let ids = flashsale::clock::Ids::new(
        std::sync::Arc::new(TickingClock(start_ms.into())),
        std::sync::Arc::new(flashsale::clock::OsEntropy),
    );
    let ticking = flashsale::startup::RunningServer::start(config, ids).await.expect("ticking instance");
    let product = app.create_product(3, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;

    let url = format!("{}/api/v1/user/buy/{product}", ticking.base_url());
    let response = buyer.post(url).header("idempotency-key", "timed").send().await.expect("buy");
    assert_eq!(response.status(), 201);

    // The reservation record the script wrote: "user|unit|reserved_at_ms|state".
    let order_id = flashsale::clock::derive_order_id(user_id, "timed");
    let mut redis = app.redis();
    let record: String = redis::cmd("HGET")
        .arg(app.app().keys.sale(product).orders)
        .arg(order_id.to_string())
        .query_async(&mut redis)
        .await
        .expect("the reservation record");
    let reserved_at_ms: i64 = record.split('|').nth(2).and_then(|at| at.parse().ok()).expect("reserved_at_ms");
    let stored = orders::find_order(app.app(), order_id).await.expect("mongo").expect("order persisted");
    assert_eq!(stored.created_at_ms, reserved_at_ms, "the order document keeps the reservation's time");
}

/// The reconciler leaves a pending reservation to its request while it is younger than
/// the grace: the request is still writing its order, and a second writer would only
/// race it. Past the grace the reservation is the reconciler's.
#[tokio::test]
async fn the_reconciler_leaves_a_reservation_younger_than_its_grace_to_its_request() {
    use flashsale::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
    use flashsale::sale::{product_store, reconciler};

    let app = TestApp::spawn_with(|config| config.background_tasks = false).await;
    let state = app.app();
    let product = app.create_product(5, true).await;
    let (_, buyer) = app.verified_buyer(Role::Buyer).await;
    let channel = state.keys.events_channel();
    let mut conn = state.redis.clone();
    let order_id = flashsale::clock::derive_order_id(buyer, "young");
    let args =
        PurchaseArgs { order_id, user_id: buyer, product_id: product, now_ms: state.ids.now_ms(), channel: &channel };
    let outcome = scripts::purchase(&mut conn, &state.keys.sale(product), &args).await.expect("purchase script");
    assert!(matches!(outcome, PurchaseOutcome::Reserved { .. }), "{outcome:?}");
    let current = product_store::head(state, product).await.expect("mongo").expect("product");

    let pass = reconciler::reconcile_product(state, product, &current, 60_000, usize::MAX).await.expect("pass");
    assert_eq!(pass.settled, 0, "{pass:?}");
    assert!(orders::find_order(state, order_id).await.expect("mongo").is_none(), "younger than the grace");

    let pass =
        reconciler::reconcile_product(state, product, &current, reconciler::ANY_AGE, usize::MAX).await.expect("pass");
    assert_eq!(pass.settled, 1, "{pass:?}");
    assert!(orders::find_order(state, order_id).await.expect("mongo").is_some(), "past it: persisted");
}

/// A reservation whose unit MongoDB holds for another order (Redis handed that unit out
/// twice after losing data) is dropped from the sale and waits in Redis for a fresh unit,
/// not in the memory of the pass that found it: when the rebuild that was to reissue it
/// never ran (its instance died, or it failed), a later pass rebuilds, the reservation is
/// reissued under the same order id, and the order is persisted with a fresh unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_unit_mongodb_holds_gets_a_fresh_unit_when_the_rebuild_that_owed_it_never_ran() {
    use flashsale::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
    use flashsale::sale::orders::{OrderDoc, OrderStatus, Reservation};
    use flashsale::sale::{product_store, reconciler};

    let app = TestApp::spawn_with(|config| {
        config.background_tasks = false;
        config.reconcile_grace_ms = 0;
    })
    .await;
    let state = app.app();
    let product = app.create_product(5, true).await;
    let (_, buyer) = app.verified_buyer(Role::Buyer).await;
    let (_, other) = app.verified_buyer(Role::Buyer).await;
    let keys = state.keys.sale(product);
    let channel = state.keys.events_channel();
    let mut conn = state.redis.clone();
    // The buyer's request reserved unit 1 and its order write failed (a 202).
    let order_id = flashsale::clock::derive_order_id(buyer, "pending");
    let args =
        PurchaseArgs { order_id, user_id: buyer, product_id: product, now_ms: state.ids.now_ms(), channel: &channel };
    let outcome = scripts::purchase(&mut conn, &keys, &args).await.expect("purchase script");
    assert!(matches!(outcome, PurchaseOutcome::Reserved { unit: 1, .. }), "{outcome:?}");
    // MongoDB holds unit 1 for another buyer's order.
    let taken = Reservation {
        order_id: flashsale::clock::derive_order_id(other, "earlier"),
        product_id: product,
        user_id: other,
        unit: 1,
        reserved_at_ms: state.ids.now_ms(),
        one_per_user: Some(true),
    };
    state.db.insert_order(&OrderDoc::confirmed(&taken, true)).await.expect("insert");

    // The pass that finds the conflict; the rebuild it would start never runs.
    let current = product_store::head(state, product).await.expect("mongo").expect("product");
    let pass = reconciler::reconcile_product(state, product, &current, reconciler::ANY_AGE, usize::MAX)
        .await
        .expect("reconciler pass");
    assert_eq!(pass.conflicts, 1, "{pass:?}");
    assert!(orders::find_order(state, order_id).await.expect("mongo").is_none(), "not persisted on a taken unit");
    let live = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert_eq!(live.reissue_waiting, 1, "the request waits in Redis for a fresh unit");

    // A later pass (any instance) rebuilds, which reissues it; a pass after that persists it
    // if the first did not.
    reconciler::run_pass(state).await.expect("reconciler pass");
    reconciler::run_pass(state).await.expect("reconciler pass");

    let stored = orders::find_order(state, order_id).await.expect("mongo").expect("persisted with a fresh unit");
    assert_eq!(stored.status, OrderStatus::Confirmed);
    assert_eq!(stored.user_id, buyer.to_string());
    assert!(
        stored.unit_number().is_some_and(|unit| unit != 1),
        "a fresh unit, not the one MongoDB holds for the other order: {stored:?}"
    );
    let live = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert_eq!(live.reissue_waiting, 0, "nothing left waiting");
    assert!(!live.paused);
    assert_eq!(state.metrics.reissued_reservations.get(), 1);
}

/// The reconciler is the backstop of a cancellation whose Redis step never ran (Redis
/// failed after MongoDB's tombstone, and the administrator gave up): a reservation still
/// pending whose order MongoDB holds as released is released in Redis (its unit and
/// buyer slot given back, its id a tombstone there too), never left pending nor confirmed.
#[tokio::test]
async fn the_reconciler_releases_a_pending_reservation_whose_order_mongodb_holds_as_released() {
    use flashsale::redis::scripts::{self, PurchaseArgs, PurchaseOutcome};
    use flashsale::sale::orders::{OrderDoc, OrderStatus, Reservation};
    use flashsale::sale::{product_store, reconciler};

    let app = TestApp::spawn_with(|config| {
        config.background_tasks = false;
        config.reconcile_grace_ms = 0;
    })
    .await;
    let state = app.app();
    let product = app.create_product(2, true).await;
    let (buyer, user_id) = app.verified_buyer(Role::Buyer).await;
    let keys = state.keys.sale(product);
    let channel = state.keys.events_channel();
    let mut conn = state.redis.clone();
    // The order was reserved and written to MongoDB; its confirmation in Redis never ran.
    let order_id = flashsale::clock::derive_order_id(user_id, "cancelled");
    let now_ms = state.ids.now_ms();
    let args = PurchaseArgs { order_id, user_id, product_id: product, now_ms, channel: &channel };
    let outcome = scripts::purchase(&mut conn, &keys, &args).await.expect("purchase script");
    assert!(matches!(outcome, PurchaseOutcome::Reserved { unit: 1, .. }), "{outcome:?}");
    let reservation = Reservation {
        order_id,
        product_id: product,
        user_id,
        unit: 1,
        reserved_at_ms: now_ms,
        one_per_user: Some(true),
    };
    state.db.insert_order(&OrderDoc::confirmed(&reservation, true)).await.expect("insert");
    // An administrator cancelled it: MongoDB's step ran, Redis's did not.
    assert!(state.db.release_order(&order_id.to_string()).await.expect("mongo"));

    let current = product_store::head(state, product).await.expect("mongo").expect("product");
    let pass = reconciler::reconcile_product(state, product, &current, reconciler::ANY_AGE, usize::MAX)
        .await
        .expect("reconciler pass");
    assert_eq!((pass.settled, pass.conflicts), (1, 0), "{pass:?}");

    let live = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert_eq!(live.remaining(), 2, "the unit is back");
    let held: Option<String> =
        redis::cmd("HGET").arg(&keys.orders).arg(order_id.to_string()).query_async(&mut conn).await.expect("redis");
    assert_eq!(held, None, "no reservation left, pending or confirmed");
    let stored = orders::find_order(state, order_id).await.expect("mongo").expect("the tombstone");
    assert_eq!(stored.status, OrderStatus::Released);
    // The buyer slot is free again and the cancelled key stays burnt.
    let (status, _, body) = app.buy(&buyer, product, "cancelled").await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["type"], "/problems/order-released");
    let (status, _, body) = app.buy(&buyer, product, "again").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// A rebuild whose instance died leaves the sale paused with its lock to run out. With
/// no purchase coming to start another rebuild, the reconciler's pass is what resumes
/// it; while the lock stands, the pass leaves the rebuild to its holder.
#[tokio::test]
async fn the_reconciler_rebuilds_a_sale_an_abandoned_rebuild_left_paused() {
    use flashsale::redis::scripts;
    use flashsale::sale::reconciler;

    let app = TestApp::spawn_with(|config| {
        config.background_tasks = false;
    })
    .await;
    let state = app.app();
    let product = app.create_product(2, true).await;
    let (first, _) = app.verified_buyer(Role::Buyer).await;
    let (status, _, body) = app.buy(&first, product, "first").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    let keys = state.keys.sale(product);
    let mut conn = state.redis.clone();
    let fence = scripts::lock(&mut conn, &keys.rebuild_lock, "a-dying-instance", 60_000)
        .await
        .expect("redis")
        .expect("the lock is free");
    assert!(scripts::pause(&mut conn, &keys, &fence).await.expect("redis"));

    reconciler::run_pass(state).await.expect("reconciler pass");
    let live = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert!(live.paused, "the holder's lock stands: its rebuild is left to it");

    // The holder dies; its lease runs out (released here rather than waited for).
    assert!(scripts::unlock(&mut conn, &keys.rebuild_lock, &fence).await.expect("redis"));
    reconciler::run_pass(state).await.expect("reconciler pass");
    let live = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert!(!live.paused, "the pass rebuilt the abandoned sale");
    assert_eq!(live.remaining(), 1, "rebuilt from MongoDB: one order, one unit left");

    let (second, _) = app.verified_buyer(Role::Buyer).await;
    let (status, _, body) = app.buy(&second, product, "second").await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["unit"], 2);
}

/// Waits (at most 10 s) for a stock event of `product` with units left: the subscriber
/// applies an event to the sold-out shortcut before handing it on, so once one is seen
/// the instance has forgotten the sell-out.
async fn units_back(
    events: &mut tokio::sync::broadcast::Receiver<flashsale::events::SaleEvent>,
    product: Uuid,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(event) if event.product_id == product && event.remaining.is_some_and(|left| left > 0) => break,
                Ok(_) => continue,
                Err(err) => panic!("event stream ended: {err}"),
            }
        }
    })
    .await
}
