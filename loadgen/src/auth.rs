//! The `auth` scenario on goose, at the server's configured Argon2id cost (production's
//! by default, and the report says which): a sign-up rush before a sale. Each goose user
//! is one new person, with its own client address, and runs once: register, log in
//! (the server sends a one-time code), read the code from the OTP outbox (Redis, as a
//! mail relay would; outside the timed requests), verify it.
//!
//! Every answer is timed per route and outcome. The check after the load: every person
//! got through all three steps, and every verified session the server handed out loads
//! from Redis as verified, for its own user, through the server crate's own code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flashsale::auth::session;
use flashsale::state::AppState;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use serde_json::json;

use crate::buyers::buyer_ip;
use crate::check::{Check, CheckReport};
use crate::record::{Outcome, Recorder};

/// Route names, as the report groups them (goose names requests the same way).
pub const ROUTE_REGISTER: &str = "POST /api/v1/auth/register";
pub const ROUTE_LOGIN: &str = "POST /api/v1/auth/login";
pub const ROUTE_VERIFY: &str = "POST /api/v1/auth/verify-otp";
/// A signed-up person reading their own profile (`mixed` runs, after signing up).
pub const ROUTE_PROFILE: &str = "GET /api/v1/user/profile";
/// Per-request timeout of goose's client, in seconds: a rush queues for the password
/// hashes, so answers can take a while.
pub const REQUEST_TIMEOUT_S: u32 = 60;
/// Password of every person of the run.
const PASSWORD: &str = "auth-scenario-passphrase";
/// Outbox entries read, at most, to find one person's code.
pub const MAX_OUTBOX_SCAN: usize = 20_000;

/// What every goose user shares.
pub struct Auth {
    /// Reads the outbox and, after the load, the sessions.
    admin: AppState,
    /// Tells this run's emails apart from any other.
    run: String,
    people: usize,
    /// Shared with the other scenarios of a `mixed` run.
    pub recorder: Arc<Recorder>,
    /// People who started signing up.
    started: AtomicUsize,
    /// email → the verified session id the server handed out.
    verified: Mutex<HashMap<String, String>>,
    /// Profile reads, and those that did not name their own person.
    profiles: AtomicUsize,
    wrong_profiles: AtomicUsize,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("run", &self.run).field("people", &self.people).finish()
    }
}

impl Auth {
    /// `people`: at most how many sign up (it bounds the outbox scan).
    pub fn new(admin: AppState, run: &str, people: usize, recorder: Arc<Recorder>) -> Self {
        Self {
            admin,
            run: run.to_owned(),
            people,
            recorder,
            started: AtomicUsize::new(0),
            verified: Mutex::new(HashMap::new()),
            profiles: AtomicUsize::new(0),
            wrong_profiles: AtomicUsize::new(0),
        }
    }

    /// The verified session of the person of goose user `index`, once they have one.
    fn verified_session(&self, index: usize) -> Option<String> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(&self.email(index)).cloned()
    }

    fn email(&self, index: usize) -> String {
        format!("person{index}-{}@auth.flashsale.test", self.run)
    }

    /// The check after the load: every person verified, every session live and verified.
    pub async fn check(&self) -> anyhow::Result<CheckReport> {
        let verified: Vec<(String, String)> =
            self.verified.lock().unwrap_or_else(PoisonError::into_inner).clone().into_iter().collect();
        let mut wrong = Vec::new();
        for (email, session_id) in &verified {
            match session::load(&self.admin, session_id).await? {
                Some(live) if live.otp_verified && live.email == *email => {}
                Some(_) => wrong.push(format!("{email}: not verified, or another user's")),
                None => wrong.push(format!("{email}: no such session")),
            }
        }
        let started = self.started.load(Ordering::Relaxed);
        let checks = vec![
            Check {
                name: "every person signed up and verified",
                passed: verified.len() == started && started > 0,
                detail: format!("{} of {started} got through register, login and the code", verified.len()),
            },
            Check {
                name: "verified sessions load as verified",
                passed: wrong.is_empty() && !verified.is_empty(),
                detail: match wrong.first() {
                    None => format!("all {} sessions load, verified, for their own user", verified.len()),
                    Some(first) => format!("{} of {} wrong, e.g. {first}", wrong.len(), verified.len()),
                },
            },
        ];
        let mut checks = checks;
        let profiles = self.profiles.load(Ordering::Relaxed);
        if profiles > 0 {
            let wrong = self.wrong_profiles.load(Ordering::Relaxed);
            checks.push(Check {
                name: "profiles read back their own person",
                passed: wrong == 0,
                detail: format!("{wrong} of {profiles} profile reads answered otherwise or named someone else"),
            });
        }
        Ok(CheckReport { checks, sale: None })
    }
}

