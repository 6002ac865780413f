//! Real mode: one plan played against real backends and real server instances.
//!
//! 1. Start the world (`world`): backends, fault proxies, N instances.
//! 2. Before the sale: users and OTP-verified sessions through the server crate's code
//!    (one password hash for all), a share of buyers through the full HTTP
//!    register → login → OTP flow reading codes from the outbox; products created over
//!    HTTP by an admin, each with its sale opening at its planned moment.
//! 3. The sale: every buyer a task (`buyers`), the fault schedule a task (`faults`),
//!    progress printed every few seconds.
//! 4. Heal every fault, let the reconciler drain (bounded), read the final state of
//!    Redis and MongoDB, stop everything, and check (`checker`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale::auth::extract::Role;
use flashsale::auth::session::COOKIE_NAME;
use flashsale::auth::users;
use flashsale::config::Config;
use flashsale::redis::scripts;
use flashsale::sale::orders::{OrderStatus, UnitField};
use flashsale::state::AppState;
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::buyers::{self, Buyer, Shared};
use crate::checker::{self, FinalProduct, FinalState, Identities, RedisSale, StoredOrder};
use crate::faults::{self, Targets};
use crate::history::{History, OpKind, Outcome, Recorder};
use crate::plan::{Fault, Plan, Topology};
use crate::transport::Transport;
use crate::world::{BackendChoice, Backends, Instances, admin_app};

/// Password of every simulated user (hashed once, at the production cost).
const SIM_PASSWORD: &str = "simulated buyer password";
/// Sessions made at once before the sale.
const SETUP_CONCURRENCY: usize = 64;
/// HTTP login flows run at once (each hashes a password twice).
const HTTP_LOGIN_CONCURRENCY: usize = 8;
/// Attempts of one buyer's HTTP register → login → OTP flow before the setup gives up.
/// A login at the production Argon2 cost on a busy 2-core machine can outlast one
/// request's timeout (seed 7 ended its run so, twice): an unknown outcome is retried,
/// never the end of the run. The flow is safe to repeat (register answers 202 whether
/// or not the account exists; a new login sends a new code, and the newest is used).
const HTTP_LOGIN_ATTEMPTS: u32 = 6;
/// Bound on one request of that flow: the password hash queues behind the others'.
const HTTP_LOGIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause before the next attempt (times the attempt number).
const HTTP_LOGIN_BACKOFF: Duration = Duration::from_millis(250);
/// Time between the end of the setup and the opening of the first sale.
pub(crate) const OPENING_LEAD: Duration = Duration::from_millis(1_500);
/// Bound on the reconciler draining every pending set after the faults healed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at the pending sets.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// Interval of the live progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Database and key prefix of a simulated deployment.
pub(crate) const DATABASE: &str = "flashsale_sim";
pub(crate) const KEY_PREFIX: &str = "sim";

/// A change to every server instance's configuration (how a deliberately broken
/// variant is selected, under the `broken` feature).
pub type ConfigHook = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// How to run one plan.
#[derive(Clone)]
pub struct RunSettings {
    pub plan: Plan,
    /// Print progress lines on stderr.
    pub progress: bool,
    /// Where the backends run.
    pub backend: BackendChoice,
    /// The broken variant the hook selects (`--broken <name>`), for the replay command.
    pub broken: Option<String>,
    pub configure: Option<ConfigHook>,
    /// The file the plan was read from (`--plan`), for the replay command.
    pub plan_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings").field("plan", &self.plan.hash()).field("broken", &self.broken).finish()
    }
}

/// Wall-clock phases of a run, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub setup_ms: u64,
    pub sale_ms: u64,
    pub drain_ms: u64,
    pub total_ms: u64,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub plan: Plan,
    pub plan_hash: String,
    pub replay_command: String,
    pub ids: Identities,
    pub history: History,
    pub final_state: FinalState,
    pub report: checker::Report,
    pub timings: Timings,
    /// The broken variant the server ran with, if any.
    pub broken: Option<String>,
}

