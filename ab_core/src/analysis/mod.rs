//! The per-metric analysis: per-variant statistics over per-user values, each treatment
//! compared with the control (Welch's t-test, or the two-proportion z-test for binary
//! metrics; always-valid in sequential mode), adjusted across treatments, with CUPED,
//! Bayesian and power figures, and a plain-words recommendation for every row.

//!
//! The extension's analysis (`src/analysis/pipeline.rs`) reads, per metric, what `MetricData` holds;
//! `metric_input` turns it into a `MetricInput`, `analyze_metric` into a `MetricResult`, and
//! `MetricResult::rows` into one `ResultRow` per (metric, variant), of which every function
//! returning or storing an analysis's rows is a projection.

pub mod adjusted;
mod clustered;
mod compare;
mod input;
mod quantile;
mod rows;

pub use clustered::{ClusterTotals, Clustering};
pub use input::{metric_input, ArmFrame, MetricData, Observed};
pub use quantile::{quantile_levels, quantile_moments, ClusterSums, QuantileStat};
pub use rows::ResultRow;

use crate::bandit::{stratified, Estimate};
use crate::definition::{Correction, MetricDef, MetricType};
use crate::stats::bayes::bayes;
use crate::stats::cuped::CoMoments;
use crate::stats::multiple::{benjamini_hochberg, holm};
use crate::stats::power::sample_size;
use crate::stats::welch::{cohens_d, relative_lift};
use crate::stats::Moments;
use compare::{compare, compare_stratified, cuped_comparison, sample, Raw};

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
    /// In a cluster-randomized experiment, the cluster-robust standard error of `mean` (its
    /// CI in reports is on the normal reference, as the comparisons).
    pub mean_std_error: Option<f64>,
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

/// One metric's analysis, in steps: the moments each arm is tested on, each treatment's raw
/// comparison with the control, the p-values adjusted over the treatments, then each arm's
/// figures and recommendation.
pub fn analyze_metric(settings: &Settings, input: &MetricInput) -> MetricResult {
    analyze_clustered(settings, input, None)
}

/// `analyze_metric` for a metric of a cluster-randomized experiment (`clustering` Some): the
/// comparisons are cluster-robust (`clustered`) or not made; CUPED is not applied (its
/// per-user variance would ignore the clustering: `ab_adjusted` adjusts for covariates with
/// a cluster-robust variance).
pub fn analyze_clustered(settings: &Settings, input: &MetricInput, clustering: Option<&Clustering>) -> MetricResult {
    let prepared = Prepared::of(input, clustering);
    let raw = raw_comparisons(settings, &input.def, &prepared);
    let adjusted = Adjusted::of(settings, &input.def, &raw);
    let arms = input
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let comparison = raw[i].as_ref().map(|r| comparison(settings, input, &prepared, &adjusted, i, r));
            ArmResult {
                variant: arm.variant.clone(),
                is_control: arm.is_control,
                users: users(input, &prepared, i),
                mean: match &prepared.strata {
                    Some(est) => Some(est[i].mean),
                    None => (prepared.moments[i].n > 0.0).then_some(prepared.moments[i].mean),
                },
                // A quantile's moments carry the estimate's variance, not the values' spread.
                std_dev: if input.def.kind == MetricType::Quantile {
                    None
                } else {
                    prepared.moments[i].variance().map(f64::sqrt)
                },
                confidence: comparison.map(|c| 1.0 - c.p_adjusted),
                recommendation: recommendation(settings, input, &prepared, i, comparison.as_ref()),
                comparison,
                no_estimate: no_estimate(input, i),
                mean_std_error: match &prepared.clustering {
                    Some(Clustering::Robust(arms)) => clustered::mean_std_error(arms, i),
                    _ => None,
                },
            }
        })
        .collect();
    MetricResult { cap: input.cap, name: input.name.clone(), def: input.def.clone(), arms }
}

