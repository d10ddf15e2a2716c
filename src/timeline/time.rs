//! Exact time values: the [`Rational`] used for frame rates and seconds, the [`Rounding`] rule
//! that every rational → integer conversion must name, stream [`TimeBase`]s, and the parsers
//! that turn user text (fps strings, JSON number text) into exact rationals.
//!
//! Owns: parsing and exact arithmetic. Must not: use floats for time (the only float here is
//! [`Rational::to_f64`], for display), or panic on any input.

use std::cmp::Ordering;
use std::fmt;

/// A non-negative exact rational number, always reduced, denominator > 0.
///
/// Used for frame rates (30000/1001 is not 29.97) and for durations in seconds. Because it is
/// always reduced, the derived `Eq`/`Hash` agree with equality of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawRational")]
pub struct Rational {
    num: u64,
    den: u64,
}

/// A rational as written (`{"num", "den"}`), reduced (and refused for `den == 0`) when read.
#[derive(serde::Deserialize)]
struct RawRational {
    num: u64,
    den: u64,
}

impl TryFrom<RawRational> for Rational {
    type Error = &'static str;

    fn try_from(r: RawRational) -> std::result::Result<Rational, &'static str> {
        Rational::new(r.num, r.den).ok_or("a rational with den 0")
    }
}

/// The largest numerator/denominator FFmpeg can carry in an `AVRational` (two `i32`s). Frame
/// rates become time bases `1/fps` there, so a rate must fit.
pub const AV_RATIONAL_MAX: u64 = i32::MAX as u64;

impl Rational {
    /// 0/1.
    pub const ZERO: Rational = Rational { num: 0, den: 1 };
    /// 1/1.
    pub const ONE: Rational = Rational { num: 1, den: 1 };

    /// `num/den` reduced; `None` when `den == 0`.
    pub fn new(num: u64, den: u64) -> Option<Rational> {
        if den == 0 {
            return None;
        }
        let g = gcd_u64(num, den);
        Some(Rational {
            num: num / g,
            den: den / g,
        })
    }

    /// The integer `n` as `n/1`.
    pub const fn from_integer(n: u64) -> Rational {
        Rational { num: n, den: 1 }
    }

    /// `num/den` reduced from 128-bit parts; `None` when `den == 0` or the reduced value does
    /// not fit in 64-bit parts.
    pub fn from_u128(num: u128, den: u128) -> Option<Rational> {
        if den == 0 {
            return None;
        }
        let g = gcd_u128(num, den);
        let (n, d) = (num / g, den / g);
        Some(Rational {
            num: u64::try_from(n).ok()?,
            den: u64::try_from(d).ok()?,
        })
    }

    /// The reduced numerator.
    pub const fn num(self) -> u64 {
        self.num
    }

    /// The reduced denominator (> 0).
    pub const fn den(self) -> u64 {
        self.den
    }

    /// True for 0.
    pub const fn is_zero(self) -> bool {
        self.num == 0
    }

    /// True when the value is a whole number.
    pub const fn is_integer(self) -> bool {
        self.den == 1
    }

    /// An approximation for display and logs only; never compute time with it.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `1/self`; `None` for 0.
    pub fn recip(self) -> Option<Rational> {
        Rational::new(self.den, self.num)
    }

    /// Exact sum; `None` when the reduced result does not fit.
    pub fn checked_add(self, other: Rational) -> Option<Rational> {
        let num = u128::from(self.num)
            .checked_mul(u128::from(other.den))?
            .checked_add(u128::from(other.num).checked_mul(u128::from(self.den))?)?;
        let den = u128::from(self.den).checked_mul(u128::from(other.den))?;
        Rational::from_u128(num, den)
    }

    /// Exact difference; `None` when negative or when the reduced result does not fit.
    pub fn checked_sub(self, other: Rational) -> Option<Rational> {
        let a = u128::from(self.num) * u128::from(other.den);
        let b = u128::from(other.num) * u128::from(self.den);
        let den = u128::from(self.den) * u128::from(other.den);
        Rational::from_u128(a.checked_sub(b)?, den)
    }

