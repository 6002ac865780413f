//! Rate limits per IP and per user (or account) per action, kept in Redis with GCRA
//! (`lua/rate_limit.lua`). A refusal is a 429 with `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` fields. Auth and purchase fail closed when Redis is
//! unreachable; reads fail open.

use axum::http::{HeaderMap, HeaderValue};

use crate::error::{ApiError, redis_unavailable};
use crate::redis::scripts;
use crate::state::AppState;

/// Window of every limit: limits are configured per minute.
pub const WINDOW_MS: i64 = 60_000;

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    Register,
    Otp,
    Purchase,
    Read,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Otp => "otp",
            Self::Purchase => "purchase",
            Self::Read => "read",
        }
    }

    /// Auth and purchase refuse to run unthrottled; reads keep serving.
    fn fails_closed(self) -> bool {
        !matches!(self, Self::Read)
    }
}

/// Who is being limited.
#[derive(Debug, Clone)]
pub enum Scope {
    Ip(std::net::IpAddr),
    User(uuid::Uuid),
    /// An account named by login (a hash of the normalised email), whether it exists or not.
    Account(String),
}

impl Scope {
    fn kind(&self) -> &'static str {
        match self {
            Self::Ip(_) => "ip",
            Self::User(_) => "user",
            Self::Account(_) => "account",
        }
    }

    fn key_part(&self) -> String {
        match self {
            Self::Ip(ip) => format!("ip:{ip}"),
            Self::User(id) => format!("user:{id}"),
            Self::Account(hash) => format!("account:{hash}"),
        }
    }
}

/// The RateLimit header fields of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub policy: String,
    pub limit: u32,
    pub window_s: i64,
    pub remaining: i64,
    pub reset_s: i64,
    pub retry_after_s: u64,
}

impl RateLimitHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        let policy = format!("\"{}\";q={};w={}", self.policy, self.limit, self.window_s);
        let state = format!("\"{}\";r={};t={}", self.policy, self.remaining.max(0), self.reset_s.max(0));
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert("ratelimit-policy", value);
        }
        if let Ok(value) = HeaderValue::from_str(&state) {
            headers.insert("ratelimit", value);
        }
    }
}

/// Checks one limit; `Err(RateLimited)` when exceeded.
pub async fn check(app: &AppState, action: Action, scope: Scope, per_min: u32) -> Result<RateLimitHeaders, ApiError> {
    let policy = format!("{}-{}", action.name(), scope.kind());
    let key = app.keys.rate_limit(action.name(), &scope.key_part());
    let mut conn = app.redis.clone();
    let decision = match scripts::rate_limit(&mut conn, &key, app.ids.now_ms(), WINDOW_MS, per_min.max(1)).await {
        Ok(decision) => decision,
        Err(err) if action.fails_closed() => return Err(redis_unavailable(err)),
        Err(err) => {
            tracing::warn!(error = %err, action = action.name(), "rate limit unavailable; serving the read");
            return Ok(RateLimitHeaders {
                policy,
                limit: per_min,
                window_s: WINDOW_MS / 1000,
                remaining: i64::from(per_min),
                reset_s: 0,
                retry_after_s: 0,
            });
        }
    };
    let headers = RateLimitHeaders {
        policy,
        limit: per_min,
        window_s: WINDOW_MS / 1000,
        remaining: decision.remaining,
        reset_s: ceil_seconds(decision.reset_ms),
        retry_after_s: u64::try_from(ceil_seconds(decision.retry_after_ms)).unwrap_or(1).max(1),
    };
    if decision.allowed { Ok(headers) } else { Err(ApiError::RateLimited(headers)) }
}

/// Milliseconds as whole seconds, rounded up (never below zero).
fn ceil_seconds(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Retry-After` and the reset time round up: a client that waits what they say is
    /// never refused again for having come back a fraction of a second early.
    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(ceil_seconds(29_001), 30);
        assert_eq!(ceil_seconds(30_000), 30);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(-5), 0);
    }
}
