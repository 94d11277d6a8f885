//! Name resolution that a caller cannot hijack. ab_get_variant, ab_record_result, ab_analyze
//! and ab_summary run as the extension's owner (SECURITY DEFINER); any SQL they run must not
//! resolve an operator or function through the caller's search_path, where a hostile role
//! could have placed its own. The SQL-level functions pin search_path with a SET clause;
//! ab_get_variant and ab_record_result cannot afford one on every call (setting search_path
//! and restoring it cost ab_record_result a tenth to a fifth of its throughput), so they pin it
//! here, around the SPI work of their slow paths only. Their hot paths resolve no names, or
//! run statements the extension prepared (`cache::Stmt`) that name every table, operator and
//! function with its schema: PostgreSQL analyses a prepared statement again when it runs
//! under another search_path, and such a statement resolves to the same objects under any.

use pgrx::pg_sys;

const SAFE_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, pg_temp";

/// Runs `f` with the given settings, restored afterwards, also when `f` unwinds (a panic a
/// caller catches must not leave them set). On a PostgreSQL error the enclosing
/// (sub)transaction's abort restores them too, as for a function's SET clause.
pub fn with_settings<R>(settings: &[(&std::ffi::CStr, &std::ffi::CStr)], f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // Restores every level from ours up (a nested level left behind by an error
            // included), as the abort would.
            unsafe { pg_sys::AtEOXact_GUC(!std::thread::panicking(), self.0) }
        }
    }
    let restore = unsafe { Restore(pg_sys::NewGUCNestLevel()) };
    for (name, value) in settings {
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
    }
    let out = f();
    drop(restore);
    out
}

/// Runs `f` with search_path set to `pg_catalog, pg_temp`, restored afterwards.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    with_settings(&[(c"search_path", SAFE_SEARCH_PATH)], f)
}

thread_local! {
    static IN_SOURCE_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a metric source is being read in this backend (its code may be calling us).
pub fn in_source_read() -> bool {
    IN_SOURCE_READ.get()
}

/// Runs `f` as the role that called the analysis (the session's role, as SET ROLE left it),
/// not as the extension's owner: what `f` reads from the application's relations is checked
/// against that role's privileges and row-level security policies, as if it had run the
/// query itself. The owner is restored afterwards, on an error by the (sub)transaction's
/// abort as well as here.
pub fn as_caller<R>(f: impl FnOnce() -> R) -> R {
    as_role(unsafe { pg_sys::GetOuterUserId() }, f)
}

/// Runs `f` as `owner`, the owner of a source relation, inside a security-restricted
/// operation, as PostgreSQL's maintenance commands run a table owner's code: whatever that
/// relation runs (a view's functions, policies, casts, index expressions) runs as its owner,
/// never with the caller's privileges.
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    as_role(owner, f)
}

/// Runs `f` as `role` in a security-restricted operation. Settings that code changed
/// (a plain SET in a view's function included) are undone afterwards, so that no name the
/// extension's own statements resolve later is found through them.
///
/// The transaction is read-only meanwhile (as `SET TRANSACTION READ ONLY` makes it, and code
/// cannot turn that off after its first query): code of the source's cannot write, run DDL
/// (rename the extension's schema, put another relation under a checked name) or alter a
/// role, whoever it runs as. While it runs, the extension refuses to read metric sources for
/// a nested call (`in_source_read`), whose caller would otherwise be taken as the session's role.
fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    struct Restore(pg_sys::Oid, i32, bool, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe {
                pg_sys::SetUserIdAndSecContext(self.0, self.1);
                pg_sys::XactReadOnly = self.2;
            }
            IN_SOURCE_READ.set(self.3);
        }
    }
    let (restore, level) = unsafe {
        let mut current = pg_sys::InvalidOid;
        let mut context = 0;
        pg_sys::GetUserIdAndSecContext(&mut current, &mut context);
        let restore = Restore(current, context, pg_sys::XactReadOnly, IN_SOURCE_READ.get());
        pg_sys::SetUserIdAndSecContext(
            role,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        pg_sys::XactReadOnly = true;
        IN_SOURCE_READ.set(true);
        (restore, pg_sys::NewGUCNestLevel())
    };
    let out = f();
    // On an error, the (sub)transaction's abort undoes them.
    unsafe { pg_sys::AtEOXact_GUC(false, level) };
    drop(restore);
    out
}
