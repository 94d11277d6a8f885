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
    /// The jsonb's text form (its size is what limits are stated in).
    pub fn text(&self) -> String {
        unsafe {
            let detoasted = pg_sys::pg_detoast_datum_packed(self.0.cast_mut_ptr());
            let cstr = pg_sys::JsonbToCString(
                std::ptr::null_mut(),
                &mut (*(detoasted as *mut pg_sys::Jsonb)).root,
                pgrx::varlena::varsize_any_exhdr(detoasted) as i32,
            );
            std::ffi::CStr::from_ptr(cstr).to_string_lossy().into_owned()
        }
    }

    /// Parses the value; too deep a nesting (over 128 levels) is an error, not a crash.
    pub fn try_value(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.text()).map_err(|e| e.to_string())
    }
}

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
