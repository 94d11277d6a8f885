//! The experiment definition accepted by `ab_create_experiment`: the JSON body of the
//! original REST API's create call, plus optional `metrics`, `target_segments` and `alpha`.
//! Validation happens here, whole, before anything is written.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

use crate::bucketing::{basis_points, BUCKETS};
use crate::error::{Error, Result};
use crate::names::{normalize_name, printable};
use crate::targeting::{json_type, Segments};
use std::borrow::Cow;

pub const EXPERIMENT_TYPES: [&str; 6] = ["prompt", "model", "agent_config", "feature", "ui", "workflow"];
pub const MAX_VARIANTS: usize = 100;
pub const MAX_METRICS: usize = 100;
pub use crate::names::MAX_NAME_LEN;
pub const MAX_DESCRIPTION_LEN: usize = 10_000;
pub const DEFAULT_MIN_SAMPLE_SIZE: i64 = 100;
pub const DEFAULT_ALPHA: f64 = 0.05;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovariateDef {
    pub lookback: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
}

/// A metric's source as its definition holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceRef {
    /// A source registered with `ab_create_metric_source`.
    Named(String),
    Inline(crate::source::SourceSpec),
}

impl SourceRef {
    /// From a definition that `parse_definition` accepted.
    pub fn from_json(v: &Value) -> Option<SourceRef> {
        match v {
            Value::String(s) => Some(SourceRef::Named(s.clone())),
            v => crate::source::parse_spec(v).ok().map(SourceRef::Inline),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            SourceRef::Named(n) => Value::String(n.clone()),
            SourceRef::Inline(s) => s.to_json(),
        }
    }
}

/// What a quantile metric is a quantile of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuantileLevel {
    /// The per-user values (one per user who recorded the metric).
    #[default]
    User,
    /// Every recorded value (a user with many contributes many).
    Event,
}

/// A metric's cap: an absolute value, or a percentile (a fraction such as 0.99) of the
/// per-user values of all the users who recorded the metric, every variant together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
}

impl MetricDef {
    /// Whether assigned users who recorded nothing count as 0 (or are left out).
    pub fn silent_users_are_zero(&self) -> bool {
        self.kind == MetricType::Binary || self.aggregation.counts_silent_users_as_zero()
    }

    /// A quantile metric's (metric, level as a fraction, per user or per event).
    pub fn quantile_of(&self) -> Option<(&str, f64, QuantileLevel)> {
        match (self.kind, &self.of, self.quantile) {
            (MetricType::Quantile, Some(m), Some(q)) => Some((m, q, self.level.unwrap_or_default())),
            _ => None,
        }
    }

    /// A source metric's source.
    pub fn source_ref(&self) -> Option<SourceRef> {
        SourceRef::from_json(self.source.as_ref()?)
    }

    /// A source metric's covariate: its source and its lookback in seconds.
    pub fn covariate_ref(&self) -> Option<(SourceRef, f64)> {
        let c = self.covariate.as_ref()?;
        let source = match &c.source {
            Some(v) => SourceRef::from_json(v)?,
            None => self.source_ref()?,
        };
        Some((source, interval_seconds(&c.lookback)?))
    }

    /// A source metric's conversion window in seconds.
    pub fn window_seconds(&self) -> Option<f64> {
        interval_seconds(self.window.as_deref()?)
    }

    /// A ratio's (numerator, denominator).
    pub fn ratio_of(&self) -> Option<(&str, &str)> {
        match (self.kind, &self.numerator, &self.denominator) {
            (MetricType::Ratio, Some(n), Some(d)) => Some((n, d)),
            _ => None,
        }
    }
}

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

pub const DEFAULT_SEQUENTIAL_TUNING: f64 = 5000.0;
pub const DEFAULT_POWER: f64 = 0.8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: String,
    #[serde(default)]
    is_control: bool,
    traffic_allocation: f64,
    #[serde(default)]
    config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    #[serde(default)]
    description: Option<String>,
    experiment_type: String,
    primary_metric: String,
    variants: Vec<RawVariant>,
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
    layer: Option<RawLayer>,
    #[serde(default)]
    allocation: Option<RawAllocation>,
    #[serde(default)]
    breakdowns: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllocation {
    mode: String,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    update_every: Option<String>,
    #[serde(default)]
    min_share: Option<f64>,
    #[serde(default)]
    burn_in_users: Option<f64>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    #[serde(default)]
    percentage: Option<f64>,
    #[serde(default)]
    holdout: bool,
}

/// Where an experiment sits in a layer (see `crate::layers`).
#[derive(Debug, Clone, PartialEq)]
pub enum LayerRole {
    /// Takes this many basis points of the layer's traffic, apart from every other experiment
    /// of the layer.
    Share(u32),
    /// Measures the layer's holdout: its control is the holdout slice, its treatment everyone
    /// else in the layer.
    Holdout,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub name: String,
    pub role: LayerRole,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    pub is_control: bool,
    pub traffic_allocation: f64,
    pub config: Value,
}

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
    /// Attributes stored with each assignment, to break the analysis down by (`ab_breakdown`).
    pub breakdowns: Vec<String>,
}

impl ExperimentSpec {
    pub fn metrics_json(&self) -> Value {
        serde_json::to_value(&self.metrics).expect("metric definitions serialize")
    }
}

/// Checks a metric name as recorded by `ab_record_result` or declared in a definition, and
/// returns it in NFC (see `names`).
pub fn check_metric_name(name: &str) -> Result<Cow<'_, str>> {
    normalize_name("metric_name", name)
}

/// The error for a result or covariate under a name an experiment with `strict_metrics` does
/// not declare.
pub fn undeclared_metric<'a>(experiment: &str, metric: &str, declared: impl Iterator<Item = &'a str> + Clone) -> Error {
    let listed: Vec<String> = declared.clone().map(|n| format!("\"{}\"", printable(n))).collect();
    Error::invalid(format!(
        "metric \"{}\" is not declared by experiment \"{}\"{}",
        printable(metric),
        printable(experiment),
        crate::names::did_you_mean(metric, declared)
    ))
    .with_hint(format!(
        "its metrics are {}; an experiment that declares metrics accepts only those (create it with \"strict_metrics\": false to accept any name)",
        listed.join(", ")
    ))
}

/// The error for a result or covariate under a ratio metric's name.
pub fn ratio_recorded(experiment: &str, metric: &str, numerator: &str, denominator: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is a ratio (\"{}\" / \"{}\"): it is computed from its numerator and denominator, not recorded",
        printable(metric),
        printable(experiment),
        printable(numerator),
        printable(denominator)
    ))
    .with_hint(format!(
        "record \"{}\" and \"{}\" for the user instead",
        printable(numerator),
        printable(denominator)
    ))
}

/// The error for a result under the name of a metric read from a source.
pub fn source_recorded(experiment: &str, metric: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is read from a metric source: it is not recorded",
        printable(metric),
        printable(experiment)
    ))
    .with_hint("the analysis reads the source's rows; ab_get_experiment shows the source")
}

/// The error for a result or covariate under a quantile metric's name.
pub fn quantile_recorded(experiment: &str, metric: &str, of: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is a quantile of \"{}\": it is computed from that metric's values, not recorded",
        printable(metric),
        printable(experiment),
        printable(of)
    ))
    .with_hint(format!("record \"{}\" for the user instead", printable(of)))
}

