//! The means of the cost sweeps: a closed loop of a fixed number of requests, orders and
//! products written straight into MongoDB and Redis through the server crate, Redis memory
//! figures, and server instances beside the target's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::db::records::{OrderDoc, OrderStatus, Product, UnitField};
use flashsale::redis::scripts::{self, LoadMode, SaleSnapshot};
use flashsale::sale::rebuild::REBUILD_LEASE_MS;
use flashsale::startup::{RunningServer, build_state};
use flashsale::state::{App, AppState};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::buyers::Buyer;
use crate::hgrm::percentile_summary;
use crate::openloop::new_latency_histogram;
use crate::target::Target;
use crate::wire;

/// Orders written per `insert_many` while seeding a product.
pub const ORDER_BATCH: usize = 1_000;
/// Closed-loop workers of every HTTP measure (as the baselines').
pub const CONCURRENCY: usize = 32;
/// How long an extra server instance may take to drain when the run ends.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Worker threads of each extra server instance (as the target's).
const INSTANCE_WORKERS: usize = crate::target::SERVER_WORKERS;

/// What a fixed number of requests measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    pub requests: usize,
    pub rate_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Answers other than the one the path should give.
    pub unexpected: usize,
}

/// Sends `requests` requests from `concurrency` workers, each waiting for its answer;
/// `send(index)` sends one and says whether its answer was the expected one. Every request
/// is timed, the first included: the cost of the first answers is part of the figure.
pub async fn fixed_count<F, Fut>(requests: usize, concurrency: usize, send: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, requests.max(1)))
        .map(|_| {
            let (send, next) = (Arc::clone(&send), Arc::clone(&next));
            tokio::spawn(async move {
                let (mut latency, mut unexpected) = (new_latency_histogram(), 0_usize);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= requests {
                        break;
                    }
                    let sent = Instant::now();
                    if !send(index).await {
                        unexpected += 1;
                    }
                    latency.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                (latency, unexpected)
            })
        })
        .collect();
    let (mut latency, mut unexpected) = (new_latency_histogram(), 0);
    for worker in workers {
        match worker.await {
            Ok((histogram, count)) => {
                // Same bounds on both sides: `add` can only fail on a count overflow.
                let _ = latency.add(&histogram);
                unexpected += count;
            }
            Err(_) => unexpected += 1,
        }
    }
    figures_of(&latency, unexpected, started.elapsed())
}

/// The figures of a latency histogram gathered over `elapsed`.
pub fn figures_of(latency: &Histogram<u64>, unexpected: usize, elapsed: Duration) -> Figures {
    let summary = percentile_summary(latency);
    let requests = usize::try_from(summary.count).unwrap_or(usize::MAX);
    let seconds = elapsed.as_secs_f64();
    Figures {
        requests,
        rate_per_s: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
        p50_us: summary.p50,
        p99_us: summary.p99,
        max_us: summary.max,
        unexpected,
    }
}

/// `POST /api/v1/user/buy/{product}` as `buyer`, with `key`.
pub fn buy_request(host: &str, product: Uuid, buyer: &Buyer, key: &str) -> Vec<u8> {
    let ip = buyer.ip.to_string();
    let path = format!("/api/v1/user/buy/{product}");
    wire::request("POST", &path, host, &[("cookie", &buyer.cookie), ("idempotency-key", key), ("x-forwarded-for", &ip)])
}

/// A product of `stock` units made as the create handler makes it (revision 0, document,
/// fresh sale state), without the HTTP round trip.
pub async fn new_product(app: &App, stock: usize, one_per_user: bool, name: &str) -> anyhow::Result<Uuid> {
    let product = new_product_record(app, stock, one_per_user, name).await?;
    let id = product.uuid().context("a product id")?;
    flashsale::sale::load_initial(app, id, &product).await?;
    Ok(id)
}

/// A product's revision 0 and document, without sale state: the state is loaded once its
/// orders are written ([`load_seeded`]).
pub async fn new_product_record(app: &App, stock: usize, one_per_user: bool, name: &str) -> anyhow::Result<Product> {
    let id = app.ids.new_record_id();
    let now_ms = app.ids.now_ms();
    let product = Product {
        id: id.to_string(),
        name: name.to_owned(),
        description: "A product of the cost sweeps".to_owned(),
        price_cents: 9_900,
        stock_total: i64::try_from(stock).context("stock")?,
        one_per_user,
        sale_starts_at_ms: None,
        sale_ends_at_ms: None,
        deleted: false,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        revision: 0,
    };
    flashsale::sale::product_store::insert_product(app, &product).await?;
    Ok(product)
}

