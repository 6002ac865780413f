//! Stored answers this instance has written or read, for replay without Redis: once an
//! idempotency record holds its answer (a 201 and its body), that answer is final for the
//! record's life, so a retry of the same key, by the same authenticated user, on the
//! same product, is answered from here. A retry storm after a win then costs a session
//! read per request and no more.
//!
//! What this serves is exactly what the record would give: the same status and bytes,
//! and never past the record's own expiry (an entry lives until the time the record
//! expires, as `idempotency_finish.lua` set it or as `idempotency_begin.lua` reported it).
//! Nothing that can happen to a record while it lives changes its answer (a cancel frees
//! the unit and keeps the record), so there is nothing to invalidate. A lookup with
//! another product is not answered here: Redis tells the key was reused.
//!
//! A replay answered here is not counted against the purchase rate limits: refusing it
//! would cost Redis a rate-limit script, answering it costs nothing, and the buyer gets
//! the answer they are owed. Bounded: when full, it starts over empty.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use uuid::Uuid;

/// Stored answers remembered at once (a few hundred bytes each).
pub const MAX_REMEMBERED_REPLAYS: usize = 100_000;

/// One stored answer.
#[derive(Debug, Clone)]
struct Stored {
    product_id: Uuid,
    status: u16,
    body: Bytes,
    /// When the idempotency record expires, ms since the epoch (the server's clock).
    until_ms: i64,
}

/// A stored answer to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub status: u16,
    pub body: Bytes,
}

/// Stored answers remembered by this instance.
#[derive(Debug, Default)]
pub struct Replays {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// user → idempotency key → stored answer.
    users: HashMap<Uuid, HashMap<String, Stored>>,
    entries: usize,
}

impl Replays {
    /// The stored answer of `key` for `user_id` if this instance knows it, the record is
    /// still live at `now_ms` and it was stored for `product_id`.
    pub fn get(&self, user_id: Uuid, key: &str, product_id: Uuid, now_ms: i64) -> Option<Replay> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let stored = inner.users.get(&user_id)?.get(key)?;
        (stored.product_id == product_id && now_ms < stored.until_ms)
            .then(|| Replay { status: stored.status, body: stored.body.clone() })
    }

    /// Remembers the stored answer of `key` for `user_id`, live until `until_ms`.
    pub fn remember(&self, user_id: Uuid, key: &str, product_id: Uuid, replay: Replay, until_ms: i64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.entries >= MAX_REMEMBERED_REPLAYS {
            *inner = Inner::default();
        }
        let stored = Stored { product_id, status: replay.status, body: replay.body, until_ms };
        if inner.users.entry(user_id).or_default().insert(key.to_owned(), stored).is_none() {
            inner.entries += 1;
        }
    }

    /// Forgets every answer: the next replay of each reads its record in Redis again.
    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }

    /// Answers remembered now.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(body: &'static str) -> Replay {
        Replay { status: 201, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn an_answer_is_replayed_for_its_user_key_and_product_until_the_record_expires() {
        let replays = Replays::default();
        let (user, product) = (Uuid::from_u128(1), Uuid::from_u128(2));
        replays.remember(user, "k1", product, replay("{\"a\":1}"), 1_000);

        assert_eq!(replays.get(user, "k1", product, 999), Some(replay("{\"a\":1}")));
        assert_eq!(replays.get(user, "k1", product, 1_000), None, "the record has expired");
        assert_eq!(replays.get(user, "k1", Uuid::from_u128(3), 10), None, "another product: Redis decides");
        assert_eq!(replays.get(Uuid::from_u128(9), "k1", product, 10), None, "another user");
        assert_eq!(replays.get(user, "k2", product, 10), None, "another key");
    }

    #[test]
    fn it_starts_over_when_full() {
        let replays = Replays::default();
        let product = Uuid::from_u128(2);
        for n in 0..MAX_REMEMBERED_REPLAYS {
            replays.remember(Uuid::from_u128(n as u128 % 7), &format!("k{n}"), product, replay("{}"), i64::MAX);
        }
        assert_eq!(replays.len(), MAX_REMEMBERED_REPLAYS);
        replays.remember(Uuid::from_u128(1), "one-more", product, replay("{}"), i64::MAX);
        assert_eq!(replays.len(), 1);
        assert!(replays.get(Uuid::from_u128(1), "one-more", product, 0).is_some());
    }
}
