//! Two-proportion z-test, as statsmodels' `proportions_ztest` (pooled z for the p-value), with
//! the CI of the difference (b - a) that inverts the same test: the score interval
//! (statsmodels' `confint_proportions_2indep(method="score", correction=False)`). At diff = 0
//! the score statistic is the pooled z, so the CI excludes 0 exactly when p < alpha; the
//! unpooled (Wald) interval can disagree with the pooled p-value near alpha, and undercovers
//! with few users or rates near 0 or 1.

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
    /// Unpooled standard error of the difference (for the sequential, Bayesian and power
    /// figures, which are normal approximations around the estimate).
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
    let (ci_lower, ci_upper) = score_interval(xb, nb, xa, na, normal_isf(alpha / 2.0));
    Ok(ProportionResult { z, p_value, diff, ci_lower, ci_upper, se })
}

/// The score statistic of H0: p1 - p2 = delta, with the restricted maximum-likelihood
/// proportions in closed form (Miettinen and Nurminen 1985, without their n/(n-1) factor).
/// Positive when the observed difference is above delta. At delta = 0 it is the pooled z;
/// at a margin it is the Farrington-Manning test of non-inferiority.
pub fn score_stat(y1: f64, n1: f64, y2: f64, n2: f64, delta: f64) -> f64 {
    let n = n1 + n2;
    let y = y1 + y2;
    let l3 = n;
    let l2 = (n1 + 2.0 * n2) * delta - n - y;
    let l1 = (n2 * delta - n - 2.0 * y2) * delta + y;
    let l0 = y2 * delta * (1.0 - delta);
    let q = l2.powi(3) / (3.0 * l3).powi(3) - l1 * l2 / (6.0 * l3 * l3) + l0 / (2.0 * l3);
    let p = q.signum() * (l2 * l2 / (3.0 * l3).powi(2) - l1 / (3.0 * l3)).max(0.0).sqrt();
    let p2 = if p == 0.0 {
        -l2 / (3.0 * l3)
    } else {
        let a = (std::f64::consts::PI + (q / p.powi(3)).clamp(-1.0, 1.0).acos()) / 3.0;
        2.0 * p * a.cos() - l2 / (3.0 * l3)
    };
    let p2 = p2.clamp(0.0, 1.0);
    let p1 = (p2 + delta).clamp(0.0, 1.0);
    let var = p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2;
    let num = y1 / n1 - y2 / n2 - delta;
    if num == 0.0 {
        0.0
    } else if var > 0.0 {
        num / var.sqrt()
    } else {
        num.signum() * f64::INFINITY
    }
}

/// The deltas whose score statistic is within +-z of 0, for diff = y1/n1 - y2/n2. The
/// statistic falls as delta grows, so each bound is found by bisection on its side.
fn score_interval(y1: f64, n1: f64, y2: f64, n2: f64, z: f64) -> (f64, f64) {
    let diff = y1 / n1 - y2 / n2;
    let bound = |mut inside: f64, mut outside: f64, limit: f64| {
        if score_stat(y1, n1, y2, n2, outside).abs() <= z {
            return limit;
        }
        for _ in 0..200 {
            let mid = 0.5 * (inside + outside);
            if mid == inside || mid == outside {
                break;
            }
            if score_stat(y1, n1, y2, n2, mid).abs() <= z {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        inside
    };
    (bound(diff, -1.0, -1.0), bound(diff, 1.0, 1.0))
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
        assert_eq!((r.z, r.p_value, r.diff), (None, 1.0, 0.0));
        // No conversion in 10 + 10 users still leaves the difference uncertain (the Wald
        // interval would be [0, 0]).
        assert!(r.ci_lower < -0.1 && r.ci_upper > 0.1 && (r.ci_lower + r.ci_upper).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn extremes_reach_the_bounds() {
        let r = proportion_test(0.0, 5.0, 5.0, 5.0, 0.05).unwrap();
        assert_eq!(r.ci_upper, 1.0);
        assert!(r.ci_lower > 0.0 && r.ci_lower < 1.0 && r.p_value < 0.05, "{r:?}");
    }

    #[test]
    fn the_interval_agrees_with_the_p_value() {
        // Around the edge of significance: 0 is outside the CI exactly when p < alpha.
        for xb in 50..80 {
            let r = proportion_test(50.0, 100.0, xb as f64, 100.0, 0.05).unwrap();
            assert_eq!(r.ci_lower > 0.0, r.p_value < 0.05, "{xb} {r:?}");
        }
    }
}
