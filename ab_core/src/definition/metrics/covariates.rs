//! A source metric's CUPED `covariate`: the same measure over a `lookback` before
//! enrollment, from the metric's source or another one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::interval_seconds;
use super::sources::{check_interval, source_of};
use super::{MetricDef, SourceRef};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovariateDef {
    pub lookback: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
}

/// The keys of a metric's `covariate`.
pub const COVARIATE_KEYS: &[&str] = &["lookback", "source"];

impl MetricDef {
    /// A source metric's covariate: its source and its lookback in seconds.
    pub fn covariate_ref(&self) -> Option<(SourceRef, f64)> {
        let c = self.covariate.as_ref()?;
        let source = match &c.source {
            Some(v) => SourceRef::from_json(v)?,
            None => self.source_ref()?,
        };
        Some((source, interval_seconds(&c.lookback)?))
    }
}

/// The covariate of source metric `name`: its lookback, and its own source (stored in
/// canonical form) if it has one.
pub(super) fn check(name: &str, c: &mut CovariateDef) -> Result<()> {
    check_interval(name, "covariate lookback", &c.lookback)?;
    if let Some(v) = &c.source {
        c.source = Some(source_of(name, "covariate source", v)?.to_json());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

    #[test]
    fn covariates() {
        let mut body = original_body();
        body["primary_metric"] = json!("funded");
        let loans = json!({"relation": "public.loans", "user_column": "borrower_id", "time_column": "funded_at"});
        body["metrics"] = json!({"funded": {"type": "binary", "source": loans,
                                            "covariate": {"lookback": "2 weeks", "source": "earlier_loans"}}});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(
            spec.metrics["funded"].covariate_ref(),
            Some((SourceRef::Named("earlier_loans".into()), 14.0 * 86400.0))
        );
        body["metrics"]["funded"]["covariate"]["source"] = json!({"relation": "x"});
        assert!(parse_definition(&body)
            .unwrap_err()
            .message
            .starts_with("covariate source of metric \"funded\": metric source has no"));
        body["metrics"]["funded"]["covariate"] = json!({"lookback": "forever"});
        assert!(parse_definition(&body)
            .unwrap_err()
            .message
            .starts_with("covariate lookback of metric \"funded\" is \"forever\""));
    }
}
