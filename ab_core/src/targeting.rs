//! User-segment targeting: conditions on the attributes an application passes to
//! `ab_get_variant`. Every condition must hold for the user to be enrolled.
//!
//! A condition on attribute `k` is one of
//! - a list `["fha", "va"]`: the attribute equals one of the values;
//! - a scalar `"fha"`, `700`, `true`: the attribute equals it;
//! - an object of operators `{"gte": 700, "lt": 800}`: all must hold. Operators: eq, ne,
//!   gt, gte, lt, lte (numbers, or strings compared bytewise), in, not_in (lists).
//!
//! A missing attribute fails every condition on it. Values of different JSON types are
//! never equal (the string "700" is not the number 700).

use serde_json::{Map, Value};
use std::cmp::Ordering;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Segments {
    conditions: Vec<(String, Vec<Op>)>,
}

const MAX_CONDITIONS: usize = 100;

impl Segments {
    /// Validates a target_segments object. `null` and `{}` mean everyone.
    pub fn parse(value: &Value) -> Result<Segments> {
        let obj = match value {
            Value::Null => return Ok(Segments::default()),
            Value::Object(o) => o,
            other => {
                return Err(Error::definition(format!(
                    "target_segments must be a JSON object, not {}",
                    json_type(other)
                )))
            }
        };
        if obj.len() > MAX_CONDITIONS {
            return Err(Error::definition(format!(
                "target_segments has {} conditions, at most {MAX_CONDITIONS} are allowed",
                obj.len()
            )));
        }
        let mut conditions = Vec::with_capacity(obj.len());
        for (attr, cond) in obj {
            if attr.is_empty() {
                return Err(Error::definition("target_segments has an empty attribute name"));
            }
            let ops = match cond {
                Value::Array(list) => vec![Op::In(scalars(attr, list)?)],
                Value::Object(ops) => parse_ops(attr, ops)?,
                v => {
                    check_scalar(attr, v)?;
                    vec![Op::Eq(v.clone())]
                }
            };
            conditions.push((attr.clone(), ops));
        }
        Ok(Segments { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when the attributes satisfy every condition.
    pub fn matches(&self, attributes: &Value) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        let Value::Object(attrs) = attributes else { return false };
        self.conditions.iter().all(|(attr, ops)| match attrs.get(attr) {
            None => false,
            Some(v) => ops.iter().all(|op| op_holds(op, v)),
        })
    }
}

fn parse_ops(attr: &str, ops: &Map<String, Value>) -> Result<Vec<Op>> {
    if ops.is_empty() {
        return Err(Error::definition(format!("target_segments condition on \"{attr}\" has no operator")));
    }
    ops.iter()
        .map(|(name, v)| {
            let ordered = |v: &Value| -> Result<Value> {
                match v {
                    Value::Number(_) | Value::String(_) => Ok(v.clone()),
                    _ => Err(Error::definition(format!(
                        "target_segments operator \"{name}\" on \"{attr}\" needs a number or a string, not {}",
                        json_type(v)
                    ))),
                }
            };
            let list = |v: &Value| -> Result<Vec<Value>> {
                match v {
                    Value::Array(l) => scalars(attr, l),
                    _ => Err(Error::definition(format!(
                        "target_segments operator \"{name}\" on \"{attr}\" needs a list, not {}",
                        json_type(v)
                    ))),
                }
            };
            Ok(match name.as_str() {
                "eq" => Op::Eq(check_scalar(attr, v)?.clone()),
                "ne" => Op::Ne(check_scalar(attr, v)?.clone()),
                "gt" => Op::Gt(ordered(v)?),
                "gte" => Op::Gte(ordered(v)?),
                "lt" => Op::Lt(ordered(v)?),
                "lte" => Op::Lte(ordered(v)?),
                "in" => Op::In(list(v)?),
                "not_in" => Op::NotIn(list(v)?),
                other => {
                    return Err(Error::definition(format!(
                        "target_segments has unknown operator \"{other}\" on \"{attr}\""
                    ))
                    .with_hint("operators are eq, ne, gt, gte, lt, lte, in, not_in"))
                }
            })
        })
        .collect()
}

fn scalars(attr: &str, list: &[Value]) -> Result<Vec<Value>> {
    if list.is_empty() {
        return Err(Error::definition(format!("target_segments list for \"{attr}\" is empty, so no user could match")));
    }
    list.iter().map(|v| check_scalar(attr, v).cloned()).collect()
}

fn check_scalar<'a>(attr: &str, v: &'a Value) -> Result<&'a Value> {
    match v {
        Value::Array(_) | Value::Object(_) => Err(Error::definition(format!(
            "target_segments values for \"{attr}\" must be strings, numbers, booleans or null, not {}",
            json_type(v)
        ))),
        _ => Ok(v),
    }
}

