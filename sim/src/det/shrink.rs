//! Shrinking a failing sale: from a plan that violates an invariant in deterministic mode,
//! the smallest plan found that still violates the same invariant. Deterministic mode is
//! what makes this possible: each candidate is run once and its verdict is the verdict.
//!
//! 1. Delta debugging (ddmin, Zeller and Hildebrandt 2002, complements only) over the
//!    faults, the buyers and the administrator's actions (restocks and product changes):
//!    drop chunks, halving the chunk size when nothing can be dropped, while the
//!    invariant stays violated. Faults go first, then each product's stock is halved
//!    while the violation stays (a smaller sale needs fewer buyers), then buyers, faults
//!    and actions in turn until none of the three lists shrinks.
//! 2. Simplify what is left, one number at a time, each kept only if the violation
//!    stays: faults shorter (halved), buyers plainer (well-behaved: one key, retried on
//!    unknown outcomes; no cancellation of their order), buyers earlier (start at 0,
//!    else halved).
//! 3. Steps 1 and 2 again while a round changes the plan (a simpler buyer may make
//!    another one needless), within the budget of candidate runs.
//!
//! Buyers are renumbered after every removal (the checker maps a buyer's position to its
//! user): keys and jitter follow the new numbers, which is one more reason each
//! candidate is judged by running it.

use crate::checker::Invariant;
use crate::plan::{Behaviour, BuyerPlan, ChangePlan, FaultPlan, Plan, RestockPlan};
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

