//! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource`),
//! parsed exactly: `<sign><digits>[.<digits>]<suffix>` where the suffix is a
//! binary SI (`Ki`…`Ei`), a decimal SI (`n u m "" k M G T P E`) or a decimal
//! exponent (`e3`, `E-2`). Values are held in nano-units as `i128`, so
//! comparisons (limits vs requests, Guaranteed QoS) are exact.

use std::cmp::Ordering;

/// What apimachinery answers for a malformed quantity.
pub const QUANTITY_SYNTAX_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{QUANTITY_SYNTAX_MSG}")]
    Syntax,
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// An exact quantity in units of 10⁻⁹ (rounded up, as apimachinery rounds
/// up when a value has more precision than nano).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        if number.is_empty() || number.matches('.').count() > 1 || number == "." {
            return Err(QuantityError::Syntax);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let too_large = || QuantityError::TooLarge(s.to_string());
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| too_large())?
        };
        let frac_digits = i32::try_from(frac_part.len()).map_err(|_| too_large())?;
        let (pow2, pow10) = parse_suffix(suffix)?;
        // value = mantissa × 2^pow2 × 10^(pow10 − frac_digits); nanos = value × 10^9.
        let mut num = mantissa
            .checked_mul(1i128.checked_shl(pow2).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
        let exp = pow10 - frac_digits + 9;
        let mut den: i128 = 1;
        if exp >= 0 {
            num = num
                .checked_mul(pow10_i128(exp).ok_or_else(too_large)?)
                .ok_or_else(too_large)?;
        } else {
            den = pow10_i128(-exp).ok_or_else(too_large)?;
        }
        let nanos = num / den + i128::from(num % den != 0);
        Ok(Quantity {
            nanos: if neg { -nanos } else { nanos },
        })
    }

    pub fn from_nanos(nanos: i128) -> Self {
        Quantity { nanos }
    }

    pub fn nanos(self) -> i128 {
        self.nanos
    }

    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The value in whole units, rounded up (apimachinery `Value()`).
    pub fn value_ceil(self) -> i128 {
        self.nanos.div_euclid(NANO) + i128::from(self.nanos.rem_euclid(NANO) != 0)
    }

    /// The value in milli-units, rounded up (apimachinery `MilliValue()`).
    pub fn milli_ceil(self) -> i128 {
        let m = NANO / 1000;
        self.nanos.div_euclid(m) + i128::from(self.nanos.rem_euclid(m) != 0)
    }

    /// `ceil(self / divisor)`, as kubelet's `resourceFieldRef` conversion does.
    pub fn div_ceil(self, divisor: Quantity) -> Option<i128> {
        if divisor.nanos <= 0 {
            return None;
        }
        Some(
            self.nanos.div_euclid(divisor.nanos)
                + i128::from(self.nanos.rem_euclid(divisor.nanos) != 0),
        )
    }
}

impl PartialOrd<i128> for Quantity {
    fn partial_cmp(&self, other: &i128) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.saturating_mul(NANO)))
    }
}

impl PartialEq<i128> for Quantity {
    fn eq(&self, other: &i128) -> bool {
        self.nanos == other.saturating_mul(NANO)
    }
}

fn pow10_i128(e: i32) -> Option<i128> {
    10i128.checked_pow(u32::try_from(e).ok()?)
}

/// Returns (power of two, power of ten).
fn parse_suffix(s: &str) -> Result<(u32, i32), QuantityError> {
    let r = match s {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exp = s.strip_prefix(['e', 'E']).ok_or(QuantityError::Syntax)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(QuantityError::Syntax);
            }
            let e: i32 = exp.parse().map_err(|_| QuantityError::Syntax)?;
            (0, e)
        }
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(q("64Mi").value_ceil(), 64 * 1024 * 1024);
        assert_eq!(q("1Gi").value_ceil(), 1 << 30);
        assert_eq!(q("1G").value_ceil(), 1_000_000_000);
        assert_eq!(q("2k").value_ceil(), 2000);
        assert_eq!(q("500m").milli_ceil(), 500);
        assert_eq!(q("0.5").milli_ceil(), 500);
        assert_eq!(q("1.5Gi").value_ceil(), 3 << 29);
        assert_eq!(q("100n").nanos(), 100);
        assert_eq!(q("1e3").value_ceil(), 1000);
        assert_eq!(q("1E-3").milli_ceil(), 1);
    }

    #[test]
    fn equal_values_in_different_spellings_compare_equal() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("100m") < q("0.2"));
    }

    #[test]
    fn values_round_up() {
        assert_eq!(q("1250m").value_ceil(), 2);
        assert_eq!(q("0.1m").milli_ceil(), 1);
        assert_eq!(q("1250m").div_ceil(q("1")), Some(2));
        assert_eq!(q("64Mi").div_ceil(q("1Mi")), Some(64));
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for bad in ["", "abc", "1.2.3", "1Qi", "1e", "1ee3", "m", ".", "1 Gi"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Syntax), "{bad}");
        }
        assert!(q("-1").is_negative());
    }

    #[test]
    fn absurdly_large_quantities_are_errors_not_panics() {
        assert!(matches!(
            Quantity::parse("1e40"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            Quantity::parse(&"9".repeat(50)),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
