//! Shrinking a failing sale: from a plan that violates an invariant in deterministic mode,
//! the smallest plan found that still violates the same invariant. Deterministic mode is
//! what makes this possible: each candidate is run once and its verdict is the verdict.
//!
//! 1. Delta debugging (ddmin, Zeller and Hildebrandt 2002, complements only) over the
//!    buyers, then over the faults: drop chunks, halving the chunk size when nothing can
//!    be dropped, while the invariant stays violated.
//!    Faults go first, then each product's stock is halved while the violation stays (a
//!    smaller sale needs fewer buyers), then the buyers.
//! 2. Simplify what is left, one number at a time, each kept only if the violation
//!    stays: faults shorter (halved), buyers earlier (start at 0, else halved), buyers
//!    plainer (well-behaved: one key, retried on unknown outcomes).
//!
//! Buyers are renumbered after every removal (the checker maps a buyer's position to its
//! user): keys and jitter follow the new numbers, which is one more reason each
//! candidate is judged by running it.

use crate::checker::Invariant;
use crate::plan::{Behaviour, BuyerPlan, FaultPlan, Plan};
use crate::runner::RunSettings;

/// Candidate runs one shrink may make.
pub const MAX_SHRINK_RUNS: usize = 3_000;

/// The result of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub plan: Plan,
    pub invariant: Invariant,
    /// Candidate plans run.
    pub runs: usize,
}

/// The first invariant `settings.plan` violates in deterministic mode, if any.
pub fn violated(settings: &RunSettings) -> anyhow::Result<Option<Invariant>> {
    let outcome = super::run(settings)?;
    Ok(outcome.report.verdicts.iter().find(|verdict| !verdict.held).map(|verdict| verdict.invariant))
}

/// Shrinks `settings.plan`, which must violate an invariant. `progress` hears each step.
pub fn shrink(settings: &RunSettings, mut progress: impl FnMut(&str)) -> anyhow::Result<Shrunk> {
    let Some(invariant) = violated(settings)? else {
        anyhow::bail!("the plan violates no invariant in deterministic mode: nothing to shrink")
    };
    let mut judge = Judge { settings: settings.clone(), invariant, runs: 1 };
    let mut plan = settings.plan.clone();
    progress(&format!(
        "violates {invariant:?} with {} buyers and {} faults; shrinking",
        plan.buyers.len(),
        plan.faults.len()
    ));

    // Faults first (each fault run is as long as the sale), then less stock (a smaller
    // sale needs fewer buyers to sell out), then the buyers, then the faults and buyers
    // again while either list shrinks: without a buyer a fault may have become needless,
    // and the other way round.
    plan = shrink_faults(plan, &mut judge);
    progress(&format!("faults: {} left ({} runs)", plan.faults.len(), judge.runs));
    simplify_stock(&mut plan, &mut judge);
    progress(&format!("stock: {:?} ({} runs)", plan.products.iter().map(|p| p.stock).collect::<Vec<_>>(), judge.runs));
    loop {
        let before = (plan.buyers.len(), plan.faults.len());
        plan = shrink_buyers(plan, &mut judge);
        progress(&format!("buyers: {} left ({} runs)", plan.buyers.len(), judge.runs));
        plan = shrink_faults(plan, &mut judge);
        if (plan.buyers.len(), plan.faults.len()) == before {
            break;
        }
        progress(&format!("faults: {} left ({} runs)", plan.faults.len(), judge.runs));
    }

    simplify_faults(&mut plan, &mut judge);
    simplify_buyers(&mut plan, &mut judge);
    progress(&format!("simplified ({} runs)", judge.runs));
    Ok(Shrunk { plan, invariant, runs: judge.runs })
}

/// Runs candidates, counting them, and says whether each still violates the invariant.
struct Judge {
    settings: RunSettings,
    invariant: Invariant,
    runs: usize,
}

impl Judge {
    fn fails(&mut self, plan: &Plan) -> bool {
        if self.runs >= MAX_SHRINK_RUNS || plan.check_references().is_err() {
            return false;
        }
        self.runs += 1;
        let settings = RunSettings { plan: plan.clone(), progress: false, ..self.settings.clone() };
        super::run(&settings).is_ok_and(|outcome| outcome.report.verdict(self.invariant).is_some_and(|v| !v.held))
    }
}

