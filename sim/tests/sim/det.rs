//! Deterministic mode: a seed replays byte for byte, a sweep holds every invariant and
//! reaches what it must, and each deliberately broken variant is caught on the minimal
//! plan the shrinker made of its failing seed (`sim/tests/plans/broken-<variant>.json`,
//! written by `flashsale-sim shrink`); on the same plan the correct server holds.

use flashsale_sim::det;
use flashsale_sim::plan::{FaultMix, Plan};

use crate::{quiet, small};

fn det_options() -> flashsale_sim::cli::RunOptions {
    flashsale_sim::cli::RunOptions { mode: flashsale_sim::cli::Mode::Det, ..quiet() }
}

/// Runs off any async context: deterministic mode builds a runtime of its own.
fn run_det(plan: Plan, options: flashsale_sim::cli::RunOptions) -> flashsale_sim::runner::RunOutcome {
    det::run(&options.settings(plan)).expect("the deterministic run completes")
}

#[test]
fn a_seed_run_twice_gives_the_same_history_byte_for_byte() {
    let plan = small(21, FaultMix::Default);
    let first = run_det(plan.clone(), det_options());
    let second = run_det(plan, det_options());
    assert_eq!(det::first_divergence(&first.history, &second.history), None);
    assert_eq!(det::history_hash(&first.history), det::history_hash(&second.history));
    assert!(first.history.ops.len() > 400, "a sale of 400 buyers made {} requests", first.history.ops.len());
    assert!(first.report.all_held(), "{:#?}", first.report.verdicts);
}

#[test]
fn different_seeds_give_different_histories() {
    let a = run_det(small(22, FaultMix::Default), det_options());
    let b = run_det(small(23, FaultMix::Default), det_options());
    assert_ne!(det::history_hash(&a.history), det::history_hash(&b.history));
}

#[test]
fn a_small_sweep_holds_every_invariant_and_reaches_every_item() {
    // At least 30 seeds, then on until every item was reached (a kill that catches a
    // purchase between its reservation and its order write comes in about 1 seed of 40).
    const AT_LEAST: u64 = 30;
    const AT_MOST: u64 = 300;
    let mut coverage = det::Coverage::default();
    for seed in 1..=AT_MOST {
        if seed > AT_LEAST && coverage.missing().is_empty() {
            break;
        }
        let plan = Plan::generate(
            flashsale_sim::cli::Shape {
                buyers: 100,
                products: 2,
                stock: 20,
                instances: 2,
                topology: flashsale_sim::plan::Topology::Single,
                faults: FaultMix::Default,
                duration_ms: 10_000,
                partition: false,
            }
            .options(seed),
        )
        .expect("plan");
        let outcome = run_det(plan, det_options());
        assert!(outcome.report.all_held(), "seed {seed}: {:#?}", outcome.report.verdicts);
        coverage.add(&outcome.history);
    }
    assert!(coverage.missing().is_empty(), "{}", coverage.table());
}

/// Every `sim/tests/plans/regression-*.json`: a plan that once found a server bug in
/// deterministic mode, and must hold every invariant now.
#[test]
fn the_regression_plans_hold_every_invariant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the plans folder")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("regression-")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression plan in {}", dir.display());
    for path in files {
        let plan = Plan::load(&path).expect("a regression plan loads");
        let outcome = run_det(plan, det_options());
        assert!(outcome.report.all_held(), "{}: {:#?}", path.display(), outcome.report.verdicts);
    }
}

#[cfg(feature = "broken")]
mod broken_plans {
    use flashsale::broken::Broken;
    use flashsale_sim::checker::Invariant;
    use flashsale_sim::plan::Plan;

    use super::{det_options, run_det};

    /// (variant, its shrunk plan, the invariant the shrinker kept violated).
    const PLANS: &[(Broken, &str, Invariant)] = &[
        (Broken::Oversell, "broken-oversell.json", Invariant::NoOversell),
        (Broken::DoubleBuy, "broken-double_buy.json", Invariant::OnePerUser),
        (Broken::NewOrderOnReplay, "broken-new_order_on_replay.json", Invariant::Idempotency),
        (Broken::DropPending, "broken-drop_pending.json", Invariant::NoLostOrder),
        (Broken::Phantom, "broken-phantom.json", Invariant::NoLostOrder),
        (Broken::PrematureSoldOut, "broken-premature_sold_out.json", Invariant::Conservation),
        (Broken::GroupCommitAcksFailures, "broken-group_commit_acks_failures.json", Invariant::NoLostOrder),
        (Broken::ReplayAcrossUsers, "broken-replay_across_users.json", Invariant::Idempotency),
        (Broken::StockOffByOne, "broken-stock_off_by_one.json", Invariant::StockSeen),
        (Broken::StockEventOffByOne, "broken-stock_event_off_by_one.json", Invariant::StockSeen),
        (Broken::AckBeforeWrite, "broken-ack_before_write.json", Invariant::NoLostOrder),
        (Broken::RebuildForgetsReleased, "broken-rebuild_forgets_released.json", Invariant::ReleasedStaysReleased),
        (Broken::PendingAfterVanished, "broken-pending_after_vanished.json", Invariant::NoLostOrder),
        (
            Broken::ReconcilerConfirmsReleased,
            "broken-reconciler_confirms_released.json",
            Invariant::ReleasedStaysReleased,
        ),
        (Broken::RebuildsAtOnce, "broken-rebuilds_at_once.json", Invariant::Conservation),
        (Broken::SettingsGoBack, "broken-settings_go_back.json", Invariant::SaleRules),
    ];

    fn load(file: &str) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans").join(file);
        Plan::load(&path).expect("a pinned plan loads")
    }

    #[test]
    fn each_broken_variant_is_caught_on_its_shrunk_plan_of_at_most_ten_buyers() {
        for (variant, file, invariant) in PLANS {
            let plan = load(file);
            assert!(plan.buyers.len() <= 10, "{file}: {} buyers", plan.buyers.len());
            let mut options = det_options();
            options.broken = Some(*variant);
            let outcome = run_det(plan, options);
            let verdict = outcome.report.verdict(*invariant).expect("a verdict");
            assert!(!verdict.held, "{variant:?} on {file}: {} held", invariant.name());
        }
    }

    #[test]
    fn the_correct_server_holds_every_invariant_on_the_shrunk_plans() {
        for (_, file, _) in PLANS {
            let outcome = run_det(load(file), det_options());
            assert!(outcome.report.all_held(), "{file}: {:#?}", outcome.report.verdicts);
        }
    }
}
