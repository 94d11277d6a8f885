//! The experiment definition accepted by `ab_create_experiment`: the JSON body of the
//! original REST API's create call, plus optional `metrics`, `target_segments` and `alpha`.
//! Validation happens here, whole, before anything is written.
//!
//! Each part of a definition has a module of its own, with its keys, its checks and its
//! tests; `parse_definition` calls them in a fixed order, which decides the problem reported
//! when a definition has several. A new part is a new module and one call here (and its key
//! in `RawDefinition` and `DEFINITION_KEYS`).

mod allocation;
mod breakdowns;
mod clusters;
mod header;
mod interval;
mod layer;
mod metrics;
mod recorded;
mod salt;
mod segments;
mod statistics;
mod variants;

use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::names::normalize_name;
use crate::targeting::json_type;

pub use crate::names::MAX_NAME_LEN;
pub use crate::source::SOURCE_KEYS;
pub use allocation::{
    BanditSpec, ALLOCATION_KEYS, DEFAULT_BURN_IN_USERS, DEFAULT_MIN_SHARE, DEFAULT_STEPS, DEFAULT_UPDATE_EVERY,
    MAX_STEPS,
};
pub use breakdowns::{breakdown_values, MAX_BREAKDOWNS, MAX_BREAKDOWN_VALUE_LEN};
pub use clusters::cluster_of;
pub use header::{EXPERIMENT_TYPES, MAX_DESCRIPTION_LEN};
pub use interval::interval_seconds;
pub use layer::{LayerRole, LayerSpec, LAYER_KEYS};
pub use metrics::{
    Adjustment, Aggregation, Cap, CovariateDef, Direction, FunnelDef, FunnelFrom, MetricDef, MetricType, QuantileLevel,
    RetentionDef, SourceRef, StratumDef, CAP_KEYS, COVARIATE_KEYS, FUNNEL_KEYS, MAX_COVARIATES, MAX_FUNNEL_STEPS,
    MAX_METRICS, MAX_STRATUM_LEVELS, METRIC_KEYS, PRIOR_KEYS, RETENTION_KEYS, STRATUM_KEYS,
};
pub use recorded::{
    binary_value, check_metric_name, check_value, composed_recorded, quantile_recorded, ratio_recorded,
    source_recorded, source_value_problem, undeclared_metric, value_in_range, MAX_ABS_VALUE,
};
pub use statistics::{Correction, DEFAULT_ALPHA, DEFAULT_MIN_SAMPLE_SIZE, DEFAULT_POWER, DEFAULT_SEQUENTIAL_TUNING};
pub use variants::{VariantSpec, MAX_VARIANTS, VARIANT_KEYS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    #[serde(default)]
    description: Option<String>,
    experiment_type: String,
    primary_metric: String,
    variants: Vec<variants::RawVariant>,
    #[serde(default)]
    // A number rather than an integer, so that 1e20 or 2.5 get a message about the field.
    min_sample_size: Option<f64>,
    #[serde(default)]
    metrics: Option<BTreeMap<String, MetricDef>>,
    #[serde(default)]
    strict_metrics: Option<bool>,
    #[serde(default)]
    target_segments: Option<Value>,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    salt: Option<String>,
    #[serde(default)]
    sequential: Option<bool>,
    #[serde(default)]
    sequential_tuning: Option<f64>,
    #[serde(default)]
    correction: Option<Correction>,
    #[serde(default)]
    power: Option<f64>,
    #[serde(default)]
    layer: Option<layer::RawLayer>,
    #[serde(default)]
    allocation: Option<allocation::RawAllocation>,
    #[serde(default)]
    breakdowns: Option<Vec<String>>,
    #[serde(default)]
    randomization_unit: Option<String>,
}

