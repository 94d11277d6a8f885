//! `ab_reweight` and `ab_reweight_due`: the weights of a bandit experiment, recomputed by
//! Thompson sampling from each variant's posterior on the allocation metric. New weights
//! start a new period; enrolled users keep their variant (their assignment is stored), so
//! only users enrolled from then on see them.

use ab_core::analysis::{effective_periods, ArmInput};
use ab_core::bandit::{chance_best, posteriors, weights};
use ab_core::bucketing::basis_points;
use ab_core::names::printable;
use ab_core::stats::Moments;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Map, Value};

use crate::analysis;
use crate::cache::{invalidate_local, snapshot_is_transaction_wide};
use crate::catalog::{self, ExperimentRef, ExperimentRow};
use crate::errors::{raise, required, wrong_state, SpiExt};
use crate::subxact::in_subtransaction;

type Outcome = (String, i32, bool, JsonB, String);

fn weights_json(names: &[String], bp: &[u32]) -> Value {
    Value::Object(names.iter().zip(bp).map(|(n, b)| (n.clone(), json!(*b as f64 / 100.0))).collect::<Map<_, _>>())
}

fn reweight(client: &mut pgrx::spi::SpiClient<'_>, nsp: &str, exp: &ExperimentRow, force: bool) -> Outcome {
    let name = exp.name.clone();
    if exp.status != "running" {
        wrong_state(
            format!("experiment \"{}\" is not running (status {})", printable(&name), exp.status),
            "only a running bandit experiment is reweighted",
        );
    }
    let Some(bandit) = &exp.bandit else {
        wrong_state(
            format!("experiment \"{}\" has fixed traffic allocations", printable(&name)),
            "create it with \"allocation\": {\"mode\": \"bandit\"} to move traffic toward the better variants",
        );
    };
    let variants = catalog::variants(client, nsp, exp.id);
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let current: Vec<u32> = variants.iter().map(|v| basis_points(v.traffic_allocation).unwrap_or(0)).collect();
    let last = client
        .select(
            format!(
                "SELECT period, now() >= started_at + $2::interval, \
                 to_char(started_at + $2::interval, 'YYYY-MM-DD HH24:MI:SS TZ') \
                 FROM {nsp}.ab_allocations WHERE experiment_id = $1 ORDER BY period DESC LIMIT 1"
            )
            .as_str(),
            Some(1),
            &[exp.id.into(), bandit.update_every.as_str().into()],
        )
        .or_raise();
    if last.is_empty() {
        wrong_state(
            format!("experiment \"{}\" has no weight period", printable(&name)),
            "its ab_allocations rows were removed; stop it and create a new experiment",
        );
    }
    let row = last.first();
    let period: i32 = row.get(1).or_raise().unwrap();
    let due: bool = row.get(2).or_raise().unwrap();
    let due_at: String = row.get(3).or_raise().unwrap();
    let unchanged = |detail: String| (name.clone(), period, false, JsonB(weights_json(&names, &current)), detail);
    if !force && !due {
        return unchanged(format!("not due: the weights may change every {}, next at {due_at}", bandit.update_every));
    }

    let defs = exp.metric_defs();
    let def = defs.get(&bandit.metric).cloned().unwrap_or_default();
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let uncapped = analysis::per_user_sql(nsp, from_state, def.aggregation, "$2", None);
    // A bandit's metric is recorded, never read from a source.
    let none = std::collections::HashMap::new();
    let cap = analysis::metric_cap(client, exp.id, &bandit.metric, &def, &uncapped, &none);
    let per_user = analysis::per_user_sql(nsp, from_state, def.aggregation, "$2", cap);
    let cells = analysis::period_cells(client, nsp, exp.id, &bandit.metric, &per_user, &none);
    let p = analysis::periods(client, nsp, exp.id, &variants);
    let arms: Vec<Vec<Moments>> = variants
        .iter()
        .map(|v| {
            let arm = ArmInput {
                variant: v.name.clone(),
                is_control: v.is_control,
                assigned: 0,
                observed: Moments::default(),
                covariate: None,
                periods: (0..p.weights.len())
                    .map(|i| {
                        (
                            p.assigned.get(&(v.id, i)).copied().unwrap_or(0),
                            cells.get(&(v.id, i)).copied().unwrap_or_default(),
                        )
                    })
                    .collect(),
                ratio: None,
                quantile: None,
            };
            effective_periods(&def, &arm)
        })
        .collect();
    let users: Vec<f64> = arms.iter().map(|a| a.iter().map(|m| m.n).sum()).collect();
    if let Some((i, n)) = users.iter().enumerate().find(|(_, n)| **n < bandit.burn_in_users.max(1) as f64) {
        return unchanged(format!(
            "burn-in: variant \"{}\" has {} of the {} users with {} each variant needs first",
            printable(&names[i]),
            n,
            bandit.burn_in_users.max(1),
            printable(&bandit.metric)
        ));
    }
    let post = posteriors(def.kind, &arms).expect("every variant has users");
    let chance = chance_best(&post, def.direction);
    let new = weights(&chance, bandit.min_share, current.iter().sum());
    let posterior = Value::Object(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (n.clone(), json!({"users": users[i], "mean": post[i].0, "sd": post[i].1, "chance_best": chance[i]}))
            })
            .collect(),
    );
    if new == current {
        return unchanged("weights unchanged".into());
    }
    for (v, bp) in variants.iter().zip(&new) {
        client
            .update(
                format!("UPDATE {nsp}.ab_variants SET traffic_allocation = $2 WHERE id = $1").as_str(),
                None,
                &[v.id.into(), (*bp as f64 / 100.0).into()],
            )
            .or_raise();
    }
    let weights = weights_json(&names, &new);
    client
        .update(
            format!(
                "INSERT INTO {nsp}.ab_allocations (experiment_id, period, weights, posterior) VALUES ($1, $2, $3, $4)"
            )
            .as_str(),
            None,
            &[exp.id.into(), (period + 1).into(), JsonB(weights.clone()).into(), JsonB(posterior).into()],
        )
        .or_raise();
    invalidate_local();
    (name, period + 1, true, JsonB(weights), format!("new weights from {} users", users.iter().sum::<f64>()))
}

