//! jsonb at the hot path's boundary without a text round trip: `RawJsonb` takes an argument
//! as it comes (parsed only if needed) and `CachedJsonb` returns a jsonb built once and
//! copied per call. pgrx's own `JsonB` prints and parses the value on every call.

use std::rc::Rc;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::nullable::Nullable;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::JsonB;

/// A jsonb argument, left unparsed.
pub struct RawJsonb(pg_sys::Datum);

impl RawJsonb {
    /// The jsonb's text form (its size is what limits are stated in). An argument whose stored
    /// form is over `max_bytes` is refused (22023) before anything is copied to the Rust heap.
    pub fn text_at_most(&self, what: &str, max_bytes: usize) -> String {
        self.text_bounded(what, max_bytes, pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
    }

    fn text_bounded(&self, what: &str, max_bytes: usize, code: pgrx::PgSqlErrorCode) -> String {
        unsafe {
            let raw = pg_sys::toast_raw_datum_size(self.0);
            if raw > max_bytes {
                crate::errors::raise(code, format!("{what} is {raw} bytes, at most {max_bytes} are allowed"), None);
            }
            // A full detoast: a stored value of up to 126 bytes has a 1-byte header, and a
            // `Jsonb` root is only found after a 4-byte one.
            let detoasted = pg_sys::pg_detoast_datum(self.0.cast_mut_ptr());
            let cstr = pg_sys::JsonbToCString(
                std::ptr::null_mut(),
                &mut (*(detoasted as *mut pg_sys::Jsonb)).root,
                pgrx::varlena::varsize_any_exhdr(detoasted) as i32,
            );
            let text = std::ffi::CStr::from_ptr(cstr).to_string_lossy().into_owned();
            pg_sys::pfree(cstr.cast());
            if detoasted != self.0.cast_mut_ptr() {
                pg_sys::pfree(detoasted.cast());
            }
            text
        }
    }

    /// Parses the value (at most `max_bytes` stored); too deep a nesting (over 128 levels) is
    /// an error message, not a crash.
    pub fn try_value_at_most(&self, what: &str, max_bytes: usize) -> Result<serde_json::Value, String> {
        parse(&self.text_at_most(what, max_bytes))
    }
}

/// Parses jsonb text; serde_json stops at 128 levels of nesting.
pub fn parse(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            format!("it is nested more than {MAX_DEPTH} levels deep")
        } else {
            e.to_string()
        }
    })
}

/// How deep a jsonb value the extension reads (serde_json's recursion limit).
pub const MAX_DEPTH: usize = 127;

/// A jsonb value read from a table or an argument, parsed without panicking: a value nested
/// too deeply (or otherwise unreadable) raises 22023 instead of an internal error.
pub struct SafeJsonb(pub serde_json::Value);

impl FromDatum for SafeJsonb {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        let text = RawJsonb(datum).text_bounded(
            "a stored jsonb value",
            MAX_STORED_BYTES,
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        );
        match parse(&text) {
            Ok(v) => Some(SafeJsonb(v)),
            Err(e) => crate::errors::invalid(format!("a stored jsonb value cannot be read: {e}")),
        }
    }
}

impl IntoDatum for SafeJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        JsonB(self.0).into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl SqlTranslatable for SafeJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(SafeJsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// The largest stored jsonb (a definition's metrics, a variant's config) read into the Rust heap.
pub const MAX_STORED_BYTES: usize = 4 << 20;

impl FromDatum for RawJsonb {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        (!is_null).then_some(RawJsonb(datum))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

unsafe impl SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawJsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// A jsonb value kept as its varlena bytes, returned by copying.
#[derive(Clone)]
pub struct CachedJsonb(Rc<Vec<u8>>);

impl CachedJsonb {
    /// Builds the jsonb once (this does parse).
    pub fn new(value: serde_json::Value) -> CachedJsonb {
        let datum = JsonB(value).into_datum().expect("jsonb_in returns a value");
        unsafe {
            let ptr = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let len = pgrx::varsize_any(ptr);
            CachedJsonb(Rc::new(std::slice::from_raw_parts(ptr as *const u8, len).to_vec()))
        }
    }
}

impl CachedJsonb {
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

unsafe impl BoxRet for CachedJsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        unsafe {
            let copy = pg_sys::palloc(self.0.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), copy, self.0.len());
            fcinfo.return_raw_datum(pg_sys::Datum::from(copy))
        }
    }
}

unsafe impl SqlTranslatable for CachedJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(CachedJsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}
