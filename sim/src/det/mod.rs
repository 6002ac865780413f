//! Deterministic mode (`--mode det`): the same plan, buyers, behaviours and checker as
//! real mode, on the server's emulated stores (`memory` feature: Redis with the project's
//! Lua scripts on embedded Lua 5.1, MongoDB with its unique indexes), with N server
//! instances in this process whose routers are called directly, on one thread and a
//! paused, virtual clock. Every id and random choice comes from streams seeded by the
//! plan, and nothing is iterated in hash order, so a seed run twice gives the same
//! history, byte for byte ([`history_hash`], `--check-determinism`).
//!
//! What differs from real mode, and why, is in `system-design/simulation.md`: no buyer
//! goes through the HTTP login flow (password hashing runs on blocking threads, which a
//! paused clock does not wait for), and faults are done at the store seam ([`faults`]).

mod clock;
mod coverage;
mod faults;
mod instances;
pub mod shrink;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flashsale::auth::extract::Role;
use flashsale::auth::session::COOKIE_NAME;
use flashsale::auth::users;
use flashsale::clock::{Ids, SeededEntropy};
use flashsale::config::Config;
use flashsale::db::memory::MemoryDb;
use flashsale::redis::memory::MemoryRedis;
use flashsale::startup::build_state;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use clock::{DET_EPOCH_MS, VirtualClock};
pub use coverage::Coverage;
pub use faults::DetTargets;
pub use instances::DetInstances;

use crate::buyers::{self, Buyer, Shared};
use crate::checker::{self, Identities};
use crate::history::{History, Recorder};
use crate::plan::Plan;
use crate::runner::{self, DATABASE, KEY_PREFIX, OPENING_LEAD, RunOutcome, RunSettings, Timings};
use crate::transport::{Method, SimRequest, Transport};

/// An Argon2id hash every simulated user shares (of "correct horse battery staple"). No
/// deterministic buyer logs in with a password, so it is never verified; computing one
/// would cost more than the rest of a small run.
const SHARED_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Zmxhc2hzYWxlLXRlc3RzIQ$n6G8OUJIzlw55413TwwqIk52A+GKvY1WGPxkqXIqSOg";

/// Each instance's clock is off by up to this much (drawn from the seed) from the
/// administrator's, as the clocks of separate machines are; the checker allows for it.
const MAX_CLOCK_OFFSET_MS: i64 = checker::CLOCK_SKEW_MS as i64;

/// Runs `settings.plan` deterministically on a runtime of its own (one thread, paused
/// clock) and checks it. Blocking: call it outside async code.
pub fn run(settings: &RunSettings) -> anyhow::Result<RunOutcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("building the deterministic runtime")?;
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(play(settings));
    drop(runtime);
    let (ids, history, final_state, mut timings, before_asks) = outcome?;
    timings.total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let plan = settings.plan.clone();
    let report = checker::check(&plan, &ids, &history, &final_state).with_earlier(before_asks);
    Ok(RunOutcome {
        plan_hash: plan.hash(),
        replay_command: format!(
            "{} --mode det",
            runner::with_plan_file(
                runner::replay_command(&plan, settings.backend, settings.broken.as_deref()),
                settings
            )
        ),
        plan,
        ids,
        history,
        final_state,
        report,
        timings,
        broken: settings.broken.clone(),
    })
}

/// The SHA-256 of the history's JSON: equal for two runs exactly when their histories
/// are byte-identical.
pub fn history_hash(history: &History) -> String {
    let bytes = serde_json::to_vec(history).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// Where two histories of one seed first differ: the first operation (or fault event)
/// that is not the same in both, with both versions. `None` when they are identical.
pub fn first_divergence(a: &History, b: &History) -> Option<String> {
    let ops = a.ops.iter().zip(&b.ops).position(|(x, y)| x != y);
    if let Some(index) = ops {
        return Some(format!("operation {index}: {:?} against {:?}", a.ops[index], b.ops[index]));
    }
    if a.ops.len() != b.ops.len() {
        return Some(format!(
            "operation {}: one run has {} operations, the other {}",
            a.ops.len().min(b.ops.len()),
            a.ops.len(),
            b.ops.len()
        ));
    }
    let faults = a.faults.iter().zip(&b.faults).position(|(x, y)| x != y);
    if let Some(index) = faults {
        return Some(format!("fault event {index}: {:?} against {:?}", a.faults[index], b.faults[index]));
    }
    if a.faults.len() != b.faults.len() {
        return Some(format!("fault events: {} against {}", a.faults.len(), b.faults.len()));
    }
    let events = a.stock_events.iter().zip(&b.stock_events).position(|(x, y)| x != y);
    if let Some(index) = events {
        return Some(format!("stock event {index}: {:?} against {:?}", a.stock_events[index], b.stock_events[index]));
    }
    if a.stock_events.len() != b.stock_events.len() {
        return Some(format!("stock events: {} against {}", a.stock_events.len(), b.stock_events.len()));
    }
    (history_hash(a) != history_hash(b)).then(|| "the serialised histories differ".to_owned())
}

/// Names of a run's stores in the process-wide registries, unique per run.
fn store_name(seed: u64) -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("det-{seed}-{run}")
}

