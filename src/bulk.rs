//! `ab_record_results`: a batch of results in one statement, for backfills and bulk loads.
//! The rows come as arrays, so the function reads no relation of the caller's: whatever it
//! records, the caller passed in.

use std::collections::HashMap;

use ab_core::batch::{at_row, row_count};
use ab_core::definition::{binary_value, check_metric_name, check_value, source_recorded};
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

const TIME_HINT: &str = "recorded_at must lie between the user's assigned_at in ab_assignments and now";

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
        &[
            ("session_ids", session_ids.as_ref().map(|a| a.len())),
            ("recorded_at", recorded_at.as_ref().map(|a| a.len())),
        ],
    )
    .unwrap_or_else(|e| crate::errors::core_error(e));

    // Every row's own checks, in row order, before anything is locked.
    let mut names = Names { names: Vec::new(), first_row: Vec::new(), index: Vec::with_capacity(rows) };
    // By the name as given (checked once), then by the name as checked (normalized).
    let mut given: HashMap<&str, i32> = HashMap::new();
    let mut seen: HashMap<String, i32> = HashMap::new();
    for (i, name) in metric_names.iter().enumerate() {
        interrupts(i);
        let row = i + 1;
        let name = name.unwrap_or_else(|| null_at(row, "metric_name"));
        let k = match given.get(name) {
            Some(&k) => k,
            None => {
                let normalized = check_metric_name(name).unwrap_or_else(|e| bad_row(row, e));
                let k = *seen.entry(normalized.to_string()).or_insert_with(|| {
                    names.names.push(normalized.to_string());
                    names.first_row.push(row);
                    names.names.len() as i32
                });
                given.insert(name, k);
                k
            }
        };
        names.index.push(k);
    }
    let values: Vec<f64> = metric_values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            interrupts(i);
            let v = v.unwrap_or_else(|| null_at(i + 1, "metric_value"));
            check_value("metric_value", v).unwrap_or_else(|e| bad_row(i + 1, e));
            v
        })
        .collect();
    for (i, u) in user_ids.iter().enumerate() {
        interrupts(i);
        check_id_at(i + 1, "user_id", u.unwrap_or_else(|| null_at(i + 1, "user_id")));
    }
    if let Some(times) = &recorded_at {
        let now = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
        for (i, t) in times.iter().enumerate() {
            interrupts(i);
            if t.is_some_and(|t| pg_sys::TimestampTz::from(t) > now) {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("row {}: recorded_at is in the future", i + 1),
                    Some(TIME_HINT.into()),
                );
            }
        }
    }
    if let Some(sessions) = &session_ids {
        for (i, s) in sessions.iter().enumerate() {
            interrupts(i);
            if let Some(s) = s {
                check_id_at(i + 1, "session_id", s);
            }
        }
    }

    let state = user_state(&user_ids, &names.index, &values, &names.names);
    let mut locked = false;
    for _ in 0..MAX_RELOADS {
        let handle = cache::lookup(r);
        let exp = &handle.exp;
        if !exp.running {
            not_running(exp);
        }
        if handle.layout.is_some() {
            on_the_coordinator();
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
                interrupts(i);
                if binary[k as usize - 1] && v != 0.0 && v != 1.0 {
                    bad_row(i + 1, binary_value(&exp.name, &names.names[k as usize - 1], v));
                }
            }
        }
        let probe = guard::lock_for_writing(&handle, locked);
        locked = true;
        match probe {
            Probe::Found(true) => {}
            // Stopped since the definition's snapshot (REPEATABLE READ).
            Probe::Found(false) => not_running(exp),
            Probe::Stale => continue,
            Probe::Missing => not_found(r),
        }
        if cache::user_metrics_appeared(&handle) {
            continue;
        }
        if rows == 0 {
            return 0;
        }
        let admitted: Vec<bool> = names
            .names
            .iter()
            .zip(&names.first_row)
            .map(|(n, row)| admit_metric(&handle, n, Some(*row as i64)))
            .collect();
        // Kept for the error message, which the statement cannot give (RETURNING has no position).
        let times_given = recorded_at.as_ref().map(|t| {
            (user_ids.iter().map(|u| u.map(str::to_string)).collect::<Vec<_>>(), t.iter().collect::<Vec<_>>())
        });
        let shards = handle.layout.as_ref().map(|_| {
            guard::lock_for_batch(handle.relations.results, exp.id);
            assignment_shards()
        });
        let (recorded, recorded_names, early) = with_work_mem(|| {
            insert(exp.id, names.index, values, user_ids, session_ids, recorded_at, names.names.clone(), state, shards)
        });
        if recorded == 0 && handle.layout.is_some() {
            // Nothing written: other batches need not wait for this transaction.
            guard::unlock_batch(handle.relations.results, exp.id);
        }
        if early {
            let (users, times) = times_given.unwrap_or_default();
            let row = first_before_assignment(exp.id, users, times);
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("row {row}: recorded_at is before the user's assignment"),
                Some(TIME_HINT.into()),
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

/// The batch's contribution to each (user, metric) state row, sorted by metric name and user
/// (bytewise): the order in which the statement locks state rows, so that two batches cannot
/// deadlock on each other. It is also the order of ab_user_metrics' primary key, whose pages
/// the inserts then fill in sequence.
struct UserState {
    users: Vec<String>,
    index: Vec<i32>,
    n: Vec<i64>,
    total: Vec<f64>,
    max: Vec<f64>,
}

/// A cancel or statement_timeout is served every few thousand rows of the checks in Rust.
fn interrupts(row: usize) {
    if row % 4096 == 0 {
        pg_sys::check_for_interrupts!();
    }
}

fn user_state(user_ids: &Array<'_, &str>, index: &[i32], values: &[f64], names: &[String]) -> UserState {
    let mut groups: HashMap<(&str, i32), (i64, f64, f64)> = HashMap::new();
    for (i, ((user, &k), &v)) in user_ids.iter().zip(index).zip(values).enumerate() {
        interrupts(i);
        let user = user.unwrap_or_default();
        let g = groups.entry((user, k)).or_insert((0, 0.0, v));
        g.0 += 1;
        g.1 += v;
        g.2 = g.2.max(v);
    }
    let mut sorted: Vec<_> = groups.into_iter().collect();
    let name = |k: i32| names[k as usize - 1].as_bytes();
    sorted.sort_unstable_by(|((u1, k1), _), ((u2, k2), _)| {
        name(*k1).cmp(name(*k2)).then(u1.as_bytes().cmp(u2.as_bytes()))
    });
    let mut state =
        UserState { users: Vec::new(), index: Vec::new(), n: Vec::new(), total: Vec::new(), max: Vec::new() };
    for ((user, k), (n, total, max)) in sorted {
        state.users.push(user.to_string());
        state.index.push(k);
        state.n.push(n);
        state.total.push(total);
        state.max.push(max);
    }
    state
}

/// One statement: the rows whose user is assigned go into ab_results and the batch's sums per
/// user and metric into ab_user_metrics, in `state`'s order. Both join the assignments with
/// the statement's one snapshot, so they agree on who is assigned. Returns the rows recorded,
/// the metric names recorded and, when the rows carry their times, whether one was recorded
/// before its user's assignment (the caller then raises, which undoes the statement).
#[allow(clippy::too_many_arguments)]
fn insert(
    experiment_id: i64,
    index: Vec<i32>,
    values: Vec<f64>,
    user_ids: Array<'_, &str>,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
    names: Vec<String>,
    state: UserState,
    shards: Option<Vec<(i32, i32)>>,
) -> (i64, Vec<String>, bool) {
    if let Some(shards) = shards {
        return insert_distributed(
            experiment_id,
            index,
            values,
            user_ids,
            session_ids,
            recorded_at,
            names,
            state,
            shards,
        );
    }
    run_insert(
        &insert_sql(recorded_at.is_some()),
        vec![
            experiment_id.into(),
            index.into(),
            values.into(),
            user_ids.into(),
            session_ids.into(),
            recorded_at.into(),
            names.into(),
            state.users.into(),
            state.index.into(),
            state.n.into(),
            state.total.into(),
            state.max.into(),
        ],
    )
}

/// Under Citus, where a statement joining the batch with the distributed assignments would
/// send the whole batch to every shard: the users' variants are read first, one query per shard
/// with that shard's users (Citus sends it to the shard's node alone), then the rows and the
/// state are inserted with their variants, each in one statement that Citus splits by shard.
/// Both use the variants read once, so they agree on who is assigned; the batch lock
/// (`guard::lock_for_batch`) keeps other batches of the experiment out meanwhile.
#[allow(clippy::too_many_arguments)]
fn insert_distributed(
    experiment_id: i64,
    index: Vec<i32>,
    values: Vec<f64>,
    user_ids: Array<'_, &str>,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
    names: Vec<String>,
    state: UserState,
    shards: Vec<(i32, i32)>,
) -> (i64, Vec<String>, bool) {
    let nsp = cache::schema();
    let users: Vec<&str> = user_ids.iter().map(|u| u.unwrap_or_default()).collect();
    let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); shards.len()];
    {
        let mut seen = std::collections::HashSet::new();
        for (i, u) in users.iter().enumerate() {
            interrupts(i);
            if seen.insert(*u) {
                let h = crate::citus::hash(u);
                let k = shards.iter().position(|(lo, hi)| *lo <= h && h <= *hi).unwrap_or(0);
                by_shard[k].push(u);
            }
        }
    }
    let mut assigned: HashMap<String, (i64, TimestampWithTimeZone)> = HashMap::new();
    let lookup = format!(
        "SELECT user_id, variant_id, assigned_at FROM {nsp}.ab_assignments \
         WHERE experiment_id OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) ANY($2::pg_catalog.text[])"
    );
    Spi::connect(|client| {
        for group in by_shard.into_iter().filter(|g| !g.is_empty()) {
            pg_sys::check_for_interrupts!();
            for row in client.select(&lookup, None, &[experiment_id.into(), group.into()]).or_raise() {
                let user = row.get::<String>(1).or_raise().unwrap_or_default();
                let variant = row.get::<i64>(2).or_raise().unwrap_or_default();
                let at = row.get::<TimestampWithTimeZone>(3).or_raise();
                if let Some(at) = at {
                    assigned.insert(user, (variant, at));
                }
            }
        }
    });
    let sessions: Option<Vec<Option<&str>>> = session_ids.as_ref().map(|a| a.iter().collect());
    let times: Option<Vec<Option<TimestampWithTimeZone>>> = recorded_at.map(|a| a.iter().collect());
    let kept: Vec<usize> = (0..users.len()).filter(|&i| assigned.contains_key(users[i])).collect();
    let early = times.as_ref().is_some_and(|t| {
        kept.iter().any(|&i| {
            t[i].is_some_and(|t| pg_sys::TimestampTz::from(t) < pg_sys::TimestampTz::from(assigned[users[i]].1))
        })
    });
    if early {
        return (0, Vec::new(), true);
    }
    let mut recorded_names: Vec<String> = Vec::new();
    for &i in &kept {
        let name = &names[index[i] as usize - 1];
        if !recorded_names.contains(name) {
            recorded_names.push(name.clone());
        }
    }
    let rows = format!(
        "INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
         SELECT $1, i.variant, i.u, ($2::pg_catalog.text[])[i.k], i.v, i.s, COALESCE(i.t, GREATEST(pg_catalog.now(), i.assigned)) \
         FROM (SELECT pg_catalog.unnest($3::pg_catalog.int8[]) AS variant, pg_catalog.unnest($4::pg_catalog.text[]) AS u, \
                      pg_catalog.unnest($5::pg_catalog.int4[]) AS k, pg_catalog.unnest($6::pg_catalog.float8[]) AS v, \
                      pg_catalog.unnest($7::pg_catalog.text[]) AS s, pg_catalog.unnest($8::pg_catalog.timestamptz[]) AS t, \
                      pg_catalog.unnest($9::pg_catalog.timestamptz[]) AS assigned) i"
    );
    let user_state = format!(
        "INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) \
         SELECT $1, ($2::pg_catalog.text[])[g.k], g.u, g.variant, g.n, g.total, g.max \
         FROM (SELECT pg_catalog.unnest($3::pg_catalog.int8[]) AS variant, pg_catalog.unnest($4::pg_catalog.text[]) AS u, \
                      pg_catalog.unnest($5::pg_catalog.int4[]) AS k, pg_catalog.unnest($6::pg_catalog.int8[]) AS n, \
                      pg_catalog.unnest($7::pg_catalog.float8[]) AS total, pg_catalog.unnest($8::pg_catalog.float8[]) AS max) g \
         ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE \
         SET n = m.n OPERATOR(pg_catalog.+) excluded.n, total = m.total OPERATOR(pg_catalog.+) excluded.total, \
             max = GREATEST(m.max, excluded.max)"
    );
    let states: Vec<usize> = (0..state.users.len()).filter(|&j| assigned.contains_key(&state.users[j])).collect();
    Spi::connect_mut(|client| {
        let variant_of = |u: &str| assigned[u].0;
        client
            .update(
                &rows,
                None,
                &[
                    experiment_id.into(),
                    names.clone().into(),
                    kept.iter().map(|&i| variant_of(users[i])).collect::<Vec<i64>>().into(),
                    kept.iter().map(|&i| users[i]).collect::<Vec<&str>>().into(),
                    kept.iter().map(|&i| index[i]).collect::<Vec<i32>>().into(),
                    kept.iter().map(|&i| values[i]).collect::<Vec<f64>>().into(),
                    kept.iter().map(|&i| sessions.as_ref().and_then(|s| s[i])).collect::<Vec<Option<&str>>>().into(),
                    kept.iter()
                        .map(|&i| times.as_ref().and_then(|t| t[i]))
                        .collect::<Vec<Option<TimestampWithTimeZone>>>()
                        .into(),
                    kept.iter().map(|&i| assigned[users[i]].1).collect::<Vec<TimestampWithTimeZone>>().into(),
                ],
            )
            .or_raise();
        client
            .update(
                &user_state,
                None,
                &[
                    experiment_id.into(),
                    names.clone().into(),
                    states.iter().map(|&j| variant_of(&state.users[j])).collect::<Vec<i64>>().into(),
                    states.iter().map(|&j| state.users[j].as_str()).collect::<Vec<&str>>().into(),
                    states.iter().map(|&j| state.index[j]).collect::<Vec<i32>>().into(),
                    states.iter().map(|&j| state.n[j]).collect::<Vec<i64>>().into(),
                    states.iter().map(|&j| state.total[j]).collect::<Vec<f64>>().into(),
                    states.iter().map(|&j| state.max[j]).collect::<Vec<f64>>().into(),
                ],
            )
            .or_raise();
    });
    (kept.len() as i64, recorded_names, false)
}

