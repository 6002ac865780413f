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

use crate::state::AppState;

/// Interval of SSE keep-alive comments (keeps proxies from closing idle streams).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    pub product_id: Option<Uuid>,
}

pub async fn events_stream(
    State(app): State<AppState>,
    Query(filter): Query<EventFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(app.events.subscribe()).filter_map(move |received| match received {
        Ok(event) if filter.product_id.is_none_or(|id| id == event.product_id) => {
            let name = serde_json::to_value(&event.event_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "message".into());
            let data = serde_json::to_string(&event).unwrap_or_default();
            Some(Ok(Event::default().event(name).data(data)))
        }
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            Some(Ok(Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"))))
        }
    });
    // An event stream never ends by itself: it ends at shutdown, so that the graceful
    // drain of connections can complete.
    let stream = futures::StreamExt::take_until(stream, app.events.closed());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