/// Largest magnitude a recorded value or covariate may have. Every whole number up to it is
/// exact in a float8, and the sums of squares of billions of such values stay finite, so no
/// recorded value can make an analysis overflow.
pub const MAX_ABS_VALUE: f64 = 1e15;

/// Whether a value keeps the rule of every value an analysis reads: a number no larger in
/// magnitude than `MAX_ABS_VALUE` (NaN and the infinities are not).
pub fn value_in_range(x: f64) -> bool {
    x.abs() <= MAX_ABS_VALUE
}

/// A float8 as PostgreSQL prints the special ones.
fn shown_value(x: f64) -> String {
    match x {
        _ if x.is_nan() => "NaN".to_string(),
        f64::INFINITY => "Infinity".to_string(),
        f64::NEG_INFINITY => "-Infinity".to_string(),
        _ => short_float(x),
    }
}

/// Checks a recorded value (`what` names the argument).
pub fn check_value(what: &str, x: f64) -> Result<()> {
    if !value_in_range(x) {
        return Err(Error::invalid(format!(
            "{what} is {}, must be a finite number between -1e15 and 1e15",
            shown_value(x)
        )));
    }
    Ok(())
}

/// The same rule for a user's value read from the application's relations: `x` is the
/// largest in magnitude (NaN first) of a source metric's per-user values (`what` "value") or
/// of its covariate's ("covariate"); `source` names where it was read. The message when `x`
/// breaks the rule, which every analysis raises alike.
pub fn source_value_problem(metric: &str, what: &str, source: &str, x: f64) -> Option<String> {
    (!value_in_range(x)).then(|| {
        format!(
            "metric \"{}\": a user's {what} read from {source} is {}, outside the range of a metric value (-1e15 to 1e15)",
            printable(metric),
            shown_value(x)
        )
    })
}

/// Ratio metrics: a numerator and a denominator, both declared, each a sum, count or binary
/// metric (so that a user who recorded nothing is 0 on both sides, and every assigned user
/// counts); only ratio metrics have them. Their names are stored in NFC.
fn check_ratios(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
    let names: Vec<String> = metrics.keys().cloned().collect();
    for name in &names {
        let def = &metrics[name];
        if def.kind != MetricType::Ratio {
            if def.numerator.is_some() || def.denominator.is_some() {
                return Err(Error::definition(format!(
                    "metric \"{}\" has a numerator or denominator but is not a ratio: add \"type\": \"ratio\"",
                    printable(name)
                )));
            }
            continue;
        }
        if def.aggregation != Aggregation::Mean {
            return Err(Error::definition(format!(
                "metric \"{}\" is a ratio: its per-user values come from its numerator and denominator, so it has no aggregation",
                printable(name)
            )));
        }
        let mut parts = Vec::new();
        for (role, part) in [("numerator", &def.numerator), ("denominator", &def.denominator)] {
            let Some(part) = part else {
                return Err(Error::definition(format!(
                    "ratio metric \"{}\" has no {role}: give \"numerator\" and \"denominator\", the names of two declared metrics",
                    printable(name)
                )));
            };
            let part = check_name(&format!("{role} of metric \"{}\"", printable(name)), part)?;
            let Some(target) = metrics.get(&part) else {
                return Err(Error::definition(format!(
                    "the {role} of ratio metric \"{}\" is \"{}\", which is not declared{}",
                    printable(name),
                    printable(&part),
                    crate::names::did_you_mean(&part, names.iter().map(String::as_str))
                ))
                .with_hint("declare the numerator and denominator in \"metrics\" too, each with \"aggregation\": \"sum\" or \"count\", or \"type\": \"binary\""));
            };
            let fits = match target.kind {
                MetricType::Binary => true,
                MetricType::Continuous => target.aggregation.counts_silent_users_as_zero(),
                MetricType::Ratio | MetricType::Quantile => false,
            };
            if !fits {
                let what = if target.kind == MetricType::Ratio {
                    "a ratio itself".to_string()
                } else if target.kind == MetricType::Quantile {
                    "a quantile".to_string()
                } else {
                    format!("aggregated by {}", target.aggregation.as_str())
                };
                return Err(Error::definition(format!(
                    "the {role} of ratio metric \"{}\" is \"{}\", which is {what}: it must be a sum, count or binary metric (a user who recorded nothing is then 0)",
                    printable(name),
                    printable(&part)
                )));
            }
            parts.push(part);
        }
        if parts[0] == parts[1] {
            return Err(Error::definition(format!(
                "ratio metric \"{}\" divides \"{}\" by itself",
                printable(name),
                printable(&parts[0])
            )));
        }
        let def = metrics.get_mut(name).unwrap();
        def.denominator = parts.pop();
        def.numerator = parts.pop();
    }
    Ok(())
}

/// Quantile metrics: a declared continuous metric (`of`), a level strictly between 0 and 1,
/// and per user (the default) or per event; only quantile metrics have them.
fn check_quantiles(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
    let names: Vec<String> = metrics.keys().cloned().collect();
    for name in &names {
        let def = &metrics[name];
        if def.kind != MetricType::Quantile {
            if def.of.is_some() || def.quantile.is_some() || def.level.is_some() {
                return Err(Error::definition(format!(
                    "metric \"{}\" has \"of\", \"quantile\" or \"level\" but is not a quantile: add \"type\": \"quantile\"",
                    printable(name)
                )));
            }
            continue;
        }
        if def.aggregation != Aggregation::Mean {
            return Err(Error::definition(format!(
                "metric \"{}\" is a quantile: it takes no aggregation (\"level\": \"user\" uses its metric's per-user values)",
                printable(name)
            )));
        }
        match def.quantile {
            Some(q) if q > 0.0 && q < 1.0 => {}
            Some(q) => {
                return Err(Error::definition(format!(
                    "quantile of metric \"{}\" is {}, must be a fraction between 0 and 1 (exclusive), such as 0.9",
                    printable(name),
                    short_float(q)
                )))
            }
            None => {
                return Err(Error::definition(format!(
                    "quantile metric \"{}\" has no \"quantile\": give the level as a fraction, such as 0.9 for the 90th percentile",
                    printable(name)
                )))
            }
        }
        let Some(of) = &def.of else {
            return Err(Error::definition(format!(
                "quantile metric \"{}\" has no \"of\": give the name of a declared continuous metric",
                printable(name)
            )));
        };
        let of = check_name(&format!("\"of\" of metric \"{}\"", printable(name)), of)?;
        let Some(target) = metrics.get(&of) else {
            return Err(Error::definition(format!(
                "quantile metric \"{}\" is of \"{}\", which is not declared{}",
                printable(name),
                printable(&of),
                crate::names::did_you_mean(&of, names.iter().map(String::as_str))
            ))
            .with_hint("declare the metric in \"metrics\" too"));
        };
        let what = match target.kind {
            MetricType::Continuous => None,
            MetricType::Binary => Some("binary"),
            MetricType::Ratio => Some("a ratio"),
            MetricType::Quantile => Some("a quantile"),
        };
        if let Some(what) = what {
            return Err(Error::definition(format!(
                "quantile metric \"{}\" is of \"{}\", which is {what}: it must be a continuous metric",
                printable(name),
                printable(&of)
            )));
        }
        metrics.get_mut(name).unwrap().of = Some(of);
    }
    Ok(())
}