    /// Exact product; `None` when the reduced result does not fit.
    pub fn checked_mul(self, other: Rational) -> Option<Rational> {
        // Cross-reduce first so that products of reduced fractions stay small.
        let g1 = gcd_u64(self.num, other.den);
        let g2 = gcd_u64(other.num, self.den);
        let num = u128::from(self.num / g1) * u128::from(other.num / g2);
        let den = u128::from(self.den / g2) * u128::from(other.den / g1);
        Rational::from_u128(num, den)
    }

    /// `self · k` converted to an integer with the named rounding, saturating at `u64::MAX`.
    pub fn mul_int(self, k: u64, rounding: Rounding) -> u64 {
        let q = rounding.div(u128::from(self.num) * u128::from(k), u128::from(self.den));
        u64::try_from(q).unwrap_or(u64::MAX)
    }
}

impl Default for Rational {
    fn default() -> Self {
        Rational::ZERO
    }
}

impl Ord for Rational {
    fn cmp(&self, other: &Self) -> Ordering {
        // Products of two u64 always fit in u128: the comparison is exact.
        (u128::from(self.num) * u128::from(other.den))
            .cmp(&(u128::from(other.num) * u128::from(self.den)))
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    // gcd(0, 0) = 0 would make callers divide by zero; 1 leaves 0/x as it is.
    a.max(1)
}

fn gcd_u128(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// How an exact quotient becomes an integer. Always named at the call, never implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// To nearest, exact halves up (2.5 → 3).
    Round,
    /// Toward zero (down: all values here are non-negative).
    Floor,
    /// Up.
    Ceil,
}

impl Rounding {
    /// `num / den` rounded by `self`. `den` must be > 0; a zero `den` saturates to
    /// `u128::MAX` rather than panicking (no caller in this module passes one).
    pub fn div(self, num: u128, den: u128) -> u128 {
        if den == 0 {
            return u128::MAX;
        }
        let q = num / den;
        let r = num % den;
        let up = match self {
            Rounding::Floor => false,
            Rounding::Ceil => r != 0,
            // r >= den - r  ⇔  2r >= den, without overflowing 2r.
            Rounding::Round => r != 0 && r >= den - r,
        };
        // q + 1 cannot overflow: when up is true, r > 0 so den >= 2 and q <= u128::MAX / 2.
        q + u128::from(up)
    }

    /// The lowercase name used in job files and manifests.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rounding::Round => "round",
            Rounding::Floor => "floor",
            Rounding::Ceil => "ceil",
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream time base: one tick lasts `num/den` seconds (e.g. 1/90000, 1/44100). Both parts
/// are > 0 when built with [`TimeBase::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawTimeBase")]
pub struct TimeBase {
    pub num: u32,
    pub den: u32,
}

/// A time base as written (`{"num", "den"}`), refused when read with a part that is 0.
#[derive(serde::Deserialize)]
struct RawTimeBase {
    num: u32,
    den: u32,
}

impl TryFrom<RawTimeBase> for TimeBase {
    type Error = &'static str;

    fn try_from(r: RawTimeBase) -> std::result::Result<TimeBase, &'static str> {
        TimeBase::new(r.num, r.den).ok_or("a time base with a part 0")
    }
}

impl TimeBase {
    /// `None` unless both parts are > 0.
    pub fn new(num: u32, den: u32) -> Option<Self> {
        (num > 0 && den > 0).then_some(TimeBase { num, den })
    }

    /// True when both parts are > 0 (fields are public, so a literal may not be).
    pub const fn is_valid(self) -> bool {
        self.num > 0 && self.den > 0
    }

