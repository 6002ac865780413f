//! Baselines measured side by side in one invocation, alternating, several repetitions:
//! the physical limits the purchase path is compared with, on the same machine at the
//! same moment (ratios hold across machines; absolute figures do not).
//!
//! - `evalsha`: `redis-benchmark` running EVALSHA of the project's own `purchase.lua`
//!   on a sold-out sale (the same keys, arguments and path as the server's call);
//! - `healthz`: `GET /healthz` of the same server (HTTP and the framework, no backend);
//! - `sold_out`, `replay`, `winner`: `POST /api/v1/user/buy/{id}` on its three paths;
//!   around `winner`, the server's group-commit counters (`/metrics`) give the mean
//!   number of orders one `insert_many` carried;
//! - `mongo_insert`: raw `insert_one` of an order-sized document into MongoDB, the
//!   floor under the winner path without group commit;
//! - `mongo_insert_many`: raw unordered `insert_many` of order-sized documents at the
//!   batch size the winner path reached in the same repetition (its rate in documents
//!   per second): the floor under the winner path with group commit.
//!
//! The HTTP and MongoDB measures use this crate's closed-loop driver ([`closed_loop`]:
//! `CONCURRENCY` workers, each waiting for its answer). HTTP goes through the bare driver
//! of [`crate::wire`] (requests as bytes on kept-alive connections), the cheapest client
//! that still speaks HTTP, as `redis-benchmark` is for Redis; its own CPU cost per request
//! is measured from the load generator's threads (`/proc/self/task`).
//!
//! Each side of a ratio gives its driver the same threads: `redis-benchmark` drives Redis
//! from one thread unless told `--threads`, so the HTTP measures run on a runtime of their
//! own with as many workers ([`DEFAULT_DRIVER_THREADS`], `--driver-threads`). One is also
//! the setting that favours the raw side here: `redis-benchmark --threads 2` was slower
//! than its default on two cores, which would flatter every ratio. The open-loop runs,
//! compared with no other driver, get a worker per core: the sold-out path at fractions
//! of its closed-loop rate, and the winner path at [`WINNER_OPEN_LOOP_FRACTION`] of its own.

mod group_commits;
mod mongo;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use flashsale::redis::scripts::PURCHASE_SOURCE;
use flashsale::state::App;
use serde::Serialize;
use uuid::Uuid;

use crate::buyers::Buyer;
use crate::hgrm::percentile_summary;
use crate::openloop::{self, OpenLoopConfig, closed_loop};
use crate::wire::{self, WireClient};

pub use group_commits::{GroupCommits, MAX_INSERT_MANY_BATCH};
pub use mongo::BASELINE_COLLECTION;

