//! The experiment's own fields: `name`, `description` and `experiment_type`.

use super::check_name;
use crate::error::{Error, Result};

pub const EXPERIMENT_TYPES: [&str; 6] = ["prompt", "model", "agent_config", "feature", "ui", "workflow"];
pub const MAX_DESCRIPTION_LEN: usize = 10_000;

/// The name (in NFC) and the description; the type is kept as given.
pub(super) fn parse(name: &str, description: Option<String>, experiment_type: &str) -> Result<(String, String)> {
    let name = check_name("experiment name", name)?;
    let description = description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(Error::definition(format!("description is longer than {MAX_DESCRIPTION_LEN} characters")));
    }
    if !EXPERIMENT_TYPES.contains(&experiment_type) {
        return Err(Error::definition(format!(
            "experiment_type \"{}\" is not one of {}",
            experiment_type,
            EXPERIMENT_TYPES.join(", ")
        )));
    }
    Ok((name, description))
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn rejects_a_bad_header() {
        assert_rejects(&[
            (|b| b["name"] = json!("  "), "experiment name must not be empty"),
            (|b| b["experiment_type"] = json!("banner"), "experiment_type \"banner\" is not one of"),
            (|b| b["name"] = json!("x".repeat(201)), "at most 200"),
        ]);
        let mut body = original_body();
        body["description"] = json!("d".repeat(10_001));
        assert_eq!(parse_definition(&body).unwrap_err().message, "description is longer than 10000 characters");
        body["description"] = json!("d".repeat(10_000));
        assert!(parse_definition(&body).is_ok());
    }
}
