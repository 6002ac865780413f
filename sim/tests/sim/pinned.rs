//! Seeds that once found a bug (in the server, or a false alarm of the checker), pinned
//! so it stays fixed. Each entry names the plan exactly as `flashsale-sim run` printed
//! it (its replay command) and what it found. Seed 1 at its full size (5,000 buyers),
//! which found the MongoDB pool starving behind operations given up in a storm, is
//! pinned in `.ci/run` instead: too large to run beside the suite's other simulations.

use flashsale_sim::cli::parse_replay;
use flashsale_sim::plan::Plan;

use crate::{assert_every_invariant_held, quiet, run};

/// (replay command, what it found).
const PINNED: &[(&str, &str)] = &[
    (
        "cargo run --release -p flashsale-sim -- run --seed 3 --buyers 1500 --products 3 --stock 100 --instances 2 --topology single --faults default --duration-ms 15000",
        "key reusers whose first product was answered sold out by the in-process shortcut (which claims no key) \
     then bought the next product with the same key: one order per key, which the checker once reported as an \
     idempotency and phantom violation (first seen at seed 1 with 5,000 buyers; this plan has dozens)",
    ),
    (
        "cargo run --release -p flashsale-sim -- run --seed 4 --buyers 1500 --products 3 --stock 100 --instances 2 --topology single --faults default --duration-ms 15000",
        "server bug: ten 202 answers never reached MongoDB, and retries of their keys were told sold out. A request \
     that reserved before Redis lost its data answered 202 although the reservation was gone; a rebuild read \
     MongoDB before such requests' writes landed, so Redis handed their units out again; and the reconciler then \
     dropped the second holder's 202 reservation on the unit conflict. Fixed: 202 only while Redis holds the \
     reservation (else 503), the rebuild waits out writes in flight, conflicting reservations get a fresh unit",
    ),
    (
        "cargo run --release -p flashsale-sim -- run --seed 3 --buyers 1500 --products 3 --stock 100 --instances 2 --topology cluster --faults default --duration-ms 15000",
        "server bug: after the first cluster master restarted behind its proxy, both instances' cluster connections \
     kept node connections the proxy had closed; every command to that node's slots timed out for the rest of \
     the run and its product was never rebuilt (3 runs in 5). Fixed: a cluster connection that keeps failing is \
     made again from scratch (`redis::ClusterHandle`)",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn pinned_seeds_keep_every_invariant() {
    for (command, found) in PINNED {
        let args = parse_replay(command).expect("a pinned replay command parses");
        let plan = Plan::generate(args.plan.shape.options(args.plan.seed)).expect("plan");
        eprintln!("pinned seed {}: {found}", args.plan.seed);
        assert_every_invariant_held(&run(plan, quiet()).await);
    }
}
