//! The libraries Redis adds to Lua that are written in C there: `bit` (LuaBitOp) and
//! Redis's own `math.random`/`math.randomseed` (rand48, the same sequence on every
//! machine, not reset between scripts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mlua::{Lua, MultiValue, Table, Value as LuaValue};

use super::lua_errors::{arg_error, raise, type_error};

type Unary = fn(i32) -> i32;
type Binary = fn(i32, i32) -> i32;
type Shift = fn(i32, u32) -> i32;

/// LuaBitOp's argument conversion: the number's low 32 bits after adding 2^52 + 2^51
/// (round to nearest, wrap modulo 2^32).
fn to_bit(lua: &Lua, args: &MultiValue, index: usize) -> mlua::Result<i32> {
    let value = args.get(index).cloned().unwrap_or(LuaValue::Nil);
    let Some(number) = lua.coerce_number(value)? else {
        return Err(type_error(lua, args, index + 1, "number"));
    };
    let shifted = number + 6_755_399_441_055_744.0;
    Ok((shifted.to_bits() as u32) as i32)
}

pub(crate) fn bit_module(lua: &Lua) -> mlua::Result<Table> {
    let bit = lua.create_table()?;
    let unary: [(&str, Unary); 3] = [("tobit", |x| x), ("bnot", |x| !x), ("bswap", |x| x.swap_bytes())];
    for (name, op) in unary {
        bit.raw_set(
            name,
            lua.create_function(move |lua, args: MultiValue| Ok(f64::from(op(to_bit(lua, &args, 0)?))))?,
        )?;
    }
    let folds: [(&str, Binary); 3] = [("band", |a, b| a & b), ("bor", |a, b| a | b), ("bxor", |a, b| a ^ b)];
    for (name, op) in folds {
        bit.raw_set(
            name,
            lua.create_function(move |lua, args: MultiValue| {
                let mut acc = to_bit(lua, &args, 0)?;
                for index in 1..args.len() {
                    acc = op(acc, to_bit(lua, &args, index)?);
                }
                Ok(f64::from(acc))
            })?,
        )?;
    }
    let shifts: [(&str, Shift); 5] = [
        ("lshift", |x, n| ((x as u32) << n) as i32),
        ("rshift", |x, n| ((x as u32) >> n) as i32),
        ("arshift", |x, n| x >> n),
        ("rol", |x, n| (x as u32).rotate_left(n) as i32),
        ("ror", |x, n| (x as u32).rotate_right(n) as i32),
    ];
    for (name, op) in shifts {
        bit.raw_set(
            name,
            lua.create_function(move |lua, args: MultiValue| {
                let x = to_bit(lua, &args, 0)?;
                let n = (to_bit(lua, &args, 1)? as u32) & 31;
                Ok(f64::from(op(x, n)))
            })?,
        )?;
    }
    bit.raw_set(
        "tohex",
        lua.create_function(|lua, args: MultiValue| {
            let x = to_bit(lua, &args, 0)? as u32;
            let n = if args.len() > 1 { to_bit(lua, &args, 1)? } else { 8 };
            let (upper, digits) = (n < 0, n.unsigned_abs().min(8) as usize);
            let text = format!("{x:08x}");
            let text = &text[8 - digits..];
            Ok(if upper { text.to_ascii_uppercase() } else { text.to_owned() })
        })?,
    )?;
    Ok(bit)
}

/// One step of rand48: `x = (0x5DEECE66D * x + 0xB) mod 2^48`; the top 31 bits.
fn lrand48(state: &AtomicU64) -> i32 {
    let next = state.load(Ordering::Relaxed).wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB) & ((1 << 48) - 1);
    state.store(next, Ordering::Relaxed);
    i32::try_from(next >> 17).unwrap_or(i32::MAX)
}

/// `luaL_checkint`: a number (or numeric string), truncated toward zero.
fn check_int(lua: &Lua, args: &MultiValue, index: usize) -> mlua::Result<i32> {
    let value = args.get(index).cloned().unwrap_or(LuaValue::Nil);
    match lua.coerce_number(value)? {
        Some(number) => Ok(number as i64 as i32),
        None => Err(type_error(lua, args, index + 1, "number")),
    }
}

/// Replaces `math.random` and `math.randomseed` with Redis's (rand48 over `state`).
pub(crate) fn install_random(lua: &Lua, globals: &Table, state: Arc<AtomicU64>) -> mlua::Result<()> {
    let math: Table = globals.raw_get("math")?;
    let random_state = state.clone();
    math.raw_set(
        "random",
        lua.create_function(move |lua, args: MultiValue| {
            const MAX: i32 = i32::MAX;
            let r = f64::from(lrand48(&random_state) % MAX) / f64::from(MAX);
            match args.len() {
                0 => Ok(r),
                1 => {
                    let upper = check_int(lua, &args, 0)?;
                    if upper < 1 {
                        return Err(arg_error(lua, 1, "interval is empty"));
                    }
                    Ok((r * f64::from(upper)).floor() + 1.0)
                }
                2 => {
                    let (lower, upper) = (check_int(lua, &args, 0)?, check_int(lua, &args, 1)?);
                    if lower > upper {
                        return Err(arg_error(lua, 2, "interval is empty"));
                    }
                    Ok((r * (f64::from(upper) - f64::from(lower) + 1.0)).floor() + f64::from(lower))
                }
                _ => Err(raise(lua, "wrong number of arguments")),
            }
        })?,
    )?;
    math.raw_set(
        "randomseed",
        lua.create_function(move |lua, args: MultiValue| {
            let seed = check_int(lua, &args, 0)? as u32;
            state.store((u64::from(seed) << 16) | 0x330E, Ordering::Relaxed);
            Ok(())
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand48_follows_glibc_from_srand48_and_from_redis_initial_state() {
        // Checked against glibc's srand48(0)/lrand48() and seed48({0x330E, 0xABCD, 0x1234}).
        let seeded = AtomicU64::new(0x330E);
        assert_eq!((lrand48(&seeded), lrand48(&seeded)), (366_850_414, 1_610_402_240));
        let initial = AtomicU64::new(super::super::core::RAND48_INITIAL);
        assert_eq!((lrand48(&initial), lrand48(&initial)), (851_401_618, 1_804_928_587));
    }
}
