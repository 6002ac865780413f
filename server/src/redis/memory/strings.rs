//! String commands: GET, SET (with NX/XX/GET/EX/PX/EXAT/PXAT/KEEPTTL), counters and
//! the small variants (MGET, MSET, SETNX, SETEX, PSETEX, GETDEL, APPEND, STRLEN).

use redis::Value;

use super::commands::{Command, bulk, int, int_arg, is};
use super::core::Core;
use super::error::CommandError;
use super::keyspace::{Data, Entry};
use super::text::parse_i64;

pub(crate) fn run(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    match command {
        Command::Get => Ok(core.db.string(args[1], now)?.map_or(Value::Nil, |value| bulk(value))),
        Command::Set => set(core, args),
        Command::GetDel => {
            let value = core.db.string(args[1], now)?.map(|value| bulk(value));
            if value.is_some() {
                core.db.remove(args[1], now);
            }
            Ok(value.unwrap_or(Value::Nil))
        }
        Command::MGet => Ok(Value::Array(
            args[1..]
                .iter()
                .map(|key| match core.db.string(key, now) {
                    Ok(Some(value)) => bulk(value),
                    _ => Value::Nil,
                })
                .collect(),
        )),
        Command::MSet => {
            if args.len() % 2 == 0 {
                return Err(CommandError::Arity("mset".to_owned()));
            }
            for pair in args[1..].chunks_exact(2) {
                core.db.insert(pair[0].to_vec(), Entry::new(Data::Str(pair[1].to_vec())));
            }
            Ok(Value::Okay)
        }
        Command::SetNx => {
            if core.db.live(args[1], now).is_some() {
                return Ok(Value::Int(0));
            }
            core.db.insert(args[1].to_vec(), Entry::new(Data::Str(args[2].to_vec())));
            Ok(Value::Int(1))
        }
        Command::SetEx => set_with_ttl(core, args, 1000, "setex"),
        Command::PSetEx => set_with_ttl(core, args, 1, "psetex"),
        Command::Append => {
            let value = core.db.string_or_create(args[1], now)?;
            value.extend_from_slice(args[2]);
            Ok(int(value.len()))
        }
        Command::StrLen => Ok(int(core.db.string(args[1], now)?.map_or(0, |value| value.len()))),
        Command::Incr => incr_by(core, args[1], 1),
        Command::Decr => incr_by(core, args[1], -1),
        Command::IncrBy => incr_by(core, args[1], int_arg(args[2])?),
        Command::DecrBy => {
            let delta = int_arg(args[2])?;
            let delta = delta.checked_neg().ok_or_else(|| CommandError::other("ERR decrement would overflow"))?;
            incr_by(core, args[1], delta)
        }
        _ => Err(CommandError::Syntax),
    }
}

/// How SET sets the expiry.
enum Expiry {
    Clear,
    Keep,
    At(i64),
}

fn set(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let (mut nx, mut xx, mut get) = (false, false, false);
    let mut expiry = Expiry::Clear;
    let mut expiry_given = false;
    let mut i = 3;
    while i < args.len() {
        let option = args[i];
        let unit = match () {
            () if is(option, "nx") && !xx => {
                nx = true;
                None
            }
            () if is(option, "xx") && !nx => {
                xx = true;
                None
            }
            () if is(option, "get") => {
                get = true;
                None
            }
            () if is(option, "keepttl") && !expiry_given => {
                expiry_given = true;
                expiry = Expiry::Keep;
                None
            }
            () if is(option, "ex") && !expiry_given => Some((1000, false)),
            () if is(option, "px") && !expiry_given => Some((1, false)),
            () if is(option, "exat") && !expiry_given => Some((1000, true)),
            () if is(option, "pxat") && !expiry_given => Some((1, true)),
            () => return Err(CommandError::Syntax),
        };
        if let Some((unit_ms, absolute)) = unit {
            let amount = args.get(i + 1).ok_or(CommandError::Syntax)?;
            let amount = int_arg(amount)?;
            if amount <= 0 {
                return Err(CommandError::InvalidExpire("set"));
            }
            let ms = amount.checked_mul(unit_ms).ok_or(CommandError::InvalidExpire("set"))?;
            let at = if absolute { ms } else { ms.checked_add(now).ok_or(CommandError::InvalidExpire("set"))? };
            expiry = Expiry::At(at);
            expiry_given = true;
            i += 1;
        }
        i += 1;
    }
    let old = if get { core.db.string(args[1], now)?.map(|value| bulk(value)) } else { None };
    let existing = core.db.live(args[1], now);
    let found = existing.is_some();
    if (nx && found) || (xx && !found) {
        return Ok(if get { old.unwrap_or(Value::Nil) } else { Value::Nil });
    }
    let expires_at = match expiry {
        Expiry::Clear => None,
        Expiry::Keep => existing.and_then(|entry| entry.expires_at),
        Expiry::At(at) => Some(at),
    };
    core.db.insert(args[1].to_vec(), Entry { data: Data::Str(args[2].to_vec()), expires_at });
    Ok(if get { old.unwrap_or(Value::Nil) } else { Value::Okay })
}

fn set_with_ttl(core: &mut Core, args: &[&[u8]], unit_ms: i64, name: &'static str) -> Result<Value, CommandError> {
    let amount = int_arg(args[2])?;
    if amount <= 0 {
        return Err(CommandError::InvalidExpire(name));
    }
    let at = amount.checked_mul(unit_ms).and_then(|ms| ms.checked_add(core.now_ms));
    let at = at.ok_or(CommandError::InvalidExpire(name))?;
    core.db.insert(args[1].to_vec(), Entry { data: Data::Str(args[3].to_vec()), expires_at: Some(at) });
    Ok(Value::Okay)
}

fn incr_by(core: &mut Core, key: &[u8], delta: i64) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let current = match core.db.string(key, now)? {
        Some(value) => parse_i64(value).ok_or(CommandError::NotInteger)?,
        None => 0,
    };
    let next = current.checked_add(delta).ok_or(CommandError::Overflow)?;
    *core.db.string_or_create(key, now)? = next.to_string().into_bytes();
    Ok(Value::Int(next))
}
