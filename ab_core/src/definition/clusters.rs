//! `randomization_unit`: a cluster-randomized experiment names the attribute whose value
//! every user of a cluster shares (a branch, a loan officer, an account). Users are bucketed
//! by that value, so a cluster's users all get the same variant, including users who join it
//! later; a user without the attribute is not enrolled.

use super::check_name;
use crate::error::{Error, Result};
use crate::names::printable;

pub(super) fn parse(
    unit: Option<&str>,
    breakdowns: &[String],
    bandit: bool,
    rollout: bool,
    layer: bool,
) -> Result<Option<String>> {
    let Some(unit) = unit else { return Ok(None) };
    let unit = check_name("randomization_unit", unit)?;
    if !breakdowns.contains(&unit) {
        return Err(Error::definition(format!(
            "randomization_unit \"{}\" is not listed in \"breakdowns\": the cluster of each user is stored with the assignment, for the analysis",
            printable(&unit)
        ))
        .with_hint("list the attribute in \"breakdowns\" too"));
    }
    if bandit {
        return Err(Error::definition(
            "a cluster-randomized experiment (randomization_unit) cannot be a bandit: reweighting would move new users of a cluster to another variant than its first users",
        ));
    }
    if rollout {
        return Err(Error::definition(
            "a cluster-randomized experiment (randomization_unit) cannot be a rollout: each step would move new users of a cluster to another variant than its first users",
        ));
    }
    if layer {
        return Err(Error::definition(
            "a cluster-randomized experiment (randomization_unit) cannot be in a layer: a layer splits users, not clusters, so a cluster would be enrolled only in part",
        ));
    }
    Ok(Some(unit))
}

/// The cluster a user belongs to: the unit attribute's value, as the assignment stores it
/// (text; a number or boolean as its JSON text). Ok(None) when the user has none.
pub fn cluster_of(unit: &str, attributes: &serde_json::Value) -> Result<Option<String>> {
    let values = super::breakdown_values(std::slice::from_ref(&unit.to_string()), attributes)?;
    Ok(values.and_then(|m| m.get(unit).and_then(|v| v.as_str()).map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::super::{original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn cluster_of_a_user() {
        use super::cluster_of;
        assert_eq!(cluster_of("branch", &json!({"branch": "north"})).unwrap().as_deref(), Some("north"));
        assert_eq!(cluster_of("branch", &json!({"branch": 12})).unwrap().as_deref(), Some("12"));
        assert_eq!(cluster_of("branch", &json!({"other": 1})).unwrap(), None);
        assert_eq!(cluster_of("branch", &json!({"branch": null})).unwrap(), None);
        assert_eq!(cluster_of("branch", &serde_json::Value::Null).unwrap(), None);
        assert!(cluster_of("branch", &json!({"branch": "x".repeat(201)})).is_err());
    }

    #[test]
    fn randomization_unit() {
        let mut body = original_body();
        assert_eq!(parse_definition(&body).unwrap().randomization_unit, None);
        body["breakdowns"] = json!(["branch"]);
        body["randomization_unit"] = json!("branch");
        assert_eq!(parse_definition(&body).unwrap().randomization_unit.as_deref(), Some("branch"));
        body["randomization_unit"] = json!("office");
        let e = parse_definition(&body).unwrap_err();
        assert!(
            e.message.starts_with("randomization_unit \"office\" is not listed in \"breakdowns\""),
            "{}",
            e.message
        );
        body["randomization_unit"] = json!("branch");
        body["allocation"] = json!({"mode": "bandit"});
        assert!(parse_definition(&body).unwrap_err().message.contains("cannot be a bandit"));
        body["allocation"] = json!({"mode": "rollout", "steps": [5, 100], "step_every": "1 hour"});
        assert!(parse_definition(&body).unwrap_err().message.contains("cannot be a rollout"));
        let mut body = original_body();
        body["breakdowns"] = json!(["branch"]);
        body["randomization_unit"] = json!("branch");
        body["layer"] = json!({"name": "l", "percentage": 50});
        let e = parse_definition(&body).unwrap_err();
        assert!(e.message.contains("cannot be in a layer"), "{}", e.message);
        // A quantile metric is analysed with its variance clustered by the unit.
        let mut body = original_body();
        body["breakdowns"] = json!(["branch"]);
        body["randomization_unit"] = json!("branch");
        body["metrics"] = json!({"resolution_rate": {}, "latency": {}, "p90": {"type": "quantile", "of": "latency", "quantile": 0.9}});
        assert!(parse_definition(&body).is_ok());
    }
}
