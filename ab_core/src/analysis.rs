//! The per-metric analysis: per-variant statistics over per-user values, each treatment
//! compared with the control (Welch's t-test, or the two-proportion z-test for binary
//! metrics; always-valid in sequential mode), adjusted across treatments, with CUPED,
//! Bayesian and power figures, and a plain-words recommendation for every row.

use crate::bandit::{stratified, Estimate};
use crate::definition::{Correction, Direction, MetricDef, MetricType};
use crate::stats::bayes::bayes;
use crate::stats::cuped::{self, CoMoments};
use crate::stats::dist::{normal_isf, normal_sf, t_isf, t_sf};
use crate::stats::multiple::{benjamini_hochberg, holm};
use crate::stats::power::sample_size;
use crate::stats::proportion::proportion_test;
use crate::stats::proportion::score_stat;
use crate::stats::sequential;
use crate::stats::welch::{cohens_d, relative_lift, welch_test, Sample};
use crate::stats::Moments;

/// One variant's data for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmInput {
    pub variant: String,
    pub is_control: bool,
    /// Users assigned to the variant.
    pub assigned: u64,
    /// Moments of the per-user values of the users who recorded the metric.
    pub observed: Moments,
    /// Co-moments of (per-user value, covariate) over the users the analysis counts (silent
    /// users included where they count as 0), when the experiment has covariates.
    pub covariate: Option<CoMoments>,
    /// For a bandit experiment, per weight period: (users assigned in it, moments of their
    /// per-user values). Empty for fixed allocations.
    pub periods: Vec<(u64, Moments)>,
    /// For a ratio metric: co-moments of (numerator, denominator) over every assigned user
    /// (0 for a part the user did not record).
    pub ratio: Option<CoMoments>,
    /// For a quantile metric: the quantile's estimate and what its variance needs.
    pub quantile: Option<QuantileStat>,
}

/// A quantile's estimate in one arm, as GrowthBook's gbstats defines its statistic: the
/// sample quantile, and the values at the levels `quantile_levels` gives around it (an
/// order-statistic interval), whose width gives the estimate's variance; for a quantile of
/// every recorded value, the per-user counts that make that variance respect that one user
/// records many values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileStat {
    /// Users who recorded the metric.
    pub users: u64,
    /// Values the quantile is over (users, or recorded values).
    pub n: f64,
    /// The level, such as 0.9.
    pub nu: f64,
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    pub cluster: Option<ClusterSums>,
}

/// Per-user sums of (values at most the estimate, values): s_i and n_i over the users.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClusterSums {
    pub sum_s: f64,
    pub sum_s2: f64,
    pub sum_n: f64,
    pub sum_n2: f64,
    pub sum_sn: f64,
}

/// The z of the order-statistic interval (gbstats fixes it at the 95% level).
fn quantile_z() -> f64 {
    normal_isf(0.025)
}

/// The levels, around `nu`, of the order-statistic interval of a quantile over n values.
pub fn quantile_levels(nu: f64, n: f64) -> (f64, f64) {
    let half = quantile_z() * (nu * (1.0 - nu) / n).sqrt();
    ((nu - half).clamp(0.0, 1.0), (nu + half).clamp(0.0, 1.0))
}

