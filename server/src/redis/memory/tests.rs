//! Tests of the emulation: commands, expiry, pipelines, faults and pub/sub, driven
//! through redis-rs as the server drives a real Redis.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::{AsyncCommands, Cmd, Value};

use super::MemoryRedis;
use crate::clock::Clock;
use crate::redis::RedisConn;

/// A clock the test moves by hand.
#[derive(Debug, Default)]
pub(super) struct ManualClock(AtomicI64);

impl ManualClock {
    pub(super) fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }

    pub(super) fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub(super) fn cmd(args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

pub(super) async fn q(redis: &MemoryRedis, args: &[&str]) -> Value {
    redis.query(&cmd(args)).await.unwrap()
}

pub(super) fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// The text of an error reply, code first.
pub(super) fn error_of(value: &Value) -> String {
    match value {
        Value::ServerError(error) => super::error::error_text(error),
        other => panic!("not an error: {other:?}"),
    }
}

fn memory() -> (MemoryRedis, Arc<ManualClock>) {
    let clock = ManualClock::at(1_000_000);
    (MemoryRedis::new(clock.clone()), clock)
}

#[tokio::test]
async fn strings_set_get_and_refuse_the_wrong_type() {
    let (redis, _) = memory();
    assert_eq!(q(&redis, &["SET", "k", "v"]).await, Value::Okay);
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("v"));
    assert_eq!(q(&redis, &["GET", "missing"]).await, Value::Nil);
    assert_eq!(q(&redis, &["SET", "k", "w", "NX"]).await, Value::Nil);
    assert_eq!(q(&redis, &["SET", "k", "w", "XX", "GET"]).await, bulk("v"));
    let wrong = q(&redis, &["HSET", "k", "f", "v"]).await;
    assert_eq!(error_of(&wrong), "WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(error_of(&q(&redis, &["INCR", "k"]).await), "ERR value is not an integer or out of range");
    assert_eq!(q(&redis, &["INCRBY", "n", "5"]).await, Value::Int(5));
    assert_eq!(
        error_of(&q(&redis, &["INCRBY", "n", "9223372036854775807"]).await),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(error_of(&q(&redis, &["SET", "k", "v", "EX", "0"]).await), "ERR invalid expire time in 'set' command");
    assert_eq!(error_of(&q(&redis, &["SET", "k", "v", "NX", "XX"]).await), "ERR syntax error");
}

#[tokio::test]
async fn unknown_commands_and_wrong_arities_answer_with_redis_texts() {
    let (redis, _) = memory();
    assert_eq!(error_of(&q(&redis, &["GET"]).await), "ERR wrong number of arguments for 'get' command");
    assert_eq!(
        error_of(&q(&redis, &["NOPE", "x"]).await),
        "ERR unknown command 'NOPE', with args beginning with: 'x' "
    );
    assert_eq!(error_of(&q(&redis, &["CONFIG", "NOPE"]).await), "ERR unknown subcommand 'NOPE'. Try CONFIG HELP.");
}

#[tokio::test]
async fn keys_expire_on_the_injected_clock() {
    let (redis, clock) = memory();
    q(&redis, &["SET", "k", "v", "PX", "100"]).await;
    assert_eq!(q(&redis, &["PTTL", "k"]).await, Value::Int(100));
    clock.advance(100);
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("v"), "alive at its deadline");
    clock.advance(1);
    assert_eq!(q(&redis, &["GET", "k"]).await, Value::Nil);
    assert_eq!(q(&redis, &["PTTL", "k"]).await, Value::Int(-2));
    q(&redis, &["HSET", "h", "f", "v"]).await;
    assert_eq!(q(&redis, &["TTL", "h"]).await, Value::Int(-1));
    assert_eq!(q(&redis, &["EXPIRE", "h", "10"]).await, Value::Int(1));
    assert_eq!(q(&redis, &["EXPIRE", "h", "5", "GT"]).await, Value::Int(0));
    assert_eq!(q(&redis, &["PEXPIRE", "h", "20000", "GT"]).await, Value::Int(1));
    clock.advance(1_499);
    assert_eq!(q(&redis, &["TTL", "h"]).await, Value::Int(19), "rounded to the nearest second");
    assert_eq!(q(&redis, &["PEXPIRE", "h", "-1"]).await, Value::Int(1), "a past deadline deletes");
    assert_eq!(q(&redis, &["EXISTS", "h"]).await, Value::Int(0));
}

#[tokio::test]
async fn hashes_sets_and_sorted_sets_behave_as_in_redis() {
    let (redis, _) = memory();
    assert_eq!(q(&redis, &["HSET", "h", "a", "1", "b", "2"]).await, Value::Int(2));
    assert_eq!(q(&redis, &["HMGET", "h", "a", "zz"]).await, Value::Array(vec![bulk("1"), Value::Nil]));
    assert_eq!(q(&redis, &["HINCRBY", "h", "a", "-3"]).await, Value::Int(-2));
    assert_eq!(error_of(&q(&redis, &["HINCRBY", "h", "a", "x"]).await), "ERR value is not an integer or out of range");
    assert_eq!(q(&redis, &["HDEL", "h", "a", "b"]).await, Value::Int(2));
    assert_eq!(q(&redis, &["EXISTS", "h"]).await, Value::Int(0), "an emptied hash is deleted");
    assert_eq!(q(&redis, &["SADD", "s", "x", "y", "x"]).await, Value::Int(2));
    assert_eq!(q(&redis, &["SISMEMBER", "s", "y"]).await, Value::Int(1));
    assert_eq!(q(&redis, &["ZADD", "z", "3", "c", "1", "a", "2", "b"]).await, Value::Int(3));
    assert_eq!(q(&redis, &["ZRANGE", "z", "0", "0"]).await, Value::Array(vec![bulk("a")]));
    assert_eq!(q(&redis, &["ZSCORE", "z", "b"]).await, bulk("2"));
    assert_eq!(
        q(&redis, &["ZRANGEBYSCORE", "z", "-inf", "(3", "LIMIT", "0", "1", "WITHSCORES"]).await,
        Value::Array(vec![bulk("a"), bulk("1")])
    );
    assert_eq!(q(&redis, &["ZADD", "z", "0.1", "d"]).await, Value::Int(1));
    assert_eq!(q(&redis, &["ZSCORE", "z", "d"]).await, bulk("0.10000000000000001"), "%.17g as in 7.0");
    assert_eq!(q(&redis, &["ZREVRANGE", "z", "0", "1"]).await, Value::Array(vec![bulk("c"), bulk("b")]));
    assert_eq!(error_of(&q(&redis, &["ZADD", "z", "x", "e"]).await), "ERR value is not a valid float");
    assert_eq!(q(&redis, &["ZADD", "z", "0x10", "hex"]).await, Value::Int(1), "strtod reads hexadecimal");
    assert_eq!(q(&redis, &["ZRANGEBYSCORE", "z", "(0x8", "+inf"]).await, Value::Array(vec![bulk("hex")]));
    assert_eq!(q(&redis, &["TYPE", "z"]).await, Value::SimpleString("zset".to_owned()));
}

#[tokio::test]
async fn stream_ids_come_from_the_clock_and_maxlen_trims() {
    let (redis, clock) = memory();
    let first = q(&redis, &["XADD", "s", "*", "f", "1"]).await;
    assert_eq!(first, bulk("1000000-0"));
    assert_eq!(q(&redis, &["XADD", "s", "*", "f", "2"]).await, bulk("1000000-1"), "same ms: next sequence");
    clock.advance(5);
    assert_eq!(q(&redis, &["XADD", "s", "MAXLEN", "=", "2", "*", "f", "3"]).await, bulk("1000005-0"));
    assert_eq!(q(&redis, &["XLEN", "s"]).await, Value::Int(2));
    let newest = q(&redis, &["XREVRANGE", "s", "+", "-", "COUNT", "1"]).await;
    let entry = Value::Array(vec![bulk("1000005-0"), Value::Array(vec![bulk("f"), bulk("3")])]);
    assert_eq!(newest, Value::Array(vec![entry]));
    for _ in 0..250 {
        q(&redis, &["XADD", "t", "MAXLEN", "~", "120", "*", "f", "x"]).await;
    }
    // Whole nodes of 100 entries go: 250 → 150 (one node of 100 removed).
    assert_eq!(q(&redis, &["XLEN", "t"]).await, Value::Int(150));
    assert_eq!(
        error_of(&q(&redis, &["XADD", "s", "1-1", "f", "v"]).await),
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    );
    // An id refused before the stream is looked up leaves no key behind.
    for id in ["0-0", "0", "x", "+"] {
        assert!(error_of(&q(&redis, &["XADD", "new", id, "f", "v"]).await).starts_with("ERR "), "{id}");
    }
    assert_eq!(q(&redis, &["EXISTS", "new"]).await, Value::Int(0));
    assert_eq!(q(&redis, &["XADD", "new", "0-*", "f", "v"]).await, bulk("0-1"));
}

#[tokio::test]
async fn keys_matches_globs_and_flushall_empties_the_keyspace() {
    let (redis, _) = memory();
    for key in ["fs:a", "fs:b", "other"] {
        q(&redis, &["SET", key, "1"]).await;
    }
    assert_eq!(q(&redis, &["KEYS", "fs:*"]).await, Value::Array(vec![bulk("fs:a"), bulk("fs:b")]));
    assert_eq!(q(&redis, &["DBSIZE"]).await, Value::Int(3));
    assert_eq!(q(&redis, &["FLUSHALL"]).await, Value::Okay);
    assert_eq!(q(&redis, &["DBSIZE"]).await, Value::Int(0));
    assert_eq!(q(&redis, &["PING"]).await, Value::SimpleString("PONG".to_owned()));
}

#[tokio::test]
async fn the_same_memory_url_reaches_the_same_keyspace() {
    let timeout = Duration::from_secs(1);
    let mut a = RedisConn::connect("memory://tests-shared-url", timeout).await.unwrap();
    let mut b = RedisConn::connect("memory://tests-shared-url", timeout).await.unwrap();
    let mut other = RedisConn::connect("memory://tests-other-url", timeout).await.unwrap();
    let () = a.set("k", "v").await.unwrap();
    let seen: Option<String> = b.get("k").await.unwrap();
    assert_eq!(seen.as_deref(), Some("v"));
    let unseen: Option<String> = other.get("k").await.unwrap();
    assert_eq!(unseen, None);
    assert!(!a.is_cluster());
    assert!(RedisConn::connect("memory://", timeout).await.is_err());
}

#[tokio::test]
async fn pipelines_answer_as_redis_rs_expects_atomic_or_not() {
    let mut conn = RedisConn::Memory(MemoryRedis::new(ManualClock::at(0)));
    let () = redis::pipe()
        .atomic()
        .del("otp")
        .ignore()
        .hset_multiple("otp", &[("code", "1"), ("attempts", "0")])
        .ignore()
        .pexpire("otp", 60_000)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let (attempts, code, missing): (i64, Option<String>, Option<String>) = redis::pipe()
        .atomic()
        .hincr("otp", "attempts", 1)
        .hget("otp", "code")
        .hget("otp", "nope")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((attempts, code.as_deref(), missing), (1, Some("1"), None));
    let (a, b): (i64, i64) =
        redis::pipe().cmd("HDEL").arg("otp").arg("code").cmd("PTTL").arg("otp").query_async(&mut conn).await.unwrap();
    assert_eq!((a, b), (1, 60_000));
    let aborted: redis::RedisResult<()> = redis::pipe().atomic().cmd("NOPE").query_async(&mut conn).await;
    assert_eq!(aborted.unwrap_err().code(), Some("EXECABORT"));
    let failed: redis::RedisResult<(i64, i64)> =
        redis::pipe().atomic().cmd("INCR").arg("n").cmd("HGET").arg("n").arg("f").query_async(&mut conn).await;
    assert!(failed.is_err(), "a runtime error inside EXEC surfaces");
    let n: i64 = conn.get("n").await.unwrap();
    assert_eq!(n, 1, "the other commands of the transaction applied");
}

#[tokio::test]
async fn info_and_config_answer_what_the_server_checks_at_startup() {
    let redis = MemoryRedis::with_seed(ManualClock::at(0), 42);
    let mut conn = RedisConn::Memory(redis.clone());
    assert_eq!(crate::redis::eviction_policies(&mut conn).await.unwrap(), vec!["noeviction".to_owned()]);
    let run_id = crate::redis::run_id(&mut conn).await.unwrap();
    assert_eq!(run_id, redis.run_id());
    assert_eq!(run_id, MemoryRedis::with_seed(ManualClock::at(0), 42).run_id(), "the seed decides it");
    let info: String = cmd(&["INFO", "server"]).query_async(&mut conn).await.unwrap();
    assert!(info.contains("redis_version:7.0.15\r\n"), "{info}");
    let () = cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]).query_async(&mut conn).await.unwrap();
    assert_eq!(crate::redis::eviction_policies(&mut conn).await.unwrap(), vec!["allkeys-lru".to_owned()]);
    redis.restart();
    assert_ne!(crate::redis::run_id(&mut conn).await.unwrap(), run_id);
    assert_eq!(crate::redis::eviction_policies(&mut conn).await.unwrap(), vec!["noeviction".to_owned()]);
}

