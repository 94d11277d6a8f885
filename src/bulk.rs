//! `ab_record_results`: a batch of results in one statement, for backfills and bulk loads.
//! The rows come as arrays, so the function reads no relation of the caller's: whatever it
//! records, the caller passed in.

use std::collections::HashMap;

use ab_core::batch::{at_row, row_count};
use ab_core::definition::{check_metric_name, check_value, source_recorded};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::assignment::{tables_kept_changing, MAX_ID_BYTES, MAX_RELOADS};
use crate::cache;
use crate::catalog::ExperimentRef;
use crate::errors::{not_found, raise, required, wrong_state, SpiExt};
use crate::guard;
use crate::lookup::Probe;
use crate::results::{admit_metric, declared_problem};

fn bad_row(row: usize, e: ab_core::Error) -> ! {
    let e = at_row(row, e);
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message, e.hint)
}

fn null_at(row: usize, what: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("row {row}: {what} must not be NULL"), None)
}

/// ab_record_result's rule for user and session ids.
fn check_id_at(row: usize, what: &str, id: &str) {
    if id.is_empty() {
        bad_row(row, ab_core::Error::invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_BYTES {
        bad_row(
            row,
            ab_core::Error::invalid(format!("{what} is {} bytes long, at most {MAX_ID_BYTES} are allowed", id.len())),
        );
    }
}

/// The rows' metric names, each once, in the order of their first row.
struct Names {
    names: Vec<String>,
    first_row: Vec<usize>,
    /// Per row, the 1-based index of its name in `names`.
    index: Vec<i32>,
}

#[allow(clippy::too_many_arguments)]
fn record_batch(
    r: ExperimentRef<'_>,
    metric_names: Option<Array<'_, &str>>,
    metric_values: Option<Array<'_, f64>>,
    user_ids: Option<Array<'_, &str>>,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
) -> i64 {
    let metric_names = required(metric_names, "metric_names");
    let metric_values = required(metric_values, "metric_values");
    let user_ids = required(user_ids, "user_ids");
    let rows = row_count(
        &[("metric_names", metric_names.len()), ("metric_values", metric_values.len()), ("user_ids", user_ids.len())],
        &[("session_ids", session_ids.as_ref().map(|a| a.len())), ("recorded_at", recorded_at.as_ref().map(|a| a.len()))],
    )
    .unwrap_or_else(|e| crate::errors::core_error(e));

    // Every row's own checks, in row order, before anything is locked.
    let mut names = Names { names: Vec::new(), first_row: Vec::new(), index: Vec::with_capacity(rows) };
    let mut seen: HashMap<String, i32> = HashMap::new();
    let mut last: Option<(&str, i32)> = None;
    for (i, name) in metric_names.iter().enumerate() {
        let row = i + 1;
        let name = name.unwrap_or_else(|| null_at(row, "metric_name"));
        let k = match last {
            Some((previous, k)) if previous == name => k,
            _ => {
                let normalized = check_metric_name(name).unwrap_or_else(|e| bad_row(row, e));
                let k = *seen.entry(normalized.to_string()).or_insert_with(|| {
                    names.names.push(normalized.to_string());
                    names.first_row.push(row);
                    names.names.len() as i32
                });
                last = Some((name, k));
                k
            }
        };
        names.index.push(k);
    }
    let values: Vec<f64> = metric_values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = v.unwrap_or_else(|| null_at(i + 1, "metric_value"));
            check_value("metric_value", v).unwrap_or_else(|e| bad_row(i + 1, e));
            v
        })
        .collect();
    for (i, u) in user_ids.iter().enumerate() {
        check_id_at(i + 1, "user_id", u.unwrap_or_else(|| null_at(i + 1, "user_id")));
    }
    if let Some(sessions) = &session_ids {
        for (i, s) in sessions.iter().enumerate() {
            if let Some(s) = s {
                check_id_at(i + 1, "session_id", s);
            }
        }
    }

    let mut locked = false;
    for _ in 0..MAX_RELOADS {
        let handle = cache::lookup(r);
        let exp = &handle.exp;
        if !exp.running {
            wrong_state(
                format!("experiment \"{}\" is not running", ab_core::names::printable(&exp.name)),
                "results are recorded while an experiment runs; ab_experiment_overview shows its status",
            );
        }
        if handle.layout.is_some() {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "ab_record_results is not available when Citus distributes the ab_testing tables",
                Some("record each result with ab_record_result, which Citus delegates to the worker holding the user".into()),
            );
        }
        let mut binary = vec![false; names.names.len()];
        for (k, name) in names.names.iter().enumerate() {
            let row = names.first_row[k];
            if let Some(e) = declared_problem(exp, name) {
                bad_row(row, e);
            }
            if exp.source_metrics.iter().any(|m| m == name) {
                bad_row(row, source_recorded(&exp.name, name));
            }
            binary[k] = exp.binary_metrics.iter().any(|m| m == name);
        }
        if binary.iter().any(|b| *b) {
            for (i, (&k, &v)) in names.index.iter().zip(&values).enumerate() {
                if binary[k as usize - 1] && v != 0.0 && v != 1.0 {
                    bad_row(
                        i + 1,
                        ab_core::Error::invalid(format!(
                            "metric \"{}\" of experiment \"{}\" is binary: metric_value must be 0 or 1, got {v}",
                            names.names[k as usize - 1],
                            exp.name
                        )),
                    );
                }
            }
        }
        let probe = guard::lock_for_writing(&handle, locked);
        locked = true;
        match probe {
            Probe::Found(()) => {}
            Probe::Stale => continue,
            Probe::Missing => not_found(r),
        }
        if cache::user_metrics_appeared(&handle) {
            continue;
        }
        if rows == 0 {
            return 0;
        }
        let admitted: Vec<bool> =
            names.names.iter().zip(&names.first_row).map(|(n, row)| admit_metric(&handle, n, Some(*row as i64))).collect();
        let (recorded, before_assignment, in_future, recorded_names) = insert(
            exp.id,
            names.index,
            values,
            user_ids,
            session_ids,
            recorded_at,
            names.names.clone(),
        );
        if let Some(row) = before_assignment.into_iter().chain(in_future).min() {
            let message = if Some(row) == before_assignment {
                "recorded_at is before the user's assignment"
            } else {
                "recorded_at is in the future"
            };
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("row {row}: {message}"),
                Some("recorded_at must lie between the user's assigned_at in ab_assignments and now".into()),
            );
        }
        // A name admitted by this call but recorded in no row is forgotten again, so that it
        // does not escape the bound on distinct metric names later.
        for (name, admitted) in names.names.iter().zip(admitted) {
            if admitted && !recorded_names.contains(name) {
                exp.known_metrics.borrow_mut().remove(name);
            }
        }
        return recorded;
    }
    tables_kept_changing()
}

