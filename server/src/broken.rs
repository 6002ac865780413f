//! Deliberately broken variants of the purchase protocol, for the simulator only.
//!
//! This module exists only with the `broken` cargo feature; without it none of this code
//! (nor the scripts in `lua/broken/`) is in the binary. With the feature, an instance
//! misbehaves only if its [`Config::broken`](crate::config::Config) names a variant
//! (`config.broken = Some(Broken::Oversell)`); with `None` it behaves exactly as a build
//! without the feature. Each variant breaks one or more invariants of the architecture
//! brief, so the simulator can show that its checker catches it.
//!
//! The broken branches sit behind `#[cfg(feature = "broken")]` at their call sites in
//! `purchase/` and `redis/scripts.rs`; the helpers below keep those branches one line.

use uuid::Uuid;

use crate::redis::keys::SaleKeys;
use crate::sale::orders::OrderDoc;
use crate::state::App;

/// One deliberately broken behaviour of a server instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Broken {
    /// The purchase script (`lua/broken/purchase_oversell.lua`) checks the stock as if the
    /// unit were already taken (off by one, fresh units not clamped at 0): it sells one
    /// unit beyond the stock, unit `stock_total + 1`, and answers `remaining = -1`.
    /// MongoDB's `(product_id, unit)` index does not stop it: the extra unit number is new.
    ///
    /// Breaks: no oversell (stock + 1 confirmed orders), stock never negative, conservation.
    Oversell,
    /// The purchase script (`lua/broken/purchase_double_buy.lua`) skips the one-per-user
    /// check, and every order document gets a `buyer_slot` of its own (its order id, as
    /// for products without the rule), so MongoDB's `(product_id, buyer_slot)` index does
    /// not stop it either: a buyer who sends a new Idempotency-Key per attempt gets a
    /// second unit of a one-per-user product.
    ///
    /// Breaks: one per user.
    DoubleBuy,
    /// The order id is random per request (not derived from user and Idempotency-Key), and
    /// the idempotency record is neither consulted nor written: a retry with the same key
    /// makes a new order (two 201s with different ids on a product without the
    /// one-per-user rule; 409 `already-purchased` instead of its own order on one with it).
    ///
    /// Breaks: idempotency (a retry never gets its order back), and no phantom order (the
    /// stored ids are derived from no user and key).
    NewOrderOnReplay,
    /// The reconciler drops each pending reservation instead of persisting it: it removes
    /// the reservation from Redis (`orders` record and `pending` entry) without writing
    /// MongoDB and without giving its unit or buyer slot back. A 202 pending answer then
    /// never gets its MongoDB document (a retry with the same key finds no reservation,
    /// and on a one-per-user product gets 409 `already-purchased`).
    ///
    /// Breaks: no lost acknowledged order, conservation (a unit is taken in Redis but no
    /// order holds it).
    DropPending,
    /// The reconciler writes each reservation it persists under a fresh random `_id`
    /// instead of the reservation's order id, and confirms the reservation in Redis as
    /// usual. (The purchase request's own write is unchanged.)
    ///
    /// Breaks: no phantom order (a MongoDB order nobody requested), no lost acknowledged
    /// order (the 202's order id never appears in MongoDB, though a retry gets 201 for it).
    Phantom,
    /// The purchase script (`lua/broken/purchase_premature_sold_out.lua`) answers
    /// `sold_out` while one unit is still free (`<= 1` instead of `<= 0`); a product of
    /// stock 1 never sells.
    ///
    /// Breaks: conservation (a sold-out answer while a unit was free; at the end free
    /// units + orders = stock still holds, with one unit never sold).
    PrematureSoldOut,
    /// A group commit of order writes (`sale::order_writes`) tells every member other
    /// than its leader that its order was stored, whatever MongoDB answered for it: a
    /// member whose insert failed (the batch failed as a whole, or its own document did)
    /// answers 201 and is confirmed in Redis with no document in MongoDB.
    ///
    /// Breaks: no lost acknowledged order, conservation (a unit confirmed in Redis that no
    /// MongoDB order holds).
    GroupCommitAcksFailures,
    /// The idempotency record is keyed by the key string alone, not by the user and the
    /// key: a buyer who sends a key another buyer already used on the same product gets
    /// that buyer's stored answer replayed, with the other buyer's order (or 409
    /// `idempotency-in-flight` while it runs).
    ///
    /// Breaks: idempotency (an answer names an order that is not the one derived from its
    /// own user and key: it went to a user it does not belong to).
    ReplayAcrossUsers,
    /// The product detail's `remaining` counts one unit too many (unit numbers start at
    /// 1, and the count forgets it): one unit left is shown after the last was sold, the
    /// full stock plus one before the first.
    ///
    /// Breaks: stock seen is possible (a read shows a unit free that a confirmed order
    /// holds). The sale itself is untouched.
    StockOffByOne,
    /// The purchase script (`lua/broken/purchase_stock_event_off_by_one.lua`) publishes a
    /// `stock_updated` event one unit short (the last unit's event says -1); the sale, the
    /// script's answer and every read are right. Instances act on the event only as far
    /// as `sold_out` goes, which is still published at 0.
    ///
    /// Breaks: stock events within bounds (an event showing fewer units left than the
    /// keys that may hold one allow; a negative one at the last unit).
    StockEventOffByOne,
    /// A winning purchase is confirmed in Redis and answered 201 at once; its MongoDB
    /// write runs afterwards in a task of its own, its failure only logged. Fast, and
    /// right whenever MongoDB is up and the instance lives on.
    ///
    /// Breaks: no lost acknowledged order (a 201 whose write then failed, or whose
    /// instance died first, has no document), conservation (Redis holds an order MongoDB
    /// does not).
    AckBeforeWrite,
    /// A rebuild of a product's sale state from MongoDB (`sale::state::snapshot_from_mongo`)
    /// leaves out the released orders: their ids are not tombstoned in the rebuilt state.
    /// A cancelled order's key sent again after the rebuild (a stale client, its stored
    /// answer lost with Redis's data) is not told `order-released`: it reserves a unit
    /// afresh, and is refused only once MongoDB's tombstone turns its write down, or is
    /// answered `already-purchased` when its buyer bought again meanwhile.
    ///
    /// Breaks: a released order stays released.
    RebuildForgetsReleased,
    /// A purchase whose order write failed or timed out answers 202 pending without
    /// checking that Redis still holds its reservation (`pending_if_still_held`). After a
    /// Redis data loss during the write nobody holds it: the reconciler never sees it,
    /// and the 202 never gets its document.
    ///
    /// Breaks: no lost acknowledged order (a 202 answered after the loss began).
    PendingAfterVanished,
    /// The reconciler, persisting a reservation whose order an administrator cancelled
    /// meanwhile (MongoDB answers that the id is taken, by that order's tombstone), takes
    /// the tombstone for a stale copy: it writes the order back over it and confirms the
    /// reservation, instead of releasing it. The cancelled order is live again, while
    /// Redis gave its unit back.
    ///
    /// Breaks: a released order stays released, conservation.
    ReconcilerConfirmsReleased,
    /// The rebuild lock is named per attempt (its key carries the attempt's token) instead
    /// of per product, so every rebuild takes a lock of its own and none is ever told
    /// another one is running: the instances that see Redis restart rebuild the same
    /// product at once. The later one pauses a sale the earlier one already resumed, reads
    /// MongoDB while purchases of the resumed sale are still writing their orders, and
    /// loads a state without them: their units and buyer slots are handed out again.
    ///
    /// Breaks: no oversell or one per user in Redis (the orders lost from its state are
    /// refused by MongoDB's indexes only at their own writes), conservation, no lost
    /// acknowledged order (a 202 whose reservation the later load dropped).
    RebuildsAtOnce,
    /// Every live step of a product change claims the highest revision there is, so
    /// `configure.lua` never refuses one: a change's settings that reach Redis late (sent
    /// by an instance whose commands were delayed, run after a newer change another
    /// instance applied) write the older window or rule back over the newer one, while
    /// MongoDB holds the newer.
    ///
    /// Breaks: the administrator's changes hold (a sale closed or open against the last
    /// answered change; one-per-user not as last set).
    SettingsGoBack,
}

