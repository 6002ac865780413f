//! Baselines measured side by side in one invocation, alternating, several repetitions:
//! the physical limits the purchase path is compared with, on the same machine at the
//! same moment (ratios hold across machines; absolute figures do not).
//!
//! - `evalsha`: `redis-benchmark` running EVALSHA of the project's own `purchase.lua`
//!   on a sold-out sale (the same keys, arguments and path as the server's call);
//! - `healthz`: `GET /healthz` of the same server (HTTP and the framework, no backend);
//! - `sold_out`, `replay`, `winner`: `POST /api/v1/user/buy/{id}` on its three paths;
//! - `mongo_insert`: raw `insert_one` of an order-sized document into MongoDB, the
//!   floor under the winner path.
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
//! compared with no other driver, get a worker per core.

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
}

impl Measure {
    pub const ALL: [Self; 6] =
        [Self::Evalsha, Self::Healthz, Self::SoldOut, Self::Replay, Self::Winner, Self::MongoInsert];

    pub fn describe(self) -> &'static str {
        match self {
            Self::Evalsha => "redis-benchmark: EVALSHA purchase.lua on a sold-out sale",
            Self::Healthz => "GET /healthz",
            Self::SoldOut => "POST buy, sold-out path",
            Self::Replay => "POST buy, replay of a stored 201",
            Self::Winner => "POST buy, winner path (reserve, MongoDB insert, confirm)",
            Self::MongoInsert => "MongoDB insert_one of an order document",
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

/// An open-loop run at a fraction of the sold-out capacity.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopPoint {
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

/// Everything the baselines measured.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    pub repetitions: usize,
    pub samples: Vec<Sample>,
    pub rates: BTreeMap<Measure, Spread>,
    pub ratios: Vec<Ratio>,
    pub open_loop: Vec<OpenLoopPoint>,
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
    let mut samples = Vec::new();
    let mut driver_cpu = Vec::new();
    for repetition in 1..=repetitions {
        for measure in Measure::ALL {
            progress(&format!("baseline {}/{repetitions}: {}", repetition, measure.describe()));
            let before = loadgen_cpu_ticks();
            let sample = match measure {
                Measure::Evalsha => evalsha(setup, &sha, repetition).await?,
                Measure::MongoInsert => mongo_insert(setup, repetition).await,
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
    let rates = Measure::ALL
        .iter()
        .filter_map(|m| {
            let values: Vec<f64> = samples.iter().filter(|s| s.measure == *m).map(|s| s.rate_per_s).collect();
            Spread::of(&values).map(|spread| (*m, spread))
        })
        .collect::<BTreeMap<_, _>>();
    let ratio = |name: &str, top: Measure, bottom: Measure, target: Option<f64>| {
        let values: Vec<f64> = (1..=repetitions)
            .filter_map(|rep| {
                let rate = |m| samples.iter().find(|s| s.measure == m && s.repetition == rep).map(|s| s.rate_per_s);
                Some(rate(top)? / rate(bottom)?)
            })
            .collect();
        Spread::of(&values).map(|spread| Ratio { name: name.to_owned(), spread, target })
    };
    let ratios = [
        ratio("sold-out path ÷ raw EVALSHA", Measure::SoldOut, Measure::Evalsha, Some(1.0)),
        ratio("replay path ÷ raw EVALSHA", Measure::Replay, Measure::Evalsha, Some(0.5)),
        ratio("winner path ÷ raw MongoDB insert", Measure::Winner, Measure::MongoInsert, None),
        ratio("sold-out path ÷ /healthz", Measure::SoldOut, Measure::Healthz, None),
        ratio("replay path ÷ /healthz", Measure::Replay, Measure::Healthz, None),
        ratio("winner path ÷ /healthz", Measure::Winner, Measure::Healthz, None),
    ]
    .into_iter()
    .flatten()
    .collect();
    let capacity = rates.get(&Measure::SoldOut).map_or(0.0, |s| s.median);
    // Latency is compared with no other driver: the open loop gets a worker per core, so
    // that the scheduler switching one driver thread out does not stall every lane at once.
    drop(http);
    drop(driver);
    let open_loop_threads = open_loop_driver_threads();
    let (driver, http) = Driver::connect(open_loop_threads, &setup.base_url).await?;
    let mut open_loop = Vec::new();
    for fraction in OPEN_LOOP_FRACTIONS {
        progress(&format!("open loop at {:.0}% of the sold-out capacity ({capacity:.0}/s)", fraction * 100.0));
        open_loop.push(open_loop_point(setup, &driver, &http, capacity * fraction, fraction).await?);
    }
    Ok(Baselines {
        repetitions,
        samples,
        rates,
        ratios,
        open_loop,
        driver_cpu_us_per_request: Spread::of(&driver_cpu).map(|s| s.median),
        driver_threads: setup.driver_threads,
        open_loop_threads,
    })
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
    Sample { measure, repetition, rate_per_s: result.rate_per_s, p50_us: summary.p50, p99_us: summary.p99, unexpected }
}

/// The raw single-document insert, on a MongoDB client of the load generator's own (the
/// server reaches MongoDB only through its store seam, which has no raw collection).
async fn mongo_insert(setup: &Setup, repetition: usize) -> Sample {
    let config = &setup.admin.config;
    let client = match mongodb::Client::with_uri_str(&config.mongo_url).await {
        Ok(client) => client,
        // A URL the server itself connected with: only a parse error can land here.
        Err(_) => {
            return Sample {
                measure: Measure::MongoInsert,
                repetition,
                rate_per_s: 0.0,
                p50_us: 0,
                p99_us: 0,
                unexpected: 1,
            };
        }
    };
    let collection = client.database(&config.mongo_database).collection::<mongodb::bson::Document>(BASELINE_COLLECTION);
    let product = setup.winner_product.to_string();
    let result = closed_loop(CONCURRENCY, MEASURE, WARMUP, move |index| {
        let (collection, product) = (collection.clone(), product.clone());
        async move {
            let document = mongodb::bson::doc! {
                "_id": Uuid::now_v7().to_string(),
                "product_id": product,
                "user_id": Uuid::nil().to_string(),
                "unit": i64::try_from(index).unwrap_or(i64::MAX),
                "buyer_slot": Uuid::now_v7().to_string(),
                "status": "confirmed",
                "created_at_ms": 0_i64,
            };
            match collection.insert_one(document).await {
                Ok(_) => "ok".to_owned(),
                Err(_) => "unexpected:error".to_owned(),
            }
        }
    })
    .await;
    sample_of(Measure::MongoInsert, repetition, result)
}

/// Scratch collection of the raw insert measure.
pub const BASELINE_COLLECTION: &str = "loadgen_insert_baseline";

async fn open_loop_point(
    setup: &Setup,
    driver: &Driver,
    http: &Arc<WireClient>,
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
    let buy_path = format!("/api/v1/user/buy/{}", setup.sold_out_product);
    let (http, buyers) = (Arc::clone(http), Arc::new(setup.buyers.clone()));
    let result = driver
        .run(async move {
            openloop::run(&config, move |index| {
                let buyer = &buyers[usize::try_from(index).unwrap_or(0) % buyers.len().max(1)];
                let request = buy_request(http.host(), &buy_path, buyer, &format!("open-{index}"));
                let http = Arc::clone(&http);
                async move {
                    match http.send(&request).await {
                        Ok(409) => "ok".to_owned(),
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