fn source_of(name: &str, what: &str, v: &Value) -> Result<SourceRef> {
    let r = match v {
        Value::String(s) => SourceRef::Named(check_name(&format!("{what} of metric \"{}\"", printable(name)), s)?),
        v => SourceRef::Inline(
            crate::source::parse_spec(v)
                .map_err(|e| Error::definition(format!("{what} of metric \"{}\": {}", printable(name), e.message)))?,
        ),
    };
    Ok(r)
}

fn check_interval(name: &str, key: &str, text: &str) -> Result<()> {
    if interval_seconds(text).is_none() {
        return Err(Error::definition(format!(
            "{key} of metric \"{}\" is \"{}\", must be a duration such as \"14 days\" or \"2 hours\" (seconds to weeks, at most 10 years)",
            printable(name),
            printable(text)
        )));
    }
    Ok(())
}

/// Source metrics: binary (a user with a matching row), or continuous by count of rows, or
/// sum, mean or max of a value column; a window and a covariate only with a source. The
/// sources are stored in canonical form; the database checks their names.
fn check_sources(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
    for (name, def) in metrics.iter_mut() {
        let Some(v) = &def.source else {
            if def.window.is_some() || def.covariate.is_some() {
                return Err(Error::definition(format!(
                    "metric \"{}\" has a \"window\" or \"covariate\" but no \"source\": they apply to metrics read from a source",
                    printable(name)
                )));
            }
            continue;
        };
        if matches!(def.kind, MetricType::Ratio | MetricType::Quantile) {
            return Err(Error::definition(format!(
                "metric \"{}\" is a {}: it has no source of its own; give the source to the metrics it is built from",
                printable(name),
                def.kind.as_str()
            )));
        }
        let source = source_of(name, "source", v)?;
        let measure = crate::source::Measure::of(def);
        if let SourceRef::Inline(s) = &source {
            match (measure.needs_value(), &s.value_column) {
                (true, None) => {
                    return Err(Error::definition(format!(
                        "metric \"{}\" is aggregated by {}: its source needs a \"value_column\"",
                        printable(name),
                        def.aggregation.as_str()
                    )))
                }
                (false, Some(_)) => {
                    return Err(Error::definition(format!(
                        "metric \"{}\" {}: its source's \"value_column\" would not be read; drop it, or filter on the column",
                        printable(name),
                        if measure == crate::source::Measure::Presence { "counts a user with any matching row" } else { "counts rows" }
                    )))
                }
                _ => {}
            }
        }
        def.source = Some(source.to_json());
        if let Some(w) = &def.window {
            check_interval(name, "window", w)?;
        }
        if let Some(c) = &mut def.covariate {
            check_interval(name, "covariate lookback", &c.lookback)?;
            if let Some(v) = &c.source {
                c.source = Some(source_of(name, "covariate source", v)?.to_json());
            }
        }
    }
    Ok(())
}

fn check_cap(name: &str, def: &MetricDef) -> Result<()> {
    let Some(cap) = def.cap else { return Ok(()) };
    let name = printable(name);
    match def.kind {
        MetricType::Binary => {
            return Err(Error::definition(format!(
                "metric \"{name}\" is binary: its per-user values are 0 or 1, so it takes no cap"
            )));
        }
        MetricType::Ratio => {
            return Err(Error::definition(format!(
                "metric \"{name}\" is a ratio: cap its numerator or denominator instead (each part's cap applies inside the ratio)"
            )));
        }
        MetricType::Quantile => {
            return Err(Error::definition(format!(
                "metric \"{name}\" is a quantile: a cap would not change it below the cap, and it takes none"
            )));
        }
        MetricType::Continuous => {}
    }
    match (cap.value, cap.percentile) {
        (Some(v), None) if v < 0.0 && def.silent_users_are_zero() => Err(Error::definition(format!(
            "cap value of metric \"{name}\" is {}, must be at least 0: a {} metric counts users who recorded nothing as 0, which a cap must not exceed",
            short_float(v),
            def.aggregation.as_str()
        ))),
        (Some(v), None) if v.is_finite() && v.abs() <= MAX_ABS_VALUE => Ok(()),
        (Some(v), None) => Err(Error::definition(format!(
            "cap value of metric \"{name}\" is {}, must be a finite number between -1e15 and 1e15",
            short_float(v)
        ))),
        (None, Some(p)) if p > 0.0 && p < 1.0 => Ok(()),
        (None, Some(p)) => Err(Error::definition(format!(
            "cap percentile of metric \"{name}\" is {}, must be a fraction between 0 and 1 (exclusive), such as 0.99",
            short_float(p)
        ))),
        _ => Err(Error::definition(format!(
            "cap of metric \"{name}\" must have exactly one of \"value\" (an absolute cap) or \"percentile\" (such as 0.99)"
        ))),
    }
}

