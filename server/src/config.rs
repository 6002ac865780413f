//! Server configuration: every setting is a `--flag` and an environment variable, with
//! units in its name and a named default. Limits live here so they are all in one place.

use std::net::SocketAddr;
use std::str::FromStr;

use clap::{Args, ValueEnum};
use lettre::message::Mailbox;

/// How one-time codes reach the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtpDelivery {
    /// Append to a Redis stream (the outbox) that an external mailer and the tests read.
    Outbox,
    /// Write the code to the log. Development only: the server refuses this with
    /// `--cookie-secure`.
    Log,
    /// Send a mail through the SMTP server at `--smtp-url`. The code is never logged.
    Smtp,
}

/// All settings of one server instance.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "FLASHSALE_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Redis URL (live sale state, sessions, rate limits, idempotency, cache, events).
    #[arg(long, env = "FLASHSALE_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// MongoDB URL (system of record: users, products, orders).
    #[arg(long, env = "FLASHSALE_MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    pub mongo_url: String,

    /// MongoDB database name.
    #[arg(long, env = "FLASHSALE_MONGO_DATABASE", default_value = "flashsale")]
    pub mongo_database: String,

    /// Prefix of every Redis key and channel, so several deployments can share a Redis.
    #[arg(long, env = "FLASHSALE_KEY_PREFIX", default_value = "fs")]
    pub key_prefix: String,

    /// Mark the session cookie `Secure`. Switch off only for plain-http local runs.
    #[arg(long, env = "FLASHSALE_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// A session unused for this long expires.
    #[arg(long, env = "FLASHSALE_SESSION_IDLE_TTL_S", default_value_t = 1800)]
    pub session_idle_ttl_s: u64,

    /// A session expires this long after login, however busy.
    #[arg(long, env = "FLASHSALE_SESSION_ABSOLUTE_TTL_S", default_value_t = 86_400)]
    pub session_absolute_ttl_s: u64,

    /// Lifetime of a one-time code.
    #[arg(long, env = "FLASHSALE_OTP_TTL_S", default_value_t = 300)]
    pub otp_ttl_s: u64,

    /// Wrong guesses after which a one-time code is dead.
    #[arg(long, env = "FLASHSALE_OTP_MAX_ATTEMPTS", default_value_t = 5)]
    pub otp_max_attempts: u32,

    /// Digits of a one-time code.
    #[arg(long, env = "FLASHSALE_OTP_DIGITS", default_value_t = 6)]
    pub otp_digits: u32,

    /// Where one-time codes are delivered.
    #[arg(long, env = "FLASHSALE_OTP_DELIVERY", value_enum, default_value_t = OtpDelivery::Outbox)]
    pub otp_delivery: OtpDelivery,

    /// SMTP server for `--otp-delivery smtp`: `smtp://host:port` (plain), `smtp://host?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host:465` (TLS). Its password never reaches a log.
    #[arg(long, env = "FLASHSALE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SmtpUrl>,

    /// Sender of the one-time code mails.
    #[arg(long, env = "FLASHSALE_SMTP_FROM", default_value = "flashsale <no-reply@localhost>")]
    pub smtp_from: Mailbox,

    /// Bound on one code mail: connecting, each SMTP command, and the whole send.
    #[arg(long, env = "FLASHSALE_SMTP_TIMEOUT_MS", default_value_t = 5_000)]
    pub smtp_timeout_ms: u64,

    /// Entries kept in the OTP outbox stream (approximate trim).
    #[arg(long, env = "FLASHSALE_OTP_OUTBOX_MAX_LEN", default_value_t = 100_000)]
    pub otp_outbox_max_len: u64,

    /// Argon2id memory cost in KiB (OWASP minimum 19456).
    #[arg(long, env = "FLASHSALE_ARGON2_M_KIB", default_value_t = 19_456)]
    pub argon2_m_kib: u32,

    /// Argon2id iterations (OWASP minimum 2).
    #[arg(long, env = "FLASHSALE_ARGON2_T", default_value_t = 2)]
    pub argon2_t: u32,

    /// Argon2id parallelism.
    #[arg(long, env = "FLASHSALE_ARGON2_P", default_value_t = 1)]
    pub argon2_p: u32,

    /// Password hashes computed at once; more wait (bounds memory: m × this).
    #[arg(long, env = "FLASHSALE_MAX_CONCURRENT_HASHES", default_value_t = 8)]
    pub max_concurrent_hashes: usize,

    /// Password checks (logins, registrations) allowed to wait for a hash slot; past
    /// `max_concurrent_hashes` + this, a new one is refused at once (503 `busy`,
    /// Retry-After) before any store is read, so a flood of logins cannot queue honest
    /// ones behind it for seconds.
    #[arg(long, env = "FLASHSALE_MAX_QUEUED_HASHES", default_value_t = 16)]
    pub max_queued_hashes: usize,

    /// Server-Sent Event streams open at once on this instance; past it a new one is
    /// refused (503 `too-many-connections`, Retry-After) and the others go on.
    #[arg(long, env = "FLASHSALE_MAX_EVENT_STREAMS", default_value_t = 1_000)]
    pub max_event_streams: usize,

    /// Server-Sent Event streams one client address (an IPv6 client: its /64; behind a
    /// trusted proxy, the forwarded client) may hold open on this instance; past it its
    /// new one is refused the same way. Without it one client could take every stream
    /// `max_event_streams` allows and leave none for anyone else.
    #[arg(long, env = "FLASHSALE_MAX_EVENT_STREAMS_PER_CLIENT", default_value_t = 100)]
    pub max_event_streams_per_client: usize,

    /// Completed idempotency records are kept this long.
    #[arg(long, env = "FLASHSALE_IDEMPOTENCY_TTL_S", default_value_t = 86_400)]
    pub idempotency_ttl_s: u64,

    /// An in-flight idempotency record older than this may be taken over by a retry
    /// (its holder is presumed dead).
    #[arg(long, env = "FLASHSALE_IDEMPOTENCY_LEASE_MS", default_value_t = 5_000)]
    pub idempotency_lease_ms: u64,

    /// How long the purchase path waits for MongoDB before answering 202 pending.
    #[arg(long, env = "FLASHSALE_ORDER_WRITE_TIMEOUT_MS", default_value_t = 1_500)]
    pub order_write_timeout_ms: u64,

    /// Orders one group commit writes at most (one unordered `insert_many` shared by the
    /// winning purchases that reach MongoDB together); 1 writes each order on its own.
    #[arg(long, env = "FLASHSALE_ORDER_BATCH_MAX", default_value_t = 64)]
    pub order_batch_max: u32,

    /// Group commits in flight at once on this instance; orders arriving while all are in
    /// flight wait for the next one to take them (no wait at all while fewer are in flight).
    /// One, the classic group commit, by default: measured on the single-writer backend
    /// tested here, more in flight made smaller batches that waited for each other
    /// (`system-design/load-testing.md`); a store that takes concurrent writes well may
    /// want more.
    #[arg(long, env = "FLASHSALE_ORDER_BATCHES_IN_FLIGHT", default_value_t = 1)]
    pub order_batches_in_flight: u32,

    /// Timeout of one Redis command; past it the request fails closed.
    #[arg(long, env = "FLASHSALE_REDIS_TIMEOUT_MS", default_value_t = 1_000)]
    pub redis_timeout_ms: u64,

    /// MongoDB server selection timeout.
    #[arg(long, env = "FLASHSALE_MONGO_SELECT_TIMEOUT_MS", default_value_t = 2_000)]
    pub mongo_select_timeout_ms: u64,

    /// Bound of one MongoDB operation (the driver has no socket timeout: without it an
    /// operation on a connection that stopped answering waits forever and keeps its
    /// pooled connection).
    #[arg(long, env = "FLASHSALE_MONGO_OP_TIMEOUT_MS", default_value_t = 10_000)]
    pub mongo_op_timeout_ms: u64,

    /// MongoDB operations in flight at once (the driver's pool may hold twice as many
    /// connections); the rest wait their turn, at most `mongo_op_timeout_ms`.
    #[arg(long, env = "FLASHSALE_MONGO_POOL_SIZE", default_value_t = 20)]
    pub mongo_pool_size: u32,

    /// Pause between reconciler passes.
    #[arg(long, env = "FLASHSALE_RECONCILE_INTERVAL_MS", default_value_t = 1_000)]
    pub reconcile_interval_ms: u64,

    /// A reservation must be this old before the reconciler persists it (the request
    /// that made it gets the first chance).
    #[arg(long, env = "FLASHSALE_RECONCILE_GRACE_MS", default_value_t = 3_000)]
    pub reconcile_grace_ms: u64,

    /// Reservations persisted per product per pass.
    #[arg(long, env = "FLASHSALE_RECONCILE_BATCH", default_value_t = 256)]
    pub reconcile_batch: usize,

    /// Lease of the reconciler lock (one instance reconciles at a time).
    #[arg(long, env = "FLASHSALE_RECONCILE_LEASE_MS", default_value_t = 10_000)]
    pub reconcile_lease_ms: u64,

    /// Lifetime of cached product documents; 0 disables the cache.
    #[arg(long, env = "FLASHSALE_PRODUCT_CACHE_TTL_S", default_value_t = 60)]
    pub product_cache_ttl_s: u64,

    /// Largest accepted request body.
    #[arg(long, env = "FLASHSALE_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Trust `X-Forwarded-For` (set only behind a proxy that overwrites it).
    #[arg(long, env = "FLASHSALE_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Emails that get the admin role when they register or log in (comma separated).
    #[arg(long, env = "FLASHSALE_ADMIN_EMAILS", value_delimiter = ',')]
    pub admin_emails: Vec<String>,

    /// Start even if Redis may evict keys (never in production: eviction drops stock).
    #[arg(long, env = "FLASHSALE_ALLOW_EVICTING_REDIS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_evicting_redis: bool,

    /// Run the reconciler and the Redis-restart watcher in this instance.
    #[arg(long, env = "FLASHSALE_BACKGROUND_TASKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub background_tasks: bool,

    #[command(flatten)]
    pub limits: RateLimits,

    #[command(flatten)]
    pub http: HttpLimits,

    /// A deliberately broken behaviour of this instance, for the simulator (only with the
    /// `broken` feature; not a flag: set by the code that starts the instance). `None`
    /// behaves exactly as a build without the feature.
    #[cfg(feature = "broken")]
    #[arg(skip)]
    pub broken: Option<crate::broken::Broken>,
}

