//! `cjson.decode` as lua-cjson 2.1.0 in Redis 7.0.15 does it: a tokenizer over a C
//! string (a NUL ends the text), numbers read with `strtod` (so `inf`, `nan`, `+1` and
//! hexadecimal are numbers), nesting limited to 1000, and its error messages, each
//! naming the token found and the character (from 1) where it starts.

use mlua::{LightUserData, Lua, LuaString, MultiValue, Table, Value as LuaValue};

use super::lua_errors::{arg_error, check_string, raise};
use super::strtod::strtod;

const MAX_DEPTH: usize = 1000;

/// `cjson.decode(text)`.
pub(crate) fn decode(lua: &Lua, args: MultiValue) -> mlua::Result<LuaValue> {
    if args.len() != 1 {
        return Err(arg_error(lua, 1, "expected 1 argument"));
    }
    let text = check_string(lua, &args, 1)?;
    let bytes = text.as_bytes();
    if bytes.len() >= 2 && (bytes[0] == 0 || bytes[1] == 0) {
        return Err(raise(lua, "JSON parser does not support UTF-16 or UTF-32"));
    }
    let mut parser = Parser { lua, text: &bytes, at: 0, depth: 0 };
    let token = parser.next_token();
    let value = parser.value(token)?;
    let token = parser.next_token();
    if token.kind != Kind::End {
        return Err(parser.expected("the end", &token));
    }
    Ok(value)
}

/// lua-cjson's token types; `Error` carries what was wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    ObjectBegin,
    ObjectEnd,
    ArrayBegin,
    ArrayEnd,
    String,
    Number(f64),
    Boolean(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::ObjectBegin => "T_OBJ_BEGIN",
            Self::ObjectEnd => "T_OBJ_END",
            Self::ArrayBegin => "T_ARR_BEGIN",
            Self::ArrayEnd => "T_ARR_END",
            Self::String => "T_STRING",
            Self::Number(_) => "T_NUMBER",
            Self::Boolean(_) => "T_BOOLEAN",
            Self::Null => "T_NULL",
            Self::Colon => "T_COLON",
            Self::Comma => "T_COMMA",
            Self::End => "T_END",
            Self::Error(what) => what,
        }
    }
}

struct Token {
    kind: Kind,
    /// Where the token starts (where the error is, for an error), from 0.
    index: usize,
    /// The decoded text of a string token.
    text: Vec<u8>,
}