/// A salt is hashed as given, so it is checked but never normalized.
fn check_salt(salt: &str) -> Result<()> {
    let len = salt.chars().count();
    if salt.trim().is_empty() {
        Err(Error::definition("salt must not be empty"))
    } else if len > MAX_NAME_LEN {
        Err(Error::definition(format!("salt is {len} characters long, at most {MAX_NAME_LEN} are allowed")))
    } else if salt.chars().any(char::is_control) {
        Err(Error::definition("salt must not contain control characters"))
    } else {
        Ok(())
    }
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

/// The first problem in a variant or the layer, naming the variant and the field: serde's
/// own message names neither (and calls the layer "struct RawLayer").
fn part_problem(value: &Value) -> Option<String> {
    type Check = fn(&Value) -> bool;
    fn fields(who: &str, v: &Value, known: &[(&str, &str, Check, bool)]) -> Option<String> {
        let Some(obj) = v.as_object() else {
            return Some(format!("{who} must be a JSON object, got {}", json_type(v)));
        };
        for key in obj.keys() {
            if !known.iter().any(|(k, ..)| k == key) {
                let names: Vec<String> = known.iter().map(|(k, ..)| format!("`{k}`")).collect();
                return Some(format!("unknown field `{key}` in {who}, expected one of {}", names.join(", ")));
            }
        }
        for (field, expected, ok, required) in known {
            match obj.get(*field) {
                None if *required => return Some(format!("{who} has no {field}")),
                Some(x) if !ok(x) => return Some(format!("{field} of {who} must be {expected}, got {}", json_type(x))),
                _ => {}
            }
        }
        None
    }
    if let Some(variants) = value.get("variants").and_then(Value::as_array) {
        for (i, v) in variants.iter().enumerate() {
            let who = match v.get("name").and_then(Value::as_str) {
                Some(name) => format!("variant \"{}\"", crate::names::printable(name)),
                None => format!("variant {}", i + 1),
            };
            let problem = fields(
                &who,
                v,
                &[
                    ("name", "a string", Value::is_string, true),
                    ("is_control", "true or false", Value::is_boolean, false),
                    ("traffic_allocation", "a number", Value::is_number, true),
                    ("config", "an object", |x| x.is_object() || x.is_null(), false),
                ],
            );
            if problem.is_some() {
                return problem;
            }
        }
    }
    if let Some(layer) = value.get("layer").filter(|l| !l.is_null()) {
        if !layer.is_object() {
            return Some(format!(
                "layer must be an object such as {{\"name\": \"checkout\", \"percentage\": 20}} or \
                 {{\"name\": \"checkout\", \"holdout\": true}}, got {}",
                json_type(layer)
            ));
        }
        return fields(
            "layer",
            layer,
            &[
                ("name", "a string", Value::is_string, true),
                ("percentage", "a number", |x| x.is_number() || x.is_null(), false),
                ("holdout", "true or false", Value::is_boolean, false),
            ],
        );
    }
    None
}

/// serde's wording, in this domain's terms ("variant" means something else here).
fn serde_message(e: &serde_json::Error) -> String {
    e.to_string()
        .replace("unknown variant", "unknown value")
        .replace("expected f64", "expected a number")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
}

/// Parses and validates a definition; the error names the first problem found.
pub fn parse_definition(value: &Value) -> Result<ExperimentSpec> {
    if !value.is_object() {
        return Err(Error::definition("experiment definition must be a JSON object"));
    }
    let raw: RawDefinition = serde_json::from_value(value.clone()).map_err(|e| {
        let problem = part_problem(value).unwrap_or_else(|| serde_message(&e));
        Error::definition(format!("invalid experiment definition: {problem}"))
    })?;

    let name = check_name("experiment name", &raw.name)?;
    let description = raw.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(Error::definition(format!("description is longer than {MAX_DESCRIPTION_LEN} characters")));
    }
    if !EXPERIMENT_TYPES.contains(&raw.experiment_type.as_str()) {
        return Err(Error::definition(format!(
            "experiment_type \"{}\" is not one of {}",
            raw.experiment_type,
            EXPERIMENT_TYPES.join(", ")
        )));
    }
    let primary_metric = check_name("primary_metric", &raw.primary_metric)?;

    if raw.variants.len() < 2 {
        return Err(Error::definition(format!(
            "an experiment needs at least 2 variants (a control and a treatment), got {}",
            raw.variants.len()
        )));
    }
    if raw.variants.len() > MAX_VARIANTS {
        return Err(Error::definition(format!(
            "an experiment has at most {MAX_VARIANTS} variants, got {}",
            raw.variants.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut total_bp = 0u32;
    let mut variants = Vec::with_capacity(raw.variants.len());
    for mut v in raw.variants {
        v.name = check_name("variant name", &v.name)?;
        if !seen.insert(v.name.clone()) {
            return Err(Error::definition(format!("variant name \"{}\" is used twice", v.name)));
        }
        let bp = basis_points(v.traffic_allocation).ok_or_else(|| {
            Error::definition(format!(
                "traffic_allocation of variant \"{}\" is {}, must be a percentage between 0 and 100 with at most two decimals",
                v.name, short_float(v.traffic_allocation)
            ))
        })?;
        total_bp += bp;
        let config = match v.config {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(c @ Value::Object(_)) => c,
            Some(_) => {
                return Err(Error::definition(format!("config of variant \"{}\" must be a JSON object", v.name)))
            }
        };
        variants.push(VariantSpec {
            name: v.name,
            is_control: v.is_control,
            traffic_allocation: bp as f64 / 100.0,
            config,
        });
    }
    let controls = variants.iter().filter(|v| v.is_control).count();
    if controls != 1 {
        return Err(Error::definition(format!("exactly one variant must have \"is_control\": true, found {controls}")));
    }
    if total_bp > BUCKETS {
        return Err(Error::definition(format!(
            "traffic allocations sum to {}, must be at most 100",
            total_bp as f64 / 100.0
        )));
    }
    if total_bp == 0 {
        return Err(Error::definition("traffic allocations sum to 0, so no user would be enrolled"));
    }

    let min_sample_size = raw.min_sample_size.unwrap_or(DEFAULT_MIN_SAMPLE_SIZE as f64);
    if !(2.0..=1e9).contains(&min_sample_size) || min_sample_size.fract() != 0.0 {
        return Err(Error::definition(format!(
            "min_sample_size is {}, must be a whole number between 2 and 1000000000 (the t-test needs two users per variant)",
            short_float(min_sample_size)
        )));
    }
    let min_sample_size = min_sample_size as i64;
    let alpha = raw.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::definition(format!("alpha is {alpha}, must be between 0 and 1 (exclusive)")));
    }

    let declared = raw.metrics.unwrap_or_default();
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
    check_ratios(&mut metrics)?;
    check_quantiles(&mut metrics)?;
    check_sources(&mut metrics)?;
    for (name, def) in &metrics {
        check_cap(name, def)?;
        if let Some(p) = def.prior {
            crate::stats::bayes::check_prior(&p)
                .map_err(|e| Error::definition(format!("prior of metric \"{}\": {e}", printable(name))))?;
        }
        if let Some(m) = def.margin {
            let most = if def.kind == MetricType::Binary { 1.0 } else { MAX_ABS_VALUE };
            if !(m > 0.0 && m < most || def.kind != MetricType::Binary && m == most) {
                return Err(Error::definition(format!(
                    "margin of metric \"{}\" is {}, must be a positive difference in the metric's units{}",
                    printable(name),
                    short_float(m),
                    if def.kind == MetricType::Binary {
                        " below 1 (0.01 is one percentage point)"
                    } else {
                        " up to 1e15"
                    }
                )));
            }
        }
    }
    for (name, def) in &metrics {
        if def.kind == MetricType::Binary && !matches!(def.aggregation, Aggregation::Mean | Aggregation::Max) {
            return Err(Error::definition(format!(
                "metric \"{name}\" is binary: each user counts as 1 if any result is 1, so its aggregation cannot be {}",
                def.aggregation.as_str()
            )));
        }
        if let Some(mde) = def.mde {
            if !(mde.is_finite() && mde > 0.0) {
                return Err(Error::definition(format!(
                    "mde of metric \"{name}\" is {mde}, must be a positive difference in the metric's units"
                )));
            }
        }
    }
    // A binary metric's per-user value is the max of its 0/1 results.
    for def in metrics.values_mut() {
        if def.kind == MetricType::Binary {
            def.aggregation = Aggregation::Max;
        }
    }
    let sequential_tuning = match (raw.sequential.unwrap_or(false), raw.sequential_tuning) {
        (false, Some(_)) => {
            return Err(Error::definition("sequential_tuning is set but sequential is not true"));
        }
        (false, None) => None,
        (true, t) => {
            let t = t.unwrap_or(DEFAULT_SEQUENTIAL_TUNING);
            if !(t.is_finite() && t >= 1.0) {
                return Err(Error::definition(format!(
                    "sequential_tuning is {t}, must be a number of users of at least 1"
                )));
            }
            Some(t)
        }
    };
    let power = raw.power.unwrap_or(DEFAULT_POWER);
    if !(power > 0.0 && power < 1.0) {
        return Err(Error::definition(format!("power is {power}, must be between 0 and 1 (exclusive)")));
    }
    let declared_any = !metrics.is_empty();
    if declared_any && !metrics.contains_key(&primary_metric) {
        let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
        return Err(Error::definition(format!(
            "primary_metric \"{primary_metric}\" is not among the declared metrics ({}){}",
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "),
            crate::names::did_you_mean(&primary_metric, names.iter().copied())
        ))
        .with_hint("declare the primary metric in \"metrics\" too, or leave \"metrics\" out"));
    }
    let strict_metrics = raw.strict_metrics.unwrap_or(declared_any);
    if strict_metrics && !declared_any {
        return Err(Error::definition(
            "strict_metrics is true but no metrics are declared: declare every metric in \"metrics\"",
        ));
    }
    metrics.entry(primary_metric.clone()).or_default();

    let target_segments = raw.target_segments.unwrap_or(Value::Object(Map::new()));
    let target_segments = if target_segments.is_null() { Value::Object(Map::new()) } else { target_segments };
    Segments::parse(&target_segments)?;
    if let Some(salt) = &raw.salt {
        check_salt(salt)?;
    }
    let layer = match raw.layer {
        None => None,
        Some(mut l) => {
            l.name = check_name("layer name", &l.name)?;
            let role = match (l.holdout, l.percentage) {
                (true, Some(_)) => return Err(Error::definition(
                    "a holdout experiment spans its whole layer: give \"holdout\": true or a \"percentage\", not both",
                )),
                (true, None) => {
                    if raw.salt.is_some() {
                        return Err(Error::definition(
                            "a holdout experiment buckets users with its layer's salt, so it cannot have a salt of its own",
                        ));
                    }
                    if variants.len() != 2 {
                        return Err(Error::definition(format!(
                            "a holdout experiment has exactly 2 variants (the holdout as control, and everyone else), got {}",
                            variants.len()
                        )));
                    }
                    LayerRole::Holdout
                }
                (false, None) => {
                    return Err(Error::definition(format!(
                        "layer \"{}\" needs a \"percentage\": the share of the layer's traffic this experiment takes",
                        l.name
                    )))
                }
                (false, Some(p)) => match basis_points(p) {
                    Some(bp) if bp > 0 => LayerRole::Share(bp),
                    _ => {
                        return Err(Error::definition(format!(
                        "percentage of layer \"{}\" is {}, must be above 0 and at most 100 with at most two decimals",
                        l.name,
                        short_float(p)
                    )))
                    }
                },
            };
            Some(LayerSpec { name: l.name, role })
        }
    };

    let bandit = match raw.allocation {
        None => None,
        Some(a) => parse_allocation(a, &primary_metric, &metrics, &variants, declared_any, layer.as_ref())?,
    };

    let breakdowns = check_breakdowns(raw.breakdowns.unwrap_or_default())?;

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
        breakdowns,
    })
}

