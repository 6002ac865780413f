//! Sessions in Redis: one hash per session under `keys.session(id)` (named by the hash
//! of the id), an idle TTL refreshed as it is used, an absolute lifetime checked against
//! `created_at_ms`, and the cookie that carries the id.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use axum::http::{HeaderMap, HeaderValue, header};
use redis::RedisResult;
use uuid::Uuid;

use crate::auth::extract::Role;
use crate::auth::users;
use crate::config::Config;
use crate::state::App;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "flashsale_session";
/// Hex characters of a session id (128 random bits).
const SESSION_ID_HEX_CHARS: usize = 32;
/// `last_seen_ms` and the idle TTL are rewritten at most this often (see
/// [`touch_interval_ms`]), so that the hot purchase path pays one read per request.
pub const LAST_SEEN_WRITE_INTERVAL_MS: i64 = 10_000;

/// What a session hash holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub otp_verified: bool,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
}

impl Session {
    fn fields(&self) -> [(&'static str, String); 6] {
        [
            ("user_id", self.user_id.to_string()),
            ("email", self.email.clone()),
            ("role", role_name(self.role).to_owned()),
            ("otp_verified", if self.otp_verified { "1" } else { "0" }.to_owned()),
            ("created_at_ms", self.created_at_ms.to_string()),
            ("last_seen_ms", self.last_seen_ms.to_string()),
        ]
    }

    /// Parses a session hash's [`FIELDS`], in that order, as `HMGET` returns them;
    /// `None` for a missing or partial one (a partial hash is what a use racing with
    /// logout or expiry can leave behind, and it is never a session).
    fn from_values(values: &[redis::Value]) -> Option<Self> {
        let text = |index: usize| match values.get(index)? {
            redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
            redis::Value::SimpleString(text) => Some(text.as_str()),
            _ => None,
        };
        Some(Self {
            user_id: Uuid::parse_str(text(0)?).ok()?,
            email: text(1)?.to_owned(),
            role: parse_role(text(2)?)?,
            otp_verified: text(3)? == "1",
            created_at_ms: text(4)?.parse().ok()?,
            last_seen_ms: text(5)?.parse().ok()?,
        })
    }
}

/// The fields of a session hash, in the order [`Session::from_values`] reads them.
const FIELDS: [&str; 6] = ["user_id", "email", "role", "otp_verified", "created_at_ms", "last_seen_ms"];

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Buyer => "buyer",
        Role::Admin => "admin",
    }
}