/// Delta debugging over the plan's faults.
fn shrink_faults(plan: Plan, judge: &mut Judge) -> Plan {
    let faults = ddmin(plan.faults.clone(), |candidate| judge.fails(&with_parts(&plan, &plan.buyers, candidate)));
    with_parts(&plan, &plan.buyers, &faults)
}

/// Delta debugging over the plan's buyers.
fn shrink_buyers(plan: Plan, judge: &mut Judge) -> Plan {
    let buyers = ddmin(plan.buyers.clone(), |candidate| judge.fails(&with_parts(&plan, candidate, &plan.faults)));
    with_parts(&plan, &buyers, &plan.faults)
}

/// `plan` with these buyers (renumbered 0, 1, 2, ...) and these faults.
fn with_parts(plan: &Plan, buyers: &[BuyerPlan], faults: &[FaultPlan]) -> Plan {
    let mut shrunk = plan.clone();
    shrunk.buyers = buyers.iter().enumerate().map(|(index, buyer)| BuyerPlan { index, ..buyer.clone() }).collect();
    shrunk.options.buyers = shrunk.buyers.len();
    shrunk.faults = faults.to_vec();
    shrunk
}

/// Delta debugging over complements: the smallest list found for which `fails` holds
/// (`fails(items)` is assumed).
fn ddmin<T: Clone>(mut items: Vec<T>, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    if fails(&[]) {
        return Vec::new();
    }
    let mut parts = 2usize;
    while items.len() >= 2 {
        let chunk = items.len().div_ceil(parts);
        let mut reduced = false;
        for start in (0..items.len()).step_by(chunk) {
            let complement: Vec<T> =
                items[..start].iter().chain(items[(start + chunk).min(items.len())..].iter()).cloned().collect();
            if fails(&complement) {
                items = complement;
                parts = (parts - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if parts >= items.len() {
                break;
            }
            parts = (parts * 2).min(items.len());
        }
    }
    items
}

fn simplify_stock(plan: &mut Plan, judge: &mut Judge) {
    for index in 0..plan.products.len() {
        while plan.products[index].stock > 1 {
            let mut candidate = plan.clone();
            candidate.products[index].stock /= 2;
            if !judge.fails(&candidate) {
                break;
            }
            *plan = candidate;
        }
    }
}

fn simplify_faults(plan: &mut Plan, judge: &mut Judge) {
    for index in 0..plan.faults.len() {
        while plan.faults[index].duration_ms > 1 {
            let mut candidate = plan.clone();
            candidate.faults[index].duration_ms /= 2;
            if !judge.fails(&candidate) {
                break;
            }
            *plan = candidate;
        }
    }
}

fn simplify_buyers(plan: &mut Plan, judge: &mut Judge) {
    for index in 0..plan.buyers.len() {
        if plan.buyers[index].behaviour != Behaviour::WellBehaved {
            let mut candidate = plan.clone();
            candidate.buyers[index].behaviour = Behaviour::WellBehaved;
            if judge.fails(&candidate) {
                *plan = candidate;
            }
        }
        if plan.buyers[index].start_at_ms > 0 {
            let mut candidate = plan.clone();
            candidate.buyers[index].start_at_ms = 0;
            if judge.fails(&candidate) {
                *plan = candidate;
                continue;
            }
        }
        while plan.buyers[index].start_at_ms > 1 {
            let mut candidate = plan.clone();
            candidate.buyers[index].start_at_ms /= 2;
            if !judge.fails(&candidate) {
                break;
            }
            *plan = candidate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_the_two_items_that_together_fail() {
        let items: Vec<u32> = (0..40).collect();
        let fails = |candidate: &[u32]| candidate.contains(&7) && candidate.contains(&31);
        assert_eq!(ddmin(items, fails), vec![7, 31]);
    }

    #[test]
    fn ddmin_keeps_nothing_when_nothing_is_needed() {
        assert!(ddmin(vec![1, 2, 3], |_| true).is_empty());
    }
}
