//! `GET /api/v1/events`: sale events as Server-Sent Events, optionally for one product.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use super::SaleEvent;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::ClientIp;
use crate::http::slots::Refusal;
use crate::state::AppState;

/// Interval of SSE keep-alive comments (keeps proxies from closing idle streams).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    pub product_id: Option<Uuid>,
}

/// The stream of sale events, for anyone: stock changes, sell-outs, deletions and
/// completed purchases, without the order ids (a buyer's order is theirs alone; the
/// stream is anonymous). At most `max_event_streams` at once on an instance, and
/// `max_event_streams_per_client` of them from one client address.
pub async fn events_stream(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let permit = app.event_streams.take(client).map_err(|refusal| {
        let (place, most) = match refusal {
            Refusal::ServerFull => ("on this instance", app.config.max_event_streams),
            Refusal::ClientFull => ("from this client address", app.config.max_event_streams_per_client),
        };
        ApiError::TooManyConnections(format!("too many event streams open {place} (at most {most})"))
    })?;
    let stream = BroadcastStream::new(app.events.subscribe()).filter_map(move |received| match received {
        Ok(event) if filter.product_id.is_none_or(|id| id == event.product_id) => Some(Ok(public_event(event))),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            Some(Ok(Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"))))
        }
    });
    // An event stream never ends by itself: it ends at shutdown, so that the graceful
    // drain of connections can complete. Its slot is given back when it ends or its
    // client goes away (the stream, which holds the permit, is dropped).
    let stream = futures::StreamExt::take_until(stream, app.events.closed()).map(move |event| {
        let _slot = &permit;
        event
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The event as the public stream sends it: named by its type, without an order id.
fn public_event(mut event: SaleEvent) -> Event {
    event.order_id = None;
    let name = serde_json::to_value(&event.event_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "message".into());
    Event::default().event(name).data(serde_json::to_string(&event).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn a_completed_purchase_is_sent_without_its_order_id() {
        let event = SaleEvent {
            event_type: EventType::PurchaseCompleted,
            product_id: Uuid::from_u128(1),
            remaining: None,
            order_id: Some(Uuid::from_u128(2)),
        };
        let sent = format!("{:?}", public_event(event));
        assert!(sent.contains("purchase_completed"), "{sent}");
        assert!(!sent.contains("order_id") && !sent.contains(&Uuid::from_u128(2).to_string()), "{sent}");
    }
}
