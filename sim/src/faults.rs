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
use crate::world::{Backends, Instances, LocalBackends};

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
    if target == Backend::Redis {
        for link in &backends.link_proxies {
            link.heal();
        }
    }
    format!("{target:?} proxies pass again")
}

/// Sets the mode of one instance's own path to Redis ([`Backends::add_links`]).
fn set_link(targets: &Targets, instance: usize, mode: ProxyMode) -> anyhow::Result<String> {
    let backends = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let link = backends.link_proxies.get(instance).with_context(|| format!("instance {instance} has no link proxy"))?;
    link.set_mode(mode);
    Ok(format!("instance {instance}'s Redis link: {mode:?}"))
}

/// A fault on a backend's process (or container).
#[derive(Debug, Clone, Copy)]
enum ProcessOp {
    Pause,
    Resume,
    /// SIGKILL; without `keep_data` a Redis comes back empty.
    Kill {
        keep_data: bool,
    },
    /// Start again after a kill.
    Restart {
        keep_data: bool,
    },
}

/// Applies a process-level fault to the local process, or to the container.
async fn process_op(targets: &Targets, backend: Backend, op: ProcessOp) -> anyhow::Result<String> {
    #[cfg(feature = "containers")]
    {
        let containers = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).containers.clone();
        if let Some(stack) = containers {
            return container_op(&stack, backend, op).await;
        }
    }
    let backends = targets.backends.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let local = guard.local.as_mut().context("no local backends")?;
        local_op(local, backend, op)
    })
    .await
    .context("fault task")?
}

fn local_op(local: &mut LocalBackends, backend: Backend, op: ProcessOp) -> anyhow::Result<String> {
    Ok(match (backend, op) {
        (Backend::Redis, ProcessOp::Pause) => {
            local.redis.target_node().pause();
            "SIGSTOP redis-server".to_owned()
        }
        (Backend::Redis, ProcessOp::Resume) => {
            local.redis.target_node().resume();
            "SIGCONT redis-server".to_owned()
        }
        (Backend::Redis, ProcessOp::Kill { keep_data }) => {
            local.redis.target_node().kill();
            format!("SIGKILL redis-server ({})", if keep_data { "its AOF stays" } else { "its data will be lost" })
        }
        (Backend::Redis, ProcessOp::Restart { keep_data }) => {
            if keep_data {
                local.redis.target_node().restart()?;
            } else {
                local.redis.target_node().restart_empty()?;
            }
            local.redis.wait_healthy()?;
            if keep_data { "redis-server restarted from its AOF" } else { "redis-server restarted empty" }.to_owned()
        }
        (Backend::Mongo, ProcessOp::Pause) => {
            local.mongo.pause();
            "SIGSTOP ferretdb".to_owned()
        }
        (Backend::Mongo, ProcessOp::Resume) => {
            local.mongo.resume();
            "SIGCONT ferretdb".to_owned()
        }
        (Backend::Mongo, ProcessOp::Kill { .. }) => {
            local.mongo.kill();
            "SIGKILL ferretdb".to_owned()
        }
        (Backend::Mongo, ProcessOp::Restart { .. }) => {
            local.mongo.restart()?;
            "ferretdb restarted".to_owned()
        }
    })
}

#[cfg(feature = "containers")]
async fn container_op(
    stack: &flashsale_stack::ContainerStack,
    backend: Backend,
    op: ProcessOp,
) -> anyhow::Result<String> {
    use flashsale_stack::ContainerRole;
    let role = match backend {
        Backend::Redis => ContainerRole::Redis,
        Backend::Mongo => ContainerRole::Mongo,
    };
    match op {
        ProcessOp::Pause => stack.pause(role).await?,
        ProcessOp::Resume => stack.resume(role).await?,
        ProcessOp::Kill { keep_data } => stack.kill(role, keep_data).await?,
        ProcessOp::Restart { .. } => stack.start_again(role).await?,
    }
    Ok(format!("{op:?} the {backend:?} container"))
}

/// Cutting a container off its network, or connecting it again.
#[derive(Debug, Clone, Copy)]
enum PartitionOp {
    Cut,
    Heal,
}

