//! The server on a real Redis Cluster of three masters (`stack::RedisCluster`) and a
//! FerretDB: startup checks, auth, sales whose keys live on different nodes, events
//! published on any node, and a node that restarts without its data.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use flashsale::auth::extract::Role;
use flashsale::auth::session::COOKIE_NAME;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::sale::orders;
use flashsale::startup::RunningServer;
use flashsale_stack::{FerretDb, RedisCluster, RedisClusterOptions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, json_body, test_config};

/// Bound of every wait for the cluster or the server to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const PASSWORD: &str = "a long enough passphrase";

/// A server on its own three-master cluster and FerretDB.
struct ClusterApp {
    app: TestApp,
    cluster: RedisCluster,
    _mongo: FerretDb,
}

impl ClusterApp {
    async fn spawn(adjust: impl FnOnce(&mut Config)) -> Self {
        let (cluster, mongo) = tokio::task::spawn_blocking(|| {
            let cluster = RedisCluster::start(RedisClusterOptions::default()).expect("starting the Redis Cluster");
            let mongo = FerretDb::start().expect("starting ferretdb");
            (cluster, mongo)
        })
        .await
        .expect("backends");
        let mut config = test_config(&cluster.seed_urls(), &mongo.url());
        adjust(&mut config);
        let server =
            RunningServer::start(config.clone(), Ids::system()).await.expect("the server starts on the cluster");
        let base = server.base_url();
        Self { app: TestApp { server, base, config, own: None }, cluster, _mongo: mongo }
    }

    /// The node that holds the sale keys of `product`.
    fn node_of_product(&self, product: Uuid) -> usize {
        let keys = self.app.app().keys.sale(product);
        tokio::task::block_in_place(|| {
            let node = self.cluster.node_of_key(&keys.sale).expect("CLUSTER KEYSLOT");
            for key in keys.script_keys().into_iter().chain([keys.rebuild_lock.as_str()]) {
                let slot_node = self.cluster.node_of_key(key).expect("CLUSTER KEYSLOT");
                assert_eq!(slot_node, node, "every key of a sale shares its slot: {key}");
            }
            node
        })
    }

    /// A plain connection to one node, bypassing the cluster client.
    async fn node_connection(&self, node: usize) -> redis::aio::MultiplexedConnection {
        let url = format!("redis://127.0.0.1:{}", self.cluster.node_ports()[node]);
        let client = redis::Client::open(url).expect("redis url");
        client.get_multiplexed_async_connection().await.expect("connection to one node")
    }

    /// Creates products until their sale keys have landed on every node; returns them
    /// with the node of each.
    async fn products_on_every_node(&self, admin: &reqwest::Client, stock: i64) -> Vec<(Uuid, usize)> {
        let mut products = Vec::new();
        let mut nodes = BTreeSet::new();
        for index in 0..40 {
            let product = create_product(&self.app, admin, &format!("Sneaker {index}"), stock).await;
            let node = self.node_of_product(product);
            nodes.insert(node);
            products.push((product, node));
            if nodes.len() == self.cluster.nodes().len() {
                return products;
            }
        }
        panic!("40 products and their sales are only on nodes {nodes:?}");
    }
}

/// One HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        json_body(&self.body)
    }

    fn session(&self) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|cookie| cookie.split(';').next())
            .find(|pair| pair.starts_with(&format!("{COOKIE_NAME}=")))
            .map(str::to_owned)
            .expect("a session cookie")
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Answer { status, headers, body }
}

/// Register, log in, read the code from the outbox stream (through the cluster
/// client), verify it: the `Cookie` header value of the verified session.
async fn registered_and_verified(app: &TestApp, email: &str) -> String {
    let http = reqwest::Client::new();
    let credentials = json!({"email": email, "password": PASSWORD});
    let registered = send(http.post(app.url("/api/v1/auth/register")).json(&credentials)).await;
    assert_eq!(registered.status, 202, "register: {}", registered.json());
    let login = send(http.post(app.url("/api/v1/auth/login")).json(&credentials)).await;
    assert_eq!(login.status, 200, "login: {}", login.json());
    let code = latest_code(app, email).await;
    let verified = send(
        http.post(app.url("/api/v1/auth/verify-otp")).header("cookie", login.session()).json(&json!({"code": code})),
    )
    .await;
    assert_eq!(verified.status, 200, "verify: {}", verified.json());
    let session = verified.session();
    let profile = send(http.get(app.url("/api/v1/user/profile")).header("cookie", &session)).await;
    assert_eq!(profile.status, 200, "profile: {}", profile.json());
    assert_eq!(profile.json()["email"], email);
    session
}

