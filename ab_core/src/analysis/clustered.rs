//! A cluster-randomized experiment's comparisons (`randomization_unit`): every user of a
//! cluster shares a variant, so the clusters, not the users, are the independent draws. Each
//! arm's estimate is a ratio of sums over its clusters, mean = sum y / sum x (x the cluster's
//! users; for a ratio metric, its denominator's total), with the delta-method variance on the
//! clusters' totals, sum (y_c - R x_c)^2 / (sum x)^2, times statsmodels' small-sample factor
//! G / (G - 1) (N - 1) / (N - K) (`stats::regression::small_sample_factor`): the variance
//! `ab_adjusted` computes without covariates, so that the two agree. Normal reference.

use super::compare::{normal_raw, Raw};
use super::Settings;
use crate::stats::regression::small_sample_factor;

/// One arm's clusters: their count, the users among them, and over them the sums of each
/// cluster's total y and size x, of their squares and of their product (one SQL aggregate
/// over per-cluster totals: nothing per user reaches Rust).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterTotals {
    pub clusters: f64,
    pub users: f64,
    pub sum_y: f64,
    pub sum_x: f64,
    pub sum_yy: f64,
    pub sum_xx: f64,
    pub sum_xy: f64,
}

impl ClusterTotals {
    /// Totals of per-cluster (y, x, users), for tests and small data.
    pub fn of(clusters: &[(f64, f64, f64)]) -> ClusterTotals {
        clusters.iter().fold(ClusterTotals::default(), |t, &(y, x, n)| ClusterTotals {
            clusters: t.clusters + 1.0,
            users: t.users + n,
            sum_y: t.sum_y + y,
            sum_x: t.sum_x + x,
            sum_yy: t.sum_yy + y * y,
            sum_xx: t.sum_xx + x * x,
            sum_xy: t.sum_xy + x * y,
        })
    }

    /// The ratio of sums and its delta-method variance before the small-sample factor; None
    /// when the denominator's total is 0.
    pub fn estimate(&self) -> Option<(f64, f64)> {
        if !(self.sum_x != 0.0 && self.sum_x.is_finite()) {
            return None;
        }
        let r = self.sum_y / self.sum_x;
        let v = (self.sum_yy - 2.0 * r * self.sum_xy + r * r * self.sum_xx) / (self.sum_x * self.sum_x);
        Some((r, if v.is_finite() { v.max(0.0) } else { f64::INFINITY }))
    }
}

/// How one metric of a cluster-randomized experiment is analysed.
#[derive(Debug, Clone, PartialEq)]
pub enum Clustering {
    /// Cluster-robust, from each arm's cluster totals (in arm order).
    Robust(Vec<ClusterTotals>),
    /// Not compared, for the reason given.
    NotCompared(String),
}

/// The small-sample factor over every arm with users: N users, K arms, G clusters.
pub(super) fn factor(arms: &[ClusterTotals]) -> Option<f64> {
    let with_users: Vec<&ClusterTotals> = arms.iter().filter(|a| a.users > 0.0).collect();
    let n: f64 = with_users.iter().map(|a| a.users).sum();
    let g: f64 = with_users.iter().map(|a| a.clusters).sum();
    small_sample_factor(n, with_users.len() as f64, Some(g))
}

/// Arm `i`'s cluster-robust standard error of its mean (None without 2 clusters).
pub(super) fn mean_std_error(arms: &[ClusterTotals], i: usize) -> Option<f64> {
    if arms[i].clusters < 2.0 {
        return None;
    }
    Some((factor(arms)? * arms[i].estimate()?.1).sqrt())
}

