//! `cjson.encode`/`cjson.decode` as Redis's bundled lua-cjson 2.1 does them: `{}` for an
//! empty table, `\/` for `/`, numbers as `%.14g`, UTF-8 passed through raw, arrays with
//! nil holes as `null`, sparse arrays refused, `cjson.null` a NULL light userdata.

use mlua::{LightUserData, Lua, MultiValue, Table, Value as LuaValue};

use super::lua_api::raise;
use super::text::format_g;

const MAX_DEPTH: usize = 1000;

pub(crate) fn module(lua: &Lua) -> mlua::Result<Table> {
    let cjson = lua.create_table()?;
    cjson.raw_set(
        "encode",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(raise("bad argument #1 to 'encode' (expected 1 argument)"));
            }
            let mut out = Vec::new();
            encode(&args[0], 0, &mut out)?;
            lua.create_string(out)
        })?,
    )?;
    cjson.raw_set(
        "decode",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(raise("bad argument #1 to 'decode' (expected 1 argument)"));
            }
            let Some(text) = lua.coerce_string(args[0].clone())? else {
                return Err(raise(format!(
                    "bad argument #1 to 'decode' (string expected, got {})",
                    args[0].type_name()
                )));
            };
            let bytes = text.as_bytes();
            let mut parser = Parser { lua, text: &bytes, at: 0 };
            let value = parser.value(0)?;
            parser.skip_space();
            if parser.at < parser.text.len() {
                return Err(parser.expected("the end"));
            }
            Ok(value)
        })?,
    )?;
    cjson.raw_set("null", null())?;
    cjson.raw_set("_NAME", "cjson")?;
    cjson.raw_set("_VERSION", "2.1.0")?;
    Ok(cjson)
}

