//! Regression adjustment with several covariates (Lin 2013): the OLS of the metric on the
//! treatment, the covariates centered at their mean over every arm, and their interactions
//! with the treatment. That regression is one OLS per arm of y on z = (1, x - center): each
//! arm's intercept is its adjusted mean, and a treatment's effect is the difference of two
//! intercepts. The slopes are fitted within each arm, so a constant treatment effect never
//! enters them. Post-stratification is the same estimator with a stratum's indicators as the
//! covariates.
//!
//! Everything is computed from per-arm sufficient statistics (means and centered
//! cross-products, one SQL aggregate pass) and, for the robust variance, per-arm sums of
//! e^2 z z' (a second pass, with the residuals e of the first pass's fit): nothing per user
//! reaches Rust. The variance is the sandwich B^-1 M B^-1 with B = Z'Z and M = sum e^2 z z'
//! (HC0), times N / (N - K) (HC1, as statsmodels' `cov_type="HC1"`), with N the users and K the
//! regression's coefficients over all arms. With clusters M sums, per cluster, the product of
//! (sum e z) with itself, times G / (G - 1) (N - 1) / (N - K) (statsmodels' `cov_type="cluster"`).

use super::dist::{normal_isf, normal_sf};

/// One arm's sufficient statistics over its users: count, means, and sums of products of
/// values centered at the arm's own means (`sxx` p x p, `sxy` p).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArmStats {
    pub n: f64,
    pub mean_y: f64,
    pub mean_x: Vec<f64>,
    pub sxx: Vec<Vec<f64>>,
    pub sxy: Vec<f64>,
    pub syy: f64,
}

impl ArmStats {
    /// From per-user rows (y, x): the statistics SQL computes with avg and covar_pop.
    pub fn from_rows(rows: &[(f64, Vec<f64>)]) -> ArmStats {
        let p = rows.first().map_or(0, |r| r.1.len());
        let n = rows.len() as f64;
        if n == 0.0 {
            return ArmStats {
                mean_x: vec![0.0; p],
                sxx: vec![vec![0.0; p]; p],
                sxy: vec![0.0; p],
                ..Default::default()
            };
        }
        let mean_y = rows.iter().map(|r| r.0).sum::<f64>() / n;
        let mean_x: Vec<f64> = (0..p).map(|j| rows.iter().map(|r| r.1[j]).sum::<f64>() / n).collect();
        let dx = |r: &(f64, Vec<f64>), j: usize| r.1[j] - mean_x[j];
        let sxx = (0..p).map(|j| (0..p).map(|k| rows.iter().map(|r| dx(r, j) * dx(r, k)).sum()).collect()).collect();
        let sxy = (0..p).map(|j| rows.iter().map(|r| dx(r, j) * (r.0 - mean_y)).sum()).collect();
        let syy = rows.iter().map(|r| (r.0 - mean_y) * (r.0 - mean_y)).sum();
        ArmStats { n, mean_y, mean_x, sxx, sxy, syy }
    }

    /// An arm without users, with p covariates.
    pub fn empty(p: usize) -> ArmStats {
        ArmStats { mean_x: vec![0.0; p], sxx: vec![vec![0.0; p]; p], sxy: vec![0.0; p], ..Default::default() }
    }

    pub fn covariates(&self) -> usize {
        self.mean_x.len()
    }

    /// The variance of the arm's plain mean (no adjustment): s^2 / n.
    pub fn unadjusted_variance(&self) -> Option<f64> {
        (self.n >= 2.0).then(|| self.syy / (self.n - 1.0) / self.n)
    }
}

/// The covariates' means over every arm: the center of Lin's regression.
pub fn pooled_means(arms: &[ArmStats]) -> Vec<f64> {
    let p = arms.first().map_or(0, ArmStats::covariates);
    let n: f64 = arms.iter().map(|a| a.n).sum();
    (0..p).map(|j| if n > 0.0 { arms.iter().map(|a| a.n * a.mean_x[j]).sum::<f64>() / n } else { 0.0 }).collect()
}

