//! What scripts see of Redis: `redis.call`/`redis.pcall` and the other `redis.*`
//! functions, the error handler that turns an error into Redis 7.0's error reply, the
//! Redis-style `pcall`, and the protected global environment.

use std::sync::{Mutex, PoisonError};

use mlua::chunk::ChunkMode;
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Value as LuaValue};

use super::admin::REDIS_VERSION;
use super::core::Core;
use super::lua_convert::{error_table, to_lua};
use super::lua_errors::{binary_chunk_error, check_string, decode_raised, raise, raise_table};
use super::text::format_g;

/// Where a stack level is: whether it is a C function, its source and current line.
struct Frame {
    c_function: bool,
    source: String,
    line: i64,
}

fn frame(lua: &Lua, level: usize) -> Option<Frame> {
    lua.inspect_stack(level, |debug| {
        let source = debug.source();
        Frame {
            c_function: source.what == "C",
            source: source.source.map(|s| s.into_owned()).unwrap_or_default(),
            line: debug.current_line().and_then(|l| i64::try_from(l).ok()).unwrap_or(-1),
        }
    })
}

/// Redis 7.0's `__redis__err__handler`: the error as a table, with the source and line
/// of the function that raised it (of its caller if that was a C function).
pub(crate) fn error_handler(lua: &Lua, error: LuaValue, tostring: &Function) -> mlua::Result<Table> {
    // Level 0 is this handler; 1 raised the error.
    let mut at = frame(lua, 1);
    if at.as_ref().is_some_and(|f| f.c_function) {
        at = frame(lua, 2);
    }
    let table = match decode_raised(lua, error)? {
        LuaValue::Table(table) => table,
        other => {
            let text: mlua::LuaString = tostring.call(other)?;
            error_table(lua, &format!("ERR {}", text.to_string_lossy()), false)?
        }
    };
    if let Some(at) = at {
        table.raw_set("source", at.source)?;
        table.raw_set("line", at.line)?;
    }
    Ok(table)
}

/// `redis.call` (`raise`) and `redis.pcall`: arguments must be strings or numbers
/// (numbers sent as `%.17g`), errors raised as tables or returned as tables.
pub(crate) fn redis_call(lua: &Lua, core: &Mutex<Core>, args: MultiValue, raise: bool) -> mlua::Result<LuaValue> {
    let fail = |text: &str, from_command: bool| {
        if raise {
            Err(raise_table(text, from_command))
        } else {
            Ok(LuaValue::Table(error_table(lua, text, from_command)?))
        }
    };
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(args.len());
    for arg in &args {
        match arg {
            LuaValue::String(text) => owned.push(text.as_bytes().to_vec()),
            LuaValue::Integer(i) => owned.push(format_g(*i as f64, 17).into_bytes()),
            LuaValue::Number(n) => owned.push(format_g(*n, 17).into_bytes()),
            _ => return fail("ERR Lua redis lib command arguments must be strings or integers", false),
        }
    }
    if owned.is_empty() {
        return fail("ERR Please specify at least one argument for this redis lib call", false);
    }
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let result = core.lock().unwrap_or_else(PoisonError::into_inner).execute_from_script(&refs);
    match result {
        Ok(value) => to_lua(lua, value),
        Err(error) => fail(&error.to_string(), true),
    }
}

/// The `redis` table, without `call` and `pcall` (bound to the keyspace by the engine).
pub(crate) fn redis_table(lua: &Lua) -> mlua::Result<Table> {
    let redis = lua.create_table()?;
    redis.raw_set("REDIS_VERSION", REDIS_VERSION)?;
    redis.raw_set("REDIS_VERSION_NUM", 0x07_00_0f)?;
    for (name, value) in [("LOG_DEBUG", 0), ("LOG_VERBOSE", 1), ("LOG_NOTICE", 2), ("LOG_WARNING", 3)] {
        redis.raw_set(name, value)?;
    }
    for (name, value) in [("REPL_NONE", 0), ("REPL_AOF", 1), ("REPL_SLAVE", 2), ("REPL_REPLICA", 2), ("REPL_ALL", 3)] {
        redis.raw_set(name, value)?;
    }
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| {
            let Some(text) = single_string(&args) else {
                return error_table(lua, "ERR wrong number or type of arguments", false);
            };
            let text = text.strip_prefix('-').unwrap_or(&text);
            let text = match text.split_once(' ') {
                Some((code, message)) => format!("{code} {}", message.trim_matches(['\r', '\n'])),
                None => format!("ERR {}", text.trim_matches(['\r', '\n'])),
            };
            error_table(lua, &text, false)
        })?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| match single_string(&args) {
            Some(text) => {
                let table = lua.create_table()?;
                table.raw_set("ok", text)?;
                Ok(table)
            }
            None => error_table(lua, "ERR wrong number or type of arguments", false),
        })?,
    )?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(raise_table("ERR wrong number of arguments", false));
            }
            let bytes = match lua.coerce_string(args[0].clone())? {
                Some(text) => text.as_bytes().to_vec(),
                None => Vec::new(),
            };
            Ok(super::lua::sha1_hex(&bytes))
        })?,
    )?;
    redis.raw_set(
        "log",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() < 2 {
                return Err(raise_table("ERR redis.log() requires two arguments or more.", false));
            }
            let Some(level) = lua.coerce_number(args[0].clone())? else {
                return Err(raise_table("ERR First argument must be a number (log level).", false));
            };
            if !(0.0..=3.0).contains(&level) {
                return Err(raise_table("ERR Invalid debug level.", false));
            }
            Ok(())
        })?,
    )?;
    redis.raw_set(
        "setresp",
        lua.create_function(|_, args: MultiValue| match args.front() {
            Some(LuaValue::Integer(2)) => Ok(()),
            Some(LuaValue::Integer(3)) => Err(raise_table("ERR RESP3 is not supported by the in-process Redis", false)),
            _ => Err(raise_table("ERR RESP version must be 2 or 3.", false)),
        })?,
    )?;
    redis.raw_set("set_repl", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.raw_set("replicate_commands", lua.create_function(|_, _: MultiValue| Ok(true))?)?;
    redis.raw_set("breakpoint", lua.create_function(|_, _: MultiValue| Ok(false))?)?;
    redis.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    redis.raw_set(
        "acl_check_cmd",
        lua.create_function(|_, args: MultiValue| match args.front() {
            Some(LuaValue::String(name)) if super::commands::Command::lookup(&name.as_bytes()).is_some() => Ok(true),
            _ => Err(raise_table("ERR Invalid command passed to redis.acl_check_cmd()", false)),
        })?,
    )?;
    Ok(redis)
}

