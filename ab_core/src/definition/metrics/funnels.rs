//! Funnel metrics (`"funnel": {"steps": [...], "window": ..., "from": ...}`) and retention
//! metrics (`"retention": {"metric": ..., "days": [N, M]}`): binary per user, computed from
//! the times of other recorded metrics' results, never recorded themselves.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::super::{check_name, interval_seconds};
use super::{Aggregation, MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

/// The most steps a funnel may have.
pub const MAX_FUNNEL_STEPS: usize = 20;
/// The latest day a retention metric may count to (about ten years).
pub const MAX_RETENTION_DAY: f64 = 3650.0;

/// Where a funnel's window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FunnelFrom {
    /// Every step within the window after the user's enrollment.
    #[default]
    Enrollment,
    /// Each step within the window after the previous step (the first: after enrollment).
    Previous,
}

impl FunnelFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            FunnelFrom::Enrollment => "enrollment",
            FunnelFrom::Previous => "previous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDef {
    /// Declared recorded metrics, in order.
    pub steps: Vec<String>,
    /// A PostgreSQL interval; none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default)]
    pub from: FunnelFrom,
}

/// The keys of a metric's `funnel`, as `FunnelDef` declares them.
pub const FUNNEL_KEYS: &[&str] = &["steps", "window", "from"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDef {
    /// A declared recorded metric: a result under it makes the user active.
    pub metric: String,
    /// [N, M): active on or after day N and before day M after enrollment. Numbers, so that
    /// 7.5 gets a message about the field; stored as the whole numbers they are checked to be.
    #[serde(serialize_with = "whole_days")]
    pub days: Vec<f64>,
}

fn whole_days<S: serde::Serializer>(days: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(days.iter().map(|d| *d as i64))
}

/// The keys of a metric's `retention`, as `RetentionDef` declares them.
pub const RETENTION_KEYS: &[&str] = &["metric", "days"];

impl MetricDef {
    /// A funnel metric's definition.
    pub fn funnel_of(&self) -> Option<&FunnelDef> {
        self.funnel.as_ref()
    }

    /// A retention metric's (metric, first day, end day).
    pub fn retention_of(&self) -> Option<(&str, i64, i64)> {
        let r = self.retention.as_ref()?;
        Some((&r.metric, r.days[0] as i64, r.days[1] as i64))
    }

    /// Funnels and retention: computed from other metrics' result times.
    pub fn is_composed(&self) -> bool {
        self.funnel.is_some() || self.retention.is_some()
    }
}

impl FunnelDef {
    pub fn window_seconds(&self) -> Option<f64> {
        interval_seconds(self.window.as_deref()?)
    }
}

/// What a funnel or retention metric is called in messages.
fn kind_of(def: &MetricDef) -> &'static str {
    if def.funnel.is_some() {
        "a funnel"
    } else {
        "a retention metric"
    }
}

/// A step or retention metric: declared, recorded or read from a source (not a ratio,
/// quantile, funnel or retention metric). Returns the name in NFC.
fn recorded_part(metrics: &BTreeMap<String, MetricDef>, name: &str, role: &str, part: &str) -> Result<String> {
    let part = check_name(&format!("{role} of metric \"{}\"", printable(name)), part)?;
    let Some(target) = metrics.get(&part) else {
        return Err(Error::definition(format!(
            "{role} \"{}\" of metric \"{}\" is not declared{}",
            printable(&part),
            printable(name),
            crate::names::did_you_mean(&part, metrics.keys().map(String::as_str))
        ))
        .with_hint("declare each step (or the retention's metric) in \"metrics\" too, as a recorded metric"));
    };
    let what = if target.is_composed() {
        Some(kind_of(target).to_string())
    } else if matches!(target.kind, MetricType::Ratio | MetricType::Quantile) {
        Some(format!("a {}", target.kind.as_str()))
    } else {
        None
    };
    if let Some(what) = what {
        return Err(Error::definition(format!(
            "{role} \"{}\" of metric \"{}\" is {what}: it must be a recorded metric or one read from a source (the times of its results or rows are read)",
            printable(&part),
            printable(name)
        )));
    }
    Ok(part)
}

