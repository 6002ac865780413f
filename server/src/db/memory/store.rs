//! The collections of one in-process database and MongoDB's semantics on them, as the
//! server uses them: unique indexes once created (`_id` always), natural order =
//! insertion order, ordered inserts that stop at the first duplicate, updates that keep
//! a document's place. Synchronous and deterministic: every map is a `BTreeMap`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::db::records::{
    OrderDoc, OrderStatus, Product, ProductRevision, Role, UnitField, UserDoc, released_marker, revision_range,
};
use crate::db::{DbError, DbResult, DuplicateIndex, StoreDump};

/// A document and its place in natural order.
#[derive(Debug, Clone)]
struct Stored<T> {
    seq: u64,
    doc: T,
}

/// One collection: documents by `_id`, and the insertion sequence behind natural order.
#[derive(Debug)]
struct Collection<T> {
    docs: BTreeMap<String, Stored<T>>,
    next_seq: u64,
}

impl<T> Default for Collection<T> {
    fn default() -> Self {
        Self { docs: BTreeMap::new(), next_seq: 0 }
    }
}

impl<T: Clone> Collection<T> {
    fn get(&self, id: &str) -> Option<&T> {
        self.docs.get(id).map(|stored| &stored.doc)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.docs.get_mut(id).map(|stored| &mut stored.doc)
    }

    fn contains(&self, id: &str) -> bool {
        self.docs.contains_key(id)
    }

    fn insert(&mut self, id: &str, doc: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.docs.insert(id.to_owned(), Stored { seq, doc });
    }

    /// The documents with these ids, in natural order (as a collection scan meets them).
    fn natural<'a>(&'a self, ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a T> {
        let mut found: Vec<&Stored<T>> = ids.into_iter().filter_map(|id| self.docs.get(id)).collect();
        found.sort_by_key(|stored| stored.seq);
        found.into_iter().map(|stored| &stored.doc).collect()
    }

    fn all_by_id(&self) -> Vec<T> {
        self.docs.values().map(|stored| stored.doc.clone()).collect()
    }
}

/// Key → ids of the documents with that key: the entries of an index, unique or not.
type Entries<K> = BTreeMap<K, BTreeSet<String>>;

fn add_entry<K: Ord>(entries: &mut Entries<K>, key: K, id: &str) {
    entries.entry(key).or_default().insert(id.to_owned());
}

fn remove_entry<K: Ord>(entries: &mut Entries<K>, key: &K, id: &str) {
    if let Some(ids) = entries.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            entries.remove(key);
        }
    }
}

/// Whether a document other than `id` has this key.
fn taken_by_other<K: Ord>(entries: &Entries<K>, key: &K, id: &str) -> bool {
    entries.get(key).is_some_and(|ids| ids.iter().any(|other| other != id))
}

/// Whether some key is held by more than one document (a unique index cannot be built).
fn has_duplicates<K>(entries: &Entries<K>) -> bool {
    entries.values().any(|ids| ids.len() > 1)
}

fn duplicate<T>(index: DuplicateIndex) -> DbResult<T> {
    Err(DbError::DuplicateKey { index })
}

/// The unique index on `(product_id, buyer_slot)` is enforced (not with the deliberately
/// broken model of the `memory-broken` feature, which the differential test must catch).
pub(super) const ENFORCES_BUYER_SLOT: bool = !cfg!(feature = "memory-broken");

/// One database: the three collections and their indexes.
#[derive(Debug, Default)]
pub(super) struct Database {
    users: Collection<UserDoc>,
    /// `users.email`.
    emails: Entries<String>,
    products: Collection<Product>,
    orders: Collection<OrderDoc>,
    product_revisions: Collection<ProductRevision>,
    /// `orders (product_id, unit)`.
    units: Entries<(String, UnitField)>,
    /// `orders (product_id, buyer_slot)`.
    slots: Entries<(String, String)>,
    /// `orders (user_id, ...)`, not unique.
    by_user: Entries<String>,
    /// The unique secondary indexes created so far ([`Database::ensure_indexes`]).
    unique: BTreeSet<DuplicateIndex>,
}

impl Database {
    fn enforces(&self, index: DuplicateIndex) -> bool {
        self.unique.contains(&index) && (index != DuplicateIndex::ProductBuyerSlot || ENFORCES_BUYER_SLOT)
    }

    /// Creates the unique indexes in [`crate::db::Db::ensure_indexes`]'s order; like
    /// MongoDB, one that existing documents violate is not created (`DuplicateKey`),
    /// and the ones before it stay.
    pub(super) fn ensure_indexes(&mut self) -> DbResult<()> {
        let wanted = [
            (DuplicateIndex::UserEmail, has_duplicates(&self.emails)),
            (DuplicateIndex::ProductUnit, has_duplicates(&self.units)),
            (DuplicateIndex::ProductBuyerSlot, has_duplicates(&self.slots)),
        ];
        for (index, violated) in wanted {
            if self.unique.contains(&index) {
                continue;
            }
            if violated {
                return duplicate(index);
            }
            self.unique.insert(index);
        }
        Ok(())
    }

