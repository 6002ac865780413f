//! The server's own CPU per request on the sale's hottest paths, without sockets: the whole
//! router (every middleware layer, the extractors, the handler and its answer) called as a
//! tower service on one thread. The load generator's baselines measure the same paths over
//! loopback TCP, where the kernel takes about half of the server's CPU and the machine's
//! noise the rest of the precision; this isolates what the server's code costs, so a change
//! to the stack shows as nanoseconds.
//!
//! Measures, alternating, [`ROUNDS`] rounds of [`REQUESTS`] requests each:
//! - `healthz`: `GET /healthz` (the stack around a static answer);
//! - `sold_out`: `POST /api/v1/user/buy/{id}` of a known session on a product this instance
//!   remembers sold out, each request with a new Idempotency-Key (a sale's flood);
//!
//! each without a tracing subscriber (as the load generator's in-process server runs) and
//! with the one the `flashsale` binary installs by default (`info`, formatted; written to
//! nowhere here), whose per-request span is part of what production pays.
//!
//! Run: `cargo bench -p flashsale --bench http_stack` (backends as the tests start them:
//! local processes, `scripts/install-deps` first; `FLASHSALE_BACKEND=containers` for Docker).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use flashsale::auth::session::COOKIE_NAME;
use flashsale::clock::Ids;
use flashsale::config::Config;
use flashsale::startup::{build_state, install_crypto_provider, router};
use flashsale_stack::{BackendKind, RedisPersistence, start_backends};
use tower::ServiceExt;
use uuid::Uuid;

// The allocator of the server's binary, so that allocations cost here what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests of one round of one measure.
const REQUESTS: u32 = 100_000;
/// Rounds of each measure, alternating.
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    install_crypto_provider();
    let backends = start_backends(BackendKind::from_env()?, RedisPersistence::None)
        .await
        .context("starting the backends (for local processes, run scripts/install-deps first)")?;
    let mut config = Config::for_local(&backends.redis_url(), &backends.mongo_url(), "bench", "bench:");
    config.background_tasks = false;
    let app = build_state(config, Ids::system()).await?;
    let product = Uuid::now_v7();
    let (session, user) = ("bench-session", Uuid::now_v7());
    app.sold_out.remember(product, HashSet::new());
    app.known_sessions.remember(session, user);
    let router = router(app);
    let peer = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000)));
    let cookie = format!("{COOKIE_NAME}={session}");
    let buy_path = format!("/api/v1/user/buy/{product}");

    let healthz = || Request::get("/healthz").header("host", "bench").body(Body::empty());
    let mut key = 0_u64;
    let mut sold_out = || {
        key += 1;
        Request::post(buy_path.as_str())
            .header("host", "bench")
            .header("cookie", cookie.as_str())
            .header("idempotency-key", format!("bench-{key}"))
            .body(Body::empty())
    };
    let mut figures: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        for logged in [false, true] {
            // The runtime has this one thread: the default holds for every request of the round.
            let _logs = logged.then(|| tracing::subscriber::set_default(production_subscriber()));
            let offset = if logged { 2 } else { 0 };
            figures[offset].push(round(&router, peer, StatusCode::OK, &mut || healthz()).await?);
            figures[offset + 1].push(round(&router, peer, StatusCode::CONFLICT, &mut sold_out).await?);
        }
    }
    let figures = figures.map(|mut ns| {
        ns.sort_by(f64::total_cmp);
        ns
    });
    let median = |ns: &[f64]| ns[ns.len() / 2];
    println!(
        "measure              median ns/request   range ns/request   ({ROUNDS} rounds of {REQUESTS}, one thread, no sockets)"
    );
    let names = ["healthz", "sold_out", "healthz, logged", "sold_out, logged"];
    for (name, ns) in names.iter().zip(&figures) {
        println!("{name:<20} {:>18.0}   {:>6.0} to {:<6.0}", median(ns), ns[0], ns[ns.len() - 1]);
    }
    println!("sold_out ÷ healthz (time): {:.2}×", median(&figures[1]) / median(&figures[0]));
    println!(
        "logged ÷ not (time): healthz {:.2}×, sold_out {:.2}×",
        median(&figures[2]) / median(&figures[0]),
        median(&figures[3]) / median(&figures[1])
    );
    Ok(())
}

/// The `flashsale` binary's default subscriber (`info`, formatted text), writing nowhere.
fn production_subscriber() -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::sink)
        .finish()
}

/// Nanoseconds per request of one round; fails on any other status than `expected`.
async fn round(
    router: &axum::Router,
    peer: ConnectInfo<SocketAddr>,
    expected: StatusCode,
    make: &mut dyn FnMut() -> axum::http::Result<Request<Body>>,
) -> anyhow::Result<f64> {
    let mut spent = Duration::ZERO;
    for _ in 0..REQUESTS {
        let mut request = make()?;
        request.extensions_mut().insert(peer);
        let started = Instant::now();
        let response = router.clone().oneshot(request).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        spent += started.elapsed();
        anyhow::ensure!(status == expected, "answered {status}, not {expected}: {body:?}");
    }
    Ok(spent.as_nanos() as f64 / f64::from(REQUESTS))
}
