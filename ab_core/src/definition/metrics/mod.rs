//! `metrics` and `primary_metric`: each declared metric's kind, aggregation and direction,
//! and the parts a metric may have, one module each.

mod adjustment;
mod caps;
mod covariates;
mod effects;
mod funnels;
mod kinds;
mod priors;
mod quantiles;
mod ratios;
mod sources;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::check_name;
use crate::error::{Error, Result};

pub use adjustment::{
    check as check_adjustments, Adjustment, StratumDef, MAX_COVARIATES, MAX_STRATUM_LEVELS, STRATUM_KEYS,
};
pub use caps::{Cap, CAP_KEYS};
pub use covariates::{CovariateDef, COVARIATE_KEYS};
pub use funnels::{FunnelDef, FunnelFrom, RetentionDef, FUNNEL_KEYS, MAX_FUNNEL_STEPS, RETENTION_KEYS};
pub use kinds::{Aggregation, Direction, MetricType};
pub use priors::PRIOR_KEYS;
pub use quantiles::QuantileLevel;
pub use sources::SourceRef;

pub const MAX_METRICS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    #[serde(default, rename = "type")]
    pub kind: MetricType,
    #[serde(default)]
    pub aggregation: Aggregation,
    #[serde(default)]
    pub direction: Direction,
    /// Minimum detectable effect, as an absolute difference, for the power calculation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mde: Option<f64>,
    /// Non-inferiority margin, in the metric's units: how much worse than the control a
    /// treatment may be on this metric (a guardrail). The winner must show it is not worse by
    /// more than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// An upper bound on each user's value (winsorization), so that a few runaway users
    /// cannot decide the comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// A Gaussian prior on the effect for `ab_bayes` (none: flat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<crate::stats::bayes::Prior>,
    /// A ratio metric's numerator and denominator: declared sum, count or binary metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<String>,
    /// A quantile metric's metric (a declared continuous one), level (a fraction such as 0.9)
    /// and whether it is a quantile of per-user values or of every recorded value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<QuantileLevel>,
    /// Where the metric is read from instead of ab_results: the name of a registered metric
    /// source (`ab_create_metric_source`) or a source inline (see `crate::source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    /// A source metric's conversion window: only rows within it after enrollment count
    /// (a PostgreSQL interval such as "14 days").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// A source metric's CUPED covariate: the same measure over the `lookback` before
    /// enrollment, from the metric's source or another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariate: Option<CovariateDef>,
    /// A funnel metric's ordered steps (declared recorded metrics) and window: 1 for a user
    /// who completed every step in order within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<FunnelDef>,
    /// A retention metric's metric and days [N, M): 1 for a user active in them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionDef>,
    /// What `ab_adjusted` adjusts the metric for (regression adjustment): declared metrics'
    /// pre-period values and breakdown attributes as strata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariates: Option<Vec<Adjustment>>,
}

/// The keys of a metric in `metrics`, as `MetricDef` declares them.
pub const METRIC_KEYS: &[&str] = &[
    "type",
    "aggregation",
    "direction",
    "mde",
    "margin",
    "cap",
    "prior",
    "numerator",
    "denominator",
    "of",
    "quantile",
    "level",
    "source",
    "window",
    "covariate",
    "funnel",
    "retention",
    "covariates",
];

impl MetricDef {
    /// Whether assigned users who recorded nothing count as 0 (or are left out).
    pub fn silent_users_are_zero(&self) -> bool {
        self.kind == MetricType::Binary || self.aggregation.counts_silent_users_as_zero()
    }
}