/// Shrinks `settings.plan`, which must violate `target` (default: the first invariant
/// it violates), keeping that one violated. `progress` hears each step.
pub fn shrink(
    settings: &RunSettings,
    target: Option<Invariant>,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Shrunk> {
    let invariant = match target {
        None => violated(settings)?.ok_or_else(|| {
            anyhow::anyhow!("the plan violates no invariant in deterministic mode: nothing to shrink")
        })?,
        Some(target) => {
            let outcome = super::run(settings)?;
            if outcome.report.verdict(target).is_none_or(|verdict| verdict.held) {
                anyhow::bail!("the plan does not violate {} in deterministic mode: nothing to shrink", target.name());
            }
            target
        }
    };
    let mut judge = Judge { settings: settings.clone(), invariant, runs: 1 };
    let mut plan = settings.plan.clone();
    progress(&format!(
        "violates {invariant:?} with {} buyers and {} faults; shrinking",
        plan.buyers.len(),
        plan.faults.len()
    ));

    // Faults first (each fault run is as long as the sale), then less stock (a smaller
    // sale needs fewer buyers to sell out), then buyers, faults and the administrator's
    // actions in turn while any of them shrinks: without a buyer a fault may have become
    // needless, and the other way round. Then the simplifications, and all of it again
    // while a round changes the plan.
    plan = shrink_faults(plan, &mut judge);
    progress(&format!("faults: {} left ({} runs)", plan.faults.len(), judge.runs));
    simplify_stock(&mut plan, &mut judge);
    progress(&format!("stock: {:?} ({} runs)", plan.products.iter().map(|p| p.stock).collect::<Vec<_>>(), judge.runs));
    loop {
        let round_start = plan.clone();
        loop {
            let before = sizes(&plan);
            plan = shrink_buyers(plan, &mut judge);
            progress(&format!("buyers: {} left ({} runs)", plan.buyers.len(), judge.runs));
            plan = shrink_faults(plan, &mut judge);
            progress(&format!("faults: {} left ({} runs)", plan.faults.len(), judge.runs));
            plan = shrink_admin(plan, &mut judge);
            progress(&format!("administrator's actions: {} left ({} runs)", admin_actions(&plan).len(), judge.runs));
            if sizes(&plan) == before {
                break;
            }
        }
        simplify_faults(&mut plan, &mut judge);
        simplify_buyers(&mut plan, &mut judge);
        progress(&format!("simplified ({} runs)", judge.runs));
        if plan == round_start || judge.exhausted() {
            break;
        }
    }
    Ok(Shrunk { plan, invariant, runs: judge.runs })
}

/// Runs candidates, counting them, and says whether each still violates the invariant.
struct Judge {
    settings: RunSettings,
    invariant: Invariant,
    runs: usize,
}

impl Judge {
    fn exhausted(&self) -> bool {
        self.runs >= MAX_SHRINK_RUNS
    }

    fn fails(&mut self, plan: &Plan) -> bool {
        if self.exhausted() || plan.check_references().is_err() {
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

/// Buyers, faults and administrator's actions: what delta debugging removes.
fn sizes(plan: &Plan) -> (usize, usize, usize) {
    (plan.buyers.len(), plan.faults.len(), admin_actions(plan).len())
}

/// One action of the administrator: a restock or a change of one product (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminAction {
    Restock(usize, RestockPlan),
    Change(usize, ChangePlan),
}

/// The plan's restocks and changes, product by product, each list in its own order.
fn admin_actions(plan: &Plan) -> Vec<AdminAction> {
    let mut actions = Vec::new();
    for product in &plan.products {
        actions.extend(product.restocks.iter().map(|restock| AdminAction::Restock(product.index, *restock)));
        actions.extend(product.changes.iter().map(|change| AdminAction::Change(product.index, *change)));
    }
    actions
}

/// `plan` with only these restocks and changes (a sublist of [`admin_actions`], so each
/// product's lists keep their order).
fn with_admin_actions(plan: &Plan, actions: &[AdminAction]) -> Plan {
    let mut shrunk = plan.clone();
    for product in &mut shrunk.products {
        product.restocks.clear();
        product.changes.clear();
    }
    for action in actions {
        match *action {
            AdminAction::Restock(index, restock) => shrunk.products[index].restocks.push(restock),
            AdminAction::Change(index, change) => shrunk.products[index].changes.push(change),
        }
    }
    shrunk
}

/// Delta debugging over the administrator's restocks and changes.
fn shrink_admin(plan: Plan, judge: &mut Judge) -> Plan {
    let actions = admin_actions(&plan);
    if actions.is_empty() {
        return plan;
    }
    let kept = ddmin(actions, |candidate| judge.fails(&with_admin_actions(&plan, candidate)));
    with_admin_actions(&plan, &kept)
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
        if plan.buyers[index].cancelled_after_ms.is_some() {
            let mut candidate = plan.clone();
            candidate.buyers[index].cancelled_after_ms = None;
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
    fn the_administrators_actions_come_apart_and_back_in_each_products_order() {
        use crate::plan::{FaultMix, PlanOptions, Topology};
        let options = PlanOptions {
            seed: 5,
            buyers: 100,
            products: 4,
            stock_per_product: 20,
            instances: 2,
            topology: Topology::Single,
            fault_mix: FaultMix::Swarm,
            duration_ms: 10_000,
            partition: false,
        };
        // A swarm seed whose plan holds restocks and changes on more than one product.
        let plan = (1..200)
            .map(|seed| Plan::generate(PlanOptions { seed, ..options.clone() }).expect("plan"))
            .find(|plan| {
                let busy = plan.products.iter().filter(|p| !p.restocks.is_empty() || !p.changes.is_empty()).count();
                busy >= 2 && plan.products.iter().any(|p| p.changes.len() >= 2)
            })
            .expect("a plan with restocks and changes");
        let actions = admin_actions(&plan);
        assert_eq!(with_admin_actions(&plan, &actions), plan);
        assert!(with_admin_actions(&plan, &[]).products.iter().all(|p| p.restocks.is_empty() && p.changes.is_empty()));
        // Without the first change of a product with two or more, the others stay in order.
        let product = plan.products.iter().find(|p| p.changes.len() >= 2).expect("product");
        let first = actions
            .iter()
            .position(|action| matches!(action, AdminAction::Change(index, _) if *index == product.index))
            .expect("its first change");
        let mut fewer = actions.clone();
        fewer.remove(first);
        let shrunk = with_admin_actions(&plan, &fewer);
        assert_eq!(shrunk.products[product.index].changes, product.changes[1..]);
        assert!(shrunk.check_references().is_ok());
    }

    #[test]
    fn ddmin_keeps_nothing_when_nothing_is_needed() {
        assert!(ddmin(vec![1, 2, 3], |_| true).is_empty());
    }
}
