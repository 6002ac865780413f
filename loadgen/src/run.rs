//! One scenario run from start to report: target up, buyers and product made, load,
//! correctness check, report written. The binary and the tests both call this.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use flashsale::config::Config;
use uuid::Uuid;

use crate::baseline;
use crate::buyers::{make_admin, make_buyers};
use crate::check::{CheckReport, check_sale};
use crate::machine::Machine;
use crate::record::Recorder;
use crate::report::{self, GOOSE_HTML, GOOSE_JSON, GOOSE_MD, SaleReport};
use crate::sale::{self, Sale};
use crate::target::{Target, TargetOptions};

/// Options of a `sale` run.
#[derive(Debug, Clone)]
pub struct SaleOptions {
    pub buyers: usize,
    pub stock: i64,
    /// Folder holding every report (`reports/`).
    pub reports_root: PathBuf,
    /// This report's folder name; `<date>-sale` by default.
    pub name: Option<String>,
    pub target: TargetOptions,
    /// A deliberately broken server variant (local target only), to see the check fail.
    #[cfg(feature = "broken")]
    pub broken: Option<flashsale::broken::Broken>,
    /// Repetitions of the baselines after the sale (0: none).
    pub baselines: usize,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct SaleOutcome {
    pub dir: PathBuf,
    pub check: CheckReport,
    pub report: SaleReport,
}

fn say(options: &SaleOptions, line: impl AsRef<str>) {
    if options.progress {
        eprintln!("[loadgen] {}", line.as_ref());
    }
}

/// Runs the `sale` scenario and writes its report.
pub async fn sale(options: &SaleOptions) -> anyhow::Result<SaleOutcome> {
    anyhow::ensure!(options.buyers > 0, "--buyers must be at least 1");
    anyhow::ensure!(options.stock > 0, "--stock must be at least 1");
    let (date, started_utc) = utc_now();
    let dir = options.reports_root.join(options.name.clone().unwrap_or_else(|| format!("{date}-sale")));
    let run = Uuid::now_v7().simple().to_string();
    let mut target_options = options.target.clone();
    if target_options.database.is_empty() {
        target_options.database = format!("loadgen_{}", &run[..12]);
    }
    if target_options.key_prefix.is_empty() {
        target_options.key_prefix = format!("lg{}", &run[..12]);
    }
    #[cfg(feature = "broken")]
    let broken = options.broken;
    let baselines_wanted = options.baselines > 0;
    let configure = move |config: &mut Config| {
        #[cfg(feature = "broken")]
        {
            config.broken = broken;
        }
        if baselines_wanted {
            // The baselines send thousands of purchases per second from few buyers (the
            // replay path: one buyer); the sale scenario stays far below either limit.
            config.limits.purchase_per_user_per_min = BASELINE_PURCHASE_LIMIT;
            config.limits.purchase_per_ip_per_min = BASELINE_PURCHASE_LIMIT;
        }
    };
    say(options, "starting the target");
    let mut target = Target::start(&target_options, configure).await?;
    say(options, format!("server at {} ({})", target.base_url, target.backend));

    let setup = Instant::now();
    let admin_cookie = make_admin(&target.admin, &run).await?;
    let product = create_product(&target.base_url, &admin_cookie, options.stock).await?;
    let buyers = make_buyers(&target.admin, options.buyers, &run).await?;
    say(
        options,
        format!("{} buyers and a product of {} units made in {:?}", buyers.len(), options.stock, setup.elapsed()),
    );

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let baseline = report::previous_baseline(&options.reports_root, "sale", &dir);
    let goose_files =
        [GOOSE_JSON, GOOSE_MD, GOOSE_HTML].iter().map(|name| dir.join(name).to_string_lossy().into_owned()).collect();
    let sale = Arc::new(Sale { product, buyers, recorder: Recorder::new() });
    say(options, format!("{} buyers hit the product at once", options.buyers));
    let metrics = sale::run(
        Arc::clone(&sale),
        &target.base_url,
        goose_files,
        baseline.as_ref().map(|path| path.to_string_lossy().into_owned()),
    )
    .await
    .context("the goose run")?;

    let acknowledged = sale.recorder.acknowledged();
    say(options, format!("load over: {} orders acknowledged; checking", acknowledged.len()));
    let check = check_sale(&target.admin, product, options.stock, options.buyers, &acknowledged).await?;
    let baselines = if options.baselines > 0 {
        let setup = baseline_setup(&target, &admin_cookie, &sale.buyers).await?;
        Some(baseline::run(&setup, options.baselines, |line| say(options, line)).await?)
    } else {
        None
    };
    target.stop_server();

    let series = sale.recorder.series();
    let active_s = sale.recorder.active().as_secs_f64();
    let report = SaleReport {
        title: format!("sale: {} buyers, {} units", options.buyers, options.stock),
        started_utc,
        configuration: configuration(options, &target.server_config),
        machine: Machine::describe(),
        backend: target.backend.clone(),
        active_s,
        rows: SaleReport::rows(&series, active_s),
        all_latency_us: crate::hgrm::percentile_summary(&sale.recorder.all_latency()),
        timeline: sale.recorder.timeline(),
        check: check.clone(),
        baseline: baseline.map(|path| path.to_string_lossy().into_owned()),
        goose_requests: metrics.requests.values().map(|r| r.success_count + r.fail_count).sum(),
        goose_duration_s: metrics.duration,
        baselines,
    };
    let histograms: Vec<_> =
        series.into_iter().map(|((route, outcome), series)| (route, outcome, series.latency)).collect();
    report::write(&dir, &report, &histograms)?;
    Ok(SaleOutcome { dir, check, report })
}

/// Purchase rate limit (per user and per IP, per minute) of a run with baselines.
pub const BASELINE_PURCHASE_LIMIT: u32 = 1_000_000_000;
/// Units of the winner path's product (no one-per-user rule).
const WINNER_STOCK: i64 = flashsale::products::model::MAX_STOCK;

/// Two more products for the baselines: one sold out by a buyer whose key is then
/// replayed, one with plenty of units and no one-per-user rule for the winner path.
async fn baseline_setup(
    target: &Target,
    admin_cookie: &str,
    buyers: &[crate::buyers::Buyer],
) -> anyhow::Result<baseline::Setup> {
    let sold_out_product = create_product_with(&target.base_url, admin_cookie, 1, true).await?;
    let winner_product = create_product_with(&target.base_url, admin_cookie, WINNER_STOCK, false).await?;
    let replay_buyer = buyers.first().context("no buyers")?.clone();
    let replay_key = "baseline-replay".to_owned();
    let response = reqwest_client()?
        .post(format!("{}/api/v1/user/buy/{sold_out_product}", target.base_url))
        .header("cookie", &replay_buyer.cookie)
        .header("idempotency-key", &replay_key)
        .header("x-forwarded-for", replay_buyer.ip.to_string())
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 201, "the replay buyer's purchase answered {}", response.status());
    let redis_addr = redis_addr(&target.server_config.redis_url)?;
    Ok(baseline::Setup {
        base_url: target.base_url.clone(),
        redis_addr,
        admin: Arc::clone(&target.admin),
        sold_out_product,
        replay_buyer,
        replay_key,
        winner_product,
        buyers: buyers.to_vec(),
    })
}

