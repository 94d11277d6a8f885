//! Welch's two-sample t-test from summary statistics, as scipy's
//! `ttest_ind_from_stats(..., equal_var=False)`, with the CI of the difference (b - a).

use super::dist::{t_isf, t_sf};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub n: f64,
    pub mean: f64,
    pub variance: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WelchResult {
    /// None when both variances are zero (the statistic is undefined).
    pub t: Option<f64>,
    /// None when both variances are zero.
    pub df: Option<f64>,
    pub p_value: f64,
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub se: f64,
}

pub fn check_alpha(alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!("alpha is {alpha}, must be between 0 and 1 (exclusive)")))
    }
}

fn check_sample(label: &str, s: &Sample) -> Result<()> {
    if !(s.n >= 2.0) {
        return Err(Error::invalid(format!(
            "n_{label} is {}, the t-test needs at least 2 observations per group",
            s.n
        )));
    }
    if !s.mean.is_finite() {
        return Err(Error::invalid(format!("mean_{label} must be finite, got {}", s.mean)));
    }
    if !(s.variance.is_finite() && s.variance >= 0.0) {
        return Err(Error::invalid(format!("var_{label} must be a finite non-negative number, got {}", s.variance)));
    }
    Ok(())
}

/// Welch's test of b against a.
///
/// When both variances are zero the groups are constant: the p-value is 1 if the means are
/// equal and 0 if not, the CI collapses to the difference, and t and df are None.
pub fn welch_test(a: &Sample, b: &Sample, alpha: f64) -> Result<WelchResult> {
    check_sample("a", a)?;
    check_sample("b", b)?;
    check_alpha(alpha)?;
    let diff = b.mean - a.mean;
    if !diff.is_finite() {
        return Err(Error::invalid("the difference of the means overflows a float8"));
    }
    let va = a.variance / a.n;
    let vb = b.variance / b.n;
    let se2 = va + vb;
    if se2 == 0.0 {
        return Ok(WelchResult {
            t: None,
            df: None,
            p_value: if diff == 0.0 { 1.0 } else { 0.0 },
            diff,
            ci_lower: diff,
            ci_upper: diff,
            se: 0.0,
        });
    }
    let se = se2.sqrt();
    let t = diff / se;
    // Welch-Satterthwaite, scaled by the larger term so that tiny variances do not underflow.
    let m = va.max(vb);
    let (sa, sb) = (va / m, vb / m);
    let df = (sa + sb) * (sa + sb) / (sa * sa / (a.n - 1.0) + sb * sb / (b.n - 1.0));
    let p_value = (2.0 * t_sf(t.abs(), df)).min(1.0);
    let q = t_isf(alpha / 2.0, df);
    Ok(WelchResult { t: Some(t), df: Some(df), p_value, diff, ci_lower: diff - q * se, ci_upper: diff + q * se, se })
}

/// Relative lift (b - a) / |a|; None when the control mean is 0.
pub fn relative_lift(mean_a: f64, mean_b: f64) -> Option<f64> {
    (mean_a != 0.0).then(|| (mean_b - mean_a) / mean_a.abs())
}

/// Cohen's d with the average of the two variances; None when both are zero.
pub fn cohens_d(a: &Sample, b: &Sample) -> Option<f64> {
    let pooled = ((a.variance + b.variance) / 2.0).sqrt();
    (pooled > 0.0).then(|| (b.mean - a.mean) / pooled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: f64, mean: f64, variance: f64) -> Sample {
        Sample { n, mean, variance }
    }

    #[test]
    fn zero_variance() {
        let r = welch_test(&s(5.0, 1.0, 0.0), &s(5.0, 1.0, 0.0), 0.05).unwrap();
        assert_eq!((r.t, r.df, r.p_value, r.ci_lower, r.ci_upper), (None, None, 1.0, 0.0, 0.0));
        let r = welch_test(&s(5.0, 1.0, 0.0), &s(5.0, 2.0, 0.0), 0.05).unwrap();
        assert_eq!((r.p_value, r.diff), (0.0, 1.0));
    }

    #[test]
    fn invalid_inputs() {
        let ok = s(10.0, 1.0, 1.0);
        for (a, b, alpha, msg) in [
            (s(1.0, 1.0, 1.0), ok, 0.05, "n_a is 1"),
            (ok, s(0.0, 1.0, 1.0), 0.05, "n_b is 0"),
            (ok, s(3.0, 1.0, -1.0), 0.05, "var_b must be a finite non-negative"),
            (s(3.0, f64::NAN, 1.0), ok, 0.05, "mean_a must be finite"),
            (ok, ok, 0.0, "alpha is 0"),
            (ok, ok, 1.0, "alpha is 1"),
            (s(3.0, -1e308, 1.0), s(3.0, 1e308, 1.0), 0.05, "overflows"),
        ] {
            let e = welch_test(&a, &b, alpha).unwrap_err();
            assert!(e.message.contains(msg), "{}", e.message);
        }
    }

    #[test]
    fn lift_and_effect_size() {
        assert_eq!(relative_lift(0.0, 1.0), None);
        assert_eq!(relative_lift(-2.0, -1.0), Some(0.5));
        assert_eq!(cohens_d(&s(3.0, 0.0, 0.0), &s(3.0, 1.0, 0.0)), None);
        assert_eq!(cohens_d(&s(3.0, 0.0, 1.0), &s(3.0, 1.0, 1.0)), Some(1.0));
    }
}
