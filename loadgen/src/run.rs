//! One scenario run from start to report: target up, buyers and products made, load,
//! correctness check, report written ([`sale`], [`browse`], [`auth`], [`mixed`]). The binary and the tests
//! both call this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use flashsale::config::Config;
use goose::metrics::GooseMetrics;
use uuid::Uuid;

use crate::auth::{self, Auth};
use crate::baseline;
use crate::browse::{self, Browse};
use crate::buyers::{make_admin, make_buyers};
use crate::check::{CheckReport, check_sale};
use crate::machine::Machine;
use crate::mixed::{self, Mixed};
use crate::record::{Recorder, Retries};
use crate::report::{self, CacheFigures, GOOSE_HTML, GOOSE_JSON, GOOSE_MD, ScenarioReport};
use crate::sale::{self, Sale};
use crate::target::{Target, TargetOptions};

/// Options of a `sale` run.
#[derive(Debug, Clone)]
pub struct SaleOptions {
    pub buyers: usize,
    pub stock: i64,
    pub place: Place,
    /// A deliberately broken server variant (local target only), to see the check fail.
    #[cfg(feature = "broken")]
    pub broken: Option<flashsale::broken::Broken>,
    /// Repetitions of the baselines after the sale (0: none).
    pub baselines: usize,
    /// Threads of each baseline driver (`redis-benchmark` and the HTTP driver).
    pub driver_threads: usize,
    /// A fault during the sale (local target only): Redis is paused (SIGSTOP) at the
    /// first answer and resumed (SIGCONT) this long after.
    pub redis_pause: Option<Duration>,
}

/// What a run produced (any scenario).
#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub check: CheckReport,
    pub report: ScenarioReport,
}

/// What every run takes: where its report goes, what it loads, how talkative it is.
#[derive(Debug, Clone)]
pub struct Place {
    /// Folder holding every report (`reports/`).
    pub reports_root: PathBuf,
    /// This report's folder name; `<date>-<scenario>` by default.
    pub name: Option<String>,
    pub target: TargetOptions,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Place {
    /// This run's report folder.
    fn dir(&self, date: &str, scenario: &str) -> PathBuf {
        self.reports_root.join(self.name.clone().unwrap_or_else(|| format!("{date}-{scenario}")))
    }

    /// The target, with a fresh MongoDB database and Redis key prefix where none was given.
    fn fresh_target(&self, run: &str) -> TargetOptions {
        let mut target = self.target.clone();
        if target.database.is_empty() {
            target.database = format!("loadgen_{}", &run[..12]);
        }
        if target.key_prefix.is_empty() {
            target.key_prefix = format!("lg{}", &run[..12]);
        }
        target
    }

    /// Starts the target of run `run`, the local server's configuration adjusted by
    /// `configure`.
    async fn start(&self, run: &str, configure: impl FnOnce(&mut Config)) -> anyhow::Result<Target> {
        self.say("starting the target");
        let target = Target::start(&self.fresh_target(run), configure).await?;
        self.say(format!("server at {} ({})", target.base_url, target.backend));
        Ok(target)
    }

    fn say(&self, line: impl AsRef<str>) {
        if self.progress {
            eprintln!("[loadgen] {}", line.as_ref());
        }
    }
}

/// Runs the `sale` scenario and writes its report.
pub async fn sale(options: &SaleOptions) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!(options.buyers > 0, "--buyers must be at least 1");
    anyhow::ensure!(options.stock > 0, "--stock must be at least 1");
    let (date, started_utc) = utc_now();
    let dir = options.place.dir(&date, "sale");
    let run = Uuid::now_v7().simple().to_string();
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
    let mut target = options.place.start(&run, configure).await?;