/// `host` and `port` of a single-Redis URL (`redis://host:port[/db]`).
pub fn redis_addr(url: &str) -> anyhow::Result<(String, u16)> {
    anyhow::ensure!(!url.contains(','), "the EVALSHA baseline needs a single Redis, not a cluster ({url})");
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
    Ok((host.to_owned(), port.parse().with_context(|| format!("port of {url}"))?))
}

fn configuration(options: &SaleOptions, server: &Config) -> Vec<(String, String)> {
    let mut rows = vec![
        ("scenario".to_owned(), "sale: every buyer wants one unit of one product, all at once".to_owned()),
        ("buyers (goose users, all started within 1 s, one iteration each)".to_owned(), options.buyers.to_string()),
        ("units".to_owned(), options.stock.to_string()),
        (
            "buyer behaviour".to_owned(),
            format!(
                "buy with an Idempotency-Key, retry the same key on 503/429/in-flight up to {} attempts; winners \
                 replay the key once; one winner in {} tries a second key",
                sale::MAX_ATTEMPTS,
                sale::SECOND_KEY_EVERY
            ),
        ),
        (
            "server limits".to_owned(),
            format!(
                "purchase {} per user and {} per IP per minute; order write timeout {} ms",
                server.limits.purchase_per_user_per_min,
                server.limits.purchase_per_ip_per_min,
                server.order_write_timeout_ms
            ),
        ),
    ];
    rows.extend(broken_row(options));
    rows
}

#[cfg(feature = "broken")]
fn broken_row(options: &SaleOptions) -> Option<(String, String)> {
    options
        .broken
        .map(|broken| ("BROKEN server variant".to_owned(), format!("{broken:?} (the check is meant to fail)")))
}

#[cfg(not(feature = "broken"))]
fn broken_row(_: &SaleOptions) -> Option<(String, String)> {
    None
}

async fn create_product(base_url: &str, admin_cookie: &str, stock: i64) -> anyhow::Result<Uuid> {
    create_product_with(base_url, admin_cookie, stock, true).await
}

async fn create_product_with(
    base_url: &str,
    admin_cookie: &str,
    stock: i64,
    one_per_user: bool,
) -> anyhow::Result<Uuid> {
    let response = reqwest_client()?
        .post(format!("{base_url}/api/v1/products"))
        .header("cookie", admin_cookie)
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "name": "Load-test drop",
                "description": "One product, many buyers",
                "price_cents": 9_900,
                "stock": stock,
                "one_per_user": one_per_user,
            })
            .to_string(),
        )
        .send()
        .await
        .context("creating the product")?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(status == 201, "creating the product answered {status}: {body}");
    body["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).context("product id in the answer")
}

fn reqwest_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().build()?)
}

/// Today's date (`YYYY-MM-DD`) and the time (`YYYY-MM-DD HH:MM:SS`), UTC.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// Civil date and time of a Unix time (Howard Hinnant's days-to-civil algorithm).
pub fn utc_from_unix(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}-{month:02}-{day:02}");
    let time = format!("{date} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_give_host_and_port() {
        assert_eq!(redis_addr("redis://127.0.0.1:40123").expect("addr"), ("127.0.0.1".to_owned(), 40123));
        assert_eq!(redis_addr("redis://:pw@cache.internal:6380/2").expect("addr"), ("cache.internal".to_owned(), 6380));
        assert_eq!(redis_addr("redis://localhost").expect("addr"), ("localhost".to_owned(), 6379));
        assert!(redis_addr("redis://a:1,redis://b:2").is_err());
    }

    #[test]
    fn unix_times_become_utc_dates() {
        assert_eq!(utc_from_unix(0).1, "1970-01-01 00:00:00");
        assert_eq!(utc_from_unix(951_782_400).0, "2000-02-29");
        assert_eq!(utc_from_unix(1_795_654_800).1, "2026-11-26 01:00:00");
    }
}
