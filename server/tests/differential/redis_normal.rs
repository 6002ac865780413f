//! Replies and keyspaces in a form both sides can be compared in: unordered replies
//! sorted, errors reduced to what is specified (their code; for script errors the text
//! before ` script: <sha>`), remaining lives compared within a tolerance, stream ids
//! made of the clock and each side's `run_id` replaced by placeholders.

use std::fmt;

use flashsale::redis::RedisConn;
use redis::{RedisError, RedisResult, Value};

use crate::redis_sides::Side;

/// Two remaining lives (ms) further apart than this differ.
pub const TTL_TOLERANCE_MS: i64 = 200;

/// Stream ids whose milliseconds are at least this are made by `*` from the clock.
const CLOCK_ID_MIN_MS: u64 = 1_000_000_000_000;

/// A reply (or a keyspace) as compared.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Normal {
    Nil,
    Int(i64),
    Bytes(String),
    Status(String),
    Array(Vec<Normal>),
    Map(Vec<(Normal, Normal)>),
    /// A server error: its code, or for a script error its text up to ` script: `.
    Error(String),
    /// A remaining life in ms (`PTTL`): -1 and -2 exact, others within the tolerance.
    Ttl(i64),
    /// A stream id that `*` made from the clock.
    ClockId,
    /// An `INFO server` reply: whether it holds a 40-hex-digit `run_id`.
    HasRunId(bool),
    /// Anything else redis-rs can return (RESP3 types), by its `Debug`.
    Other(String),
    /// Not an answer of the backend (I/O, parse, client error): never agrees.
    ClientError(String),
}

impl Normal {
    pub fn agrees_with(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::ClientError(_), _) | (_, Self::ClientError(_)) => false,
            (Self::Ttl(a), Self::Ttl(b)) if *a >= 0 && *b >= 0 => a.abs_diff(*b) <= TTL_TOLERANCE_MS.unsigned_abs(),
            (Self::Array(a), Self::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.agrees_with(b)),
            (Self::Map(a), Self::Map(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka.agrees_with(kb) && va.agrees_with(vb))
            }
            (a, b) => a == b,
        }
    }
}

impl fmt::Debug for Normal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nil => f.write_str("nil"),
            Self::Int(i) => write!(f, "(integer) {i}"),
            Self::Bytes(text) => write!(f, "{text:?}"),
            Self::Status(text) => write!(f, "+{text}"),
            Self::Array(items) => f.debug_list().entries(items).finish(),
            Self::Map(pairs) => f.debug_map().entries(pairs.iter().map(|(k, v)| (k, v))).finish(),
            Self::Error(text) => write!(f, "-{text}"),
            Self::Ttl(ms) => write!(f, "ttl {ms}"),
            Self::ClockId => f.write_str("<clock id>"),
            Self::HasRunId(has) => write!(f, "<INFO, run_id: {has}>"),
            Self::Other(text) => write!(f, "other {text}"),
            Self::ClientError(text) => write!(f, "client error: {text}"),
        }
    }
}

/// How a command's reply is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plain,
    /// SMEMBERS, HKEYS: in hash order, compared as a set.
    Unordered,
    /// HGETALL: field, value, ... in hash order, compared as a map.
    Pairs,
    /// PTTL.
    Ttl,
    /// XADD, XRANGE, XREVRANGE: ids made from the clock are placeholders.
    Stream,
    /// INFO: only whether it has a run_id.
    Info,
    /// idempotency_begin.lua: `{"done", status, body, pttl}` ends with a remaining life.
    IdempotencyBegin,
}

/// The shape of the reply to the command `name`.
pub fn shape_of_command(name: &str) -> Shape {
    match name.to_ascii_uppercase().as_str() {
        "SMEMBERS" | "HKEYS" => Shape::Unordered,
        "HGETALL" => Shape::Pairs,
        "PTTL" => Shape::Ttl,
        "XADD" | "XRANGE" | "XREVRANGE" => Shape::Stream,
        "INFO" => Shape::Info,
        _ => Shape::Plain,
    }
}

/// A reply of the side whose run_id is `run_id`, normalised as `shape` says.
pub fn normalise(shape: Shape, reply: RedisResult<Value>, run_id: &str) -> Normal {
    match reply {
        Ok(value) => normalise_value(shape, value, run_id),
        Err(error) => normalise_error(&error),
    }
}

pub fn normalise_value(shape: Shape, value: Value, run_id: &str) -> Normal {
    if shape == Shape::Info {
        return Normal::HasRunId(info_has_run_id(&value));
    }
    let normal = plain(value, run_id);
    match (shape, normal) {
        (Shape::Unordered, Normal::Array(mut items)) => {
            items.sort();
            Normal::Array(items)
        }
        (Shape::Pairs, Normal::Array(items)) if items.len() % 2 == 0 => {
            let mut pairs: Vec<(Normal, Normal)> =
                items.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            pairs.sort();
            Normal::Map(pairs)
        }
        (Shape::Ttl, Normal::Int(ms)) => Normal::Ttl(ms),
        (Shape::Stream, normal) => clock_ids(normal),
        (Shape::IdempotencyBegin, Normal::Array(mut items))
            if items.len() == 4 && items[0] == Normal::Bytes("done".into()) =>
        {
            if let Normal::Int(ms) = items[3] {
                items[3] = Normal::Ttl(ms);
            }
            Normal::Array(items)
        }
        (_, normal) => normal,
    }
}

