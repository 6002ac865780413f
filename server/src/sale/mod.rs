//! The live sale: the layer below both `products` and `purchase` that owns a product's
//! sale state in Redis and the orders that back it in MongoDB.
//!
//! - [`state`] (re-exported here): first load, restock, window changes, unload, and the
//!   snapshot of the sale state that MongoDB implies.
//! - [`orders`]: order documents and their insert, duplicates resolved by reading;
//!   [`order_writes`]: the group commit those inserts go through.
//! - [`rebuild`]: rebuild of a product's sale state from MongoDB, and the watcher of
//!   Redis restarts. [`reconciler`]: persists or releases reservations left behind.
//! - [`sold_out`]: the in-process sold-out shortcut.
//! - [`product_store`], [`product_cache`]: product records in MongoDB and their
//!   cache-aside in Redis, which every layer above reads through [`product_cache::load_product`].
//!
//! **Invariant:** only this layer writes sale keys, and only through `lua/` scripts
//! (plus the `DEL` of [`state::unload`] and the reconciler's `ZREM`/`HDEL` of entries it
//! resolved); `products` and `purchase` import it and never each other.

pub mod order_writes;
pub mod orders;
pub mod product_cache;
pub mod product_store;
pub mod rebuild;
pub mod reconciler;
pub mod sold_out;
mod state;

pub use state::*;
