//! The Lua 5.1 interpreter of one emulated Redis (mlua, vendored Lua 5.1.5): the
//! sandbox Redis 7.0 sets up, the script cache by SHA1, and running a script with
//! `KEYS`/`ARGV` while it holds the keyspace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value as LuaValue};
use redis::Value;
use sha1::{Digest, Sha1};

use super::core::Core;
use super::error::{CommandError, error_value};
use super::lua_errors::binary_chunk_error;
use super::{cjson, lua_api, lua_convert, lua_libs};

/// Calls a script function under `xpcall` with the error handler: `ok, result`.
const RUNNER: &str = "local xpcall, handler = ...\nreturn function(f) return xpcall(f, handler) end";

/// Globals Redis 7.0 does not offer scripts (`getfenv`, `setfenv` and `newproxy` are
/// gone from the 7.0.15 the differential test runs against, as in Redis's later fixes).
const REMOVED: [&str; 12] = [
    "dofile", "loadfile", "print", "module", "require", "package", "os", "io", "debug", "getfenv", "setfenv",
    "newproxy",
];

pub(crate) fn sha1_hex(body: &[u8]) -> String {
    hex::encode(Sha1::digest(body))
}

pub(crate) struct LuaEngine {
    lua: Lua,
    globals: Table,
    /// The protected environment every script runs in.
    env: Table,
    runner: Function,
    scripts: BTreeMap<String, Function>,
}

impl LuaEngine {
    /// A fresh interpreter whose `redis.call` and `redis.pcall` run commands against
    /// `core` (locked per command; its owner never holds the lock while a script runs),
    /// and whose `math.random` draws from `core`'s state.
    pub(crate) fn new(core: Arc<Mutex<Core>>) -> mlua::Result<Self> {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
        let globals = lua.globals();
        for name in REMOVED {
            globals.raw_set(name, LuaValue::Nil)?;
        }
        let rand48 = core.lock().unwrap_or_else(PoisonError::into_inner).rand48.clone();
        let redis = lua_api::redis_table(&lua)?;
        let keyspace = core.clone();
        let call = lua.create_function(move |lua, args: MultiValue| lua_api::redis_call(lua, &keyspace, args, true))?;
        let pcall = lua.create_function(move |lua, args: MultiValue| lua_api::redis_call(lua, &core, args, false))?;
        redis.raw_set("call", call)?;
        redis.raw_set("pcall", pcall)?;
        globals.raw_set("redis", redis)?;
        globals.raw_set("cjson", cjson::module(&lua)?)?;
        globals.raw_set("bit", lua_libs::bit_module(&lua)?)?;
        lua_libs::install_random(&lua, &globals, rand48)?;
        lua_api::install_pcall(&lua, &globals)?;
        let tostring: Function = globals.raw_get("tostring")?;
        let handler = lua.create_function(move |lua, error: LuaValue| lua_api::error_handler(lua, error, &tostring))?;
        globals.raw_set("__redis__err__handler", handler.clone())?;
        let xpcall: Function = globals.raw_get("xpcall")?;
        let runner: Function = lua.load(RUNNER).set_name("=runner").call((xpcall, handler))?;
        let env = lua_api::protect(&lua, &globals)?;
        lua_api::install_loadstring(&lua, &globals, &env)?;
        Ok(Self { lua, globals, env, runner, scripts: BTreeMap::new() })
    }

    pub(crate) fn contains(&self, sha: &str) -> bool {
        self.scripts.contains_key(sha)
    }

    /// Compiles and caches a script; its SHA1. A script that does not compile is not
    /// cached.
    pub(crate) fn load(&mut self, body: &[u8]) -> Result<String, CommandError> {
        let sha = sha1_hex(body);
        if self.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        let source = strip_shebang(body)?;
        if source.first() == Some(&0x1b) {
            let message = binary_chunk_error(b"@user_script");
            return Err(CommandError::other(format!("ERR Error compiling script (new function): {message}")));
        }
        let function = self
            .lua
            .load(source)
            .set_name("@user_script")
            .set_mode(ChunkMode::Text)
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|error| {
                let message = match &error {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                CommandError::other(format!("ERR Error compiling script (new function): {message}"))
            })?;
        self.scripts.insert(sha.clone(), function);
        Ok(sha)
    }

    /// Runs a cached script against the keyspace; the reply (an error reply if it failed).
    pub(crate) fn run(&self, sha: &str, keys: &[&[u8]], argv: &[&[u8]]) -> Value {
        let Some(function) = self.scripts.get(sha) else { return CommandError::NoScript.to_value() };
        match self.call(function, sha, keys, argv) {
            Ok(reply) => reply,
            Err(error) => error_value(&format!("ERR Error running script {sha}: {error}")),
        }
    }

    fn call(&self, function: &Function, sha: &str, keys: &[&[u8]], argv: &[&[u8]]) -> mlua::Result<Value> {
        self.globals.raw_set("KEYS", self.strings(keys)?)?;
        self.globals.raw_set("ARGV", self.strings(argv)?)?;
        let (ok, result): (bool, LuaValue) = self.runner.call(function)?;
        Ok(if ok { lua_convert::reply(&result) } else { lua_convert::failure(&result, sha) })
    }

    fn strings(&self, items: &[&[u8]]) -> mlua::Result<Table> {
        let table = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (index, item) in items.iter().enumerate() {
            table.raw_set(index + 1, self.lua.create_string(item)?)?;
        }
        Ok(table)
    }
}

/// Redis 7.0's shebang line (`#!lua flags=...`): checked, then left out of the source
/// (its newline stays, so line numbers do not move).
fn strip_shebang(body: &[u8]) -> Result<&[u8], CommandError> {
    if !body.starts_with(b"#!") {
        return Ok(body);
    }
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split(' ').filter(|part| !part.is_empty());
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(CommandError::other(format!("ERR Unexpected engine in script shebang: {engine}")));
    }
    for part in parts {
        let Some(flags) = part.strip_prefix("flags=") else {
            return Err(CommandError::other(format!("ERR Unknown lua shebang option: {part}")));
        };
        for flag in flags.split(',').filter(|flag| !flag.is_empty()) {
            if !["no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys"].contains(&flag) {
                return Err(CommandError::other(format!("ERR Unexpected flag in script shebang: {flag}")));
            }
        }
    }
    Ok(&body[end..])
}
