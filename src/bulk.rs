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
use crate::subxact::{sqlstate, try_in_subtransaction};

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
    let mut users = Users { distinct: Vec::new(), row: Vec::with_capacity(rows) };
    {
        let mut position: HashMap<&str, usize> = HashMap::new();
        for (i, u) in user_ids.iter().enumerate() {
            interrupts(i);
            let u = u.unwrap_or_else(|| null_at(i + 1, "user_id"));
            let d = match position.get(u) {
                Some(&d) => d,
                None => {
                    check_id_at(i + 1, "user_id", u);
                    users.distinct.push(u.to_string());
                    position.insert(u, users.distinct.len() - 1);
                    users.distinct.len() - 1
                }
            };
            users.row.push(d);
        }
    }
    if let Some(times) = &recorded_at {
        // In a procedure after COMMIT the statement began before the transaction whose now()
        // dates the rows without a time: the later of the two bounds both.
        let now =
            unsafe { pg_sys::GetCurrentStatementStartTimestamp().max(pg_sys::GetCurrentTransactionStartTimestamp()) };
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

    let state = user_state(&users, &names.index, &values, &names.names);
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
        let shards = handle.layout.as_ref().map(|_| {
            guard::lock_for_batch(handle.relations.results, exp.id);
            assignment_shards()
        });
        let outcome = with_work_mem(|| {
            insert(
                exp.id,
                names.index,
                values,
                user_ids,
                &users,
                session_ids,
                recorded_at,
                names.names.clone(),
                state,
                shards,
            )
        });
        let (recorded, recorded_names) = match outcome {
            Ok(done) => done,
            Err(row) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("row {row}: recorded_at is before the user's assignment"),
                Some(TIME_HINT.into()),
            ),
        };
        if recorded == 0 && handle.layout.is_some() {
            // Nothing written: other batches need not wait for this transaction.
            guard::unlock_batch(handle.relations.results, exp.id);
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
struct UserState<'a> {
    users: Vec<&'a str>,
    /// Each state row's user as a position in `Users::distinct`.
    user: Vec<usize>,
    index: Vec<i32>,
    n: Vec<i64>,
    total: Vec<f64>,
    max: Vec<f64>,
}

/// The batch's users, each once in the order of their first row, and each row's user as a
/// position in that list.
struct Users {
    distinct: Vec<String>,
    row: Vec<usize>,
}

/// A cancel or statement_timeout is served every few thousand rows of the checks in Rust.
fn interrupts(row: usize) {
    if row % 4096 == 0 {
        pg_sys::check_for_interrupts!();
    }
}

fn user_state<'a>(users: &'a Users, index: &[i32], values: &[f64], names: &[String]) -> UserState<'a> {
    let mut groups: HashMap<(usize, i32), (i64, f64, f64)> = HashMap::new();
    for (i, ((&d, &k), &v)) in users.row.iter().zip(index).zip(values).enumerate() {
        interrupts(i);
        let g = groups.entry((d, k)).or_insert((0, 0.0, v));
        g.0 += 1;
        g.1 += v;
        g.2 = g.2.max(v);
    }
    let mut sorted: Vec<_> = groups.into_iter().collect();
    let name = |k: i32| names[k as usize - 1].as_bytes();
    let user = |d: usize| users.distinct[d].as_bytes();
    sorted.sort_unstable_by(|((d1, k1), _), ((d2, k2), _)| name(*k1).cmp(name(*k2)).then(user(*d1).cmp(user(*d2))));
    let mut state = UserState {
        users: Vec::with_capacity(sorted.len()),
        user: Vec::with_capacity(sorted.len()),
        index: Vec::with_capacity(sorted.len()),
        n: Vec::with_capacity(sorted.len()),
        total: Vec::with_capacity(sorted.len()),
        max: Vec::with_capacity(sorted.len()),
    };
    for ((d, k), (n, total, max)) in sorted {
        state.users.push(users.distinct[d].as_str());
        state.user.push(d);
        state.index.push(k);
        state.n.push(n);
        state.total.push(total);
        state.max.push(max);
    }
    state
}

