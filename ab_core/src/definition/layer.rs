//! `layer`: the experiment's place in a layer, a share of its traffic or its holdout (the
//! layers themselves are in `crate::layers`).

use serde::Deserialize;
use serde_json::Value;

use super::{check_name, field_problem, short_float};
use crate::bucketing::basis_points;
use crate::error::{Error, Result};
use crate::targeting::json_type;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayer {
    name: String,
    #[serde(default)]
    percentage: Option<f64>,
    #[serde(default)]
    holdout: bool,
}

/// The keys of `layer`.
pub const LAYER_KEYS: &[&str] = &["name", "percentage", "holdout"];

/// Where an experiment sits in a layer (see `crate::layers`).
#[derive(Debug, Clone, PartialEq)]
pub enum LayerRole {
    /// Takes this many basis points of the layer's traffic, apart from every other experiment
    /// of the layer.
    Share(u32),
    /// Measures the layer's holdout: its control is the holdout slice, its treatment everyone
    /// else in the layer.
    Holdout,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub name: String,
    pub role: LayerRole,
}

/// The first problem in the layer, naming the field, when the definition does not
/// deserialize: serde's own message calls the layer "struct RawLayer".
pub(super) fn problem(value: &Value) -> Option<String> {
    let layer = value.get("layer").filter(|l| !l.is_null())?;
    if !layer.is_object() {
        return Some(format!(
            "layer must be an object such as {{\"name\": \"checkout\", \"percentage\": 20}} or \
             {{\"name\": \"checkout\", \"holdout\": true}}, got {}",
            json_type(layer)
        ));
    }
    field_problem(
        "layer",
        layer,
        LAYER_KEYS,
        &[
            ("name", "a string", Value::is_string, true),
            ("percentage", "a number", |x| x.is_number() || x.is_null(), false),
            ("holdout", "true or false", Value::is_boolean, false),
        ],
    )
}

/// `has_salt`: whether the definition gives a salt; `variants`: how many it has.
pub(super) fn parse(raw: Option<RawLayer>, has_salt: bool, variants: usize) -> Result<Option<LayerSpec>> {
    let Some(mut l) = raw else { return Ok(None) };
    l.name = check_name("layer name", &l.name)?;
    let role = match (l.holdout, l.percentage) {
        (true, Some(_)) => {
            return Err(Error::definition(
                "a holdout experiment spans its whole layer: give \"holdout\": true or a \"percentage\", not both",
            ))
        }
        (true, None) => {
            if has_salt {
                return Err(Error::definition(
                    "a holdout experiment buckets users with its layer's salt, so it cannot have a salt of its own",
                ));
            }
            if variants != 2 {
                return Err(Error::definition(format!(
                    "a holdout experiment has exactly 2 variants (the holdout as control, and everyone else), got {}",
                    variants
                )));
            }
            LayerRole::Holdout
        }
        (false, None) => {
            return Err(Error::definition(format!(
                "layer \"{}\" needs a \"percentage\": the share of the layer's traffic this experiment takes",
                l.name
            )))
        }
        (false, Some(p)) => match basis_points(p) {
            Some(bp) if bp > 0 => LayerRole::Share(bp),
            _ => {
                return Err(Error::definition(format!(
                    "percentage of layer \"{}\" is {}, must be above 0 and at most 100 with at most two decimals",
                    l.name,
                    short_float(p)
                )))
            }
        },
    };
    Ok(Some(LayerSpec { name: l.name, role }))
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use super::*;
    use serde_json::json;

    #[test]
    fn layers() {
        let mut body = original_body();
        body["layer"] = json!({"name": "prompts", "percentage": 25});
        let spec = parse_definition(&body).unwrap();
        assert_eq!(spec.layer, Some(LayerSpec { name: "prompts".into(), role: LayerRole::Share(2500) }));
        body["layer"] = json!({"name": "prompts", "holdout": true});
        assert_eq!(parse_definition(&body).unwrap().layer.unwrap().role, LayerRole::Holdout);

        let err = |layer: Value| {
            let mut body = original_body();
            body["layer"] = layer;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!({"name": "prompts"})).contains("needs a \"percentage\""));
        assert!(err(json!({"name": "prompts", "percentage": 0})).contains("must be above 0"));
        assert!(err(json!({"name": "prompts", "percentage": 100.5})).contains("must be above 0"));
        assert!(err(json!({"name": "prompts", "percentage": 10, "holdout": true})).contains("not both"));
        assert!(err(json!({"name": " ", "percentage": 10})).contains("layer name must not be empty"));
        assert!(err(json!({"name": "prompts", "share": 10})).contains("unknown field `share`"));
        assert!(err(json!("prompts")).contains("invalid experiment definition"));

        let mut body = original_body();
        body["layer"] = json!({"name": "prompts", "holdout": true});
        body["salt"] = json!("s");
        assert!(parse_definition(&body).unwrap_err().message.contains("cannot have a salt of its own"));
        body.as_object_mut().unwrap().remove("salt");
        body["variants"].as_array_mut().unwrap().push(json!({"name": "third", "traffic_allocation": 0}));
        assert!(parse_definition(&body).unwrap_err().message.contains("exactly 2 variants"));
    }

    #[test]
    fn rejects_a_malformed_layer() {
        assert_rejects(&[
            (
                |b| b["layer"] = json!("l2"),
                "layer must be an object such as {\"name\": \"checkout\", \"percentage\": 20}",
            ),
            (
                |b| b["layer"] = json!({"name": "l2", "percentage": "20"}),
                "percentage of layer must be a number, got a string",
            ),
        ]);
    }
}