    let setup = Instant::now();
    let admin_cookie = make_admin(&target.admin, &run).await?;
    let product = create_product(&target.base_url, &admin_cookie, options.stock).await?;
    let buyers = make_buyers(&target.admin, options.buyers, &run).await?;
    options.place.say(format!(
        "{} buyers and a product of {} units made in {:?}",
        buyers.len(),
        options.stock,
        setup.elapsed()
    ));

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let baseline = report::previous_baseline(&options.place.reports_root, "sale", &dir);
    let goose_files = goose_files(&dir);
    let sale = Arc::new(Sale { product, buyers, recorder: Arc::new(Recorder::new()) });
    options.place.say(format!("{} buyers hit the product at once", options.buyers));
    let load = sale::run(
        Arc::clone(&sale),
        &target.base_url,
        goose_files,
        baseline.as_ref().map(|path| path.to_string_lossy().into_owned()),
    );
    let metrics = match options.redis_pause {
        None => load.await,
        Some(pause) => with_redis_paused(target.local_redis()?, pause, &sale.recorder, load, &options.place).await,
    }
    .context("the goose run")?;

    let acknowledged = sale.recorder.acknowledged();
    options.place.say(format!("load over: {} orders acknowledged; checking", acknowledged.len()));
    let check = check_sale(&target.admin, product, options.stock, options.buyers, &acknowledged).await?;
    let baselines = if options.baselines > 0 {
        let setup = baseline_setup(&target, &admin_cookie, &sale.buyers, options.driver_threads).await?;
        Some(baseline::run(&setup, options.baselines, |line| options.place.say(line)).await?)
    } else {
        None
    };
    target.stop_server();

    let parts = ReportParts {
        scenario: "sale",
        title: format!("sale: {} buyers, {} units", options.buyers, options.stock),
        driver: "goose is the load driver: a closed loop, one goose user per buyer",
        started_utc,
        configuration: configuration(options, &target.server_config),
        backend: target.backend.clone(),
        baseline,
        baselines,
        cache: None,
        retries: Some(sale.recorder.retries()),
    };
    write_report(dir, parts, &sale.recorder, &metrics, check)
}

/// Runs `load` with Redis paused from the first answer `recorder` records, for `pause`;
/// Redis runs again when the pause is over or the load is, whichever comes first.
async fn with_redis_paused<T>(
    redis: &flashsale_stack::RedisServer,
    pause: Duration,
    recorder: &Recorder,
    load: impl Future<Output = T>,
    place: &Place,
) -> T {
    let mut load = std::pin::pin!(load);
    let fault = async {
        recorder.first_answer().await;
        redis.pause();
        place.say(format!("Redis paused for {pause:?}"));
        tokio::time::sleep(pause).await;
        redis.resume();
        place.say("Redis resumed");
    };
    let done = tokio::select! {
        done = &mut load => done,
        () = fault => load.await,
    };
    redis.resume();
    done
}

/// Options of a `browse` run.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    /// Shoppers (goose users), all started within one second.
    pub users: usize,
    /// Products in the catalogue.
    pub products: usize,
    /// How long the shoppers browse.
    pub duration: Duration,
    pub place: Place,
}

/// Most products a `browse` run creates.
pub const MAX_BROWSE_PRODUCTS: usize = 1_000;
/// Longest `browse` run.
pub const MAX_BROWSE_DURATION: Duration = Duration::from_secs(3_600);
/// Read rate limit (per IP, per minute) of the local server in a `browse` run: each
/// shopper reads as fast as the server answers, far beyond a person's pace.
pub const BROWSE_READ_LIMIT: u32 = 1_000_000_000;

/// The bounds of a run with a catalogue: 1 to `MAX_BROWSE_PRODUCTS` products, 1 s to
/// `MAX_BROWSE_DURATION`.
fn check_catalogue(products: usize, duration: Duration) -> anyhow::Result<()> {
    anyhow::ensure!((1..=MAX_BROWSE_PRODUCTS).contains(&products), "--products must be 1 to {MAX_BROWSE_PRODUCTS}");
    anyhow::ensure!(
        (Duration::from_secs(1)..=MAX_BROWSE_DURATION).contains(&duration),
        "--duration-s must be 1 to {}",
        MAX_BROWSE_DURATION.as_secs()
    );
    Ok(())
}

