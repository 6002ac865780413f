//! Backends failing mid-sale: Redis restarted without persistence, FerretDB stopped.

use std::collections::HashSet;
use std::time::Duration;

use flashsale::redis::scripts::{self, LoadMode};
use flashsale::sale::orders;
use flashsale::sale::product_store::{self, Change};
use flashsale::sale::rebuild::{self, Rebuilt};
use flashsale_stack::RedisPersistence;
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

/// Bound of every wait for the system to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

async fn buy_with_cookie(
    app: &TestApp,
    client: &reqwest::Client,
    cookie: &str,
    product: Uuid,
    key: &str,
) -> (u16, serde_json::Value) {
    let response = client
        .post(app.url(&format!("/api/v1/user/buy/{product}")))
        .header("cookie", cookie)
        .header("idempotency-key", key)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, json_body(&response.bytes().await.expect("body")))
}

/// Retries a purchase with the same key while the answer is 503 (bounded).
async fn buy_until_settled(
    app: &TestApp,
    client: &reqwest::Client,
    cookie: &str,
    product: Uuid,
    key: &str,
) -> (u16, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (status, body) = buy_with_cookie(app, client, cookie, product, key).await;
        if status != 503 || tokio::time::Instant::now() >= deadline {
            return (status, body);
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_mid_sale_is_rebuilt_from_mongodb() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    let product = app.create_product(30, true).await;
    let client = reqwest::Client::new();
    let mut before = Vec::new();
    for index in 0..20 {
        let (user, cookie) = app.buyer_cookie().await;
        let (status, body) = buy_with_cookie(&app, &client, &cookie, product, &format!("k{index}")).await;
        assert_eq!(status, 201, "{body}");
        before.push((user, format!("k{index}"), body));
    }

    let own = app.own.as_mut().expect("own backends");
    tokio::task::block_in_place(|| own.redis.restart()).expect("redis restarts");
    // Redis lost everything: sessions too. Buyers log in again (new sessions), and the
    // first buyers retry their purchase with the same keys, on an instance that has not
    // seen their answers (this one, made to forget them) so the rebuild must give them.
    app.app().replays.clear();
    let rebuilds_before = app.app().metrics.sale_rebuilds.get();
    let mut settled = Vec::new();
    for (user, key, first_body) in &before {
        let session = relogin(&app, *user).await;
        let (status, body) = buy_until_settled(&app, &client, &session, product, key).await;
        assert_eq!(status, 201, "a replay after the rebuild returns the same order: {body}");
        assert_eq!(&body, first_body);
        settled.push(body);
    }
    assert!(app.app().metrics.sale_rebuilds.get() > rebuilds_before, "the sale was rebuilt");
    let mut sold_after = 0;
    for index in 0..20 {
        let (_, cookie) = app.buyer_cookie().await;
        let (status, body) = buy_until_settled(&app, &client, &cookie, product, &format!("late{index}")).await;
        assert!([201, 409].contains(&status), "{status} {body}");
        if status == 201 {
            sold_after += 1;
        }
    }
    assert_eq!(sold_after, 10, "exactly the units left after the first 20 are sold");

    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), 30);
    let units: HashSet<i64> = stored.iter().filter_map(|o| o.unit_number()).collect();
    assert_eq!(units.len(), 30, "no unit twice");
    let users: HashSet<&str> = stored.iter().map(|o| o.user_id.as_str()).collect();
    assert_eq!(users.len(), 30, "no user twice");
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 0);
}

