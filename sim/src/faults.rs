//! Firing the plan's faults at their planned moments and healing them after their
//! planned durations. Every start and heal is recorded in the history (the self-check
//! "fired every planned fault" reads them back). Faults never overlap in a plan, so
//! each heal undoes exactly one fault.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::history::{FaultPhase, Recorder};
use crate::plan::{Backend, Fault, FaultPlan};
use crate::proxy::ProxyMode;
use crate::world::{Backends, Instances};

/// Timeout of the simulator's own Redis commands (`CLIENT PAUSE`).
const ADMIN_REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the faults act on.
#[derive(Clone)]
pub struct Targets {
    pub backends: Arc<Mutex<Backends>>,
    pub instances: Arc<Instances>,
}

/// Runs the schedule: sleeps until each fault, fires it, sleeps its duration, heals it.
pub async fn run_schedule(targets: Targets, schedule: Vec<FaultPlan>, recorder: Arc<Recorder>) {
    for (index, planned) in schedule.into_iter().enumerate() {
        sleep_until(&recorder, planned.at_ms).await;
        match fire(&targets, &planned.fault).await {
            Ok(detail) => recorder.fault(index, planned.fault, FaultPhase::Start, detail),
            Err(err) => recorder.fault(index, planned.fault, FaultPhase::Error, format!("firing: {err:#}")),
        }
        sleep_until(&recorder, planned.at_ms + planned.duration_ms).await;
        match heal(&targets, &planned.fault).await {
            Ok(detail) => recorder.fault(index, planned.fault, FaultPhase::Heal, detail),
            Err(err) => recorder.fault(index, planned.fault, FaultPhase::Error, format!("healing: {err:#}")),
        }
    }
}

async fn sleep_until(recorder: &Recorder, at_ms: u64) {
    let now = recorder.now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

fn set_proxies(targets: &Targets, target: Backend, mode: ProxyMode) -> String {
    let backends = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let proxies = backends.proxies(target);
    for proxy in &proxies {
        proxy.set_mode(mode);
    }
    format!("{} {target:?} prox{}: {mode:?}", proxies.len(), if proxies.len() == 1 { "y" } else { "ies" })
}

fn heal_proxies(targets: &Targets, target: Backend) -> String {
    let backends = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for proxy in backends.proxies(target) {
        proxy.heal();
    }
    format!("{target:?} proxies pass again")
}

/// Runs blocking work on the backends (process signals, restarts that wait for a port).
async fn with_backends<T: Send + 'static>(
    targets: &Targets,
    work: impl FnOnce(&mut Backends) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let backends = targets.backends.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut guard)
    })
    .await
    .context("fault task")?
}

async fn fire(targets: &Targets, fault: &Fault) -> anyhow::Result<String> {
    match *fault {
        Fault::ProxyLatency { target, latency_ms } => {
            Ok(set_proxies(targets, target, ProxyMode::Latency { ms: latency_ms }))
        }
        Fault::ProxyReset { target } => Ok(set_proxies(targets, target, ProxyMode::Reset)),
        Fault::ProxyBlackhole { target } => Ok(set_proxies(targets, target, ProxyMode::Blackhole)),
        Fault::ProxySlowClose { target, delay_ms } => {
            Ok(set_proxies(targets, target, ProxyMode::SlowClose { ms: delay_ms }))
        }
        Fault::Pause { target: Backend::Redis } => {
            with_backends(targets, |b| {
                b.redis.target_node().pause();
                Ok("SIGSTOP redis-server".to_owned())
            })
            .await
        }
        Fault::Pause { target: Backend::Mongo } => {
            with_backends(targets, |b| {
                b.mongo.pause();
                Ok("SIGSTOP ferretdb".to_owned())
            })
            .await
        }
        Fault::KillRestart { target: Backend::Redis, .. } => {
            with_backends(targets, |b| {
                b.redis.target_node().kill();
                Ok("SIGKILL redis-server".to_owned())
            })
            .await
        }
        Fault::KillRestart { target: Backend::Mongo, .. } => {
            with_backends(targets, |b| {
                b.mongo.kill();
                Ok("SIGKILL ferretdb".to_owned())
            })
            .await
        }
        Fault::KillInstance { instance } => {
            if targets.instances.kill(instance) {
                Ok(format!("instance {instance} killed"))
            } else {
                anyhow::bail!("instance {instance} was not running")
            }
        }
        Fault::ClientPauseWrite => {
            let urls = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redis.direct_urls();
            for url in &urls {
                // Long enough to outlast the fault; the heal unpauses.
                redis_command(url, redis::cmd("CLIENT").arg("PAUSE").arg(600_000).arg("WRITE")).await?;
            }
            Ok(format!("CLIENT PAUSE WRITE on {} node(s)", urls.len()))
        }
    }
}