/// The target of a run whose shoppers read as fast as they are answered or their think
/// time allows: a local server gets [`BROWSE_READ_LIMIT`] reads per IP.
async fn start_for_readers(place: &Place, run: &str) -> anyhow::Result<Target> {
    place.start(run, |config: &mut Config| config.limits.reads_per_ip_per_min = BROWSE_READ_LIMIT).await
}

/// Products "Browse item <n>" for each `n` of `numbers`, 100 units each, made over the API.
async fn create_catalogue(
    base_url: &str,
    admin_cookie: &str,
    numbers: std::ops::Range<usize>,
) -> anyhow::Result<Vec<Uuid>> {
    let mut products = Vec::with_capacity(numbers.len());
    for number in numbers {
        products.push(create_named_product(base_url, admin_cookie, &format!("Browse item {number}"), 100, true).await?);
    }
    Ok(products)
}

/// Runs the `browse` scenario and writes its report.
pub async fn browse(options: &BrowseOptions) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!(options.users > 0, "--users must be at least 1");
    check_catalogue(options.products, options.duration)?;
    let (date, started_utc) = utc_now();
    let dir = options.place.dir(&date, "browse");
    let run = Uuid::now_v7().simple().to_string();
    let mut target = start_for_readers(&options.place, &run).await?;
    let admin_cookie = make_admin(&target.admin, &run).await?;
    let products = create_catalogue(&target.base_url, &admin_cookie, 0..options.products).await?;
    options.place.say(format!("{} products made", products.len()));

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let baseline = report::previous_baseline(&options.place.reports_root, "browse", &dir);
    let goose_files = goose_files(&dir);
    let shared = Arc::new(Browse::new(products, Arc::new(Recorder::new())));
    let cache_before = browse::cache_counters(&target.base_url).await?;
    options.place.say(format!("{} shoppers browse for {:?}", options.users, options.duration));
    let metrics = browse::run(
        Arc::clone(&shared),
        &target.base_url,
        options.users,
        options.duration,
        goose_files,
        baseline.as_ref().map(|path| path.to_string_lossy().into_owned()),
    )
    .await
    .context("the goose run")?;
    let cache = browse::cache_delta(cache_before, browse::cache_counters(&target.base_url).await?);
    let check = shared.check();
    target.stop_server();

    let parts = ReportParts {
        scenario: "browse",
        title: format!("browse: {} shoppers, {} products", options.users, options.products),
        driver: "goose is the load driver: a closed loop, each goose user one shopper reading as fast as it is \
                 answered",
        started_utc,
        configuration: browse_configuration(options, &target.server_config),
        backend: target.backend.clone(),
        baseline,
        baselines: None,
        cache: Some(cache),
        retries: None,
    };
    write_report(dir, parts, &shared.recorder, &metrics, check)
}

fn browse_configuration(options: &BrowseOptions, server: &Config) -> Vec<(String, String)> {
    vec![
        ("scenario".to_owned(), "browse: shoppers list the products and open product pages".to_owned()),
        ("shoppers (goose users, all started within 1 s)".to_owned(), options.users.to_string()),
        ("products".to_owned(), options.products.to_string()),
        ("duration".to_owned(), format!("{} s", options.duration.as_secs())),
        (
            "shopper behaviour".to_owned(),
            format!(
                "list the products, then open {} product pages dealt round-robin over the catalogue; repeat",
                browse::DETAILS_PER_LIST
            ),
        ),
        (
            "server".to_owned(),
            format!(
                "product cache TTL {} s; reads {} per IP per minute",
                server.product_cache_ttl_s, server.limits.reads_per_ip_per_min
            ),
        ),
    ]
}

/// Options of an `auth` run.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// People signing up (goose users), all started within one second.
    pub people: usize,
    pub place: Place,
}

/// Most people an `auth` run signs up.
pub const MAX_AUTH_PEOPLE: usize = 10_000;

