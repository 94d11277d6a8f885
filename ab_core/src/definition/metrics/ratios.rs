//! Ratio metrics (`"type": "ratio"`): a `numerator` and a `denominator`, two other declared
//! metrics.

use std::collections::BTreeMap;

use super::super::check_name;
use super::{Aggregation, MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

impl MetricDef {
    /// A ratio's (numerator, denominator).
    pub fn ratio_of(&self) -> Option<(&str, &str)> {
        match (self.kind, &self.numerator, &self.denominator) {
            (MetricType::Ratio, Some(n), Some(d)) => Some((n, d)),
            _ => None,
        }
    }
}

/// Ratio metrics: a numerator and a denominator, both declared, each a sum, count or binary
/// metric (so that a user who recorded nothing is 0 on both sides, and every assigned user
/// counts); only ratio metrics have them. Their names are stored in NFC.
pub(super) fn check(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::{json, Value};

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
        assert_eq!((t.kind, t.direction), (MetricType::Ratio, crate::definition::Direction::Lower));
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
}
