//! Authentication: register, login, one-time codes, sessions, logout, profile.
//!
//! The flow: `register` stores an argon2id hash; `login` checks it and opens a pre-OTP
//! session (cookie) while a code goes out through the outbox; `verify-otp` swaps that
//! session for a verified one under a new id. Handlers that need a signed-in user take
//! one of the extractors in [`extract`].

pub mod extract;
pub mod handlers;
pub mod otp;
pub mod password;
pub mod session;
pub mod users;

use axum::routing::{get, post};

use crate::http::ApiRoutes;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route("/auth/register", post(handlers::register))
        .route("/auth/login", post(handlers::login))
        .route("/auth/otp", post(handlers::resend_otp))
        .route("/auth/verify-otp", post(handlers::verify_otp))
        .route("/auth/logout", post(handlers::logout))
        // The seed's route was `POST /user/porfile`; GET is the natural read, POST stays.
        .route("/user/profile", get(handlers::profile).post(handlers::profile))
        // The seed's misspelt route, kept as an alias.
        .route("/user/porfile", post(handlers::profile))
}
