//! Conversions between Redis replies and Lua values, both ways, as Redis 7.0 does them
//! (RESP2): a nil bulk becomes `false`, a Lua number an integer truncated toward zero,
//! a nil ends an array, `{ok=}` is a status and `{err=}` an error (the error wins).

use mlua::{Lua, Table, Value as LuaValue};
use redis::Value;

use super::error::{error_text, error_value};
use super::text::{format_g, lua_number_to_i64};

/// Nesting deeper than this is answered with an error, as Redis does when its Lua
/// stack runs out.
const MAX_DEPTH: usize = 1000;

/// A Redis reply as `redis.call` hands it to the script.
pub(crate) fn to_lua(lua: &Lua, value: Value) -> mlua::Result<LuaValue> {
    Ok(match value {
        Value::Int(i) => LuaValue::Number(i as f64),
        Value::BulkString(bytes) => LuaValue::String(lua.create_string(bytes)?),
        Value::Nil => LuaValue::Boolean(false),
        Value::Okay => LuaValue::Table(single_field(lua, "ok", "OK")?),
        Value::SimpleString(text) => LuaValue::Table(single_field(lua, "ok", &text)?),
        Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (index, item) in items.into_iter().enumerate() {
                table.raw_set(index + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
        Value::ServerError(error) => LuaValue::Table(error_table(lua, &error_text(&error), true)?),
        Value::Double(d) => {
            let table = lua.create_table()?;
            table.raw_set("double", d)?;
            LuaValue::Table(table)
        }
        _ => LuaValue::Nil,
    })
}

fn single_field(lua: &Lua, field: &str, text: &str) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(field, text)?;
    Ok(table)
}

/// The `{err = text}` table of a failed command. Errors of commands carry the flag
/// Redis 7.0 adds so its error statistics count them once.
pub(crate) fn error_table(lua: &Lua, text: &str, from_command: bool) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("err", text)?;
    if from_command {
        table.raw_set("ignore_error_stats_update", true)?;
    }
    Ok(table)
}

/// The reply to the client for the value a script returned.
pub(crate) fn reply(value: &LuaValue) -> Value {
    reply_at(value, 0)
}

fn reply_at(value: &LuaValue, depth: usize) -> Value {
    match value {
        LuaValue::String(text) => Value::BulkString(text.as_bytes().to_vec()),
        LuaValue::Boolean(true) => Value::Int(1),
        LuaValue::Integer(i) => Value::Int(*i),
        LuaValue::Number(n) => Value::Int(number_reply(*n)),
        LuaValue::Table(_) if depth >= MAX_DEPTH => error_value("ERR reached lua stack limit"),
        LuaValue::Table(table) => table_reply(table, depth),
        _ => Value::Nil,
    }
}

/// A Lua number as an integer reply.
#[cfg(not(feature = "memory-broken"))]
fn number_reply(n: f64) -> i64 {
    lua_number_to_i64(n)
}

/// DELIBERATELY WRONG (`memory-broken`): rounds to the nearest integer where Redis
/// truncates toward zero (3.99 answers 4, -3.99 answers -4), so the differential test
/// against a real redis-server has something to catch.
#[cfg(feature = "memory-broken")]
fn number_reply(n: f64) -> i64 {
    lua_number_to_i64(n.round())
}

fn table_reply(table: &Table, depth: usize) -> Value {
    if let Ok(LuaValue::String(err)) = table.raw_get::<LuaValue>("err") {
        return error_value(&err.to_string_lossy());
    }
    if let Ok(LuaValue::String(ok)) = table.raw_get::<LuaValue>("ok") {
        let text: String = ok.to_string_lossy().chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
        return if text == "OK" { Value::Okay } else { Value::SimpleString(text) };
    }
    if let Ok(LuaValue::Integer(_) | LuaValue::Number(_)) = table.raw_get::<LuaValue>("double") {
        let d = table.raw_get::<f64>("double").unwrap_or(0.0);
        return Value::BulkString(format_g(d, 17).into_bytes());
    }
    if let Ok(LuaValue::String(big)) = table.raw_get::<LuaValue>("big_number") {
        return Value::BulkString(big.as_bytes().to_vec());
    }
    if let Ok(LuaValue::Table(map)) = table.raw_get::<LuaValue>("map") {
        let mut items = Vec::new();
        for (key, value) in map.pairs::<LuaValue, LuaValue>().flatten() {
            items.push(reply_at(&key, depth + 1));
            items.push(reply_at(&value, depth + 1));
        }
        return Value::Array(items);
    }
    if let Ok(LuaValue::Table(set)) = table.raw_get::<LuaValue>("set") {
        return Value::Array(
            set.pairs::<LuaValue, LuaValue>().flatten().map(|(k, _)| reply_at(&k, depth + 1)).collect(),
        );
    }
    let mut items = Vec::new();
    for index in 1.. {
        match table.raw_get::<LuaValue>(index) {
            Ok(LuaValue::Nil) | Err(_) => break,
            Ok(item) => items.push(reply_at(&item, depth + 1)),
        }
    }
    Value::Array(items)
}

/// The error reply for a script that raised an error: the handler's table
/// `{err, source, line}` as `ERR <msg> script: <sha>, on <source>:<line>.`
pub(crate) fn failure(value: &LuaValue, sha: &str) -> Value {
    let LuaValue::Table(table) = value else {
        return error_value(&format!("ERR Error running script {sha}, execution failure"));
    };
    let field = |name: &str| match table.raw_get::<LuaValue>(name) {
        Ok(LuaValue::String(text)) => Some(text.to_string_lossy()),
        Ok(LuaValue::Integer(i)) => Some(i.to_string()),
        Ok(LuaValue::Number(n)) => Some(format_g(n, 14)),
        _ => None,
    };
    let mut text = field("err").unwrap_or_default();
    if let (Some(source), Some(line)) = (field("source"), field("line")) {
        text.push_str(&format!(" script: {sha}, on {source}:{line}."));
    }
    error_value(&text)
}
