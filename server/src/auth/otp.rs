//! One-time codes: issued at login, stored only as a salted SHA-256 under
//! `keys.otp(user_id)` with a TTL and an attempts counter, bound to the session that
//! asked for it, checked and consumed in one atomic script (single use even under
//! concurrent submissions), dead after too many misses, and delivered through an
//! [`OtpSender`].

use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use redis::RedisResult;
use uuid::Uuid;

use crate::config::{Config, OtpDelivery};
use crate::redis::keys::sha256_hex;
use crate::redis::scripts::{self, OtpSubmission, OtpVerifyOutcome};
use crate::state::App;

/// SMTP connections kept open for reuse; more sends at once open short-lived ones.
const SMTP_POOL_MAX_CONNECTIONS: u32 = 8;

/// How a code reaches its user. Built once at startup and kept in [`App`].
#[derive(Debug, Clone)]
pub enum OtpSender {
    /// XADD to the outbox stream, read by an external mailer (and the tests).
    Outbox,
    /// Log at info. Development only.
    Log,
    /// A mail through an SMTP server. The code is never logged.
    Smtp(SmtpSender),
}

/// The SMTP transport (a connection pool) and what every code mail shares.
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

// Written by hand: the transport's own `Debug` would print its credentials.
impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender").field("from", &self.from).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Why a code was not issued. Every variant means the user did not get a code, and the
/// handlers answer 503 `unavailable` (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("building the code mail: {0}")]
    Mail(String),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("SMTP: no answer within {timeout_ms} ms")]
    SmtpTimeout { timeout_ms: u64 },
}

/// One code on its way to a user. `Debug` hides the code so it cannot leak into logs.
pub struct OtpMessage<'a> {
    pub email: &'a str,
    pub user_id: Uuid,
    pub code: &'a str,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for OtpMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpMessage").field("user_id", &self.user_id).field("code", &"<redacted>").finish()
    }
}

impl OtpSender {
    /// The sender the configuration asks for. For SMTP this parses `--smtp-url` and builds
    /// the pooled transport (it connects lazily, on the first code).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match config.otp_delivery {
            OtpDelivery::Outbox => Ok(Self::Outbox),
            OtpDelivery::Log if config.cookie_secure => {
                anyhow::bail!(
                    "--otp-delivery log writes codes to the log: development only, refused with --cookie-secure"
                )
            }
            OtpDelivery::Log => Ok(Self::Log),
            OtpDelivery::Smtp => SmtpSender::from_config(config).map(Self::Smtp),
        }
    }

    /// Delivers one code. A failure means the code did not (knowably) reach the user and
    /// the request that asked for it answers 503: telling the user "code sent" would be a
    /// lie. The stored code is left in place, since a send that failed after the server
    /// took the mail may still arrive; the next login or resend replaces it.
    pub async fn send(&self, app: &App, message: &OtpMessage<'_>) -> Result<(), IssueError> {
        match self {
            Self::Outbox => append_to_outbox(app, message).await?,
            Self::Log => {
                tracing::info!(email = message.email, code = message.code, "one-time code (development delivery)");
            }
            Self::Smtp(smtp) => smtp.send(&app.config, message).await?,
        }
        Ok(())
    }
}

