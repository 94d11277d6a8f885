//! `ab_adjusted`'s rows for one metric: Lin's regression adjustment over several covariates
//! (`stats::regression`), each treatment against the control, with the variance reductions
//! against no adjustment and against single-covariate CUPED on the first covariate. The
//! extension reads the statistics in two SQL passes: `fit` between them gives the second
//! pass its residuals, `rows` the figures.

use super::Settings;
use crate::definition::Correction;
use crate::stats::cuped::{self, CoMoments};
use crate::stats::multiple::{benjamini_hochberg, holm};
use crate::stats::regression::{self, ArmFit, ArmStats, Meat};

/// One arm of one metric, after the first pass.
#[derive(Debug, Clone, PartialEq)]
pub struct AdjustedArm {
    pub variant: String,
    pub is_control: bool,
    pub stats: ArmStats,
    /// With a cluster design, the clusters among the arm's users.
    pub clusters: Option<u64>,
}

/// The fits of every arm at the pooled center (None for an arm without users).
pub struct Fits {
    pub center: Vec<f64>,
    pub fits: Vec<Option<ArmFit>>,
}

pub fn fit(arms: &[AdjustedArm]) -> Fits {
    let stats: Vec<ArmStats> = arms.iter().map(|a| a.stats.clone()).collect();
    let center = regression::pooled_means(&stats);
    let fits = stats.iter().map(|s| regression::fit(s, &center)).collect();
    Fits { center, fits }
}

/// One (metric, variant) row of `ab_adjusted`; the comparison's figures are None on the
/// control's row and where the data cannot give them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdjustedRow {
    pub variant: String,
    pub is_control: bool,
    pub users: u64,
    pub clusters: Option<u64>,
    pub adjusted_mean: Option<f64>,
    pub diff: Option<f64>,
    pub ci_lower: Option<f64>,
    pub ci_upper: Option<f64>,
    pub p_value: Option<f64>,
    pub p_value_adjusted: Option<f64>,
    pub significant: Option<bool>,
    pub std_error: Option<f64>,
    pub unadjusted_std_error: Option<f64>,
    pub variance_reduction: Option<f64>,
    pub variance_reduction_vs_cuped: Option<f64>,
}

/// Single-covariate CUPED's variance of the difference on covariate `k` (theta pooled over
/// every arm, as `ab_analyze`'s CUPED), None when it cannot be computed.
fn cuped_variance(arms: &[AdjustedArm], k: usize, c: usize, t: usize) -> Option<f64> {
    let co = |a: &AdjustedArm| CoMoments {
        n: a.stats.n,
        mean_y: a.stats.mean_y,
        mean_x: a.stats.mean_x[k],
        m2_y: a.stats.syy,
        m2_x: a.stats.sxx[k][k],
        c_xy: a.stats.sxy[k],
    };
    let all: Vec<CoMoments> = arms.iter().map(co).collect();
    let theta = cuped::theta(&all)?;
    let overall = all.iter().fold(CoMoments::default(), |acc, a| acc.merge(a));
    let (_, vc) = cuped::adjust(&all[c], theta, overall.mean_x);
    let (_, vt) = cuped::adjust(&all[t], theta, overall.mean_x);
    (all[c].n >= 2.0 && all[t].n >= 2.0).then(|| vc / all[c].n + vt / all[t].n)
}

