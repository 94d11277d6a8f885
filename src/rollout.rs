//! Safe rollouts: the new variant's share of new users follows the steps of
//! `"allocation": {"mode": "rollout"}`; `ab_rollout_due` tests the guardrails at each check and
//! rolls back on a breach. Rolled back, every ab_get_variant returns the control's config (the
//! state lives in ab_experiments.allocation, whose change invalidates every backend's cache at
//! commit); assignments stay as they were. Each step starts a weight period, as a bandit's
//! reweighting does, so that users keep their variant and the analysis is stratified.

use std::collections::HashMap;

use ab_core::analysis::{effective_periods, ArmInput};
use ab_core::definition::DEFAULT_SEQUENTIAL_TUNING;
use ab_core::names::printable;
use ab_core::rollout::{check, Finding, GuardrailInput, Rollout, State};
use ab_core::stats::Moments;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use crate::analysis;
use crate::bandit::read_committed_only;
use crate::cache::invalidate_local;
use crate::catalog::{self, ExperimentRef, ExperimentRow};
use crate::errors::{invalid, required, wrong_state, SpiExt};
use crate::experiments::audit;
use crate::subxact::in_subtransaction;

/// Whether the schema is 0.14.0 or later: its ab_audit accepts the rollouts' actions.
pub fn schema_has_rollouts(client: &pgrx::spi::SpiClient<'_>, nsp: &str) -> bool {
    let audit = catalog::relation_oid(client, nsp, "ab_audit");
    if audit == pg_sys::InvalidOid || !catalog::has_table(client, nsp, "ab_allocations") {
        return false;
    }
    client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid OPERATOR(pg_catalog.=) $1 \
             AND contype OPERATOR(pg_catalog.=) 'c' \
             AND pg_catalog.pg_get_constraintdef(oid) OPERATOR(pg_catalog.~~) '%rolled_back%')",
            Some(1),
            &[audit.into()],
        )
        .or_raise()
        .first()
        .get_one::<bool>()
        .or_raise()
        .unwrap_or(false)
}

/// The experiment's rollout; raises unless it is a running rollout.
fn running_rollout(exp: &ExperimentRow) -> Rollout {
    let Some(r) = exp.rollout.clone() else {
        wrong_state(
            format!("experiment \"{}\" is not a rollout", printable(&exp.name)),
            "create it with \"allocation\": {\"mode\": \"rollout\"} to ramp a change by steps",
        );
    };
    if exp.status != "running" {
        wrong_state(
            format!("experiment \"{}\" is not running (status {})", printable(&exp.name), exp.status),
            "only a running rollout changes state",
        );
    }
    r
}

/// Puts the rollout in its new state: the variants' shares of new users, a new weight period
/// (holding `detail`, the data that decided it), the stored state (whose change every
/// backend's cache learns at commit) and the audit row.
/// `detail` gains the step and share the rollout moves to (`to_step`, `to_share`).
fn move_to(
    client: &mut pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    new: &Rollout,
    action: &str,
    detail: &mut Value,
) {
    let share = new.treatment_share();
    detail["to_step"] = json!(new.step + 1);
    detail["to_share"] = json!(share);
    client
        .update(
            format!(
                "UPDATE {nsp}.ab_variants SET traffic_allocation = CASE WHEN is_control THEN 100::float8 OPERATOR(pg_catalog.-) $2::float8 ELSE $2::float8 END \
                 WHERE experiment_id = $1"
            )
            .as_str(),
            None,
            &[exp.id.into(), share.into()],
        )
        .or_raise();
    let period = crate::cache::current_period(client, nsp, exp.id);
    client
        .update(
            format!(
                "INSERT INTO {nsp}.ab_allocations (experiment_id, period, weights, posterior) \
                 SELECT $1, $2, pg_catalog.jsonb_object_agg(name, traffic_allocation ORDER BY position), $3 \
                 FROM {nsp}.ab_variants WHERE experiment_id = $1"
            )
            .as_str(),
            None,
            &[exp.id.into(), (period + 1).into(), JsonB(detail.clone()).into()],
        )
        .or_raise();
    client
        .update(
            format!("UPDATE {nsp}.ab_experiments SET allocation = $2 WHERE id = $1").as_str(),
            None,
            &[exp.id.into(), JsonB(new.to_json()).into()],
        )
        .or_raise();
    audit(client, nsp, exp.id, &exp.name, action, detail.clone());
    invalidate_local();
}

