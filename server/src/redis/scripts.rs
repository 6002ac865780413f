//! One typed function per Lua script in `lua/`. Replies are parsed into enums here, so
//! no caller compares strings returned by Redis.

use std::sync::LazyLock;

use anyhow::{Context, anyhow, bail};
use redis::{Script, Value};
use uuid::Uuid;

use super::RedisConn;
use super::keys::SaleKeys;

macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!(concat!("../../../lua/", $file))));
    };
}

script!(PURCHASE, "purchase.lua");
script!(CONFIRM, "confirm.lua");
script!(RELEASE, "release.lua");
script!(STOCK, "stock.lua");
script!(LOAD_SALE, "load_sale.lua");
script!(PAUSE, "pause.lua");
script!(RESTOCK, "restock.lua");
script!(CONFIGURE, "configure.lua");
script!(UNLOAD, "unload.lua");
script!(RATE_LIMIT, "rate_limit.lua");
script!(IDEMPOTENCY_BEGIN, "idempotency_begin.lua");
script!(IDEMPOTENCY_FINISH, "idempotency_finish.lua");
script!(OTP_VERIFY, "otp_verify.lua");

// Deliberately broken copies of purchase.lua (see `crate::broken`).
#[cfg(feature = "broken")]
script!(PURCHASE_OVERSELL, "broken/purchase_oversell.lua");
#[cfg(feature = "broken")]
script!(PURCHASE_DOUBLE_BUY, "broken/purchase_double_buy.lua");
#[cfg(feature = "broken")]
script!(PURCHASE_PREMATURE_SOLD_OUT, "broken/purchase_premature_sold_out.lua");
#[cfg(feature = "broken")]
script!(PURCHASE_STOCK_EVENT_OFF_BY_ONE, "broken/purchase_stock_event_off_by_one.lua");

/// The source of the purchase script (for benchmarks that run it raw).
pub const PURCHASE_SOURCE: &str = include_str!("../../../lua/purchase.lua");

/// What the purchase script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// `one_per_user`: whether the rule held when the unit was taken (it decides the
    /// order's buyer slot; `None` from a script that does not say).
    Reserved {
        unit: i64,
        remaining: i64,
        one_per_user: Option<bool>,
    },
    Replay {
        unit: i64,
        confirmed: bool,
        user_id: String,
    },
    Released,
    SoldOut,
    AlreadyPurchased,
    NotStarted,
    Ended,
    NotLoaded,
    Paused,
}

/// Arguments of one purchase attempt.
#[derive(Debug, Clone)]
pub struct PurchaseArgs<'a> {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub now_ms: i64,
    pub channel: &'a str,
}

fn items(value: Value) -> anyhow::Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => bail!("expected an array reply, got {other:?}"),
    }
}

fn text(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => bail!("expected a string, got {other:?}"),
    }
}

fn int(value: &Value) -> anyhow::Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)?.parse().context("integer reply"),
        other => bail!("expected an integer, got {other:?}"),
    }
}

fn item(items: &[Value], index: usize) -> anyhow::Result<&Value> {
    items.get(index).ok_or_else(|| anyhow!("reply too short: no item {index}"))
}

pub async fn purchase(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    args: &PurchaseArgs<'_>,
) -> anyhow::Result<PurchaseOutcome> {
    run_purchase(&PURCHASE, conn, keys, args).await
}

