//! The `browse`, `auth` and `mixed` scenarios end to end on real backends (redis-server
//! and FerretDB started by the load generator, the server in process, goose over real
//! HTTP): shoppers read the catalogue, every page checks out, and the report gives the
//! product cache's hit ratio from the server's own counters; people sign up at the
//! production Argon2id cost and every session they were given loads as verified; all of
//! it at once beside a sale, whose check holds too. (`sale` has its own file.)

use std::path::PathBuf;
use std::time::Duration;

use flashsale_loadgen::auth::{ROUTE_LOGIN, ROUTE_REGISTER, ROUTE_VERIFY};
use flashsale_loadgen::browse::{ROUTE_DETAIL, ROUTE_LIST};
use flashsale_loadgen::report::{GOOSE_HTML, GOOSE_JSON, GOOSE_MD};
use flashsale_loadgen::run::{AuthOptions, BrowseOptions, MixedOptions, Place, auth, browse, mixed};
use flashsale_loadgen::target::TargetOptions;

/// A fresh reports folder for `scenario`'s test, and a run on a local stack writing
/// `2026-01-01-<scenario>` in it.
fn place(scenario: &str) -> (PathBuf, Place) {
    let root = std::env::temp_dir().join(format!("flashsale-loadgen-{scenario}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let place = Place {
        reports_root: root.clone(),
        name: Some(format!("2026-01-01-{scenario}")),
        target: TargetOptions::default(),
        progress: false,
    };
    (root, place)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoppers_read_every_product_mostly_from_the_cache_and_get_a_whole_report() {
    let (root, place) = place("browse");
    let options = BrowseOptions { users: 20, products: 5, duration: Duration::from_secs(3), place };

    let outcome = browse(&options).await.expect("a run");

    assert!(outcome.check.passed(), "{:#?}", outcome.check);
    let count = |route: &str| -> u64 {
        outcome.report.rows.iter().filter(|r| r.route == route && r.outcome.name() == "ok").map(|r| r.count).sum()
    };
    let (lists, details) = (count(ROUTE_LIST), count(ROUTE_DETAIL));
    assert!(lists > 0 && details >= 4 * lists - 80, "{lists} lists, {details} product pages");
    let cache = outcome.report.cache.expect("cache figures");
    assert!(cache.hits + cache.misses >= lists + details, "every read looked the cache up: {cache:?}");
    let ratio = cache.hit_ratio().expect("lookups");
    assert!(ratio > 0.5, "six entries to fill, then hits: {cache:?}");

    for file in ["README.md", "summary.json", GOOSE_JSON, GOOSE_MD, GOOSE_HTML, "latency-spectrum.svg", "timeline.svg"]
    {
        assert!(outcome.dir.join(file).is_file(), "{file} written");
    }
    assert!(outcome.dir.join("get-api-v1-products-id-ok.hgrm").is_file());
    let readme = std::fs::read_to_string(outcome.dir.join("README.md")).expect("readme");
    assert!(readme.contains("## Product cache") && readme.contains("Correctness check: **passed**"), "{readme}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_up_at_production_cost_and_every_session_loads_verified() {
    let (root, place) = place("auth");
    let options = AuthOptions { people: 6, place };

    let outcome = auth(&options).await.expect("a run");

    assert!(outcome.check.passed(), "{:#?}", outcome.check);
    for route in [ROUTE_REGISTER, ROUTE_LOGIN, ROUTE_VERIFY] {
        let ok: u64 =
            outcome.report.rows.iter().filter(|r| r.route == route && r.outcome.name() == "ok").map(|r| r.count).sum();
        assert_eq!(ok, 6, "{route}: {:#?}", outcome.report.rows);
    }
    let readme = std::fs::read_to_string(outcome.dir.join("README.md")).expect("readme");
    assert!(readme.contains("m = 19456 KiB, t = 2, p = 1 (the production default)"), "{readme}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_day_sells_the_stock_while_shoppers_browse_and_newcomers_sign_up() {
    let (root, place) = place("mixed");
    let options = MixedOptions { users: 40, stock: 5, products: 5, duration: Duration::from_secs(3), place };

    let outcome = mixed(&options).await.expect("a run");

    assert!(outcome.check.passed(), "{:#?}", outcome.check);
    assert_eq!(outcome.check.sale.map(|sale| sale.orders), Some(5), "the stock sold, among about 12 buyers");
    let names: Vec<&str> = outcome.check.checks.iter().map(|check| check.name).collect();
    for name in ["orders = stock", "product pages named their product", "every person signed up and verified"] {
        assert!(names.contains(&name), "{name} checked: {names:?}");
    }
    let routes: Vec<&str> = outcome.report.rows.iter().map(|row| row.route.as_str()).collect();
    for route in [ROUTE_LIST, ROUTE_DETAIL, ROUTE_REGISTER, ROUTE_VERIFY, "POST /api/v1/user/buy/{id}"] {
        assert!(routes.contains(&route), "{route} answered: {routes:?}");
    }
    assert!(outcome.report.cache.is_some_and(|cache| cache.hits > 0));
    let _ = std::fs::remove_dir_all(&root);
}
