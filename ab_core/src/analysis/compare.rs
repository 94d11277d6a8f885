//! One treatment against the control: the raw test (Welch, z, or period-stratified), its
//! sequential form, its relative and non-inferiority tests, and CUPED.

use super::{CupedResult, Settings};
use crate::bandit::Estimate;
use crate::definition::{Direction, MetricType};
use crate::stats::cuped::{self, CoMoments};
use crate::stats::dist::{normal_isf, normal_sf, t_isf, t_sf};
use crate::stats::proportion::{proportion_test, score_stat};
use crate::stats::sequential;
use crate::stats::welch::{welch_test, Sample};
use crate::stats::Moments;

pub(super) fn sample(m: &Moments) -> Option<Sample> {
    m.variance().map(|variance| Sample { n: m.n, mean: m.mean, variance })
}

/// The raw comparison of one treatment with the control: (diff, ci, p, se^2), with what
/// the relative and non-inferiority tests need: each mean's variance (se2 = v_c + v_t), the
/// degrees of freedom (None: normal), the conversions of a binary metric, and in sequential
/// mode the users in all.
pub(super) struct Raw {
    pub(super) test: &'static str,
    pub(super) diff: f64,
    pub(super) ci_lower: f64,
    pub(super) ci_upper: f64,
    pub(super) p_value: f64,
    pub(super) se2: f64,
    pub(super) v_c: f64,
    pub(super) v_t: f64,
    df: Option<f64>,
    counts: Option<(f64, f64, f64, f64)>,
    sequential: Option<(f64, f64)>,
}

impl Raw {
    /// The upper-q critical value and the survival function of this comparison's
    /// distribution: Welch's t, or the normal where `df` is None.
    fn quantile(&self, q: f64) -> f64 {
        match self.df {
            Some(df) => t_isf(q, df),
            None => normal_isf(q),
        }
    }

    fn sf(&self, x: f64) -> f64 {
        match self.df {
            Some(df) => t_sf(x, df),
            None => normal_sf(x),
        }
    }

    /// The delta-method variance of diff / |mc|: v_t / mc^2 + v_c mt^2 / mc^4.
    pub(super) fn relative_variance(&self, mc: f64, mt: f64) -> Option<f64> {
        (mc != 0.0 && mc.is_finite()).then(|| self.v_t / (mc * mc) + self.v_c * mt * mt / (mc * mc * mc * mc))
    }

    /// relative = diff / |mc| with its delta-method variance (gbstats' relative test):
    /// (lower, upper, p).
    pub(super) fn relative(&self, alpha: f64, mc: f64, mt: f64) -> Option<(f64, f64, f64)> {
        let var = self.relative_variance(mc, mt)?;
        let est = (mt - mc) / mc.abs();
        if !(var > 0.0 && var.is_finite()) {
            return Some((est, est, if est == 0.0 { 1.0 } else { 0.0 }));
        }
        let se = var.sqrt();
        Some(match self.sequential {
            Some((n, tuning)) => {
                let half = sequential::half_width(var, n, alpha, tuning);
                (est - half, est + half, sequential::p_value(est, var, n, tuning))
            }
            None => {
                let q = self.quantile(alpha / 2.0);
                (est - q * se, est + q * se, (2.0 * self.sf(est.abs() / se)).min(1.0))
            }
        })
    }

    /// One-sided p-value of H0: the treatment is worse than the control by `margin` or more
    /// (H1: diff > -margin where higher is better, diff < margin where lower is). Binary
    /// metrics use the score test at the margin (Farrington-Manning), the test their CI
    /// inverts; sequential mode the always-valid p-value of the difference from the margin
    /// (two-sided, so conservative), 1 when the estimate is on the wrong side of it.
    pub(super) fn non_inferiority(&self, direction: Direction, margin: f64) -> f64 {
        let (bound, sign) = match direction {
            Direction::Higher => (-margin, 1.0),
            Direction::Lower => (margin, -1.0),
        };
        if let Some((n, tuning)) = self.sequential {
            return if sign * (self.diff - bound) > 0.0 {
                sequential::p_value(self.diff - bound, self.se2, n, tuning)
            } else {
                1.0
            };
        }
        if let Some((xc, nc, xt, nt)) = self.counts {
            return normal_sf(sign * score_stat(xt, nt, xc, nc, bound));
        }
        if !(self.se2 > 0.0) {
            return if sign * (self.diff - bound) > 0.0 { 0.0 } else { 1.0 };
        }
        self.sf(sign * (self.diff - bound) / self.se2.sqrt())
    }
}

pub(super) fn compare(settings: &Settings, kind: MetricType, c: &Moments, t: &Moments) -> Option<Raw> {
    let fixed = match kind {
        MetricType::Binary => {
            // Per-user values are 0/1, so mean * n is the number of converted users.
            let (xc, xt) = ((c.mean * c.n).round(), (t.mean * t.n).round());
            let r = proportion_test(xc, c.n, xt, t.n, settings.alpha).ok()?;
            let (pc, pt) = (xc / c.n, xt / t.n);
            Raw {
                test: "z",
                diff: r.diff,
                ci_lower: r.ci_lower,
                ci_upper: r.ci_upper,
                p_value: r.p_value,
                se2: r.se * r.se,
                v_c: pc * (1.0 - pc) / c.n,
                v_t: pt * (1.0 - pt) / t.n,
                df: None,
                counts: Some((xc, c.n, xt, t.n)),
                sequential: None,
            }
        }
        MetricType::Continuous | MetricType::Ratio | MetricType::Quantile => {
            let (cs, ts) = (sample(c)?, sample(t)?);
            let r = welch_test(&cs, &ts, settings.alpha).ok()?;
            Raw {
                test: "welch",
                diff: r.diff,
                ci_lower: r.ci_lower,
                ci_upper: r.ci_upper,
                p_value: r.p_value,
                se2: r.se * r.se,
                v_c: cs.variance / cs.n,
                v_t: ts.variance / ts.n,
                df: r.df,
                counts: None,
                sequential: None,
            }
        }
    };
    Some(match settings.sequential_tuning {
        None => fixed,
        Some(tuning) => sequentialize(fixed, c.n + t.n, settings.alpha, tuning),
    })
}

