//! Sample size per arm for a two-sided test with equal allocation (normal approximation).

use super::dist::normal_isf;
use super::welch::check_alpha;
use crate::error::{Error, Result};

/// Users each arm needs to detect an absolute difference `mde` with the given power; at least
/// 2, the fewest a two-sample test can use (also when `std_dev` is 0).
pub fn sample_size(std_dev: f64, mde: f64, alpha: f64, power: f64) -> Result<u64> {
    if !(std_dev.is_finite() && std_dev >= 0.0) {
        return Err(Error::invalid(format!("std_dev is {std_dev}, must be a finite number of at least 0")));
    }
    if !(mde.is_finite() && mde != 0.0) {
        return Err(Error::invalid(format!("mde is {mde}, must be a finite non-zero difference")));
    }
    check_alpha(alpha)?;
    if !(power > 0.0 && power < 1.0) {
        return Err(Error::invalid(format!("power is {power}, must be between 0 and 1 (exclusive)")));
    }
    let z = normal_isf(alpha / 2.0) + normal_isf(1.0 - power);
    let n = (2.0 * z * z * std_dev * std_dev / (mde * mde)).ceil();
    if n > 9.0e15 {
        return Err(Error::invalid("the sample size is too large to represent; is the mde far too small?"));
    }
    Ok((n as u64).max(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_value_and_errors() {
        // 2 * (1.959964 + 0.841621)^2 / 0.5^2 = 62.79 -> 63 per arm for d = 0.5.
        assert_eq!(sample_size(1.0, 0.5, 0.05, 0.8).unwrap(), 63);
        assert_eq!(sample_size(0.0, 0.5, 0.05, 0.8).unwrap(), 2);
        assert_eq!(sample_size(1.0, 100.0, 0.05, 0.8).unwrap(), 2);
        assert!(sample_size(1.0, 0.0, 0.05, 0.8).unwrap_err().message.contains("mde is 0"));
        assert!(sample_size(1.0, 0.1, 0.05, 1.0).unwrap_err().message.contains("power is 1"));
        assert!(sample_size(-1.0, 0.1, 0.05, 0.8).unwrap_err().message.contains("std_dev is -1"));
    }
}
