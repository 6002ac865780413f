//! Generators of Redis steps. Arguments come from small pools, so steps collide: a few
//! keys sharing the hash tag `{p:1}` (the scripts' KEYS overlap, and a hash command
//! meets a string key), small integers, the numbers whose formatting differs between
//! implementations (0.1, 3.99, -3.99, 1e15), empty strings, non-ASCII text and `/`.
//! Each pool lists its simplest value first: proptest shrinks towards it.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::redis_ops::{Arg, Command, LuaFile, Step, texts};

pub const STRING_KEY: &str = "{p:1}:s";
pub const SALE: &str = "{p:1}:sale";
pub const FREE: &str = "{p:1}:free";
pub const BUYERS: &str = "{p:1}:buyers";
pub const ORDERS: &str = "{p:1}:orders";
pub const PENDING: &str = "{p:1}:pending";
pub const TOMBSTONES: &str = "{p:1}:tomb";
pub const LOCK: &str = "{p:1}:rebuild_lock";
pub const REISSUE: &str = "{p:1}:reissue";
pub const RATE: &str = "{p:1}:rl";
pub const IDEMPOTENCY: &str = "{p:1}:idem";
pub const OUTBOX: &str = "{p:1}:outbox";
pub const OTP: &str = "{p:1}:otp";
const ODD_KEY: &str = "{p:1}:é/ü";

const KEYS: &[&str] = &[
    STRING_KEY,
    SALE,
    FREE,
    BUYERS,
    ORDERS,
    PENDING,
    TOMBSTONES,
    LOCK,
    RATE,
    IDEMPOTENCY,
    OUTBOX,
    OTP,
    REISSUE,
    ODD_KEY,
];
const SALE_KEYS: [&str; 6] = [SALE, FREE, BUYERS, ORDERS, PENDING, TOMBSTONES];

const VALUES: &[&str] = &[
    "1",
    "0",
    "",
    "2",
    "-1",
    "x",
    "0.1",
    "3.99",
    "-3.99",
    "1e15",
    "10",
    "é",
    "/",
    "u1|1|5|R",
    "u2|2|7|C",
    "9223372036854775807",
    "inf",
    "nan",
    " 7 ",
    "0x10",
];
const FIELDS: &[&str] =
    &["f", "stock_total", "next_unit", "paused", "one_per_user", "fp", "state", "u1", "o1", "", "é"];
const SCORES: &[&str] = &["1", "0", "2", "0.1", "3.99", "-3.99", "1e15", "-inf", "+inf", "nan", "x"];
const INCREMENTS: &[&str] = &["1", "-1", "5", "0.1", "x", "9223372036854775807"];
/// Lives long enough that no key expires while a sequence runs (a step is far
/// shorter than the smallest), plus the invalid ones.
const PX_MS: &[&str] = &["100000", "3600000", "0", "-5", "x"];
const EX_S: &[&str] = &["3600", "10", "0"];
const PEXPIRE_MS: &[&str] = &["100000", "86400000", "0", "-1", "9223372036854775807", "x"];
const STREAM_IDS: &[&str] = &["*", "1-1", "1-2", "2", "0-0", "x"];

