//! Sorted-set commands: ZADD (NX/XX/GT/LT/CH/INCR), ZREM, ZCARD, ZSCORE, ZINCRBY,
//! ZRANK, ZCOUNT, ZRANGE (by rank or BYSCORE, REV, LIMIT, WITHSCORES) and its older
//! forms, ZREMRANGEBYSCORE. Scores print as `%.17g`, as Redis 7.0 prints them.

use redis::Value;

use super::commands::{Command, float_arg, int, int_arg, is};
use super::core::Core;
use super::error::CommandError;
use super::keyspace::{ScoreBound, ZSet};
use super::text::format_score;

pub(crate) fn run(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let key = args[1];
    match command {
        Command::ZAdd => zadd(core, args),
        Command::ZIncrBy => {
            let delta = float_arg(args[2])?;
            let zset = core.db.zset_or_create(key, now)?;
            let score = zset.score(args[3]).unwrap_or(0.0) + delta;
            if score.is_nan() {
                return Err(CommandError::other("ERR resulting score is not a number (NaN)"));
            }
            zset.insert(args[3], score);
            Ok(Value::BulkString(format_score(score)))
        }
        Command::ZRem => {
            let Some(zset) = core.db.zset(key, now)? else { return Ok(Value::Int(0)) };
            let removed = args[2..].iter().filter(|member| zset.remove(member)).count();
            core.db.drop_if_empty(key);
            Ok(int(removed))
        }
        Command::ZCard => Ok(int(core.db.zset(key, now)?.map_or(0, |zset| zset.len()))),
        Command::ZScore => Ok(core
            .db
            .zset(key, now)?
            .and_then(|zset| zset.score(args[2]))
            .map_or(Value::Nil, |score| Value::BulkString(format_score(score)))),
        Command::ZRank => Ok(core.db.zset(key, now)?.and_then(|zset| zset.rank(args[2])).map_or(Value::Nil, int)),
        Command::ZCount => {
            let (min, max) = (ScoreBound::parse(args[2])?, ScoreBound::parse(args[3])?);
            let Some(zset) = core.db.zset(key, now)? else { return Ok(Value::Int(0)) };
            Ok(int(zset.iter().filter(|(_, s)| min.admits_from_below(*s) && max.admits_from_above(*s)).count()))
        }
        Command::ZRemRangeByScore => {
            let (min, max) = (ScoreBound::parse(args[2])?, ScoreBound::parse(args[3])?);
            let Some(zset) = core.db.zset(key, now)? else { return Ok(Value::Int(0)) };
            let doomed: Vec<Vec<u8>> = zset
                .iter()
                .filter(|(_, s)| min.admits_from_below(*s) && max.admits_from_above(*s))
                .map(|(member, _)| member.clone())
                .collect();
            for member in &doomed {
                zset.remove(member);
            }
            core.db.drop_if_empty(key);
            Ok(int(doomed.len()))
        }
        Command::ZRange => zrange(core, args, &args[4..], Mode::Rank, false),
        Command::ZRevRange => zrange(core, args, &args[4..], Mode::Rank, true),
        Command::ZRangeByScore => zrange(core, args, &args[4..], Mode::Score, false),
        Command::ZRevRangeByScore => zrange(core, args, &args[4..], Mode::Score, true),
        _ => Err(CommandError::Syntax),
    }
}

fn zadd(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) = (false, false, false, false, false, false);
    let mut i = 2;
    while let Some(option) = args.get(i) {
        match () {
            () if is(option, "nx") => nx = true,
            () if is(option, "xx") => xx = true,
            () if is(option, "gt") => gt = true,
            () if is(option, "lt") => lt = true,
            () if is(option, "ch") => ch = true,
            () if is(option, "incr") => incr = true,
            () => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(CommandError::Syntax);
    }
    if nx && xx {
        return Err(CommandError::other("ERR XX and NX options at the same time are not compatible"));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(CommandError::other("ERR GT, LT, and/or NX options at the same time are not compatible"));
    }
    if incr && pairs.len() > 2 {
        return Err(CommandError::other("ERR INCR option supports a single increment-element pair"));
    }
    let scores = pairs.chunks_exact(2).map(|pair| float_arg(pair[0])).collect::<Result<Vec<f64>, _>>()?;
    let now = core.now_ms;
    if xx && core.db.zset(args[1], now)?.is_none() {
        return Ok(if incr { Value::Nil } else { Value::Int(0) });
    }
    let zset = core.db.zset_or_create(args[1], now)?;
    let (mut added, mut updated) = (0usize, 0usize);
    let mut incr_result = Value::Nil;
    for (pair, score) in pairs.chunks_exact(2).zip(scores) {
        let member = pair[1];
        match zset.score(member) {
            Some(old) => {
                if nx {
                    continue;
                }
                let new = if incr { old + score } else { score };
                if new.is_nan() {
                    return Err(CommandError::other("ERR resulting score is not a number (NaN)"));
                }
                if (gt && new <= old) || (lt && new >= old) {
                    continue;
                }
                if new != old {
                    zset.insert(member, new);
                    updated += 1;
                }
                incr_result = Value::BulkString(format_score(new));
            }
            None => {
                if xx {
                    continue;
                }
                zset.insert(member, score);
                added += 1;
                incr_result = Value::BulkString(format_score(score));
            }
        }
    }
    core.db.drop_if_empty(args[1]);
    Ok(if incr { incr_result } else { int(if ch { added + updated } else { added }) })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Rank,
    Score,
}