/// The broken variant this instance runs, if any.
pub fn selected(app: &App) -> Option<Broken> {
    app.config.broken
}

/// Whether this instance runs `variant`.
pub fn is(app: &App, variant: Broken) -> bool {
    selected(app) == Some(variant)
}

/// [`Broken::NewOrderOnReplay`]: a random order id instead of the derived one.
pub fn order_id(app: &App, derived: Uuid) -> Uuid {
    if is(app, Broken::NewOrderOnReplay) { app.ids.new_record_id() } else { derived }
}

/// [`Broken::DoubleBuy`]: the buyer slot of every order is its own id, so MongoDB's
/// `(product_id, buyer_slot)` index never refuses a second order of a buyer.
pub fn buyer_slot(app: &App, mut order: OrderDoc) -> OrderDoc {
    if is(app, Broken::DoubleBuy) {
        order.buyer_slot.clone_from(&order.id);
    }
    order
}

/// [`Broken::Phantom`]: the reconciler's document gets a fresh random `_id`.
pub fn phantom_id(app: &App, mut order: OrderDoc) -> OrderDoc {
    if is(app, Broken::Phantom) {
        order.id = app.ids.new_record_id().to_string();
    }
    order
}

/// [`Broken::ReplayAcrossUsers`]: whose idempotency record a request reads and writes
/// (one shared owner for every user).
pub fn idempotency_owner(app: &App, user_id: Uuid) -> Uuid {
    if is(app, Broken::ReplayAcrossUsers) { Uuid::nil() } else { user_id }
}

