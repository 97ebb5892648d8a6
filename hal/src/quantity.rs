//! Kubernetes resource quantities (`284208Mi`, `1.5`, `100m`, `1e3`) as exact integers of nano-units, for
//! capacity and counter arithmetic. CEL sees quantities through kube-cel; this is the allocator's own view.

use std::fmt;

/// A quantity in units of 10⁻⁹ (the finest precision Kubernetes keeps), rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(i128);

const NANO: i128 = 1_000_000_000;

/// The largest value of a binary-suffixed quantity: apimachinery caps `Ki`..`Ei` values at 2⁶³-1.
const MAX_BINARY: i128 = i64::MAX as i128 * NANO;

/// The longest quantity text read.
const MAX_TEXT: usize = 256;

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {text:?}: {why}")]
pub struct QuantityError {
    text: String,
    why: &'static str,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity(0);

    /// Parses the Kubernetes quantity syntax: a signed decimal number, then a binary suffix
    /// (`Ki`..`Ei`), a decimal suffix (`n`, `u`, `m`, `k`, `M`..`E`) or an exponent (`e3`, `E-2`).
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let fail = |why| QuantityError {
            text: text.chars().take(64).collect(),
            why,
        };
        let s = text.trim();
        if s.is_empty() || s.len() > MAX_TEXT {
            return Err(fail("empty or longer than 256 characters"));
        }
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, s.get(1..).unwrap_or_default()),
            Some(b'+') => (false, s.get(1..).unwrap_or_default()),
            _ => (false, s),
        };
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(fail("no number"));
        }
        // mantissa × 10^exp10 × 2^exp2
        let (exp10, exp2): (i64, u32) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            other => {
                let exponent = other
                    .strip_prefix(['e', 'E'])
                    .ok_or_else(|| fail("unknown suffix"))?;
                let exp = exponent.parse::<i32>().map_err(|_| fail("bad exponent"))?;
                (i64::from(exp), 0)
            }
        };
        // Zeros around the digits say nothing: `1.000` is `1`.
        let fraction = fraction.trim_end_matches('0');
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Quantity::ZERO);
        }
        // At most 39 digits, which i128 holds (what `Display` prints of a sum re-parses).
        let mantissa: i128 = digits
            .parse()
            .map_err(|_| fail("too large (over 39 digits)"))?;
        let scale = exp10 + 9 - fraction.len() as i64;
        // As apimachinery's `ParseQuantity`: times the binary suffix first, then rounded up to
        // nano-units (away from zero), then a binary value capped at 2⁶³-1.
        let binary = mantissa.checked_mul(1i128 << exp2);
        let value = match binary {
            Some(m) if scale >= 0 => u32::try_from(scale)
                .ok()
                .and_then(|scale| 10i128.checked_pow(scale))
                .and_then(|p| m.checked_mul(p)),
            // Below a nano-unit: one, as Kubernetes rounds sub-nano precision up.
            Some(m) => Some(match u32::try_from(scale.unsigned_abs()).ok() {
                Some(down) => 10i128
                    .checked_pow(down)
                    .map_or(1, |p| m / p + i128::from(m % p != 0)),
                None => 1,
            }),
            None => None,
        };
        let value = match (value, exp2) {
            (Some(v), 0) => v,
            (Some(v), _) => v.min(MAX_BINARY),
            (None, 0) => return Err(fail("too large (over 10^29 nano-units)")),
            (None, _) => MAX_BINARY,
        };
        Ok(Quantity(if negative { -value } else { value }))
    }

    /// The value in units of 10⁻⁹ (`1` is 1000000000, `300m` is 300000000).
    pub fn nano_units(self) -> i128 {
        self.0
    }

    /// `self + other`, saturating.
    pub fn plus(self, other: Quantity) -> Quantity {
        Quantity(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating.
    pub fn minus(self, other: Quantity) -> Quantity {
        Quantity(self.0.saturating_sub(other.0))
    }

    /// The smallest `min + k·step` that is at least `self` (k ≥ 0); `self` when `step` is zero; None
    /// when it does not fit in the representation.
    pub fn round_up_to_step(self, min: Quantity, step: Quantity) -> Option<Quantity> {
        if self <= min {
            return Some(min);
        }
        if step.0 <= 0 {
            return Some(self);
        }
        let above = self.0.checked_sub(min.0)?;
        let steps = above.checked_add(step.0 - 1)? / step.0;
        steps
            .checked_mul(step.0)
            .and_then(|v| v.checked_add(min.0))
            .map(Quantity)
    }
}

impl fmt::Display for Quantity {
    /// Whole binary multiples as `Ki`..`Ei`, other whole numbers plainly, whole thousandths as `600m`,
    /// other fractions as decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        // A binary suffix only where it reads back: apimachinery caps binary values at 2⁶³-1.
        if v % NANO == 0 && v.abs() <= MAX_BINARY {
            let whole = v / NANO;
            for (suffix, shift) in [
                ("Ei", 60),
                ("Pi", 50),
                ("Ti", 40),
                ("Gi", 30),
                ("Mi", 20),
                ("Ki", 10),
            ] {
                let unit = 1i128 << shift;
                if whole != 0 && whole % unit == 0 {
                    return write!(f, "{}{suffix}", whole / unit);
                }
            }
            return write!(f, "{whole}");
        }
        if v % NANO == 0 {
            return write!(f, "{}", v / NANO);
        }
        if v % 1_000_000 == 0 {
            return write!(f, "{}m", v / 1_000_000);
        }
        let sign = if v < 0 { "-" } else { "" };
        let abs = v.unsigned_abs();
        let fraction = format!("{:09}", abs % NANO.unsigned_abs());
        write!(
            f,
            "{sign}{}.{}",
            abs / NANO.unsigned_abs(),
            fraction.trim_end_matches('0')
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn suffixes_and_exponents_agree() {
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1.5"), q("1500m"));
        assert_eq!(q("284208Mi"), q("298013687808"));
        assert_eq!(q("0.5Gi"), q("512Mi"));
        assert_eq!(q("-2"), Quantity::ZERO.minus(q("2")));
        assert_eq!(q("1n"), Quantity(1));
        assert!(q("40Gi") < q("41Gi"));
    }

    #[test]
    fn sub_nano_precision_rounds_up() {
        assert_eq!(q("1e-10"), Quantity(1));
        assert_eq!(q("1e-41"), Quantity(1));
        assert_eq!(q(&format!("0.{}1", "0".repeat(50))), Quantity(1));
        assert_eq!(q("-1e-41"), Quantity(-1));
        // Rounded up without overflow, near the largest mantissa.
        let big = format!("8{}e-47", "0".repeat(37));
        assert_eq!(q(&big), Quantity(8 * 10i128.pow(37) / 10i128.pow(38) + 1));
        let max = "0.00000000170141183460469231731687303715884105727";
        assert_eq!(q(max), Quantity(2));
    }

    /// What apimachinery's `ParseQuantity` gives (`resource.MustParse(s).AsDec()`, in nano-units).
    #[test]
    fn binary_suffixes_multiply_before_rounding_and_cap_at_int64() {
        assert_eq!(q("0.0000000001Ki").nano_units(), 103);
        assert_eq!(q("0.3333333333Ki").nano_units(), 341_333_333_300);
        assert_eq!(q("1.0000000001Gi").nano_units(), 1_073_741_824_107_374_183);
        let max = i128::from(i64::MAX) * NANO;
        assert_eq!(q("16Ei").nano_units(), max);
        assert_eq!(q("9999999999999999999999999999999Ei").nano_units(), max);
        assert_eq!(q("-16Ei").nano_units(), -max);
        // Decimal values are not capped.
        assert_eq!(q("16E").nano_units(), 16 * 10i128.pow(27));
    }

    #[test]
    fn zeros_and_exponents_the_api_server_accepts_parse() {
        assert_eq!(q("1.000000000000000000000000000000"), q("1"));
        assert_eq!(q(&format!("{}1", "0".repeat(64))), q("1"));
        assert_eq!(q("1e20"), q("100E"));
        assert_eq!(q("0e999"), Quantity::ZERO);
        assert_eq!(q("100000000000000000000"), q("1e20"));
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        for bad in ["", "Gi", "1.2.3", "1Xi", "1e", "1e999", "--1", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_is_compact_and_round_trips() {
        assert_eq!(q("0.6").to_string(), "600m");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q("1.0005").to_string(), "1.0005");
        for text in ["80Gi", "3", "600m", "1.0005", "512Mi", "0"] {
            assert_eq!(q(text).to_string(), text);
            assert_eq!(q(&q(text).to_string()), q(text));
        }
    }

    #[test]
    fn sums_print_in_a_form_that_parses_back() {
        let sum = q("100000000000000000000000000000").plus(q("1n"));
        assert_eq!(q(&sum.to_string()), sum);
        // Over the binary cap: printed plainly, as `1024Ei` would read back capped.
        let big = q("1180591620717411303424");
        assert_eq!(big.to_string(), "1180591620717411303424");
        assert_eq!(q(&big.to_string()), big);
    }

    #[test]
    fn step_rounding() {
        let (min, step) = (q("1Gi"), q("1Gi"));
        assert_eq!(q("100Mi").round_up_to_step(min, step), Some(q("1Gi")));
        assert_eq!(q("1.5Gi").round_up_to_step(min, step), Some(q("2Gi")));
        assert_eq!(q("2Gi").round_up_to_step(min, step), Some(q("2Gi")));
        // Hostile but parsable numbers do not overflow.
        let huge = q("170141183460469231731687303715");
        assert_eq!(
            huge.round_up_to_step(Quantity::ZERO.minus(huge), q("1e21")),
            None
        );
    }
}
