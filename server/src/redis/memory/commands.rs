//! The command table (names, arities, what scripts may not call), argument helpers, and
//! dispatch of one command to its implementation, plus the commands on keys as such.

use redis::Value;

use super::core::Core;
use super::error::CommandError;
use super::text::{glob_match, parse_f64, parse_i64};
use super::{admin, collections, stream, strings, zsets};

/// Declares every command: variant, lowercase name, Redis 7.0 arity (exact if positive,
/// a minimum if negative) and whether scripts may call it.
macro_rules! commands {
    ($($variant:ident $name:literal $arity:literal $scripts:ident;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Command { $($variant,)* }

        impl Command {
            /// The command named `name` (any case).
            pub(crate) fn lookup(name: &[u8]) -> Option<Self> {
                let mut buf = [0u8; 20];
                let lower = buf.get_mut(..name.len())?;
                lower.copy_from_slice(name);
                lower.make_ascii_lowercase();
                match std::str::from_utf8(lower).ok()? {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }

            pub(crate) fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            fn arity(self) -> i64 {
                match self { $(Self::$variant => $arity,)* }
            }

            pub(crate) fn allowed_in_scripts(self) -> bool {
                match self { $(Self::$variant => commands!(@allowed $scripts),)* }
            }
        }
    };
    (@allowed script) => { true };
    (@allowed noscript) => { false };
}

commands! {
    Get "get" 2 script; Set "set" -3 script; GetDel "getdel" 2 script; MGet "mget" -2 script;
    MSet "mset" -3 script; SetNx "setnx" 3 script; SetEx "setex" 4 script; PSetEx "psetex" 4 script;
    Append "append" 3 script; StrLen "strlen" 2 script; Incr "incr" 2 script; Decr "decr" 2 script;
    IncrBy "incrby" 3 script; DecrBy "decrby" 3 script;
    Del "del" -2 script; Unlink "unlink" -2 script; Exists "exists" -2 script; Expire "expire" -3 script;
    PExpire "pexpire" -3 script; ExpireAt "expireat" -3 script; PExpireAt "pexpireat" -3 script;
    Ttl "ttl" 2 script; PTtl "pttl" 2 script; Persist "persist" 2 script; Type "type" 2 script;
    Keys "keys" 2 script; DbSize "dbsize" 1 script; FlushAll "flushall" -1 script; FlushDb "flushdb" -1 script;
    Ping "ping" -1 script; Echo "echo" 2 script; Time "time" 1 script; Select "select" 2 script;
    Publish "publish" 3 script; Info "info" -1 script; Config "config" -2 script;
    HGet "hget" 3 script; HSet "hset" -4 script; HMSet "hmset" -4 script; HSetNx "hsetnx" 4 script;
    HMGet "hmget" -3 script; HDel "hdel" -3 script; HGetAll "hgetall" 2 script; HKeys "hkeys" 2 script;
    HVals "hvals" 2 script; HIncrBy "hincrby" 4 script; HExists "hexists" 3 script; HLen "hlen" 2 script;
    SAdd "sadd" -3 script; SRem "srem" -3 script; SIsMember "sismember" 3 script;
    SMembers "smembers" 2 script; SCard "scard" 2 script;
    ZAdd "zadd" -4 script; ZRem "zrem" -3 script; ZCard "zcard" 2 script; ZScore "zscore" 3 script;
    ZIncrBy "zincrby" 4 script; ZRank "zrank" 3 script; ZCount "zcount" 4 script; ZRange "zrange" -4 script;
    ZRevRange "zrevrange" -4 script; ZRangeByScore "zrangebyscore" -4 script;
    ZRevRangeByScore "zrevrangebyscore" -4 script; ZRemRangeByScore "zremrangebyscore" 4 script;
    XAdd "xadd" -5 script; XRange "xrange" -4 script; XRevRange "xrevrange" -4 script; XLen "xlen" 2 script;
    XTrim "xtrim" -4 script;
    Eval "eval" -3 noscript; EvalSha "evalsha" -3 noscript; EvalRo "eval_ro" -3 noscript;
    EvalShaRo "evalsha_ro" -3 noscript; Script "script" -2 noscript; Multi "multi" 1 noscript;
    Exec "exec" 1 noscript; Discard "discard" 1 noscript;
}

impl Command {
    /// Looks `args[0]` up and checks the arity: the errors a client or a script gets
    /// before the command runs.
    pub(crate) fn resolve(args: &[&[u8]], from_script: bool) -> Result<Self, CommandError> {
        let unknown = || if from_script { CommandError::UnknownFromScript } else { CommandError::unknown(args) };
        let command = args.first().and_then(|name| Self::lookup(name)).ok_or_else(unknown)?;
        let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
        let arity = command.arity();
        if (arity > 0 && argc != arity) || argc < -arity {
            return Err(if from_script {
                CommandError::ArityFromScript
            } else {
                CommandError::Arity(command.name().to_owned())
            });
        }
        if from_script && !command.allowed_in_scripts() {
            return Err(CommandError::NotAllowedFromScript);
        }
        Ok(command)
    }
}

/// Runs one command on the keyspace. Scripting and transactions are the server's.
pub(crate) fn dispatch(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    use Command as C;
    match command {
        C::Get
        | C::Set
        | C::GetDel
        | C::MGet
        | C::MSet
        | C::SetNx
        | C::SetEx
        | C::PSetEx
        | C::Append
        | C::StrLen
        | C::Incr
        | C::Decr
        | C::IncrBy
        | C::DecrBy => strings::run(core, command, args),
        C::Del | C::Unlink => del(core, args),
        C::Exists => exists(core, args),
        C::Expire => expire(core, args, 1000, false, "expire"),
        C::PExpire => expire(core, args, 1, false, "pexpire"),
        C::ExpireAt => expire(core, args, 1000, true, "expireat"),
        C::PExpireAt => expire(core, args, 1, true, "pexpireat"),
        C::Ttl => ttl(core, args[1], false),
        C::PTtl => ttl(core, args[1], true),
        C::Persist => persist(core, args[1]),
        C::Type => key_type(core, args[1]),
        C::Keys => keys(core, args[1]),
        C::DbSize
        | C::FlushAll
        | C::FlushDb
        | C::Ping
        | C::Echo
        | C::Time
        | C::Select
        | C::Publish
        | C::Info
        | C::Config => admin::run(core, command, args),
        C::HGet
        | C::HSet
        | C::HMSet
        | C::HSetNx
        | C::HMGet
        | C::HDel
        | C::HGetAll
        | C::HKeys
        | C::HVals
        | C::HIncrBy
        | C::HExists
        | C::HLen
        | C::SAdd
        | C::SRem
        | C::SIsMember
        | C::SMembers
        | C::SCard => collections::run(core, command, args),
        C::ZAdd
        | C::ZRem
        | C::ZCard
        | C::ZScore
        | C::ZIncrBy
        | C::ZRank
        | C::ZCount
        | C::ZRange
        | C::ZRevRange
        | C::ZRangeByScore
        | C::ZRevRangeByScore
        | C::ZRemRangeByScore => zsets::run(core, command, args),
        C::XAdd | C::XRange | C::XRevRange | C::XLen | C::XTrim => stream::run(core, command, args),
        C::Eval | C::EvalSha | C::EvalRo | C::EvalShaRo | C::Script | C::Multi | C::Exec | C::Discard => {
            Err(CommandError::other(format!("ERR '{}' is handled by the server, not the keyspace", command.name())))
        }
    }
}

// ---- argument helpers -------------------------------------------------------------

pub(crate) fn int_arg(arg: &[u8]) -> Result<i64, CommandError> {
    parse_i64(arg).ok_or(CommandError::NotInteger)
}

pub(crate) fn float_arg(arg: &[u8]) -> Result<f64, CommandError> {
    parse_f64(arg).ok_or(CommandError::NotFloat)
}

/// Whether an argument is the keyword `word` (any case).
pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

pub(crate) fn bulk(bytes: &[u8]) -> Value {
    Value::BulkString(bytes.to_vec())
}

pub(crate) fn int(count: usize) -> Value {
    Value::Int(i64::try_from(count).unwrap_or(i64::MAX))
}

// ---- commands on keys -------------------------------------------------------------

fn del(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    Ok(int(args[1..].iter().filter(|key| core.db.remove(key, now).is_some()).count()))
}

fn exists(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    Ok(int(args[1..].iter().filter(|key| core.db.live(key, now).is_some()).count()))
}

fn expire(
    core: &mut Core,
    args: &[&[u8]],
    unit_ms: i64,
    absolute: bool,
    name: &'static str,
) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let amount = int_arg(args[2])?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match () {
            () if is(option, "nx") => nx = true,
            () if is(option, "xx") => xx = true,
            () if is(option, "gt") => gt = true,
            () if is(option, "lt") => lt = true,
            () => {
                return Err(CommandError::other(format!("ERR Unsupported option {}", String::from_utf8_lossy(option))));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::other("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(CommandError::other("ERR GT and LT options at the same time are not compatible"));
    }
    let ms = amount.checked_mul(unit_ms).ok_or(CommandError::InvalidExpire(name))?;
    let at = if absolute { ms } else { ms.checked_add(now).ok_or(CommandError::InvalidExpire(name))? };
    let Some(entry) = core.db.live(args[1], now) else { return Ok(Value::Int(0)) };
    let current = entry.expires_at;
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|current| at <= current))
        || (lt && current.is_some_and(|current| at >= current));
    if refused {
        return Ok(Value::Int(0));
    }
    if at <= now {
        core.db.remove(args[1], now);
    } else {
        entry.expires_at = Some(at);
    }
    Ok(Value::Int(1))
}

fn ttl(core: &mut Core, key: &[u8], in_ms: bool) -> Result<Value, CommandError> {
    let now = core.now_ms;
    Ok(Value::Int(match core.db.live(key, now) {
        None => -2,
        Some(entry) => match entry.expires_at {
            None => -1,
            Some(at) => {
                let left = (at - now).max(0);
                if in_ms { left } else { (left + 500) / 1000 }
            }
        },
    }))
}

fn persist(core: &mut Core, key: &[u8]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    Ok(Value::Int(match core.db.live(key, now) {
        Some(entry) if entry.expires_at.is_some() => {
            entry.expires_at = None;
            1
        }
        _ => 0,
    }))
}

fn key_type(core: &mut Core, key: &[u8]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let name = core.db.live(key, now).map_or("none", |entry| entry.data.type_name());
    Ok(Value::SimpleString(name.to_owned()))
}

fn keys(core: &mut Core, pattern: &[u8]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let all = pattern == b"*";
    let found = core.db.keys(now).filter(|(key, _)| all || glob_match(pattern, key, false)).map(|(key, _)| bulk(key));
    Ok(Value::Array(found.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_in_any_case_and_check_their_arity() {
        assert_eq!(Command::resolve(&[b"gEt", b"k"], false), Ok(Command::Get));
        assert_eq!(
            Command::resolve(&[b"GET"], false).map_err(|e| e.to_string()),
            Err("ERR wrong number of arguments for 'get' command".to_owned())
        );
        assert_eq!(Command::resolve(&[b"GET"], true), Err(CommandError::ArityFromScript));
        assert_eq!(Command::resolve(&[b"NOPE"], true), Err(CommandError::UnknownFromScript));
        assert_eq!(Command::resolve(&[b"EVAL", b"return 1", b"0"], true), Err(CommandError::NotAllowedFromScript));
        assert!(Command::lookup(b"a-command-name-longer-than-the-buffer").is_none());
    }
}
