//! Injected time and randomness: every clock read and every random id in logic the
//! simulator must replay goes through [`Clock`] and [`Entropy`], never through
//! `SystemTime::now()` or a thread-local RNG directly. The simulator gives every server
//! instance a [`SeededEntropy`] derived from its plan's seed (`sim/src/world.rs`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The production clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A source of unpredictable bytes. Production uses the operating system's CSPRNG;
/// the simulator injects a seeded ChaCha stream so that a run can be replayed.
pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // The OS RNG failing is not a recoverable condition for a server that hands out
        // session ids: refusing to continue is the only safe answer.
        rand::rngs::OsRng.try_fill_bytes(buf).expect("the operating system's random number generator failed");
    }
}

/// A ChaCha stream from a seed: the same seed draws the same session ids, codes and
/// record ids. For the simulator, which replays a run from its seed; never in production
/// (the ids it draws are as predictable as the seed).
#[derive(Debug)]
pub struct SeededEntropy(Mutex<ChaCha8Rng>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(ChaCha8Rng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).fill_bytes(buf);
    }
}

/// Namespace of derived order ids: `order_id = UUIDv5(ORDER_NAMESPACE, user_id ‖ key)`.
pub const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6f8c_2a0e_5b1d_4c3e_9a77_1f0d_e2b4_c5a1);

/// Time and id generation, shared by every handler through the app state.
#[derive(Clone)]
pub struct Ids {
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    last_record_id: Arc<Mutex<u128>>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ids")
    }
}

impl Ids {
    pub fn new(clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> Self {
        Self { clock, entropy, last_record_id: Arc::new(Mutex::new(0)) }
    }

    /// The production pair: system clock and OS CSPRNG.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemClock), Arc::new(OsEntropy))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut buf = [0u8; N];
        self.entropy.fill(&mut buf);
        buf
    }

    /// A 128-bit random token, hex encoded (session ids).
    pub fn token_128(&self) -> String {
        hex::encode(self.random_bytes::<16>())
    }

    /// A time-ordered id for new records (users, products): a UUIDv7 whose 74 bits after
    /// the timestamp are random when the millisecond is new and the previous id's plus one
    /// otherwise (RFC 9562 §6.2, method 2), so the ids one instance hands out are strictly
    /// increasing even within a millisecond or when the clock steps back. Lists ordered by
    /// id (the product catalogue's cursor) therefore list one instance's records in the
    /// order they were created. The leftmost random bit starts at zero, leaving 2^73
    /// increments before the counter would carry into the timestamp.
    pub fn new_record_id(&self) -> Uuid {
        const RANDOM_BITS: u32 = 74;
        let ms = u128::from(u64::try_from(self.now_ms()).unwrap_or(0) & ((1 << 48) - 1));
        let random = u128::from_be_bytes({
            let mut wide = [0u8; 16];
            wide[6..].copy_from_slice(&self.random_bytes::<10>());
            wide
        }) & ((1 << (RANDOM_BITS - 1)) - 1);
        let candidate = (ms << RANDOM_BITS) | random;
        let mut last = self.last_record_id.lock().unwrap_or_else(PoisonError::into_inner);
        // `candidate` and `last` are the 122 bits of the id that are not version or variant:
        // 48 bits of milliseconds, then 74 counter bits. One more than `last` carries into
        // the milliseconds when the counter is full.
        let next = if candidate > *last { candidate } else { *last + 1 };
        *last = next;
        let (ms, counter) = (next >> RANDOM_BITS, next & ((1 << RANDOM_BITS) - 1));
        let rand_a = counter >> 62;
        let rand_b = counter & ((1 << 62) - 1);
        Uuid::from_u128((ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)
    }

    /// A uniformly drawn decimal code of `digits` digits (OTP codes).
    pub fn decimal_code(&self, digits: u32) -> String {
        let modulus = 10u64.pow(digits);
        // Rejection sampling keeps the distribution uniform.
        let limit = u64::MAX - (u64::MAX % modulus);
        loop {
            let value = u64::from_le_bytes(self.random_bytes::<8>());
            if value < limit {
                return format!("{:0width$}", value % modulus, width = digits as usize);
            }
        }
    }
}

/// The order id a purchase request names: the same user and key always give the same id.
pub fn derive_order_id(user_id: Uuid, idempotency_key: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + idempotency_key.len());
    name.extend_from_slice(user_id.as_bytes());
    name.extend_from_slice(idempotency_key.as_bytes());
    Uuid::new_v5(&ORDER_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_user_and_key_always_name_the_same_order() {
        let user = Uuid::from_u128(7);
        assert_eq!(derive_order_id(user, "k1"), derive_order_id(user, "k1"));
        assert_ne!(derive_order_id(user, "k1"), derive_order_id(user, "k2"));
        assert_ne!(derive_order_id(user, "k1"), derive_order_id(Uuid::from_u128(8), "k1"));
    }

    #[test]
    fn decimal_codes_have_the_requested_number_of_digits() {
        let ids = Ids::system();
        for _ in 0..1000 {
            let code = ids.decimal_code(6);
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_ids_and_another_seed_others() {
        let draw = |seed| {
            let ids = Ids::new(Arc::new(SystemClock), Arc::new(SeededEntropy::new(seed)));
            (ids.token_128(), ids.decimal_code(6), ids.token_128())
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn record_ids_are_v7_and_strictly_increasing_within_a_millisecond_and_across_a_step_back() {
        struct Steps(Mutex<Vec<i64>>);
        impl Clock for Steps {
            fn now_ms(&self) -> i64 {
                let mut steps = self.0.lock().expect("the test clock");
                if steps.len() > 1 { steps.remove(0) } else { steps[0] }
            }
        }
        let ms = 1_780_000_000_000;
        let clock = Steps(Mutex::new([vec![ms; 500], vec![ms - 5; 10], vec![ms + 1]].concat()));
        let ids = Ids::new(Arc::new(clock), Arc::new(SeededEntropy::new(3)));
        let drawn: Vec<Uuid> = (0..600).map(|_| ids.new_record_id()).collect();
        for id in &drawn {
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        assert!(drawn.windows(2).all(|pair| pair[0] < pair[1]), "strictly increasing");
        let millis = |id: &Uuid| (id.as_u128() >> 80) as i64;
        assert_eq!(millis(&drawn[0]), ms, "the timestamp is the clock's");
        assert_eq!(millis(&drawn[509]), ms, "a clock stepping back keeps the last millisecond");
        assert_eq!(millis(&drawn[599]), ms + 1, "and a later millisecond is used again");
    }

    #[test]
    fn session_tokens_carry_128_bits_and_do_not_repeat() {
        let ids = Ids::system();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let token = ids.token_128();
            assert_eq!(token.len(), 32);
            assert!(seen.insert(token));
        }
    }
}
