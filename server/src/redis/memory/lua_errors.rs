//! Errors raised from Rust into a script, in the form Lua 5.1's C API gives them in
//! Redis: `luaL_error` prefixes the position of the Lua code that called the failing
//! function (`user_script:12: `), `luaL_argerror` names the function as its caller
//! does (`bad argument #1 to 'decode'`), and `redis.call` raises a bare error table.

use mlua::{Lua, LuaString, MultiValue, Value as LuaValue};

use super::lua_convert::error_table;

/// Lua's `MAXSRC`: the size of a chunk id in a syntax error, with its NUL.
const SYNTAX_ID_SIZE: usize = 80;

/// An error raised from Rust into a script, in the form Redis raises it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Raise {
    /// An error table `{err = text}` (what `redis.call` raises).
    #[error("{text}")]
    Table { text: String, from_command: bool },
    /// A message, with its position already in front as `luaL_error` puts it.
    #[error("{0}")]
    Message(String),
}

/// `luaL_where(L, 1)`: `chunk:line: ` of the Lua function that called the running Rust
/// function, or nothing if a C function called it.
pub(crate) fn position(lua: &Lua) -> String {
    lua.inspect_stack(1, |debug| {
        let line = debug.current_line().filter(|&line| line > 0)?;
        let short_src = debug.source().short_src?.into_owned();
        Some(format!("{short_src}:{line}: "))
    })
    .flatten()
    .unwrap_or_default()
}

/// `luaL_error`: `text` after the position of the calling Lua code.
pub(crate) fn raise(lua: &Lua, text: impl AsRef<str>) -> mlua::Error {
    mlua::Error::external(Raise::Message(format!("{}{}", position(lua), text.as_ref())))
}

/// An error table raised without position (`luaPushError` + `luaRaiseError`).
pub(crate) fn raise_table(text: impl Into<String>, from_command: bool) -> mlua::Error {
    mlua::Error::external(Raise::Table { text: text.into(), from_command })
}

/// `luaL_argerror`: argument `narg` (from 1) of the running Rust function is wrong, the
/// function named as the calling code names it (`?` when a C function called it).
pub(crate) fn arg_error(lua: &Lua, narg: usize, extramsg: &str) -> mlua::Error {
    let names = lua.inspect_stack(0, |debug| {
        let names = debug.names();
        (names.name.map(|name| name.into_owned()), names.name_what)
    });
    let Some((name, what)) = names else {
        return raise(lua, format!("bad argument #{narg} ({extramsg})"));
    };
    let name = name.unwrap_or_else(|| "?".to_owned());
    let mut narg = narg;
    if what == Some("method") {
        narg -= 1;
        if narg == 0 {
            return raise(lua, format!("calling '{name}' on bad self ({extramsg})"));
        }
    }
    raise(lua, format!("bad argument #{narg} to '{name}' ({extramsg})"))
}

/// `luaL_typerror`: argument `narg` (from 1) of `args` is not a `expected`.
pub(crate) fn type_error(lua: &Lua, args: &MultiValue, narg: usize, expected: &str) -> mlua::Error {
    let got = args.get(narg - 1).map_or("no value", type_name);
    arg_error(lua, narg, &format!("{expected} expected, got {got}"))
}

/// `luaL_checklstring`: argument `narg` (from 1) as a string (a number converted).
pub(crate) fn check_string(lua: &Lua, args: &MultiValue, narg: usize) -> mlua::Result<LuaString> {
    let value = args.get(narg - 1).cloned().unwrap_or(LuaValue::Nil);
    match lua.coerce_string(value)? {
        Some(text) => Ok(text),
        None => Err(type_error(lua, args, narg, "string")),
    }
}

/// Lua's name for the type of `value` (`lua_typename`).
pub(crate) fn type_name(value: &LuaValue) -> &'static str {
    match value {
        LuaValue::Integer(_) | LuaValue::Number(_) => "number",
        LuaValue::LightUserData(_) | LuaValue::UserData(_) | LuaValue::Error(_) | LuaValue::Other(_) => "userdata",
        other => other.type_name(),
    }
}

/// The Lua value of an error raised from Rust (mlua passes it around as an opaque
/// error value): the table or message Redis would have raised. Other values as they are.
pub(crate) fn decode_raised(lua: &Lua, value: LuaValue) -> mlua::Result<LuaValue> {
    let LuaValue::Error(error) = value else { return Ok(value) };
    Ok(match error.downcast_ref::<Raise>() {
        Some(Raise::Table { text, from_command }) => LuaValue::Table(error_table(lua, text, *from_command)?),
        Some(Raise::Message(text)) => LuaValue::String(lua.create_string(text)?),
        None => LuaValue::String(lua.create_string(error.to_string())?),
    })
}

/// Lua's `luaO_chunkid`: how a chunk name shows in messages (`=name` as `name`,
/// `@file` as `file`, source text as `[string "first line..."]`) in `size` bytes.
fn chunk_id(name: &[u8], size: usize) -> String {
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match name.split_first() {
        Some((b'=', rest)) => text(&rest[..rest.len().min(size - 1)]),
        Some((b'@', rest)) => {
            let room = size - " '...' ".len() - 1;
            if rest.len() > room { format!("...{}", text(&rest[rest.len() - room..])) } else { text(rest) }
        }
        _ => {
            let room = size - " [string \"...\"] ".len() - 1;
            let line = name.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(name.len());
            let len = line.min(room);
            let more = if len < name.len() { "..." } else { "" };
            format!("[string \"{}{more}\"]", text(&name[..len]))
        }
    }
}

/// The compile error Lua 5.1 as Redis builds it gives a chunk starting with ESC (Redis
/// reads every chunk as text, so the byte is an unexpected symbol).
pub(crate) fn binary_chunk_error(name: &[u8]) -> String {
    format!("{}:1: unexpected symbol near 'char(27)'", chunk_id(name, SYNTAX_ID_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lua's `LUA_IDSIZE`: the size of a chunk id in a runtime error, with its NUL.
    const ID_SIZE: usize = 60;

    #[test]
    fn chunk_ids_are_shortened_as_lua_shortens_them() {
        assert_eq!(chunk_id(b"@user_script", ID_SIZE), "user_script");
        assert_eq!(chunk_id(b"=runner", ID_SIZE), "runner");
        assert_eq!(chunk_id(b"return 1", ID_SIZE), "[string \"return 1\"]");
        assert_eq!(chunk_id(b"x\0y", ID_SIZE), "[string \"x\"]");
        assert_eq!(chunk_id(b"a\nb", ID_SIZE), "[string \"a...\"]");
        let long = "x".repeat(70);
        assert_eq!(chunk_id(long.as_bytes(), ID_SIZE), format!("[string \"{}...\"]", &long[..43]));
        let expected = format!("[string \"{}...\"]:1: unexpected symbol near 'char(27)'", &long[..63]);
        assert_eq!(binary_chunk_error(long.as_bytes()), expected);
    }
}
