//! Extractors that turn every rejection into an [`ApiError`] (problem+json), and the
//! client address as this deployment trusts it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::HttpBody as _;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Deepest JSON nesting accepted in a request body.
pub const MAX_JSON_DEPTH: usize = 16;

/// A JSON body: malformed → 400, wrong shape → 422, too deep → 400, too large → 413 (at
/// once, none of it read, when its `Content-Length` says so), wrong media type → 415,
/// ended early or badly chunked → 400, not all there within `http_body_read_timeout_ms`
/// → 408.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let read_timeout_ms = state.config.http.body_read_timeout_ms;
        // A body declared too large (hyper's size hint is its parsed Content-Length; a
        // chunked body's is 0) is refused before any of it is read: the client is not kept
        // sending (or, with `Expect: 100-continue`, is never asked to send) bytes that would
        // be refused anyway, and it is not left to the body read timeout when it sends
        // them slowly.
        if req.body().size_hint().lower() > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit_bytes: limit });
        }
        // Reading the body is all the waiting this extraction does: the media type check
        // before it and the parse after it take no time.
        let read = axum::Json::<serde_json::Value>::from_request(req, state);
        let bytes = match tokio::time::timeout(Duration::from_millis(read_timeout_ms), read).await {
            Ok(Ok(axum::Json(value))) => value,
            Ok(Err(rejection)) => return Err(json_rejection(rejection, limit)),
            Err(_elapsed) => return Err(ApiError::RequestTimeout { limit_ms: read_timeout_ms }),
        };
        if json_depth(&bytes) > MAX_JSON_DEPTH {
            return Err(ApiError::MalformedBody(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels")));
        }
        serde_json::from_value(bytes).map(ApiJson).map_err(|err| ApiError::InvalidBody(err.to_string()))
    }
}

fn json_rejection(rejection: JsonRejection, limit_bytes: usize) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => ApiError::InvalidBody(err.body_text()),
        JsonRejection::JsonSyntaxError(err) => ApiError::MalformedBody(err.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            ApiError::PayloadTooLarge { limit_bytes }
        }
        // Anything else that stops the body from being read is in its framing: it ended
        // before its Content-Length, or its chunked encoding is invalid.
        JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(
            err,
        ))) => {
            ApiError::MalformedBody(format!("the request body could not be read to its end: {}", innermost_cause(&err)))
        }
        other => ApiError::MalformedBody(other.body_text()),
    }
}

/// The deepest cause of an error (hyper's framing error under axum's and hyper's
/// wrappers): the part that says what was wrong.
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A path parameter: unparsable → 400 problem.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| {
                ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
            })
    }
}

/// A query string: unparsable → 400 problem.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::BadRequest(format!("invalid query: {}", rejection.body_text()))
            })
    }
}

/// The client's address: the TCP peer, or the last `X-Forwarded-For` hop (the one the
/// proxy wrote) when the deployment says a trusted proxy sets it. A spoofed header is
/// ignored otherwise, and so are the hops a client wrote before the proxy's.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if state.config.trust_forwarded_for {
            // The last hop is the address the trusted proxy itself saw: a proxy that
            // appends writes it after whatever the client sent (which anyone can forge),
            // one that overwrites sends it alone.
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Ok(ClientIp(ip));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nested_containers() {
        let value: serde_json::Value = serde_json::from_str(r#"{"a":[{"b":1}]}"#).expect("valid json");
        assert_eq!(json_depth(&value), 3);
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
    }
}