/// A replay command that names the plan's file, when the plan came from one.
pub fn with_plan_file(command: String, settings: &RunSettings) -> String {
    match &settings.plan_file {
        Some(path) => format!("{command} --plan {}", path.display()),
        None => command,
    }
}

/// The command that replays a plan.
pub fn replay_command(plan: &Plan, backend: BackendChoice, broken: Option<&str>) -> String {
    let o = &plan.options;
    let topology = match o.topology {
        Topology::Single => "single",
        Topology::Cluster => "cluster",
    };
    let faults = serde_json::to_value(o.fault_mix).ok().and_then(|v| v.as_str().map(|s| s.replace('_', "-")));
    let mut command = format!(
        "cargo run --release -p flashsale-sim{} -- run --seed {} --buyers {} --products {} --stock {} --instances {} --topology {topology} --faults {} --duration-ms {}",
        match (broken.is_some(), backend) {
            (false, BackendChoice::Local) => "",
            (true, BackendChoice::Local) => " --features broken",
            (false, BackendChoice::Containers) => " --features containers",
            (true, BackendChoice::Containers) => " --features broken,containers",
        },
        o.seed,
        o.buyers,
        o.products,
        o.stock_per_product,
        o.instances,
        faults.unwrap_or_default(),
        o.duration_ms
    );
    if o.partition {
        command.push_str(" --partition");
    }
    if backend == BackendChoice::Containers {
        command.push_str(" --backend containers");
    }
    if let Some(variant) = broken {
        command.push_str(&format!(" --broken {variant}"));
    }
    command
}

fn progress(settings: &RunSettings, line: impl AsRef<str>) {
    if settings.progress {
        eprintln!("[sim] {}", line.as_ref());
    }
}