/// [`purchase`] as a broken variant runs it: its own copy of the script for
/// [`Broken::Oversell`], [`Broken::DoubleBuy`], [`Broken::PrematureSoldOut`] and
/// [`Broken::StockEventOffByOne`], the normal script for every other variant.
///
/// [`Broken::Oversell`]: crate::broken::Broken::Oversell
/// [`Broken::DoubleBuy`]: crate::broken::Broken::DoubleBuy
/// [`Broken::PrematureSoldOut`]: crate::broken::Broken::PrematureSoldOut
/// [`Broken::StockEventOffByOne`]: crate::broken::Broken::StockEventOffByOne
#[cfg(feature = "broken")]
pub async fn purchase_broken(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    args: &PurchaseArgs<'_>,
    broken: crate::broken::Broken,
) -> anyhow::Result<PurchaseOutcome> {
    use crate::broken::Broken;
    let script = match broken {
        Broken::Oversell => &PURCHASE_OVERSELL,
        Broken::DoubleBuy => &PURCHASE_DOUBLE_BUY,
        Broken::PrematureSoldOut => &PURCHASE_PREMATURE_SOLD_OUT,
        Broken::StockEventOffByOne => &PURCHASE_STOCK_EVENT_OFF_BY_ONE,
        Broken::NewOrderOnReplay
        | Broken::DropPending
        | Broken::Phantom
        | Broken::GroupCommitAcksFailures
        | Broken::ReplayAcrossUsers
        | Broken::StockOffByOne
        | Broken::AckBeforeWrite
        | Broken::RebuildForgetsReleased
        | Broken::PendingAfterVanished
        | Broken::ReconcilerConfirmsReleased
        | Broken::RebuildsAtOnce
        | Broken::SettingsGoBack => &PURCHASE,
    };
    run_purchase(script, conn, keys, args).await
}

async fn run_purchase(
    script: &Script,
    conn: &mut RedisConn,
    keys: &SaleKeys,
    args: &PurchaseArgs<'_>,
) -> anyhow::Result<PurchaseOutcome> {
    let reply: Value = script
        .key(&keys.script_keys()[..])
        .arg(args.order_id.to_string())
        .arg(args.user_id.to_string())
        .arg(args.now_ms)
        .arg(args.channel)
        .arg(args.product_id.to_string())
        .invoke_async(conn)
        .await
        .context("purchase script")?;
    parse_purchase(reply)
}

/// A reservation's recorded one-per-user rule: "1" or "0" (anything else names none).
pub fn rule_flag(rule: &str) -> Option<bool> {
    match rule {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

pub fn parse_purchase(reply: Value) -> anyhow::Result<PurchaseOutcome> {
    let items = items(reply)?;
    let tag = text(item(&items, 0)?)?;
    Ok(match tag.as_str() {
        "reserved" => PurchaseOutcome::Reserved {
            unit: int(item(&items, 1)?)?,
            remaining: int(item(&items, 2)?)?,
            one_per_user: items.get(3).and_then(|rule| text(rule).ok()).and_then(|rule| rule_flag(&rule)),
        },
        "replay" => PurchaseOutcome::Replay {
            unit: int(item(&items, 1)?)?,
            confirmed: text(item(&items, 2)?)? == "C",
            user_id: text(item(&items, 3)?)?,
        },
        "released" => PurchaseOutcome::Released,
        "sold_out" => PurchaseOutcome::SoldOut,
        "already_purchased" => PurchaseOutcome::AlreadyPurchased,
        "not_started" => PurchaseOutcome::NotStarted,
        "ended" => PurchaseOutcome::Ended,
        "not_loaded" => PurchaseOutcome::NotLoaded,
        "paused" => PurchaseOutcome::Paused,
        other => bail!("unknown purchase outcome {other:?}"),
    })
}

/// Marks a reservation persisted; `false` if Redis holds no such reservation.
pub async fn confirm(conn: &mut RedisConn, keys: &SaleKeys, order_id: Uuid) -> anyhow::Result<bool> {
    let confirmed = confirm_many(conn, keys, "", &[(order_id, None)]).await?;
    Ok(confirmed.first().copied().unwrap_or(false))
}

/// Most orders one confirmation call carries: a group commit's orders of one product
/// are confirmed in calls of at most this many.
pub const MAX_CONFIRMED_PER_CALL: usize = 256;

/// Marks several reservations of one sale persisted in one call, publishing on `channel`
/// each order's event where it has one; per order, whether Redis held its reservation.
pub async fn confirm_many(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    channel: &str,
    orders: &[(Uuid, Option<String>)],
) -> anyhow::Result<Vec<bool>> {
    let mut confirmed = Vec::with_capacity(orders.len());
    for chunk in orders.chunks(MAX_CONFIRMED_PER_CALL) {
        let mut invocation = CONFIRM.key(&keys.script_keys()[..]);
        invocation.arg(channel);
        for (order_id, event) in chunk {
            invocation.arg(order_id.to_string()).arg(event.as_deref().unwrap_or(""));
        }
        let reply: Vec<i64> = invocation.invoke_async(conn).await.context("confirm script")?;
        if reply.len() != chunk.len() {
            bail!("confirm script answered {} orders for {}", reply.len(), chunk.len());
        }
        confirmed.extend(reply.into_iter().map(|done| done == 1));
    }
    Ok(confirmed)
}

/// Result of a release: whether a reservation was freed, the units left (None if the
/// sale is not loaded or paused), and whether the sale was paused (nothing changed: a
/// rebuild is replacing the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub freed: bool,
    pub remaining: Option<i64>,
    pub paused: bool,
}

impl Released {
    /// Whether the sale state this release ran on is the one that stays: loaded and not
    /// being rebuilt. A rebuild that read MongoDB before the order was released may load
    /// it back as held; only a release after that load is final.
    pub fn on_settled_state(&self) -> bool {
        self.remaining.is_some() && !self.paused
    }
}

pub async fn release(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    order_id: Uuid,
    channel: &str,
    product_id: Uuid,
) -> anyhow::Result<Released> {
    let reply: Value = RELEASE
        .key(&keys.script_keys()[..])
        .arg(order_id.to_string())
        .arg(channel)
        .arg(product_id.to_string())
        .invoke_async(conn)
        .await
        .context("release script")?;
    let items = items(reply)?;
    let (released, remaining) = (int(item(&items, 0)?)?, int(item(&items, 1)?)?);
    Ok(Released { freed: released == 1, remaining: (remaining >= 0).then_some(remaining), paused: released == -1 })
}

/// A product's live sale state as Redis holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockState {
    pub stock_total: i64,
    pub next_unit: i64,
    pub free_count: i64,
    pub paused: bool,
    pub one_per_user: bool,
    /// Reservations waiting for a fresh unit (`SaleKeys::reissue`).
    pub reissue_waiting: i64,
}

