//! Tests of the Lua side of the emulation, one per known trap, against the Redis 7.0.15
//! behaviour measured in the project's det-mode brief; and the project's own scripts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use redis::Value;
use uuid::Uuid;

use super::MemoryRedis;
use super::lua::sha1_hex;
use super::tests::{ManualClock, bulk, error_of, q};
use crate::redis::RedisConn;
use crate::redis::keys::Keys;
use crate::redis::scripts::{self, Configured, LoadMode, PurchaseArgs, PurchaseOutcome, SaleSettings, SaleSnapshot};

fn memory() -> MemoryRedis {
    MemoryRedis::new(ManualClock::at(1_000_000))
}

async fn eval(redis: &MemoryRedis, script: &str, keys: &[&str], args: &[&str]) -> Value {
    let numkeys = keys.len().to_string();
    let mut all = vec!["EVAL", script, numkeys.as_str()];
    all.extend_from_slice(keys);
    all.extend_from_slice(args);
    q(redis, &all).await
}

#[tokio::test]
#[cfg_attr(feature = "memory-broken", ignore = "memory-broken rounds Lua numbers on purpose")]
async fn lua_numbers_become_integers_truncated_toward_zero() {
    let redis = memory();
    assert_eq!(eval(&redis, "return 3.99", &[], &[]).await, Value::Int(3));
    assert_eq!(eval(&redis, "return -3.99", &[], &[]).await, Value::Int(-3));
    for overflow in ["return 2^63", "return 1/0", "return -1/0", "return 0/0"] {
        assert_eq!(eval(&redis, overflow, &[], &[]).await, Value::Int(i64::MIN), "{overflow}");
    }
    assert_eq!(eval(&redis, "return true", &[], &[]).await, Value::Int(1));
    assert_eq!(eval(&redis, "return false", &[], &[]).await, Value::Nil);
    assert_eq!(eval(&redis, "return nil", &[], &[]).await, Value::Nil);
}

#[tokio::test]
async fn a_nil_ends_an_array_but_a_false_is_a_nil_element() {
    let redis = memory();
    assert_eq!(eval(&redis, "return {1, nil, 3}", &[], &[]).await, Value::Array(vec![Value::Int(1)]));
    assert_eq!(
        eval(&redis, "return {1, false, 'x'}", &[], &[]).await,
        Value::Array(vec![Value::Int(1), Value::Nil, bulk("x")])
    );
    assert_eq!(eval(&redis, "return {ok = 'fine'}", &[], &[]).await, Value::SimpleString("fine".to_owned()));
    assert_eq!(error_of(&eval(&redis, "return {ok = 'fine', err = 'My error'}", &[], &[]).await), "My error");
    assert_eq!(error_of(&eval(&redis, "return redis.error_reply('boom')", &[], &[]).await), "ERR boom");
    assert_eq!(eval(&redis, "return redis.status_reply('OK')", &[], &[]).await, Value::Okay);
}

#[tokio::test]
async fn a_nil_bulk_reply_is_false_inside_lua_and_numbers_go_out_as_17_digits() {
    let redis = memory();
    assert_eq!(eval(&redis, "return type(redis.call('GET', 'missing'))", &[], &[]).await, bulk("boolean"));
    eval(&redis, "redis.call('SET', KEYS[1], 0.1)", &["k"], &[]).await;
    assert_eq!(q(&redis, &["GET", "k"]).await, bulk("0.10000000000000001"));
    assert_eq!(eval(&redis, "return tostring(1e15)", &[], &[]).await, bulk("1e+15"));
    assert_eq!(eval(&redis, "return redis.call('SET', 'k', 1)", &[], &[]).await, Value::Okay);
    let bad = eval(&redis, "return redis.call('SET', 'k', {})", &[], &[]).await;
    assert!(error_of(&bad).starts_with("ERR Lua redis lib command arguments must be strings or integers"), "{bad:?}");
}

