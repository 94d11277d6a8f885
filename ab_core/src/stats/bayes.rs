//! Bayesian summary under a flat prior on the difference: the posterior of the true
//! difference is N(diff, se^2).

use super::dist::{normal_pdf, normal_sf};
use crate::definition::Direction;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesResult {
    /// Posterior probability that the treatment is better than the control.
    pub chance_to_beat_control: f64,
    /// Expected loss of shipping the treatment, in the metric's units (always >= 0).
    pub expected_loss: f64,
}

pub fn bayes(diff: f64, se: f64, direction: Direction) -> BayesResult {
    // Work with the improvement, positive when the treatment is better.
    let gain = match direction {
        Direction::Higher => diff,
        Direction::Lower => -diff,
    };
    if se <= 0.0 {
        return BayesResult {
            chance_to_beat_control: if gain > 0.0 {
                1.0
            } else if gain < 0.0 {
                0.0
            } else {
                0.5
            },
            expected_loss: (-gain).max(0.0),
        };
    }
    let z = gain / se;
    BayesResult { chance_to_beat_control: normal_sf(-z), expected_loss: se * normal_pdf(z) - gain * normal_sf(z) }
}

/// A Gaussian prior on the effect (treatment minus control, or that over |control mean| when
/// `relative`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    pub mean: f64,
    pub sd: f64,
    #[serde(default)]
    pub relative: bool,
}

/// Why a prior cannot be used, or Ok.
pub fn check_prior(p: &Prior) -> Result<(), String> {
    if !(p.mean.is_finite() && p.mean.abs() <= 1e15) {
        Err(format!("mean is {}, must be a finite number", p.mean))
    } else if !(p.sd.is_finite() && p.sd > 0.0 && p.sd <= 1e15) {
        Err(format!("sd is {}, must be a positive number", p.sd))
    } else {
        Ok(())
    }
}

/// The posterior of the effect, as GrowthBook's gbstats computes it (EffectBayesianABTest):
/// normal data likelihood N(estimate, var), a proper Gaussian prior or none (flat).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    pub mean: f64,
    pub sd: f64,
    /// Equal-tailed credible interval at level 1 - alpha.
    pub ci_lower: f64,
    pub ci_upper: f64,
    /// P(the treatment is better), in the metric's direction.
    pub chance_to_beat_control: f64,
    /// Expected loss of shipping the treatment: E[max(0, -gain)].
    pub risk_of_shipping: f64,
    /// Expected loss of keeping the control: E[max(0, gain)], what is given up if the
    /// treatment is in fact better.
    pub risk_of_keeping_control: f64,
}

pub fn posterior(
    estimate: f64,
    var: f64,
    prior: Option<(f64, f64)>,
    alpha: f64,
    direction: Direction,
) -> Option<Posterior> {
    if !(var > 0.0 && var.is_finite() && estimate.is_finite()) {
        return None;
    }
    let (mean, post_var) = match prior {
        Some((m0, sd0)) if sd0 > 0.0 => {
            let prec = 1.0 / var + 1.0 / (sd0 * sd0);
            ((estimate / var + m0 / (sd0 * sd0)) / prec, 1.0 / prec)
        }
        _ => (estimate, var),
    };
    let sd = post_var.sqrt();
    let q = super::dist::normal_isf(alpha / 2.0);
    let gain = match direction {
        Direction::Higher => mean,
        Direction::Lower => -mean,
    };
    let z = gain / sd;
    Some(Posterior {
        mean,
        sd,
        ci_lower: mean - q * sd,
        ci_upper: mean + q * sd,
        chance_to_beat_control: normal_sf(-z),
        risk_of_shipping: sd * normal_pdf(z) - gain * normal_sf(z),
        risk_of_keeping_control: sd * normal_pdf(z) + gain * normal_sf(-z),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_prior_is_the_flat_summary() {
        let p = posterior(0.3, 0.04, None, 0.05, Direction::Higher).unwrap();
        let b = bayes(0.3, 0.2, Direction::Higher);
        assert!((p.chance_to_beat_control - b.chance_to_beat_control).abs() < 1e-15);
        assert!((p.risk_of_shipping - b.expected_loss).abs() < 1e-15);
        // E[max(0, gain)] - E[max(0, -gain)] = E[gain].
        assert!((p.risk_of_keeping_control - p.risk_of_shipping - 0.3).abs() < 1e-12);
    }

    #[test]
    fn a_prior_shrinks_toward_its_mean() {
        let p = posterior(0.3, 0.04, Some((0.0, 0.2)), 0.05, Direction::Higher).unwrap();
        assert!((p.mean - 0.15).abs() < 1e-12 && (p.sd - 0.02f64.sqrt()).abs() < 1e-12, "{p:?}");
        let lower = posterior(0.3, 0.04, Some((0.0, 0.2)), 0.05, Direction::Lower).unwrap();
        assert!((lower.chance_to_beat_control - (1.0 - p.chance_to_beat_control)).abs() < 1e-12);
        assert!((lower.risk_of_shipping - p.risk_of_keeping_control).abs() < 1e-12);
        assert_eq!(posterior(0.3, 0.0, None, 0.05, Direction::Higher), None);
    }
}
