//! A metric's `cap`: an upper bound on each user's value (winsorization).

use serde::{Deserialize, Serialize};

use super::super::short_float;
use super::{MetricDef, MetricType};
use crate::definition::MAX_ABS_VALUE;
use crate::error::{Error, Result};
use crate::names::printable;

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

/// The keys of a metric's `cap`.
pub const CAP_KEYS: &[&str] = &["value", "percentile"];

pub(super) fn check(name: &str, def: &MetricDef) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

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
}