fn plain(value: Value, run_id: &str) -> Normal {
    match value {
        Value::Nil => Normal::Nil,
        Value::Int(i) => Normal::Int(i),
        Value::BulkString(bytes) => Normal::Bytes(text_of(&bytes, run_id)),
        Value::SimpleString(text) => Normal::Status(text_of(text.as_bytes(), run_id)),
        Value::Okay => Normal::Status("OK".into()),
        Value::Array(items) => Normal::Array(items.into_iter().map(|item| plain(item, run_id)).collect()),
        Value::Map(pairs) => {
            Normal::Map(pairs.into_iter().map(|(k, v)| (plain(k, run_id), plain(v, run_id))).collect())
        }
        Value::ServerError(error) => Normal::Error(error_class(error.code(), error.details())),
        other => Normal::Other(format!("{other:?}")),
    }
}

/// Text of a string reply, invalid UTF-8 escaped, the side's run_id replaced.
fn text_of(bytes: &[u8], run_id: &str) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    };
    if run_id.is_empty() { text } else { text.replace(run_id, "<run_id>") }
}

fn normalise_error(error: &RedisError) -> Normal {
    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
        return Normal::ClientError(error.to_string());
    }
    match error.code() {
        Some(code) => Normal::Error(error_class(code, error.detail())),
        None => Normal::ClientError(error.to_string()),
    }
}

/// What of an error is compared: the text before ` script: <sha>, on @user_script:1.`
/// for an error raised in a script, the whole text of a compile error (Lua's own
/// words), else the code alone.
pub fn error_class(code: &str, detail: Option<&str>) -> String {
    let message = match detail {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_owned(),
    };
    if let Some(cut) = message.rfind(" script: ") {
        return message[..cut].to_owned();
    }
    if message.starts_with("ERR Error compiling script") {
        return message;
    }
    code.to_owned()
}

fn info_has_run_id(value: &Value) -> bool {
    let text = match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => text.clone(),
        _ => return false,
    };
    text.lines().filter_map(|line| line.strip_prefix("run_id:")).any(|id| {
        let id = id.trim();
        id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn clock_ids(normal: Normal) -> Normal {
    match normal {
        Normal::Bytes(text) if is_clock_id(&text) => Normal::ClockId,
        Normal::Array(items) => Normal::Array(items.into_iter().map(clock_ids).collect()),
        other => other,
    }
}

fn is_clock_id(text: &str) -> bool {
    let Some((ms, seq)) = text.split_once('-') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ms) && digits(seq) && ms.parse::<u64>().is_ok_and(|ms| ms >= CLOCK_ID_MIN_MS)
}

/// The whole keyspace: a map of key to `[type, remaining life, value]`, read with
/// `KEYS *` and two pipelines (types and lives, then values by type).
pub async fn dump(side: &mut Side) -> Normal {
    match try_dump(&mut side.conn, &side.run_id).await {
        Ok(normal) => normal,
        Err(error) => Normal::ClientError(format!("reading the keyspace: {error}")),
    }
}

async fn try_dump(conn: &mut RedisConn, run_id: &str) -> RedisResult<Normal> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(conn).await?;
    keys.sort();
    if keys.is_empty() {
        return Ok(Normal::Map(Vec::new()));
    }
    let mut kinds_and_lives = redis::pipe();
    for key in &keys {
        kinds_and_lives.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
    }
    let kinds_and_lives: Vec<Value> = kinds_and_lives.query_async(conn).await?;
    let mut values = redis::pipe();
    let mut kinds = Vec::with_capacity(keys.len());
    for (key, pair) in keys.iter().zip(kinds_and_lives.chunks_exact(2)) {
        let kind = match &pair[0] {
            Value::SimpleString(kind) => kind.clone(),
            Value::BulkString(kind) => String::from_utf8_lossy(kind).into_owned(),
            other => format!("{other:?}"),
        };
        let (name, extra): (&str, &[&str]) = match kind.as_str() {
            "string" => ("GET", &[]),
            "hash" => ("HGETALL", &[]),
            "set" => ("SMEMBERS", &[]),
            "zset" => ("ZRANGE", &["0", "-1", "WITHSCORES"]),
            "stream" => ("XRANGE", &["-", "+"]),
            "list" => ("LRANGE", &["0", "-1"]),
            _ => ("EXISTS", &[]),
        };
        values.cmd(name).arg(key).arg(extra);
        kinds.push((kind, name));
    }
    let values: Vec<Value> = values.query_async(conn).await?;
    let entries = keys
        .iter()
        .zip(kinds)
        .zip(kinds_and_lives.chunks_exact(2))
        .zip(values)
        .map(|(((key, (kind, command)), pair), value)| {
            let life = normalise_value(Shape::Ttl, pair[1].clone(), run_id);
            let value = normalise_value(shape_of_command(command), value, run_id);
            (Normal::Bytes(text_of(key, run_id)), Normal::Array(vec![Normal::Status(kind), life, value]))
        })
        .collect();
    Ok(Normal::Map(entries))
}