/// Threads both drivers run on unless told otherwise: `redis-benchmark`'s default.
pub const DEFAULT_DRIVER_THREADS: usize = 1;
/// Most driver threads accepted.
pub const MAX_DRIVER_THREADS: usize = 64;
/// Closed-loop workers of each HTTP and MongoDB measure.
pub const CONCURRENCY: usize = 32;
/// Connections of `redis-benchmark`.
pub const REDIS_BENCHMARK_CLIENTS: usize = 32;
/// Requests of one `redis-benchmark` repetition.
pub const REDIS_BENCHMARK_REQUESTS: usize = 100_000;
/// Length of one closed-loop measure, and of its unrecorded start.
pub const MEASURE: Duration = Duration::from_secs(3);
pub const WARMUP: Duration = Duration::from_millis(300);
/// Fractions of the sold-out capacity the open-loop latency runs at.
pub const OPEN_LOOP_FRACTIONS: [f64; 4] = [0.25, 0.50, 0.75, 0.90];
/// Length of one open-loop run and its unrecorded start.
pub const OPEN_LOOP_RUN: Duration = Duration::from_secs(4);
pub const OPEN_LOOP_WARMUP: Duration = Duration::from_millis(500);
/// Lanes (kept-alive connections, one request in flight each) of the open-loop runs: at the
/// sold-out path's sub-millisecond answers a lane is idle most of the time, so a stall shows
/// as queueing on its own lane and not as a driver that ran out of connections.
pub const OPEN_LOOP_LANES: usize = 64;
/// How late an open-loop lane may send a request before it drops (and counts) it instead.
pub const OPEN_LOOP_MAX_LAG: Duration = Duration::from_secs(1);
/// Longest wait for the server's `/metrics` around the winner measure.
pub const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// Fraction of the winner path's own closed-loop rate its open-loop run goes at.
pub const WINNER_OPEN_LOOP_FRACTION: f64 = 0.5;
/// p99 each path should stay under in the open loop at half its capacity.
pub const SOLD_OUT_P99_TARGET: Duration = Duration::from_millis(10);
pub const WINNER_P99_TARGET: Duration = Duration::from_millis(50);
/// What each ratio to a physical limit should reach.
pub const SOLD_OUT_TO_EVALSHA_TARGET: f64 = 1.0;
pub const REPLAY_TO_EVALSHA_TARGET: f64 = 0.5;
pub const WINNER_TO_INSERT_TARGET: f64 = 3.0;
pub const WINNER_TO_INSERT_MANY_TARGET: f64 = 0.5;
/// Names of the ratios, as the report and `summary.json` give them.
pub const RATIO_SOLD_OUT_TO_EVALSHA: &str = "sold-out path ÷ raw EVALSHA";
pub const RATIO_REPLAY_TO_EVALSHA: &str = "replay path ÷ raw EVALSHA";
pub const RATIO_WINNER_TO_INSERT: &str = "winner path ÷ raw MongoDB insert";
pub const RATIO_WINNER_TO_INSERT_MANY: &str = "winner path ÷ raw MongoDB insert_many (same batch size)";

/// What one baseline measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Evalsha,
    Healthz,
    SoldOut,
    Replay,
    Winner,
    MongoInsert,
    MongoInsertMany,
}

impl Measure {
    /// In the order they run: `mongo_insert_many` after `winner`, whose batch size it takes.
    pub const ALL: [Self; 7] = [
        Self::Evalsha,
        Self::Healthz,
        Self::SoldOut,
        Self::Replay,
        Self::Winner,
        Self::MongoInsert,
        Self::MongoInsertMany,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Self::Evalsha => "redis-benchmark: EVALSHA purchase.lua on a sold-out sale",
            Self::Healthz => "GET /healthz",
            Self::SoldOut => "POST buy, sold-out path",
            Self::Replay => "POST buy, replay of a stored 201",
            Self::Winner => "POST buy, winner path (reserve, MongoDB insert, confirm)",
            Self::MongoInsert => "MongoDB insert_one of an order document",
            Self::MongoInsertMany => "MongoDB unordered insert_many of order documents at the winner's batch size",
        }
    }

    /// The name `summary.json` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Evalsha => "evalsha",
            Self::Healthz => "healthz",
            Self::SoldOut => "sold_out",
            Self::Replay => "replay",
            Self::Winner => "winner",
            Self::MongoInsert => "mongo_insert",
            Self::MongoInsertMany => "mongo_insert_many",
        }
    }
}

/// One repetition of one measure.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub measure: Measure,
    pub repetition: usize,
    pub rate_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Answers other than the one the path should give.
    pub unexpected: u64,
    /// Orders per MongoDB write: for `winner`, the mean over its group commits (`None`
    /// when it made none); for `mongo_insert_many`, the documents of each call; 1 for
    /// `mongo_insert`; `None` for the rest.
    pub documents_per_write: Option<f64>,
    /// For `winner`: the group commits over the measure and the orders they carried.
    pub group_commits: Option<GroupCommits>,
}

/// Median and range of a figure over the repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Some(Self { median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }
}

/// A ratio of two measures, per repetition (each pair measured minutes apart at most).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub spread: Spread,
    /// What it should reach, if anything (the target of the load generator's issue).
    pub target: Option<f64>,
}

