//! `allocation`: fixed traffic allocations, or a bandit that moves the traffic of new users
//! toward the variants likely to be best (see `crate::bandit`).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::{check_name, interval_seconds, short_float, LayerRole, LayerSpec, MetricDef, MetricType, VariantSpec};
use crate::bucketing::basis_points;
use crate::error::{Error, Result};
use crate::names::printable;
use crate::rollout::{Rollout, State};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllocation {
    mode: String,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    update_every: Option<String>,
    #[serde(default)]
    min_share: Option<f64>,
    #[serde(default)]
    burn_in_users: Option<f64>,
    #[serde(default)]
    steps: Option<Vec<f64>>,
    #[serde(default)]
    step_every: Option<String>,
}

/// The keys of `allocation`.
pub const ALLOCATION_KEYS: &[&str] =
    &["mode", "metric", "update_every", "min_share", "burn_in_users", "steps", "step_every"];

/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 20;

/// Adaptive allocation (`"allocation": {"mode": "bandit", ...}`): the traffic of new users
/// moves toward the variants likely to be best on `metric` (see `crate::bandit`).
#[derive(Debug, Clone, PartialEq)]
pub struct BanditSpec {
    pub metric: String,
    /// How often the weights may change, as a PostgreSQL interval (checked by the database).
    pub update_every: String,
    /// Least share of the enrolled traffic each variant keeps, in percent.
    pub min_share: f64,
    /// Users with the metric every variant needs before the first reweighting.
    pub burn_in_users: i64,
}

impl BanditSpec {
    /// As stored in ab_experiments.allocation.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"mode": "bandit", "metric": self.metric, "update_every": self.update_every,
                           "min_share": self.min_share, "burn_in_users": self.burn_in_users})
    }

    /// From ab_experiments.allocation (NULL or any other mode: None).
    pub fn from_json(v: &Value) -> Option<BanditSpec> {
        if v.get("mode")?.as_str()? != "bandit" {
            return None;
        }
        Some(BanditSpec {
            metric: v.get("metric")?.as_str()?.to_string(),
            update_every: v.get("update_every")?.as_str()?.to_string(),
            min_share: v.get("min_share")?.as_f64()?,
            burn_in_users: v.get("burn_in_users")?.as_i64()?,
        })
    }
}

pub const DEFAULT_UPDATE_EVERY: &str = "1 hour";
pub const DEFAULT_MIN_SHARE: f64 = 5.0;
pub const DEFAULT_BURN_IN_USERS: i64 = 100;