impl MetricResult {
    /// Names the comparisons cluster-robust: a quantile metric's variance in a
    /// cluster-randomized experiment is clustered by the unit in its statistic
    /// (`quantile::ClusterSums`), not through `Clustering`.
    pub fn label_clustered(&mut self) {
        for c in self.arms.iter_mut().filter_map(|a| a.comparison.as_mut()) {
            c.test = if c.test.ends_with("-sequential") { "cluster-sequential" } else { "cluster" };
        }
    }
}

/// What every arm's figures of one metric share: the moments each arm is tested on, the
/// control, and the covariates (CUPED) or period strata (bandits) when there are.
struct Prepared {
    moments: Vec<Moments>,
    clustering: Option<Clustering>,
    control: Option<usize>,
    bandit: bool,
    covariates: Option<Vec<CoMoments>>,
    strata: Option<Vec<Estimate>>,
}

impl Prepared {
    fn of(input: &MetricInput, clustering: Option<&Clustering>) -> Prepared {
        let def = &input.def;
        let bandit = input.arms.iter().any(|a| !a.periods.is_empty());
        let clustering = clustering.filter(|c| match c {
            Clustering::Robust(arms) => arms.len() == input.arms.len(),
            Clustering::NotCompared(_) => true,
        });
        // CUPED is not combined with the period strata, nor with ratio or quantile metrics (see
        // docs/statistics.md).
        let covariates =
            if bandit || clustering.is_some() || matches!(def.kind, MetricType::Ratio | MetricType::Quantile) {
                None
            } else {
                input.arms.iter().map(|a| a.covariate).collect()
            };
        let strata = if bandit {
            let periods: Vec<Vec<Moments>> = input.arms.iter().map(|a| effective_periods(def, a)).collect();
            stratified(&periods)
        } else {
            None
        };
        Prepared {
            moments: input.arms.iter().map(|a| effective_moments(def, a)).collect(),
            clustering: clustering.cloned(),
            control: input.arms.iter().position(|a| a.is_control),
            bandit,
            covariates,
            strata,
        }
    }
}