/// Treatment `t` against control `c`: the difference of the ratios, its variance the sum of
/// the arms' (clusters are in one arm each). In sequential mode the confidence sequence counts
/// clusters, the independent units. None with fewer than 2 users or 2 clusters in an arm.
pub(super) fn compare(settings: &Settings, arms: &[ClusterTotals], c: usize, t: usize) -> Option<Raw> {
    let (ac, at) = (&arms[c], &arms[t]);
    if ac.users < 2.0 || at.users < 2.0 || ac.clusters < 2.0 || at.clusters < 2.0 {
        return None;
    }
    let factor = factor(arms)?;
    let ((mc, vc), (mt, vt)) = (ac.estimate()?, at.estimate()?);
    Some(normal_raw(settings, "cluster", mt - mc, factor * vc, factor * vt, ac.clusters + at.clusters))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::regression::{cluster_meat_of_rows, fit, pooled_means, ArmStats};

    /// Users (cluster, y) of one arm.
    fn users(seed: u64, clusters: usize, shift: f64) -> Vec<(usize, f64)> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut out = Vec::new();
        for c in 0..clusters {
            let effect = next() - 0.5;
            for _ in 0..(2 + c % 5) {
                out.push((c, shift + effect + next()));
            }
        }
        out
    }

    fn totals(u: &[(usize, f64)]) -> ClusterTotals {
        let g = u.iter().map(|x| x.0).max().unwrap() + 1;
        let per: Vec<(f64, f64, f64)> = (0..g)
            .map(|c| {
                let ys: Vec<f64> = u.iter().filter(|x| x.0 == c).map(|x| x.1).collect();
                (ys.iter().sum(), ys.len() as f64, ys.len() as f64)
            })
            .collect();
        ClusterTotals::of(&per)
    }

    #[test]
    fn without_covariates_it_is_the_cluster_robust_regression() {
        let (uc, ut) = (users(3, 17, 0.0), users(5, 14, 0.3));
        let arms = [totals(&uc), totals(&ut)];
        let raw = compare(&Settings::fixed(0.05, 10), &arms, 0, 1).unwrap();
        // ab_adjusted's computation: intercept-only fits and per-cluster meats.
        let rows = |u: &[(usize, f64)]| -> Vec<(f64, Vec<f64>)> { u.iter().map(|x| (x.1, vec![])).collect() };
        let stats = [ArmStats::from_rows(&rows(&uc)), ArmStats::from_rows(&rows(&ut))];
        let center = pooled_means(&stats);
        let variance = |i: usize, u: &[(usize, f64)]| {
            let f = fit(&stats[i], &center).unwrap();
            let cl: Vec<usize> = u.iter().map(|x| x.0).collect();
            let meat = cluster_meat_of_rows(&stats[i], &f, &center, &rows(u), &cl);
            crate::stats::regression::adjusted_mean_variance(&stats[i], &f, &center, &meat).unwrap()
        };
        let n = (uc.len() + ut.len()) as f64;
        let k = small_sample_factor(n, 2.0, Some(31.0)).unwrap();
        let expected = crate::stats::regression::compare(
            0.05,
            (stats[0].mean_y, variance(0, &uc)),
            (stats[1].mean_y, variance(1, &ut)),
            k,
        );
        assert!((raw.diff - expected.diff).abs() < 1e-12);
        assert!((raw.se2 - expected.variance).abs() < 1e-12 * expected.variance, "{} {}", raw.se2, expected.variance);
        assert!((raw.p_value - expected.p_value).abs() < 1e-10);
        assert!((raw.ci_lower - expected.ci_lower).abs() < 1e-12);
    }

    #[test]
    fn a_ratio_of_sums_over_clusters() {
        // Per cluster (y, x, users): R = 10 / 5 = 2, residuals y - 2x = 1, -1, 0.
        let t = ClusterTotals::of(&[(3.0, 1.0, 1.0), (3.0, 2.0, 2.0), (4.0, 2.0, 1.0)]);
        let (r, v) = t.estimate().unwrap();
        assert_eq!(r, 2.0);
        assert!((v - 2.0 / 25.0).abs() < 1e-15);
        assert!(ClusterTotals::of(&[(1.0, 0.0, 1.0)]).estimate().is_none());
    }

    #[test]
    fn the_metric_analysis_uses_the_cluster_totals() {
        use crate::analysis::{analyze_clustered, ArmInput, MetricInput};
        use crate::definition::MetricDef;
        use crate::stats::cuped::CoMoments;
        use crate::stats::Moments;
        let (uc, ut) = (users(7, 20, 0.0), users(9, 20, 0.0));
        let arm = |variant: &str, is_control: bool, u: &[(usize, f64)]| {
            let ys: Vec<f64> = u.iter().map(|x| x.1).collect();
            let mut observed = Moments::default();
            ys.iter().for_each(|&y| observed.add(y));
            ArmInput {
                variant: variant.into(),
                is_control,
                assigned: ys.len() as u64,
                observed,
                covariate: Some(CoMoments {
                    n: observed.n,
                    mean_y: observed.mean,
                    mean_x: observed.mean,
                    m2_y: observed.m2,
                    m2_x: observed.m2,
                    c_xy: observed.m2 / 2.0,
                }),
                periods: vec![],
                ratio: None,
                quantile: None,
            }
        };
        let input = MetricInput {
            name: "y".into(),
            def: MetricDef::default(),
            cap: None,
            arms: vec![arm("control", true, &uc), arm("b", false, &ut)],
        };
        let settings = Settings::fixed(0.05, 10);
        let totals = vec![totals(&uc), totals(&ut)];
        let robust = analyze_clustered(&settings, &input, Some(&Clustering::Robust(totals.clone())));
        let c = robust.arms[1].comparison.unwrap();
        let raw = compare(&settings, &totals, 0, 1).unwrap();
        assert_eq!((c.test, c.p_value, c.variance), ("cluster", raw.p_value, raw.se2));
        assert!(c.cuped.is_none(), "CUPED is not applied in a cluster design");
        assert!(robust.arms[0].mean_std_error.is_some() && robust.arms[0].comparison.is_none());
        let per_user = analyze_clustered(&settings, &input, None);
        assert_eq!(per_user.arms[1].comparison.unwrap().test, "welch");
        assert!(per_user.arms[1].comparison.unwrap().cuped.is_some() && per_user.arms[0].mean_std_error.is_none());
        let skipped = analyze_clustered(&settings, &input, Some(&Clustering::NotCompared("not compared: why".into())));
        assert!(skipped.arms[1].comparison.is_none());
        assert_eq!(skipped.arms[1].recommendation, "not compared: why");
        assert_eq!(skipped.arms[0].recommendation, "control");
    }

    #[test]
    fn too_few_clusters_or_users_give_no_comparison() {
        let one = ClusterTotals::of(&[(3.0, 3.0, 3.0)]);
        let many = ClusterTotals::of(&[(3.0, 3.0, 3.0), (1.0, 2.0, 2.0)]);
        assert!(compare(&Settings::fixed(0.05, 10), &[one, many], 0, 1).is_none());
        assert!(compare(&Settings::fixed(0.05, 10), &[many, many], 0, 1).is_some());
    }
}