/// Moments of each (variant, weight period) cell of a guardrail (analysis::period_cells)
/// without nested loops. Checks run on young rollouts, whose rows the planner's statistics
/// often do not show yet: estimating one row, it joins users to their assignments by a nested
/// loop that scans every assignment of the experiment for each user (seconds at a few
/// thousand users, hours at a million). A hash join is right at every size.
fn guardrail_cells(
    client: &mut pgrx::spi::SpiClient<'_>,
    nsp: &str,
    experiment_id: i64,
    metric: &str,
    per_user: &str,
) -> HashMap<(i64, usize), Moments> {
    // JIT off as in every analysis (`analysis::reading_sources`).
    crate::security::with_settings(&[(c"enable_nestloop", c"off"), (c"jit", c"off")], || {
        analysis::period_cells(client, nsp, experiment_id, metric, per_user, &HashMap::new())
    })
}

/// Every guardrail (a recorded metric with a margin) and the sample ratio, tested on the
/// data as of this statement, stratified by weight period.
fn evaluate(client: &mut pgrx::spi::SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Vec<Finding> {
    let variants = catalog::variants(client, nsp, exp.id);
    let (Some(ci), Some(ti)) =
        (variants.iter().position(|v| v.is_control), variants.iter().position(|v| !v.is_control))
    else {
        return vec![];
    };
    let (control, treatment) = (&variants[ci], &variants[ti]);
    let p = analysis::periods(client, nsp, exp.id, &variants);
    let count = |v: i64, k: usize| p.assigned.get(&(v, k)).copied().unwrap_or(0);
    let sample_ratio: Vec<(f64, f64, f64)> = p
        .weights
        .iter()
        .enumerate()
        .filter_map(|(k, w)| {
            let total = w[ci] + w[ti];
            (total > 0.0).then(|| (count(control.id, k) as f64, count(treatment.id, k) as f64, w[ti] / total))
        })
        .collect();
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    // Guardrails are recorded metrics (the definition checks it): no source, no application code.
    let none = HashMap::new();
    let guardrails: Vec<GuardrailInput> = exp
        .metric_defs()
        .into_iter()
        .filter_map(|(name, def)| {
            let margin = def.margin?;
            let uncapped = analysis::per_user_sql(nsp, from_state, def.aggregation, "$2", None);
            let cap = analysis::metric_cap(client, exp.id, &name, &def, &uncapped, &none);
            let per_user = analysis::per_user_sql(nsp, from_state, def.aggregation, "$2", cap);
            let cells = guardrail_cells(client, nsp, exp.id, &name, &per_user);
            let arm = |v: &catalog::VariantRow| {
                effective_periods(
                    &def,
                    &ArmInput {
                        variant: v.name.clone(),
                        is_control: v.is_control,
                        assigned: 0,
                        observed: Moments::default(),
                        covariate: None,
                        periods: (0..p.weights.len())
                            .map(|k| (count(v.id, k), cells.get(&(v.id, k)).copied().unwrap_or_default()))
                            .collect(),
                        ratio: None,
                        quantile: None,
                    },
                )
            };
            let periods = arm(control).into_iter().zip(arm(treatment)).collect();
            Some(GuardrailInput { metric: name, direction: def.direction, margin, periods })
        })
        .collect();
    check(&guardrails, &sample_ratio, exp.alpha, exp.sequential_tuning.unwrap_or(DEFAULT_SEQUENTIAL_TUNING))
}

type Outcome = (String, String, i32, f64, String, JsonB);

fn outcome(exp: &ExperimentRow, r: &Rollout, action: &str, reason: String, detail: Value) -> Outcome {
    (exp.name.clone(), action.into(), r.step as i32 + 1, r.treatment_share(), reason, JsonB(detail))
}

/// One check of a ramping rollout: a breach rolls back; otherwise, when the step has lasted
/// step_every, the next step (or, after the last, completion).
fn check_one(client: &mut pgrx::spi::SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Outcome {
    let r = running_rollout(exp);
    if r.state != State::Ramping {
        wrong_state(
            format!("rollout \"{}\" is {}", printable(&exp.name), r.state.as_str().replace('_', " ")),
            "only a ramping rollout is checked; ab_resume resumes a rolled-back one",
        );
    }
    let findings = evaluate(client, nsp, exp);
    let data = json!({"step": r.step + 1, "share": r.treatment_share(),
                      "findings": findings.iter().map(Finding::to_json).collect::<Vec<_>>()});
    if let Some(f) = findings.iter().find(|f| f.breached) {
        let reason = f.reason();
        let mut detail = data;
        detail["reason"] = json!(reason);
        detail["by"] = json!("guardrail");
        let new = Rollout { state: State::RolledBack, ..r.clone() };
        move_to(client, nsp, exp, &new, "rolled_back", &mut detail);
        return outcome(exp, &new, "rolled_back", reason, detail);
    }
    let row = client
        .select(
            format!(
                "SELECT now() >= started_at + $2::interval, to_char(started_at + $2::interval, 'YYYY-MM-DD HH24:MI:SS TZ') \
                 FROM {nsp}.ab_allocations WHERE experiment_id = $1 ORDER BY period DESC LIMIT 1"
            )
            .as_str(),
            Some(1),
            &[exp.id.into(), r.step_every.as_str().into()],
        )
        .or_raise();
    let (due, at) = if row.is_empty() {
        (true, String::new())
    } else {
        let row = row.first();
        (row.get::<bool>(1).or_raise().unwrap_or(true), row.get::<String>(2).or_raise().unwrap_or_default())
    };
    if !due {
        return outcome(exp, &r, "none", format!("guardrails hold; the next step is due at {at}"), data);
    }
    let (new, action, reason) = if r.step + 1 < r.steps.len() {
        let next = Rollout { step: r.step + 1, ..r.clone() };
        let reason = format!("guardrails held for {}: step {} of {}", r.step_every, next.step + 1, r.steps.len());
        (next, "stepped", reason)
    } else {
        let done = Rollout { state: State::Completed, ..r.clone() };
        (done, "completed", format!("guardrails held through every step; the last for {}", r.step_every))
    };
    let mut detail = data;
    detail["reason"] = json!(reason);
    detail["by"] = json!("schedule");
    move_to(client, nsp, exp, &new, action, &mut detail);
    outcome(exp, &new, action, reason, detail)
}

type CheckRow = TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(action, String),
        name!(step, i32),
        name!(share, f64),
        name!(reason, String),
        name!(detail, JsonB),
    ),
>;

fn check_ref(r: ExperimentRef<'_>) -> CheckRow {
    read_committed_only("ab_rollout_check");
    let out = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        check_one(client, &nsp, &exp)
    });
    TableIterator::new(vec![out])
}