/// The top-level keys of a definition, as `RawDefinition` declares them (serde refuses any
/// other key with "unknown field `x`, expected one of" these, in this order).
pub const DEFINITION_KEYS: &[&str] = &[
    "name",
    "description",
    "experiment_type",
    "primary_metric",
    "variants",
    "min_sample_size",
    "metrics",
    "strict_metrics",
    "target_segments",
    "alpha",
    "salt",
    "sequential",
    "sequential_tuning",
    "correction",
    "power",
    "layer",
    "allocation",
    "breakdowns",
    "randomization_unit",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub name: String,
    pub description: String,
    pub experiment_type: String,
    pub primary_metric: String,
    pub variants: Vec<VariantSpec>,
    pub min_sample_size: i64,
    /// Every declared metric, always including the primary one.
    pub metrics: BTreeMap<String, MetricDef>,
    /// Results and covariates only under the names in `metrics`. Defaults to true when the
    /// definition declares metrics, false otherwise.
    pub strict_metrics: bool,
    pub target_segments: Value,
    pub alpha: f64,
    /// Hashing salt; None lets the database draw a random one.
    pub salt: Option<String>,
    /// Always-valid inference with this tuning (N*), or fixed-horizon when None.
    pub sequential_tuning: Option<f64>,
    pub correction: Correction,
    pub power: f64,
    pub layer: Option<LayerSpec>,
    /// Adaptive allocation; None keeps the traffic allocations fixed.
    pub bandit: Option<BanditSpec>,
    /// A rollout ramping the new variant by steps; its variants' traffic allocations are
    /// the first step's (the control takes the rest).
    pub rollout: Option<crate::rollout::Rollout>,
    /// Attributes stored with each assignment, to break the analysis down by (`ab_breakdown`).
    pub breakdowns: Vec<String>,
    /// A cluster-randomized experiment's unit: the attribute whose value every user of a
    /// cluster shares (one of `breakdowns`); None randomizes users.
    pub randomization_unit: Option<String>,
}

impl ExperimentSpec {
    pub fn metrics_json(&self) -> Value {
        serde_json::to_value(&self.metrics).expect("metric definitions serialize")
    }
}

/// Parses and validates a definition; the error names the first problem found.
pub fn parse_definition(value: &Value) -> Result<ExperimentSpec> {
    let raw = parse_raw(value)?;
    let (name, description) = header::parse(&raw.name, raw.description, &raw.experiment_type)?;
    let primary_metric = check_name("primary_metric", &raw.primary_metric)?;
    let variants = variants::parse(raw.variants)?;
    let min_sample_size = statistics::min_sample_size(raw.min_sample_size)?;
    let alpha = statistics::alpha(raw.alpha)?;
    let mut metrics = metrics::parse(raw.metrics)?;
    let sequential_tuning = statistics::sequential_tuning(raw.sequential, raw.sequential_tuning)?;
    let power = statistics::power(raw.power)?;
    let declared_any = !metrics.is_empty();
    let strict_metrics = metrics::add_primary(&mut metrics, &primary_metric, raw.strict_metrics)?;
    let target_segments = segments::parse(raw.target_segments)?;
    salt::check(raw.salt.as_deref())?;
    let layer = layer::parse(raw.layer, raw.salt.is_some(), variants.len())?;
    let (bandit, rollout) =
        allocation::parse(raw.allocation, &primary_metric, &metrics, &variants, declared_any, layer.as_ref())?;
    let mut variants = variants;
    if let Some(r) = &rollout {
        for v in variants.iter_mut() {
            v.traffic_allocation = if v.is_control { 100.0 - r.steps[0] } else { r.steps[0] };
        }
    }
    let breakdowns = breakdowns::parse(raw.breakdowns.unwrap_or_default())?;
    metrics::check_adjustments(&mut metrics, &breakdowns, bandit.is_some())?;
    let randomization_unit = clusters::parse(
        raw.randomization_unit.as_deref(),
        &breakdowns,
        bandit.is_some(),
        rollout.is_some(),
        layer.is_some(),
    )?;

    Ok(ExperimentSpec {
        name,
        description,
        experiment_type: raw.experiment_type,
        primary_metric,
        variants,
        min_sample_size,
        metrics,
        strict_metrics,
        target_segments,
        alpha,
        salt: raw.salt,
        sequential_tuning,
        correction: raw.correction.unwrap_or_default(),
        power,
        layer,
        bandit,
        rollout,
        breakdowns,
        randomization_unit,
    })
}

/// The definition's JSON shape: an object whose keys have the right types. The variants and
/// the layer are checked first when it is not, for a message naming the variant and field.
fn parse_raw(value: &Value) -> Result<RawDefinition> {
    if !value.is_object() {
        return Err(Error::definition("experiment definition must be a JSON object"));
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        let problem = variants::problem(value).or_else(|| layer::problem(value)).unwrap_or_else(|| serde_message(&e));
        Error::definition(format!("invalid experiment definition: {problem}"))
    })
}