/// Plays the plan and checks it.
pub async fn run(settings: RunSettings) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let plan = settings.plan.clone();
    let broken_name = settings.broken.clone();

    progress(
        &settings,
        format!("seed {} plan hash {}: starting {:?} backends", plan.options.seed, plan.hash(), plan.options.topology),
    );
    let mut backends = Backends::start(plan.options.topology, settings.backend).await?;
    if plan.faults.iter().any(|fault| matches!(fault.fault, Fault::SlowLink { .. })) {
        backends.add_links(plan.options.instances).await?;
    }
    let mut instance_config =
        Config::for_local(&backends.proxied_redis_url(), &backends.proxied_mongo_url(), DATABASE, KEY_PREFIX);
    // Every buyer has its own address, as behind a proxy that sets X-Forwarded-For.
    instance_config.trust_forwarded_for = true;
    if let Some(configure) = &settings.configure {
        configure(&mut instance_config);
    }
    let mut admin_config =
        Config::for_local(&backends.direct_redis_url(), &backends.direct_mongo_url(), DATABASE, KEY_PREFIX);
    admin_config.background_tasks = false;
    let admin = admin_app(admin_config, plan.options.seed).await?;
    let configs = (0..plan.options.instances)
        .map(|instance| Config { redis_url: backends.instance_redis_url(instance), ..instance_config.clone() })
        .collect();
    let instances = Instances::start(configs, plan.options.seed).await?;
    let backends = Arc::new(Mutex::new(backends));

    let result = play(&settings, &plan, &admin, &instances, &backends, started).await;
    instances.stop_all().await;
    drop(backends);
    let (ids, history, final_state, mut timings, before_asks) = result?;
    timings.total_ms = elapsed_ms(started);
    let report = checker::check(&plan, &ids, &history, &final_state).with_earlier(before_asks);
    Ok(RunOutcome {
        plan_hash: plan.hash(),
        replay_command: with_plan_file(replay_command(&plan, settings.backend, broken_name.as_deref()), &settings),
        plan,
        ids,
        history,
        final_state,
        report,
        timings,
        broken: broken_name,
    })
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn play(
    settings: &RunSettings,
    plan: &Plan,
    admin: &AppState,
    instances: &Arc<Instances>,
    backends: &Arc<Mutex<Backends>>,
    started: Instant,
) -> anyhow::Result<(Identities, History, FinalState, Timings, checker::Report)> {
    let http = reqwest::Client::builder()
        .timeout(buyers::REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;

    progress(settings, format!("creating {} buyers", plan.buyers.len()));
    let password_hash = flashsale::auth::password::hash_password(admin, SIM_PASSWORD.to_owned()).await?;
    let sessions = create_buyers(plan, admin, instances, &http, &password_hash).await?;
    let user_ids: Vec<Uuid> = sessions.iter().map(|(user, _)| *user).collect();

    let admin_user =
        users::create_user_with_hash(admin, "admin@sim.flashsale.test", &password_hash, Role::Admin).await?;
    let admin_session = flashsale::auth::session::create_verified_session(admin, admin_user).await?;
    let opening_wall_ms = admin.ids.now_ms() + i64::try_from(OPENING_LEAD.as_millis()).unwrap_or(0);
    let opening = Instant::now() + OPENING_LEAD;
    let mut product_ids = Vec::new();
    for product in &plan.products {
        let starts = opening_wall_ms + i64::try_from(product.opens_at_ms).unwrap_or(i64::MAX);
        product_ids
            .push(create_product(&http, instances, &admin_session, product.stock, product.one_per_user, starts).await?);
    }
    let ids = Identities { product_ids: product_ids.clone(), user_ids };
    let setup_ms = elapsed_ms(started);
    progress(settings, format!("setup done in {setup_ms} ms; the first sale opens"));
    tokio::time::sleep_until(opening.into()).await;

    // The sale.
    // The history's clock starts at the planned opening, the moment the plan's times
    // (and the products' openings) count from, even when the sleep above woke late.
    let recorder = Arc::new(Recorder::new(opening.into()));
    let watch_stop = tokio_util::sync::CancellationToken::new();
    let watcher =
        tokio::spawn(watch_stock_events(admin.clone(), product_ids.clone(), recorder.clone(), watch_stop.clone()));
    let targets = Targets { backends: backends.clone(), instances: instances.clone() };
    let fault_task = tokio::spawn(faults::run_schedule(targets.clone(), plan.faults.clone(), recorder.clone()));
    let shared = Arc::new(Shared {
        transport: Transport::Http { client: http, instances: instances.clone() },
        recorder: recorder.clone(),
        product_ids: product_ids.clone(),
        admin: admin.clone(),
        seed: plan.options.seed,
        deadline_ms: plan.options.duration_ms,
        admin_user,
        admin_session: std::sync::Mutex::new(admin_session.clone()),
        unfinished_cancellations: std::sync::Mutex::default(),
    });
    let mut tasks = Vec::new();
    for (buyer_plan, (user_id, session)) in plan.buyers.iter().zip(sessions) {
        let buyer = Buyer { plan: buyer_plan.clone(), user_id, session };
        tasks.push(tokio::spawn(buyers::play(shared.clone(), buyer)));
    }
    tasks.extend(buyers::spawn_admin(&shared, plan));
    let progress_task = settings.progress.then(|| {
        let recorder = recorder.clone();
        let total = plan.buyers.len();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let (ok, fail, info) = recorder.counts();
                eprintln!(
                    "[sim] t={:>6.1}s  {} requests: {ok} ok, {fail} fail, {info} info  ({total} buyers)",
                    recorder.now_ms() as f64 / 1000.0,
                    recorder.op_count()
                );
            }
        })
    });
    for task in tasks {
        let _ = task.await;
    }
    let _ = fault_task.await;
    let sale_ms = recorder.now_ms();
    if let Some(task) = progress_task {
        task.abort();
    }

    progress(settings, "healing every fault and draining the reconciler");
    faults::heal_all(&targets).await?;
    let unanswered = buyers::finish_cancellations(&shared).await;
    anyhow::ensure!(unanswered == 0, "{unanswered} cancellations got no answer after every fault healed");
    let drain_started = Instant::now();
    let drained = drain(admin, &product_ids).await;
    // The sale as it ended, checked before the buyers ask again: an ask that buys a
    // fresh unit must not hide what the sale left (a 202 lost, a unit never sold).
    let left = read_final_state(admin, &product_ids, drained, elapsed_ms(drain_started)).await?;
    let before_asks = checker::check(plan, &ids, &recorder.snapshot(), &left);
    buyers::ask_again(&shared, &plan.buyers, &ids.user_ids, buyers::unsettled_keys(&recorder.snapshot())).await;
    let drained = drained && drain(admin, &product_ids).await;
    let drain_ms = elapsed_ms(drain_started);
    watch_stop.cancel();
    let _ = watcher.await;
    let final_state = read_final_state(admin, &product_ids, drained, drain_ms).await?;
    progress(settings, format!("drained: {drained} in {drain_ms} ms"));
    let timings = Timings { setup_ms, sale_ms, drain_ms, total_ms: 0 };
    Ok((ids, recorder.snapshot(), final_state, timings, before_asks))
}