/// On the containers backend, a [`Fault::Partition`] is a real network partition: the
/// container is disconnected from its network (`ContainerStack::partition`) while the
/// proxies keep passing. Seen from the server it is a blackhole without the proxy in the
/// middle deciding it: connections opened before it die without a FIN or a RST and may
/// stay dead after it heals. `None` on local processes: the proxies blackhole instead.
async fn partition_op(targets: &Targets, backend: Backend, op: PartitionOp) -> anyhow::Result<Option<String>> {
    #[cfg(feature = "containers")]
    {
        use flashsale_stack::ContainerRole;
        let containers = targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).containers.clone();
        if let Some(stack) = containers {
            let role = match backend {
                Backend::Redis => ContainerRole::Redis,
                Backend::Mongo => ContainerRole::Mongo,
            };
            return Ok(Some(match op {
                PartitionOp::Cut => {
                    stack.partition(role).await?;
                    format!("the {backend:?} container disconnected from its network (partition)")
                }
                PartitionOp::Heal => {
                    stack.heal_partition(role).await?;
                    format!("the {backend:?} container connected to its network again")
                }
            }));
        }
    }
    let _ = (targets, backend, op);
    Ok(None)
}

async fn fire(targets: &Targets, fault: &Fault) -> anyhow::Result<String> {
    match *fault {
        Fault::ProxyLatency { target, latency_ms } => {
            Ok(set_proxies(targets, target, ProxyMode::Latency { ms: latency_ms }))
        }
        Fault::ProxyReset { target } => Ok(set_proxies(targets, target, ProxyMode::Reset)),
        Fault::ProxyBlackhole { target } => Ok(set_proxies(targets, target, ProxyMode::Blackhole)),
        Fault::Partition { target } => {
            if let Some(detail) = partition_op(targets, target, PartitionOp::Cut).await? {
                return Ok(detail);
            }
            let detail = set_proxies(targets, target, ProxyMode::Blackhole);
            Ok(format!("{detail} (no network of its own on local processes: a proxy blackhole)"))
        }
        Fault::ProxySlowClose { target, delay_ms } => {
            Ok(set_proxies(targets, target, ProxyMode::SlowClose { ms: delay_ms }))
        }
        Fault::Pause { target } => process_op(targets, target, ProcessOp::Pause).await,
        Fault::KillRestart { target, persistent } => {
            process_op(targets, target, ProcessOp::Kill { keep_data: persistent }).await
        }
        Fault::SlowLink { instance, latency_ms } => set_link(targets, instance, ProxyMode::Latency { ms: latency_ms }),
        Fault::KillInstance { instance } => {
            if targets.instances.kill(instance) {
                Ok(format!("instance {instance} killed"))
            } else {
                anyhow::bail!("instance {instance} was not running")
            }
        }
        Fault::ClientPauseWrite => {
            let urls = direct_redis_urls(targets);
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
        Fault::Partition { target } => {
            if let Some(detail) = partition_op(targets, target, PartitionOp::Heal).await? {
                return Ok(detail);
            }
            Ok(heal_proxies(targets, target))
        }
        Fault::ProxyLatency { target, .. }
        | Fault::ProxyReset { target }
        | Fault::ProxySlowClose { target, .. }
        | Fault::ProxyBlackhole { target } => Ok(heal_proxies(targets, target)),
        Fault::Pause { target } => process_op(targets, target, ProcessOp::Resume).await,
        Fault::SlowLink { instance, .. } => set_link(targets, instance, ProxyMode::Pass),
        Fault::KillRestart { target, persistent } => {
            process_op(targets, target, ProcessOp::Restart { keep_data: persistent }).await
        }
        Fault::KillInstance { instance } => {
            targets.instances.start_one(instance).await?;
            Ok(format!("instance {instance} started again"))
        }
        Fault::ClientPauseWrite => {
            for url in &direct_redis_urls(targets) {
                redis_command(url, redis::cmd("CLIENT").arg("UNPAUSE")).await?;
            }
            Ok("CLIENT UNPAUSE".to_owned())
        }
    }
}

fn direct_redis_urls(targets: &Targets) -> Vec<String> {
    targets.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).direct_redis_urls()
}

/// Heals everything, whatever the schedule reached (after the run, or when it was cut
/// short): proxies pass, processes resume, writes unpause, dead instances start again.
pub async fn heal_all(targets: &Targets) -> anyhow::Result<()> {
    for target in [Backend::Redis, Backend::Mongo] {
        heal_proxies(targets, target);
    }
    // Resuming a process that runs is harmless; a container that runs refuses, which is
    // not a failure here.
    for target in [Backend::Redis, Backend::Mongo] {
        let _ = process_op(targets, target, ProcessOp::Resume).await;
        // Likewise, healing a container that is not partitioned is refused.
        let _ = partition_op(targets, target, PartitionOp::Heal).await;
    }
    for url in &direct_redis_urls(targets) {
        let _ = redis_command(url, redis::cmd("CLIENT").arg("UNPAUSE")).await;
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