/// One arm's regression: the slopes (0 for a covariate left out), the covariates kept, the
/// adjusted mean (the intercept at `center`), and the residual sum of squares.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmFit {
    pub slopes: Vec<f64>,
    pub kept: Vec<usize>,
    pub adjusted_mean: f64,
    pub ssr: f64,
}

impl ArmFit {
    /// The residual of a user's (y, x): y - mean_y - sum b_k (x_k - mean_x_k), as the second
    /// pass computes it in SQL (see `residual_terms`).
    pub fn residual(&self, arm: &ArmStats, y: f64, x: &[f64]) -> f64 {
        y - arm.mean_y - self.kept.iter().map(|&k| self.slopes[k] * (x[k] - arm.mean_x[k])).sum::<f64>()
    }
}

/// A covariate whose variance within the arm is this small a share of its total, once the
/// covariates before it are accounted for, is left out of the arm's fit (constant in the arm,
/// or a combination of the others): its slope there is 0.
const COLLINEAR: f64 = 1e-9;

/// The covariates of a p x p Gram matrix kept by a pivoting Cholesky, in order.
fn kept_columns(sxx: &[Vec<f64>]) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    for j in 0..sxx.len() {
        let diag = sxx[j][j];
        if !(diag > 0.0 && diag.is_finite()) {
            continue;
        }
        let mut trial = kept.clone();
        trial.push(j);
        let sub: Vec<Vec<f64>> = trial.iter().map(|&a| trial.iter().map(|&b| sxx[a][b]).collect()).collect();
        if let Some(l) = cholesky(&sub) {
            let last = l[trial.len() - 1][trial.len() - 1];
            if last * last > COLLINEAR * diag {
                kept = trial;
            }
        }
    }
    kept
}

/// Lower-triangular L with L L' = a, None unless a is positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if !(s > 0.0) {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

/// The solution of a x = b for a positive definite a.
fn solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let l = cholesky(a)?;
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

/// The arm's OLS with covariates centered at `center`. None without users.
pub fn fit(arm: &ArmStats, center: &[f64]) -> Option<ArmFit> {
    if arm.n < 1.0 {
        return None;
    }
    let p = arm.covariates();
    let kept = kept_columns(&arm.sxx);
    let sub: Vec<Vec<f64>> = kept.iter().map(|&a| kept.iter().map(|&b| arm.sxx[a][b]).collect()).collect();
    let rhs: Vec<f64> = kept.iter().map(|&a| arm.sxy[a]).collect();
    let b = if kept.is_empty() { vec![] } else { solve(&sub, &rhs)? };
    let mut slopes = vec![0.0; p];
    for (i, &k) in kept.iter().enumerate() {
        slopes[k] = b[i];
    }
    let adjusted_mean = arm.mean_y - kept.iter().map(|&k| slopes[k] * (arm.mean_x[k] - center[k])).sum::<f64>();
    let ssr = (arm.syy - kept.iter().map(|&k| slopes[k] * arm.sxy[k]).sum::<f64>()).max(0.0);
    Some(ArmFit { slopes, kept, adjusted_mean, ssr })
}

/// Sums over an arm's users (or, with clusters, over its clusters) of g g', g = e z with
/// z = (1, x - center) (with clusters, g = the cluster's sum of e z): (p + 1) x (p + 1).
pub type Meat = Vec<Vec<f64>>;

/// Per-user rows' meat, as the second pass computes it (for tests and small data).
pub fn meat_of_rows(arm: &ArmStats, f: &ArmFit, center: &[f64], rows: &[(f64, Vec<f64>)]) -> Meat {
    let p = arm.covariates();
    let mut m = vec![vec![0.0; p + 1]; p + 1];
    for (y, x) in rows {
        let e = f.residual(arm, *y, x);
        let z: Vec<f64> = std::iter::once(1.0).chain((0..p).map(|k| x[k] - center[k])).collect();
        for a in 0..=p {
            for b in 0..=p {
                m[a][b] += e * e * z[a] * z[b];
            }
        }
    }
    m
}

