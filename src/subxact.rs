//! Subtransactions run from Rust, as PL/pgSQL runs a block with an EXCEPTION clause.

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// Runs `f` in a subtransaction: on an error the subtransaction's work is undone and the
/// error returned, to be handled or rethrown (`CaughtError::rethrow`).
pub(crate) fn try_in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, Box<CaughtError>> {
    // SAFETY: the same calls, in the same order, as PL/pgSQL's exec_stmt_block.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let f = std::panic::AssertUnwindSafe(f);
        PgTryBuilder::new(move || {
            let f = f;
            let out = (f.0)();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Ok(out)
        })
        .catch_others(move |e| {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Err(Box::new(e))
        })
        .execute()
    }
}

fn report(e: &CaughtError) -> &pgrx::pg_sys::panic::ErrorReportWithLevel {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => r,
    }
}

/// The five characters of an error's SQLSTATE.
pub(crate) fn sqlstate(e: &CaughtError) -> String {
    // Six bits per character (PostgreSQL's MAKE_SQLSTATE).
    let packed = report(e).sql_error_code() as i64;
    (0..5).map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
}

/// `try_in_subtransaction`, with the error as (SQLSTATE, message). A cancel
/// (statement_timeout, pg_cancel_backend) stops the whole call, as PL/pgSQL's WHEN OTHERS
/// lets it.
pub(crate) fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, (String, String)> {
    try_in_subtransaction(f).map_err(|e| {
        let code = sqlstate(&e);
        if code == "57014" {
            e.rethrow();
        }
        (code, report(&e).message().to_string())
    })
}