/// Users and sessions for every buyer, in plan order.
async fn create_buyers(
    plan: &Plan,
    admin: &AppState,
    instances: &Arc<Instances>,
    http: &reqwest::Client,
    password_hash: &str,
) -> anyhow::Result<Vec<(Uuid, String)>> {
    let seed = plan.options.seed;
    let email = |index: usize| format!("buyer{index}-{seed}@sim.flashsale.test");
    let direct_buyers: Vec<usize> = plan.buyers.iter().filter(|b| !b.via_http_login).map(|b| b.index).collect();
    let emails: Vec<String> = direct_buyers.iter().map(|index| email(*index)).collect();
    let made = users::create_users_with_hash(admin, &emails, password_hash, Role::Buyer).await?;
    let direct = futures::stream::iter(direct_buyers.into_iter().zip(made).map(|(index, user)| async move {
        let session = flashsale::auth::session::create_verified_session_for(admin, &user).await?;
        anyhow::Ok((index, user.uuid()?, session))
    }))
    .buffer_unordered(SETUP_CONCURRENCY)
    .collect::<Vec<_>>();
    let over_http = futures::stream::iter(plan.buyers.iter().filter(|b| b.via_http_login).map(|buyer| async move {
        let (user, session) = http_login(admin, instances, http, &email(buyer.index), buyer.index).await?;
        anyhow::Ok((buyer.index, user, session))
    }))
    .buffer_unordered(HTTP_LOGIN_CONCURRENCY)
    .collect::<Vec<_>>();
    let (direct, over_http) = tokio::join!(direct, over_http);
    let mut all: Vec<Option<(Uuid, String)>> = vec![None; plan.buyers.len()];
    for made in direct.into_iter().chain(over_http) {
        let (index, user, session) = made?;
        all[index] = Some((user, session));
    }
    all.into_iter().map(|s| s.context("a buyer without a session")).collect()
}

/// The full HTTP flow, attempted up to [`HTTP_LOGIN_ATTEMPTS`] times: a timeout, a
/// reset or a 5xx/429 answer is an unknown outcome to retry, not a setup failure.
async fn http_login(
    admin: &AppState,
    instances: &Arc<Instances>,
    http: &reqwest::Client,
    email: &str,
    index: usize,
) -> anyhow::Result<(Uuid, String)> {
    let mut attempt = 1;
    loop {
        match http_login_once(admin, instances, http, email, index).await {
            Ok(made) => return Ok(made),
            Err(_) if attempt < HTTP_LOGIN_ATTEMPTS => {
                tokio::time::sleep(HTTP_LOGIN_BACKOFF * attempt).await;
                attempt += 1;
            }
            Err(err) => return Err(err.context(format!("HTTP login flow of {email}, {attempt} attempts"))),
        }
    }
}

