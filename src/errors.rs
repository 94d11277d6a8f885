//! Raising errors with a SQLSTATE, a message that says what was wrong, and a hint.

use ab_core::names::printable;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<String>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "ab_testing");
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn invalid(message: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, None)
}

/// Raises an `ab_core` error as 22023 (invalid_parameter_value).
pub fn core_error(e: ab_core::Error) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message, e.hint)
}

pub fn not_found(experiment: crate::catalog::ExperimentRef<'_>) -> ! {
    let message = match experiment {
        // Escaped as every name in a message: a line feed there would forge a log line.
        crate::catalog::ExperimentRef::Name(n) if n.chars().count() > 200 => {
            format!("experiment \"{}...\" does not exist", printable(&n.chars().take(200).collect::<String>()))
        }
        crate::catalog::ExperimentRef::Name(n) => {
            // Also called from functions that pin no search_path themselves (ab_get_variant,
            // ab_record_result).
            let hint = crate::security::with_pinned_search_path(|| nearest_experiment(n));
            format!("experiment \"{}\" does not exist{hint}", printable(n))
        }
        crate::catalog::ExperimentRef::Id(id) => format!("experiment with id {id} does not exist"),
    };
    raise(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        message,
        Some("ab_experiment_overview lists the experiments; names are case-sensitive".into()),
    )
}

/// ` (did you mean "x"?)` for the nearest experiment name the calling role may read, or
/// nothing. Runs only on the error path. The caller is the role outside any SECURITY DEFINER
/// function (as SET ROLE left it), not the extension's owner that the function runs as.
fn nearest_experiment(typed: &str) -> String {
    let caller = unsafe { pg_sys::GetOuterUserId() };
    Spi::connect(|client| {
        let nsp = crate::catalog::schema(&client);
        let readable = client
            .select(
                "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT')",
                Some(1),
                &[caller.into(), format!("{nsp}.ab_experiments").into()],
            )
            .or_raise()
            .first()
            .get_one::<bool>()
            .or_raise()
            .unwrap_or(false);
        // Called from a source's code during its read, the session's role is not who asks.
        if !readable || crate::security::in_source_read() {
            return String::new();
        }
        let names: Vec<String> = client
            .select(&format!("SELECT name FROM {nsp}.ab_experiments LIMIT 100000"), None, &[])
            .or_raise()
            .filter_map(|row| row.get::<String>(1).or_raise())
            .collect();
        ab_core::names::did_you_mean(typed, names.iter().map(String::as_str))
    })
}

/// A NULL where a value is needed (22004).
pub fn null(what: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{what} must not be NULL"), None)
}

/// Unwraps an argument that must not be NULL.
pub fn required<T>(value: Option<T>, what: &str) -> T {
    value.unwrap_or_else(|| null(what))
}

pub fn wrong_state(message: impl Into<String>, hint: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, Some(hint.into()))
}

/// Unwraps an SPI result; SPI failures are internal errors, never user errors.
pub trait SpiExt<T> {
    fn or_raise(self) -> T;
}

impl<T> SpiExt<T> for Result<T, pgrx::spi::Error> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("ab_testing: SPI failed: {e}"), None),
        }
    }
}