/// serde's wording, in this domain's terms ("variant" means something else here).
fn serde_message(e: &serde_json::Error) -> String {
    e.to_string()
        .replace("unknown variant", "unknown value")
        .replace("expected f64", "expected a number")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
}

/// A field of a part checked by `field_problem`: its key, what it must be, the check, and
/// whether it is required.
type Field = (&'static str, &'static str, fn(&Value) -> bool, bool);

/// The first problem in one part (`who`, such as `variant "Control"`) whose accepted keys
/// are `keys`: serde's own message names neither the part nor the field.
fn field_problem(who: &str, v: &Value, keys: &[&str], fields: &[Field]) -> Option<String> {
    let Some(obj) = v.as_object() else {
        return Some(format!("{who} must be a JSON object, got {}", json_type(v)));
    };
    for key in obj.keys() {
        if !keys.contains(&key.as_str()) {
            let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            return Some(format!("unknown field `{key}` in {who}, expected one of {}", names.join(", ")));
        }
    }
    for (field, expected, ok, required) in fields {
        match obj.get(*field) {
            None if *required => return Some(format!("{who} has no {field}")),
            Some(x) if !ok(x) => return Some(format!("{field} of {who} must be {expected}, got {}", json_type(x))),
            _ => {}
        }
    }
    None
}

fn check_name(what: &str, name: &str) -> Result<String> {
    normalize_name(what, name).map(Cow::into_owned).map_err(|e| Error::definition(e.message))
}