/// Writes confirmed orders of units `first..=last` of a one-per-user product straight into
/// MongoDB, each of its own buyer (made-up ids: orders need no user document); returns them.
pub async fn seed_orders(app: &App, product_id: Uuid, first: usize, last: usize) -> anyhow::Result<Vec<OrderDoc>> {
    let product = product_id.to_string();
    let now_ms = app.ids.now_ms();
    let units: Vec<usize> = (first..=last).collect();
    let mut seeded = Vec::with_capacity(units.len());
    for batch in units.chunks(ORDER_BATCH) {
        let orders: Vec<OrderDoc> = batch
            .iter()
            .map(|unit| {
                let user = Uuid::new_v4().to_string();
                OrderDoc {
                    id: Uuid::new_v4().to_string(),
                    product_id: product.clone(),
                    user_id: user.clone(),
                    unit: UnitField::Unit(i64::try_from(*unit).unwrap_or(i64::MAX)),
                    buyer_slot: user,
                    status: OrderStatus::Confirmed,
                    created_at_ms: now_ms,
                }
            })
            .collect();
        let outcomes = app.db.insert_orders(&orders).await?;
        anyhow::ensure!(outcomes.iter().all(Result::is_ok), "MongoDB refused a seeded order");
        seeded.extend(orders);
    }
    Ok(seeded)
}

/// The sale state of `product` once `orders` (confirmed, units 1..=n, one buyer each) are
/// sold: what `sale::snapshot_from_mongo` makes of them, built here from the documents
/// just written instead of read back (on FerretDB's SQLite store that read scans the whole
/// orders collection, past MongoDB's operation timeout at 10⁵ orders).
pub fn seeded_snapshot(product: &Product, orders: &[OrderDoc]) -> SaleSnapshot {
    let mut snapshot = flashsale::sale::fresh_snapshot(product);
    let highest = orders.iter().filter_map(OrderDoc::unit_number).max().unwrap_or(0);
    snapshot.next_unit = highest + 1;
    snapshot.buyers = orders.iter().map(|order| (order.user_id.clone(), 1)).collect();
    snapshot.orders = orders
        .iter()
        .filter_map(|order| {
            let unit = order.unit_number()?;
            Some((order.id.clone(), format!("{}|{unit}|{}|C", order.user_id, order.created_at_ms)))
        })
        .collect();
    snapshot
}

/// Replaces the sale state of `product` by the one its seeded `orders` imply: one
/// `load_sale.lua` call under the product's rebuild lock, as a rebuild ends. (A product
/// left without sale state while its orders are written would be loaded by the server's
/// reconciler, which rebuilds any live product it finds without one.)
pub async fn load_seeded(app: &App, product: &Product, orders: &[OrderDoc]) -> anyhow::Result<()> {
    let keys = app.keys.sale(product.uuid().context("a product id")?);
    let mut conn = app.redis.clone();
    let token = app.ids.token_128();
    let fence = scripts::lock(&mut conn, &keys.rebuild_lock, &token, REBUILD_LEASE_MS)
        .await?
        .context("the product's rebuild lock is taken")?;
    let snapshot = seeded_snapshot(product, orders);
    let written = scripts::load_sale(&mut conn, &keys, LoadMode::Rebuild { fence: &fence }, &snapshot).await;
    scripts::unlock(&mut conn, &keys.rebuild_lock, &fence).await?;
    anyhow::ensure!(written?, "the product is deleted");
    Ok(())
}

/// Redis timeout of the states that load large sale states in one script call: a
/// `load_sale.lua` of 10⁵ orders takes longer than the server's own timeout.
pub const PATIENT_REDIS_TIMEOUT_MS: u64 = 60_000;

/// A state of the server crate on the target's backends with a database and key prefix of
/// its own (`suffix` appended) and no background tasks: a sweep that must not see the
/// others' documents. Its timeouts are the server's.
pub async fn scratch_app(target: &Target, suffix: &str) -> anyhow::Result<AppState> {
    build_state(scratch_config(target, suffix), Ids::system()).await.context("a scratch state")
}

/// The scratch state of `suffix` with a Redis timeout of [`PATIENT_REDIS_TIMEOUT_MS`].
pub async fn patient_scratch_app(target: &Target, suffix: &str) -> anyhow::Result<AppState> {
    let mut config = scratch_config(target, suffix);
    config.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    build_state(config, Ids::system()).await.context("a patient scratch state")
}

/// A state on the target's own database and key prefix with a Redis timeout of
/// [`PATIENT_REDIS_TIMEOUT_MS`], to load the sale states the purchase sweep measures.
pub async fn patient_app(target: &Target) -> anyhow::Result<AppState> {
    let mut config = target.server_config.clone();
    config.background_tasks = false;
    config.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    build_state(config, Ids::system()).await.context("a patient state")
}

