//! `ab_record_result`: one observation, attributed to the user's assigned variant; and
//! `ab_record_covariate`.

use ab_core::definition::{
    binary_value, check_metric_name, check_value, composed_recorded, quantile_recorded, ratio_recorded,
    source_recorded, undeclared_metric, MAX_METRICS,
};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::assignment::{check_id, tables_kept_changing, MAX_RELOADS};
use crate::cache;
use crate::catalog::ExperimentRef;
use crate::errors::{core_error, not_found, raise, required, SpiExt};
use crate::guard;
use crate::lookup::Probe;

/// Before the first recording of a metric name this backend has not seen for the experiment:
/// refuses a name that would take the experiment past MAX_METRICS distinct metric names
/// (declared or recorded). Names recorded before are found with one index descent. Returns
/// whether the name was not known before this call. `row`: the position in a batch of the
/// first result under the name, named in the error.
pub(crate) fn admit_metric(handle: &cache::Handle, metric: &str, row: Option<i64>) -> bool {
    if handle.exp.known_metrics.borrow().contains(metric) {
        return false;
    }
    // ab_record_result pins no search_path of its own (see crate::security): this rare path does.
    crate::security::with_pinned_search_path(|| count_and_admit(handle, metric, row));
    true
}

/// admit_metric for a name this backend has not seen: counts the experiment's names.
fn count_and_admit(handle: &cache::Handle, metric: &str, row: Option<i64>) {
    let (exp, rel) = (&handle.exp, &handle.relations);
    let nsp = cache::schema();
    Spi::connect(|client| {
        let names = |sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]| -> Vec<String> {
            client.select(sql, None, args).or_raise().map(|row| row.get::<String>(1).or_raise().unwrap()).collect()
        };
        let exists = format!(
            "SELECT metric_name FROM {nsp}.ab_results WHERE experiment_id OPERATOR(pg_catalog.=) $1 \
             AND metric_name OPERATOR(pg_catalog.=) $2 LIMIT 1"
        );
        if names(&exists, &[exp.id.into(), metric.into()]).is_empty() {
            guard::lock_metric_names(rel, exp.id);
            // Distinct recorded names by a loose index scan, at most one past the bound (Citus
            // runs recursive CTEs only with a filter on the distribution column: there, each
            // shard's index gives its names).
            let recorded = if handle.layout.is_some() {
                format!(
                    "SELECT DISTINCT metric_name FROM {nsp}.ab_results WHERE experiment_id OPERATOR(pg_catalog.=) $1 LIMIT {}",
                    MAX_METRICS + 1
                )
            } else {
                format!(
                "WITH RECURSIVE m(name) AS ( \
                   SELECT pg_catalog.min(metric_name) FROM {nsp}.ab_results WHERE experiment_id OPERATOR(pg_catalog.=) $1 \
                   UNION ALL \
                   SELECT (SELECT pg_catalog.min(r.metric_name) FROM {nsp}.ab_results r \
                           WHERE r.experiment_id OPERATOR(pg_catalog.=) $1 AND r.metric_name OPERATOR(pg_catalog.>) m.name) \
                   FROM m WHERE m.name IS NOT NULL) \
                 SELECT name FROM m WHERE name IS NOT NULL LIMIT {}",
                    MAX_METRICS + 1
                )
            };
            // SPI reads with the statement's snapshot until the transaction writes: count with
            // one taken after the lock, which sees the names of the sessions it waited for.
            let recorded = cache::with_fresh_snapshot(|| names(&recorded, &[exp.id.into()]));
            let mut known = exp.known_metrics.borrow_mut();
            known.extend(recorded);
            if !known.contains(metric) && known.len() >= MAX_METRICS {
                raise(
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!(
                        "{}experiment \"{}\" already has {MAX_METRICS} metrics, the most one experiment may have",
                        row.map_or(String::new(), |r| format!("row {r}: ")),
                        ab_core::names::printable(&exp.name)
                    ),
                    Some("record under one of its metric names; ab_analyze lists them".into()),
                );
            }
        }
        exp.known_metrics.borrow_mut().insert(metric.to_string());
        // Known from now on, unless this transaction rolls back (the cache is then reloaded).
        cache::names_admitted_in_transaction();
    });
}

