//! The HTTP error boundary: every expected outcome is a variant with its own RFC 9457
//! problem type; everything unexpected collapses into one opaque, logged 500.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use crate::db::DbError;
use crate::ratelimit::RateLimitHeaders;

/// Media type of problem details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    InvalidBody(String),
    /// A valid request that the target's current state refuses (a restock past the
    /// stock limit, an update whose window ends before the stored start).
    #[error("{0}")]
    StateConflict(String),
    #[error("request body larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("the request body did not arrive within {limit_ms} ms")]
    RequestTimeout { limit_ms: u64 },
    #[error("unsupported media type: send application/json")]
    UnsupportedMediaType,
    #[error("not signed in")]
    Unauthenticated,
    #[error("one-time code verification required")]
    OtpRequired,
    #[error("administrator role required")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid or expired one-time code")]
    OtpInvalid,
    #[error("too many requests")]
    RateLimited(RateLimitHeaders),
    #[error("Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    IdempotencyKeyInvalid,
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInFlight { order_id: Uuid },
    #[error("sold out")]
    SoldOut,
    #[error("already purchased: one per customer")]
    AlreadyPurchased,
    #[error("the sale has not started")]
    SaleNotStarted,
    #[error("the sale has ended")]
    SaleEnded,
    #[error("this order was released and cannot be completed; retry with a new key")]
    OrderReleased { order_id: Uuid },
    #[error("the sale of this product is paused while its state is rebuilt")]
    SalePaused { retry_after_s: u64 },
    #[error("a backing service is unavailable")]
    Unavailable { retry_after_s: u64 },
    #[error("{0}")]
    TooManyConnections(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("too many password checks in progress; retry shortly")]
    Busy,
    #[error("internal error")]
    Internal(anyhow::Error),
}

/// The problem document (RFC 9457 members plus a few extensions).
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
}

impl ApiError {
    /// Status, problem slug and title of each outcome.
    fn kind(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::BadRequest(_) => (S::BAD_REQUEST, "bad-request", "Bad request"),
            Self::MalformedBody(_) => (S::BAD_REQUEST, "malformed-body", "Malformed request body"),
            Self::InvalidBody(_) => (S::UNPROCESSABLE_ENTITY, "invalid-body", "Invalid request body"),
            Self::StateConflict(_) => (S::CONFLICT, "state-conflict", "Conflicts with the current state"),
            Self::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::RequestTimeout { .. } => (S::REQUEST_TIMEOUT, "request-timeout", "Request timeout"),
            Self::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            Self::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", "Not signed in"),
            Self::OtpRequired => (S::FORBIDDEN, "otp-required", "One-time code verification required"),
            Self::Forbidden => (S::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Self::RouteNotFound => (S::NOT_FOUND, "route-not-found", "Route not found"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Self::InvalidCredentials => (S::UNAUTHORIZED, "invalid-credentials", "Invalid credentials"),
            Self::OtpInvalid => (S::UNAUTHORIZED, "otp-invalid", "Invalid one-time code"),
            Self::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Self::IdempotencyKeyMissing => (S::BAD_REQUEST, "idempotency-key-missing", "Idempotency-Key missing"),
            Self::IdempotencyKeyInvalid => (S::BAD_REQUEST, "idempotency-key-invalid", "Idempotency-Key invalid"),
            Self::IdempotencyKeyReused => (S::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused"),
            Self::IdempotencyInFlight { .. } => (S::CONFLICT, "idempotency-in-flight", "Request in flight"),
            Self::SoldOut => (S::CONFLICT, "sold-out", "Sold out"),
            Self::AlreadyPurchased => (S::CONFLICT, "already-purchased", "Already purchased"),
            Self::SaleNotStarted => (S::CONFLICT, "sale-not-started", "Sale not started"),
            Self::SaleEnded => (S::CONFLICT, "sale-ended", "Sale ended"),
            Self::OrderReleased { .. } => (S::CONFLICT, "order-released", "Order released"),
            Self::SalePaused { .. } => (S::SERVICE_UNAVAILABLE, "sale-paused", "Sale paused"),
            Self::Unavailable { .. } => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::TooManyConnections(_) => (S::SERVICE_UNAVAILABLE, "too-many-connections", "Too many connections"),
            Self::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            Self::Busy => (S::SERVICE_UNAVAILABLE, "busy", "Server busy"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The problem type URI of this outcome, e.g. `/problems/sold-out`.
    pub fn type_uri(&self) -> String {
        format!("/problems/{}", self.kind().1)
    }

    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    fn order_id(&self) -> Option<Uuid> {
        match self {
            Self::IdempotencyInFlight { order_id } | Self::OrderReleased { order_id } => Some(*order_id),
            _ => None,
        }
    }

    fn extra_headers(&self, headers: &mut HeaderMap) {
        let retry_after = match self {
            Self::RateLimited(limit) => {
                limit.apply(headers);
                Some(limit.retry_after_s)
            }
            Self::SalePaused { retry_after_s } | Self::Unavailable { retry_after_s } => Some(*retry_after_s),
            Self::TooManyConnections(_) | Self::NotReady(_) | Self::Busy => Some(1),
            // The body was not read to its end: the connection cannot carry another request.
            Self::RequestTimeout { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                None
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
    }

    /// The problem document of this error, as sent.
    pub fn problem(&self) -> Problem {
        let (status, _, title) = self.kind();
        let detail = match self {
            Self::Internal(_) => "internal error; it has been logged".to_owned(),
            other => other.to_string(),
        };
        Problem { type_uri: self.type_uri(), title, status: status.as_u16(), detail, order_id: self.order_id() }
    }
}

/// The problem+json body of [`ApiError::SoldOut`], which carries nothing of the request.
static SOLD_OUT_BODY: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(serde_json::to_vec(&ApiError::SoldOut.problem()).unwrap_or_default()));

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "internal error");
        }
        let body = match self {
            // The answer to nearly every request of a sale's flood: written once.
            Self::SoldOut => SOLD_OUT_BODY.clone(),
            _ => Bytes::from(serde_json::to_vec(&self.problem()).unwrap_or_default()),
        };
        let mut response = (self.status(), [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
        self.extra_headers(response.headers_mut());
        response
    }
}

/// Everything unexpected is a logged 500, except a store outage: a [`DbError::Unavailable`]
/// anywhere in the chain (a domain function's `anyhow` result) is a 503, as everywhere.
impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        let outage = err.chain().any(|cause| cause.downcast_ref::<DbError>().is_some_and(DbError::is_unavailable));
        if outage {
            return store_unavailable(&err);
        }
        Self::Internal(err)
    }
}

/// A MongoDB outage is a 503 with Retry-After on every path; anything else a logged 500.
impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.is_unavailable() {
            return store_unavailable(&err);
        }
        Self::Internal(err.into())
    }
}

fn store_unavailable(err: &dyn std::fmt::Debug) -> ApiError {
    tracing::warn!(error = ?err, "mongodb unavailable");
    ApiError::Unavailable { retry_after_s: 1 }
}

/// A backend failure on a path that must fail closed (auth, purchase): 503, never open.
pub fn redis_unavailable(err: impl Into<anyhow::Error>) -> ApiError {
    tracing::warn!(error = %err.into(), "backend unavailable; failing closed");
    ApiError::Unavailable { retry_after_s: 1 }
}

pub type ApiResult<T> = Result<T, ApiError>;
