//! Number formatting and parsing as Redis 7.0 and its C library do them (`%.17g`,
//! `string2ll`, `strtod`), the x86-64 double-to-integer cast, and Redis's glob matcher.

/// `printf("%.<precision>g", x)` as glibc prints it.
pub(crate) fn format_g(x: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.to_owned();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let scientific = format!("{:.*e}", precision - 1, x);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let p = i64::try_from(precision).unwrap_or(i64::MAX);
    if exponent < -4 || exponent >= p {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_fraction_zeros(mantissa), exponent.unsigned_abs())
    } else {
        let decimals = usize::try_from(p - 1 - exponent).unwrap_or(0);
        strip_fraction_zeros(&format!("{x:.decimals$}")).to_owned()
    }
}

fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { text }
}

/// A Lua number as Redis 7.0 turns it into an integer reply: `(long long)` on x86-64,
/// which truncates toward zero and gives `i64::MIN` for NaN and anything out of range.
pub(crate) fn lua_number_to_i64(x: f64) -> i64 {
    // 2^63 as a double; every double below it (and at or above -2^63) fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !(-LIMIT..LIMIT).contains(&x) {
        return i64::MIN;
    }
    // In range, `as` truncates toward zero like the C cast.
    x as i64
}

/// Redis's `string2ll`: an optional `-`, no leading zeros, no spaces, no `+`.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        if value == 1u64 << 63 { Some(i64::MIN) } else { i64::try_from(value).ok().map(|v| -v) }
    } else {
        i64::try_from(value).ok()
    }
}

/// A double as Redis 7.0 reads an argument (`string2d`: `strtod` over the whole
/// argument): hexadecimal and `inf` are fine; leading space, trailing garbage, NaN and
/// overflow to infinity are not.
pub(crate) fn parse_f64(text: &[u8]) -> Option<f64> {
    super::strtod::string2d(text)
}

/// A score as Redis 7.0 replies with one (`%.17g`, `inf`, `-inf`).
pub(crate) fn format_score(score: f64) -> Vec<u8> {
    format_g(score, 17).into_bytes()
}

/// Redis's `stringmatchlen`: `*`, `?`, `[...]` (with `^` and ranges) and `\` escapes.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                return (s..=text.len()).any(|start| glob_match(&pattern[p + 1..], &text[start..], nocase));
            }
            b'?' => {
                if s >= text.len() {
                    return false;
                }
                s += 1;
            }
            b'[' => {
                let Some(&c) = text.get(s) else { return false };
                p += 1;
                let negate = pattern.get(p) == Some(&b'^');
                if negate {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    match pattern.get(p) {
                        None => {
                            p -= 1;
                            break;
                        }
                        Some(b']') => break,
                        Some(b'\\') if p + 1 < pattern.len() => {
                            p += 1;
                            matched |= eq(pattern[p], c);
                        }
                        Some(&low) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                            let high = pattern[p + 2];
                            let (low, high) = if low > high { (high, low) } else { (low, high) };
                            p += 2;
                            let folded = if nocase { c.to_ascii_lowercase() } else { c };
                            let (low, high) = if nocase {
                                (low.to_ascii_lowercase(), high.to_ascii_lowercase())
                            } else {
                                (low, high)
                            };
                            matched |= (low..=high).contains(&folded);
                        }
                        Some(&literal) => matched |= eq(literal, c),
                    }
                    p += 1;
                }
                if matched == negate {
                    return false;
                }
                s += 1;
            }
            b'\\' if p + 1 < pattern.len() => {
                p += 1;
                if s >= text.len() || !eq(pattern[p], text[s]) {
                    return false;
                }
                s += 1;
            }
            literal => {
                if s >= text.len() || !eq(literal, text[s]) {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
    }
    s == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_as_glibc_prints_them_with_g() {
        assert_eq!(format_g(0.1, 17), "0.10000000000000001");
        assert_eq!(format_g(1e15, 14), "1e+15");
        assert_eq!(format_g(123.0, 17), "123");
        assert_eq!(format_g(1.5, 14), "1.5");
        assert_eq!(format_g(-0.0001, 14), "-0.0001");
        assert_eq!(format_g(0.00001, 14), "1e-05");
        assert_eq!(format_g(1e100, 17), "1e+100");
        assert_eq!(format_g(f64::INFINITY, 17), "inf");
        assert_eq!(format_g(3.0 / 7.0, 14), "0.42857142857143");
    }

    #[test]
    fn lua_numbers_truncate_toward_zero_and_overflow_to_the_minimum() {
        assert_eq!(lua_number_to_i64(3.99), 3);
        assert_eq!(lua_number_to_i64(-3.99), -3);
        assert_eq!(lua_number_to_i64(2f64.powi(63)), i64::MIN);
        assert_eq!(lua_number_to_i64(f64::INFINITY), i64::MIN);
        assert_eq!(lua_number_to_i64(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(lua_number_to_i64(f64::NAN), i64::MIN);
    }

    #[test]
    fn integers_parse_only_in_their_canonical_form() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b"+1"[..], b"01", b"-0", b" 1", b"1 ", b"", b"1.0", b"-"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn doubles_parse_like_strtod_over_the_whole_argument() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b"1e400"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"1x"), None);
    }

    #[test]
    fn glob_patterns_match_as_in_redis() {
        assert!(glob_match(b"fs:*", b"fs:session:1", false));
        assert!(glob_match(b"h?llo", b"hello", false));
        assert!(glob_match(b"h[ae]llo", b"hallo", false));
        assert!(!glob_match(b"h[^e]llo", b"hello", false));
        assert!(glob_match(b"h[a-b]llo", b"hbllo", false));
        assert!(glob_match(b"a\\*b", b"a*b", false));
        assert!(!glob_match(b"a\\*b", b"axb", false));
        assert!(glob_match(b"MAXMEMORY-*", b"maxmemory-policy", true));
        assert!(!glob_match(b"abc", b"abcd", false));
    }
}