/// Each treatment's raw comparison with the control (None for the control, and where a test
/// has too little data).
fn raw_comparisons(settings: &Settings, def: &MetricDef, p: &Prepared) -> Vec<Option<Raw>> {
    let moments = &p.moments;
    moments
        .iter()
        .enumerate()
        .map(|(i, m)| match p.control {
            Some(c) if c != i => match &p.strata {
                _ if p.clustering.is_some() => match &p.clustering {
                    Some(Clustering::Robust(arms)) => clustered::compare(settings, arms, c, i),
                    _ => None,
                },
                _ if !p.bandit => compare(settings, def.kind, &moments[c], m),
                Some(est) if moments[c].n >= 2.0 && m.n >= 2.0 => {
                    compare_stratified(settings, moments[c].n + m.n, &est[c], &est[i])
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The p-values adjusted over the metric's tested treatments (`tested`, in arm order); a
/// guardrail's non-inferiority tests form a family of their own, adjusted the same way.
struct Adjusted {
    tested: Vec<usize>,
    p: Vec<f64>,
    /// (p-values, adjusted) of the non-inferiority tests, with a margin.
    non_inferiority: Option<(Vec<f64>, Vec<f64>)>,
}

impl Adjusted {
    fn of(settings: &Settings, def: &MetricDef, raw: &[Option<Raw>]) -> Adjusted {
        let tested: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].is_some()).collect();
        let adjust = |ps: &[f64]| match settings.correction {
            Correction::Holm => holm(ps),
            Correction::Bh => benjamini_hochberg(ps),
        };
        let ps: Vec<f64> = tested.iter().map(|&i| raw[i].as_ref().unwrap().p_value).collect();
        let non_inferiority = def.margin.map(|margin| {
            let ps: Vec<f64> =
                tested.iter().map(|&i| raw[i].as_ref().unwrap().non_inferiority(def.direction, margin)).collect();
            let adjusted = adjust(&ps);
            (ps, adjusted)
        });
        Adjusted { p: adjust(&ps), tested, non_inferiority }
    }
}

/// Treatment `i`'s comparison with the control from its raw test.
fn comparison(
    settings: &Settings,
    input: &MetricInput,
    p: &Prepared,
    adjusted: &Adjusted,
    i: usize,
    r: &Raw,
) -> Comparison {
    let def = &input.def;
    let control_idx = p.control.unwrap();
    let (c, m) = (p.moments[control_idx], &p.moments[i]);
    let k = adjusted.tested.iter().position(|&j| j == i).unwrap();
    let p_adjusted = adjusted.p[k];
    let non_inferiority = match (def.margin, &adjusted.non_inferiority) {
        (Some(margin), Some((ps, adj))) => {
            Some(NonInferiority { margin, p_value: ps[k], p_adjusted: adj[k], passed: adj[k] < settings.alpha })
        }
        _ => None,
    };
    let b = bayes(r.diff, r.se2.sqrt(), def.direction);
    let users_needed = def.mde.and_then(|mde| {
        let sd = match (&p.clustering, def.kind) {
            // The per-user spread that gives the cluster-robust variance at the current
            // cluster sizes (the design effect included).
            (Some(_), _) => ((r.v_c * c.n + r.v_t * m.n) / 2.0).sqrt(),
            (None, kind) => match kind {
                MetricType::Binary => (c.mean * (1.0 - c.mean)).sqrt(),
                MetricType::Continuous | MetricType::Ratio | MetricType::Quantile => {
                    ((c.variance().unwrap_or(0.0) + m.variance().unwrap_or(0.0)) / 2.0).sqrt()
                }
            },
        };
        let required = sample_size(sd, mde, settings.alpha, settings.power).ok()?;
        Some(required.saturating_sub(c.n.min(m.n) as u64))
    });
    let cuped = p.covariates.as_ref().and_then(|cv| cuped_comparison(settings, cv, control_idx, i));
    let (cs, ts) = (sample(&c), sample(m));
    let (control_mean, mean) = match &p.strata {
        Some(est) => (est[control_idx].mean, est[i].mean),
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
            (Some(cs), Some(ts)) if p.strata.is_some() => {
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
}

/// Users per arm: a quantile of every recorded value is over more values than users.
fn units(input: &MetricInput, p: &Prepared, i: usize) -> f64 {
    input.arms[i].quantile.map_or(p.moments[i].n, |q| q.users as f64)
}

/// The users an arm's row reports.
fn users(input: &MetricInput, p: &Prepared, i: usize) -> u64 {
    match (&input.arms[i].quantile, &input.arms[i].ratio) {
        (Some(q), _) => q.users,
        (None, Some(co)) if input.def.kind == MetricType::Ratio => co.n as u64,
        _ => p.moments[i].n as u64,
    }
}

/// Why a ratio arm whose users count has no ratio: its users' denominators are 0.
fn no_estimate(input: &MetricInput, i: usize) -> Option<String> {
    let def = &input.def;
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
}

/// The plain-words recommendation of arm `i`.
fn recommendation(
    settings: &Settings,
    input: &MetricInput,
    p: &Prepared,
    i: usize,
    comparison: Option<&Comparison>,
) -> String {
    if input.arms[i].is_control {
        return "control".to_string();
    }
    let min = settings.min_sample_size.max(0) as f64;
    let control_n = p.control.map(|c| units(input, p, c)).unwrap_or(0.0);
    if let (None, Some(Clustering::NotCompared(why))) = (comparison, &p.clustering) {
        return crate::names::printable(why).into_owned();
    }
    match comparison {
        None => match no_estimate(input, i).or_else(|| p.control.and_then(|c| no_estimate(input, c))) {
            Some(why) => why,
            None => "not enough data: each variant needs at least 2 users with this metric".to_string(),
        },
        Some(_) if units(input, p, i) < min || control_n < min => format!(
            "keep collecting: {} and {} users of the {} required per variant",
            control_n,
            units(input, p, i),
            settings.min_sample_size
        ),
        Some(c) if !c.significant => "no significant difference from the control".to_string(),
        Some(c) if input.def.direction.is_improvement(c.diff) => "better than the control".to_string(),
        Some(_) => "worse than the control".to_string(),
    }
}

#[cfg(test)]
mod tests;
