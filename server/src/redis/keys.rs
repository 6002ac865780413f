//! The only place Redis key and channel names are built. Every key of one Lua script
//! shares a hash tag, so the scripts run unchanged on Redis Cluster:
//! a product's sale state lives under `{p:<product_id>}`, a user's idempotency records
//! under `{u:<user_id>}`. The table of keys is `system-design/redis-keys.md`.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Key builder for one deployment (all names start with its prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The keys of one product's live sale, all in hash slot `{p:<id>}`.
#[derive(Debug, Clone)]
pub struct SaleKeys {
    /// Hash: stock_total, next_unit, one_per_user, starts_at_ms, ends_at_ms, paused.
    pub sale: String,
    /// Sorted set of returned units (score = unit), reused lowest first.
    pub free: String,
    /// Hash: user id → live orders held (the one-per-user check reads it).
    pub buyers: String,
    /// Hash: order id → "user_id|unit|reserved_at_ms|state" (state R reserved, C confirmed).
    pub orders: String,
    /// Sorted set: order ids reserved but not yet confirmed in MongoDB, score = reserved_at_ms.
    pub pending: String,
    /// Set of order ids released for good (their insert must never succeed later).
    pub tombstones: String,
    /// String: lock held while the sale state is rebuilt from MongoDB.
    pub rebuild_lock: String,
    /// Hash: order id → user id, reservations the reconciler dropped because MongoDB
    /// holds their unit for another order, each waiting for a fresh unit. Not one of the
    /// keys a rebuild replaces: it outlives the rebuild it waits for.
    pub reissue: String,
}

impl SaleKeys {
    /// Keys in the order every sale script expects them (KEYS[1..6]).
    pub fn script_keys(&self) -> [&str; 6] {
        [&self.sale, &self.free, &self.buyers, &self.orders, &self.pending, &self.tombstones]
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn sale(&self, product_id: Uuid) -> SaleKeys {
        let base = format!("{}:{{p:{}}}", self.prefix, product_id);
        SaleKeys {
            sale: format!("{base}:sale"),
            free: format!("{base}:free"),
            buyers: format!("{base}:buyers"),
            orders: format!("{base}:orders"),
            pending: format!("{base}:pending"),
            tombstones: format!("{base}:tomb"),
            rebuild_lock: format!("{base}:rebuild_lock"),
            reissue: format!("{base}:reissue"),
        }
    }

    /// Hash of one session, named by the SHA-256 of its id so that a copy of Redis does
    /// not hand out usable session ids.
    pub fn session(&self, session_id: &str) -> String {
        format!("{}:sess:{}", self.prefix, sha256_hex(session_id.as_bytes()))
    }

    /// Hash of a user's current one-time code (hashed), its attempts and its session.
    pub fn otp(&self, user_id: Uuid) -> String {
        format!("{}:otp:{{u:{}}}", self.prefix, user_id)
    }

    /// Stream of one-time codes waiting for delivery (read by a mailer and the tests).
    pub fn otp_outbox(&self) -> String {
        format!("{}:otp:outbox", self.prefix)
    }

    /// Idempotency record of one (user, key) pair; the key is hashed so any byte is safe.
    pub fn idempotency(&self, user_id: Uuid, idempotency_key: &str) -> String {
        format!("{}:idem:{{u:{}}}:{}", self.prefix, user_id, sha256_hex(idempotency_key.as_bytes()))
    }

    /// GCRA state of one rate limit: action and scope (`ip:<addr>`, `user:<id>`, ...).
    pub fn rate_limit(&self, action: &str, scope: &str) -> String {
        format!("{}:rl:{}:{}", self.prefix, action, scope)
    }

    /// Cached product document.
    pub fn product_cache(&self, product_id: Uuid) -> String {
        format!("{}:cache:product:{}", self.prefix, product_id)
    }

    /// Cached product list.
    pub fn product_list_cache(&self) -> String {
        format!("{}:cache:products", self.prefix)
    }

    /// Lock that lets one instance at a time run the reconciler.
    pub fn reconciler_lock(&self) -> String {
        format!("{}:reconciler:lock", self.prefix)
    }

    /// Pub/sub channel of sale events.
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = key[open..].find('}').expect("hash tag closes") + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_sale_key_of_a_product_shares_one_hash_tag() {
        let keys = Keys::new("t");
        let product = Uuid::from_u128(42);
        let sale = keys.sale(product);
        let tag = hash_tag(&sale.sale).to_owned();
        for key in sale.script_keys() {
            assert_eq!(hash_tag(key), tag);
        }
        assert_eq!(hash_tag(&sale.rebuild_lock), tag);
    }

    #[test]
    fn session_keys_do_not_contain_the_session_id() {
        let keys = Keys::new("t");
        let key = keys.session("abcdef0123456789");
        assert!(!key.contains("abcdef0123456789"));
    }
}
