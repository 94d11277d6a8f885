//! Errors of the pure layer. Each carries the kind of failure so that the SQL layer
//! can map it to a SQLSTATE without parsing messages.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value is outside its domain (SQLSTATE 22023).
    InvalidParameter,
    /// Malformed JSON structure or wrong JSON types (SQLSTATE 22023 as well, kept apart for tests).
    InvalidDefinition,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::InvalidParameter, message: message.into(), hint: None }
    }

    pub fn definition(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::InvalidDefinition, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
