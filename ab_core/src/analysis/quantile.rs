//! Quantile metrics: the estimate and its variance as gbstats defines them.

use crate::stats::dist::normal_isf;
use crate::stats::Moments;

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

/// Per-cluster sums of (values at most the estimate, values): s_i and n_i over the clusters
/// (the users, for a quantile of every recorded value; the randomization unit's clusters in a
/// cluster-randomized experiment).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClusterSums {
    /// The clusters summed over.
    pub clusters: f64,
    pub sum_s: f64,
    pub sum_s2: f64,
    pub sum_n: f64,
    pub sum_n2: f64,
    pub sum_sn: f64,
}

/// The z of the order-statistic interval (gbstats fixes it at the 95% level).
pub(super) fn quantile_z() -> f64 {
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
            let k = c.clusters;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::dist::normal_sf;
    use crate::test_rng::Rng;

    /// percentile_cont: linear between the closest ranks of the sorted values.
    fn percentile(sorted: &[f64], p: f64) -> f64 {
        let x = p * (sorted.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x - x.floor());
        if i + 1 < sorted.len() {
            sorted[i] + f * (sorted[i + 1] - sorted[i])
        } else {
            sorted[i]
        }
    }

    /// One arm's median over clusters of users, with the clusters' sums or without.
    fn arm(clusters: &[Vec<f64>], clustered: bool) -> Moments {
        let mut values: Vec<f64> = clusters.iter().flatten().copied().collect();
        values.sort_by(f64::total_cmp);
        let (n, nu) = (values.len() as f64, 0.5);
        let (lo, hi) = quantile_levels(nu, n);
        let estimate = percentile(&values, nu);
        let mut c = ClusterSums { clusters: clusters.len() as f64, ..Default::default() };
        for cl in clusters {
            let s = cl.iter().filter(|v| **v <= estimate).count() as f64;
            let k = cl.len() as f64;
            (c.sum_s, c.sum_s2, c.sum_n, c.sum_n2, c.sum_sn) =
                (c.sum_s + s, c.sum_s2 + s * s, c.sum_n + k, c.sum_n2 + k * k, c.sum_sn + s * k);
        }
        let q = QuantileStat {
            users: values.len() as u64,
            n,
            nu,
            estimate,
            lower: percentile(&values, lo),
            upper: percentile(&values, hi),
            cluster: clustered.then_some(c),
        };
        quantile_moments(&q).expect("enough values")
    }

    /// A/A experiments randomized by cluster (40 clusters of 10 users per arm, intra-cluster
    /// correlation about 0.26): a median whose variance treats the users as independent rejects
    /// far more often than alpha; clustered by the unit it holds alpha within binomial noise.
    #[test]
    fn a_clustered_median_holds_alpha_where_the_per_user_one_does_not() {
        let mut rng = Rng(20261206);
        let (runs, mut naive, mut robust) = (400, 0, 0);
        for _ in 0..runs {
            let mut draw = || -> Vec<Vec<f64>> {
                (0..40)
                    .map(|_| {
                        let effect = 0.6 * rng.normal();
                        (0..10).map(|_| effect + rng.normal()).collect()
                    })
                    .collect()
            };
            let (a, b) = (draw(), draw());
            for (clustered, hits) in [(false, &mut naive), (true, &mut robust)] {
                let (x, y) = (arm(&a, clustered), arm(&b, clustered));
                let se = (x.variance().unwrap() / x.n + y.variance().unwrap() / y.n).sqrt();
                if 2.0 * normal_sf(((y.mean - x.mean) / se).abs()) < 0.05 {
                    *hits += 1;
                }
            }
        }
        // 400 runs at 0.05: 20 expected, [9, 33] with probability about 0.995 (measured: 18
        // clustered, 81 per user).
        assert!((9..=33).contains(&robust), "clustered: {robust} of {runs}");
        assert!(naive > 60, "per user: {naive} of {runs}");
    }
}