/// The bandit or the rollout, or neither for fixed allocations. `declared_any`: whether the
/// definition declares metrics (`metrics` then also holds the primary one).
pub(super) fn parse(
    raw: Option<RawAllocation>,
    primary_metric: &str,
    metrics: &BTreeMap<String, MetricDef>,
    variants: &[VariantSpec],
    declared_any: bool,
    layer: Option<&LayerSpec>,
) -> Result<(Option<BanditSpec>, Option<Rollout>)> {
    let Some(a) = raw else { return Ok((None, None)) };
    let bandit_keys =
        a.metric.is_some() || a.update_every.is_some() || a.min_share.is_some() || a.burn_in_users.is_some();
    let rollout_keys = a.steps.is_some() || a.step_every.is_some();
    match a.mode.as_str() {
        "fixed" => {
            if bandit_keys || rollout_keys {
                return Err(Error::definition(
                    "allocation mode \"fixed\" takes no other settings (metric, update_every, min_share and burn_in_users are for \"bandit\", steps and step_every for \"rollout\")",
                ));
            }
            return Ok((None, None));
        }
        "bandit" if rollout_keys => {
            return Err(Error::definition("steps and step_every are for allocation mode \"rollout\", not \"bandit\""))
        }
        "bandit" => {}
        "rollout" if bandit_keys => {
            return Err(Error::definition(
                "metric, update_every, min_share and burn_in_users are for allocation mode \"bandit\", not \"rollout\"",
            ))
        }
        "rollout" => return parse_rollout(a, metrics, variants, layer).map(|r| (None, Some(r))),
        other => {
            return Err(Error::definition(format!(
                "allocation mode \"{}\" is not one of fixed, bandit, rollout",
                printable(other)
            )))
        }
    }
    if matches!(layer, Some(LayerSpec { role: LayerRole::Holdout, .. })) {
        return Err(Error::definition(
            "a holdout experiment's allocation is its layer's holdout, so it cannot be a bandit",
        ));
    }
    let metric = match a.metric {
        None => primary_metric.to_string(),
        Some(m) => check_name("allocation metric", &m)?,
    };
    if !metrics.contains_key(&metric) {
        let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
        return Err(Error::definition(format!(
            "allocation metric \"{}\" is not {}{}",
            metric,
            if declared_any { "among the declared metrics" } else { "the primary metric" },
            crate::names::did_you_mean(&metric, names.iter().copied())
        )));
    }
    if metrics[&metric].source.is_some() {
        return Err(Error::definition(format!(
            "allocation metric \"{}\" is read from a source: a bandit reweights on recorded results (ab_record_result); declare a recorded metric for the allocation",
            printable(&metric)
        )));
    }
    if let Some((name, _)) = metrics.iter().find(|(_, d)| d.kind == MetricType::Quantile) {
        return Err(Error::definition(format!(
            "metric \"{}\" is a quantile: a bandit experiment's analysis is stratified by weight period, which quantile metrics are not",
            printable(name)
        )));
    }
    if let Some((name, d)) = metrics.iter().find(|(_, d)| d.is_composed()) {
        return Err(Error::definition(format!(
            "metric \"{}\" is a {}: a bandit experiment's analysis is stratified by weight period, which funnels and retention metrics are not",
            printable(name),
            if d.funnel.is_some() { "funnel" } else { "retention metric" }
        )));
    }
    // A bandit's analysis is stratified by weight period, which ratio metrics are not (yet).
    if let Some((name, _)) = metrics.iter().find(|(_, d)| d.kind == MetricType::Ratio) {
        return Err(Error::definition(format!(
            "metric \"{}\" is a ratio: a bandit experiment's analysis is stratified by weight period, which ratio metrics are not; declare its numerator and denominator as metrics of their own",
            printable(name)
        )));
    }
    let update_every = a.update_every.unwrap_or_else(|| DEFAULT_UPDATE_EVERY.to_string());
    if interval_seconds(&update_every).is_none() {
        return Err(Error::definition(format!(
            "update_every is \"{}\", must be an interval such as \"1 hour\", \"30 minutes\" or \"1 day 12 hours\"",
            printable(&update_every)
        )));
    }
    let k = variants.len() as f64;
    let most = (10_000.0 / k).floor() / 100.0;
    let min_share = a.min_share.unwrap_or(DEFAULT_MIN_SHARE.min(most));
    if !(min_share > 0.0 && min_share <= most && basis_points(min_share).is_some()) {
        return Err(Error::definition(format!(
            "min_share is {}, must be a percentage above 0 and at most {} (100 / {} variants) with at most two decimals",
            short_float(min_share),
            short_float(most),
            variants.len()
        )));
    }
    let burn_in = a.burn_in_users.unwrap_or(DEFAULT_BURN_IN_USERS as f64);
    if !(0.0..=1e9).contains(&burn_in) || burn_in.fract() != 0.0 {
        return Err(Error::definition(format!(
            "burn_in_users is {}, must be a whole number between 0 and 1000000000",
            short_float(burn_in)
        )));
    }
    if let Some(v) = variants.iter().find(|v| v.traffic_allocation <= 0.0) {
        return Err(Error::definition(format!(
            "variant \"{}\" has no traffic: a bandit starts with every variant enrolled (its first weights are the traffic allocations)",
            printable(&v.name)
        )));
    }
    Ok((Some(BanditSpec { metric, update_every, min_share, burn_in_users: burn_in as i64 }), None))
}

pub const DEFAULT_STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];