/// A comparison on the normal reference from each mean's variance (cluster-robust ones, see
/// `clustered`): `n` is the units the confidence sequence counts in sequential mode.
pub(super) fn normal_raw(settings: &Settings, test: &'static str, diff: f64, v_c: f64, v_t: f64, n: f64) -> Raw {
    let se2 = v_c + v_t;
    let se = se2.sqrt();
    let q = normal_isf(settings.alpha / 2.0);
    let p_value = if se > 0.0 {
        (2.0 * normal_sf(diff.abs() / se)).min(1.0)
    } else if diff == 0.0 {
        1.0
    } else {
        0.0
    };
    let fixed = Raw {
        test,
        diff,
        ci_lower: diff - q * se,
        ci_upper: diff + q * se,
        p_value,
        se2,
        v_c,
        v_t,
        df: None,
        counts: None,
        sequential: None,
    };
    match settings.sequential_tuning {
        None => fixed,
        Some(tuning) => sequentialize(fixed, n, settings.alpha, tuning),
    }
}

/// Treatment against control from period-stratified estimates (bandit experiments): a t-test
/// on the difference of the weighted means, with Welch-Satterthwaite degrees of freedom over
/// every (variant, period) cell (small late cells of a losing variant make it wider than z).
pub(super) fn compare_stratified(settings: &Settings, n: f64, c: &Estimate, t: &Estimate) -> Option<Raw> {
    let se2 = c.var + t.var;
    if !(se2 > 0.0 && se2.is_finite()) {
        return None;
    }
    let diff = t.mean - c.mean;
    let se = se2.sqrt();
    let df = (se2 * se2 / (c.df_terms + t.df_terms)).min(1e12);
    let q = t_isf(settings.alpha / 2.0, df);
    let fixed = Raw {
        test: "stratified",
        diff,
        ci_lower: diff - q * se,
        ci_upper: diff + q * se,
        p_value: (2.0 * t_sf(diff.abs() / se, df)).min(1.0),
        se2,
        v_c: c.var,
        v_t: t.var,
        df: Some(df),
        counts: None,
        sequential: None,
    };
    Some(match settings.sequential_tuning {
        None => fixed,
        Some(tuning) => sequentialize(fixed, n, settings.alpha, tuning),
    })
}

fn sequentialize(raw: Raw, n: f64, alpha: f64, tuning: f64) -> Raw {
    let half = sequential::half_width(raw.se2, n, alpha, tuning);
    Raw {
        test: match raw.test {
            "z" => "z-sequential",
            "cluster" => "cluster-sequential",
            "stratified" => "stratified-sequential",
            _ => "welch-sequential",
        },
        ci_lower: raw.diff - half,
        ci_upper: raw.diff + half,
        p_value: sequential::p_value(raw.diff, raw.se2, n, tuning),
        sequential: Some((n, tuning)),
        ..raw
    }
}

pub(super) fn cuped_comparison(settings: &Settings, arms: &[CoMoments], ci: usize, ti: usize) -> Option<CupedResult> {
    let theta = cuped::theta(arms)?;
    let overall = arms.iter().fold(CoMoments::default(), |acc, a| acc.merge(a));
    let (mc, vc) = cuped::adjust(&arms[ci], theta, overall.mean_x);
    let (mt, vt) = cuped::adjust(&arms[ti], theta, overall.mean_x);
    let (c, t) = (&arms[ci], &arms[ti]);
    if c.n < 2.0 || t.n < 2.0 {
        return None;
    }
    let adjusted = welch_test(
        &Sample { n: c.n, mean: mc, variance: vc },
        &Sample { n: t.n, mean: mt, variance: vt },
        settings.alpha,
    )
    .ok()?;
    let raw_se2 = c.m2_y / (c.n - 1.0) / c.n + t.m2_y / (t.n - 1.0) / t.n;
    let mut r = Raw {
        test: "welch",
        diff: adjusted.diff,
        ci_lower: adjusted.ci_lower,
        ci_upper: adjusted.ci_upper,
        p_value: adjusted.p_value,
        se2: adjusted.se * adjusted.se,
        v_c: vc / c.n,
        v_t: vt / t.n,
        df: adjusted.df,
        counts: None,
        sequential: None,
    };
    if let Some(tuning) = settings.sequential_tuning {
        r = sequentialize(r, c.n + t.n, settings.alpha, tuning);
    }
    Some(CupedResult {
        diff: r.diff,
        ci_lower: r.ci_lower,
        ci_upper: r.ci_upper,
        p_value: r.p_value,
        variance_reduction: if raw_se2 > 0.0 { 1.0 - r.se2 / raw_se2 } else { 0.0 },
    })
}