#[tokio::test]
async fn refused_commands_fail_like_a_dead_connection_and_do_not_apply() {
    let (redis, _) = memory();
    redis.refuse_connections();
    let error = redis.query(&cmd(&["SET", "k", "v"])).await.unwrap_err();
    assert!(error.is_io_error() && error.is_connection_refusal(), "{error:?}");
    MemoryRedis::register("tests-refusing", &redis);
    assert!(RedisConn::connect("memory://tests-refusing", Duration::from_secs(1)).await.is_err());
    MemoryRedis::unregister("tests-refusing");
    redis.heal();
    assert_eq!(q(&redis, &["EXISTS", "k"]).await, Value::Int(0));
}

#[tokio::test]
async fn lost_replies_apply_all_the_same() {
    let (redis, _) = memory();
    redis.lose_replies();
    let error = redis.query(&cmd(&["SET", "k", "v"])).await.unwrap_err();
    assert!(error.is_io_error() && error.is_connection_dropped(), "{error:?}");
    redis.heal();
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("v"));
}

#[tokio::test]
async fn hung_commands_time_out_then_apply_in_order_once_healed() {
    let (redis, _) = memory();
    redis.hang();
    let impatient = redis.with_response_timeout(Some(Duration::from_millis(20)));
    let error = impatient.query(&cmd(&["SET", "k", "1"])).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    let patient = redis.clone();
    let waiting = tokio::spawn(async move { patient.query(&cmd(&["INCR", "k"])).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    redis.heal();
    assert_eq!(waiting.await.unwrap().unwrap(), Value::Int(2), "the timed-out SET applied first");
    redis.delay_commands(Duration::from_millis(5));
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("2"));
    assert_eq!(redis.faults().delay, Some(Duration::from_millis(5)));
    redis.heal();
    assert_eq!(redis.faults(), super::Faults::default());
}

#[tokio::test]
async fn commands_a_hang_held_never_apply_once_the_process_is_killed() {
    let (redis, _) = memory();
    redis.hang();
    let patient = redis.clone();
    let waiting = tokio::spawn(async move { patient.query(&cmd(&["SET", "k", "v"])).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    redis.refuse_connections();
    let error = waiting.await.unwrap().unwrap_err();
    assert!(error.is_io_error() && error.is_connection_dropped(), "{error:?}");
    redis.heal();
    assert_eq!(q(&redis, &["EXISTS", "k"]).await, Value::Int(0), "the held SET applied after the kill");
}

#[tokio::test]
async fn a_restart_loses_every_key_and_disconnects_subscribers() {
    let (redis, _) = memory();
    let conn = RedisConn::Memory(redis.clone());
    let mut payloads = conn.subscribe("events").await.unwrap();
    q(&redis, &["SET", "k", "v"]).await;
    assert_eq!(q(&redis, &["PUBLISH", "events", "one"]).await, Value::Int(1));
    assert_eq!(payloads.next().await, Some(b"one".to_vec()));
    let before = redis.run_id();
    redis.restart();
    assert_eq!(payloads.next().await, None, "the subscription ends");
    assert_ne!(redis.run_id(), before);
    assert_eq!(q(&redis, &["DBSIZE"]).await, Value::Int(0));
    redis.refuse_connections();
    assert!(conn.subscribe("events").await.is_err());
}

/// A restart with persistence is still a new process: a new run id (locks of the earlier
/// run are stale), subscribers disconnected, the script cache empty; only the keys stay.
#[tokio::test]
async fn a_restart_from_data_keeps_the_keys_and_nothing_else() {
    let (redis, _) = memory();
    let conn = RedisConn::Memory(redis.clone());
    let mut payloads = conn.subscribe("events").await.unwrap();
    q(&redis, &["SET", "k", "v"]).await;
    let sha = match q(&redis, &["SCRIPT", "LOAD", "return 1"]).await {
        Value::BulkString(sha) => String::from_utf8(sha).unwrap(),
        other => panic!("{other:?}"),
    };
    let before = redis.run_id();
    redis.restart_from_data();
    assert_eq!(payloads.next().await, None, "the subscription ends");
    assert_ne!(redis.run_id(), before);
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("v"), "the keys came back");
    assert_eq!(q(&redis, &["SCRIPT", "EXISTS", &sha]).await, Value::Array(vec![Value::Int(0)]));
}

#[tokio::test(start_paused = true)]
async fn a_slow_links_commands_arrive_late_in_order_even_when_their_caller_gave_up() {
    let (redis, _) = memory();
    let linked = redis.with_link().with_response_timeout(Some(Duration::from_millis(100)));
    linked.slow_link(Duration::from_millis(500));
    let sent = tokio::time::Instant::now();
    let error = linked.query(&cmd(&["SET", "k", "late"])).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(sent.elapsed(), Duration::from_millis(100), "the caller gave up at its timeout");
    // Another client's command, sent later, arrives first.
    assert_eq!(q(&redis, &["SET", "k", "early"]).await, Value::Okay);
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("early"));
    // Healed while the SET is still on the link: a command sent now waits behind it.
    linked.heal_link();
    let patient = linked.with_response_timeout(None);
    assert_eq!(patient.query(&cmd(&["APPEND", "k", "+"])).await.unwrap(), Value::Int(5));
    assert_eq!(sent.elapsed(), Duration::from_millis(500), "it arrived right after the late SET");
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("late+"), "the late SET applied, then the APPEND");
    // Fast again, and other handles of the same Redis never went through the link.
    let now = tokio::time::Instant::now();
    assert_eq!(patient.query(&cmd(&["GET", "k"])).await.unwrap(), bulk("late+"));
    assert_eq!(now.elapsed(), Duration::ZERO);
    redis.slow_link(Duration::from_secs(1));
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("late+"), "a handle without a link is never slowed");
    assert_eq!(now.elapsed(), Duration::ZERO);
}