struct Parser<'a> {
    lua: &'a Lua,
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    /// The byte at `at`; past the end a NUL, as in the C string.
    fn byte(&self, at: usize) -> u8 {
        self.text.get(at).copied().unwrap_or(0)
    }

    fn token(&self, kind: Kind, index: usize) -> Token {
        Token { kind, index, text: Vec::new() }
    }

    fn next_token(&mut self) -> Token {
        while matches!(self.byte(self.at), b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
        let start = self.at;
        let single = match self.byte(start) {
            0 => return self.token(Kind::End, start),
            b'{' => Kind::ObjectBegin,
            b'}' => Kind::ObjectEnd,
            b'[' => Kind::ArrayBegin,
            b']' => Kind::ArrayEnd,
            b',' => Kind::Comma,
            b':' => Kind::Colon,
            b'"' => return self.string_token(),
            b'-' | b'0'..=b'9' => return self.number_token(),
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => return self.word_token(),
            _ => return self.token(Kind::Error("invalid token"), start),
        };
        self.at += 1;
        self.token(single, start)
    }

    /// A token starting with `f`, `i`, `I`, `n`, `N`, `t` or `+`: a literal, or a number
    /// that is not JSON (`inf`, `nan`, `+1`) read with `strtod`.
    fn word_token(&mut self) -> Token {
        let start = self.at;
        let rest = &self.text[start..];
        let literal = [(&b"true"[..], Kind::Boolean(true)), (b"false", Kind::Boolean(false)), (b"null", Kind::Null)];
        for (word, kind) in literal {
            if rest.starts_with(word) {
                self.at += word.len();
                return self.token(kind, start);
            }
        }
        let prefix = |word: &[u8]| rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(word);
        if rest.first() == Some(&b'+') || prefix(b"inf") || prefix(b"nan") {
            return self.number_token();
        }
        self.token(Kind::Error("invalid token"), start)
    }

    fn number_token(&mut self) -> Token {
        let start = self.at;
        let parsed = strtod(&self.text[start..]);
        if parsed.len == 0 {
            return self.token(Kind::Error("invalid number"), start);
        }
        self.at += parsed.len;
        self.token(Kind::Number(parsed.value), start)
    }

    fn string_token(&mut self) -> Token {
        let start = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let error = |parser: &Self, what| parser.token(Kind::Error(what), parser.at);
            match self.byte(self.at) {
                b'"' => break,
                0 => return error(self, "unexpected end of string"),
                b'\\' => {
                    let escaped = match self.byte(self.at + 1) {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b't' => b'\t',
                        b'n' => b'\n',
                        b'f' => 12,
                        b'r' => b'\r',
                        b'u' => match self.unicode_escape() {
                            Some((code, len)) => {
                                out.extend_from_slice(code.encode_utf8(&mut [0; 4]).as_bytes());
                                self.at += len;
                                continue;
                            }
                            None => return error(self, "invalid unicode escape code"),
                        },
                        _ => return error(self, "invalid escape code"),
                    };
                    out.push(escaped);
                    self.at += 2;
                }
                byte => {
                    out.push(byte);
                    self.at += 1;
                }
            }
        }
        self.at += 1;
        Token { kind: Kind::String, index: start, text: out }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        (at..at + 4).try_fold(0, |acc, i| Some((acc << 4) | char::from(self.byte(i)).to_digit(16)?))
    }

    /// `\uXXXX` (or a surrogate pair of them) at the cursor: the character and the
    /// length of the escape.
    fn unicode_escape(&self) -> Option<(char, usize)> {
        let high = self.hex4(self.at + 2)?;
        if high & 0xF800 != 0xD800 {
            return Some((char::from_u32(high)?, 6));
        }
        if high & 0x400 != 0 || self.byte(self.at + 6) != b'\\' || self.byte(self.at + 7) != b'u' {
            return None;
        }
        let low = self.hex4(self.at + 8).filter(|low| low & 0xFC00 == 0xDC00)?;
        Some((char::from_u32((((high & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000)?, 12))
    }

    fn expected(&self, what: &str, token: &Token) -> mlua::Error {
        raise(self.lua, format!("Expected {what} but found {} at character {}", token.kind.name(), token.index + 1))
    }

    /// A JSON value starting with `token`. Iterative (an explicit stack of open
    /// tables), so 1000 levels of nesting need no more native stack than one.
    fn value(&mut self, mut token: Token) -> mlua::Result<LuaValue> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            let mut value = match token.kind {
                Kind::String => LuaValue::String(self.lua.create_string(&token.text)?),
                Kind::Number(number) => LuaValue::Number(number),
                Kind::Boolean(b) => LuaValue::Boolean(b),
                Kind::Null => LuaValue::LightUserData(LightUserData(std::ptr::null_mut())),
                Kind::ObjectBegin | Kind::ArrayBegin => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        let text =
                            format!("Found too many nested data structures ({}) at character {}", self.depth, self.at);
                        return Err(raise(self.lua, text));
                    }
                    let table = self.lua.create_table()?;
                    let first = self.next_token();
                    if token.kind == Kind::ArrayBegin {
                        if first.kind == Kind::ArrayEnd {
                            self.depth -= 1;
                            LuaValue::Table(table)
                        } else {
                            stack.push(Open::Array { table, next: 1 });
                            token = first;
                            continue;
                        }
                    } else if first.kind == Kind::ObjectEnd {
                        self.depth -= 1;
                        LuaValue::Table(table)
                    } else {
                        let key = self.key(first)?;
                        stack.push(Open::Object { table, key });
                        token = self.next_token();
                        continue;
                    }
                }
                _ => return Err(self.expected("value", &token)),
            };
            // Put the value in the innermost open table; close the tables it ends.
            loop {
                let after = match stack.last_mut() {
                    None => return Ok(value),
                    Some(Open::Array { table, next }) => {
                        table.raw_set(*next, value)?;
                        *next += 1;
                        let after = self.next_token();
                        match after.kind {
                            Kind::ArrayEnd => None,
                            Kind::Comma => Some(self.next_token()),
                            _ => return Err(self.expected("comma or array end", &after)),
                        }
                    }
                    Some(Open::Object { table, key }) => {
                        table.raw_set(key.clone(), value)?;
                        let after = self.next_token();
                        match after.kind {
                            Kind::ObjectEnd => None,
                            Kind::Comma => {
                                let next = self.next_token();
                                *key = self.key(next)?;
                                Some(self.next_token())
                            }
                            _ => return Err(self.expected("comma or object end", &after)),
                        }
                    }
                };
                match after {
                    Some(next) => {
                        token = next;
                        break;
                    }
                    None => {
                        // The table just closed (the stack is not empty here).
                        let Some(Open::Array { table, .. } | Open::Object { table, .. }) = stack.pop() else {
                            return Ok(LuaValue::Nil);
                        };
                        self.depth -= 1;
                        value = LuaValue::Table(table);
                    }
                }
            }
        }
    }

    /// An object's key (`token`) and the colon after it.
    fn key(&mut self, token: Token) -> mlua::Result<LuaString> {
        if token.kind != Kind::String {
            return Err(self.expected("object key string", &token));
        }
        let key = self.lua.create_string(&token.text)?;
        let colon = self.next_token();
        if colon.kind != Kind::Colon {
            return Err(self.expected("colon", &colon));
        }
        Ok(key)
    }
}

/// A table being read: an array with its next index, or an object with the key of the
/// value being read.
enum Open {
    Array { table: Table, next: i64 },
    Object { table: Table, key: LuaString },
}
