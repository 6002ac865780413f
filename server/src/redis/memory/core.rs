//! The state one emulated Redis process holds besides its Lua interpreter: keyspace,
//! clock, run id, configuration, pub/sub subscribers and the `math.random` generator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::keyspace::{Bytes, Db};
use crate::clock::Clock;

/// Initial state of Redis's `redisLrand48` (rand.c): `x = 0x1234ABCD330E`.
pub(crate) const RAND48_INITIAL: u64 = 0x1234_ABCD_330E;

pub(crate) struct Core {
    pub(crate) db: Db,
    /// The time every command (and a whole script) sees: read once when it starts.
    pub(crate) now_ms: i64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) started_ms: i64,
    pub(crate) run_id: String,
    ids: IdSource,
    pub(crate) config: BTreeMap<&'static str, Bytes>,
    subscribers: BTreeMap<Bytes, Vec<mpsc::UnboundedSender<Vec<u8>>>>,
    /// Messages published by the running script or transaction, delivered when it ends
    /// (Redis, single-threaded, sends nothing while a script runs).
    deferred: Option<Vec<(Bytes, Bytes)>>,
    /// `math.random`'s state: survives `SCRIPT FLUSH`, as in Redis (it lives in rand.c).
    pub(crate) rand48: Arc<AtomicU64>,
}

impl Core {
    pub(crate) fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        let mut ids = IdSource(seed);
        let now = clock.now_ms();
        Self {
            db: Db::default(),
            now_ms: now,
            clock,
            started_ms: now,
            run_id: ids.run_id(),
            ids,
            config: default_config(),
            subscribers: BTreeMap::new(),
            deferred: None,
            rand48: Arc::new(AtomicU64::new(RAND48_INITIAL)),
        }
    }

    /// Reads the clock: called once before each command or script.
    pub(crate) fn tick(&mut self) {
        self.now_ms = self.clock.now_ms();
    }

    /// A restart without persistence: no keys, a new run id, defaults again, every
    /// subscriber disconnected.
    pub(crate) fn restart(&mut self) {
        self.db.clear();
        self.run_id = self.ids.run_id();
        self.config = default_config();
        self.subscribers.clear();
        self.deferred = None;
        self.rand48.store(RAND48_INITIAL, Ordering::Relaxed);
        self.tick();
        self.started_ms = self.now_ms;
    }

    /// A restart that loads the keyspace back from disk (RDB or AOF): the keys stay, and
    /// everything else is a new process's (a new run id, defaults again, every
    /// subscriber disconnected).
    pub(crate) fn restart_from_data(&mut self) {
        let db = std::mem::take(&mut self.db);
        self.restart();
        self.db = db;
    }

    pub(crate) fn subscribe(&mut self, channel: &[u8]) -> mpsc::UnboundedReceiver<Vec<u8>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers.entry(channel.to_vec()).or_default().push(sender);
        receiver
    }

    /// Ends every subscription (their streams end, as when the connection drops).
    pub(crate) fn disconnect_subscribers(&mut self) {
        self.subscribers.clear();
    }

    /// Publishes a message to the live subscribers of `channel`; how many there are.
    /// Inside a script or transaction it is delivered when that ends.
    pub(crate) fn publish(&mut self, channel: &[u8], message: &[u8]) -> usize {
        let Some(senders) = self.subscribers.get_mut(channel) else { return 0 };
        senders.retain(|sender| !sender.is_closed());
        let receivers = senders.len();
        if receivers == 0 {
            self.subscribers.remove(channel);
        } else if let Some(deferred) = &mut self.deferred {
            deferred.push((channel.to_vec(), message.to_vec()));
        } else {
            self.deliver(channel, message);
        }
        receivers
    }

    fn deliver(&mut self, channel: &[u8], message: &[u8]) {
        if let Some(senders) = self.subscribers.get_mut(channel) {
            for sender in senders.iter() {
                // A subscriber that went away since is pruned on the next publish.
                let _ = sender.send(message.to_vec());
            }
        }
    }

    /// Holds back messages published from now on, until [`Self::release_messages`];
    /// false if they already are (a script inside a transaction).
    pub(crate) fn defer_messages(&mut self) -> bool {
        if self.deferred.is_some() {
            return false;
        }
        self.deferred = Some(Vec::new());
        true
    }

    /// Delivers the held-back messages, in the order they were published.
    pub(crate) fn release_messages(&mut self) {
        for (channel, message) in self.deferred.take().unwrap_or_default() {
            self.deliver(&channel, &message);
        }
    }
}

fn default_config() -> BTreeMap<&'static str, Bytes> {
    [
        ("appendonly", &b"no"[..]),
        ("databases", b"16"),
        ("maxmemory", b"0"),
        ("maxmemory-policy", b"noeviction"),
        ("notify-keyspace-events", b""),
        ("save", b""),
        ("stream-node-max-bytes", b"4096"),
        ("stream-node-max-entries", b"100"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_vec()))
    .collect()
}

/// SplitMix64 over a seed: the run ids of one emulated Redis, the same for the same seed.
#[derive(Debug, Clone)]
struct IdSource(u64);

impl IdSource {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 40 lowercase hex digits, like Redis's run_id.
    fn run_id(&mut self) -> String {
        let mut id = String::with_capacity(48);
        for _ in 0..3 {
            id.push_str(&format!("{:016x}", self.next()));
        }
        id.truncate(40);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_follow_from_the_seed_and_change_on_restart() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let mut a = Core::new(clock.clone(), 7);
        let b = Core::new(clock.clone(), 7);
        let c = Core::new(clock, 8);
        assert_eq!(a.run_id, b.run_id);
        assert_ne!(a.run_id, c.run_id);
        assert_eq!(a.run_id.len(), 40);
        assert!(a.run_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let before = a.run_id.clone();
        a.restart();
        assert_ne!(a.run_id, before);
    }

    #[test]
    fn a_message_reaches_every_live_subscriber_of_its_channel() {
        let mut core = Core::new(Arc::new(crate::clock::SystemClock), 0);
        let mut first = core.subscribe(b"ch");
        let second = core.subscribe(b"ch");
        drop(second);
        assert_eq!(core.publish(b"ch", b"hello"), 1);
        assert_eq!(core.publish(b"other", b"x"), 0);
        assert_eq!(first.try_recv().ok(), Some(b"hello".to_vec()));
        core.restart();
        assert!(first.try_recv().is_err(), "a restart disconnects subscribers");
    }
}