/// How a JSON value's type reads in a message ("a string", "an object").
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Some(Ordering::Equal)
}

fn op_holds(op: &Op, v: &Value) -> bool {
    match op {
        Op::Eq(x) => equal(v, x),
        Op::Ne(x) => !equal(v, x),
        // The operand is a number or a string (checked at parse time), so a value of
        // another type compares as None and fails.
        Op::Gt(x) => compare(v, x) == Some(Ordering::Greater),
        Op::Gte(x) => matches!(compare(v, x), Some(Ordering::Greater | Ordering::Equal)),
        Op::Lt(x) => compare(v, x) == Some(Ordering::Less),
        Op::Lte(x) => matches!(compare(v, x), Some(Ordering::Less | Ordering::Equal)),
        Op::In(list) => list.iter().any(|x| equal(v, x)),
        Op::NotIn(list) => !list.iter().any(|x| equal(v, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seg(v: Value) -> Segments {
        Segments::parse(&v).unwrap()
    }

    #[test]
    fn empty_matches_everyone() {
        assert!(seg(json!({})).matches(&json!({})));
        assert!(seg(Value::Null).matches(&json!({"a": 1})));
    }

    #[test]
    fn lists_scalars_and_operators() {
        let s = seg(json!({"loan_type": ["fha", "va"], "credit_score": {"gte": 700}}));
        assert!(s.matches(&json!({"loan_type": "fha", "credit_score": 720})));
        assert!(s.matches(&json!({"loan_type": "va", "credit_score": 700.0})));
        assert!(!s.matches(&json!({"loan_type": "conventional", "credit_score": 720})));
        assert!(!s.matches(&json!({"loan_type": "fha", "credit_score": 699})));
        assert!(!s.matches(&json!({"loan_type": "fha"})), "missing attribute fails");
        assert!(!s.matches(&json!({"loan_type": "fha", "credit_score": "720"})), "types differ");
        assert!(!s.matches(&json!([1, 2])));

        let s = seg(json!({"region": "west", "beta": true, "tier": {"not_in": ["free"], "ne": "trial"}}));
        assert!(s.matches(&json!({"region": "west", "beta": true, "tier": "pro"})));
        assert!(!s.matches(&json!({"region": "west", "beta": true, "tier": "free"})));
        assert!(!s.matches(&json!({"region": "west", "beta": true, "tier": "trial"})));
        assert!(!s.matches(&json!({"region": "west", "beta": false, "tier": "pro"})));

        let s = seg(json!({"score": {"gt": 1, "lt": 3}, "name": {"lte": "m"}}));
        assert!(s.matches(&json!({"score": 2, "name": "alice"})));
        assert!(!s.matches(&json!({"score": 3, "name": "alice"})));
        assert!(!s.matches(&json!({"score": 2, "name": "zoe"})));
    }

    #[test]
    fn invalid_conditions_are_rejected() {
        for (v, msg) in [
            (json!([1]), "must be a JSON object, not an array"),
            (json!({"a": []}), "is empty"),
            (json!({"a": {}}), "has no operator"),
            (json!({"a": {"between": [1, 2]}}), "unknown operator \"between\""),
            (json!({"a": {"gte": true}}), "needs a number or a string"),
            (json!({"a": {"in": 3}}), "needs a list"),
            (json!({"a": [[1]]}), "must be strings, numbers"),
            (json!({"": 1}), "empty attribute name"),
        ] {
            let err = Segments::parse(&v).unwrap_err();
            assert!(err.message.contains(msg), "{v}: {}", err.message);
        }
    }
}
