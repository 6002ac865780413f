//! Sale events: published on Redis pub/sub (by the Lua scripts and the purchase path),
//! received by every instance's subscriber, fanned out in process to Server-Sent Events
//! clients and to the sold-out cache.

mod sse;

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

pub use sse::events_stream;

/// Events buffered per slow SSE client before it starts missing some (it is told).
pub const EVENT_BUFFER: usize = 1024;
/// Pause before the subscriber reconnects after losing Redis.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    StockUpdated,
    SoldOut,
    PurchaseCompleted,
    /// The product was deleted: its sale is over for good.
    ProductDeleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub product_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
}

/// In-process fan-out of the events this instance receives.
#[derive(Debug)]
pub struct EventHub {
    sender: broadcast::Sender<SaleEvent>,
    /// Whether the Redis subscription is live (events published now will arrive).
    subscribed: tokio::sync::watch::Sender<bool>,
    /// Fired at shutdown: every SSE stream ends, so draining connections can finish.
    closed: CancellationToken,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(EVENT_BUFFER).0,
            subscribed: tokio::sync::watch::channel(false).0,
            closed: CancellationToken::new(),
        }
    }

    /// Ends every event stream (at shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves when the hub is closed.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }

    /// Waits until this instance's Redis subscription is live.
    pub async fn wait_subscribed(&self) {
        let mut receiver = self.subscribed.subscribe();
        let _ = receiver.wait_for(|live| *live).await;
    }

    /// Whether this instance's Redis subscription is live right now.
    pub fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    fn set_subscribed(&self, live: bool) {
        self.subscribed.send_replace(live);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SaleEvent> {
        self.sender.subscribe()
    }

    fn deliver(&self, event: SaleEvent) {
        // No receivers is normal: nobody is streaming right now.
        let _ = self.sender.send(event);
    }
}

/// Publishes an event from Rust (the scripts publish their own).
pub async fn publish(app: &crate::state::App, event: &SaleEvent) {
    let Ok(payload) = serde_json::to_string(event) else { return };
    let mut conn = app.redis.clone();
    let sent: redis::RedisResult<i64> =
        redis::cmd("PUBLISH").arg(app.keys.events_channel()).arg(payload).query_async(&mut conn).await;
    if let Err(err) = sent {
        tracing::warn!(error = %err, "publishing a sale event failed");
    }
}

/// Receives events from Redis until `shutdown`, reconnecting when Redis goes away.
pub async fn run_subscriber(app: AppState, shutdown: CancellationToken) {
    let channel = app.keys.events_channel();
    while !shutdown.is_cancelled() {
        // On Redis Cluster each attempt subscribes through the next seed (a PUBLISH
        // reaches every node), so that events keep flowing while one node is down.
        let subscription = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            result = app.redis.subscribe(&channel) => result,
        };
        match subscription {
            Ok(mut payloads) => {
                // Anything missed while disconnected may have changed stock.
                app.sold_out.clear();
                app.events.set_subscribed(true);
                loop {
                    let payload = tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        payload = payloads.next() => payload,
                    };
                    let Some(payload) = payload else { break };
                    let Ok(payload) = std::str::from_utf8(&payload) else { continue };
                    match serde_json::from_str::<SaleEvent>(payload) {
                        Ok(event) => {
                            app.sold_out.observe(&event);
                            app.events.deliver(event);
                        }
                        Err(err) => tracing::warn!(error = %err, "unreadable sale event"),
                    }
                }
                app.events.set_subscribed(false);
                app.sold_out.clear();
            }
            Err(err) => tracing::debug!(error = %err, "event subscriber cannot reach Redis"),
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
        }
    }
}
