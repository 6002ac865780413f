//! C's `strtod` and `strtoull` as glibc implements them (C locale), and the ways Redis
//! 7.0 and its bundled lua-cjson read numbers with them: hexadecimal (`0x10`, `0x1p3`),
//! `inf`/`infinity`/`nan(...)` in any case, leading white space, a number ending at the
//! first byte that cannot continue it, and a NUL ending the text as in a C string.

/// What `strtod` read at the start of a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Strtod {
    pub(crate) value: f64,
    /// Bytes consumed: 0 if no number was read (`endptr == nptr`).
    pub(crate) len: usize,
    /// `errno == ERANGE`: a finite number overflowed to infinity or underflowed to zero.
    pub(crate) range_error: bool,
}

/// C's `isspace` in the C locale.
pub(crate) fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `strtod(text, &end)`.
pub(crate) fn strtod(text: &[u8]) -> Strtod {
    let none = Strtod { value: 0.0, len: 0, range_error: false };
    let mut at = text.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = match text.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let rest = &text[at..];
    let sign = |value: f64| if negative { -value } else { value };
    if starts_with_ignore_case(rest, b"inf") {
        let len = if starts_with_ignore_case(&rest[3..], b"inity") { 8 } else { 3 };
        return Strtod { value: sign(f64::INFINITY), len: at + len, range_error: false };
    }
    if starts_with_ignore_case(rest, b"nan") {
        let mut len = 3;
        if rest.get(3) == Some(&b'(') {
            let chars = rest[4..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            if rest.get(4 + chars) == Some(&b')') {
                len = 5 + chars;
            }
        }
        return Strtod { value: sign(f64::NAN), len: at + len, range_error: false };
    }
    let hex_digit_at = |i: usize| rest.get(i).is_some_and(u8::is_ascii_hexdigit);
    if rest.len() > 1
        && rest[0] == b'0'
        && rest[1].eq_ignore_ascii_case(&b'x')
        && (hex_digit_at(2) || (rest.get(2) == Some(&b'.') && hex_digit_at(3)))
    {
        let (value, len, range_error) = hexadecimal(&rest[2..]);
        return Strtod { value: sign(value), len: at + 2 + len, range_error };
    }
    match decimal(rest) {
        Some((value, len, range_error)) => Strtod { value: sign(value), len: at + len, range_error },
        None => none,
    }
}

/// A decimal number (digits, an optional fraction, an optional exponent): its value,
/// length and whether it was out of range; `None` without a digit.
fn decimal(text: &[u8]) -> Option<(f64, usize, bool)> {
    let digits = |from: usize| text[from.min(text.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    let whole = digits(0);
    let mut len = whole;
    let mut fraction = 0;
    if text.get(len) == Some(&b'.') {
        fraction = digits(len + 1);
        len += 1 + fraction;
    }
    if whole + fraction == 0 {
        return None;
    }
    let mantissa_end = len;
    if text.get(len).is_some_and(|b| b.eq_ignore_ascii_case(&b'e')) {
        let signed = usize::from(matches!(text.get(len + 1), Some(b'+' | b'-')));
        let exponent = digits(len + 1 + signed);
        if exponent > 0 {
            len += 1 + signed + exponent;
        }
    }
    let literal = std::str::from_utf8(&text[..len]).ok()?;
    let value: f64 = literal.parse().ok()?;
    let nonzero = text[..mantissa_end].iter().any(|b| (b'1'..=b'9').contains(b));
    let range_error = value.is_infinite() || (value == 0.0 && nonzero);
    Some((value, len, range_error))
}

/// The digits after `0x`: hexadecimal digits with an optional point, then an optional
/// binary exponent `p[+-]digits`; rounded to nearest, ties to even, like glibc.
fn hexadecimal(text: &[u8]) -> (f64, usize, bool) {
    // The first 16 significant digits, whether any later digit is non-zero, and the
    // power of two the kept digits are to be multiplied by.
    let (mut mantissa, mut kept, mut sticky, mut exponent) = (0u64, 0u32, false, 0i64);
    let mut len = 0;
    let mut seen_point = false;
    while let Some(&byte) = text.get(len) {
        if byte == b'.' && !seen_point {
            seen_point = true;
            len += 1;
            continue;
        }
        let Some(digit) = char::from(byte).to_digit(16) else { break };
        len += 1;
        if mantissa == 0 && digit == 0 {
            if seen_point {
                exponent -= 4;
            }
            continue;
        }
        if kept < 16 {
            mantissa = (mantissa << 4) | u64::from(digit);
            kept += 1;
            if seen_point {
                exponent -= 4;
            }
        } else {
            sticky |= digit != 0;
            if !seen_point {
                exponent += 4;
            }
        }
    }
    if text.get(len).is_some_and(|b| b.eq_ignore_ascii_case(&b'p')) {
        let signed = usize::from(matches!(text.get(len + 1), Some(b'+' | b'-')));
        let start = len + 1 + signed;
        let count = text[start.min(text.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
        if count > 0 {
            // Saturate: anything this large is infinite or zero anyway.
            let mut power: i64 = 0;
            for &digit in &text[start..start + count] {
                power = (power * 10 + i64::from(digit - b'0')).min(1 << 40);
            }
            exponent += if text[len + 1] == b'-' { -power } else { power };
            len = start + count;
        }
    }
    if mantissa == 0 {
        return (0.0, len, false);
    }
    let value = round_binary(mantissa, sticky, exponent);
    (value, len, value.is_infinite() || value == 0.0)
}

/// `mantissa * 2^exponent` (plus a bit less than one unit if `sticky`), rounded to the
/// nearest double, ties to even.
fn round_binary(mantissa: u64, sticky: bool, exponent: i64) -> f64 {
    let shift = mantissa.leading_zeros();
    // Top bit at position 127 of a 128-bit number: value = wide * 2^(exponent - 64 - shift).
    let wide = (u128::from(mantissa) << (64 + shift)) | u128::from(sticky);
    let low = exponent - 64 - i64::from(shift);
    let top = low + 127;
    if top > 1023 {
        return f64::INFINITY;
    }
    // Bits kept: 53 for a normal number, fewer for a subnormal one.
    let keep = if top >= -1022 { 53 } else { top + 1075 };
    if keep < 0 {
        return 0.0;
    }
    let drop = u32::try_from(128 - keep).unwrap_or(128);
    let (kept, rest, half) = if drop >= 128 {
        (0u128, wide, 1u128 << 127)
    } else {
        (wide >> drop, wide & ((1u128 << drop) - 1), 1u128 << (drop - 1))
    };
    let round_up = rest > half || (rest == half && kept & 1 == 1);
    let mut kept = kept + u128::from(round_up);
    let mut unit = low + i64::from(drop);
    if keep == 53 || top >= -1022 {
        if kept == 1 << 53 {
            kept >>= 1;
            unit += 1;
        }
        let biased = unit + 52 + 1023;
        if biased >= 2047 {
            return f64::INFINITY;
        }
        let bits = (u64::try_from(biased).unwrap_or(0) << 52) | (u64::try_from(kept).unwrap_or(0) & ((1 << 52) - 1));
        return f64::from_bits(bits);
    }
    // Subnormal: the kept bits are the mantissa field (a carry makes the least normal).
    f64::from_bits(u64::try_from(kept).unwrap_or(0))
}

/// Redis's `string2d`: `strtod` over the whole text, which may not start with white
/// space, be empty, be NaN, or overflow or underflow (a spelled-out `inf` is fine).
pub(crate) fn string2d(text: &[u8]) -> Option<f64> {
    let parsed = strtod(text);
    let out_of_range = parsed.range_error && (parsed.value.is_infinite() || parsed.value == 0.0);
    if text.is_empty() || is_c_space(text[0]) || parsed.len != text.len() || out_of_range || parsed.value.is_nan() {
        return None;
    }
    Some(parsed.value)
}

/// A score range end as `zslParseRange` reads it: `strtod` up to the end of the C
/// string (so an empty text is 0 and leading white space is skipped), not NaN.
pub(crate) fn range_double(text: &[u8]) -> Option<f64> {
    let parsed = strtod(text);
    let ends = text.get(parsed.len).is_none_or(|&b| b == 0);
    (ends && !parsed.value.is_nan()).then_some(parsed.value)
}

/// Redis's `string2ull` on a C string (the text up to a NUL): `string2ll` if it reads
/// a non-negative number, else `strtoull` (white space, `+`, leading zeros) over the
/// whole text.
pub(crate) fn string2ull(text: &[u8]) -> Option<u64> {
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    if let Some(value) = super::text::parse_i64(text) {
        return u64::try_from(value).ok();
    }
    let mut at = text.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = match text.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let digits = &text[at..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some(if negative { value.wrapping_neg() } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (f64, usize) {
        let parsed = strtod(text.as_bytes());
        (parsed.value, parsed.len)
    }

    #[test]
    fn strtod_reads_decimal_hexadecimal_and_special_numbers_like_glibc() {
        assert_eq!(read("1.5"), (1.5, 3));
        assert_eq!(read("  -2e3x"), (-2000.0, 6));
        assert_eq!(read("1e"), (1.0, 1));
        assert_eq!(read("1e+"), (1.0, 1));
        assert_eq!(read(".5"), (0.5, 2));
        assert_eq!(read("5."), (5.0, 2));
        assert_eq!(read("."), (0.0, 0));
        assert_eq!(read("0x10"), (16.0, 4));
        assert_eq!(read("0x1p3"), (8.0, 5));
        assert_eq!(read("0x.8"), (0.5, 4));
        assert_eq!(read("0X1P-1"), (0.5, 6));
        assert_eq!(read("0x"), (0.0, 1));
        assert_eq!(read("0xg"), (0.0, 1));
        assert_eq!(read("0x1p"), (1.0, 3));
        assert_eq!(read("-inf"), (f64::NEG_INFINITY, 4));
        assert_eq!(read("Infinity"), (f64::INFINITY, 8));
        assert_eq!(read("infinit"), (f64::INFINITY, 3));
        assert_eq!(read("x"), (0.0, 0));
        assert_eq!(read(""), (0.0, 0));
        let nan = strtod(b"nan(12_a)z");
        assert!(nan.value.is_nan());
        assert_eq!(nan.len, 9);
        assert_eq!(strtod(b"nan(1").len, 3);
        assert_eq!(read("0x1.fffffffffffff8p0"), (2.0, 20));
        assert_eq!(read("0x1p-1074"), (f64::from_bits(1), 9));
        assert_eq!(read("0x1p-1075"), (0.0, 9));
        assert_eq!(read("0x1.8p-1075"), (f64::from_bits(1), 11));
        assert_eq!(read("0x1p1023").0, 2f64.powi(1023));
        assert_eq!(read("0x1p1024").0, f64::INFINITY);
        assert_eq!(
            read("0x123456789abcdef123"),
            (f64::from(0x1234_5678) * 2f64.powi(40) + 0x9a_bcde_f123_u64 as f64, 20)
        );
    }

    #[test]
    fn redis_reads_whole_arguments_and_range_ends_differently() {
        assert_eq!(string2d(b"0x10"), Some(16.0));
        assert_eq!(string2d(b"+inf"), Some(f64::INFINITY));
        for bad in ["", " 1", "1 ", "nan", "1e400", "1e-400", "0x", "1\x002"] {
            assert_eq!(string2d(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(string2d(b"5e-324"), Some(f64::from_bits(1)));
        assert_eq!(range_double(b""), Some(0.0));
        assert_eq!(range_double(b" 9"), Some(9.0));
        assert_eq!(range_double(b"1e400"), Some(f64::INFINITY));
        assert_eq!(range_double(b"nan"), None);
        assert_eq!(range_double(b"1x"), None);
    }

    #[test]
    fn string2ull_falls_back_to_strtoull() {
        assert_eq!(string2ull(b"5"), Some(5));
        assert_eq!(string2ull(b"05"), Some(5));
        assert_eq!(string2ull(b" +5"), Some(5));
        assert_eq!(string2ull(b"-5"), None);
        assert_eq!(string2ull(b" -1"), Some(u64::MAX));
        assert_eq!(string2ull(b"18446744073709551616"), None);
        assert_eq!(string2ull(b"x"), None);
        assert_eq!(string2ull(b""), None);
    }
}