/// The batch's users' variants are read once, then the rows of the assigned users go into
/// ab_results and the batch's sums per user and metric into ab_user_metrics, each in one
/// statement without a join. Both use the variants read once, so they agree on who is assigned
/// (assignments are deleted only by ab_delete_experiment, which waits for the write lock this
/// call holds). One probe of the assignments per user instead of one per row, and the caller's
/// arrays of users and sessions are passed on as they came. Under Citus the lookup is
/// one query per shard with that shard's users (Citus sends it to the shard's node alone; one
/// statement joining the batch with the distributed assignments would send the whole batch to
/// every shard), and the batch lock (`guard::lock_for_batch`) keeps other batches of the
/// experiment out meanwhile. Returns the rows recorded and the metric names recorded, or the
/// first row (1-based) whose time is before its user's assignment (the caller then raises,
/// which undoes the batch).
#[allow(clippy::too_many_arguments)]
fn insert(
    experiment_id: i64,
    index: Vec<i32>,
    values: Vec<f64>,
    user_ids: Array<'_, &str>,
    users: &Users,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
    names: Vec<String>,
    state: UserState<'_>,
    shards: Option<Vec<(i32, i32)>>,
) -> Result<(i64, Vec<String>), usize> {
    let nsp = cache::schema();
    let Users { distinct, row: row_user } = users;
    let mut assigned: Vec<Option<(i64, TimestampWithTimeZone)>> = vec![None; distinct.len()];
    let mut note = |d: usize, variant: Option<i64>, at: Option<TimestampWithTimeZone>| {
        if let (Some(variant), Some(at)) = (variant, at) {
            assigned[d] = Some((variant, at));
        }
    };
    match &shards {
        // One node: the users joined by their position (an array searched by `= ANY` is sorted
        // first), which the rows name them by.
        None => Spi::connect(|client| {
            let lookup = format!(
                "SELECT u.ord, a.variant_id, a.assigned_at \
                 FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY u(id, ord) \
                 JOIN {nsp}.ab_assignments a \
                   ON a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) u.id"
            );
            let users: Vec<&str> = distinct.iter().map(String::as_str).collect();
            for row in client.select(&lookup, None, &[experiment_id.into(), users.into()]).or_raise() {
                let d = row.get::<i64>(1).or_raise().unwrap_or_default() as usize - 1;
                note(d, row.get::<i64>(2).or_raise(), row.get::<TimestampWithTimeZone>(3).or_raise());
            }
        }),
        // Under Citus `= ANY` with one shard's users, which Citus routes to that shard.
        Some(shards) => {
            let position: HashMap<&str, usize> = distinct.iter().enumerate().map(|(d, u)| (u.as_str(), d)).collect();
            let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); shards.len()];
            for (i, u) in distinct.iter().enumerate() {
                interrupts(i);
                let h = crate::citus::hash(u);
                let k = shards.iter().position(|(lo, hi)| *lo <= h && h <= *hi).unwrap_or(0);
                by_shard[k].push(u.as_str());
            }
            let lookup = format!(
                "SELECT user_id, variant_id, assigned_at FROM {nsp}.ab_assignments \
                 WHERE experiment_id OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) ANY($2::pg_catalog.text[])"
            );
            Spi::connect(|client| {
                for group in by_shard.into_iter().filter(|g| !g.is_empty()) {
                    pg_sys::check_for_interrupts!();
                    for row in client.select(&lookup, None, &[experiment_id.into(), group.into()]).or_raise() {
                        let user = row.get::<&str>(1).or_raise().unwrap_or_default();
                        if let Some(&d) = position.get(user) {
                            note(d, row.get::<i64>(2).or_raise(), row.get::<TimestampWithTimeZone>(3).or_raise());
                        }
                    }
                }
            });
        }
    }

    // Per row: its user's variant (NULL: not assigned, the row is skipped) and its time, given
    // or, as for a single result, now but no earlier than the assignment.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let now_tz = TimestampWithTimeZone::try_from(now).unwrap_or_else(|_| unreachable!("now is a finite time"));
    let given: Option<Vec<Option<TimestampWithTimeZone>>> = recorded_at.map(|a| a.iter().collect());
    let mut variants: Vec<Option<i64>> = Vec::with_capacity(row_user.len());
    let mut times: Vec<TimestampWithTimeZone> = Vec::with_capacity(row_user.len());
    let mut recorded = 0i64;
    let mut name_recorded = vec![false; names.len()];
    for (i, &d) in row_user.iter().enumerate() {
        interrupts(i);
        match assigned[d] {
            None => {
                variants.push(None);
                times.push(now_tz);
            }
            Some((variant, at)) => {
                let t = match given.as_ref().and_then(|g| g[i]) {
                    Some(t) if pg_sys::TimestampTz::from(t) < pg_sys::TimestampTz::from(at) => return Err(i + 1),
                    Some(t) => t,
                    None if pg_sys::TimestampTz::from(at) > now => at,
                    None => now_tz,
                };
                variants.push(Some(variant));
                times.push(t);
                recorded += 1;
                name_recorded[index[i] as usize - 1] = true;
            }
        }
    }
    let recorded_names: Vec<String> =
        names.iter().zip(&name_recorded).filter(|(_, r)| **r).map(|(n, _)| n.clone()).collect();

    let rows = format!(
        "INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
         SELECT $1, i.variant, i.u, ($2::pg_catalog.text[])[i.k], i.v, i.s, i.t \
         FROM (SELECT pg_catalog.unnest($3::pg_catalog.int8[]) AS variant, pg_catalog.unnest($4::pg_catalog.text[]) AS u, \
                      pg_catalog.unnest($5::pg_catalog.int4[]) AS k, pg_catalog.unnest($6::pg_catalog.float8[]) AS v, \
                      pg_catalog.unnest($7::pg_catalog.text[]) AS s, pg_catalog.unnest($8::pg_catalog.timestamptz[]) AS t) i \
         WHERE i.variant IS NOT NULL"
    );
    // The state rows of assigned users, in `state`'s order (the order their row locks are taken).
    let mut sv: Vec<i64> = Vec::new();
    let mut su: Vec<&str> = Vec::new();
    let (mut sk, mut sn, mut st, mut sm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for j in 0..state.users.len() {
        interrupts(j);
        if let Some((variant, _)) = assigned[state.user[j]] {
            sv.push(variant);
            su.push(state.users[j]);
            sk.push(state.index[j]);
            sn.push(state.n[j]);
            st.push(state.total[j]);
            sm.push(state.max[j]);
        }
    }
    Spi::connect_mut(|client| {
        client
            .update(
                &rows,
                None,
                &[
                    experiment_id.into(),
                    names.clone().into(),
                    variants.into(),
                    user_ids.into(),
                    index.into(),
                    values.into(),
                    session_ids.into(),
                    times.into(),
                ],
            )
            .or_raise();
    });
    let state_rows = StateRows { names, variant: sv, user: su, index: sk, n: sn, total: st, max: sm };
    if shards.is_some() || !state_rows.insert_new(experiment_id) {
        state_rows.upsert(experiment_id);
    }
    Ok((recorded, recorded_names))
}