/// Runs the scenario: one goose user per person, all started within one second, each
/// running once. `reports` are goose's own report files; `baseline` a previous goose JSON.
pub async fn run(
    auth: Arc<Auth>,
    base_url: &str,
    reports: Vec<String>,
    baseline: Option<String>,
) -> anyhow::Result<GooseMetrics> {
    let users = auth.people;
    let mut config = crate::crowd::configuration(base_url, users, REQUEST_TIMEOUT_S, reports, baseline);
    config.iterations = Some(1);
    let shared = Arc::clone(&auth);
    let sign_up =
        Transaction::new(Arc::new(move |user| Box::pin(person(user, Arc::clone(&shared))))).set_name("person");
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("auth").register_transaction(sign_up))
        .execute()
        .await?;
    Ok(metrics)
}

/// One person's sign-up (the goose transaction of `auth`).
pub(crate) async fn person(user: &mut GooseUser, auth: Arc<Auth>) -> TransactionResult {
    let index = user.weighted_users_index;
    auth.started.fetch_add(1, Ordering::Relaxed);
    let email = auth.email(index);
    let ip = buyer_ip(index).to_string();
    let credentials = json!({ "email": email, "password": PASSWORD });
    let Some(_) = step(user, &auth, &ip, ROUTE_REGISTER, 202, &credentials, None).await? else { return Ok(()) };
    let Some(pre_otp) = step(user, &auth, &ip, ROUTE_LOGIN, 200, &credentials, None).await? else { return Ok(()) };
    let code = match code_for(&auth, &email).await {
        Ok(Some(code)) => code,
        Ok(None) => {
            auth.recorder.record(ROUTE_VERIFY, Outcome::Error, Duration::ZERO, Some("no code in the outbox"));
            return Ok(());
        }
        Err(err) => {
            auth.recorder.record(ROUTE_VERIFY, Outcome::Error, Duration::ZERO, Some(&format!("outbox: {err:#}")));
            return Ok(());
        }
    };
    let body = json!({ "code": code });
    let session = pre_otp.as_deref();
    if let Some(verified) = step(user, &auth, &ip, ROUTE_VERIFY, 200, &body, session).await?.flatten() {
        auth.verified.lock().unwrap_or_else(PoisonError::into_inner).insert(email, verified);
    }
    Ok(())
}