/// The cluster-robust meat of per-user rows, `cluster[i]` naming row i's cluster: per
/// cluster, the sum g of e z over its users, then the sum of g g' (for tests and small data;
/// the analysis sums e z per cluster in SQL).
pub fn cluster_meat_of_rows(
    arm: &ArmStats,
    f: &ArmFit,
    center: &[f64],
    rows: &[(f64, Vec<f64>)],
    cluster: &[usize],
) -> Meat {
    let p = arm.covariates();
    let mut sums: std::collections::BTreeMap<usize, Vec<f64>> = std::collections::BTreeMap::new();
    for ((y, x), g) in rows.iter().zip(cluster) {
        let e = f.residual(arm, *y, x);
        let s = sums.entry(*g).or_insert_with(|| vec![0.0; p + 1]);
        s[0] += e;
        for k in 0..p {
            s[k + 1] += e * (x[k] - center[k]);
        }
    }
    let mut m = vec![vec![0.0; p + 1]; p + 1];
    for s in sums.values() {
        for a in 0..=p {
            for b in 0..=p {
                m[a][b] += s[a] * s[b];
            }
        }
    }
    m
}

/// The HC0 sandwich variance of the arm's adjusted mean: r' M r, r the first row of
/// (Z'Z)^-1 over the intercept and the kept covariates.
pub fn adjusted_mean_variance(arm: &ArmStats, f: &ArmFit, center: &[f64], meat: &Meat) -> Option<f64> {
    // z's index in the meat: 0 the intercept, 1 + k covariate k.
    let idx: Vec<usize> = std::iter::once(0).chain(f.kept.iter().map(|&k| k + 1)).collect();
    let d: Vec<f64> = (0..arm.covariates()).map(|k| arm.mean_x[k] - center[k]).collect();
    let bread: Vec<Vec<f64>> = idx
        .iter()
        .map(|&a| {
            idx.iter()
                .map(|&b| match (a, b) {
                    (0, 0) => arm.n,
                    (0, k) | (k, 0) => arm.n * d[k - 1],
                    (j, k) => arm.sxx[j - 1][k - 1] + arm.n * d[j - 1] * d[k - 1],
                })
                .collect()
        })
        .collect();
    let mut e0 = vec![0.0; idx.len()];
    e0[0] = 1.0;
    let r = solve(&bread, &e0)?;
    let v: f64 = (0..idx.len()).map(|a| (0..idx.len()).map(|b| r[a] * meat[idx[a]][idx[b]] * r[b]).sum::<f64>()).sum();
    Some(v.max(0.0))
}

/// The small-sample factor of the robust variance: HC1's N / (N - K), or with G clusters
/// statsmodels' G / (G - 1) (N - 1) / (N - K). K is the regression's coefficients over
/// every arm (its rank).
pub fn small_sample_factor(n: f64, k: f64, clusters: Option<f64>) -> Option<f64> {
    if n - k < 1.0 {
        return None;
    }
    match clusters {
        None => Some(n / (n - k)),
        Some(g) if g >= 2.0 => Some(g / (g - 1.0) * (n - 1.0) / (n - k)),
        Some(_) => None,
    }
}

/// A treatment's adjusted comparison with the control (normal reference, as statsmodels'
/// robust covariances): difference of adjusted means, its CI, two-sided p and variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdjustedDiff {
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub p_value: f64,
    pub variance: f64,
}