/// An open-loop run of one path at a fraction of its capacity.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopPoint {
    /// `sold_out` or `winner`.
    pub path: Measure,
    pub fraction: f64,
    pub rate_per_s: f64,
    pub achieved_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub dropped: u64,
    pub unexpected: u64,
}

/// The winner path's open-loop run, and the units of its product around it (the run
/// must never sell the product out, or its answers would stop being the winner path's).
#[derive(Debug, Clone, Serialize)]
pub struct WinnerOpenLoop {
    pub point: OpenLoopPoint,
    pub units_left_before: i64,
    pub units_left_after: i64,
}

/// Everything the baselines measured.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    pub repetitions: usize,
    pub samples: Vec<Sample>,
    pub rates: BTreeMap<Measure, Spread>,
    pub ratios: Vec<Ratio>,
    pub open_loop: Vec<OpenLoopPoint>,
    /// The winner path at [`WINNER_OPEN_LOOP_FRACTION`] of its own closed-loop rate.
    pub winner_open_loop: Option<WinnerOpenLoop>,
    /// CPU time the load generator's own threads spent per `/healthz` request, µs.
    pub driver_cpu_us_per_request: Option<f64>,
    /// Threads of each driver (`redis-benchmark` and the HTTP driver).
    pub driver_threads: usize,
    /// Threads of the open-loop driver.
    pub open_loop_threads: usize,
}

/// What the baselines run against.
pub struct Setup {
    pub base_url: String,
    /// `host:port` of Redis (for `redis-benchmark`).
    pub redis_addr: (String, u16),
    pub admin: Arc<App>,
    /// A product sold out by `replay_buyer` with `replay_key`.
    pub sold_out_product: Uuid,
    pub replay_buyer: Buyer,
    pub replay_key: String,
    /// A product without the one-per-user rule and a large stock.
    pub winner_product: Uuid,
    pub buyers: Vec<Buyer>,
    /// Threads of each driver (`redis-benchmark` and the HTTP driver), 1..=[`MAX_DRIVER_THREADS`].
    pub driver_threads: usize,
}

/// The runtime the HTTP measures are driven from: `threads` workers of its own, so the
/// HTTP driver has the threads `redis-benchmark` has and no more. Its connections are made
/// on it, and every request is sent from it.
struct Driver {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Driver {
    fn start(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.clamp(1, MAX_DRIVER_THREADS))
            .thread_name("loadgen-driver")
            .enable_all()
            .build()
            .context("starting the driver's runtime")?;
        Ok(Self { runtime: Some(runtime) })
    }

    /// A driver of `threads` workers and its client of the server at `base_url`, whose
    /// connections are made on the driver's runtime.
    async fn connect(threads: usize, base_url: &str) -> anyhow::Result<(Self, Arc<WireClient>)> {
        let driver = Self::start(threads)?;
        let base_url = base_url.to_owned();
        let http = driver.run(async move { WireClient::new(&base_url).await }).await??;
        Ok((driver, Arc::new(http)))
    }