/// An SMTP connection URL. It may carry a password, so `Debug` shows it with the password
/// replaced, and there is no `Display`: [`SmtpUrl::expose`] is the one way to the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl(String);

impl SmtpUrl {
    /// The URL with its password, for building the transport; never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password in its user info replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<redacted>".to_owned();
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // The user info ends at the last `@` of the authority (a password may contain `@`).
        let Some((user_info, host)) = authority.rsplit_once('@') else {
            return self.0.clone();
        };
        let user = user_info.split_once(':').map_or(user_info, |(user, _password)| user);
        let password = if user_info.contains(':') { ":<redacted>" } else { "" };
        format!("{scheme}://{user}{password}@{host}{tail}")
    }
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SmtpUrl").field(&self.redacted()).finish()
    }
}

impl From<String> for SmtpUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

/// Why a `--smtp-url` was refused. It does not quote the URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[error("an SMTP URL starts with smtp:// or smtps://")]
pub struct SmtpUrlError;

impl FromStr for SmtpUrl {
    type Err = SmtpUrlError;

    /// Checks the scheme only; the transport parses the rest when it is built at startup.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("smtp://") || url.starts_with("smtps://") {
            Ok(Self(url.to_owned()))
        } else {
            Err(SmtpUrlError)
        }
    }
}

