//! The plan's faults in a deterministic run, done at the store seam and on the in-process
//! instances instead of on processes and proxies. Each real-mode fault maps to what the
//! server would see of it:
//!
//! | plan fault | Redis (emulated) | MongoDB (model) |
//! |---|---|---|
//! | proxy latency | every command delayed | every operation slowed |
//! | proxy reset | commands apply, their replies lost (connections reset mid-request) | operations apply, their answers lost |
//! | proxy slow close | commands delayed by the close delay | operations slowed by it |
//! | proxy blackhole, pause | commands hang until healed | operations slowed past their bound |
//! | kill and restart, no persistence | connections refused, then every key lost with a new `run_id` | unavailable |
//! | kill and restart, persistence | connections refused, then the script cache flushed | unavailable |
//! | `CLIENT PAUSE WRITE` | commands hang until healed | - |
//! | instance killed | its requests and tasks stop where they are; it starts again at the heal | |
//! | slow link of one instance | that instance's commands arrive late, in order, applied even when it gave up | - |
//!
//! Start and heal are recorded in the history on the same (virtual) clock as in real mode.

use std::sync::Arc;
use std::time::Duration;

use flashsale::db::memory::MemoryDb;
use flashsale::redis::memory::MemoryRedis;

use super::DetInstances;
use crate::history::{FaultPhase, Recorder};
use crate::plan::{Backend, Fault, FaultPlan};

/// What the faults act on.
#[derive(Clone)]
pub struct DetTargets {
    pub redis: MemoryRedis,
    /// Each instance's own path to `redis` ([`MemoryRedis::with_link`]), by instance.
    pub links: Vec<MemoryRedis>,
    pub mongo: MemoryDb,
    pub instances: Arc<DetInstances>,
}

/// Starts of a killed instance tried at its heal, [`INSTANCE_START_RETRY`] apart.
const INSTANCE_START_ATTEMPTS: u32 = 120;
const INSTANCE_START_RETRY: Duration = Duration::from_millis(250);

/// How long a paused or blackholed MongoDB makes each operation wait: past the server's
/// operation bound, so the operation fails as a real one would.
const MONGO_STALL: Duration = Duration::from_secs(30);

/// Runs the schedule on virtual time. Faults may overlap (swarm plans): starts and
/// heals are taken in time order, and healing one fault clears the stores' switches and
/// sets those of every fault still active again, so each heal undoes exactly its own.
pub async fn run_schedule(targets: DetTargets, schedule: Vec<FaultPlan>, recorder: Arc<Recorder>) {
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(schedule.len() * 2);
    for (index, planned) in schedule.iter().enumerate() {
        events.push((planned.at_ms, true, index));
        events.push((planned.at_ms + planned.duration_ms, false, index));
    }
    // At one moment, heals before starts; then in plan order.
    events.sort_by_key(|&(at, start, index)| (at, start, index));
    let mut active: Vec<usize> = Vec::new();
    let mut supervisors = Vec::new();
    for (at_ms, start, index) in events {
        sleep_until(&recorder, at_ms).await;
        let fault = schedule[index].fault;
        if start {
            active.push(index);
            let detail = fire(&targets, &fault);
            recorder.fault(index, fault, FaultPhase::Start, detail);
            continue;
        }
        active.retain(|i| *i != index);
        let still: Vec<Fault> = active.iter().map(|i| schedule[*i].fault).collect();
        if let Fault::KillInstance { instance } = fault {
            if !still.contains(&fault) {
                // Started again beside the schedule, which goes on healing the stores
                // the start may be waiting for.
                supervisors.push(tokio::spawn(supervise(targets.clone(), instance, index, fault, recorder.clone())));
                continue;
            }
        }
        match heal(&targets, &fault, &still).await {
            Ok(detail) => recorder.fault(index, fault, FaultPhase::Heal, detail),
            Err(err) => recorder.fault(index, fault, FaultPhase::Error, format!("healing: {err:#}")),
        }
    }
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
}

/// Starts a killed instance again, as a supervisor would, until it comes up: a start
/// fails while Redis refuses connections (the start reads its eviction policy).
async fn supervise(targets: DetTargets, instance: usize, index: usize, fault: Fault, recorder: Arc<Recorder>) {
    let mut attempts = 1;
    loop {
        match targets.instances.start_one(instance).await {
            Ok(()) => {
                let detail = format!("instance {instance} started again ({attempts} attempts)");
                return recorder.fault(index, fault, FaultPhase::Heal, detail);
            }
            Err(err) if attempts >= INSTANCE_START_ATTEMPTS => {
                return recorder.fault(index, fault, FaultPhase::Error, format!("starting again: {err:#}"));
            }
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(INSTANCE_START_RETRY).await;
            }
        }
    }
}

