//! The checker is proven to catch what it claims: for each invariant, a run against a
//! server variant broken on purpose (compiled only under the `broken` feature) must be
//! reported violated, and its replay command must name the same plan and variant.
#![cfg(feature = "broken")]

use flashsale::broken::Broken;
use flashsale_sim::checker::Invariant;
use flashsale_sim::cli::{RunOptions, Shape, parse_replay};
use flashsale_sim::plan::{FaultMix, Plan, Topology};
use flashsale_sim::runner::RunOutcome;

use crate::{run, small};

fn with(variant: Broken) -> RunOptions {
    RunOptions { broken: Some(variant), ..crate::quiet() }
}

async fn run_broken(seed: u64, faults: FaultMix, variant: Broken) -> RunOutcome {
    run_plan(small(seed, faults), variant).await
}

async fn run_plan(plan: Plan, variant: Broken) -> RunOutcome {
    assert!(plan.products.iter().any(|p| p.one_per_user), "the plan needs a one-per-user product");
    assert!(plan.products.iter().any(|p| !p.one_per_user) || variant != Broken::NewOrderOnReplay);
    run(plan, with(variant)).await
}

fn assert_caught(outcome: &RunOutcome, invariant: Invariant, variant: Broken) {
    let verdict = outcome.report.verdict(invariant).expect("a verdict");
    assert!(!verdict.held, "{:?} was not caught as a {} violation", variant, invariant.name());
    assert!(!verdict.violations.is_empty());
    assert!(!outcome.report.passed());
    // The replay command names the same plan and the same variant.
    let replay = parse_replay(&outcome.replay_command).expect("the replay command parses");
    assert_eq!(replay.run.broken, Some(variant));
    let again = Plan::generate(replay.plan.shape.options(replay.plan.seed)).expect("plan");
    assert_eq!(again.hash(), outcome.plan_hash);
    assert!(flashsale_sim::report::violation_details(outcome).contains(&outcome.replay_command));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_that_checks_stock_after_taking_a_unit_oversells_and_goes_negative() {
    let outcome = run_broken(21, FaultMix::None, Broken::Oversell).await;
    assert_caught(&outcome, Invariant::NoOversell, Broken::Oversell);
    assert_caught(&outcome, Invariant::NonNegativeStock, Broken::Oversell);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_command_of_a_violation_reproduces_it() {
    let first = run_broken(22, FaultMix::None, Broken::Oversell).await;
    assert_caught(&first, Invariant::NoOversell, Broken::Oversell);
    let replay = parse_replay(&first.replay_command).expect("parses");
    let plan = Plan::generate(replay.plan.shape.options(replay.plan.seed)).expect("plan");
    let second = run(plan, replay.run).await;
    assert_caught(&second, Invariant::NoOversell, Broken::Oversell);
}

#[tokio::test(flavor = "multi_thread")]
async fn skipping_the_per_user_check_sells_a_buyer_two_units() {
    // Stock that lasts past the opening, so a careless buyer's second key finds a unit.
    let plan = Plan::generate(
        Shape {
            buyers: 400,
            products: 2,
            stock: 150,
            instances: 2,
            topology: Topology::Single,
            faults: FaultMix::None,
            duration_ms: 12_000,
            partition: false,
        }
        .options(23),
    )
    .expect("plan");
    let outcome = run_plan(plan, Broken::DoubleBuy).await;
    assert_caught(&outcome, Invariant::OnePerUser, Broken::DoubleBuy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_that_makes_a_new_order_breaks_idempotency() {
    let outcome = run_broken(24, FaultMix::None, Broken::NewOrderOnReplay).await;
    assert_caught(&outcome, Invariant::Idempotency, Broken::NewOrderOnReplay);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconciler_that_drops_pending_orders_loses_acknowledged_orders_and_leaks_stock() {
    let outcome = run_broken(25, FaultMix::MongoOutage, Broken::DropPending).await;
    assert_caught(&outcome, Invariant::NoLostOrder, Broken::DropPending);
    assert_caught(&outcome, Invariant::Conservation, Broken::DropPending);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconciler_that_stores_orders_under_new_ids_makes_phantom_orders() {
    let outcome = run_broken(26, FaultMix::MongoOutage, Broken::Phantom).await;
    assert_caught(&outcome, Invariant::NoPhantom, Broken::Phantom);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sold_out_answer_with_a_unit_left_breaks_conservation() {
    // Without the plan's cancellations and restocks: each gives units back, and the
    // checker counts only the sold-outs answered once they had time to reach the sale,
    // which in a sale this small may leave none.
    let mut plan = small(27, FaultMix::None);
    for buyer in &mut plan.buyers {
        buyer.cancelled_after_ms = None;
    }
    for product in &mut plan.products {
        product.restocks.clear();
    }
    let outcome = run_plan(plan, Broken::PrematureSoldOut).await;
    let verdict = outcome.report.verdict(Invariant::Conservation).expect("a verdict");
    assert!(!verdict.held && !verdict.violations.is_empty(), "a premature sold-out was not caught");
    assert!(!outcome.report.passed());
}
