//! Server instances of a deterministic run: N `App`s of the server crate in this process,
//! on the run's one thread, their routers called directly (no socket), their background
//! tasks (event subscriber, reconciler, Redis-restart watcher) spawned beside them.
//!
//! Every request an instance serves, and its background tasks, live in that instance's
//! `JoinSet`: killing the instance drops the set, so each of them stops at its next
//! await, between two store calls, as a killed process stops mid-request. The tasks the
//! server starts on its own (`App::spawn`: rebuild flights, the retry of an admin write's
//! live step) stop the same way when the kill cancels the instance's `halt` token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use flashsale::clock::{Ids, SeededEntropy};
use flashsale::config::Config;
use flashsale::startup::{build_state, router};
use flashsale::state::AppState;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::clock::VirtualClock;
use crate::buyers::REQUEST_TIMEOUT;
use crate::history::ServerTally;
use crate::transport::{Answer, Lost, Method, SimRequest};

/// Largest answer body read from a router (the API's answers are small).
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The peer address every in-process request comes from; buyers are told apart by the
/// `X-Forwarded-For` the instances trust, as in real mode.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);

/// One running instance.
struct Slot {
    app: AppState,
    router: Router,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

/// The instances of one deterministic run.
pub struct DetInstances {
    configs: Vec<Config>,
    clocks: Vec<Arc<VirtualClock>>,
    seed: u64,
    starts: AtomicU64,
    slots: Mutex<Vec<Option<Slot>>>,
    /// The counters of every instance that has stopped so far.
    tally: Mutex<ServerTally>,
}

impl DetInstances {
    /// Builds and starts every instance; instance `i` reads `clocks[i]`.
    pub async fn start(configs: Vec<Config>, clocks: Vec<Arc<VirtualClock>>, seed: u64) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(configs.len() == clocks.len(), "one clock per instance");
        let count = configs.len();
        let instances = Arc::new(Self {
            configs,
            clocks,
            seed,
            starts: AtomicU64::new(0),
            slots: Mutex::new((0..count).map(|_| None).collect()),
            tally: Mutex::new(ServerTally::default()),
        });
        for index in 0..count {
            instances.start_one(index).await?;
        }
        Ok(instances)
    }

    pub fn count(&self) -> usize {
        self.configs.len()
    }

    pub fn is_up(&self, index: usize) -> bool {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).get(index).is_some_and(Option::is_some)
    }

    /// The state of a running instance.
    pub fn app(&self, index: usize) -> Option<AppState> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).get(index)?.as_ref().map(|slot| slot.app.clone())
    }

    /// Starts (or starts again) instance `index`: a fresh state (its in-process caches
    /// empty, as a restarted process's), ids from a stream of its own.
    pub async fn start_one(&self, index: usize) -> anyhow::Result<()> {
        let config = self.configs.get(index).cloned().context("no such instance")?;
        let clock = self.clocks.get(index).cloned().context("no such instance")?;
        let start = self.starts.fetch_add(1, Ordering::Relaxed);
        let stream = self.seed ^ start.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let ids = Ids::new(clock, Arc::new(SeededEntropy::new(stream)));
        let app = build_state(config, ids).await.context("building an instance")?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(flashsale::events::run_subscriber(app.clone(), shutdown.clone()));
        if app.config.background_tasks {
            tasks.spawn(flashsale::sale::reconciler::run(app.clone(), shutdown.clone()));
            tasks.spawn(flashsale::sale::rebuild::watch_redis_restarts(app.clone(), shutdown.clone()));
        }
        let slot = Slot { router: router(app.clone()), app, tasks, shutdown };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slots.get_mut(index).and_then(Option::take) {
            self.stop(old, false);
        }
        if let Some(place) = slots.get_mut(index) {
            *place = Some(slot);
        }
        Ok(())
    }

    /// Kills instance `index`: every request it serves and every task it runs stop where
    /// they are. False if it was not running.
    pub fn kill(&self, index: usize) -> bool {
        let slot = self.slots.lock().unwrap_or_else(PoisonError::into_inner).get_mut(index).and_then(Option::take);
        slot.map(|slot| self.stop(slot, true)).is_some()
    }

    /// Stops every instance (the end of a run).
    pub fn stop_all(&self) {
        let stopped: Vec<Slot> =
            self.slots.lock().unwrap_or_else(PoisonError::into_inner).iter_mut().filter_map(Option::take).collect();
        for slot in stopped {
            self.stop(slot, false);
        }
    }

    /// The counters of every instance stopped so far (all of them after [`Self::stop_all`]).
    pub fn tally(&self) -> ServerTally {
        *self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops an instance, adding its counters to the tally first (a `kill` counts whether
    /// it caught a purchase between its reservation and the end of its order write).
    fn stop(&self, slot: Slot, killed: bool) {
        {
            let metrics = &slot.app.metrics;
            let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            tally.reconciled_orders += metrics.reconciled_orders.get();
            tally.rebuilds += metrics.sale_rebuilds.get();
            if killed && metrics.orders_awaiting_write.get() > 0 {
                tally.kills_awaiting_write += 1;
            }
        }
        slot.app.halt.cancel();
        slot.shutdown.cancel();
        slot.app.events.close();
        drop(slot.tasks);
    }

    /// Serves `request` on instance `index`, as a client with [`REQUEST_TIMEOUT`] would
    /// see it.
    pub async fn send(&self, index: usize, request: SimRequest) -> Result<Answer, Lost> {
        let (sender, answer) = oneshot::channel();
        let abort = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(slot) = slots.get_mut(index).and_then(Option::as_mut) else { return Err(Lost::ConnectRefused) };
            // Finished requests leave their (empty) output in the set until reaped.
            while slot.tasks.try_join_next().is_some() {}
            let router = slot.router.clone();
            slot.tasks.spawn(async move {
                let _ = sender.send(call(router, request).await);
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            // The instance was killed with the request in it.
            Ok(Err(_)) => Err(Lost::ConnectionLost),
            Err(_) => {
                // The client gives up and closes: the server drops the request there.
                abort.abort();
                Err(Lost::Timeout)
            }
        }
    }
}

/// One request through the whole router, as `axum::serve` would hand it over.
async fn call(router: Router, request: SimRequest) -> Result<Answer, Lost> {
    let method = match request.method {
        Method::Get => axum::http::Method::GET,
        Method::Post => axum::http::Method::POST,
        Method::Put => axum::http::Method::PUT,
        Method::Delete => axum::http::Method::DELETE,
    };
    // HTTP/1.1, so a Host header as every real client sends.
    let mut builder = axum::http::Request::builder().method(method).uri(&request.path).header("host", "flashsale.sim");
    for (name, value) in &request.headers {
        builder = builder.header(*name, value.as_str());
    }
    let Ok(mut http_request) = builder.body(Body::from(request.body)) else { return Err(Lost::ConnectRefused) };
    http_request.extensions_mut().insert(ConnectInfo(PEER));
    let Ok(response) = router.oneshot(http_request).await;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v.as_bytes() == b"true");
    match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(body) => Ok(Answer { status, replayed, body }),
        Err(_) => Err(Lost::BodyLost(status)),
    }
}