/// One statement: the rows whose user is assigned go into ab_results and, summed per user and
/// metric, into ab_user_metrics (in the order of user and metric, so that two batches lock
/// shared state rows in the same order). Returns the rows recorded, the first row recorded
/// before its user's assignment and the first in the future (the caller raises: the error
/// undoes the statement), and the metric names recorded.
fn insert(
    experiment_id: i64,
    index: Vec<i32>,
    values: Vec<f64>,
    user_ids: Array<'_, &str>,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
    names: Vec<String>,
) -> (i64, Option<i64>, Option<i64>, Vec<String>) {
    let nsp = cache::schema();
    let sql = format!(
        "WITH j AS MATERIALIZED ( \
           SELECT i.pos, ($7::pg_catalog.text[])[i.k] AS metric_name, i.v, i.u, i.s, \
                  COALESCE(i.t, pg_catalog.now()) AS t, a.variant_id, a.assigned_at \
           FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.float8[]), \
                           pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.text[]), \
                           pg_catalog.unnest($6::pg_catalog.timestamptz[])) WITH ORDINALITY AS i(k, v, u, s, t, pos) \
           JOIN {nsp}.ab_assignments a \
             ON a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) i.u), \
         r AS ( \
           INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
           SELECT $1, j.variant_id, j.u, j.metric_name, j.v, j.s, j.t FROM j), \
         m AS ( \
           INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) \
           SELECT $1, j.metric_name, j.u, j.variant_id, pg_catalog.count(*), pg_catalog.sum(j.v), pg_catalog.max(j.v) \
           FROM j GROUP BY j.u, j.metric_name, j.variant_id ORDER BY j.u COLLATE \"C\", j.metric_name COLLATE \"C\" \
           ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE \
           SET n = m.n OPERATOR(pg_catalog.+) excluded.n, total = m.total OPERATOR(pg_catalog.+) excluded.total, \
               max = GREATEST(m.max, excluded.max) \
           RETURNING m.metric_name) \
         SELECT (SELECT pg_catalog.count(*) FROM j), \
                (SELECT pg_catalog.min(j.pos) FROM j WHERE j.t OPERATOR(pg_catalog.<) j.assigned_at), \
                (SELECT pg_catalog.min(j.pos) FROM j WHERE j.t OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()), \
                ARRAY(SELECT DISTINCT m.metric_name FROM m)"
    );
    Spi::connect_mut(|client| {
        let args = [
            experiment_id.into(),
            index.into(),
            values.into(),
            user_ids.into(),
            session_ids.into(),
            recorded_at.into(),
            names.into(),
        ];
        let table = client.update(sql.as_str(), None, &args).or_raise();
        let row = table.first();
        (
            row.get::<i64>(1).or_raise().unwrap_or(0),
            row.get::<i64>(2).or_raise(),
            row.get::<i64>(3).or_raise(),
            row.get::<Vec<String>>(4).or_raise().unwrap_or_default(),
        )
    })
}

/// Records a batch of results, row i being (metric_names[i], metric_values[i], user_ids[i],
/// session_ids[i], recorded_at[i]); returns the rows recorded (rows of users without an
/// assignment are skipped). A bad row fails the whole batch, naming its position.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_record_results(
    experiment: Option<&str>,
    metric_names: Option<Array<'_, &str>>,
    metric_values: Option<Array<'_, f64>>,
    user_ids: Option<Array<'_, &str>>,
    session_ids: default!(Option<Array<'_, &str>>, "NULL"),
    recorded_at: default!(Option<Array<'_, TimestampWithTimeZone>>, "NULL"),
) -> i64 {
    let experiment = required(experiment, "experiment");
    record_batch(ExperimentRef::Name(experiment), metric_names, metric_values, user_ids, session_ids, recorded_at)
}

#[pg_extern(name = "ab_record_results", volatile, parallel_unsafe)]
fn ab_record_results_by_id(
    experiment: Option<i64>,
    metric_names: Option<Array<'_, &str>>,
    metric_values: Option<Array<'_, f64>>,
    user_ids: Option<Array<'_, &str>>,
    session_ids: default!(Option<Array<'_, &str>>, "NULL"),
    recorded_at: default!(Option<Array<'_, TimestampWithTimeZone>>, "NULL"),
) -> i64 {
    let experiment = required(experiment, "experiment");
    record_batch(ExperimentRef::Id(experiment), metric_names, metric_values, user_ids, session_ids, recorded_at)
}
