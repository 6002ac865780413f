//! With `--features memory-broken` the emulation is wrong on purpose, in one documented
//! way (`flashsale::redis::memory`'s `number_reply`: a Lua number returned by a script
//! is rounded, where Redis truncates it toward zero). These tests pass only if the
//! differential checks catch it; with the feature the tests expecting agreement are
//! left out, and without it this module is empty.
#![cfg(feature = "memory-broken")]

use crate::compare::Persistence;
use crate::{redis_property, traps};

/// The named case about the broken behaviour.
const NUMBERS_TRAP: &str = "numbers_returned_from_lua_become_integers_truncated_like_redis";

#[tokio::test]
async fn the_named_case_on_lua_numbers_catches_the_deliberately_broken_emulation() {
    let mut caught = Vec::new();
    for (name, steps) in traps::TRAPS {
        if let Err(mismatch) = traps::check(&steps()).await {
            eprintln!("{name} caught it: {mismatch}");
            caught.push(*name);
        }
    }
    assert!(
        caught.contains(&NUMBERS_TRAP),
        "{NUMBERS_TRAP} did not notice the broken emulation (caught by: {caught:?})"
    );
}

#[test]
fn the_random_sequences_catch_the_deliberately_broken_emulation() {
    let outcome = redis_property::check(redis_property::CASES, Persistence::Off);
    let failure = outcome.expect_err("the random sequences did not notice the broken emulation");
    eprintln!("the property caught it:\n{failure}");
}
