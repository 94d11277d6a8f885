//! Keeping writers and deletes apart. A foreign key would lock the experiment's row on every
//! insert, and on a busy experiment that row would become a queue of lockers. Instead, every
//! write of an experiment's rows takes a shared heavyweight lock on the experiment, held to
//! the end of the transaction (pg_locks shows it as an object lock whose classid is the OID of
//! ab_experiments), and `ab_delete_experiment` takes it exclusively before deleting: a delete
//! waits for the writers in flight, and a writer that comes after it finds the experiment gone.

use pgrx::prelude::*;

use pgrx::spi::SpiClient;

use crate::cache::{self, Relations};
use crate::catalog::{self, ExperimentRow};
use crate::errors::SpiExt;
use crate::lookup::{self, Probe};

/// The experiment id as an object lock's (objid, objsubid); ids beyond 48 bits fold, which
/// can only make unrelated experiments wait for each other, never let a write through.
fn tag(experiment_id: i64) -> (pg_sys::Oid, u16) {
    let id = experiment_id as u64;
    (pg_sys::Oid::from(id as u32), ((id >> 32) ^ (id >> 48)) as u16)
}

fn lock(class: pg_sys::Oid, experiment_id: i64, mode: u32) {
    let (objid, subid) = tag(experiment_id);
    // Also processes pending invalidations, as any lock acquisition does.
    unsafe { pg_sys::LockDatabaseObject(class, objid, subid, mode as pg_sys::LOCKMODE) };
}

/// Before writing an experiment's assignments, results or covariates: waits for a delete in
/// progress, then makes sure the experiment was not deleted or stopped before the lock was
/// taken. `Found(running)` tells whether it is still running; `Missing` that it was deleted;
/// `Stale` that the caller's cache must be reloaded first.
///
/// A cached definition needs no further check: a delete or stop committed before the lock
/// sent an invalidation that taking the lock took in (the cache is then stale). Otherwise
/// (REPEATABLE READ, or the cache off) the definition may come from a snapshot older than the
/// change, so the experiment's row is looked up among all committed rows. Either way a writer
/// that holds the lock when a stop commits still writes: `settle` waits for it.
///
/// `reloaded_under_lock`: the caller already held this lock when it loaded `handle`, so the
/// definition reflects every commit before the lock was taken; invalidations that arrived
/// since come from later commits (the call then behaves as a statement that began before
/// them) and need no further reload. Without this, a stream of commits to the extension's
/// tables (experiments created many times a second) could overtake every reload of a call.
pub fn lock_for_writing(handle: &cache::Handle, reloaded_under_lock: bool) -> Probe<bool> {
    let (rel, id) = (&handle.relations, handle.exp.id);
    lock(rel.experiments, id, pg_sys::RowExclusiveLock);
    if cache::is_stale() && !reloaded_under_lock {
        return Probe::Stale;
    }
    if handle.cached {
        return Probe::Found(handle.exp.running);
    }
    let (heap, index) = match &handle.layout {
        None => (rel.experiments, rel.experiments_pkey),
        Some(layout) => match layout.experiments {
            // This node's placement of the reference table.
            Some(shard) => (shard.heap, shard.index),
            None => return routed_experiment_status(id),
        },
    };
    match lookup::latest_status(heap, index, id, || !reloaded_under_lock && cache::is_stale()) {
        Probe::Found(status) => Probe::Found(status == "running"),
        Probe::Missing => Probe::Missing,
        Probe::Stale => Probe::Stale,
    }
}

/// The writers' locks one call took (each `lock_for_writing` takes a reference).
#[derive(Default)]
pub struct Taken(Vec<(pg_sys::Oid, i64)>);

impl Taken {
    pub fn note(&mut self, handle: &cache::Handle) {
        self.0.push((handle.relations.experiments, handle.exp.id));
    }

