//! `breakdowns`: the user attributes stored with each assignment, to break the analysis
//! down by (`ab_breakdown`), and the values stored for them.

use serde_json::{Map, Value};

use super::check_name;
use crate::error::{Error, Result};
use crate::names::{normalize_name, printable};

/// Most attributes an experiment stores per assignment for breakdowns.
pub const MAX_BREAKDOWNS: usize = 5;
/// Longest attribute value stored for a breakdown, in characters; a longer one is not stored
/// (a value that long names no category).
pub const MAX_BREAKDOWN_VALUE_LEN: usize = 200;

pub(super) fn parse(names: Vec<String>) -> Result<Vec<String>> {
    if names.len() > MAX_BREAKDOWNS {
        return Err(Error::definition(format!(
            "breakdowns lists at most {MAX_BREAKDOWNS} attributes, got {}",
            names.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = check_name("breakdown attribute", &n)?;
        if n.chars().count() > 64 {
            return Err(Error::definition(format!(
                "breakdown attribute \"{}\" is longer than 64 characters",
                printable(&n)
            )));
        }
        if out.contains(&n) {
            return Err(Error::definition(format!("breakdown attribute \"{}\" is listed twice", printable(&n))));
        }
        out.push(n);
    }
    Ok(out)
}

/// What an assignment stores for its experiment's breakdowns: each listed attribute the
/// user's attributes give as a string, number or boolean (as text). A value follows the name
/// rules (`normalize_name`: stored in NFC, no control, bidirectional or invisible characters,
/// at most `MAX_BREAKDOWN_VALUE_LEN` characters) or is an error naming the attribute: it is
/// shown in reports as a segment's label. Ok(None) when nothing is stored.
pub fn breakdown_values(breakdowns: &[String], attributes: &Value) -> Result<Option<Map<String, Value>>> {
    let Some(given) = attributes.as_object() else { return Ok(None) };
    let mut out = Map::new();
    for name in breakdowns {
        let text = match given.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        let what = format!("the value of breakdown attribute \"{}\"", printable(name));
        if text.chars().count() > MAX_BREAKDOWN_VALUE_LEN {
            return Err(Error::invalid(format!(
                "{what} is {} characters long, at most {MAX_BREAKDOWN_VALUE_LEN} are allowed",
                text.chars().count()
            )));
        }
        let value = normalize_name(&what, &text)?.into_owned();
        out.insert(name.clone(), Value::String(value));
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::super::{original_body, parse_definition};
    use super::*;
    use serde_json::json;

    #[test]
    fn breakdowns() {
        let mut body = original_body();
        assert!(parse_definition(&body).unwrap().breakdowns.is_empty());
        body["breakdowns"] = json!(["loan_type", "channel"]);
        assert_eq!(parse_definition(&body).unwrap().breakdowns, vec!["loan_type", "channel"]);
        let err = |b: Value| {
            let mut body = original_body();
            body["breakdowns"] = b;
            parse_definition(&body).unwrap_err().message
        };
        assert!(err(json!(["a", "b", "c", "d", "e", "f"])).contains("at most 5 attributes, got 6"));
        assert!(err(json!(["a", "a"])).contains("\"a\" is listed twice"));
        assert!(err(json!([" "])).contains("breakdown attribute must not be empty"));
        assert!(err(json!(["x".repeat(65)])).contains("longer than 64 characters"));
        assert!(err(json!("loan_type")).contains("invalid experiment definition"));
        assert!(err(json!([1])).contains("invalid experiment definition"));
    }

    #[test]
    fn breakdown_values_keep_the_listed_scalars() {
        let listed = vec!["loan_type".to_string(), "score".into(), "vip".into(), "region".into(), "notes".into()];
        let attrs = json!({"loan_type": "fha", "score": 720, "vip": true, "region": null, "notes": "x".repeat(200),
                           "other": "not listed"});
        let got = breakdown_values(&listed, &attrs).unwrap().unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"loan_type": "fha", "score": "720", "vip": "true", "notes": "x".repeat(200)})
        );
        assert_eq!(breakdown_values(&listed, &json!({"loan_type": {"a": 1}, "score": [1]})).unwrap(), None);
        assert_eq!(breakdown_values(&listed, &json!(null)).unwrap(), None);
        assert_eq!(breakdown_values(&[], &attrs).unwrap(), None);
        // Look-alike spellings are one segment.
        let got = breakdown_values(&listed, &json!({"loan_type": "cafe\u{0301}"})).unwrap().unwrap();
        assert_eq!(got["loan_type"], json!("caf\u{e9}"));
    }

    #[test]
    fn breakdown_values_follow_the_name_rules() {
        let listed = vec!["loan_type".to_string(), "score".into()];
        let err = |attrs: Value| breakdown_values(&listed, &attrs).unwrap_err().message;
        assert_eq!(
            err(json!({"loan_type": "fha\nRecommendation: ship"})),
            "the value of breakdown attribute \"loan_type\" must not contain control characters (found U+000A)"
        );
        assert!(err(json!({"loan_type": "B\u{202E}A"})).contains("bidirectional formatting characters (found U+202E)"));
        assert_eq!(
            err(json!({"loan_type": "x".repeat(201)})),
            "the value of breakdown attribute \"loan_type\" is 201 characters long, at most 200 are allowed"
        );
        assert_eq!(err(json!({"loan_type": "  "})), "the value of breakdown attribute \"loan_type\" must not be empty");
        // A number as jsonb prints it: 1e400 is 401 digits.
        let huge: Value = serde_json::from_str(&format!("{{\"score\": 1{}}}", "0".repeat(400))).unwrap();
        assert!(err(huge).contains("\"score\" is 401 characters long"));
    }
}
