//! Places counted in total and per client address (an IPv6 client by its /64): the
//! connections the accept loop serves, and the event streams open on an instance. A
//! place is given back when its [`Slot`] is dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every place is held.
    ServerFull,
    /// The client holds as many as it may.
    ClientFull,
}

/// Places held, in total and per client address.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_client: Option<usize>,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Only clients holding at least one connection: at most `max_total` entries.
    per_client: HashMap<IpAddr, usize>,
}

/// One held place, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    client: Option<IpAddr>,
}

impl Slots {
    /// At most `max_total` places, and `max_per_client` per client when clients are known.
    pub fn new(max_total: usize, max_per_client: Option<usize>) -> Self {
        Self { max_total, max_per_client, held: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // The counts are updated in one step each: a panic elsewhere leaves them whole.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for `peer`, or why there is none.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let mut held = self.lock();
        if held.total >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let client = match self.max_per_client {
            Some(max) => {
                let client = client_key(peer);
                let count = held.per_client.entry(client).or_insert(0);
                if *count >= max {
                    return Err(Refusal::ClientFull);
                }
                *count += 1;
                Some(client)
            }
            None => None,
        };
        held.total += 1;
        Ok(Slot { slots: self.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total = held.total.saturating_sub(1);
        let Some(client) = self.client else {
            return;
        };
        if let Entry::Occupied(mut count) = held.per_client.entry(client) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 (one host is
/// usually given a whole /64, and could otherwise take a new address per connection).
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix_and_an_ipv4_one_by_its_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn slots_refuse_past_each_cap_and_come_back_when_dropped() {
        let slots = Arc::new(Slots::new(3, Some(2)));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = slots.take(a).expect("first");
        let _second = slots.take(a).expect("second");
        assert!(matches!(slots.take(a), Err(Refusal::ClientFull)));
        let _third = slots.take(b).expect("another client");
        assert!(matches!(slots.take(b), Err(Refusal::ServerFull)));
        drop(first);
        let _again = slots.take(a).expect("a slot given back");
        assert_eq!(slots.lock().per_client.len(), 2);
    }

    #[test]
    fn without_a_known_client_only_the_total_is_capped() {
        let slots = Arc::new(Slots::new(2, None));
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let _one = slots.take(proxy).expect("one");
        let _two = slots.take(proxy).expect("two");
        assert!(matches!(slots.take(proxy), Err(Refusal::ServerFull)));
        assert!(slots.lock().per_client.is_empty());
    }
}
