//! Mergeable moments (n, mean, centered sum of squares) as Welford and Chan et al. define
//! them: adding a value or merging two groups never forms sum(x^2).

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// From a count, a mean and a sample variance (as SQL's avg and var_samp give them).
    pub fn from_summary(n: f64, mean: f64, variance: f64) -> Moments {
        let m2 = if n > 1.0 { variance * (n - 1.0) } else { 0.0 };
        Moments { n, mean, m2 }
    }

    /// `n` users whose value is exactly `value`.
    pub fn constant(n: f64, value: f64) -> Moments {
        Moments { n, mean: if n > 0.0 { value } else { 0.0 }, m2: 0.0 }
    }

    pub fn add(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&self, other: &Moments) -> Moments {
        if self.n == 0.0 {
            return *other;
        }
        if other.n == 0.0 {
            return *self;
        }
        let n = self.n + other.n;
        let d = other.mean - self.mean;
        Moments { n, mean: self.mean + d * other.n / n, m2: self.m2 + other.m2 + d * d * self.n * other.n / n }
    }

    /// Sample variance; None below two observations.
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2.0).then(|| (self.m2 / (self.n - 1.0)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_merge_agree() {
        let xs = [1.0, 2.5, 3.0, 10.0, -4.0, 7.25];
        let mut all = Moments::default();
        xs.iter().for_each(|&x| all.add(x));
        let mut a = Moments::default();
        let mut b = Moments::default();
        xs[..2].iter().for_each(|&x| a.add(x));
        xs[2..].iter().for_each(|&x| b.add(x));
        let m = a.merge(&b);
        assert!((m.mean - all.mean).abs() < 1e-12);
        assert!((m.m2 - all.m2).abs() < 1e-9);
        let mean = xs.iter().sum::<f64>() / 6.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((all.variance().unwrap() - var).abs() < 1e-12);
    }

    #[test]
    fn merging_zeros_for_silent_users() {
        let with_data = Moments::from_summary(2.0, 3.0, 2.0); // values 2 and 4
        let m = with_data.merge(&Moments::constant(2.0, 0.0)); // plus two users at 0
        assert_eq!(m.n, 4.0);
        assert!((m.mean - 1.5).abs() < 1e-15);
        // values 2, 4, 0, 0: variance 11/3
        assert!((m.variance().unwrap() - 11.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn large_offset_keeps_precision() {
        let mut m = Moments::default();
        for x in [1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0] {
            m.add(x);
        }
        assert!((m.variance().unwrap() - 30.0).abs() < 1e-6);
    }
}
