//! Sample ratio mismatch: Pearson's chi-square goodness of fit of the users per variant
//! against the configured allocations, as `scipy.stats.chisquare`.

use statrs::function::gamma::gamma_ur;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SrmResult {
    pub chi2: f64,
    pub p_value: f64,
}

/// Upper tail of the chi-square distribution with k degrees of freedom.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    gamma_ur(k / 2.0, x / 2.0)
}

/// `observed[i]` users against weights `weights[i]` (any positive scale). Variants with
/// weight 0 are left out when nobody is in them; anybody in one is a mismatch (p = 0).
pub fn srm_test(observed: &[f64], weights: &[f64]) -> Result<SrmResult> {
    if observed.len() != weights.len() {
        return Err(Error::invalid(format!(
            "observed has {} counts but weights has {}, they must match",
            observed.len(),
            weights.len()
        )));
    }
    if let Some(o) = observed.iter().find(|o| !(**o >= 0.0 && o.fract() == 0.0)) {
        return Err(Error::invalid(format!("observed counts must be whole numbers of at least 0, got {o}")));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::invalid(format!("weights must be finite and at least 0, got {w}")));
    }
    let cells: Vec<(f64, f64)> =
        observed.iter().zip(weights).filter(|(o, w)| **w > 0.0 || **o > 0.0).map(|(o, w)| (*o, *w)).collect();
    if cells.len() < 2 {
        return Err(Error::invalid("the test needs at least two groups with a positive weight"));
    }
    if cells.iter().any(|(o, w)| *w == 0.0 && *o > 0.0) {
        return Ok(SrmResult { chi2: f64::INFINITY, p_value: 0.0 });
    }
    let total: f64 = cells.iter().map(|(o, _)| o).sum();
    if total == 0.0 {
        return Ok(SrmResult { chi2: 0.0, p_value: 1.0 });
    }
    // Weights are scaled by the largest first: their sum must not overflow (1e308 + 1e308).
    let wmax = cells.iter().map(|(_, w)| *w).fold(0.0, f64::max);
    let wsum: f64 = cells.iter().map(|(_, w)| w / wmax).sum();
    let chi2: f64 = cells
        .iter()
        .map(|(o, w)| {
            let e = w / wmax / wsum * total;
            (o - e) * (o - e) / e
        })
        .sum();
    Ok(SrmResult { chi2, p_value: chi2_sf(chi2, (cells.len() - 1) as f64) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_edges() {
        assert!(srm_test(&[1.0], &[1.0, 2.0]).unwrap_err().message.contains("must match"));
        assert!(srm_test(&[-1.0, 2.0], &[1.0, 1.0]).unwrap_err().message.contains("whole numbers"));
        assert!(srm_test(&[1.0, 2.0], &[1.0, -1.0]).unwrap_err().message.contains("at least 0"));
        assert!(srm_test(&[5.0, 0.0], &[1.0, 0.0]).unwrap_err().message.contains("at least two groups"));
        assert_eq!(srm_test(&[5.0, 3.0], &[1.0, 0.0]).unwrap().p_value, 0.0);
        assert_eq!(srm_test(&[0.0, 0.0], &[1.0, 1.0]).unwrap().p_value, 1.0);
        // Weights at the top of the float8 range give the same answer as small ones.
        assert_eq!(srm_test(&[5.0, 5.0], &[1e308, 1e308]).unwrap(), SrmResult { chi2: 0.0, p_value: 1.0 });
        assert_eq!(srm_test(&[30.0, 70.0], &[3e307, 7e307]).unwrap(), srm_test(&[30.0, 70.0], &[3.0, 7.0]).unwrap());
    }
}