/// Rate limits: `<action>_per_min` requests per minute per scope.
#[derive(Debug, Clone, Args)]
pub struct RateLimits {
    /// Login attempts per minute per client IP.
    #[arg(long, env = "FLASHSALE_RL_LOGIN_PER_IP_PER_MIN", default_value_t = 20)]
    pub login_per_ip_per_min: u32,
    /// Login attempts per minute per account (email), whatever the IP.
    #[arg(long, env = "FLASHSALE_RL_LOGIN_PER_ACCOUNT_PER_MIN", default_value_t = 5)]
    pub login_per_account_per_min: u32,
    /// Registrations per minute per client IP.
    #[arg(long, env = "FLASHSALE_RL_REGISTER_PER_IP_PER_MIN", default_value_t = 10)]
    pub register_per_ip_per_min: u32,
    /// OTP sends and verifications per minute per user.
    #[arg(long, env = "FLASHSALE_RL_OTP_PER_USER_PER_MIN", default_value_t = 10)]
    pub otp_per_user_per_min: u32,
    /// Purchase attempts per minute per user.
    #[arg(long, env = "FLASHSALE_RL_PURCHASE_PER_USER_PER_MIN", default_value_t = 30)]
    pub purchase_per_user_per_min: u32,
    /// Purchase attempts per minute per client IP.
    #[arg(long, env = "FLASHSALE_RL_PURCHASE_PER_IP_PER_MIN", default_value_t = 100_000)]
    pub purchase_per_ip_per_min: u32,
    /// Reads (product list and detail, orders) per minute per client IP.
    #[arg(long, env = "FLASHSALE_RL_READS_PER_IP_PER_MIN", default_value_t = 100_000)]
    pub reads_per_ip_per_min: u32,
}