async fn play(
    settings: &RunSettings,
) -> anyhow::Result<(Identities, History, checker::FinalState, Timings, checker::Report)> {
    let plan = &settings.plan;
    let seed = plan.options.seed;
    let origin = tokio::time::Instant::now();
    let name = store_name(seed);
    let store_clock = Arc::new(VirtualClock::new(origin, 0));
    let redis = MemoryRedis::with_seed(store_clock.clone(), seed);
    MemoryRedis::register(&name, &redis);
    // Each instance reaches Redis through a path of its own, which a slow-link fault
    // slows for that instance alone.
    let links: Vec<MemoryRedis> = (0..plan.options.instances)
        .map(|instance| {
            let link = redis.with_link();
            MemoryRedis::register(&link_name(&name, instance), &link);
            link
        })
        .collect();
    let result = play_on(settings, plan, &name, &redis, &links, origin).await;
    for instance in 0..links.len() {
        MemoryRedis::unregister(&link_name(&name, instance));
    }
    MemoryRedis::unregister(&name);
    MemoryDb::forget(&name);
    result
}

/// The registry name of one instance's path to the run's Redis.
fn link_name(name: &str, instance: usize) -> String {
    format!("{name}-instance-{instance}")
}

fn config(name: &str, settings: &RunSettings) -> Config {
    let url = format!("memory://{name}");
    let mut config = Config::for_local(&url, &url, DATABASE, KEY_PREFIX);
    config.trust_forwarded_for = true;
    // Only the dummy hash of each instance is ever computed here: the cheapest Argon2id.
    config.argon2_m_kib = 8;
    config.argon2_t = 1;
    config.argon2_p = 1;
    if let Some(configure) = &settings.configure {
        configure(&mut config);
    }
    config
}

async fn play_on(
    settings: &RunSettings,
    plan: &Plan,
    name: &str,
    redis: &MemoryRedis,
    links: &[MemoryRedis],
    origin: tokio::time::Instant,
) -> anyhow::Result<(Identities, History, checker::FinalState, Timings, checker::Report)> {
    let seed = plan.options.seed;
    let instance_config = config(name, settings);
    let mut admin_config = instance_config.clone();
    admin_config.background_tasks = false;
    let admin_ids = Ids::new(Arc::new(VirtualClock::new(origin, 0)), Arc::new(SeededEntropy::new(seed ^ u64::MAX)));
    let admin = build_state(admin_config, admin_ids).await.context("the simulator's own handle")?;
    let mongo = MemoryDb::named(name, DATABASE, Duration::from_millis(instance_config.mongo_op_timeout_ms));

    let mut offsets = rand_chacha::ChaCha8Rng::seed_from_u64(seed.rotate_left(17));
    let clocks = (0..plan.options.instances)
        .map(|_| Arc::new(VirtualClock::new(origin, offsets.random_range(-MAX_CLOCK_OFFSET_MS..=MAX_CLOCK_OFFSET_MS))))
        .collect();
    let configs = (0..plan.options.instances)
        .map(|instance| {
            let mut config = instance_config.clone();
            config.redis_url = format!("memory://{}", link_name(name, instance));
            config
        })
        .collect();
    let instances = DetInstances::start(configs, clocks, seed).await?;
    let targets = DetTargets { redis: redis.clone(), links: links.to_vec(), mongo, instances: instances.clone() };
    let result = sale(plan, &admin, &instances, targets).await;
    instances.stop_all();
    result.map(|(ids, mut history, final_state, timings, before_asks)| {
        history.server = instances.tally();
        (ids, history, final_state, timings, before_asks)
    })
}

