//! The middleware stack: request ids, tracing spans, body limits, panics as problems,
//! the one-`Host` rule of HTTP/1.1, per-route metrics, problem+json for unknown routes and
//! methods, and the headers every answer carries (`nosniff`, `no-store`).

use std::any::Any;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Method, Response, StatusCode, Version, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::metrics::RouteLabel;
use crate::state::{App, AppState};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The innermost layer of every route: an HTTP/1.1 request without exactly one `Host` is
/// refused 400; answers that axum or tower-http produce as plain text (413, 405, 404,
/// 415, 400) become problems; every answer is counted and timed per method, route
/// template and status; and the request runs in a `request` span (method, path, request
/// id) whose end is logged, at error for a 5xx. One hand-written service
/// rather than two `from_fn` middlewares and tower-http's `TraceLayer`, which box and
/// clone the inner service per request, wrap the body and read the clock three more times,
/// on the path every buyer of a sale takes.
#[derive(Clone)]
pub struct EdgeLayer {
    app: AppState,
}

impl EdgeLayer {
    pub fn new(app: AppState) -> Self {
        Self { app }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, app: self.app.clone() }
    }
}

/// See [`EdgeLayer`].
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    app: AppState,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = axum::response::Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = RouteLabel(request.extensions().get::<MatchedPath>().cloned());
        // Fields are evaluated only when a subscriber wants the span.
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            uri = %request.uri().path(),
            request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default(),
        );
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is answered 400
        // (hyper does not check it). HTTP/1.0 requests need none.
        let host_ok =
            request.version() != Version::HTTP_11 || request.headers().get_all(header::HOST).iter().count() == 1;
        let future = host_ok.then(|| span.in_scope(|| self.inner.call(request)));
        let app = self.app.clone();
        Box::pin(
            async move {
                let response = match future {
                    Some(future) => {
                        let Ok(response) = future.await;
                        response
                    }
                    None => {
                        ApiError::BadRequest("an HTTP/1.1 request needs exactly one Host header".into()).into_response()
                    }
                };
                let mut response = as_problem(&app, response);
                protect(response.headers_mut());
                let status = response.status();
                let elapsed = started.elapsed();
                app.metrics.record_http(method, route, status.as_u16(), elapsed);
                // The message tower-http's TraceLayer wrote, which log queries already use.
                let latency_ms = elapsed.as_secs_f64() * 1000.0;
                if status.is_server_error() {
                    tracing::error!(status = status.as_u16(), latency_ms, "finished processing request");
                } else {
                    tracing::debug!(status = status.as_u16(), latency_ms, "finished processing request");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Headers every answer carries: `X-Content-Type-Options: nosniff` (a browser never
/// reads a JSON answer as something else), and `Cache-Control: no-store` unless the
/// handler chose a policy: every answer is dynamic (live stock) or personal (profile,
/// sessions, orders), and no shared cache may keep one.
fn protect(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
}

/// The method as a metrics label, without allocating: the standard ones by name, any other
/// as `other` (a client may send any token, and each would otherwise become a series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A plain error answer from the framework (body limit, method, route, media type) as a
/// problem; problems and successes pass unchanged.
fn as_problem(app: &App, response: axum::response::Response) -> axum::response::Response {
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem || response.status().is_success() {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit_bytes: app.config.max_body_bytes }.into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.into_response(),
        StatusCode::NOT_FOUND => ApiError::RouteNotFound.into_response(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType.into_response(),
        StatusCode::BAD_REQUEST => ApiError::BadRequest("bad request".into()).into_response(),
        _ => response,
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// A panic in a handler becomes an opaque 500 problem (and is logged).
pub fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response<Full<Bytes>> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    let problem = ApiError::Internal(anyhow::anyhow!("panic")).problem();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(PROBLEM_JSON));
    response
}
