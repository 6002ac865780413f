//! The `sale` scenario end to end on real backends (redis-server and FerretDB started by
//! the load generator, the server in process, goose over real HTTP): a correct server
//! passes the correctness check and gets a full report, also when Redis stops for two
//! seconds mid-burst (buyers retry their keys); broken server variants fail it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flashsale_loadgen::record::RetryCause;
use flashsale_loadgen::report::{GOOSE_HTML, GOOSE_JSON, GOOSE_MD};
#[cfg(feature = "broken")]
use flashsale_loadgen::run::RunOutcome;
use flashsale_loadgen::run::{Place, SaleOptions, sale};
use flashsale_loadgen::target::TargetOptions;

fn reports_root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashsale-loadgen-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(root: &Path, name: &str, buyers: usize, stock: i64) -> SaleOptions {
    SaleOptions {
        buyers,
        stock,
        place: Place {
            reports_root: root.to_path_buf(),
            name: Some(name.to_owned()),
            target: TargetOptions::default(),
            progress: false,
        },
        #[cfg(feature = "broken")]
        broken: None,
        baselines: 0,
        driver_threads: flashsale_loadgen::baseline::DEFAULT_DRIVER_THREADS,
        redis_pause: None,
    }
}

#[cfg(feature = "broken")]
fn failed(outcome: &RunOutcome) -> Vec<&'static str> {
    outcome.check.checks.iter().filter(|check| !check.passed).map(|check| check.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_sells_exactly_the_stock_and_writes_the_whole_report() {
    let root = reports_root("sale");
    let first = sale(&options(&root, "2026-01-01-sale", 300, 30)).await.expect("a run");
    assert!(first.check.passed(), "{:#?}", first.check);
    assert_eq!(first.check.sale.map(|sale| sale.orders), Some(30));
    assert_eq!(first.report.baseline, None, "nothing to compare the first run with");
    let won: u64 = first.report.rows.iter().filter(|r| r.outcome.name() == "won").map(|r| r.count).sum();
    let sold_out: u64 = first.report.rows.iter().filter(|r| r.outcome.name() == "sold_out").map(|r| r.count).sum();
    assert_eq!(won, 30, "{:#?}", first.report.rows);
    assert!(sold_out >= 270, "every other buyer was told sold-out: {sold_out}");

    for file in ["README.md", "summary.json", GOOSE_JSON, GOOSE_MD, GOOSE_HTML] {
        assert!(first.dir.join(file).is_file(), "{file} written");
    }
    for picture in ["latency-spectrum.svg", "timeline.svg"] {
        let svg = std::fs::read_to_string(first.dir.join(picture)).expect("svg");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{picture} is a picture");
    }
    let hgrm = std::fs::read_to_string(first.dir.join("post-api-v1-user-buy-id-won.hgrm")).expect("hgrm of winners");
    assert!(hgrm.contains("#[Max") && hgrm.contains("Value"), "{hgrm}");
    let readme = std::fs::read_to_string(first.dir.join("README.md")).expect("readme");
    assert!(readme.contains("Correctness check: **passed**") && readme.contains("| won |"), "{readme}");

    // The next run compares itself with this one.
    let second = sale(&options(&root, "2026-01-02-sale", 100, 10)).await.expect("a second run");
    assert!(second.check.passed(), "{:#?}", second.check);
    let baseline = second.report.baseline.clone().expect("the first run is the baseline");
    assert!(baseline.ends_with(&format!("2026-01-01-sale/{GOOSE_JSON}")), "{baseline}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_with_redis_paused_two_seconds_mid_burst_still_sells_out_and_counts_the_retries() {
    let root = reports_root("redis-pause");
    let mut options = options(&root, "redis-pause-sale", 300, 30);
    options.redis_pause = Some(Duration::from_secs(2));

    let outcome = sale(&options).await.expect("a run");

    assert!(outcome.check.passed(), "{:#?}", outcome.check);
    assert_eq!(outcome.check.sale.map(|sale| sale.orders), Some(30), "sold out despite the pause");
    let retries = outcome.report.retries.clone().expect("a sale reports its retries");
    let unavailable = retries.by_cause.get(&RetryCause::Unavailable).copied().unwrap_or(0);
    assert!(unavailable > 0, "buyers retried their keys after 503s: {retries:?}");
    assert_eq!(retries.total, retries.by_cause.values().sum::<u64>(), "{retries:?}");
    let answered_503: u64 =
        outcome.report.rows.iter().filter(|r| r.outcome.name() == "unavailable").map(|r| r.count).sum();
    assert!(answered_503 >= unavailable, "each retry after a 503 follows a 503 answer: {answered_503} < {unavailable}");
    let replays = outcome.check.sale.map(|sale| sale.replays).expect("replay counts");
    assert_eq!(replays.acknowledged_keys, replays.replayed_keys + replays.not_replayed_keys, "{replays:?}");

    let readme = std::fs::read_to_string(outcome.dir.join("README.md")).expect("readme");
    assert!(
        readme.contains("### Retries") && readme.contains(&format!("| unavailable | 503 | {unavailable} |")),
        "{readme}"
    );
    assert!(readme.contains("Redis paused (SIGSTOP) at the first answer, resumed 2000 ms later"), "{readme}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.dir.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["retries"]["by_cause"]["unavailable"].as_u64(), Some(unavailable), "{}", summary["retries"]);
    assert!(summary["check"]["sale"]["replays"]["not_replayed_keys"].is_u64(), "{}", summary["check"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[cfg(feature = "broken")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overselling_server_fails_the_check() {
    let root = reports_root("oversell");
    let mut options = options(&root, "oversell-sale", 200, 20);
    options.broken = Some(flashsale::broken::Broken::Oversell);
    let outcome = sale(&options).await.expect("a run");
    assert!(!outcome.check.passed());
    let failed = failed(&outcome);
    assert!(failed.contains(&"orders = stock"), "{:#?}", outcome.check);
    assert!(failed.contains(&"no unit sold twice or beyond the stock"), "{:#?}", outcome.check);
    let readme = std::fs::read_to_string(outcome.dir.join("README.md")).expect("readme");
    assert!(readme.contains("Correctness check: **FAILED**") && readme.contains("BROKEN server variant"));
    let _ = std::fs::remove_dir_all(&root);
}

#[cfg(feature = "broken")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_makes_a_new_order_on_replay_fails_the_check() {
    let root = reports_root("replay");
    let mut options = options(&root, "replay-sale", 200, 20);
    options.broken = Some(flashsale::broken::Broken::NewOrderOnReplay);
    let outcome = sale(&options).await.expect("a run");
    assert_eq!(failed(&outcome), vec!["replays returned the same order"], "{:#?}", outcome.check);
    let _ = std::fs::remove_dir_all(&root);
}
