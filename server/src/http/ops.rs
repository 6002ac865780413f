//! Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::SAFE_EVICTION_POLICIES;
use crate::state::AppState;

/// The OpenAPI description of the API.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#)
}

/// Readiness: Redis and MongoDB answer, and Redis still keeps every key (its
/// `maxmemory-policy`, read on every call, is `noeviction`: a policy switched at runtime
/// makes the instance not ready, as it would have refused to start). 200 with what
/// answered; 503 `not-ready` problem+json saying what did not.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let mut conn = app.redis.clone();
    let redis_ok = redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok();
    let mongo_ok = app.db.ping().await.is_ok();
    let mut problems = Vec::new();
    if !redis_ok {
        problems.push("Redis does not answer".to_owned());
    } else if !app.config.allow_evicting_redis {
        match crate::redis::eviction_policies(&mut conn).await {
            Ok(policies) => {
                let evicting: Vec<&String> =
                    policies.iter().filter(|policy| !SAFE_EVICTION_POLICIES.contains(&policy.as_str())).collect();
                if !evicting.is_empty() {
                    problems.push(format!("Redis maxmemory-policy is {evicting:?}: it may evict sale state"));
                }
            }
            Err(_) => problems.push("Redis maxmemory-policy cannot be read".to_owned()),
        }
    }
    if !mongo_ok {
        problems.push("MongoDB does not answer".to_owned());
    }
    match problems.is_empty() {
        true => axum::Json(json!({ "redis": true, "mongo": true })).into_response(),
        false => ApiError::NotReady(problems.join("; ")).into_response(),
    }
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