/// A new verified session for an existing user, retried while Redis reconnects.
async fn relogin(app: &TestApp, user_id: Uuid) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match flashsale::auth::session::create_verified_session(app.app(), user_id).await {
            Ok(session) => return format!("{}={}", flashsale::auth::session::COOKIE_NAME, session),
            Err(err) if tokio::time::Instant::now() >= deadline => panic!("no session after the restart: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_while_ferretdb_is_down_are_pending_and_reconciled_exactly_once() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.order_write_timeout_ms = 500;
        config.mongo_select_timeout_ms = 400;
    })
    .await;
    let product = app.create_product(10, true).await;
    let client = reqwest::Client::new();
    let mut buyers = Vec::new();
    for _ in 0..8 {
        buyers.push(app.buyer_cookie().await);
    }

    tokio::task::block_in_place(|| app.own.as_mut().expect("own").mongo.kill());
    let mut pending = Vec::new();
    for (index, (_, cookie)) in buyers.iter().enumerate() {
        let (status, body) = buy_with_cookie(&app, &client, cookie, product, &format!("p{index}")).await;
        assert_eq!(status, 202, "never a 201 without MongoDB: {body}");
        assert_eq!(body["status"], "pending");
        pending.push(body["order_id"].as_str().expect("order id").to_owned());
    }
    // A retry while MongoDB is still down finds its reservation pending: still 202, the
    // same order, never a 201 that MongoDB has not acknowledged.
    let (status, body) = buy_with_cookie(&app, &client, &buyers[0].1, product, "p0").await;
    assert_eq!(status, 202, "a pending order retried without MongoDB: {body}");
    assert_eq!(body["order_id"], pending[0].as_str());

    tokio::task::block_in_place(|| app.own.as_mut().expect("own").mongo.restart()).expect("ferretdb restarts");
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let stored = loop {
        let stored = orders::orders_of_product(app.app(), product).await.unwrap_or_default();
        if stored.len() >= pending.len() || tokio::time::Instant::now() >= deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stored_ids: Vec<&str> = stored.iter().map(|o| o.id.as_str()).collect();
    let unique: HashSet<&str> = stored_ids.iter().copied().collect();
    assert_eq!(stored_ids.len(), unique.len(), "each pending order persisted exactly once");
    assert_eq!(unique, pending.iter().map(String::as_str).collect::<HashSet<_>>());

    // A retry of a pending purchase now gets the confirmed order.
    let (status, body) = buy_with_cookie(&app, &client, &buyers[0].1, product, "p0").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["order_id"], pending[0].as_str());
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_paused_purchases_fail_closed_and_resume_afterwards() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.redis_timeout_ms = 300;
    })
    .await;
    let product = app.create_product(5, true).await;
    let (_, cookie) = app.buyer_cookie().await;
    let client = reqwest::Client::new();

    app.own.as_ref().expect("own").redis.pause();
    let started = tokio::time::Instant::now();
    let (status, body) = buy_with_cookie(&app, &client, &cookie, product, "paused").await;
    let waited = started.elapsed();
    app.own.as_ref().expect("own").redis.resume();

    assert_eq!(status, 503, "fail closed, never open: {body}");
    assert_eq!(body["type"], "/problems/unavailable");
    assert!(waited < Duration::from_secs(10), "bounded by the Redis timeout, took {waited:?}");
    let (status, body) = buy_until_settled(&app, &client, &cookie, product, "paused").await;
    assert_eq!(status, 201, "{body}");
    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_whose_live_step_failed_reaches_the_sale_once_redis_is_back() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.redis_timeout_ms = 300;
        // No reconciler pass in this test: the writing instance's own retries must do it.
        config.reconcile_interval_ms = 3_600_000;
    })
    .await;
    let product = app.create_product(5, true).await;
    let state = app.app();
    let redis = &app.own.as_ref().expect("own").redis;

    redis.pause();
    let revised = product_store::revise(state, product, |current| {
        let mut next = current.clone();
        next.stock_total += 3;
        Ok(Change::To(next))
    })
    .await;
    redis.resume();
    let (written, live) = revised.expect("MongoDB took the restock");
    assert_eq!(written.stock_total, 8);
    assert!(live.is_err(), "the live step failed with Redis paused");

    // Nobody reads the product, no rebuild runs: the live stock still catches up.
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match flashsale::sale::stock(state, product).await {
            Ok(Some(stock)) if stock.stock_total == 8 => break,
            other => assert!(tokio::time::Instant::now() < deadline, "the live stock never caught up: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_mid_sale_is_rebuilt_from_mongodb_without_a_second_order() {
    let app = TestApp::spawn().await;
    let product = app.create_product(3, true).await;
    let client = reqwest::Client::new();
    let (first_user, first_cookie) = app.buyer_cookie().await;
    let (status, first_body) = buy_with_cookie(&app, &client, &first_cookie, product, "before").await;
    assert_eq!(status, 201, "{first_body}");

    // The shared Redis holds other tests' keys: remove only this test's (its prefix),
    // which is what FLUSHALL does to one deployment.
    let mut conn = app.app().redis.clone();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", app.app().keys.prefix())).query_async(&mut conn).await.expect("keys");
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("del");
    // The retry goes to an instance that has not seen the answer (this one, made to forget it).
    app.app().replays.clear();

    let session = relogin(&app, first_user).await;
    let (status, body) = buy_until_settled(&app, &client, &session, product, "before").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, first_body, "the retry names the same order and unit");
    let (status, body) = buy_until_settled(&app, &client, &session, product, "careless").await;
    assert_eq!(status, 409, "one per user survives the data loss: {body}");
    assert_eq!(body["type"], "/problems/already-purchased");
    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), 1);
    let stock = flashsale::sale::stock(app.app(), product).await.expect("redis").expect("loaded");
    assert_eq!(stock.remaining(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_lock_restored_by_a_redis_restart_is_taken_over_and_its_holder_fenced_off() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::AppendOnly, |_| {}).await;
    let product = app.create_product(5, true).await;
    let keys = app.app().keys.sale(product);
    let mut conn = app.app().redis.clone();
    let lease = flashsale::sale::rebuild::REBUILD_LEASE_MS;
    let before = scripts::lock(&mut conn, &keys.rebuild_lock, "before", lease).await.expect("lock").expect("free");
    assert_eq!(scripts::lock(&mut conn, &keys.rebuild_lock, "other", lease).await.expect("lock"), None, "held");

    let own = app.own.as_mut().expect("own backends");
    tokio::task::block_in_place(|| own.redis.restart()).expect("redis restarts");
    let mut conn = reconnected(&app).await;
    let restored: Option<String> = redis::cmd("GET").arg(&keys.rebuild_lock).query_async(&mut conn).await.expect("get");
    assert_eq!(restored.as_deref(), Some(before.as_str()), "the append-only file kept the lock");

    let after = scripts::lock(&mut conn, &keys.rebuild_lock, "after", lease).await.expect("lock");
    let after = after.expect("a lock from before the restart is taken over");
    assert_ne!(after, before);
    assert_eq!(scripts::lock(&mut conn, &keys.rebuild_lock, "third", lease).await.expect("lock"), None);
    // The earlier holder, still running, can neither pause, nor load, nor unlock.
    assert!(scripts::pause(&mut conn, &keys, &before).await.is_err());
    let snapshot = flashsale::sale::fresh_snapshot(
        &flashsale::sale::product_store::find_product(app.app(), product).await.expect("mongo").expect("product"),
    );
    let stale = scripts::load_sale(&mut conn, &keys, LoadMode::Rebuild { fence: &before }, &snapshot).await;
    assert!(stale.is_err(), "a fenced-off holder does not overwrite the sale state");
    assert!(!scripts::unlock(&mut conn, &keys.rebuild_lock, &before).await.expect("unlock"));
    assert!(scripts::pause(&mut conn, &keys, &after).await.expect("pause"));
    let fresh = scripts::load_sale(&mut conn, &keys, LoadMode::Rebuild { fence: &after }, &snapshot).await;
    assert!(fresh.expect("the holder loads"));
    assert!(scripts::unlock(&mut conn, &keys.rebuild_lock, &after).await.expect("unlock"));
}

