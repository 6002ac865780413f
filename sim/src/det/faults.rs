//! The plan's faults in a deterministic run, done at the store seam and on the in-process
//! instances instead of on processes and proxies. Each real-mode fault maps to what the
//! server would see of it:
//!
//! | plan fault | Redis (emulated) | MongoDB (model) |
//! |---|---|---|
//! | proxy latency | every command delayed | every operation slowed |
//! | proxy reset | connections refused | unavailable |
//! | proxy slow close | commands delayed by the close delay | operations slowed by it |
//! | proxy blackhole, pause | commands hang until healed | operations slowed past their bound |
//! | kill and restart, no persistence | hang, then every key lost with a new `run_id` | unavailable |
//! | kill and restart, persistence | hang, then the script cache flushed | unavailable |
//! | `CLIENT PAUSE WRITE` | commands hang until healed | - |
//! | instance killed | its requests and tasks stop where they are; it starts again at the heal | |
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
    pub mongo: MemoryDb,
    pub instances: Arc<DetInstances>,
}

/// How long a paused or blackholed MongoDB makes each operation wait: past the server's
/// operation bound, so the operation fails as a real one would.
const MONGO_STALL: Duration = Duration::from_secs(30);

/// Runs the schedule on virtual time: sleeps until each fault, fires it, sleeps its
/// duration, heals it.
pub async fn run_schedule(targets: DetTargets, schedule: Vec<FaultPlan>, recorder: Arc<Recorder>) {
    for (index, planned) in schedule.into_iter().enumerate() {
        sleep_until(&recorder, planned.at_ms).await;
        let detail = fire(&targets, &planned.fault);
        recorder.fault(index, planned.fault, FaultPhase::Start, detail);
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
        Fault::ProxyReset { target: Backend::Redis } => {
            redis.refuse_connections();
            "Redis refuses connections".to_owned()
        }
        Fault::ProxyReset { target: Backend::Mongo } | Fault::KillRestart { target: Backend::Mongo, .. } => {
            mongo.make_unavailable();
            "MongoDB unavailable".to_owned()
        }
        Fault::ProxyBlackhole { target: Backend::Redis }
        | Fault::Pause { target: Backend::Redis }
        | Fault::KillRestart { target: Backend::Redis, .. }
        | Fault::ClientPauseWrite => {
            redis.hang();
            "Redis commands hang".to_owned()
        }
        Fault::ProxyBlackhole { target: Backend::Mongo } | Fault::Pause { target: Backend::Mongo } => {
            mongo.make_slow(MONGO_STALL);
            "MongoDB operations stall".to_owned()
        }
        Fault::KillInstance { instance } => {
            if targets.instances.kill(instance) {
                format!("instance {instance} killed")
            } else {
                format!("instance {instance} was not running")
            }
        }
    }
}

async fn heal(targets: &DetTargets, fault: &Fault) -> anyhow::Result<String> {
    match *fault {
        Fault::KillRestart { target: Backend::Redis, persistent: false } => {
            targets.redis.restart();
            targets.redis.heal();
            Ok("Redis restarted empty (new run_id)".to_owned())
        }
        Fault::KillRestart { target: Backend::Redis, persistent: true } => {
            targets.redis.flush_scripts();
            targets.redis.heal();
            Ok("Redis restarted from its data (script cache empty)".to_owned())
        }
        Fault::KillInstance { instance } => {
            targets.instances.start_one(instance).await?;
            Ok(format!("instance {instance} started again"))
        }
        _ => {
            targets.redis.heal();
            targets.mongo.heal();
            Ok("healed".to_owned())
        }
    }
}

/// Heals everything whatever the schedule reached, and starts dead instances again.
pub async fn heal_all(targets: &DetTargets) -> anyhow::Result<()> {
    targets.redis.heal();
    targets.mongo.heal();
    for index in 0..targets.instances.count() {
        if !targets.instances.is_up(index) {
            targets.instances.start_one(index).await?;
        }
    }
    Ok(())
}
