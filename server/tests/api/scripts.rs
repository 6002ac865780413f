//! The sale scripts against a model: random sequences of purchases, releases and
//! restocks run on a real redis-server must give exactly the model's answers, and the
//! state must keep its invariants (units distinct, stock never negative).

use std::collections::{BTreeSet, HashMap, HashSet};

use flashsale::redis::scripts::{self, LoadMode, PurchaseArgs, PurchaseOutcome, SaleSnapshot};
use flashsale::redis::{Keys, RedisConn};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Purchase { user: u8, key: u8 },
    Release { user: u8, key: u8 },
    Restock { add: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 0u8..3).prop_map(|(user, key)| Op::Purchase { user, key }),
        2 => (0u8..6, 0u8..3).prop_map(|(user, key)| Op::Release { user, key }),
        1 => (0u8..3).prop_map(|add| Op::Restock { add }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    stock_total: i64,
    next_unit: i64,
    one_per_user: bool,
    free: BTreeSet<i64>,
    buyers: HashMap<Uuid, i64>,
    orders: HashMap<Uuid, (Uuid, i64)>,
    tombstones: HashSet<Uuid>,
}

impl Model {
    fn remaining(&self) -> i64 {
        self.free.len() as i64 + (self.stock_total - self.next_unit + 1).max(0)
    }

    fn purchase(&mut self, order: Uuid, user: Uuid) -> PurchaseOutcome {
        if let Some((owner, unit)) = self.orders.get(&order) {
            return PurchaseOutcome::Replay { unit: *unit, confirmed: false, user_id: owner.to_string() };
        }
        if self.tombstones.contains(&order) {
            return PurchaseOutcome::Released;
        }
        if self.one_per_user && self.buyers.get(&user).copied().unwrap_or(0) > 0 {
            return PurchaseOutcome::AlreadyPurchased;
        }
        let unit = if let Some(unit) = self.free.pop_first() {
            unit
        } else if self.next_unit <= self.stock_total {
            self.next_unit += 1;
            self.next_unit - 1
        } else {
            return PurchaseOutcome::SoldOut;
        };
        *self.buyers.entry(user).or_default() += 1;
        self.orders.insert(order, (user, unit));
        PurchaseOutcome::Reserved { unit, remaining: self.remaining(), one_per_user: Some(self.one_per_user) }
    }

    fn release(&mut self, order: Uuid) -> bool {
        self.tombstones.insert(order);
        let Some((user, unit)) = self.orders.remove(&order) else { return false };
        let held = self.buyers.entry(user).or_default();
        *held -= 1;
        if *held == 0 {
            self.buyers.remove(&user);
        }
        self.free.insert(unit);
        true
    }
}

async fn run(conn: &mut RedisConn, ops: &[Op], stock: i64, one_per_user: bool) -> Result<(), TestCaseError> {
    let keys = Keys::new(format!("prop{}", Uuid::new_v4().simple()));
    let product = Uuid::new_v4();
    let sale = keys.sale(product);
    let channel = keys.events_channel();
    let snapshot = SaleSnapshot { stock_total: stock, next_unit: 1, one_per_user, ..SaleSnapshot::default() };
    scripts::load_sale(conn, &sale, LoadMode::Init, &snapshot).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model { stock_total: stock, next_unit: 1, one_per_user, ..Model::default() };
    let user_id = |user: u8| Uuid::from_u128(u128::from(user) + 1);
    for op in ops {
        match op {
            Op::Purchase { user, key } => {
                let order = flashsale::clock::derive_order_id(user_id(*user), &key.to_string());
                let args = PurchaseArgs {
                    order_id: order,
                    user_id: user_id(*user),
                    product_id: product,
                    now_ms: 1,
                    channel: &channel,
                };
                let got =
                    scripts::purchase(conn, &sale, &args).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got, model.purchase(order, user_id(*user)));
            }
            Op::Release { user, key } => {
                let order = flashsale::clock::derive_order_id(user_id(*user), &key.to_string());
                let got = scripts::release(conn, &sale, order, &channel, product)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got.freed, model.release(order));
                prop_assert_eq!(got.remaining, Some(model.remaining()));
            }
            Op::Restock { add } => {
                model.stock_total += i64::from(*add);
                let got = scripts::restock(conn, &sale, model.stock_total, &channel, product)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got, Some(model.remaining()));
            }
        }
        let state = scripts::stock(conn, &sale).await.map_err(|e| TestCaseError::fail(e.to_string()))?.expect("loaded");
        prop_assert!(state.remaining() >= 0);
        prop_assert_eq!(state.remaining(), model.remaining());
        let units: HashSet<i64> = model.orders.values().map(|(_, unit)| *unit).collect();
        prop_assert_eq!(units.len(), model.orders.len(), "a unit held twice");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_sale_scripts_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40), stock in 0i64..6, one_per_user in any::<bool>()) {
        let redis = crate::helpers::shared_backends();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut conn = RedisConn::connect(&redis.redis_url(), std::time::Duration::from_secs(5)).await.expect("redis");
            run(&mut conn, &ops, stock, one_per_user).await
        })?;
    }
}
