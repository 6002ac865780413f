//! The keyspace: ordered maps only (nothing observable depends on hash order), values of
//! each Redis type, and expiry checked lazily against the injected clock.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::error::CommandError;

pub(crate) type Bytes = Vec<u8>;

/// One database (Redis's db 0).
#[derive(Debug, Default)]
pub(crate) struct Db {
    entries: BTreeMap<Bytes, Entry>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) data: Data,
    /// Unix ms after which the key is gone (Redis: expired once `now > when`).
    pub(crate) expires_at: Option<i64>,
}

impl Entry {
    pub(crate) fn new(data: Data) -> Self {
        Self { data, expires_at: None }
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|when| now > when)
    }
}

#[derive(Debug)]
pub(crate) enum Data {
    Str(Bytes),
    Hash(BTreeMap<Bytes, Bytes>),
    Set(BTreeSet<Bytes>),
    ZSet(ZSet),
    Stream(super::stream::Stream),
}

impl Data {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Self::Str(_) => "string",
            Self::Hash(_) => "hash",
            Self::Set(_) => "set",
            Self::ZSet(_) => "zset",
            Self::Stream(_) => "stream",
        }
    }

    fn is_empty_collection(&self) -> bool {
        match self {
            Self::Str(_) | Self::Stream(_) => false,
            Self::Hash(map) => map.is_empty(),
            Self::Set(set) => set.is_empty(),
            Self::ZSet(zset) => zset.len() == 0,
        }
    }
}

/// Generates a typed accessor (`Ok(None)` for a missing key, `WRONGTYPE` for another
/// type) and a get-or-create accessor for one value type.
macro_rules! typed_access {
    ($get:ident, $create:ident, $variant:ident, $ty:ty) => {
        pub(crate) fn $get(&mut self, key: &[u8], now: i64) -> Result<Option<&mut $ty>, CommandError> {
            match self.live(key, now) {
                None => Ok(None),
                Some(Entry { data: Data::$variant(value), .. }) => Ok(Some(value)),
                Some(_) => Err(CommandError::WrongType),
            }
        }

        pub(crate) fn $create(&mut self, key: &[u8], now: i64) -> Result<&mut $ty, CommandError> {
            if self.live(key, now).is_none() {
                self.entries.insert(key.to_vec(), Entry::new(Data::$variant(Default::default())));
            }
            match self.entries.get_mut(key) {
                Some(Entry { data: Data::$variant(value), .. }) => Ok(value),
                _ => Err(CommandError::WrongType),
            }
        }
    };
}

impl Db {
    /// The entry under `key`, removing it first if it has expired.
    pub(crate) fn live(&mut self, key: &[u8], now: i64) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|entry| entry.expired(now)) {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    pub(crate) fn insert(&mut self, key: Bytes, entry: Entry) {
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&mut self, key: &[u8], now: i64) -> Option<Entry> {
        self.live(key, now)?;
        self.entries.remove(key)
    }

    /// Deletes `key` if it holds an empty hash, set or sorted set (Redis never keeps one).
    pub(crate) fn drop_if_empty(&mut self, key: &[u8]) {
        if self.entries.get(key).is_some_and(|entry| entry.data.is_empty_collection()) {
            self.entries.remove(key);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Removes every expired key (for commands that scan the whole keyspace).
    pub(crate) fn purge_expired(&mut self, now: i64) {
        self.entries.retain(|_, entry| !entry.expired(now));
    }

    pub(crate) fn len(&mut self, now: i64) -> usize {
        self.purge_expired(now);
        self.entries.len()
    }

    pub(crate) fn keys(&mut self, now: i64) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.purge_expired(now);
        self.entries.iter()
    }

    typed_access!(string, string_or_create, Str, Bytes);
    typed_access!(hash, hash_or_create, Hash, BTreeMap<Bytes, Bytes>);
    typed_access!(set, set_or_create, Set, BTreeSet<Bytes>);
    typed_access!(zset, zset_or_create, ZSet, ZSet);
    typed_access!(stream, stream_or_create, Stream, super::stream::Stream);
}

/// A score in a sorted set: never NaN, so the order is total (`-0` equals `0`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score(pub(crate) f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// A sorted set: members by name, and (score, member) in Redis's order.
#[derive(Debug, Default)]
pub(crate) struct ZSet {
    scores: BTreeMap<Bytes, f64>,
    order: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(crate) fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets a member's score; whether the member is new.
    pub(crate) fn insert(&mut self, member: &[u8], score: f64) -> bool {
        match self.scores.insert(member.to_vec(), score) {
            Some(old) => {
                self.order.remove(&(Score(old), member.to_vec()));
                self.order.insert((Score(score), member.to_vec()));
                false
            }
            None => {
                self.order.insert((Score(score), member.to_vec()));
                true
            }
        }
    }

    pub(crate) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => self.order.remove(&(Score(score), member.to_vec())),
            None => false,
        }
    }

    /// Members with their scores, lowest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&Bytes, f64)> + ExactSizeIterator {
        self.order.iter().map(|(score, member)| (member, score.0))
    }

    /// The 0-based rank of a member, lowest score first.
    pub(crate) fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.order.range(..(Score(score), member.to_vec())).count())
    }
}

/// An end of a score range (`1.5`, `(1.5`, `-inf`, `+inf`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScoreBound {
    pub(crate) value: f64,
    pub(crate) exclusive: bool,
}

impl ScoreBound {
    pub(crate) fn parse(text: &[u8]) -> Result<Self, CommandError> {
        let (exclusive, number) = match text.split_first() {
            Some((b'(', rest)) => (true, rest),
            _ => (false, text),
        };
        let value = super::strtod::range_double(number).ok_or(CommandError::RangeNotFloat)?;
        Ok(Self { value, exclusive })
    }

    pub(crate) fn admits_from_below(self, score: f64) -> bool {
        if self.exclusive { score > self.value } else { score >= self.value }
    }

    pub(crate) fn admits_from_above(self, score: f64) -> bool {
        if self.exclusive { score < self.value } else { score <= self.value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_expires_only_once_the_clock_is_past_its_deadline() {
        let mut db = Db::default();
        let mut entry = Entry::new(Data::Str(b"v".to_vec()));
        entry.expires_at = Some(100);
        db.insert(b"k".to_vec(), entry);
        assert!(db.live(b"k", 100).is_some(), "alive at its deadline");
        assert!(db.live(b"k", 101).is_none(), "gone after it");
        assert_eq!(db.len(101), 0);
    }

    #[test]
    fn sorted_sets_order_by_score_then_member() {
        let mut zset = ZSet::default();
        assert!(zset.insert(b"b", 1.0));
        assert!(zset.insert(b"a", 1.0));
        assert!(zset.insert(b"c", 0.5));
        assert!(!zset.insert(b"c", 2.0));
        let order: Vec<&[u8]> = zset.iter().map(|(member, _)| member.as_slice()).collect();
        assert_eq!(order, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(zset.rank(b"b"), Some(1));
        assert!(zset.remove(b"a"));
        assert_eq!(zset.len(), 2);
    }

    #[test]
    fn a_type_mismatch_is_a_wrongtype_error() {
        let mut db = Db::default();
        db.insert(b"k".to_vec(), Entry::new(Data::Str(b"v".to_vec())));
        assert_eq!(db.hash(b"k", 0).map(|h| h.is_some()), Err(CommandError::WrongType));
        assert!(matches!(db.string(b"k", 0), Ok(Some(_))));
        assert!(matches!(db.set(b"missing", 0), Ok(None)));
    }
}
