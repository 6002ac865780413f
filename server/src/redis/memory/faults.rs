//! Fault injection for the deterministic simulator and tests: refuse commands, apply
//! them and lose the reply, delay them (on tokio's clock), hang them until healed,
//! restart without persistence, flush the script cache. Fault errors are the I/O
//! errors redis-rs reports for a dead connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::oneshot;

use super::MemoryRedis;
use super::error::{refused, reply_lost, timed_out};
use super::server::Server;

/// The faults in force. Each applies to commands sent from then on, until `heal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Commands fail before they apply, as against a Redis that is down.
    pub refuse: bool,
    /// Commands apply, then the caller gets an I/O error instead of the reply.
    pub lose_replies: bool,
    /// Every command waits this long (tokio time) before it applies.
    pub delay: Option<Duration>,
    /// Commands wait until `heal`, then apply in the order they were sent.
    pub hang: bool,
}

impl Faults {
    fn any(&self) -> bool {
        self.refuse || self.lose_replies || self.delay.is_some() || self.hang
    }
}

/// A command held by the hang fault.
type Held = Box<dyn FnOnce(&mut Server) + Send>;

#[derive(Default)]
pub(crate) struct FaultSwitch {
    /// Whether any fault is set: the only thing a command checks when none is.
    active: AtomicBool,
    state: Mutex<Switched>,
}

#[derive(Default)]
struct Switched {
    faults: Faults,
    held: Vec<Held>,
}

impl FaultSwitch {
    pub(crate) fn any(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Switched> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryRedis {
    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().faults
    }

    fn set_fault(&self, change: impl FnOnce(&mut Faults)) {
        let mut state = self.shared.faults.lock();
        change(&mut state.faults);
        self.shared.faults.active.store(state.faults.any(), Ordering::Release);
    }

    /// Redis is down: commands and new subscriptions fail with "connection refused"
    /// before they apply, and every subscriber is disconnected. Commands a hang was
    /// holding never apply: the process that received them is gone (their callers see
    /// the connection die).
    pub fn refuse_connections(&self) {
        self.set_fault(|faults| faults.refuse = true);
        let held = std::mem::take(&mut self.shared.faults.lock().held);
        drop(held);
        self.server().core().disconnect_subscribers();
    }

    /// Commands apply, but their replies are lost: the caller gets an I/O error.
    pub fn lose_replies(&self) {
        self.set_fault(|faults| faults.lose_replies = true);
    }

    /// Every command waits `delay` (on tokio's clock) before it applies.
    pub fn delay_commands(&self, delay: Duration) {
        self.set_fault(|faults| faults.delay = Some(delay));
    }

    /// Commands hang until [`heal`](Self::heal), then apply in order (even those whose
    /// caller gave up, as a paused Redis applies what it already received).
    pub fn hang(&self) {
        self.set_fault(|faults| faults.hang = true);
    }

    /// Redis restarts without persistence: every key and script is gone, the run id
    /// changes, subscribers are disconnected. Takes effect at once (no fault stays).
    pub fn restart(&self) {
        self.server().restart();
    }

    /// A restart with persistence: the keys come back from disk; the run id is new, every
    /// subscriber is disconnected and the script cache is empty.
    pub fn restart_from_data(&self) {
        self.server().restart_from_data();
    }

    /// The script cache is flushed (as SCRIPT FLUSH): the next EVALSHA is NOSCRIPT.
    pub fn flush_scripts(&self) {
        self.server().flush_scripts();
    }

    /// Clears every fault; commands held by [`hang`](Self::hang) apply now, in order.
    pub fn heal(&self) {
        let mut state = self.shared.faults.lock();
        let held = std::mem::take(&mut state.held);
        state.faults = Faults::default();
        if !held.is_empty() {
            let mut server = self.server();
            for command in held {
                command(&mut server);
            }
        }
        self.shared.faults.active.store(false, Ordering::Release);
    }

    /// Runs `op` on the server under the faults in force, within the response timeout.
    pub(crate) async fn faulted<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Server) -> T + Send + 'static,
    ) -> RedisResult<T> {
        let work = async {
            let delay = self.faults().delay;
            if self.faults().refuse {
                return Err(refused());
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let (held, lose) = {
                let mut state = self.shared.faults.lock();
                if state.faults.refuse {
                    return Err(refused());
                }
                let lose = state.faults.lose_replies;
                if state.faults.hang {
                    let (sender, receiver) = oneshot::channel();
                    state.held.push(Box::new(move |server: &mut Server| {
                        // The caller may have given up; the command applied all the same.
                        let _ = sender.send(op(server));
                    }));
                    (Ok(receiver), lose)
                } else {
                    (Err(op), lose)
                }
            };
            let value = match held {
                Ok(receiver) => receiver.await.map_err(|_| reply_lost())?,
                Err(op) => op(&mut self.server()),
            };
            if lose { Err(reply_lost()) } else { Ok(value) }
        };
        match self.response_timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| Err(timed_out())),
            None => work.await,
        }
    }
}
