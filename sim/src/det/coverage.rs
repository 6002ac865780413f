//! Coverage across a deterministic sweep. A single small seed may well not reach
//! sold-out or see a replay (its self-checks then call it vacuous); a sweep of many
//! seeds must reach each of these somewhere, or it proves less than it claims. The sweep
//! counts, per item, the seeds that reached it and fails when one was never reached.

use std::collections::BTreeMap;

use crate::history::{FaultPhase, History, OpKind, Outcome};
use crate::plan::{Backend, Fault};

/// What a sweep must reach somewhere, each with the seeds that reached it.
#[derive(Debug, Default)]
pub struct Coverage {
    seeds: u64,
    reached: BTreeMap<&'static str, u64>,
    /// Seeds whose plan held a slow link ([`LINK_FAULT_KIND`], swarm plans only).
    planned_links: u64,
}

/// Every item a sweep must reach (fault kinds are added as the plans schedule them).
const ITEMS: &[&str] = &[
    "sold-out answered",
    "a key replayed",
    "409 idempotency-in-flight answered",
    "a key retried after an unknown outcome",
    "202 pending answered (then reconciled)",
    "an instance killed and started again",
    "an instance killed between a reservation and its order write",
    "a reservation persisted by the reconciler",
    "a sale state rebuilt after Redis lost its data",
];

impl Coverage {
    /// Counts what one seed's history reached.
    pub fn add(&mut self, history: &History) {
        self.seeds += 1;
        let mut seen: Vec<&'static str> = Vec::new();
        let mut unknown_keys = std::collections::BTreeSet::new();
        let mut bought = std::collections::BTreeSet::new();
        for op in &history.ops {
            let OpKind::Buy { key, .. } = &op.kind else { continue };
            match &op.outcome {
                Outcome::Fail { problem, .. } if problem == "sold-out" => seen.push(ITEMS[0]),
                Outcome::Fail { problem, .. } if problem == "idempotency-in-flight" => seen.push(ITEMS[2]),
                Outcome::Ok { status, replayed, .. } => {
                    if *replayed || !bought.insert((op.buyer, key.clone())) {
                        seen.push(ITEMS[1]);
                    }
                    if *status == 202 {
                        seen.push(ITEMS[4]);
                    }
                }
                _ => {}
            }
            if unknown_keys.contains(&(op.buyer, key.clone())) {
                seen.push(ITEMS[3]);
            }
            if op.outcome.is_info() {
                unknown_keys.insert((op.buyer, key.clone()));
            }
        }
        // What the instances did out of the buyers' sight, from their counters.
        if history.server.kills_awaiting_write > 0 {
            seen.push(ITEMS[6]);
        }
        if history.server.reconciled_orders > 0 {
            seen.push(ITEMS[7]);
        }
        let data_lost = history
            .faults
            .iter()
            .any(|event| matches!(event.fault, Fault::KillRestart { target: Backend::Redis, persistent: false }));
        if data_lost && history.server.rebuilds > 0 {
            seen.push(ITEMS[8]);
        }
        if history.faults.iter().any(|event| matches!(event.fault, Fault::SlowLink { .. })) {
            self.planned_links += 1;
        }
        for event in history.faults.iter().filter(|event| event.phase == FaultPhase::Heal) {
            if matches!(event.fault, Fault::KillInstance { .. }) {
                seen.push(ITEMS[5]);
            }
            seen.push(fault_kind(&event.fault));
        }
        seen.sort_unstable();
        seen.dedup();
        for item in seen {
            *self.reached.entry(item).or_default() += 1;
        }
    }

    /// Adds another part of the same sweep.
    pub fn merge(&mut self, other: Self) {
        self.seeds += other.seeds;
        self.planned_links += other.planned_links;
        for (item, count) in other.reached {
            *self.reached.entry(item).or_default() += count;
        }
    }

    /// Items no seed reached, fault kinds included.
    pub fn missing(&self) -> Vec<&'static str> {
        self.required().filter(|item| !self.reached.contains_key(item)).collect()
    }

    /// The items this sweep must reach: the slow link only if some plan held one (the
    /// default fault mix never does).
    fn required(&self) -> impl Iterator<Item = &'static str> {
        let link = (self.planned_links > 0).then_some(LINK_FAULT_KIND);
        ITEMS.iter().chain(FAULT_KINDS).copied().chain(link)
    }

    /// One line per item: how many seeds reached it.
    pub fn table(&self) -> String {
        let mut out = format!("coverage over {} seeds (seeds that reached each):\n", self.seeds);
        for item in self.required() {
            let count = self.reached.get(item).copied().unwrap_or(0);
            out.push_str(&format!("  {count:>6}  {item}{}\n", if count == 0 { "  (NEVER)" } else { "" }));
        }
        out
    }
}

/// The fault kinds of a plan, by the store or process they act on.
const FAULT_KINDS: &[&str] = &[
    "fault: Redis latency",
    "fault: Redis replies lost (commands applied, connections reset)",
    "fault: Redis hanging (blackhole, partition, pause, CLIENT PAUSE WRITE)",
    "fault: Redis restarted empty (data loss, new run_id)",
    "fault: Redis restarted from its data",
    "fault: MongoDB slow",
    "fault: MongoDB unavailable",
    "fault: MongoDB stalled (blackhole, partition, pause)",
    "fault: MongoDB answers lost (operations applied, connections reset)",
];

/// The fault kind only swarm plans hold.
const LINK_FAULT_KIND: &str = "fault: one instance's Redis link slow (its writes land late)";

fn fault_kind(fault: &Fault) -> &'static str {
    match *fault {
        Fault::ProxyLatency { target: Backend::Redis, .. } | Fault::ProxySlowClose { target: Backend::Redis, .. } => {
            FAULT_KINDS[0]
        }
        Fault::ProxyReset { target: Backend::Redis } => FAULT_KINDS[1],
        Fault::ProxyBlackhole { target: Backend::Redis }
        | Fault::Partition { target: Backend::Redis }
        | Fault::Pause { target: Backend::Redis }
        | Fault::ClientPauseWrite => FAULT_KINDS[2],
        Fault::KillRestart { target: Backend::Redis, persistent: false } => FAULT_KINDS[3],
        Fault::KillRestart { target: Backend::Redis, persistent: true } => FAULT_KINDS[4],
        Fault::ProxyLatency { target: Backend::Mongo, .. } | Fault::ProxySlowClose { target: Backend::Mongo, .. } => {
            FAULT_KINDS[5]
        }
        Fault::KillRestart { target: Backend::Mongo, .. } => FAULT_KINDS[6],
        Fault::ProxyReset { target: Backend::Mongo } => FAULT_KINDS[8],
        Fault::ProxyBlackhole { target: Backend::Mongo }
        | Fault::Partition { target: Backend::Mongo }
        | Fault::Pause { target: Backend::Mongo } => FAULT_KINDS[7],
        Fault::KillInstance { .. } => ITEMS[5],
        Fault::SlowLink { .. } => LINK_FAULT_KIND,
    }
}
