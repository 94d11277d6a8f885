//! A metric's `type`, `aggregation` and `direction`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::MetricDef;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    #[default]
    Mean,
    Sum,
    Count,
    Max,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Mean => "mean",
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Max => "max",
        }
    }

    /// Sum and count treat an assigned user with no results as 0; mean and max leave them out.
    pub fn counts_silent_users_as_zero(self) -> bool {
        matches!(self, Aggregation::Sum | Aggregation::Count)
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Aggregation::Mean),
            "sum" => Some(Aggregation::Sum),
            "count" => Some(Aggregation::Count),
            "max" => Some(Aggregation::Max),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Higher,
    Lower,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Higher => "higher",
            Direction::Lower => "lower",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "higher" => Some(Direction::Higher),
            "lower" => Some(Direction::Lower),
            _ => None,
        }
    }

    /// True when a difference (treatment - control) is an improvement.
    pub fn is_improvement(self, diff: f64) -> bool {
        match self {
            Direction::Higher => diff > 0.0,
            Direction::Lower => diff < 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Any number per result; compared with Welch's t-test on per-user values.
    #[default]
    Continuous,
    /// 0 or 1 per result; a user counts as 1 if any result is 1, users who recorded nothing
    /// count as 0; compared with the two-proportion z-test.
    Binary,
    /// The ratio of two other metrics' per-user means (numerator / denominator, e.g. tokens
    /// per conversation), compared with Welch's t-test on its delta-method variance.
    Ratio,
    /// A quantile (such as the 90th percentile) of another metric's values, per user or over
    /// every recorded value, compared on the variance of the quantile's estimate.
    Quantile,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Continuous => "continuous",
            MetricType::Binary => "binary",
            MetricType::Ratio => "ratio",
            MetricType::Quantile => "quantile",
        }
    }
}

/// A binary metric takes mean (the default) or max only.
pub(super) fn check_aggregation(name: &str, def: &MetricDef) -> Result<()> {
    if def.kind == MetricType::Binary && !matches!(def.aggregation, Aggregation::Mean | Aggregation::Max) {
        return Err(Error::definition(format!(
            "metric \"{name}\" is binary: each user counts as 1 if any result is 1, so its aggregation cannot be {}",
            def.aggregation.as_str()
        )));
    }
    Ok(())
}

/// A binary metric's per-user value is the max of its 0/1 results.
pub(super) fn normalize(metrics: &mut BTreeMap<String, MetricDef>) {
    for def in metrics.values_mut() {
        if def.kind == MetricType::Binary {
            def.aggregation = Aggregation::Max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_and_aggregations() {
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {"type": "binary"}, "b": {"type": "binary", "aggregation": "max"},
                                 "t": {"aggregation": "sum", "direction": "lower"}, "c": {"aggregation": "count"}});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.metrics["resolution_rate"].aggregation, Aggregation::Max);
        assert_eq!(spec.metrics["b"].aggregation, Aggregation::Max);
        assert_eq!((spec.metrics["t"].aggregation, spec.metrics["t"].direction), (Aggregation::Sum, Direction::Lower));
        assert!(spec.metrics["c"].silent_users_are_zero() && !spec.metrics_json()["b"].is_null());
        body["metrics"]["b"] = json!({"type": "binary", "aggregation": "count"});
        assert_eq!(
            parse_definition(&body).unwrap_err().message,
            "metric \"b\" is binary: each user counts as 1 if any result is 1, so its aggregation cannot be count"
        );
        for a in [Aggregation::Mean, Aggregation::Sum, Aggregation::Count, Aggregation::Max] {
            assert_eq!(Aggregation::parse(a.as_str()), Some(a));
        }
        assert_eq!(Direction::parse(Direction::Lower.as_str()), Some(Direction::Lower));
        assert!(Direction::Lower.is_improvement(-1.0) && !Direction::Higher.is_improvement(-1.0));
    }
}
