//! Metrics read from the application's relations: a metric's `source` (a registered metric
//! source or one inline, see `crate::source`) and its conversion `window`.

use serde_json::Value;
use std::collections::BTreeMap;

use super::super::{check_name, interval_seconds};
use super::{covariates, MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

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

    pub(super) fn to_json(&self) -> Value {
        match self {
            SourceRef::Named(n) => Value::String(n.clone()),
            SourceRef::Inline(s) => s.to_json(),
        }
    }
}

impl MetricDef {
    /// A source metric's source.
    pub fn source_ref(&self) -> Option<SourceRef> {
        SourceRef::from_json(self.source.as_ref()?)
    }

    /// A source metric's conversion window in seconds.
    pub fn window_seconds(&self) -> Option<f64> {
        interval_seconds(self.window.as_deref()?)
    }
}

/// A source given for metric `name` (`what`: "source" or "covariate source").
pub(super) fn source_of(name: &str, what: &str, v: &Value) -> Result<SourceRef> {
    let r = match v {
        Value::String(s) => SourceRef::Named(check_name(&format!("{what} of metric \"{}\"", printable(name)), s)?),
        v => SourceRef::Inline(
            crate::source::parse_spec(v)
                .map_err(|e| Error::definition(format!("{what} of metric \"{}\": {}", printable(name), e.message)))?,
        ),
    };
    Ok(r)
}

pub(super) fn check_interval(name: &str, key: &str, text: &str) -> Result<()> {
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
pub(super) fn check(metrics: &mut BTreeMap<String, MetricDef>) -> Result<()> {
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
            covariates::check(name, c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

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
}