/// The rows of one metric. `meats[i]` is arm i's second-pass sums (None without users);
/// `first_is_value` says whether the first covariate is a pre-period value (CUPED's
/// comparison uses it; a stratum has no CUPED counterpart).
pub fn rows(
    settings: &Settings,
    arms: &[AdjustedArm],
    fits: &Fits,
    meats: &[Option<Meat>],
    first_is_value: bool,
) -> Vec<AdjustedRow> {
    let n: f64 = arms.iter().map(|a| a.stats.n).sum();
    let k: f64 = fits.fits.iter().flatten().map(|f| 1.0 + f.kept.len() as f64).sum();
    let clusters: Option<f64> =
        arms.iter().map(|a| a.clusters).collect::<Option<Vec<u64>>>().map(|c| c.iter().sum::<u64>() as f64);
    let factor = regression::small_sample_factor(n, k, clusters);
    let variance = |i: usize| -> Option<(f64, f64)> {
        let f = fits.fits[i].as_ref()?;
        let v = regression::adjusted_mean_variance(&arms[i].stats, f, &fits.center, meats[i].as_ref()?)?;
        Some((f.adjusted_mean, v))
    };
    let control = arms.iter().position(|a| a.is_control);
    let mut out: Vec<AdjustedRow> = arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut row = AdjustedRow {
                variant: a.variant.clone(),
                is_control: a.is_control,
                users: a.stats.n as u64,
                clusters: a.clusters,
                adjusted_mean: fits.fits[i].as_ref().map(|f| f.adjusted_mean),
                ..Default::default()
            };
            let Some(c) = control.filter(|&c| c != i) else { return row };
            // Two users per arm at least, as every other test of the extension.
            if arms[c].stats.n < 2.0 || a.stats.n < 2.0 {
                return row;
            }
            let (Some(factor), Some(vc), Some(vt)) = (factor, variance(c), variance(i)) else { return row };
            let r = regression::compare(settings.alpha, vc, vt, factor);
            let plain = arms[c].stats.unadjusted_variance().zip(a.stats.unadjusted_variance()).map(|(x, y)| x + y);
            let reduction = |other: Option<f64>| other.filter(|v| *v > 0.0).map(|v| 1.0 - r.variance / v);
            row.diff = Some(r.diff);
            row.ci_lower = Some(r.ci_lower);
            row.ci_upper = Some(r.ci_upper);
            row.p_value = Some(r.p_value);
            row.std_error = Some(r.variance.sqrt());
            row.unadjusted_std_error = plain.map(f64::sqrt);
            row.variance_reduction = reduction(plain);
            row.variance_reduction_vs_cuped =
                if first_is_value { reduction(cuped_variance(arms, 0, c, i)) } else { None };
            row
        })
        .collect();
    let tested: Vec<usize> = (0..out.len()).filter(|&i| out[i].p_value.is_some()).collect();
    let ps: Vec<f64> = tested.iter().map(|&i| out[i].p_value.unwrap()).collect();
    let adjusted = match settings.correction {
        Correction::Holm => holm(&ps),
        Correction::Bh => benjamini_hochberg(&ps),
    };
    for (&i, p) in tested.iter().zip(adjusted) {
        out[i].p_value_adjusted = Some(p);
        out[i].significant = Some(p < settings.alpha);
    }
    out
}