async fn sleep_until(recorder: &Recorder, at_ms: u64) {
    let now = recorder.now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

fn fire(targets: &DetTargets, fault: &Fault) -> String {
    let (redis, mongo) = (&targets.redis, &targets.mongo);
    match *fault {
        Fault::ProxyLatency { target: Backend::Redis, latency_ms }
        | Fault::ProxySlowClose { target: Backend::Redis, delay_ms: latency_ms } => {
            redis.delay_commands(Duration::from_millis(latency_ms));
            format!("Redis commands delayed {latency_ms} ms")
        }
        Fault::ProxyLatency { target: Backend::Mongo, latency_ms }
        | Fault::ProxySlowClose { target: Backend::Mongo, delay_ms: latency_ms } => {
            mongo.make_slow(Duration::from_millis(latency_ms));
            format!("MongoDB operations slowed {latency_ms} ms")
        }
        // Connections reset mid-request: what was sent applies, the answer never comes.
        Fault::ProxyReset { target: Backend::Redis } => {
            redis.lose_replies();
            "Redis applies commands, their replies lost".to_owned()
        }
        Fault::ProxyReset { target: Backend::Mongo } => {
            mongo.make_apply_then_time_out();
            "MongoDB applies operations, their answers lost".to_owned()
        }
        Fault::KillRestart { target: Backend::Redis, .. } => {
            redis.refuse_connections();
            "Redis refuses connections".to_owned()
        }
        Fault::KillRestart { target: Backend::Mongo, .. } => {
            mongo.make_unavailable();
            "MongoDB unavailable".to_owned()
        }
        Fault::ProxyBlackhole { target: Backend::Redis }
        | Fault::Partition { target: Backend::Redis }
        | Fault::Pause { target: Backend::Redis }
        | Fault::ClientPauseWrite => {
            redis.hang();
            "Redis commands hang".to_owned()
        }
        Fault::ProxyBlackhole { target: Backend::Mongo }
        | Fault::Partition { target: Backend::Mongo }
        | Fault::Pause { target: Backend::Mongo } => {
            mongo.make_slow(MONGO_STALL);
            "MongoDB operations stall".to_owned()
        }
        Fault::SlowLink { instance, latency_ms } => match targets.links.get(instance) {
            Some(link) => {
                link.slow_link(Duration::from_millis(latency_ms));
                format!("instance {instance}'s Redis commands arrive {latency_ms} ms late")
            }
            None => format!("instance {instance} has no link"),
        },
        Fault::KillInstance { instance } => {
            if targets.instances.kill(instance) {
                format!("instance {instance} killed")
            } else {
                format!("instance {instance} was not running")
            }
        }
    }
}

/// Undoes `fault`; `still` are the faults that stay active, whose switches are set again.
async fn heal(targets: &DetTargets, fault: &Fault, still: &[Fault]) -> anyhow::Result<String> {
    let detail = undo(targets, fault, still).await?;
    for other in still.iter().filter(|other| !matches!(other, Fault::KillInstance { .. })) {
        fire(targets, other);
    }
    Ok(detail)
}

async fn undo(targets: &DetTargets, fault: &Fault, still: &[Fault]) -> anyhow::Result<String> {
    match *fault {
        Fault::KillRestart { target: Backend::Redis, persistent: false } => {
            targets.redis.restart();
            targets.redis.heal();
            Ok("Redis restarted empty (new run_id)".to_owned())
        }
        Fault::KillRestart { target: Backend::Redis, persistent: true } => {
            targets.redis.restart_from_data();
            targets.redis.heal();
            Ok("Redis restarted from its data (new run_id, script cache empty)".to_owned())
        }
        Fault::KillInstance { instance } => {
            if still.contains(&Fault::KillInstance { instance }) {
                return Ok(format!("instance {instance} stays down (killed again meanwhile)"));
            }
            Ok(format!("instance {instance} stays down until its supervisor starts it"))
        }
        _ => {
            heal_stores(targets);
            Ok("healed".to_owned())
        }
    }
}

/// Clears every switch of the stores and of the instances' links.
fn heal_stores(targets: &DetTargets) {
    targets.redis.heal();
    targets.mongo.heal();
    for link in &targets.links {
        link.heal_link();
    }
}

/// Heals everything whatever the schedule reached, and starts dead instances again.
pub async fn heal_all(targets: &DetTargets) -> anyhow::Result<()> {
    heal_stores(targets);
    for index in 0..targets.instances.count() {
        if !targets.instances.is_up(index) {
            targets.instances.start_one(index).await?;
        }
    }
    Ok(())
}