impl StockState {
    /// Units that can still be sold: the returned ones plus the never issued ones.
    pub fn remaining(&self) -> i64 {
        self.free_count + (self.stock_total - self.next_unit + 1).max(0)
    }
}

pub async fn stock(conn: &mut RedisConn, keys: &SaleKeys) -> anyhow::Result<Option<StockState>> {
    let reply: Value =
        STOCK.key(&keys.sale).key(&keys.free).key(&keys.reissue).invoke_async(conn).await.context("stock script")?;
    let items = items(reply)?;
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(StockState {
        stock_total: int(item(&items, 0)?)?,
        next_unit: int(item(&items, 1)?)?,
        free_count: int(item(&items, 2)?)?,
        paused: int(item(&items, 3)?)? == 1,
        one_per_user: int(item(&items, 4)?)? == 1,
        reissue_waiting: int(item(&items, 5)?)?,
    }))
}

/// A product's whole sale state, as the load script writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleSnapshot {
    pub stock_total: i64,
    pub next_unit: i64,
    pub one_per_user: bool,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    /// The product revision the settings (window, rule) are from: see [`configure`].
    pub revision: i64,
    pub free_units: Vec<i64>,
    /// (user id, live orders)
    pub buyers: Vec<(String, i64)>,
    /// (order id, record "user|unit|at|C")
    pub orders: Vec<(String, String)>,
    pub tombstones: Vec<String>,
}

/// How the load script treats an existing sale state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode<'a> {
    /// Write only if no sale state exists.
    Init,
    /// Replace whatever exists, if the caller still holds the rebuild lock: `fence` is
    /// the lock's value returned by [`lock`].
    Rebuild { fence: &'a str },
}