/// The full HTTP flow once: register → login (a code goes to the outbox) → verify the code.
async fn http_login_once(
    admin: &AppState,
    instances: &Arc<Instances>,
    http: &reqwest::Client,
    email: &str,
    index: usize,
) -> anyhow::Result<(Uuid, String)> {
    let base = instances.url(index % instances.count()).context("instance down during setup")?;
    let ip = format!("10.200.{}.{}", (index >> 8) & 0xff, index & 0xff);
    let credentials = serde_json::json!({ "email": email, "password": SIM_PASSWORD });
    let registered = http
        .post(format!("{base}/api/v1/auth/register"))
        .timeout(HTTP_LOGIN_REQUEST_TIMEOUT)
        .header("x-forwarded-for", &ip)
        .json(&credentials)
        .send()
        .await?;
    anyhow::ensure!(registered.status().as_u16() == 202, "register answered {}", registered.status());
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .timeout(HTTP_LOGIN_REQUEST_TIMEOUT)
        .header("x-forwarded-for", &ip)
        .json(&credentials)
        .send()
        .await?;
    anyhow::ensure!(login.status().as_u16() == 200, "login answered {}", login.status());
    let pre_otp = session_cookie(&login).context("login set no session cookie")?;
    let code = latest_code(admin, email).await?.context("no code in the outbox")?;
    let verified = http
        .post(format!("{base}/api/v1/auth/verify-otp"))
        .timeout(HTTP_LOGIN_REQUEST_TIMEOUT)
        .header("x-forwarded-for", &ip)
        .header("cookie", format!("{COOKIE_NAME}={pre_otp}"))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await?;
    anyhow::ensure!(verified.status().as_u16() == 200, "verify-otp answered {}", verified.status());
    let session = session_cookie(&verified).context("verify-otp set no session cookie")?;
    let user = users::find_by_email(admin, &users::normalise_email(email)).await?.context("registered user missing")?;
    Ok((user.uuid()?, session))
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response.headers().get_all("set-cookie").iter().find_map(|value| {
        let value = value.to_str().ok()?;
        let pair = value.split(';').next()?;
        let (name, session) = pair.split_once('=')?;
        (name.trim() == COOKIE_NAME && !session.is_empty()).then(|| session.to_owned())
    })
}

/// The newest code the outbox holds for `email`.
async fn latest_code(admin: &AppState, email: &str) -> anyhow::Result<Option<String>> {
    let mut conn = admin.redis.clone();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(admin.keys.otp_outbox())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1_000)
        .query_async(&mut conn)
        .await?;
    Ok(entries
        .into_iter()
        .find(|(_, fields)| fields.get("email").map(String::as_str) == Some(email))
        .and_then(|(_, mut fields)| fields.remove("code")))
}

async fn create_product(
    http: &reqwest::Client,
    instances: &Arc<Instances>,
    admin_session: &str,
    stock: i64,
    one_per_user: bool,
    starts_at_ms: i64,
) -> anyhow::Result<Uuid> {
    let base = instances.url(0).context("instance 0 down during setup")?;
    let response = http
        .post(format!("{base}/api/v1/products"))
        .header("cookie", format!("{COOKIE_NAME}={admin_session}"))
        .json(&serde_json::json!({
            "name": "Simulated drop",
            "description": "A product of the simulated sale",
            "price_cents": 9_900,
            "stock": stock,
            "one_per_user": one_per_user,
            "sale_starts_at_ms": starts_at_ms,
        }))
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 201, "creating a product answered {}", response.status());
    let body: serde_json::Value = response.json().await?;
    body["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).context("product id")
}

/// Pause before the stock-event watcher subscribes again after losing Redis.
const WATCH_RESUBSCRIBE: Duration = Duration::from_millis(50);

