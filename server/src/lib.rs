//! # flashsale
//!
//! A flash-sale server that cannot oversell, lose an order or charge a buyer twice.
//! Redis (atomic Lua scripts in `lua/`) holds the live sale; MongoDB is the system of
//! record. `system-design/ARCHITECTURE.md` is the map.
//!
//! # Layout
//!
//! - [`startup`]: build the state, the router, and serve on a given listener.
//! - [`config`]: every setting and limit. [`error`]: the problem+json boundary.
//! - [`clock`]: injected time and entropy (the simulator replays through them).
//! - [`redis`]: connection, key names ([`redis::keys`]), typed scripts ([`redis::scripts`]).
//! - [`db`]: MongoDB collections and the unique indexes behind every guarantee.
//! - [`auth`]: register, login, OTP, sessions, logout, profile.
//! - [`products`]: catalogue with cache-aside, admin writes, sale windows.
//! - [`purchase`]: the purchase protocol, orders, idempotency, reconciler, rebuild.
//! - [`ratelimit`], [`events`] (pub/sub and SSE), [`http`] (extractors, ops endpoints).
//! - [`stack`]: local redis-server and FerretDB processes for tests and `dev`.
//! - `broken` (only with the `broken` feature): deliberately broken variants of the
//!   purchase protocol, for the simulator's checker.

pub mod auth;
#[cfg(feature = "broken")]
pub mod broken;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod products;
pub mod purchase;
pub mod ratelimit;
pub mod redis;
pub mod stack;
pub mod startup;
pub mod state;