/// Runs the `auth` scenario and writes its report.
pub async fn auth(options: &AuthOptions) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!((1..=MAX_AUTH_PEOPLE).contains(&options.people), "--people must be 1 to {MAX_AUTH_PEOPLE}");
    let (date, started_utc) = utc_now();
    let dir = options.place.dir(&date, "auth");
    let run = Uuid::now_v7().simple().to_string();
    let mut target = options.place.start(&run, |_: &mut Config| {}).await?;
    anyhow::ensure!(
        target.server_config.otp_delivery == flashsale::config::OtpDelivery::Outbox,
        "the auth scenario reads one-time codes from the Redis outbox: the server must deliver them there"
    );

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let baseline = report::previous_baseline(&options.place.reports_root, "auth", &dir);
    let goose_files = goose_files(&dir);
    let shared = Arc::new(Auth::new(Arc::clone(&target.admin), &run[..12], options.people, Arc::new(Recorder::new())));
    options.place.say(format!("{} people sign up at once", options.people));
    let metrics = auth::run(
        Arc::clone(&shared),
        &target.base_url,
        goose_files,
        baseline.as_ref().map(|path| path.to_string_lossy().into_owned()),
    )
    .await
    .context("the goose run")?;
    let check = shared.check().await?;
    target.stop_server();

    let config = &target.server_config;
    let parts = ReportParts {
        scenario: "auth",
        title: format!(
            "auth: {} people sign up, Argon2id m={} KiB t={} p={}",
            options.people, config.argon2_m_kib, config.argon2_t, config.argon2_p
        ),
        driver: "goose is the load driver: a closed loop, one goose user per person, running once",
        started_utc,
        configuration: auth_configuration(options, config),
        backend: target.backend.clone(),
        baseline,
        baselines: None,
        cache: None,
        retries: None,
    };
    write_report(dir, parts, &shared.recorder, &metrics, check)
}

fn auth_configuration(options: &AuthOptions, server: &Config) -> Vec<(String, String)> {
    let production = Config::for_local("redis://unused", "mongodb://unused", "unused", "unused");
    let cost = if (server.argon2_m_kib, server.argon2_t, server.argon2_p)
        == (production.argon2_m_kib, production.argon2_t, production.argon2_p)
    {
        "the production default"
    } else {
        "NOT the production default"
    };
    vec![
        ("scenario".to_owned(), "auth: a sign-up rush, register, log in and verify the one-time code".to_owned()),
        ("people (goose users, all started within 1 s, one iteration each)".to_owned(), options.people.to_string()),
        (
            "password hashing".to_owned(),
            format!(
                "Argon2id, m = {} KiB, t = {}, p = {} ({cost}); at most {} hashes at once",
                server.argon2_m_kib, server.argon2_t, server.argon2_p, server.max_concurrent_hashes
            ),
        ),
        (
            "person behaviour".to_owned(),
            "register (one hash), log in (one hash; the code goes to the Redis outbox), read the code from the \
             outbox (not timed), verify it"
                .to_owned(),
        ),
        (
            "server limits".to_owned(),
            format!(
                "register {} per IP, login {} per IP and {} per account per minute; every person has its own IP",
                server.limits.register_per_ip_per_min,
                server.limits.login_per_ip_per_min,
                server.limits.login_per_account_per_min
            ),
        ),
    ]
}

/// Options of a `mixed` run.
#[derive(Debug, Clone)]
pub struct MixedOptions {
    /// Goose users, all started within one second, dealt to shoppers, buyers and
    /// newcomers by weight (`mixed::SHOPPER_WEIGHT` and the others).
    pub users: usize,
    /// Units of the product on sale.
    pub stock: i64,
    /// Products in the catalogue, the one on sale among them.
    pub products: usize,
    /// How long the run lasts.
    pub duration: Duration,
    pub place: Place,
}

/// Most users of a `mixed` run.
pub const MAX_MIXED_USERS: usize = 20_000;