/// After a call that recorded nothing: a name it admitted is forgotten again, so that it
/// does not escape the bound later.
fn forget_unrecorded(handle: &cache::Handle, metric: &str, admitted: bool, recorded: bool) -> bool {
    if admitted && !recorded {
        handle.exp.known_metrics.borrow_mut().remove(metric);
    }
    recorded
}

/// An experiment with strict_metrics accepts results and covariates under its declared
/// metric names only (22023, suggesting the nearest name); none under a ratio or quantile
/// metric's name.
fn check_declared(exp: &cache::CachedExperiment, metric: &str) {
    if let Some(e) = declared_problem(exp, metric) {
        core_error(e);
    }
}

/// Why no result may be recorded under `metric` (check_declared's rule, and a source
/// metric's name), if it may not.
pub(crate) fn declared_problem(exp: &cache::CachedExperiment, metric: &str) -> Option<ab_core::Error> {
    if let Some((_, numerator, denominator)) = exp.ratio_metrics.iter().find(|(name, ..)| name == metric) {
        return Some(ratio_recorded(&exp.name, metric, numerator, denominator));
    }
    if let Some((_, of)) = exp.quantile_metrics.iter().find(|(name, _)| name == metric) {
        return Some(quantile_recorded(&exp.name, metric, of));
    }
    if let Some((_, kind, parts)) = exp.composed_metrics.iter().find(|(name, ..)| name == metric) {
        return Some(composed_recorded(&exp.name, metric, kind, parts));
    }
    if let Some(declared) = &exp.declared_metrics {
        if !declared.iter().any(|m| m == metric) {
            return Some(undeclared_metric(&exp.name, metric, declared.iter().map(String::as_str)));
        }
    }
    None
}

fn record(
    r: ExperimentRef<'_>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: Option<&str>,
) -> bool {
    let metric_name = check_metric_name(required(metric_name, "metric_name")).unwrap_or_else(|e| core_error(e));
    let metric_value = required(metric_value, "metric_value");
    let user_id = required(user_id, "user_id");
    check_value("metric_value", metric_value).unwrap_or_else(|e| core_error(e));
    check_id("user_id", user_id);
    if let Some(s) = session_id {
        check_id("session_id", s);
    }
    // Set once the experiment's write lock is held (it is kept to the end of the transaction).
    let mut locked = false;
    let mut taken = guard::Taken::default();
    for _ in 0..MAX_RELOADS {
        let handle = cache::lookup(r);
        let cache::Handle { exp, plans, .. } = &handle;
        if !exp.running {
            taken.release();
            return false;
        }
        check_declared(exp, &metric_name);
        if exp.source_metrics.iter().any(|m| *m == metric_name) {
            core_error(source_recorded(&exp.name, &metric_name));
        }
        if metric_value != 0.0 && metric_value != 1.0 && exp.binary_metrics.iter().any(|m| *m == metric_name) {
            core_error(binary_value(&exp.name, &metric_name, metric_value));
        }
        let probe = guard::lock_for_writing(&handle, locked);
        taken.note(&handle);
        locked = true;
        match probe {
            Probe::Found(true) => {}
            // Stopped since the definition's snapshot (REPEATABLE READ).
            Probe::Found(false) => {
                taken.release();
                return false;
            }
            Probe::Stale => continue,
            // Deleted while this call ran.
            Probe::Missing => return false,
        }
        if cache::user_metrics_appeared(&handle) {
            continue;
        }
        let admitted = admit_metric(&handle, &metric_name, None);
        if let Some(insert) = &plans.record_result_values {
            let variant_id = match crate::assignment::stored_variant(&handle, user_id, true) {
                Probe::Found(v) => v,
                Probe::Missing => return forget_unrecorded(&handle, &metric_name, admitted, false),
                Probe::Stale => continue,
            };
            return Spi::connect_mut(|client| {
                let args = [
                    exp.id.into(),
                    variant_id.into(),
                    user_id.into(),
                    metric_name.as_ref().into(),
                    metric_value.into(),
                    session_id.into(),
                ];
                insert.update(client, None, &args).or_raise();
                if let Some(state) = &plans.record_user_metric {
                    let args = [
                        exp.id.into(),
                        metric_name.as_ref().into(),
                        user_id.into(),
                        variant_id.into(),
                        metric_value.into(),
                    ];
                    state.update(client, None, &args).or_raise();
                }
                true
            });
        }
        let recorded = Spi::connect_mut(|client| {
            let args =
                [exp.id.into(), user_id.into(), metric_name.as_ref().into(), metric_value.into(), session_id.into()];
            plans.record_result.update(client, None, &args).or_raise().len() == 1
        });
        return forget_unrecorded(&handle, &metric_name, admitted, recorded);
    }
    tables_kept_changing()
}