/// Bounds on HTTP connections: how long a client may take over each part of a request,
/// and how many connections it may hold. A held connection costs a descriptor and about
/// 25 KB; without these a client that sends slowly, or not at all, holds it for ever.
#[derive(Debug, Clone, Args)]
pub struct HttpLimits {
    /// Time a client has to send a whole request head (request line and headers), counted
    /// from the connection opening or, on a kept-alive connection, from the end of the
    /// previous answer (hyper runs one timer for both). Past it the connection is closed
    /// without an answer.
    #[arg(
        long = "http-header-read-timeout-ms",
        env = "FLASHSALE_HTTP_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// Time a client has to send a whole request body once its handler reads it. Past it
    /// the answer is 408 `request-timeout` and the connection is closed.
    #[arg(long = "http-body-read-timeout-ms", env = "FLASHSALE_HTTP_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,

    /// A connection on which no byte has moved either way for this long is closed: at
    /// once between requests, else after the answer in progress. Checked every half of
    /// it, so the close comes between 1 and 1.5 times this after the last byte. At most
    /// the header-read timeout, which also runs while a kept-alive connection waits.
    #[arg(
        long = "http-keep-alive-idle-timeout-ms",
        env = "FLASHSALE_HTTP_KEEP_ALIVE_IDLE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub keep_alive_idle_timeout_ms: u64,

    /// An answer the client has stopped reading: when the server has bytes to send that
    /// the connection has not taken for this long (its socket buffers are full, so the
    /// client read none of them), the connection is dropped. Without it a client that
    /// pipelines requests and never reads holds its connection, and the answers queued
    /// for it, for ever: the idle close waits for the answer in progress. A quiet event
    /// stream is not stalled (nothing waits to be sent). Checked with the idle bound, every
    /// half of it; at least the idle bound (nginx's `send_timeout` is 60 s).
    #[arg(
        long = "http-write-stall-timeout-ms",
        env = "FLASHSALE_HTTP_WRITE_STALL_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub write_stall_timeout_ms: u64,

    /// Connections open at once. Past it a new connection is answered 503
    /// `too-many-connections` and closed. Lowered at startup to fit the process's
    /// open-files limit, less what the backends and the refusals need.
    #[arg(long = "http-max-connections", env = "FLASHSALE_HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Connections open at once from one client address (an IPv6 client: one /64), refused
    /// the same way. Not applied with `--trust-forwarded-for`: the peer is then the proxy.
    #[arg(
        long = "http-max-connections-per-client",
        env = "FLASHSALE_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 4_000
    )]
    pub max_connections_per_client: usize,

    /// At shutdown, how long in-flight requests may take to finish before their
    /// connections are dropped.
    #[arg(
        long = "http-shutdown-drain-timeout-ms",
        env = "FLASHSALE_HTTP_SHUTDOWN_DRAIN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub shutdown_drain_timeout_ms: u64,

    /// Largest request head (request line and header fields) a connection may send, in
    /// bytes. Past it the answer is hyper's 431 and the connection closes. It is also the
    /// most a connection buffers while it reads, so a held connection costs at most about
    /// this much besides its fixed part (hyper's own default is 408 KiB, which at the
    /// connection cap would let idle heads hold gigabytes). The default is Node.js's.
    /// At least 8,192 (hyper's smallest read buffer), at most 1 MiB. A request target
    /// longer than this gets 431 too, before hyper's own 414 bound of 65,534 bytes.
    #[arg(long = "http-max-head-bytes", env = "FLASHSALE_HTTP_MAX_HEAD_BYTES", default_value_t = 16 * 1024)]
    pub max_head_bytes: usize,
}