/// Runs the `mixed` scenario and writes its report.
pub async fn mixed(options: &MixedOptions) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!((1..=MAX_MIXED_USERS).contains(&options.users), "--users must be 1 to {MAX_MIXED_USERS}");
    anyhow::ensure!(options.stock > 0, "--stock must be at least 1");
    check_catalogue(options.products, options.duration)?;
    let (date, started_utc) = utc_now();
    let dir = options.place.dir(&date, "mixed");
    let run = Uuid::now_v7().simple().to_string();
    // Purchases and sign-ups keep the production limits.
    let mut target = start_for_readers(&options.place, &run).await?;
    let admin_cookie = make_admin(&target.admin, &run).await?;
    let product = create_product(&target.base_url, &admin_cookie, options.stock).await?;
    let mut products = vec![product];
    products.extend(create_catalogue(&target.base_url, &admin_cookie, 1..options.products).await?);
    let buyers = make_buyers(&target.admin, options.users, &run).await?;
    options.place.say(format!("{} products and {} buyers made", products.len(), buyers.len()));

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let baseline = report::previous_baseline(&options.place.reports_root, "mixed", &dir);
    let recorder = Arc::new(Recorder::new());
    let state = Arc::new(Mixed::new(
        Arc::new(Sale { product, buyers, recorder: Arc::clone(&recorder) }),
        Arc::new(Browse::new(products, Arc::clone(&recorder))),
        Arc::new(Auth::new(Arc::clone(&target.admin), &run[..12], options.users, Arc::clone(&recorder))),
    ));
    let cache_before = browse::cache_counters(&target.base_url).await?;
    options.place.say(format!("{} users for {:?}", options.users, options.duration));
    let metrics = mixed::run(
        Arc::clone(&state),
        &target.base_url,
        options.users,
        options.duration,
        goose_files(&dir),
        baseline.as_ref().map(|path| path.to_string_lossy().into_owned()),
    )
    .await
    .context("the goose run")?;
    let cache = browse::cache_delta(cache_before, browse::cache_counters(&target.base_url).await?);
    options.place.say("load over; checking");
    let acknowledged = recorder.acknowledged();
    let sale_check = check_sale(&target.admin, product, options.stock, state.buyers_started(), &acknowledged).await?;
    let mut checks = sale_check.checks;
    checks.extend(state.browse.check().checks);
    checks.extend(state.auth.check().await?.checks);
    let check = CheckReport { checks, sale: sale_check.sale };
    target.stop_server();

    let parts = ReportParts {
        scenario: "mixed",
        title: format!(
            "mixed: {} users, {} units on sale, {} products",
            options.users, options.stock, options.products
        ),
        driver: "goose is the load driver: each goose user a shopper, a buyer or a newcomer, with think times",
        started_utc,
        configuration: mixed_configuration(options, &target.server_config, state.buyers_started()),
        backend: target.backend.clone(),
        baseline,
        baselines: None,
        cache: Some(cache),
        retries: Some(recorder.retries()),
    };
    write_report(dir, parts, &recorder, &metrics, check)
}

fn mixed_configuration(options: &MixedOptions, server: &Config, buyers: usize) -> Vec<(String, String)> {
    let think = |(low, high): (Duration, Duration)| format!("{} to {} ms", low.as_millis(), high.as_millis());
    vec![
        ("scenario".to_owned(), "mixed: shoppers, buyers and newcomers at once, for a set time".to_owned()),
        ("users (goose users, all started within 1 s)".to_owned(), options.users.to_string()),
        (
            "kinds (goose weights)".to_owned(),
            format!(
                "shoppers {}, buyers {} ({buyers} made their attempt), newcomers {}",
                mixed::SHOPPER_WEIGHT,
                mixed::BUYER_WEIGHT,
                mixed::SIGN_UP_WEIGHT
            ),
        ),
        ("units on sale".to_owned(), options.stock.to_string()),
        ("products".to_owned(), options.products.to_string()),
        ("duration".to_owned(), format!("{} s", options.duration.as_secs())),
        (
            "behaviour".to_owned(),
            format!(
                "shoppers: the list and {} product pages, then think {}; buyers: the sale's attempt (retries as in \
                 `sale`), then replay their key, thinking {}; newcomers: register, log in, verify the code, then read \
                 their profile, thinking {}",
                browse::DETAILS_PER_LIST,
                think(mixed::SHOPPER_THINK),
                think(mixed::BUYER_THINK),
                think(mixed::SIGN_UP_THINK)
            ),
        ),
        (
            "server".to_owned(),
            format!(
                "Argon2id m = {} KiB, t = {}, p = {}; purchase {} per user and {} per IP per minute; reads {} per IP \
                 per minute; product cache TTL {} s",
                server.argon2_m_kib,
                server.argon2_t,
                server.argon2_p,
                server.limits.purchase_per_user_per_min,
                server.limits.purchase_per_ip_per_min,
                server.limits.reads_per_ip_per_min,
                server.product_cache_ttl_s
            ),
        ),
    ]
}