#[tokio::test]
async fn cjson_encodes_as_redis_bundled_lua_cjson() {
    let redis = memory();
    assert_eq!(eval(&redis, "return cjson.encode({})", &[], &[]).await, bulk("{}"));
    assert_eq!(eval(&redis, "return cjson.encode('a/b')", &[], &[]).await, bulk("\"a\\/b\""));
    assert_eq!(eval(&redis, "return cjson.encode({1, 2, nil, 4})", &[], &[]).await, bulk("[1,2,null,4]"));
    assert_eq!(eval(&redis, "return cjson.encode('é')", &[], &[]).await, bulk("\"é\""));
    assert_eq!(eval(&redis, "return cjson.encode(1e15)", &[], &[]).await, bulk("1e+15"));
    assert_eq!(eval(&redis, "return cjson.encode({remaining = 3})", &[], &[]).await, bulk("{\"remaining\":3}"));
    let sparse = eval(&redis, "local t = {} t[20] = 1 return cjson.encode(t)", &[], &[]).await;
    assert!(
        error_of(&sparse).starts_with("ERR user_script:1: Cannot serialise table: excessively sparse array"),
        "{sparse:?}"
    );
    let decoded = eval(
        &redis,
        "local t = cjson.decode('{\"a\":[1,null,\"x\"]}') return {t.a[1], t.a[3], tostring(t.a[2] == cjson.null)}",
        &[],
        &[],
    )
    .await;
    assert_eq!(decoded, Value::Array(vec![Value::Int(1), bulk("x"), bulk("true")]));
    let broken = eval(&redis, "return cjson.decode('{')", &[], &[]).await;
    assert!(
        error_of(&broken).starts_with("ERR user_script:1: Expected object key string but found T_END at character 2"),
        "{broken:?}"
    );
}

#[tokio::test]
async fn writes_before_an_error_stay() {
    let redis = memory();
    q(&redis, &["SET", "text", "abc"]).await;
    let script = "redis.call('SET', KEYS[1], '1')\nreturn redis.call('INCR', KEYS[2])";
    let failed = eval(&redis, script, &["written", "text"], &[]).await;
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(
        error_of(&failed),
        format!("ERR value is not an integer or out of range script: {sha}, on @user_script:2.")
    );
    assert_eq!(q(&redis, &["GET", "written"]).await, bulk("1"));
}

#[tokio::test]
async fn runtime_errors_carry_the_script_position() {
    let redis = memory();
    let script = "local x = 1\nerror('boom')";
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(
        error_of(&eval(&redis, script, &[], &[]).await),
        format!("ERR user_script:2: boom script: {sha}, on @user_script:2.")
    );
    let script = "return redis.call('NOPE')";
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(
        error_of(&eval(&redis, script, &[], &[]).await),
        format!("ERR Unknown Redis command called from script script: {sha}, on @user_script:1.")
    );
    let script = "return nil + 1";
    let failed = error_of(&eval(&redis, script, &[], &[]).await);
    assert!(failed.starts_with("ERR user_script:1: attempt to perform arithmetic on a nil value script: "), "{failed}");
}

#[tokio::test]
async fn errors_raised_in_library_functions_name_the_calling_line_and_function() {
    let redis = memory();
    let cases = [
        ("return cjson.decode()", "ERR user_script:1: bad argument #1 to 'decode' (expected 1 argument)"),
        (
            "local d = cjson.decode\nreturn d(nil)",
            "ERR user_script:2: bad argument #1 to 'd' (string expected, got nil)",
        ),
        ("\n\nreturn cjson.encode(1/0)", "ERR user_script:3: Cannot serialise number: must not be NaN or Inf"),
        ("return bit.band('x')", "ERR user_script:1: bad argument #1 to 'band' (number expected, got string)"),
        ("return math.random(0)", "ERR user_script:1: bad argument #1 to 'random' (interval is empty)"),
    ];
    for (script, expected) in cases {
        let failed = error_of(&eval(&redis, script, &[], &[]).await);
        assert!(failed.starts_with(&format!("{expected} script: ")), "{script}: {failed}");
    }
    // Called from a C function (pcall), there is no position and no name.
    let caught = eval(&redis, "local ok, e = pcall(cjson.decode) return e", &[], &[]).await;
    assert_eq!(caught, bulk("bad argument #1 to '?' (expected 1 argument)"));
}

