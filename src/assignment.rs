//! `ab_get_variant`: the hot path. A stored assignment wins; a new user is checked against
//! the targeting, bucketed, and stored once (racing sessions agree through the primary key).

use ab_core::bucketing::{point, variant_for_point};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::cache::{self, CachedExperiment};
use crate::catalog::ExperimentRef;
use crate::errors::{raise, SpiExt};
use crate::guard;
use crate::jsonb::{CachedJsonb, RawJsonb};
use crate::lookup::{self, Probe};

/// Longest user or session id accepted, in bytes (index entries must stay well under a page).
pub const MAX_ID_BYTES: usize = 512;

pub fn check_id(what: &str, id: &str) {
    if id.is_empty() {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("{what} must not be empty"), None);
    }
    if id.len() > MAX_ID_BYTES {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} is {} bytes long, at most {MAX_ID_BYTES} are allowed", id.len()),
            None,
        );
    }
}

/// A call whose cache keeps going stale (the extension's tables are being replaced as it
/// runs) gives up after this many reloads.
pub const MAX_RELOADS: usize = 10;

pub fn tables_kept_changing() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "the ab_testing tables kept changing during the call",
        Some("retry the transaction".into()),
    )
}

fn get_variant(
    r: ExperimentRef<'_>,
    user_id: &str,
    attributes: Option<RawJsonb>,
    session_id: Option<&str>,
) -> Option<CachedJsonb> {
    check_id("user_id", user_id);
    if let Some(s) = session_id {
        check_id("session_id", s);
    }
    // Inside a transaction block, changes committed since it began (a rollout's rollback)
    // arrive only at a lock this backend does not hold yet: take them in now, so that the next
    // call of every session serves what was committed. Cheap when there are none (a flag).
    unsafe {
        if pg_sys::IsTransactionBlock() {
            pg_sys::AcceptInvalidationMessages();
        }
    }
    // Set once the experiment's write lock is held (it is kept to the end of the transaction).
    let mut locked = false;
    let mut taken = guard::Taken::default();
    let mut parsed = None;
    for attempt in 0..MAX_RELOADS {
        let handle = cache::lookup(r);
        let cache::Handle { exp, plans, .. } = &handle;
        if !exp.running {
            taken.release();
            return None;
        }
        // A rollback committed after this transaction's snapshot (REPEATABLE READ): the kill
        // switch holds there too, for assigned and new users.
        let rolled_back = rolled_back_since(&handle);
        // An assigned user: one index probe, no SPI. After the first attempt the definition was
        // loaded after this call's first lock, so it is current for this statement.
        match stored_variant(&handle, user_id, attempt > 0) {
            Probe::Found(_) if rolled_back => return exp.control_output(),
            Probe::Found(v) => return exp.output(v),
            Probe::Stale => continue,
            Probe::Missing => {}
        }
        // In a layer, only users whose layer point falls in the experiment's range may enroll.
        if let Some(l) = &exp.layer_range {
            if !(l.start..l.end).contains(&point(&l.salt, user_id)) {
                return None;
            }
        }
        if !exp.segments.is_empty() && !exp.segments.matches(read_attributes(&attributes, &mut parsed)) {
            return None;
        }
        // A cluster-randomized experiment buckets the user's cluster: every user of a cluster
        // gets the same variant, and a user without one is not enrolled.
        let cluster = match &exp.randomization_unit {
            None => None,
            Some(unit) => Some(
                ab_core::definition::cluster_of(unit, read_attributes(&attributes, &mut parsed))
                    .unwrap_or_else(|e| crate::errors::core_error(e))?,
            ),
        };
        let candidate = if rolled_back {
            exp.rollout_control?
        } else {
            new_assignment(&exp, cluster.as_deref().unwrap_or(user_id))?
        };
        let probe = guard::lock_for_writing(&handle, locked);
        taken.note(&handle);
        locked = true;
        match probe {
            Probe::Found(true) => {}
            // Stopped since the definition's snapshot (REPEATABLE READ).
            Probe::Found(false) => {
                taken.release();
                return None;
            }
            Probe::Stale => continue,
            // Deleted while this call ran: nothing to enroll in.
            Probe::Missing => return None,
        }
        // Experiments with breakdowns store the listed attributes the user has.
        let stored = match &plans.insert_assignment_with_attributes {
            Some(plan) if !exp.breakdowns.is_empty() => {
                let values =
                    ab_core::definition::breakdown_values(&exp.breakdowns, read_attributes(&attributes, &mut parsed))
                        .unwrap_or_else(|e| crate::errors::core_error(e));
                Some((plan, values.map(serde_json::Value::Object).map(pgrx::JsonB)))
            }
            _ => None,
        };
        let variant_id = crate::security::with_pinned_search_path(|| {
            Spi::connect_mut(|client| {
                let mut args = vec![exp.id.into(), user_id.into(), candidate.into(), session_id.into()];
                if plans.has_periods {
                    args.push(exp.period.into());
                }
                let plan = match stored {
                    Some((plan, values)) => {
                        args.push(values.into());
                        plan
                    }
                    None => &plans.insert_assignment,
                };
                let inserted = first_i64(plan.update(client, Some(1), &args).or_raise());
                // None: another session assigned this user first (or after our snapshot); a new
                // statement's snapshot sees its row.
                inserted.or_else(|| {
                    first_i64(
                        plans.find_assignment.select(client, Some(1), &[exp.id.into(), user_id.into()]).or_raise(),
                    )
                })
            })
        })?;
        return if rolled_back { exp.control_output() } else { exp.output(variant_id) };
    }
    tables_kept_changing()
}