/// [`Broken::StockOffByOne`]: the `remaining` a product detail reports.
pub fn reported_remaining(app: &App, remaining: i64) -> i64 {
    if is(app, Broken::StockOffByOne) { remaining + 1 } else { remaining }
}

/// [`Broken::RebuildForgetsReleased`]: whether a rebuild keeps a released order's tombstone.
pub fn rebuild_keeps_tombstones(app: &App) -> bool {
    !is(app, Broken::RebuildForgetsReleased)
}

/// [`Broken::RebuildsAtOnce`]: the keys a rebuild attempt works with, its lock the
/// attempt's own instead of the product's.
pub fn rebuild_keys(app: &App, mut keys: SaleKeys, token: &str) -> SaleKeys {
    if is(app, Broken::RebuildsAtOnce) {
        keys.rebuild_lock = format!("{}:{token}", keys.rebuild_lock);
    }
    keys
}

/// [`Broken::SettingsGoBack`]: the revision a change's live step claims.
pub fn settings_revision(app: &App, revision: i64) -> i64 {
    if is(app, Broken::SettingsGoBack) { i64::MAX } else { revision }
}

/// [`Broken::PendingAfterVanished`]: whether a 202 checks that its reservation is held.
pub fn pending_checks_reservation(app: &App) -> bool {
    !is(app, Broken::PendingAfterVanished)
}

/// [`Broken::GroupCommitAcksFailures`]: a member's outcome, acknowledged whatever it was.
pub fn group_commit_outcome(broken: Option<Broken>, outcome: crate::db::DbResult<()>) -> crate::db::DbResult<()> {
    if broken == Some(Broken::GroupCommitAcksFailures) { Ok(()) } else { outcome }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// The code lines of a script: no comment-only or blank lines, and no trailing comment
    /// except the `BROKEN` marker.
    fn code_lines(source: &str) -> Vec<&str> {
        source
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty() && !line.trim_start().starts_with("--"))
            .collect()
    }

    /// Each broken copy is `purchase.lua` with at most `changed` code lines replaced or
    /// removed, every new line marked `BROKEN`: the copies cannot drift from the script
    /// they break without this test noticing.
    #[test]
    fn the_broken_scripts_differ_from_purchase_lua_only_in_their_marked_lines() {
        let original = code_lines(include_str!("../../lua/purchase.lua"));
        let copies = [
            (include_str!("../../lua/broken/purchase_oversell.lua"), 2),
            (include_str!("../../lua/broken/purchase_double_buy.lua"), 3),
            (include_str!("../../lua/broken/purchase_premature_sold_out.lua"), 1),
            (include_str!("../../lua/broken/purchase_stock_event_off_by_one.lua"), 1),
        ];
        for (copy, changed) in copies {
            let lines = code_lines(copy);
            let marked = lines.iter().filter(|line| line.contains("-- BROKEN")).count();
            assert!(marked <= changed, "{marked} marked lines");
            // The unmarked lines are, in order, lines of the original.
            let mut rest = original.iter();
            for line in lines.iter().filter(|line| !line.contains("-- BROKEN")) {
                assert!(rest.any(|candidate| candidate == line), "line not in purchase.lua (or out of order): {line}");
            }
            let kept = lines.len() - marked;
            assert_eq!(original.len() - kept, changed, "lines of purchase.lua missing from a broken copy");
        }
    }

    #[test]
    fn variant_names_are_snake_case_in_serde_and_on_the_command_line() {
        for variant in Broken::value_variants() {
            let json = serde_json::to_string(variant).unwrap_or_default();
            let name = json.trim_matches('"');
            assert_eq!(Broken::from_str(name, false), Ok(*variant));
            assert_eq!(serde_json::from_str::<Broken>(&json).ok(), Some(*variant));
        }
        assert_eq!(serde_json::to_string(&Broken::NewOrderOnReplay).ok().as_deref(), Some("\"new_order_on_replay\""));
    }
}