/// A connection that answers again after a restart (bounded).
async fn reconnected(app: &TestApp) -> flashsale::redis::RedisConn {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let mut conn = app.app().redis.clone();
    loop {
        match flashsale::redis::run_id(&mut conn).await {
            Ok(_) => return conn,
            Err(err) if tokio::time::Instant::now() >= deadline => panic!("Redis did not come back: {err}"),
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_goes_on_when_the_request_that_started_it_gives_up() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    let product = app.create_product(5, true).await;
    let state = app.app();
    let started = state.rebuilds.generation();
    // A rebuild waits out the order write timeout first: 50 ms in, it is midway.
    let abandoned = tokio::time::timeout(Duration::from_millis(50), rebuild::rebuild_and_wait(state, product)).await;
    assert!(abandoned.is_err(), "the caller gave up before the rebuild ended");
    assert_eq!(state.rebuilds.generation(), started + 1, "one rebuild started");
    let flight = state.rebuilds.start(state, product, 0).expect("start");
    assert_eq!(state.rebuilds.generation(), started + 1, "the abandoned rebuild still runs: joined, not restarted");
    assert_eq!(flight.await, Ok(Rebuilt::Done));
    assert!(rebuild::settled(state, product).await.expect("redis"), "loaded and not paused");
    assert_eq!(state.metrics.sale_rebuilds.get(), 1);
}

/// A rebuild whose MongoDB reads meet a silent MongoDB (FerretDB stopped: its connections
/// stay open and nothing answers) gives each read up at the rebuild's step bound and reads
/// again, instead of waiting out the operation bound, and finishes once MongoDB answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_up_a_stalled_mongodb_read_at_its_step_bound_and_reads_again() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        // Past the rebuild's own bound: a rebuild that waited out one stalled operation
        // would fail, and would count no read made again.
        config.mongo_op_timeout_ms = 30_000;
        config.order_write_timeout_ms = 200;
    })
    .await;
    let product = app.create_product(5, true).await;
    let client = reqwest::Client::new();
    for index in 0..3 {
        let (_, cookie) = app.buyer_cookie().await;
        let (status, body) = buy_with_cookie(&app, &client, &cookie, product, &format!("k{index}")).await;
        assert_eq!(status, 201, "{body}");
    }
    let state = app.app();
    let ferretdb = &app.own.as_ref().expect("own backends").mongo;
    ferretdb.pause();
    let flight = state.rebuilds.start(state, product, 0).expect("start");
    // Two reads given up while MongoDB is silent: the step bound, not the operation
    // bound, ends each (two, so the first is not a stall that ended some other way).
    let deadline = tokio::time::Instant::now() + rebuild::REBUILD_TIMEOUT;
    while state.metrics.rebuild_read_retries.get() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no rebuild read was given up and made again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ferretdb.resume();
    assert_eq!(flight.await, Ok(Rebuilt::Done));
    let stock = flashsale::sale::stock(state, product).await.expect("redis").expect("loaded");
    assert_eq!((stock.next_unit, stock.free_count, stock.paused), (4, 0, false), "the three orders were read back");
    assert_eq!(state.metrics.sale_rebuilds.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sell_out_a_session_seen_here_is_told_sold_out_without_redis() {
    let app = TestApp::spawn_with_own_backends(RedisPersistence::None, |config| {
        config.redis_timeout_ms = 300;
    })
    .await;
    tokio::time::timeout(SETTLE_TIMEOUT, app.app().events.wait_subscribed()).await.expect("subscribed");
    let product = app.create_product(1, true).await;
    let client = reqwest::Client::new();
    let (_, winner) = app.buyer_cookie().await;
    let (status, first) = buy_with_cookie(&app, &client, &winner, product, "w").await;
    assert_eq!(status, 201, "{first}");
    let (_, known) = app.buyer_cookie().await;
    assert_eq!(buy_with_cookie(&app, &client, &known, product, "k1").await.0, 409, "sold out, session now seen");
    let (_, stranger) = app.buyer_cookie().await;

    app.own.as_ref().expect("own").redis.pause();
    let (known_status, known_body) = buy_with_cookie(&app, &client, &known, product, "k2").await;
    let (stranger_status, stranger_body) = buy_with_cookie(&app, &client, &stranger, product, "s1").await;
    // A replay of the purchase that bought needs Redis (its stored answer): not answered sold out.
    let (replay_status, replay_body) = buy_with_cookie(&app, &client, &winner, product, "w").await;
    app.own.as_ref().expect("own").redis.resume();

    assert_eq!(known_status, 409, "answered in process: {known_body}");
    assert_eq!(known_body["type"], "/problems/sold-out");
    assert_eq!(stranger_status, 503, "a session never seen here needs Redis: {stranger_body}");
    assert_eq!(replay_status, 503, "the winner's replay is never told sold out: {replay_body}");
    let (status, replayed) = buy_with_cookie(&app, &client, &winner, product, "w").await;
    assert_eq!((status, &replayed), (201, &first), "Redis back: the stored answer");
}

/// The seed 1 regression: a burst of MongoDB operations, most of them given up at their
/// bound while queued for a connection. Given up in the driver's wait queue, each stayed
/// there, and the driver serves that queue one request per event (500 ms apart when
/// idle): for minutes afterwards every operation timed out behind the abandoned ones.
/// Queued on `Db`'s gate instead, they leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_given_up_in_a_burst_leave_the_mongodb_pool_serving() {
    const POOL: u32 = 2;
    const BURST: usize = 10_000;
    const ATTEMPTS: usize = 5;
    let shared = tokio::task::spawn_blocking(crate::helpers::shared_backends).await.expect("backends");
    let name = format!("t{}", Uuid::new_v4().simple());
    let op_timeout = Duration::from_millis(500);
    let db = flashsale::db::Db::connect(&shared.mongo_url(), &name, Duration::from_secs(2), op_timeout, POOL)
        .await
        .expect("connect");
    let find = || db.find_user_by_email("nobody@example.test");
    find().await.expect("a warm pool answers");

    let burst = futures::future::join_all((0..BURST).map(|_| find())).await;
    let gave_up = burst.iter().filter(|result| result.is_err()).count();
    assert!(gave_up > BURST / 2, "the burst outran the pool: {gave_up} of {BURST} gave up");

    let mut answered = None;
    for attempt in 1..=ATTEMPTS {
        if find().await.is_ok() {
            answered = Some(attempt);
            break;
        }
    }
    assert!(answered.is_some(), "after the burst, none of {ATTEMPTS} operations answered within {op_timeout:?}");
}