fn single_string(args: &MultiValue) -> Option<String> {
    match args.iter().collect::<Vec<_>>().as_slice() {
        [LuaValue::String(text)] => Some(text.to_string_lossy()),
        _ => None,
    }
}

/// Redis's `pcall`: like Lua's, but an error table with an `err` field comes back as
/// that string (and errors raised from Rust come back as Redis would raise them).
const PCALL: &str = r"
local rawpcall, decode, rawget, type = ...
local function finish(ok, ...)
  if ok then return true, ... end
  local e = decode((...))
  if type(e) == 'table' then
    local m = rawget(e, 'err')
    if type(m) == 'string' or type(m) == 'number' then e = m end
  end
  return false, e
end
return function(...) return finish(rawpcall(...)) end
";

pub(crate) fn install_pcall(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    let decode = lua.create_function(decode_raised)?;
    let rawpcall: Function = globals.raw_get("pcall")?;
    let rawget: Function = globals.raw_get("rawget")?;
    let type_of: Function = globals.raw_get("type")?;
    let pcall: Function = lua.load(PCALL).set_name("=pcall").call((rawpcall, decode, rawget, type_of))?;
    globals.raw_set("pcall", pcall)
}

/// Protects the globals as Redis 7.0 does: reading an undefined global and writing any
/// global are errors. Scripts run in an empty proxy environment that reads through to
/// the globals (Lua 5.1's `__newindex` would miss writes to existing keys of the
/// globals table itself). Returns the proxy.
pub(crate) fn protect(lua: &Lua, globals: &Table) -> mlua::Result<Table> {
    let missing = lua.create_table()?;
    missing.raw_set(
        "__index",
        lua.create_function(|lua, (_, key): (LuaValue, LuaValue)| -> mlua::Result<()> {
            let name = match &key {
                LuaValue::String(text) => text.to_string_lossy(),
                LuaValue::Integer(i) => i.to_string(),
                LuaValue::Number(n) => format_g(*n, 14),
                _ => return Err(raise(lua, "Second argument to luaProtectedTableError must be a string or number")),
            };
            Err(raise(lua, format!("Script attempted to access nonexistent global variable '{name}'")))
        })?,
    )?;
    missing.raw_set("__metatable", false)?;
    globals.set_metatable(Some(missing))?;

    let env = lua.create_table()?;
    let proxy = lua.create_table()?;
    proxy.raw_set("__index", globals.clone())?;
    proxy.raw_set(
        "__newindex",
        // Like luaG_runerror: after the position of the Lua code doing the write.
        lua.create_function(|lua, _: MultiValue| -> mlua::Result<()> {
            Err(raise(lua, "Attempt to modify a readonly table"))
        })?,
    )?;
    proxy.raw_set("__metatable", false)?;
    env.set_metatable(Some(proxy))?;
    globals.raw_set("_G", env.clone())?;
    Ok(env)
}

/// Lua 5.1's `loadstring` as Redis 7.0 has it: compiles `s` named `chunkname` (by
/// default `s` itself) to run in the scripts' protected environment `env`; `nil` and
/// the message if it does not compile. Redis reads every chunk as text, so a binary
/// chunk does not compile.
pub(crate) fn install_loadstring(lua: &Lua, globals: &Table, env: &Table) -> mlua::Result<()> {
    let env = env.clone();
    let loadstring = lua.create_function(move |lua, args: MultiValue| {
        let source = check_string(lua, &args, 1)?;
        let name = match args.get(1) {
            None | Some(LuaValue::Nil) => source.clone(),
            Some(_) => check_string(lua, &args, 2)?,
        };
        let (source, name) = (source.as_bytes(), name.as_bytes());
        if source.first() == Some(&0x1b) {
            return (LuaValue::Nil, binary_chunk_error(&name)).into_lua_multi(lua);
        }
        // The name is a C string: it ends at a NUL.
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let chunk = lua
            .load(&source[..])
            .set_name(String::from_utf8_lossy(name))
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone());
        match chunk.into_function() {
            Ok(function) => function.into_lua_multi(lua),
            Err(mlua::Error::SyntaxError { message, .. }) => (LuaValue::Nil, message).into_lua_multi(lua),
            Err(other) => Err(other),
        }
    })?;
    globals.raw_set("loadstring", loadstring)
}
