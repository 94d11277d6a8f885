//! `target_segments`: which users an experiment enrolls (the rules are in `crate::targeting`).

use serde_json::{Map, Value};

use crate::error::Result;
use crate::targeting::Segments;

/// The segments as stored: none (or null) is the empty object, which enrolls everyone.
pub(super) fn parse(target_segments: Option<Value>) -> Result<Value> {
    let target_segments = target_segments.unwrap_or(Value::Object(Map::new()));
    let target_segments = if target_segments.is_null() { Value::Object(Map::new()) } else { target_segments };
    Segments::parse(&target_segments)?;
    Ok(target_segments)
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn target_segments() {
        assert_rejects(&[(|b| b["target_segments"] = json!("fha"), "target_segments must be a JSON object")]);
        let mut body = original_body();
        body["target_segments"] = json!(null);
        assert_eq!(parse_definition(&body).unwrap().target_segments, json!({}));
        body["target_segments"] = json!({"loan_type": ["fha"]});
        assert_eq!(parse_definition(&body).unwrap().target_segments, json!({"loan_type": ["fha"]}));
    }
}