/// Whether a ramping rollout whose definition this call read from an older snapshot (one not
/// kept in the cache: REPEATABLE READ, SERIALIZABLE) has been rolled back since.
fn rolled_back_since(handle: &cache::Handle) -> bool {
    let exp = &handle.exp;
    if handle.cached || exp.rollout_control.is_none() || exp.serve.is_some() || handle.layout.is_some() {
        return false;
    }
    let state = lookup::latest_experiment_text(
        handle.relations.experiments,
        exp.id,
        "allocation OPERATOR(pg_catalog.->>) 'state'",
    );
    state.as_deref() == Some("rolled_back")
}

/// Largest attributes argument read (its stored size): the parsed value lives on the Rust heap.
pub const MAX_ATTRIBUTES_BYTES: usize = 1 << 20;

/// The attributes argument parsed (once per call); unreadable attributes are 22023.
fn read_attributes<'p>(
    attributes: &Option<RawJsonb>,
    parsed: &'p mut Option<serde_json::Value>,
) -> &'p serde_json::Value {
    parsed.get_or_insert_with(|| match attributes {
        None => serde_json::Value::Null,
        Some(a) => a.try_value_at_most("attributes", MAX_ATTRIBUTES_BYTES).unwrap_or_else(|e| {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("attributes cannot be read: {e}"), None)
        }),
    })
}

/// The user's stored variant: a direct probe of ab_assignments, or under Citus of this node's
/// shard holding the user; when another node holds it, or the table is one the probe does not
/// read (partitioned, say), the kept query.
/// `reloaded`: the definition was loaded after a lock this call took, so invalidations that
/// arrive now come from later commits and need no reload (the relations are still checked).
pub fn stored_variant(handle: &cache::Handle, user_id: &str, reloaded: bool) -> Probe<i64> {
    let query = || {
        crate::security::with_pinned_search_path(|| {
            Spi::connect(|client| {
                first_i64(
                    handle
                        .plans
                        .find_assignment
                        .select(client, Some(1), &[handle.exp.id.into(), user_id.into()])
                        .or_raise(),
                )
            })
        })
    };
    let (heap, index) = match &handle.layout {
        None => (handle.relations.assignments, handle.relations.assignments_pkey),
        Some(layout) => match layout.assignments_shard(user_id) {
            Some(shard) => (shard.heap, shard.index),
            None => return query().map_or(Probe::Missing, Probe::Found),
        },
    };
    lookup::stored_variant(heap, index, handle.exp.id, user_id, || !reloaded && cache::is_stale(), query)
}

fn first_i64(table: pgrx::spi::SpiTupleTable<'_>) -> Option<i64> {
    if table.is_empty() {
        None
    } else {
        table.first().get_one::<i64>().or_raise()
    }
}

/// The variant of a new user, bucketed by `unit`: the user id, or the user's cluster.
fn new_assignment(exp: &CachedExperiment, unit: &str) -> Option<i64> {
    let idx = variant_for_point(&exp.widths, point(&exp.salt, unit))?;
    Some(exp.variants[idx].id)
}

/// The user's variant: {"variant", "is_control", "config"}, or NULL when the experiment is not
/// running, the user does not match the targeting, falls outside the enrolled traffic, (in a
/// layer) belongs to the holdout or another experiment's range, or (in a cluster-randomized
/// experiment) has no value of the unit attribute.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_get_variant(
    experiment: Option<&str>,
    user_id: Option<&str>,
    attributes: default!(Option<RawJsonb>, "'{}'"),
    session_id: default!(Option<&str>, "NULL"),
) -> Option<CachedJsonb> {
    get_variant(ExperimentRef::Name(experiment?), user_id?, attributes, session_id)
}

#[pg_extern(name = "ab_get_variant", volatile, parallel_unsafe)]
fn ab_get_variant_by_id(
    experiment: Option<i64>,
    user_id: Option<&str>,
    attributes: default!(Option<RawJsonb>, "'{}'"),
    session_id: default!(Option<&str>, "NULL"),
) -> Option<CachedJsonb> {
    get_variant(ExperimentRef::Id(experiment?), user_id?, attributes, session_id)
}