/// A rollout: one control and one new variant, whose share of new users follows `steps`.
fn parse_rollout(
    a: RawAllocation,
    metrics: &BTreeMap<String, MetricDef>,
    variants: &[VariantSpec],
    layer: Option<&LayerSpec>,
) -> Result<Rollout> {
    if matches!(layer, Some(LayerSpec { role: LayerRole::Holdout, .. })) {
        return Err(Error::definition(
            "a holdout experiment's allocation is its layer's holdout, so it cannot be a rollout",
        ));
    }
    if variants.len() != 2 {
        return Err(Error::definition(format!(
            "a rollout has two variants, the control and the new one; this definition has {}",
            variants.len()
        )));
    }
    let steps = a.steps.unwrap_or_else(|| DEFAULT_STEPS.to_vec());
    let bad = |why: &str| {
        Error::definition(format!(
            "steps are [{}]: {why}",
            steps.iter().map(|s| short_float(*s)).collect::<Vec<_>>().join(", ")
        ))
    };
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(bad(&format!("a rollout has 1 to {MAX_STEPS} steps")));
    }
    if steps.iter().any(|s| !(*s > 0.0 && *s <= 100.0 && basis_points(*s).is_some())) {
        return Err(bad("each is a percentage above 0 and at most 100 with at most two decimals"));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("each step must be larger than the one before (a step only adds users to the new variant)"));
    }
    if *steps.last().unwrap() != 100.0 {
        return Err(bad("the last step is 100 (the rollout completes when every new user gets the new variant)"));
    }
    let step_every = a.step_every.unwrap_or_else(|| DEFAULT_UPDATE_EVERY.to_string());
    if interval_seconds(&step_every).is_none() {
        return Err(Error::definition(format!(
            "step_every is \"{}\", must be an interval such as \"1 hour\", \"30 minutes\" or \"1 day 12 hours\"",
            printable(&step_every)
        )));
    }
    // A rollout's analysis and checks are stratified by weight period, as a bandit's are.
    if let Some((name, d)) = metrics.iter().find(|(_, d)| matches!(d.kind, MetricType::Ratio | MetricType::Quantile)) {
        return Err(Error::definition(format!(
            "metric \"{}\" is a {}: a rollout's analysis is stratified by weight period, which {} metrics are not",
            printable(name),
            if d.kind == MetricType::Ratio { "ratio" } else { "quantile" },
            if d.kind == MetricType::Ratio { "ratio" } else { "quantile" },
        )));
    }
    if let Some((name, _)) = metrics.iter().find(|(_, d)| d.margin.is_some() && d.source.is_some()) {
        return Err(Error::definition(format!(
            "metric \"{}\" has a margin, so it is a guardrail of the rollout, and a guardrail must be a recorded metric (not read from a source)",
            printable(name)
        )));
    }
    Ok(Rollout { steps, step_every, step: 0, state: State::Ramping })
}

#[cfg(test)]
mod tests {
    use super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

    #[test]
    fn bandit_defaults() {
        let mut body = original_body();
        body["allocation"] = json!({"mode": "bandit"});
        let b = parse_definition(&body).unwrap().bandit.unwrap();
        assert_eq!(parse_definition(&body).unwrap().rollout, None);
        assert_eq!(
            (b.metric.as_str(), b.update_every.as_str(), b.min_share, b.burn_in_users),
            ("resolution_rate", "1 hour", 5.0, 100)
        );
        assert_eq!(BanditSpec::from_json(&b.to_json()), Some(b));
        body["allocation"] = json!({"mode": "fixed"});
        assert_eq!(parse_definition(&body).unwrap().bandit, None);
        body["allocation"] = json!({"mode": "bandit"});
        body["variants"][1]["traffic_allocation"] = json!(0);
        assert!(parse_definition(&body).unwrap_err().message.contains("has no traffic"));
    }

