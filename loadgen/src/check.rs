//! The correctness check after a load: once the reconciler has drained (bounded), MongoDB
//! and Redis are read through the server crate's code and compared with what the
//! buyers were told. A failed check fails the run, whatever the latency figures say.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use flashsale::sale;
use flashsale::sale::orders::{self, OrderStatus};
use flashsale::state::App;
use serde::Serialize;
use uuid::Uuid;

use crate::record::Acknowledged;

/// How long the check waits for every pending reservation to be written.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at the pending set.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// One verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Every verdict of one run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub checks: Vec<Check>,
    /// What the sale's check counted, in the runs that had a sale (`sale`, `mixed`).
    pub sale: Option<SaleCount>,
}

/// What the check of a sale counted after the load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SaleCount {
    /// Confirmed orders in MongoDB.
    pub orders: usize,
    /// Time until the pending set was empty, ms (None: it never was).
    pub drained_ms: Option<u64>,
    /// The replays of the acknowledged keys.
    pub replays: ReplayCount,
}

/// What the replays of the acknowledged keys showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplayCount {
    /// Keys a buyer was told an order for.
    pub acknowledged_keys: usize,
    /// Of those, keys replayed at least once (a replay that got an answer).
    pub replayed_keys: usize,
    /// Of those, keys never replayed: the check says nothing about them.
    pub not_replayed_keys: usize,
    /// Keys with a replay (or a later acknowledgement) that named another order or unit,
    /// or a replay that named no order.
    pub differing_keys: usize,
    /// Replays in all.
    pub replays: u64,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.passed)
    }
}

fn check(name: &'static str, passed: bool, detail: String) -> Check {
    Check { name, passed, detail }
}

/// Waits for the pending set of `product` to empty, then checks the sale.
/// `buyers` is how many buyers took part, each wanting one unit.
pub async fn check_sale(
    app: &App,
    product: Uuid,
    stock: i64,
    buyers: usize,
    acknowledged: &[Acknowledged],
) -> anyhow::Result<CheckReport> {
    let drained_ms = drain(app, product).await;
    let documents = orders::orders_of_product(app, product).await?;
    let confirmed: Vec<_> = documents.iter().filter(|o| o.status == OrderStatus::Confirmed).collect();
    let mut checks = Vec::new();

    checks.push(check(
        "reconciler drained",
        drained_ms.is_some(),
        match drained_ms {
            Some(ms) => format!("no pending reservation left after {ms} ms"),
            None => format!("reservations still pending after {DRAIN_TIMEOUT:?}"),
        },
    ));
    let expected = usize::try_from(stock).unwrap_or(0).min(buyers);
    checks.push(check(
        "orders = stock",
        confirmed.len() == expected,
        format!(
            "{} confirmed orders in MongoDB for {stock} units and {buyers} buyers (expected {expected})",
            confirmed.len()
        ),
    ));
    let units: Vec<i64> = confirmed.iter().filter_map(|o| o.unit_number()).collect();
    let distinct_units: HashSet<i64> = units.iter().copied().collect();
    let out_of_range = units.iter().filter(|unit| !(1..=stock).contains(*unit)).count();
    checks.push(check(
        "no unit sold twice or beyond the stock",
        distinct_units.len() == confirmed.len() && out_of_range == 0,
        format!(
            "{} distinct units among {} orders, {out_of_range} beyond unit {stock}",
            distinct_units.len(),
            confirmed.len()
        ),
    ));
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for order in &confirmed {
        *per_user.entry(order.user_id.as_str()).or_default() += 1;
    }
    let twice = per_user.values().filter(|count| **count > 1).count();
    checks.push(check("nobody bought twice", twice == 0, format!("{twice} buyers hold more than one order")));
    let (replay_check, replays) = check_replays(acknowledged);
    checks.push(replay_check);
    let stored: HashMap<String, (&str, Option<i64>)> =
        confirmed.iter().map(|o| (o.id.clone(), (o.user_id.as_str(), o.unit_number()))).collect();
    let missing: Vec<&Acknowledged> = acknowledged
        .iter()
        .filter(|a| stored.get(&a.order_id.to_string()) != Some(&(a.user_id.to_string().as_str(), Some(a.unit))))
        .collect();
    checks.push(check(
        "every acknowledged order is in MongoDB",
        missing.is_empty(),
        match missing.first() {
            Some(first) => format!(
                "{} of {} acknowledged orders missing or different, e.g. {first:?}",
                missing.len(),
                acknowledged.len()
            ),
            None => format!("all {} acknowledged orders stored with their buyer and unit", acknowledged.len()),
        },
    ));
    let acknowledged_ids: HashSet<String> = acknowledged.iter().map(|a| a.order_id.to_string()).collect();
    let unacknowledged = confirmed.iter().filter(|o| !acknowledged_ids.contains(&o.id)).count();
    let state = sale::stock(app, product).await?;
    let remaining = state.map(|s| s.remaining());
    let sold = i64::try_from(confirmed.len()).unwrap_or(i64::MAX);
    checks.push(check(
        "Redis agrees with MongoDB",
        remaining == Some(stock - sold),
        format!(
            "Redis says {} units remain, MongoDB holds {sold} orders of {stock}; {unacknowledged} stored orders were never acknowledged (their buyer got no answer)",
            remaining.map_or_else(|| "no sale state:".to_owned(), |r| r.to_string())
        ),
    ));
    Ok(CheckReport { checks, sale: Some(SaleCount { orders: confirmed.len(), drained_ms, replays }) })
}