pub async fn load_sale(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    mode: LoadMode<'_>,
    snapshot: &SaleSnapshot,
) -> anyhow::Result<bool> {
    let mut invocation = LOAD_SALE.key(&keys.script_keys()[..]);
    let (name, fence) = match mode {
        LoadMode::Init => ("init", ""),
        LoadMode::Rebuild { fence } => ("rebuild", fence),
    };
    invocation
        .key(&keys.rebuild_lock)
        .arg(name)
        .arg(fence)
        .arg(snapshot.stock_total)
        .arg(snapshot.next_unit)
        .arg(i64::from(snapshot.one_per_user))
        .arg(snapshot.starts_at_ms)
        .arg(snapshot.ends_at_ms)
        .arg(snapshot.revision)
        .arg(snapshot.free_units.len())
        .arg(&snapshot.free_units)
        .arg(snapshot.buyers.len());
    for (user, count) in &snapshot.buyers {
        invocation.arg(user).arg(count);
    }
    invocation.arg(snapshot.orders.len());
    for (order, record) in &snapshot.orders {
        invocation.arg(order).arg(record);
    }
    invocation.arg(snapshot.tombstones.len()).arg(&snapshot.tombstones);
    // 0: an init found a sale state already, or the product's tombstone (deleted).
    let written: i64 = invocation.invoke_async(conn).await.context("load_sale script")?;
    if written < 0 {
        anyhow::bail!("the rebuild lock was taken over before the sale state was written");
    }
    Ok(written == 1)
}

/// Pauses a sale for a rebuild holding the lock with `fence` (its value from [`lock`]).
pub async fn pause(conn: &mut RedisConn, keys: &SaleKeys, fence: &str) -> anyhow::Result<bool> {
    let paused: i64 =
        PAUSE.key(&keys.sale).key(&keys.rebuild_lock).arg(fence).invoke_async(conn).await.context("pause script")?;
    if paused < 0 {
        anyhow::bail!("the rebuild lock was taken over before the sale was paused");
    }
    Ok(paused == 1)
}

/// Resumes a sale a rebuild holding the lock with `fence` loaded (it stays paused until
/// the rebuild has applied every later product revision): false if no sale is loaded.
pub async fn resume(conn: &mut RedisConn, keys: &SaleKeys, fence: &str) -> anyhow::Result<bool> {
    let resumed: i64 = PAUSE
        .key(&keys.sale)
        .key(&keys.rebuild_lock)
        .arg(fence)
        .arg("resume")
        .invoke_async(conn)
        .await
        .context("pause script (resume)")?;
    if resumed < 0 {
        anyhow::bail!("the rebuild lock was taken over before the sale was resumed");
    }
    Ok(resumed == 1)
}

/// Raises the stock total; returns the units remaining, or None if not loaded.
pub async fn restock(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    stock_total: i64,
    channel: &str,
    product_id: Uuid,
) -> anyhow::Result<Option<i64>> {
    let remaining: i64 = RESTOCK
        .key(&keys.sale)
        .key(&keys.free)
        .arg(stock_total)
        .arg(channel)
        .arg(product_id.to_string())
        .invoke_async(conn)
        .await
        .context("restock script")?;
    Ok((remaining >= 0).then_some(remaining))
}

/// A product revision's sale settings, as `configure.lua` applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleSettings {
    pub one_per_user: bool,
    /// 0: open from the start.
    pub starts_at_ms: i64,
    /// 0: never ends.
    pub ends_at_ms: i64,
    /// The revision they are from.
    pub revision: i64,
}

/// What `configure.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configured {
    Applied,
    /// No sale state: the next load reads the product.
    NotLoaded,
    /// The sale holds the settings of a later revision, which stay (settings never go
    /// back: a late or stale live step changes nothing).
    LaterRevisionHeld,
}

pub async fn configure(conn: &mut RedisConn, keys: &SaleKeys, settings: SaleSettings) -> anyhow::Result<Configured> {
    let outcome: i64 = CONFIGURE
        .key(&keys.sale)
        .arg(i64::from(settings.one_per_user))
        .arg(settings.starts_at_ms)
        .arg(settings.ends_at_ms)
        .arg(settings.revision)
        .invoke_async(conn)
        .await
        .context("configure script")?;
    match outcome {
        1 => Ok(Configured::Applied),
        0 => Ok(Configured::NotLoaded),
        2 => Ok(Configured::LaterRevisionHeld),
        other => anyhow::bail!("configure script: unexpected answer {other}"),
    }
}