    /// Runs `work` on the driver's threads and waits for it from the caller's.
    async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> anyhow::Result<T> {
        let runtime = self.runtime.as_ref().context("the driver has stopped")?;
        runtime.spawn(work).await.context("a driver task failed")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropped from async code, where a blocking shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs every measure `repetitions` times, alternating, then the open-loop runs.
pub async fn run(setup: &Setup, repetitions: usize, progress: impl Fn(&str)) -> anyhow::Result<Baselines> {
    anyhow::ensure!(
        (1..=MAX_DRIVER_THREADS).contains(&setup.driver_threads),
        "driver threads must be 1 to {MAX_DRIVER_THREADS}, not {}",
        setup.driver_threads
    );
    let (driver, http) = Driver::connect(setup.driver_threads, &setup.base_url).await?;
    let sha = load_script(&setup.admin).await?;
    let metrics_client = reqwest::Client::builder().timeout(METRICS_TIMEOUT).build().context("a /metrics client")?;
    let mut samples = Vec::new();
    let mut driver_cpu = Vec::new();
    for repetition in 1..=repetitions {
        // The winner's batch size of this repetition, for the raw insert_many after it.
        let mut batch = 1;
        for measure in Measure::ALL {
            let label = match measure {
                Measure::MongoInsertMany => format!("{} ({batch} per call)", measure.describe()),
                _ => measure.describe().to_owned(),
            };
            progress(&format!("baseline {repetition}/{repetitions}: {label}"));
            let before = loadgen_cpu_ticks();
            let sample = match measure {
                Measure::Evalsha => evalsha(setup, &sha, repetition).await?,
                Measure::MongoInsert => mongo::insert_one(setup, repetition).await,
                Measure::MongoInsertMany => mongo::insert_many(setup, repetition, batch).await,
                Measure::Winner => {
                    let sample = winner_measure(setup, &driver, &http, &metrics_client, repetition).await?;
                    batch = sample.group_commits.map_or(1, GroupCommits::batch_size);
                    sample
                }
                _ => http_measure(setup, &driver, &http, measure, repetition).await?,
            };
            if measure == Measure::Healthz {
                if let (Some(before), Some(after)) = (before, loadgen_cpu_ticks()) {
                    let requests = sample.rate_per_s * (MEASURE - WARMUP).as_secs_f64();
                    if requests > 0.0 {
                        driver_cpu.push((after - before) as f64 * 1e6 / ticks_per_second() / requests);
                    }
                }
            }
            samples.push(sample);
        }
    }
    let rates = rates_of(&samples);
    let ratios = ratios_of(&samples, repetitions);
    // Latency is compared with no other driver: the open loop gets a worker per core, so
    // that the scheduler switching one driver thread out does not stall every lane at once.
    drop(http);
    drop(driver);
    let open_loop_threads = open_loop_driver_threads();
    let (open_loop, winner_open_loop) = open_loop_runs(setup, open_loop_threads, &rates, &progress).await?;
    Ok(Baselines {
        repetitions,
        samples,
        rates,
        ratios,
        open_loop,
        winner_open_loop,
        driver_cpu_us_per_request: Spread::of(&driver_cpu).map(|s| s.median),
        driver_threads: setup.driver_threads,
        open_loop_threads,
    })
}

/// The winner measure, with the server's group commits over it (counter deltas, warmup
/// included: every request of the measure has its answer before the second reading).
async fn winner_measure(
    setup: &Setup,
    driver: &Driver,
    http: &Arc<WireClient>,
    metrics_client: &reqwest::Client,
    repetition: usize,
) -> anyhow::Result<Sample> {
    let before = group_commits::read(metrics_client, &setup.base_url).await?;
    let mut sample = http_measure(setup, driver, http, Measure::Winner, repetition).await?;
    let commits = group_commits::read(metrics_client, &setup.base_url).await?.since(before);
    sample.documents_per_write = commits.mean_batch();
    sample.group_commits = Some(commits);
    Ok(sample)
}

/// The open-loop runs on a driver of `threads` workers: the sold-out path at each of
/// [`OPEN_LOOP_FRACTIONS`] of its median rate, then the winner path at
/// [`WINNER_OPEN_LOOP_FRACTION`] of its own (if it answered at all).
async fn open_loop_runs(
    setup: &Setup,
    threads: usize,
    rates: &BTreeMap<Measure, Spread>,
    progress: &impl Fn(&str),
) -> anyhow::Result<(Vec<OpenLoopPoint>, Option<WinnerOpenLoop>)> {
    let (driver, http) = Driver::connect(threads, &setup.base_url).await?;
    let capacity = rates.get(&Measure::SoldOut).map_or(0.0, |s| s.median);
    let mut open_loop = Vec::new();
    for fraction in OPEN_LOOP_FRACTIONS {
        progress(&format!("open loop at {:.0}% of the sold-out capacity ({capacity:.0}/s)", fraction * 100.0));
        open_loop.push(open_loop_point(setup, &driver, &http, Measure::SoldOut, capacity * fraction, fraction).await?);
    }
    let winner_capacity = rates.get(&Measure::Winner).map_or(0.0, |s| s.median);
    if winner_capacity <= 0.0 {
        return Ok((open_loop, None));
    }
    progress(&format!(
        "open loop of the winner path at {:.0}% of its capacity ({winner_capacity:.0}/s)",
        WINNER_OPEN_LOOP_FRACTION * 100.0
    ));
    Ok((open_loop, Some(winner_open_loop(setup, &driver, &http, winner_capacity).await?)))
}

/// Median and range of each measure's rate over the repetitions.
fn rates_of(samples: &[Sample]) -> BTreeMap<Measure, Spread> {
    Measure::ALL
        .iter()
        .filter_map(|m| {
            let values: Vec<f64> = samples.iter().filter(|s| s.measure == *m).map(|s| s.rate_per_s).collect();
            Spread::of(&values).map(|spread| (*m, spread))
        })
        .collect()
}

/// Each ratio, taken per repetition (its two measures ran seconds apart), as median and range.
fn ratios_of(samples: &[Sample], repetitions: usize) -> Vec<Ratio> {
    let ratio = |name: &str, top: Measure, bottom: Measure, target: Option<f64>| {
        let values: Vec<f64> = (1..=repetitions)
            .filter_map(|rep| {
                let rate = |m| samples.iter().find(|s| s.measure == m && s.repetition == rep).map(|s| s.rate_per_s);
                Some(rate(top)? / rate(bottom)?)
            })
            .collect();
        Spread::of(&values).map(|spread| Ratio { name: name.to_owned(), spread, target })
    };
    [
        ratio(RATIO_SOLD_OUT_TO_EVALSHA, Measure::SoldOut, Measure::Evalsha, Some(SOLD_OUT_TO_EVALSHA_TARGET)),
        ratio(RATIO_REPLAY_TO_EVALSHA, Measure::Replay, Measure::Evalsha, Some(REPLAY_TO_EVALSHA_TARGET)),
        ratio(RATIO_WINNER_TO_INSERT, Measure::Winner, Measure::MongoInsert, Some(WINNER_TO_INSERT_TARGET)),
        ratio(
            RATIO_WINNER_TO_INSERT_MANY,
            Measure::Winner,
            Measure::MongoInsertMany,
            Some(WINNER_TO_INSERT_MANY_TARGET),
        ),
        ratio("sold-out path ÷ /healthz", Measure::SoldOut, Measure::Healthz, None),
        ratio("replay path ÷ /healthz", Measure::Replay, Measure::Healthz, None),
        ratio("winner path ÷ /healthz", Measure::Winner, Measure::Healthz, None),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Threads of the open-loop driver: one per core the process may use.
fn open_loop_driver_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(MAX_DRIVER_THREADS)
}

async fn load_script(app: &App) -> anyhow::Result<String> {
    let mut conn = app.redis.clone();
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(PURCHASE_SOURCE)
        .query_async(&mut conn)
        .await
        .context("SCRIPT LOAD purchase.lua")
}

async fn evalsha(setup: &Setup, sha: &str, repetition: usize) -> anyhow::Result<Sample> {
    let keys = setup.admin.keys.sale(setup.sold_out_product);
    let channel = setup.admin.keys.events_channel();
    let (host, port) = setup.redis_addr.clone();
    let mut args: Vec<String> = vec![
        "-h".into(),
        host,
        "-p".into(),
        port.to_string(),
        "-c".into(),
        REDIS_BENCHMARK_CLIENTS.to_string(),
        "-n".into(),
        REDIS_BENCHMARK_REQUESTS.to_string(),
        "-r".into(),
        "1000000000".into(),
        "--csv".into(),
    ];
    // One thread is its default; `--threads 1` would switch it to its threaded mode.
    if setup.driver_threads > 1 {
        args.extend(["--threads".to_owned(), setup.driver_threads.to_string()]);
    }
    args.extend(["EVALSHA".into(), sha.to_owned(), "6".into()]);
    args.extend(keys.script_keys().iter().map(|k| (*k).to_owned()));
    // A new order id per call (as buyers send), the same user, product and channel.
    args.extend([
        "00000000-0000-0000-0000-__rand_int__".to_owned(),
        Uuid::nil().to_string(),
        "0".to_owned(),
        channel,
        setup.sold_out_product.to_string(),
    ]);
    let output = tokio::task::spawn_blocking(move || Command::new("redis-benchmark").args(&args).output())
        .await?
        .context("running redis-benchmark (Debian's redis-tools, installed with redis-server)")?;
    anyhow::ensure!(output.status.success(), "redis-benchmark failed: {}", String::from_utf8_lossy(&output.stderr));
    let (rate, p50_ms, p99_ms) = parse_redis_benchmark_csv(&String::from_utf8_lossy(&output.stdout))?;
    Ok(Sample {
        measure: Measure::Evalsha,
        repetition,
        rate_per_s: rate,
        p50_us: (p50_ms * 1000.0) as u64,
        p99_us: (p99_ms * 1000.0) as u64,
        unexpected: 0,
        documents_per_write: None,
        group_commits: None,
    })
}

/// rps, p50 and p99 (ms) from `redis-benchmark --csv`.
pub fn parse_redis_benchmark_csv(text: &str) -> anyhow::Result<(f64, f64, f64)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> =
        lines.next().context("no CSV header")?.split(',').map(|f| f.trim_matches('"').to_owned()).collect();
    let row: Vec<String> =
        lines.next().context("no CSV row")?.split(',').map(|f| f.trim_matches('"').to_owned()).collect();
    let field = |name: &str| -> anyhow::Result<f64> {
        let index = header.iter().position(|h| h == name).with_context(|| format!("no {name} column in {header:?}"))?;
        row.get(index).context("short CSV row")?.parse::<f64>().with_context(|| format!("{name} is not a number"))
    };
    Ok((field("rps")?, field("p50_latency_ms")?, field("p99_latency_ms")?))
}

async fn http_measure(
    setup: &Setup,
    driver: &Driver,
    http: &Arc<WireClient>,
    measure: Measure,
    repetition: usize,
) -> anyhow::Result<Sample> {
    let counter = Arc::new(AtomicU64::new(0));
    let run_tag = Uuid::now_v7().simple().to_string();
    let product = if measure == Measure::Winner { setup.winner_product } else { setup.sold_out_product };
    let buy_path = format!("/api/v1/user/buy/{product}");
    let healthz = wire::request("GET", "/healthz", http.host(), &[]);
    let replay = buy_request(http.host(), &buy_path, &setup.replay_buyer, &setup.replay_key);
    let buyers = Arc::new(setup.buyers.clone());
    let http = Arc::clone(http);
    let result = driver
        .run(closed_loop(CONCURRENCY, MEASURE, WARMUP, move |index| {
            let request = match measure {
                Measure::Healthz => healthz.clone(),
                Measure::Replay => replay.clone(),
                _ => {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let buyer = &buyers[usize::try_from(index).unwrap_or(0) % buyers.len().max(1)];
                    buy_request(http.host(), &buy_path, buyer, &format!("baseline-{run_tag}-{n}"))
                }
            };
            let http = Arc::clone(&http);
            async move {
                match http.send(&request).await {
                    Ok(status) => {
                        let expected = match measure {
                            Measure::Healthz | Measure::Replay => 200..=201,
                            Measure::Winner => 201..=202,
                            _ => 409..=409,
                        };
                        if expected.contains(&status) { "ok".to_owned() } else { format!("unexpected:{status}") }
                    }
                    Err(_) => "unexpected:no-answer".to_owned(),
                }
            }
        }))
        .await?;
    Ok(sample_of(measure, repetition, result))
}

/// `POST /api/v1/user/buy/{id}` as `buyer`, with `key`.
fn buy_request(host: &str, path: &str, buyer: &Buyer, key: &str) -> Vec<u8> {
    let ip = buyer.ip.to_string();
    wire::request("POST", path, host, &[("cookie", &buyer.cookie), ("idempotency-key", key), ("x-forwarded-for", &ip)])
}

fn sample_of(measure: Measure, repetition: usize, result: openloop::ClosedLoopResult) -> Sample {
    let summary = percentile_summary(&result.latency);
    let unexpected = result.by_outcome.iter().filter(|(k, _)| k.as_str() != "ok").map(|(_, n)| *n).sum();
    Sample {
        measure,
        repetition,
        rate_per_s: result.rate_per_s,
        p50_us: summary.p50,
        p99_us: summary.p99,
        unexpected,
        documents_per_write: None,
        group_commits: None,
    }
}

/// The winner path at [`WINNER_OPEN_LOOP_FRACTION`] of `capacity` (its median
/// closed-loop rate), after making sure its product has a unit for every request the run
/// can send, so that every answer is the winner path's and never a sold-out.
async fn winner_open_loop(
    setup: &Setup,
    driver: &Driver,
    http: &Arc<WireClient>,
    capacity: f64,
) -> anyhow::Result<WinnerOpenLoop> {
    let rate = capacity * WINNER_OPEN_LOOP_FRACTION;
    let units_left_before = units_left(setup).await?;
    let most_requests = (rate * (OPEN_LOOP_WARMUP + OPEN_LOOP_RUN).as_secs_f64()).ceil();
    anyhow::ensure!(
        most_requests < units_left_before as f64,
        "the winner product has {units_left_before} units left, fewer than the {most_requests} purchases of its \
         open-loop run at {rate:.0}/s"
    );
    let point = open_loop_point(setup, driver, http, Measure::Winner, rate, WINNER_OPEN_LOOP_FRACTION).await?;
    Ok(WinnerOpenLoop { point, units_left_before, units_left_after: units_left(setup).await? })
}

/// Units of the winner product still for sale, as its sale state in Redis says.
async fn units_left(setup: &Setup) -> anyhow::Result<i64> {
    let state = flashsale::sale::stock(&setup.admin, setup.winner_product).await.context("the winner's stock")?;
    Ok(state.context("the winner product has no sale state")?.remaining())
}

/// An open-loop run of `path` (`SoldOut` or `Winner`) at `rate`: new keys, dealt over the
/// buyers round-robin, as the closed-loop measure of the same path sends them.
async fn open_loop_point(
    setup: &Setup,
    driver: &Driver,
    http: &Arc<WireClient>,
    path: Measure,
    rate: f64,
    fraction: f64,
) -> anyhow::Result<OpenLoopPoint> {
    let config = OpenLoopConfig {
        rate_per_s: rate,
        duration: OPEN_LOOP_RUN,
        lanes: OPEN_LOOP_LANES,
        max_lag: OPEN_LOOP_MAX_LAG,
        warmup: OPEN_LOOP_WARMUP,
    };
    let (product, expected) = match path {
        Measure::Winner => (setup.winner_product, 201..=202),
        _ => (setup.sold_out_product, 409..=409),
    };
    let buy_path = format!("/api/v1/user/buy/{product}");
    let run_tag = Uuid::now_v7().simple().to_string();
    let (http, buyers) = (Arc::clone(http), Arc::new(setup.buyers.clone()));
    let result = driver
        .run(async move {
            openloop::run(&config, move |index| {
                let buyer = &buyers[usize::try_from(index).unwrap_or(0) % buyers.len().max(1)];
                let request = buy_request(http.host(), &buy_path, buyer, &format!("open-{run_tag}-{index}"));
                let (http, expected) = (Arc::clone(&http), expected.clone());
                async move {
                    match http.send(&request).await {
                        Ok(status) if expected.contains(&status) => "ok".to_owned(),
                        Ok(status) => format!("unexpected:{status}"),
                        Err(_) => "unexpected:no-answer".to_owned(),
                    }
                }
            })
            .await
        })
        .await?;
    let summary = percentile_summary(&result.all);
    Ok(OpenLoopPoint {
        path,
        fraction,
        rate_per_s: rate,
        achieved_per_s: result.achieved_rate_per_s,
        p50_us: summary.p50,
        p99_us: summary.p99,
        p999_us: summary.p999,
        max_us: summary.max,
        dropped: result.dropped,
        unexpected: result.by_outcome.iter().filter(|(k, _)| k.as_str() != "ok").map(|(_, h)| h.len()).sum(),
    })
}

/// CPU ticks (user + system) of this process's threads that are not the in-process
/// server's: the load generator's own cost.
fn loadgen_cpu_ticks() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.trim().starts_with(crate::target::SERVER_THREAD_PREFIX) {
            continue;
        }
        // A thread that ended since the directory was listed has no CPU time left to count.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
        total += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ), as the system says; 100, Linux's
/// value on every architecture it ships, if it does not answer.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value; it has no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_is_read_by_column_name() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"EVALSHA\",\"81234.57\",\"0.350\",\"0.080\",\"0.319\",\"0.567\",\"0.783\",\"2.111\"\n";
        let (rps, p50, p99) = parse_redis_benchmark_csv(csv).expect("parsed");
        assert!((rps - 81_234.57).abs() < 1e-6 && (p50 - 0.319).abs() < 1e-9 && (p99 - 0.783).abs() < 1e-9);
        assert!(parse_redis_benchmark_csv("\"test\"\n").is_err());
    }

    #[test]
    fn spreads_give_median_and_range() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0]).expect("values").median, 2.5);
        assert!(Spread::of(&[]).is_none());
    }

    fn sample(measure: Measure, repetition: usize, rate_per_s: f64) -> Sample {
        Sample {
            measure,
            repetition,
            rate_per_s,
            p50_us: 0,
            p99_us: 0,
            unexpected: 0,
            documents_per_write: None,
            group_commits: None,
        }
    }

    #[test]
    fn the_winner_is_compared_with_each_raw_insert_of_its_own_repetition() {
        let samples = [
            sample(Measure::Winner, 1, 3_000.0),
            sample(Measure::MongoInsert, 1, 1_000.0),
            sample(Measure::MongoInsertMany, 1, 4_000.0),
            sample(Measure::Winner, 2, 2_400.0),
            sample(Measure::MongoInsert, 2, 1_200.0),
            sample(Measure::MongoInsertMany, 2, 6_000.0),
        ];
        let ratios = ratios_of(&samples, 2);
        let find = |name: &str| ratios.iter().find(|r| r.name == name).expect(name);
        let insert = find(RATIO_WINNER_TO_INSERT);
        assert_eq!((insert.spread.min, insert.spread.max), (2.0, 3.0), "3000/1000 and 2400/1200");
        assert_eq!(insert.target, Some(WINNER_TO_INSERT_TARGET));
        let insert_many = find(RATIO_WINNER_TO_INSERT_MANY);
        assert_eq!((insert_many.spread.min, insert_many.spread.max), (0.4, 0.75), "2400/6000 and 3000/4000");
        assert_eq!(insert_many.target, Some(WINNER_TO_INSERT_MANY_TARGET));
        assert!(ratios.iter().all(|r| r.name != RATIO_SOLD_OUT_TO_EVALSHA), "no sold-out samples, no ratio");
        assert_eq!(rates_of(&samples)[&Measure::MongoInsertMany].median, 5_000.0);
    }

    #[test]
    fn every_measure_has_its_summary_name() {
        for measure in Measure::ALL {
            assert_eq!(serde_json::to_value(measure).expect("serialized"), measure.name());
        }
        let winner = Measure::ALL.iter().position(|m| *m == Measure::Winner);
        let insert_many = Measure::ALL.iter().position(|m| *m == Measure::MongoInsertMany);
        assert!(winner < insert_many, "insert_many takes the batch size the winner measure just reached");
    }

    #[test]
    fn this_process_has_cpu_ticks_of_its_own() {
        let ticks = loadgen_cpu_ticks().expect("/proc/self/task is readable");
        let spin = std::time::Instant::now();
        let mut x = 0_u64;
        while spin.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(loadgen_cpu_ticks().expect("again") > ticks, "60 ms of spinning shows up");
    }
}