pub fn compare(alpha: f64, control: (f64, f64), treatment: (f64, f64), factor: f64) -> AdjustedDiff {
    let diff = treatment.0 - control.0;
    let variance = factor * (control.1 + treatment.1);
    let se = variance.sqrt();
    let q = normal_isf(alpha / 2.0);
    let p_value = if se > 0.0 {
        (2.0 * normal_sf(diff.abs() / se)).min(1.0)
    } else if diff == 0.0 {
        1.0
    } else {
        0.0
    };
    AdjustedDiff { diff, ci_lower: diff - q * se, ci_upper: diff + q * se, p_value, variance }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream in [0, 1).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Dense OLS of the fully interacted regression over two arms, with HC1, written out
    /// directly: X = [1, t, xc, t*xc]; returns (coefficient of t, its HC1 variance).
    fn dense_lin(control: &[(f64, Vec<f64>)], treatment: &[(f64, Vec<f64>)]) -> (f64, f64) {
        let all: Vec<(f64, Vec<f64>, f64)> = control
            .iter()
            .map(|(y, x)| (*y, x.clone(), 0.0))
            .chain(treatment.iter().map(|(y, x)| (*y, x.clone(), 1.0)))
            .collect();
        let p = all[0].1.len();
        let n = all.len() as f64;
        let center: Vec<f64> = (0..p).map(|k| all.iter().map(|r| r.1[k]).sum::<f64>() / n).collect();
        let rows: Vec<Vec<f64>> = all
            .iter()
            .map(|(_, x, t)| {
                let xc: Vec<f64> = (0..p).map(|k| x[k] - center[k]).collect();
                let mut r = vec![1.0, *t];
                r.extend(xc.iter());
                r.extend(xc.iter().map(|v| v * t));
                r
            })
            .collect();
        let k = rows[0].len();
        let xtx: Vec<Vec<f64>> =
            (0..k).map(|a| (0..k).map(|b| rows.iter().map(|r| r[a] * r[b]).sum()).collect()).collect();
        let xty: Vec<f64> = (0..k).map(|a| rows.iter().zip(&all).map(|(r, o)| r[a] * o.0).sum()).collect();
        let beta = solve(&xtx, &xty).unwrap();
        let mut meat = vec![vec![0.0; k]; k];
        for (r, o) in rows.iter().zip(&all) {
            let e = o.0 - (0..k).map(|a| r[a] * beta[a]).sum::<f64>();
            for a in 0..k {
                for b in 0..k {
                    meat[a][b] += e * e * r[a] * r[b];
                }
            }
        }
        let mut e1 = vec![0.0; k];
        e1[1] = 1.0;
        let row = solve(&xtx, &e1).unwrap();
        let v: f64 = (0..k).map(|a| (0..k).map(|b| row[a] * meat[a][b] * row[b]).sum::<f64>()).sum();
        (beta[1], v * n / (n - k as f64))
    }

    fn arm_rows(seed: &mut u64, n: usize, effect: f64) -> Vec<(f64, Vec<f64>)> {
        (0..n)
            .map(|_| {
                let x1 = lcg(seed) * 10.0;
                let x2 = (lcg(seed) < 0.3) as i32 as f64;
                let x3 = lcg(seed) * x1;
                let y = 2.0 + effect + 0.8 * x1 - 1.5 * x2 + 0.3 * x3 + (lcg(seed) - 0.5) * (1.0 + x1);
                (y, vec![x1, x2, x3])
            })
            .collect()
    }

    fn lin(control: &[(f64, Vec<f64>)], treatment: &[(f64, Vec<f64>)]) -> AdjustedDiff {
        let arms = [ArmStats::from_rows(control), ArmStats::from_rows(treatment)];
        let center = pooled_means(&arms);
        let fits: Vec<ArmFit> = arms.iter().map(|a| fit(a, &center).unwrap()).collect();
        let v: Vec<f64> = [control, treatment]
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let m = meat_of_rows(&arms[i], &fits[i], &center, rows);
                adjusted_mean_variance(&arms[i], &fits[i], &center, &m).unwrap()
            })
            .collect();
        let n = arms[0].n + arms[1].n;
        let k: usize = fits.iter().map(|f| 1 + f.kept.len()).sum();
        let factor = small_sample_factor(n, k as f64, None).unwrap();
        compare(0.05, (fits[0].adjusted_mean, v[0]), (fits[1].adjusted_mean, v[1]), factor)
    }

    #[test]
    fn matches_the_dense_interacted_regression_with_hc1() {
        let mut seed = 7;
        let c = arm_rows(&mut seed, 300, 0.0);
        let t = arm_rows(&mut seed, 250, 0.7);
        let (beta, var) = dense_lin(&c, &t);
        let r = lin(&c, &t);
        assert!((r.diff - beta).abs() < 1e-9, "{} vs {beta}", r.diff);
        assert!((r.variance / var - 1.0).abs() < 1e-9, "{} vs {var}", r.variance);
        let se = var.sqrt();
        assert!((r.ci_upper - (beta + 1.959963984540054 * se)).abs() < 1e-9);
    }

    #[test]
    fn no_covariates_is_the_difference_of_means_with_hc1() {
        let c: Vec<(f64, Vec<f64>)> = [1.0, 2.0, 4.0, 7.0].iter().map(|&y| (y, vec![])).collect();
        let t: Vec<(f64, Vec<f64>)> = [3.0, 5.0, 6.0].iter().map(|&y| (y, vec![])).collect();
        let r = lin(&c, &t);
        assert!((r.diff - (14.0 / 3.0 - 3.5)).abs() < 1e-12);
        // HC0 per arm: SSR / n^2; HC1 factor 7 / 5.
        let v0 = (6.25 + 2.25 + 0.25 + 12.25) / 16.0 + (25.0 / 9.0 + 1.0 / 9.0 + 16.0 / 9.0) / 9.0;
        assert!((r.variance - v0 * 7.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn a_constant_or_duplicated_covariate_is_left_out() {
        let mut seed = 11;
        let mut c = arm_rows(&mut seed, 200, 0.0);
        let mut t = arm_rows(&mut seed, 200, 1.0);
        let (base_c, base_t) = (c.clone(), t.clone());
        // A fourth covariate copying the first, a fifth constant in the control only.
        for r in c.iter_mut() {
            r.1.push(r.1[0]);
            r.1.push(1.0);
        }
        for (i, r) in t.iter_mut().enumerate() {
            r.1.push(r.1[0]);
            r.1.push((i % 2) as f64);
        }
        let arms = [ArmStats::from_rows(&c), ArmStats::from_rows(&t)];
        let center = pooled_means(&arms);
        let f = fit(&arms[0], &center).unwrap();
        assert_eq!(f.kept, vec![0, 1, 2]);
        assert_eq!((f.slopes[3], f.slopes[4]), (0.0, 0.0));
        let f_t = fit(&arms[1], &center).unwrap();
        assert_eq!(f_t.kept, vec![0, 1, 2, 4]);
        // Without the copies, the control's slopes are the same.
        let plain = [ArmStats::from_rows(&base_c), ArmStats::from_rows(&base_t)];
        let g = fit(&plain[0], &pooled_means(&plain)).unwrap();
        for k in 0..3 {
            assert!((g.slopes[k] - f.slopes[k]).abs() < 1e-9);
        }
    }

    #[test]
    fn strata_indicators_give_the_post_stratified_estimate() {
        // Two strata: the adjusted mean is the strata's arm means weighted by the pooled shares.
        let c: Vec<(f64, Vec<f64>)> = vec![(1.0, vec![0.0]), (3.0, vec![0.0]), (10.0, vec![1.0]), (12.0, vec![1.0])];
        let t: Vec<(f64, Vec<f64>)> =
            vec![(2.0, vec![0.0]), (4.0, vec![0.0]), (6.0, vec![0.0]), (13.0, vec![1.0]), (15.0, vec![1.0])];
        let arms = [ArmStats::from_rows(&c), ArmStats::from_rows(&t)];
        let center = pooled_means(&arms);
        assert!((center[0] - 4.0 / 9.0).abs() < 1e-12);
        let fc = fit(&arms[0], &center).unwrap();
        let ft = fit(&arms[1], &center).unwrap();
        let share = 4.0 / 9.0;
        assert!((fc.adjusted_mean - ((1.0 - share) * 2.0 + share * 11.0)).abs() < 1e-12);
        assert!((ft.adjusted_mean - ((1.0 - share) * 4.0 + share * 14.0)).abs() < 1e-12);
    }

    #[test]
    fn cluster_factor_and_degenerate_cases() {
        assert_eq!(small_sample_factor(10.0, 4.0, None), Some(10.0 / 6.0));
        assert_eq!(small_sample_factor(10.0, 4.0, Some(5.0)), Some(5.0 / 4.0 * 9.0 / 6.0));
        assert_eq!(small_sample_factor(4.0, 4.0, None), None);
        assert_eq!(small_sample_factor(10.0, 4.0, Some(1.0)), None);
        assert!(fit(&ArmStats::default(), &[]).is_none());
        let r = compare(0.05, (1.0, 0.0), (1.0, 0.0), 1.0);
        assert_eq!((r.p_value, r.ci_lower, r.ci_upper), (1.0, 0.0, 0.0));
    }
}