#[tokio::test]
async fn loadstring_compiles_in_the_protected_environment() {
    let redis = memory();
    assert_eq!(eval(&redis, "return loadstring('return 1 + 1')()", &[], &[]).await, Value::Int(2));
    assert_eq!(eval(&redis, "return loadstring('return KEYS[1]')()", &["k"], &[]).await, bulk("k"));
    let syntax = eval(&redis, "local f, e = loadstring('return (', 'n') return {tostring(f), e}", &[], &[]).await;
    assert_eq!(syntax, Value::Array(vec![bulk("nil"), bulk("[string \"n\"]:1: unexpected symbol near '<eof>'")]));
    let binary = eval(&redis, "local f, e = loadstring('\\27Lua') return e", &[], &[]).await;
    assert_eq!(binary, bulk("[string \"\u{1b}Lua\"]:1: unexpected symbol near 'char(27)'"));
    let write = error_of(&eval(&redis, "loadstring('x = 1')()", &[], &[]).await);
    assert!(write.starts_with("ERR [string \"x = 1\"]:1: Attempt to modify a readonly table script: "), "{write}");
}

#[tokio::test]
async fn globals_are_protected() {
    let redis = memory();
    let script = "x = 1";
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(
        error_of(&eval(&redis, script, &[], &[]).await),
        format!("ERR user_script:1: Attempt to modify a readonly table script: {sha}, on @user_script:1.")
    );
    let script = "return undefined_thing";
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(
        error_of(&eval(&redis, script, &[], &[]).await),
        format!(
            "ERR user_script:1: Script attempted to access nonexistent global variable 'undefined_thing' script: {sha}, on @user_script:1."
        )
    );
    for missing in ["os", "io", "debug", "print"] {
        let reply = eval(&redis, &format!("return type({missing})"), &[], &[]).await;
        assert!(error_of(&reply).contains("nonexistent global variable"), "{missing}: {reply:?}");
    }
    assert_eq!(
        eval(&redis, "local ok = pcall(function() redis = nil end) return tostring(ok)", &[], &[]).await,
        bulk("false")
    );
    assert_eq!(eval(&redis, "return type(redis.call)", &[], &[]).await, bulk("function"));
}

#[tokio::test]
async fn redis_pcall_returns_an_error_table() {
    let redis = memory();
    q(&redis, &["SET", "text", "abc"]).await;
    let reply = eval(&redis, "local r = redis.pcall('INCR', KEYS[1]) return r['err']", &["text"], &[]).await;
    assert_eq!(reply, bulk("ERR value is not an integer or out of range"));
    let reply = eval(&redis, "return redis.pcall('INCR', KEYS[1])", &["text"], &[]).await;
    assert_eq!(error_of(&reply), "ERR value is not an integer or out of range", "returned, so no position suffix");
    let reply = eval(&redis, "local ok, e = pcall(redis.call, 'INCR', KEYS[1]) return e", &["text"], &[]).await;
    assert_eq!(reply, bulk("ERR value is not an integer or out of range"), "Redis's pcall hands back the message");
}

#[tokio::test]
async fn a_script_that_does_not_compile_is_not_cached() {
    let redis = memory();
    let script = "return (";
    let failed = error_of(&eval(&redis, script, &[], &[]).await);
    assert!(failed.starts_with("ERR Error compiling script (new function): user_script:1:"), "{failed}");
    let sha = sha1_hex(script.as_bytes());
    assert_eq!(q(&redis, &["SCRIPT", "EXISTS", &sha]).await, Value::Array(vec![Value::Int(0)]));
    assert_eq!(error_of(&q(&redis, &["EVALSHA", &sha, "0"]).await), "NOSCRIPT No matching script. Please use EVAL.");
}