/// Most attributes an experiment stores per assignment for breakdowns.
pub const MAX_BREAKDOWNS: usize = 5;
/// Longest attribute value stored for a breakdown, in characters; a longer one is not stored
/// (a value that long names no category).
pub const MAX_BREAKDOWN_VALUE_LEN: usize = 200;

fn check_breakdowns(names: Vec<String>) -> Result<Vec<String>> {
    if names.len() > MAX_BREAKDOWNS {
        return Err(Error::definition(format!(
            "breakdowns lists at most {MAX_BREAKDOWNS} attributes, got {}",
            names.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = check_name("breakdown attribute", &n)?;
        if n.chars().count() > 64 {
            return Err(Error::definition(format!(
                "breakdown attribute \"{}\" is longer than 64 characters",
                printable(&n)
            )));
        }
        if out.contains(&n) {
            return Err(Error::definition(format!("breakdown attribute \"{}\" is listed twice", printable(&n))));
        }
        out.push(n);
    }
    Ok(out)
}

/// What an assignment stores for its experiment's breakdowns: each listed attribute the
/// user's attributes give as a string, number or boolean (as text). A value follows the name
/// rules (`normalize_name`: stored in NFC, no control, bidirectional or invisible characters,
/// at most `MAX_BREAKDOWN_VALUE_LEN` characters) or is an error naming the attribute: it is
/// shown in reports as a segment's label. Ok(None) when nothing is stored.
pub fn breakdown_values(breakdowns: &[String], attributes: &Value) -> Result<Option<Map<String, Value>>> {
    let Some(given) = attributes.as_object() else { return Ok(None) };
    let mut out = Map::new();
    for name in breakdowns {
        let text = match given.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        let what = format!("the value of breakdown attribute \"{}\"", printable(name));
        if text.chars().count() > MAX_BREAKDOWN_VALUE_LEN {
            return Err(Error::invalid(format!(
                "{what} is {} characters long, at most {MAX_BREAKDOWN_VALUE_LEN} are allowed",
                text.chars().count()
            )));
        }
        let value = normalize_name(&what, &text)?.into_owned();
        out.insert(name.clone(), Value::String(value));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Seconds in an interval written as number-unit pairs ("1 hour", "2 days 30 minutes"; units
/// second, minute, hour, day, week, singular or plural), a subset of what PostgreSQL's
/// interval input accepts. None for anything else, or a total of 0 or over 10 years.
pub fn interval_seconds(text: &str) -> Option<f64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || words.len() % 2 != 0 || words.len() > 10 {
        return None;
    }
    let mut total = 0.0;
    for pair in words.chunks(2) {
        let n: f64 = pair[0].parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0 && pair[0].len() <= 12)?;
        if !pair[0].bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let unit = match pair[1].to_ascii_lowercase().trim_end_matches('s') {
            "second" | "sec" => 1.0,
            "minute" | "min" => 60.0,
            "hour" => 3600.0,
            "day" => 86400.0,
            "week" => 604800.0,
            _ => return None,
        };
        total += n * unit;
    }
    (total > 0.0 && total <= 10.0 * 366.0 * 86400.0).then_some(total)
}

fn parse_allocation(
    a: RawAllocation,
    primary_metric: &str,
    metrics: &BTreeMap<String, MetricDef>,
    variants: &[VariantSpec],
    declared_any: bool,
    layer: Option<&LayerSpec>,
) -> Result<Option<BanditSpec>> {
    match a.mode.as_str() {
        "fixed" => {
            if a.metric.is_some() || a.update_every.is_some() || a.min_share.is_some() || a.burn_in_users.is_some() {
                return Err(Error::definition(
                    "allocation mode \"fixed\" takes no other settings (metric, update_every, min_share and burn_in_users are for \"bandit\")",
                ));
            }
            return Ok(None);
        }
        "bandit" => {}
        other => {
            return Err(Error::definition(format!(
                "allocation mode \"{}\" is not one of fixed, bandit",
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
    Ok(Some(BanditSpec { metric, update_every, min_share, burn_in_users: burn_in as i64 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn original_body() -> Value {
        json!({"name": "Lead Qualification Prompt Test", "description": "Testing new prompt with examples",
         "experiment_type": "prompt", "primary_metric": "resolution_rate",
         "variants": [
           {"name": "Control", "is_control": true, "traffic_allocation": 50.0, "config": {"system_prompt": "Current prompt..."}},
           {"name": "Treatment", "is_control": false, "traffic_allocation": 50.0, "config": {"system_prompt": "New prompt with examples..."}}],
         "min_sample_size": 100})
    }

    #[test]
    fn bandit_intervals() {
        assert_eq!(interval_seconds("1 hour"), Some(3600.0));
        assert_eq!(interval_seconds("2 days 30 minutes"), Some(2.0 * 86400.0 + 1800.0));
        assert_eq!(interval_seconds("90 Seconds"), Some(90.0));
        for bad in ["", "hourly", "1", "-1 hour", "0 minutes", "1 fortnight", "1e3 hours", "600 weeks"] {
            assert_eq!(interval_seconds(bad), None, "{bad}");
        }
        let mut body = original_body();
        body["allocation"] = json!({"mode": "bandit"});
        let b = parse_definition(&body).unwrap().bandit.unwrap();
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
        let e = undeclared_metric("Escalation threshold", "escalaterd", ["escalated", "token_usage"].into_iter());
        assert_eq!(
            e.message,
            "metric \"escalaterd\" is not declared by experiment \"Escalation threshold\" (did you mean \"escalated\"?)"
        );
        assert!(e.hint.unwrap().starts_with("its metrics are \"escalated\", \"token_usage\";"));
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
    fn recorded_values_are_bounded() {
        assert!(check_value("metric_value", 1e15).is_ok() && check_value("metric_value", -1e15).is_ok());
        assert_eq!(
            check_value("metric_value", 1e154).unwrap_err().message,
            "metric_value is 1e154, must be a finite number between -1e15 and 1e15"
        );
        assert!(check_value("value", f64::NAN).is_err());
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

    #[test]
    fn capped_metrics() {
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {}, "response_time": {"cap": {"percentile": 0.99}},
                                 "token_usage": {"aggregation": "sum", "cap": {"value": 5000}}});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.metrics["response_time"].cap, Some(Cap { value: None, percentile: Some(0.99) }));
        assert_eq!(spec.metrics_json()["token_usage"]["cap"], json!({"value": 5000.0}));
        assert_eq!(spec.metrics_json()["resolution_rate"].get("cap"), None);
        for (cap, kind, expected) in [
            (json!({}), json!({}), "must have exactly one of \"value\""),
            (json!({"value": 1, "percentile": 0.9}), json!({}), "must have exactly one of"),
            (
                json!({"percentile": 99}),
                json!({}),
                "cap percentile of metric \"m\" is 99, must be a fraction between 0 and 1",
            ),
            (json!({"percentile": 0}), json!({}), "cap percentile of metric \"m\" is 0,"),
            (json!({"value": 1e16}), json!({}), "cap value of metric \"m\" is 1e16, must be a finite number"),
            (
                json!({"value": -1}),
                json!({"aggregation": "sum"}),
                "cap value of metric \"m\" is -1, must be at least 0: a sum metric",
            ),
            (
                json!({"value": 1}),
                json!({"type": "binary"}),
                "metric \"m\" is binary: its per-user values are 0 or 1, so it takes no cap",
            ),
            (json!({"max": 1}), json!({}), "unknown field `max`"),
        ] {
            let mut def = kind.clone();
            def["cap"] = cap;
            let mut body = original_body();
            body["metrics"] = json!({"resolution_rate": {}, "m": def});
            let e = parse_definition(&body).unwrap_err();
            assert!(e.message.contains(expected), "expected {expected:?}, got {:?}", e.message);
        }
        // A mean metric may be capped below 0; a ratio is capped through its parts.
        body["metrics"] = json!({"resolution_rate": {}, "delta": {"cap": {"value": -3}}});
        assert!(parse_definition(&body).is_ok());
        body["metrics"] = json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "c": {"aggregation": "count"},
                                 "r": {"type": "ratio", "numerator": "t", "denominator": "c", "cap": {"value": 3}}});
        assert!(parse_definition(&body)
            .unwrap_err()
            .message
            .contains("metric \"r\" is a ratio: cap its numerator or denominator"));
    }

    #[test]
    fn ratio_metrics() {
        let ratio = |n: &str, d: &str| json!({"type": "ratio", "numerator": n, "denominator": d});
        let mut body = original_body();
        body["metrics"] = json!({
            "resolution_rate": {}, "token_usage": {"aggregation": "sum"}, "conversations": {"aggregation": "count"},
            "resolved": {"type": "binary"},
            "tokens_per_conversation": {"type": "ratio", "numerator": "token_usage", "denominator": "conversations", "direction": "lower"},
            "resolved_share": ratio("resolved", "conversations"),
        });
        let spec = parse_definition(&body).unwrap();
        let t = &spec.metrics["tokens_per_conversation"];
        assert_eq!((t.kind, t.direction), (MetricType::Ratio, Direction::Lower));
        assert_eq!(t.ratio_of(), Some(("token_usage", "conversations")));
        assert_eq!(spec.metrics["resolved_share"].ratio_of(), Some(("resolved", "conversations")));
        assert_eq!(spec.metrics["token_usage"].ratio_of(), None);
        assert_eq!(
            spec.metrics_json()["tokens_per_conversation"],
            json!({"type": "ratio", "aggregation": "mean", "direction": "lower", "numerator": "token_usage", "denominator": "conversations"})
        );
        // Parts are stored in NFC, like every name.
        body["metrics"]["caf\u{e9}s"] = json!({"aggregation": "count"});
        body["metrics"]["per_cafe"] = ratio("token_usage", "cafe\u{301}s");
        assert_eq!(
            parse_definition(&body).unwrap().metrics["per_cafe"].ratio_of(),
            Some(("token_usage", "caf\u{e9}s"))
        );

        let fails = |metrics: Value, expected: &str| {
            let mut body = original_body();
            body["metrics"] = metrics;
            let e = parse_definition(&body).unwrap_err();
            assert!(e.message.contains(expected), "expected {expected:?}, got {:?}", e.message);
            e
        };
        let e = fails(
            json!({"resolution_rate": {}, "tokens": {"aggregation": "sum"}, "r": ratio("token", "tokens")}),
            "the numerator of ratio metric \"r\" is \"token\", which is not declared (did you mean \"tokens\"?)",
        );
        assert!(e.hint.unwrap().contains("declare the numerator and denominator"));
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "r": {"type": "ratio", "numerator": "t"}}),
            "ratio metric \"r\" has no denominator",
        );
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "m": {}, "r": ratio("t", "m")}),
            "the denominator of ratio metric \"r\" is \"m\", which is aggregated by mean: it must be a sum, count or binary metric",
        );
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "c": {"aggregation": "count"}, "r": ratio("t", "c"), "rr": ratio("r", "c")}),
            "\"r\", which is a ratio itself",
        );
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "r": ratio("t", "t")}),
            "divides \"t\" by itself",
        );
        fails(json!({"resolution_rate": {}, "r": ratio("r", "resolution_rate")}), "\"r\", which is a ratio itself");
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum", "numerator": "x"}}),
            "metric \"t\" has a numerator or denominator but is not a ratio",
        );
        fails(
            json!({"resolution_rate": {}, "t": {"aggregation": "sum"}, "c": {"aggregation": "count"},
                   "r": {"type": "ratio", "numerator": "t", "denominator": "c", "aggregation": "sum"}}),
            "metric \"r\" is a ratio: its per-user values come from its numerator and denominator, so it has no aggregation",
        );
        // A bandit's analysis is stratified by period; ratios are not.
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {"type": "binary"}, "t": {"aggregation": "sum"}, "c": {"aggregation": "count"}, "r": ratio("t", "c")});
        body["allocation"] = json!({"mode": "bandit"});
        let e = parse_definition(&body).unwrap_err();
        assert!(
            e.message.contains("metric \"r\" is a ratio: a bandit experiment's analysis is stratified"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rejects_bad_definitions() {
        let cases: Vec<(Box<dyn Fn(&mut Value)>, &str)> = vec![
            (Box::new(|b| b["name"] = json!("  ")), "experiment name must not be empty"),
            (Box::new(|b| b["experiment_type"] = json!("banner")), "experiment_type \"banner\" is not one of"),
            (Box::new(|b| b["alpah"] = json!(0.1)), "unknown field `alpah`"),
            (
                Box::new(|b| b["variants"][1]["traffic_allocation"] = json!("50")),
                "traffic_allocation of variant \"Treatment\" must be a number, got a string",
            ),
            (
                Box::new(|b| b["variants"][0]["weight"] = json!(50)),
                "unknown field `weight` in variant \"Control\", expected one of `name`, `is_control`",
            ),
            (
                Box::new(|b| {
                    b["variants"][1].as_object_mut().unwrap().remove("name");
                }),
                "variant 2 has no name",
            ),
            (
                Box::new(|b| b["layer"] = json!("l2")),
                "layer must be an object such as {\"name\": \"checkout\", \"percentage\": 20}",
            ),
            (
                Box::new(|b| b["layer"] = json!({"name": "l2", "percentage": "20"})),
                "percentage of layer must be a number, got a string",
            ),
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("variants");
                }),
                "missing field `variants`",
            ),
            (
                Box::new(|b| b["variants"][1]["traffic_allocation"] = json!(70.0)),
                "traffic allocations sum to 120, must be at most 100",
            ),
            (
                Box::new(|b| b["variants"][1]["traffic_allocation"] = json!(-5)),
                "must be a percentage between 0 and 100",
            ),
            (Box::new(|b| b["variants"][1]["traffic_allocation"] = json!(33.333)), "at most two decimals"),
            (
                Box::new(|b| b["variants"][1]["is_control"] = json!(true)),
                "exactly one variant must have \"is_control\": true, found 2",
            ),
            (Box::new(|b| b["variants"][0]["is_control"] = json!(false)), "found 0"),
            (Box::new(|b| b["variants"][1]["name"] = json!("Control")), "variant name \"Control\" is used twice"),
            (
                Box::new(|b| b["variants"][1]["config"] = json!([1])),
                "config of variant \"Treatment\" must be a JSON object",
            ),
            (Box::new(|b| b["variants"] = json!([b["variants"][0].clone()])), "at least 2 variants"),
            (Box::new(|b| b["min_sample_size"] = json!(1)), "min_sample_size is 1,"),
            (Box::new(|b| b["min_sample_size"] = json!(2.5)), "min_sample_size is 2.5,"),
            (Box::new(|b| b["min_sample_size"] = json!(1e20)), "min_sample_size is 1e20,"),
            (Box::new(|b| b["alpha"] = json!(1.5)), "alpha is 1.5"),
            (Box::new(|b| b["metrics"] = json!({"x": {"aggregation": "median"}})), "unknown value `median`"),
            (Box::new(|b| b["metrics"] = json!({"x": {"direction": "up"}})), "unknown value `up`"),
            (Box::new(|b| b["target_segments"] = json!("fha")), "target_segments must be a JSON object"),
            (Box::new(|b| b["name"] = json!("x".repeat(201))), "at most 200"),
            (Box::new(|b| b["salt"] = json!("")), "salt must not be empty"),
            (Box::new(|b| b["metrics"] = json!({"x": {"type": "binary", "aggregation": "sum"}})), "is binary"),
            (Box::new(|b| b["metrics"] = json!({"x": {"type": "ratio"}})), "ratio metric \"x\" has no numerator"),
            (
                Box::new(|b| b["metrics"] = json!({"x": {"type": "quantile"}})),
                "quantile metric \"x\" has no \"quantile\"",
            ),
            (Box::new(|b| b["metrics"] = json!({"x": {"type": "median"}})), "unknown value `median`"),
            (Box::new(|b| b["metrics"] = json!({"x": {"mde": -1}})), "mde of metric \"x\" is -1"),
            (Box::new(|b| b["sequential_tuning"] = json!(100)), "sequential is not true"),
            (
                Box::new(|b| {
                    b["sequential"] = json!(true);
                    b["sequential_tuning"] = json!(0);
                }),
                "sequential_tuning is 0",
            ),
            (Box::new(|b| b["correction"] = json!("bonferroni")), "unknown value `bonferroni`"),
            (Box::new(|b| b["power"] = json!(1)), "power is 1"),
            (
                Box::new(|b| {
                    b["variants"][0]["traffic_allocation"] = json!(0);
                    b["variants"][1]["traffic_allocation"] = json!(0);
                }),
                "sum to 0",
            ),
        ];
        for (mutate, expected) in cases {
            let mut body = original_body();
            mutate(&mut body);
            let err = parse_definition(&body).unwrap_err();
            assert!(err.message.contains(expected), "expected {expected:?}, got {:?}", err.message);
        }
        assert!(parse_definition(&json!([1])).unwrap_err().message.contains("must be a JSON object"));
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

    #[test]
    fn too_many_variants() {
        let mut body = original_body();
        let mut variants = vec![json!({"name": "c", "is_control": true, "traffic_allocation": 0.01})];
        for i in 0..3000 {
            variants.push(json!({"name": format!("v{i}"), "traffic_allocation": 0}));
        }
        body["variants"] = Value::Array(variants);
        assert!(parse_definition(&body).unwrap_err().message.contains("at most 100 variants, got 3001"));
    }

    #[test]
    fn layers() {
        let mut body = original_body();
        body["layer"] = json!({"name": "prompts", "percentage": 25});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.layer, Some(LayerSpec { name: "prompts".into(), role: LayerRole::Share(2500) }));
        body["layer"] = json!({"name": "prompts", "holdout": true});
        assert_eq!(parse_definition(&body).unwrap().layer.unwrap().role, LayerRole::Holdout);

        let err = |layer: Value| {
            let mut body = original_body();
            body["layer"] = layer;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!({"name": "prompts"})).contains("needs a \"percentage\""));
        assert!(err(json!({"name": "prompts", "percentage": 0})).contains("must be above 0"));
        assert!(err(json!({"name": "prompts", "percentage": 100.5})).contains("must be above 0"));
        assert!(err(json!({"name": "prompts", "percentage": 10, "holdout": true})).contains("not both"));
        assert!(err(json!({"name": " ", "percentage": 10})).contains("layer name must not be empty"));
        assert!(err(json!({"name": "prompts", "share": 10})).contains("unknown field `share`"));
        assert!(err(json!("prompts")).contains("invalid experiment definition"));

        let mut body = original_body();
        body["layer"] = json!({"name": "prompts", "holdout": true});
        body["salt"] = json!("s");
        assert!(parse_definition(&body).unwrap_err().message.contains("cannot have a salt of its own"));
        body.as_object_mut().unwrap().remove("salt");
        body["variants"].as_array_mut().unwrap().push(json!({"name": "third", "traffic_allocation": 0}));
        assert!(parse_definition(&body).unwrap_err().message.contains("exactly 2 variants"));
    }

    #[test]
    fn breakdowns() {
        let mut body = original_body();
        assert!(parse_definition(&body).unwrap().breakdowns.is_empty());
        body["breakdowns"] = json!(["loan_type", "channel"]);
        assert_eq!(parse_definition(&body).unwrap().breakdowns, vec!["loan_type", "channel"]);
        let err = |b: Value| {
            let mut body = original_body();
            body["breakdowns"] = b;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!(["a", "b", "c", "d", "e", "f"])).contains("at most 5 attributes, got 6"));
        assert!(err(json!(["a", "a"])).contains("\"a\" is listed twice"));
        assert!(err(json!([" "])).contains("breakdown attribute must not be empty"));
        assert!(err(json!(["x".repeat(65)])).contains("longer than 64 characters"));
        assert!(err(json!("loan_type")).contains("invalid experiment definition"));
        assert!(err(json!([1])).contains("invalid experiment definition"));
    }

    #[test]
    fn breakdown_values_keep_the_listed_scalars() {
        let listed = vec!["loan_type".to_string(), "score".into(), "vip".into(), "region".into(), "notes".into()];
        let attrs = json!({"loan_type": "fha", "score": 720, "vip": true, "region": null, "notes": "x".repeat(200),
                           "other": "not listed"});
        let got = breakdown_values(&listed, &attrs).unwrap().unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"loan_type": "fha", "score": "720", "vip": "true", "notes": "x".repeat(200)})
        );
        assert_eq!(breakdown_values(&listed, &json!({"loan_type": {"a": 1}, "score": [1]})).unwrap(), None);
        assert_eq!(breakdown_values(&listed, &json!(null)).unwrap(), None);
        assert_eq!(breakdown_values(&[], &attrs).unwrap(), None);
        // Look-alike spellings are one segment.
        let got = breakdown_values(&listed, &json!({"loan_type": "cafe\u{0301}"})).unwrap().unwrap();
        assert_eq!(got["loan_type"], json!("caf\u{e9}"));
    }

    #[test]
    fn breakdown_values_follow_the_name_rules() {
        let listed = vec!["loan_type".to_string(), "score".into()];
        let err = |attrs: Value| breakdown_values(&listed, &attrs).unwrap_err().message;
        assert_eq!(
            err(json!({"loan_type": "fha\nRecommendation: ship"})),
            "the value of breakdown attribute \"loan_type\" must not contain control characters (found U+000A)"
        );
        assert!(err(json!({"loan_type": "B\u{202E}A"})).contains("bidirectional formatting characters (found U+202E)"));
        assert_eq!(
            err(json!({"loan_type": "x".repeat(201)})),
            "the value of breakdown attribute \"loan_type\" is 201 characters long, at most 200 are allowed"
        );
        assert_eq!(err(json!({"loan_type": "  "})), "the value of breakdown attribute \"loan_type\" must not be empty");
        // A number as jsonb prints it: 1e400 is 401 digits.
        let huge: Value = serde_json::from_str(&format!("{{\"score\": 1{}}}", "0".repeat(400))).unwrap();
        assert!(err(huge).contains("\"score\" is 401 characters long"));
    }

    #[test]
    fn source_metrics() {
        let with = |metrics: Value| {
            let mut body = original_body();
            body["metrics"] = metrics;
            body["primary_metric"] = json!("funded");
            parse_definition(&body)
        };
        let loans = json!({"relation": "public.loans", "user_column": "borrower_id", "time_column": "funded_at"});
        let mut amounts = loans.clone();
        amounts["value_column"] = json!("amount");
        let spec = with(json!({
            "funded": {"type": "binary", "source": loans, "window": "14 days", "covariate": {"lookback": "30 days"}},
            "amount": {"aggregation": "sum", "source": amounts},
            "calls": {"aggregation": "count", "source": "crm_calls"},
            "per_call": {"type": "ratio", "numerator": "amount", "denominator": "calls"}
        }))
        .unwrap();
        let f = &spec.metrics["funded"];
        assert_eq!(f.window_seconds(), Some(14.0 * 86400.0));
        let Some(SourceRef::Inline(s)) = f.source_ref() else { panic!() };
        assert_eq!(s.user_column, "borrower_id");
        assert_eq!(f.covariate_ref().map(|c| c.1), Some(30.0 * 86400.0));
        assert_eq!(spec.metrics["calls"].source_ref(), Some(SourceRef::Named("crm_calls".into())));
        for (metrics, message) in [
            (json!({"funded": {"window": "14 days"}}), "no \"source\""),
            (json!({"funded": {"aggregation": "sum", "source": loans}}), "needs a \"value_column\""),
            (json!({"funded": {"type": "binary", "source": amounts}}), "would not be read"),
            (json!({"funded": {"type": "binary", "source": loans, "window": "a fortnight"}}), "window of metric"),
            (json!({"funded": {"type": "binary", "source": loans, "covariate": {"lookback": "0 days"}}}), "lookback"),
            (json!({"funded": {"type": "binary", "source": loans, "covariate": {"days": 3}}}), "unknown field"),
            (
                json!({"funded": {"type": "binary", "source": {"relation": "x"}}}),
                "source of metric \"funded\": metric source has no",
            ),
            (json!({"funded": {"type": "binary", "source": "bad\u{7}"}}), "control characters"),
            (
                json!({"funded": {"type": "binary"}, "n": {"type": "quantile", "of": "funded", "quantile": 0.5, "source": "x"}}),
                "quantile",
            ),
        ] {
            let e = with(metrics.clone()).unwrap_err();
            assert!(e.message.contains(message), "{metrics}: {}", e.message);
        }
    }

    #[test]
    fn quantile_metrics() {
        let with = |metrics: Value| {
            let mut body = original_body();
            body["metrics"] = metrics;
            body["primary_metric"] = json!("rt");
            parse_definition(&body)
        };
        let spec = with(json!({"rt": {"direction": "lower"},
                               "p90": {"type": "quantile", "of": "rt", "quantile": 0.9, "level": "event"},
                               "p50": {"type": "quantile", "of": "rt", "quantile": 0.5}}))
        .unwrap();
        assert_eq!(spec.metrics["p90"].quantile_of(), Some(("rt", 0.9, QuantileLevel::Event)));
        assert_eq!(spec.metrics["p50"].quantile_of(), Some(("rt", 0.5, QuantileLevel::User)));
        assert!(!spec.metrics["p90"].silent_users_are_zero());
        let err = |m: Value| with(m).unwrap_err().message;
        assert!(
            err(json!({"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 1}})).contains("between 0 and 1")
        );
        assert!(err(json!({"rt": {}, "q": {"type": "quantile", "quantile": 0.9}})).contains("has no \"of\""));
        assert!(err(json!({"rt": {}, "q": {"type": "quantile", "of": "tr", "quantile": 0.9}}))
            .contains("\"tr\", which is not declared"));
        assert!(err(json!({"rt": {}, "b": {"type": "binary"}, "q": {"type": "quantile", "of": "b", "quantile": 0.9}}))
            .contains("which is binary"));
        assert!(err(json!({"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9, "aggregation": "sum"}}))
            .contains("takes no aggregation"));
        assert!(err(json!({"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9, "cap": {"value": 5}}}))
            .contains("takes none"));
        assert!(err(json!({"rt": {"quantile": 0.9}})).contains("is not a quantile"));
        assert!(err(json!({"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9, "level": "session"}}))
            .contains("unknown value `session`"));
        let mut body = original_body();
        body["primary_metric"] = json!("rt");
        body["metrics"] = json!({"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9}});
        body["allocation"] = json!({"mode": "bandit"});
        assert!(parse_definition(&body).unwrap_err().message.contains("\"q\" is a quantile: a bandit"));
    }

    /// A value read from a source keeps the rule of a recorded value, with a message naming
    /// the metric, what was read and where, and the value as PostgreSQL prints it.
    #[test]
    fn source_values_keep_the_recorded_rule() {
        for ok in [0.0, 1e15, -1e15, 1e-300] {
            assert_eq!(source_value_problem("m", "value", "source \"s\"", ok), None);
        }
        for (x, shown) in [
            (1e16, "1e16"),
            (-1.5e15, "-1.5e15"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e200, "1e200"),
        ] {
            assert_eq!(
                source_value_problem("amount", "covariate", "relation \"rp.before\"", x).unwrap(),
                format!(
                    "metric \"amount\": a user's covariate read from relation \"rp.before\" is {shown}, \
                     outside the range of a metric value (-1e15 to 1e15)"
                )
            );
            assert!(check_value("metric_value", x).is_err());
        }
    }
}
