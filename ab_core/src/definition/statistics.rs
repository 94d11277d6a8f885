//! The analysis settings: `min_sample_size`, `alpha`, `sequential` and `sequential_tuning`,
//! `correction` and `power`.

use serde::{Deserialize, Serialize};

use super::short_float;
use crate::error::{Error, Result};

pub const DEFAULT_MIN_SAMPLE_SIZE: i64 = 100;
pub const DEFAULT_ALPHA: f64 = 0.05;
pub const DEFAULT_SEQUENTIAL_TUNING: f64 = 5000.0;
pub const DEFAULT_POWER: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// Holm-Bonferroni: controls the family-wise error rate.
    #[default]
    Holm,
    /// Benjamini-Hochberg: controls the false discovery rate.
    Bh,
}

impl Correction {
    pub fn as_str(self) -> &'static str {
        match self {
            Correction::Holm => "holm",
            Correction::Bh => "bh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "holm" => Some(Correction::Holm),
            "bh" => Some(Correction::Bh),
            _ => None,
        }
    }
}

pub(super) fn min_sample_size(given: Option<f64>) -> Result<i64> {
    let min_sample_size = given.unwrap_or(DEFAULT_MIN_SAMPLE_SIZE as f64);
    if !(2.0..=1e9).contains(&min_sample_size) || min_sample_size.fract() != 0.0 {
        return Err(Error::definition(format!(
            "min_sample_size is {}, must be a whole number between 2 and 1000000000 (the t-test needs two users per variant)",
            short_float(min_sample_size)
        )));
    }
    Ok(min_sample_size as i64)
}

pub(super) fn alpha(given: Option<f64>) -> Result<f64> {
    let alpha = given.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::definition(format!("alpha is {alpha}, must be between 0 and 1 (exclusive)")));
    }
    Ok(alpha)
}

/// Always-valid inference's tuning (N*), or None for a fixed horizon.
pub(super) fn sequential_tuning(sequential: Option<bool>, tuning: Option<f64>) -> Result<Option<f64>> {
    match (sequential.unwrap_or(false), tuning) {
        (false, Some(_)) => Err(Error::definition("sequential_tuning is set but sequential is not true")),
        (false, None) => Ok(None),
        (true, t) => {
            let t = t.unwrap_or(DEFAULT_SEQUENTIAL_TUNING);
            if !(t.is_finite() && t >= 1.0) {
                return Err(Error::definition(format!(
                    "sequential_tuning is {t}, must be a number of users of at least 1"
                )));
            }
            Ok(Some(t))
        }
    }
}

pub(super) fn power(given: Option<f64>) -> Result<f64> {
    let power = given.unwrap_or(DEFAULT_POWER);
    if !(power > 0.0 && power < 1.0) {
        return Err(Error::definition(format!("power is {power}, must be between 0 and 1 (exclusive)")));
    }
    Ok(power)
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition, Aggregation, MetricType};
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_bad_settings() {
        assert_rejects(&[
            (|b| b["min_sample_size"] = json!(1), "min_sample_size is 1,"),
            (|b| b["min_sample_size"] = json!(2.5), "min_sample_size is 2.5,"),
            (|b| b["min_sample_size"] = json!(1e20), "min_sample_size is 1e20,"),
            (|b| b["alpha"] = json!(1.5), "alpha is 1.5"),
            (|b| b["sequential_tuning"] = json!(100), "sequential is not true"),
            (
                |b| {
                    b["sequential"] = json!(true);
                    b["sequential_tuning"] = json!(0);
                },
                "sequential_tuning is 0",
            ),
            (|b| b["correction"] = json!("bonferroni"), "unknown value `bonferroni`"),
            (|b| b["power"] = json!(1), "power is 1"),
        ]);
    }

    #[test]
    fn statistics_options() {
        let mut body = original_body();
        body["sequential"] = json!(true);
        body["correction"] = json!("bh");
        body["power"] = json!(0.9);
        body["metrics"] = json!({"resolution_rate": {"type": "binary", "mde": 0.02}});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.sequential_tuning, Some(DEFAULT_SEQUENTIAL_TUNING));
        assert_eq!(spec.correction, Correction::Bh);
        assert_eq!(spec.power, 0.9);
        let m = &spec.metrics["resolution_rate"];
        assert_eq!((m.kind, m.aggregation, m.mde), (MetricType::Binary, Aggregation::Max, Some(0.02)));
        assert!(m.silent_users_are_zero());
    }
}