fn scratch_config(target: &Target, suffix: &str) -> Config {
    let mut config = target.server_config.clone();
    config.mongo_database = format!("{}_{suffix}", config.mongo_database);
    config.key_prefix = format!("{}{suffix}", config.key_prefix);
    config.background_tasks = false;
    config
}

/// `used_memory` of `INFO memory`, bytes.
pub async fn used_memory(app: &App) -> anyhow::Result<u64> {
    let mut conn = app.redis.clone();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    parse_used_memory(&info).context("no used_memory in INFO memory")
}

/// The `used_memory:` field of an `INFO memory` answer.
pub fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines().find_map(|line| line.trim().strip_prefix("used_memory:")).and_then(|value| value.parse().ok())
}

/// Bytes the product's sale keys take in Redis (`MEMORY USAGE ... SAMPLES 0`: every
/// element counted), and the encoding of its orders hash.
pub async fn sale_key_bytes(app: &App, product_id: Uuid) -> anyhow::Result<(u64, String)> {
    let keys = app.keys.sale(product_id);
    let mut conn = app.redis.clone();
    let mut total = 0;
    for key in keys.script_keys() {
        let bytes: Option<u64> =
            redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0).query_async(&mut conn).await?;
        total += bytes.unwrap_or(0);
    }
    let encoding: Option<String> =
        redis::cmd("OBJECT").arg("ENCODING").arg(&keys.orders).query_async(&mut conn).await.unwrap_or(None);
    Ok((total, encoding.unwrap_or_else(|| "none".to_owned())))
}

/// The server's count of sold-out answers given by its in-process shortcut.
pub const SHORTCUT_COUNTER: &str = "flashsale_sold_out_shortcuts_total";

/// A counter of the server's `/metrics` now (0 when it is not there yet).
pub async fn metrics_counter(base_url: &str, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{base_url}/metrics")).await?.error_for_status()?.text().await?;
    Ok(parse_counter(&text, name).unwrap_or(0))
}

/// The value of counter `name` in an OpenMetrics text.
pub fn parse_counter(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        // Counters are whole numbers, far below 2^53.
        .map(|value| value as u64)
}

/// A server instance on a runtime of its own thread, on the target's backends.
pub struct Instance {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Instance {
    /// Starts an instance with `config` (its listen address is replaced by port 0).
    pub fn start(mut config: Config) -> anyhow::Result<Self> {
        config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<SocketAddr>>();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("flashsale-server-extra".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(INSTANCE_WORKERS)
                    .thread_name("flashsale-server-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let server = match RunningServer::start(config, Ids::system()).await {
                        Ok(server) => server,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.addr));
                    stop.cancelled().await;
                    let _ = tokio::time::timeout(STOP_TIMEOUT, server.stop()).await;
                });
                runtime.shutdown_timeout(STOP_TIMEOUT);
            })
            .context("spawning a server thread")?;
        let mut instance = Self { addr: SocketAddr::from(([127, 0, 0, 1], 0)), shutdown, thread: Some(thread) };
        instance.addr = ready_rx.recv().context("the server thread ended before it started")??;
        Ok(instance)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info_memory() {
        let info = "# Memory\r\nused_memory:1065432\r\nused_memory_human:1.02M\r\nused_memory_rss:7000000\r\n";
        assert_eq!(parse_used_memory(info), Some(1_065_432));
        assert_eq!(parse_used_memory("# Memory\r\nused_memory_rss:7\r\n"), None);
    }

    #[test]
    fn a_counter_is_read_from_openmetrics_text() {
        let text = "# TYPE flashsale_sold_out_shortcuts counter\nflashsale_sold_out_shortcuts_total 29968\n";
        assert_eq!(parse_counter(text, SHORTCUT_COUNTER), Some(29_968));
        assert_eq!(parse_counter("flashsale_sold_out_shortcuts_total_x 3\n", SHORTCUT_COUNTER), None);
    }

    #[test]
    fn figures_give_the_rate_over_the_elapsed_time() {
        let mut latency = new_latency_histogram();
        for micros in 1..=1_000 {
            latency.record(micros).expect("in range");
        }
        let figures = figures_of(&latency, 2, Duration::from_millis(500));
        assert_eq!(figures.requests, 1_000);
        assert!((figures.rate_per_s - 2_000.0).abs() < 1e-9);
        assert!((495..=505).contains(&figures.p50_us) && figures.max_us >= 1_000 && figures.unexpected == 2);
    }

    #[tokio::test]
    async fn a_fixed_count_sends_exactly_that_many_requests() {
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let figures = fixed_count(100, 8, move |index| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move { index % 10 != 0 }
        })
        .await;
        assert_eq!((figures.requests, figures.unexpected, sent.load(Ordering::Relaxed)), (100, 10, 100));
    }
}
