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

unsafe fn int8_key(key: &mut pg_sys::ScanKeyData, attno: i16, value: i64) {
    pg_sys::ScanKeyEntryInitialize(
        key,
        0,
        attno,
        pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
        pg_sys::InvalidOid,
        pg_sys::InvalidOid,
        pg_sys::Oid::from(pg_sys::F_INT8EQ),
        value.into_datum().unwrap(),
    );
}

/// Locks and opens the heap and one of its indexes, then scans the index for `keys` and
/// reads column `column` of the first visible row.
unsafe fn probe(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    visibility: Visibility,
    stale: impl Fn() -> bool,
    keys: impl FnOnce(pg_sys::Relation, &mut [pg_sys::ScanKeyData; 2]) -> usize,
    column: i32,
) -> Probe<Option<pg_sys::Datum>> {
    pg_sys::LockRelationOid(heap, LOCK);
    pg_sys::LockRelationOid(index, LOCK);
    if stale() {
        return Probe::Stale;
    }
    let heap_rel = pg_sys::try_relation_open(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
    if heap_rel.is_null() {
        return Probe::Stale;
    }
    let index_rel = pg_sys::try_relation_open(index, pg_sys::NoLock as pg_sys::LOCKMODE);
    if index_rel.is_null()
        || (*index_rel).rd_index.is_null()
        || (*(*index_rel).rd_index).indrelid != heap
        || !(*(*index_rel).rd_index).indisvalid
    {
        if !index_rel.is_null() {
            pg_sys::relation_close(index_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::relation_close(heap_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        return Probe::Stale;
    }
    let mut key_data: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
    let nkeys = keys(index_rel, &mut key_data) as i32;
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
        let datum = pg_sys::slot_getattr(slot, column, &mut is_null);
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
    found
}

/// The variant_id stored for (experiment_id, user_id), if any is visible to the active
/// snapshot. `heap` and `index` are ab_assignments and its primary key (experiment_id, user_id).
pub fn stored_variant(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    experiment_id: i64,
    user_id: &str,
    stale: impl Fn() -> bool,
) -> Probe<i64> {
    let keys = |index_rel: pg_sys::Relation, keys: &mut [pg_sys::ScanKeyData; 2]| unsafe {
        int8_key(&mut keys[0], 1, experiment_id);
        // Compare with the index's own collation, or the btree would be searched in another order.
        let collation = *(*index_rel).rd_indcollation.add(1);
        pg_sys::ScanKeyEntryInitialize(
            &mut keys[1],
            0,
            2,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::InvalidOid,
            collation,
            pg_sys::Oid::from(pg_sys::F_TEXTEQ),
            user_id.into_datum().unwrap(),
        );
        2
    };
    match unsafe { probe(heap, index, Visibility::Active, stale, keys, 3) } {
        Probe::Found(Some(d)) => unsafe { i64::from_datum(d, false) }.map_or(Probe::Missing, Probe::Found),
        Probe::Found(None) | Probe::Missing => Probe::Missing,
        Probe::Stale => Probe::Stale,
    }
}

/// Whether `heap` has a row whose first index column (a bigint experiment id) is `key`.
pub fn has_row(
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    key: i64,
    visibility: Visibility,
    stale: impl Fn() -> bool,
) -> Probe<()> {
    let keys = |_: pg_sys::Relation, keys: &mut [pg_sys::ScanKeyData; 2]| unsafe {
        int8_key(&mut keys[0], 1, key);
        1
    };
    match unsafe { probe(heap, index, visibility, stale, keys, 1) } {
        Probe::Found(_) => Probe::Found(()),
        Probe::Missing => Probe::Missing,
        Probe::Stale => Probe::Stale,
    }
}
