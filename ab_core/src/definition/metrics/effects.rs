//! The effect sizes a metric may declare: `mde` (for the power calculation) and `margin`
//! (a non-inferiority guardrail).

use super::super::short_float;
use super::{MetricDef, MetricType};
use crate::definition::MAX_ABS_VALUE;
use crate::error::{Error, Result};
use crate::names::printable;

pub(super) fn check_margin(name: &str, def: &MetricDef) -> Result<()> {
    if let Some(m) = def.margin {
        let most = if def.kind == MetricType::Binary { 1.0 } else { MAX_ABS_VALUE };
        if !(m > 0.0 && m < most || def.kind != MetricType::Binary && m == most) {
            return Err(Error::definition(format!(
                "margin of metric \"{}\" is {}, must be a positive difference in the metric's units{}",
                printable(name),
                short_float(m),
                if def.kind == MetricType::Binary { " below 1 (0.01 is one percentage point)" } else { " up to 1e15" }
            )));
        }
    }
    Ok(())
}

pub(super) fn check_mde(name: &str, def: &MetricDef) -> Result<()> {
    if let Some(mde) = def.mde {
        if !(mde.is_finite() && mde > 0.0) {
            return Err(Error::definition(format!(
                "mde of metric \"{name}\" is {mde}, must be a positive difference in the metric's units"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use serde_json::{json, Value};

    fn with(metric: Value) -> Result<(), String> {
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {}, "m": metric});
        parse_definition(&body).map(|_| ()).map_err(|e| e.message)
    }

    #[test]
    fn margins_and_mdes() {
        assert!(with(json!({"margin": 0.5, "mde": 0.1})).is_ok());
        assert!(with(json!({"margin": 1e15})).is_ok());
        assert!(with(json!({"type": "binary", "margin": 0.01})).is_ok());
        assert_eq!(
            with(json!({"type": "binary", "margin": 1})).unwrap_err(),
            "margin of metric \"m\" is 1, must be a positive difference in the metric's units below 1 (0.01 is one percentage point)"
        );
        assert_eq!(
            with(json!({"margin": 0})).unwrap_err(),
            "margin of metric \"m\" is 0, must be a positive difference in the metric's units up to 1e15"
        );
        assert_eq!(
            with(json!({"mde": 0})).unwrap_err(),
            "mde of metric \"m\" is 0, must be a positive difference in the metric's units"
        );
    }
}