/// The lines `ab_summary` adds for `ab_adjusted`'s rows (metric name, row), in its order:
/// the randomization unit with its clusters per variant, then per treatment the adjusted
/// comparison. Names are made printable.
pub fn summary_lines(alpha: f64, unit: Option<&str>, rows: &[(String, AdjustedRow)]) -> String {
    use crate::names::printable;
    use crate::winner::p_is;
    use std::fmt::Write;
    let mut out = String::new();
    let level = format!("{}%", ((1.0 - alpha) * 1000.0).round() / 10.0);
    if let Some(unit) = unit {
        // The first metric's rows: one per variant.
        let counts: Vec<String> = rows
            .iter()
            .filter(|(m, _)| rows.first().is_some_and(|f| &f.0 == m))
            .map(|(_, r)| format!("{} {}", r.clusters.unwrap_or(0), printable(&r.variant)))
            .collect();
        let _ = writeln!(
            out,
            "\nRandomized by \"{}\" (clusters: {}): users of one cluster are not independent, so the comparisons are cluster-robust (test \"cluster\").",
            printable(unit),
            counts.join(", ")
        );
    }
    let adjusted: Vec<&(String, AdjustedRow)> = rows.iter().filter(|(_, r)| r.diff.is_some()).collect();
    if adjusted.is_empty() {
        return out;
    }
    let how = if unit.is_some() { "cluster-robust" } else { "adjusted for covariates" };
    let _ = writeln!(out, "\nRegression adjustment (ab_adjusted, {how}):");
    for (metric, r) in adjusted {
        let (Some(diff), Some(lo), Some(hi), Some(p)) = (r.diff, r.ci_lower, r.ci_upper, r.p_value) else { continue };
        let reduction = match r.variance_reduction {
            // Against the per-user test: the design effect of the clustering (net of covariates).
            Some(v) if unit.is_some() => format!(", {:.1} times the per-user test's variance", 1.0 - v),
            Some(v) if v >= 0.0 => format!(", variance {:.0}% lower than unadjusted", v * 100.0),
            Some(v) => format!(", variance {:.0}% higher than unadjusted", -v * 100.0),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} {}: {:+.4} ({level} CI {:+.4} to {:+.4}), p {}{reduction}",
            printable(metric),
            printable(&r.variant),
            diff,
            lo,
            hi,
            p_is(p)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::regression::meat_of_rows;

    fn arm(variant: &str, is_control: bool, rows: &[(f64, Vec<f64>)]) -> AdjustedArm {
        AdjustedArm { variant: variant.into(), is_control, stats: ArmStats::from_rows(rows), clusters: None }
    }

    #[test]
    fn rows_compare_each_treatment_and_report_the_reductions() {
        let mk = |shift: f64, k: usize| -> Vec<(f64, Vec<f64>)> {
            (0..k)
                .map(|i| {
                    let x = (i % 7) as f64;
                    let noise = ((i * 37) % 11) as f64 / 11.0 - 0.5;
                    (2.0 * x + shift + noise, vec![x, (i % 3) as f64])
                })
                .collect()
        };
        let data = [mk(0.0, 60), mk(0.5, 50), mk(0.0, 1)];
        let arms = vec![arm("control", true, &data[0]), arm("b", false, &data[1]), arm("c", false, &data[2])];
        let fits = fit(&arms);
        let meats: Vec<Option<Meat>> = (0..3)
            .map(|i| fits.fits[i].as_ref().map(|f| meat_of_rows(&arms[i].stats, f, &fits.center, &data[i])))
            .collect();
        let out = rows(&Settings::fixed(0.05, 100), &arms, &fits, &meats, true);
        assert_eq!(out.len(), 3);
        assert!(out[0].diff.is_none() && out[0].adjusted_mean.is_some());
        let b = &out[1];
        assert!((b.diff.unwrap() - 0.5).abs() < 0.1, "{b:?}");
        assert!(b.variance_reduction.unwrap() > 0.9, "x explains most of the variance: {b:?}");
        assert!(b.variance_reduction_vs_cuped.unwrap() > -0.5);
        assert_eq!(b.p_value_adjusted, b.p_value, "one treatment tested");
        assert_eq!(b.significant, Some(true));
        assert!(out[2].diff.is_none() && out[2].p_value_adjusted.is_none(), "one user: no comparison");
        let strata_first = rows(&Settings::fixed(0.05, 100), &arms, &fits, &meats, false);
        assert!(strata_first[1].variance_reduction_vs_cuped.is_none());
        let named: Vec<(String, AdjustedRow)> = out.iter().map(|r| ("loan\namount".to_string(), r.clone())).collect();
        let text = summary_lines(0.05, None, &named);
        assert!(
            text.starts_with(
                "\nRegression adjustment (ab_adjusted, adjusted for covariates):\n  loan\\u{000A}amount b: +0."
            ),
            "{text}"
        );
        assert!(text.contains("(95% CI +0.") && text.contains("variance 9"), "{text}");
        assert_eq!(text.lines().count(), 3, "one line per compared treatment: {text}");
        let mut clustered = named.clone();
        for (i, (_, r)) in clustered.iter_mut().enumerate() {
            r.clusters = Some([26, 34, 1][i]);
        }
        let text = summary_lines(0.05, Some("branch"), &clustered);
        assert!(text.starts_with("\nRandomized by \"branch\" (clusters: 26 control, 34 b, 1 c): "), "{text}");
        assert!(text.contains("(ab_adjusted, cluster-robust)"), "{text}");
        assert!(text.contains(" times the per-user test's variance"), "{text}");
    }
}
