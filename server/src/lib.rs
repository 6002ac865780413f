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
//! - The store seam: [`redis`] (`RedisConn`, key names in [`redis::keys`], typed scripts
//!   in [`redis::scripts`]) and [`db`] (`Db`: one method per MongoDB query, typed errors,
//!   the unique indexes behind every guarantee). With the `memory` feature both have an
//!   in-process emulation (`memory://` URLs). Nothing else names a store's types.
//! - [`sale`]: the live sale, the layer below `products` and `purchase`: sale state,
//!   orders, rebuild, reconciler, sold-out shortcut, product records and their cache.
//! - [`auth`]: register, login, OTP, sessions, logout, profile.
//! - [`products`]: catalogue with cache-aside, admin writes, sale windows.
//! - [`purchase`]: the purchase protocol: buy, order reads, admin cancel, idempotency.
//! - [`ratelimit`], [`events`] (pub/sub and SSE), [`http`] (extractors, ops endpoints).
//! - `broken` (only with the `broken` feature): deliberately broken variants of the
//!   purchase protocol, for the simulator's checker.
//!
//! Local backend processes for tests and `flashsale dev` live in the `flashsale-stack`
//! crate (`server/stack/`), not in this library.

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
pub mod sale;
pub mod startup;
pub mod state;
