//! `cjson.encode`/`cjson.decode` as Redis's bundled lua-cjson 2.1 does them: `{}` for an
//! empty table, `\/` for `/`, numbers as `%.14g`, UTF-8 passed through raw, arrays with
//! nil holes as `null`, sparse arrays refused, `cjson.null` a NULL light userdata.

use mlua::{LightUserData, Lua, MultiValue, Table, Value as LuaValue};

use super::cjson_decode;
use super::lua_errors::{arg_error, raise, type_name};
use super::text::format_g;

const MAX_DEPTH: usize = 1000;

pub(crate) fn module(lua: &Lua) -> mlua::Result<Table> {
    let cjson = lua.create_table()?;
    cjson.raw_set(
        "encode",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(arg_error(lua, 1, "expected 1 argument"));
            }
            let mut out = Vec::new();
            encode(lua, &args[0], &mut out)?;
            lua.create_string(out)
        })?,
    )?;
    cjson.raw_set("decode", lua.create_function(cjson_decode::decode)?)?;
    cjson.raw_set("null", null())?;
    cjson.raw_set("_NAME", "cjson")?;
    cjson.raw_set("_VERSION", "2.1.0")?;
    Ok(cjson)
}

fn null() -> LuaValue {
    LuaValue::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn cannot(lua: &Lua, value: &LuaValue, reason: &str) -> mlua::Error {
    raise(lua, format!("Cannot serialise {}: {reason}", type_name(value)))
}

/// A table being written: an array by index, or an object by its pairs (in `next`
/// order, as lua-cjson walks them).
enum Open {
    Array { table: Table, next: usize, len: usize },
    Object { pairs: Vec<(LuaValue, LuaValue)>, next: usize },
}

/// Writes `value` as JSON. Iterative (an explicit stack of open tables), so 1000 levels
/// of nesting need no more native stack than one.
fn encode(lua: &Lua, value: &LuaValue, out: &mut Vec<u8>) -> mlua::Result<()> {
    let mut stack: Vec<Open> = Vec::new();
    let mut current = Some(value.clone());
    loop {
        if let Some(value) = current.take() {
            let LuaValue::Table(table) = value else {
                encode_scalar(lua, &value, out)?;
                continue;
            };
            let depth = stack.len() + 1;
            if depth > MAX_DEPTH {
                return Err(raise(lua, format!("Cannot serialise, excessive nesting ({depth})")));
            }
            match usize::try_from(array_length(lua, &table)?) {
                Ok(len) if len > 0 => {
                    out.push(b'[');
                    stack.push(Open::Array { table, next: 1, len });
                }
                _ => {
                    out.push(b'{');
                    let pairs = table.pairs::<LuaValue, LuaValue>().collect::<mlua::Result<Vec<_>>>()?;
                    stack.push(Open::Object { pairs, next: 0 });
                }
            }
        }
        match stack.last_mut() {
            None => return Ok(()),
            Some(Open::Array { table, next, len }) => {
                if *next > *len {
                    out.push(b']');
                    stack.pop();
                    continue;
                }
                if *next > 1 {
                    out.push(b',');
                }
                current = Some(table.raw_get::<LuaValue>(*next)?);
                *next += 1;
            }
            Some(Open::Object { pairs, next }) => {
                let Some((key, value)) = pairs.get(*next).cloned() else {
                    out.push(b'}');
                    stack.pop();
                    continue;
                };
                if *next > 0 {
                    out.push(b',');
                }
                *next += 1;
                match &key {
                    LuaValue::Integer(_) | LuaValue::Number(_) => {
                        out.push(b'"');
                        encode_scalar(lua, &key, out)?;
                        out.extend_from_slice(b"\":");
                    }
                    LuaValue::String(text) => {
                        encode_string(&text.as_bytes(), out);
                        out.push(b':');
                    }
                    _ => return Err(cannot(lua, &key, "table key must be a number or string")),
                }
                current = Some(value);
            }
        }
    }
}

/// Anything but a table.
fn encode_scalar(lua: &Lua, value: &LuaValue, out: &mut Vec<u8>) -> mlua::Result<()> {
    match value {
        LuaValue::Nil => out.extend_from_slice(b"null"),
        LuaValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        LuaValue::Integer(i) => out.extend_from_slice(format_g(*i as f64, 14).as_bytes()),
        LuaValue::Number(n) if n.is_finite() => out.extend_from_slice(format_g(*n, 14).as_bytes()),
        LuaValue::Number(_) => return Err(cannot(lua, value, "must not be NaN or Inf")),
        LuaValue::String(text) => encode_string(&text.as_bytes(), out),
        LuaValue::LightUserData(pointer) if pointer.0.is_null() => out.extend_from_slice(b"null"),
        _ => return Err(cannot(lua, value, "type not supported")),
    }
    Ok(())
}

/// lua-cjson's `lua_array_length`, C `int` arithmetic and all: the largest key if every
/// key is a whole number >= 1 (a key past `i32::MAX` converts to `i32::MIN`, as x86-64
/// does, which makes the table an object), -1 for an object; an error if the array is
/// excessively sparse (longer than 10 and than twice its items).
fn array_length(lua: &Lua, table: &Table) -> mlua::Result<i32> {
    let (mut max, mut items) = (0i32, 0i32);
    for pair in table.pairs::<LuaValue, LuaValue>() {
        let k = match pair?.0 {
            LuaValue::Integer(i) => i as f64,
            LuaValue::Number(n) => n,
            _ => return Ok(-1),
        };
        if k == 0.0 || k.floor() != k || k < 1.0 {
            return Ok(-1);
        }
        if k > f64::from(max) {
            max = if k < 2_147_483_648.0 { k as i32 } else { i32::MIN };
        }
        items = items.wrapping_add(1);
    }
    if max > items.wrapping_mul(2) && max > 10 {
        return Err(cannot(lua, &LuaValue::Table(table.clone()), "excessively sparse array"));
    }
    Ok(max)
}

fn encode_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..0x20 | 0x7f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}