/// The statement of `insert`.
fn insert_sql(with_times: bool) -> String {
    let nsp = cache::schema();
    let assigned = |alias: &str| {
        format!(
            "JOIN {nsp}.ab_assignments a \
               ON a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) {alias}.u"
        )
    };
    let early = if with_times {
        format!(
            "EXISTS (SELECT FROM (SELECT pg_catalog.unnest($4::pg_catalog.text[]) AS u, \
                                         pg_catalog.unnest($6::pg_catalog.timestamptz[]) AS t) i {} \
                     WHERE i.t OPERATOR(pg_catalog.<) a.assigned_at)",
            assigned("i")
        )
    } else {
        "false".into()
    };
    // unnest in the select list streams its rows (in FROM, each function's rows are stored first).
    format!(
        "WITH r AS ( \
           INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
           SELECT $1, a.variant_id, i.u, ($7::pg_catalog.text[])[i.k], i.v, i.s, COALESCE(i.t, GREATEST(pg_catalog.now(), a.assigned_at)) \
           FROM (SELECT pg_catalog.unnest($2::pg_catalog.int4[]) AS k, pg_catalog.unnest($3::pg_catalog.float8[]) AS v, \
                        pg_catalog.unnest($4::pg_catalog.text[]) AS u, pg_catalog.unnest($5::pg_catalog.text[]) AS s, \
                        pg_catalog.unnest($6::pg_catalog.timestamptz[]) AS t) i {join_i}), \
         g AS MATERIALIZED ( \
           SELECT g.ord, g.u, ($7::pg_catalog.text[])[g.k] AS metric_name, a.variant_id, g.n, g.total, g.max \
           FROM (SELECT pg_catalog.unnest($8::pg_catalog.text[]) AS u, pg_catalog.unnest($9::pg_catalog.int4[]) AS k, \
                        pg_catalog.unnest($10::pg_catalog.int8[]) AS n, pg_catalog.unnest($11::pg_catalog.float8[]) AS total, \
                        pg_catalog.unnest($12::pg_catalog.float8[]) AS max, \
                        pg_catalog.generate_series(1, pg_catalog.cardinality($8::pg_catalog.text[])) AS ord) g {join_g}), \
         m AS ( \
           INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) \
           SELECT $1, g.metric_name, g.u, g.variant_id, g.n, g.total, g.max FROM g ORDER BY g.ord \
           ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE \
           SET n = m.n OPERATOR(pg_catalog.+) excluded.n, total = m.total OPERATOR(pg_catalog.+) excluded.total, \
               max = GREATEST(m.max, excluded.max)) \
         SELECT (SELECT pg_catalog.sum(g.n)::pg_catalog.int8 FROM g), \
                ARRAY(SELECT DISTINCT g.metric_name FROM g), {early}",
        join_i = assigned("i"),
        join_g = assigned("g"),
    )
}