/// A configuration value out of its range, named by its flag.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct InvalidSetting {
    pub flag: &'static str,
    pub problem: String,
}

impl HttpLimits {
    /// Checks every bound, and how they fit together.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |flag, problem: &str| Err(InvalidSetting { flag, problem: problem.to_owned() });
        if self.header_read_timeout_ms == 0 {
            return invalid("http-header-read-timeout-ms", "must be at least 1");
        }
        if self.body_read_timeout_ms == 0 {
            return invalid("http-body-read-timeout-ms", "must be at least 1");
        }
        if self.keep_alive_idle_timeout_ms < 2 {
            return invalid("http-keep-alive-idle-timeout-ms", "must be at least 2 (it is checked every half of it)");
        }
        if self.keep_alive_idle_timeout_ms > self.header_read_timeout_ms {
            return invalid(
                "http-keep-alive-idle-timeout-ms",
                "must not exceed --http-header-read-timeout-ms, whose timer also runs while a kept-alive \
                 connection waits for its next request (a longer idle bound would never take effect)",
            );
        }
        if self.write_stall_timeout_ms < self.keep_alive_idle_timeout_ms {
            return invalid(
                "http-write-stall-timeout-ms",
                "must be at least --http-keep-alive-idle-timeout-ms, whose checks it shares",
            );
        }
        if self.max_connections == 0 {
            return invalid("http-max-connections", "must be at least 1");
        }
        if self.max_connections_per_client == 0 || self.max_connections_per_client > self.max_connections {
            return invalid("http-max-connections-per-client", "must be between 1 and --http-max-connections");
        }
        if self.shutdown_drain_timeout_ms == 0 {
            return invalid("http-shutdown-drain-timeout-ms", "must be at least 1");
        }
        if !HTTP_MAX_HEAD_BYTES.contains(&self.max_head_bytes) {
            return invalid("http-max-head-bytes", "must be between 8192 (hyper's smallest read buffer) and 1048576");
        }
        Ok(())
    }
}

/// Fewest and most digits of a one-time code: fewer is guessable within the attempt
/// limit; more does not fit the code's 64-bit draw and no one types it.
pub const OTP_DIGITS: std::ops::RangeInclusive<u32> = 4..=10;
/// Bounds of the Argon2 parameters accepted (memory in KiB, passes, lanes): the
/// `argon2` crate's own limits, memory capped at 4 GiB per hash.
pub const ARGON2_M_KIB: std::ops::RangeInclusive<u32> = 8..=4 * 1024 * 1024;
pub const ARGON2_T: std::ops::RangeInclusive<u32> = 1..=64;
pub const ARGON2_P: std::ops::RangeInclusive<u32> = 1..=255;
/// Orders in one group commit: past a thousand documents an `insert_many` is split by
/// the driver and one slow document delays every answer in it.
pub const ORDER_BATCH_MAX: std::ops::RangeInclusive<u32> = 1..=1_000;
/// Group commits in flight on one instance (each holds one MongoDB connection).
pub const ORDER_BATCHES_IN_FLIGHT: std::ops::RangeInclusive<u32> = 1..=256;
/// Most wrong codes allowed per issued code.
pub const MAX_OTP_ATTEMPTS: u32 = 100;
/// `http-max-head-bytes`: hyper refuses (panics on) a read buffer under 8 KiB.
pub const HTTP_MAX_HEAD_BYTES: std::ops::RangeInclusive<usize> = 8 * 1024..=1024 * 1024;