fn null() -> LuaValue {
    LuaValue::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn cannot(value: &LuaValue, reason: &str) -> mlua::Error {
    raise(format!("Cannot serialise {}: {reason}", value.type_name()))
}

fn encode(value: &LuaValue, depth: usize, out: &mut Vec<u8>) -> mlua::Result<()> {
    match value {
        LuaValue::Nil => out.extend_from_slice(b"null"),
        LuaValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        LuaValue::Integer(i) => out.extend_from_slice(format_g(*i as f64, 14).as_bytes()),
        LuaValue::Number(n) if n.is_finite() => out.extend_from_slice(format_g(*n, 14).as_bytes()),
        LuaValue::Number(_) => return Err(cannot(value, "must not be NaN or Inf")),
        LuaValue::String(text) => encode_string(&text.as_bytes(), out),
        LuaValue::LightUserData(pointer) if pointer.0.is_null() => out.extend_from_slice(b"null"),
        LuaValue::Table(table) => {
            let depth = depth + 1;
            if depth > MAX_DEPTH {
                return Err(raise(format!("Cannot serialise, excessive nesting ({depth})")));
            }
            match array_length(table, value)? {
                Some(len) if len > 0 => {
                    out.push(b'[');
                    for index in 1..=len {
                        if index > 1 {
                            out.push(b',');
                        }
                        encode(&table.raw_get::<LuaValue>(index)?, depth, out)?;
                    }
                    out.push(b']');
                }
                _ => encode_object(table, depth, out)?,
            }
        }
        _ => return Err(cannot(value, "type not supported")),
    }
    Ok(())
}

fn encode_object(table: &Table, depth: usize, out: &mut Vec<u8>) -> mlua::Result<()> {
    out.push(b'{');
    let mut first = true;
    for pair in table.pairs::<LuaValue, LuaValue>() {
        let (key, value) = pair?;
        if !first {
            out.push(b',');
        }
        first = false;
        match &key {
            LuaValue::Integer(_) | LuaValue::Number(_) => {
                out.push(b'"');
                encode(&key, depth, out)?;
                out.extend_from_slice(b"\":");
            }
            LuaValue::String(text) => {
                encode_string(&text.as_bytes(), out);
                out.push(b':');
            }
            _ => return Err(cannot(&key, "table key must be a number or string")),
        }
        encode(&value, depth, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// lua-cjson's `lua_array_length`: `Some(max key)` if every key is an integer >= 1 and
/// the array is not excessively sparse (more than twice as long as it has items, and
/// longer than 10), `None` if it is an object.
fn array_length(table: &Table, value: &LuaValue) -> mlua::Result<Option<usize>> {
    let (mut max, mut items) = (0usize, 0usize);
    for pair in table.pairs::<LuaValue, LuaValue>() {
        let (key, _) = pair?;
        let k = match key {
            LuaValue::Integer(i) => i as f64,
            LuaValue::Number(n) => n,
            _ => return Ok(None),
        };
        if k < 1.0 || k.floor() != k {
            return Ok(None);
        }
        max = max.max(k as usize);
        items += 1;
    }
    if max > items * 2 && max > 10 {
        return Err(cannot(value, "excessively sparse array"));
    }
    Ok(Some(max))
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

/// A recursive-descent JSON reader with lua-cjson's error messages.
struct Parser<'a> {
    lua: &'a Lua,
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The name lua-cjson gives the token at the cursor.
    fn token_name(&self) -> &'static str {
        match self.text.get(self.at) {
            None => "T_END",
            Some(b'{') => "T_OBJ_BEGIN",
            Some(b'}') => "T_OBJ_END",
            Some(b'[') => "T_ARR_BEGIN",
            Some(b']') => "T_ARR_END",
            Some(b'"') => "T_STRING",
            Some(b':') => "T_COLON",
            Some(b',') => "T_COMMA",
            Some(b'-' | b'0'..=b'9') => "T_NUMBER",
            Some(_) if self.text[self.at..].starts_with(b"true") || self.text[self.at..].starts_with(b"false") => {
                "T_BOOLEAN"
            }
            Some(_) if self.text[self.at..].starts_with(b"null") => "T_NULL",
            Some(_) => "invalid token",
        }
    }

    fn expected(&self, what: &str) -> mlua::Error {
        raise(format!("Expected {what} but found {} at character {}", self.token_name(), self.at + 1))
    }

    fn value(&mut self, depth: usize) -> mlua::Result<LuaValue> {
        self.skip_space();
        let rest = &self.text[self.at.min(self.text.len())..];
        match rest.first() {
            Some(b'{') | Some(b'[') if depth + 1 > MAX_DEPTH => Err(raise(format!(
                "Found too many nested data structures ({}) at character {}",
                depth + 1,
                self.at + 1
            ))),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(LuaValue::String(self.lua.create_string(self.string()?)?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ if rest.starts_with(b"true") => self.word(4, LuaValue::Boolean(true)),
            _ if rest.starts_with(b"false") => self.word(5, LuaValue::Boolean(false)),
            _ if rest.starts_with(b"null") => self.word(4, null()),
            _ => Err(self.expected("value")),
        }
    }

    fn word(&mut self, len: usize, value: LuaValue) -> mlua::Result<LuaValue> {
        self.at += len;
        Ok(value)
    }

    fn number(&mut self) -> mlua::Result<LuaValue> {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        let parsed = std::str::from_utf8(&self.text[start..self.at]).ok().and_then(|t| t.parse::<f64>().ok());
        match parsed {
            Some(number) => Ok(LuaValue::Number(number)),
            None => {
                self.at = start;
                Err(raise(format!("Expected value but found invalid number at character {}", start + 1)))
            }
        }
    }

    fn string(&mut self) -> mlua::Result<Vec<u8>> {
        let start = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.text.get(self.at) else {
                return Err(raise(format!(
                    "Expected value but found unexpected end of string at character {}",
                    start + 1
                )));
            };
            self.at += 1;
            match byte {
                b'"' => return Ok(out),
                b'\\' => {
                    let escape = self.text.get(self.at).copied();
                    self.at += 1;
                    match escape {
                        Some(b'"') => out.push(b'"'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'/') => out.push(b'/'),
                        Some(b'b') => out.push(8),
                        Some(b'f') => out.push(12),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'u') => self.unicode(&mut out, start)?,
                        _ => {
                            return Err(raise(format!(
                                "Expected value but found invalid escape code at character {}",
                                start + 1
                            )));
                        }
                    }
                }
                _ => out.push(byte),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        let value = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
        self.at += 4;
        Some(value)
    }

    fn unicode(&mut self, out: &mut Vec<u8>, start: usize) -> mlua::Result<()> {
        let invalid =
            || raise(format!("Expected value but found invalid unicode escape code at character {}", start + 1));
        let high = self.hex4().ok_or_else(invalid)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.text.get(self.at..self.at + 2) != Some(b"\\u") {
                return Err(invalid());
            }
            self.at += 2;
            let low = self.hex4().filter(|low| (0xDC00..0xE000).contains(low)).ok_or_else(invalid)?;
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00..0xE000).contains(&high) {
            return Err(invalid());
        } else {
            high
        };
        let c = char::from_u32(code).ok_or_else(invalid)?;
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn object(&mut self, depth: usize) -> mlua::Result<LuaValue> {
        self.at += 1;
        let table = self.lua.create_table()?;
        self.skip_space();
        if self.text.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(LuaValue::Table(table));
        }
        loop {
            self.skip_space();
            if self.text.get(self.at) != Some(&b'"') {
                return Err(self.expected("object key string"));
            }
            let key = self.string()?;
            self.skip_space();
            if self.text.get(self.at) != Some(&b':') {
                return Err(self.expected("colon"));
            }
            self.at += 1;
            let value = self.value(depth)?;
            table.raw_set(self.lua.create_string(key)?, value)?;
            self.skip_space();
            match self.text.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(LuaValue::Table(table));
                }
                _ => return Err(self.expected("comma or object end")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> mlua::Result<LuaValue> {
        self.at += 1;
        let table = self.lua.create_table()?;
        self.skip_space();
        if self.text.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(LuaValue::Table(table));
        }
        for index in 1.. {
            let value = self.value(depth)?;
            table.raw_set(index, value)?;
            self.skip_space();
            match self.text.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.expected("comma or array end")),
            }
        }
        Ok(LuaValue::Table(table))
    }
}
