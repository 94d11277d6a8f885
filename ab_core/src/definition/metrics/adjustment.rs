//! A metric's `covariates`: what `ab_adjusted` adjusts it for (regression adjustment, see
//! `crate::stats::regression`). Each is a declared metric's pre-period value (its recorded
//! covariates, or its source's `covariate` read over a lookback) or a breakdown attribute
//! stored at assignment, used as strata.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::super::check_name;
use super::{MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

/// One covariate of a metric: a declared metric's name, or `{"attribute": name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Adjustment {
    PreValue(String),
    Stratum(StratumDef),
}

/// serde's untagged enums say only that nothing matched: this names what a covariate may be.
impl<'de> Deserialize<'de> for Adjustment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Adjustment::PreValue(s)),
            v @ serde_json::Value::Object(_) => serde_json::from_value::<StratumDef>(v)
                .map(Adjustment::Stratum)
                .map_err(|e| D::Error::custom(format!("in a covariate: {e}"))),
            v => Err(D::Error::custom(format!(
                "a covariate is a declared metric's name or {{\"attribute\": name}}, got {}",
                crate::targeting::json_type(&v)
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StratumDef {
    pub attribute: String,
}

/// The keys of an attribute covariate.
pub const STRATUM_KEYS: &[&str] = &["attribute"];

/// Most covariates a metric lists (a stratum counts once, whatever its levels).
pub const MAX_COVARIATES: usize = 10;

/// Most levels a stratum attribute may take in one experiment's data before `ab_adjusted`
/// refuses it (each level is one more coefficient per arm).
pub const MAX_STRATUM_LEVELS: usize = 50;

/// Checks every metric's `covariates` against the other metrics, the breakdowns and the
/// allocation; names are stored in NFC.
pub fn check(metrics: &mut BTreeMap<String, MetricDef>, breakdowns: &[String], bandit: bool) -> Result<()> {
    let names: Vec<String> = metrics.keys().cloned().collect();
    for (name, def) in metrics.iter_mut() {
        let Some(list) = def.covariates.as_mut() else { continue };
        let who = printable(name).into_owned();
        if bandit {
            return Err(Error::definition(format!(
                "metric \"{who}\" lists covariates but the experiment is a bandit: regression adjustment is not combined with adaptive allocation"
            ))
            .with_hint("analyse a bandit with ab_analyze, or run a fixed-allocation experiment"));
        }
        if matches!(def.kind, MetricType::Ratio | MetricType::Quantile) {
            return Err(Error::definition(format!(
                "metric \"{who}\" is a {}: covariates adjust continuous and binary metrics only",
                if def.kind == MetricType::Ratio { "ratio" } else { "quantile" }
            )));
        }
        if list.is_empty() || list.len() > MAX_COVARIATES {
            return Err(Error::definition(format!(
                "covariates of metric \"{who}\" lists {} entries, must list 1 to {MAX_COVARIATES}",
                list.len()
            )));
        }
        let mut seen: Vec<Adjustment> = Vec::new();
        for c in list.iter_mut() {
            match c {
                Adjustment::PreValue(m) => {
                    let n = check_name("covariate", m)?;
                    if !names.contains(&n) {
                        return Err(Error::definition(format!(
                            "covariate \"{}\" of metric \"{who}\" is not a declared metric: a covariate is a declared metric's pre-period value (recorded with ab_record_covariate, or its source's covariate) or {{\"attribute\": name}}",
                            printable(&n)
                        )));
                    }
                    *m = n;
                }
                Adjustment::Stratum(s) => {
                    let n = check_name("covariate attribute", &s.attribute)?;
                    if !breakdowns.contains(&n) {
                        return Err(Error::definition(format!(
                            "covariate attribute \"{}\" of metric \"{who}\" is not listed in \"breakdowns\": only the attributes stored at assignment can be strata",
                            printable(&n)
                        ))
                        .with_hint("add the attribute to the experiment's \"breakdowns\""));
                    }
                    s.attribute = n;
                }
            }
            if seen.contains(c) {
                return Err(Error::definition(format!("covariates of metric \"{who}\" list the same covariate twice")));
            }
            seen.push(c.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

    fn crm() -> serde_json::Value {
        let mut body = original_body();
        body["primary_metric"] = json!("funded");
        body["breakdowns"] = json!(["loan_type"]);
        body["metrics"] = json!({
            "funded": {"type": "binary", "covariates": ["funded", "loan_amount", {"attribute": "loan_type"}]},
            "loan_amount": {}
        });
        body
    }

    #[test]
    fn covariates_are_parsed_and_stored() {
        let spec = parse_definition(&crm()).unwrap();
        assert_eq!(
            spec.metrics["funded"].covariates,
            Some(vec![
                Adjustment::PreValue("funded".into()),
                Adjustment::PreValue("loan_amount".into()),
                Adjustment::Stratum(StratumDef { attribute: "loan_type".into() })
            ])
        );
        assert_eq!(
            spec.metrics_json()["funded"]["covariates"],
            json!(["funded", "loan_amount", {"attribute": "loan_type"}])
        );
    }

    #[test]
    fn bad_covariates_are_refused() {
        type Case = (Box<dyn Fn(&mut serde_json::Value)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|b| b["metrics"]["funded"]["covariates"] = json!([])), "lists 0 entries, must list 1 to 10"),
            (
                Box::new(|b| b["metrics"]["funded"]["covariates"] = json!(["nope"])),
                "covariate \"nope\" of metric \"funded\" is not a declared metric",
            ),
            (
                Box::new(|b| b["metrics"]["funded"]["covariates"] = json!([{"attribute": "branch"}])),
                "covariate attribute \"branch\" of metric \"funded\" is not listed in \"breakdowns\"",
            ),
            (
                Box::new(|b| b["metrics"]["funded"]["covariates"] = json!(["funded", "funded"])),
                "list the same covariate twice",
            ),
            (
                Box::new(|b| b["metrics"]["funded"]["covariates"] = json!([{"attr": "x"}])),
                "invalid experiment definition",
            ),
            (
                Box::new(|b| {
                    b["metrics"]["calls"] = json!({"aggregation": "count"});
                    b["metrics"]["r"] = json!({"type": "ratio", "numerator": "funded", "denominator": "calls",
                                               "covariates": ["funded"]})
                }),
                "metric \"r\" is a ratio: covariates adjust continuous and binary metrics only",
            ),
            (
                Box::new(|b| b["allocation"] = json!({"mode": "bandit", "update_every": "1 hour"})),
                "metric \"funded\" lists covariates but the experiment is a bandit",
            ),
        ];
        for (mutate, expected) in cases {
            let mut body = crm();
            mutate(&mut body);
            let err = parse_definition(&body).unwrap_err();
            assert!(err.message.contains(expected), "expected {expected:?}, got {:?}", err.message);
        }
        let mut body = crm();
        body["metrics"]["funded"]["covariates"] = json!((0..11).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert!(parse_definition(&body).unwrap_err().message.contains("lists 11 entries"));
    }
}