/// The batch's rows of ab_user_metrics, in the order their row locks are taken.
struct StateRows<'a> {
    names: Vec<String>,
    variant: Vec<i64>,
    user: Vec<&'a str>,
    index: Vec<i32>,
    n: Vec<i64>,
    total: Vec<f64>,
    max: Vec<f64>,
}

impl StateRows<'_> {
    const ROWS: &'static str = "SELECT $1, ($2::pg_catalog.text[])[g.k], g.u, g.variant, g.n, g.total, g.max \
         FROM (SELECT pg_catalog.unnest($3::pg_catalog.int8[]) AS variant, pg_catalog.unnest($4::pg_catalog.text[]) AS u, \
                      pg_catalog.unnest($5::pg_catalog.int4[]) AS k, pg_catalog.unnest($6::pg_catalog.int8[]) AS n, \
                      pg_catalog.unnest($7::pg_catalog.float8[]) AS total, pg_catalog.unnest($8::pg_catalog.float8[]) AS max) g";

    fn args(&self, experiment_id: i64) -> [pgrx::datum::DatumWithOid<'_>; 8] {
        [
            experiment_id.into(),
            self.names.clone().into(),
            self.variant.clone().into(),
            self.user.clone().into(),
            self.index.clone().into(),
            self.n.clone().into(),
            self.total.clone().into(),
            self.max.clone().into(),
        ]
    }

    /// Adds the rows to the users' state, inserting those that do not exist yet.
    fn upsert(&self, experiment_id: i64) {
        let nsp = cache::schema();
        let upsert = format!(
            "INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) {} \
             ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE \
             SET n = m.n OPERATOR(pg_catalog.+) excluded.n, total = m.total OPERATOR(pg_catalog.+) excluded.total, \
                 max = GREATEST(m.max, excluded.max)",
            Self::ROWS
        );
        Spi::run_with_args(&upsert, &self.args(experiment_id)).or_raise();
    }

    /// When none of the rows exists yet (a first load, new users, a new metric): inserts them
    /// with a plain INSERT, which costs half of the upsert's speculative insertion. Returns
    /// false, with nothing written, when one exists, when the transaction already holds 32
    /// subtransactions, or when a concurrent writer inserts one first (the insert then fails on
    /// the primary key, in a subtransaction that undoes it);
    /// the caller then upserts them all. Either attempt takes its row locks in the same order,
    /// and a failed one holds none of them.
    fn insert_new(&self, experiment_id: i64) -> bool {
        if self.variant.is_empty() {
            return true;
        }
        // Each plain insert takes a subtransaction ID. Past 64 in one transaction
        // (PGPROC_MAX_CACHED_SUBXIDS), every snapshot in the cluster looks them up in
        // pg_subtrans while it lasts: a transaction of many batches upserts once it holds 32.
        let subxids = unsafe { (*pg_sys::MyProc).subxidStatus };
        if subxids.overflowed || subxids.count >= 32 {
            return false;
        }
        let nsp = cache::schema();
        let any = format!(
            "SELECT EXISTS (SELECT FROM (SELECT pg_catalog.unnest($2::pg_catalog.int8[]) AS variant, pg_catalog.unnest($3::pg_catalog.text[]) AS u, \
                                      pg_catalog.unnest($4::pg_catalog.int4[]) AS k) g \
             JOIN {nsp}.ab_user_metrics m ON m.experiment_id OPERATOR(pg_catalog.=) $1 \
               AND m.metric_name OPERATOR(pg_catalog.=) ($5::pg_catalog.text[])[g.k] \
               AND m.user_id OPERATOR(pg_catalog.=) g.u AND m.variant_id OPERATOR(pg_catalog.=) g.variant)"
        );
        let exists = Spi::get_one_with_args::<bool>(
            &any,
            &[
                experiment_id.into(),
                self.variant.clone().into(),
                self.user.clone().into(),
                self.index.clone().into(),
                self.names.clone().into(),
            ],
        )
        .or_raise()
        .unwrap_or(true);
        if exists {
            return false;
        }
        let insert = format!(
            "INSERT INTO {nsp}.ab_user_metrics (experiment_id, metric_name, user_id, variant_id, n, total, max) {}",
            Self::ROWS
        );
        match try_in_subtransaction(|| Spi::run_with_args(&insert, &self.args(experiment_id)).or_raise()) {
            Ok(()) => true,
            Err(e) if sqlstate(&e) == "23505" => false,
            Err(e) => e.rethrow(),
        }
    }
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
    record_then_release(
        ExperimentRef::Name(experiment),
        metric_names,
        metric_values,
        user_ids,
        session_ids,
        recorded_at,
    )
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
    record_then_release(ExperimentRef::Id(experiment), metric_names, metric_values, user_ids, session_ids, recorded_at)
}

/// `record_batch`, then, after a large batch, `release_freed_memory`.
fn record_then_release(
    r: ExperimentRef<'_>,
    metric_names: Option<Array<'_, &str>>,
    metric_values: Option<Array<'_, f64>>,
    user_ids: Option<Array<'_, &str>>,
    session_ids: Option<Array<'_, &str>>,
    recorded_at: Option<Array<'_, TimestampWithTimeZone>>,
) -> i64 {
    let large = user_ids.as_ref().is_some_and(|a| a.len() >= 10_000);
    let recorded = record_batch(r, metric_names, metric_values, user_ids, session_ids, recorded_at);
    if large {
        release_freed_memory();
    }
    recorded
}

/// After a large batch, glibc's heap keeps what the call freed (its Rust structures, its SPI
/// contexts) unless told to hand it back: a pooled connection would hold hundreds of MB.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        unsafe { malloc_trim(0) };
    }
}
