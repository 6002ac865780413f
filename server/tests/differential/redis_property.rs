//! The Redis differential property: random sequences of steps run on the emulation and
//! on a real redis-server must give the same reply at every step and leave the same
//! keyspace after every step.

use proptest::collection::vec;
use proptest::strategy::Strategy;

use crate::compare::{self, Mismatch, Persistence};
use crate::redis_normal::{self, Normal};
use crate::redis_ops::Step;
use crate::redis_sides::Pair;
use crate::redis_strategies;

/// Sequences per run (the acceptance criterion asks for at least 2,000).
pub const CASES: u32 = 2_000;

/// Where shrunk counterexamples are kept, and run first on the next run.
#[cfg(not(feature = "memory-broken"))]
pub const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential/redis.proptest-regressions");

/// Runs `steps` on both sides of `pair` (which start empty), comparing after each step.
pub async fn run_steps(pair: &mut Pair, steps: &[Step]) -> Result<(), Mismatch> {
    for (index, step) in steps.iter().enumerate() {
        // The sides are independent: one computes while the other waits for its socket.
        let (real, emulated) = tokio::join!(step.run(&mut pair.real), step.run(&mut pair.emulated));
        compare::agree(index, step, "reply", &real, &emulated, Normal::agrees_with)?;
        let (real, emulated) = tokio::join!(redis_normal::dump(&mut pair.real), redis_normal::dump(&mut pair.emulated));
        compare::agree(index, step, "keyspace", &real, &emulated, Normal::agrees_with)?;
    }
    Ok(())
}

/// Sequences of 1 to 30 steps, half of them after a sale was loaded.
pub fn sequences() -> impl Strategy<Value = Vec<Step>> {
    (redis_strategies::prelude(), vec(redis_strategies::step(), 1..=29)).prop_map(|(mut steps, more)| {
        steps.extend(more);
        steps
    })
}

/// The property over `cases` sequences: the shrunk counterexample if one disagrees.
/// Blocking: it runs its own current-thread runtime, reused by every sequence.
pub fn check(cases: u32, persistence: Persistence) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let pair = std::cell::RefCell::new(runtime.block_on(Pair::open()));
    compare::run_property(cases, persistence, &sequences(), |steps| {
        let mut pair = pair.borrow_mut();
        runtime.block_on(async {
            pair.reset().await;
            run_steps(&mut pair, &steps).await
        })
    })
}

#[cfg(not(feature = "memory-broken"))]
#[test]
fn random_sequences_of_commands_and_scripts_agree_with_redis_server() {
    let started = std::time::Instant::now();
    if let Err(failure) = check(CASES, Persistence::File(REGRESSIONS)) {
        panic!("the emulation and redis-server disagree:\n{failure}");
    }
    eprintln!("{CASES} sequences agreed in {:.1} s", started.elapsed().as_secs_f64());
}