/// Funnel and retention metrics: their parts checked and stored in NFC, nothing else that
/// would give a per-user value of another kind, and no other metric built from them. They
/// become binary metrics (max of 0/1).
pub(super) fn check(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
    let names: Vec<String> = metrics.keys().cloned().collect();
    for name in &names {
        let def = &metrics[name];
        if !def.is_composed() {
            continue;
        }
        if def.funnel.is_some() && def.retention.is_some() {
            return Err(Error::definition(format!(
                "metric \"{}\" has both \"funnel\" and \"retention\": give one",
                printable(name)
            )));
        }
        let kind = kind_of(def);
        let others = [
            ("type", !matches!(def.kind, MetricType::Continuous | MetricType::Binary)),
            ("aggregation", !matches!(def.aggregation, Aggregation::Mean | Aggregation::Max)),
            ("cap", def.cap.is_some()),
            ("numerator", def.numerator.is_some()),
            ("denominator", def.denominator.is_some()),
            ("of", def.of.is_some()),
            ("quantile", def.quantile.is_some()),
            ("level", def.level.is_some()),
            ("source", def.source.is_some()),
            ("window", def.window.is_some()),
            ("covariate", def.covariate.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, present)| *present) {
            return Err(Error::definition(format!(
                "metric \"{}\" is {kind}: each user counts 1 or 0, so it takes no \"{key}\"{}",
                printable(name),
                if *key == "window" { " (a funnel's window goes inside \"funnel\")" } else { "" }
            )));
        }
        let mut def = def.clone();
        if let Some(f) = &mut def.funnel {
            if f.steps.len() < 2 || f.steps.len() > MAX_FUNNEL_STEPS {
                return Err(Error::definition(format!(
                    "funnel metric \"{}\" has {} step(s), must have 2 to {MAX_FUNNEL_STEPS}",
                    printable(name),
                    f.steps.len()
                )));
            }
            let mut steps = Vec::new();
            for step in &f.steps {
                let step = recorded_part(metrics, name, "step", step)?;
                if steps.contains(&step) {
                    return Err(Error::definition(format!(
                        "funnel metric \"{}\" has step \"{}\" twice",
                        printable(name),
                        printable(&step)
                    )));
                }
                steps.push(step);
            }
            f.steps = steps;
            if let Some(w) = &f.window {
                if interval_seconds(w).is_none() {
                    return Err(Error::definition(format!(
                        "window of funnel metric \"{}\" is \"{}\", must be a duration such as \"30 days\" or \"2 hours\" (seconds to weeks, at most 10 years)",
                        printable(name),
                        printable(w)
                    )));
                }
            }
        }
        if let Some(r) = &mut def.retention {
            r.metric = recorded_part(metrics, name, "metric", &r.metric)?;
            let whole = |x: f64| x.fract() == 0.0 && (0.0..=MAX_RETENTION_DAY).contains(&x);
            if r.days.len() != 2 || !whole(r.days[0]) || !whole(r.days[1]) || r.days[0] >= r.days[1] {
                let days: Vec<String> = r.days.iter().map(|d| super::super::short_float(*d)).collect();
                return Err(Error::definition(format!(
                    "days of retention metric \"{}\" is [{}], must be [N, M]: whole days with 0 <= N < M <= {MAX_RETENTION_DAY}",
                    printable(name),
                    days.join(", ")
                )));
            }
        }
        def.kind = MetricType::Binary;
        def.aggregation = Aggregation::Max;
        metrics.insert(name.clone(), def);
    }
    // No other metric is built from them: they have no per-user rows of their own.
    for (name, def) in metrics.iter() {
        let parts = [("numerator", &def.numerator), ("denominator", &def.denominator), ("of", &def.of)];
        for (role, part) in parts {
            let Some(part) = part else { continue };
            if let Some(target) = metrics.get(part).filter(|t| t.is_composed()) {
                return Err(Error::definition(format!(
                    "the {role} of metric \"{}\" is \"{}\", which is {}: ratios and quantiles are built from recorded or source metrics",
                    printable(name),
                    printable(part),
                    kind_of(target)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::{json, Value};

    fn with(metrics: Value) -> Result<crate::definition::ExperimentSpec> {
        let mut body = original_body();
        body["metrics"] = metrics;
        body["primary_metric"] = json!("funded");
        parse_definition(&body)
    }

    fn crm(funded: Value) -> Value {
        json!({"started": {"type": "binary"}, "uploaded": {"type": "binary"}, "approved": {"type": "binary"},
               "session": {"aggregation": "count"}, "funded": funded})
    }

    #[test]
    fn funnel_and_retention_metrics() {
        let spec =
            with(crm(json!({"funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days"}}))).unwrap();
        let f = &spec.metrics["funded"];
        assert_eq!((f.kind, f.aggregation), (MetricType::Binary, Aggregation::Max));
        let funnel = f.funnel_of().unwrap();
        assert_eq!(funnel.steps, ["started", "uploaded", "approved"]);
        assert_eq!((funnel.from, funnel.window_seconds()), (FunnelFrom::Enrollment, Some(30.0 * 86400.0)));
        assert_eq!(
            spec.metrics_json()["funded"],
            json!({"type": "binary", "aggregation": "max", "direction": "higher",
                   "funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days", "from": "enrollment"}})
        );
        let spec = with(crm(
            json!({"funnel": {"steps": ["started", "cafe\u{301}"], "from": "previous"}, "direction": "higher"}),
        ))
        .map(|_| ())
        .unwrap_err();
        assert!(spec.message.contains("step \"caf\u{e9}\" of metric \"funded\" is not declared"), "{}", spec.message);
        let spec = with(crm(json!({"retention": {"metric": "session", "days": [7, 30]}}))).unwrap();
        assert_eq!(spec.metrics["funded"].retention_of(), Some(("session", 7, 30)));
        assert_eq!(spec.metrics_json()["funded"]["retention"], json!({"metric": "session", "days": [7, 30]}));
        assert_eq!(spec.metrics["funded"].kind, MetricType::Binary);
        assert!(spec.metrics["funded"].silent_users_are_zero());
    }

    #[test]
    fn rejects_bad_funnels_and_retention() {
        let cases = [
            (json!({"funnel": {"steps": ["started"]}}), "funnel metric \"funded\" has 1 step(s), must have 2 to 20"),
            (json!({"funnel": {"steps": ["started", "started"]}}), "has step \"started\" twice"),
            (json!({"funnel": {"steps": ["started", "upload"]}}), "step \"upload\" of metric \"funded\" is not declared (did you mean \"uploaded\"?)"),
            (json!({"funnel": {"steps": ["started", "funded"]}}), "step \"funded\" of metric \"funded\" is a funnel: it must be a recorded metric"),
            (json!({"funnel": {"steps": ["started", "uploaded"], "window": "soon"}}), "window of funnel metric \"funded\" is \"soon\""),
            (json!({"funnel": {"steps": ["started", "uploaded"], "from": "start"}}), "unknown value `start`"),
            (json!({"funnel": {"steps": ["started", "uploaded"], "within": "1 day"}}), "unknown field `within`"),
            (json!({"funnel": {"steps": ["started", "uploaded"]}, "window": "1 day"}), "metric \"funded\" is a funnel: each user counts 1 or 0, so it takes no \"window\" (a funnel's window goes inside \"funnel\")"),
            (json!({"funnel": {"steps": ["started", "uploaded"]}, "aggregation": "sum"}), "takes no \"aggregation\""),
            (json!({"funnel": {"steps": ["started", "uploaded"]}, "type": "ratio"}), "takes no \"type\""),
            (json!({"funnel": {"steps": ["a", "b"]}, "retention": {"metric": "session", "days": [0, 1]}}), "has both \"funnel\" and \"retention\""),
            (json!({"retention": {"metric": "session", "days": [30, 7]}}), "days of retention metric \"funded\" is [30, 7], must be [N, M]"),
            (json!({"retention": {"metric": "session", "days": [7.5, 30]}}), "is [7.5, 30]"),
            (json!({"retention": {"metric": "session", "days": [7]}}), "is [7]"),
            (json!({"retention": {"metric": "session", "days": [0, 4000]}}), "M <= 3650"),
            (json!({"retention": {"metric": "nope", "days": [0, 7]}}), "metric \"nope\" of metric \"funded\" is not declared"),
            (json!({"retention": {"days": [0, 7]}}), "missing field `metric`"),
        ];
        for (funded, message) in cases {
            let e = with(crm(funded.clone())).unwrap_err();
            assert!(e.message.contains(message), "{funded}: {}", e.message);
        }
        let mut metrics = crm(json!({"type": "binary"}));
        metrics["f"] = json!({"funnel": {"steps": ["started", "uploaded"]}});
        metrics["r"] = json!({"type": "ratio", "numerator": "f", "denominator": "session"});
        assert!(with(metrics)
            .unwrap_err()
            .message
            .contains("the numerator of metric \"r\" is \"f\", which is a funnel"));
        let mut metrics = crm(json!({"type": "binary"}));
        metrics["src"] = json!({"type": "binary", "source": "crm"});
        metrics["f"] = json!({"funnel": {"steps": ["started", "src"]}});
        assert_eq!(with(metrics).unwrap().metrics["f"].funnel_of().unwrap().steps, ["started", "src"]);
        let mut metrics = crm(json!({"type": "binary"}));
        metrics["q"] = json!({"type": "quantile", "of": "session", "quantile": 0.5});
        metrics["f"] = json!({"retention": {"metric": "q", "days": [0, 7]}});
        assert!(with(metrics).unwrap_err().message.contains("metric \"q\" of metric \"f\" is a quantile"));
        let mut body = original_body();
        body["primary_metric"] = json!("started");
        body["metrics"] = crm(json!({"retention": {"metric": "session", "days": [0, 7]}}));
        body["allocation"] = json!({"mode": "bandit"});
        let e = parse_definition(&body).unwrap_err().message;
        assert!(
            e.contains("metric \"funded\" is a retention metric: a bandit experiment's analysis is stratified"),
            "{e}"
        );
    }
}
