//! A metric's `prior`: a Gaussian prior on the effect for `ab_bayes` (`crate::stats::bayes`).

use super::MetricDef;
use crate::error::{Error, Result};
use crate::names::printable;

/// The keys of a metric's `prior`, as `crate::stats::bayes::Prior` declares them.
pub const PRIOR_KEYS: &[&str] = &["mean", "sd", "relative"];

pub(super) fn check(name: &str, def: &MetricDef) -> Result<()> {
    if let Some(p) = def.prior {
        crate::stats::bayes::check_prior(&p)
            .map_err(|e| Error::definition(format!("prior of metric \"{}\": {e}", printable(name))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::{original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn priors() {
        let mut body = original_body();
        body["metrics"] = json!({"resolution_rate": {"prior": {"mean": 0.01, "sd": 0.02, "relative": true}}});
        let p = parse_definition(&body).unwrap().metrics["resolution_rate"].prior.unwrap();
        assert_eq!((p.mean, p.sd, p.relative), (0.01, 0.02, true));
        body["metrics"] = json!({"resolution_rate": {"prior": {"mean": 0, "sd": 0}}});
        assert_eq!(
            parse_definition(&body).unwrap_err().message,
            "prior of metric \"resolution_rate\": sd is 0, must be a positive number"
        );
        body["metrics"] = json!({"resolution_rate": {"prior": {"mean": 0}}});
        assert!(parse_definition(&body).unwrap_err().message.contains("missing field `sd`"));
    }
}