/// Records a metric value for a user; true when stored against the user's variant, false
/// (storing nothing) when the experiment is not running or the user has no assignment.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_record_result(
    experiment: Option<&str>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
) -> bool {
    let experiment = required(experiment, "experiment");
    record(ExperimentRef::Name(experiment), metric_name, metric_value, user_id, session_id)
}

#[pg_extern(name = "ab_record_result", volatile, parallel_unsafe)]
fn ab_record_result_by_id(
    experiment: Option<i64>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
) -> bool {
    let experiment = required(experiment, "experiment");
    record(ExperimentRef::Id(experiment), metric_name, metric_value, user_id, session_id)
}

fn record_covariate(r: ExperimentRef<'_>, metric_name: Option<&str>, user_id: Option<&str>, value: Option<f64>) {
    let metric_name = check_metric_name(required(metric_name, "metric_name")).unwrap_or_else(|e| core_error(e));
    let user_id = required(user_id, "user_id");
    let value = required(value, "value");
    check_id("user_id", user_id);
    check_value("value", value).unwrap_or_else(|e| core_error(e));
    // Set once the experiment's write lock is held (it is kept to the end of the transaction).
    let mut locked = false;
    for _ in 0..MAX_RELOADS {
        let handle = cache::lookup(r);
        let cache::Handle { exp, plans, .. } = &handle;
        check_declared(exp, &metric_name);
        let probe = guard::lock_for_writing(&handle, locked);
        locked = true;
        match probe {
            // Covariates are recorded in any status.
            Probe::Found(_) => {}
            Probe::Stale => continue,
            Probe::Missing => not_found(r),
        }
        return Spi::connect_mut(|client| {
            plans
                .record_covariate
                .update(client, None, &[exp.id.into(), user_id.into(), metric_name.as_ref().into(), value.into()])
                .or_raise();
        });
    }
    tables_kept_changing()
}

/// Records a user's pre-experiment value of a covariate for a metric (CUPED). A later call
/// for the same user and metric replaces it. Works in any status, before or after assignment.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_record_covariate(experiment: Option<&str>, metric_name: Option<&str>, user_id: Option<&str>, value: Option<f64>) {
    let experiment = required(experiment, "experiment");
    record_covariate(ExperimentRef::Name(experiment), metric_name, user_id, value)
}

#[pg_extern(name = "ab_record_covariate", volatile, parallel_unsafe)]
fn ab_record_covariate_by_id(
    experiment: Option<i64>,
    metric_name: Option<&str>,
    user_id: Option<&str>,
    value: Option<f64>,
) {
    let experiment = required(experiment, "experiment");
    record_covariate(ExperimentRef::Id(experiment), metric_name, user_id, value)
}
