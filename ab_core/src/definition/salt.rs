//! The hashing `salt`.

use super::MAX_NAME_LEN;
use crate::error::{Error, Result};

/// A salt is hashed as given, so it is checked but never normalized.
pub(super) fn check(salt: Option<&str>) -> Result<()> {
    let Some(salt) = salt else { return Ok(()) };
    let len = salt.chars().count();
    if salt.trim().is_empty() {
        Err(Error::definition("salt must not be empty"))
    } else if len > MAX_NAME_LEN {
        Err(Error::definition(format!("salt is {len} characters long, at most {MAX_NAME_LEN} are allowed")))
    } else if salt.chars().any(char::is_control) {
        Err(Error::definition("salt must not contain control characters"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_rejects, original_body, parse_definition};
    use serde_json::json;

    #[test]
    fn salts() {
        assert_rejects(&[
            (|b| b["salt"] = json!(""), "salt must not be empty"),
            (|b| b["salt"] = json!("s".repeat(201)), "salt is 201 characters long, at most 200 are allowed"),
            (|b| b["salt"] = json!("a\tb"), "salt must not contain control characters"),
        ]);
        let mut body = original_body();
        body["salt"] = json!(" cafe\u{301} ");
        assert_eq!(parse_definition(&body).unwrap().salt.as_deref(), Some(" cafe\u{301} "), "kept as given");
    }
}
