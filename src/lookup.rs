//! Direct index probes through the access-method API, with no SPI and no executor: the
//! assigned-user lookup of the hot path, and the checks that keep writers and deletes apart.
//!
//! Each relation is locked (AccessShareLock) as any table read locks it, and the lock is kept
//! until the transaction ends, so TRUNCATE, DROP and the last phases of REINDEX CONCURRENTLY
//! wait for the transaction instead of removing what it is reading. Taking a lock for the
//! first time in a transaction processes pending invalidations first; when they touch the
//! extension's tables the caller's cached relation OIDs may name a replaced index or a dropped
//! table, so the probe answers `Stale` and the caller reloads its cache and tries again.

use pgrx::prelude::*;
use pgrx::IntoDatum;

pub enum Probe<T> {
    Found(T),
    Missing,
    /// The relations changed under the caller's cache: reload and retry.
    Stale,
}

/// Which snapshot decides visibility.
#[derive(Clone, Copy)]
pub enum Visibility {
    /// The caller's statement snapshot, as a query would see.
    Active,
    /// Everything committed by now, whatever the isolation level: after waiting for a lock,
    /// what another transaction did while we waited.
    Latest,
}

const LOCK: pg_sys::LOCKMODE = pg_sys::AccessShareLock as pg_sys::LOCKMODE;

/// One equality condition of a probe: the heap column it is on, that column's type and the
/// btree operator family the index must compare it with, the value and its equality function.
struct KeyColumn {
    name: &'static std::ffi::CStr,
    type_oid: pg_sys::Oid,
    opfamily: pg_sys::Oid,
    value: pg_sys::Datum,
    eq: pg_sys::Oid,
}

fn int8_key(name: &'static std::ffi::CStr, value: i64) -> KeyColumn {
    KeyColumn {
        name,
        type_oid: pg_sys::INT8OID,
        opfamily: pg_sys::INTEGER_BTREE_FAM_OID,
        value: value.into_datum().unwrap(),
        eq: pg_sys::Oid::from(pg_sys::F_INT8EQ),
    }
}

/// The attribute number of a live column of `rel` with this name and type.
unsafe fn column(rel: pg_sys::Relation, name: &std::ffi::CStr, type_oid: pg_sys::Oid) -> Option<i16> {
    let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
    desc.iter()
        .find(|a| !a.attisdropped && std::ffi::CStr::from_ptr(a.attname.data.as_ptr()) == name)
        .filter(|a| a.atttypid == type_oid)
        .map(|a| a.attnum)
}

/// Whether the direct probe may read `heap` through `index`: a plain heap table, and a valid
/// btree index on it, neither partial nor on expressions, whose leading columns are `keys`
/// with the expected types and operator families. Anything else (a partitioned table, another
/// access method, an index a DBA rebuilt differently) is read through SPI instead.
unsafe fn probe_supported(
    heap_rel: pg_sys::Relation,
    index_rel: pg_sys::Relation,
    heap: pg_sys::Oid,
    keys: &[KeyColumn],
) -> bool {
    let (h, i) = (&*(*heap_rel).rd_rel, &*(*index_rel).rd_rel);
    if h.relkind as u8 != pg_sys::RELKIND_RELATION
        || h.relam != pg_sys::HEAP_TABLE_AM_OID
        || i.relkind as u8 != pg_sys::RELKIND_INDEX
        || i.relam != pg_sys::BTREE_AM_OID
    {
        return false;
    }
    let index = (*index_rel).rd_index;
    if index.is_null() || (*index).indrelid != heap || !(*index).indisvalid {
        return false;
    }
    let tuple = (*index_rel).rd_indextuple;
    if tuple.is_null()
        || !pg_sys::heap_attisnull(tuple, pg_sys::Anum_pg_index_indexprs as i32, std::ptr::null_mut())
        || !pg_sys::heap_attisnull(tuple, pg_sys::Anum_pg_index_indpred as i32, std::ptr::null_mut())
        || ((*index).indnkeyatts as usize) < keys.len()
    {
        return false;
    }
    let indkey = (*index).indkey.values.as_slice(keys.len());
    keys.iter().enumerate().all(|(n, k)| {
        column(heap_rel, k.name, k.type_oid) == Some(indkey[n])
            && *(*index_rel).rd_opfamily.add(n) == k.opfamily
            && *(*index_rel).rd_opcintype.add(n) == k.type_oid
    })
}