/// A number as a person would write it: 50, 33.333, 1e308.
fn short_float(x: f64) -> String {
    if x.abs() >= 1e9 || (x != 0.0 && x.abs() < 1e-6) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

#[cfg(test)]
fn original_body() -> Value {
    serde_json::json!({"name": "Lead Qualification Prompt Test", "description": "Testing new prompt with examples",
     "experiment_type": "prompt", "primary_metric": "resolution_rate",
     "variants": [
       {"name": "Control", "is_control": true, "traffic_allocation": 50.0, "config": {"system_prompt": "Current prompt..."}},
       {"name": "Treatment", "is_control": false, "traffic_allocation": 50.0, "config": {"system_prompt": "New prompt with examples..."}}],
     "min_sample_size": 100})
}

/// A change to the original body, and text the error it causes contains.
#[cfg(test)]
type Rejection = (fn(&mut Value), &'static str);

/// Asserts that each change to the original body makes `parse_definition` fail with a
/// message containing the given text.
#[cfg(test)]
fn assert_rejects(cases: &[Rejection]) {
    for (mutate, expected) in cases {
        let mut body = original_body();
        mutate(&mut body);
        let err = parse_definition(&body).unwrap_err();
        assert!(err.message.contains(expected), "expected {expected:?}, got {:?}", err.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_original_create_body() {
        let spec = parse_definition(&original_body()).unwrap();
        assert_eq!(spec.name, "Lead Qualification Prompt Test");
        assert_eq!(spec.variants.len(), 2);
        assert!(spec.variants[0].is_control);
        assert_eq!(spec.min_sample_size, 100);
        assert_eq!(spec.alpha, 0.05);
        assert_eq!(spec.metrics["resolution_rate"], MetricDef::default());
        assert_eq!(spec.target_segments, json!({}));
    }

    #[test]
    fn rejects_a_malformed_definition() {
        assert_rejects(&[
            (|b| b["alpah"] = json!(0.1), "unknown field `alpah`"),
            (
                |b| {
                    b.as_object_mut().unwrap().remove("variants");
                },
                "missing field `variants`",
            ),
        ]);
        assert!(parse_definition(&json!([1])).unwrap_err().message.contains("must be a JSON object"));
    }

    #[test]
    fn names_are_stored_in_nfc_and_look_alikes_collide() {
        let mut body = original_body();
        body["name"] = json!("cafe\u{0301}");
        body["variants"][1]["name"] = json!("Caf\u{e9}");
        body["primary_metric"] = json!("re\u{0301}solution");
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.name, "caf\u{e9}");
        assert_eq!(spec.primary_metric, "r\u{e9}solution");
        assert!(spec.metrics.contains_key("r\u{e9}solution"));
        body["variants"][0]["name"] = json!("Cafe\u{0301}");
        assert_eq!(parse_definition(&body).unwrap_err().message, "variant name \"Caf\u{e9}\" is used twice");
        let mut body = original_body();
        body["metrics"] = json!({"caf\u{e9}": {}, "cafe\u{0301}": {}});
        assert!(parse_definition(&body).unwrap_err().message.contains("is declared twice"));
        for (name, found) in [("\u{200B}", "U+200B"), ("A\u{202E}B", "U+202E"), ("a\nb", "U+000A")] {
            let mut body = original_body();
            body["name"] = json!(name);
            let e = parse_definition(&body).unwrap_err().message;
            assert!(e.starts_with("experiment name must not contain") && e.contains(found), "{e}");
        }
    }

    #[test]
    fn optional_fields() {
        let mut body = original_body();
        body["alpha"] = json!(0.01);
        body["metrics"] = json!({"resolution_rate": {}, "escalation_rate": {"direction": "lower"}, "token_usage": {"aggregation": "sum", "direction": "lower"}});
        body["target_segments"] = json!({"loan_type": ["fha"]});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.alpha, 0.01);
        assert_eq!(spec.metrics.len(), 3);
        assert_eq!(spec.metrics["escalation_rate"].direction, Direction::Lower);
        assert_eq!(spec.metrics["token_usage"].aggregation, Aggregation::Sum);
        assert_eq!(
            spec.metrics_json()["escalation_rate"],
            json!({"type": "continuous", "aggregation": "mean", "direction": "lower"})
        );
        assert_eq!(spec.sequential_tuning, None);
        assert_eq!(spec.correction, Correction::Holm);
    }

    /// The fields a serde-derived type accepts, in its declaration order: the list behind its
    /// "unknown field" error.
    fn serde_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        struct Fields;
        #[derive(Debug)]
        struct Found(Vec<&'static str>);
        impl std::fmt::Display for Found {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::error::Error for Found {}
        impl serde::de::Error for Found {
            fn custom<M: std::fmt::Display>(_: M) -> Self {
                Found(Vec::new())
            }
        }
        impl<'de> serde::Deserializer<'de> for Fields {
            type Error = Found;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Found> {
                Err(Found(Vec::new()))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> std::result::Result<V::Value, Found> {
                Err(Found(fields.to_vec()))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
                unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        T::deserialize(Fields).map(|_| ()).unwrap_err().0
    }

    /// The key lists are the ones the parser enforces: serde's field lists for the parts it
    /// reads with `deny_unknown_fields`, and the same lists where the parser checks the keys
    /// itself (variants, layer, sources). Each is without repeats.
    #[test]
    fn key_lists_are_what_the_parser_accepts() {
        let lists: [(&[&str], Vec<&str>); 11] = [
            (DEFINITION_KEYS, serde_fields::<RawDefinition>()),
            (METRIC_KEYS, serde_fields::<MetricDef>()),
            (CAP_KEYS, serde_fields::<Cap>()),
            (COVARIATE_KEYS, serde_fields::<CovariateDef>()),
            (FUNNEL_KEYS, serde_fields::<FunnelDef>()),
            (RETENTION_KEYS, serde_fields::<RetentionDef>()),
            (STRATUM_KEYS, serde_fields::<StratumDef>()),
            (PRIOR_KEYS, serde_fields::<crate::stats::bayes::Prior>()),
            (VARIANT_KEYS, serde_fields::<variants::RawVariant>()),
            (LAYER_KEYS, serde_fields::<layer::RawLayer>()),
            (ALLOCATION_KEYS, serde_fields::<allocation::RawAllocation>()),
        ];
        for (list, fields) in &lists {
            assert_eq!(list, fields);
        }
        for list in lists.iter().map(|l| l.0).chain([SOURCE_KEYS]) {
            let unique: std::collections::BTreeSet<&str> = list.iter().copied().collect();
            assert_eq!(unique.len(), list.len(), "{list:?}");
            assert!(!list.is_empty());
        }
        // The same lists name the keys in the parser's own messages.
        let mut body = original_body();
        body["nope"] = json!(1);
        let expected: Vec<String> = DEFINITION_KEYS.iter().map(|k| format!("`{k}`")).collect();
        assert_eq!(
            parse_definition(&body).unwrap_err().message,
            format!("invalid experiment definition: unknown field `nope`, expected one of {}", expected.join(", "))
        );
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {"nope": 1}});
        let expected: Vec<String> = METRIC_KEYS.iter().map(|k| format!("`{k}`")).collect();
        assert_eq!(
            parse_definition(&body).unwrap_err().message,
            format!("invalid experiment definition: unknown field `nope`, expected one of {}", expected.join(", "))
        );
    }
}