/// Records every stock event (`stock_updated`, `sold_out`) published on the sale's
/// channel, as a client of the event stream would see it, until `stop`; subscribes
/// again whenever Redis drops the subscription (events published meanwhile are missed,
/// as a real subscriber misses them).
pub(crate) async fn watch_stock_events(
    admin: AppState,
    product_ids: Vec<Uuid>,
    recorder: Arc<Recorder>,
    stop: tokio_util::sync::CancellationToken,
) {
    use flashsale::events::{EventType, SaleEvent};
    let channel = admin.keys.events_channel();
    while !stop.is_cancelled() {
        let subscription = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            subscription = admin.redis.subscribe(&channel) => subscription,
        };
        if let Ok(mut payloads) = subscription {
            loop {
                let payload = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    payload = payloads.next() => payload,
                };
                let Some(payload) = payload else { break };
                let Ok(event) = serde_json::from_slice::<SaleEvent>(&payload) else { continue };
                if !matches!(event.event_type, EventType::StockUpdated | EventType::SoldOut) {
                    continue;
                }
                let product = product_ids.iter().position(|id| *id == event.product_id);
                if let (Some(product), Some(remaining)) = (product, event.remaining) {
                    recorder.stock_event(product, remaining);
                }
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_RESUBSCRIBE) => {}
        }
    }
}

/// Waits until every product's sale state is loaded, its pending set is empty and its
/// live stock has caught up with the stock its document records, and every deleted
/// product's sale state is gone (on tokio's clock: virtual time in deterministic mode).
pub(crate) async fn drain(admin: &AppState, product_ids: &[Uuid]) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let mut done = true;
        for id in product_ids {
            let recorded = flashsale::sale::product_store::find_product(admin, *id).await;
            match (redis_sale(admin, *id).await, recorded) {
                (Ok(None), Ok(Some(product))) if product.deleted => {}
                (Ok(Some(sale)), Ok(Some(product)))
                    if !product.deleted && sale.pending == 0 && sale.stock_total >= product.stock_total => {}
                _ => done = false,
            }
        }
        if done {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

async fn redis_sale(admin: &AppState, product_id: Uuid) -> anyhow::Result<Option<RedisSale>> {
    let keys = admin.keys.sale(product_id);
    let mut conn = admin.redis.clone();
    let Some(stock) = scripts::stock(&mut conn, &keys).await? else { return Ok(None) };
    let pending: i64 = redis::cmd("ZCARD").arg(&keys.pending).query_async(&mut conn).await?;
    let orders_held: i64 = redis::cmd("HLEN").arg(&keys.orders).query_async(&mut conn).await?;
    Ok(Some(RedisSale {
        stock_total: stock.stock_total,
        next_unit: stock.next_unit,
        free_count: stock.free_count,
        pending,
        orders_held,
    }))
}

pub(crate) async fn read_final_state(
    admin: &AppState,
    product_ids: &[Uuid],
    drained: bool,
    drain_ms: u64,
) -> anyhow::Result<FinalState> {
    let mut products = Vec::new();
    for id in product_ids {
        let orders = flashsale::sale::orders::orders_of_product(admin, *id)
            .await?
            .into_iter()
            .map(|doc| StoredOrder {
                unit: match doc.unit {
                    UnitField::Unit(unit) => Some(unit),
                    _ => None,
                },
                live: doc.status == OrderStatus::Confirmed,
                order_id: doc.id,
                user_id: doc.user_id,
            })
            .collect();
        let document = flashsale::sale::product_store::find_product(admin, *id).await?;
        let recorded_stock = document.as_ref().map(|p| p.stock_total);
        let deleted = document.is_some_and(|p| p.deleted);
        let revised_stock = flashsale::sale::product_store::head(admin, *id).await?.map(|p| p.stock_total);
        let redis = redis_sale(admin, *id).await?;
        products.push(FinalProduct { product_id: *id, orders, redis, recorded_stock, revised_stock, deleted });
    }
    Ok(FinalState { products, drained, drain_ms })
}

/// Counts of the buy outcomes, for the summary.
pub fn outcome_counts(history: &History) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for op in &history.ops {
        if matches!(op.kind, OpKind::Buy { .. }) {
            let label = match &op.outcome {
                Outcome::Ok { status, replayed: true, .. } => format!("{status} replayed"),
                Outcome::Ok { status, .. } => format!("{status}"),
                Outcome::Fail { status, problem } => format!("{status} {problem}"),
                Outcome::Info { reason, .. } => format!("info {reason}"),
                other => other.label(),
            };
            *counts.entry(label).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}