/// ZRANGE and its older forms. `options` are the arguments after the range.
fn zrange(
    core: &mut Core,
    args: &[&[u8]],
    options: &[&[u8]],
    mut mode: Mode,
    mut rev: bool,
) -> Result<Value, CommandError> {
    let modern = Command::lookup(args[0]) == Some(Command::ZRange);
    let (mut with_scores, mut limit) = (false, None);
    let mut i = 0;
    while let Some(option) = options.get(i) {
        match () {
            () if is(option, "withscores") => with_scores = true,
            () if is(option, "limit") && options.len() > i + 2 && (modern || mode == Mode::Score) => {
                limit = Some((int_arg(options[i + 1])?, int_arg(options[i + 2])?));
                i += 2;
            }
            () if modern && is(option, "byscore") => mode = Mode::Score,
            () if modern && is(option, "rev") => rev = true,
            () if modern && is(option, "bylex") => {
                return Err(CommandError::other("ERR BYLEX is not supported by the in-process Redis"));
            }
            () => return Err(CommandError::Syntax),
        }
        i += 1;
    }
    if limit.is_some() && mode == Mode::Rank {
        return Err(CommandError::other(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    let now = core.now_ms;
    let items: Vec<(Vec<u8>, f64)> = match mode {
        Mode::Rank => {
            let (start, stop) = (int_arg(args[2])?, int_arg(args[3])?);
            match core.db.zset(args[1], now)? {
                Some(zset) => by_rank(zset, start, stop, rev),
                None => Vec::new(),
            }
        }
        Mode::Score => {
            // The older reverse form and `ZRANGE .. BYSCORE REV` both take max first.
            let (low, high) = if rev { (args[3], args[2]) } else { (args[2], args[3]) };
            let (min, max) = (ScoreBound::parse(low)?, ScoreBound::parse(high)?);
            match core.db.zset(args[1], now)? {
                Some(zset) => by_score(zset, min, max, rev, limit),
                None => Vec::new(),
            }
        }
    };
    let mut reply = Vec::with_capacity(items.len() * if with_scores { 2 } else { 1 });
    for (member, score) in items {
        reply.push(Value::BulkString(member));
        if with_scores {
            reply.push(Value::BulkString(format_score(score)));
        }
    }
    Ok(Value::Array(reply))
}

fn by_rank(zset: &ZSet, start: i64, stop: i64, rev: bool) -> Vec<(Vec<u8>, f64)> {
    let len = i64::try_from(zset.len()).unwrap_or(i64::MAX);
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len {
        return Vec::new();
    }
    let (skip, take) = (usize::try_from(start).unwrap_or(0), usize::try_from(stop - start + 1).unwrap_or(0));
    let pick = |(member, score): (&Vec<u8>, f64)| (member.clone(), score);
    if rev {
        zset.iter().rev().skip(skip).take(take).map(pick).collect()
    } else {
        zset.iter().skip(skip).take(take).map(pick).collect()
    }
}

fn by_score(
    zset: &ZSet,
    min: ScoreBound,
    max: ScoreBound,
    rev: bool,
    limit: Option<(i64, i64)>,
) -> Vec<(Vec<u8>, f64)> {
    let (offset, count) = limit.unwrap_or((0, -1));
    if offset < 0 {
        return Vec::new();
    }
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = if count < 0 { usize::MAX } else { usize::try_from(count).unwrap_or(usize::MAX) };
    let admitted = |(_, score): &(&Vec<u8>, f64)| min.admits_from_below(*score) && max.admits_from_above(*score);
    let pick = |(member, score): (&Vec<u8>, f64)| (member.clone(), score);
    if rev {
        zset.iter().rev().filter(admitted).skip(skip).take(take).map(pick).collect()
    } else {
        zset.iter().filter(admitted).skip(skip).take(take).map(pick).collect()
    }
}
