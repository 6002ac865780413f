//! Real runs of the simulator against real redis-server, FerretDB and server instances:
//! a faulted run in which every invariant holds and every self-check passes, pinned
//! regression seeds, and (under the `broken` feature, which `scripts/test` enables) one
//! run per invariant against a deliberately broken server, which the checker must report
//! violated, with a replay command that names the same plan. `det` runs the same plans
//! in deterministic mode: exact replay, and the shrunk plans of the broken variants.

mod broken;
mod det;
mod pinned;

use flashsale_sim::checker::Invariant;
use flashsale_sim::cli::{RunOptions, Shape};
use flashsale_sim::plan::{FaultMix, Plan, Topology};
use flashsale_sim::runner::{self, RunOutcome};

/// A small plan: a few hundred buyers, short enough for the test suite.
pub fn small(seed: u64, faults: FaultMix) -> Plan {
    Plan::generate(
        Shape {
            buyers: 400,
            products: 2,
            stock: 25,
            instances: 2,
            topology: Topology::Single,
            faults,
            duration_ms: 12_000,
            partition: false,
        }
        .options(seed),
    )
    .expect("a valid plan")
}

pub async fn run(plan: Plan, options: RunOptions) -> RunOutcome {
    let outcome = runner::run(options.settings(plan)).await.expect("the run completes");
    // What an engineer would read, kept in the test output for a failing test.
    eprintln!("{}", flashsale_sim::report::verdict_table(&outcome));
    eprintln!("{}", flashsale_sim::report::violation_details(&outcome));
    outcome
}

pub fn quiet() -> RunOptions {
    RunOptions {
        report_dir: None,
        quiet: true,
        backend: flashsale_sim::world::BackendChoice::Local,
        mode: flashsale_sim::cli::Mode::Real,
        check_determinism: false,
        plan_file: None,
        #[cfg(feature = "broken")]
        broken: None,
    }
}

pub fn assert_every_invariant_held(outcome: &RunOutcome) {
    for invariant in Invariant::ALL {
        let verdict = outcome.report.verdict(invariant).expect("a verdict per invariant");
        assert!(verdict.held, "{} violated: {:#?}", invariant.name(), verdict.violations);
        // Invariant 9 checks the cancellations answered 200: in real mode a plan's few
        // may all come before their buyer has an order (404), which proves nothing wrong.
        if invariant != Invariant::ReleasedStaysReleased {
            assert!(verdict.checked > 0, "{} checked nothing", invariant.name());
        }
    }
    for check in &outcome.report.self_checks {
        assert!(check.passed, "self-check {} failed: {}", check.check.name(), check.detail);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_faulted_sale_keeps_every_invariant() {
    let outcome = run(small(11, FaultMix::Default), quiet()).await;
    assert_every_invariant_held(&outcome);
    assert!(outcome.report.passed());
    // The run did meet its faults: unknown outcomes, and every planned fault fired.
    assert!(outcome.history.ops.iter().any(|op| op.outcome.is_info()));
    assert!(!outcome.history.faults.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_with_mongodb_unreachable_at_each_opening_answers_pending_and_loses_nothing() {
    let outcome = run(small(12, FaultMix::MongoOutage), quiet()).await;
    assert_every_invariant_held(&outcome);
    let pending = outcome
        .history
        .ops
        .iter()
        .filter(|op| matches!(op.outcome, flashsale_sim::history::Outcome::Ok { status: 202, .. }))
        .count();
    assert!(pending > 0, "no purchase was answered 202 pending while MongoDB was unreachable");
}
