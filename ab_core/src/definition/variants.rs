//! `variants`: their names, traffic allocations, control and configs.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

use super::{check_name, field_problem, short_float};
use crate::bucketing::{basis_points, BUCKETS};
use crate::error::{Error, Result};

pub const MAX_VARIANTS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVariant {
    name: String,
    #[serde(default)]
    is_control: bool,
    traffic_allocation: f64,
    #[serde(default)]
    config: Option<Value>,
}

/// The keys of a variant.
pub const VARIANT_KEYS: &[&str] = &["name", "is_control", "traffic_allocation", "config"];

#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    pub is_control: bool,
    pub traffic_allocation: f64,
    pub config: Value,
}

/// The first problem in a variant, naming the variant and the field, when the definition
/// does not deserialize.
pub(super) fn problem(value: &Value) -> Option<String> {
    let variants = value.get("variants").and_then(Value::as_array)?;
    for (i, v) in variants.iter().enumerate() {
        let who = match v.get("name").and_then(Value::as_str) {
            Some(name) => format!("variant \"{}\"", crate::names::printable(name)),
            None => format!("variant {}", i + 1),
        };
        let problem = field_problem(
            &who,
            v,
            VARIANT_KEYS,
            &[
                ("name", "a string", Value::is_string, true),
                ("is_control", "true or false", Value::is_boolean, false),
                ("traffic_allocation", "a number", Value::is_number, true),
                ("config", "an object", |x| x.is_object() || x.is_null(), false),
            ],
        );
        if problem.is_some() {
            return problem;
        }
    }
    None
}

pub(super) fn parse(raw: Vec<RawVariant>) -> Result<Vec<VariantSpec>> {
    if raw.len() < 2 {
        return Err(Error::definition(format!(
            "an experiment needs at least 2 variants (a control and a treatment), got {}",
            raw.len()
        )));
    }
    if raw.len() > MAX_VARIANTS {
        return Err(Error::definition(format!("an experiment has at most {MAX_VARIANTS} variants, got {}", raw.len())));
    }
    let mut seen = HashSet::new();
    let mut total_bp = 0u32;
    let mut variants = Vec::with_capacity(raw.len());
    for mut v in raw {
        v.name = check_name("variant name", &v.name)?;
        if !seen.insert(v.name.clone()) {
            return Err(Error::definition(format!("variant name \"{}\" is used twice", v.name)));
        }
        let bp = basis_points(v.traffic_allocation).ok_or_else(|| {
            Error::definition(format!(
                "traffic_allocation of variant \"{}\" is {}, must be a percentage between 0 and 100 with at most two decimals",
                v.name, short_float(v.traffic_allocation)
            ))
        })?;
        total_bp += bp;
        let config = match v.config {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(c @ Value::Object(_)) => c,
            Some(_) => {
                return Err(Error::definition(format!("config of variant \"{}\" must be a JSON object", v.name)))
            }
        };
        variants.push(VariantSpec {
            name: v.name,
            is_control: v.is_control,
            traffic_allocation: bp as f64 / 100.0,
            config,
        });
    }
    let controls = variants.iter().filter(|v| v.is_control).count();
    if controls != 1 {
        return Err(Error::definition(format!("exactly one variant must have \"is_control\": true, found {controls}")));
    }
    if total_bp > BUCKETS {
        return Err(Error::definition(format!(
            "traffic allocations sum to {}, must be at most 100",
            total_bp as f64 / 100.0
        )));
    }
    if total_bp == 0 {
        return Err(Error::definition("traffic allocations sum to 0, so no user would be enrolled"));
    }
    Ok(variants)
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use serde_json::{json, Value};

    #[test]
    fn rejects_bad_variants() {
        assert_rejects(&[
            (
                |b| b["variants"][1]["traffic_allocation"] = json!("50"),
                "traffic_allocation of variant \"Treatment\" must be a number, got a string",
            ),
            (
                |b| b["variants"][0]["weight"] = json!(50),
                "unknown field `weight` in variant \"Control\", expected one of `name`, `is_control`",
            ),
            (
                |b| {
                    b["variants"][1].as_object_mut().unwrap().remove("name");
                },
                "variant 2 has no name",
            ),
            (
                |b| b["variants"][1]["traffic_allocation"] = json!(70.0),
                "traffic allocations sum to 120, must be at most 100",
            ),
            (|b| b["variants"][1]["traffic_allocation"] = json!(-5), "must be a percentage between 0 and 100"),
            (|b| b["variants"][1]["traffic_allocation"] = json!(33.333), "at most two decimals"),
            (
                |b| b["variants"][1]["is_control"] = json!(true),
                "exactly one variant must have \"is_control\": true, found 2",
            ),
            (|b| b["variants"][0]["is_control"] = json!(false), "found 0"),
            (|b| b["variants"][1]["name"] = json!("Control"), "variant name \"Control\" is used twice"),
            (|b| b["variants"][1]["config"] = json!([1]), "config of variant \"Treatment\" must be a JSON object"),
            (|b| b["variants"] = json!([b["variants"][0].clone()]), "at least 2 variants"),
            (
                |b| {
                    b["variants"][0]["traffic_allocation"] = json!(0);
                    b["variants"][1]["traffic_allocation"] = json!(0);
                },
                "sum to 0",
            ),
        ]);
    }

    #[test]
    fn too_many_variants() {
        let mut body = original_body();
        let mut variants = vec![json!({"name": "c", "is_control": true, "traffic_allocation": 0.01})];
        for i in 0..3000 {
            variants.push(json!({"name": format!("v{i}"), "traffic_allocation": 0}));
        }
        body["variants"] = Value::Array(variants);
        assert!(parse_definition(&body).unwrap_err().message.contains("at most 100 variants, got 3001"));
    }
}
