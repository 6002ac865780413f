//! Differential tests: the server's in-process emulated stores (`--features memory`)
//! against the real ones, on the same inputs, compared reply by reply and state by
//! state. One binary; `compare` holds what every backend's test shares.

mod compare;

// With `memory-broken`, only the tests that must catch the broken model are compiled,
// so part of the generators goes unused.
#[cfg_attr(feature = "memory-broken", allow(dead_code))]
mod mongo;

mod redis_normal;
mod redis_ops;
mod redis_property;
mod redis_sides;
mod redis_strategies;
mod traps;

mod broken;