#[tokio::test]
async fn evalsha_answers_noscript_after_a_restart_and_redis_script_recovers() {
    let redis = memory();
    let mut conn = RedisConn::Memory(redis.clone());
    let script = redis::Script::new("return redis.call('INCR', KEYS[1])");
    let first: i64 = script.key("n").invoke_async(&mut conn).await.unwrap();
    assert_eq!(first, 1);
    let sha = script.get_hash().to_owned();
    assert_eq!(q(&redis, &["EVALSHA", &sha, "1", "n"]).await, Value::Int(2));
    redis.restart();
    assert_eq!(
        error_of(&q(&redis, &["EVALSHA", &sha, "1", "n"]).await),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    let again: i64 = script.key("n").invoke_async(&mut conn).await.unwrap();
    assert_eq!(again, 1, "reloaded, on an empty keyspace");
    redis.flush_scripts();
    assert_eq!(q(&redis, &["SCRIPT", "EXISTS", &sha]).await, Value::Array(vec![Value::Int(0)]));
    assert_eq!(q(&redis, &["GET", "n"]).await, bulk("1"), "flushing scripts keeps keys");
}

#[tokio::test]
async fn math_random_is_rand48_and_not_reset_between_scripts() {
    let redis = memory();
    let first = eval(&redis, "return math.random(1000000)", &[], &[]).await;
    let second = eval(&redis, "return math.random(1000000)", &[], &[]).await;
    assert_ne!(first, second);
    let fresh = memory();
    assert_eq!(eval(&fresh, "return math.random(1000000)", &[], &[]).await, first, "same sequence on a fresh Redis");
    // rand48's first draw from Redis's initial state is 851401618 (glibc agrees).
    let expected = (851_401_618.0 / f64::from(i32::MAX) * 1_000_000.0_f64).floor() as i64 + 1;
    assert_eq!(first, Value::Int(expected));
    assert_eq!(eval(&redis, "return bit.band(0xff, 0x0f) + bit.lshift(1, 4)", &[], &[]).await, Value::Int(31));
    assert_eq!(eval(&redis, "return bit.tohex(-1)", &[], &[]).await, bulk("ffffffff"));
}

fn sale_snapshot(stock: i64) -> SaleSnapshot {
    SaleSnapshot { stock_total: stock, next_unit: 1, one_per_user: true, ..SaleSnapshot::default() }
}

#[tokio::test]
async fn the_purchase_script_runs_end_to_end_through_a_memory_url() {
    let mut conn = RedisConn::connect("memory://tests-lua-purchase", Duration::from_secs(1)).await.unwrap();
    let keys = Keys::new("fs-test");
    let product_id = Uuid::from_u128(1);
    let sale = keys.sale(product_id);
    let channel = keys.events_channel();
    let mut events = conn.subscribe(&channel).await.unwrap();
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Init, &sale_snapshot(1)).await.unwrap());
    let buy = |user: u128, order: u128| PurchaseArgs {
        order_id: Uuid::from_u128(order),
        user_id: Uuid::from_u128(user),
        product_id,
        now_ms: 1_000,
        channel: &channel,
    };
    let reserved = scripts::purchase(&mut conn, &sale, &buy(7, 70)).await.unwrap();
    assert_eq!(reserved, PurchaseOutcome::Reserved { unit: 1, remaining: 0, one_per_user: Some(true) });
    let replay = scripts::purchase(&mut conn, &sale, &buy(7, 70)).await.unwrap();
    assert!(matches!(replay, PurchaseOutcome::Replay { unit: 1, confirmed: false, .. }), "{replay:?}");
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(8, 80)).await.unwrap(), PurchaseOutcome::SoldOut);
    assert!(scripts::confirm(&mut conn, &sale, Uuid::from_u128(70)).await.unwrap());
    let stock = scripts::stock(&mut conn, &sale).await.unwrap().unwrap();
    assert_eq!(stock.remaining(), 0);
    // The script's two PUBLISHes arrive, in order, after it ran.
    let first = String::from_utf8(events.next().await.unwrap()).unwrap();
    let second = String::from_utf8(events.next().await.unwrap()).unwrap();
    assert!(first.contains("\"type\":\"stock_updated\"") && first.contains("\"remaining\":0"), "{first}");
    assert!(second.contains("\"type\":\"sold_out\""), "{second}");
    let lock = scripts::lock(&mut conn, &sale.rebuild_lock, "holder", 5_000).await.unwrap().unwrap();
    let run_id = crate::redis::run_id(&mut conn).await.unwrap();
    assert_eq!(lock, format!("{run_id}:holder"), "lock.lua reads the run id from INFO");
    assert!(scripts::unlock(&mut conn, &sale.rebuild_lock, &lock).await.unwrap());
}