const ORDER_IDS: &[&str] = &["o1", "o2", "o3"];
const USERS: &[&str] = &["u1", "u2"];
const NOW_MS: &[&str] = &["5", "0", "100", "1000000", "3.99", "x"];
const TOKENS: &[&str] = &["t1", "t2"];
const COUNTS: &[&str] = &["1", "2", "0", "-1"];
const UNITS: &[&str] = &["1", "2", "3", "0.1"];
const RECORDS: &[&str] = &["u1|1|5|C", "u2|2|7|C", "u1|3|9|R", "garbage"];
const TOTALS: &[&str] = &["3", "0", "1", "5", "3.99", "x"];
const STARTS_MS: &[&str] = &["0", "5", "1000"];
const ENDS_MS: &[&str] = &["0", "50", "1000000"];
/// Product revisions of a sale's settings: equal, earlier and later than each other, and
/// one that is not a number.
const REVISIONS: &[&str] = &["0", "1", "2", "x"];
const WINDOWS_MS: &[&str] = &["60000", "3600000"];
const LIMITS: &[&str] = &["3", "1", "10", "0", "x"];
const LEASES_MS: &[&str] = &["30000", "600000", "0", "x"];
const RECORD_TTLS_MS: &[&str] = &["600000", "0", "-1", "x"];
/// Fields of a one-time code record (`otp_verify.lua`): few values, so they often match.
const OTP_SALTS: &[&str] = &["s1", "s2"];
const OTP_HASHES: &[&str] = &["h1", "h2"];
const OTP_SESSIONS: &[&str] = &["t1", "t2"];
const OTP_ATTEMPTS: &[&str] = &["0", "2", "4", "5", "x", "0.5"];
const OTP_MAX_ATTEMPTS: &[&str] = &["5", "1", "3", "0", "3.99", "x"];

macro_rules! lua_files {
    ($($file:literal),* $(,)?) => {
        /// Every script in `lua/` (not `lua/broken/`).
        pub static LUA_FILES: &[LuaFile] =
            &[$(LuaFile { name: $file, source: include_str!(concat!("../../../lua/", $file)) }),*];
    };
}

lua_files!(
    "purchase.lua",
    "confirm.lua",
    "release.lua",
    "stock.lua",
    "load_sale.lua",
    "pause.lua",
    "restock.lua",
    "configure.lua",
    "unload.lua",
    "rate_limit.lua",
    "idempotency_begin.lua",
    "idempotency_finish.lua",
    "lock.lua",
    "unlock.lua",
    "otp_verify.lua",
);

pub fn lua_file(name: &str) -> &'static LuaFile {
    LUA_FILES.iter().find(|file| file.name == name).unwrap_or_else(|| panic!("no script {name} in lua/"))
}

/// Scripts run with EVAL, EVALSHA and SCRIPT LOAD: the Lua semantics the emulation
/// must match (numbers, nil holes, errors, globals, cjson), over the pools' keys.
pub const EVAL_BODIES: &[&str] = &[
    "return redis.call('GET', KEYS[1])",
    "return tonumber(ARGV[1])",
    "return tostring(tonumber(ARGV[1]))",
    "return {tonumber(ARGV[1]), ARGV[1], tonumber(ARGV[2])}",
    "redis.call('SET', KEYS[1], tonumber(ARGV[1]) or ARGV[1]) return redis.call('GET', KEYS[1])",
    "return cjson.encode({ARGV[1], tonumber(ARGV[1]) or false, {}})",
    "return redis.pcall('HGET', KEYS[1], ARGV[1])",
    "return type(redis.call('GET', KEYS[1]))",
    "local t = redis.call('HGETALL', KEYS[1]) table.sort(t) return t",
    "local t = redis.call('SMEMBERS', KEYS[1]) table.sort(t) return t",
    "return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')",
    "return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])",
    "return {err = ARGV[1]}",
    "return {ok = ARGV[1]}",
    "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('HSET', KEYS[1], 'f', ARGV[2])",
    "counter = 1",
    "return undefined_global",
    "return (",
    "return redis.call('PTTL', KEYS[1]) > 0",
    "return {1, nil, 3}",
    "return {1, false, {false, 2}}",
    "return tonumber(ARGV[1]) * 1.5",
    "return redis.call('EXISTS', KEYS[1], KEYS[2])",
    "return cjson.decode(ARGV[1])",
];

fn pick(pool: &'static [&'static str]) -> BoxedStrategy<Arg> {
    select(pool).prop_map(Arg::from).boxed()
}

fn key() -> BoxedStrategy<Arg> {
    pick(KEYS)
}

fn value() -> BoxedStrategy<Arg> {
    pick(VALUES)
}

fn field() -> BoxedStrategy<Arg> {
    pick(FIELDS)
}

