//! The auth endpoints: register, login, OTP resend and verification, logout, profile.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{Role, SessionUser, VerifiedUser};
use super::users;
use super::{otp, password, session};
use crate::error::{ApiError, ApiResult, redis_unavailable};
use crate::http::extract::{ApiJson, ClientIp};
use crate::ratelimit::{self, Action, Scope};
use crate::redis::scripts::OtpVerifyOutcome;
use crate::state::{App, AppState};

/// Register and login bodies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

// Written by hand so that a password never reaches a log through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("email", &self.email).field("password", &"<redacted>").finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOtp {
    pub code: String,
}

/// The one answer to every registration, new email or not.
#[derive(Debug, Serialize)]
pub struct RegisterAccepted {
    pub status: &'static str,
    pub detail: &'static str,
}

/// The answer to a login or a resend: a code is on its way.
#[derive(Debug, Serialize)]
pub struct OtpSent {
    pub otp_required: bool,
    pub otp_expires_in_s: u64,
}

#[derive(Debug, Serialize)]
pub struct SignedIn {
    pub user_id: Uuid,
    pub role: Role,
}

#[derive(Debug, Serialize)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at_ms: i64,
}

/// `POST /auth/register`: 202 with the same body whether or not the email is taken,
/// after the same work (a hash is computed either way), so registration cannot be used
/// to find out who has an account.
pub async fn register(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Response> {
    let limit = app.config.limits.register_per_ip_per_min;
    ratelimit::check(&app, Action::Register, Scope::Ip(ip), limit).await?;
    // Checked as sent (trimmed), as the description's pattern has it: lowercasing may
    // lengthen an address ('İ' becomes two characters).
    users::validate_email(body.email.trim())?;
    users::validate_password(&body.password)?;
    let email = users::normalise_email(&body.email);
    let _admitted = password::admit(&app)?;
    let hash = password::hash_password(&app, body.password).await?;
    let role = users::configured_role(&app, &email);
    if users::insert_user(&app, &email, &hash, role).await?.is_some() {
        tracing::info!("user registered");
    }
    let accepted =
        RegisterAccepted { status: "accepted", detail: "if this email can be registered, it now can log in" };
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

/// `POST /auth/login`: password check (constant work for unknown emails), then a fresh
/// pre-OTP session and a code. Throttled per IP and per account.
pub async fn login(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Response> {
    let email = users::normalise_email(&body.email);
    let limits = &app.config.limits;
    ratelimit::check(&app, Action::Login, Scope::Ip(ip), limits.login_per_ip_per_min).await?;
    let account = Scope::Account(users::account_hash(&email));
    ratelimit::check(&app, Action::Login, account, limits.login_per_account_per_min).await?;
    let admitted = password::admit(&app)?;
    let user = authenticate(&app, &email, body.password).await?;
    drop(admitted);
    let user_id = user.uuid()?;
    let role = promote_configured_admin(&app, &user).await?;
    // Rotation: whatever session the client held before is gone after a login.
    if let Some(old) = session::id_from_headers(&headers) {
        session::delete(&app, old).await.map_err(redis_unavailable)?;
    }
    let now_ms = app.ids.now_ms();
    let fresh = session::Session {
        user_id,
        email: user.email.clone(),
        role,
        otp_verified: false,
        created_at_ms: now_ms,
        last_seen_ms: now_ms,
    };
    let session_id = session::create(&app, &fresh).await.map_err(redis_unavailable)?;
    otp::issue(&app, user_id, &user.email, &session_id).await.map_err(redis_unavailable)?;
    tracing::info!(%user_id, "password accepted; one-time code sent");
    Ok(with_cookie(&app, &session_id, otp_sent(&app)))
}

/// The user if the password is right. An unknown email verifies the dummy hash, and both
/// failures give the same error, so neither the answer nor its timing tells them apart.
async fn authenticate(app: &App, email: &str, password: String) -> ApiResult<users::UserDoc> {
    let user = users::find_by_email(app, email).await?;
    let stored = user.as_ref().map_or_else(|| app.dummy_password_hash.clone(), |u| u.password_hash.clone());
    let too_long = password.chars().count() > users::MAX_PASSWORD_CHARS;
    let matches = password::verify_password(app, password, stored).await?;
    match user {
        Some(user) if matches && !too_long => Ok(user),
        _ => Err(ApiError::InvalidCredentials),
    }
}

/// Emails named in the configuration are administrators whenever they log in.
async fn promote_configured_admin(app: &App, user: &users::UserDoc) -> ApiResult<Role> {
    if users::configured_role(app, &user.email) != Role::Admin || user.role == Role::Admin {
        return Ok(user.role);
    }
    users::set_role(app, &user.email, Role::Admin).await?;
    Ok(Role::Admin)
}

/// `POST /auth/otp`: a new code for the current pre-OTP session; the old code dies.
pub async fn resend_otp(State(app): State<AppState>, user: SessionUser) -> ApiResult<Response> {
    if user.otp_verified {
        return Err(ApiError::StateConflict("this session is already verified".into()));
    }
    let limit = app.config.limits.otp_per_user_per_min;
    ratelimit::check(&app, Action::Otp, Scope::User(user.user_id), limit).await?;
    otp::issue(&app, user.user_id, &user.email, &user.session_id).await.map_err(redis_unavailable)?;
    Ok(otp_sent(&app).into_response())
}

/// `POST /auth/verify-otp`: on the right code the session is replaced by a verified one
/// under a new id (the old id then gets 401); the absolute lifetime still counts from login.
///
/// Checking and consuming the code is one atomic script, so of concurrent submissions of
/// the right code exactly one gets here past it, and the rotation runs once, for it (200
/// and the new cookie). The others get a 4xx problem: 401 `otp-invalid` (the code is
/// used), 401 `unauthenticated` (the winner's rotation already deleted the session they
/// present) or 429 `rate-limited` (past the per-user OTP budget). A right code costs no
/// attempt, so a burst of them cannot kill the code before one is checked.
pub async fn verify_otp(
    State(app): State<AppState>,
    user: SessionUser,
    ApiJson(body): ApiJson<VerifyOtp>,
) -> ApiResult<Response> {
    let limit = app.config.limits.otp_per_user_per_min;
    ratelimit::check(&app, Action::Otp, Scope::User(user.user_id), limit).await?;
    let outcome = otp::verify(&app, user.user_id, &user.session_id, &body.code).await.map_err(redis_unavailable)?;
    match outcome {
        OtpVerifyOutcome::Verified => {}
        OtpVerifyOutcome::Wrong { .. } | OtpVerifyOutcome::NoCode => return Err(ApiError::OtpInvalid),
    }
    let old = session::load(&app, &user.session_id).await.map_err(redis_unavailable)?;
    let Some(old) = old else {
        // Logged out or expired between the extractor and here.
        return Err(ApiError::Unauthenticated);
    };
    let verified = session::Session { otp_verified: true, last_seen_ms: app.ids.now_ms(), ..old };
    let session_id = session::create(&app, &verified).await.map_err(redis_unavailable)?;
    session::delete(&app, &user.session_id).await.map_err(redis_unavailable)?;
    let body = SignedIn { user_id: user.user_id, role: verified.role };
    Ok(with_cookie(&app, &session_id, (StatusCode::OK, axum::Json(body))))
}

/// `POST /auth/logout`: the session is deleted server-side and the cookie cleared.
pub async fn logout(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(id) = session::id_from_headers(&headers) {
        session::delete(&app, id).await.map_err(redis_unavailable)?;
    }
    let clear = session::clear_cookie(&app.config);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// `GET|POST /user/profile`: the signed-in user's record.
pub async fn profile(State(app): State<AppState>, VerifiedUser(user): VerifiedUser) -> ApiResult<axum::Json<Profile>> {
    let Some(record) = users::find_by_id(&app, user.user_id).await? else {
        return Err(ApiError::Unauthenticated);
    };
    Ok(axum::Json(Profile {
        id: record.uuid()?,
        email: record.email,
        role: record.role,
        created_at_ms: record.created_at_ms,
    }))
}

fn otp_sent(app: &App) -> (StatusCode, axum::Json<OtpSent>) {
    let body = OtpSent { otp_required: true, otp_expires_in_s: app.config.otp_ttl_s };
    (StatusCode::OK, axum::Json(body))
}

fn with_cookie(app: &App, session_id: &str, response: impl IntoResponse) -> Response {
    let cookie = session::set_cookie(&app.config, session_id);
    ([(header::SET_COOKIE, cookie)], response).into_response()
}