/// A rebuild's load leaves the sale paused: the rebuild read the product before the load,
/// and a change published meanwhile (here a sale closed) must be applied again before
/// any purchase runs on the older settings.
#[tokio::test]
async fn a_rebuilt_sale_stays_paused_until_its_rebuild_resumes_it() {
    let mut conn = RedisConn::connect("memory://tests-lua-resume", Duration::from_secs(1)).await.unwrap();
    let keys = Keys::new("fs-test");
    let product_id = Uuid::from_u128(2);
    let sale = keys.sale(product_id);
    let channel = keys.events_channel();
    let buy = |order: u128, now_ms: i64| PurchaseArgs {
        order_id: Uuid::from_u128(order),
        user_id: Uuid::from_u128(order),
        product_id,
        now_ms,
        channel: &channel,
    };
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Init, &sale_snapshot(5)).await.unwrap());
    let fence = scripts::lock(&mut conn, &sale.rebuild_lock, "rebuilder", 5_000).await.unwrap().unwrap();
    assert!(scripts::pause(&mut conn, &sale, &fence).await.unwrap());
    // The rebuild loads what it read: a sale without an end.
    assert!(
        scripts::load_sale(&mut conn, &sale, LoadMode::Rebuild { fence: &fence }, &sale_snapshot(5)).await.unwrap()
    );
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(1, 2_000)).await.unwrap(), PurchaseOutcome::Paused);
    // Catching up: the sale was closed at 1,000 while the rebuild read MongoDB.
    let closed = SaleSettings { one_per_user: true, starts_at_ms: 0, ends_at_ms: 1_000, revision: 1 };
    assert_eq!(scripts::configure(&mut conn, &sale, closed).await.unwrap(), Configured::Applied);
    assert!(!scripts::resume(&mut conn, &sale, "another-rebuild").await.is_ok_and(|resumed| resumed));
    assert!(scripts::resume(&mut conn, &sale, &fence).await.unwrap());
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(2, 2_000)).await.unwrap(), PurchaseOutcome::Ended);
    assert!(!scripts::stock(&mut conn, &sale).await.unwrap().unwrap().paused);
}

