//! One client's network path to an emulated Redis, for faults that reach one server
//! instance and not the others (what a proxy in front of that instance alone does). A
//! slow link delays every command its handle sends: the command still arrives and
//! applies, after the delay and after every command sent on the link before it, whether
//! or not its caller still waits for the reply (bytes in flight are not taken back).
//! Subscriptions do not go through the link.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::oneshot;

use super::MemoryRedis;
use super::error::{reply_lost, timed_out};
use super::server::Server;

/// A link's state; handles made by [`MemoryRedis::with_link`] share it with their clones.
#[derive(Debug, Default)]
pub(crate) struct Link {
    state: Mutex<LinkState>,
    /// Commands take their turn here in the order they were sent (tokio's mutex is fair).
    order: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct LinkState {
    /// How late a command sent now arrives; `None` when the link is fast.
    delay: Option<Duration>,
    /// Commands sent on the link that have not arrived yet.
    in_flight: usize,
}

impl Link {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a command sent now must go through the link: it is slow, or commands sent
    /// earlier are still on it (a later one never overtakes them).
    pub(crate) fn holds(&self) -> bool {
        let state = self.state();
        state.delay.is_some() || state.in_flight > 0
    }
}

impl MemoryRedis {
    /// This Redis through a link of its own, for one client (a server instance): faults
    /// of the link ([`slow_link`](Self::slow_link)) reach this handle and its clones only.
    /// Register it under a name of its own to hand it to one instance.
    pub fn with_link(&self) -> Self {
        Self { shared: self.shared.clone(), response_timeout: self.response_timeout, link: Some(Arc::default()) }
    }

    /// Every command sent on this handle's link from now on arrives `delay` late (on
    /// tokio's clock). Nothing happens on a handle without a link.
    pub fn slow_link(&self, delay: Duration) {
        if let Some(link) = &self.link {
            link.state().delay = Some(delay);
        }
    }

    /// The link is fast again; commands already on it still arrive when due.
    pub fn heal_link(&self) {
        if let Some(link) = &self.link {
            link.state().delay = None;
        }
    }

    /// Whether this handle's commands go through its link now.
    pub(crate) fn link_holds(&self) -> bool {
        self.link.as_ref().is_some_and(|link| link.holds())
    }

    /// Sends `op` over the link: it runs, under the server's faults, once the link's
    /// delay has passed and every command sent before it ran; the caller waits at most
    /// its response timeout for the reply.
    pub(crate) async fn through_link<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Server) -> T + Send + 'static,
    ) -> RedisResult<T> {
        let Some(link) = self.link.clone() else { return self.faulted(op).await };
        let delay = {
            let mut state = link.state();
            state.in_flight += 1;
            state.delay.unwrap_or_default()
        };
        let due = tokio::time::Instant::now() + delay;
        let server = Self { shared: self.shared.clone(), response_timeout: None, link: None };
        let (sender, receiver) = oneshot::channel();
        tokio::spawn(async move {
            let _turn = link.order.lock().await;
            tokio::time::sleep_until(due).await;
            let reply = server.faulted(op).await;
            link.state().in_flight -= 1;
            // The caller may have given up; the command ran all the same.
            let _ = sender.send(reply);
        });
        let reply = async { receiver.await.unwrap_or_else(|_| Err(reply_lost())) };
        match self.response_timeout {
            Some(limit) => tokio::time::timeout(limit, reply).await.unwrap_or_else(|_| Err(timed_out())),
            None => reply.await,
        }
    }
}