/// The declared metrics, their names in NFC, each checked; the checks that look at other
/// metrics (ratios, quantiles) come first.
pub(super) fn parse(declared: Option<BTreeMap<String, MetricDef>>) -> Result<BTreeMap<String, MetricDef>> {
    let declared = declared.unwrap_or_default();
    if declared.len() > MAX_METRICS {
        return Err(Error::definition(format!(
            "at most {MAX_METRICS} metrics may be declared, got {}",
            declared.len()
        )));
    }
    let mut metrics = BTreeMap::new();
    for (name, def) in declared {
        let name = check_name("metric name", &name)?;
        if metrics.insert(name.clone(), def).is_some() {
            return Err(Error::definition(format!(
                "metric \"{name}\" is declared twice (names are compared in Unicode NFC)"
            )));
        }
    }
    funnels::check(&mut metrics)?;
    ratios::check(&mut metrics)?;
    quantiles::check(&mut metrics)?;
    sources::check(&mut metrics)?;
    for (name, def) in &metrics {
        caps::check(name, def)?;
        priors::check(name, def)?;
        effects::check_margin(name, def)?;
    }
    for (name, def) in &metrics {
        kinds::check_aggregation(name, def)?;
        effects::check_mde(name, def)?;
    }
    kinds::normalize(&mut metrics);
    Ok(metrics)
}

/// Adds the primary metric to `metrics` and returns `strict_metrics`: the primary metric
/// must be among the declared ones, if any are.
pub(super) fn add_primary(
    metrics: &mut BTreeMap<String, MetricDef>,
    primary_metric: &str,
    strict_metrics: Option<bool>,
) -> Result<bool> {
    let declared_any = !metrics.is_empty();
    if declared_any && !metrics.contains_key(primary_metric) {
        let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
        return Err(Error::definition(format!(
            "primary_metric \"{primary_metric}\" is not among the declared metrics ({}){}",
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "),
            crate::names::did_you_mean(primary_metric, names.iter().copied())
        ))
        .with_hint("declare the primary metric in \"metrics\" too, or leave \"metrics\" out"));
    }
    let strict_metrics = strict_metrics.unwrap_or(declared_any);
    if strict_metrics && !declared_any {
        return Err(Error::definition(
            "strict_metrics is true but no metrics are declared: declare every metric in \"metrics\"",
        ));
    }
    metrics.entry(primary_metric.to_string()).or_default();
    Ok(strict_metrics)
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn declared_metrics_are_strict_and_include_the_primary() {
        let spec = parse_definition(&original_body()).unwrap();
        assert!(!spec.strict_metrics, "no metrics declared: any name is accepted");
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {}, "response_time": {"direction": "lower"}});
        assert!(parse_definition(&body).unwrap().strict_metrics);
        body["strict_metrics"] = json!(false);
        assert!(!parse_definition(&body).unwrap().strict_metrics);
        let mut body = original_body();
        body["primary_metric"] = json!("conversion");
        body["metrics"] = json!({"conversions": {"type": "binary"}, "token_usage": {}});
        let e = parse_definition(&body).unwrap_err();
        assert_eq!(
            e.message,
            "primary_metric \"conversion\" is not among the declared metrics (\"conversions\", \"token_usage\") (did you mean \"conversions\"?)"
        );
        assert!(e.hint.unwrap().contains("declare the primary metric"));
        let mut body = original_body();
        body["strict_metrics"] = json!(true);
        assert!(parse_definition(&body).unwrap_err().message.contains("no metrics are declared"));
    }

    #[test]
    fn rejects_bad_metrics() {
        assert_rejects(&[
            (|b| b["metrics"] = json!({"x": {"aggregation": "median"}}), "unknown value `median`"),
            (|b| b["metrics"] = json!({"x": {"direction": "up"}}), "unknown value `up`"),
            (|b| b["metrics"] = json!({"x": {"type": "binary", "aggregation": "sum"}}), "is binary"),
            (|b| b["metrics"] = json!({"x": {"type": "ratio"}}), "ratio metric \"x\" has no numerator"),
            (|b| b["metrics"] = json!({"x": {"type": "quantile"}}), "quantile metric \"x\" has no \"quantile\""),
            (|b| b["metrics"] = json!({"x": {"type": "median"}}), "unknown value `median`"),
            (|b| b["metrics"] = json!({"x": {"mde": -1}}), "mde of metric \"x\" is -1"),
            (|b| b["metrics"] = json!({" ": {}}), "metric name must not be empty"),
        ]);
        let mut body = original_body();
        body["metrics"] = (0..101).map(|i| (format!("m{i}"), json!({}))).collect();
        assert_eq!(parse_definition(&body).unwrap_err().message, "at most 100 metrics may be declared, got 101");
    }
}