fn run_insert(sql: &str, args: Vec<pgrx::datum::DatumWithOid<'_>>) -> (i64, Vec<String>, bool) {
    Spi::connect_mut(|client| {
        let table = client.update(sql, None, &args).or_raise();
        let row = table.first();
        (
            row.get::<i64>(1).or_raise().unwrap_or(0),
            row.get::<Vec<String>>(2).or_raise().unwrap_or_default(),
            row.get::<bool>(3).or_raise().unwrap_or(false),
        )
    })
}

/// Under Citus: the hash ranges of ab_assignments' shards (the other per-user tables are
/// co-located with it). Only routing depends on them: a shard split since then makes a
/// statement span two shards, not miss rows.
fn assignment_shards() -> Vec<(i32, i32)> {
    let nsp = cache::schema();
    Spi::connect(|client| {
        client
            .select(
                "SELECT shardminvalue::pg_catalog.int4, shardmaxvalue::pg_catalog.int4 FROM pg_catalog.pg_dist_shard \
                 WHERE logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1 || '.ab_assignments') ORDER BY 1",
                None,
                &[nsp.into()],
            )
            .or_raise()
            .map(|row| {
                (row.get::<i32>(1).or_raise().unwrap_or(i32::MIN), row.get::<i32>(2).or_raise().unwrap_or(i32::MAX))
            })
            .collect()
    })
}

