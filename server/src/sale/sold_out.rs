//! The in-process sold-out shortcut: once a product sells out, this instance answers
//! further attempts without touching Redis. It never hides a replay: it keeps the ids of
//! the orders that hold the product's units, and an attempt whose derived order id is
//! among them takes the full path. A release or restock event (any stock_updated with
//! units left), the product's deletion or a lost subscription forgets the product.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::events::{EventType, SaleEvent};

/// Products remembered as sold out at once (each holds its order ids).
pub const MAX_SOLD_OUT_PRODUCTS: usize = 1024;

#[derive(Debug, Default)]
pub struct SoldOutCache {
    products: RwLock<HashMap<Uuid, HashSet<Uuid>>>,
    /// Bumped whenever anything is forgotten: a snapshot taken before a bump is stale.
    epoch: AtomicU64,
}

/// What the shortcut says about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// Sold out, and this attempt holds no unit: answer sold out now.
    SoldOut,
    /// Not known to be sold out, or the attempt names an order that holds a unit.
    TakeFullPath,
}

impl SoldOutCache {
    pub fn check(&self, product_id: Uuid, order_id: Uuid) -> Shortcut {
        let Ok(products) = self.products.read() else { return Shortcut::TakeFullPath };
        match products.get(&product_id) {
            Some(holders) if !holders.contains(&order_id) => Shortcut::SoldOut,
            _ => Shortcut::TakeFullPath,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Remembers a sold-out product, unless something was forgotten since `epoch` (a
    /// release or restock may have made units available after the sold-out answer).
    pub fn remember_if_unchanged(&self, product_id: Uuid, holders: HashSet<Uuid>, epoch: u64) {
        let Ok(mut products) = self.products.write() else { return };
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        Self::insert(&mut products, product_id, holders);
    }

    /// Remembers a sold-out product with the orders that hold its units.
    pub fn remember(&self, product_id: Uuid, holders: HashSet<Uuid>) {
        let Ok(mut products) = self.products.write() else { return };
        Self::insert(&mut products, product_id, holders);
    }

    fn insert(products: &mut HashMap<Uuid, HashSet<Uuid>>, product_id: Uuid, holders: HashSet<Uuid>) {
        if products.len() >= MAX_SOLD_OUT_PRODUCTS && !products.contains_key(&product_id) {
            return;
        }
        products.insert(product_id, holders);
    }

    pub fn forget(&self, product_id: Uuid) {
        if let Ok(mut products) = self.products.write() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            products.remove(&product_id);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut products) = self.products.write() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            products.clear();
        }
    }

    /// Applies a sale event: units became available again → forget the product.
    pub fn observe(&self, event: &SaleEvent) {
        let units_back = event.event_type == EventType::StockUpdated && event.remaining.is_some_and(|left| left > 0);
        if units_back || event.event_type == EventType::ProductDeleted {
            self.forget(event.product_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_of_a_unit_is_never_shortcut() {
        let cache = SoldOutCache::default();
        let product = Uuid::from_u128(1);
        let holder = Uuid::from_u128(2);
        cache.remember(product, HashSet::from([holder]));
        assert_eq!(cache.check(product, holder), Shortcut::TakeFullPath);
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::SoldOut);
    }

    #[test]
    fn a_restock_event_forgets_the_product() {
        let cache = SoldOutCache::default();
        let product = Uuid::from_u128(1);
        cache.remember(product, HashSet::new());
        cache.observe(&SaleEvent {
            event_type: EventType::StockUpdated,
            product_id: product,
            remaining: Some(5),
            order_id: None,
        });
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::TakeFullPath);
    }

    fn event(event_type: EventType, product_id: Uuid, remaining: Option<i64>) -> SaleEvent {
        SaleEvent { event_type, product_id, remaining, order_id: None }
    }

    /// A sold-out answer read before units came back must not be remembered after the
    /// event that brought them: the shortcut would then refuse with units free.
    #[test]
    fn a_sell_out_read_before_units_came_back_is_not_remembered() {
        let cache = SoldOutCache::default();
        let (product, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let before = cache.epoch();
        cache.observe(&event(EventType::StockUpdated, other, Some(1)));
        cache.remember_if_unchanged(product, HashSet::new(), before);
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::TakeFullPath, "stale: not remembered");
        cache.remember_if_unchanged(product, HashSet::new(), cache.epoch());
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::SoldOut, "fresh: remembered");
    }

    #[test]
    fn a_deletion_forgets_the_product_and_a_sell_out_event_does_not() {
        let cache = SoldOutCache::default();
        let product = Uuid::from_u128(1);
        cache.remember(product, HashSet::new());
        cache.observe(&event(EventType::SoldOut, product, Some(0)));
        cache.observe(&event(EventType::StockUpdated, product, Some(0)));
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::SoldOut);
        cache.observe(&event(EventType::ProductDeleted, product, None));
        assert_eq!(cache.check(product, Uuid::from_u128(3)), Shortcut::TakeFullPath, "deleted: 404 is the answer");
    }

    #[test]
    fn at_most_max_sold_out_products_are_remembered() {
        let cache = SoldOutCache::default();
        for n in 0..MAX_SOLD_OUT_PRODUCTS {
            cache.remember(Uuid::from_u128(n as u128), HashSet::new());
        }
        let one_more = Uuid::from_u128(u128::MAX);
        cache.remember(one_more, HashSet::new());
        assert_eq!(cache.check(one_more, Uuid::from_u128(3)), Shortcut::TakeFullPath, "full: not remembered");
        let first = Uuid::from_u128(0);
        cache.remember(first, HashSet::from([Uuid::from_u128(3)]));
        assert_eq!(cache.check(first, Uuid::from_u128(3)), Shortcut::TakeFullPath, "a remembered one is updated");
    }
}