/// "replays returned the same order": every replay of every acknowledged key that was
/// replayed named the order and unit of the key's acknowledgement. Keys never replayed
/// are counted, and said, not judged; a run with acknowledged keys and no replay at all
/// fails (nothing was checked).
pub fn check_replays(acknowledged: &[Acknowledged]) -> (Check, ReplayCount) {
    let replayed: Vec<&Acknowledged> = acknowledged.iter().filter(|a| a.replays > 0).collect();
    // A key told two orders is inconsistent whether or not it was replayed.
    let differing: Vec<&Acknowledged> = acknowledged.iter().filter(|a| !a.inconsistent_replays.is_empty()).collect();
    let count = ReplayCount {
        acknowledged_keys: acknowledged.len(),
        replayed_keys: replayed.len(),
        not_replayed_keys: acknowledged.len() - replayed.len(),
        differing_keys: differing.len(),
        replays: replayed.iter().map(|a| u64::from(a.replays)).sum(),
    };
    let not_replayed =
        format!("{} of {} acknowledged keys were not replayed", count.not_replayed_keys, count.acknowledged_keys);
    let detail = match differing.first() {
        Some(first) => format!(
            "{} of {} acknowledged keys were answered with another order or unit, or none, e.g. key {} of user \
             {}: {}; {not_replayed}",
            count.differing_keys,
            count.acknowledged_keys,
            first.key,
            first.user_id,
            first.inconsistent_replays.join("; ")
        ),
        None if count.replayed_keys == 0 && count.acknowledged_keys > 0 => {
            format!("no acknowledged key was replayed: nothing was checked; {not_replayed}")
        }
        None => format!(
            "{} replays of {} replayed keys, each naming the acknowledged order and unit; {not_replayed}",
            count.replays, count.replayed_keys
        ),
    };
    let passed = count.differing_keys == 0 && (count.acknowledged_keys == 0 || count.replayed_keys > 0);
    (check("replays returned the same order", passed, detail), count)
}

/// Waits until the product's pending set is empty; the time it took, or None.
async fn drain(app: &App, product: Uuid) -> Option<u64> {
    let started = Instant::now();
    let keys = app.keys.sale(product);
    loop {
        let mut conn = app.redis.clone();
        let pending: redis::RedisResult<u64> = redis::cmd("ZCARD").arg(&keys.pending).query_async(&mut conn).await;
        if pending.is_ok_and(|count| count == 0) {
            return Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        if started.elapsed() >= DRAIN_TIMEOUT {
            return None;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