    /// Gives back the references this call took, when it found nothing to write (the
    /// experiment stopped): the lock then stays held only by the transaction's earlier writes,
    /// and an analysis settling the stop does not wait for a transaction that wrote nothing.
    pub fn release(self) {
        for (class, id) in self.0 {
            let (objid, subid) = tag(id);
            unsafe { pg_sys::UnlockDatabaseObject(class, objid, subid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
        }
    }
}

/// Under Citus on a node without a placement of ab_experiments: asks through Citus, with a
/// snapshot taken now.
fn routed_experiment_status(id: i64) -> Probe<bool> {
    let nsp = cache::schema();
    let running = cache::with_fresh_snapshot(|| {
        crate::security::with_pinned_search_path(|| {
            Spi::get_one_with_args::<bool>(
                &format!(
                    "SELECT status OPERATOR(pg_catalog.=) 'running' FROM {nsp}.ab_experiments WHERE id OPERATOR(pg_catalog.=) $1"
                ),
                &[id.into()],
            )
        })
    });
    match running {
        Ok(Some(running)) => Probe::Found(running),
        _ => Probe::Missing,
    }
}

/// Before an analysis reads a stopped experiment's rows: waits until the stop's transaction
/// has ended (its invalidation is then sent, so no writer takes the lock unaware of it), then
/// for every transaction that still holds the writers' lock, without taking the lock (new
/// callers never queue behind the wait). Those are the transactions that were writing when
/// the stop committed; once they end, the experiment's rows are final and every analysis
/// after it sees the same ones. The wait honours lock_timeout and statement_timeout.
///
/// Returns a fresh snapshot for the rest of the analysis under READ COMMITTED (the statement's
/// own was taken before the wait). None when there is nothing to settle: a running or draft
/// experiment, a standby (writers' locks are not replayed there), a distributed installation,
/// a transaction snapshot (it sees what it saw), or a parallel query.
pub fn settle(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Option<cache::FreshSnapshot> {
    // A transaction snapshot was taken before this statement: waiting would change nothing
    // it reads.
    if exp.status != "stopped" || unsafe { pg_sys::RecoveryInProgress() } || cache::snapshot_is_transaction_wide() {
        return None;
    }
    // Under Citus the writers run on the workers, whose locks (and xids) are not this node's.
    if crate::citus::is_distributed(client, nsp) {
        return None;
    }
    // The row's xmin: the stop's transaction, or a later one that changed the row.
    let xmin = client
        .select(
            &format!("SELECT xmin::text FROM {nsp}.ab_experiments WHERE id OPERATOR(pg_catalog.=) $1"),
            Some(1),
            &[exp.id.into()],
        )
        .or_raise()
        .first()
        .get_one::<String>()
        .or_raise()
        .and_then(|x| x.parse::<u32>().ok())
        .map(pg_sys::TransactionId::from);
    unsafe {
        if let Some(xid) = xmin.filter(|x| pg_sys::TransactionIdIsNormal(*x)) {
            if !pg_sys::TransactionIdIsCurrentTransactionId(xid) {
                pg_sys::XactLockTableWait(
                    xid,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    pg_sys::XLTW_Oper::XLTW_None,
                );
            }
        }
        let (objid, subid) = tag(exp.id);
        let locktag = pg_sys::LOCKTAG {
            locktag_field1: pg_sys::MyDatabaseId.into(),
            locktag_field2: catalog::relation_oid(client, nsp, "ab_experiments").into(),
            locktag_field3: objid.into(),
            locktag_field4: subid,
            locktag_type: pg_sys::LockTagType::LOCKTAG_OBJECT as u8,
            locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
        };
        pg_sys::WaitForLockers(locktag, pg_sys::ShareLock as pg_sys::LOCKMODE, false);
        // A parallel query (ab_summary is parallel safe) may not take a new snapshot.
        if pg_sys::IsInParallelMode() {
            return None;
        }
    }
    Some(cache::FreshSnapshot::push())
}

/// Before deleting an experiment's rows: waits for every transaction that wrote any.
/// Under Citus, one `ab_record_results` batch of an experiment at a time: a batch updates
/// per-user state rows on every shard at once, so two batches sharing users could each wait
/// for the other on a different shard (a distributed deadlock); on one node a batch locks them
/// in one order instead. Tagged by ab_results' OID and the experiment, held to the end of the
/// transaction.
pub fn lock_for_batch(results: pg_sys::Oid, experiment_id: i64) {
    lock(results, experiment_id, pg_sys::ExclusiveLock);
}

/// Gives back the reference `lock_for_batch` took, for a batch that wrote nothing (an earlier
/// batch of the transaction keeps its own).
pub fn unlock_batch(results: pg_sys::Oid, experiment_id: i64) {
    let (objid, subid) = tag(experiment_id);
    unsafe { pg_sys::UnlockDatabaseObject(results, objid, subid, pg_sys::ExclusiveLock as pg_sys::LOCKMODE) };
}

pub fn lock_for_delete(experiments: pg_sys::Oid, experiment_id: i64) {
    lock(experiments, experiment_id, pg_sys::AccessExclusiveLock);
}

/// Before recomputing an experiment's per-user state: waits for its writers and keeps new ones
/// out (a share lock conflicts with theirs, not with another rebuild's).
pub fn lock_for_rebuild(experiments: pg_sys::Oid, experiment_id: i64) {
    lock(experiments, experiment_id, pg_sys::ShareLock);
}

/// Row trigger before a delete of an experiment: takes the delete's lock on the node where the
/// row is deleted. Under Citus the delete runs on every node holding a placement of
/// ab_experiments, so it waits there for the writers that Citus delegated to that node.
#[pg_trigger]
fn ab_lock_experiment_for_delete<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let old = trigger.old().ok_or(pgrx::PgTriggerError::NullTriggerData)?;
    // Without the id there is no lock to take, and deleting without it would not wait for
    // the experiment's writers.
    let id: i64 = old.get_by_name("id").ok().flatten().unwrap_or_else(|| {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "ab_lock_experiment_for_delete: the deleted row has no bigint \"id\" column",
            Some("the trigger belongs on ab_experiments".into()),
        )
    });
    let relid = trigger.relation()?.oid();
    // The class of the writers' lock is the OID of this node's ab_experiments (the trigger may
    // fire on a Citus shard of it).
    let experiments =
        unsafe { pg_sys::get_relname_relid(c"ab_experiments".as_ptr(), pg_sys::get_rel_namespace(relid)) };
    lock_for_delete(if experiments == pg_sys::InvalidOid { relid } else { experiments }, id);
    Ok(Some(old))
}

/// Serializes the first recordings of new metric names of one experiment, so that its bound
/// on distinct metric names holds under READ COMMITTED. The lock's class is the OID of
/// ab_experiments' primary key, which every cache watches: backends whose caches disagree on
/// it would not wait for each other.
pub fn lock_metric_names(rel: &Relations, experiment_id: i64) {
    lock(rel.experiments_pkey, experiment_id, pg_sys::ExclusiveLock);
}