/// A step of a random sequence.
pub fn step() -> BoxedStrategy<Step> {
    prop_oneof![
        10 => key_and_string_command().prop_map(Step::Command),
        6 => hash_command().prop_map(Step::Command),
        5 => set_zset_stream_command().prop_map(Step::Command),
        12 => project_script(),
        4 => eval_step(),
        2 => pipeline(),
        1 => script_cache_step(),
    ]
    .boxed()
}

fn key_and_string_command() -> BoxedStrategy<Command> {
    let expiry = prop_oneof![
        Just(Vec::new()),
        pick(PX_MS).prop_map(|ms| vec![Arg::from("PX"), ms]),
        pick(EX_S).prop_map(|s| vec![Arg::from("EX"), s]),
    ];
    prop_oneof![
        key().prop_map(|k| Command::new("GET").arg(k)),
        (key(), value(), expiry, any::<bool>()).prop_map(|(k, v, expiry, nx)| {
            let set = Command::new("SET").arg(k).arg(v).args(expiry);
            if nx { set.arg("NX") } else { set }
        }),
        vec(key(), 1..=3).prop_map(|keys| Command::new("DEL").args(keys)),
        vec(key(), 1..=3).prop_map(|keys| Command::new("EXISTS").args(keys)),
        (key(), pick(PEXPIRE_MS)).prop_map(|(k, ms)| Command::new("PEXPIRE").arg(k).arg(ms)),
        key().prop_map(|k| Command::new("PTTL").arg(k)),
        (pick(&["ch", "é"]), value()).prop_map(|(channel, message)| Command::new("PUBLISH").arg(channel).arg(message)),
        Just(Command::new("PING")),
        Just(Command::new("INFO").arg("server")),
        Just(Command::new("CONFIG").arg("GET").arg("maxmemory-policy")),
    ]
    .boxed()
}

fn hash_command() -> BoxedStrategy<Command> {
    prop_oneof![
        (key(), field()).prop_map(|(k, f)| Command::new("HGET").arg(k).arg(f)),
        (key(), vec((field(), value()), 1..=3))
            .prop_map(|(k, pairs)| { Command::new("HSET").arg(k).args(pairs.into_iter().flat_map(|(f, v)| [f, v])) }),
        (key(), vec(field(), 1..=3)).prop_map(|(k, fields)| Command::new("HMGET").arg(k).args(fields)),
        (key(), vec(field(), 1..=3)).prop_map(|(k, fields)| Command::new("HDEL").arg(k).args(fields)),
        key().prop_map(|k| Command::new("HKEYS").arg(k)),
        key().prop_map(|k| Command::new("HGETALL").arg(k)),
        (key(), field(), pick(INCREMENTS)).prop_map(|(k, f, n)| Command::new("HINCRBY").arg(k).arg(f).arg(n)),
    ]
    .boxed()
}

fn set_zset_stream_command() -> BoxedStrategy<Command> {
    let ranks = select(&[("0", "0"), ("0", "-1"), ("1", "2"), ("-2", "-1")][..]);
    let xadd_trim = prop_oneof![Just(Vec::new()), Just(texts(&["MAXLEN", "~", "1000"])), Just(texts(&["MAXLEN", "1"]))];
    prop_oneof![
        (key(), vec(value(), 1..=3)).prop_map(|(k, members)| Command::new("SADD").arg(k).args(members)),
        (key(), value()).prop_map(|(k, m)| Command::new("SISMEMBER").arg(k).arg(m)),
        key().prop_map(|k| Command::new("SMEMBERS").arg(k)),
        (key(), pick(SCORES), value()).prop_map(|(k, s, m)| Command::new("ZADD").arg(k).arg(s).arg(m)),
        (key(), vec(value(), 1..=2)).prop_map(|(k, members)| Command::new("ZREM").arg(k).args(members)),
        key().prop_map(|k| Command::new("ZCARD").arg(k)),
        (key(), ranks, any::<bool>()).prop_map(|(k, (start, stop), scores)| {
            let range = Command::new("ZRANGE").arg(k).arg(start).arg(stop);
            if scores { range.arg("WITHSCORES") } else { range }
        }),
        (key(), pick(&["-inf", "0", "(1"]), pick(&["+inf", "5", "3.99", "x"]), pick(&["10", "1"])).prop_map(
            |(k, min, max, count)| Command::new("ZRANGEBYSCORE")
                .arg(k)
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg("0")
                .arg(count)
        ),
        (key(), xadd_trim, pick(STREAM_IDS), vec((field(), value()), 1..=2)).prop_map(|(k, trim, id, pairs)| {
            Command::new("XADD").arg(k).args(trim).arg(id).args(pairs.into_iter().flat_map(|(f, v)| [f, v]))
        }),
        (key(), pick(&["1", "10"])).prop_map(|(k, n)| Command::new("XREVRANGE")
            .arg(k)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n)),
    ]
    .boxed()
}