/// The estimate as moments: n values, mean the estimate, and the variance of one value such
/// that variance / n is the estimate's (gbstats' QuantileStatistic and
/// QuantileClusteredStatistic). None when n is too small for the interval to stay inside the
/// data (as gbstats), or the variance is 0.
pub fn quantile_moments(q: &QuantileStat) -> Option<Moments> {
    let (n, nu) = (q.n, q.nu);
    let z2 = quantile_z().powi(2);
    if n <= 1.0 || n <= z2 * nu / (1.0 - nu) || n <= z2 * (1.0 - nu) / nu {
        return None;
    }
    let half = (q.upper - q.lower) / (2.0 * quantile_z());
    let iid = (n - 1.0) * half * half;
    let variance = match q.cluster {
        None => iid,
        Some(c) => {
            let k = q.users as f64;
            if k <= 1.0 || c.sum_n <= 0.0 {
                return None;
            }
            let (mu_s, mu_n) = (c.sum_s / k, c.sum_n / k);
            let var_s = (c.sum_s2 / k - mu_s * mu_s) * k / (k - 1.0);
            let var_n = (c.sum_n2 / k - mu_n * mu_n) * k / (k - 1.0);
            let cov = (c.sum_sn / k - mu_s * mu_n) * k / (k - 1.0);
            let cluster = (var_s - 2.0 * mu_s * cov / mu_n + mu_s * mu_s * var_n / (mu_n * mu_n)) / (k * mu_n * mu_n);
            iid * cluster / (nu * (1.0 - nu) / n)
        }
    };
    // Every value at the interval's levels equal: the estimate has no spread, which is data
    // (the test then compares the estimates exactly, as for any metric without spread).
    (variance >= 0.0 && variance.is_finite()).then(|| Moments::from_summary(n, q.estimate, variance))
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricInput {
    pub name: String,
    pub def: MetricDef,
    /// The cap the per-user values were limited to (the metric's `cap`: its value, or the
    /// percentile's value in this experiment's data); None when uncapped.
    pub cap: Option<f64>,
    pub arms: Vec<ArmInput>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub alpha: f64,
    pub min_sample_size: i64,
    /// N* of the confidence sequence in sequential mode.
    pub sequential_tuning: Option<f64>,
    pub correction: Correction,
    pub power: f64,
}

impl Settings {
    pub fn fixed(alpha: f64, min_sample_size: i64) -> Settings {
        Settings { alpha, min_sample_size, sequential_tuning: None, correction: Correction::Holm, power: 0.8 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CupedResult {
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub p_value: f64,
    /// Share of the variance of the difference removed by the covariate.
    pub variance_reduction: f64,
}

/// A guardrail's test of non-inferiority: that the treatment is not worse than the control
/// by the metric's `margin` or more (one-sided, in the metric's direction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonInferiority {
    pub margin: f64,
    pub p_value: f64,
    /// Adjusted over the metric's treatments like `Comparison::p_adjusted`.
    pub p_adjusted: f64,
    /// `p_adjusted < alpha`: shown to be no worse than the margin.
    pub passed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// "welch" or "z", with "-sequential" in sequential mode.
    pub test: &'static str,
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub relative_lift: Option<f64>,
    /// The CI of `relative_lift` and the p-value of its test against 0 (delta method); None
    /// when the control mean is 0.
    pub relative_ci: Option<(f64, f64)>,
    pub relative_p_value: Option<f64>,
    pub p_value: f64,
    /// With a `margin`: the non-inferiority test.
    pub non_inferiority: Option<NonInferiority>,
    /// The variance of `diff`'s estimate and of `relative_lift`'s (delta method): the data
    /// for a Bayesian posterior (`stats::bayes::posterior`).
    pub variance: f64,
    pub relative_variance: Option<f64>,
    /// Adjusted over the metric's treatments (equal to p_value with one treatment).
    pub p_adjusted: f64,
    pub significant: bool,
    pub effect_size: Option<f64>,
    pub chance_to_beat_control: f64,
    pub expected_loss: f64,
    /// Users each arm still needs for the metric's mde; None without an mde.
    pub users_needed: Option<u64>,
    pub cuped: Option<CupedResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArmResult {
    pub variant: String,
    pub is_control: bool,
    pub users: u64,
    pub mean: Option<f64>,
    pub std_dev: Option<f64>,
    pub comparison: Option<Comparison>,
    pub recommendation: String,
    /// 1 - adjusted p-value of the comparison with the control.
    pub confidence: Option<f64>,
    /// Why an arm whose users count has no mean (a ratio whose denominator is 0).
    pub no_estimate: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub def: MetricDef,
    /// As `MetricInput::cap`.
    pub cap: Option<f64>,
    pub arms: Vec<ArmResult>,
}

impl MetricResult {
    /// The same result with its names and words made safe to print in a line of text (see
    /// `names::printable`): for reports, never for the data returned by `ab_analyze`.
    pub fn printable(&self) -> MetricResult {
        let mut m = self.clone();
        m.name = crate::names::printable(&m.name).into_owned();
        for a in &mut m.arms {
            a.variant = crate::names::printable(&a.variant).into_owned();
            a.recommendation = crate::names::printable(&a.recommendation).into_owned();
        }
        m
    }
}

impl MetricResult {
    pub fn control(&self) -> Option<&ArmResult> {
        self.arms.iter().find(|a| a.is_control)
    }

    /// The first figure of the result that is not a finite number, as (variant, column,
    /// value). Recorded values are bounded so that none can occur, but a ratio divides by the
    /// application's denominators, which may be as close to 0 as a float8 goes.
    pub fn non_finite(&self) -> Option<(&str, &'static str, f64)> {
        for a in &self.arms {
            let mut figures: Vec<(&'static str, Option<f64>)> = vec![("mean", a.mean), ("std_dev", a.std_dev)];
            if let Some(c) = &a.comparison {
                figures.extend([
                    ("diff", Some(c.diff)),
                    ("ci_lower", Some(c.ci_lower)),
                    ("ci_upper", Some(c.ci_upper)),
                    ("relative_lift", c.relative_lift),
                    ("relative_lift_ci_lower", c.relative_ci.map(|r| r.0)),
                    ("relative_lift_ci_upper", c.relative_ci.map(|r| r.1)),
                    ("relative_lift_p_value", c.relative_p_value),
                    ("p_value", Some(c.p_value)),
                    ("p_value_adjusted", Some(c.p_adjusted)),
                    ("effect_size", c.effect_size),
                    ("chance_to_beat_control", Some(c.chance_to_beat_control)),
                    ("expected_loss", Some(c.expected_loss)),
                    ("non_inferiority_p_value", c.non_inferiority.map(|n| n.p_value)),
                    ("cuped_diff", c.cuped.map(|k| k.diff)),
                    ("cuped_ci_lower", c.cuped.map(|k| k.ci_lower)),
                    ("cuped_ci_upper", c.cuped.map(|k| k.ci_upper)),
                    ("cuped_p_value", c.cuped.map(|k| k.p_value)),
                ]);
            }
            if let Some((column, x)) =
                figures.into_iter().find_map(|(k, v)| v.filter(|x| !x.is_finite()).map(|x| (k, x)))
            {
                return Some((a.variant.as_str(), column, x));
            }
        }
        None
    }

    /// The message refusing a result with a figure that is not a finite number (an analysis
    /// never reports one).
    pub fn overflow_problem(&self) -> Option<String> {
        let (variant, column, x) = self.non_finite()?;
        let why = match (self.def.kind, self.def.ratio_of()) {
            (MetricType::Ratio, Some((_, den))) => format!(
                ": its denominator \"{}\" is too close to 0 for the ratio to be computed",
                crate::names::printable(den)
            ),
            _ => String::new(),
        };
        Some(format!(
            "metric \"{}\": the {column} of variant \"{}\" is {}, not a finite number{why}",
            crate::names::printable(&self.name),
            crate::names::printable(variant),
            if x.is_nan() {
                "NaN".to_string()
            } else if x > 0.0 {
                "Infinity".to_string()
            } else {
                "-Infinity".to_string()
            },
        ))
    }
}

/// The moments the test uses: users who recorded nothing count as 0 where the metric says so.
/// A ratio metric's are those of its delta-method linearization (see `ratio_moments`).
pub fn effective_moments(def: &MetricDef, arm: &ArmInput) -> Moments {
    if def.kind == MetricType::Quantile {
        arm.quantile.as_ref().and_then(quantile_moments).unwrap_or_default()
    } else if def.kind == MetricType::Ratio {
        arm.ratio.as_ref().map(ratio_moments).unwrap_or_default()
    } else if def.silent_users_are_zero() {
        let silent = (arm.assigned as f64 - arm.observed.n).max(0.0);
        arm.observed.merge(&Moments::constant(silent, 0.0))
    } else {
        arm.observed
    }
}

/// A ratio of means R = mean_y / mean_x as moments of the users' linearized values
/// (y - R x) / mean_x + R: their mean is R and their variance the delta-method variance of R
/// times n (as gbstats' RatioStatistic), so Welch's test, the Bayesian figures, sequential
/// intervals and power apply unchanged. No users (n = 0) when the denominator's mean is 0.
pub fn ratio_moments(co: &CoMoments) -> Moments {
    if !(co.n > 0.0 && co.mean_x != 0.0 && co.mean_x.is_finite()) {
        return Moments::default();
    }
    let r = co.mean_y / co.mean_x;
    let m2 = (co.m2_y - 2.0 * r * co.c_xy + r * r * co.m2_x) / (co.mean_x * co.mean_x);
    // A variance past the float8 range (denominators near 0) stays infinite rather than
    // becoming a spread of 0: the analysis then refuses the metric (`overflow_problem`).
    let m2 = match m2 {
        _ if !m2.is_finite() => f64::INFINITY,
        _ if m2 > 0.0 => m2,
        _ => 0.0,
    };
    Moments { n: co.n, mean: r, m2 }
}

/// Per period, as `effective_moments`.
pub fn effective_periods(def: &MetricDef, arm: &ArmInput) -> Vec<Moments> {
    arm.periods
        .iter()
        .map(|(assigned, observed)| {
            if def.silent_users_are_zero() {
                let silent = (*assigned as f64 - observed.n).max(0.0);
                observed.merge(&Moments::constant(silent, 0.0))
            } else {
                *observed
            }
        })
        .collect()
}

fn sample(m: &Moments) -> Option<Sample> {
    m.variance().map(|variance| Sample { n: m.n, mean: m.mean, variance })
}

/// The raw comparison of one treatment with the control: (diff, ci, p, se^2), with what
/// the relative and non-inferiority tests need: each mean's variance (se2 = v_c + v_t), the
/// degrees of freedom (None: normal), the conversions of a binary metric, and in sequential
/// mode the users in all.
struct Raw {
    test: &'static str,
    diff: f64,
    ci_lower: f64,
    ci_upper: f64,
    p_value: f64,
    se2: f64,
    v_c: f64,
    v_t: f64,
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
    fn relative_variance(&self, mc: f64, mt: f64) -> Option<f64> {
        (mc != 0.0 && mc.is_finite()).then(|| self.v_t / (mc * mc) + self.v_c * mt * mt / (mc * mc * mc * mc))
    }

    /// relative = diff / |mc| with its delta-method variance (gbstats' relative test):
    /// (lower, upper, p).
    fn relative(&self, alpha: f64, mc: f64, mt: f64) -> Option<(f64, f64, f64)> {
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
    fn non_inferiority(&self, direction: Direction, margin: f64) -> f64 {
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

fn compare(settings: &Settings, kind: MetricType, c: &Moments, t: &Moments) -> Option<Raw> {
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

/// Treatment against control from period-stratified estimates (bandit experiments): a t-test
/// on the difference of the weighted means, with Welch-Satterthwaite degrees of freedom over
/// every (variant, period) cell (small late cells of a losing variant make it wider than z).
fn compare_stratified(settings: &Settings, n: f64, c: &Estimate, t: &Estimate) -> Option<Raw> {
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

fn cuped_comparison(settings: &Settings, arms: &[CoMoments], ci: usize, ti: usize) -> Option<CupedResult> {
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

pub fn analyze_metric(settings: &Settings, input: &MetricInput) -> MetricResult {
    let def = &input.def;
    let moments: Vec<Moments> = input.arms.iter().map(|a| effective_moments(&def, a)).collect();
    let control_idx = input.arms.iter().position(|a| a.is_control);
    let bandit = input.arms.iter().any(|a| !a.periods.is_empty());
    // CUPED is not combined with the period strata, nor with ratio or quantile metrics (see
    // docs/statistics.md).
    let covariates: Option<Vec<CoMoments>> = if bandit || matches!(def.kind, MetricType::Ratio | MetricType::Quantile) {
        None
    } else {
        input.arms.iter().map(|a| a.covariate).collect()
    };
    let strata: Option<Vec<Estimate>> = if bandit {
        let periods: Vec<Vec<Moments>> = input.arms.iter().map(|a| effective_periods(def, a)).collect();
        stratified(&periods)
    } else {
        None
    };

    let raw: Vec<Option<Raw>> = moments
        .iter()
        .enumerate()
        .map(|(i, m)| match control_idx {
            Some(c) if c != i => match &strata {
                _ if !bandit => compare(settings, def.kind, &moments[c], m),
                Some(est) if moments[c].n >= 2.0 && m.n >= 2.0 => {
                    compare_stratified(settings, moments[c].n + m.n, &est[c], &est[i])
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    let tested: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].is_some()).collect();
    let adjust = |ps: &[f64]| match settings.correction {
        Correction::Holm => holm(ps),
        Correction::Bh => benjamini_hochberg(ps),
    };
    let ps: Vec<f64> = tested.iter().map(|&i| raw[i].as_ref().unwrap().p_value).collect();
    let adjusted = adjust(&ps);
    // A guardrail's non-inferiority tests form a family of their own, adjusted the same way.
    let ni_ps: Option<Vec<f64>> = def.margin.map(|margin| {
        tested.iter().map(|&i| raw[i].as_ref().unwrap().non_inferiority(def.direction, margin)).collect()
    });
    let ni_adjusted = ni_ps.as_deref().map(adjust);

    let min = settings.min_sample_size.max(0) as f64;
    let control = control_idx.map(|i| moments[i]);
    // Users per arm: a quantile of every recorded value is over more values than users.
    let units = |i: usize| input.arms[i].quantile.map_or(moments[i].n, |q| q.users as f64);
    let control_n = control_idx.map(units).unwrap_or(0.0);
    // A ratio arm whose users' denominators are 0 has users but no ratio.
    let no_estimate = |i: usize| -> Option<String> {
        let co = input.arms[i].ratio.filter(|co| def.kind == MetricType::Ratio && co.n > 0.0 && co.mean_x == 0.0)?;
        let den = crate::names::printable(def.denominator.as_deref().unwrap_or("")).into_owned();
        let variant = crate::names::printable(&input.arms[i].variant).into_owned();
        Some(if co.m2_x == 0.0 {
            format!(
                "the denominator \"{den}\" of ratio metric \"{}\" is 0 for every user of {variant}",
                crate::names::printable(&input.name)
            )
        } else {
            format!(
                "the denominator \"{den}\" of ratio metric \"{}\" averages 0 over the users of {variant}",
                crate::names::printable(&input.name)
            )
        })
    };
    let arms = input
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let m = &moments[i];
            let comparison = raw[i].as_ref().map(|r| {
                let c = control.unwrap();
                let k = tested.iter().position(|&j| j == i).unwrap();
                let p_adjusted = adjusted[k];
                let non_inferiority = match (def.margin, &ni_ps, &ni_adjusted) {
                    (Some(margin), Some(ps), Some(adj)) => Some(NonInferiority {
                        margin,
                        p_value: ps[k],
                        p_adjusted: adj[k],
                        passed: adj[k] < settings.alpha,
                    }),
                    _ => None,
                };
                let b = bayes(r.diff, r.se2.sqrt(), def.direction);
                let users_needed = def.mde.and_then(|mde| {
                    let sd = match def.kind {
                        MetricType::Binary => (c.mean * (1.0 - c.mean)).sqrt(),
                        MetricType::Continuous | MetricType::Ratio | MetricType::Quantile => {
                            ((c.variance().unwrap_or(0.0) + m.variance().unwrap_or(0.0)) / 2.0).sqrt()
                        }
                    };
                    let required = sample_size(sd, mde, settings.alpha, settings.power).ok()?;
                    Some(required.saturating_sub(c.n.min(m.n) as u64))
                });
                let cuped = covariates.as_ref().and_then(|cv| cuped_comparison(settings, cv, control_idx.unwrap(), i));
                let (cs, ts) = (sample(&c), sample(m));
                let (control_mean, mean) = match &strata {
                    Some(est) => (est[control_idx.unwrap()].mean, est[i].mean),
                    None => (c.mean, m.mean),
                };
                let relative = r.relative(settings.alpha, control_mean, mean);
                Comparison {
                    test: r.test,
                    diff: r.diff,
                    ci_lower: r.ci_lower,
                    ci_upper: r.ci_upper,
                    relative_lift: relative_lift(control_mean, mean),
                    relative_ci: relative.map(|(lo, hi, _)| (lo, hi)),
                    relative_p_value: relative.map(|(.., p)| p),
                    p_value: r.p_value,
                    non_inferiority,
                    variance: r.se2,
                    relative_variance: r.relative_variance(control_mean, mean),
                    p_adjusted,
                    significant: p_adjusted < settings.alpha,
                    effect_size: match (cs, ts) {
                        _ if def.kind == MetricType::Quantile => None,
                        (Some(cs), Some(ts)) if strata.is_some() => {
                            let pooled = ((cs.variance + ts.variance) / 2.0).sqrt();
                            (pooled > 0.0).then(|| r.diff / pooled)
                        }
                        (Some(cs), Some(ts)) => cohens_d(&cs, &ts),
                        _ => None,
                    },
                    chance_to_beat_control: b.chance_to_beat_control,
                    expected_loss: b.expected_loss,
                    users_needed,
                    cuped,
                }
            });
            let recommendation = if arm.is_control {
                "control".to_string()
            } else {
                match &comparison {
                    None if no_estimate(i).or_else(|| control_idx.and_then(no_estimate)).is_some() => {
                        no_estimate(i).or_else(|| control_idx.and_then(no_estimate)).unwrap()
                    }
                    None => "not enough data: each variant needs at least 2 users with this metric".to_string(),
                    Some(_) if units(i) < min || control_n < min => format!(
                        "keep collecting: {} and {} users of the {} required per variant",
                        control_n,
                        units(i),
                        settings.min_sample_size
                    ),
                    Some(c) if !c.significant => "no significant difference from the control".to_string(),
                    Some(c) if def.direction.is_improvement(c.diff) => "better than the control".to_string(),
                    Some(_) => "worse than the control".to_string(),
                }
            };
            ArmResult {
                variant: arm.variant.clone(),
                is_control: arm.is_control,
                users: match (&arm.quantile, &arm.ratio) {
                    (Some(q), _) => q.users,
                    (None, Some(co)) if def.kind == MetricType::Ratio => co.n as u64,
                    _ => m.n as u64,
                },
                mean: match &strata {
                    Some(est) => Some(est[i].mean),
                    None => (m.n > 0.0).then_some(m.mean),
                },
                // A quantile's moments carry the estimate's variance, not the values' spread.
                std_dev: if def.kind == MetricType::Quantile { None } else { m.variance().map(f64::sqrt) },
                confidence: comparison.map(|c| 1.0 - c.p_adjusted),
                comparison,
                recommendation,
                no_estimate: no_estimate(i),
            }
        })
        .collect();
    MetricResult { cap: input.cap, name: input.name.clone(), def: def.clone(), arms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Aggregation, Direction};

    fn arm(name: &str, control: bool, assigned: u64, values: &[f64]) -> ArmInput {
        let mut m = Moments::default();
        values.iter().for_each(|&x| m.add(x));
        ArmInput {
            variant: name.into(),
            is_control: control,
            assigned,
            observed: m,
            covariate: None,
            periods: vec![],
            ratio: None,
            quantile: None,
        }
    }

    fn settings(min: i64) -> Settings {
        Settings::fixed(0.05, min)
    }

    #[test]
    fn sum_metrics_count_silent_users_as_zero() {
        let def = MetricDef { aggregation: Aggregation::Sum, ..Default::default() };
        let input = MetricInput {
            cap: None,
            name: "orders".into(),
            def,
            arms: vec![arm("c", true, 4, &[2.0, 4.0]), arm("t", false, 3, &[1.0, 1.0, 1.0])],
        };
        let r = analyze_metric(&settings(2), &input);
        assert_eq!(r.arms[0].users, 4);
        assert_eq!(r.arms[0].mean, Some(1.5));
        assert!(r.arms[0].comparison.is_none());
        assert_eq!(r.arms[0].recommendation, "control");
        let c = r.arms[1].comparison.unwrap();
        assert!((c.diff - -0.5).abs() < 1e-12);
        assert_eq!(c.test, "welch");
    }

    #[test]
    fn binary_metrics_use_the_z_test() {
        let def = MetricDef { kind: MetricType::Binary, aggregation: Aggregation::Max, ..Default::default() };
        // 100 assigned per arm; 30 and 45 converted (silent users are non-converters).
        let input = MetricInput {
            cap: None,
            name: "converted".into(),
            def,
            arms: vec![arm("c", true, 100, &[1.0; 30]), arm("t", false, 100, &[1.0; 45])],
        };
        let r = analyze_metric(&settings(10), &input);
        let c = r.arms[1].comparison.unwrap();
        assert_eq!(c.test, "z");
        assert!((c.diff - 0.15).abs() < 1e-12);
        assert_eq!(r.arms[1].users, 100);
    }

    #[test]
    fn too_few_users_for_a_test() {
        let input = MetricInput {
            cap: None,
            name: "m".into(),
            def: MetricDef::default(),
            arms: vec![arm("c", true, 1, &[1.0]), arm("t", false, 5, &[1.0, 2.0, 3.0])],
        };
        let r = analyze_metric(&settings(2), &input);
        assert!(r.arms[1].comparison.is_none());
        assert!(r.arms[1].recommendation.starts_with("not enough data"));
        assert_eq!(r.arms[0].std_dev, None);
    }

    #[test]
    fn direction_decides_better_or_worse() {
        let lower = MetricDef { direction: Direction::Lower, ..Default::default() };
        let c: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        let t: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 3.0).collect();
        let input = MetricInput {
            cap: None,
            name: "escalation".into(),
            def: lower,
            arms: vec![arm("c", true, 50, &c), arm("t", false, 50, &t)],
        };
        let r = analyze_metric(&settings(10), &input);
        assert_eq!(r.arms[1].recommendation, "worse than the control");
        assert!(r.arms[1].comparison.unwrap().chance_to_beat_control < 0.01);
        let input = MetricInput { def: MetricDef::default(), ..input };
        let r = analyze_metric(&settings(10), &input);
        assert_eq!(r.arms[1].recommendation, "better than the control");
        let r = analyze_metric(&settings(100), &input);
        assert!(r.arms[1].recommendation.starts_with("keep collecting"));
    }

    #[test]
    fn sequential_intervals_are_wider() {
        let c: Vec<f64> = (0..500).map(|i| (i % 7) as f64).collect();
        let t: Vec<f64> = (0..500).map(|i| (i % 7) as f64 + 0.3).collect();
        let input = MetricInput {
            cap: None,
            name: "m".into(),
            def: MetricDef::default(),
            arms: vec![arm("c", true, 500, &c), arm("t", false, 500, &t)],
        };
        let fixed = analyze_metric(&settings(10), &input).arms[1].comparison.unwrap();
        let seq = analyze_metric(&Settings { sequential_tuning: Some(5000.0), ..settings(10) }, &input).arms[1]
            .comparison
            .unwrap();
        assert_eq!(seq.test, "welch-sequential");
        assert!(seq.ci_upper - seq.ci_lower > fixed.ci_upper - fixed.ci_lower);
        assert!(seq.p_value > fixed.p_value);
    }

    fn bandit_arm(name: &str, control: bool, periods: &[&[f64]]) -> ArmInput {
        let cells: Vec<(u64, Moments)> = periods
            .iter()
            .map(|vals| {
                let mut m = Moments::default();
                vals.iter().for_each(|&x| m.add(x));
                (vals.len() as u64, m)
            })
            .collect();
        let observed = cells.iter().fold(Moments::default(), |acc, c| acc.merge(&c.1));
        ArmInput {
            variant: name.into(),
            is_control: control,
            assigned: observed.n as u64,
            observed,
            covariate: None,
            periods: cells,
            ratio: None,
            quantile: None,
        }
    }

    #[test]
    fn one_period_stratified_is_welch() {
        let c: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let t: Vec<f64> = (0..60).map(|i| (i % 5) as f64 + 0.7).collect();
        let plain = MetricInput {
            cap: None,
            name: "m".into(),
            def: MetricDef::default(),
            arms: vec![arm("c", true, 40, &c), arm("t", false, 60, &t)],
        };
        let welch = analyze_metric(&settings(10), &plain).arms[1].comparison.unwrap();
        let bandit = MetricInput { arms: vec![bandit_arm("c", true, &[&c]), bandit_arm("t", false, &[&t])], ..plain };
        let strat = analyze_metric(&settings(10), &bandit).arms[1].comparison.unwrap();
        assert_eq!(strat.test, "stratified");
        for (a, b) in [
            (strat.diff, welch.diff),
            (strat.ci_lower, welch.ci_lower),
            (strat.ci_upper, welch.ci_upper),
            (strat.p_value, welch.p_value),
        ] {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
        let seq = analyze_metric(&Settings { sequential_tuning: Some(5000.0), ..settings(10) }, &bandit).arms[1]
            .comparison
            .unwrap();
        assert_eq!(seq.test, "stratified-sequential");
        assert!(seq.ci_upper - seq.ci_lower > strat.ci_upper - strat.ci_lower);
        assert!(seq.p_value > strat.p_value);
    }

    #[test]
    fn periods_are_weighted_by_their_users() {
        // Period 0: 10 users per arm, no difference; period 1: 40 and 10 users, treatment +1.
        let c0: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
        let c1: Vec<f64> = (0..10).map(|i| (i % 2) as f64 + 5.0).collect();
        let t1: Vec<f64> = (0..40).map(|i| (i % 2) as f64 + 6.0).collect();
        let input = MetricInput {
            cap: None,
            name: "m".into(),
            def: MetricDef::default(),
            arms: vec![bandit_arm("c", true, &[&c0, &c1]), bandit_arm("t", false, &[&c0, &t1])],
        };
        let r = analyze_metric(&settings(2), &input);
        let cmp = r.arms[1].comparison.unwrap();
        // Weights 20/70 and 50/70: the difference is 50/70 * 1.
        assert!((cmp.diff - 50.0 / 70.0).abs() < 1e-12, "{}", cmp.diff);
        assert!((r.arms[0].mean.unwrap() - (20.0 / 70.0 * 0.5 + 50.0 / 70.0 * 5.5)).abs() < 1e-12);
        // Pooled, the treatment's late users would make the difference 4.1 - 2.75 = 1.35.
        assert!(cmp.ci_upper < 1.35);
        assert!(r.arms[1].comparison.unwrap().cuped.is_none());
    }

    /// A binary guardrail passes at alpha exactly when the score interval at level 1 - 2 alpha
    /// stays within the margin: both are the score test at the margin.
    #[test]
    fn binary_non_inferiority_agrees_with_the_score_interval() {
        use crate::stats::proportion::proportion_test;
        let binary = |name: &str, control: bool, x: f64, n: f64| {
            let mut a = arm(name, control, n as u64, &[]);
            a.observed = Moments { n, mean: x / n, m2: x * (1.0 - x / n) };
            a
        };
        for (direction, margin) in [(Direction::Lower, 0.03), (Direction::Higher, 0.05)] {
            let def = MetricDef { kind: MetricType::Binary, direction, margin: Some(margin), ..Default::default() };
            for xt in (60..200).step_by(3) {
                let input = MetricInput {
                    name: "g".into(),
                    def: def.clone(),
                    cap: None,
                    arms: vec![binary("c", true, 100.0, 1000.0), binary("t", false, xt as f64, 1000.0)],
                };
                let ni = analyze_metric(&settings(2), &input).arms[1].comparison.unwrap().non_inferiority.unwrap();
                let ci = proportion_test(100.0, 1000.0, xt as f64, 1000.0, 0.1).unwrap();
                let within = match direction {
                    Direction::Lower => ci.ci_upper < margin,
                    Direction::Higher => ci.ci_lower > -margin,
                };
                assert_eq!(ni.passed, within, "{direction:?} {xt} {ni:?} {ci:?}");
            }
        }
    }

    /// In sequential mode a guardrail's p-value is the always-valid one of the difference from
    /// the margin, and 1 when the estimate is on the wrong side of it.
    #[test]
    fn sequential_non_inferiority() {
        let seq = Settings { sequential_tuning: Some(5000.0), ..settings(2) };
        let def = MetricDef { direction: Direction::Lower, margin: Some(0.5), ..Default::default() };
        let values = |shift: f64| (0..400).map(|i| (i % 7) as f64 * 0.3 + shift).collect::<Vec<_>>();
        let ni = |shift: f64| {
            let input = MetricInput {
                name: "g".into(),
                def: def.clone(),
                cap: None,
                arms: vec![arm("c", true, 400, &values(0.0)), arm("t", false, 400, &values(shift))],
            };
            let c = analyze_metric(&seq, &input).arms[1].comparison.unwrap();
            (c, c.non_inferiority.unwrap())
        };
        let (c, within) = ni(0.1);
        let expected = sequential::p_value(c.diff - 0.5, c.variance, 800.0, 5000.0);
        assert!((within.p_value - expected).abs() < 1e-15 && within.p_value < 0.05, "{within:?}");
        // Worse than the margin: the estimate is past it, p is 1.
        assert_eq!(ni(0.7).1.p_value, 1.0);
    }

    fn ratio_def() -> MetricDef {
        MetricDef {
            kind: MetricType::Ratio,
            numerator: Some("revenue".into()),
            denominator: Some("visits".into()),
            ..Default::default()
        }
    }

    fn ratio_arm(name: &str, control: bool, pairs: &[(f64, f64)]) -> ArmInput {
        let mut co = CoMoments::default();
        pairs.iter().for_each(|&(y, x)| co.add(y, x));
        ArmInput { ratio: Some(co), ..arm(name, control, pairs.len() as u64, &[]) }
    }

    /// Denominators that are all 0: the users count, there is no ratio, and every message
    /// says why (not "0 users").
    #[test]
    fn all_zero_denominators_say_so() {
        let pairs = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)];
        let input = MetricInput {
            name: "per_visit".into(),
            def: ratio_def(),
            cap: None,
            arms: vec![ratio_arm("A", true, &pairs), ratio_arm("B", false, &[(1.0, 1.0), (2.0, 2.0), (1.0, 3.0)])],
        };
        let r = analyze_metric(&settings(2), &input);
        assert_eq!((r.arms[0].users, r.arms[0].mean), (3, None));
        let why = "the denominator \"visits\" of ratio metric \"per_visit\" is 0 for every user of A";
        assert_eq!(r.arms[0].no_estimate.as_deref(), Some(why));
        assert_eq!(r.arms[1].no_estimate, None);
        assert!(r.arms[1].comparison.is_none());
        assert_eq!(r.arms[1].recommendation, why);
        let d = crate::winner::decide(&r, 2, 0.05, None, &[]);
        assert_eq!(d.reason, why);
        assert_eq!(r.non_finite(), None);
    }

    /// Denominators near 0 make the ratio's figures overflow: the result names the metric,
    /// variant and column, and the message the denominator.
    #[test]
    fn a_ratio_of_tiny_denominators_is_not_finite() {
        let tiny: Vec<(f64, f64)> = (0..10).map(|i| (1.0 + (i % 4) as f64, 1e-300 * (1 + i % 3) as f64)).collect();
        let input = MetricInput {
            name: "per_visit".into(),
            def: ratio_def(),
            cap: None,
            arms: vec![ratio_arm("A", true, &tiny), ratio_arm("B", false, &tiny)],
        };
        let r = analyze_metric(&settings(2), &input);
        let (variant, column, x) = r.non_finite().unwrap();
        assert_eq!((variant, column), ("A", "std_dev"));
        assert!(x.is_infinite());
        assert_eq!(
            r.overflow_problem().unwrap(),
            "metric \"per_visit\": the std_dev of variant \"A\" is Infinity, not a finite number: \
             its denominator \"visits\" is too close to 0 for the ratio to be computed"
        );
        // Ordinary denominators: every figure finite.
        let fine: Vec<(f64, f64)> = (0..10).map(|i| (1.0 + (i % 4) as f64, 1.0 + (i % 3) as f64)).collect();
        let input = MetricInput { arms: vec![ratio_arm("A", true, &fine), ratio_arm("B", false, &fine)], ..input };
        assert_eq!(analyze_metric(&settings(2), &input).overflow_problem(), None);
    }

    /// A quantile over equal values is that value, without spread: equal arms differ by
    /// exactly 0 (p 1), unequal ones by exactly their difference (p 0).
    #[test]
    fn a_quantile_of_equal_values_is_the_value() {
        let def = MetricDef { kind: MetricType::Quantile, ..Default::default() };
        let q = |estimate: f64| QuantileStat {
            users: 50,
            n: 50.0,
            nu: 0.5,
            estimate,
            lower: estimate,
            upper: estimate,
            cluster: None,
        };
        let arm_q = |name: &str, control: bool, estimate: f64| ArmInput {
            quantile: Some(q(estimate)),
            ..arm(name, control, 50, &[])
        };
        let input = MetricInput {
            name: "median".into(),
            def,
            cap: None,
            arms: vec![arm_q("A", true, 250.0), arm_q("B", false, 250.0)],
        };
        let r = analyze_metric(&settings(2), &input);
        assert_eq!((r.arms[0].users, r.arms[0].mean), (50, Some(250.0)));
        let c = r.arms[1].comparison.unwrap();
        assert_eq!((c.diff, c.ci_lower, c.ci_upper, c.p_value), (0.0, 0.0, 0.0, 1.0));
        let input = MetricInput { arms: vec![arm_q("A", true, 250.0), arm_q("B", false, 260.0)], ..input };
        let c = analyze_metric(&settings(2), &input).arms[1].comparison.unwrap();
        assert_eq!((c.diff, c.ci_lower, c.ci_upper, c.p_value), (10.0, 10.0, 10.0, 0.0));
        // Too few values for the interval: still no estimate, as gbstats.
        assert_eq!(quantile_moments(&QuantileStat { n: 3.0, users: 3, ..q(1.0) }), None);
    }
}
