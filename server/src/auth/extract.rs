//! Extractors that authenticate a request from its session cookie.
//!
//! - [`SessionUser`]: any live session (OTP verified or not).
//! - [`VerifiedUser`]: a live session whose one-time code was verified (else 403).
//! - [`AdminUser`]: a verified session of an administrator (else 403); the role is read
//!   again from MongoDB, so a promotion or demotion applies at once to admin routes.
//!
//! Redis unreachable → 503 (fail closed), never a guess.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use uuid::Uuid;

use super::{session, users};
use crate::error::{ApiError, redis_unavailable};
use crate::state::AppState;

pub use crate::db::records::Role;

/// The user behind a live session.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: String,
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub otp_verified: bool,
}

#[derive(Debug, Clone)]
pub struct VerifiedUser(pub SessionUser);

#[derive(Debug, Clone)]
pub struct AdminUser(pub SessionUser);

impl SessionUser {
    /// The user of the session the request's cookie names (401 without a live one).
    pub async fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Self, ApiError> {
        let Some(session_id) = session::id_from_headers(headers) else {
            return Err(ApiError::Unauthenticated);
        };
        let Some(live) = session::load(state, session_id).await.map_err(redis_unavailable)? else {
            state.known_sessions.forget(session_id);
            return Err(ApiError::Unauthenticated);
        };
        if live.otp_verified {
            state.known_sessions.remember(session_id, live.user_id);
        }
        Ok(SessionUser {
            session_id: session_id.to_owned(),
            user_id: live.user_id,
            email: live.email,
            role: live.role,
            otp_verified: live.otp_verified,
        })
    }
}

impl FromRequestParts<AppState> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers, state).await
    }
}

impl VerifiedUser {
    /// The user of a verified session (401 without a session, 403 before the code).
    pub async fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<Self, ApiError> {
        let user = SessionUser::from_headers(headers, state).await?;
        if !user.otp_verified {
            return Err(ApiError::OtpRequired);
        }
        Ok(VerifiedUser(user))
    }
}

impl FromRequestParts<AppState> for VerifiedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers, state).await
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let VerifiedUser(mut user) = VerifiedUser::from_request_parts(parts, state).await?;
        let record = users::find_by_id(state, user.user_id).await?;
        user.role = record.map_or(Role::Buyer, |record| record.role);
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminUser(user))
    }
}
