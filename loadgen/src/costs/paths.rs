//! The purchase paths as the sale grows: on a one-per-user product of each stock, the
//! winner path while units are left, then (the product sold out by those winners) the
//! sold-out path and the replay of a winner's key; Redis memory per sold unit; and the
//! sold-out path answered by 1, 2 and 4 server instances on the same backends.
//!
//! A product of stock S gets S − W orders written straight into MongoDB and its sale state
//! loaded from them (one `load_sale.lua` call, as a rebuild ends), then W buyers win the last W units over HTTP
//! (W = S / 2, at most [`MAX_WINNERS`]): the winners are timed on a sale state of the full
//! size, and the product they sell out is the sold-out and replay product of that size.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use uuid::Uuid;

use super::drive::{self, CONCURRENCY, Figures, Instance, fixed_count};
use crate::buyers::Buyer;
use crate::target::Target;
use crate::wire::WireClient;

/// Most winners timed on one product (and buyers made for them).
pub const MAX_WINNERS: usize = 2_000;
/// Buyers who never win: the sold-out flood. A winner trying again with a new key is
/// answered 409 already-purchased by Redis (the one-per-user check comes before the
/// stock check), never by the sold-out shortcut, so it would measure another path.
pub const LOSERS: usize = 1_000;
/// Sold-out answers timed per product.
pub const SOLD_OUT_REQUESTS: usize = 30_000;
/// Replays of one winner's key timed per product.
pub const REPLAY_REQUESTS: usize = 10_000;
/// Sold-out answers timed per instance count.
pub const INSTANCE_REQUESTS: usize = 30_000;
/// Untimed sold-out attempts sent to each instance first, so that every instance answers
/// from its in-process shortcut when the timing starts.
pub const INSTANCE_WARM_UP: usize = 200;

/// Winners timed on a product of `stock` units: half the stock, at most [`MAX_WINNERS`].
pub fn winners_of(stock: usize) -> usize {
    (stock / 2).clamp(1, MAX_WINNERS)
}

/// The purchase paths at one stock.
#[derive(Debug, Clone, Serialize)]
pub struct PathCosts {
    pub stock: usize,
    /// Orders written straight into MongoDB before the winners.
    pub seeded_orders: usize,
    /// Seconds to write them, and to rebuild the sale state from them.
    pub seed_s: f64,
    pub load_s: f64,
    pub winner: Figures,
    /// Units the winners left unsold (winners answered otherwise than 201/202).
    pub units_left_after_winners: i64,
    pub sold_out: Figures,
    /// Share of the sold-out answers the server gave from its in-process shortcut.
    pub sold_out_shortcut_share: f64,
    pub replay: Figures,
    /// `INFO memory` `used_memory` delta over the winners, per unit they bought: the sale
    /// state's entries and whatever else a purchase leaves (idempotency record, rate-limit
    /// cells), bytes.
    pub used_memory_per_sold_unit_b: f64,
    /// `MEMORY USAGE` of the product's six sale keys once sold out, and per sold unit.
    pub sale_state_b: u64,
    pub sale_state_per_unit_b: f64,
    /// Encoding of the orders hash once sold out (`listpack` while small, `hashtable` after).
    pub orders_encoding: String,
}

/// The buyers of the sweep: `winners` buy the last units, `losers` only ever try.
#[derive(Debug, Clone)]
pub struct Buyers {
    pub winners: Vec<Buyer>,
    pub losers: Vec<Buyer>,
}

/// The sold-out path on several instances.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceCost {
    pub instances: usize,
    pub sold_out: Figures,
}

/// Measures the paths at each stock; returns them and the sold-out product of the smallest.
pub async fn sweep(
    target: &Target,
    buyers: &Buyers,
    stocks: &[usize],
    run: &str,
    say: impl Fn(&str),
) -> anyhow::Result<(Vec<PathCosts>, Uuid)> {
    let http = Arc::new(WireClient::new(&target.base_url).await?);
    let buyers = (Arc::new(buyers.winners.clone()), Arc::new(buyers.losers.clone()));
    let mut costs = Vec::with_capacity(stocks.len());
    let mut first_product = None;
    for &stock in stocks {
        say(&format!("purchase paths at stock {stock}"));
        let (cost, product) = at_stock(target, &http, &buyers, stock, run).await?;
        first_product.get_or_insert(product);
        costs.push(cost);
    }
    Ok((costs, first_product.context("no stock measured")?))
}

