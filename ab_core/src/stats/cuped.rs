//! CUPED: variance reduction with a pre-experiment covariate x per user.
//! theta = cov(y, x) / var(x) over all arms together; each arm's adjusted mean is
//! mean_y - theta (mean_x - overall mean_x) and its adjusted variance
//! var_y + theta^2 var_x - 2 theta cov(x, y). Differences between arms equal those of
//! mean_y - theta mean_x.

/// Mergeable co-moments of (y, x): counts, means, centered sums of squares and of products.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CoMoments {
    pub n: f64,
    pub mean_y: f64,
    pub mean_x: f64,
    pub m2_y: f64,
    pub m2_x: f64,
    pub c_xy: f64,
}

impl CoMoments {
    /// From SQL's count, avg(y), avg(x), var_samp(y), var_samp(x) and covar_samp(y, x).
    pub fn from_summary(n: f64, mean_y: f64, mean_x: f64, var_y: f64, var_x: f64, cov: f64) -> Self {
        let k = (n - 1.0).max(0.0);
        CoMoments { n, mean_y, mean_x, m2_y: var_y * k, m2_x: var_x * k, c_xy: cov * k }
    }

    pub fn add(&mut self, y: f64, x: f64) {
        self.n += 1.0;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / self.n;
        self.mean_y += dy / self.n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
    }

    pub fn merge(&self, o: &CoMoments) -> CoMoments {
        if self.n == 0.0 {
            return *o;
        }
        if o.n == 0.0 {
            return *self;
        }
        let n = self.n + o.n;
        let dx = o.mean_x - self.mean_x;
        let dy = o.mean_y - self.mean_y;
        let w = self.n * o.n / n;
        CoMoments {
            n,
            mean_y: self.mean_y + dy * o.n / n,
            mean_x: self.mean_x + dx * o.n / n,
            m2_y: self.m2_y + o.m2_y + dy * dy * w,
            m2_x: self.m2_x + o.m2_x + dx * dx * w,
            c_xy: self.c_xy + o.c_xy + dx * dy * w,
        }
    }
}

/// theta over all arms; None when x does not vary.
pub fn theta(arms: &[CoMoments]) -> Option<f64> {
    let all = arms.iter().fold(CoMoments::default(), |acc, a| acc.merge(a));
    (all.m2_x > 0.0).then(|| all.c_xy / all.m2_x)
}

/// An arm's CUPED-adjusted mean and variance of the per-user adjusted values.
pub fn adjust(arm: &CoMoments, theta: f64, overall_mean_x: f64) -> (f64, f64) {
    let k = arm.n - 1.0;
    let var = if k > 0.0 { ((arm.m2_y + theta * theta * arm.m2_x - 2.0 * theta * arm.c_xy) / k).max(0.0) } else { 0.0 };
    (arm.mean_y - theta * (arm.mean_x - overall_mean_x), var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theta_of_an_exact_line() {
        let mut a = CoMoments::default();
        let mut b = CoMoments::default();
        for i in 0..10 {
            let x = i as f64;
            a.add(2.0 * x + 1.0, x);
            b.add(2.0 * x + 3.0, x);
        }
        let t = theta(&[a, b]).unwrap();
        assert!((t - 2.0).abs() < 1e-12);
        let (ma, va) = adjust(&a, t, 4.5);
        let (mb, vb) = adjust(&b, t, 4.5);
        assert!((mb - ma - 2.0).abs() < 1e-12);
        assert!(va < 1e-20 && vb < 1e-20, "all the variance is explained");
    }

    #[test]
    fn merge_matches_adding() {
        let pts = [(1.0, 2.0), (3.0, 1.0), (4.0, 7.0), (0.5, -2.0), (9.0, 3.0)];
        let mut all = CoMoments::default();
        pts.iter().for_each(|&(y, x)| all.add(y, x));
        let mut a = CoMoments::default();
        let mut b = CoMoments::default();
        pts[..2].iter().for_each(|&(y, x)| a.add(y, x));
        pts[2..].iter().for_each(|&(y, x)| b.add(y, x));
        let m = a.merge(&b);
        for (u, v) in [(m.m2_x, all.m2_x), (m.m2_y, all.m2_y), (m.c_xy, all.c_xy), (m.mean_x, all.mean_x)] {
            assert!((u - v).abs() < 1e-12);
        }
    }
}