/// What a report says beside what the recorder saw.
struct ReportParts {
    scenario: &'static str,
    title: String,
    driver: &'static str,
    started_utc: String,
    configuration: Vec<(String, String)>,
    backend: String,
    /// The earlier goose JSON the deltas are against.
    baseline: Option<PathBuf>,
    baselines: Option<baseline::Baselines>,
    cache: Option<CacheFigures>,
    /// The buyers' retries, in the runs that had a sale.
    retries: Option<Retries>,
}

/// goose's own report files of a run, in its folder.
fn goose_files(dir: &Path) -> Vec<String> {
    [GOOSE_JSON, GOOSE_MD, GOOSE_HTML].iter().map(|name| dir.join(name).to_string_lossy().into_owned()).collect()
}

/// Writes a scenario's report folder and returns what the run produced.
fn write_report(
    dir: PathBuf,
    parts: ReportParts,
    recorder: &Recorder,
    metrics: &GooseMetrics,
    check: CheckReport,
) -> anyhow::Result<RunOutcome> {
    let series = recorder.series();
    let active_s = recorder.active().as_secs_f64();
    let report = ScenarioReport {
        scenario: parts.scenario.to_owned(),
        title: parts.title,
        driver: parts.driver.to_owned(),
        started_utc: parts.started_utc,
        configuration: parts.configuration,
        machine: Machine::describe(),
        backend: parts.backend,
        active_s,
        start_up_s: recorder.start_up().map(|start_up| start_up.as_secs_f64()),
        rows: ScenarioReport::rows(&series, active_s),
        all_latency_us: crate::hgrm::percentile_summary(&recorder.all_latency()),
        timeline: recorder.timeline(),
        check: check.clone(),
        baseline: parts.baseline.map(|path| path.to_string_lossy().into_owned()),
        goose_requests: metrics.requests.values().map(|r| r.success_count + r.fail_count).sum(),
        goose_duration_s: metrics.duration,
        baselines: parts.baselines,
        cache: parts.cache,
        retries: parts.retries,
    };
    let histograms: Vec<_> =
        series.into_iter().map(|((route, outcome), series)| (route, outcome, series.latency)).collect();
    report::write(&dir, &report, &histograms)?;
    Ok(RunOutcome { dir, check, report })
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
    driver_threads: usize,
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
        driver_threads,
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
                "buy with an Idempotency-Key, retry the same key on 503/429/in-flight or no answer up to {} \
                 attempts (pausing as Retry-After says, at most {} s, else {} ms × attempt, at most {} ms); winners \
                 replay the key once; one winner in {} tries a second key",
                sale::MAX_ATTEMPTS,
                sale::MAX_RETRY_AFTER.as_secs(),
                sale::RETRY_PAUSE.as_millis(),
                sale::MAX_RETRY_PAUSE.as_millis(),
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
    if let Some(pause) = options.redis_pause {
        rows.push((
            "FAULT".to_owned(),
            format!("Redis paused (SIGSTOP) at the first answer, resumed {} ms later", pause.as_millis()),
        ));
    }
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
    create_named_product(base_url, admin_cookie, "Load-test drop", stock, one_per_user).await
}

/// Creates a product over the API, as an administrator would.
async fn create_named_product(
    base_url: &str,
    admin_cookie: &str,
    name: &str,
    stock: i64,
    one_per_user: bool,
) -> anyhow::Result<Uuid> {
    let response = reqwest_client()?
        .post(format!("{base_url}/api/v1/products"))
        .header("cookie", admin_cookie)
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "name": name,
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