async fn at_stock(
    target: &Target,
    http: &Arc<WireClient>,
    (winning, losing): &(Arc<Vec<Buyer>>, Arc<Vec<Buyer>>),
    stock: usize,
    run: &str,
) -> anyhow::Result<(PathCosts, Uuid)> {
    let app = &target.admin;
    let winners = winners_of(stock);
    anyhow::ensure!(winning.len() >= winners, "{winners} winners need as many buyers");
    let record = drive::new_product_record(app, stock, true, &format!("Cost drop of {stock}")).await?;
    let product = record.uuid().context("a product id")?;
    flashsale::sale::load_initial(app, product, &record).await?;
    let seeded = stock - winners;
    let seeding = Instant::now();
    let orders = if seeded > 0 { drive::seed_orders(app, product, 1, seeded).await? } else { Vec::new() };
    let seed_s = seeding.elapsed().as_secs_f64();
    let loading = Instant::now();
    drive::load_seeded(&*drive::patient_app(target).await?, &record, &orders).await?;
    let load_s = loading.elapsed().as_secs_f64();

    let memory_before = drive::used_memory(app).await?;
    let winner = timed_purchases(http, winning, product, winners, &format!("win-{run}-{stock}"), 201..=202).await;
    let memory_after = drive::used_memory(app).await?;
    // Winners whose answer was not 201/202 (counted in `winner.unexpected`) leave units
    // that the first sold-out attempts then buy (counted there as unexpected too).
    let units_left = flashsale::sale::stock(app, product).await?.map_or(0, |state| state.remaining());

    let shortcuts_before = drive::metrics_counter(&target.base_url, drive::SHORTCUT_COUNTER).await?;
    let sold_out =
        timed_purchases(http, losing, product, SOLD_OUT_REQUESTS, &format!("so-{run}-{stock}"), 409..=409).await;
    let shortcuts =
        drive::metrics_counter(&target.base_url, drive::SHORTCUT_COUNTER).await?.saturating_sub(shortcuts_before);
    let replay = timed_replays(http, &winning[0], product, &format!("win-{run}-{stock}-0")).await;
    let (sale_state_b, orders_encoding) = drive::sale_key_bytes(app, product).await?;
    let cost = PathCosts {
        stock,
        seeded_orders: seeded,
        seed_s,
        load_s,
        winner,
        units_left_after_winners: units_left,
        sold_out,
        sold_out_shortcut_share: shortcuts as f64 / SOLD_OUT_REQUESTS as f64,
        replay,
        used_memory_per_sold_unit_b: memory_after.saturating_sub(memory_before) as f64 / winners as f64,
        sale_state_b,
        sale_state_per_unit_b: sale_state_b as f64 / stock as f64,
        orders_encoding,
    };
    Ok((cost, product))
}

/// `requests` purchases of `product`, request `i` by buyer `i` (round robin) with key
/// `<key_prefix>-<i>`; the answer is expected within `expected`.
async fn timed_purchases(
    http: &Arc<WireClient>,
    buyers: &Arc<Vec<Buyer>>,
    product: Uuid,
    requests: usize,
    key_prefix: &str,
    expected: std::ops::RangeInclusive<u16>,
) -> Figures {
    let (http, buyers, key_prefix) = (Arc::clone(http), Arc::clone(buyers), key_prefix.to_owned());
    fixed_count(requests, CONCURRENCY, move |index| {
        let buyer = &buyers[index % buyers.len()];
        let request = drive::buy_request(http.host(), product, buyer, &format!("{key_prefix}-{index}"));
        let (http, expected) = (Arc::clone(&http), expected.clone());
        async move { http.send(&request).await.is_ok_and(|status| expected.contains(&status)) }
    })
    .await
}

/// [`REPLAY_REQUESTS`] replays of `buyer`'s winning `key`: the stored answer again.
async fn timed_replays(http: &Arc<WireClient>, buyer: &Buyer, product: Uuid, key: &str) -> Figures {
    let request = Arc::new(drive::buy_request(http.host(), product, buyer, key));
    let http = Arc::clone(http);
    fixed_count(REPLAY_REQUESTS, CONCURRENCY, move |_| {
        let (http, request) = (Arc::clone(&http), Arc::clone(&request));
        async move { http.send(&request).await.is_ok_and(|status| (200..=202).contains(&status)) }
    })
    .await
}

/// The sold-out path of `product` (sold out) answered by each count of instances in
/// `counts`, requests dealt round robin over the instances.
pub async fn instance_sweep(
    target: &Target,
    buyers: &[Buyer],
    product: Uuid,
    counts: &[usize],
    say: impl Fn(&str),
) -> anyhow::Result<Vec<InstanceCost>> {
    let buyers = Arc::new(buyers.to_vec());
    let mut extra: Vec<Instance> = Vec::new();
    let mut clients = vec![Arc::new(WireClient::new(&target.base_url).await?)];
    let mut costs = Vec::with_capacity(counts.len());
    for &count in counts {
        while clients.len() < count {
            let instance = Instance::start(target.server_config.clone())?;
            clients.push(Arc::new(WireClient::new(&format!("http://{}", instance.addr)).await?));
            extra.push(instance);
        }
        say(&format!("sold-out path on {count} instance(s)"));
        let serving: Arc<Vec<Arc<WireClient>>> = Arc::new(clients[..count].to_vec());
        for (index, client) in serving.iter().enumerate() {
            let prefix = format!("warm-{count}-{index}");
            let _ = timed_purchases(client, &buyers, product, INSTANCE_WARM_UP, &prefix, 409..=409).await;
        }
        let dealt = Arc::clone(&buyers);
        let sold_out = fixed_count(INSTANCE_REQUESTS, CONCURRENCY, move |index| {
            let client = Arc::clone(&serving[index % serving.len()]);
            let buyer = &dealt[index % dealt.len()];
            let request = drive::buy_request(client.host(), product, buyer, &format!("inst-{count}-{index}"));
            async move { client.send(&request).await.is_ok_and(|status| status == 409) }
        })
        .await;
        costs.push(InstanceCost { instances: count, sold_out });
    }
    drop(extra);
    Ok(costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_stock_wins_up_to_the_bound() {
        assert_eq!(winners_of(100), 50);
        assert_eq!(winners_of(10_000), MAX_WINNERS);
        assert_eq!(winners_of(100_000), MAX_WINNERS);
        assert_eq!(winners_of(2), 1);
    }
}