async fn latest_code(app: &TestApp, email: &str) -> String {
    let mut conn = app.app().redis.clone();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(app.app().keys.otp_outbox())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1_000)
        .query_async(&mut conn)
        .await
        .expect("XREVRANGE on the outbox");
    entries
        .into_iter()
        .filter(|(_, fields)| fields.get("email").map(String::as_str) == Some(email))
        .find_map(|(_, fields)| fields.get("code").cloned())
        .expect("a code in the outbox")
}

async fn create_product(app: &TestApp, admin: &reqwest::Client, name: &str, stock: i64) -> Uuid {
    let body = json!({
        "name": name,
        "description": "A product on the cluster",
        "price_cents": 12_900,
        "stock": stock,
        "one_per_user": true,
    });
    let created = send(admin.post(app.url("/api/v1/products")).json(&body)).await;
    assert_eq!(created.status, 201, "create product: {}", created.json());
    created.json()["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).expect("product id")
}

async fn buy(app: &TestApp, cookie: &str, product: Uuid, key: &str) -> Answer {
    let request = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/user/buy/{product}")))
        .header("cookie", cookie)
        .header("idempotency-key", key);
    send(request).await
}

/// Retries a purchase with the same key while the answer is 503 (sale paused or Redis
/// unreachable), up to [`SETTLE_TIMEOUT`].
async fn buy_until_settled(app: &TestApp, cookie: &str, product: Uuid, key: &str) -> Answer {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let answer = buy(app, cookie, product, key).await;
        if answer.status != 503 || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A new verified session for an existing user, retried while the cluster settles.
async fn relogin(app: &TestApp, user: Uuid) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match flashsale::auth::session::create_verified_session(app.app(), user).await {
            Ok(session) => return format!("{COOKIE_NAME}={session}"),
            Err(err) if tokio::time::Instant::now() >= deadline => panic!("no session on the cluster: {err:#}"),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

async fn remaining(app: &TestApp, product: Uuid) -> i64 {
    flashsale::sale::stock(app.app(), product).await.expect("stock script").expect("sale loaded").remaining()
}

/// Sells `product` (one unit per buyer) to `buyers` fresh buyers at once: the 201
/// answers (buyer, key, answer) and the statuses of the others.
async fn sell(app: &TestApp, product: Uuid, buyers: usize, tag: &str) -> (Vec<(Uuid, String, Answer)>, Vec<Answer>) {
    let mut sessions = Vec::new();
    for _ in 0..buyers {
        sessions.push(app.buyer_cookie().await);
    }
    let attempts = sessions.into_iter().enumerate().map(|(index, (user, cookie))| async move {
        let key = format!("{tag}-{index}");
        let answer = buy(app, &cookie, product, &key).await;
        (user, cookie, key, answer)
    });
    let mut bought = Vec::new();
    let mut refused = Vec::new();
    for (user, cookie, key, answer) in futures::future::join_all(attempts).await {
        if answer.status == 201 {
            let replay = buy(app, &cookie, product, &key).await;
            assert_eq!(replay.status, 201, "a replay of a purchase: {}", replay.json());
            assert_eq!(replay.body, answer.body, "a replay gives the same order, byte for byte");
            assert_eq!(replay.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
            bought.push((user, key, answer));
        } else {
            refused.push(answer);
        }
    }
    (bought, refused)
}

/// MongoDB holds `count` orders of `product`, no unit and no buyer twice.
async fn assert_orders(app: &TestApp, product: Uuid, count: usize) {
    let stored = orders::orders_of_product(app.app(), product).await.expect("orders");
    assert_eq!(stored.len(), count, "orders of {product}");
    let units: HashSet<i64> = stored.iter().filter_map(|o| o.unit_number()).collect();
    assert_eq!(units.len(), count, "no unit twice");
    let users: HashSet<&str> = stored.iter().map(|o| o.user_id.as_str()).collect();
    assert_eq!(users.len(), count, "no buyer twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_starts_on_a_cluster_only_when_every_master_is_noeviction() {
    let cluster_app = ClusterApp::spawn(|_| {}).await;
    let app = &cluster_app.app;
    assert!(app.app().redis.is_cluster(), "a seed list gives a cluster connection");
    let mut conn = app.app().redis.clone();
    let policies = flashsale::redis::eviction_policies(&mut conn).await.expect("CONFIG GET");
    assert_eq!(policies, vec!["noeviction"; 3], "the policy of every master is read");
    let ready = send(reqwest::Client::new().get(app.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "readyz: {}", String::from_utf8_lossy(&ready.body));

    // One master of three evicts: a second instance refuses to start.
    let mut node = cluster_app.node_connection(2).await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut node)
        .await
        .expect("CONFIG SET on one node");
    let config = test_config(&cluster_app.cluster.seed_urls(), &app.config.mongo_url);
    let refused = RunningServer::start(config, Ids::system()).await.map(|_| ()).expect_err("refuses to start");
    assert!(format!("{refused:#}").contains("allkeys-lru"), "{refused:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_buyers_buy_exactly_the_stock_of_products_on_different_nodes() {
    let admin_email = format!("{}@example.test", Uuid::new_v4().simple());
    let configured = admin_email.clone();
    let cluster_app = ClusterApp::spawn(move |config| config.admin_emails = vec![configured]).await;
    let app = &cluster_app.app;

    // Registration, login and OTP over HTTP, for a buyer and for an admin.
    let buyer_email = format!("{}@example.test", Uuid::new_v4().simple());
    let buyer_session = registered_and_verified(app, &buyer_email).await;
    let admin_session = registered_and_verified(app, &admin_email).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", admin_session.parse().expect("cookie header"));
    let admin = reqwest::Client::builder().default_headers(headers).build().expect("client");

    let products = cluster_app.products_on_every_node(&admin, 3).await;
    let nodes: BTreeSet<usize> = products.iter().map(|(_, node)| *node).collect();
    assert!(nodes.len() >= 2, "sales on several nodes: {products:?}");
    // Each sale's keys are on the node its slot names, and only there.
    for (product, node) in &products {
        let sale_key = app.app().keys.sale(*product).sale;
        for other in 0..cluster_app.cluster.nodes().len() {
            let mut conn = cluster_app.node_connection(other).await;
            let exists: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(&sale_key).query_async(&mut conn).await;
            match exists {
                Ok(count) => assert_eq!((other, count), (*node, 1), "{sale_key} is on node {other}"),
                Err(err) => assert_ne!(other, *node, "{sale_key} is on node {node}: {err}"),
            }
        }
    }

    // The OTP-verified buyer buys one unit of the first product.
    let (first, _) = products[0];
    let bought = buy(app, &buyer_session, first, "registered-buyer").await;
    assert_eq!(bought.status, 201, "{}", bought.json());
    assert_eq!(bought.json()["status"], "confirmed");
    assert_eq!(remaining(app, first).await, 2);

    // One product per node: five buyers at once for three units each.
    let mut per_node = BTreeSet::new();
    for (product, node) in products.iter().skip(1).filter(|(_, node)| per_node.insert(*node)) {
        let (sold, refused) = sell(app, *product, 5, &format!("n{node}")).await;
        assert_eq!(sold.len(), 3, "exactly the stock is sold on node {node}");
        for answer in &refused {
            assert_eq!(answer.status, 409, "{}", answer.json());
            assert_eq!(answer.json()["type"], "/problems/sold-out");
        }
        let units: BTreeSet<i64> = sold.iter().filter_map(|(_, _, answer)| answer.json()["unit"].as_i64()).collect();
        assert_eq!(units, BTreeSet::from([1, 2, 3]));
        assert_eq!(remaining(app, *product).await, 0);
        assert_orders(app, *product, 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_events_published_on_any_node_reach_the_subscriber_on_the_first_seed() {
    let cluster_app = ClusterApp::spawn(|_| {}).await;
    let app = &cluster_app.app;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let products = cluster_app.products_on_every_node(&admin, 1).await;
    // Sales on the nodes other than the first seed (where the subscriber listens).
    let mut elsewhere = Vec::new();
    for (product, node) in products.iter().filter(|(_, node)| *node != 0) {
        if !elsewhere.iter().any(|(_, seen)| seen == node) {
            elsewhere.push((*product, *node));
        }
    }
    assert_eq!(elsewhere.len(), 2, "{products:?}");

    let mut stream = reqwest::Client::new().get(app.url("/api/v1/events")).send().await.expect("sse");
    assert_eq!(stream.status(), 200);
    tokio::time::timeout(SETTLE_TIMEOUT, app.app().events.wait_subscribed())
        .await
        .expect("the event subscriber connects to the first seed");
    for (index, (product, _)) in elsewhere.iter().enumerate() {
        let (_, cookie) = app.buyer_cookie().await;
        let answer = buy(app, &cookie, *product, &format!("event-{index}")).await;
        assert_eq!(answer.status, 201, "{}", answer.json());
    }

    let mut seen = String::new();
    let expected: Vec<String> =
        elsewhere.iter().map(|(product, _)| format!("\"type\":\"sold_out\",\"product_id\":\"{product}\"")).collect();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while !expected.iter().all(|event| seen.contains(event)) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    for (product, node) in &elsewhere {
        let updated = format!("\"type\":\"stock_updated\",\"product_id\":\"{product}\"");
        assert!(seen.contains(&updated), "stock_updated of the sale on node {node}: {seen}");
        let sold_out = format!("\"type\":\"sold_out\",\"product_id\":\"{product}\"");
        assert!(seen.contains(&sold_out), "sold_out of the sale on node {node}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_is_rebuilt_from_mongodb_and_replays_the_same_orders() {
    let mut cluster_app = ClusterApp::spawn(|_| {}).await;
    let (admin, _) = cluster_app.app.verified_buyer(Role::Admin).await;
    let products = cluster_app.products_on_every_node(&admin, 5).await;
    // The node that will lose its data is not the first seed, so the event subscriber
    // stays connected; any node works for the sale.
    let (product, lost_node) = *products.iter().find(|(_, node)| *node != 0).expect("a sale off the first node");

    // Three buyers, one of them with its idempotency records on the node that loses its
    // data (so its retry cannot be answered from a surviving record).
    let app = &cluster_app.app;
    let mut on_lost_node = None;
    let mut others = Vec::new();
    for index in 0..64 {
        if on_lost_node.is_some() && others.len() >= 2 {
            break;
        }
        let (user, cookie) = app.buyer_cookie().await;
        let key = format!("before-{index}");
        let idem_key = app.app().keys.idempotency(user, &key);
        let idem_node = tokio::task::block_in_place(|| cluster_app.cluster.node_of_key(&idem_key)).expect("slot");
        if idem_node == lost_node && on_lost_node.is_none() {
            on_lost_node = Some((user, cookie, key));
        } else if others.len() < 2 {
            others.push((user, cookie, key));
        }
    }
    let buyers: Vec<_> = on_lost_node.into_iter().chain(others).collect();
    assert_eq!(buyers.len(), 3, "three buyers, one with records on node {lost_node}");
    let mut first_answers = Vec::new();
    for (user, cookie, key) in &buyers {
        let answer = buy(app, cookie, product, key).await;
        assert_eq!(answer.status, 201, "{}", answer.json());
        first_answers.push((*user, key.clone(), answer.body));
    }
    assert_eq!(remaining(app, product).await, 2);

    let rebuilds_before = app.app().metrics.sale_rebuilds.get();
    let cluster = &mut cluster_app.cluster;
    tokio::task::block_in_place(|| cluster.node_mut(lost_node).restart_empty()).expect("the node restarts empty");
    tokio::task::block_in_place(|| cluster.wait_healthy(SETTLE_TIMEOUT)).expect("the cluster is whole again");
    // The retries go to an instance that has not seen the answers (this one, made to forget them).
    app.app().replays.clear();
    let sale_key = app.app().keys.sale(product).sale;

    // Every earlier buyer retries with the same key (a new session: theirs may have
    // been on the lost node) and gets the same order back.
    for (user, key, first_body) in &first_answers {
        let session = relogin(app, *user).await;
        let retry = buy_until_settled(app, &session, product, key).await;
        assert_eq!(retry.status, 201, "a retry after the data loss: {}", retry.json());
        assert_eq!(json_body(&retry.body), json_body(first_body), "the same order");
    }
    assert!(app.app().metrics.sale_rebuilds.get() > rebuilds_before, "the sale was rebuilt from MongoDB");
    let mut conn = cluster_app.node_connection(lost_node).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&sale_key).query_async(&mut conn).await.expect("EXISTS");
    assert_eq!(exists, 1, "the rebuilt sale is back on its node");
    assert_eq!(remaining(app, product).await, 2, "the rebuilt stock counts the orders in MongoDB");

    // The rest of the stock sells, and no more.
    let (sold, refused) = sell(app, product, 4, "after").await;
    assert_eq!(sold.len(), 2);
    assert!(refused.iter().all(|answer| answer.status == 409), "sold out afterwards");
    assert_orders(app, product, 5).await;
    assert_eq!(remaining(app, product).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_watcher_sees_a_restart_of_any_master() {
    let mut cluster_app = ClusterApp::spawn(|_| {}).await;
    let mut conn = cluster_app.app.app().redis.clone();
    let before = flashsale::redis::run_id(&mut conn).await.expect("the run ids of the masters");
    assert_eq!(before.split(',').count(), 3, "one run id per master: {before}");
    let cluster = &mut cluster_app.cluster;
    tokio::task::block_in_place(|| cluster.node_mut(2).restart_empty()).expect("restart");
    tokio::task::block_in_place(|| cluster.wait_healthy(SETTLE_TIMEOUT)).expect("healthy");
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let after = loop {
        match flashsale::redis::run_id(&mut conn).await {
            Ok(after) => break after,
            Err(err) if tokio::time::Instant::now() >= deadline => panic!("no run ids after the restart: {err:#}"),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    };
    assert_ne!(before, after, "a restarted master changes the combined run id");
}
