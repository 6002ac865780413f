//! Auth and sessions: security.md lines 1–13 as they concern register, login, OTP,
//! sessions and logout, over real HTTP against real Redis and FerretDB.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use flashsale::auth::extract::Role;
use flashsale::auth::session::COOKIE_NAME;
use flashsale_stack::RedisPersistence;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PRECOMPUTED_HASH, PRECOMPUTED_PASSWORD, TestApp};

const PASSWORD: &str = "a long enough passphrase";
/// Upper bound of every polling loop in this file.
const POLL_LIMIT: Duration = Duration::from_secs(10);

/// One HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn session_id(&self) -> Option<String> {
        self.set_cookie()
            .and_then(|cookie| cookie.split(';').next().map(str::to_owned))
            .and_then(|pair| pair.strip_prefix(&format!("{COOKIE_NAME}=")).map(str::to_owned))
            .filter(|id| !id.is_empty())
    }

    fn set_cookie(&self) -> Option<String> {
        self.headers.get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/problem+json"));
        assert_eq!(self.body["type"], format!("/problems/{slug}"), "body: {}", self.body);
    }
}

fn fresh_email() -> String {
    format!("{}@example.test", Uuid::new_v4().simple())
}

/// Sends a POST (JSON body or none) with an optional session cookie and extra headers;
/// a plain client, so which cookie is sent is always explicit.
async fn post(
    app: &TestApp,
    path: &str,
    body: Option<Value>,
    session: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = reqwest::Client::new().post(app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request, session, headers).await
}

async fn get(app: &TestApp, path: &str, session: Option<&str>) -> Answer {
    send(reqwest::Client::new().get(app.url(path)), session, &[]).await
}