    pub(super) fn insert_user(&mut self, user: &UserDoc) -> DbResult<()> {
        if self.users.contains(&user.id) {
            return duplicate(DuplicateIndex::Id);
        }
        if self.enforces(DuplicateIndex::UserEmail) && self.emails.contains_key(&user.email) {
            return duplicate(DuplicateIndex::UserEmail);
        }
        add_entry(&mut self.emails, user.email.clone(), &user.id);
        self.users.insert(&user.id, user.clone());
        Ok(())
    }

    /// MongoDB's ordered `insert_many`: the first failure stops it, earlier users stay.
    pub(super) fn insert_users(&mut self, users: &[UserDoc]) -> DbResult<()> {
        users.iter().try_for_each(|user| self.insert_user(user))
    }

    pub(super) fn find_user_by_email(&self, email: &str) -> Option<UserDoc> {
        let ids = self.emails.get(email)?;
        self.users.natural(ids).first().map(|user| (*user).clone())
    }

    pub(super) fn find_user(&self, id: &str) -> Option<UserDoc> {
        self.users.get(id).cloned()
    }

    /// `update_one({email}, {$set: {role}})`: the first match in natural order.
    pub(super) fn set_user_role(&mut self, email: &str, role: Role) -> bool {
        let Some(ids) = self.emails.get(email) else { return false };
        let Some(id) = self.users.natural(ids).first().map(|user| user.id.clone()) else { return false };
        match self.users.get_mut(&id) {
            Some(user) => {
                user.role = role;
                true
            }
            None => false,
        }
    }

    pub(super) fn find_product(&self, id: &str) -> Option<Product> {
        self.products.get(id).cloned()
    }

    pub(super) fn insert_product(&mut self, product: &Product) -> DbResult<()> {
        if self.products.contains(&product.id) {
            return duplicate(DuplicateIndex::Id);
        }
        self.products.insert(&product.id, product.clone());
        Ok(())
    }

