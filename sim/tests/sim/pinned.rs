//! Seeds that once found a server bug, pinned so the bug stays fixed. Each entry names
//! the plan exactly as `flashsale-sim run` would (its replay command) and the bug.

use flashsale_sim::cli::parse_replay;
use flashsale_sim::plan::Plan;

use crate::{assert_every_invariant_held, quiet, run};

/// (replay command, what it found).
const PINNED: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread")]
async fn pinned_seeds_keep_every_invariant() {
    for (command, found) in PINNED {
        let args = parse_replay(command).expect("a pinned replay command parses");
        let plan = Plan::generate(args.plan.shape.options(args.plan.seed)).expect("plan");
        eprintln!("pinned seed {}: {found}", args.plan.seed);
        assert_every_invariant_held(&run(plan, quiet()).await);
    }
}