    /// The tick length in seconds; `None` for an invalid time base.
    pub fn seconds_per_tick(self) -> Option<Rational> {
        if self.num == 0 {
            return None;
        }
        Rational::new(u64::from(self.num), u64::from(self.den))
    }
}

/// The highest frame rate [`parse_fps`] accepts.
pub const MAX_FPS: u64 = 1000;

/// The NTSC family: `N·1000/1001` fps for these `N`. Decimal spellings of these rates
/// ("29.97", "23.976", "59.94", "47.952", "119.88") mean the exact rationals.
const NTSC_BASES: [u64; 6] = [24, 30, 48, 60, 120, 240];

/// Parses a frame rate: an integer ("25"), a fraction ("30000/1001"), or a decimal.
///
/// A decimal with at least two fraction digits that is the NTSC rate `N·1000/1001`
/// (N ∈ {24, 30, 48, 60, 120, 240}) rounded or truncated to those digits means that exact rate:
/// "29.97" → 30000/1001, "23.976" and "23.98" → 24000/1001, "59.94" → 60000/1001. Everyone who
/// writes 29.97 means the broadcast rate; an exact 29.97 can still be written "2997/100". Other
/// decimals are exact ("12.5" → 25/2).
///
/// Rejected, with the reason: zero, negative, not a number, above [`MAX_FPS`], and rates whose
/// reduced numerator or denominator exceeds `i32::MAX` (FFmpeg could not carry the time base).
pub fn parse_fps(s: &str) -> Result<Rational, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("fps is empty".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("fps {t:?} must be positive"));
    }
    let fps = if let Some((n, d)) = t.split_once('/') {
        let n = parse_digits_u64(n.trim())
            .ok_or_else(|| format!("fps {t:?}: numerator is not a whole number"))?;
        let d = parse_digits_u64(d.trim())
            .ok_or_else(|| format!("fps {t:?}: denominator is not a whole number"))?;
        Rational::new(n, d).ok_or_else(|| format!("fps {t:?}: denominator is zero"))?
    } else {
        let dec = Decimal::parse(t).map_err(|e| format!("fps {t:?}: {e}"))?;
        match dec.ntsc_rate() {
            Some(r) => r,
            None => dec.to_rational().map_err(|e| format!("fps {t:?}: {e}"))?,
        }
    };
    if fps.is_zero() {
        return Err(format!("fps {t:?} must be positive"));
    }
    if fps > Rational::from_integer(MAX_FPS) {
        return Err(format!("fps {t:?} is above the maximum of {MAX_FPS}"));
    }
    if fps.num() > AV_RATIONAL_MAX || fps.den() > AV_RATIONAL_MAX {
        return Err(format!(
            "fps {t:?} = {fps} has a numerator or denominator above {AV_RATIONAL_MAX}"
        ));
    }
    Ok(fps)
}

/// Parses an exact non-negative decimal: "2", "0.5" → 1/2, "1.25" → 5/4, "1e-3" → 1/1000,
/// "1.5E2" → 150. This is how a JSON number's text becomes exact seconds.
///
/// Rejected, with the reason: negative values ("-0" is zero and accepted), NaN/infinity or
/// other non-numbers, and values whose exact reduced fraction does not fit in 64-bit parts
/// (more than about 19 significant decimal places, or above `u64::MAX`).
pub fn parse_decimal(s: &str) -> Result<Rational, String> {
    let t = s.trim();
    Decimal::parse(t)
        .and_then(|d| d.to_rational())
        .map_err(|e| format!("{t:?}: {e}"))
}

/// Exact seconds from a float, through its shortest round-trip text: 0.1 becomes exactly 1/10,
/// not the binary value 0.1000000000000000055…. Rejects NaN, infinities and negatives.
pub fn seconds_from_f64(x: f64) -> Result<Rational, String> {
    if !x.is_finite() {
        return Err(format!("{x} is not a finite number"));
    }
    parse_decimal(&format!("{x}"))
}

/// [`parse_fps`] for a JSON number: its shortest round-trip text is parsed, so `29.97` means
/// 30000/1001 and `12.5` means 25/2. Rejects NaN and infinities like any other bad rate.
pub fn fps_from_f64(x: f64) -> Result<Rational, String> {
    if !x.is_finite() {
        return Err(format!("fps {x} is not a finite number"));
    }
    parse_fps(&format!("{x}"))
}

fn parse_digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A parsed decimal `mantissa · 10^exp10`, with the plain-text fraction digits kept for the
/// NTSC check.
struct Decimal {
    /// Significant digits without leading or trailing zeros (0 for zero).
    mantissa: u128,
    exp10: i64,
    /// For plain text like "29.97" (no exponent): all digits as one integer and the number
    /// of fraction digits. `None` when the text has an exponent or too many digits.
    plain: Option<(u128, u32)>,
}