/// Removes a deleted product's sale state, leaves its tombstone and publishes
/// `product_deleted` (see `lua/unload.lua`): false, and nothing removed, while one of
/// its reservations is not yet persisted.
pub async fn unload(conn: &mut RedisConn, keys: &SaleKeys, channel: &str, product_id: Uuid) -> anyhow::Result<bool> {
    unload_script(conn, keys, channel, product_id, None).await
}

/// Stops a deleted product's sale taking reservations before it is unloaded (see
/// `lua/unload.lua`): false if no sale is loaded.
pub async fn stop(conn: &mut RedisConn, keys: &SaleKeys, channel: &str, product_id: Uuid) -> anyhow::Result<bool> {
    unload_script(conn, keys, channel, product_id, Some("stop")).await
}

async fn unload_script(
    conn: &mut RedisConn,
    keys: &SaleKeys,
    channel: &str,
    product_id: Uuid,
    mode: Option<&str>,
) -> anyhow::Result<bool> {
    let mut invocation = UNLOAD.key(&keys.script_keys()[..]);
    invocation.arg(channel).arg(product_id.to_string());
    if let Some(mode) = mode {
        invocation.arg(mode);
    }
    let done: i64 = invocation.invoke_async(conn).await.context("unload script")?;
    Ok(done == 1)
}

/// The decision of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub remaining: i64,
    pub retry_after_ms: i64,
    pub reset_ms: i64,
}

pub async fn rate_limit(
    conn: &mut RedisConn,
    key: &str,
    now_ms: i64,
    window_ms: i64,
    limit: u32,
) -> anyhow::Result<RateDecision> {
    let reply: Value = RATE_LIMIT
        .key(key)
        .arg(now_ms)
        .arg(window_ms)
        .arg(limit)
        .invoke_async(conn)
        .await
        .context("rate_limit script")?;
    let items = items(reply)?;
    Ok(RateDecision {
        allowed: int(item(&items, 0)?)? == 1,
        remaining: int(item(&items, 1)?)?,
        retry_after_ms: int(item(&items, 2)?)?,
        reset_ms: int(item(&items, 3)?)?,
    })
}

/// What the idempotency record says about a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    Started,
    Mismatch,
    InFlight,
    /// The stored answer, and the record's remaining life (ms; negative if it has no expiry).
    Done {
        status: u16,
        body: Vec<u8>,
        ttl_ms: i64,
    },
}

pub async fn idempotency_begin(
    conn: &mut RedisConn,
    key: &str,
    fingerprint: &str,
    now_ms: i64,
    lease_ms: u64,
    ttl_ms: u64,
) -> anyhow::Result<IdempotencyBegin> {
    let reply: Value = IDEMPOTENCY_BEGIN
        .key(key)
        .arg(fingerprint)
        .arg(now_ms)
        .arg(lease_ms)
        .arg(ttl_ms)
        .invoke_async(conn)
        .await
        .context("idempotency_begin script")?;
    let items = items(reply)?;
    Ok(match text(item(&items, 0)?)?.as_str() {
        "started" => IdempotencyBegin::Started,
        "mismatch" => IdempotencyBegin::Mismatch,
        "in_flight" => IdempotencyBegin::InFlight,
        "done" => {
            let status = u16::try_from(int(item(&items, 1)?)?).context("stored status")?;
            let body = match item(&items, 2)? {
                Value::BulkString(bytes) => bytes.clone(),
                other => bail!("stored body is not a string: {other:?}"),
            };
            let ttl_ms = int(item(&items, 3)?)?;
            IdempotencyBegin::Done { status, body, ttl_ms }
        }
        other => bail!("unknown idempotency outcome {other:?}"),
    })
}