fn parse_role(name: &str) -> Option<Role> {
    match name {
        "buyer" => Some(Role::Buyer),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

fn idle_ttl_ms(config: &Config) -> i64 {
    i64::try_from(config.session_idle_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn absolute_ttl_ms(config: &Config) -> i64 {
    i64::try_from(config.session_absolute_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Stores `session` under a fresh 128-bit id and returns the id.
pub async fn create(app: &App, session: &Session) -> RedisResult<String> {
    let id = app.ids.token_128();
    let key = app.keys.session(&id);
    let remaining_ms = absolute_ttl_ms(&app.config) - (app.ids.now_ms() - session.created_at_ms);
    let ttl_ms = idle_ttl_ms(&app.config).min(remaining_ms).max(1);
    let mut conn = app.redis.clone();
    let () = redis::pipe()
        .atomic()
        .hset_multiple(&key, &session.fields())
        .ignore()
        .pexpire(&key, ttl_ms)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(id)
}

/// A fresh session, OTP already verified, for an existing user (tests and the
/// simulator log in through this instead of keeping a second copy of the format).
pub async fn create_verified_session(app: &App, user_id: Uuid) -> anyhow::Result<String> {
    let Some(user) = users::find_by_id(app, user_id).await? else {
        anyhow::bail!("no user has the id {user_id}");
    };
    create_verified_session_for(app, &user).await
}

/// A fresh session, OTP already verified, for a user record already at hand.
pub async fn create_verified_session_for(app: &App, user: &users::UserDoc) -> anyhow::Result<String> {
    let user_id = user.uuid()?;
    let now_ms = app.ids.now_ms();
    let session = Session {
        user_id,
        email: user.email.clone(),
        role: user.role,
        otp_verified: true,
        created_at_ms: now_ms,
        last_seen_ms: now_ms,
    };
    Ok(create(app, &session).await?)
}

/// The live session with this id, its idle TTL refreshed when due; `None` if there is
/// none, or it is past its absolute lifetime (it is then deleted). One `HMGET` in the
/// common case: `last_seen_ms` and the idle TTL are written together, only once
/// [`touch_interval_ms`] has passed since the last write, so the hot purchase path pays a
/// single read per request.
pub async fn load(app: &App, id: &str) -> RedisResult<Option<Session>> {
    if !is_well_formed_id(id) {
        return Ok(None);
    }
    let key = app.keys.session(id);
    let mut conn = app.redis.clone();
    // Read without copying into strings first: this is every authenticated request.
    let values: Vec<redis::Value> = redis::cmd("HMGET").arg(&key).arg(&FIELDS[..]).query_async(&mut conn).await?;
    if values.iter().all(|value| matches!(value, redis::Value::Nil)) {
        return Ok(None);
    }
    let now_ms = app.ids.now_ms();
    let session = match Session::from_values(&values) {
        Some(session) if now_ms - session.created_at_ms < absolute_ttl_ms(&app.config) => session,
        _ => {
            delete(app, id).await?;
            return Ok(None);
        }
    };
    if now_ms - session.last_seen_ms >= touch_interval_ms(&app.config) {
        // Atomic with a PEXPIRE so that a write racing with logout leaves at worst a
        // partial hash that expires, never a key without a TTL.
        let remaining_ms = absolute_ttl_ms(&app.config) - (now_ms - session.created_at_ms);
        let () = redis::pipe()
            .atomic()
            .hset(&key, "last_seen_ms", now_ms)
            .ignore()
            .pexpire(&key, idle_ttl_ms(&app.config).min(remaining_ms).max(1))
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
    Ok(Some(session))
}

/// How long after its last write a session's `last_seen_ms` and idle TTL are written
/// again: [`LAST_SEEN_WRITE_INTERVAL_MS`], or a quarter of the idle TTL if that is
/// shorter. A session in use therefore idles out no sooner than the idle TTL less this.
pub fn touch_interval_ms(config: &Config) -> i64 {
    LAST_SEEN_WRITE_INTERVAL_MS.min(idle_ttl_ms(config) / 4)
}

pub async fn delete(app: &App, id: &str) -> RedisResult<()> {
    app.known_sessions.forget(id);
    let mut conn = app.redis.clone();
    let _: i64 = redis::cmd("DEL").arg(app.keys.session(id)).query_async(&mut conn).await?;
    Ok(())
}

/// Verified sessions this instance has seen (loaded from Redis), id → user.
pub const MAX_KNOWN_SESSIONS: usize = 200_000;

/// The users behind the verified sessions this instance has loaded, for the sold-out
/// shortcut alone: once a product is sold out, an attempt with a known session is told
/// so before any Redis round trip (its user gives the derived order id, which tells a
/// replay of a purchase that bought apart). It authorises nothing: a session logged out
/// on another instance, or expired, still maps to its user here until this instance
/// loads it again, and the most it gets is the sold-out answer the product page shows
/// anyone. Bounded: when full it starts over empty.
#[derive(Debug, Default)]
pub struct KnownSessions {
    users: RwLock<HashMap<String, Uuid>>,
}

impl KnownSessions {
    pub fn user(&self, id: &str) -> Option<Uuid> {
        self.users.read().unwrap_or_else(PoisonError::into_inner).get(id).copied()
    }

    pub fn remember(&self, id: &str, user_id: Uuid) {
        if self.user(id) == Some(user_id) {
            return;
        }
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        if users.len() >= MAX_KNOWN_SESSIONS {
            users.clear();
        }
        users.insert(id.to_owned(), user_id);
    }

    pub fn forget(&self, id: &str) {
        self.users.write().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    pub fn len(&self) -> usize {
        self.users.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_well_formed_id(id: &str) -> bool {
    id.len() == SESSION_ID_HEX_CHARS && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The session id the request presents in its cookie, if any.
pub fn id_from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
}

/// `Set-Cookie` that hands the browser a session id.
pub fn set_cookie(config: &Config, id: &str) -> HeaderValue {
    cookie(config, id, config.session_absolute_ttl_s)
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(config: &Config) -> HeaderValue {
    cookie(config, "", 0)
}

fn cookie(config: &Config, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if config.cookie_secure { "; Secure" } else { "" };
    let text = format!("{COOKIE_NAME}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}{secure}");
    // The value is hex and the rest is fixed text, so this cannot fail; fall back to a
    // clearing cookie rather than panic.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("flashsale_session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secure: bool) -> Config {
        let mut config = Config::for_local("redis://x", "mongodb://x", "d", "p");
        config.cookie_secure = secure;
        config
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_when_configured() {
        let secure = set_cookie(&config(true), "ab");
        assert_eq!(
            secure.to_str().ok(),
            Some("flashsale_session=ab; HttpOnly; SameSite=Lax; Path=/; Max-Age=86400; Secure")
        );
        let plain = set_cookie(&config(false), "ab");
        assert!(!plain.to_str().unwrap_or_default().contains("Secure"));
    }

    #[test]
    fn the_session_id_is_read_from_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; flashsale_session=abc ; b=2"));
        assert_eq!(id_from_headers(&headers), Some("abc"));
    }

    #[test]
    fn a_session_is_touched_every_10_s_or_a_quarter_of_a_short_idle_ttl() {
        let mut config = config(false);
        config.session_idle_ttl_s = 1_800;
        assert_eq!(touch_interval_ms(&config), LAST_SEEN_WRITE_INTERVAL_MS);
        config.session_idle_ttl_s = 1;
        assert_eq!(touch_interval_ms(&config), 250);
    }

    #[test]
    fn only_128_bit_hex_ids_are_looked_up() {
        assert!(is_well_formed_id(&"a1".repeat(16)));
        assert!(!is_well_formed_id("a1"));
        assert!(!is_well_formed_id(&"A1".repeat(16)));
        assert!(!is_well_formed_id(&"g1".repeat(16)));
    }

    #[test]
    fn a_session_round_trips_through_its_fields() {
        let session = Session {
            user_id: Uuid::from_u128(9),
            email: "a@b.co".into(),
            role: Role::Admin,
            otp_verified: true,
            created_at_ms: 5,
            last_seen_ms: 6,
        };
        let fields = session.fields();
        assert_eq!(fields.clone().map(|(name, _)| name), FIELDS, "written and read in the same order");
        let values: Vec<redis::Value> =
            fields.into_iter().map(|(_, value)| redis::Value::BulkString(value.into_bytes())).collect();
        assert_eq!(Session::from_values(&values), Some(session));
    }

    #[test]
    fn the_known_sessions_start_over_when_full() {
        let known = KnownSessions::default();
        for n in 0..MAX_KNOWN_SESSIONS {
            known.remember(&format!("{n:032x}"), Uuid::from_u128(n as u128));
        }
        assert_eq!(known.len(), MAX_KNOWN_SESSIONS);
        let last = Uuid::from_u128(u128::MAX);
        known.remember(&"f".repeat(32), last);
        assert_eq!(known.len(), 1, "full: it starts over with the new one");
        assert_eq!(known.user(&"f".repeat(32)), Some(last));
        assert_eq!(known.user(&format!("{:032x}", 0)), None);
    }

    #[test]
    fn a_partial_hash_is_not_a_session() {
        let mut values = vec![redis::Value::Nil; FIELDS.len()];
        values[5] = redis::Value::BulkString(b"1".to_vec());
        assert_eq!(Session::from_values(&values), None);
    }
}