/// Keys of a project script: the ones the server passes, or now and then others of the
/// same count (a wrong type reaches the script).
fn script_keys(canonical: &'static [&'static str]) -> BoxedStrategy<Vec<Arg>> {
    prop_oneof![6 => Just(texts(canonical)), 1 => vec(key(), canonical.len())].boxed()
}

/// A lock value: this side's (as lock.lua returns it) or a plain string.
fn fence() -> BoxedStrategy<Arg> {
    prop_oneof![select(TOKENS).prop_map(Arg::Fence), pick(&["", "t1"])].boxed()
}

fn script(name: &'static str, keys: &'static [&'static str], args: BoxedStrategy<Vec<Arg>>) -> BoxedStrategy<Step> {
    let file = lua_file(name);
    (script_keys(keys), args).prop_map(move |(keys, args)| Step::Script { file, keys, args }).boxed()
}

/// `args`, or now and then arguments of the wrong count and kind. Not for the scripts
/// that set a key's life from their arguments (lock, rate_limit, idempotency_*): a
/// life of a few ms would end during one side's step and not the other's.
fn or_odd(args: impl Strategy<Value = Vec<Arg>> + 'static) -> BoxedStrategy<Vec<Arg>> {
    prop_oneof![9 => args, 1 => vec(value(), 0..=4)].boxed()
}

fn project_script() -> BoxedStrategy<Step> {
    let sale = &SALE_KEYS[..];
    let event = |args: Vec<Arg>| [args, texts(&["ch", "p1"])].concat();
    let purchase = (pick(ORDER_IDS), pick(USERS), pick(NOW_MS)).prop_map(move |(o, u, now)| event(vec![o, u, now]));
    // The events channel, then (order, event or '') pairs: a group commit's orders of one sale.
    let confirm = vec((pick(ORDER_IDS), pick(&["", "e1"])), 1..=3).prop_map(|orders| {
        let mut args = texts(&["ch"]);
        for (order, event) in orders {
            args.extend([order, event]);
        }
        args
    });
    let release = pick(ORDER_IDS).prop_map(move |order| event(vec![order]));
    let restock = pick(TOTALS).prop_map(move |total| event(vec![total]));
    let configure = (pick(&["0", "1"]), pick(STARTS_MS), pick(ENDS_MS), pick(REVISIONS))
        .prop_map(|(one, s, e, revision)| vec![one, s, e, revision]);
    let fenced = || fence().prop_map(|fence| vec![fence]);
    let resumed = || fence().prop_map(|fence| vec![fence, Arg::from("resume")]);
    let rate = (pick(NOW_MS), pick(WINDOWS_MS), pick(LIMITS)).prop_map(|(now, w, limit)| vec![now, w, limit]);
    let fingerprint = || pick(&["f1", "f2"]);
    let begin = (fingerprint(), pick(NOW_MS), pick(LEASES_MS), pick(RECORD_TTLS_MS))
        .prop_map(|(fp, now, lease, ttl)| vec![fp, now, lease, ttl]);
    let body = || pick(&["", "{}", "é/"]);
    let finish = (fingerprint(), pick(&["done", "open"]), pick(&["200", "409"]), body(), pick(RECORD_TTLS_MS))
        .prop_map(|(fp, state, status, body, ttl)| vec![fp, state, status, body, ttl]);
    let lock = (pick(TOKENS), pick(LEASES_MS)).prop_map(|(token, lease)| vec![token, lease]);
    prop_oneof![
        6 => script("purchase.lua", sale, or_odd(purchase)),
        2 => script("confirm.lua", sale, or_odd(confirm)),
        3 => script("release.lua", sale, or_odd(release)),
        1 => script("stock.lua", &[SALE, FREE, REISSUE], or_odd(Just(Vec::new()))),
        3 => load_sale(),
        1 => script("pause.lua", &[SALE, LOCK], or_odd(fenced())),
        1 => script("pause.lua", &[SALE, LOCK], or_odd(resumed())),
        1 => script("restock.lua", &[SALE, FREE], or_odd(restock)),
        1 => script("configure.lua", &[SALE], or_odd(configure)),
        1 => script("unload.lua", sale, or_odd(Just(event(Vec::new())))),
        1 => script("unload.lua", sale, or_odd(Just(texts(&["ch", "p1", "stop"])))),
        2 => script("rate_limit.lua", &[RATE], rate.boxed()),
        2 => script("idempotency_begin.lua", &[IDEMPOTENCY], begin.boxed()),
        2 => script("idempotency_finish.lua", &[IDEMPOTENCY], finish.boxed()),
        2 => script("lock.lua", &[LOCK], lock.boxed()),
        1 => script("unlock.lua", &[LOCK], or_odd(fenced())),
        2 => otp_verify(),
    ]
    .boxed()
}

/// `otp_verify.lua`, or now and then a code record written as `otp::issue` writes it
/// (`MULTI`: `DEL`, `HSET`, `PEXPIRE`), so that verifications find one to check.
fn otp_verify() -> BoxedStrategy<Step> {
    let issue = (pick(OTP_SALTS), pick(OTP_HASHES), pick(OTP_SESSIONS), pick(OTP_ATTEMPTS)).prop_map(
        |(salt, hash, session, attempts)| {
            let record = Command::new("HSET")
                .arg(OTP)
                .arg("code_hash")
                .arg(hash)
                .arg("salt")
                .arg(salt)
                .arg("attempts")
                .arg(attempts)
                .arg("session")
                .arg(session)
                .arg("created_at_ms")
                .arg("5");
            let commands = vec![Command::new("DEL").arg(OTP), record, Command::new("PEXPIRE").arg(OTP).arg("100000")];
            Step::Pipeline { atomic: true, commands }
        },
    );
    let args = (pick(OTP_SALTS), pick(OTP_HASHES), pick(OTP_SESSIONS), pick(OTP_MAX_ATTEMPTS))
        .prop_map(|(salt, hash, session, max)| vec![salt, hash, session, max]);
    prop_oneof![1 => issue, 2 => script("otp_verify.lua", &[OTP], or_odd(args))].boxed()
}

fn load_sale() -> BoxedStrategy<Step> {
    let head = (pick(&["init", "rebuild", "other"]), fence(), pick(TOTALS), pick(&["1", "2", "4"]), pick(&["0", "1"]));
    let window = (pick(STARTS_MS), pick(ENDS_MS), pick(REVISIONS));
    let lists = (
        vec(pick(UNITS), 0..=2),
        vec((pick(USERS), pick(COUNTS)), 0..=2),
        vec((pick(ORDER_IDS), pick(RECORDS)), 0..=2),
        vec(pick(ORDER_IDS), 0..=2),
    );
    let args = (head, window, lists).prop_map(
        |((mode, fence, total, next, one), (starts, ends, revision), (free, buyers, orders, tombs))| {
            let mut args = vec![mode, fence, total, next, one, starts, ends, revision];
            args.push(free.len().into());
            args.extend(free);
            args.push(buyers.len().into());
            args.extend(buyers.into_iter().flat_map(|(user, count)| [user, count]));
            args.push(orders.len().into());
            args.extend(orders.into_iter().flat_map(|(order, record)| [order, record]));
            args.push(tombs.len().into());
            args.extend(tombs);
            args
        },
    );
    const LOAD_KEYS: &[&str] = &[SALE, FREE, BUYERS, ORDERS, PENDING, TOMBSTONES, LOCK];
    script("load_sale.lua", LOAD_KEYS, or_odd(args))
}

/// Half the sequences start with a sale loaded (`load_sale.lua` init with stock, no
/// buyers), so purchases and releases get past "not_loaded" often.
pub fn prelude() -> BoxedStrategy<Vec<Step>> {
    let load = (pick(&["3", "1", "5"]), pick(&["0", "1"])).prop_map(|(total, one_per_user)| {
        let mut args = texts(&["init", ""]);
        args.extend([total, Arg::from("1"), one_per_user]);
        args.extend(texts(&["0", "0", "1", "0", "0", "0", "0"]));
        let keys = texts(&[SALE, FREE, BUYERS, ORDERS, PENDING, TOMBSTONES, LOCK]);
        vec![Step::Script { file: lua_file("load_sale.lua"), keys, args }]
    });
    prop_oneof![Just(Vec::new()), load].boxed()
}

fn eval_args() -> impl Strategy<Value = (&'static str, Vec<Arg>, Vec<Arg>)> {
    (select(EVAL_BODIES), vec(key(), 1..=2), vec(value(), 0..=2))
}

fn eval_step() -> BoxedStrategy<Step> {
    eval_args().prop_map(|(body, keys, args)| Step::Eval { body, keys, args }).boxed()
}

fn script_cache_step() -> BoxedStrategy<Step> {
    prop_oneof![
        select(EVAL_BODIES).prop_map(Step::ScriptLoad),
        eval_args().prop_map(|(body, keys, args)| Step::EvalSha { body, keys, args }),
        Just(Step::ScriptFlush),
    ]
    .boxed()
}

/// What the server sends in pipelines: writes and plain reads, in or out of MULTI.
fn pipeline() -> BoxedStrategy<Step> {
    let command = prop_oneof![
        (key(), vec((field(), value()), 1..=2))
            .prop_map(|(k, pairs)| Command::new("HSET").arg(k).args(pairs.into_iter().flat_map(|(f, v)| [f, v]))),
        (key(), field()).prop_map(|(k, f)| Command::new("HINCRBY").arg(k).arg(f).arg("1")),
        (key(), field()).prop_map(|(k, f)| Command::new("HGET").arg(k).arg(f)),
        (key(), field()).prop_map(|(k, f)| Command::new("HDEL").arg(k).arg(f)),
        (key(), value()).prop_map(|(k, m)| Command::new("ZREM").arg(k).arg(m)),
        key().prop_map(|k| Command::new("DEL").arg(k)),
        (key(), pick(PEXPIRE_MS)).prop_map(|(k, ms)| Command::new("PEXPIRE").arg(k).arg(ms)),
    ];
    (any::<bool>(), vec(command, 1..=4)).prop_map(|(atomic, commands)| Step::Pipeline { atomic, commands }).boxed()
}

#[test]
fn every_script_in_lua_is_among_the_generated_steps() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../lua");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("lua/")
        .map(|entry| entry.expect("an entry of lua/").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".lua"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = LUA_FILES.iter().map(|file| file.name.to_owned()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "LUA_FILES must list every script of lua/");

    let mut runner = TestRunner::deterministic();
    let scripts = project_script();
    let mut generated = std::collections::BTreeSet::new();
    for _ in 0..5_000 {
        if let Step::Script { file, .. } = scripts.new_tree(&mut runner).expect("a step").current() {
            generated.insert(file.name.to_owned());
        }
    }
    assert_eq!(generated.into_iter().collect::<Vec<_>>(), listed, "some script is never generated");
}