/// One step: a JSON POST as `session`, timed and recorded. `Some(session id it set)` when
/// it answered `expected`, `None` otherwise.
async fn step(
    user: &mut GooseUser,
    auth: &Auth,
    ip: &str,
    route: &str,
    expected: u16,
    body: &serde_json::Value,
    session: Option<&str>,
) -> Result<Option<Option<String>>, Box<TransactionError>> {
    let path = route.trim_start_matches("POST ");
    let mut builder = user
        .get_request_builder(&GooseMethod::Post, path)?
        .header("x-forwarded-for", ip)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(id) = session {
        builder = builder.header("cookie", format!("{}={id}", session::COOKIE_NAME));
    }
    let request =
        GooseRequest::builder().method(GooseMethod::Post).path(path).name(route).set_request_builder(builder).build();
    let started = Instant::now();
    let mut goose = user.request(request).await?;
    let (status, set_session, problem) = match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            let set_session = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| value.strip_prefix(&format!("{}=", session::COOKIE_NAME)))
                .and_then(|rest| rest.split(';').next())
                .filter(|id| !id.is_empty())
                .map(str::to_owned);
            let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (status, set_session, json["type"].as_str().map(str::to_owned))
        }
        Err(err) => {
            let cause = if err.is_timeout() { "timeout".to_owned() } else { format!("no answer: {err}") };
            auth.recorder.record(route, Outcome::Error, started.elapsed(), Some(&cause));
            user.set_failure(&cause, &mut goose.request, None, None)?;
            return Ok(None);
        }
    };
    let latency = started.elapsed();
    let outcome = if status == expected {
        Outcome::Ok
    } else {
        match Outcome::classify(status, problem.as_deref(), false) {
            Outcome::RateLimited => Outcome::RateLimited,
            Outcome::Unavailable => Outcome::Unavailable,
            _ => Outcome::Error,
        }
    };
    let cause = (outcome != Outcome::Ok).then(|| format!("{status} {}", problem.as_deref().unwrap_or("")));
    auth.recorder.record(route, outcome, latency, cause.as_deref().map(str::trim));
    if outcome == Outcome::Ok {
        user.set_success(&mut goose.request)?;
        Ok(Some(set_session))
    } else {
        user.set_failure(outcome.name(), &mut goose.request, None, None)?;
        Ok(None)
    }
}

/// The newest code the outbox holds for `email`: among the last entries, since the
/// server appended it before answering the login, and at most one entry per person
/// can have come after it.
async fn code_for(auth: &Auth, email: &str) -> anyhow::Result<Option<String>> {
    let mut conn = auth.admin.redis.clone();
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(auth.admin.keys.otp_outbox())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(auth.people.saturating_mul(2).clamp(16, MAX_OUTBOX_SCAN))
        .query_async(&mut conn)
        .await?;
    Ok(entries
        .into_iter()
        .filter(|(_, fields)| fields.get("email").map(String::as_str) == Some(email))
        .find_map(|(_, mut fields)| fields.remove("code")))
}

/// A signed-up person (goose user `index`) reads their profile with the session they
/// were given; nothing to read before they have one.
pub(crate) async fn profile(user: &mut GooseUser, auth: &Auth) -> TransactionResult {
    let index = user.weighted_users_index;
    let Some(session_id) = auth.verified_session(index) else { return Ok(()) };
    let path = ROUTE_PROFILE.trim_start_matches("GET ");
    let builder = user
        .get_request_builder(&GooseMethod::Get, path)?
        .header("x-forwarded-for", buyer_ip(index).to_string())
        .header("cookie", format!("{}={session_id}", session::COOKIE_NAME));
    let request = GooseRequest::builder()
        .method(GooseMethod::Get)
        .path(path)
        .name(ROUTE_PROFILE)
        .set_request_builder(builder)
        .build();
    let started = Instant::now();
    let mut goose = user.request(request).await?;
    auth.profiles.fetch_add(1, Ordering::Relaxed);
    let (status, json) = match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null))
        }
        Err(err) => {
            let cause = if err.is_timeout() { "timeout".to_owned() } else { format!("no answer: {err}") };
            auth.wrong_profiles.fetch_add(1, Ordering::Relaxed);
            auth.recorder.record(ROUTE_PROFILE, Outcome::Error, started.elapsed(), Some(&cause));
            user.set_failure(&cause, &mut goose.request, None, None)?;
            return Ok(());
        }
    };
    let latency = started.elapsed();
    let own = status == 200 && json["email"].as_str() == Some(auth.email(index).as_str());
    if own {
        auth.recorder.record(ROUTE_PROFILE, Outcome::Ok, latency, None);
        user.set_success(&mut goose.request)?;
    } else {
        auth.wrong_profiles.fetch_add(1, Ordering::Relaxed);
        let cause = format!("{status} {}", json["type"].as_str().unwrap_or("another person's profile"));
        auth.recorder.record(ROUTE_PROFILE, Outcome::Error, latency, Some(&cause));
        user.set_failure("profile", &mut goose.request, None, None)?;
    }
    Ok(())
}
