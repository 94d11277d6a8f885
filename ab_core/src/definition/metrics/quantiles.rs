//! Quantile metrics (`"type": "quantile"`): a quantile (`quantile`, such as 0.9) of another
//! declared metric (`of`), per user or per event (`level`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::super::{check_name, short_float};
use super::{Aggregation, MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

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

impl MetricDef {
    /// A quantile metric's (metric, level as a fraction, per user or per event).
    pub fn quantile_of(&self) -> Option<(&str, f64, QuantileLevel)> {
        match (self.kind, &self.of, self.quantile) {
            (MetricType::Quantile, Some(m), Some(q)) => Some((m, q, self.level.unwrap_or_default())),
            _ => None,
        }
    }
}

/// Quantile metrics: a declared continuous metric (`of`), a level strictly between 0 and 1,
/// and per user (the default) or per event; only quantile metrics have them.
pub(super) fn check(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::{json, Value};

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
}
