//! Hash and set commands. Both are ordered maps here, so HGETALL, HKEYS and SMEMBERS
//! answer in byte order where Redis answers in its hash order (compare them as sets).

use redis::Value;

use super::commands::{Command, bulk, int, int_arg};
use super::core::Core;
use super::error::CommandError;
use super::text::parse_i64;

pub(crate) fn run(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let key = args[1];
    let db = &mut core.db;
    match command {
        Command::HGet => Ok(db.hash(key, now)?.and_then(|hash| hash.get(args[2])).map_or(Value::Nil, |v| bulk(v))),
        Command::HSet | Command::HMSet => {
            if args.len() % 2 != 0 {
                return Err(CommandError::Arity(command.name().to_owned()));
            }
            let hash = db.hash_or_create(key, now)?;
            let added =
                args[2..].chunks_exact(2).filter(|pair| hash.insert(pair[0].to_vec(), pair[1].to_vec()).is_none());
            let added = added.count();
            Ok(if command == Command::HSet { int(added) } else { Value::Okay })
        }
        Command::HSetNx => {
            let hash = db.hash_or_create(key, now)?;
            if hash.contains_key(args[2]) {
                return Ok(Value::Int(0));
            }
            hash.insert(args[2].to_vec(), args[3].to_vec());
            Ok(Value::Int(1))
        }
        Command::HMGet => {
            let hash = db.hash(key, now)?;
            let values =
                args[2..].iter().map(|field| hash.as_ref().and_then(|h| h.get(*field)).map_or(Value::Nil, |v| bulk(v)));
            Ok(Value::Array(values.collect()))
        }
        Command::HDel => {
            let Some(hash) = db.hash(key, now)? else { return Ok(Value::Int(0)) };
            let removed = args[2..].iter().filter(|field| hash.remove(**field).is_some()).count();
            db.drop_if_empty(key);
            Ok(int(removed))
        }
        Command::HGetAll => {
            let Some(hash) = db.hash(key, now)? else { return Ok(Value::Array(Vec::new())) };
            Ok(Value::Array(hash.iter().flat_map(|(field, value)| [bulk(field), bulk(value)]).collect()))
        }
        Command::HKeys => {
            Ok(Value::Array(db.hash(key, now)?.map_or_else(Vec::new, |h| h.keys().map(|f| bulk(f)).collect())))
        }
        Command::HVals => {
            Ok(Value::Array(db.hash(key, now)?.map_or_else(Vec::new, |h| h.values().map(|v| bulk(v)).collect())))
        }
        Command::HIncrBy => {
            let delta = int_arg(args[3])?;
            let current = match db.hash(key, now)?.and_then(|hash| hash.get(args[2])) {
                Some(value) => parse_i64(value).ok_or(CommandError::HashNotInteger)?,
                None => 0,
            };
            let next = current.checked_add(delta).ok_or(CommandError::Overflow)?;
            db.hash_or_create(key, now)?.insert(args[2].to_vec(), next.to_string().into_bytes());
            Ok(Value::Int(next))
        }
        Command::HExists => {
            Ok(Value::Int(i64::from(db.hash(key, now)?.is_some_and(|hash| hash.contains_key(args[2])))))
        }
        Command::HLen => Ok(int(db.hash(key, now)?.map_or(0, |hash| hash.len()))),
        Command::SAdd => {
            let set = db.set_or_create(key, now)?;
            Ok(int(args[2..].iter().filter(|member| set.insert(member.to_vec())).count()))
        }
        Command::SRem => {
            let Some(set) = db.set(key, now)? else { return Ok(Value::Int(0)) };
            let removed = args[2..].iter().filter(|member| set.remove(**member)).count();
            db.drop_if_empty(key);
            Ok(int(removed))
        }
        Command::SIsMember => Ok(Value::Int(i64::from(db.set(key, now)?.is_some_and(|set| set.contains(args[2]))))),
        Command::SMembers => {
            Ok(Value::Array(db.set(key, now)?.map_or_else(Vec::new, |s| s.iter().map(|m| bulk(m)).collect())))
        }
        Command::SCard => Ok(int(db.set(key, now)?.map_or(0, |set| set.len()))),
        _ => Err(CommandError::Syntax),
    }
}