/// A sale's settings never go back to an earlier revision: a live step that read its
/// revision before a later write claimed the next one, or that Redis ran late, changes
/// nothing; a load records the revision it read, and catching up after it applies.
#[tokio::test]
async fn a_sale_never_goes_back_to_the_settings_of_an_earlier_revision() {
    let mut conn = RedisConn::connect("memory://tests-lua-revisions", Duration::from_secs(1)).await.unwrap();
    let keys = Keys::new("fs-test");
    let product_id = Uuid::from_u128(4);
    let sale = keys.sale(product_id);
    let channel = keys.events_channel();
    let buy = |order: u128| PurchaseArgs {
        order_id: Uuid::from_u128(order),
        user_id: Uuid::from_u128(order),
        product_id,
        now_ms: 2_000,
        channel: &channel,
    };
    let settings =
        |ends_at_ms: i64, revision: i64| SaleSettings { one_per_user: true, starts_at_ms: 0, ends_at_ms, revision };
    let loaded = SaleSnapshot { revision: 3, ..sale_snapshot(5) };
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Init, &loaded).await.unwrap());
    // Revision 2 (the sale open) arrives after the load of revision 3: refused.
    assert_eq!(scripts::configure(&mut conn, &sale, settings(0, 2)).await.unwrap(), Configured::LaterRevisionHeld);
    // Revision 4 closes the sale at 1,000; revision 3 (open) retried late changes nothing.
    assert_eq!(scripts::configure(&mut conn, &sale, settings(1_000, 4)).await.unwrap(), Configured::Applied);
    assert_eq!(scripts::configure(&mut conn, &sale, settings(0, 3)).await.unwrap(), Configured::LaterRevisionHeld);
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(1)).await.unwrap(), PurchaseOutcome::Ended);
    // The same revision again applies (a retry of the step that took).
    assert_eq!(scripts::configure(&mut conn, &sale, settings(1_000, 4)).await.unwrap(), Configured::Applied);
    // A rebuild loads what it read (revision 2): its catch-up applies revision 4 again.
    let fence = scripts::lock(&mut conn, &sale.rebuild_lock, "rebuilder", 5_000).await.unwrap().unwrap();
    assert!(scripts::pause(&mut conn, &sale, &fence).await.unwrap());
    let older = SaleSnapshot { revision: 2, ..sale_snapshot(5) };
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Rebuild { fence: &fence }, &older).await.unwrap());
    assert_eq!(scripts::configure(&mut conn, &sale, settings(1_000, 4)).await.unwrap(), Configured::Applied);
    assert!(scripts::resume(&mut conn, &sale, &fence).await.unwrap());
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(2)).await.unwrap(), PurchaseOutcome::Ended);
    // Not loaded: nothing to configure.
    let other = keys.sale(Uuid::from_u128(5));
    assert_eq!(scripts::configure(&mut conn, &other, settings(0, 9)).await.unwrap(), Configured::NotLoaded);
}

/// A deleted product's sale stops taking reservations before it goes, and does not go
/// while one of its reservations is not yet persisted (it may have been answered 202).
#[tokio::test]
async fn a_deleted_sale_is_stopped_then_unloaded_only_once_nothing_is_pending() {
    let mut conn = RedisConn::connect("memory://tests-lua-retire", Duration::from_secs(1)).await.unwrap();
    let keys = Keys::new("fs-test");
    let product_id = Uuid::from_u128(3);
    let sale = keys.sale(product_id);
    let channel = keys.events_channel();
    let buy = |order: u128| PurchaseArgs {
        order_id: Uuid::from_u128(order),
        user_id: Uuid::from_u128(order),
        product_id,
        now_ms: 1_000,
        channel: &channel,
    };
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Init, &sale_snapshot(5)).await.unwrap());
    for order in [1, 2] {
        let reserved = scripts::purchase(&mut conn, &sale, &buy(order)).await.unwrap();
        assert!(matches!(reserved, PurchaseOutcome::Reserved { .. }), "{reserved:?}");
    }
    assert!(scripts::stop(&mut conn, &sale, &channel, product_id).await.unwrap());
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(9)).await.unwrap(), PurchaseOutcome::Paused);
    assert!(!scripts::unload(&mut conn, &sale, &channel, product_id).await.unwrap(), "orders 1 and 2 are pending");
    assert!(scripts::stock(&mut conn, &sale).await.unwrap().is_some(), "the sale state stays");
    // Releases and confirmations still run on a stopped sale (not paused for a rebuild).
    let released = scripts::release(&mut conn, &sale, Uuid::from_u128(2), &channel, product_id).await.unwrap();
    assert!(released.freed && !released.paused, "{released:?}");
    assert!(!scripts::unload(&mut conn, &sale, &channel, product_id).await.unwrap(), "order 1 is still pending");
    assert!(scripts::confirm(&mut conn, &sale, Uuid::from_u128(1)).await.unwrap());
    assert!(scripts::unload(&mut conn, &sale, &channel, product_id).await.unwrap());
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(3)).await.unwrap(), PurchaseOutcome::NotLoaded);
    assert!(!scripts::stop(&mut conn, &sale, &channel, product_id).await.unwrap(), "a tombstone is no sale");
    let tombstone = scripts::load_sale(&mut conn, &sale, LoadMode::Init, &sale_snapshot(5)).await.unwrap();
    assert!(!tombstone, "no load writes over the tombstone");
    // Nor a rebuild's (one that read the product before its deletion), lock held or not.
    let fence = scripts::lock(&mut conn, &sale.rebuild_lock, "rebuilder", 5_000).await.unwrap().unwrap();
    let rebuilt =
        scripts::load_sale(&mut conn, &sale, LoadMode::Rebuild { fence: &fence }, &sale_snapshot(5)).await.unwrap();
    assert!(!rebuilt, "no rebuild writes over the tombstone");
    assert_eq!(scripts::purchase(&mut conn, &sale, &buy(4)).await.unwrap(), PurchaseOutcome::NotLoaded);
}

