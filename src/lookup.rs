//! The assigned-user probe of the hot path: one index lookup on ab_assignments' primary key
//! through the access-method API, with no SPI and no executor, under the caller's snapshot.

use pgrx::prelude::*;
use pgrx::IntoDatum;

/// The variant_id stored for (experiment_id, user_id), if any is visible to the active
/// snapshot. `heap` and `index` are ab_assignments and its primary key (experiment_id, user_id).
pub fn stored_variant(heap: pg_sys::Oid, index: pg_sys::Oid, experiment_id: i64, user_id: &str) -> Option<i64> {
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let heap_rel = pg_sys::table_open(heap, lock);
        let index_rel = pg_sys::index_open(index, lock);
        let mut keys: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
        // Compare with the index's own collation, or the btree would be searched in another order.
        let collation = *(*index_rel).rd_indcollation.add(1);
        pg_sys::ScanKeyEntryInitialize(
            &mut keys[0],
            0,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::Oid::from(pg_sys::F_INT8EQ),
            experiment_id.into_datum().unwrap(),
        );
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
        let scan = pg_sys::index_beginscan(heap_rel, index_rel, pg_sys::GetActiveSnapshot(), 2, 0);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), 2, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(heap_rel, std::ptr::null_mut());
        let mut found = None;
        if pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            let mut is_null = false;
            let datum = pg_sys::slot_getattr(slot, 3, &mut is_null);
            if !is_null {
                found = i64::from_datum(datum, false);
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index_rel, lock);
        pg_sys::table_close(heap_rel, lock);
        found
    }
}