async fn heal(targets: &Targets, fault: &Fault) -> anyhow::Result<String> {
    match *fault {
        Fault::ProxyLatency { target, .. }
        | Fault::ProxyReset { target }
        | Fault::ProxyBlackhole { target }
        | Fault::ProxySlowClose { target, .. } => Ok(heal_proxies(targets, target)),
        Fault::Pause { target: Backend::Redis } => {
            with_backends(targets, |b| {
                b.redis.target_node().resume();
                Ok("SIGCONT redis-server".to_owned())
            })
            .await
        }
        Fault::Pause { target: Backend::Mongo } => {
            with_backends(targets, |b| {
                b.mongo.resume();
                Ok("SIGCONT ferretdb".to_owned())
            })
            .await
        }
        Fault::KillRestart { target: Backend::Redis, persistent } => {
            with_backends(targets, move |b| {
                if persistent {
                    b.redis.target_node().restart()?;
                } else {
                    b.redis.target_node().restart_empty()?;
                }
                b.redis.wait_healthy()?;
                Ok(if persistent { "redis-server restarted from its AOF" } else { "redis-server restarted empty" }
                    .to_owned())
            })
            .await
        }
        Fault::KillRestart { target: Backend::Mongo, .. } => {
            with_backends(targets, |b| {
                b.mongo.restart()?;
                Ok("ferretdb restarted".to_owned())
            })
            .await
        }
        Fault::KillInstance { instance } => {
            targets.instances.start_one(instance).await?;
            Ok(format!("instance {instance} started again"))
        }
        Fault::ClientPauseWrite => {
            let urls = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redis.direct_urls();
            for url in &urls {
                redis_command(url, &mut redis::cmd("CLIENT").arg("UNPAUSE").to_owned()).await?;
            }
            Ok("CLIENT UNPAUSE".to_owned())
        }
    }
}

/// Heals everything, whatever the schedule reached (after the run, or when it was cut
/// short): proxies pass, processes resume, writes unpause, dead instances start again.
pub async fn heal_all(targets: &Targets) -> anyhow::Result<()> {
    for target in [Backend::Redis, Backend::Mongo] {
        heal_proxies(targets, target);
    }
    with_backends(targets, |b| {
        b.redis.target_node().resume();
        b.mongo.resume();
        Ok(())
    })
    .await?;
    let urls = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redis.direct_urls();
    for url in &urls {
        let _ = redis_command(url, &mut redis::cmd("CLIENT").arg("UNPAUSE").to_owned()).await;
    }
    for index in 0..targets.instances.count() {
        if targets.instances.url(index).is_none() {
            targets.instances.start_one(index).await?;
        }
    }
    Ok(())
}

async fn redis_command(url: &str, command: &mut redis::Cmd) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(ADMIN_REDIS_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .context("connecting to Redis timed out")??;
    let _: redis::Value = tokio::time::timeout(ADMIN_REDIS_TIMEOUT, command.query_async(&mut conn))
        .await
        .context("Redis command timed out")??;
    Ok(())
}