async fn sale(
    plan: &Plan,
    admin: &flashsale::state::AppState,
    instances: &Arc<DetInstances>,
    targets: DetTargets,
) -> anyhow::Result<(Identities, History, checker::FinalState, Timings, checker::Report)> {
    let setup_started = tokio::time::Instant::now();
    let transport = Transport::InProcess(instances.clone());
    let seed = plan.options.seed;
    let emails: Vec<String> =
        plan.buyers.iter().map(|b| format!("buyer{}-{seed}@sim.flashsale.test", b.index)).collect();
    let made = users::create_users_with_hash(admin, &emails, SHARED_PASSWORD_HASH, Role::Buyer).await?;
    let mut sessions = Vec::with_capacity(made.len());
    for user in &made {
        sessions.push((user.uuid()?, flashsale::auth::session::create_verified_session_for(admin, user).await?));
    }
    let admin_user =
        users::create_user_with_hash(admin, "admin@sim.flashsale.test", SHARED_PASSWORD_HASH, Role::Admin).await?;
    let admin_session = flashsale::auth::session::create_verified_session(admin, admin_user).await?;
    let opening_wall_ms = admin.ids.now_ms() + i64::try_from(OPENING_LEAD.as_millis()).unwrap_or(0);
    let opening = tokio::time::Instant::now() + OPENING_LEAD;
    let mut product_ids = Vec::new();
    for product in &plan.products {
        let starts = opening_wall_ms + i64::try_from(product.opens_at_ms).unwrap_or(i64::MAX);
        product_ids
            .push(create_product(&transport, &admin_session, product.stock, product.one_per_user, starts).await?);
    }
    let ids =
        Identities { product_ids: product_ids.clone(), user_ids: sessions.iter().map(|(user, _)| *user).collect() };
    let setup_ms = elapsed_ms(setup_started);
    tokio::time::sleep_until(opening).await;

    let recorder = Arc::new(Recorder::new(opening));
    let watch_stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(runner::watch_stock_events(
        admin.clone(),
        product_ids.clone(),
        recorder.clone(),
        watch_stop.clone(),
    ));
    let fault_task = tokio::spawn(faults::run_schedule(targets.clone(), plan.faults.clone(), recorder.clone()));
    let shared = Arc::new(Shared {
        transport,
        recorder: recorder.clone(),
        product_ids: product_ids.clone(),
        admin: admin.clone(),
        seed,
        deadline_ms: plan.options.duration_ms,
        admin_user,
        admin_session: std::sync::Mutex::new(admin_session.clone()),
        unfinished_cancellations: std::sync::Mutex::default(),
    });
    let tasks: Vec<_> = plan
        .buyers
        .iter()
        .zip(sessions)
        .map(|(buyer_plan, (user_id, session))| {
            tokio::spawn(buyers::play(shared.clone(), Buyer { plan: buyer_plan.clone(), user_id, session }))
        })
        .collect();
    let restocks = buyers::spawn_admin(&shared, plan);
    for task in tasks.into_iter().chain(restocks) {
        let _ = task.await;
    }
    let _ = fault_task.await;
    let sale_ms = recorder.now_ms();

    faults::heal_all(&targets).await?;
    let unanswered = buyers::finish_cancellations(&shared).await;
    anyhow::ensure!(unanswered == 0, "{unanswered} cancellations got no answer after every fault healed");
    let drain_started = tokio::time::Instant::now();
    let drained = runner::drain(admin, &product_ids).await;
    // The sale as it ended, checked before the buyers ask again: an ask that buys a
    // fresh unit must not hide what the sale left (a 202 lost, a unit never sold).
    let left = runner::read_final_state(admin, &product_ids, drained, elapsed_ms(drain_started)).await?;
    let before_asks = checker::check(plan, &ids, &recorder.snapshot(), &left);
    buyers::ask_again(&shared, &plan.buyers, &ids.user_ids, buyers::unsettled_keys(&recorder.snapshot())).await;
    let drained = drained && runner::drain(admin, &product_ids).await;
    let drain_ms = elapsed_ms(drain_started);
    watch_stop.cancel();
    let _ = watcher.await;
    let final_state = runner::read_final_state(admin, &product_ids, drained, drain_ms).await?;
    let timings = Timings { setup_ms, sale_ms, drain_ms, total_ms: 0 };
    Ok((ids, recorder.snapshot(), final_state, timings, before_asks))
}

/// Virtual milliseconds since `since`.
fn elapsed_ms(since: tokio::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn create_product(
    transport: &Transport,
    admin_session: &str,
    stock: i64,
    one_per_user: bool,
    starts_at_ms: i64,
) -> anyhow::Result<Uuid> {
    let body = serde_json::to_vec(&serde_json::json!({
        "name": "Simulated drop",
        "description": "A product of the simulated sale",
        "price_cents": 9_900,
        "stock": stock,
        "one_per_user": one_per_user,
        "sale_starts_at_ms": starts_at_ms,
    }))?;
    let request = SimRequest {
        method: Method::Post,
        path: "/api/v1/products".to_owned(),
        headers: vec![
            ("cookie", format!("{COOKIE_NAME}={admin_session}")),
            ("content-type", "application/json".to_owned()),
        ],
        body: body.into(),
    };
    let answer = transport.send(0, request).await.map_err(|lost| anyhow::anyhow!("creating a product: {lost:?}"))?;
    anyhow::ensure!(answer.status == 201, "creating a product answered {}", answer.status);
    let value: serde_json::Value = serde_json::from_slice(&answer.body)?;
    value["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).context("product id")
}
