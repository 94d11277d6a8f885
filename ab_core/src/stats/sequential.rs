//! Always-valid inference: the asymptotic confidence sequence of Waudby-Smith et al. in
//! GrowthBook's form, so an analyst may look at the results every day without inflating the
//! false-positive rate. `tuning` (N*) is the sample size at which the sequence is tightest.

/// Half-width of the (1 - alpha) confidence sequence for a difference whose variance is
/// `se2` after `n` users in all.
pub fn half_width(se2: f64, n: f64, alpha: f64, tuning: f64) -> f64 {
    let s2 = se2 * n;
    let l = -2.0 * alpha.ln();
    let rho = ((l + (l + 1.0).ln()) / tuning).sqrt();
    let nr2 = n * rho * rho;
    let scale = 2.0 * (nr2 + 1.0) / (n * n * rho * rho);
    s2.sqrt() * (scale * ((nr2 + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// The always-valid p-value: the smallest alpha whose confidence sequence excludes 0.
pub fn p_value(diff: f64, se2: f64, n: f64, tuning: f64) -> f64 {
    if se2 <= 0.0 {
        return if diff == 0.0 { 1.0 } else { 0.0 };
    }
    let d = diff.abs();
    // The half-width shrinks as alpha grows; bisect on ln(alpha).
    let (mut lo, mut hi) = (-745.0f64, (1.0 - 1e-15f64).ln());
    if half_width(se2, n, hi.exp(), tuning) >= d {
        return 1.0;
    }
    if half_width(se2, n, lo.exp(), tuning) <= d {
        return lo.exp();
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if half_width(se2, n, mid.exp(), tuning) > d {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    (0.5 * (lo + hi)).exp()
}