    #[test]
    fn rejects_bad_allocations() {
        let err = |allocation: Value| {
            let mut body = original_body();
            body["allocation"] = allocation;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!({"mode": "fixed", "min_share": 10})).contains("\"fixed\" takes no other settings"));
        assert!(err(json!({"mode": "thompson"}))
            .contains("allocation mode \"thompson\" is not one of fixed, bandit, rollout"));
        assert!(err(json!({"mode": "bandit", "metric": "resolution_rat"})).contains(
            "allocation metric \"resolution_rat\" is not the primary metric (did you mean \"resolution_rate\"?)"
        ));
        assert!(err(json!({"mode": "bandit", "update_every": "hourly"})).contains("update_every is \"hourly\""));
        assert!(err(json!({"mode": "bandit", "min_share": 51}))
            .contains("min_share is 51, must be a percentage above 0 and at most 50 (100 / 2 variants)"));
        assert!(err(json!({"mode": "bandit", "burn_in_users": 1.5})).contains("burn_in_users is 1.5"));
        assert!(err(json!({"mode": "bandit", "weights": 1})).contains("unknown field `weights`"));
    }

    #[test]
    fn rollout_defaults_and_first_step() {
        let mut body = original_body();
        body["allocation"] = json!({"mode": "rollout"});
        let spec = parse_definition(&body).unwrap();
        let r = spec.rollout.unwrap();
        assert_eq!((r.steps.as_slice(), r.step_every.as_str(), r.step), (&DEFAULT_STEPS[..], "1 hour", 0));
        assert_eq!(spec.bandit, None);
        // The variants' allocations are the first step's.
        assert_eq!((spec.variants[0].traffic_allocation, spec.variants[1].traffic_allocation), (99.0, 1.0));
        body["allocation"] = json!({"mode": "rollout", "steps": [10, 100], "step_every": "30 minutes"});
        let r = parse_definition(&body).unwrap().rollout.unwrap();
        assert_eq!((r.steps, r.step_every.as_str()), (vec![10.0, 100.0], "30 minutes"));
    }

    #[test]
    fn rejects_bad_rollouts() {
        let err = |allocation: Value| {
            let mut body = original_body();
            body["allocation"] = allocation;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!({"mode": "rollout", "steps": [5, 5, 100]}))
            .contains("steps are [5, 5, 100]: each step must be larger"));
        assert!(err(json!({"mode": "rollout", "steps": [5, 50]})).contains("the last step is 100"));
        assert!(err(json!({"mode": "rollout", "steps": [0, 100]})).contains("a percentage above 0 and at most 100"));
        assert!(err(json!({"mode": "rollout", "steps": [0.001, 100]})).contains("at most two decimals"));
        assert!(err(json!({"mode": "rollout", "steps": []})).contains("1 to 20 steps"));
        assert!(err(json!({"mode": "rollout", "step_every": "soon"})).contains("step_every is \"soon\""));
        assert!(err(json!({"mode": "rollout", "min_share": 5}))
            .contains("are for allocation mode \"bandit\", not \"rollout\""));
        assert!(err(json!({"mode": "bandit", "steps": [100]})).contains("are for allocation mode \"rollout\""));
        assert!(err(json!({"mode": "fixed", "steps": [100]})).contains("steps and step_every for \"rollout\""));
        let mut body = original_body();
        body["allocation"] = json!({"mode": "rollout"});
        body["variants"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "C", "is_control": false, "traffic_allocation": 0, "config": {}}));
        assert!(parse_definition(&body).unwrap_err().message.contains("this definition has 3"));
        let mut body = original_body();
        body["allocation"] = json!({"mode": "rollout"});
        body["metrics"] = json!({"r": {"type": "ratio", "numerator": "a", "denominator": "b", "margin": 0.1},
                                 "a": {"aggregation": "sum"}, "b": {"aggregation": "sum"}, "resolution_rate": {}});
        let e = parse_definition(&body).unwrap_err().message;
        assert!(e.contains("metric \"r\" is a ratio: a rollout's analysis is stratified by weight period"), "{e}");
        let mut body = original_body();
        body["allocation"] = json!({"mode": "rollout"});
        body["metrics"] = json!({"resolution_rate": {}, "events": {"aggregation": "count", "margin": 1,
            "source": {"relation": "public.events", "user_column": "user_id", "time_column": "at"}}});
        let e = parse_definition(&body).unwrap_err().message;
        assert!(e.contains("metric \"events\" has a margin, so it is a guardrail of the rollout, and a guardrail must be a recorded metric (not read from a source)"), "{e}");
    }
}