    /// `find({deleted: {$ne: true}, _id: {$gt: after}}).sort({_id: 1}).limit(limit)`.
    pub(super) fn list_live_products(&self, after: Option<&str>, limit: u32) -> Vec<Product> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let live = self
            .products
            .docs
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, stored)| &stored.doc)
            .filter(|product| !product.deleted)
            .cloned();
        // MongoDB's `limit(0)` is no limit.
        if limit == 0 { live.collect() } else { live.take(limit as usize).collect() }
    }

    /// `replace_one({_id}, product, {upsert: true})`: a replaced document keeps its place
    /// in natural order, a new one goes last.
    pub(super) fn put_product(&mut self, product: &Product) {
        match self.products.get_mut(&product.id) {
            Some(stored) => stored.clone_from(product),
            None => self.products.insert(&product.id, product.clone()),
        }
    }

    pub(super) fn insert_product_revision(&mut self, revision: &ProductRevision) -> DbResult<()> {
        if self.product_revisions.contains(&revision.id) {
            return duplicate(DuplicateIndex::Id);
        }
        self.product_revisions.insert(&revision.id, revision.clone());
        Ok(())
    }

    /// `find({_id: {$gte: "P:", $lt: "P;"}}).sort({_id: -1}).limit(1)`.
    pub(super) fn latest_product_revision(&self, product_id: &str) -> Option<ProductRevision> {
        let (start, end) = revision_range(product_id);
        let mut range = self.product_revisions.docs.range::<str, _>((Bound::Included(&*start), Bound::Excluded(&*end)));
        range.next_back().map(|(_, stored)| stored.doc.clone())
    }

    pub(super) fn live_products(&self) -> Vec<(String, i64)> {
        self.products
            .docs
            .iter()
            .filter(|(_, stored)| !stored.doc.deleted)
            .map(|(id, stored)| (id.clone(), stored.doc.stock_total))
            .collect()
    }

    pub(super) fn deleted_since(&self, since_ms: i64) -> Vec<String> {
        self.products
            .docs
            .iter()
            .filter(|(_, stored)| stored.doc.deleted && stored.doc.updated_at_ms >= since_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(super) fn insert_order(&mut self, order: &OrderDoc) -> DbResult<()> {
        if self.orders.contains(&order.id) {
            return duplicate(DuplicateIndex::Id);
        }
        let unit = (order.product_id.clone(), order.unit.clone());
        if self.enforces(DuplicateIndex::ProductUnit) && self.units.contains_key(&unit) {
            return duplicate(DuplicateIndex::ProductUnit);
        }
        let slot = (order.product_id.clone(), order.buyer_slot.clone());
        if self.enforces(DuplicateIndex::ProductBuyerSlot) && self.slots.contains_key(&slot) {
            return duplicate(DuplicateIndex::ProductBuyerSlot);
        }
        add_entry(&mut self.units, unit, &order.id);
        add_entry(&mut self.slots, slot, &order.id);
        add_entry(&mut self.by_user, order.user_id.clone(), &order.id);
        self.orders.insert(&order.id, order.clone());
        Ok(())
    }

    pub(super) fn find_order(&self, id: &str) -> Option<OrderDoc> {
        self.orders.get(id).cloned()
    }

    pub(super) fn find_order_by_unit(&self, product_id: &str, unit: i64) -> Option<OrderDoc> {
        let ids = self.units.get(&(product_id.to_owned(), UnitField::Unit(unit)))?;
        self.orders.natural(ids).first().map(|order| (*order).clone())
    }

    /// `find({user_id, status: confirmed}).sort({created_at_ms: -1, _id: -1}).limit(limit)`.
    pub(super) fn confirmed_orders_of_user(&self, user_id: &str, limit: u32) -> Vec<OrderDoc> {
        let Some(ids) = self.by_user.get(user_id) else { return Vec::new() };
        let mut confirmed: Vec<&OrderDoc> =
            ids.iter().filter_map(|id| self.orders.get(id)).filter(|o| o.status == OrderStatus::Confirmed).collect();
        confirmed.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.id.cmp(&a.id)));
        let limit = if limit == 0 { confirmed.len() } else { limit as usize };
        confirmed.into_iter().take(limit).cloned().collect()
    }

    /// Every order of a product, in natural order.
    pub(super) fn orders_of_product(&self, product_id: &str) -> Vec<OrderDoc> {
        let start = (product_id.to_owned(), UnitField::Unit(i64::MIN));
        let ids = self
            .units
            .range(start..)
            .take_while(|((product, _), _)| product == product_id)
            .flat_map(|(_, ids)| ids.iter());
        self.orders.natural(ids).into_iter().cloned().collect()
    }

    /// `update_one({_id, status: confirmed}, {$set: {status: released, unit, buyer_slot}})`:
    /// whether it matched. The new keys go through the unique indexes like an insert's.
    pub(super) fn release_order(&mut self, id: &str) -> DbResult<bool> {
        let Some(order) = self.orders.get(id) else { return Ok(false) };
        if order.status != OrderStatus::Confirmed {
            return Ok(false);
        }
        let marker = released_marker(id);
        let (old_unit, old_slot) =
            ((order.product_id.clone(), order.unit.clone()), (order.product_id.clone(), order.buyer_slot.clone()));
        let new_unit = (order.product_id.clone(), UnitField::Released(marker.clone()));
        let new_slot = (order.product_id.clone(), marker.clone());
        if self.enforces(DuplicateIndex::ProductUnit) && taken_by_other(&self.units, &new_unit, id) {
            return duplicate(DuplicateIndex::ProductUnit);
        }
        if self.enforces(DuplicateIndex::ProductBuyerSlot) && taken_by_other(&self.slots, &new_slot, id) {
            return duplicate(DuplicateIndex::ProductBuyerSlot);
        }
        remove_entry(&mut self.units, &old_unit, id);
        remove_entry(&mut self.slots, &old_slot, id);
        add_entry(&mut self.units, new_unit, id);
        add_entry(&mut self.slots, new_slot, id);
        if let Some(order) = self.orders.get_mut(id) {
            order.status = OrderStatus::Released;
            order.unit = UnitField::Released(marker.clone());
            order.buyer_slot = marker;
        }
        Ok(true)
    }

    /// `replace_one({_id, status: released}, order)`: whether it matched. The restored
    /// unit and buyer slot go through the unique indexes like an insert's.
    #[cfg(feature = "broken")]
    pub(super) fn restore_order(&mut self, order: OrderDoc) -> DbResult<bool> {
        let id = order.id.clone();
        let Some(current) = self.orders.get(&id) else { return Ok(false) };
        if current.status != OrderStatus::Released {
            return Ok(false);
        }
        let (old_unit, old_slot) = (
            (current.product_id.clone(), current.unit.clone()),
            (current.product_id.clone(), current.buyer_slot.clone()),
        );
        let new_unit = (order.product_id.clone(), order.unit.clone());
        let new_slot = (order.product_id.clone(), order.buyer_slot.clone());
        if self.enforces(DuplicateIndex::ProductUnit) && taken_by_other(&self.units, &new_unit, &id) {
            return duplicate(DuplicateIndex::ProductUnit);
        }
        if self.enforces(DuplicateIndex::ProductBuyerSlot) && taken_by_other(&self.slots, &new_slot, &id) {
            return duplicate(DuplicateIndex::ProductBuyerSlot);
        }
        remove_entry(&mut self.units, &old_unit, &id);
        remove_entry(&mut self.slots, &old_slot, &id);
        add_entry(&mut self.units, new_unit, &id);
        add_entry(&mut self.slots, new_slot, &id);
        if let Some(current) = self.orders.get_mut(&id) {
            *current = order;
        }
        Ok(true)
    }

    pub(super) fn dump(&self) -> StoreDump {
        StoreDump {
            users: self.users.all_by_id(),
            products: self.products.all_by_id(),
            orders: self.orders.all_by_id(),
            product_revisions: self.product_revisions.all_by_id(),
        }
    }
}