#[tokio::test]
async fn a_late_restock_never_lowers_the_stock() {
    let mut conn = RedisConn::connect("memory://tests-lua-restock", Duration::from_secs(1)).await.unwrap();
    let keys = Keys::new("fs-test");
    let product_id = Uuid::from_u128(4);
    let sale = keys.sale(product_id);
    let channel = keys.events_channel();
    assert!(scripts::load_sale(&mut conn, &sale, LoadMode::Init, &sale_snapshot(5)).await.unwrap());
    assert_eq!(scripts::restock(&mut conn, &sale, 8, &channel, product_id).await.unwrap(), Some(8));
    // The live step of an earlier restock, run late (or a rebuild announcing the total it
    // loaded before a restock): it reports the stock, and changes nothing.
    assert_eq!(scripts::restock(&mut conn, &sale, 6, &channel, product_id).await.unwrap(), Some(8));
    let stock = scripts::stock(&mut conn, &sale).await.unwrap().unwrap();
    assert_eq!((stock.stock_total, stock.remaining()), (8, 8));
}

#[tokio::test]
async fn an_idempotency_record_is_finished_only_by_the_request_that_holds_it() {
    let mut conn = RedisConn::connect("memory://tests-lua-idempotency", Duration::from_secs(1)).await.unwrap();
    let record = "fs-test:idempotency:user:key";
    let begin = |conn: &mut RedisConn, fingerprint: &'static str| {
        let mut conn = conn.clone();
        async move { scripts::idempotency_begin(&mut conn, record, fingerprint, 1_000, 5_000, 60_000).await.unwrap() }
    };
    assert_eq!(begin(&mut conn, "fp-a").await, scripts::IdempotencyBegin::Started);
    // The record is lost (Redis lost its data) and a request for another product claims
    // the key: the first request's late answer must not become the key's.
    let _: i64 = redis::cmd("DEL").arg(record).query_async(&mut conn).await.unwrap();
    assert_eq!(begin(&mut conn, "fp-b").await, scripts::IdempotencyBegin::Started);
    let done = scripts::IdempotencyEnd::Done { status: 201, body: b"a" };
    assert!(!scripts::idempotency_finish(&mut conn, record, "fp-a", done, 60_000).await.unwrap());
    assert_eq!(begin(&mut conn, "fp-b").await, scripts::IdempotencyBegin::InFlight);
    assert_eq!(begin(&mut conn, "fp-a").await, scripts::IdempotencyBegin::Mismatch);
}