/// Locks and opens the heap and one of its indexes, then scans the index for `keys` and
/// reads column `read` (by name and type) of the first visible row. None when the relations
/// are not ones the probe may read (`probe_supported`): the caller then reads through SPI.
unsafe fn probe(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    visibility: Visibility,
    stale: impl Fn() -> bool,
    keys: &[KeyColumn],
    read: (&'static std::ffi::CStr, pg_sys::Oid),
) -> Option<Probe<Option<pg_sys::Datum>>> {
    pg_sys::LockRelationOid(heap, LOCK);
    if index != pg_sys::InvalidOid {
        pg_sys::LockRelationOid(index, LOCK);
    }
    if stale() {
        return Some(Probe::Stale);
    }
    let heap_rel = pg_sys::try_relation_open(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
    if heap_rel.is_null() {
        return Some(Probe::Stale);
    }
    let index_rel = if index == pg_sys::InvalidOid {
        std::ptr::null_mut()
    } else {
        pg_sys::try_relation_open(index, pg_sys::NoLock as pg_sys::LOCKMODE)
    };
    let read_column = if index_rel.is_null() { None } else { column(heap_rel, read.0, read.1) };
    let Some(read_column) = read_column.filter(|_| probe_supported(heap_rel, index_rel, heap, keys)) else {
        if !index_rel.is_null() {
            pg_sys::relation_close(index_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::relation_close(heap_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        return None;
    };
    let mut key_data: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
    assert!(keys.len() <= key_data.len());
    for (n, k) in keys.iter().enumerate() {
        // Compare with the index's own collation, or the btree would be searched in another order.
        pg_sys::ScanKeyEntryInitialize(
            &mut key_data[n],
            0,
            (n + 1) as i16,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::InvalidOid,
            *(*index_rel).rd_indcollation.add(n),
            k.eq,
            k.value,
        );
    }
    let nkeys = keys.len() as i32;
    let snapshot = match visibility {
        Visibility::Active => pg_sys::GetActiveSnapshot(),
        Visibility::Latest => pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()),
    };
    let scan = crate::compat::index_beginscan(heap_rel, index_rel, snapshot, nkeys);
    pg_sys::index_rescan(scan, key_data.as_mut_ptr(), nkeys, std::ptr::null_mut(), 0);
    let slot = pg_sys::table_slot_create(heap_rel, std::ptr::null_mut());
    let mut found = Probe::Missing;
    if pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
        let mut is_null = false;
        let datum = pg_sys::slot_getattr(slot, read_column as i32, &mut is_null);
        found = Probe::Found((!is_null).then_some(datum));
    }
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    pg_sys::index_endscan(scan);
    if let Visibility::Latest = visibility {
        pg_sys::UnregisterSnapshot(snapshot);
    }
    // Closed, but still locked until the transaction ends.
    pg_sys::relation_close(index_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    pg_sys::relation_close(heap_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    Some(found)
}

/// The variant_id stored for (experiment_id, user_id), if any is visible to the active
/// snapshot. `heap` and `index` are ab_assignments and its primary key (experiment_id, user_id);
/// when the probe cannot read them (`probe_supported`), `query` looks the user up through SPI.
pub fn stored_variant(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    experiment_id: i64,
    user_id: &str,
    stale: impl Fn() -> bool,
    query: impl FnOnce() -> Option<i64>,
) -> Probe<i64> {
    let keys = [
        int8_key(c"experiment_id", experiment_id),
        KeyColumn {
            name: c"user_id",
            type_oid: pg_sys::TEXTOID,
            opfamily: pg_sys::TEXT_BTREE_FAM_OID,
            value: user_id.into_datum().unwrap(),
            eq: pg_sys::Oid::from(pg_sys::F_TEXTEQ),
        },
    ];
    match unsafe { probe(heap, index, Visibility::Active, stale, &keys, (c"variant_id", pg_sys::INT8OID)) } {
        Some(Probe::Found(Some(d))) => unsafe { i64::from_datum(d, false) }.map_or(Probe::Missing, Probe::Found),
        Some(Probe::Found(None) | Probe::Missing) => Probe::Missing,
        Some(Probe::Stale) => Probe::Stale,
        None => query().map_or(Probe::Missing, Probe::Found),
    }
}

/// Whether `heap` has a row whose bigint `column` (the first column of `index`: `id` of
/// ab_experiments, `experiment_id` of the per-user tables) is `key`. When the probe cannot
/// read them, the table is queried through SPI with the same snapshot.
pub fn has_row(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    column: &'static std::ffi::CStr,
    key: i64,
    visibility: Visibility,
    stale: impl Fn() -> bool,
) -> Probe<()> {
    let keys = [int8_key(column, key)];
    match unsafe { probe(heap, index, visibility, stale, &keys, (column, pg_sys::INT8OID)) } {
        Some(Probe::Found(_)) => Probe::Found(()),
        Some(Probe::Missing) => Probe::Missing,
        Some(Probe::Stale) => Probe::Stale,
        None if query_has_row(heap, column, key, visibility) => Probe::Found(()),
        None => Probe::Missing,
    }
}

/// The status of experiment `id` among all committed rows of ab_experiments (`heap`, with its
/// primary key `index`): what a writer checks after taking its lock when its definition may
/// come from an older snapshot.
pub fn latest_status(heap: pg_sys::Oid, index: pg_sys::Oid, id: i64, stale: impl Fn() -> bool) -> Probe<String> {
    let keys = [int8_key(c"id", id)];
    let text = |d: Option<pg_sys::Datum>| d.and_then(|d| unsafe { String::from_datum(d, false) }).unwrap_or_default();
    match unsafe { probe(heap, index, Visibility::Latest, stale, &keys, (c"status", pg_sys::TEXTOID)) } {
        Some(Probe::Found(d)) => Probe::Found(text(d)),
        Some(Probe::Missing) => Probe::Missing,
        Some(Probe::Stale) => Probe::Stale,
        None => query_row(heap, c"id", id, Visibility::Latest, "status::text")
            .map_or(Probe::Missing, |s| Probe::Found(s.unwrap_or_default())),
    }
}

/// A text expression of experiment `id`'s row of ab_experiments (`heap`) among all committed
/// rows: what a call whose definition comes from an older snapshot checks before serving it.
pub fn latest_experiment_text(heap: pg_sys::Oid, id: i64, select: &str) -> Option<String> {
    query_row(heap, c"id", id, Visibility::Latest, select).flatten()
}

/// `has_row` through SPI (a partitioned table, for one): the statement runs with the chosen
/// snapshot, as the foreign-key checks run theirs.
fn query_has_row(heap: pg_sys::Oid, column: &std::ffi::CStr, key: i64, visibility: Visibility) -> bool {
    query_row(heap, column, key, visibility, "NULL::text").is_some()
}

/// The first row of `heap` whose bigint `column` is `key`, read through SPI with the chosen
/// snapshot: `Some(select)`, the text expression `select` of it.
fn query_row(
    heap: pg_sys::Oid,
    column: &std::ffi::CStr,
    key: i64,
    visibility: Visibility,
    select: &str,
) -> Option<Option<String>> {
    let sql = unsafe {
        let name = pg_sys::quote_qualified_identifier(
            pg_sys::get_namespace_name(pg_sys::get_rel_namespace(heap)),
            pg_sys::get_rel_name(heap),
        );
        format!(
            "SELECT {select} FROM {} WHERE {} OPERATOR(pg_catalog.=) $1 LIMIT 1",
            std::ffi::CStr::from_ptr(name).to_string_lossy(),
            std::ffi::CStr::from_ptr(pg_sys::quote_identifier(column.as_ptr())).to_string_lossy()
        )
    };
    crate::security::with_pinned_search_path(|| {
        Spi::connect(|_| unsafe {
            let cmd = std::ffi::CString::new(sql).expect("no NUL in a quoted name");
            let mut argtypes = [pg_sys::INT8OID];
            let plan = pg_sys::SPI_prepare(cmd.as_ptr(), 1, argtypes.as_mut_ptr());
            if plan.is_null() {
                crate::errors::raise(
                    pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "ab_testing: could not plan the row check",
                    None,
                );
            }
            let mut values = [key.into_datum().unwrap()];
            let nulls = c" ";
            let snapshot = match visibility {
                Visibility::Active => pg_sys::GetActiveSnapshot(),
                Visibility::Latest => pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()),
            };
            pg_sys::SPI_execute_snapshot(
                plan,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                snapshot,
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            if let Visibility::Latest = visibility {
                pg_sys::UnregisterSnapshot(snapshot);
            }
            pg_sys::SPI_freeplan(plan);
            let table = pg_sys::SPI_tuptable;
            (pg_sys::SPI_processed > 0 && !table.is_null()).then(|| {
                let mut is_null = false;
                let d = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut is_null);
                if is_null {
                    None
                } else {
                    String::from_datum(d, false)
                }
            })
        })
    })
}