async fn send(mut request: reqwest::RequestBuilder, session: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    if let Some(id) = session {
        request = request.header("cookie", format!("{COOKIE_NAME}={id}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

async fn register(app: &TestApp, email: &str, password: &str) -> Answer {
    post(app, "/api/v1/auth/register", Some(json!({"email": email, "password": password})), None, &[]).await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Answer {
    login_with(app, email, password, None, &[]).await
}

async fn login_with(
    app: &TestApp,
    email: &str,
    password: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    post(app, "/api/v1/auth/login", Some(json!({"email": email, "password": password})), session, headers).await
}

async fn verify(app: &TestApp, session: &str, code: &str) -> Answer {
    post(app, "/api/v1/auth/verify-otp", Some(json!({"code": code})), Some(session), &[]).await
}

async fn redis(app: &TestApp) -> flashsale::redis::RedisConn {
    app.redis()
}

/// Every code sent to `email`, newest first, read from the outbox stream.
async fn codes_sent_to(app: &TestApp, email: &str) -> Vec<String> {
    let mut conn = redis(app).await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(app.app().keys.otp_outbox())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .expect("XREVRANGE");
    entries
        .into_iter()
        .filter(|(_, fields)| fields.get("email").map(String::as_str) == Some(email))
        .filter_map(|(_, fields)| fields.get("code").cloned())
        .collect()
}

async fn latest_code(app: &TestApp, email: &str) -> String {
    codes_sent_to(app, email).await.into_iter().next().expect("a code in the outbox")
}

/// A different code of the same length.
fn wrong_code(code: &str) -> String {
    let value: u64 = code.parse().expect("numeric code");
    let modulus = 10u64.pow(u32::try_from(code.len()).expect("short code"));
    format!("{:0width$}", (value + 1) % modulus, width = code.len())
}

/// Registers and logs in: the pre-OTP session id and the email.
async fn pre_otp_session(app: &TestApp) -> (String, String) {
    let email = fresh_email();
    assert_eq!(register(app, &email, PASSWORD).await.status, 202);
    let answer = login(app, &email, PASSWORD).await;
    assert_eq!(answer.status, 200, "login: {}", answer.body);
    (answer.session_id().expect("session cookie"), email)
}

/// Registers, logs in and verifies the code: the verified session id and the email.
async fn verified_session(app: &TestApp) -> (String, String) {
    let (pre, email) = pre_otp_session(app).await;
    let code = latest_code(app, &email).await;
    let answer = verify(app, &pre, &code).await;
    assert_eq!(answer.status, 200, "verify: {}", answer.body);
    (answer.session_id().expect("rotated session cookie"), email)
}

async fn profile_status(app: &TestApp, session: &str) -> u16 {
    get(app, "/api/v1/user/profile", Some(session)).await.status
}

fn assert_rate_limit_headers(answer: &Answer) {
    answer.assert_problem(429, "rate-limited");
    for name in ["retry-after", "ratelimit-policy", "ratelimit"] {
        assert!(answer.headers.contains_key(name), "429 without {name}: {:?}", answer.headers);
    }
}

#[tokio::test]
async fn a_registered_users_stored_hash_is_argon2id_at_owasp_strength() {
    let app = TestApp::spawn().await;
    let email = fresh_email();
    assert_eq!(register(&app, &email, PASSWORD).await.status, 202);
    let user = app.app().db.find_user_by_email(&email).await.expect("query").expect("user stored");
    let stored = user.password_hash.as_str();
    assert!(!stored.contains(PASSWORD));
    let hash = PasswordHash::new(stored).expect("a PHC string");
    assert_eq!(hash.algorithm.as_str(), "argon2id");
    assert_eq!(hash.version, Some(19));
    let param = |name: &str| hash.params.get_decimal(name).expect("parameter present");
    assert!(param("m") >= 19_456 && param("t") >= 2 && param("p") >= 1, "{stored}");
}

#[tokio::test]
async fn emails_are_stored_trimmed_and_lowercased() {
    let app = TestApp::spawn().await;
    let email = fresh_email();
    assert_eq!(register(&app, &format!("  {}  ", email.to_uppercase()), PASSWORD).await.status, 202);
    assert_eq!(login(&app, &email, PASSWORD).await.status, 200);
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_status_and_body() {
    let app = TestApp::spawn().await;
    let email = fresh_email();
    assert_eq!(register(&app, &email, PASSWORD).await.status, 202);
    let wrong_password = login(&app, &email, "not the password at all").await;
    let unknown_email = login(&app, &fresh_email(), PASSWORD).await;
    wrong_password.assert_problem(401, "invalid-credentials");
    assert_eq!(wrong_password.status, unknown_email.status);
    assert_eq!(wrong_password.body, unknown_email.body);
    assert!(wrong_password.set_cookie().is_none() && unknown_email.set_cookie().is_none());
}

#[tokio::test]
async fn registering_an_existing_email_gives_the_identical_answer() {
    let app = TestApp::spawn().await;
    let email = fresh_email();
    let first = register(&app, &email, PASSWORD).await;
    let again = register(&app, &email, "another passphrase entirely").await;
    assert_eq!(first.status, 202);
    assert_eq!((first.status, &first.body), (again.status, &again.body));
    // The first password still works: the second registration changed nothing.
    assert_eq!(login(&app, &email, PASSWORD).await.status, 200);
}

#[tokio::test]
async fn malformed_emails_and_passwords_of_the_wrong_length_are_refused_with_422() {
    let app = TestApp::spawn().await;
    for email in ["plain", "a@b@c.co", "@example.com", "a@localhost", "a b@example.com"] {
        register(&app, email, PASSWORD).await.assert_problem(422, "invalid-body");
    }
    register(&app, &fresh_email(), "short").await.assert_problem(422, "invalid-body");
    register(&app, &fresh_email(), &"x".repeat(129)).await.assert_problem(422, "invalid-body");
    let unknown_field = json!({"email": fresh_email(), "password": PASSWORD, "role": "admin"});
    post(&app, "/api/v1/auth/register", Some(unknown_field), None, &[]).await.assert_problem(422, "invalid-body");
}

#[tokio::test]
async fn a_look_alike_of_an_address_made_with_an_invisible_character_is_refused() {
    let app = TestApp::spawn().await;
    let existing = fresh_email();
    assert_eq!(register(&app, &existing, PASSWORD).await.status, 202);
    for invisible in ['\u{200B}', '\u{202E}'] {
        register(&app, &format!("{existing}{invisible}"), PASSWORD).await.assert_problem(422, "invalid-body");
        assert_eq!(login(&app, &format!("{existing}{invisible}"), PASSWORD).await.status, 401);
    }
}

#[tokio::test]
async fn login_is_throttled_per_account_across_different_ips() {
    let app = TestApp::spawn_with(|config| {
        config.trust_forwarded_for = true;
        config.limits.login_per_account_per_min = 3;
        config.limits.login_per_ip_per_min = 1_000;
    })
    .await;
    let email = fresh_email();
    for attempt in 0..3 {
        let ip = format!("203.0.113.{attempt}");
        let answer = login_with(&app, &email, "wrong password", None, &[("x-forwarded-for", &ip)]).await;
        answer.assert_problem(401, "invalid-credentials");
    }
    let answer = login_with(&app, &email, "wrong password", None, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_rate_limit_headers(&answer);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_hops_a_client_wrote_before_the_proxys_do_not_count() {
    let app = TestApp::spawn_with(|config| {
        config.trust_forwarded_for = true;
        config.limits.login_per_ip_per_min = 2;
        config.limits.login_per_account_per_min = 1_000;
    })
    .await;
    // An appending proxy: the client's own (forged) value first, then the address the
    // proxy saw. A new forged value per attempt does not make a new client.
    for attempt in 0..2 {
        let forwarded = format!("203.0.113.{attempt}, 198.51.100.20");
        let answer = login_with(&app, &fresh_email(), PASSWORD, None, &[("x-forwarded-for", &forwarded)]).await;
        answer.assert_problem(401, "invalid-credentials");
    }
    let forwarded = "203.0.113.99, 198.51.100.20";
    let answer = login_with(&app, &fresh_email(), PASSWORD, None, &[("x-forwarded-for", forwarded)]).await;
    assert_rate_limit_headers(&answer);
    // The address the proxy saw is the client: another one is served.
    let answer =
        login_with(&app, &fresh_email(), PASSWORD, None, &[("x-forwarded-for", "203.0.113.99, 198.51.100.21")]).await;
    answer.assert_problem(401, "invalid-credentials");
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_is_ignored_when_no_proxy_is_trusted() {
    let app = TestApp::spawn_with(|config| {
        config.trust_forwarded_for = false;
        config.limits.login_per_ip_per_min = 2;
        config.limits.login_per_account_per_min = 1_000;
    })
    .await;
    for attempt in 0..2 {
        let ip = format!("203.0.113.{attempt}");
        let answer = login_with(&app, &fresh_email(), PASSWORD, None, &[("x-forwarded-for", &ip)]).await;
        answer.assert_problem(401, "invalid-credentials");
    }
    let answer = login_with(&app, &fresh_email(), PASSWORD, None, &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_rate_limit_headers(&answer);
}

#[tokio::test]
async fn the_session_cookie_is_http_only_lax_path_root_and_secure_in_production() {
    let app = TestApp::spawn_with(|config| config.cookie_secure = true).await;
    let (_, email) = pre_otp_session(&app).await;
    let cookie = login(&app, &email, PASSWORD).await.set_cookie().expect("Set-Cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).skip(1).collect();
    for expected in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure", "Max-Age=86400"] {
        assert!(attributes.contains(&expected), "{expected} missing from {cookie}");
    }
}

#[tokio::test]
async fn the_session_cookie_is_not_secure_when_switched_off_for_plain_http() {
    let app = TestApp::spawn_with(|config| config.cookie_secure = false).await;
    let (_, email) = pre_otp_session(&app).await;
    let cookie = login(&app, &email, PASSWORD).await.set_cookie().expect("Set-Cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).skip(1).collect();
    assert!(attributes.contains(&"HttpOnly") && attributes.contains(&"SameSite=Lax") && attributes.contains(&"Path=/"));
    assert!(!attributes.contains(&"Secure"), "{cookie}");
}

#[tokio::test]
async fn two_logins_give_different_128_bit_session_ids() {
    let app = TestApp::spawn().await;
    let (first, email) = pre_otp_session(&app).await;
    let second = login(&app, &email, PASSWORD).await.session_id().expect("session cookie");
    assert_ne!(first, second);
    for id in [&first, &second] {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}

#[tokio::test]
async fn the_session_id_changes_at_login_and_the_old_id_then_gets_401() {
    let app = TestApp::spawn().await;
    let (old, email) = verified_session(&app).await;
    assert_eq!(profile_status(&app, &old).await, 200);
    let answer = login_with(&app, &email, PASSWORD, Some(&old), &[]).await;
    let new = answer.session_id().expect("session cookie");
    assert_ne!(old, new);
    get(&app, "/api/v1/user/profile", Some(&old)).await.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn the_session_id_changes_at_otp_verification_and_the_old_id_then_gets_401() {
    let app = TestApp::spawn().await;
    let (pre, email) = pre_otp_session(&app).await;
    let code = latest_code(&app, &email).await;
    let verified = verify(&app, &pre, &code).await.session_id().expect("rotated cookie");
    assert_ne!(pre, verified);
    assert_eq!(profile_status(&app, &verified).await, 200);
    post(&app, "/api/v1/auth/otp", None, Some(&pre), &[]).await.assert_problem(401, "unauthenticated");
    get(&app, "/api/v1/user/profile", Some(&pre)).await.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn logout_deletes_the_session_server_side_and_the_old_cookie_gets_401() {
    let app = TestApp::spawn().await;
    let (session, _) = verified_session(&app).await;
    let answer = post(&app, "/api/v1/auth/logout", None, Some(&session), &[]).await;
    assert_eq!(answer.status, 204);
    let cleared = answer.set_cookie().expect("clearing cookie");
    assert!(cleared.starts_with(&format!("{COOKIE_NAME}=;")) && cleared.contains("Max-Age=0"), "{cleared}");
    let mut conn = redis(&app).await;
    let exists: bool =
        redis::cmd("EXISTS").arg(app.app().keys.session(&session)).query_async(&mut conn).await.expect("EXISTS");
    assert!(!exists);
    get(&app, "/api/v1/user/profile", Some(&session)).await.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = TestApp::spawn_with(|config| config.session_idle_ttl_s = 1).await;
    let (session, _) = verified_session(&app).await;
    assert_eq!(profile_status(&app, &session).await, 200);
    // Testing expiry itself: wait past the idle TTL without using the session.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(profile_status(&app, &session).await, 401);
}

#[tokio::test]
async fn a_busy_session_lives_past_its_idle_ttl_but_not_past_its_absolute_lifetime() {
    let app = TestApp::spawn_with(|config| {
        config.session_idle_ttl_s = 1;
        config.session_absolute_ttl_s = 3;
    })
    .await;
    let user_id =
        flashsale::auth::users::create_user_with_hash(app.app(), &fresh_email(), PRECOMPUTED_HASH, Role::Buyer)
            .await
            .expect("user");
    let session = flashsale::auth::session::create_verified_session(app.app(), user_id).await.expect("session");
    let started = Instant::now();
    while profile_status(&app, &session).await == 200 {
        assert!(started.elapsed() < POLL_LIMIT, "the session never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lived = started.elapsed();
    assert!(lived > Duration::from_millis(2_500), "expired after {lived:?}, before its absolute lifetime");
}

/// An instance whose clock runs behind computes a session's TTL from its own time, so
/// the key can outlive the absolute lifetime as an instance with the right clock counts
/// it. The session's `created_at_ms` still ends it there: refused with 401 and deleted,
/// whatever TTL the key has left.
#[tokio::test]
async fn a_session_past_its_absolute_lifetime_is_refused_and_deleted_whatever_its_ttl() {
    use std::sync::Arc;

    use flashsale::clock::{Clock, Ids, OsEntropy, SystemClock};

    struct Behind(i64);
    impl Clock for Behind {
        fn now_ms(&self) -> i64 {
            SystemClock.now_ms() - self.0
        }
    }
    let app = TestApp::spawn_with(|config| {
        config.session_idle_ttl_s = 60;
        config.session_absolute_ttl_s = 60;
    })
    .await;
    let ids = Ids::new(Arc::new(Behind(120_000)), Arc::new(OsEntropy));
    let behind = app.instance_with(ids, |config| config.background_tasks = false).await;
    let user_id =
        flashsale::auth::users::create_user_with_hash(app.app(), &fresh_email(), PRECOMPUTED_HASH, Role::Buyer)
            .await
            .expect("user");
    let session = flashsale::auth::session::create_verified_session(&behind.app, user_id).await.expect("session");
    let key = app.app().keys.session(&session);
    let mut conn = redis(&app).await;
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("pttl");
    assert!(ttl_ms > 50_000, "the lagging instance gave the key its whole lifetime ({ttl_ms} ms)");

    assert_eq!(profile_status(&app, &session).await, 401, "two minutes old, past its 60 s lifetime");
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.expect("exists");
    assert_eq!(exists, 0, "the dead session is deleted");
    behind.stop().await.expect("stop");
}

#[tokio::test]
async fn the_code_is_stored_hashed_and_appears_in_redis_only_in_the_outbox() {
    let app = TestApp::spawn().await;
    let (_, email) = pre_otp_session(&app).await;
    let code = latest_code(&app, &email).await;
    let mut conn = redis(&app).await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", app.config.key_prefix)).query_async(&mut conn).await.expect("KEYS");
    let otp_keys: Vec<&String> = keys.iter().filter(|k| k.contains(":otp:{u:")).collect();
    assert_eq!(otp_keys.len(), 1, "{keys:?}");
    for key in keys.iter().filter(|key| **key != app.app().keys.otp_outbox()) {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut conn).await.expect("TYPE");
        let values: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HVALS").arg(key).query_async(&mut conn).await.expect("HVALS"),
            "string" => vec![redis::cmd("GET").arg(key).query_async(&mut conn).await.expect("GET")],
            _ => Vec::new(),
        };
        assert!(!values.contains(&code), "the code is stored in clear at {key}");
    }
    let otp: HashMap<String, String> =
        redis::cmd("HGETALL").arg(otp_keys[0]).query_async(&mut conn).await.expect("HGETALL");
    assert!(otp.contains_key("code_hash") && !otp.contains_key("code"), "{otp:?}");
}

#[tokio::test]
async fn a_code_is_dead_after_five_misses() {
    let app = TestApp::spawn().await;
    let (session, email) = pre_otp_session(&app).await;
    let code = latest_code(&app, &email).await;
    for _ in 0..5 {
        verify(&app, &session, &wrong_code(&code)).await.assert_problem(401, "otp-invalid");
    }
    verify(&app, &session, &code).await.assert_problem(401, "otp-invalid");
}

#[tokio::test]
async fn a_code_is_single_use() {
    let app = TestApp::spawn().await;
    let (pre, email) = pre_otp_session(&app).await;
    let code = latest_code(&app, &email).await;
    let verified = verify(&app, &pre, &code).await.session_id().expect("rotated cookie");
    verify(&app, &verified, &code).await.assert_problem(401, "otp-invalid");
}

/// How many sessions in Redis belong to `user_id` and are verified.
async fn verified_sessions_of(app: &TestApp, user_id: &str) -> usize {
    let mut conn = redis(app).await;
    let pattern = format!("{}:sess:*", app.config.key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.expect("KEYS");
    let mut verified = 0;
    for key in keys {
        let (owner, otp_verified): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("user_id")
            .arg("otp_verified")
            .query_async(&mut conn)
            .await
            .expect("HMGET");
        if owner.as_deref() == Some(user_id) && otp_verified.as_deref() == Some("1") {
            verified += 1;
        }
    }
    verified
}

/// `at_once` verifications of `code` on `session`, sent together: each client opens its
/// connection first (a `/healthz` kept alive), so the requests leave within microseconds
/// of each other rather than one connection set-up apart.
async fn verify_at_once(app: &TestApp, session: &str, code: &str, at_once: usize) -> Vec<Answer> {
    let clients: Vec<reqwest::Client> = (0..at_once).map(|_| reqwest::Client::new()).collect();
    let warm = clients.iter().map(|client| send(client.get(app.url("/healthz")), None, &[]));
    for answer in futures::future::join_all(warm).await {
        assert_eq!(answer.status, 200, "healthz: {}", answer.body);
    }
    let url = app.url("/api/v1/auth/verify-otp");
    let verifications =
        clients.iter().map(|client| send(client.post(&url).json(&json!({"code": code})), Some(session), &[]));
    futures::future::join_all(verifications).await
}

/// Issue 12, finding 3: two winners (each with its own verified session) with 8 at once,
/// and no winner at all with 32 (10 × 401, 22 × 429). Several trials each, since the race
/// did not show every time. The per-user OTP limit keeps its default (10 a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_of_the_right_code_give_exactly_one_verified_session_and_the_rest_a_4xx_problem() {
    let app = TestApp::spawn_with(|config| {
        // One registration and login per trial, all from one address.
        config.limits.register_per_ip_per_min = 1_000;
        config.limits.login_per_ip_per_min = 1_000;
    })
    .await;
    for (trial, at_once) in [8, 32, 8, 32, 8, 32, 8, 32].into_iter().enumerate() {
        let (pre, email) = pre_otp_session(&app).await;
        let code = latest_code(&app, &email).await;
        let answers = verify_at_once(&app, &pre, &code, at_once).await;
        let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
        let context = format!("trial {trial}, {at_once} at once: {statuses:?}");
        let (winners, losers): (Vec<Answer>, Vec<Answer>) = answers.into_iter().partition(|a| a.status == 200);
        assert_eq!(winners.len(), 1, "exactly one 200: {context}");
        // The answers a loser may get (see `handlers::verify_otp`): the code is used, the
        // winner's rotation already deleted the session, or past the per-user OTP limit.
        let allowed = [(401, "otp-invalid"), (401, "unauthenticated"), (429, "rate-limited")];
        for loser in &losers {
            let slug = loser.body["type"].as_str().unwrap_or_default().trim_start_matches("/problems/");
            assert!(allowed.contains(&(loser.status, slug)), "a loser got {} {}: {context}", loser.status, loser.body);
            let content_type = loser.headers.get("content-type").and_then(|v| v.to_str().ok());
            assert_eq!(content_type, Some("application/problem+json"), "{context}");
            assert!(loser.session_id().is_none(), "a loser got a session cookie: {context}");
        }
        let winner = &winners[0];
        let session = winner.session_id().expect("the winner's session cookie");
        assert_ne!(session, pre);
        assert_eq!(profile_status(&app, &session).await, 200, "{context}");
        let user_id = winner.body["user_id"].as_str().expect("user_id in the answer");
        assert_eq!(verified_sessions_of(&app, user_id).await, 1, "{context}");
        get(&app, "/api/v1/user/profile", Some(&pre)).await.assert_problem(401, "unauthenticated");
    }
}

#[tokio::test]
async fn a_resend_replaces_the_old_code() {
    let app = TestApp::spawn().await;
    let (session, email) = pre_otp_session(&app).await;
    let first = latest_code(&app, &email).await;
    let mut second = first.clone();
    // Two draws coincide once in a million; resend until they differ (bounded).
    for _ in 0..5 {
        if second != first {
            break;
        }
        assert_eq!(post(&app, "/api/v1/auth/otp", None, Some(&session), &[]).await.status, 200);
        second = latest_code(&app, &email).await;
    }
    assert_ne!(first, second);
    verify(&app, &session, &first).await.assert_problem(401, "otp-invalid");
    assert_eq!(verify(&app, &session, &second).await.status, 200);
}

#[tokio::test]
async fn a_code_issued_for_one_session_does_not_verify_another() {
    let app = TestApp::spawn().await;
    let (first_session, email) = pre_otp_session(&app).await;
    let second_session = login(&app, &email, PASSWORD).await.session_id().expect("cookie");
    let code = latest_code(&app, &email).await;
    verify(&app, &first_session, &code).await.assert_problem(401, "otp-invalid");
    assert_eq!(verify(&app, &second_session, &code).await.status, 200);
}

#[tokio::test]
async fn a_purchase_without_a_verified_code_is_refused_with_a_403_problem() {
    let app = TestApp::spawn().await;
    let (session, _) = pre_otp_session(&app).await;
    let path = format!("/api/v1/user/buy/{}", Uuid::new_v4());
    let answer = post(&app, &path, None, Some(&session), &[("idempotency-key", "k-1")]).await;
    answer.assert_problem(403, "otp-required");
    get(&app, "/api/v1/user/profile", Some(&session)).await.assert_problem(403, "otp-required");
}

#[tokio::test]
async fn the_profile_shows_the_signed_in_user_on_get_and_post() {
    let app = TestApp::spawn().await;
    let (session, email) = verified_session(&app).await;
    let read = get(&app, "/api/v1/user/profile", Some(&session)).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["email"], email.as_str());
    assert_eq!(read.body["role"], "buyer");
    assert!(read.body["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).is_some());
    assert!(read.body["created_at_ms"].as_i64().is_some_and(|ms| ms > 0));
    let posted = post(&app, "/api/v1/user/profile", None, Some(&session), &[]).await;
    assert_eq!((posted.status, posted.body), (200, read.body));
    get(&app, "/api/v1/user/profile", None).await.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn configured_admin_emails_become_admins() {
    let admin_email = fresh_email();
    let configured = admin_email.to_uppercase();
    let app = TestApp::spawn_with(move |config| config.admin_emails = vec![configured]).await;
    assert_eq!(register(&app, &admin_email, PASSWORD).await.status, 202);
    let pre = login(&app, &admin_email, PASSWORD).await.session_id().expect("cookie");
    let code = latest_code(&app, &admin_email).await;
    let answer = verify(&app, &pre, &code).await;
    assert_eq!(answer.body["role"], "admin");
    let session = answer.session_id().expect("cookie");
    assert_eq!(get(&app, "/api/v1/user/profile", Some(&session)).await.body["role"], "admin");
}

/// The role that admin routes go by is MongoDB's, read per request, not the one the
/// session was created with: an administrator demoted mid-session is refused at once.
#[tokio::test]
async fn a_demoted_administrator_is_refused_admin_routes_at_once() {
    let app = TestApp::spawn().await;
    let (admin, user_id) = app.verified_buyer(Role::Admin).await;
    let create = |name: &str| {
        admin.post(app.url("/api/v1/products")).json(&json!({ "name": name, "price_cents": 100, "stock": 1 })).send()
    };
    assert_eq!(create("before").await.expect("create").status(), 201);
    let record = flashsale::auth::users::find_by_id(app.app(), user_id).await.expect("mongo").expect("the user");
    flashsale::auth::users::set_role(app.app(), &record.email, Role::Buyer).await.expect("demote");
    let refused = create("after").await.expect("create");
    assert_eq!(refused.status(), 403, "the session still says admin; MongoDB no longer does");
}

#[tokio::test]
async fn the_precomputed_test_hash_verifies_its_password() {
    let app = TestApp::spawn().await;
    let email = fresh_email();
    flashsale::auth::users::create_user_with_hash(app.app(), &email, PRECOMPUTED_HASH, Role::Buyer)
        .await
        .expect("user");
    assert_eq!(login(&app, &email, PRECOMPUTED_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn every_429_from_auth_carries_retry_after_and_the_ratelimit_fields() {
    let app = TestApp::spawn_with(|config| {
        config.limits.register_per_ip_per_min = 1;
        config.limits.otp_per_user_per_min = 1;
    })
    .await;
    let (session, _) = pre_otp_session(&app).await;
    assert_rate_limit_headers(&register(&app, &fresh_email(), PASSWORD).await);
    assert_eq!(post(&app, "/api/v1/auth/otp", None, Some(&session), &[]).await.status, 200);
    assert_rate_limit_headers(&post(&app, "/api/v1/auth/otp", None, Some(&session), &[]).await);
    assert_rate_limit_headers(&verify(&app, &session, "000000").await);
}

#[tokio::test]
async fn with_redis_down_auth_fails_closed_with_503() {
    let mut app = TestApp::spawn_with_own_backends(RedisPersistence::None, |_| {}).await;
    let (pre, email) = pre_otp_session(&app).await;
    app.own.as_mut().expect("own backends").redis.kill();
    login(&app, &email, PASSWORD).await.assert_problem(503, "unavailable");
    verify(&app, &pre, "123456").await.assert_problem(503, "unavailable");
    register(&app, &fresh_email(), PASSWORD).await.assert_problem(503, "unavailable");
    post(&app, "/api/v1/auth/otp", None, Some(&pre), &[]).await.assert_problem(503, "unavailable");
    get(&app, "/api/v1/user/profile", Some(&pre)).await.assert_problem(503, "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_past_the_password_queue_is_shed_at_once_and_an_honest_login_then_succeeds() {
    let app = TestApp::spawn_with(|config| {
        config.max_concurrent_hashes = 1;
        config.max_queued_hashes = 1;
        // Spread over many addresses, each within its budget: only the queue bounds it.
        config.limits.login_per_ip_per_min = 10_000;
        config.limits.login_per_account_per_min = 10_000;
    })
    .await;
    let emails: Vec<String> = (0..24).map(|_| fresh_email()).collect();
    let flood = futures::future::join_all(emails.iter().map(|email| login(&app, email, "a wrong password"))).await;

    let refused: Vec<&Answer> = flood.iter().filter(|answer| answer.status == 503).collect();
    let checked = flood.iter().filter(|answer| answer.status == 401).count();
    assert_eq!(refused.len() + checked, flood.len(), "only 401 or 503: {flood:?}");
    assert!(checked >= 1 && !refused.is_empty(), "{checked} checked, {} shed", refused.len());
    for answer in refused {
        answer.assert_problem(503, "busy");
        assert_eq!(answer.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
    let shed = app.app().metrics.password_checks_shed.get();
    assert_eq!(shed, flood.iter().filter(|answer| answer.status == 503).count() as u64);

    // Once the flood is answered, the queue is empty again: the owner logs in.
    let email = fresh_email();
    flashsale::auth::users::create_user_with_hash(app.app(), &email, PRECOMPUTED_HASH, Role::Buyer)
        .await
        .expect("user");
    assert_eq!(login(&app, &email, PRECOMPUTED_PASSWORD).await.status, 200);
}
