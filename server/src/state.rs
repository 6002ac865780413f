//! The shared state of one server instance, handed to every handler.

use std::sync::{Arc, Weak};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::otp::OtpSender;
use crate::clock::Ids;
use crate::config::Config;
use crate::db::Db;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::redis::{Keys, RedisConn};
use crate::sale::rebuild::RebuildFlights;
use crate::sale::sold_out::SoldOutCache;

pub type AppState = Arc<App>;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub redis: RedisConn,
    pub db: Db,
    pub keys: Keys,
    pub ids: Ids,
    pub metrics: Metrics,
    pub events: EventHub,
    pub sold_out: SoldOutCache,
    /// Users of the verified sessions this instance loaded (the sold-out shortcut only).
    pub known_sessions: crate::auth::session::KnownSessions,
    /// Stored purchase answers this instance wrote or read, replayed without Redis.
    pub replays: crate::purchase::replays::Replays,
    /// The sale-state rebuilds running in this instance.
    pub rebuilds: RebuildFlights,
    /// The group commits of this instance's order writes.
    pub order_writes: crate::sale::order_writes::OrderWrites,
    /// Serialises this instance's admin writes to one product.
    pub product_writes: crate::sale::product_store::ProductWriteLocks,
    /// Bounds the password hashes computed at once (each takes `argon2_m_kib` of memory).
    pub hashing: Semaphore,
    /// Admission of password checks: running plus waiting hashes (see `password::admit`).
    pub password_admission: Arc<Semaphore>,
    /// The Server-Sent Event streams open at once, in all (`max_event_streams`) and per
    /// client address (`max_event_streams_per_client`).
    pub event_streams: Arc<crate::http::slots::Slots>,
    /// A hash verified for unknown users, so that their login takes as long as a real one.
    pub dummy_password_hash: String,
    /// Delivers one-time codes; built once at startup (for SMTP it holds the connection pool).
    pub otp_sender: OtpSender,
    /// This state itself, for work that outlives the request which started it.
    pub this: Weak<App>,
    /// Cancelled when the instance stops at once, as a killed process does: work it runs
    /// in tasks of its own ([`App::spawn`]) stops at its next await and releases nothing.
    /// Production never cancels it (the process exits); the deterministic simulator does
    /// when it kills an instance.
    pub halt: CancellationToken,
}

impl App {
    /// A shared handle on this state (`None` only while it is being dropped).
    pub fn shared(&self) -> Option<AppState> {
        self.this.upgrade()
    }

    /// Runs `work` in a task of its own, which stops at its next await once the instance
    /// halts (its output is then `None`), as work in a killed process does.
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<Option<T>> {
        let halt = self.halt.clone();
        tokio::spawn(async move {
            tokio::select! {
                // No random branch order: the deterministic simulator replays it.
                biased;
                () = halt.cancelled() => None,
                output = work => Some(output),
            }
        })
    }
}