/// How a request that held an idempotency record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyEnd<'a> {
    /// Store this answer; retries replay it byte for byte.
    Done { status: u16, body: &'a [u8] },
    /// No answer stored; the key stays bound to this request's fingerprint.
    Open,
}

pub async fn idempotency_finish(
    conn: &mut RedisConn,
    key: &str,
    fingerprint: &str,
    end: IdempotencyEnd<'_>,
    ttl_ms: u64,
) -> anyhow::Result<bool> {
    let mut invocation = IDEMPOTENCY_FINISH.key(key);
    invocation.arg(fingerprint);
    match end {
        IdempotencyEnd::Done { status, body } => invocation.arg("done").arg(status).arg(body),
        IdempotencyEnd::Open => invocation.arg("open").arg(0).arg(""),
    };
    let written: i64 = invocation.arg(ttl_ms).invoke_async(conn).await.context("idempotency_finish script")?;
    Ok(written == 1)
}

/// What the one-time-code script decided about one submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpVerifyOutcome {
    /// The code and the session matched; the code is consumed. Of concurrent
    /// submissions of the right code, exactly one gets this.
    Verified,
    /// A miss, counted; `attempts_left` more are allowed (0: the code is dead).
    Wrong { attempts_left: i64 },
    /// No live code for this submission: never issued, expired, already used, dead after
    /// too many misses, or replaced since its salt was read. Nothing is counted.
    NoCode,
}

/// A submitted code, hashed as the record stores it.
#[derive(Debug, Clone, Copy)]
pub struct OtpSubmission<'a> {
    /// The salt the hash was computed with (read from the record).
    pub salt: &'a str,
    /// Salted SHA-256 of the submitted code.
    pub code_hash: &'a str,
    /// SHA-256 of the submitting session's id.
    pub session_tag: &'a str,
    /// Attempts allowed per code.
    pub max_attempts: u32,
}

/// Checks and consumes a one-time code in one step (`lua/otp_verify.lua`); `key` is the
/// user's code record, [`Keys::otp`](super::keys::Keys::otp).
pub async fn otp_verify(
    conn: &mut RedisConn,
    key: &str,
    submission: &OtpSubmission<'_>,
) -> anyhow::Result<OtpVerifyOutcome> {
    let reply: Value = OTP_VERIFY
        .key(key)
        .arg(submission.salt)
        .arg(submission.code_hash)
        .arg(submission.session_tag)
        .arg(submission.max_attempts.max(1))
        .invoke_async(conn)
        .await
        .context("otp_verify script")?;
    parse_otp_verify(reply)
}

pub fn parse_otp_verify(reply: Value) -> anyhow::Result<OtpVerifyOutcome> {
    let items = items(reply)?;
    Ok(match text(item(&items, 0)?)?.as_str() {
        "verified" => OtpVerifyOutcome::Verified,
        "wrong" => OtpVerifyOutcome::Wrong { attempts_left: int(item(&items, 1)?)? },
        "none" => OtpVerifyOutcome::NoCode,
        other => bail!("unknown otp_verify outcome {other:?}"),
    })
}

script!(LOCK, "lock.lua");
script!(UNLOCK, "unlock.lua");

/// Takes a lock with a lease (or one left by an earlier run of this Redis). Returns
/// the lock's value if this holder now owns it: the fencing token that [`unlock`] and
/// the fenced scripts take.
pub async fn lock(conn: &mut RedisConn, key: &str, token: &str, lease_ms: u64) -> anyhow::Result<Option<String>> {
    LOCK.key(key).arg(token).arg(lease_ms.max(1)).invoke_async(conn).await.context("lock script")
}

/// Releases a lock this holder owns (a lost lease is not released by mistake);
/// `fence` is the value [`lock`] returned.
pub async fn unlock(conn: &mut RedisConn, key: &str, fence: &str) -> anyhow::Result<bool> {
    let released: i64 = UNLOCK.key(key).arg(fence).invoke_async(conn).await.context("unlock script")?;
    Ok(released == 1)
}