/// Checks one ramping rollout now: rolls it back on a breached guardrail, otherwise steps it
/// when its step is due. One row saying what was done.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_rollout_check(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(action, String),
        name!(step, i32),
        name!(share, f64),
        name!(reason, String),
        name!(detail, JsonB),
    ),
> {
    check_ref(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_rollout_check", volatile, parallel_unsafe)]
fn ab_rollout_check_by_id(
    experiment: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(action, String),
        name!(step, i32),
        name!(share, f64),
        name!(reason, String),
        name!(detail, JsonB),
    ),
> {
    check_ref(ExperimentRef::Id(required(experiment, "experiment")))
}

/// Checks every ramping rollout, each in a subtransaction of its own: what a scheduler
/// (pg_cron, or the application) calls every few minutes. One row per rollout.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_rollout_due() -> TableIterator<
    'static,
    (
        name!(experiment, String),
        name!(action, String),
        name!(step, Option<i32>),
        name!(share, Option<f64>),
        name!(reason, String),
        name!(detail, Option<JsonB>),
    ),
> {
    read_committed_only("ab_rollout_due");
    let due: Vec<(i64, String)> = Spi::connect(|client| {
        let nsp = catalog::schema(client);
        client
            .select(
                format!(
                    "SELECT id, name FROM {nsp}.ab_experiments WHERE status = 'running' \
                     AND allocation OPERATOR(pg_catalog.->>) 'mode' = 'rollout' \
                     AND allocation OPERATOR(pg_catalog.->>) 'state' = 'ramping' ORDER BY id"
                )
                .as_str(),
                None,
                &[],
            )
            .or_raise()
            .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<String>(2).or_raise().unwrap()))
            .collect()
    });
    let mut rows = Vec::new();
    for (id, name) in due {
        pg_sys::check_for_interrupts!();
        let outcome = in_subtransaction(|| {
            Spi::connect_mut(|client| {
                let nsp = catalog::schema(client);
                // Stopped, deleted or moved on since the list was read: nothing to do.
                match catalog::try_lock_experiment(client, &nsp, id) {
                    Some(exp)
                        if exp.status == "running"
                            && exp.rollout.as_ref().is_some_and(|r| r.state == State::Ramping) =>
                    {
                        Some(check_one(client, &nsp, &exp))
                    }
                    _ => None,
                }
            })
        });
        match outcome {
            Ok(Some((name, action, step, share, reason, detail))) => {
                rows.push((name, action, Some(step), Some(share), reason, Some(detail)))
            }
            Ok(None) => {}
            Err((code, message)) => {
                let reason = format!("failed: {message} (SQLSTATE {code})");
                pgrx::warning!("ab_rollout_due: experiment \"{}\" {reason}", printable(&name));
                rows.push((name, "failed".into(), None, None, reason, None))
            }
        }
    }
    TableIterator::new(rows)
}