async fn append_to_outbox(app: &App, message: &OtpMessage<'_>) -> RedisResult<()> {
    let mut conn = app.redis.clone();
    let _: String = redis::cmd("XADD")
        .arg(app.keys.otp_outbox())
        .arg("MAXLEN")
        .arg("~")
        .arg(app.config.otp_outbox_max_len)
        .arg("*")
        .arg("email")
        .arg(message.email)
        .arg("user_id")
        .arg(message.user_id.to_string())
        .arg("code")
        .arg(message.code)
        .arg("created_at_ms")
        .arg(message.created_at_ms)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

impl SmtpSender {
    fn from_config(config: &Config) -> anyhow::Result<Self> {
        let Some(url) = &config.smtp_url else {
            anyhow::bail!("--otp-delivery smtp needs --smtp-url");
        };
        let timeout = Duration::from_millis(config.smtp_timeout_ms.max(1));
        // The error of `from_url` names what is wrong, never the URL (or its password).
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .with_context(|| format!("parsing --smtp-url {}", url.redacted()))?
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(SMTP_POOL_MAX_CONNECTIONS))
            .build();
        Ok(Self { transport, from: config.smtp_from.clone(), timeout })
    }

    /// Sends the code mail, bounded as a whole by the timeout (the transport also
    /// bounds each command by it). Neither the code nor the mail is logged.
    async fn send(&self, config: &Config, message: &OtpMessage<'_>) -> Result<(), IssueError> {
        let mail = self.mail(config, message)?;
        let sent = tokio::time::timeout(self.timeout, self.transport.send(mail)).await;
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let error = match sent {
            Ok(Ok(_response)) => return Ok(()),
            Ok(Err(err)) => IssueError::Smtp(err),
            Err(_elapsed) => IssueError::SmtpTimeout { timeout_ms },
        };
        tracing::warn!(user_id = %message.user_id, %error, "one-time code not delivered over SMTP");
        Err(error)
    }

    fn mail(&self, config: &Config, message: &OtpMessage<'_>) -> Result<Message, IssueError> {
        let to: Mailbox = message.email.parse().map_err(|err| IssueError::Mail(format!("recipient: {err}")))?;
        let minutes = config.otp_ttl_s.div_ceil(60).max(1);
        let body = format!(
            "Your flashsale sign-in code is {code}\r\n\r\n\
             It expires in {minutes} minute(s) and works once, in the browser that asked for it.\r\n\
             If you did not just try to sign in, ignore this mail and change your password.\r\n",
            code = message.code,
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Your flashsale sign-in code")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|err| IssueError::Mail(err.to_string()))
    }
}

fn code_hash(salt: &str, code: &str) -> String {
    sha256_hex(format!("{salt}:{code}").as_bytes())
}

/// The session a code is bound to, as stored (never the session id itself).
fn session_tag(session_id: &str) -> String {
    sha256_hex(session_id.as_bytes())
}

fn ttl_ms(config: &Config) -> i64 {
    i64::try_from(config.otp_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX).max(1)
}

/// Draws a new code for `user_id`, bound to `session_id`, replacing any earlier code,
/// and sends it through `app.otp_sender` (see [`OtpSender::send`] for failures).
pub async fn issue(app: &App, user_id: Uuid, email: &str, session_id: &str) -> Result<(), IssueError> {
    let code = app.ids.decimal_code(app.config.otp_digits);
    let salt = hex::encode(app.ids.random_bytes::<16>());
    let now_ms = app.ids.now_ms();
    let key = app.keys.otp(user_id);
    let fields = [
        ("code_hash", code_hash(&salt, &code)),
        ("salt", salt),
        ("attempts", "0".to_owned()),
        ("session", session_tag(session_id)),
        ("created_at_ms", now_ms.to_string()),
    ];
    let mut conn = app.redis.clone();
    // DEL first: the new code replaces the old one whole, attempts included.
    let () = redis::pipe()
        .atomic()
        .del(&key)
        .ignore()
        .hset_multiple(&key, &fields)
        .ignore()
        .pexpire(&key, ttl_ms(&app.config))
        .ignore()
        .query_async(&mut conn)
        .await?;
    let message = OtpMessage { email, user_id, code: &code, created_at_ms: now_ms };
    app.otp_sender.send(app, &message).await
}

/// Checks `code` against the live code of `user_id` for `session_id` and consumes it on
/// a match, in one atomic step (`lua/otp_verify.lua`): of any number of concurrent
/// submissions of the right code exactly one is [`OtpVerifyOutcome::Verified`]. A miss
/// counts as an attempt and the code dies at `otp_max_attempts`; the right code, or a
/// code that is no longer live, counts nothing. The code is hashed here with the
/// record's salt (read first): only its hash reaches Redis.
pub async fn verify(app: &App, user_id: Uuid, session_id: &str, code: &str) -> anyhow::Result<OtpVerifyOutcome> {
    let key = app.keys.otp(user_id);
    let mut conn = app.redis.clone();
    let salt: Option<String> = redis::cmd("HGET").arg(&key).arg("salt").query_async(&mut conn).await?;
    let Some(salt) = salt else {
        return Ok(OtpVerifyOutcome::NoCode);
    };
    let submission = OtpSubmission {
        salt: &salt,
        code_hash: &code_hash(&salt, code),
        session_tag: &session_tag(session_id),
        max_attempts: app.config.otp_max_attempts,
    };
    scripts::otp_verify(&mut conn, &key, &submission).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_does_not_contain_the_code_and_depends_on_the_salt() {
        let hash = code_hash("salt", "123456");
        assert!(!hash.contains("123456"));
        assert_ne!(hash, code_hash("other", "123456"));
        assert_eq!(hash, code_hash("salt", "123456"));
    }

    #[test]
    fn debug_output_of_a_message_hides_the_code() {
        let message = OtpMessage { email: "a@b.co", user_id: Uuid::nil(), code: "987654", created_at_ms: 0 };
        assert!(!format!("{message:?}").contains("987654"));
    }
}