impl Config {
    /// Checks every setting a wrong value of which would misbehave rather than fail
    /// (a code of 0 digits is the constant "0"; a zero timeout fails every call; a zero
    /// rate limit refuses everyone), then the HTTP limits. Run at startup, whatever
    /// built the configuration (flags, environment, tests, the simulator).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |flag, problem: String| Err(InvalidSetting { flag, problem });
        let within = |flag, value: u32, range: &std::ops::RangeInclusive<u32>| match range.contains(&value) {
            true => Ok(()),
            false => invalid(flag, format!("must be between {} and {} (got {value})", range.start(), range.end())),
        };
        within("otp-digits", self.otp_digits, &OTP_DIGITS)?;
        within("otp-max-attempts", self.otp_max_attempts, &(1..=MAX_OTP_ATTEMPTS))?;
        within("argon2-m-kib", self.argon2_m_kib, &ARGON2_M_KIB)?;
        within("argon2-t", self.argon2_t, &ARGON2_T)?;
        within("argon2-p", self.argon2_p, &ARGON2_P)?;
        if self.argon2_m_kib < 8 * self.argon2_p {
            return invalid(
                "argon2-m-kib",
                format!("must be at least 8 KiB per lane (8 x --argon2-p = {})", 8 * self.argon2_p),
            );
        }
        within("mongo-pool-size", self.mongo_pool_size, &(1..=u32::MAX))?;
        within("order-batch-max", self.order_batch_max, &ORDER_BATCH_MAX)?;
        within("order-batches-in-flight", self.order_batches_in_flight, &ORDER_BATCHES_IN_FLIGHT)?;
        let positive: [(&'static str, u64); 17] = [
            ("session-idle-ttl-s", self.session_idle_ttl_s),
            ("session-absolute-ttl-s", self.session_absolute_ttl_s),
            ("otp-ttl-s", self.otp_ttl_s),
            ("smtp-timeout-ms", self.smtp_timeout_ms),
            ("otp-outbox-max-len", self.otp_outbox_max_len),
            ("max-concurrent-hashes", self.max_concurrent_hashes as u64),
            ("max-event-streams", self.max_event_streams as u64),
            ("max-event-streams-per-client", self.max_event_streams_per_client as u64),
            ("idempotency-ttl-s", self.idempotency_ttl_s),
            ("idempotency-lease-ms", self.idempotency_lease_ms),
            ("order-write-timeout-ms", self.order_write_timeout_ms),
            ("redis-timeout-ms", self.redis_timeout_ms),
            ("mongo-select-timeout-ms", self.mongo_select_timeout_ms),
            ("mongo-op-timeout-ms", self.mongo_op_timeout_ms),
            ("reconcile-interval-ms", self.reconcile_interval_ms),
            ("reconcile-batch", self.reconcile_batch as u64),
            ("reconcile-lease-ms", self.reconcile_lease_ms),
        ];
        // `product-cache-ttl-s` may be 0: no cache.
        let more = [("max-body-bytes", self.max_body_bytes as u64)];
        let limits = &self.limits;
        let rates: [(&'static str, u32); 7] = [
            ("login-per-ip-per-min", limits.login_per_ip_per_min),
            ("login-per-account-per-min", limits.login_per_account_per_min),
            ("register-per-ip-per-min", limits.register_per_ip_per_min),
            ("otp-per-user-per-min", limits.otp_per_user_per_min),
            ("purchase-per-user-per-min", limits.purchase_per_user_per_min),
            ("purchase-per-ip-per-min", limits.purchase_per_ip_per_min),
            ("reads-per-ip-per-min", limits.reads_per_ip_per_min),
        ];
        let zero = positive.into_iter().chain(more).chain(rates.map(|(flag, rate)| (flag, u64::from(rate))));
        for (flag, value) in zero {
            if value == 0 {
                return invalid(flag, "must be at least 1".to_owned());
            }
        }
        if self.session_absolute_ttl_s < self.session_idle_ttl_s {
            return invalid("session-absolute-ttl-s", "must not be shorter than --session-idle-ttl-s".to_owned());
        }
        self.http.validate()
    }

    /// Settings for a local run against the given backends, parsed from no arguments
    /// (defaults) plus the given overrides; used by tests, the simulator and `dev`.
    pub fn for_local(redis_url: &str, mongo_url: &str, database: &str, key_prefix: &str) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = <Wrapper as clap::Parser>::parse_from(["flashsale"]).config;
        config.redis_url = redis_url.to_owned();
        config.mongo_url = mongo_url.to_owned();
        config.mongo_database = database.to_owned();
        config.key_prefix = key_prefix.to_owned();
        config.cookie_secure = false;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_an_smtp_url_hides_its_password_and_keeps_the_rest() {
        let url: SmtpUrl = "smtps://mailer:s3cr:et@x@smtp.example.com:465/ehlo".parse().expect("smtp url");
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cr") && !shown.contains("et@x"), "{shown}");
        assert_eq!(url.redacted(), "smtps://mailer:<redacted>@smtp.example.com:465/ehlo");
        let plain: SmtpUrl = "smtp://127.0.0.1:2525".parse().expect("smtp url");
        assert_eq!(plain.redacted(), "smtp://127.0.0.1:2525");
    }

    #[test]
    fn a_url_of_another_scheme_is_refused_without_being_quoted() {
        let error = "https://user:hunter2@example.com".parse::<SmtpUrl>().expect_err("not smtp");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn the_default_http_limits_are_valid_and_each_bound_out_of_range_is_named() {
        let config = Config::for_local("redis://r", "mongodb://m", "db", "p");
        config.http.validate().expect("defaults are valid");
        let refused = |adjust: fn(&mut HttpLimits)| {
            let mut limits = config.http.clone();
            adjust(&mut limits);
            limits.validate().expect_err("out of range").flag
        };
        assert_eq!(refused(|l| l.header_read_timeout_ms = 0), "http-header-read-timeout-ms");
        assert_eq!(refused(|l| l.body_read_timeout_ms = 0), "http-body-read-timeout-ms");
        assert_eq!(
            refused(|l| l.keep_alive_idle_timeout_ms = l.header_read_timeout_ms + 1),
            "http-keep-alive-idle-timeout-ms"
        );
        assert_eq!(
            refused(|l| l.write_stall_timeout_ms = l.keep_alive_idle_timeout_ms - 1),
            "http-write-stall-timeout-ms"
        );
        assert_eq!(refused(|l| l.max_connections = 0), "http-max-connections");
        assert_eq!(
            refused(|l| l.max_connections_per_client = l.max_connections + 1),
            "http-max-connections-per-client"
        );
        assert_eq!(refused(|l| l.shutdown_drain_timeout_ms = 0), "http-shutdown-drain-timeout-ms");
        assert_eq!(refused(|l| l.max_head_bytes = 8 * 1024 - 1), "http-max-head-bytes");
        assert_eq!(refused(|l| l.max_head_bytes = 1024 * 1024 + 1), "http-max-head-bytes");
    }

    #[test]
    fn the_defaults_are_valid_and_a_setting_out_of_range_is_refused_by_its_flag() {
        let config = Config::for_local("redis://r", "mongodb://m", "db", "p");
        config.validate().expect("defaults are valid");
        let refused = |adjust: fn(&mut Config)| {
            let mut changed = config.clone();
            adjust(&mut changed);
            changed.validate().expect_err("out of range").flag
        };
        assert_eq!(refused(|c| c.otp_digits = 0), "otp-digits");
        assert_eq!(refused(|c| c.otp_digits = 20), "otp-digits");
        assert_eq!(refused(|c| c.otp_max_attempts = 0), "otp-max-attempts");
        assert_eq!(refused(|c| c.argon2_t = 0), "argon2-t");
        assert_eq!(refused(|c| c.argon2_p = 4096), "argon2-p");
        assert_eq!(refused(|c| (c.argon2_m_kib, c.argon2_p) = (16, 4)), "argon2-m-kib");
        assert_eq!(refused(|c| c.mongo_pool_size = 0), "mongo-pool-size");
        assert_eq!(refused(|c| c.redis_timeout_ms = 0), "redis-timeout-ms");
        assert_eq!(refused(|c| c.max_body_bytes = 0), "max-body-bytes");
        assert_eq!(refused(|c| c.limits.purchase_per_user_per_min = 0), "purchase-per-user-per-min");
        assert_eq!(refused(|c| c.session_absolute_ttl_s = c.session_idle_ttl_s - 1), "session-absolute-ttl-s");
        assert_eq!(refused(|c| c.http.max_connections = 0), "http-max-connections");
    }

    #[test]
    fn the_default_sender_is_a_valid_mailbox() {
        let config = Config::for_local("redis://r", "mongodb://m", "db", "p");
        assert_eq!(config.smtp_from.email.to_string(), "no-reply@localhost");
        assert_eq!(config.smtp_url, None);
        assert_eq!(config.smtp_timeout_ms, 5_000);
    }
}