fn manual(r: ExperimentRef<'_>, f: impl FnOnce(&ExperimentRow, Rollout) -> (Rollout, &'static str, Value)) -> JsonB {
    let out = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        let rollout = running_rollout(&exp);
        let (new, action, mut detail) = f(&exp, rollout);
        // Where it was; move_to adds where it goes.
        detail["step"] = json!(exp.rollout.as_ref().map(|r| r.step + 1));
        detail["share"] = json!(exp.rollout.as_ref().map(|r| r.treatment_share()));
        detail["by"] = json!("operator");
        move_to(client, &nsp, &exp, &new, action, &mut detail);
        json!({"state": new.state.as_str(), "step": new.step + 1, "share": new.treatment_share(), "action": action})
    });
    JsonB(out)
}

fn rollback(r: ExperimentRef<'_>, reason: Option<&str>) -> JsonB {
    let reason = required(reason, "reason").trim().to_string();
    if reason.is_empty() || reason.len() > 1000 {
        invalid("reason must be between 1 and 1000 bytes of text");
    }
    manual(r, |exp, r| {
        if r.state == State::RolledBack {
            wrong_state(format!("rollout \"{}\" is already rolled back", printable(&exp.name)), "ab_resume resumes it");
        }
        (Rollout { state: State::RolledBack, ..r }, "rolled_back", json!({"reason": reason}))
    })
}

fn resume(r: ExperimentRef<'_>) -> JsonB {
    manual(r, |exp, r| {
        if r.state != State::RolledBack {
            wrong_state(
                format!("rollout \"{}\" is {}, not rolled back", printable(&exp.name), r.state.as_str()),
                "only a rolled-back rollout is resumed",
            );
        }
        (Rollout { state: State::Ramping, ..r }, "resumed", json!({}))
    })
}

fn ship(r: ExperimentRef<'_>) -> JsonB {
    manual(r, |exp, r| {
        if r.state != State::Ramping {
            wrong_state(
                format!("rollout \"{}\" is {}", printable(&exp.name), r.state.as_str().replace('_', " ")),
                "only a ramping rollout is shipped (ab_resume resumes a rolled-back one)",
            );
        }
        let step = r.steps.len() - 1;
        (Rollout { state: State::Completed, step, ..r }, "shipped", json!({}))
    })
}

/// Rolls a rollout back by hand: from this commit on every ab_get_variant returns the
/// control's config, to every user (assignments stay recorded). The reason is kept.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_rollback(experiment: Option<&str>, reason: Option<&str>) -> JsonB {
    rollback(ExperimentRef::Name(required(experiment, "experiment")), reason)
}

#[pg_extern(name = "ab_rollback", volatile, parallel_unsafe)]
fn ab_rollback_by_id(experiment: Option<i64>, reason: Option<&str>) -> JsonB {
    rollback(ExperimentRef::Id(required(experiment, "experiment")), reason)
}

/// Resumes a rolled-back rollout at the step it was rolled back from.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_resume(experiment: Option<&str>) -> JsonB {
    resume(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_resume", volatile, parallel_unsafe)]
fn ab_resume_by_id(experiment: Option<i64>) -> JsonB {
    resume(ExperimentRef::Id(required(experiment, "experiment")))
}

/// Ships a ramping rollout now: the new variant takes every new user, and checks stop.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_ship(experiment: Option<&str>) -> JsonB {
    ship(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_ship", volatile, parallel_unsafe)]
fn ab_ship_by_id(experiment: Option<i64>) -> JsonB {
    ship(ExperimentRef::Id(required(experiment, "experiment")))
}

fn move_by_hand(r: ExperimentRef<'_>, share: Option<f64>) -> JsonB {
    let share = required(share, "share");
    manual(r, |exp, r| {
        if r.state != State::Ramping {
            wrong_state(
                format!("rollout \"{}\" is {}", printable(&exp.name), r.state.as_str().replace('_', " ")),
                "only a ramping rollout moves (ab_resume resumes a rolled-back one)",
            );
        }
        let new = r.moved_to(share).unwrap_or_else(|e| invalid(format!("rollout \"{}\": {e}", printable(&exp.name))));
        let action = if new.state == State::Completed { "shipped" } else { "stepped" };
        (new, action, json!({}))
    })
}

/// Moves a ramping rollout (a percentage flag) to a larger share of new users at once: a
/// step inserted after the current one. Users keep their variant, so a share only goes up;
/// 100 completes it.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_rollout_to(experiment: Option<&str>, share: Option<f64>) -> JsonB {
    move_by_hand(ExperimentRef::Name(required(experiment, "experiment")), share)
}

#[pg_extern(name = "ab_rollout_to", volatile, parallel_unsafe)]
fn ab_rollout_to_by_id(experiment: Option<i64>, share: Option<f64>) -> JsonB {
    move_by_hand(ExperimentRef::Id(required(experiment, "experiment")), share)
}