/// The statement's sorts and stored CTE rows grow with the batch: below 64MB of work_mem they
/// would go to temporary files. The setting is put back after the statement (an error ends
/// the transaction, which puts it back).
fn with_work_mem<R>(f: impl FnOnce() -> R) -> R {
    const BATCH_WORK_MEM_KB: i32 = 64 * 1024;
    let current = unsafe { pg_sys::work_mem };
    if current >= BATCH_WORK_MEM_KB {
        return f();
    }
    let set = |kb: i32| {
        Spi::run_with_args("SELECT pg_catalog.set_config('work_mem', $1, true)", &[format!("{kb}kB").into()]).or_raise()
    };
    set(BATCH_WORK_MEM_KB);
    let out = f();
    set(current);
    out
}

/// On the error path: the first row whose time is before its user's assignment.
fn first_before_assignment(
    experiment_id: i64,
    user_ids: Vec<Option<String>>,
    recorded_at: Vec<Option<TimestampWithTimeZone>>,
) -> i64 {
    let nsp = cache::schema();
    Spi::get_one_with_args::<i64>(
        &format!(
            "SELECT pg_catalog.min(i.pos) FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), \
               pg_catalog.unnest($3::pg_catalog.timestamptz[])) WITH ORDINALITY AS i(u, t, pos) \
             JOIN {nsp}.ab_assignments a \
               ON a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) i.u \
             WHERE i.t OPERATOR(pg_catalog.<) a.assigned_at"
        ),
        &[experiment_id.into(), user_ids.into(), recorded_at.into()],
    )
    .or_raise()
    .unwrap_or(0)
}

/// Records a batch of results, row i being (metric_names[i], metric_values[i], user_ids[i],
/// session_ids[i], recorded_at[i]); returns the rows recorded (rows of users without an
/// assignment are skipped). A bad row fails the whole batch, naming its position.
/// Batches are serialized on the coordinator (`guard::lock_for_batch`), where every batch of
/// an experiment must then run.
fn on_the_coordinator() {
    let coordinator = Spi::get_one::<bool>("SELECT pg_catalog.citus_is_coordinator()").or_raise().unwrap_or(false);
    if !coordinator {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "ab_record_results runs on the Citus coordinator",
            Some("connect to the coordinator, or record each result with ab_record_result on any node".into()),
        );
    }
}

fn not_running(exp: &cache::CachedExperiment) -> ! {
    wrong_state(
        format!("experiment \"{}\" is not running", ab_core::names::printable(&exp.name)),
        "results are recorded while an experiment runs; ab_experiment_overview shows its status",
    )
}

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
