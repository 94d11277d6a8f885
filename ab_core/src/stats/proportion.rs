//! Two-proportion z-test, as statsmodels' `proportions_ztest` (pooled z for the p-value) with
//! the unpooled Wald CI of the difference (b - a).

use super::dist::{normal_isf, normal_sf};
use super::welch::check_alpha;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionResult {
    /// None when the pooled proportion is 0 or 1 (no variation at all).
    pub z: Option<f64>,
    pub p_value: f64,
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    /// Unpooled standard error of the difference.
    pub se: f64,
}

pub fn check_counts(label: &str, x: f64, n: f64) -> Result<()> {
    if !(n >= 1.0) || n.fract() != 0.0 {
        return Err(Error::invalid(format!("n_{label} is {n}, must be a positive whole number")));
    }
    if !(x >= 0.0) || x.fract() != 0.0 {
        return Err(Error::invalid(format!("x_{label} is {x}, must be a whole number of at least 0")));
    }
    if x > n {
        return Err(Error::invalid(format!("x_{label} is {x}, more than n_{label} = {n}")));
    }
    Ok(())
}

pub fn proportion_test(xa: f64, na: f64, xb: f64, nb: f64, alpha: f64) -> Result<ProportionResult> {
    check_counts("a", xa, na)?;
    check_counts("b", xb, nb)?;
    check_alpha(alpha)?;
    let pa = xa / na;
    let pb = xb / nb;
    let diff = pb - pa;
    let pooled = (xa + xb) / (na + nb);
    let pooled_se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    let (z, p_value) = if pooled_se > 0.0 {
        let z = diff / pooled_se;
        (Some(z), (2.0 * normal_sf(z.abs())).min(1.0))
    } else {
        (None, 1.0)
    };
    let se = (pa * (1.0 - pa) / na + pb * (1.0 - pb) / nb).sqrt();
    let q = normal_isf(alpha / 2.0);
    Ok(ProportionResult { z, p_value, diff, ci_lower: diff - q * se, ci_upper: diff + q * se, se })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_counts() {
        for (xa, na, xb, nb, msg) in [
            (5.0, 4.0, 1.0, 2.0, "more than n_a"),
            (-1.0, 4.0, 1.0, 2.0, "x_a is -1"),
            (1.0, 0.0, 1.0, 2.0, "n_a is 0"),
            (1.0, 4.0, 1.5, 2.0, "x_b is 1.5"),
        ] {
            assert!(proportion_test(xa, na, xb, nb, 0.05).unwrap_err().message.contains(msg));
        }
    }

    #[test]
    fn no_variation() {
        let r = proportion_test(0.0, 10.0, 0.0, 10.0, 0.05).unwrap();
        assert_eq!((r.z, r.p_value, r.diff, r.ci_lower, r.ci_upper), (None, 1.0, 0.0, 0.0, 0.0));
    }
}
