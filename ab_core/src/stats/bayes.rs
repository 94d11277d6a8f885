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