pub(crate) fn read_committed_only(what: &str) {
    if snapshot_is_transaction_wide() {
        // Its snapshot would predate a period another session added while this one waited.
        raise(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            format!("{what} runs only in a READ COMMITTED transaction"),
            Some("call it outside an explicit REPEATABLE READ or SERIALIZABLE transaction".into()),
        );
    }
}

type Rows = TableIterator<'static, Outcome>;

fn reweight_one(r: ExperimentRef<'_>, force: bool) -> Rows {
    read_committed_only("ab_reweight");
    let out = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        reweight(client, &nsp, &exp, force)
    });
    TableIterator::new(vec![out])
}

/// Recomputes a running bandit experiment's weights when its update interval has passed (or
/// always, with force): one row saying what was done.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_reweight(
    experiment: Option<&str>,
    force: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(period, i32),
        name!(reweighted, bool),
        name!(weights, JsonB),
        name!(detail, String),
    ),
> {
    reweight_one(ExperimentRef::Name(required(experiment, "experiment")), required(force, "force"))
}

#[pg_extern(name = "ab_reweight", volatile, parallel_unsafe)]
fn ab_reweight_by_id(
    experiment: Option<i64>,
    force: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(period, i32),
        name!(reweighted, bool),
        name!(weights, JsonB),
        name!(detail, String),
    ),
> {
    reweight_one(ExperimentRef::Id(required(experiment, "experiment")), required(force, "force"))
}

/// Reweights every running bandit experiment whose update interval has passed: what a
/// scheduler (pg_cron, or the application) calls every few minutes. One row per bandit.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_reweight_due() -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(period, Option<i32>),
        name!(reweighted, bool),
        name!(weights, Option<JsonB>),
        name!(detail, String),
    ),
> {
    read_committed_only("ab_reweight_due");
    let due: Vec<(i64, String)> = Spi::connect(|client| {
        let nsp = catalog::schema(client);
        if !catalog::has_table(client, &nsp, "ab_allocations") {
            return vec![];
        }
        client
            .select(
                format!(
                    "SELECT id, name FROM {nsp}.ab_experiments WHERE status = 'running' \
                     AND allocation OPERATOR(pg_catalog.->>) 'mode' = 'bandit' ORDER BY id"
                )
                .as_str(),
                None,
                &[],
            )
            .or_raise()
            .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<String>(2).or_raise().unwrap()))
            .collect()
    });
    // Each experiment in a subtransaction of its own: one that fails (its periods deleted by
    // hand, a source it cannot read) is its own row, and the others are still reweighted.
    let mut rows = Vec::new();
    for (id, name) in due {
        pg_sys::check_for_interrupts!();
        let outcome = in_subtransaction(|| {
            Spi::connect_mut(|client| {
                let nsp = catalog::schema(client);
                // Stopped (or stopped and deleted) since the list was read: nothing to do.
                match catalog::try_lock_experiment(client, &nsp, id) {
                    Some(exp) if exp.status == "running" => Some(reweight(client, &nsp, &exp, false)),
                    _ => None,
                }
            })
        });
        match outcome {
            Ok(Some((name, period, reweighted, weights, detail))) => {
                rows.push((name, Some(period), reweighted, Some(weights), detail))
            }
            Ok(None) => {}
            Err((code, message)) => {
                let detail = format!("failed: {message} (SQLSTATE {code})");
                // Also in the server's log: a scheduler such as pg_cron keeps no returned rows.
                pgrx::warning!("ab_reweight_due: experiment \"{}\" {detail}", printable(&name));
                rows.push((name, None, false, None, detail))
            }
        }
    }
    TableIterator::new(rows)
}

/// The sample ratio mismatch p-value of a bandit experiment, each period's users against the
/// weights in force then (NULL before it has users or for fixed allocations). For the health
/// view; reads with the caller's rights.
#[pg_extern(stable, parallel_safe)]
fn ab_period_srm_p_value(experiment: Option<i64>) -> Option<f64> {
    let id = experiment?;
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let variants = catalog::variants(client, &nsp, id);
        let p = analysis::periods(client, &nsp, id, &variants);
        ab_core::bandit::srm_by_period(&p.by_period(&variants)).map(|r| r.p_value)
    })
}