/// Enough significant digits for any f64's shortest text (17) with room to spare, while
/// `10^MAX_DIGITS` still fits in a u128.
const MAX_DIGITS: usize = 38;

impl Decimal {
    fn parse(t: &str) -> Result<Decimal, String> {
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (mant_text, exp_text) = match body.find(['e', 'E']) {
            Some(p) => (&body[..p], Some(&body[p + 1..])),
            None => (body, None),
        };
        let (int_part, frac_part) = match mant_text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mant_text, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !all_digits(int_part)
            || !all_digits(frac_part)
        {
            return Err("not a decimal number".to_string());
        }
        let mut exp10: i64 = match exp_text {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) {
                    return Err("not a decimal number (bad exponent)".to_string());
                }
                // Exponents beyond a few hundred can only overflow or underflow below.
                let mag: i64 = if digits.len() > 6 {
                    1_000_000
                } else {
                    digits.parse().map_err(|_| "bad exponent".to_string())?
                };
                if e.starts_with('-') {
                    -mag
                } else {
                    mag
                }
            }
        };
        // Fraction digits shift the exponent; frac_part.len() is bounded by the input length.
        exp10 -= i64::try_from(frac_part.len()).map_err(|_| "too many digits".to_string())?;
        let joined: String = format!("{int_part}{frac_part}");
        let significant = joined.trim_start_matches('0');
        let trimmed = significant.trim_end_matches('0');
        exp10 += i64::try_from(significant.len() - trimmed.len())
            .map_err(|_| "too many digits".to_string())?;
        let mantissa: u128 = if trimmed.is_empty() {
            exp10 = 0;
            0
        } else if trimmed.len() > MAX_DIGITS {
            return Err(format!(
                "more than {MAX_DIGITS} significant digits cannot be represented exactly"
            ));
        } else {
            trimmed
                .parse()
                .map_err(|_| "not a decimal number".to_string())?
        };
        if negative && mantissa != 0 {
            return Err("must not be negative".to_string());
        }
        let plain = match (exp_text, u32::try_from(frac_part.len())) {
            (None, Ok(k)) if significant.len() <= MAX_DIGITS && k <= 30 => {
                let v = if significant.is_empty() {
                    0
                } else {
                    significant.parse().ok().unwrap_or(u128::MAX)
                };
                Some((v, k))
            }
            _ => None,
        };
        Ok(Decimal {
            mantissa,
            exp10,
            plain,
        })
    }

    fn to_rational(&self) -> Result<Rational, String> {
        if self.mantissa == 0 {
            return Ok(Rational::ZERO);
        }
        let too_large = || "too large to represent exactly".to_string();
        if self.exp10 >= 0 {
            let e = u32::try_from(self.exp10).map_err(|_| too_large())?;
            let num = 10u128
                .checked_pow(e)
                .and_then(|p| p.checked_mul(self.mantissa))
                .ok_or_else(too_large)?;
            Rational::from_u128(num, 1).ok_or_else(too_large)
        } else {
            let too_precise = || "too many decimal places to represent exactly".to_string();
            let e = u32::try_from(-self.exp10).map_err(|_| too_precise())?;
            let den = 10u128.checked_pow(e).ok_or_else(too_precise)?;
            Rational::from_u128(self.mantissa, den).ok_or_else(too_precise)
        }
    }

    /// The NTSC rate this decimal spells, if any (see [`parse_fps`]).
    fn ntsc_rate(&self) -> Option<Rational> {
        let (value, k) = self.plain?;
        if k < 2 {
            return None;
        }
        let scale = 10u128.checked_pow(k)?;
        NTSC_BASES.iter().find_map(|&n| {
            let scaled = u128::from(n * 1000).checked_mul(scale)?;
            let matches = Rounding::Round.div(scaled, 1001) == value
                || Rounding::Floor.div(scaled, 1001) == value;
            if matches {
                Rational::new(n * 1000, 1001)
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u64, d: u64) -> Rational {
        Rational::new(n, d).unwrap()
    }

    #[test]
    fn rational_is_reduced_and_compares_by_value() {
        assert_eq!(r(60000, 2002), r(30000, 1001));
        assert_eq!(r(0, 7), Rational::ZERO);
        assert_eq!(r(0, 7).den(), 1);
        assert_eq!(Rational::new(1, 0), None);
        assert!(r(30000, 1001) < r(30, 1));
        assert!(r(1, 3) > r(333_333, 1_000_000));
        assert_eq!(r(2, 4).cmp(&r(1, 2)), Ordering::Equal);
        assert_eq!(r(u64::MAX, u64::MAX), Rational::ONE);
        // x/(x-1) falls as x grows; the cross products need all 128 bits.
        assert!(r(u64::MAX, u64::MAX - 1) < r(u64::MAX - 1, u64::MAX - 2));
    }

    #[test]
    fn rational_display() {
        assert_eq!(r(30000, 1001).to_string(), "30000/1001");
        assert_eq!(r(50, 2).to_string(), "25");
        assert_eq!(Rational::ZERO.to_string(), "0");
    }

    #[test]
    fn rational_arithmetic() {
        assert_eq!(r(1, 2).checked_add(r(1, 3)), Some(r(5, 6)));
        assert_eq!(r(1, 2).checked_sub(r(1, 3)), Some(r(1, 6)));
        assert_eq!(r(1, 3).checked_sub(r(1, 2)), None);
        assert_eq!(r(30000, 1001).checked_mul(r(1001, 1000)), Some(r(30, 1)));
        assert_eq!(r(u64::MAX, 1).checked_add(r(1, 1)), None);
        assert_eq!(r(3, 2).recip(), Some(r(2, 3)));
        assert_eq!(Rational::ZERO.recip(), None);
        assert_eq!(r(5, 2).mul_int(1, Rounding::Round), 3);
        assert_eq!(r(5, 2).mul_int(1, Rounding::Floor), 2);
        assert_eq!(r(u64::MAX, 1).mul_int(u64::MAX, Rounding::Floor), u64::MAX);
        assert_eq!(
            Rational::from_u128(u128::from(u64::MAX) * 2, 2),
            Some(r(u64::MAX, 1))
        );
        assert_eq!(Rational::from_u128(u128::from(u64::MAX) + 1, 1), None);
        assert!((r(30000, 1001).to_f64() - 29.97002997).abs() < 1e-8);
    }

    #[test]
    fn rounding_div() {
        for (n, d, round, floor, ceil) in [
            (5u128, 2u128, 3u128, 2u128, 3u128),
            (7, 2, 4, 3, 4),
            (4, 2, 2, 2, 2),
            (1, 3, 0, 0, 1),
            (2, 3, 1, 0, 1),
            (0, 5, 0, 0, 0),
            (
                u128::MAX,
                2,
                u128::MAX / 2 + 1,
                u128::MAX / 2,
                u128::MAX / 2 + 1,
            ),
            (u128::MAX, u128::MAX, 1, 1, 1),
            (u128::MAX - 1, u128::MAX, 1, 0, 1),
        ] {
            assert_eq!(Rounding::Round.div(n, d), round, "round {n}/{d}");
            assert_eq!(Rounding::Floor.div(n, d), floor, "floor {n}/{d}");
            assert_eq!(Rounding::Ceil.div(n, d), ceil, "ceil {n}/{d}");
        }
        assert_eq!(Rounding::Round.div(1, 0), u128::MAX);
    }

    #[test]
    fn rounding_serde_names() {
        assert_eq!(serde_json::to_string(&Rounding::Ceil).unwrap(), "\"ceil\"");
        let r: Rounding = serde_json::from_str("\"round\"").unwrap();
        assert_eq!(r, Rounding::Round);
        assert!(serde_json::from_str::<Rounding>("\"Round\"").is_err());
    }

    #[test]
    fn parse_fps_integers_and_fractions() {
        assert_eq!(parse_fps("25"), Ok(r(25, 1)));
        assert_eq!(parse_fps(" 30000/1001 "), Ok(r(30000, 1001)));
        assert_eq!(parse_fps("50/2"), Ok(r(25, 1)));
        assert_eq!(parse_fps("24000 / 1001"), Ok(r(24000, 1001)));
        assert_eq!(parse_fps("1000"), Ok(r(1000, 1)));
        assert_eq!(parse_fps("1/3"), Ok(r(1, 3)));
    }

    #[test]
    fn parse_fps_ntsc_decimals_mean_the_rationals() {
        assert_eq!(parse_fps("23.976"), Ok(r(24000, 1001)));
        assert_eq!(parse_fps("23.98"), Ok(r(24000, 1001)));
        assert_eq!(parse_fps("29.97"), Ok(r(30000, 1001)));
        assert_eq!(parse_fps("29.970"), Ok(r(30000, 1001)));
        assert_eq!(parse_fps("29.97002997"), Ok(r(30000, 1001)));
        assert_eq!(parse_fps("47.952"), Ok(r(48000, 1001)));
        assert_eq!(parse_fps("59.94"), Ok(r(60000, 1001)));
        assert_eq!(parse_fps("119.88"), Ok(r(120000, 1001)));
    }

    #[test]
    fn parse_fps_other_decimals_are_exact() {
        assert_eq!(parse_fps("12.5"), Ok(r(25, 2)));
        assert_eq!(parse_fps("25.0"), Ok(r(25, 1)));
        assert_eq!(parse_fps("25.00"), Ok(r(25, 1)));
        assert_eq!(parse_fps("29.9"), Ok(r(299, 10)));
        assert_eq!(parse_fps("29.99"), Ok(r(2999, 100)));
        assert_eq!(parse_fps("2.5e1"), Ok(r(25, 1)));
    }

    #[test]
    fn parse_fps_rejects_with_reasons() {
        for bad in [
            "",
            "0",
            "0.0",
            "0/1",
            "-25",
            "-30000/1001",
            "abc",
            "25fps",
            "1/0",
            "1001",
            "1000.001",
            "NaN",
            "inf",
            "30000/",
            "/1001",
            "2.5.1",
            "1/2/3",
            "25 1",
            "0.0000000001",
        ] {
            let e = parse_fps(bad).expect_err(bad);
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(parse_fps("-25").unwrap_err().contains("positive"));
        assert!(parse_fps("1001").unwrap_err().contains("maximum"));
        assert!(parse_fps("0").unwrap_err().contains("positive"));
    }

    #[test]
    fn parse_decimal_exact() {
        assert_eq!(parse_decimal("0.5"), Ok(r(1, 2)));
        assert_eq!(parse_decimal("1.25"), Ok(r(5, 4)));
        assert_eq!(parse_decimal("2"), Ok(r(2, 1)));
        assert_eq!(parse_decimal("1e-3"), Ok(r(1, 1000)));
        assert_eq!(parse_decimal("1.5E2"), Ok(r(150, 1)));
        assert_eq!(parse_decimal("1.5e+2"), Ok(r(150, 1)));
        assert_eq!(parse_decimal("0"), Ok(Rational::ZERO));
        assert_eq!(parse_decimal("-0"), Ok(Rational::ZERO));
        assert_eq!(parse_decimal("-0.0e5"), Ok(Rational::ZERO));
        assert_eq!(parse_decimal("000.5000"), Ok(r(1, 2)));
        assert_eq!(parse_decimal(".5"), Ok(r(1, 2)));
        assert_eq!(parse_decimal("5."), Ok(r(5, 1)));
        assert_eq!(parse_decimal("0.1"), Ok(r(1, 10)));
        assert_eq!(parse_decimal("100e-2"), Ok(r(1, 1)));
        assert_eq!(parse_decimal("18446744073709551615"), Ok(r(u64::MAX, 1)));
        assert_eq!(parse_decimal("1e0"), Ok(r(1, 1)));
        assert_eq!(parse_decimal("0e999999999999"), Ok(Rational::ZERO));
        // 10^20 is above u64::MAX; 10^-18 still fits as a denominator.
        let big = format!("1{}", "0".repeat(20));
        assert!(parse_decimal(&big).is_err());
        let small = format!("0.{}1", "0".repeat(17));
        assert_eq!(parse_decimal(&small), Ok(r(1, 10u64.pow(18))));
    }

    #[test]
    fn parse_decimal_rejects_with_reasons() {
        for bad in [
            "",
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "abc",
            "1e",
            "1e+",
            "e5",
            ".",
            "1..2",
            "1e2.5",
            "--1",
            "1 2",
            "0x10",
            "1e20",
            "1e-20",
            "1e99999999999999999999",
            "1e-99999999999999999999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_decimal("-1").unwrap_err().contains("negative"));
        assert!(parse_decimal(&"1".repeat(40)).is_err());
    }

    #[test]
    fn seconds_from_f64_uses_shortest_text() {
        assert_eq!(seconds_from_f64(0.1), Ok(r(1, 10)));
        assert_eq!(seconds_from_f64(0.5), Ok(r(1, 2)));
        assert_eq!(seconds_from_f64(1.0), Ok(r(1, 1)));
        assert_eq!(seconds_from_f64(0.0), Ok(Rational::ZERO));
        assert_eq!(seconds_from_f64(-0.0), Ok(Rational::ZERO));
        assert_eq!(seconds_from_f64(1e-7), Ok(r(1, 10_000_000)));
        assert_eq!(seconds_from_f64(3600.25), Ok(r(14401, 4)));
        assert!(seconds_from_f64(-0.1).is_err());
        assert!(seconds_from_f64(f64::NAN).is_err());
        assert!(seconds_from_f64(f64::INFINITY).is_err());
        assert!(seconds_from_f64(1e300).is_err());
        assert!(seconds_from_f64(f64::MIN_POSITIVE).is_err());
    }

    #[test]
    fn fps_from_json_numbers() {
        assert_eq!(fps_from_f64(25.0), Ok(r(25, 1)));
        assert_eq!(fps_from_f64(29.97), Ok(r(30000, 1001)));
        assert_eq!(fps_from_f64(23.976), Ok(r(24000, 1001)));
        assert_eq!(fps_from_f64(12.5), Ok(r(25, 2)));
        assert!(fps_from_f64(0.0).is_err());
        assert!(fps_from_f64(-25.0).is_err());
        assert!(fps_from_f64(f64::NAN).is_err());
        assert!(fps_from_f64(1e9).is_err());
    }

    #[test]
    fn time_base() {
        assert_eq!(
            TimeBase::new(1, 90000),
            Some(TimeBase { num: 1, den: 90000 })
        );
        assert_eq!(TimeBase::new(0, 1), None);
        assert_eq!(TimeBase::new(1, 0), None);
        assert_eq!(
            TimeBase { num: 2, den: 50 }.seconds_per_tick(),
            Some(r(1, 25))
        );
        assert_eq!(TimeBase { num: 0, den: 1 }.seconds_per_tick(), None);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "[-+0-9.eE/ a]{0,40}") {
            let _ = parse_fps(&s);
            let _ = parse_decimal(&s);
        }

        #[test]
        fn decimal_text_is_exact(m in 0u64..1_000_000_000_000, k in 0u32..7) {
            let want = Rational::new(m, 10u64.pow(k)).unwrap();
            proptest::prop_assert_eq!(parse_decimal(&format!("{m}e-{k}")), Ok(want));
            let text = format!("{}.{:0width$}", m / 10u64.pow(k), m % 10u64.pow(k), width = k as usize);
            proptest::prop_assert_eq!(parse_decimal(&text), Ok(want));
        }

        #[test]
        fn seconds_from_f64_is_the_shortest_text(x in 1e-3f64..1e6) {
            let r = seconds_from_f64(x).unwrap();
            proptest::prop_assert_eq!(parse_decimal(&format!("{x}")), Ok(r));
            proptest::prop_assert!((r.to_f64() - x).abs() <= x * 1e-15);
        }

        #[test]
        fn ordering_matches_cross_multiplication(a in 0u64..1_000_000, b in 1u64..1_000_000,
                                                 c in 0u64..1_000_000, d in 1u64..1_000_000) {
            let (x, y) = (Rational::new(a, b).unwrap(), Rational::new(c, d).unwrap());
            proptest::prop_assert_eq!(x.cmp(&y), (a * d).cmp(&(c * b)));
            proptest::prop_assert_eq!(x == y, a * d == c * b);
        }
    }
}
